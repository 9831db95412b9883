//! `segbridge api …` beyond the guide's workflow (`workflow.rs`): how its errors read, how long
//! it retries, and a notify by hand (`api notify`), journalled without changing what segbridge
//! believes the dataset holds.

use serde_json::Value;

use crate::common::*;
use crate::workflow::W;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};

#[test]
fn api_errors_are_clear() {
    let emu = Emu::start();
    let tmp = tempfile::tempdir().unwrap();
    let w = W {
        emu: &emu,
        dir: tmp.path(),
    };
    // a wrong ID (404) and a bad body (400) are final: one clear line, no retry
    for (args, needle) in [
        (
            &["api", "dataset", "delete", "no-such-id"][..],
            "HTTP 404 (error_code 2: Dataset no-such-id not found)",
        ),
        (
            &[
                "api",
                "workspace",
                "create",
                "--name",
                "",
                "--cloud",
                "aws",
                "--bucket",
                "b",
            ],
            "HTTP 400 (error_code 3: Invalid workspace: missing \"name\")",
        ),
    ] {
        w.fails(args, 3, needle);
        let o = w.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("retrying"), "{args:?}: {err}");
    }
    w.fails(
        &["api", "job", "status", "--experiment", "nope", "j"],
        3,
        "Job j not found",
    );
    w.fails(
        &[
            "api",
            "experiment",
            "create",
            "--name",
            "x",
            "--base",
            "b",
            "--dataset",
            "d",
            "--workspace",
            "w",
            "--labels",
            "missing.json",
        ],
        2,
        "missing.json",
    );
    std::fs::write(tmp.path().join("bad.json"), r#"["liver"]"#).unwrap();
    w.fails(
        &[
            "api",
            "experiment",
            "create",
            "--name",
            "x",
            "--base",
            "b",
            "--dataset",
            "d",
            "--workspace",
            "w",
            "--labels",
            "bad.json",
        ],
        2,
        "label numbers to names",
    );
    w.fails(
        &[
            "api",
            "workspace",
            "create",
            "--name",
            "x",
            "--cloud",
            "azure",
            "--bucket",
            "b",
        ],
        2,
        "AZURE_STORAGE_ACCOUNT",
    );
    let ds = emu.create_dataset();
    w.fails(
        &["api", "next-image", "--dataset", &ds],
        3,
        "Unable to query DICOMweb server",
    );
    let o = segbridge(tmp.path())
        .args(["api", "login", "--api", &emu.url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn an_unreachable_api_fails_an_api_command_within_about_15_s() {
    let tmp = tempfile::tempdir().unwrap();
    let api = format!("http://127.0.0.1:{}", free_port());
    let start = std::time::Instant::now();
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", "k")
        .args(["api", "login", "--api", &api])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("gave up"), "{}", text(&o));
    // not the bridge's 120 s (before: 98 s and 11 warnings)
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    // and --retry-for still sets it
    let start = std::time::Instant::now();
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", "k")
        .args(["api", "login", "--api", &api, "--retry-for", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
}

#[test]
fn a_notify_by_hand_is_journalled_and_changes_nothing_else() {
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("f");
    let a = CtSeries::new("hand-a", 1);
    write_ct(&folder.join("a"), &a, "IM").unwrap();
    let sa = SegSpec::new("hand-a-seg", &a);
    write_seg(&folder.join("a"), &sa, "seg").unwrap();
    let w = W {
        emu: &emu,
        dir: tmp.path(),
    };
    let sync = |w: &W| {
        w.ok(&[
            "sync",
            "--folder",
            folder.to_str().unwrap(),
            "--dataset",
            &ds,
        ])
    };
    sync(&w);
    assert_eq!(
        entries(&emu.notifications()),
        vec![e("added", &a.series, &sa.series_uid())]
    );
    // the guide's manual cell: the dataset from SEGBRIDGE_DATASET, sent as removed
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", &emu.key)
        .env("SEGBRIDGE_DATASET", &ds)
        .args(["api", "--json", "notify", "--api", &emu.url])
        .args([
            "--image",
            &a.series,
            "--label",
            &sa.series_uid(),
            "--removed",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["notified"]["specs"]["removed"][0]["image"],
        a.series.as_str()
    );
    assert_eq!(v["ledger_label"], sa.series_uid().as_str(), "{v}");
    // it contradicts what segbridge holds: a warning says so
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("still holds"), "{err}");
    assert_eq!(
        entries(&emu.notifications()),
        vec![
            e("added", &a.series, &sa.series_uid()),
            e("removed", &a.series, &sa.series_uid())
        ]
    );
    // journalled, by hand
    let status = w.ok(&["status"]);
    assert!(status.contains("entries sent    2 (1 by hand"), "{status}");
    // and segbridge's own record is unchanged: the next sync sends nothing
    sync(&w);
    assert_eq!(emu.notifications().len(), 2);
    // an added one, as text; a bad UID is a configuration error, and nothing is sent
    let out = w.ok(&[
        "api",
        "notify",
        "--dataset",
        &ds,
        "--image",
        &a.series,
        "--label",
        &sa.series_uid(),
    ]);
    assert!(out.contains("added image"), "{out}");
    assert_eq!(emu.notifications().len(), 3);
    w.fails(
        &[
            "api",
            "notify",
            "--dataset",
            &ds,
            "--image",
            "1.2.x",
            "--label",
            "1.2",
        ],
        2,
        "--image",
    );
    w.fails(
        &["api", "notify", "--image", "1.2", "--label", "1.3"],
        2,
        "no dataset",
    );
    assert_eq!(emu.notifications().len(), 3);
}
