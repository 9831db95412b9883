//! The CL job on the status page: the router `serve` runs, with the experiment's CL job
//! watched, against the built-in emulator. Its rounds show on the page Chromium renders, the
//! same numbers `segbridge status --experiment` prints (one implementation, `app::cl`), asked
//! of the API once for many views; a slow API never holds the page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::status_page::dump_dom;
use segbridge::app::serve::{self, ClWatch, PageConfig};
use segbridge::emulator::EmulatorConfig;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use segbridge::ledger::StateAt;
use segbridge::monai::{ApiConfig, Secret};
use serde_json::{json, Value};

const ORG: &str = "/api/v1/orgs/iasixjqzw1hj";

/// An experiment on `ds` with a CL job of rounds of `round_size` images, at most `max_rounds`.
fn experiment(emu: &Emu, ds: &str, round_size: u64, max_rounds: u64) -> String {
    let t = emu.token();
    let (_, ws) = emu.call("POST", &format!("{ORG}/workspaces"), Some(&t), Some(json!({
        "name": "w", "cloud_type": "aws",
        "cloud_specific_details": {"cloud_bucket_name": "b", "access_key": "AK", "secret_key": "SK"}})));
    let (_, bases) = emu.call("GET", &format!("{ORG}/experiments:base"), Some(&t), None);
    let base = bases["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network_arch"] == "monai_vista3d")
        .unwrap()["id"]
        .clone();
    let (s, exp) = emu.call(
        "POST",
        &format!("{ORG}/experiments"),
        Some(&t),
        Some(json!({
        "name": "e", "network_arch": "monai_vista3d", "base_experiment": [base],
        "train_datasets": [ds], "eval_dataset": ds, "inference_dataset": ds,
        "realtime_infer": false, "workspace": ws["id"],
        "model_params": {"labels": {"1": "liver", "2": "kidney"}}})),
    );
    assert_eq!(s, 201, "{exp}");
    let exp = exp["id"].as_str().unwrap().to_string();
    let (s, job) = emu.call(
        "POST",
        &format!("{ORG}/experiments/{exp}/jobs"),
        Some(&t),
        Some(
            json!({"action": "annotation", "specs": {"round_size": round_size,
            "stop_criteria": {"max_rounds": max_rounds}, "train_spec": {"epochs": 1}}}),
        ),
    );
    assert_eq!(s, 201, "{job}");
    exp
}

fn jobs(emu: &Emu, exp: &str) -> Vec<Value> {
    let t = emu.token();
    let (s, b) = emu.call(
        "GET",
        &format!("{ORG}/experiments/{exp}/jobs"),
        Some(&t),
        None,
    );
    assert_eq!(s, 200);
    b["jobs"].as_array().unwrap().clone()
}

/// A folder of `n` ready labels named `name-i`.
fn labels(folder: &std::path::Path, name: &str, n: usize) {
    for i in 0..n {
        let ct = CtSeries::new(&format!("{name}-{i}"), 2);
        let dir = folder.join(format!("{name}-{i}"));
        write_ct(&dir.join("ct"), &ct, "IM").unwrap();
        let mut s = SegSpec::new(&format!("{name}-{i}-seg"), &ct);
        s.segments = vec!["liver".into()];
        write_seg(&dir, &s, "seg.dcm").unwrap();
    }
}

/// The status page's router, as `serve --experiment EXP` builds it, on a port of its own.
fn page(
    api: &str,
    key: &str,
    exp: &str,
    ds: &str,
    state: StateAt,
) -> (String, tokio::runtime::Runtime) {
    let cl = ClWatch::new(
        exp,
        ApiConfig::new(api, "iasixjqzw1hj", Some(Secret::new(key))),
        Some(ds.to_string()),
        state.clone(),
    )
    .unwrap();
    let cfg = PageConfig {
        state,
        dataset: ds.to_string(),
        token: None,
    };
    let (events, _) = tokio::sync::mpsc::channel(1);
    let app = serve::router(
        None,
        events,
        Arc::new(segbridge::util::Metrics::default()),
        vec![],
        cfg,
        cl,
    );
    serve(app)
}

fn get(emu: &Emu, url: &str) -> String {
    emu.rt.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    })
}

/// The text of the element with `id` in `html`.
fn cell(html: &str, id: &str) -> String {
    let open = format!("id=\"{id}\">");
    let at = html
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in\n{html}"))
        + open.len();
    html[at..at + html[at..].find("</td>").unwrap()].to_string()
}

#[test]
fn chromium_shows_the_cl_job_rounds_status_experiment_prints_asked_once() {
    let emu = Emu::with(EmulatorConfig {
        train_seconds: 0.3,
        ..Default::default()
    });
    let ds = emu.create_dataset();
    let exp = experiment(&emu, &ds, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    // two images told: the first round starts, and ends
    labels(&folder, "cl-a", 2);
    let o = sync(&emu, dir.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    wait_until("the first round done", Duration::from_secs(20), || {
        jobs(&emu, &exp)
            .iter()
            .any(|j| j["action"] == "train" && j["status"] == "Done")
    });
    // one more told: it waits for the next round
    labels(&folder, "cl-b", 1);
    let o = sync(&emu, dir.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));

    let proxy = SlowProxy::counting(&emu.url);
    let state = StateAt::File(dir.path().join("segbridge.db"));
    let (url, _rt) = page(&proxy.url, &emu.key, &exp, &ds, state);
    let html = get(&emu, &format!("{url}/"));
    assert_eq!(cell(&html, "cl-rounds"), "1 / 3 (1 started)", "{html}");
    // what `status --experiment` prints, the page shows
    let o = segbridge(dir.path())
        .env("MONAI_API_KEY", &emu.key)
        .args(["status", "--json", "--experiment", &exp, "--api", &emu.url])
        .args(["--dataset", &ds])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cl = &st["continual_learning"];
    assert_eq!(cl["rounds_done"], 1, "{cl}");
    assert_eq!(cl["max_rounds"], 3, "{cl}");
    // exactly the one image told after the first round (the server's count, replayed)
    assert_eq!(cl["images_since_last_round"], 1, "{cl}");
    assert_eq!(cl["images_to_next_round"], 1, "{cl}");
    let cl_job = jobs(&emu, &exp)
        .into_iter()
        .find(|j| j["action"] == "annotation")
        .unwrap();
    assert_eq!(cl["cl_job"], cl_job["id"]);
    assert_eq!(
        cell(&html, "cl-waiting"),
        format!(
            "{} (waiting for the next round; {} more start it)",
            cl["images_since_last_round"], cl["images_to_next_round"]
        )
    );
    // Chromium renders it: the job's id, its rounds
    let dom = dump_dom(dir.path(), &format!("{url}/"));
    assert!(dom.contains(cl_job["id"].as_str().unwrap()), "{dom}");
    assert!(
        dom.contains("<td id=\"cl-rounds\">1 / 3 (1 started)</td>"),
        "{dom}"
    );
    assert!(dom.contains("<th>round size</th><td>2</td>"), "{dom}");
    // many views, one question to the API (within 30 s)
    for _ in 0..5 {
        get(&emu, &format!("{url}/?status=ready"));
    }
    let asked = proxy
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("/jobs"))
        .count();
    assert_eq!(asked, 1, "{:?}", proxy.requests.lock().unwrap());
}

#[test]
fn a_slow_api_never_holds_the_page_and_shows_as_unreachable() {
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let exp = experiment(&emu, &ds, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    labels(&folder, "slow", 1);
    let o = sync(&emu, dir.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // every answer 20 s late
    let slow = SlowProxy::start(&emu.url, Duration::from_secs(20));
    let state = StateAt::File(dir.path().join("segbridge.db"));
    let (url, _rt) = page(&slow.url, &emu.key, &exp, &ds, state);
    let start = Instant::now();
    let html = get(&emu, &format!("{url}/"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(html.contains("asking the API…"), "{html}");
    // the refresh gives up after 5 s: unreachable, no good answer yet
    std::thread::sleep(Duration::from_secs(6));
    let start = Instant::now();
    let html = get(&emu, &format!("{url}/"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // (the call's own timeout, or the refresh's: both 5 s)
    let error = cell(&html, "cl-error");
    assert!(
        error.starts_with("<span class=\"bad\">API unreachable: ")
            && error.ends_with("<span class=\"muted\">(no answer yet)</span>"),
        "{html}"
    );
    assert!(!html.contains(&emu.key), "the key is never shown");
    // the page's own part is there all along
    assert!(
        html.contains("images told to the dataset</th><td>1</td>"),
        "{html}"
    );
}

/// With the hook in live.rs: a real `serve --experiment` shows the CL job's rounds.
#[test]
fn serve_with_experiment_shows_the_cl_job() {
    let emu = Emu::with(EmulatorConfig {
        train_seconds: 0.3,
        ..Default::default()
    });
    let ds = emu.create_dataset();
    let exp = experiment(&emu, &ds, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    labels(&folder, "serve", 2);
    let port = free_port();
    let child = segbridge(dir.path())
        .env("MONAI_API_KEY", &emu.key)
        .env_remove("SEGBRIDGE_HOOK_TOKEN")
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--folder",
        ])
        .arg(&folder)
        .args(["--dataset", &ds, "--api", &emu.url, "--experiment", &exp])
        .args(["--retry-for", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    wait_until("the first round done", Duration::from_secs(30), || {
        jobs(&emu, &exp)
            .iter()
            .any(|j| j["action"] == "train" && j["status"] == "Done")
    });
    // the first view may have asked before the round ended: at most 30 s later it is asked again
    let start = Instant::now();
    let dom = loop {
        let dom = dump_dom(dir.path(), &url);
        if dom.contains("<td id=\"cl-rounds\">1 / 3 (1 started)</td>") {
            break dom;
        }
        assert!(start.elapsed() < Duration::from_secs(45), "{dom}");
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(dom.contains(&exp), "{dom}");
    terminate(child);
}
