//! Shared helpers: an emulator on a loopback port in this process, and the segbridge binary.
#![allow(dead_code)]

pub mod orthanc;
pub mod pg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segbridge::emulator::{self, EmulatorConfig};
use segbridge::monai::DatasetSpec;
use serde_json::{json, Value};

pub struct Emu {
    pub rt: tokio::runtime::Runtime,
    pub url: String,
    pub key: String,
    http: reqwest::Client,
}

impl Emu {
    pub fn start() -> Emu {
        Emu::with(EmulatorConfig::default())
    }

    pub fn with(cfg: EmulatorConfig) -> Emu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let key = cfg.api_key.clone();
        let running = rt
            .block_on(emulator::spawn("127.0.0.1:0".parse().unwrap(), cfg))
            .unwrap();
        Emu {
            url: running.url(),
            rt,
            key,
            http: reqwest::Client::new(),
        }
    }

    pub fn get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            self.http
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    /// A raw API call: (status, body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut r = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.url));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    pub fn token(&self) -> String {
        let (s, b) = self.call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"ngc_api_key": self.key})),
        );
        assert_eq!(s, 201, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    pub fn create_dataset(&self) -> String {
        let t = self.token();
        let (s, b) = self.call(
            "POST",
            "/api/v1/orgs/iasixjqzw1hj/datasets",
            Some(&t),
            // the one dataset body (no DICOMweb server listens on port 9)
            Some(
                serde_json::to_value(DatasetSpec::dicomweb("t", "http://127.0.0.1:9/dicom-web"))
                    .unwrap(),
            ),
        );
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().to_string()
    }

    pub fn notifications(&self) -> Vec<Value> {
        self.get("/_emulator/notifications")
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn fault(&self, f: Value) {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}/_emulator/faults", self.url))
                .json(&f)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        })
    }

    pub fn clear_faults(&self) {
        self.rt.block_on(async {
            self.http
                .delete(format!("{}/_emulator/faults", self.url))
                .send()
                .await
                .unwrap();
        })
    }
}

/// The segbridge binary with a clean environment (no inherited SEGBRIDGE_* or key).
pub fn segbridge(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segbridge"));
    c.current_dir(dir)
        .env_remove("MONAI_API_KEY")
        .env_remove("SEGBRIDGE_API")
        .env_remove("SEGBRIDGE_ORG")
        .env_remove("SEGBRIDGE_DATASET")
        .env_remove("SEGBRIDGE_STATE")
        .env_remove("SEGBRIDGE_CONFIG")
        .env_remove("RUST_LOG");
    c
}

/// `segbridge sync` against the emulator, with the emulator's key.
pub fn sync(emu: &Emu, dir: &Path, folder: &Path, dataset: &str, extra: &[&str]) -> Output {
    let mut c = segbridge(dir);
    c.env("MONAI_API_KEY", &emu.key)
        .args(["sync", "--folder"])
        .arg(folder)
        .args(["--dataset", dataset, "--api", &emu.url])
        .args(extra);
    if !extra.contains(&"--retry-for") {
        c.args(["--retry-for", "5"]);
    }
    c.output().unwrap()
}

/// The lines of a successful `--json` run (one JSON object per line).
pub fn json_lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `segbridge scan --json --folder FOLDER EXTRA…` run in `dir`, its lines parsed.
pub fn scan_json(dir: &Path, folder: &Path, extra: &[&str]) -> Vec<Value> {
    json_lines(
        &segbridge(dir)
            .args(["scan", "--json", "--folder"])
            .arg(folder)
            .args(extra)
            .output()
            .unwrap(),
    )
}

/// Voxels per segment number, from a scan line's `segments` array or an expectation's
/// `{"1": voxels, ...}` object.
pub fn voxels(v: &Value) -> std::collections::BTreeMap<String, u64> {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|s| (s["number"].to_string(), s["voxels"].as_u64().unwrap()))
            .collect(),
        _ => Default::default(),
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The (section, image, label) triples of a list of notify bodies, in order.
pub fn entries(bodies: &[Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for b in bodies {
        assert_eq!(b["action"], "notify");
        for s in ["added", "updated", "removed"] {
            for e in b["specs"][s].as_array().unwrap() {
                out.push((
                    s.to_string(),
                    e["image"].as_str().unwrap().to_string(),
                    e["label"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

pub fn e(s: &str, image: &str, label: &str) -> (String, String, String) {
    (s.into(), image.into(), label.into())
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a child with SIGTERM (as a service manager would) and waits for it to end.
pub fn terminate(mut c: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let _ = c.wait();
}

/// A free loopback port (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A TCP proxy on a loopback port that delays every chunk the upstream sends back: a slow PACS.
pub struct SlowProxy {
    pub url: String,
    /// Request lines ("GET /path") seen, in order: what a client asked of the server.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// POST bodies, by the index of their request line.
    pub bodies: Arc<Mutex<HashMap<usize, Vec<u8>>>>,
    _rt: tokio::runtime::Runtime,
}

/// Reads the requests in a client's byte stream: each request line ("GET /path") goes to
/// `lines`; a POST's body (up to 1 MiB) goes to `bodies`, keyed by its line's index.
#[derive(Default)]
struct RequestReader {
    carry: Vec<u8>,
    /// Body bytes of the current request still to come, and the POST body being kept.
    need: usize,
    body: Option<(usize, Vec<u8>)>,
}

impl RequestReader {
    fn feed(
        &mut self,
        chunk: &[u8],
        lines: &Mutex<Vec<String>>,
        bodies: &Mutex<HashMap<usize, Vec<u8>>>,
    ) {
        self.carry.extend_from_slice(chunk);
        loop {
            if self.need > 0 {
                let take = self.need.min(self.carry.len());
                if let Some((_, b)) = &mut self.body {
                    b.extend_from_slice(&self.carry[..take]);
                }
                self.carry.drain(..take);
                self.need -= take;
                if self.need > 0 {
                    return;
                }
                if let Some((i, b)) = self.body.take() {
                    bodies.lock().unwrap().insert(i, b);
                }
                continue;
            }
            let Some(end) = self.carry.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.carry[..end]).to_string();
            self.carry.drain(..end + 4);
            let mut head_lines = head.lines();
            let first: Vec<&str> = head_lines.next().unwrap_or("").split(' ').collect();
            let length: usize = head_lines
                .filter_map(|h| h.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if first.len() == 3 && first[2].starts_with("HTTP/") {
                let mut l = lines.lock().unwrap();
                l.push(format!("{} {}", first[0], first[1]));
                if first[0] == "POST" && length <= 1 << 20 {
                    self.body = Some((l.len() - 1, Vec::with_capacity(length)));
                }
            }
            self.need = length;
            if self.need == 0 {
                if let Some((i, b)) = self.body.take() {
                    bodies.lock().unwrap().insert(i, b);
                }
            }
        }
    }
}

impl SlowProxy {
    /// A counting proxy that adds no delay.
    pub fn counting(upstream: &str) -> SlowProxy {
        SlowProxy::start(upstream, Duration::ZERO)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn start(upstream: &str, delay: Duration) -> SlowProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<String>>> = Default::default();
        let bodies: Arc<Mutex<HashMap<usize, Vec<u8>>>> = Default::default();
        let log = requests.clone();
        let body_log = bodies.clone();
        rt.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let log = log.clone();
                let body_log = body_log.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    // relayed as they come: without this, Nagle's algorithm holds the second
                    // small write of an answer (its body after its headers) until the client's
                    // delayed ACK, up to 40 ms on Linux, which a direct connection never pays
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut reader = RequestReader::default();
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            reader.feed(&buf[..n], &log, &body_log);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        SlowProxy {
            url: format!("http://{addr}"),
            requests,
            bodies,
            _rt: rt,
        }
    }
}

/// The fault a [`FaultyPacs`] applies: (path substring, mode, how many more times).
pub type PacsFault = std::sync::Arc<std::sync::Mutex<Option<(String, &'static str, usize)>>>;

/// An HTTP proxy in front of a PACS that can fail chosen requests: answer 500, or cut the JSON
/// answer in half (truncated mid-listing).
pub struct FaultyPacs {
    pub url: String,
    pub fault: PacsFault,
    _rt: tokio::runtime::Runtime,
}

impl FaultyPacs {
    pub fn start(upstream: &str) -> FaultyPacs {
        use axum::extract::{Request, State};
        use axum::response::IntoResponse;
        type Shared = (String, PacsFault, reqwest::Client);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let fault: PacsFault = Default::default();
        let shared: Shared = (
            upstream.trim_end_matches('/').to_string(),
            fault.clone(),
            reqwest::Client::new(),
        );
        async fn forward(
            State((up, fault, http)): State<Shared>,
            req: Request,
        ) -> axum::response::Response {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let chosen = {
                let mut f = fault.lock().unwrap();
                match f.as_mut() {
                    Some((needle, mode, count))
                        if *count > 0 && needle.split('|').any(|n| path.contains(n)) =>
                    {
                        *count -= 1;
                        Some(*mode)
                    }
                    _ => None,
                }
            };
            if chosen == Some("500") {
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "injected").into_response();
            }
            let method = req.method().clone();
            let headers = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), 64 << 20)
                .await
                .unwrap_or_default();
            let mut r = http
                .request(method, format!("{up}{path}"))
                .body(body.to_vec());
            for (k, v) in headers.iter() {
                if k != "host" && k != "content-length" {
                    r = r.header(k, v);
                }
            }
            let resp = match r.send().await {
                Ok(x) => x,
                Err(_) => return (axum::http::StatusCode::BAD_GATEWAY, "upstream").into_response(),
            };
            let status = resp.status();
            let ct = resp.headers().get("content-type").cloned();
            let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
            match chosen {
                Some("truncate") => bytes.truncate(bytes.len() / 2),
                // the last bytes only: a file's header stays whole, its pixel data is cut
                Some("cut-tail") => bytes.truncate(bytes.len().saturating_sub(16)),
                _ => {}
            }
            let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
            *out.status_mut() = status;
            if let Some(ct) = ct {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultyPacs {
            url: format!("http://{addr}"),
            fault,
            _rt: rt,
        }
    }

    /// Fails the next `count` requests whose path contains `needle` (or one of its
    /// `|`-separated parts): mode "500", "truncate"
    /// (half the answer) or "cut-tail" (all but its last 16 bytes).
    pub fn fail(&self, needle: &str, mode: &'static str, count: usize) {
        *self.fault.lock().unwrap() = Some((needle.to_string(), mode, count));
    }

    pub fn heal(&self) {
        *self.fault.lock().unwrap() = None;
    }
}

/// A non-image instance (SR, PR) in the series of the CT file `like`.
pub fn non_image(like: &Path, sop_class: &str, modality: &str, sop: &str) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let ct = dicom_object::open_file(like).unwrap();
    let get = |t| {
        ct.element(t)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    };
    let mut o = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: String| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    put(tags::SOP_CLASS_UID, VR::UI, sop_class.into());
    put(tags::SOP_INSTANCE_UID, VR::UI, sop.into());
    put(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        get(tags::STUDY_INSTANCE_UID),
    );
    put(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        get(tags::SERIES_INSTANCE_UID),
    );
    put(tags::PATIENT_ID, VR::LO, get(tags::PATIENT_ID));
    put(tags::MODALITY, VR::CS, modality.into());
    put(tags::INSTANCE_NUMBER, VR::IS, "99".into());
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax("1.2.840.10008.1.2.1")
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop)
        .build()
        .unwrap();
    let mut out = Vec::new();
    o.with_exact_meta(meta).write_all(&mut out).unwrap();
    out
}

/// What a stand-in server recorded of the requests it got, in order.
pub type Recorded = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Serves `app` on a free loopback port from a runtime of its own: the server's root URL
/// (`http://127.0.0.1:PORT`) and the runtime, which stops the server when dropped.
pub fn serve(app: axum::Router) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rt)
}
