//! The stores the ledger's tests run on: every test of `on_both_stores!` runs once on a SQLite
//! file and once on a PostgreSQL database of its own (see `ledger::testing`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::testing::{new_database, test_server};
use super::{Ledger, StateAt};

/// Runs each named test `fn name(b: &Stores)` on both stores, as `sqlite::name` and
/// `postgres::name`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Stores::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(&super::Stores::postgres()) })*
        }
    };
}
pub(crate) use on_both_stores;

pub struct Stores {
    dir: tempfile::TempDir,
    pg: Option<String>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Stores {
    pub fn sqlite() -> Stores {
        Stores {
            dir: tempfile::tempdir().unwrap(),
            pg: None,
        }
    }

    pub fn postgres() -> Stores {
        Stores {
            dir: tempfile::tempdir().unwrap(),
            pg: Some(test_server()),
        }
    }

    /// A new, empty store.
    pub fn store(&self) -> StateAt {
        match &self.pg {
            Some(admin) => StateAt::parse(&new_database(admin)).unwrap(),
            None => StateAt::File(
                self.dir
                    .path()
                    .join(format!("s{}.db", NEXT.fetch_add(1, Ordering::Relaxed))),
            ),
        }
    }

    /// A ledger on a new, empty store.
    pub fn fresh(&self) -> Ledger {
        Ledger::open(&self.store(), Duration::ZERO).unwrap()
    }
}
