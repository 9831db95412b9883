//! Deleted SEG series on a REAL Orthanc: `watch --orthanc` reports them within two polls (the
//! count of series beside the changes feed, `src/source/orthanc/deletions.rs`) while an idle
//! poll stays two requests; a failing `/statistics` leaves the feed alone; `watch --dicomweb`
//! removes at the next complete listing and never on a failed one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use crate::pacs::{args, sigterm, Lab};
use segbridge::fixtures::SegSpec;

/// The poll interval of these tests (seconds).
const POLL: f64 = 0.5;

/// What a deletion may take beyond two polls: the delivery linger (200 ms), the listing and the
/// notify on a small Orthanc (tens of ms), this test's 20 ms look at the emulator, and slack
/// for a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(700);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// When the emulator received the first notify holding `(section, image, label)`, in Unix ms.
fn received(lab: &Lab, want: &(String, String, String), within: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let timed = lab.emu.get("/_emulator/notifications?timed=true");
        for n in timed.as_array().unwrap() {
            if entries(std::slice::from_ref(&n["body"])).contains(want) {
                return n["received_ms"].as_u64().unwrap();
            }
        }
        assert!(
            start.elapsed() < within,
            "no {want:?} within {within:?}: have {:?}\nwatch log:\n{}",
            lab.got(),
            lab.watch_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes `seg` through Orthanc's REST API; returns how long until the emulator got `want`.
fn delete_and_time(lab: &Lab, seg: &SegSpec, want: (String, String, String)) -> Duration {
    let t0 = now_ms();
    lab.delete_seg(seg);
    let at = received(lab, &want, Duration::from_secs(30));
    Duration::from_millis(at.saturating_sub(t0))
}

#[test]
fn orthanc_watch_reports_a_deleted_seg_within_two_polls() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    let older = lab.stored_seg("older", &a, "20240101");
    let newer = lab.stored_seg("newer", &a, "20240301");
    let b = lab.ct("b", true);
    let sb = lab.stored_seg("sb", &b, "20240101");
    let mut w = lab.watch_every(&args(&lab.rest()), &POLL.to_string(), "600", &[]);
    lab.wait_entries(2, "the backfill");
    let mut got = lab.got();
    got.sort();
    let mut want = vec![
        e("added", &a.series, &newer.series_uid()),
        e("added", &b.series, &sb.series_uid()),
    ];
    want.sort();
    assert_eq!(got, want);
    // let the feed's StableSeries of the stores pass, so that the deletions meet idle polls
    std::thread::sleep(Duration::from_millis(2500));
    let bound = Duration::from_secs_f64(2.0 * POLL) + MARGIN;
    // the only label of b goes: removed
    let took = delete_and_time(&lab, &sb, e("removed", &b.series, &sb.series_uid()));
    eprintln!("deleted -> removed: {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?} > {bound:?}\n{}", lab.watch_log());
    // the newer label of a goes: the older one is current again
    let took = delete_and_time(&lab, &newer, e("updated", &a.series, &older.series_uid()));
    eprintln!("deleted newer -> updated older: {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?} > {bound:?}\n{}", lab.watch_log());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.got().len(), 4, "{:?}", lab.got());
    let log = lab.watch_log();
    assert!(log.contains("something was deleted"), "{log}");
    assert!(sigterm(&mut w).success(), "{log}");
}

#[test]
fn an_idle_orthanc_poll_is_two_requests() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    let s = lab.stored_seg("s", &a, "20240101");
    let proxy = SlowProxy::counting(&lab.orthanc.url);
    let mut w = lab.watch_every(&["--orthanc", &proxy.url], "0.2", "600", &[]);
    lab.wait_entries(1, "the backfill");
    assert_eq!(lab.got(), vec![e("added", &a.series, &s.series_uid())]);
    // StableAge is 1 s: after 2.5 s the feed has nothing more to say
    std::thread::sleep(Duration::from_millis(2500));
    let from = proxy.count();
    std::thread::sleep(Duration::from_secs(3));
    let asked: Vec<String> = proxy.requests.lock().unwrap()[from..].to_vec();
    let polls = asked
        .iter()
        .filter(|r| r.starts_with("GET /changes?since="))
        .count();
    let counts = asked.iter().filter(|r| *r == "GET /statistics").count();
    assert!(polls >= 10, "{polls} polls in 3 s at --poll 0.2: {asked:?}");
    assert_eq!(
        polls + counts,
        asked.len(),
        "an idle poll asked for more than the feed and the count: {asked:?}"
    );
    // (a poll asks the feed, then the count: the window may cut a pair at either edge, so
    // it may begin with the count of a poll whose feed came before it)
    assert!(counts.abs_diff(polls) <= 1, "one count per poll: {asked:?}");
    eprintln!(
        "idle: {} requests in {polls} polls ({:.2} per poll)",
        asked.len(),
        asked.len() as f64 / polls as f64
    );
    assert!(sigterm(&mut w).success());
}

#[test]
fn a_failing_statistics_leaves_the_feed_alone_and_the_timer_finds_deletions() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    let s = lab.stored_seg("s", &a, "20240101");
    let proxy = FaultyPacs::start(&lab.orthanc.url);
    proxy.fail("/statistics", "500", 1_000_000);
    let mut w = lab.watch_every(&["--orthanc", &proxy.url], &POLL.to_string(), "6", &[]);
    lab.wait_entries(1, "the backfill");
    // the feed goes on: a new SEG is added
    let b = lab.ct("b", true);
    let sb = lab.stored_seg("sb", &b, "20240101");
    lab.wait_entries(2, "the SEG stored while /statistics fails");
    assert_eq!(lab.got()[1], e("added", &b.series, &sb.series_uid()));
    // a deletion waits for the listing timer (6 s), which finds it
    let t0 = Instant::now();
    lab.delete_seg(&s);
    lab.wait_entries(3, "the removal by the timed listing");
    assert_eq!(lab.got()[2], e("removed", &a.series, &s.series_uid()));
    eprintln!("with /statistics failing: removed after {:?}", t0.elapsed());
    let log = lab.watch_log();
    assert_eq!(
        log.matches("cannot count Orthanc's series").count(),
        1,
        "said once: {log}"
    );
    assert!(!log.contains("retrying with backoff"), "{log}");
    // it answers again: the next listing takes it back, and deletions are quick again
    proxy.heal();
    let c = lab.ct("c", true);
    let sc = lab.stored_seg("sc", &c, "20240101");
    lab.wait_entries(4, "the SEG stored after /statistics healed");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lab.watch_log().contains("counts its series again") {
        assert!(Instant::now() < deadline, "{}", lab.watch_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let bound = Duration::from_secs_f64(2.0 * POLL) + MARGIN;
    let took = delete_and_time(&lab, &sc, e("removed", &c.series, &sc.series_uid()));
    assert!(took <= bound, "{took:?} > {bound:?}\n{}", lab.watch_log());
    assert!(sigterm(&mut w).success());
}

#[test]
fn dicomweb_watch_removes_at_the_next_listing_and_never_on_a_failed_one() {
    let lab = Lab::new();
    let proxy = FaultyPacs::start(&lab.orthanc.url);
    let mut segs = Vec::new();
    for i in 0..5 {
        let ct = lab.ct(&format!("ct{i}"), true);
        let s = lab.stored_seg(&format!("s{i}"), &ct, "20240101");
        segs.push((ct, s));
    }
    // pages of two: offset 0, 2 and 4
    let dw = format!("{}/dicom-web", proxy.url);
    let src = ["--dicomweb", dw.as_str(), "--page-size", "2"];
    let mut w = lab.watch_every(&src, &POLL.to_string(), "600", &[]);
    lab.wait_entries(5, "the backfill");
    // every poll is a complete listing: a deletion is removed by the next one
    let (ct0, s0) = &segs[0];
    let bound = Duration::from_secs_f64(2.0 * POLL) + MARGIN;
    let took = delete_and_time(&lab, s0, e("removed", &ct0.series, &s0.series_uid()));
    eprintln!("dicomweb: deleted -> removed: {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?} > {bound:?}\n{}", lab.watch_log());
    // the second page is cut in half, then fails: those listings are incomplete and remove
    // nothing, not even the label that is really gone
    let (ct1, s1) = &segs[1];
    proxy.fail("offset=2", "truncate", 1_000_000);
    lab.delete_seg(s1);
    std::thread::sleep(Duration::from_secs(2));
    proxy.fail("offset=2", "500", 1_000_000);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.got().len(), 6, "{:?}", lab.got());
    // complete again: the deleted label goes, and only it
    proxy.heal();
    lab.wait_entries(7, "the removal once the listing is complete");
    assert_eq!(lab.got()[6], e("removed", &ct1.series, &s1.series_uid()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.got().len(), 7, "{:?}", lab.got());
    assert!(sigterm(&mut w).success());
}
