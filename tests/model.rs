//! A model-based test of the whole pipeline (source → match → quality gate → ledger → outbox →
//! notify to the emulator over loopback HTTP) against a tiny reference model of what the
//! training server should know.
//!
//! A seeded generator applies random operations to a store (a folder, or a real Orthanc): add a
//! SEG dated newer or older than the current one, delete one, re-export one with new instances,
//! add a SEG before its image and the image later, change the image filter, add an invalid or
//! unusable SEG, store a second copy of a SEG (duplicate SOP Instance UIDs). After every sync:
//! - replaying every notify body in order (added/updated set the image's label, removed clears
//!   it) gives, for every image, exactly the model's newest present ready label and the
//!   instance set it had when it was told;
//! - the sync touched only the images whose expected state changed, once each;
//! - an immediate second sync sends nothing.
//!
//! CI runs fixed seeds. A long run: `SEGBRIDGE_MODEL_STEPS=100000 SEGBRIDGE_MODEL_SEEDS=1,2,3
//! cargo test --release --test tests model::folder -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segbridge::app::settings::{Layers, Settings, SourceLayer, StateLayer};
use segbridge::dicom::quality::Validator;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, Refs, SegSpec};
use segbridge::ledger::testing::{new_database, test_server};
use segbridge::ledger::{Ledger, StateAt};
use segbridge::monai::{Client, Secret};

use crate::common::orthanc::Orthanc;
use crate::common::Emu;

/// What a SEG of the model is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Valid, referenced by ReferencedSeriesSequence: notified when its image is there.
    Good,
    /// No voxel: the quality gate makes it invalid.
    Empty,
    /// No ReferencedSeriesSequence: unusable, never notified.
    NoReference,
}

#[derive(Debug, Clone)]
struct Seg {
    spec: SegSpec,
    image: usize,
    kind: Kind,
    /// Stored copies (file names in the folder); empty: deleted.
    copies: Vec<String>,
}

impl Seg {
    fn uid(&self) -> String {
        self.spec.series_uid()
    }
    /// The model's newest-label order: ContentDate+Time, then the series UID.
    fn key(&self) -> (String, String) {
        (self.spec.content.0.clone(), self.uid())
    }
}

/// Where the ledger is kept.
#[derive(Clone, Copy)]
enum Kept {
    File,
    Postgres,
}

/// Where the files go.
enum Store {
    Folder,
    Orthanc(Box<Orthanc>),
}

struct World {
    rng: StdRng,
    dir: tempfile::TempDir,
    /// The ledger: a file in `dir`, or a PostgreSQL database of the world's own.
    state: String,
    store: Store,
    images: Vec<(CtSeries, bool)>,
    segs: Vec<Seg>,
    filter: Option<&'static str>,
    emu: Emu,
    dataset: String,
    client: Client,
    /// Notify bodies already checked.
    seen: usize,
    /// The replayed server view: image → (label, generation of that label when it was told).
    server: BTreeMap<String, (String, u32)>,
    /// The model's view after the previous sync.
    expected_before: BTreeMap<String, (String, u32)>,
    next: usize,
    trace: Vec<String>,
}

impl World {
    fn new(seed: u64, store: Store, images: usize, ledger: Kept) -> World {
        let emu = Emu::start();
        let dataset = emu.create_dataset();
        let mut cfg =
            segbridge::monai::ApiConfig::new(&emu.url, "org", Some(Secret::new(&emu.key)));
        cfg.retry_for = Duration::from_secs(10);
        let client = Client::new(cfg).unwrap();
        let images = (0..images)
            .map(|i| {
                let mut ct = CtSeries::new(&format!("m{seed}-img{i}"), 2);
                if i % 3 == 2 {
                    ct.modality = "MR".into();
                }
                (ct, false)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let state = match ledger {
            Kept::File => dir.path().join("segbridge.db").display().to_string(),
            Kept::Postgres => new_database(&test_server()),
        };
        World {
            rng: StdRng::seed_from_u64(seed),
            dir,
            state,
            store,
            images,
            segs: Vec::new(),
            filter: None,
            emu,
            dataset,
            client,
            seen: 0,
            server: BTreeMap::new(),
            expected_before: BTreeMap::new(),
            next: 0,
            trace: Vec::new(),
        }
    }

    fn folder(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// Stores SEG `i` once more, as `copy`.
    fn put_seg(&mut self, i: usize, copy: &str) {
        let spec = self.segs[i].spec.clone();
        match &self.store {
            Store::Folder => {
                write_seg(&self.folder().join("segs"), &spec, copy).unwrap();
            }
            Store::Orthanc(o) => {
                let files = write_seg(&self.scratch(), &spec, copy).unwrap();
                o.stow(&files);
                for f in files {
                    std::fs::remove_file(f).unwrap();
                }
            }
        }
        self.segs[i].copies.push(copy.to_string());
    }

    fn drop_seg(&mut self, i: usize) {
        let seg = &self.segs[i];
        match &self.store {
            Store::Folder => {
                for c in &seg.copies {
                    std::fs::remove_file(self.folder().join("segs").join(c)).unwrap();
                }
            }
            Store::Orthanc(o) => {
                let id = segbridge::source::orthanc::series_id(
                    &seg.spec.image.patient,
                    &seg.spec.image.study,
                    &seg.uid(),
                );
                o.delete(&format!("/series/{id}"));
            }
        }
        self.segs[i].copies.clear();
    }

    fn put_image(&mut self, i: usize) {
        let ct = self.images[i].0.clone();
        match &self.store {
            Store::Folder => {
                write_ct(&self.folder().join(&ct.name), &ct, "IM").unwrap();
            }
            Store::Orthanc(o) => {
                let files = write_ct(&self.scratch().join(&ct.name), &ct, "IM").unwrap();
                o.stow(&files);
            }
        }
        self.images[i].1 = true;
    }

    fn present(&self) -> Vec<usize> {
        (0..self.segs.len())
            .filter(|i| !self.segs[*i].copies.is_empty())
            .collect()
    }

    /// One random operation.
    fn step(&mut self) {
        let present = self.present();
        let op = self.rng.random_range(0..100);
        match op {
            0..=34 => self.add_seg(),
            35..=49 if !present.is_empty() => {
                let i = present[self.rng.random_range(0..present.len())];
                self.trace
                    .push(format!("delete {}", self.segs[i].spec.name));
                self.drop_seg(i);
            }
            50..=61 if !present.is_empty() => {
                let i = present[self.rng.random_range(0..present.len())];
                self.trace.push(format!(
                    "re-export {} with new instances",
                    self.segs[i].spec.name
                ));
                self.drop_seg(i);
                self.segs[i].spec.generation += 1;
                self.put_seg(i, &self.segs[i].spec.name.clone());
            }
            62..=73 => {
                let missing: Vec<usize> = (0..self.images.len())
                    .filter(|i| !self.images[*i].1)
                    .collect();
                if missing.is_empty() {
                    self.add_seg();
                } else {
                    let i = missing[self.rng.random_range(0..missing.len())];
                    self.trace.push(format!("store image {i}"));
                    self.put_image(i);
                }
            }
            74..=83 => {
                // single values: how a PACS reads a list in a QIDO filter varies
                let f =
                    [None, Some("Modality=CT"), Some("Modality=MR")][self.rng.random_range(0..3)];
                self.trace.push(format!("image filter {f:?}"));
                self.filter = f;
            }
            84..=91 if !present.is_empty() && matches!(self.store, Store::Folder) => {
                // a second copy of the same instances under another file name
                let i = present[self.rng.random_range(0..present.len())];
                let copy = format!(
                    "{}-copy{}",
                    self.segs[i].spec.name,
                    self.segs[i].copies.len()
                );
                self.trace
                    .push(format!("duplicate {} as {copy}", self.segs[i].spec.name));
                self.put_seg(i, &copy);
            }
            _ => self.add_seg(),
        }
    }

    fn add_seg(&mut self) {
        let image = self.rng.random_range(0..self.images.len());
        let kind = match self.rng.random_range(0..10) {
            0 => Kind::Empty,
            1 => Kind::NoReference,
            _ => Kind::Good,
        };
        let name = format!("s{}", self.next);
        self.next += 1;
        let mut spec = SegSpec::new(&name, &self.images[image].0);
        // few dates, so that newer, older and equal dates all happen
        spec.content = (
            format!("202401{:02}", self.rng.random_range(1..=9)),
            "120000".into(),
        );
        match kind {
            Kind::Empty => spec.faults.empty = true,
            Kind::NoReference => spec.refs = Refs::SourceOnly,
            Kind::Good => {}
        }
        self.trace.push(format!(
            "add {name} on image {image} dated {} ({kind:?})",
            spec.content.0
        ));
        self.segs.push(Seg {
            spec,
            image,
            kind,
            copies: vec![],
        });
        let i = self.segs.len() - 1;
        self.put_seg(i, &name);
    }

    /// What the server should know: image → (newest present ready label, its generation).
    fn expected(&self) -> BTreeMap<String, (String, u32)> {
        let passes = |m: &str| match self.filter {
            None => true,
            Some(f) => f.trim_start_matches("Modality=").split(',').any(|a| a == m),
        };
        let mut best: BTreeMap<String, &Seg> = BTreeMap::new();
        for s in &self.segs {
            let (ct, stored) = &self.images[s.image];
            if s.copies.is_empty() || !stored || s.kind != Kind::Good || !passes(&ct.modality) {
                continue;
            }
            let e = best.entry(ct.series.clone()).or_insert(s);
            if s.key() > e.key() {
                *e = s;
            }
        }
        best.into_iter()
            .map(|(img, s)| (img, (s.uid(), s.spec.generation)))
            .collect()
    }

    fn sync(&mut self) {
        let state = StateAt::parse(&self.state).unwrap();
        let (folder, orthanc) = match &self.store {
            Store::Folder => (Some(self.folder()), None),
            Store::Orthanc(o) => (None, Some(o.url.clone())),
        };
        std::fs::create_dir_all(self.folder()).unwrap();
        let s = Settings::resolve(Layers {
            source: SourceLayer {
                folder: folder.into_iter().collect(),
                orthanc: orthanc.into_iter().collect(),
                image_filter: self.filter.map(str::to_string),
                ..Default::default()
            },
            state: StateLayer {
                state: Some(self.state.clone()),
            },
            ..Default::default()
        })
        .unwrap();
        let sources = s.sources_with(Some(Validator::default())).unwrap();
        let mut ledger = Ledger::open(&state, Duration::from_secs(5)).unwrap();
        let mut reporter = segbridge::app::pipeline::Reporter::default();
        let rt = &self.emu.rt;
        let report = rt
            .block_on(segbridge::app::sync::collect_once(
                &mut ledger,
                &sources,
                &self.dataset,
                s.pacs.chunk,
                &mut reporter,
            ))
            .unwrap();
        assert!(
            report.source_errors.is_empty(),
            "{:?}",
            report.source_errors
        );
        rt.block_on(segbridge::app::pipeline::deliver(
            &mut ledger,
            &mut self.client,
            &self.dataset,
            s.batch,
        ))
        .unwrap();
    }

    /// Replays the bodies sent since the last check; returns the images they named.
    fn replay(&mut self) -> Vec<String> {
        let all = self.emu.notifications();
        let gen: BTreeMap<String, u32> = self
            .segs
            .iter()
            .map(|s| (s.uid(), s.spec.generation))
            .collect();
        let mut touched = Vec::new();
        for body in &all[self.seen..] {
            let mut in_body = BTreeSet::new();
            for section in ["added", "updated", "removed"] {
                for e in body["specs"][section].as_array().into_iter().flatten() {
                    let image = e["image"].as_str().unwrap().to_string();
                    let label = e["label"].as_str().unwrap().to_string();
                    assert!(
                        in_body.insert(image.clone()),
                        "one body names image {image} twice: {body}"
                    );
                    touched.push(image.clone());
                    if section == "removed" {
                        self.server.remove(&image);
                    } else {
                        let g = gen[&label];
                        self.server.insert(image, (label, g));
                    }
                }
            }
        }
        self.seen = all.len();
        touched
    }

    fn check(&mut self, step: usize) {
        self.sync();
        let touched = self.replay();
        let expected = self.expected();
        let trace = self.trace[self.trace.len().saturating_sub(12)..].join("\n  ");
        let ctx = || format!("after step {step}; last operations:\n  {trace}");
        assert_eq!(
            self.server,
            expected,
            "server view differs from the model {}",
            ctx()
        );
        let changed: BTreeSet<String> = expected
            .iter()
            .filter(|(k, v)| self.expected_before.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(
                self.expected_before
                    .keys()
                    .filter(|k| !expected.contains_key(*k))
                    .cloned(),
            )
            .collect();
        let mut got = touched.clone();
        got.sort();
        assert_eq!(
            got,
            changed.into_iter().collect::<Vec<_>>(),
            "the sync should touch exactly the images whose label changed, once each {}",
            ctx()
        );
        self.expected_before = expected;
        // an immediate second sync sends nothing
        self.sync();
        assert_eq!(
            self.emu.notifications().len(),
            self.seen,
            "a second sync sent something {}",
            ctx()
        );
    }
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("SEGBRIDGE_MODEL_SEEDS") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) => default.to_vec(),
    }
}

fn steps(default: usize) -> usize {
    std::env::var("SEGBRIDGE_MODEL_STEPS")
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(default)
}

/// Runs `steps` operations, a sync and the checks after each, in worlds of `images` images;
/// a world is renewed every `per_world` steps so that folders stay small.
fn run(
    seed: u64,
    steps: usize,
    per_world: usize,
    images: usize,
    ledger: Kept,
    store: impl Fn() -> Store,
) {
    let mut done = 0;
    let mut world_no = 0u64;
    while done < steps {
        let mut w = World::new(seed * 1_000_003 + world_no, store(), images, ledger);
        for _ in 0..per_world.min(steps - done) {
            w.step();
            w.check(done);
            done += 1;
        }
        world_no += 1;
    }
}

#[test]
fn folder() {
    let n = steps(300);
    for seed in seeds(&[1, 2]) {
        let t = std::time::Instant::now();
        run(seed, n, 60, 4, Kept::File, || Store::Folder);
        eprintln!(
            "model, folder: seed {seed}, {n} steps in {:.1?}",
            t.elapsed()
        );
    }
}

/// The same operations with the ledger in PostgreSQL: the server's view must be the same.
#[test]
fn folder_postgres() {
    let n = steps(150);
    for seed in seeds(&[4]) {
        let t = std::time::Instant::now();
        run(seed, n, 50, 4, Kept::Postgres, || Store::Folder);
        eprintln!(
            "model, folder, PostgreSQL ledger: seed {seed}, {n} steps in {:.1?}",
            t.elapsed()
        );
    }
}

#[test]
fn orthanc() {
    let n = steps(40);
    for seed in seeds(&[3]) {
        let t = std::time::Instant::now();
        run(seed, n, 40, 3, Kept::File, || {
            Store::Orthanc(Box::new(Orthanc::start(serde_json::json!({}))))
        });
        eprintln!(
            "model, orthanc: seed {seed}, {n} steps in {:.1?}",
            t.elapsed()
        );
    }
}
