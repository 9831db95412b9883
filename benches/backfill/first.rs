//! Figure 1: the first backfill of N SEG series (`sync`, nothing known), every mode of segbridge
//! against the fair peer (bench/peer_fair.py), with the sequential peer (bench/peer.py) as a
//! second reference, and each mode's floor: its own requests replayed by curl.

use super::*;

/// One contender of figure 1.
struct Mode {
    name: String,
    /// `None`: a Python peer, run with `peer` (the script) instead of segbridge.
    sync_args: Option<Vec<String>>,
    bin: PathBuf,
    peer: Option<PathBuf>,
    runs: Vec<Run>,
    floors: Vec<f64>,
}

/// The segbridge modes: `--orthanc` and `--dicomweb`, quality gate on (the default) and off,
/// all with the image filter the peer uses.
fn modes(bin: &Path, label: &str, orthanc: &str, dw: &str) -> Vec<Mode> {
    let mut out = Vec::new();
    for (src, root) in [("--orthanc", orthanc), ("--dicomweb", dw)] {
        for gate in [true, false] {
            let mut args = vec![
                src.to_string(),
                root.to_string(),
                "--image-filter".into(),
                "Modality=CT".into(),
            ];
            if !gate {
                args.push("--no-validate".into());
            }
            out.push(Mode {
                name: format!(
                    "segbridge {src}{}{label}",
                    if gate {
                        " (default: gate on)"
                    } else {
                        " --no-validate"
                    }
                ),
                sync_args: Some(args),
                bin: bin.to_path_buf(),
                peer: None,
                runs: vec![],
                floors: vec![],
            });
        }
    }
    out
}

pub struct Setup<'a> {
    pub dir: &'a Path,
    pub emu: &'a Emu,
    pub proxy: &'a SlowProxy,
    pub py: &'a Path,
    pub n: usize,
    pub runs: usize,
    /// Another build to measure in the same run (the "before" rows).
    pub before: Option<(PathBuf, String)>,
    /// Leave out the sequential peer (slow at large N).
    pub sequential: bool,
}

pub fn figure(s: &Setup) -> String {
    let dw = format!("{}/dicom-web", s.proxy.url);
    let mut all = modes(Path::new(BIN), "", &s.proxy.url, &dw);
    if let Some((bin, label)) = &s.before {
        all.extend(modes(
            bin,
            &format!(", before ({label})"),
            &s.proxy.url,
            &dw,
        ));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    all.push(Mode {
        name: "fair peer (bench/peer_fair.py: 8 threads, bulk image listing, no validation)".into(),
        sync_args: None,
        bin: s.py.to_path_buf(),
        peer: Some(root.join("bench/peer_fair.py")),
        runs: vec![],
        floors: vec![],
    });
    if s.sequential {
        all.push(Mode {
            name: "sequential peer (bench/peer.py: what the service's own pairing does)".into(),
            sync_args: None,
            bin: s.py.to_path_buf(),
            peer: Some(root.join("bench/peer.py")),
            runs: vec![],
            floors: vec![],
        });
    }
    for r in 0..s.runs {
        let out = s.dir.join(format!("first-{r}"));
        std::fs::create_dir_all(&out).unwrap();
        for (i, m) in all.iter_mut().enumerate() {
            let ds = s.emu.create_dataset();
            let before = s.emu.notifications().len();
            let start = s.proxy.count();
            let log = out.join(format!("m{i}.out"));
            let run = match (&m.sync_args, &m.peer) {
                (Some(args), _) => {
                    let mut c = Command::new(&m.bin);
                    c.current_dir(s.dir)
                        .env("MONAI_API_KEY", &s.emu.key)
                        .env_remove("RUST_LOG")
                        // as users run it: with it set, each error that carries a backtrace takes one
                        .env_remove("RUST_BACKTRACE")
                        .arg("sync")
                        .args(args)
                        .args(["--dataset", &ds, "--api", &s.emu.url])
                        .arg("--state")
                        .arg(out.join(format!("m{i}.db")));
                    measure(c, Some(s.proxy), &log)
                }
                (None, Some(script)) => {
                    let mut c = Command::new(&m.bin);
                    c.arg(script)
                        .args(["backfill", &dw, &s.emu.url, &ds])
                        .env("MONAI_API_KEY", &s.emu.key);
                    if script.ends_with("peer_fair.py") {
                        c.arg("Modality=CT");
                    }
                    measure(c, Some(s.proxy), &log)
                }
                (None, None) => unreachable!(),
            };
            let sent: usize = common::entries(&s.emu.notifications()[before..]).len();
            assert_eq!(sent, s.n, "{}: notified {sent} of {} labels", m.name, s.n);
            if m.sync_args.is_some() {
                let replay: Vec<(String, Option<Vec<u8>>)> = {
                    let lines = s.proxy.requests.lock().unwrap();
                    let bodies = s.proxy.bodies.lock().unwrap();
                    (start..lines.len())
                        .map(|i| (lines[i].clone(), bodies.get(&i).cloned()))
                        .collect()
                };
                let fl = out.join(format!("floor-{i}"));
                std::fs::create_dir_all(&fl).unwrap();
                m.floors.push(replay_floor(&s.proxy.url, &replay, &fl));
            }
            m.runs.push(run);
            eprintln!("{}: {:.3} s", m.name, run.wall);
        }
    }
    let fair = all
        .iter()
        .find(|m| m.peer.as_ref().is_some_and(|p| p.ends_with("peer_fair.py")))
        .map(|m| med(&m.runs))
        .unwrap();
    let mut t = String::from("### 1. First backfill of N SEG series (sync, nothing known)\n\n");
    t.push_str(
        "| who | wall (s) | CPU (s) | requests | peak RSS (MiB) | vs fair peer | floor (s) | wall vs floor |\n|---|---|---|---|---|---|---|---|\n",
    );
    for m in &all {
        let x = med(&m.runs);
        let (floor, vs_floor) = if m.floors.is_empty() {
            (String::new(), String::new())
        } else {
            let f = median(m.floors.clone());
            (format!("{f:.3}"), format!("{:.2}x", x.wall / f))
        };
        t.push_str(&format!(
            "| {} | {:.3} | {:.3} | {} | {:.1} | {:.1}x faster | {floor} | {vs_floor} |\n",
            m.name,
            x.wall,
            x.cpu,
            x.requests,
            x.rss_mb,
            fair.wall / x.wall,
        ));
    }
    // the gate's cost on each path
    let wall_of = |needle: &str, gate: bool| {
        all.iter()
            .filter(|m| m.name.starts_with("segbridge ") && !m.name.contains("before"))
            .find(|m| m.name.contains(needle) && m.name.contains("--no-validate") != gate)
            .map(|m| med(&m.runs).wall)
    };
    t.push('\n');
    for src in ["--orthanc", "--dicomweb"] {
        if let (Some(on), Some(off)) = (wall_of(src, true), wall_of(src, false)) {
            t.push_str(&format!(
                "- {src}: gate on costs {:.2}x gate off ({on:.3} s vs {off:.3} s)\n",
                on / off
            ));
        }
    }
    t.push('\n');
    t
}
