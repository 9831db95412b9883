//! For tests only (unit and integration): a PostgreSQL database of their own on the test
//! server named by `SEGBRIDGE_TEST_PG`, an admin DSN (`scripts/test.sh` starts such a server
//! on loopback, in a temporary directory). Without it those tests fail; they never skip.

use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The admin DSN of the test server; a clear failure without one.
pub fn test_server() -> String {
    std::env::var("SEGBRIDGE_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "SEGBRIDGE_TEST_PG is not set: this test needs a PostgreSQL server; run \
             scripts/test.sh (it starts one), or set \
             SEGBRIDGE_TEST_PG=postgres://user:password@127.0.0.1:PORT/postgres"
        )
    })
}

/// A new, empty database on the server `admin` names; its DSN.
pub fn new_database(admin: &str) -> String {
    let name = format!(
        "sb_{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    // its own thread: the caller may be inside a tokio runtime, where postgres::Client can't run
    let dsn = admin.to_string();
    let create = name.clone();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&dsn, postgres::NoTls)
            .unwrap_or_else(|e| panic!("the test PostgreSQL server: {e}"));
        c.batch_execute(&format!("CREATE DATABASE {create}"))
            .unwrap();
    })
    .join()
    .expect("creating a test database");
    let mut url = url::Url::parse(admin).expect("SEGBRIDGE_TEST_PG is a postgres:// URL");
    url.set_path(&name);
    url.to_string()
}
