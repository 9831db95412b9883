//! segbridge against a Python peer (dicomweb-client + pydicom, bench/peer.py) on the same real
//! Orthanc, in one run. Every request both make goes through a counting proxy.
//!
//!     cargo bench --bench backfill                  # N = 1,000 studies, 3 runs each
//!     cargo bench --bench backfill -- --n 10000     # the large case
//!     cargo bench --bench backfill -- --quick       # N = 20, 1 run: the CI smoke test
//!     cargo bench --bench backfill -- --figures 3,5 # only those figures
//!     cargo bench --bench backfill -- --quick --figures all  # the CI smoke (needs PostgreSQL)
//!     cargo bench --bench backfill -- --figures 1 --before OLD_BIN:LABEL  # also an older build
//!     cargo bench --bench backfill -- --n 10000 --no-sequential  # leave out the slow peer
//!     cargo bench --bench backfill -- --figures 0 --callgrind  # profiles of the default paths
//!     cargo bench --bench backfill -- --make-ledger x.db --ledger 100000  # a state file to profile
//!     cargo bench --bench backfill -- --n 1000 --hold  # load Orthanc, keep it up for experiments
//!     cargo bench --bench backfill -- --figures 1 --rows 512  # 512 x 512 slices (default 16)
//!     cargo bench --bench backfill -- --figures 1 --slices 50  # 50 slices per series (default 1)
//!     cargo bench --bench backfill -- --figures 1 --index postgresql  # Orthanc's index in PostgreSQL
//!
//! Figures (medians of the runs; ratios are segbridge / peer unless said):
//! 1. first backfill of N SEG series, each mode (--orthanc, --dicomweb; gate on and off)
//!    against the fair peer (bench/peer_fair.py) and the sequential one (bench/peer.py): wall,
//!    CPU, requests, peak RSS; and each mode's floor, its requests replayed by curl;
//! 2. idle poll: requests and CPU per poll, changes feed vs QIDO polling vs the peer;
//! 3. one new SEG among N: store-to-notify, each mode;
//! 4. folder scan of N studies: files/s vs pydicom `dcmread(stop_before_pixels=True)`;
//! 5. the ledger at 100,000 labels: a sync with nothing new, RSS, state file size;
//! 6. deletions: a deleted SEG among N to its `removed` (watch --orthanc, poll 2 s), what the
//!    listing it runs costs, and Orthanc's answer time for `/statistics` and `/changes`;
//! 7. the ledger in SQLite vs PostgreSQL: backfill of N, idle poll (CPU, requests, statements).
//!    Needs SEGBRIDGE_TEST_PG (an admin DSN) and fails without it; the full run includes it,
//!    `--quick` only with `--figures all` (or 7).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "backfill/deletions.rs"]
mod deletions;
#[path = "backfill/first.rs"]
mod first;
#[path = "backfill/stores.rs"]
mod stores;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::orthanc::Orthanc;
use common::{Emu, SlowProxy};
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_segbridge");

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
    requests: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn med(runs: &[Run]) -> Run {
    Run {
        wall: median(runs.iter().map(|r| r.wall).collect()),
        cpu: median(runs.iter().map(|r| r.cpu).collect()),
        rss_mb: median(runs.iter().map(|r| r.rss_mb).collect()),
        requests: median(runs.iter().map(|r| r.requests as f64).collect()) as usize,
    }
}

/// Runs a command to its end and measures it: wall time, CPU (user + system) and peak RSS of
/// the process (wait4), requests through the proxy.
fn measure(cmd: Command, proxy: Option<&SlowProxy>, out: &Path) -> Run {
    // Through GNU time when there is one: a child forked from this (large) bench process
    // counts the bench's pages in its own peak RSS until it execs; time's own small fork does
    // not, so its %M is the command's real peak.
    if Path::new("/usr/bin/time").exists() {
        return measure_with_time(cmd, proxy, out);
    }
    measure_wait4(cmd, proxy, out)
}

fn measure_with_time(cmd: Command, proxy: Option<&SlowProxy>, out: &Path) -> Run {
    let usage = out.with_extension("time");
    let mut t = Command::new("/usr/bin/time");
    t.args(["-f", "%e %U %S %M", "-o"])
        .arg(&usage)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let before = proxy.map(|p| p.count()).unwrap_or(0);
    let o = t
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .status()
        .unwrap();
    assert!(
        o.success(),
        "{:?} failed: {}",
        cmd,
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
    );
    let f: Vec<f64> = std::fs::read_to_string(&usage)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    Run {
        wall: f[0],
        cpu: f[1] + f[2],
        rss_mb: f[3] / 1024.0,
        requests: proxy.map(|p| p.count()).unwrap_or(0) - before,
    }
}

fn measure_wait4(mut cmd: Command, proxy: Option<&SlowProxy>, out: &Path) -> Run {
    let before = proxy.map(|p| p.count()).unwrap_or(0);
    let t = Instant::now();
    let child = cmd
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 failed");
    let wall = t.elapsed().as_secs_f64();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(
        ok,
        "{cmd:?} failed: {}",
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    std::mem::forget(child);
    Run {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss_mb: ru.ru_maxrss as f64 / 1024.0,
        requests: proxy.map(|p| p.count()).unwrap_or(0) - before,
    }
}

/// CPU seconds a running process has used (utime + stime from /proc).
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (g(11) + g(12)) / ticks
}

/// The peer's Python, in a venv of the bench's own.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv");
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import dicomweb_client, pydicom, requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "creating {} (dicomweb-client, pydicom, requests)",
            venv.display()
        );
        assert!(Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success());
        assert!(Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "dicomweb-client==0.61.2",
                "pydicom==3.0.2",
                "requests==2.34.2"
            ])
            .status()
            .unwrap()
            .success());
    }
    py
}

fn peer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/peer.py")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Stores one study (a CT slice and its SEG); returns the SEG's series UID.
fn store_study(orthanc: &Orthanc, dir: &Path, name: &str) -> String {
    let ct = CtSeries::new(name, 1);
    let mut files = write_ct(&dir.join(name), &ct, "IM").unwrap();
    let s = SegSpec::new(&format!("{name}-seg"), &ct);
    files.extend(write_seg(&dir.join(name), &s, "seg").unwrap());
    orthanc.stow(&files);
    s.series_uid()
}

fn wait_label(emu: &Emu, label: &str, within: Duration) -> Option<u64> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let hit = emu
            .get("/_emulator/notifications?timed=true")
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["body"].to_string().contains(label))
            .map(|n| n["received_ms"].as_u64().unwrap());
        if hit.is_some() {
            return hit;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The hook token that `orthanc-lua` writes into Orthanc's script and `serve` expects (a
/// token is required since hooks are authenticated by default).
const HOOK_TOKEN: &str = "segbridge-bench-hook-token";

fn segbridge(dir: &Path, emu: &Emu) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("MONAI_API_KEY", &emu.key)
        .env("SEGBRIDGE_HOOK_TOKEN", HOOK_TOKEN)
        .env_remove("RUST_LOG")
        // as users run it: with it set, each error that carries a backtrace takes one
        .env_remove("RUST_BACKTRACE");
    c
}

/// `segbridge sync` of `source` into `state`, notifying dataset `ds` of the emulator.
fn sync_cmd(dir: &Path, emu: &Emu, source: &[&str], ds: &str, state: &Path) -> Command {
    let mut c = segbridge(dir, emu);
    c.arg("sync")
        .args(source)
        .args(["--dataset", ds, "--api", &emu.url])
        .arg("--state")
        .arg(state);
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("backfill: bench");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--n", if quick { 20 } else { 1000 });
    // --rows R: R x R image slices (and SEG frames) instead of the fixtures' 16 x 16, for what
    // real image sizes cost the quality gate
    let rows = arg("--rows", 0);
    // --slices S: S slices per image series instead of one (a real CT series has hundreds)
    let slices = arg("--slices", 1).max(1);
    let runs = arg("--runs", if quick { 1 } else { 3 });
    let ledger_n = arg("--ledger", if quick { 2000 } else { 100_000 });
    // --figures 3,5 runs only those, `all` every one (default: all; --quick: all but 7,
    // PostgreSQL's, so that the smoke test runs without a server)
    let figures: Vec<usize> = match args
        .iter()
        .position(|a| a == "--figures")
        .and_then(|i| args.get(i + 1))
    {
        Some(v) if v == "all" => (1..=7).collect(),
        Some(v) => v.split(',').filter_map(|f| f.trim().parse().ok()).collect(),
        None if quick => (1..=6).collect(),
        None => (1..=7).collect(),
    };
    let figure = |k: usize| figures.contains(&k);
    if figure(7) {
        stores::require_pg(); // before anything is stored: fail at once without a server
    }
    // for profiling: only write a state file of `--ledger` delivered labels, and stop
    if let Some(path) = args
        .iter()
        .position(|a| a == "--make-ledger")
        .and_then(|i| args.get(i + 1))
    {
        synthetic_ledger(Path::new(path), ledger_n);
        eprintln!("{ledger_n} labels written to {path}");
        return;
    }
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lua = Command::new(BIN)
        .env("SEGBRIDGE_HOOK_TOKEN", HOOK_TOKEN)
        .args([
            "orthanc-lua",
            "--url",
            &format!("http://127.0.0.1:{hook_port}"),
        ])
        .output()
        .unwrap();
    std::fs::write(dir.join("hook.lua"), lua.stdout).unwrap();
    // --index postgresql: Orthanc keeps its index in PostgreSQL (the orthanc-postgresql plugin,
    // a server of its own), as large installations do; the default is its SQLite file
    let (_index_server, mut orthanc_cfg) = index_config(&args);
    orthanc_cfg["StableAge"] = json!(1);
    orthanc_cfg["LuaScripts"] = json!([dir.join("hook.lua")]);
    let orthanc = Orthanc::start(orthanc_cfg);
    let proxy = SlowProxy::counting(&orthanc.url);
    let emu = Emu::start();

    // the data: N studies, a CT series (one slice, or --slices) and a SEG each, stored with one STOW per 500 files
    let gen = dir.join("gen");
    let t = Instant::now();
    let mut batch = Vec::new();
    for i in 0..n {
        let mut ct = CtSeries::new(&format!("b{i}"), slices);
        if rows > 0 {
            ct.rows = rows as u16;
            ct.cols = rows as u16;
        }
        batch.extend(write_ct(&gen.join(format!("b{i}")), &ct, "IM").unwrap());
        batch.extend(
            write_seg(
                &gen.join(format!("b{i}")),
                &SegSpec::new(&format!("b{i}-seg"), &ct),
                "seg",
            )
            .unwrap(),
        );
        // (or fewer, of large slices: each STOW's body is built in memory)
        if batch.len() >= 500.min(64 * 1024 / (rows.max(16) * rows.max(16) * 2 / 1024).max(1)) {
            orthanc.stow(&batch);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        orthanc.stow(&batch);
    }
    eprintln!("stored {n} studies in {:.1?}", t.elapsed());
    // --hold: keep the loaded Orthanc up for experiments by hand, until the bench is killed
    if args.iter().any(|a| a == "--hold") {
        eprintln!("holding: Orthanc at {} (REST and /dicom-web)", orthanc.url);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    let mut report = String::new();
    let machine = format!(
        "{} cores, {}; Orthanc {} (index: {}); {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default(),
        orthanc.get_json("/system")["Version"]
            .as_str()
            .unwrap_or("?"),
        if _index_server.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        String::from_utf8_lossy(&Command::new(&py).arg("--version").output().unwrap().stdout)
            .trim()
    );
    report.push_str(&format!(
        "N = {n} studies, {runs} run(s) each, medians; image series of {slices} slice(s) of {}x{}. {machine}\n\n",
        if rows > 0 { rows } else { 16 },
        if rows > 0 { rows } else { 16 }
    ));

    let dw = format!("{}/dicom-web", proxy.url);
    // 1. first backfill, every mode against the fair peer
    if figure(1) {
        let before = args
            .iter()
            .position(|a| a == "--before")
            .and_then(|i| args.get(i + 1))
            .map(|v| match v.split_once(':') {
                Some((bin, label)) => (PathBuf::from(bin), label.to_string()),
                None => (PathBuf::from(v), v.clone()),
            });
        report.push_str(&first::figure(&first::Setup {
            dir,
            emu: &emu,
            proxy: &proxy,
            py: &py,
            n,
            runs,
            before,
            sequential: !args.iter().any(|a| a == "--no-sequential"),
        }));
        eprintln!("{report}");
    }

    // --callgrind: where a default backfill spends its instructions, each path once
    if args.iter().any(|a| a == "--callgrind") {
        report.push_str(&callgrind_profiles(dir, &emu, &proxy.url, n));
        eprintln!("{report}");
    }

    // 2. idle poll on the N-series server
    if figure(2) {
        report.push_str("### 2. Idle poll on the N-series server (nothing changes)\n\n");
        report.push_str(
            "| who | poll every (s) | requests per poll | CPU per poll (ms) |\n|---|---|---|---|\n",
        );
        let ds = emu.create_dataset();
        for (name, src, poll) in [
            (
                "segbridge watch --orthanc (changes feed)",
                vec!["--orthanc".to_string(), proxy.url.clone()],
                0.5,
            ),
            (
                "segbridge watch --dicomweb (QIDO polling)",
                vec!["--dicomweb".to_string(), dw.clone()],
                2.0,
            ),
        ] {
            let state = dir.join(format!("idle-{}.db", poll));
            let mut c = segbridge(dir, &emu);
            c.arg("sync")
                .arg("--no-validate")
                .args(&src)
                .args(["--dataset", &ds, "--api", &emu.url])
                .arg("--state")
                .arg(&state);
            measure(c, None, &dir.join("idle-prep.out"));
            let mut c = segbridge(dir, &emu);
            c.arg("watch")
                .arg("--no-validate")
                .args(&src)
                .args([
                    "--dataset",
                    &ds,
                    "--api",
                    &emu.url,
                    "--poll",
                    &poll.to_string(),
                    "--reconcile",
                    "3600",
                ])
                .arg("--state")
                .arg(&state)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = c.spawn().unwrap();
            std::thread::sleep(Duration::from_secs_f64(poll * 2.0 + 2.0)); // start and first listing
            let (r0, c0) = (proxy.count(), cpu_of(child.id()));
            // the feed's polls cost about a millisecond each: 40 of them, for /proc's 10 ms ticks
            let many = if poll < 1.0 { 40.0 } else { 10.0 };
            let window = if quick { poll * 3.0 } else { poll * many };
            std::thread::sleep(Duration::from_secs_f64(window));
            let (r1, c1) = (proxy.count(), cpu_of(child.id()));
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            let polls = window / poll;
            report.push_str(&format!(
                "| {name} | {poll} | {:.1} | {:.1} |\n",
                (r1 - r0) as f64 / polls,
                (c1 - c0) * 1000.0 / polls
            ));
        }
        {
            let mut child = Command::new(&py)
                .arg(peer())
                .args(["poll", &dw, &emu.url, &emu.create_dataset(), "2"])
                .env("MONAI_API_KEY", &emu.key)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // its first poll pairs everything; measure after it
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            std::thread::sleep(Duration::from_secs(1));
            let (r0, c0) = (proxy.count(), cpu_of(child.id()));
            let window = if quick { 6.0 } else { 20.0 };
            std::thread::sleep(Duration::from_secs_f64(window));
            let (r1, c1) = (proxy.count(), cpu_of(child.id()));
            let _ = child.kill();
            let _ = child.wait();
            let polls = window / 2.0;
            report.push_str(&format!(
                "| Python peer, polling QIDO | 2 | {:.1} | {:.1} |\n\n",
                (r1 - r0) as f64 / polls,
                (c1 - c0) * 1000.0 / polls
            ));
        }
        eprintln!("{report}");
    }

    // 3. one new SEG among N
    if figure(3) {
        report.push_str(
            "### 3. One new SEG among N: store to notify (s), poll 2 s, Orthanc StableAge 1 s\n\n",
        );
        report.push_str("| who | median | max |\n|---|---|---|\n");
        let samples = if quick { 1 } else { 5 };
        for (idx, mode) in [
            "hook (serve)",
            "changes feed (watch --orthanc)",
            "QIDO polling (watch --dicomweb)",
            "Python peer, polling QIDO",
        ]
        .into_iter()
        .enumerate()
        {
            let ds = emu.create_dataset();
            let state = dir.join(format!("new-{idx}.db"));
            let rest = ["--no-validate", "--orthanc", &proxy.url];
            let prep = sync_cmd(dir, &emu, &rest, &ds, &state);
            measure(prep, None, &dir.join("new-prep.out"));
            let mut child = match mode {
                m if m.starts_with("Python") => Command::new(&py)
                    .arg(peer())
                    .args(["poll", &dw, &emu.url, &ds, "2"])
                    .env("MONAI_API_KEY", &emu.key)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
                m => {
                    let mut c = segbridge(dir, &emu);
                    let src = if m.contains("QIDO") {
                        vec!["--dicomweb".to_string(), dw.clone()]
                    } else {
                        vec!["--orthanc".to_string(), proxy.url.clone()]
                    };
                    if m.starts_with("hook") {
                        c.args([
                            "serve",
                            "--listen",
                            &format!("127.0.0.1:{hook_port}"),
                            "--poll",
                            "600",
                        ]);
                    } else {
                        c.args(["watch", "--poll", "2"]);
                    }
                    c.arg("--no-validate")
                        .args(&src)
                        .args(["--dataset", &ds, "--api", &emu.url, "--reconcile", "3600"])
                        .arg("--state")
                        .arg(&state)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    c.spawn().unwrap()
                }
            };
            // let the peer finish its first full pairing
            std::thread::sleep(Duration::from_secs(if mode.starts_with("Python") {
                (n / 100 + 5) as u64
            } else {
                4
            }));
            let mut lat = Vec::new();
            let mut seed = 0x9e3779b9u64 + idx as u64;
            for k in 0..samples {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis((seed >> 33) % 2000));
                let label = store_study(&orthanc, &dir.join("new"), &format!("new-{idx}-{k}"));
                let t0 = now_ms();
                // the peer lists every SEG on each poll: at N = 10,000 one QIDO listing
                // alone takes tens of seconds
                let within = if mode.starts_with("Python") {
                    Duration::from_secs((n as u64 / 25).max(60))
                } else {
                    Duration::from_secs(60)
                };
                match wait_label(&emu, &label, within) {
                    Some(at) => lat.push(at.saturating_sub(t0) as f64 / 1000.0),
                    None => panic!("{mode}: the new SEG was not notified within {within:?}"),
                }
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            let max = lat.iter().cloned().fold(0.0, f64::max);
            report.push_str(&format!("| {mode} | {:.2} | {:.2} |\n", median(lat), max));
        }
        report.push('\n');
        eprintln!("{report}");
    }

    // 4. folder scan
    if figure(4) {
        let files = walkdir::WalkDir::new(&gen)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count();
        let mut sb = Vec::new();
        let mut pyr = Vec::new();
        for _ in 0..runs {
            let mut c = Command::new(BIN);
            c.args(["scan", "--no-validate", "--json", "--folder"])
                .arg(&gen);
            sb.push(measure(c, None, &dir.join("scan.out")));
            let mut c = Command::new(&py);
            c.arg(peer()).arg("scan").arg(&gen);
            pyr.push(measure(c, None, &dir.join("pscan.out")));
        }
        let (s, p) = (med(&sb), med(&pyr));
        report.push_str("### 4. Folder scan of N studies (headers only)\n\n| who | files | wall (s) | files/s | vs pydicom |\n|---|---|---|---|---|\n");
        report.push_str(&format!(
            "| segbridge scan --folder | {files} | {:.3} | {:.0} | {:.1}x |\n",
            s.wall,
            files as f64 / s.wall,
            p.wall / s.wall
        ));
        report.push_str(&format!(
            "| pydicom dcmread(stop_before_pixels=True) | {files} | {:.3} | {:.0} | 1.0x |\n\n",
            p.wall,
            files as f64 / p.wall
        ));
        eprintln!("{report}");
    }

    // 5. the ledger at 100,000 labels
    if figure(5) {
        report.push_str(&format!(
            "### 5. Ledger size: a sync with nothing new, N = {n} in Orthanc\n\n"
        ));
        report.push_str("| ledger labels | wall (s) | CPU (s) | peak RSS (MiB) | state file (MiB) | requests |\n|---|---|---|---|---|---|\n");
        for extra in [0usize, ledger_n] {
            let state = dir.join(format!("ledger-{extra}.db"));
            synthetic_ledger(&state, extra);
            let ds_real = emu.create_dataset();
            let rest = ["--no-validate", "--orthanc", &proxy.url];
            let sync_nothing_new = || sync_cmd(dir, &emu, &rest, &ds_real, &state);
            measure(sync_nothing_new(), None, &dir.join("l1.out"));
            let mut times = Vec::new();
            for _ in 0..runs.max(2) {
                times.push(measure(
                    sync_nothing_new(),
                    Some(&proxy),
                    &dir.join("l2.out"),
                ));
            }
            let m = med(&times);
            let size = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
            report.push_str(&format!(
                "| {} | {:.3} | {:.3} | {:.1} | {:.1} | {} |\n",
                extra + n,
                m.wall,
                m.cpu,
                m.rss_mb,
                size,
                m.requests
            ));
        }
    }
    // 6. deletions
    if figure(6) {
        deletions::figure(&orthanc, &proxy, &emu, dir, n, quick, &mut report);
    }
    // 7. the ledger in SQLite vs PostgreSQL
    if figure(7) {
        stores::figure(&emu, &proxy, dir, n, runs, quick, &mut report);
    }
    report.push('\n');
    println!("{report}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-backfill.md");
    std::fs::write(&out, &report).unwrap();
    eprintln!("written to {}", out.display());
}

/// The floor: the same requests (the very URLs, Accept headers and POST bodies segbridge
/// sent), replayed by curl with keep-alive, 8 at a time as segbridge's own bound allows, and
/// none waiting for another: what the server's answers cost when nothing is between them.
fn replay_floor(base: &str, requests: &[(String, Option<Vec<u8>>)], out: &Path) -> f64 {
    let mut cfg: Vec<String> = Vec::new();
    for (i, (r, body)) in requests.iter().enumerate() {
        let (method, path) = r.split_once(' ').unwrap_or(("GET", r));
        if path.starts_with("/api/") {
            continue;
        }
        let mut one = format!("url = \"{base}{path}\"\noutput = \"/dev/null\"\n");
        if method == "GET" {
            one.push_str(&format!("header = \"Accept: {}\"\n", accept_of(path)));
        } else {
            let p = out.join(format!("replay-{i}.json"));
            std::fs::write(&p, body.clone().unwrap_or_default()).unwrap();
            one.push_str(&format!("data-binary = \"@{}\"\n", p.display()));
        }
        cfg.push(one);
    }
    let cfgp = out.join("replay.cfg");
    std::fs::write(&cfgp, cfg.join("next\n")).unwrap();
    let t = Instant::now();
    let st = Command::new("curl")
        .args(["-s", "--parallel", "--parallel-max", "8", "-K"])
        .arg(&cfgp)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success() || st.code() == Some(23), "curl replay failed");
    t.elapsed().as_secs_f64()
}

/// Runs each default path once under callgrind and keeps the top of each profile.
fn callgrind_profiles(dir: &Path, emu: &Emu, orthanc: &str, n: usize) -> String {
    let mut t = format!("### Profiles (callgrind, N = {n}, default mode: quality gate on)\n\n");
    let dw = format!("{orthanc}/dicom-web");
    for (name, src) in [
        ("orthanc", vec!["--orthanc", orthanc]),
        ("dicomweb", vec!["--dicomweb", dw.as_str()]),
    ] {
        let ds = emu.create_dataset();
        let out =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/callgrind.{name}.out"));
        let o = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(BIN)
            .current_dir(dir)
            .env("MONAI_API_KEY", &emu.key)
            .env_remove("RUST_BACKTRACE")
            .arg("sync")
            .args(&src)
            .args([
                "--image-filter",
                "Modality=CT",
                "--dataset",
                &ds,
                "--api",
                &emu.url,
            ])
            .arg("--state")
            .arg(dir.join(format!("callgrind-{name}.db")))
            .output()
            .expect("valgrind (apt-get install valgrind)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let a = Command::new("callgrind_annotate")
            .args(["--inclusive=no", "--threshold=90"])
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&a.stdout);
        let total = text
            .lines()
            .find(|l| l.contains("PROGRAM TOTALS"))
            .unwrap_or("")
            .trim()
            .to_string();
        let top: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("file:function"))
            .skip(2)
            .take(12)
            .collect();
        t.push_str(&format!(
            "`sync --{name}` ({}): {total}\n\n```\n{}\n```\n\n",
            out.display(),
            top.join("\n")
        ));
    }
    t
}

/// The Accept header segbridge sends for a GET of `path`: a file, a WADO-RS retrieve, or JSON.
fn accept_of(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    if path.ends_with("/file") {
        "application/dicom"
    } else if path.ends_with("/tags") {
        "application/json"
    } else if path.contains("/dicom-web/studies/") && !path.ends_with("/metadata") {
        "multipart/related; type=\\\"application/dicom\\\"; transfer-syntax=*"
    } else {
        "application/dicom+json"
    }
}

/// Orthanc's configuration for `--index`: nothing for its own SQLite file (the default), or
/// the PostgreSQL index plugin with a PostgreSQL server of its own (kept alive by the caller).
fn index_config(args: &[String]) -> (Option<common::pg::PgServer>, serde_json::Value) {
    match args
        .iter()
        .position(|a| a == "--index")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        None | Some("sqlite") => (None, json!({})),
        Some("postgresql") => {
            assert!(
                Path::new(PG_INDEX_PLUGIN).exists(),
                "{PG_INDEX_PLUGIN} missing: apt-get install orthanc-postgresql"
            );
            let pg = common::pg::PgServer::start();
            let cfg = json!({
                "Plugins": [common::orthanc::PLUGIN, PG_INDEX_PLUGIN],
                "PostgreSQL": {"EnableIndex": true, "EnableStorage": false,
                               "Host": "127.0.0.1", "Port": pg.port(), "Database": "postgres",
                               "Username": "segbridge", "Password": "", "Lock": false}
            });
            (Some(pg), cfg)
        }
        Some(other) => panic!("--index {other}: sqlite or postgresql"),
    }
}

const PG_INDEX_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so";

/// A state file holding `n` labels from another source, as a busy installation's would.
fn synthetic_ledger(path: &Path, n: usize) {
    use segbridge::dicom::reader::{SegInstance, SegSeries, SortKey};
    use segbridge::model::ImageIndex;
    use segbridge::rules::pair::pair_ungated as match_all;
    use segbridge::source::Listing;
    let mut ledger = segbridge::ledger::Ledger::open(
        &segbridge::ledger::StateAt::File(path.to_path_buf()),
        Duration::from_secs(5),
    )
    .unwrap();
    if n == 0 {
        return;
    }
    let mut index = ImageIndex::default();
    let mut segs = Vec::with_capacity(n);
    for i in 0..n {
        let img = format!("2.25.1{i:012}");
        index.insert(&format!("{img}.1"), &img, "2.25.9", "CT");
        let uid = format!("2.25.2{i:012}");
        segs.push(SegSeries {
            first: SegInstance {
                patient_id: String::new(),
                sop_class: segbridge::dicom::SEG_SOP_CLASS.into(),
                sop_instance: format!("{uid}.1"),
                series: uid.clone(),
                study: "2.25.9".into(),
                instance_number: Some(1),
                referenced_series: vec![img],
                source_instances: vec![],
                sort_key: SortKey {
                    content: "20240101".into(),
                    uid: uid.clone(),
                    ..Default::default()
                },
                segment_count: 1,
            },
            instances: vec![format!("{uid}.1")],
            locations: vec![format!("/synthetic/{uid}")],
            files: vec![],
            warnings: vec![],
            remote_id: None,
            remote_stamp: None,
        });
    }
    let labels = match_all(segs, &index);
    let listing = Listing {
        source: "folder:/synthetic".into(),
        ..Default::default()
    };
    ledger
        .apply(&listing, &labels, "synthetic-dataset")
        .unwrap();
    // as if delivered: the outbox empty, the journal full
    loop {
        let p = ledger.pending("synthetic-dataset", 10_000).unwrap();
        if p.is_empty() {
            break;
        }
        ledger
            .confirm(&p.iter().map(|e| e.id).collect::<Vec<_>>())
            .unwrap();
    }
}
