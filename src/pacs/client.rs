//! HTTP to a PACS (DICOMweb or Orthanc REST): auth, TLS, timeouts, a few quick retries, and a cap
//! on every body read.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tracing::debug;

pub use super::endpoint::Endpoint;
use crate::util::error_chain;
use crate::util::Secret;

/// How to authenticate to the PACS.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: Option<Secret>,
    },
    Bearer(Secret),
}

/// Connection settings shared by the DICOMweb and Orthanc sources.
#[derive(Debug, Clone)]
pub struct PacsOptions {
    pub auth: Auth,
    pub ca_cert: Option<std::path::PathBuf>,
    pub timeout: Duration,
    /// Largest response body read (bytes).
    pub max_body: usize,
    /// Concurrent requests at most.
    pub concurrency: usize,
    /// Accept any TLS certificate (--insecure): never the default, always warned about.
    pub insecure: bool,
}

impl Default for PacsOptions {
    fn default() -> Self {
        PacsOptions {
            auth: Auth::None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
            max_body: 64 * 1024 * 1024,
            concurrency: 8,
            insecure: false,
        }
    }
}

/// A failure talking to the PACS. Never contains a password or token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PacsError {
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    /// A 401: the credentials sent (or their absence), and how to fix them.
    #[error("{url}: HTTP 401: {fix}")]
    Unauthorized { url: String, fix: String },
    #[error("{url}: answer larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: unexpected answer: {reason}")]
    Bad { url: String, reason: String },
    #[error("cannot set up the PACS client: {0}")]
    Setup(String),
}

/// One PACS endpoint.
#[derive(Clone)]
pub struct PacsClient {
    http: reqwest::Client,
    pub base: String,
    /// `base` parsed: every request URL is built below it by [`Endpoint::below`].
    root: reqwest::Url,
    opts: PacsOptions,
}

impl PacsClient {
    pub fn new(base: &str, opts: PacsOptions) -> Result<PacsClient, PacsError> {
        let root = reqwest::Url::parse(base)
            .ok()
            .filter(|u| !u.cannot_be_a_base() && matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| PacsError::Setup(format!("{base} is not an http(s) URL")))?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(opts.timeout))
            .timeout(opts.timeout)
            .pool_max_idle_per_host(opts.concurrency.max(1) * 2)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("segbridge/", env!("CARGO_PKG_VERSION")))
            // redirects are followed within the PACS's own origin only: its credentials never
            // go to another host
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let origin = |u: &reqwest::Url| u.origin();
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| origin(first) == origin(attempt.url()));
                if attempt.previous().len() > 5 {
                    attempt.error("too many redirects")
                } else if same {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }));
        if let Some(ca) = &opts.ca_cert {
            b = b.add_root_certificate(load_ca(ca)?);
        }
        if opts.insecure {
            tracing::warn!(
                "--insecure: TLS certificates of {base} are NOT verified; anyone on the path can \
                 read and change what segbridge sees. Use --ca-cert instead"
            );
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| PacsError::Setup(error_chain(&e)))?;
        Ok(PacsClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            root,
            opts,
        })
    }

    pub fn options(&self) -> &PacsOptions {
        &self.opts
    }

    /// The URL of a resource below the root, every part of it percent-encoded.
    pub fn url(&self, at: &Endpoint) -> String {
        at.below(&self.root).to_string()
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.opts.auth {
            Auth::None => r,
            Auth::Basic { user, password } => {
                r.basic_auth(user, password.as_ref().map(|p| p.expose().to_string()))
            }
            Auth::Bearer(t) => r.bearer_auth(t.expose()),
        }
    }

    /// GET with a couple of quick retries on transient failures; the body is capped.
    pub async fn get_bytes(
        &self,
        at: &Endpoint,
        accept: &str,
    ) -> Result<(StatusCode, Vec<u8>), PacsError> {
        let url = self.url(at);
        retrying(|| self.get_once(&url, accept)).await
    }

    async fn get_once(&self, url: &str, accept: &str) -> Result<(StatusCode, Vec<u8>), PacsError> {
        self.exchange(self.request(Method::GET, url).header("accept", accept), url)
            .await
    }

    /// GET an answer of at most `limit` bytes: a larger one is left unread and is
    /// [`PacsError::TooLarge`] (for a caller that has a cheaper way for large answers).
    pub async fn get_at_most(
        &self,
        at: &Endpoint,
        accept: &str,
        limit: usize,
    ) -> Result<Vec<u8>, PacsError> {
        let url = self.url(at);
        self.capped(&url, limit, || {
            self.request(Method::GET, &url).header("accept", accept)
        })
        .await
    }

    /// Sends the request `build` makes (again on a quick retry) and reads an answer of at most
    /// `limit` bytes; a non-2xx answer is an error carrying the start of its body.
    async fn capped(
        &self,
        url: &str,
        limit: usize,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, PacsError> {
        let limit = limit.min(self.opts.max_body);
        retrying(|| async {
            let t = std::time::Instant::now();
            let resp = build().send().await.map_err(|e| transport(url, &e))?;
            let status = resp.status();
            if !status.is_success() {
                let body = read_capped(resp, url, 64 * 1024).await.unwrap_or_default();
                return Err(http_error(&self.opts.auth, url, status, &body));
            }
            let body = read_capped(resp, url, limit).await?;
            answered(url, status, body.len(), t);
            Ok(body)
        })
        .await
    }

    /// Sends a request and reads its answer (capped); a non-2xx answer is an error that
    /// carries the start of its body.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(StatusCode, Vec<u8>), PacsError> {
        let t = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| transport(url, &e))?;
        let status = resp.status();
        let body = read_capped(resp, url, self.opts.max_body).await?;
        answered(url, status, body.len(), t);
        if !status.is_success() {
            return Err(http_error(&self.opts.auth, url, status, &body));
        }
        Ok((status, body))
    }

    /// GET a multipart/related answer (WADO-RS retrieve) and return its parts; the whole answer
    /// is capped at the body limit.
    pub async fn get_parts(&self, at: &Endpoint, accept: &str) -> Result<Vec<Vec<u8>>, PacsError> {
        self.get_parts_at_most(at, accept, self.opts.max_body).await
    }

    /// [`PacsClient::get_parts`] with the whole answer capped at `limit` bytes (and at most the
    /// body limit): a larger answer is an error as soon as it passes the cap.
    pub async fn get_parts_at_most(
        &self,
        at: &Endpoint,
        accept: &str,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, PacsError> {
        use futures_util::StreamExt;
        let url = self.url(at);
        let t = std::time::Instant::now();
        let resp = self
            .request(Method::GET, &url)
            .header("accept", accept)
            .send()
            .await
            .map_err(|e| transport(&url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp, &url, 4096).await.unwrap_or_default();
            return Err(http_error(&self.opts.auth, &url, status, &body));
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let boundary = boundary_of(&ct).ok_or_else(|| PacsError::Bad {
            url: url.clone(),
            reason: format!("not a multipart answer ({ct})"),
        })?;
        let limit = limit.min(self.opts.max_body);
        let mut seen = 0usize;
        let stream = resp.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len();
            if seen > limit {
                return Err(std::io::Error::other(format!(
                    "answer larger than {limit} bytes"
                )));
            }
            Ok(chunk)
        });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut parts = Vec::new();
        loop {
            match mp.next_field().await {
                Ok(Some(f)) => parts.push(
                    f.bytes()
                        .await
                        .map_err(|e| PacsError::Bad {
                            url: url.clone(),
                            reason: format!("multipart: {e}"),
                        })?
                        .to_vec(),
                ),
                Ok(None) => {
                    answered(&url, status, parts.iter().map(Vec::len).sum(), t);
                    return Ok(parts);
                }
                Err(e) => {
                    return Err(PacsError::Bad {
                        url,
                        reason: format!("multipart: {e}"),
                    })
                }
            }
        }
    }

    /// GET a JSON answer (at most [`crate::dicom::json::MAX_JSON`] bytes) parsed straight into
    /// `T`: a typed answer keeps only the fields it names, the rest is skipped while parsing.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        at: &Endpoint,
        accept: &str,
    ) -> Result<T, PacsError> {
        let body = self
            .get_at_most(at, accept, crate::dicom::json::MAX_JSON)
            .await?;
        serde_json::from_slice(&body).map_err(|e| PacsError::Bad {
            url: self.url(at),
            reason: format!("unexpected JSON: {e}"),
        })
    }

    /// POST a JSON body (an idempotent query, such as Orthanc's `/tools/find`), JSON answer
    /// parsed straight into `T` (a typed answer holds only the fields it names), with the same
    /// quick retries as a GET.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        at: &Endpoint,
        body: &Value,
    ) -> Result<T, PacsError> {
        let url = self.url(at);
        let (_, bytes) =
            retrying(|| self.exchange(self.request(Method::POST, &url).json(body), &url)).await?;
        serde_json::from_slice(&bytes).map_err(|e| PacsError::Bad {
            url,
            reason: format!("not JSON: {e}"),
        })
    }

    /// STOW-RS: POST Part-10 files as multipart/related to `{base}/studies`. Storing is
    /// idempotent, so a dropped connection is retried once.
    pub async fn stow(&self, files: &[Vec<u8>]) -> Result<Value, PacsError> {
        match self.stow_once(files).await {
            Err(PacsError::Transport { .. }) => self.stow_once(files).await,
            other => other,
        }
    }

    async fn stow_once(&self, files: &[Vec<u8>]) -> Result<Value, PacsError> {
        let url = self.url(&Endpoint::at(&["studies"]));
        let boundary = format!("segbridge-{:016x}", rand::random::<u64>());
        let mut body = Vec::with_capacity(files.iter().map(Vec::len).sum::<usize>() + 256);
        for f in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(f);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = self
            .request(Method::POST, &url)
            .header(
                "content-type",
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header("accept", "application/dicom+json")
            .body(body);
        let (_, bytes) = self.exchange(req, &url).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        // FailedSOPSequence: any item means a file was refused
        let failed_key =
            crate::dicom::json::json_key(dicom_dictionary_std::tags::FAILED_SOP_SEQUENCE);
        if let Some(failed) = v
            .get(&failed_key)
            .and_then(|f| f.get("Value"))
            .and_then(Value::as_array)
        {
            if !failed.is_empty() {
                return Err(PacsError::Bad {
                    url,
                    reason: format!("{} instance(s) refused by STOW-RS", failed.len()),
                });
            }
        }
        Ok(v)
    }
}

/// The boundary of any `multipart/*` content type (multer's own parser accepts only
/// multipart/form-data, and WADO-RS answers multipart/related).
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let kind = parts.next()?.trim();
    if !kind.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

fn http_error(auth: &Auth, url: &str, status: StatusCode, body: &[u8]) -> PacsError {
    if status == StatusCode::UNAUTHORIZED {
        return PacsError::Unauthorized {
            url: url.to_string(),
            fix: credentials_fix(auth),
        };
    }
    PacsError::Http {
        url: url.to_string(),
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_string(),
    }
}

/// What to do about a 401, given the credentials that were sent (never their values).
fn credentials_fix(auth: &Auth) -> String {
    match auth {
        Auth::None => "the PACS requires credentials: give --dicomweb-user USER with the \
                       password in env DICOMWEB_PASSWORD, or a bearer token in env DICOMWEB_TOKEN"
            .into(),
        Auth::Basic {
            user,
            password: None,
        } => format!(
            "the PACS refused user {user:?} without a password: set env DICOMWEB_PASSWORD (or \
             give a bearer token in env DICOMWEB_TOKEN instead of --dicomweb-user)"
        ),
        Auth::Basic { user, .. } => format!(
            "the PACS refused user {user:?} and its password: check --dicomweb-user and env \
             DICOMWEB_PASSWORD (or give a bearer token in env DICOMWEB_TOKEN)"
        ),
        Auth::Bearer(_) => "the PACS refused the bearer token: check env DICOMWEB_TOKEN (or \
                            unset it and give --dicomweb-user with env DICOMWEB_PASSWORD)"
            .into(),
    }
}

/// How a PACS request is retried: 0.4 s, then 0.8 s (with jitter), three tries in all.
const PACS_RETRY: crate::util::Backoff =
    crate::util::Backoff::new(Duration::from_millis(400), Duration::from_secs(5));

/// Runs a request up to three times while it fails on the transport, 5xx or 429.
/// Each answer at trace level (`RUST_LOG=segbridge=trace`): where the time of a pass goes.
fn answered(url: &str, status: StatusCode, bytes: usize, since: std::time::Instant) {
    tracing::trace!(
        status = status.as_u16(),
        bytes,
        ms = format!("{:.1}", since.elapsed().as_secs_f64() * 1e3),
        "answered {}",
        url.split('?').next().unwrap_or(url)
    );
}

async fn retrying<T, F, Fut>(mut f: F) -> Result<T, PacsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PacsError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(e @ PacsError::Transport { .. })
            | Err(
                e @ PacsError::Http {
                    status: 500..=599 | 429,
                    ..
                },
            ) if attempt < 3 => {
                debug!(attempt, "{e}; retrying");
                tokio::time::sleep(PACS_RETRY.wait(attempt)).await;
            }
            other => return other,
        }
    }
}

fn transport(url: &str, e: &reqwest::Error) -> PacsError {
    PacsError::Transport {
        url: url.to_string(),
        reason: if e.is_timeout() {
            "timed out".into()
        } else {
            error_chain(e)
        },
    }
}

async fn read_capped(
    mut resp: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, PacsError> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(PacsError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(url, &e))? {
        if out.len() + chunk.len() > limit {
            return Err(PacsError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn load_ca(path: &Path) -> Result<reqwest::Certificate, PacsError> {
    let pem = std::fs::read(path)
        .map_err(|e| PacsError::Setup(format!("--ca-cert {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(PacsError::Setup(format!(
            "--ca-cert {}: no PEM certificate in the file",
            path.display()
        )));
    }
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| PacsError::Setup(format!("--ca-cert {}: {}", path.display(), error_chain(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_names_the_credentials_to_give_never_their_values() {
        let msg =
            |auth: Auth| http_error(&auth, "http://p/x", StatusCode::UNAUTHORIZED, b"").to_string();
        let none = msg(Auth::None);
        for want in [
            "HTTP 401",
            "--dicomweb-user",
            "DICOMWEB_PASSWORD",
            "DICOMWEB_TOKEN",
        ] {
            assert!(none.contains(want), "{want}: {none}");
        }
        let basic = msg(Auth::Basic {
            user: "bridge".into(),
            password: Some(Secret::new("pw-never-shown")),
        });
        assert!(
            basic.contains("\"bridge\"") && basic.contains("DICOMWEB_PASSWORD"),
            "{basic}"
        );
        assert!(!basic.contains("pw-never-shown"), "{basic}");
        let bearer = msg(Auth::Bearer(Secret::new("tok-never-shown")));
        assert!(bearer.contains("DICOMWEB_TOKEN") && !bearer.contains("tok-never-shown"));
        // other refusals keep their status and body
        let other = http_error(&Auth::None, "http://p/x", StatusCode::FORBIDDEN, b"no").to_string();
        assert_eq!(other, "http://p/x: HTTP 403: no");
    }

    #[test]
    fn boundaries_of_multipart_types() {
        assert_eq!(
            boundary_of("multipart/related; type=\"application/dicom\"; boundary=abc-1").as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"q q\"").as_deref(),
            Some("q q")
        );
        assert_eq!(boundary_of("application/json; boundary=x"), None);
        assert_eq!(boundary_of("multipart/related"), None);
    }
}
