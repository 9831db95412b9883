//! `serve` with the shipped Lua script loaded in a REAL Orthanc: the hook delivers a stored SEG
//! and a deletion within seconds (with the changes feed and reconcile set far away, so nothing
//! else could), refuses bad callers without harm, and a restart loses nothing. `stored` has
//! the OnStoredInstance path, with Orthanc's default StableAge.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::json;

mod stored;

const TOKEN: &str = "hook-token-for-tests-5b1e";

struct Hooked {
    orthanc: Orthanc,
    emu: Emu,
    dataset: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl Hooked {
    fn new() -> Hooked {
        Hooked::with_stable_age(1)
    }
    fn with_stable_age(stable_age: u32) -> Hooked {
        Hooked::with(stable_age, true)
    }
    /// `with_script`: load the generated script (else hook calls come only from the test).
    fn with(stable_age: u32, with_script: bool) -> Hooked {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let lua = segbridge(dir.path())
            .env("SEGBRIDGE_HOOK_TOKEN", TOKEN)
            .args(["orthanc-lua", "--url", &format!("http://127.0.0.1:{port}")])
            .output()
            .unwrap();
        assert!(lua.status.success(), "{}", text(&lua));
        let script = dir.path().join("segbridge.lua");
        std::fs::write(&script, &lua.stdout).unwrap();
        let scripts = if with_script { vec![script] } else { vec![] };
        let orthanc = Orthanc::start(json!({"LuaScripts": scripts, "StableAge": stable_age}));
        let emu = Emu::start();
        let dataset = emu.create_dataset();
        Hooked {
            orthanc,
            emu,
            dataset,
            dir,
            port,
        }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// serve with the feed and reconcile far away: only the hook can be quick.
    fn serve(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let c = segbridge(self.dir.path())
            .env("MONAI_API_KEY", &self.emu.key)
            .env("SEGBRIDGE_HOOK_TOKEN", TOKEN)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--orthanc",
                &self.orthanc.url,
                "--dataset",
                &self.dataset,
                "--api",
                &self.emu.url,
            ])
            .args(["--poll", "600", "--reconcile", "600", "--retry-for", "5"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while self.get("/healthz").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "serve did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
    fn get(&self, path: &str) -> Option<(u16, String)> {
        self.emu.rt.block_on(async {
            let r = reqwest::get(format!("{}{path}", self.url())).await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        })
    }
    fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
        self.emu.rt.block_on(async {
            let mut r = reqwest::Client::new()
                .post(format!("{}{path}", self.url()))
                .header("content-type", "application/json")
                .body(body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }
    fn metric(&self, line_start: &str) -> Option<u64> {
        let (_, m) = self.get("/metrics")?;
        m.lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
    }
    fn store(&self, name: &str) -> (CtSeries, SegSpec) {
        let ct = CtSeries::new(name, 1);
        let mut files = write_ct(&self.dir.path().join(name), &ct, "IM").unwrap();
        let s = SegSpec::new(&format!("{name}-seg"), &ct);
        files.extend(write_seg(&self.dir.path().join(name), &s, "seg").unwrap());
        self.orthanc.stow(&files);
        (ct, s)
    }
    fn wait_entries(&self, n: usize, within: Duration, what: &str) -> Duration {
        let start = Instant::now();
        while entries(&self.emu.notifications()).len() < n {
            assert!(
                start.elapsed() < within,
                "{what}: {} entries after {within:?}\nserve log:\n{}\northanc log:\n{}",
                entries(&self.emu.notifications()).len(),
                self.log(),
                self.orthanc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }
}

fn stop(mut c: Child) {
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.wait().unwrap().success());
}

#[test]
fn stored_and_deleted_seg_reach_the_api_through_the_hook() {
    let h = Hooked::new();
    let serve = h.serve();
    let (ct, s) = h.store("a");
    // StableAge 1 s + the hook; the feed polls every 10 minutes, so this is the hook
    h.wait_entries(1, Duration::from_secs(8), "the stored SEG");
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    let id = segbridge::source::orthanc::series_id(&ct.patient, &ct.study, &s.series_uid());
    h.orthanc.delete(&format!("/series/{id}"));
    h.wait_entries(2, Duration::from_secs(8), "the deletion");
    assert_eq!(
        entries(&h.emu.notifications())[1],
        e("removed", &ct.series, &s.series_uid())
    );
    // metrics and health say so (once segbridge has confirmed what the emulator already has)
    let start = Instant::now();
    let (code, m) = loop {
        let (code, m) = h.get("/metrics").unwrap();
        if m.contains("segbridge_entries_sent_total 2") || start.elapsed() > Duration::from_secs(5)
        {
            break (code, m);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 200);
    assert!(m.contains("segbridge_entries_sent_total 2"), "{m}");
    assert!(m.contains("segbridge_outbox_depth 0"), "{m}");
    let (code, hz) = h.get("/healthz").unwrap();
    assert_eq!(code, 200, "{hz}");
    let hz: serde_json::Value = serde_json::from_str(&hz).unwrap();
    assert_eq!(hz["status"], "ok");
    assert!(hz["last_successful_notify"].is_string());
    stop(serve);
}

#[test]
fn bad_callers_are_refused_and_harm_nothing() {
    let h = Hooked::new();
    let serve = h.serve();
    let body = serde_json::to_vec(
        &json!({"id": "0a0a0a0a-0a0a0a0a-0a0a0a0a-0a0a0a0a-0a0a0a0a", "modality": "SEG"}),
    )
    .unwrap();
    assert_eq!(
        h.post("/hooks/orthanc/stable-series", None, body.clone()).0,
        401
    );
    assert_eq!(
        h.post("/hooks/orthanc/stable-series", Some("wrong"), body.clone())
            .0,
        401
    );
    assert_eq!(
        h.post("/hooks/orthanc/deleted-series", Some("wrong"), body.clone())
            .0,
        401
    );
    let (code, why) = h.post(
        "/hooks/orthanc/stable-series",
        Some(TOKEN),
        b"{not json".to_vec(),
    );
    assert_eq!(code, 400);
    assert!(why.contains("malformed JSON"), "{why}");
    let huge = vec![b' '; 1024 * 1024];
    assert_eq!(
        h.post("/hooks/orthanc/stable-series", Some(TOKEN), huge).0,
        413
    );
    // a non-SEG is ignored cheaply; a good call is accepted at once
    let (code, b) = h.post(
        "/hooks/orthanc/stable-series",
        Some(TOKEN),
        br#"{"id": "0b0b0b0b-0b0b0b0b-0b0b0b0b-0b0b0b0b-0b0b0b0b", "modality": "CT"}"#.to_vec(),
    );
    assert_eq!((code, b.contains("ignored")), (202, true));
    let t = Instant::now();
    assert_eq!(
        h.post("/hooks/orthanc/stable-series", Some(TOKEN), body).0,
        202
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    let m = h.get("/metrics").unwrap().1;
    // authorized calls only: the malformed one, the CT one, the good one (413 never reaches it)
    assert!(
        m.contains("segbridge_hooks_received_total 3"),
        "unauthenticated calls counted: {m}"
    );
    // still healthy, still working
    assert_eq!(h.get("/healthz").unwrap().0, 200);
    let (ct, s) = h.store("after");
    h.wait_entries(1, Duration::from_secs(8), "a SEG after the bad calls");
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    assert!(!h.log().contains(TOKEN), "the token was logged");
    stop(serve);
}

#[test]
fn a_restart_while_orthanc_keeps_storing_loses_nothing() {
    let h = Hooked::new();
    let serve = h.serve();
    h.store("first");
    h.wait_entries(1, Duration::from_secs(8), "the first SEG");
    stop(serve);
    // stored while segbridge is down: the hooks fail (Orthanc is not disturbed)
    h.store("while-down-1");
    h.store("while-down-2");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.orthanc.get_json("/system")["Name"], "SEGBRIDGE_TEST");
    let serve = h.serve();
    // the reconcile on start finds them
    h.wait_entries(3, Duration::from_secs(10), "the SEGs stored while down");
    stop(serve);
    // started again with nothing new to send: /healthz still knows the last success (from
    // the ledger; it was in memory only, and said "never" after every restart)
    let serve = h.serve();
    let (code, hz) = h.get("/healthz").unwrap();
    assert_eq!(code, 200, "{hz}");
    let hz: serde_json::Value = serde_json::from_str(&hz).unwrap();
    assert!(hz["last_successful_notify"].is_string(), "{hz}");
    assert!(
        hz["seconds_since_last_success"].as_i64().unwrap() >= 0,
        "{hz}"
    );
    let m = h.metric("segbridge_seconds_since_last_success ");
    assert!(m.is_some(), "not a count of seconds");
    assert_eq!(
        h.metric("segbridge_entries_sent_total "),
        Some(0),
        "something was sent"
    );
    stop(serve);
}

#[test]
fn twenty_segs_at_once_are_notified_batched() {
    let h = Hooked::new();
    let serve = h.serve();
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..20 {
        let ct = CtSeries::new(&format!("many{i}"), 1);
        files.extend(write_ct(&h.dir.path().join(format!("m{i}")), &ct, "IM").unwrap());
        files.extend(
            write_seg(
                &h.dir.path().join(format!("m{i}")),
                &SegSpec::new(&format!("many{i}-seg"), &ct),
                "seg",
            )
            .unwrap(),
        );
    }
    h.orthanc.stow(&files);
    h.wait_entries(20, Duration::from_secs(15), "20 SEGs");
    let bodies = h.emu.notifications();
    let mut labels: Vec<String> = entries(&bodies).into_iter().map(|(_, _, l)| l).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), 20);
    assert!(bodies.len() < 20, "not batched: {} calls", bodies.len());
    stop(serve);
}

#[test]
fn off_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = segbridge(dir.path())
        .env("MONAI_API_KEY", "k")
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--orthanc",
            "http://127.0.0.1:9",
            "--dataset",
            "d",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("SEGBRIDGE_HOOK_TOKEN"));
}

#[test]
fn a_generic_webhook_names_a_series_by_uid() {
    let h = Hooked::new();
    // serve over plain DICOMweb: the Orthanc-ID hooks cannot be used, the generic one can
    let log = std::fs::File::create(h.dir.path().join("serve.log")).unwrap();
    let serve = segbridge(h.dir.path())
        .env("MONAI_API_KEY", &h.emu.key)
        .env("SEGBRIDGE_HOOK_TOKEN", TOKEN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", h.port)])
        .args([
            "--dicomweb",
            &h.orthanc.dicomweb(),
            "--dataset",
            &h.dataset,
            "--api",
            &h.emu.url,
        ])
        .args(["--poll", "600", "--reconcile", "600"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while h.get("/healthz").is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1)); // the initial listing
    let (ct, s) = h.store("generic");
    let body =
        serde_json::to_vec(&json!({"series_uid": s.series_uid(), "study_uid": ct.study})).unwrap();
    assert_eq!(h.post("/hooks/series", Some(TOKEN), body).0, 202);
    h.wait_entries(1, Duration::from_secs(8), "the webhook's SEG");
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    stop(serve);
}
