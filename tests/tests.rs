//! Every integration test, in ONE test binary: each file of `tests/` is a module here, so a
//! change to the library relinks one binary instead of one per file (on two cores the links
//! were most of a rebuild). `Cargo.toml` sets `autotests = false`: a file that is not declared
//! below is never built; `every_test_file_is_declared` fails when one is missing.
//!
//! A test's name starts with its file's: `cargo test --test tests model::` runs tests/model.rs,
//! `cargo test --test tests hook::a_restart` one test of tests/hook.rs. Filters match
//! substrings, so `pacs::` also runs `attacks_pacs::` and `corpus::` `fuzz_corpus::`; add
//! `--skip attacks_pacs` (or `--skip fuzz_corpus`) to leave those out.
//!
//! The tests share one process and run in parallel threads. They must keep to what is theirs:
//! no `std::env::set_var`, no `set_current_dir`, no process-wide statics or signal handlers,
//! no fixed paths or ports (a temporary dir each, ports from `common::free_port` or `:0`).
//! Process-wide settings go on the `Command` of a child (`env`, `current_dir`, `pre_exec`).

mod common;

mod api;
mod attacks_files;
mod attacks_http;
mod attacks_pacs;
mod bulk;
mod cli;
mod cluster;
mod corpus;
mod dataset;
mod deletions;
mod determinism;
mod emulator;
mod emulator_pacs;
mod faults;
mod fuzz_corpus;
mod hook;
mod hostile;
mod layers;
mod model;
mod orthanc;
mod pacs;
mod quality;
mod status_page;
mod status_page_cl;
mod store_tls;
mod sync;
mod tls;
mod verdicts;
mod workflow;

/// With `autotests = false`, a test file that this binary does not declare is never compiled
/// nor run, silently: every `tests/*.rs` and `tests/*/mod.rs` must be a `mod` above.
#[test]
fn every_test_file_is_declared() {
    let this = include_str!("tests.rs");
    let declared = |name: &str| this.lines().any(|l| l == format!("mod {name};"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let is_module = if path.is_dir() {
            path.join("mod.rs").is_file()
        } else {
            path.extension().is_some_and(|x| x == "rs") && name != "tests"
        };
        if is_module {
            assert!(
                declared(&name),
                "{} is not declared in tests/tests.rs (`mod {name};`), so it never runs",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 1, "no test files found in {}", dir.display());
}
