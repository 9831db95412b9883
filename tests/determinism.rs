//! A verdict is a function of the set of files: the same files, copied in 20 shuffled orders,
//! directory layouts and file names, read by 1 to 8 threads, give the same `scan --json`
//! (paths mapped back to the files' own names, lines sorted).
//!
//! The set: the generated fixtures, the real dcmqi samples, OHIF-style SEGs (RLE bitmaps and
//! label maps, tests/python/make_ohif.py), and two non-image instances inside image series (an
//! SR document in the CT series two dcmqi SEGs label, a presentation state in another), which
//! once made the gate compare a SEG with a 0x0 "source image" depending on hash order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// xorshift: reproducible shuffles without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn name(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789"[(self.next() % 36) as usize] as char)
            .collect()
    }
}

/// Every file of the set: its own name → bytes.
fn the_set() -> BTreeMap<String, Vec<u8>> {
    let mut set = BTreeMap::new();
    let root = repo_root().join("fixtures");
    for e in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        // two files sharing a SOP Instance UID are resolved by path, by design: keep one
        if e.file_type().is_file() && !rel.ends_with("sparse-labelmap-ppv5.dcm") {
            set.insert(rel, std::fs::read(e.path()).unwrap());
        }
    }
    // OHIF's layouts, written once and copied like the rest
    let tmp = tempfile::tempdir().unwrap();
    let py = std::env::var("SEGBRIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(py)
        .arg(repo_root().join("tests/python/make_ohif.py"))
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "make_ohif.py (run scripts/test.sh for its venv): {}",
        text(&o)
    );
    for e in walkdir::WalkDir::new(tmp.path()).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "dcm") {
            let rel = e.path().strip_prefix(tmp.path()).unwrap().to_string_lossy();
            set.insert(format!("ohif/{rel}"), std::fs::read(e.path()).unwrap());
        }
    }
    // an SR in the CT series that liver.dcm and partial_overlaps.dcm label (UID sorts first),
    // and a presentation state in the 23x38x3 series
    set.insert(
        "extra/ct-3slice-sr.dcm".into(),
        non_image(
            &root.join("dcmqi/ct-3slice/01.dcm"),
            "1.2.840.10008.5.1.4.1.1.88.22",
            "SR",
            "1.1.1",
        ),
    );
    set.insert(
        "extra/23x38x3-pr.dcm".into(),
        non_image(
            &root.join("dcmqi/23x38x3/image/IMG0001.dcm"),
            "1.2.840.10008.5.1.4.1.1.11.1",
            "PR",
            "1.1.2",
        ),
    );
    set
}

/// Copies the set into `dir` in a shuffled order under new names; returns new path → own name.
fn lay_out(
    set: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
    rng: &mut Rng,
    kind: u64,
) -> Vec<(String, String)> {
    let mut order: Vec<&String> = set.keys().collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut map = Vec::new();
    for (i, own) in order.into_iter().enumerate() {
        let rel: PathBuf = match kind {
            0 => PathBuf::from(own),
            // flat, random names, some without an extension
            1 => PathBuf::from(format!("{}{i}{}", rng.name(6), [".dcm", "", ".seg"][i % 3])),
            // nested 1 to 3 levels deep
            _ => {
                let mut p = PathBuf::new();
                for _ in 0..=(rng.next() % 3) {
                    p.push(rng.name(2));
                }
                p.push(format!("{}{i}", rng.name(8)));
                p
            }
        };
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &set[own]).unwrap();
        map.push((path.to_string_lossy().to_string(), own.clone()));
    }
    // longest first, so that no path is replaced inside a longer one
    map.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    map
}

/// `scan --json` with the paths mapped back to the files' own names, lines sorted.
fn scan(dir: &Path, threads: Option<&str>, map: &[(String, String)]) -> Vec<String> {
    let mut c = segbridge(dir);
    c.args(["scan", "--json", "--folder"]).arg(dir);
    match threads {
        Some(t) => c.env("SEGBRIDGE_READ_THREADS", t),
        None => c.env_remove("SEGBRIDGE_READ_THREADS"),
    };
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let mut s = l.to_string();
            for (path, own) in map {
                s = s.replace(path.as_str(), own);
            }
            // the keys sorted: the same object prints the same
            serde_json::from_str::<Value>(&s).unwrap().to_string()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_same_files_give_the_same_verdicts_in_any_order_layout_or_thread_count() {
    let set = the_set();
    assert!(set.len() > 50, "{} files", set.len());
    let threads = [None, Some("1"), Some("2"), Some("3"), Some("8")];
    let mut first: Option<Vec<String>> = None;
    for i in 0..20u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (i + 1).wrapping_mul(0x9E37_79B9));
        let map = lay_out(&set, &dir, &mut rng, i % 3);
        let t = threads[i as usize % threads.len()];
        let got = scan(tmp.path(), t, &map);
        match &first {
            None => {
                // worth comparing: every kind of outcome, nothing judged against an SR's 0x0
                let all = got.join("\n");
                for s in [
                    "\"ready\"",
                    "\"superseded\"",
                    "\"invalid\"",
                    "\"unreadable\"",
                ] {
                    assert!(all.contains(s), "no {s} in\n{all}");
                }
                assert!(!all.contains("0x0"), "{all}");
                for seg in ["ct-3slice/liver.dcm", "ct-3slice/partial_overlaps.dcm"] {
                    let l: Value = got
                        .iter()
                        .map(|l| serde_json::from_str::<Value>(l).unwrap())
                        .find(|l| l["source"].as_str().is_some_and(|s| s.ends_with(seg)))
                        .unwrap_or_else(|| panic!("{seg} not in\n{all}"));
                    assert_ne!(l["status"], "invalid", "{l}");
                }
                first = Some(got);
            }
            Some(want) => {
                for (a, b) in want.iter().zip(&got) {
                    assert_eq!(a, b, "layout {i} (kind {}, threads {t:?}) differs", i % 3);
                }
                assert_eq!(want.len(), got.len(), "layout {i}");
            }
        }
    }
}
