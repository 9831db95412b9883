//! The MONAI Cloud API client: login → token, log in again once on 401, retries by the one
//! retry policy ([`crate::util::Backoff`]), the API's errors named. With its typed calls
//! (`calls.rs`), this is the only code that talks to the MONAI API.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, warn};

use super::types::{LoginAnswer, LoginRequest, NotifyBody};
pub use crate::util::Secret;

/// How to reach the API and how hard to try.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Host, such as `https://api.monai.ngc.nvidia.com` (`/api/v1` is added).
    pub host: String,
    pub org: String,
    pub key: Option<Secret>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Give up retrying a call after this long (the entries stay in the outbox).
    pub retry_for: Duration,
    /// The longest single backoff sleep.
    pub max_backoff: Duration,
}

impl ApiConfig {
    pub fn new(host: &str, org: &str, key: Option<Secret>) -> ApiConfig {
        ApiConfig {
            host: host.trim_end_matches('/').to_string(),
            org: org.to_string(),
            key,
            timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(120),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What went wrong talking to the API. Never contains the key or the token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no API key: set MONAI_API_KEY (or api_key in the config file)")]
    MissingKey,
    #[error("login refused by {url}: HTTP {status}{}", desc(.error_code, .error_desc))]
    LoginRefused {
        url: String,
        status: u16,
        error_code: Option<i64>,
        error_desc: Option<String>,
    },
    #[error("{method} {url}: HTTP {status}{}", desc(.error_code, .error_desc))]
    Http {
        method: String,
        url: String,
        status: u16,
        error_code: Option<i64>,
        error_desc: Option<String>,
    },
    #[error("{method} {url}: {reason}")]
    Transport {
        method: String,
        url: String,
        reason: String,
    },
    #[error(
        "{method} {url}: gave up after {attempts} attempts in {elapsed:?}; last error: {last}"
    )]
    GaveUp {
        method: String,
        url: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("{method} {url}: unexpected answer: {reason}")]
    BadAnswer {
        method: String,
        url: String,
        reason: String,
    },
}

fn desc(code: &Option<i64>, d: &Option<String>) -> String {
    match (code, d) {
        (Some(c), Some(d)) => format!(" (error_code {c}: {d})"),
        (None, Some(d)) => format!(" ({d})"),
        (Some(c), None) => format!(" (error_code {c})"),
        (None, None) => String::new(),
    }
}

/// The API's error body, when it sent one.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    error_desc: Option<String>,
}

fn parse_error_body(bytes: &[u8]) -> (Option<i64>, Option<String>) {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => (b.error_code, b.error_desc),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let t = text.trim();
            if t.is_empty() {
                (None, None)
            } else {
                (None, Some(t.chars().take(300).collect()))
            }
        }
    }
}

/// A logged-in (or about to be) client.
pub struct Client {
    http: reqwest::Client,
    cfg: ApiConfig,
    token: Option<Secret>,
    pub user_id: Option<String>,
    /// When this turns true, no further retry is started (shutdown).
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A successful answer: status and parsed JSON (Null when the body was empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub raw: Vec<u8>,
    pub content_type: Option<String>,
}

impl Client {
    pub fn new(cfg: ApiConfig) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(cfg.timeout))
            .timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("segbridge/", env!("CARGO_PKG_VERSION")))
            // never follow a redirect: a 307 re-sends the body (the API key, on login) and a
            // token to wherever it points; a redirect is an error answer instead
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Transport {
                method: "init".into(),
                url: cfg.host.clone(),
                reason: crate::util::error_chain(&e),
            })?;
        Ok(Client {
            http,
            cfg,
            token: None,
            user_id: None,
            cancel: None,
        })
    }

    /// Stops retrying (the call in flight still finishes) once `cancel` turns true.
    pub fn set_cancel(&mut self, cancel: tokio::sync::watch::Receiver<bool>) {
        self.cancel = Some(cancel);
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    pub fn config(&self) -> &ApiConfig {
        &self.cfg
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.cfg.host, path)
    }

    /// A path under `/orgs/{org}`.
    pub fn org_path(&self, rest: &str) -> String {
        format!("/orgs/{}{}", self.cfg.org, rest)
    }

    /// `POST /api/v1/login` → token (retried like any call; a 401 is final).
    pub async fn login(&mut self) -> Result<(), ApiError> {
        let key = self.cfg.key.clone().ok_or(ApiError::MissingKey)?;
        let body = self.encode("POST", "/login", &LoginRequest { ngc_api_key: key })?;
        let ans = self
            .send_retrying(Method::POST, "/login", Some(&body), false)
            .await?;
        let login = serde_json::from_value::<LoginAnswer>(ans.body)
            .ok()
            .filter(|a| !a.token.expose().is_empty())
            .ok_or_else(|| ApiError::BadAnswer {
                method: "POST".into(),
                url: self.url("/login"),
                reason: "no \"token\" in the login answer".into(),
            })?;
        self.token = Some(login.token);
        self.user_id = login.user_id;
        debug!(user_id = ?self.user_id, "logged in");
        Ok(())
    }

    /// An authenticated call: logs in first when needed, and again once on a 401.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ApiError> {
        if self.token.is_none() {
            self.login().await?;
        }
        match self.send_retrying(method.clone(), path, body, true).await {
            Err(ApiError::Http { status: 401, .. }) => {
                debug!("token refused (401): logging in again");
                self.token = None;
                self.login().await?;
                self.send_retrying(method, path, body, true).await
            }
            other => other,
        }
    }

    /// `POST /orgs/{org}/datasets/{id}/jobs` with a notify body.
    pub async fn notify(&mut self, dataset: &str, body: &NotifyBody) -> Result<(), ApiError> {
        let path = self.org_path(&format!("/datasets/{dataset}/jobs"));
        let value = self.encode("POST", &path, body)?;
        self.call(Method::POST, &path, Some(&value))
            .await
            .map(|_| ())
    }

    /// A request body as JSON (our own types always encode; the error is named all the same).
    pub(super) fn encode(
        &self,
        method: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Value, ApiError> {
        serde_json::to_value(body).map_err(|e| ApiError::BadAnswer {
            method: method.into(),
            url: self.url(path),
            reason: format!("cannot encode the request: {e}"),
        })
    }

    /// Sends one request with retries on transient failures (connection errors, timeouts,
    /// 5xx, 408, 429), within the retry budget `retry_for`. Any other answer is final: a 400
    /// or a 404 (a wrong ID) fails at once. The first attempt may take the whole request
    /// timeout; a retry only what is left of the budget, so a call gives up within about
    /// `retry_for` however the API fails.
    async fn send_retrying(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: bool,
    ) -> Result<Answer, ApiError> {
        let url = self.url(path);
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let timeout = match attempt {
                1 => self.cfg.timeout,
                _ => self
                    .cfg
                    .timeout
                    .min(self.cfg.retry_for.saturating_sub(start.elapsed())),
            };
            let (wait_hint, err) = match self.send_once(&method, &url, body, auth, timeout).await {
                Ok(a) => return Ok(a),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry { err, after }) => (after, err),
            };
            let elapsed = start.elapsed();
            let backoff = self.backoff(attempt);
            let wait = wait_hint.map(|h| h.max(backoff)).unwrap_or(backoff);
            // a retry with less than this left of the budget could not get an answer
            const SHORTEST_TRY: Duration = Duration::from_millis(250);
            if elapsed + wait + SHORTEST_TRY > self.cfg.retry_for || self.cancelled() {
                return Err(ApiError::GaveUp {
                    method: method.to_string(),
                    url,
                    attempts: attempt,
                    elapsed,
                    last: err.to_string(),
                });
            }
            warn!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "{err}; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The one retry policy ([`crate::util::Backoff`]) from 200 ms up to `max_backoff`.
    fn backoff(&self, attempt: u32) -> Duration {
        crate::util::Backoff::new(Duration::from_millis(200), self.cfg.max_backoff).wait(attempt)
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        auth: bool,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let mut req = self.http.request(method.clone(), url).timeout(timeout);
        if auth {
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose());
            }
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |e: reqwest::Error| {
            let reason = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                format!("cannot connect: {}", crate::util::error_chain(&e))
            } else {
                crate::util::error_chain(&e)
            };
            // reqwest's messages carry the URL only, never headers: no secret leaks here
            Failure::Retry {
                err: ApiError::Transport {
                    method: method.to_string(),
                    url: url.to_string(),
                    reason,
                },
                after: None,
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Answer {
                status,
                body,
                raw: bytes.to_vec(),
                content_type,
            });
        }
        let (error_code, error_desc) = parse_error_body(&bytes);
        if !auth && status == StatusCode::UNAUTHORIZED {
            return Err(Failure::Final(ApiError::LoginRefused {
                url: url.to_string(),
                status: status.as_u16(),
                error_code,
                error_desc,
            }));
        }
        let err = ApiError::Http {
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            error_code,
            error_desc,
        };
        // the server answers many failures as 404 whatever their cause, but retrying a wrong
        // ID only delays its error: a 404 is final here, and the bridge's entries stay in the
        // outbox for the next run or the daemon's next attempt
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        if retryable {
            Err(Failure::Retry {
                err,
                after: retry_after,
            })
        } else {
            Err(Failure::Final(err))
        }
    }
}

enum Failure {
    Retry {
        err: ApiError,
        after: Option<Duration>,
    },
    Final(ApiError),
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    httpdate::parse_http_date(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
        .map(|d| d.min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_debug_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
