//! The fault matrix: every test ends by asserting the exact set of labels notified, and how
//! many duplicates at most. RELIABILITY.md records what is tried here and what held.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::emulator::EmulatorConfig;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::json;

/// A folder of `n` labelled studies; returns (image, label) pairs.
fn studies(folder: &Path, prefix: &str, n: usize) -> BTreeSet<(String, String)> {
    (0..n)
        .map(|i| {
            let ct = CtSeries::new(&format!("{prefix}{i}"), 1);
            write_ct(&folder.join(format!("{prefix}{i}")), &ct, "IM").unwrap();
            let s = SegSpec::new(&format!("{prefix}{i}-seg"), &ct);
            write_seg(&folder.join(format!("{prefix}{i}")), &s, "seg").unwrap();
            (ct.series, s.series_uid())
        })
        .collect()
}

/// Added entries: (image, label) → how many times.
fn added(emu: &Emu) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for (s, i, l) in entries(&emu.notifications()) {
        assert_eq!(s, "added", "unexpected section {s}");
        *m.entry((i, l)).or_default() += 1;
    }
    m
}

fn assert_exactly(emu: &Emu, want: &BTreeSet<(String, String)>, max_dups: usize) {
    let got = added(emu);
    let keys: BTreeSet<(String, String)> = got.keys().cloned().collect();
    assert_eq!(&keys, want, "the notified set differs");
    let dups: usize = got.values().map(|n| n - 1).sum();
    assert!(
        dups <= max_dups,
        "{dups} duplicates, at most {max_dups} allowed"
    );
}

struct Lab {
    dir: tempfile::TempDir,
    emu: Emu,
    ds: String,
}

impl Lab {
    fn new(cfg: EmulatorConfig) -> Lab {
        let emu = Emu::with(cfg);
        let ds = emu.create_dataset();
        Lab {
            dir: tempfile::tempdir().unwrap(),
            emu,
            ds,
        }
    }
    fn folder(&self) -> PathBuf {
        self.dir.path().join("f")
    }
    fn sync(&self, extra: &[&str]) -> std::process::Output {
        sync(&self.emu, self.dir.path(), &self.folder(), &self.ds, extra)
    }
}

#[test]
fn api_500_burst_then_success_in_one_run() {
    let lab = Lab::new(Default::default());
    let want = studies(&lab.folder(), "a", 5);
    lab.emu
        .fault(json!({"status": 500, "count": 5, "path_contains": "/jobs"}));
    let o = lab.sync(&["--retry-for", "30", "--batch", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_exactly(&lab.emu, &want, 0);
}

#[test]
fn api_503_for_a_long_time_then_recovers() {
    let lab = Lab::new(Default::default());
    let want = studies(&lab.folder(), "b", 4);
    lab.emu
        .fault(json!({"status": 503, "count": 100000, "path_contains": "/jobs"}));
    for _ in 0..3 {
        let o = lab.sync(&["--retry-for", "0.5"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    }
    assert!(lab.emu.notifications().is_empty());
    lab.emu.clear_faults();
    assert!(lab.sync(&[]).status.success());
    assert_exactly(&lab.emu, &want, 0);
}

#[test]
fn a_hanging_request_times_out_and_is_retried() {
    let lab = Lab::new(Default::default());
    let want = studies(&lab.folder(), "c", 3);
    // the server sits on the request past the client's timeout, then processes it anyway
    lab.emu
        .fault(json!({"delay_ms": 2500, "count": 1, "path_contains": "/jobs"}));
    let o = lab.sync(&["--request-timeout", "0.5", "--retry-for", "30"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("timed out"),
        "{}",
        text(&o)
    );
    std::thread::sleep(Duration::from_secs(3));
    // the hung request may land after all: at most that one batch twice
    assert_exactly(&lab.emu, &want, 3);
}

#[test]
fn every_call_after_the_token_ttl_logs_in_again() {
    let lab = Lab::new(EmulatorConfig {
        token_ttl: Duration::from_millis(300),
        ..Default::default()
    });
    let want = studies(&lab.folder(), "d", 4);
    // each answer comes late, so each next notify carries an expired token: 401 every time
    lab.emu.fault(
        json!({"delay_ms": 350, "count": 1000, "after_processing": true, "path_contains": "/jobs"}),
    );
    let o = lab.sync(&["--batch", "1", "--retry-for", "30"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_exactly(&lab.emu, &want, 0);
    // login, then for each later notify: 401, login, notify
    let calls = lab.emu.get("/_emulator/stats")["calls"].as_u64().unwrap();
    assert!(
        calls >= 11,
        "expected a 401 and a new login before each later notify, got {calls} calls"
    );
}

#[test]
fn login_failing_is_retried() {
    let lab = Lab::new(Default::default());
    let want = studies(&lab.folder(), "e", 2);
    lab.emu
        .fault(json!({"status": 502, "count": 3, "path_contains": "/login"}));
    let o = lab.sync(&["--retry-for", "30"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_exactly(&lab.emu, &want, 0);
}

/// Kills `sync` with SIGKILL at random points, 50 times, adding labels as it goes; a last
/// sync delivers everything; the state file stays sound; duplicates stay within one batch per
/// kill.
#[test]
fn kill9_sync_at_random_points_50_times() {
    let lab = Lab::new(Default::default());
    let mut want = studies(&lab.folder(), "k", 10);
    // slow notifies widen the send/confirm window
    lab.emu.fault(json!({"delay_ms": 150, "count": 100000, "path_contains": "/jobs", "after_processing": true}));
    let batch = 3;
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut kills = 0;
    let state = lab.dir.path().join("segbridge.db");
    for round in 0..50 {
        // new labels every round, so that every sync has something to send
        want.extend(studies(&lab.folder(), &format!("k{round}-"), 3));
        let mut child = segbridge(lab.dir.path())
            .env("MONAI_API_KEY", &lab.emu.key)
            .args(["sync", "--folder"])
            .arg(lab.folder())
            .args([
                "--dataset",
                &lab.ds,
                "--api",
                &lab.emu.url,
                "--batch",
                &batch.to_string(),
                "--lock-wait",
                "10",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 400));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        let ledger = segbridge::ledger::Ledger::open_read_only(&segbridge::ledger::StateAt::File(
            state.clone(),
        ))
        .unwrap();
        assert_eq!(ledger.integrity_check().unwrap(), "ok", "round {round}");
    }
    lab.emu.clear_faults();
    let o = lab.sync(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        kills >= 15,
        "only {kills} kills landed: the test did not test"
    );
    assert_exactly(&lab.emu, &want, kills * batch);
    eprintln!(
        "kill -9 of sync: {kills} kills in 50 rounds, {} labels, {} entries sent",
        want.len(),
        entries(&lab.emu.notifications()).len()
    );
}

/// The same for `watch`: killed while labels keep arriving; restarted each time.
#[test]
fn kill9_watch_while_labels_arrive() {
    let lab = Lab::new(Default::default());
    let mut want = studies(&lab.folder(), "w", 3);
    lab.emu.fault(json!({"delay_ms": 30, "count": 100000, "path_contains": "/jobs", "after_processing": true}));
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut kills = 0;
    for round in 0..20 {
        let mut child = segbridge(lab.dir.path())
            .env("MONAI_API_KEY", &lab.emu.key)
            .args(["watch", "--folder"])
            .arg(lab.folder())
            .args([
                "--dataset",
                &lab.ds,
                "--api",
                &lab.emu.url,
                "--batch",
                "2",
                "--lock-wait",
                "10",
                "--reconcile",
                "5",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        want.extend(studies(&lab.folder(), &format!("w{round}-"), 1));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 800));
        child.kill().unwrap();
        kills += 1;
        child.wait().unwrap();
    }
    lab.emu.clear_faults();
    assert!(lab.sync(&[]).status.success());
    assert_exactly(&lab.emu, &want, kills * 2);
    let state = lab.dir.path().join("segbridge.db");
    let ledger =
        segbridge::ledger::Ledger::open_read_only(&segbridge::ledger::StateAt::File(state.clone()))
            .unwrap();
    assert_eq!(ledger.integrity_check().unwrap(), "ok");
}

#[test]
fn a_pacs_that_fails_or_truncates_mid_listing_removes_nothing() {
    let orthanc = Orthanc::start(json!({}));
    let proxy = FaultyPacs::start(&orthanc.url);
    let lab = Lab::new(Default::default());
    let tmp = lab.dir.path();
    let mut want = BTreeSet::new();
    for i in 0..6 {
        let ct = CtSeries::new(&format!("p{i}"), 1);
        let mut files = write_ct(&tmp.join(format!("p{i}")), &ct, "IM").unwrap();
        let s = SegSpec::new(&format!("p{i}-seg"), &ct);
        files.extend(write_seg(&tmp.join(format!("p{i}")), &s, "seg").unwrap());
        orthanc.stow(&files);
        want.insert((ct.series, s.series_uid()));
    }
    let dw = format!("{}/dicom-web", proxy.url);
    let run = |extra: &[&str]| {
        segbridge(tmp)
            .env("MONAI_API_KEY", &lab.emu.key)
            .args([
                "sync",
                "--dicomweb",
                &dw,
                "--page-size",
                "2",
                "--dataset",
                &lab.ds,
                "--api",
                &lab.emu.url,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    assert_exactly(&lab.emu, &want, 0);
    // page 2 of the listing fails, then is cut in half: the listing is incomplete, nothing is removed
    for mode in ["500", "truncate"] {
        proxy.fail("offset=2", mode, 100);
        let o = run(&[]);
        assert_eq!(o.status.code(), Some(5), "{mode}: {}", text(&o));
        proxy.heal();
    }
    // the metadata of a new SEG fails once: not lost, read on the next run
    let ct = CtSeries::new("late-meta", 1);
    let mut files = write_ct(&tmp.join("lm"), &ct, "IM").unwrap();
    let s = SegSpec::new("late-meta-seg", &ct);
    files.extend(write_seg(&tmp.join("lm"), &s, "seg").unwrap());
    orthanc.stow(&files);
    proxy.fail("/metadata", "truncate", 3);
    let _ = run(&[]);
    proxy.heal();
    assert!(run(&[]).status.success());
    want.insert((ct.series, s.series_uid()));
    assert_exactly(&lab.emu, &want, 0);
    // Orthanc stopped: a failed listing, nothing removed
    drop(orthanc);
    let o = run(&["--retry-for", "1"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_exactly(&lab.emu, &want, 0);
}

#[test]
fn a_read_only_or_full_disk_is_a_clear_error_and_nothing_is_marked_sent() {
    let lab = Lab::new(Default::default());
    let want = studies(&lab.folder(), "disk", 3);
    // a directory nobody can write (sysfs refuses new files, even to root)
    let o = lab.sync(&["--state", "/sys/segbridge-test.db"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/sys/segbridge-test.db"),
        "{}",
        text(&o)
    );
    assert!(lab.emu.notifications().is_empty());
    // a full disk: the process may not grow any file past 16 KiB
    let limited = |extra: &[&str]| {
        let mut c = segbridge(lab.dir.path());
        c.env("MONAI_API_KEY", &lab.emu.key)
            .args(["sync", "--folder"])
            .arg(lab.folder())
            .args(["--dataset", &lab.ds, "--api", &lab.emu.url])
            .args(extra);
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: 16 * 1024,
                    rlim_max: 16 * 1024,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                Ok(())
            });
        }
        c.output().unwrap()
    };
    let o = limited(&["--state", "full.db"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("full") || err.contains("disk") || err.contains("large"),
        "{err}"
    );
    assert!(
        lab.emu.notifications().is_empty(),
        "sent although nothing could be recorded"
    );
    // room again: everything goes, once
    let o = lab.sync(&["--state", "full.db"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_exactly(&lab.emu, &want, 0);
}

#[test]
fn a_manual_sync_while_watch_runs_is_refused_clearly() {
    let lab = Lab::new(Default::default());
    let want = studies(&lab.folder(), "m", 2);
    let mut w = segbridge(lab.dir.path())
        .env("MONAI_API_KEY", &lab.emu.key)
        .args(["watch", "--folder"])
        .arg(lab.folder())
        .args(["--dataset", &lab.ds, "--api", &lab.emu.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("watch to deliver", Duration::from_secs(20), || {
        added(&lab.emu).len() == want.len()
    });
    let o = lab.sync(&["--lock-wait", "0.3"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another segbridge process (pid"));
    // status still reads while watch writes
    let st = segbridge(lab.dir.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", text(&st));
    Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    assert!(w.wait().unwrap().success());
    assert_exactly(&lab.emu, &want, 0);
}

#[test]
fn secrets_never_appear_in_any_output() {
    let orthanc = Orthanc::start(
        json!({"AuthenticationEnabled": true, "RegisteredUsers": {"bridge": "pacs-SECRET-pw-4471"}}),
    );
    let emu = Emu::with(EmulatorConfig {
        api_key: "mk-SECRET-key-9902".into(),
        ..Default::default()
    });
    let ds = emu.create_dataset();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("f");
    studies(&folder, "s", 2);
    let ct = CtSeries::new("sec", 1);
    let mut files = write_ct(&tmp.path().join("o"), &ct, "IM").unwrap();
    files.extend(write_seg(&tmp.path().join("o"), &SegSpec::new("sec-seg", &ct), "seg").unwrap());
    orthanc.stow(&files);
    let secrets = [
        "mk-SECRET-key-9902",
        "pacs-SECRET-pw-4471",
        "hook-SECRET-tok-1234",
        "emu-",
    ];
    let mut outputs = Vec::new();
    let base = |c: &mut Command| {
        c.env("MONAI_API_KEY", "mk-SECRET-key-9902")
            .env("DICOMWEB_PASSWORD", "pacs-SECRET-pw-4471")
            .env("SEGBRIDGE_HOOK_TOKEN", "hook-SECRET-tok-1234")
            .env("RUST_LOG", "segbridge=trace")
            .env("SEGBRIDGE_API", &emu.url);
    };
    let runs: Vec<Vec<String>> = vec![
        vec![
            "sync".into(),
            "--folder".into(),
            folder.display().to_string(),
            "--dataset".into(),
            ds.clone(),
        ],
        vec![
            "sync".into(),
            "--orthanc".into(),
            orthanc.url.clone(),
            "--dicomweb-user".into(),
            "bridge".into(),
            "--dataset".into(),
            ds.clone(),
        ],
        vec![
            "sync".into(),
            "--dry-run".into(),
            "--folder".into(),
            folder.display().to_string(),
            "--dataset".into(),
            ds.clone(),
        ],
        vec!["status".into(), "--json".into()],
        vec!["status".into()],
        vec!["api".into(), "login".into()],
        vec!["api".into(), "--json".into(), "login".into()],
        // a wrong password and a wrong key: the errors must not echo what was sent
        vec![
            "sync".into(),
            "--orthanc".into(),
            orthanc.url.clone(),
            "--dicomweb-user".into(),
            "nobody".into(),
            "--dataset".into(),
            ds.clone(),
        ],
    ];
    for r in &runs {
        let mut c = segbridge(tmp.path());
        base(&mut c);
        c.args(r);
        outputs.push((r.join(" "), c.output().unwrap()));
    }
    let mut c = segbridge(tmp.path());
    base(&mut c);
    c.env("MONAI_API_KEY", "mk-SECRET-key-WRONG")
        .args(["sync", "--folder"])
        .arg(&folder)
        .args(["--dataset", &ds]);
    outputs.push(("wrong key".into(), c.output().unwrap()));
    // serve, with its endpoint called once without and once with the token
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = segbridge(tmp.path());
    base(&mut c);
    let serve = c
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--folder",
        ])
        .arg(&folder)
        .args(["--dataset", &ds])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    emu.rt.block_on(async {
        let c = reqwest::Client::new();
        let u = format!("http://127.0.0.1:{port}/hooks/series");
        let _ = c.post(&u).body("{}").send().await;
        let _ = c
            .post(&u)
            .bearer_auth("hook-SECRET-tok-1234")
            .body(r#"{"series_uid": "1.2"}"#)
            .send()
            .await;
        let _ = c
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await;
    });
    Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    outputs.push(("serve".into(), serve.wait_with_output().unwrap()));
    for (what, o) in &outputs {
        let all = text(o);
        for s in secrets {
            assert!(!all.contains(s), "{what} printed a secret ({s}):\n{all}");
        }
    }
    // and the state file holds none of them either
    let db = std::fs::read(tmp.path().join("segbridge.db")).unwrap();
    for s in secrets.iter().take(3) {
        assert!(
            !db.windows(s.len()).any(|w| w == s.as_bytes()),
            "the state file holds {s}"
        );
    }
}
