//! Figure 7 of the backfill bench: the ledger in SQLite against the ledger in PostgreSQL, in the
//! same run: the first backfill of N studies (`sync --orthanc`, gate on) and an idle poll of
//! `watch --orthanc --poll 1` with everything already recorded.
//!
//! PostgreSQL is the server `SEGBRIDGE_TEST_PG` names (an admin DSN, as for the tests); each
//! run gets a new database of its own, dropped at the end. Without it the figure fails. The
//! statements segbridge sends PostgreSQL are counted by a small proxy that reads the wire
//! protocol (simple queries, executes, syncs); the timed runs go straight to the server, so the
//! proxy's hop is never in a figure of time.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::common::{self, Emu, SlowProxy};
use super::{cpu_of, measure, median, segbridge, sync_cmd, Run};

/// The admin DSN of the PostgreSQL server the figure uses; a clear failure without one.
pub fn require_pg() -> String {
    std::env::var("SEGBRIDGE_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "figure 7 (the ledger in SQLite vs PostgreSQL) needs a PostgreSQL server: set \
             SEGBRIDGE_TEST_PG=postgres://user:password@127.0.0.1:PORT/postgres (an admin DSN; \
             `source scripts/pg-test-server.sh && pg_test_server_start` starts a throwaway one \
             and sets it), or leave figure 7 out (--figures 1,2,3,4,5,6)"
        )
    })
}

/// What the wire proxy has seen the clients send, over every connection.
#[derive(Default)]
struct Counts {
    /// Statements run: simple queries (`Q`: BEGIN, COMMIT, …) and executes (`E`).
    statements: AtomicUsize,
    /// Waits for the server: a simple query or a sync (`S`) each.
    round_trips: AtomicUsize,
    /// Transactions begun (`BEGIN …` simple queries).
    transactions: AtomicUsize,
    connections: AtomicUsize,
    /// Statements run, by their text (a query's first line, shortened).
    by_text: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Counts {
    fn ran(&self, text: &str) {
        let short: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(70)
            .collect();
        *self.by_text.lock().unwrap().entry(short).or_default() += 1;
    }

    /// The statements run since `before` (a snapshot of `by_text`), most run first.
    fn since(&self, before: &std::collections::HashMap<String, usize>) -> Vec<(usize, String)> {
        let mut v: Vec<(usize, String)> = self
            .by_text
            .lock()
            .unwrap()
            .iter()
            .map(|(t, n)| (n - before.get(t).copied().unwrap_or(0), t.clone()))
            .filter(|(n, _)| *n > 0)
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        v
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Seen {
    statements: usize,
    round_trips: usize,
    transactions: usize,
    connections: usize,
}

impl std::ops::Sub for Seen {
    type Output = Seen;
    fn sub(self, o: Seen) -> Seen {
        Seen {
            statements: self.statements - o.statements,
            round_trips: self.round_trips - o.round_trips,
            transactions: self.transactions - o.transactions,
            connections: self.connections - o.connections,
        }
    }
}

/// A TCP proxy in front of PostgreSQL that counts the client's messages (no TLS: segbridge
/// connects without it on loopback).
struct PgWire {
    port: u16,
    counts: Arc<Counts>,
}

impl PgWire {
    fn start(upstream: (String, u16)) -> PgWire {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::spawn(move || {
            for client in l.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut s_r, mut c_w) = (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_r, &mut c_w);
                    let _ = c_w.shutdown(std::net::Shutdown::Both);
                });
                let counts = c.clone();
                std::thread::spawn(move || {
                    let _ = forward_counting(client, server, &counts);
                });
            }
        });
        PgWire { port, counts }
    }

    fn texts(&self) -> std::collections::HashMap<String, usize> {
        self.counts.by_text.lock().unwrap().clone()
    }

    fn seen(&self) -> Seen {
        let c = &self.counts;
        Seen {
            statements: c.statements.load(Ordering::Relaxed),
            round_trips: c.round_trips.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
        }
    }
}

/// Copies the client's messages to the server, counting them: first the untyped ones (an
/// SSL or GSS request, then the startup message), then typed ones (a byte, a length).
fn forward_counting(mut c: TcpStream, mut s: TcpStream, n: &Counts) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 4];
        c.read_exact(&mut len)?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        c.read_exact(&mut body)?;
        s.write_all(&len)?;
        s.write_all(&body)?;
        let code = body
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
        // 80877103: SSLRequest, 80877104: GSSENCRequest; the server answers with one byte
        if !matches!(code, Some(80877103 | 80877104)) {
            break;
        }
    }
    // the text of each prepared statement, by its name on this connection
    let mut prepared: std::collections::HashMap<Vec<u8>, String> = Default::default();
    let cstr = |b: &[u8]| -> (Vec<u8>, usize) {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        (b[..end].to_vec(), (end + 1).min(b.len()))
    };
    loop {
        let mut head = [0u8; 5];
        c.read_exact(&mut head)?;
        let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        c.read_exact(&mut body)?;
        match head[0] {
            b'Q' => {
                n.statements.fetch_add(1, Ordering::Relaxed);
                n.round_trips.fetch_add(1, Ordering::Relaxed);
                if body.len() >= 5 && body[..5].eq_ignore_ascii_case(b"BEGIN") {
                    n.transactions.fetch_add(1, Ordering::Relaxed);
                }
                n.ran(&String::from_utf8_lossy(&cstr(&body).0));
            }
            b'P' => {
                let (name, at) = cstr(&body);
                let text = String::from_utf8_lossy(&cstr(&body[at..]).0).into_owned();
                prepared.insert(name, text);
            }
            b'B' => {
                let (_, at) = cstr(&body);
                let name = cstr(&body[at..]).0;
                n.ran(prepared.get(&name).map_or("?", String::as_str));
            }
            b'E' => {
                n.statements.fetch_add(1, Ordering::Relaxed);
            }
            b'S' => {
                n.round_trips.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let mut msg = head.to_vec();
        msg.extend_from_slice(&body);
        s.write_all(&msg)?;
        if head[0] == b'X' {
            return Ok(());
        }
    }
}

/// The DSN `dsn` with its host and port replaced by the proxy's.
fn through(dsn: &str, port: u16) -> String {
    let mut u = url::Url::parse(dsn).unwrap();
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(port)).unwrap();
    u.to_string()
}

fn host_port(dsn: &str) -> (String, u16) {
    let u = url::Url::parse(dsn).expect("SEGBRIDGE_TEST_PG is a postgres:// URL");
    (
        u.host_str().unwrap_or("127.0.0.1").to_string(),
        u.port().unwrap_or(5432),
    )
}

/// Drops the databases this figure made (its own thread: `postgres` runs its own runtime).
fn drop_databases(admin: &str, dsns: Vec<String>) {
    let admin = admin.to_string();
    let _ = std::thread::spawn(move || {
        let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) else {
            return;
        };
        for d in dsns {
            let name = url::Url::parse(&d)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            if let Err(e) = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            {
                eprintln!("figure 7: could not drop {name}: {e}");
            }
        }
    })
    .join();
}

/// CPU seconds of a running process, from its threads' scheduler counters (nanoseconds, where
/// `/proc/PID/stat` counts 10 ms ticks, too coarse for an idle poll); a thread that ended
/// in between is not counted (the tick count, which is, goes to the log beside it).
fn cpu_fine(pid: u32) -> f64 {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

/// Labels notified so far, over every dataset of the emulator.
fn notified(emu: &Emu) -> usize {
    common::entries(&emu.notifications()).len()
}

struct Idle {
    requests: f64,
    cpu_ms: f64,
    cpu_ticks_ms: f64,
    pg: Seen,
    /// What PostgreSQL ran in the window, by statement.
    texts: Vec<(usize, String)>,
}

/// Statements by count, as lines of a code block: `count  text` (`per` divides the counts).
fn listing(texts: &[(usize, String)], per: f64) -> String {
    texts
        .iter()
        .take(16)
        .map(|(k, t)| format!("{:8.2}  {t}\n", *k as f64 / per))
        .collect()
}

/// `watch --orthanc --poll 1` on a ledger holding everything: per poll over `window` seconds,
/// after `warmup`.
fn idle_poll(
    dir: &Path,
    emu: &Emu,
    proxy: &SlowProxy,
    ds: &str,
    state: &str,
    wire: Option<&PgWire>,
    (window, warmup): (f64, f64),
) -> Idle {
    let mut c = segbridge(dir, emu);
    c.args(["watch", "--poll", "1", "--reconcile", "3600", "--orthanc"])
        .arg(&proxy.url)
        .args(["--dataset", ds, "--api", &emu.url, "--state", state])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stores-watch.log")).unwrap());
    let mut child = c.spawn().unwrap();
    // start, the lease keeper's first round, the first listing (nothing new), a few polls
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let seen = || wire.map(PgWire::seen).unwrap_or_default();
    let pid = child.id();
    let texts0 = wire.map(PgWire::texts).unwrap_or_default();
    let (r0, f0, t0, s0) = (proxy.count(), cpu_fine(pid), cpu_of(pid), seen());
    std::thread::sleep(Duration::from_secs_f64(window));
    let (r1, f1, t1, s1) = (proxy.count(), cpu_fine(pid), cpu_of(pid), seen());
    let texts = wire.map(|w| w.counts.since(&texts0)).unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    Idle {
        requests: (r1 - r0) as f64 / window,
        cpu_ms: (f1 - f0).max(0.0) * 1000.0 / window,
        cpu_ticks_ms: (t1 - t0) * 1000.0 / window,
        pg: s1 - s0,
        texts,
    }
}

/// Figure 7. `runs` backfills with each store, interleaved (so that the machine's other load
/// falls on both), then `runs` idle windows with each.
pub fn figure(
    emu: &Emu,
    proxy: &SlowProxy,
    dir: &Path,
    n: usize,
    runs: usize,
    quick: bool,
    report: &mut String,
) {
    let admin = require_pg();
    let wire = PgWire::start(host_port(&admin));
    let mut made = Vec::new();
    let mut fresh_pg = || {
        let d = segbridge::ledger::testing::new_database(&admin);
        made.push(d.clone());
        d
    };
    let source = ["--orthanc", proxy.url.as_str()];
    let (mut sq, mut pg): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    let mut last = (String::new(), String::new(), String::new(), String::new());
    let mut labels: Option<usize> = None;
    for r in 0..runs {
        for store in ["sqlite", "postgres"] {
            let state = match store {
                "sqlite" => dir.join(format!("stores-{r}.db")).display().to_string(),
                _ => fresh_pg(),
            };
            let ds = emu.create_dataset();
            let before = notified(emu);
            let c = sync_cmd(dir, emu, &source, &ds, Path::new(&state));
            let m = measure(c, Some(proxy), &dir.join(format!("stores-{store}.out")));
            // N, or a few more or less when figures 3 and 6 ran before (they store and delete)
            let got = notified(emu) - before;
            assert!(got > 0, "{store}: no label notified");
            let want = *labels.get_or_insert(got);
            assert_eq!(
                got, want,
                "{store}: {got} labels notified, the first run {want}"
            );
            eprintln!(
                "figure 7, run {r}, {store}: wall {:.3} s, CPU {:.3} s, RSS {:.1} MiB, {} requests",
                m.wall, m.cpu, m.rss_mb, m.requests
            );
            match store {
                "sqlite" => {
                    sq.push(m);
                    last.0 = state;
                    last.1 = ds;
                }
                _ => {
                    pg.push(m);
                    last.2 = state;
                    last.3 = ds;
                }
            }
        }
    }
    // one more PostgreSQL backfill, untimed, through the counting proxy
    let counted = fresh_pg();
    let (s0, texts0) = (wire.seen(), wire.texts());
    let c = sync_cmd(
        dir,
        emu,
        &source,
        &emu.create_dataset(),
        Path::new(&through(&counted, wire.port)),
    );
    measure(c, None, &dir.join("stores-counted.out"));
    let backfill_pg = wire.seen() - s0;
    let backfill_texts = wire.counts.since(&texts0);
    let (ms, mp) = (super::med(&sq), super::med(&pg));
    let labels = labels.unwrap_or(n);
    let raw = |v: &[Run]| two_places(v.iter().map(|r| r.wall));
    report.push_str(&format!(
        "### 7. The ledger in SQLite vs PostgreSQL\n\n\
         First backfill of N = {n} studies ({labels} labels notified), `sync --orthanc` (gate on), \
         a fresh ledger each run \
         (a new database each PostgreSQL run), {runs} run(s) each, interleaved, medians:\n\n\
         | ledger | wall (s) | CPU (s) | peak RSS (MiB) | requests to Orthanc | walls of the runs (s) |\n|---|---|---|---|---|---|\n\
         | SQLite file | {:.3} | {:.3} | {:.1} | {} | {} |\n\
         | PostgreSQL | {:.3} | {:.3} | {:.1} | {} | {} |\n\
         | **PostgreSQL / SQLite** | **{:.2}x** | {:.2}x | {:.2}x | | |\n\n\
         PostgreSQL, one more backfill through a counting proxy: {} statements ({:.1} per \
         label), {} round trips, {} transactions, {} connection(s); the most run, per label:\n\n\
         ```\n{}```\n\n",
        ms.wall,
        ms.cpu,
        ms.rss_mb,
        ms.requests,
        raw(&sq),
        mp.wall,
        mp.cpu,
        mp.rss_mb,
        mp.requests,
        raw(&pg),
        mp.wall / ms.wall,
        mp.cpu / ms.cpu,
        mp.rss_mb / ms.rss_mb,
        backfill_pg.statements,
        backfill_pg.statements as f64 / labels as f64,
        backfill_pg.round_trips,
        backfill_pg.transactions,
        backfill_pg.connections,
        listing(&backfill_texts, labels as f64),
    ));
    eprintln!("{report}");

    // idle polls on the ledgers of the last backfills (everything recorded); PostgreSQL through
    // the counting proxy, to count what the lease keeper and the poll send it
    let (window, warmup) = if quick { (3.0, 3.0) } else { (30.0, 6.0) };
    let (mut isq, mut ipg) = (Vec::new(), Vec::new());
    let pg_state = through(&last.2, wire.port);
    for r in 0..runs {
        let a = idle_poll(dir, emu, proxy, &last.1, &last.0, None, (window, warmup));
        let b = idle_poll(
            dir,
            emu,
            proxy,
            &last.3,
            &pg_state,
            Some(&wire),
            (window, warmup),
        );
        eprintln!(
            "figure 7, idle {r}: SQLite {:.2} req/s {:.2} ms/s ({:.1} by ticks); PostgreSQL {:.2} \
             req/s {:.2} ms/s ({:.1} by ticks), {:?} over {window} s",
            a.requests, a.cpu_ms, a.cpu_ticks_ms, b.requests, b.cpu_ms, b.cpu_ticks_ms, b.pg
        );
        isq.push(a);
        ipg.push(b);
    }
    let med_of = |v: &[Idle], f: fn(&Idle) -> f64| median(v.iter().map(f).collect());
    let per_poll = |v: &[Idle], f: fn(&Seen) -> usize| {
        median(v.iter().map(|i| f(&i.pg) as f64 / window).collect())
    };
    let (cs, cp) = (med_of(&isq, |i| i.cpu_ms), med_of(&ipg, |i| i.cpu_ms));
    let raw_cpu = |v: &[Idle]| two_places(v.iter().map(|i| i.cpu_ms));
    report.push_str(&format!(
        "Idle poll: `watch --orthanc --poll 1` on the ledger of the last backfill (everything \
         recorded), {window} s of polls, {runs} window(s) each, medians per poll (a poll a \
         second; CPU from the threads' scheduler counters):\n\n\
         | ledger | requests to Orthanc | CPU (ms) | CPU of the windows (ms) | statements to PostgreSQL | round trips | transactions |\n|---|---|---|---|---|---|---|\n\
         | SQLite file | {:.2} | {:.2} | {} | | | |\n\
         | PostgreSQL (lease 6 s: keeper every 2 s) | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.1} |\n\
         | **PostgreSQL / SQLite** | | **{:.2}x** | | | | |\n\n\
         What PostgreSQL ran per poll (the last window):\n\n```\n{}```\n\n",
        med_of(&isq, |i| i.requests),
        cs,
        raw_cpu(&isq),
        med_of(&ipg, |i| i.requests),
        cp,
        raw_cpu(&ipg),
        per_poll(&ipg, |s| s.statements),
        per_poll(&ipg, |s| s.round_trips),
        per_poll(&ipg, |s| s.transactions),
        cp / cs,
        listing(&ipg.last().map(|i| i.texts.clone()).unwrap_or_default(), window),
    ));
    drop_databases(&admin, made);
    eprintln!("{report}");
}

/// Each run's figure, to two places, for the raw columns of the report.
fn two_places(values: impl Iterator<Item = f64>) -> String {
    values
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
