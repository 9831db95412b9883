//! The attacks of issue 13 made by hostile HTTP servers and URLs (items 8, 9, 13, 14): see
//! RELIABILITY.md, "Attacks tried".

use std::process::{Command, Output};

use crate::common::*;
use serde_json::{json, Value};

/// A DICOMweb server answering every QIDO page and every metadata request with about `size`
/// bytes of DICOM JSON (one real-looking SEG series plus padding a parser must walk).
fn bloated_pacs(size: usize) -> (String, tokio::runtime::Runtime) {
    use axum::extract::Request;
    let padding = |n: usize| {
        let mut items = Vec::new();
        let mut total = 0;
        let mut i = 0;
        while total < n {
            let item = json!({
                "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                "00080018": {"vr": "UI", "Value": [format!("1.2.3.{i}")]},
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "0020000E": {"vr": "UI", "Value": ["1.2.4"]},
                "00081030": {"vr": "LO", "Value": vec!["padding"; 4000]},
            });
            total += item.to_string().len();
            items.push(item);
            i += 1;
        }
        items
    };
    let mut page = vec![json!({
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.5"]},
        "00201209": {"vr": "IS", "Value": [1]},
    })];
    page.extend(padding(size));
    let page = std::sync::Arc::new(Value::Array(page).to_string());
    let metadata = std::sync::Arc::new(Value::Array(padding(size)).to_string());
    let app = axum::Router::new().fallback(move |req: Request| {
        let (page, metadata) = (page.clone(), metadata.clone());
        async move {
            let q = req.uri().query().unwrap_or("");
            let body = if req.uri().path().ends_with("/metadata") {
                (*metadata).clone()
            } else if req.uri().path().ends_with("/series") && q.contains("offset=0") {
                (*page).clone()
            } else {
                "[]".to_string()
            };
            ([("content-type", "application/dicom+json")], body)
        }
    });
    let (root, rt) = serve(app);
    (format!("{root}/dw"), rt)
}

/// Peak RSS (KiB) of a segbridge run, through GNU time.
fn peak_rss_kib(dir: &std::path::Path, args: &[&str]) -> (u64, Output) {
    let o = Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS %M"])
        .arg(env!("CARGO_BIN_EXE_segbridge"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let kib = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MAXRSS: {}", text(&o)));
    (kib, o)
}

/// Issue 13, item 8: a 30 MB QIDO page and 30 MB metadata answers (just under the 32 MiB cap
/// of JSON answers) cost a bounded amount of memory. Before: the page alone was parsed into a
/// `serde_json::Value` of about 25 times its size (60 MB took 1.5 GB, up to 3.1 GB in a run).
#[test]
fn large_json_answers_cost_bounded_memory() {
    let (url, _rt) = bloated_pacs(30_000_000);
    let dir = tempfile::tempdir().unwrap();
    let (kib, o) = peak_rss_kib(dir.path(), &["scan", "--json", "--dicomweb", &url]);
    eprintln!("peak RSS with 30 MB answers: {} MiB", kib / 1024);
    // the label's metadata is read (and refused: no SEG in it), the listing itself succeeds
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1.2.5"),
        "{}",
        text(&o)
    );
    assert!(
        kib < 200 * 1024,
        "peak RSS {} MiB: {}",
        kib / 1024,
        text(&o)
    );
}

/// Issue 13, item 9: a QIDO server that always answers a full page of new series. Before: the
/// listing grew without end (4,375 pages and 665 MB in 40 s). Now it stops at its bound (2,000
/// pages here, with one series a page), is treated as incomplete, and says so once.
#[test]
fn an_endless_qido_listing_is_bounded_and_reported_once() {
    use axum::extract::Request;
    use std::time::{Duration, Instant};
    let app = axum::Router::new().fallback(|req: Request| async move {
        let q = req.uri().query().unwrap_or("").to_string();
        let body = if req.uri().path().ends_with("/series") && q.contains("Modality=SEG") {
            let offset: u64 = q
                .split('&')
                .find_map(|p| p.strip_prefix("offset="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            json!([{
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "0020000E": {"vr": "UI", "Value": [format!("1.2.9.{offset}")]},
            }])
            .to_string()
        } else {
            "[]".to_string()
        };
        ([("content-type", "application/dicom+json")], body)
    });
    let (root, _rt) = serve(app);
    let url = format!("{root}/dw");
    let dir = tempfile::tempdir().unwrap();
    let mut child = segbridge(dir.path())
        .args(["scan", "--json", "--page-size", "1", "--dicomweb", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the listing did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap();
    assert!(status.code().is_some(), "{status:?} {err}");
    assert_eq!(
        err.matches("stopped at the bound of 2000 pages").count(),
        1,
        "{err}"
    );
}

fn redirect_pair() -> (String, String, Recorded, tokio::runtime::Runtime) {
    use axum::body::Bytes;
    use axum::extract::Request;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bind = || {
        rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap()
    };
    let (first, other) = (bind(), bind());
    let first_url = format!("http://{}", first.local_addr().unwrap());
    let other_url = format!("http://{}", other.local_addr().unwrap());
    let seen: Recorded = Default::default();
    let log = seen.clone();
    let target = other_url.clone();
    let redirect = axum::Router::new().fallback(move |req: Request| {
        let to = format!("{target}{}", req.uri());
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [("location", to)],
                "",
            )
        }
    });
    let record = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!(
                    "{method} {uri} {:?} {}",
                    headers.get("authorization"),
                    String::from_utf8_lossy(&body)
                ));
                "{}"
            }
        },
    );
    rt.spawn(async move {
        let _ = axum::serve(first, redirect).await;
    });
    rt.spawn(async move {
        let _ = axum::serve(other, record).await;
    });
    (first_url, other_url, seen, rt)
}

/// Issue 13, item 13: a 307 from the API to another origin does not get the API key (nor a
/// PACS's credentials). Before: `api login` re-POSTed the key there.
#[test]
fn redirects_never_carry_the_key_or_credentials_elsewhere() {
    let (api, _other, seen, _rt) = redirect_pair();
    let dir = tempfile::tempdir().unwrap();
    let o = segbridge(dir.path())
        .env("MONAI_API_KEY", "key-that-must-not-travel")
        .args(["api", "login", "--api", &api, "--retry-for", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        seen.lock().unwrap().is_empty(),
        "the other origin got: {:?}",
        seen.lock().unwrap()
    );
    assert!(!text(&o).contains("key-that-must-not-travel"));
    // a PACS with basic auth whose QIDO answer redirects elsewhere
    let (pacs, _other, seen, _rt2) = redirect_pair();
    let o = segbridge(dir.path())
        .env("DICOMWEB_PASSWORD", "pacs-password")
        .args(["scan", "--dicomweb", &pacs, "--dicomweb-user", "u"])
        .output()
        .unwrap();
    assert!(
        seen.lock().unwrap().is_empty(),
        "the other origin got: {:?}\n{}",
        seen.lock().unwrap(),
        text(&o)
    );
}

/// Issue 13, item 14: credentials in a PACS (or API) URL are refused with a hint, and never
/// echoed. Before: `http://user:pw@host` was accepted and shown in logs, `/healthz` and the
/// state file's cursors.
#[test]
fn credentials_in_urls_are_refused_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, url) in [
        ("--orthanc", "http://segbridge:s3cretpw@127.0.0.1:9"),
        (
            "--dicomweb",
            "http://segbridge:s3cretpw@127.0.0.1:9/dicom-web",
        ),
        ("--api", "https://segbridge:s3cretpw@api.example"),
        ("--orthanc", "http://segbridge:s3cretpw@127.0.0.1:99999"),
    ] {
        let mut c = segbridge(dir.path());
        c.env("MONAI_API_KEY", "k")
            .args(["sync", "--dataset", "d", flag, url]);
        if flag == "--api" {
            c.args(["--folder", "."]);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {url}: {}", text(&o));
        let all = text(&o);
        assert!(!all.contains("s3cretpw"), "{all}");
        assert!(
            all.contains("credentials in the URL") || all.contains("valid port"),
            "{all}"
        );
    }
    assert!(!dir.path().join("segbridge.db").exists());
}

/// Listing pages grow while full (see `pager`), so a server whose series take far more room
/// than Orthanc's could push a page over the 32 MiB cap of a JSON answer: that page is asked
/// again at half its size, and every series is still listed, the listing complete.
#[test]
fn a_qido_page_over_the_size_cap_is_asked_again_smaller() {
    use axum::extract::Request;
    const TOTAL: usize = 100;
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, usize)>::new()));
    let log = asked.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let log = log.clone();
        async move {
            let q = req.uri().query().unwrap_or("").to_string();
            let arg = |name: &str| -> usize {
                q.split('&')
                    .find_map(|p| p.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let body = if req.uri().path().ends_with("/series") && q.contains("Modality=SEG") {
                let (offset, limit) = (arg("offset="), arg("limit="));
                log.lock().unwrap().push((offset, limit));
                // about 1 MB a series: a page of 40 is over the cap, one of 20 under it
                let items: Vec<Value> = (offset..(offset + limit).min(TOTAL))
                    .map(|i| {
                        json!({
                            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                            "0020000E": {"vr": "UI", "Value": [format!("1.2.9.{i}")]},
                            "00081030": {"vr": "LO", "Value": vec!["padding"; 100_000]},
                        })
                    })
                    .collect();
                Value::Array(items).to_string()
            } else {
                "[]".to_string()
            };
            ([("content-type", "application/dicom+json")], body)
        }
    });
    let (root, _rt) = serve(app);
    let dir = tempfile::tempdir().unwrap();
    let o = segbridge(dir.path())
        .args(["scan", "--json", "--page-size", "5", "--dicomweb"])
        .arg(format!("{root}/dw"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    for i in 0..TOTAL {
        assert!(
            out.contains(&format!("1.2.9.{i}\"")),
            "1.2.9.{i}: {}",
            text(&o)
        );
    }
    assert!(!text(&o).contains("incomplete"), "{}", text(&o));
    // 5, 10, 20, then 40 too large: 20 from there on, to the end
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            (0, 5),
            (5, 10),
            (15, 20),
            (35, 40),
            (35, 20),
            (55, 20),
            (75, 20),
            (95, 20)
        ],
        "{}",
        text(&o)
    );
}
