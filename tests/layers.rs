//! The layering, enforced: every `crate::…` path in `src/` (outside `#[cfg(test)]` modules)
//! must name a module that the file's own top-level module may use. ARCHITECTURE.md draws the
//! same table. A new top-level module must be added here, with what it may use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level module → the modules it may import from (itself always allowed): a top-level
/// module (`util`: all of it) or one module inside one (`monai::types`: that module only).
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const UTIL: &[&str] = &[];
    const MODEL: &[&str] = &["util"];
    const L2: &[&str] = &["util", "model"];
    const PACS: &[&str] = &["util", "model", "dicom"];
    const LEDGER: &[&str] = &["util", "model", "rules"];
    const SOURCE: &[&str] = &["util", "model", "dicom", "rules", "pacs"];
    const APP: &[&str] = &[
        "util", "model", "dicom", "rules", "pacs", "monai", "ledger", "source", "emulator",
        "fixtures", "app",
    ];
    BTreeMap::from([
        // L0
        ("util", UTIL),
        // L1: the domain, no I/O
        ("model", MODEL),
        // L2: reading DICOM, and the rules (matching, planning)
        ("dicom", L2),
        ("rules", L2),
        ("fixtures", &["util", "model", "dicom"][..]),
        // L3: adapters
        ("pacs", PACS),
        ("monai", L2),
        ("ledger", LEDGER),
        ("source", SOURCE),
        ("emulator", &["util", "model::uid", "monai::types"][..]),
        // L4: the application
        ("app", APP),
        ("fuzz_targets", APP),
        // L5: the command line
        ("cli", &[]), // may use everything
    ])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without its `#[cfg(test)]` modules (from the attribute to the end of the block).
fn without_tests(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            return out;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `path` (`monai::types::Job`) lies in a module `may` names (`monai` or
/// `monai::types`).
fn within(path: &str, may: &[&str]) -> bool {
    may.iter().any(|m| {
        path.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The paths a file names through `crate::` (`ledger::Ledger`), with the line of each.
fn crate_paths(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let name = name.trim_end_matches(':').to_string();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = &rest[at + 7..];
        }
    }
    out
}

#[test]
fn every_module_imports_only_from_the_layers_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let allowed = allowed();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // a whole file of unit tests (`#[cfg(test)] mod tests;`) is a test module
        if top == "lib" || top == "main" || f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let layer = top.as_str();
        let Some(may) = allowed.get(layer) else {
            wrong.push(format!(
                "{}: top-level module `{top}` has no layer in tests/layers.rs",
                rel.display()
            ));
            continue;
        };
        let src = without_tests(&std::fs::read_to_string(f).unwrap());
        for (line, path) in crate_paths(&src) {
            let used = path.split("::").next().unwrap_or_default();
            if used == top || layer == "cli" || within(&path, may) {
                continue;
            }
            wrong.push(format!(
                "{}:{line}: `{top}` imports `crate::{path}`, which is not below it",
                rel.display()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} upward or sideways imports:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_paths_and_skips_test_modules() {
    let src = "use crate::ledger::Ledger; // crate::cli\nfn f() { crate::util::now(); }\n\
               #[cfg(test)]\nmod tests { use crate::cli::run; }\nfn g() { crate::model::X }";
    let kept = without_tests(src);
    let names: Vec<String> = crate_paths(&kept).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["ledger::Ledger", "util::now", "model::X"]);
    // a module inside a top-level one allows that module only
    let may = ["util", "monai::types"];
    assert!(within("util::Secret", &may) && within("monai::types::Job", &may));
    assert!(!within("monai::Client", &may) && !within("monai::typesetter", &may));
    assert!(!within("monai", &may));
}
