//! A real Orthanc with the DICOMweb plugin, on free loopback ports with its own storage dir,
//! stopped when dropped. `scripts/test.sh` installs it; a test that needs it FAILS without it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::free_port;

pub const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

pub struct Orthanc {
    pub url: String,
    pub dir: tempfile::TempDir,
    cfg_path: PathBuf,
    child: Child,
    /// Basic-auth credentials the test's own requests use, when Orthanc requires them.
    pub auth: Option<(String, String)>,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

fn orthanc_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ORTHANC_BIN") {
        return PathBuf::from(p);
    }
    for p in [
        "/usr/sbin/Orthanc",
        "/usr/bin/Orthanc",
        "/usr/local/bin/Orthanc",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "Orthanc is not installed: run scripts/test.sh (it installs orthanc and orthanc-dicomweb)"
    );
}

impl Orthanc {
    /// Starts Orthanc; `extra` is merged into the configuration.
    pub fn start(extra: Value) -> Orthanc {
        assert!(
            Path::new(PLUGIN).exists(),
            "{PLUGIN} missing: run scripts/test.sh (apt-get install orthanc-dicomweb)"
        );
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let mut cfg = json!({
            "Name": "SEGBRIDGE_TEST",
            "StorageDirectory": dir.path().join("storage"),
            "IndexDirectory": dir.path().join("storage"),
            "HttpPort": http_port, "DicomPort": free_port(), "DicomAet": "SEGBRIDGETEST",
            "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "StableAge": 1,
            "HttpBindAddress": "127.0.0.1", "DicomServerEnabled": false,
            "Plugins": [PLUGIN],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "EnableWado": true,
                         "WadoRoot": "/wado", "Ssl": false}
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let cfg_path = dir.path().join("orthanc.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let auth = cfg["RegisteredUsers"]
            .as_object()
            .and_then(|m| m.iter().next())
            .map(|(u, p)| (u.clone(), p.as_str().unwrap_or("").to_string()));
        let child = spawn(&cfg_path, dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut o = Orthanc {
            url: format!("http://127.0.0.1:{http_port}"),
            dir,
            cfg_path,
            child,
            auth,
            rt,
            // a fresh connection per request: Orthanc may close idle keep-alive ones
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        };
        o.wait_ready();
        o
    }

    /// Stops Orthanc and waits for the process to end (storage stays).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and storage.
    pub fn start_again(&mut self) {
        self.child = spawn(&self.cfg_path, self.dir.path());
        self.wait_ready();
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.url));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Orthanc exited during start ({status}): {}", self.log());
            }
            let ok = self.rt.block_on(async {
                self.req(reqwest::Method::GET, "/system")
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Orthanc not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    pub fn dicomweb(&self) -> String {
        format!("{}/dicom-web", self.url)
    }

    /// STOW-RS of the given Part-10 files in one request.
    pub fn stow(&self, files: &[PathBuf]) -> Value {
        let boundary = "segbridge-test-boundary-7c1f";
        let mut body = Vec::new();
        for f in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(&std::fs::read(f).unwrap());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.rt.block_on(async {
            let r = self
                .req(reqwest::Method::POST, "/dicom-web/studies")
                .header(
                    "content-type",
                    format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "STOW failed: {}", r.status());
            r.json().await.unwrap_or(Value::Null)
        })
    }

    pub fn get_json(&self, path: &str) -> Value {
        self.rt.block_on(async {
            let r = self
                .req(reqwest::Method::GET, path)
                .header("accept", "application/dicom+json")
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "GET {path}: {}", r.status());
            let text = r.text().await.unwrap();
            if text.trim().is_empty() {
                Value::Array(vec![])
            } else {
                serde_json::from_str(&text).unwrap()
            }
        })
    }

    pub fn delete(&self, path: &str) {
        self.rt.block_on(async {
            let r = self
                .req(reqwest::Method::DELETE, path)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
        })
    }
}

fn spawn(cfg: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("orthanc.log"))
        .unwrap();
    Command::new(orthanc_bin())
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start Orthanc")
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        // SIGTERM, then wait: a restart on the same storage needs the old process gone
        self.stop();
    }
}
