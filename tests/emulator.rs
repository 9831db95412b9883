//! The emulator follows the contract in shared/monai-api.md: these tests pin what a client may
//! rely on (status codes, error bodies, notify validation, the counting rule, token expiry).

use std::time::Duration;

use crate::common::*;
use segbridge::emulator::EmulatorConfig;
use serde_json::{json, Value};

const ORG: &str = "/api/v1/orgs/iasixjqzw1hj";

fn setup(emu: &Emu, round_size: u64, max_rounds: u64) -> (String, String, String, String) {
    let t = emu.token();
    let ds = emu.create_dataset();
    let (_, ws) = emu.call("POST", &format!("{ORG}/workspaces"), Some(&t), Some(json!({
        "name": "w", "cloud_type": "aws",
        "cloud_specific_details": {"cloud_bucket_name": "b", "access_key": "AK", "secret_key": "SK"}})));
    assert!(
        ws["cloud_specific_details"].get("secret_key").is_none(),
        "secret echoed: {ws}"
    );
    let (s, bases) = emu.call("GET", &format!("{ORG}/experiments:base"), Some(&t), None);
    assert_eq!(s, 200);
    let base = bases["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network_arch"] == "monai_vista3d")
        .unwrap()["id"]
        .clone();
    let (s, exp) = emu.call("POST", &format!("{ORG}/experiments"), Some(&t), Some(json!({
        "name": "e", "network_arch": "monai_vista3d", "base_experiment": [base],
        "train_datasets": [ds], "eval_dataset": ds, "inference_dataset": ds,
        "realtime_infer": true, "workspace": ws["id"], "model_params": {"labels": {"1": "liver"}}})));
    assert_eq!(s, 201, "{exp}");
    let exp = exp["id"].as_str().unwrap().to_string();
    let (s, job) = emu.call(
        "POST",
        &format!("{ORG}/experiments/{exp}/jobs"),
        Some(&t),
        Some(json!({
        "action": "annotation", "specs": {"round_size": round_size,
        "stop_criteria": {"max_rounds": max_rounds, "key_metric": 0.99},
        "train_spec": {"epochs": 1, "val_interval": 1}}})),
    );
    assert_eq!(s, 201, "{job}");
    (
        t,
        ds,
        exp,
        job.as_str().expect("job id is a JSON string").to_string(),
    )
}

fn notify(emu: &Emu, t: &str, ds: &str, specs: Value) -> (u16, Value) {
    emu.call(
        "POST",
        &format!("{ORG}/datasets/{ds}/jobs"),
        Some(t),
        Some(json!({"action": "notify", "specs": specs})),
    )
}

fn jobs(emu: &Emu, t: &str, exp: &str) -> Vec<Value> {
    let (s, b) = emu.call(
        "GET",
        &format!("{ORG}/experiments/{exp}/jobs"),
        Some(t),
        None,
    );
    assert_eq!(s, 200);
    b["jobs"].as_array().unwrap().clone()
}

#[test]
fn login_errors_and_tokens() {
    let emu = Emu::with(EmulatorConfig {
        token_ttl: Duration::from_millis(200),
        ..Default::default()
    });
    let (s, b) = emu.call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"ngc_api_key": "bad"})),
    );
    assert_eq!(s, 401);
    assert_eq!(
        b,
        json!({"error_code": 1, "error_desc": "Unauthorized: Credentials error: Invalid NGC_API_KEY"})
    );
    let (s, b) = emu.call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"ngc_api_key": "demo"})),
    );
    assert_eq!(s, 201);
    assert!(b["user_id"].is_string() && b["token"].is_string());
    let t = b["token"].as_str().unwrap();
    assert_eq!(
        emu.call("GET", &format!("{ORG}/experiments:base"), Some(t), None)
            .0,
        200
    );
    assert_eq!(
        emu.call("GET", &format!("{ORG}/experiments:base"), None, None)
            .0,
        401
    );
    std::thread::sleep(Duration::from_millis(300));
    let (s, b) = emu.call("GET", &format!("{ORG}/experiments:base"), Some(t), None);
    assert_eq!(s, 401, "expired token accepted");
    assert!(b["error_desc"].is_string() && b["error_code"].is_i64());
}

#[test]
fn notify_validation_follows_the_server() {
    let emu = Emu::start();
    let t = emu.token();
    let ds = emu.create_dataset();
    // a section may be one object: it is wrapped in a list
    assert_eq!(
        notify(
            &emu,
            &t,
            &ds,
            json!({"added": {"image": "I", "label": "L"}})
        )
        .0,
        201
    );
    // every section optional
    assert_eq!(
        notify(
            &emu,
            &t,
            &ds,
            json!({"removed": [{"image": "I", "label": "L"}]})
        )
        .0,
        201
    );
    for bad in [
        json!({"added": [{"image": "I"}]}),
        json!({"added": [{"image": "", "label": "L"}]}),
        json!({"updated": [{"label": "L"}]}),
        json!({"deleted": []}),
        json!({"added": "I"}),
    ] {
        let (s, b) = notify(&emu, &t, &ds, bad.clone());
        assert_eq!(s, 404, "{bad} accepted");
        assert!(b["error_desc"].as_str().unwrap().len() > 5, "{b}");
        assert!(b["error_code"].is_i64());
    }
    let (s, _) = notify(&emu, &t, "no-such-dataset", json!({"added": []}));
    assert_eq!(s, 404);
    let (s, b) = emu.call(
        "POST",
        &format!("{ORG}/datasets/{ds}/jobs"),
        Some(&t),
        Some(json!({"action": "nextimage"})),
    );
    // the dataset's DICOMweb server (port 9) is not there: the server's generic 404 error
    assert_eq!(s, 404);
    assert!(
        b["error_desc"]
            .as_str()
            .unwrap()
            .starts_with("Unable to query DICOMweb server"),
        "{b}"
    );
    // hostile bodies: not JSON, not an object
    let (s, b) = emu.call(
        "POST",
        &format!("{ORG}/datasets/{ds}/jobs"),
        Some(&t),
        Some(json!([1, 2])),
    );
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        emu.notifications().len(),
        2,
        "only accepted bodies are recorded"
    );
}

#[test]
fn distinct_images_in_added_and_updated_start_rounds() {
    let emu = Emu::with(EmulatorConfig {
        train_seconds: 0.3,
        ..Default::default()
    });
    let (t, ds, exp, cl) = setup(&emu, 2, 2);
    // the same image twice counts once; removed does not count
    notify(
        &emu,
        &t,
        &ds,
        json!({"added": [{"image": "I1", "label": "L1"}], "updated": [{"image": "I1", "label": "L2"}],
        "removed": [{"image": "I9", "label": "L9"}]}),
    );
    assert_eq!(jobs(&emu, &t, &exp).len(), 1, "a round started too early");
    notify(
        &emu,
        &t,
        &ds,
        json!({"updated": {"image": "I2", "label": "L3"}}),
    );
    let j = jobs(&emu, &t, &exp);
    assert_eq!(j.len(), 2);
    assert_eq!(j[1]["action"], "train");
    assert_eq!(j[1]["status"], "Running");
    std::thread::sleep(Duration::from_millis(400));
    let (s, one) = emu.call(
        "GET",
        &format!(
            "{ORG}/experiments/{exp}/jobs/{}",
            j[1]["id"].as_str().unwrap()
        ),
        Some(&t),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(one["status"], "Done");
    assert!(one["result"]["key_metric"].as_f64().unwrap() > 0.0);
    // second round, then the CL job ends after max_rounds
    notify(
        &emu,
        &t,
        &ds,
        json!({"added": [{"image": "I3", "label": "L4"}, {"image": "I4", "label": "L5"}]}),
    );
    std::thread::sleep(Duration::from_millis(400));
    let j = jobs(&emu, &t, &exp);
    let cl_job = j.iter().find(|x| x["id"] == cl.as_str()).unwrap();
    assert_eq!(cl_job["status"], "Done", "{j:#?}");
    assert_eq!(cl_job["result"]["rounds"], 2);
    notify(
        &emu,
        &t,
        &ds,
        json!({"added": [{"image": "I5", "label": "L6"}, {"image": "I6", "label": "L7"}]}),
    );
    assert_eq!(
        jobs(&emu, &t, &exp).len(),
        3,
        "a finished CL job started a round"
    );
    let (s, logs) = emu.call(
        "GET",
        &format!("{ORG}/experiments/{exp}/jobs/{cl}/logs"),
        Some(&t),
        None,
    );
    assert_eq!(s, 200);
    assert!(logs.as_str().unwrap().contains("round 2"));
}

#[test]
fn jobs_cancel_pause_resume_and_errors() {
    let emu = Emu::start();
    let (t, _ds, exp, cl) = setup(&emu, 5, 1);
    let act = |a: &str| {
        emu.call(
            "POST",
            &format!("{ORG}/experiments/{exp}/jobs/{cl}:{a}"),
            Some(&t),
            None,
        )
        .0
    };
    assert_eq!(act("pause"), 200);
    assert_eq!(act("pause"), 404);
    assert_eq!(act("resume"), 200);
    assert_eq!(act("cancel"), 200);
    assert_eq!(act("cancel"), 404);
    let (_, j) = emu.call(
        "GET",
        &format!("{ORG}/experiments/{exp}/jobs/{cl}"),
        Some(&t),
        None,
    );
    assert_eq!(j["status"], "Canceled");
    let (s, b) = emu.call(
        "GET",
        &format!("{ORG}/experiments/{exp}/jobs/nope"),
        Some(&t),
        None,
    );
    assert_eq!(s, 404);
    assert!(b["error_desc"].as_str().unwrap().contains("nope"));
    // stop_criteria takes only its two keys
    let (s, _) = emu.call("POST", &format!("{ORG}/experiments/{exp}/jobs"), Some(&t), Some(json!({
        "action": "annotation", "specs": {"round_size": 1, "stop_criteria": {"max_rounds": 1, "epochs": 3}}})));
    assert_eq!(s, 404);
    // realtime_infer is one-way
    let p = format!("{ORG}/experiments/{exp}");
    assert_eq!(
        emu.call(
            "PATCH",
            &p,
            Some(&t),
            Some(json!({"realtime_infer": false}))
        )
        .0,
        200
    );
    assert_eq!(
        emu.call("PATCH", &p, Some(&t), Some(json!({"realtime_infer": true})))
            .0,
        404
    );
    assert_eq!(emu.call("DELETE", &p, Some(&t), None).0, 200);
    assert_eq!(emu.call("DELETE", &p, Some(&t), None).0, 404);
}

#[test]
fn faults_are_injected_in_order_and_counted() {
    let emu = Emu::start();
    let t = emu.token();
    emu.fault(json!({"status": 500, "count": 2}));
    emu.fault(json!({"status": 429, "count": 1, "retry_after": 7}));
    let base = format!("{ORG}/experiments:base");
    assert_eq!(emu.call("GET", &base, Some(&t), None).0, 500);
    assert_eq!(emu.call("GET", &base, Some(&t), None).0, 500);
    let (s, b) = emu.call("GET", &base, Some(&t), None);
    assert_eq!(s, 429);
    assert!(b["error_code"].is_i64());
    assert_eq!(emu.call("GET", &base, Some(&t), None).0, 200);
}

/// The guide cancels the CL job, then "the train job if not Done": cancelling the CL job must
/// leave its running round for that cell. And `key_metric` is optional in `stop_criteria`.
#[test]
fn cancelling_the_cl_job_leaves_its_train_round_to_the_guide() {
    // rounds that outlast the test's steps
    let emu = Emu::with(EmulatorConfig {
        train_seconds: 30.0,
        ..Default::default()
    });
    let (t, ds, exp, cl) = setup(&emu, 1, 3);
    notify(
        &emu,
        &t,
        &ds,
        json!({"added": [{"image": "I1", "label": "L1"}]}),
    );
    let train = jobs(&emu, &t, &exp)
        .into_iter()
        .find(|j| j["action"] == "train")
        .expect("a round started");
    let train_id = train["id"].as_str().unwrap().to_string();
    let act = |job: &str, a: &str| {
        emu.call(
            "POST",
            &format!("{ORG}/experiments/{exp}/jobs/{job}:{a}"),
            Some(&t),
            None,
        )
        .0
    };
    assert_eq!(act(&cl, "cancel"), 200);
    let (_, j) = emu.call(
        "GET",
        &format!("{ORG}/experiments/{exp}/jobs/{train_id}"),
        Some(&t),
        None,
    );
    assert_eq!(j["status"], "Running", "{j}");
    assert_eq!(act(&train_id, "cancel"), 200);
    let (s, job) = emu.call(
        "POST",
        &format!("{ORG}/experiments/{exp}/jobs"),
        Some(&t),
        Some(json!({"action": "annotation", "specs": {"round_size": 1,
            "stop_criteria": {"max_rounds": 2}, "train_spec": {"epochs": 1, "val_interval": 1}}})),
    );
    assert_eq!(s, 201, "{job}");
}

#[test]
fn a_job_error_fault_ends_a_job_in_error_as_the_server_answers_it() {
    let emu = Emu::with(EmulatorConfig {
        train_seconds: 60.0,
        ..Default::default()
    });
    let (t, ds, exp, cl) = setup(&emu, 1, 3);
    for bad in [
        json!({"job_error": {"action": "inference", "message": "m"}}),
        json!({"job_error": {"action": "train", "message": " "}}),
        json!({"job_error": {"action": "train", "message": "m"}, "status": 500}),
        json!({"job_error": {"action": "train", "message": "m", "typo": 1}}),
    ] {
        let (s, b) = emu.call("POST", "/_emulator/faults", None, Some(bad.clone()));
        assert_eq!(s, 400, "{bad} accepted: {b}");
    }
    let job = |id: &str| {
        let (s, b) = emu.call(
            "GET",
            &format!("{ORG}/experiments/{exp}/jobs/{id}"),
            Some(&t),
            None,
        );
        assert_eq!(s, 200, "a failed job is still a 200 answer: {b}");
        b
    };
    let logs = |id: &str| {
        emu.call(
            "GET",
            &format!("{ORG}/experiments/{exp}/jobs/{id}/logs"),
            Some(&t),
            None,
        )
        .1
        .to_string()
    };
    // a train round fails: its answer says why; the CL job goes on and runs the next round
    emu.fault(json!({"job_error": {"action": "train", "message": "CUDA out of memory"}}));
    let (s, _) = notify(
        &emu,
        &t,
        &ds,
        json!({"added": [{"image": "1.1", "label": "9.1"}]}),
    );
    assert_eq!(s, 201);
    let round1 = jobs(&emu, &t, &exp)
        .into_iter()
        .find(|j| j["action"] == "train")
        .unwrap();
    let round1 = job(round1["id"].as_str().unwrap());
    assert_eq!(round1["status"], "Error", "{round1}");
    assert_eq!(
        round1["result"]["detailed_status"]["message"], "CUDA out of memory",
        "{round1}"
    );
    assert_eq!(job(&cl)["status"], "Running");
    assert!(logs(&cl).contains("round 1 failed: CUDA out of memory"));
    notify(
        &emu,
        &t,
        &ds,
        json!({"added": [{"image": "1.2", "label": "9.2"}]}),
    );
    let running: Vec<Value> = jobs(&emu, &t, &exp)
        .into_iter()
        .filter(|j| j["action"] == "train" && j["status"] == "Running")
        .collect();
    assert_eq!(running.len(), 1, "round 2 runs");

    // the CL job fails: `api job wait --until Done` fails with exit 6 and the server's reason
    emu.fault(json!({"job_error": {"action": "annotation", "job": cl,
        "message": "DICOMweb server unreachable"}}));
    let tmp = tempfile::tempdir().unwrap();
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", &emu.key)
        .args([
            "api",
            "--api",
            &emu.url,
            "--json",
            "job",
            "wait",
            "--experiment",
            &exp,
        ])
        .args([
            &cl,
            "--until",
            "Done",
            "--interval",
            "0.1",
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "job {cl} ended Error, not Done: DICOMweb server unreachable"
        )),
        "{err}"
    );
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&out["status"], &out["error"], &out["reached"]),
        (
            &json!("Error"),
            &json!("DICOMweb server unreachable"),
            &json!(false)
        ),
        "{out}"
    );
    // its running round is left alone, as cancelling the CL job does
    let round2 = job(running[0]["id"].as_str().unwrap());
    assert_eq!(round2["status"], "Running", "{round2}");
}
