//! The quality gate's geometry checks, whole and sampled.

use super::*;

fn geometry(items: &[(&str, u32, u32, f64)]) -> SeriesGeometry {
    SeriesGeometry {
        series: "S".into(),
        instances: items
            .iter()
            .map(|(uid, r, c, z)| {
                let g = InstanceGeometry {
                    rows: *r,
                    cols: *c,
                    position: (*r > 0).then_some([0.0, 0.0, *z]),
                    orientation: (*r > 0).then_some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                };
                (uid.to_string(), g)
            })
            .collect(),
        sampled: None,
    }
}

/// Every series of three slices of 8x8 or 16x16, every sample, every set of named slices
/// (with or without an instance of another series), both SEG sizes: a sampled geometry
/// (the sample's size for all, the planes as indexed) decides exactly what the whole one
/// does, or nothing; and it decides whenever its sample is named, or none is, and fits.
#[test]
fn a_sampled_geometry_decides_as_the_whole_one_or_not_at_all() {
    let v = Validator::default();
    let uids = ["1.1", "1.2", "1.3"];
    let mut decided = 0;
    for sizes in 0..8u32 {
        let size = |k: usize| if sizes >> k & 1 == 1 { 16 } else { 8 };
        let items: Vec<(&str, u32, u32, f64)> = (0..3)
            .map(|k| (uids[k], size(k), size(k), 2.0 * k as f64))
            .collect();
        let whole = geometry(&items);
        for pick in 0..3 {
            let mut sampled = whole.clone();
            let s = whole.instances[uids[pick]];
            for g in sampled.instances.values_mut() {
                (g.rows, g.cols) = (s.rows, s.cols);
            }
            sampled.sampled = Some(uids[pick].into());
            for named in 0..16u32 {
                let mut frames: Vec<FrameInfo> = (0..3)
                    .filter(|k| named >> k & 1 == 1)
                    .map(|k| frame(uids[k], 2.0 * k as f64))
                    .collect();
                if named & 8 != 0 {
                    frames.push(frame("9.9", 0.0)); // another series' instance
                }
                for seg in [8, 16] {
                    let mut want = Quality::default();
                    assert!(v.check_geometry(&mut want, "", &frames, seg, seg, &whole));
                    let mut got = Quality::default();
                    let ok = v.check_geometry(&mut got, "", &frames, seg, seg, &sampled);
                    let names = |k: usize| named >> k & 1 == 1;
                    let promised = s.rows == seg && (names(pick) || named & 7 == 0);
                    assert_eq!(
                        ok, promised,
                        "sizes {sizes:03b} pick {pick} named {named:04b}"
                    );
                    if ok {
                        decided += 1;
                        assert_eq!(got, want, "sizes {sizes:03b} pick {pick} named {named:04b}");
                    } else {
                        assert_eq!(got, Quality::default());
                    }
                }
            }
        }
    }
    assert!(decided > 100, "{decided}");
}

fn frame(source: &str, z: f64) -> FrameInfo {
    FrameInfo {
        segment: Some(1),
        sources: vec![source.into()],
        position: Some([0.0, 0.0, z]),
    }
}

#[test]
fn a_non_image_instance_never_gives_the_source_geometry() {
    // the SR sorts first by UID, and would be "the first instance" of the series
    let src = geometry(&[
        ("1.1", 0, 0, 0.0),
        ("1.2", 16, 16, 0.0),
        ("1.3", 16, 16, 2.0),
    ]);
    let mut q = Quality::default();
    Validator::default().check_geometry(&mut q, "", &[frame("1.2", 0.0)], 16, 16, &src);
    assert!(q.problems.is_empty(), "{:?}", q.problems);
    let mut q = Quality::default();
    Validator::default().check_geometry(&mut q, "", &[frame("1.2", 0.0)], 8, 8, &src);
    assert_eq!(
        q.problems,
        vec![
            "Rows/Columns 8x8 differ from the source images' 16x16 \
             (the instances its frames reference, series S)"
        ]
    );
    // only an SR: nothing to compare with, and said so
    let mut q = Quality::default();
    let only_sr = geometry(&[("1.1", 0, 0, 0.0)]);
    Validator::default().check_geometry(&mut q, "", &[], 16, 16, &only_sr);
    assert!(q.problems.is_empty() && q.warnings[0].contains("no image instance"));
}

#[test]
fn several_image_sizes_are_named_and_the_referenced_ones_decide() {
    let src = geometry(&[("1.1", 16, 16, 0.0), ("1.2", 32, 32, 2.0)]);
    let v = Validator::default();
    let mut q = Quality::default();
    v.check_geometry(&mut q, "", &[FrameInfo::default()], 8, 8, &src);
    assert_eq!(
        q.problems,
        vec!["Rows/Columns 8x8 match none of the source images' sizes (16x16, 32x32) (series S)"]
    );
    // frames drawn on the 32x32 image: 16x16 is wrong for them, 32x32 right
    let mut q = Quality::default();
    v.check_geometry(&mut q, "", &[frame("1.2", 2.0)], 16, 16, &src);
    assert!(q.problems[0].contains("source images' 32x32 (the instances its frames"));
    let mut q = Quality::default();
    v.check_geometry(&mut q, "", &[frame("1.2", 2.0)], 32, 32, &src);
    assert!(q.problems.is_empty(), "{:?}", q.problems);
}

#[test]
fn an_invalid_verdict_on_content_not_read_whole_is_never_unchanged() {
    // a remote source skips unchanged series before reading them: an invalid verdict kept
    // without a key (the SEG could not be retrieved) must be read and judged again
    let k = |status: &str, key: Option<&str>| crate::ledger::KnownLabel {
        instances: 1,
        status: status.parse().unwrap(),
        reason: String::new(),
        stamp: None,
        verdict_key: key.map(String::from),
    };
    assert!(!k("invalid", None).unchanged(Some(1)));
    assert!(k("invalid", Some("instances:x")).unchanged(Some(1)));
    assert!(k("ready", None).unchanged(Some(1)));
    assert!(!k("ready", Some("instances:x")).unchanged(Some(2)));
}
