//! Store-to-notify latency, three ways, in one run on one real Orthanc:
//! the Lua hook (`serve`), the Orthanc changes feed (`watch --orthanc`), and QIDO polling
//! (`watch --dicomweb`). SEG series are stored one after another with STOW-RS; for each, the
//! time from the STOW answer to the notify arriving at the emulator is measured.
//!
//!     cargo bench --bench latency              # 50 SEGs per mode
//!     cargo bench --bench latency -- --n 5     # quicker
//!
//! Orthanc's StableAge is 1 s, the floor every mode waits for (Orthanc only calls a series
//! stable, and fires OnStableSeries / StableSeries, after it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::TcpListener;

use common::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::orthanc::Orthanc;
use common::Emu;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::json;

const STABLE_AGE: u64 = 1;
const POLL: &str = "2";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

struct Mode {
    name: &'static str,
    samples: Vec<f64>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[idx]
}

/// A bare HTTP listener that records when each request arrives and what it says: Orthanc's
/// own hook delay, with nothing of segbridge in it.
fn floor_listener(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<(u128, String)>>> {
    use std::io::{Read, Write};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
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

fn run_mode(name: &'static str, n: usize) -> Mode {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let floor = (name == "orthanc-floor").then(|| floor_listener(port));
    let token = "bench-token";
    let mut extra = json!({"StableAge": STABLE_AGE});
    if name == "hook" || name == "orthanc-floor" {
        let lua = Command::new(env!("CARGO_BIN_EXE_segbridge"))
            .env("SEGBRIDGE_HOOK_TOKEN", token)
            .args(["orthanc-lua", "--url", &format!("http://127.0.0.1:{port}")])
            .output()
            .unwrap();
        let script = dir.path().join("hook.lua");
        std::fs::write(&script, lua.stdout).unwrap();
        extra["LuaScripts"] = json!([script]);
    }
    let orthanc = Orthanc::start(extra);
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    // the images first, so each SEG is matched the moment it is read
    let cts: Vec<CtSeries> = (0..n)
        .map(|i| CtSeries::new(&format!("lat-{name}-{i}"), 1))
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
    match name {
        "hook" => cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--orthanc",
            &orthanc.url,
            "--poll",
            "600",
        ]),
        "changes-feed" => cmd.args(["watch", "--orthanc", &orthanc.url, "--poll", POLL]),
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
    let mut samples = Vec::new();
    // a pseudo-random pause before each store, so samples fall at every phase of Orthanc's
    // stability check and of the poll interval instead of locking onto one
    let mut seed: u64 = 0x5eed_u64 ^ name.len() as u64;
    for (i, ct) in cts.iter().enumerate() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 2000));
        let s = SegSpec::new(&format!("lat-{name}-seg-{i}"), ct);
        let seg = write_seg(&dir.path().join(&ct.name), &s, "seg").unwrap();
        orthanc.stow(&seg);
        let t0 = now_ms();
        let label = s.series_uid();
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = loop {
            if let Some(f) = &floor {
                let hit = f
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(_, b)| b.contains(&label))
                    .map(|(t, _)| *t);
                if let Some(t) = hit {
                    break t;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: no hook for SEG {i} within 30 s"
                );
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let hit = emu
                .get("/_emulator/notifications?timed=true")
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["body"].to_string().contains(&label))
                .map(|n| n["received_ms"].as_u64().unwrap() as u128);
            if let Some(ms) = hit {
                break ms;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: SEG {i} not notified within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        samples.push(arrived.saturating_sub(t0) as f64 / 1000.0);
    }
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    Mode { name, samples }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize);
    if args.iter().any(|a| a == "--list") {
        println!("latency: bench");
        return;
    }
    let modes: Vec<Mode> = ["orthanc-floor", "hook", "changes-feed", "qido-polling"]
        .into_iter()
        .map(|m| {
            eprintln!("measuring {m} ({n} SEGs)...");
            run_mode(m, n)
        })
        .collect();
    let qido = percentile(&modes[3].samples, 0.5);
    println!("\nstore-to-notify latency, {n} SEG series each, Orthanc StableAge {STABLE_AGE} s, poll {POLL} s");
    println!("| mode | median (s) | p95 (s) | min (s) | max (s) | median vs QIDO polling |");
    println!("|---|---|---|---|---|---|");
    for m in &modes {
        let med = percentile(&m.samples, 0.5);
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2}x |",
            m.name,
            med,
            percentile(&m.samples, 0.95),
            percentile(&m.samples, 0.0),
            percentile(&m.samples, 1.0),
            med / qido
        );
    }
    let floor_med = percentile(&modes[0].samples, 0.5);
    let hook = percentile(&modes[1].samples, 0.5);
    let goal = STABLE_AGE as f64 + 0.5;
    println!(
        "\northanc-floor: STOW answer to Orthanc's own OnStableSeries call (a bare listener, no segbridge)."
    );
    println!(
        "hook median {:.3} s = Orthanc's own hook delay {:.3} s + segbridge {:.3} s ({:.2}x the floor); goal StableAge + 0.5 s = {:.1} s: {}",
        hook,
        floor_med,
        hook - floor_med,
        hook / floor_med,
        goal,
        if hook < goal { "met" } else { "missed" }
    );
}
