//! The attacks of issue 13 made with files and the state file (items 3, 4, 10, 11, 12, 15):
//! see RELIABILITY.md, "Attacks tried".

use std::process::Command;

use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::Value;

/// An explicit VR little endian element.
fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"SQ" | b"UN") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// Issue 13, item 3: a file rewritten in place while it is read. The region at (0029,1010) flips
/// between a plain 200 kB value and 10,000 nested sequences of the same size, many times a
/// second, while `scan` reads the file; the many small elements after it make the pre-scan long.
/// Before the fix the pre-scan and the parser read the file separately: one of the scans saw a
/// valid file in the pre-scan and the nesting in the parser, and aborted (stack overflow).
#[test]
fn a_file_rewritten_between_the_check_and_the_parse_cannot_abort_the_scan() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const DEPTH: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    // the meta group
    let mut meta = Vec::new();
    el(&mut meta, 2, 1, b"OB", &[0, 1]);
    el(&mut meta, 2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
    el(&mut meta, 2, 3, b"UI", b"1.2.3.4\0");
    el(&mut meta, 2, 0x10, b"UI", b"1.2.840.10008.1.2.1\0");
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    el(&mut file, 2, 0, b"UL", &(meta.len() as u32).to_le_bytes());
    file.extend_from_slice(&meta);
    el(&mut file, 8, 0x16, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
    el(&mut file, 8, 0x18, b"UI", b"1.2.3.4\0");
    el(&mut file, 0x20, 0x0D, b"UI", b"1.2.3\0");
    el(&mut file, 0x20, 0x0E, b"UI", b"1.2.3.5\0");
    let at = file.len() as u64;
    let mut deep = Vec::with_capacity(DEPTH * 20);
    for _ in 0..DEPTH {
        deep.extend_from_slice(&[
            0x29, 0, 0x10, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let mut plain = Vec::new();
    el(&mut plain, 0x29, 0x1010, b"OB", &vec![0u8; deep.len() - 12]);
    assert_eq!(plain.len(), deep.len());
    file.extend_from_slice(&plain);
    for g in [0x31u16, 0x33, 0x35] {
        for e in 0x1000..0xF000u16 {
            el(&mut file, g, e, b"SH", b"");
        }
    }
    let path = folder.join("flipping.dcm");
    std::fs::write(&path, &file).unwrap();
    // a valid file beside it is read every time
    let _ = &file;
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                f.write_at(&deep, at).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(700));
                f.write_at(&plain, at).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(700));
            }
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let o = segbridge(dir.path())
            .args(["scan", "--json", "--folder"])
            .arg(&folder)
            .output()
            .unwrap();
        outcomes.push(o.status);
        if !o.status.success() {
            stop.store(true, Ordering::Relaxed);
            panic!("scan did not survive the rewrite: {}", text(&o));
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(outcomes.iter().all(|s| s.success()));
}

/// Rewrites a Part-10 SEG as RLE Lossless whose one fragment is `fragment` (an RLE header and
/// whatever follows it).
fn as_rle(path: &std::path::Path, fragment: Vec<u8>) {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(path).unwrap();
    let mut meta = obj.meta().clone();
    meta.transfer_syntax = "1.2.840.10008.1.2.5\0".into();
    let mut ds = obj.into_inner();
    ds.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(vec![], vec![fragment]),
    ));
    let file = dicom_object::FileDicomObject::new_empty_with_meta(meta);
    let mut file = file;
    for e in ds {
        file.put(e);
    }
    file.write_to_file(path).unwrap();
}

/// Issue 13, item 4 (the test only: the bounded decoder is the `pixels` branch's): an RLE
/// header declaring 0xFFFFFFFE segments, under a 2 GiB address-space limit, is reported invalid
/// and a valid SEG beside it is notified. Before: the decoder asked for 16 GiB and the process
/// aborted, so the valid SEG was never notified.
#[test]
fn an_rle_header_declaring_four_billion_segments_is_invalid_not_an_abort() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    let (a, b) = (CtSeries::new("rle-a", 2), CtSeries::new("rle-b", 2));
    write_ct(&folder.join("a"), &a, "IM").unwrap();
    write_ct(&folder.join("b"), &b, "IM").unwrap();
    let good = SegSpec::new("rle-good", &a);
    write_seg(&folder.join("segs"), &good, "good").unwrap();
    let bomb = SegSpec::new("rle-bomb", &b);
    let files = write_seg(&folder.join("segs"), &bomb, "bomb").unwrap();
    let mut header = Vec::with_capacity(64 + 32);
    header.extend_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    header.extend_from_slice(&64u32.to_le_bytes());
    header.extend_from_slice(&[0u8; 56]);
    header.extend_from_slice(&[0x00, 0x00, 0xFF, 0x00, 0x81, 0x00]);
    header.resize(header.len() + header.len() % 2, 0);
    as_rle(&files[0], header);
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    let mut c = segbridge(dir.path());
    c.env("MONAI_API_KEY", &emu.key)
        .args(["sync", "--json", "--folder"])
        .arg(&folder)
        .args(["--dataset", &dataset, "--api", &emu.url, "--retry-for", "5"]);
    // SAFETY: only async-signal-safe calls between fork and exec
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        entries(&emu.notifications()),
        vec![e("added", &a.series, &good.series_uid())]
    );
    let st = segbridge(dir.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    let uid = bomb.series_uid();
    let label = v["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l.as_object()
                .unwrap()
                .values()
                .any(|x| x.as_str() == Some(uid.as_str()))
        })
        .unwrap_or_else(|| panic!("{uid} not in the ledger: {v}"));
    assert_eq!(label["status"], "invalid", "{label}");
}

/// Issue 13, item 10: the same state file reached through a symlink is the same writer. Before:
/// the lock was keyed on the path given, so `watch --state real.db` and `sync --state link.db`
/// both wrote (and sent a batch twice). Now the second waits, then exits 4.
#[test]
fn a_symlinked_state_file_is_locked_as_the_file_itself() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    let ct = CtSeries::new("lock", 1);
    write_ct(&folder, &ct, "IM").unwrap();
    write_seg(&folder, &SegSpec::new("lock-seg", &ct), "seg").unwrap();
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    let o = sync(&emu, dir.path(), &folder, &dataset, &["--state", "real.db"]);
    assert!(o.status.success(), "{}", text(&o));
    std::os::unix::fs::symlink(dir.path().join("real.db"), dir.path().join("link.db")).unwrap();
    let log = std::fs::File::create(dir.path().join("watch.log")).unwrap();
    let watch = segbridge(dir.path())
        .env("MONAI_API_KEY", &emu.key)
        .args(["watch", "--folder"])
        .arg(&folder)
        .args([
            "--dataset",
            &dataset,
            "--api",
            &emu.url,
            "--state",
            "real.db",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until("watch to take the lock", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("watch.log"))
            .unwrap_or_default()
            .contains("watching")
            || dir.path().join("real.db.lock").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    for state in ["link.db", "./sub/../link.db"] {
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let o = sync(
            &emu,
            dir.path(),
            &folder,
            &dataset,
            &["--state", state, "--lock-wait", "0.3"],
        );
        assert_eq!(o.status.code(), Some(4), "{state}: {}", text(&o));
    }
    terminate(watch);
}

/// Issue 13, item 11: a symbolic link loop in a watched folder is reported, and does not make
/// `watch` rescan: the watcher's own open/read events no longer count as changes. Before: a
/// rescan (and a warning) every half second for ever. A file added later is still seen.
#[test]
fn a_symlink_loop_does_not_make_watch_rescan() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    let a = CtSeries::new("loop-a", 1);
    write_ct(&folder.join("a"), &a, "IM").unwrap();
    let sa = SegSpec::new("loop-a-seg", &a);
    write_seg(&folder.join("a"), &sa, "seg").unwrap();
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", folder.join("sub/up")).unwrap();
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    let log_path = dir.path().join("watch.log");
    let watch = segbridge(dir.path())
        .env("MONAI_API_KEY", &emu.key)
        .args(["watch", "--folder"])
        .arg(&folder)
        .args([
            "--dataset",
            &dataset,
            "--api",
            &emu.url,
            "--reconcile",
            "600",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("the first label", Duration::from_secs(15), || {
        entries(&emu.notifications()).len() == 1
    });
    std::thread::sleep(Duration::from_secs(4));
    let loops = log().matches("symbolic link loop").count();
    assert_eq!(loops, 1, "{}", log());
    // a change is still a rescan
    let b = CtSeries::new("loop-b", 1);
    write_ct(&folder.join("b"), &b, "IM").unwrap();
    let sb = SegSpec::new("loop-b-seg", &b);
    write_seg(&folder.join("b"), &sb, "seg").unwrap();
    wait_until("the added label", Duration::from_secs(15), || {
        entries(&emu.notifications()).len() == 2
    });
    assert_eq!(
        entries(&emu.notifications())[1],
        e("added", &b.series, &sb.series_uid())
    );
    terminate(watch);
}

/// Issue 13, item 12: a file name holding a newline cannot forge a log line. Before: the name
/// `x\n2026-01-01T00:00:00.000000Z  INFO forged` printed a second, forged, log line.
#[test]
fn a_file_name_with_a_newline_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir_all(&folder).unwrap();
    let forged = "2026-01-01T00:00:00.000000Z  INFO notified 1 label (forged)";
    std::fs::write(folder.join(format!("x\n{forged}\r")), b"not dicom").unwrap();
    let o = segbridge(dir.path())
        .args(["sync", "--dry-run", "--dataset", "d", "--folder"])
        .arg(&folder)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("skipped"), "{}", text(&o));
    assert!(err.contains("x\\n2026-01-01"), "{}", text(&o));
    // the scan's own table of skipped files too
    let scan = segbridge(dir.path())
        .args(["scan", "--folder"])
        .arg(&folder)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&scan.stdout);
    assert!(out.contains("x\\n2026-01-01"), "{}", text(&scan));
    for line in err.lines().chain(out.lines()) {
        assert!(!line.starts_with("2026-01-01"), "forged line: {line:?}");
        assert!(!line.contains('\r'), "raw carriage return: {line:?}");
    }
}

/// Makes a directory immutable (even for root) while alive: `chattr +i`, undone on drop.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &std::path::Path) -> Immutable {
        let ok = Command::new("chattr").arg("+i").arg(dir).status().unwrap();
        assert!(ok.success(), "chattr +i {} failed", dir.display());
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Issue 13, item 15: `status` only reads, so a read-only state directory is no obstacle;
/// state, WAL and lock files are 0600; an invalid `--api` port is a configuration error (2),
/// not a retried call (3).
#[test]
fn small_ones_status_read_only_modes_and_bad_ports() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    let ct = CtSeries::new("small", 1);
    write_ct(&folder, &ct, "IM").unwrap();
    write_seg(&folder, &SegSpec::new("small-seg", &ct), "seg").unwrap();
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let o = sync(
        &emu,
        dir.path(),
        &folder,
        &dataset,
        &["--state", "state/s.db"],
    );
    assert!(o.status.success(), "{}", text(&o));
    for f in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let f = f.unwrap();
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?} is {mode:o}", f.file_name());
    }
    {
        let _ro = Immutable::new(&dir.path().join("state"));
        for args in [&["status"][..], &["status", "--json"][..]] {
            let o = segbridge(dir.path())
                .args(args)
                .args(["--state", "state/s.db"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{args:?}: {}", text(&o));
        }
    }
    let o = sync(
        &emu,
        dir.path(),
        &folder,
        &dataset,
        &["--state", "state/s.db", "--api", "http://127.0.0.1:99999"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // a config value of the wrong type is named by its key, never shown
    for (i, line) in [
        "api-key = 12345678",
        "dicomweb-password = [\"hunter2\"]",
        "batch = \"hunter2\"",
    ]
    .iter()
    .enumerate()
    {
        let cfg = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&cfg, line).unwrap();
        let o = segbridge(dir.path())
            .arg("status")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let all = text(&o);
        assert!(
            !all.contains("12345678") && !all.contains("hunter2"),
            "{all}"
        );
        assert!(all.contains("the value is not shown"), "{all}");
    }
}

/// Issue 13, item 15 (the disk part, end to end): a state file that cannot grow any more right
/// after the API accepted a batch. Found by trying file-size limits (`RLIMIT_FSIZE`, a step of
/// one WAL frame) on copies of one state file until a run reaches the API but cannot confirm;
/// that run must exit 4 saying the batch could not be recorded, not 3 "API could not be
/// reached".
#[test]
fn a_disk_that_fills_after_the_api_accepted_is_a_state_failure() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    let emu = Emu::start();
    let dataset = emu.create_dataset();
    let a = CtSeries::new("full-a", 1);
    write_ct(&folder.join("a"), &a, "IM").unwrap();
    write_seg(&folder.join("a"), &SegSpec::new("full-a-seg", &a), "seg").unwrap();
    let o = sync(&emu, dir.path(), &folder, &dataset, &["--state", "base.db"]);
    assert!(o.status.success(), "{}", text(&o));
    let b = CtSeries::new("full-b", 1);
    write_ct(&folder.join("b"), &b, "IM").unwrap();
    write_seg(&folder.join("b"), &SegSpec::new("full-b-seg", &b), "seg").unwrap();
    let mut found = None;
    for step in 0..80u64 {
        let limit = 8 * 1024 + step * 4120;
        let state = dir.path().join(format!("s{step}.db"));
        std::fs::copy(dir.path().join("base.db"), &state).unwrap();
        let before = emu.notifications().len();
        let mut c = segbridge(dir.path());
        c.env("MONAI_API_KEY", &emu.key)
            .args(["sync", "--folder"])
            .arg(&folder)
            .args(["--dataset", &dataset, "--api", &emu.url, "--retry-for", "2"])
            .arg("--state")
            .arg(&state);
        // SAFETY: only async-signal-safe calls between fork and exec
        unsafe {
            c.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                Ok(())
            });
        }
        let o = c.output().unwrap();
        let reached = emu.notifications().len() > before;
        if reached && !o.status.success() {
            found = Some(o);
            break;
        }
        if reached && o.status.success() {
            break; // past the window: the limit is large enough for everything
        }
    }
    let o =
        found.expect("no file-size limit stopped the run between the API's answer and the confirm");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("could not be recorded"), "{}", text(&o));
}
