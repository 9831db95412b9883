//! The attacks of issue 13 that need a PACS, each made for real against a real Orthanc and
//! checked by what reached the API emulator or the PACS (items 1, 2, 5, 6, 7): see
//! RELIABILITY.md, "Attacks tried". The others are in attacks_files.rs and attacks_http.rs.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::{json, Value};

struct Lab {
    orthanc: Orthanc,
    emu: Emu,
    dataset: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let orthanc = Orthanc::start(json!({}));
        let emu = Emu::start();
        let dataset = emu.create_dataset();
        Lab {
            orthanc,
            emu,
            dataset,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn gen(&self) -> PathBuf {
        self.dir.path().join("gen")
    }
    fn ct(&self, name: &str) -> CtSeries {
        let ct = CtSeries::new(name, 2);
        let files = write_ct(&self.gen().join(name), &ct, "IM").unwrap();
        self.orthanc.stow(&files);
        ct
    }
    /// Stores a SEG of `image` (whose series UID may be anything at all).
    fn seg(&self, name: &str, image: &CtSeries) -> SegSpec {
        let s = SegSpec::new(name, image);
        let files = write_seg(&self.gen().join("segs"), &s, name).unwrap();
        self.orthanc.stow(&files);
        s
    }
    fn cmd(&self, sub: &str, source: &[&str]) -> Command {
        let mut c = segbridge(self.dir.path());
        c.env("MONAI_API_KEY", &self.emu.key)
            .arg(sub)
            .args(source)
            .args(["--dataset", &self.dataset, "--api", &self.emu.url])
            .args(["--retry-for", "5"]);
        c
    }
    fn got(&self) -> Vec<(String, String, String)> {
        entries(&self.emu.notifications())
    }
}

/// A SEG of a fake image whose series UID is `reference` (what a hostile or broken writer puts
/// in ReferencedSeriesSequence).
fn referencing(image: &CtSeries, reference: &str) -> CtSeries {
    let mut fake = image.clone();
    fake.series = reference.to_string();
    fake
}

fn scan_lines(lab: &Lab, source: &[&str]) -> (Vec<Value>, Output) {
    let o = segbridge(lab.dir.path())
        .arg("scan")
        .args(source)
        .arg("--json")
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (lines, o)
}

/// Issue 13, items 1 and 2: a SEG whose reference UID is a wildcard, a QIDO list or a query
/// injection is reported as such; every other label is notified, the bogus image never.
#[test]
fn bad_reference_uids_are_reported_and_the_rest_is_notified() {
    let lab = Lab::new();
    let a = lab.ct("a");
    let good = lab.seg("good", &a);
    let hostile = [
        "*".to_string(),
        "2.25.1750*".to_string(),
        format!("9.9.9,{}", a.series),
        format!("9.9.9&SeriesInstanceUID={}", a.series),
    ];
    let bad: Vec<SegSpec> = hostile
        .iter()
        .enumerate()
        .map(|(i, r)| lab.seg(&format!("bad{i}"), &referencing(&a, r)))
        .collect();
    let orthanc = ["--orthanc", lab.orthanc.url.as_str()];
    let dw = lab.orthanc.dicomweb();
    let dicomweb = ["--dicomweb", dw.as_str()];
    for source in [&orthanc[..], &dicomweb[..]] {
        let (lines, o) = scan_lines(&lab, source);
        assert!(o.status.success(), "{}", text(&o));
        for s in &bad {
            let uid = s.series_uid();
            let l = lines
                .iter()
                .find(|l| l["path"].as_str().is_some_and(|p| p.contains(&uid)))
                .unwrap_or_else(|| panic!("{uid} not reported: {}", text(&o)));
            assert_eq!(l["status"], "unreadable", "{l}");
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.contains("ReferencedSeriesSequence")
                    && reason.contains("not a valid DICOM UID"),
                "{reason}"
            );
        }
        let ready: Vec<&Value> = lines.iter().filter(|l| l["status"] == "ready").collect();
        assert_eq!(ready.len(), 1, "{lines:?}");
        assert_eq!(ready[0]["label"], good.series_uid().as_str(), "{lines:?}");
    }
    for source in [&orthanc[..], &dicomweb[..]] {
        let o = lab.cmd("sync", source).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(lab.got(), vec![e("added", &a.series, &good.series_uid())]);
    // watch goes on for that PACS: a valid SEG stored later is notified
    let log = std::fs::File::create(lab.dir.path().join("watch.log")).unwrap();
    let mut watch = lab
        .cmd("watch", &orthanc)
        .args(["--poll", "0.3", "--reconcile", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let b = lab.ct("b");
    let later = lab.seg("later", &b);
    let want = vec![
        e("added", &a.series, &good.series_uid()),
        e("added", &b.series, &later.series_uid()),
    ];
    let start = std::time::Instant::now();
    while lab.got() != want {
        if start.elapsed() > std::time::Duration::from_secs(30) {
            let _ = watch.kill();
            panic!(
                "{:?}\n{}",
                lab.got(),
                std::fs::read_to_string(lab.dir.path().join("watch.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    terminate(watch);
}

/// `serve` on a free loopback port with the default configuration (no SEGBRIDGE_HOOK_TOKEN),
/// the feed and the reconcile far away: only hook calls act.
fn serve(lab: &Lab, port: u16, orthanc: &str) -> std::process::Child {
    serve_with(lab, port, orthanc, None)
}

/// [`serve`], with `SEGBRIDGE_HOOK_TOKEN` set when `token` is given.
fn serve_with(lab: &Lab, port: u16, orthanc: &str, token: Option<&str>) -> std::process::Child {
    let log = std::fs::File::create(lab.dir.path().join("serve.log")).unwrap();
    let mut cmd = lab.cmd("serve", &["--orthanc", orthanc]);
    if let Some(t) = token {
        cmd.env("SEGBRIDGE_HOOK_TOKEN", t);
    }
    let c = cmd
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--poll", "600", "--reconcile", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(
        "serve to listen",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    c
}

fn serve_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.path().join("serve.log")).unwrap_or_default()
}

/// A raw HTTP/1.1 POST: (status, body).
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// Issue 13, item 5: with the default configuration, a browser-style request (text/plain, a
/// foreign Origin, no token) to the deletion hook is refused; a deletion hook for a series that
/// still exists removes nothing even with the token; a real deletion still goes through; and the
/// token is generated by default and is the one `orthanc-lua` writes into the script.
#[test]
fn forged_deletions_remove_nothing() {
    let lab = Lab::new();
    let a = lab.ct("a");
    let s = lab.seg("s", &a);
    let port = free_port();
    let server = serve(&lab, port, &lab.orthanc.url);
    let added = vec![e("added", &a.series, &s.series_uid())];
    wait_until(
        "the first reconcile",
        std::time::Duration::from_secs(20),
        || lab.got() == added,
    );
    let id = segbridge::source::orthanc::series_id(&a.patient, &a.study, &s.series_uid());
    let body = format!(r#"{{"id": "{id}"}}"#);
    let path = "/hooks/orthanc/deleted-series";
    // what a web page in the operator's browser can send
    let (code, answer) = post(
        port,
        path,
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://evil.example"),
        ],
        &body,
    );
    assert!((400..500).contains(&code), "{answer}");
    let (code, answer) = post(port, path, &[("Content-Type", "text/plain")], &body);
    assert!((400..500).contains(&code), "{answer}");
    let (code, answer) = post(
        port,
        path,
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &body,
    );
    assert_eq!(code, 403, "{answer}");
    // no token: refused (one was generated)
    let (code, answer) = post(port, path, &[("Content-Type", "application/json")], &body);
    assert_eq!(code, 401, "{answer}");
    let token_file = lab.dir.path().join("segbridge.db.hook-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let lua = segbridge(lab.dir.path())
        .args(["orthanc-lua", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(lua.status.success(), "{}", text(&lua));
    assert!(String::from_utf8_lossy(&lua.stdout).contains(&format!("Bearer {}", token.trim())));
    // with the token, but the series is still there: nothing removed
    let auth = format!("Bearer {}", token.trim());
    let json = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let (code, answer) = post(port, path, &json, &body);
    assert_eq!(code, 202, "{answer}");
    wait_until("the check", std::time::Duration::from_secs(10), || {
        serve_log(&lab).contains("still has")
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lab.got(), added, "{}", serve_log(&lab));
    // a real deletion goes through
    lab.orthanc.delete(&format!("/series/{id}"));
    let (code, answer) = post(port, path, &json, &body);
    assert_eq!(code, 202, "{answer}");
    wait_until("the removal", std::time::Duration::from_secs(10), || {
        lab.got().len() == 2
    });
    assert_eq!(lab.got()[1], e("removed", &a.series, &s.series_uid()));
    terminate(server);
}

/// Issue 13, item 6: hook IDs and UIDs that are paths or queries are refused (400) and never
/// reach Orthanc; the proxy in front of Orthanc sees every request segbridge makes.
#[test]
fn hook_ids_cannot_steer_pacs_requests() {
    let lab = Lab::new();
    let proxy = SlowProxy::counting(&lab.orthanc.url);
    let port = free_port();
    // an explicit token: this attack comes with the right one
    let token = "hook-token-for-the-path-attacks";
    let server = serve_with(&lab, port, &proxy.url, Some(token));
    let auth = format!("Bearer {token}");
    let json = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let attacks = [
        (
            "/hooks/orthanc/stable-series",
            r#"{"id": "../tools/find", "modality": "SEG"}"#,
        ),
        (
            "/hooks/orthanc/stable-series",
            r#"{"id": "x/../../instances?expand=1&"}"#,
        ),
        (
            "/hooks/orthanc/deleted-series",
            r#"{"id": "%2e%2e/%2e%2e/changes"}"#,
        ),
        (
            "/hooks/orthanc/deleted-series",
            r#"{"id": "../tools/find"}"#,
        ),
        (
            "/hooks/series",
            r#"{"series_uid": "1.2.3", "study_uid": "../../../tools/reset?x="}"#,
        ),
        ("/hooks/series", r#"{"series_uid": "1.2.3&Modality=CT"}"#),
        (
            "/hooks/orthanc/stored-instance",
            r#"{"id": "../tools/find", "modality": "SEG"}"#,
        ),
        (
            "/hooks/orthanc/stored-instance",
            r#"{"id": "%2e%2e/%2e%2e/tools/reset"}"#,
        ),
        (
            "/hooks/orthanc/stored-instance",
            r#"{"id": "0a0a0a0a-0a0a0a0a-0a0a0a0a-0a0a0a0a-0a0a0a0a",
                "series": "x/../../instances?expand=1&"}"#,
        ),
    ];
    for (path, body) in attacks {
        let (code, answer) = post(port, path, &json, body);
        assert_eq!(code, 400, "{path} {body}: {answer}");
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let asked = proxy.requests.lock().unwrap().clone();
    for r in &asked {
        let lower = r.to_lowercase();
        assert!(
            !lower.contains("..")
                && !lower.contains("%2e")
                && !lower.contains("%2f")
                && !lower.contains("reset")
                && !lower.contains("expand")
                && !lower.contains("/instances"),
            "segbridge asked Orthanc {r}; all: {asked:?}"
        );
    }
    terminate(server);
}

/// Issue 13, item 7: a partial-header connection is closed within seconds, and 200 idle
/// connections against a `serve` limited to 128 descriptors do not stop its PACS source: a SEG
/// stored meanwhile is notified through the changes feed. Before: the partial header stayed
/// open, and the idle connections took every descriptor ("Too many open files").
#[test]
fn idle_and_slow_connections_cannot_starve_the_sources() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let lab = Lab::new();
    let a = lab.ct("a");
    let port = free_port();
    let log = std::fs::File::create(lab.dir.path().join("serve.log")).unwrap();
    let mut c = lab.cmd("serve", &["--orthanc", &lab.orthanc.url]);
    c.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--poll", "0.3", "--reconcile", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let server = c.spawn().unwrap();
    wait_until("serve to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    std::thread::sleep(Duration::from_secs(1)); // the first reconcile
                                                // a request whose headers never end
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"POST /hooks/series HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 512];
    // an answer, an end of stream or a reset all mean closed; only the 15 s read timeout does not
    let closed = match slow.read(&mut buf) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(
        closed && t.elapsed() < Duration::from_secs(10),
        "a partial header kept its connection open for {:?}",
        t.elapsed()
    );
    // idle connections, more than the process has descriptors
    let idle: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() > 150);
    std::thread::sleep(Duration::from_secs(1));
    let s = lab.seg("s", &a);
    wait_until(
        "the SEG stored while the connections are held",
        Duration::from_secs(30),
        || lab.got() == vec![e("added", &a.series, &s.series_uid())],
    );
    drop(idle);
    assert!(
        !serve_log(&lab).contains("Too many open files"),
        "{}",
        serve_log(&lab)
    );
    terminate(server);
}
