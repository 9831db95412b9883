//! Store-to-notify latency on a real Orthanc, per mode and per Orthanc StableAge:
//! - `hook`: `serve` with the generated Lua script (OnStoredInstance, OnStableSeries,
//!   OnDeletedSeries): a SEG is read once its series is quiet, not once Orthanc calls it stable;
//! - `stable-hook`: `serve` with the same script minus OnStoredInstance (the hook as it was:
//!   OnStableSeries only);
//! - `changes-feed` (`watch --orthanc`) and `qido-polling` (`watch --dicomweb`), StableAge 1 only;
//! - the floor, `orthanc-floor`: the script posting to a bare listener, nothing of segbridge in
//!   it; it gives two rows, when Orthanc calls OnStoredInstance and when it calls OnStableSeries.
//!
//! SEG series are stored one after another with STOW-RS; each latency runs from the STOW answer
//! to the notify arriving at the emulator (or the hook arriving at the listener).
//!
//!     cargo bench --bench latency                          # 50 SEGs per mode, StableAge 1 and 60
//!     cargo bench --bench latency -- --n 8                 # quicker
//!     cargo bench --bench latency -- --stable-age 60       # one StableAge only
//!
//! At StableAge 60 the SEGs of the slow modes are stored without waiting for each other (their
//! waits overlap), so a run takes about a minute more than its stores, not a minute per SEG.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::free_port;
use common::orthanc::Orthanc;
use common::Emu;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::json;

const POLL: &str = "2";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Floor,
    Hook,
    StableHook,
    ChangesFeed,
    QidoPolling,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Floor => "orthanc-floor",
            Kind::Hook => "hook",
            Kind::StableHook => "stable-hook",
            Kind::ChangesFeed => "changes-feed",
            Kind::QidoPolling => "qido-polling",
        }
    }
    /// Whether its latency is about StableAge (then the stores do not wait for each other).
    fn waits_for_stable_age(self) -> bool {
        matches!(self, Kind::StableHook | Kind::ChangesFeed)
    }
}

struct Row {
    what: String,
    stable_age: u64,
    samples: Vec<f64>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[idx]
}

/// Requests the bare listener received: (arrival ms, request line and body).
type Seen = Arc<Mutex<Vec<(u128, String)>>>;

/// A bare HTTP listener that records when each request arrives and what it says: Orthanc's
/// own hook delay, with nothing of segbridge in it.
fn floor_listener(port: u16) -> Seen {
    use std::io::{Read, Write};
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            // headers, then Content-Length bytes of body
            loop {
                let n = c.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(h) = text.find("\r\n\r\n") {
                    let len = text[..h]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= h + 4 + len {
                        break;
                    }
                }
            }
            seen.lock()
                .unwrap()
                .push((now_ms(), String::from_utf8_lossy(&got).to_string()));
            let _ = c.write_all(
                b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    out
}

/// The generated script, without OnStoredInstance for `stable-hook`.
fn script(port: u16, token: &str, kind: Kind) -> String {
    let lua = Command::new(env!("CARGO_BIN_EXE_segbridge"))
        .env("SEGBRIDGE_HOOK_TOKEN", token)
        .args(["orthanc-lua", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let lua = String::from_utf8(lua.stdout).unwrap();
    if kind != Kind::StableHook {
        return lua;
    }
    let start = lua.find("function OnStoredInstance").unwrap();
    let end = start + lua[start..].find("\nend\n").unwrap() + "\nend\n".len();
    format!("{}{}", &lua[..start], &lua[end..])
}

/// When each label arrived (ms), as far as known now: `(path fragment, label)` at the floor
/// listener, or in a notify body at the emulator.
fn arrivals(kind: Kind, floor: Option<&Seen>, emu: &Emu, path: &str) -> Vec<(u128, String)> {
    if kind == Kind::Floor {
        return floor
            .unwrap()
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.lines().next().is_some_and(|l| l.contains(path)))
            .cloned()
            .collect();
    }
    emu.get("/_emulator/notifications?timed=true")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["received_ms"].as_u64().unwrap() as u128,
                n["body"].to_string(),
            )
        })
        .collect()
}

fn first_arrival(seen: &[(u128, String)], label: &str) -> Option<u128> {
    seen.iter()
        .filter(|(_, b)| b.contains(label))
        .map(|(t, _)| *t)
        .min()
}

fn run(kind: Kind, stable_age: u64, n: usize) -> Vec<Row> {
    let name = kind.name();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let floor = (kind == Kind::Floor).then(|| floor_listener(port));
    let token = "bench-token";
    let mut extra = json!({"StableAge": stable_age});
    if matches!(kind, Kind::Floor | Kind::Hook | Kind::StableHook) {
        let path = dir.path().join("hook.lua");
        std::fs::write(&path, script(port, token, kind)).unwrap();
        extra["LuaScripts"] = json!([path]);
    }
    let orthanc = Orthanc::start(extra);
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    // the images first, so each SEG is matched the moment it is read
    let tag = format!("lat-{name}-{stable_age}");
    let cts: Vec<CtSeries> = (0..n)
        .map(|i| CtSeries::new(&format!("{tag}-{i}"), 1))
        .collect();
    let mut files = Vec::new();
    for ct in &cts {
        files.extend(write_ct(&dir.path().join(&ct.name), ct, "IM").unwrap());
    }
    orthanc.stow(&files);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segbridge"));
    cmd.current_dir(dir.path())
        .env("MONAI_API_KEY", &emu.key)
        .env("SEGBRIDGE_HOOK_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let listen = format!("127.0.0.1:{port}");
    match kind {
        Kind::Hook | Kind::StableHook => cmd.args([
            "serve",
            "--listen",
            &listen,
            "--orthanc",
            &orthanc.url,
            "--poll",
            "600",
        ]),
        Kind::ChangesFeed => cmd.args(["watch", "--orthanc", &orthanc.url, "--poll", POLL]),
        _ => cmd.args(["watch", "--dicomweb", &orthanc.dicomweb(), "--poll", POLL]),
    };
    cmd.args([
        "--dataset",
        &dataset,
        "--api",
        &emu.url,
        "--reconcile",
        "600",
    ]);
    let mut child: Option<Child> = floor.is_none().then(|| cmd.spawn().unwrap());
    std::thread::sleep(Duration::from_secs(2)); // the initial reconcile
                                                // what each row waits for: the notify, or at the floor each hook's own post
    let paths: &[(&str, &str)] = match kind {
        Kind::Floor => &[
            ("/stored-instance", "Orthanc's OnStoredInstance call"),
            ("/stable-series", "Orthanc's OnStableSeries call"),
        ],
        _ => &[("", "")],
    };
    let wait_each = !kind.waits_for_stable_age() || stable_age <= 1;
    let timeout = Duration::from_secs(stable_age + 30);
    let mut stored: Vec<(String, u128)> = Vec::new();
    let wait_for = |label: &str, path: &str, since: Instant| -> u128 {
        loop {
            let seen = arrivals(kind, floor.as_ref(), &emu, path);
            if let Some(t) = first_arrival(&seen, label) {
                return t;
            }
            assert!(
                since.elapsed() < timeout,
                "{name} (StableAge {stable_age}): {label} {path} not seen within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut got: HashMap<(String, &str), u128> = HashMap::new();
    // a pseudo-random pause before each store, so samples fall at every phase of Orthanc's
    // stability check and of the poll interval instead of locking onto one
    let mut seed: u64 = 0x5eed_u64 ^ name.len() as u64;
    for (i, ct) in cts.iter().enumerate() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 2000));
        let s = SegSpec::new(&format!("{tag}-seg-{i}"), ct);
        let seg = write_seg(&dir.path().join(&ct.name), &s, "seg").unwrap();
        orthanc.stow(&seg);
        let t0 = now_ms();
        let label = s.series_uid();
        // the first path (the fast one at the floor) is waited for before the next store
        if wait_each || kind == Kind::Floor {
            let (p, _) = paths[0];
            got.insert((label.clone(), p), wait_for(&label, p, Instant::now()));
        }
        stored.push((label, t0));
    }
    let since = Instant::now();
    let mut rows = Vec::new();
    for (p, what) in paths {
        let mut samples = Vec::new();
        for (label, t0) in &stored {
            let t = match got.get(&(label.clone(), *p)) {
                Some(t) => *t,
                None => wait_for(label, p, since),
            };
            // signed: Orthanc may call OnStoredInstance before the STOW answer is back
            samples.push((t as f64 - *t0 as f64) / 1000.0);
        }
        let what = match kind {
            Kind::Floor => format!("{name}: {what} (no segbridge)"),
            _ => name.to_string(),
        };
        rows.push(Row {
            what,
            stable_age,
            samples,
        });
    }
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    rows
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if args.iter().any(|a| a == "--list") {
        println!("latency: bench");
        return;
    }
    let n: usize = value("--n").and_then(|v| v.parse().ok()).unwrap_or(50);
    let ages: Vec<u64> = match value("--stable-age") {
        Some(v) => v.split(',').filter_map(|a| a.trim().parse().ok()).collect(),
        None => vec![1, 60],
    };
    let mut rows = Vec::new();
    for &age in &ages {
        let mut kinds = vec![Kind::Floor, Kind::Hook, Kind::StableHook];
        if age <= 1 {
            kinds.extend([Kind::ChangesFeed, Kind::QidoPolling]);
        }
        for kind in kinds {
            eprintln!("measuring {} at StableAge {age} ({n} SEGs)...", kind.name());
            rows.extend(run(kind, age, n));
        }
    }
    println!("\nstore-to-notify latency, {n} SEG series each, poll {POLL} s");
    println!("| mode | StableAge (s) | median (s) | p95 (s) | min (s) | max (s) |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.what,
            r.stable_age,
            percentile(&r.samples, 0.5),
            percentile(&r.samples, 0.95),
            percentile(&r.samples, 0.0),
            percentile(&r.samples, 1.0),
        );
    }
    println!();
    for &age in &ages {
        let med = |what: &dyn Fn(&str) -> bool| {
            rows.iter()
                .find(|r| r.stable_age == age && what(&r.what))
                .map(|r| percentile(&r.samples, 0.5))
        };
        if let (Some(hook), Some(stable), Some(floor)) = (
            med(&|w| w == "hook"),
            med(&|w| w.contains("OnStableSeries")),
            med(&|w| w.contains("OnStoredInstance")),
        ) {
            println!(
                "StableAge {age}: hook median {hook:.3} s; Orthanc calls OnStoredInstance at \
                 {floor:.3} s and OnStableSeries at {stable:.3} s ({:.0}x the hook); goal < 0.5 s: {}",
                stable / hook,
                if hook < 0.5 { "met" } else { "missed" }
            );
        }
    }
}
