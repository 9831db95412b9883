//! Leases and fences on PostgreSQL: one holder at a time, the epoch raised at each new holder,
//! and a process that lost its lease unable to record or confirm anything.

use std::sync::Arc;
use std::time::Duration;

use super::test_stores::Stores;
use super::testing::{new_database, test_server};
use super::*;
use crate::model::scan::Listing;

const TTL: Duration = Duration::from_secs(10);

fn two_processes() -> (Ledger, Ledger) {
    let at = Stores::postgres().store();
    let a = Ledger::open(&at, Duration::ZERO).unwrap();
    let b = Ledger::open(&at, Duration::ZERO).unwrap();
    (a, b)
}

#[test]
fn one_holder_at_a_time_and_a_new_epoch_for_each() {
    let (mut a, mut b) = two_processes();
    let fa = a.acquire("source:x", "A", TTL).unwrap().unwrap();
    assert_eq!(fa.epoch, 1);
    assert_eq!(b.acquire("source:x", "B", TTL).unwrap(), None, "held by A");
    assert!(a.renew(&fa, TTL).unwrap());
    a.release(&fa).unwrap();
    let fb = b.acquire("source:x", "B", TTL).unwrap().unwrap();
    assert_eq!(fb.epoch, 2);
    assert!(!a.renew(&fa, TTL).unwrap(), "A lost it");
    let rows = b.leases().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].holder.as_str(), rows[0].epoch), ("B", 2));
    assert!(rows[0].expires_in_s > 5, "{rows:?}");
}

#[test]
fn an_expired_lease_is_taken_over_by_the_database_clock() {
    let (mut a, mut b) = two_processes();
    let short = Duration::from_millis(300);
    let fa = a.acquire(OUTBOX_LEASE, "A", short).unwrap().unwrap();
    assert_eq!(b.acquire(OUTBOX_LEASE, "B", TTL).unwrap(), None);
    std::thread::sleep(Duration::from_millis(400));
    let fb = b.acquire(OUTBOX_LEASE, "B", TTL).unwrap().unwrap();
    assert_eq!(fb.epoch, fa.epoch + 1);
    assert!(!a.renew(&fa, short).unwrap());
}

#[test]
fn a_process_that_lost_its_lease_cannot_record_or_confirm() {
    let (mut a, mut b) = two_processes();
    let (fa_src, fa_out) = (
        a.acquire(&source_lease("folder:/f"), "A", TTL)
            .unwrap()
            .unwrap(),
        a.acquire(OUTBOX_LEASE, "A", TTL).unwrap().unwrap(),
    );
    let fences = Arc::new(Fences::default());
    fences.set(fa_src.clone());
    fences.set(fa_out.clone());
    a.fence_with(fences.clone());
    let listing = Listing {
        source: "folder:/f".into(),
        ..Default::default()
    };
    a.apply(&listing, &[], "ds").unwrap();
    // A is paused; its leases are taken over (released here, as an expiry would)
    b.release(&fa_src).unwrap();
    b.release(&fa_out).unwrap();
    let fb = b.acquire(OUTBOX_LEASE, "B", TTL).unwrap().unwrap();
    b.acquire(&source_lease("folder:/f"), "B", TTL)
        .unwrap()
        .unwrap();
    // A resumes with its old fences: nothing it writes is accepted
    let e = a.apply(&listing, &[], "ds").unwrap_err();
    assert!(
        matches!(e, LedgerError::Fenced { ref lease, epoch: 1 } if lease == "source:folder:/f"),
        "{e}"
    );
    let e = a.confirm(&[1]).unwrap_err();
    assert!(matches!(e, LedgerError::Fenced { .. }), "{e}");
    assert!(matches!(
        a.pending("ds", 10),
        Err(LedgerError::Fenced { .. })
    ));
    assert!(matches!(
        a.record_failure(&[1], "x"),
        Err(LedgerError::Fenced { .. })
    ));
    // a lease A never held is refused before any SQL
    fences.remove(OUTBOX_LEASE);
    assert!(matches!(a.confirm(&[1]), Err(LedgerError::NotHeld { .. })));
    // B, the holder, can
    let bf = Arc::new(Fences::default());
    bf.set(fb);
    b.fence_with(bf);
    assert!(b.pending("ds", 10).unwrap().is_empty());
}

#[test]
fn processes_starting_together_on_a_fresh_database_migrate_once() {
    let dsn = new_database(&test_server());
    let at = StateAt::parse(&dsn).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let at = at.clone();
            std::thread::spawn(move || {
                let l = Ledger::open(&at, Duration::ZERO).unwrap();
                l.schema_version().unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), schema_pg::MIGRATIONS.len() as i64);
    }
    let l = Ledger::open(&at, Duration::ZERO).unwrap();
    let versions =
        l.db.rows("SELECT version FROM segbridge_schema ORDER BY version", &[])
            .unwrap();
    assert_eq!(versions.len(), schema_pg::MIGRATIONS.len(), "each once");
}

#[test]
fn a_heartbeat_counts_the_processes_alive() {
    let (mut a, mut b) = two_processes();
    assert_eq!(a.heartbeat("A", TTL).unwrap(), 1);
    assert_eq!(b.heartbeat("B", Duration::from_millis(200)).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.heartbeat("A", TTL).unwrap(), 1, "B's expired");
    a.leave("A").unwrap();
    assert_eq!(b.heartbeat("B", TTL).unwrap(), 1);
}

#[test]
fn the_password_is_never_shown() {
    let admin = test_server();
    let at = StateAt::parse(&new_database(&admin)).unwrap();
    let pw = url::Url::parse(&admin)
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    assert!(!at.shown().contains(&pw));
    assert!(!format!("{at:?}").contains(&pw));
    let l = Ledger::open(&at, Duration::ZERO).unwrap();
    assert!(!l.path().contains(&pw));
    // a wrong password: the error names the server, not the password
    let mut bad = url::Url::parse(&admin).unwrap();
    bad.set_password(Some("wrong-Secret-123")).unwrap();
    let e = Ledger::open(&StateAt::parse(bad.as_str()).unwrap(), Duration::ZERO)
        .err()
        .unwrap()
        .to_string();
    assert!(!e.contains("wrong-Secret-123") && !e.contains(&pw), "{e}");
    assert!(e.contains("127.0.0.1"), "{e}");
}

#[test]
fn processes_gone_for_an_hour_are_forgotten_now_and_then() {
    let (mut a, mut b) = two_processes();
    a.heartbeat("A", TTL).unwrap();
    b.heartbeat("B", TTL).unwrap();
    // B was killed long ago: it never left
    a.db.exec(
        "UPDATE members SET expires_at = now() - interval '2 hours' WHERE holder = 'B'",
        &[],
    )
    .unwrap();
    let members = |l: &Ledger| l.db.one("SELECT COUNT(*) FROM members", &[]).unwrap();
    assert_eq!(members(&a), 2, "a heartbeat forgets nobody");
    a.forget_gone_members().unwrap();
    assert_eq!(members(&a), 1);
    // and the lease listing needs no schema question once migrated
    assert!(a.migrated && a.leases().unwrap().is_empty());
}
