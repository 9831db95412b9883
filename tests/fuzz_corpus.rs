//! Replays the committed fuzz corpus (fuzz/corpus/<target>/*) and every regression input
//! (fuzz/regressions/<target>/*) through the same target bodies the fuzzers run: none may panic.
//! CI runs this on every build; fuzzing itself is fuzz/run.sh.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let d = root.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(data) = std::fs::read(e.path()) else {
                continue;
            };
            let t = std::time::Instant::now();
            f(&data);
            if t.elapsed() > std::time::Duration::from_secs(1) {
                eprintln!("slow: {} took {:?}", e.path().display(), t.elapsed());
            }
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn header_corpus() {
    replay("header", segbridge::fuzz_targets::header);
}

#[test]
fn metadata_corpus() {
    replay("metadata", segbridge::fuzz_targets::metadata);
}

#[test]
fn binary_corpus() {
    replay("binary", segbridge::fuzz_targets::binary);
}

#[test]
fn rle_corpus() {
    replay("rle", segbridge::fuzz_targets::rle);
}

#[test]
fn hook_corpus() {
    replay("hook", segbridge::fuzz_targets::hook);
}

#[test]
fn pixels_corpus() {
    replay("pixels", segbridge::fuzz_targets::pixels);
}
