//! Figure 6 of the backfill bench: deleted SEGs among N, each to its `removed`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, orthanc::Orthanc, Emu, SlowProxy};
use super::{cpu_of, measure, median, now_ms, segbridge, sync_cmd};
use segbridge::fixtures::{CtSeries, SegSpec};

/// Figure 6: deleted SEGs among N, each to its `removed`, with `watch --orthanc --poll 2`; the
/// requests and CPU of what a deletion sets off (the count, then the full listing); and how
/// long Orthanc takes to answer the two requests of an idle poll.
pub fn figure(
    orthanc: &Orthanc,
    proxy: &SlowProxy,
    emu: &Emu,
    dir: &Path,
    n: usize,
    quick: bool,
    report: &mut String,
) {
    let answer_ms = |path: &str| {
        let mut t = Vec::new();
        for _ in 0..21 {
            let start = Instant::now();
            orthanc.get_json(path);
            t.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        median(t)
    };
    let last = orthanc.get_json("/changes?last")["Last"]
        .as_i64()
        .unwrap_or(0);
    let (stats_ms, changes_ms) = (
        answer_ms("/statistics"),
        answer_ms(&format!("/changes?since={last}&limit=500")),
    );
    let ds = emu.create_dataset();
    let state = dir.join("deletions.db");
    let rest = ["--no-validate", "--orthanc", &proxy.url];
    measure(
        sync_cmd(dir, emu, &rest, &ds, &state),
        None,
        &dir.join("del-prep.out"),
    );
    let mut c = segbridge(dir, emu);
    c.args(["watch", "--poll", "2", "--reconcile", "3600"])
        .args(rest)
        .args(["--dataset", &ds, "--api", &emu.url])
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("del-watch.log")).unwrap());
    let mut child = c.spawn().unwrap();
    // its first listing (nothing new) and a few idle polls
    std::thread::sleep(Duration::from_secs(6));
    let samples = if quick { 2 } else { 7 };
    let mut took = Vec::new();
    let mut requests = Vec::new();
    let mut cpu = Vec::new();
    let mut seed = 0x2545f4914f6cdd1du64;
    for k in 0..samples {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // anywhere in the poll interval
        std::thread::sleep(Duration::from_millis(2000 + (seed >> 33) % 2000));
        let i = (k * 7919 + 13) % n;
        let ct = CtSeries::new(&format!("b{i}"), 1);
        let seg = SegSpec::new(&format!("b{i}-seg"), &ct);
        let id = segbridge::source::orthanc::series_id(&ct.patient, &ct.study, &seg.series_uid());
        let (r0, c0) = (proxy.count(), cpu_of(child.id()));
        let t0 = now_ms();
        orthanc.delete(&format!("/series/{id}"));
        let want = ("removed".to_string(), ct.series.clone(), seg.series_uid());
        let end = Instant::now() + Duration::from_secs(120);
        let at = loop {
            let timed = emu.get("/_emulator/notifications?timed=true");
            let hit = timed.as_array().unwrap().iter().find_map(|t| {
                common::entries(std::slice::from_ref(&t["body"]))
                    .contains(&want)
                    .then(|| t["received_ms"].as_u64().unwrap())
            });
            if let Some(at) = hit {
                break at;
            }
            assert!(
                Instant::now() < end,
                "deletion {k}: no removed within 120 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        took.push(at.saturating_sub(t0) as f64 / 1000.0);
        // what the deletion set off, up to its notify (idle polls included)
        requests.push((proxy.count() - r0) as f64);
        cpu.push((cpu_of(child.id()) - c0) * 1000.0);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let max = took.iter().cloned().fold(0.0, f64::max);
    report.push_str(&format!(
        "### 6. Deletions: a deleted SEG among N to its `removed` (watch --orthanc, poll 2 s)\n\n\
         | deletions | median (s) | max (s) | requests to Orthanc, deletion to notify (median) | CPU, deletion to notify (ms, median) |\n|---|---|---|---|---|\n\
         | {samples} | {:.2} | {:.2} | {:.0} | {:.0} |\n\n\
         Orthanc's answer to the two requests of an idle poll (median of 21): `GET /statistics` \
         {stats_ms:.1} ms, `GET /changes?since=LAST` {changes_ms:.1} ms.\n\n",
        median(took),
        max,
        median(requests),
        median(cpu)
    ));
    eprintln!("{report}");
}
