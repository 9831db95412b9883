//! The command line as documented: each command's `--help` lists the options it reads and no
//! others, the documentation names only files that are in the repository and lists the exit
//! codes in order, `orthanc-lua --out` writes its script (which holds the token) 0600, and
//! the log levels are as README says.

use std::path::Path;

use crate::common::*;

fn help(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = segbridge(dir.path())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The long options a `--help` lists.
fn options(args: &[&str]) -> Vec<String> {
    help(args)
        .lines()
        .filter_map(|l| {
            let l = l
                .trim_start()
                .trim_start_matches("-v, ")
                .trim_start_matches("-h, ");
            let opt = l.strip_prefix("--")?.split([' ', '<', '.']).next()?;
            Some(opt.to_string())
        })
        .collect()
}

#[test]
fn each_command_lists_only_the_options_it_reads() {
    let has = |args: &[&str], want: &[&str], not: &[&str]| {
        let got = options(args);
        for w in want {
            assert!(got.iter().any(|g| g == w), "{args:?} lacks --{w}: {got:?}");
        }
        for n in not {
            assert!(!got.iter().any(|g| g == n), "{args:?} lists --{n}: {got:?}");
        }
    };
    let ledger = ["state", "batch", "lock-wait"];
    let api = ["api", "org", "retry-for", "request-timeout"];
    // commands that read no settings
    for cmd in [&["emulator"][..], &["fixtures"], &["demo"]] {
        let mut not = ledger.to_vec();
        not.extend(["config", "dataset", "api", "org", "retry-for", "orthanc"]);
        has(cmd, &[], &not);
    }
    has(
        &["orthanc-lua"],
        &["state", "out", "url"],
        &["batch", "lock-wait", "api", "dataset"],
    );
    // every `api` command reads the API's settings, and the ledger's only to journal a notify
    for cmd in [
        &["api", "login"][..],
        &["api", "experiment", "create"],
        &["api", "experiment", "delete"],
        &["api", "job", "wait"],
        &["api", "cl", "start"],
        &["api", "next-image"],
    ] {
        has(cmd, &api, &ledger);
    }
    has(&["api", "next-image"], &["dataset"], &[]);
    assert!(help(&["api", "next-image"]).contains("SEGBRIDGE_DATASET"));
    has(
        &["api", "notify"],
        &[
            "dataset",
            "image",
            "label",
            "updated",
            "removed",
            "state",
            "lock-wait",
        ],
        &["batch", "folder"],
    );
    has(&["scan"], &["folder", "experiment", "api"], &ledger);
    has(
        &["status"],
        &["state", "dataset", "experiment"],
        &["batch", "lock-wait", "folder"],
    );
    let mut bridge = ledger.to_vec();
    bridge.extend(api);
    bridge.extend(["dataset", "folder", "orthanc", "config"]);
    has(&["sync"], &bridge, &["reconcile", "poll", "listen"]);
    bridge.extend(["reconcile", "poll"]);
    has(&["watch"], &bridge, &["listen", "dry-run"]);
    bridge.push("listen");
    has(&["serve"], &bridge, &["dry-run"]);
}

#[test]
fn every_api_command_says_what_it_does() {
    for group in ["dataset", "workspace", "experiment", "cl", "jobs", "job"] {
        let h = help(&["api", group]);
        let commands = h
            .split("Commands:")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        for line in commands.lines().filter(|l| !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap();
            assert!(
                words.next().is_some(),
                "api {group} {name} has no help text:\n{h}"
            );
        }
    }
}

/// `[text](target)` links and backticked paths that name a file of the repository (a `.md`,
/// or a path under one of its top-level directories).
fn named_files(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in md.match_indices("](") {
        let target = md[i + 2..].split(')').next().unwrap_or("");
        let target = target.split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_string());
        }
    }
    let tops = [
        "src/",
        "tests/",
        "scripts/",
        "contrib/",
        "fixtures/",
        "benches/",
        "bench/",
        "fuzz/",
        ".ci/",
        "shared/",
    ];
    // fences out, so that code spans pair up
    for (n, piece) in md.replace("```", "").split('`').enumerate() {
        let token = piece.split([' ', ':', '(']).next().unwrap_or("");
        let names_a_file = tops.iter().any(|t| token.starts_with(t)) || token.ends_with(".md");
        if n % 2 == 1 && names_a_file && !token.contains(['<', '*', '…']) {
            out.push(token.to_string());
        }
    }
    out
}

#[test]
fn the_docs_name_only_files_in_the_repository() {
    let root = repo_root();
    let mut checked = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "md") {
            continue;
        }
        let md = std::fs::read_to_string(&path).unwrap();
        for f in named_files(&md) {
            assert!(
                !f.starts_with("../") && Path::new(&root).join(&f).exists(),
                "{} names {f}, which is not in the repository",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} file names found");
    // the checker sees both kinds
    assert_eq!(
        named_files("see [the contract](../shared/monai-api.md) and `shared/monai-api.md`"),
        vec!["../shared/monai-api.md", "shared/monai-api.md"]
    );
}

#[test]
fn the_exit_codes_are_listed_in_order_and_match_the_code() {
    use segbridge::app::exit;
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let table = readme.split("## Exit codes").nth(1).unwrap();
    let codes: Vec<u8> = table
        .split("\n## ")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    let code = [
        exit::OK,
        exit::ERROR,
        exit::CONFIG,
        exit::DELIVERY,
        exit::STATE,
        exit::SOURCE,
        exit::WAIT,
    ];
    assert_eq!(codes, code.to_vec());
    assert_eq!(codes, (0..=6).collect::<Vec<u8>>());
}

#[test]
fn orthanc_lua_writes_its_script_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("segbridge.lua");
    std::fs::write(&out, "an older script").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = segbridge(dir.path())
        .env("SEGBRIDGE_HOOK_TOKEN", "tok-in-the-file-only")
        .args(["orthanc-lua", "--out", "segbridge.lua"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("tok-in-the-file-only"), "{}", text(&o));
    let script = std::fs::read_to_string(&out).unwrap();
    assert!(script.contains("Bearer tok-in-the-file-only"), "{script}");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let o = segbridge(dir.path())
        .args(["orthanc-lua", "--out", "no/such/dir/x.lua"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no/such/dir/x.lua"), "{}", text(&o));
}

/// README, "Logs": `sync` (a cron job) logs only what went wrong unless `-v`; `watch` and
/// `serve` say what they do at INFO without it.
#[test]
fn log_levels_are_as_documented() {
    use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("f");
    let label = |name: &str| {
        let ct = CtSeries::new(name, 1);
        write_ct(&folder.join(name), &ct, "IM").unwrap();
        write_seg(
            &folder.join(name),
            &SegSpec::new(&format!("{name}-seg"), &ct),
            "seg",
        )
        .unwrap();
    };
    label("a");
    let o = sync(&emu, dir.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("INFO"), "sync logged INFO without -v: {err}");
    label("b");
    let o = sync(&emu, dir.path(), &folder, &ds, &["-v"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("INFO") && err.contains("notified 1 entries"),
        "{err}"
    );
    assert!(!err.contains("DEBUG"), "{err}");
    let log = dir.path().join("watch.log");
    let watch = segbridge(dir.path())
        .env("MONAI_API_KEY", &emu.key)
        .args(["watch", "--folder"])
        .arg(&folder)
        .args(["--dataset", &ds, "--api", &emu.url])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("INFO") && l.contains(what))
    };
    wait_until(
        "watch's INFO lines",
        std::time::Duration::from_secs(10),
        || said("watching folder:"),
    );
    terminate(watch);
}
