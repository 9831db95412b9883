//! The ledger in PostgreSQL over TLS: a server that takes TLS connections only, its
//! certificate signed by a CA of its own. segbridge connects when told that CA
//! (`PGSSLROOTCERT`), refuses the server without it (naming the fix), and cannot connect
//! in plain text to it at all.

use std::path::Path;

use crate::common::pg::PgServer;
use crate::common::*;

/// `sync --dry-run` of an empty folder: it opens (and migrates, in a rolled-back transaction)
/// the ledger, and calls nothing else.
fn dry_run(dir: &Path, dsn: &str, ca: Option<&Path>) -> std::process::Output {
    let folder = dir.join("empty");
    std::fs::create_dir_all(&folder).unwrap();
    let mut c = segbridge(dir);
    c.env_remove("PGSSLROOTCERT")
        .args(["sync", "--dry-run", "--dataset", "d", "--folder"])
        .arg(&folder)
        .args(["--state", dsn]);
    if let Some(ca) = ca {
        c.env("PGSSLROOTCERT", ca);
    }
    c.output().unwrap()
}

#[test]
fn the_ledger_reaches_postgresql_over_tls_and_checks_its_certificate() {
    let pg = PgServer::start_tls_only();
    let dir = tempfile::tempdir().unwrap();
    let require = format!("{}?sslmode=require", pg.dsn);
    let o = dry_run(dir.path(), &require, Some(&pg.ca()));
    assert!(o.status.success(), "{}", text(&o));
    // the default (prefer) uses TLS too, checked the same way
    let o = dry_run(dir.path(), &pg.dsn, Some(&pg.ca()));
    assert!(o.status.success(), "{}", text(&o));
    // a certificate nobody vouches for is refused, and the error names the fix
    let o = dry_run(dir.path(), &require, None);
    assert!(!o.status.success());
    assert!(text(&o).contains("PGSSLROOTCERT"), "{}", text(&o));
    // plain text is refused by this server: the successes above were TLS
    let o = dry_run(dir.path(), &format!("{}?sslmode=disable", pg.dsn), None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("pg_hba.conf") || text(&o).contains("no encryption"),
        "{}",
        text(&o)
    );
}
