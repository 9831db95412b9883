//! Several segbridge processes sharing one PostgreSQL ledger (issue 16): real processes, real
//! Orthancs, a real PostgreSQL. Every test ends by asserting the exact set of labels notified
//! and how many duplicates at most, as the fault matrix does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use segbridge::ledger::testing::{new_database, test_server};
use segbridge::ledger::{LeaseRow, Ledger, StateAt};

/// Entries per notify: the most a killed or paused process can have had in flight.
const BATCH: usize = 10;

pub struct Node {
    pub child: Child,
    pub log: PathBuf,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub emu: Emu,
    pub ds: String,
    pub pacs: Vec<Orthanc>,
    pub state: String,
    started: usize,
}

impl Lab {
    pub fn new(pacs: usize, state: Option<String>) -> Lab {
        let emu = Emu::start();
        let ds = emu.create_dataset();
        Lab {
            dir: tempfile::tempdir().unwrap(),
            emu,
            ds,
            pacs: (0..pacs)
                .map(|_| Orthanc::start(serde_json::json!({})))
                .collect(),
            state: state.unwrap_or_else(|| new_database(&test_server())),
            started: 0,
        }
    }

    /// A `watch` process on every Orthanc, sharing the ledger.
    pub fn start_node(&mut self, extra: &[&str]) -> Node {
        self.start("watch", extra)
    }

    /// A `serve` process (`watch` with the hook endpoint) on every Orthanc.
    pub fn start_serve(&mut self, listen: &str, token: &str, extra: &[&str]) -> Node {
        let mut args = vec!["--listen", listen];
        args.extend_from_slice(extra);
        self.start_with_env("serve", &args, &[("SEGBRIDGE_HOOK_TOKEN", token)])
    }

    fn start(&mut self, command: &str, extra: &[&str]) -> Node {
        self.start_with_env(command, extra, &[])
    }

    fn start_with_env(&mut self, command: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        self.started += 1;
        let log = self.dir.path().join(format!("node{}.log", self.started));
        let out = std::fs::File::create(&log).unwrap();
        let mut c = segbridge(self.dir.path());
        c.env("MONAI_API_KEY", &self.emu.key)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .args([command, "--dataset", &self.ds, "--api", &self.emu.url])
            .args(["--state", &self.state, "--batch"])
            .arg(BATCH.to_string());
        if !extra.contains(&"--poll") {
            c.args(["--poll", "0.5"]);
        }
        for p in &self.pacs {
            c.args(["--orthanc", &p.url]);
        }
        c.args(extra)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        Node {
            child: c.spawn().unwrap(),
            log,
        }
    }

    /// `n` new labelled studies on Orthanc `k`; their (image, label) pairs.
    pub fn store(&self, k: usize, prefix: &str, n: usize) -> BTreeSet<(String, String)> {
        let dir = self.dir.path().join("files").join(prefix);
        let mut files = Vec::new();
        let mut pairs = BTreeSet::new();
        for i in 0..n {
            let ct = CtSeries::new(&format!("{prefix}-{i}"), 1);
            let d = dir.join(format!("s{i}"));
            write_ct(&d, &ct, "IM").unwrap();
            let s = SegSpec::new(&format!("{prefix}-{i}-seg"), &ct);
            write_seg(&d, &s, "seg").unwrap();
            for e in std::fs::read_dir(&d).unwrap() {
                files.push(e.unwrap().path());
            }
            pairs.insert((ct.series, s.series_uid()));
        }
        for part in files.chunks(40) {
            self.pacs[k].stow(part);
        }
        pairs
    }

    pub fn leases(&self) -> Vec<LeaseRow> {
        let at = StateAt::parse(&self.state).unwrap();
        Ledger::open_read_only(&at)
            .and_then(|l| l.leases())
            .unwrap_or_default()
    }

    /// Source leases by Orthanc index → holder's pid, for the live ones.
    pub fn owners(&self) -> BTreeMap<usize, u32> {
        let mut m = BTreeMap::new();
        for l in self.leases() {
            if l.expires_in_s < 0 {
                continue;
            }
            for (k, p) in self.pacs.iter().enumerate() {
                if l.name == format!("source:orthanc:{}", p.url) {
                    m.insert(k, holder_pid(&l.holder));
                }
            }
        }
        m
    }

    /// Added entries: (image, label) → how many times.
    pub fn added(&self) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for (s, i, l) in entries(&self.emu.notifications()) {
            assert_eq!(s, "added", "unexpected section {s}");
            *m.entry((i, l)).or_default() += 1;
        }
        m
    }

    pub fn wait_delivered(&self, want: &BTreeSet<(String, String)>, timeout: Duration) {
        let start = Instant::now();
        loop {
            let got: BTreeSet<_> = self.added().into_keys().collect();
            if want.is_subset(&got) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{} of {} delivered after {timeout:?}; leases {:?}",
                want.intersection(&got).count(),
                want.len(),
                self.leases()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn assert_exactly(&self, want: &BTreeSet<(String, String)>, max_dups: usize) {
        let got = self.added();
        let keys: BTreeSet<(String, String)> = got.keys().cloned().collect();
        assert_eq!(&keys, want, "the notified set differs");
        let dups: usize = got.values().map(|n| n - 1).sum();
        assert!(
            dups <= max_dups,
            "{dups} duplicates, at most {max_dups} allowed"
        );
    }
}

/// The pid in a holder name `host:pid:random`.
pub fn holder_pid(holder: &str) -> u32 {
    holder
        .rsplit(':')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn signal(pid: u32, sig: libc::c_int) {
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

fn kill9(node: &mut Node) {
    signal(node.pid(), libc::SIGKILL);
    node.child.wait().unwrap();
}

fn stop_nodes(nodes: Vec<Node>) {
    for n in nodes {
        terminate(n.child);
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn try_wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Every process's log, for a failing assertion.
fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("== pid {}\n{}", n.pid(), n.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Three processes started at the same instant on a fresh database, three Orthancs: one
/// migrates, each ends up holding one Orthanc, and everything is delivered. Then, 20 times, the
/// holder of a source is killed with SIGKILL in the middle of a backfill: another process
/// takes the source over within the lease time, every label is delivered, and the duplicates
/// stay within one batch per kill.
#[test]
fn three_processes_share_three_orthancs_and_survive_kills() {
    let rounds: usize = std::env::var("SEGBRIDGE_CLUSTER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut lab = Lab::new(3, None);
    let mut want = BTreeSet::new();
    for k in 0..3 {
        want.extend(lab.store(k, &format!("first{k}"), 15));
    }
    let mut nodes: Vec<Node> = (0..3).map(|_| lab.start_node(&[])).collect();
    wait_for(
        "each process holding one Orthanc",
        Duration::from_secs(40),
        || {
            let o = lab.owners();
            o.len() == 3 && o.values().collect::<BTreeSet<_>>().len() == 3
        },
    );
    lab.wait_delivered(&want, Duration::from_secs(60));
    let mut takeovers = Vec::new();
    for round in 0..rounds {
        let k = round % 3;
        let owner = lab.owners()[&k];
        let victim = nodes.iter().position(|n| n.pid() == owner).unwrap();
        let fresh = lab.store(k, &format!("r{round}"), 12);
        want.extend(fresh.iter().cloned());
        // mid-backfill: as soon as the first of them is delivered
        let started = try_wait(Duration::from_secs(30), || {
            let got = lab.added();
            fresh.iter().any(|p| got.contains_key(p))
        });
        assert!(
            started,
            "round {round}: the backfill did not start\n{}",
            logs(&nodes)
        );
        let killed_at = Instant::now();
        kill9(&mut nodes[victim]);
        wait_for(
            "another process to take over",
            Duration::from_secs(15),
            || lab.owners().get(&k).is_some_and(|p| *p != owner),
        );
        takeovers.push(killed_at.elapsed());
        nodes[victim] = lab.start_node(&[]);
        lab.wait_delivered(&want, Duration::from_secs(60));
    }
    let max = takeovers.iter().max().copied().unwrap_or_default();
    if !takeovers.is_empty() {
        eprintln!(
            "cluster: {rounds} kills, takeover median {:.1?}, max {max:.1?}",
            median(&mut takeovers.clone())
        );
    }
    assert!(max <= Duration::from_secs(10), "takeover took {max:?}");
    lab.assert_exactly(&want, BATCH * rounds);
    for n in &nodes {
        assert!(!n.log().contains("panicked"), "{}", n.log());
    }
    stop_nodes(nodes);
}

/// The holder of the outbox is paused (SIGSTOP) with a notify in flight, for longer than its
/// lease; another process takes over and delivers. Resumed, the paused one finishes the one
/// call it had in flight, cannot confirm it, says once that it lost the lease, and steps down.
#[test]
fn a_paused_process_sends_at_most_its_batch_and_steps_down() {
    let mut lab = Lab::new(1, None);
    let lease = ["--lease", "3"];
    let mut nodes = vec![lab.start_node(&lease)];
    let mut want = lab.store(0, "first", 5);
    lab.wait_delivered(&want, Duration::from_secs(30));
    nodes.push(lab.start_node(&lease));
    wait_for("the second process alive", Duration::from_secs(10), || {
        lab.leases().len() >= 2
    });
    let outbox_holder = lab
        .leases()
        .into_iter()
        .find(|l| l.name == "outbox")
        .map(|l| holder_pid(&l.holder))
        .unwrap();
    let paused = nodes.iter().position(|n| n.pid() == outbox_holder).unwrap();
    // the next notify is answered after 2 s: the holder is paused while it waits
    lab.emu.fault(serde_json::json!({
        "delay_ms": 2000, "count": 1, "path_contains": "/jobs"
    }));
    let calls = |lab: &Lab| lab.emu.get("/_emulator/stats")["calls"].as_u64().unwrap();
    let before = calls(&lab);
    let fresh = lab.store(0, "second", 6);
    want.extend(fresh.iter().cloned());
    wait_for("the notify in flight", Duration::from_secs(20), || {
        calls(&lab) > before
    });
    // the other process never delivered: any notify in its log comes after the takeover
    let notified = |n: &Node| {
        n.log()
            .lines()
            .any(|l| l.contains(" notified ") && l.contains(" entries"))
    };
    assert!(!notified(&nodes[1 - paused]), "{}", logs(&nodes));
    signal(outbox_holder, libc::SIGSTOP);
    let paused_at = Instant::now();
    // longer than the lease: the other process takes the outbox over and delivers again what
    // the paused one never confirmed
    let other_pid = nodes[1 - paused].pid();
    let taken = try_wait(Duration::from_secs(10), || {
        lab.leases()
            .iter()
            .any(|l| l.name == "outbox" && holder_pid(&l.holder) == other_pid)
    });
    assert!(taken, "no takeover: {:?}\n{}", lab.leases(), logs(&nodes));
    let redelivered = try_wait(Duration::from_secs(20), || notified(&nodes[1 - paused]));
    assert!(redelivered, "not delivered again\n{}", logs(&nodes));
    lab.wait_delivered(&want, Duration::from_secs(30));
    eprintln!(
        "cluster: outbox taken over {:.1?} after the pause",
        paused_at.elapsed()
    );
    let sent_before_resume = lab.emu.notifications().len();
    signal(outbox_holder, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(4));
    // resumed: the one call it had in flight was already answered; it sends no other
    assert_eq!(
        lab.emu.notifications().len(),
        sent_before_resume,
        "the resumed process kept sending"
    );
    let log = nodes[paused].log();
    assert_eq!(
        log.matches("lost lease outbox").count(),
        1,
        "says so once: {log}"
    );
    assert!(nodes[paused].child.try_wait().unwrap().is_none(), "{log}");
    // it never confirmed: the journal holds each delivered entry once
    let at = StateAt::parse(&lab.state).unwrap();
    let st = Ledger::open_read_only(&at).unwrap().status().unwrap();
    assert_eq!(st.entries_sent as usize, want.len(), "{st:?}");
    lab.assert_exactly(&want, BATCH);
    stop_nodes(nodes);
}

/// PostgreSQL restarted under two running processes, with SEGs stored while it is down: they
/// say once that it is unreachable, back off, take their leases again when it is back, and
/// every label is delivered.
#[test]
fn a_postgres_restart_under_running_processes_loses_nothing() {
    let mut pg = crate::common::pg::PgServer::start();
    let mut lab = Lab::new(1, Some(new_database(&pg.dsn)));
    let nodes = vec![lab.start_node(&[]), lab.start_node(&[])];
    let mut want = lab.store(0, "before", 8);
    lab.wait_delivered(&want, Duration::from_secs(40));
    pg.stop();
    want.extend(lab.store(0, "during", 8));
    // longer than the lease: every lease expires while it is down
    std::thread::sleep(Duration::from_secs(9));
    pg.start_again();
    want.extend(lab.store(0, "after", 4));
    lab.wait_delivered(&want, Duration::from_secs(60));
    for n in &nodes {
        let log = n.log();
        assert_eq!(
            log.matches("PostgreSQL is unreachable").count(),
            1,
            "said once: {log}"
        );
        assert!(log.contains("reachable again"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    let mut nodes = nodes;
    for n in &mut nodes {
        assert!(n.child.try_wait().unwrap().is_none(), "{}", n.log());
    }
    // a delivery cut off by the restart is sent again: one batch per process at most
    lab.assert_exactly(&want, 2 * BATCH);
    stop_nodes(nodes);
}

/// A hook call may reach any process: it is kept in the shared ledger and acted on by the
/// holder of the source's lease, at once (the changes feed is slowed to a minute here, so only
/// the hook can explain a prompt notify).
#[test]
fn a_hook_call_to_any_process_is_acted_on_by_the_holder() {
    let mut lab = Lab::new(1, None);
    let token = "cluster-hook-token-4f1c2a9e7d";
    let listen: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let slow = ["--poll", "60", "--reconcile", "3600"];
    let mut nodes = vec![lab.start_serve(&listen[0], token, &slow)];
    let held = try_wait(Duration::from_secs(20), || lab.owners().len() == 1);
    assert!(held, "the first process holds nothing\n{}", logs(&nodes));
    nodes.push(lab.start_serve(&listen[1], token, &slow));
    let up = try_wait(Duration::from_secs(20), || {
        nodes[1].log().contains("hook endpoint on")
    });
    assert!(up, "the second process did not start\n{}", logs(&nodes));
    let holder = lab.owners()[&0];
    let other = nodes.iter().position(|n| n.pid() != holder).unwrap();
    let want = lab.store(0, "hooked", 1);
    let (_, label) = want.iter().next().unwrap().clone();
    let series = lab.pacs[0].get_json("/series?expand");
    let id = series
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["MainDicomTags"]["SeriesInstanceUID"] == label.as_str())
        .map(|s| s["ID"].as_str().unwrap().to_string())
        .unwrap();
    let sent = Instant::now();
    let code = lab.emu.rt.block_on(async {
        reqwest::Client::new()
            .post(format!(
                "http://{}/hooks/orthanc/stable-series",
                listen[other]
            ))
            .bearer_auth(token)
            .json(&serde_json::json!({"id": id, "modality": "SEG"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(code, 202);
    let ok = try_wait(Duration::from_secs(15), || {
        want.iter().all(|p| lab.added().contains_key(p))
    });
    assert!(ok, "not delivered through the hook\n{}", logs(&nodes));
    eprintln!(
        "cluster: hook to the non-holder → notify in {:.1?}",
        sent.elapsed()
    );
    lab.assert_exactly(&want, 0);
    // taken: nothing is left kept
    let at = StateAt::parse(&lab.state).unwrap();
    let l = Ledger::open_read_only(&at).unwrap();
    assert_eq!(l.hooks_kept().unwrap(), 0);
    // who holds what: `status` and /healthz say it, with the epochs and lease ages
    let o = segbridge(lab.dir.path())
        .args(["status", "--state", &lab.state])
        .output()
        .unwrap();
    let st = text(&o);
    assert!(o.status.success(), "{st}");
    let source = format!("source:orthanc:{}", lab.pacs[0].url);
    let line = st.lines().find(|l| l.contains(&source)).unwrap_or_default();
    assert!(
        line.contains(&format!(":{holder}:")) && line.contains("epoch 1"),
        "{st}"
    );
    let pw = url::Url::parse(&lab.state)
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    assert!(!st.contains(&pw), "the password is shown: {st}");
    let hz: serde_json::Value = lab.emu.rt.block_on(async {
        reqwest::get(format!("http://{}/healthz", listen[other]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let cluster = &hz["cluster"];
    assert!(cluster["holder"]
        .as_str()
        .unwrap()
        .contains(&format!(":{}:", nodes[other].pid())));
    assert!(
        cluster["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == source.as_str() && l["epoch"] == 1 && l["age_s"].is_i64()),
        "{hz}"
    );
    stop_nodes(nodes);
}

/// `sync` on a shared ledger holds its sources' and the outbox's leases for the run: alone it
/// works and hands them back; beside a `watch` that holds them it waits `--lock-wait`, then
/// fails naming the holder, and sends nothing.
#[test]
fn sync_on_a_shared_ledger_never_races_a_watch() {
    let mut lab = Lab::new(1, None);
    let mut want = lab.store(0, "by-sync", 3);
    let sync = |lab: &Lab| {
        segbridge(lab.dir.path())
            .env("MONAI_API_KEY", &lab.emu.key)
            .args(["sync", "--dataset", &lab.ds, "--api", &lab.emu.url])
            .args(["--state", &lab.state, "--orthanc", &lab.pacs[0].url])
            .args(["--lock-wait", "1", "--retry-for", "5"])
            .output()
            .unwrap()
    };
    let o = sync(&lab);
    assert!(o.status.success(), "{}", text(&o));
    lab.assert_exactly(&want, 0);
    assert!(
        lab.leases().iter().all(|l| l.expires_in_s < 0),
        "handed back: {:?}",
        lab.leases()
    );
    let nodes = vec![lab.start_node(&[])];
    wait_for(
        "the watch holding the Orthanc",
        Duration::from_secs(20),
        || lab.owners().len() == 1,
    );
    want.extend(lab.store(0, "by-watch", 2));
    let o = sync(&lab);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let pid = nodes[0].pid();
    assert!(
        text(&o).contains(&format!(":{pid}:")) && text(&o).contains("held by"),
        "{}",
        text(&o)
    );
    lab.wait_delivered(&want, Duration::from_secs(30));
    lab.assert_exactly(&want, 0);
    stop_nodes(nodes);
}
