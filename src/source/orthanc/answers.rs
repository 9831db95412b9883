//! Orthanc's JSON answers, typed: only the fields segbridge reads are kept, and an odd value
//! (a number where a string is expected, a huge array) is skipped while parsing, never held.

use serde::{Deserialize, Deserializer};

use crate::model::{ImageInstance, InstanceGeometry};
use crate::source::dicom_json::{string_or_none, Loose};
use crate::source::endpoint::is_uid;

/// One resource of a `/tools/find` answer with `"Expand": true`, keeping only what segbridge
/// reads: the rest of each (large) answer is skipped while parsing, never held.
#[derive(Debug, Default, Deserialize)]
pub struct Found {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "ParentStudy", default, deserialize_with = "lenient")]
    pub parent_study: Option<String>,
    #[serde(rename = "MainDicomTags", default)]
    pub tags: FoundTags,
    /// Orthanc IDs of the child instances (series level).
    #[serde(rename = "Instances", default, deserialize_with = "ids")]
    pub instances: Option<Vec<String>>,
}

/// An instance as `/instances/{id}` answers it: only its series' Orthanc ID is kept.
#[derive(Debug, Default, Deserialize)]
pub struct FoundInstance {
    #[serde(rename = "ParentSeries", default, deserialize_with = "lenient")]
    pub parent_series: Option<String>,
}

/// An instance as `/tools/bulk-content` with `"Level": "Instance"` answers it: its ID, series,
/// file size and SOP Instance UID.
#[derive(Debug, Default, Deserialize)]
pub struct FoundFile {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "ParentSeries", default, deserialize_with = "lenient")]
    pub parent_series: Option<String>,
    #[serde(rename = "FileSize", default)]
    pub size: Loose,
    #[serde(rename = "MainDicomTags", default)]
    pub tags: FoundInstanceTags,
}

#[derive(Debug, Default, Deserialize)]
pub struct FoundInstanceTags {
    #[serde(rename = "SOPInstanceUID", default, deserialize_with = "lenient")]
    pub sop: Option<String>,
    /// ImagePositionPatient as indexed: backslash-separated decimals.
    #[serde(rename = "ImagePositionPatient", default, deserialize_with = "lenient")]
    pub position: Option<String>,
    #[serde(
        rename = "ImageOrientationPatient",
        default,
        deserialize_with = "lenient"
    )]
    pub orientation: Option<String>,
}

impl FoundInstanceTags {
    /// The indexed position and orientation, when both are N finite decimals.
    pub fn plane(&self) -> Option<([f64; 3], [f64; 6])> {
        Some((
            decimals(self.position.as_deref()?)?,
            decimals(self.orientation.as_deref()?)?,
        ))
    }
}

/// A DICOM multi-valued decimal string ("0\\0\\30") as exactly N finite numbers.
fn decimals<const N: usize>(s: &str) -> Option<[f64; N]> {
    let v: Vec<f64> = s
        .split('\\')
        .map(|x| x.trim().parse::<f64>().ok().filter(|f| f.is_finite()))
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// The main DICOM tags segbridge reads from a found resource.
#[derive(Debug, Default, Deserialize)]
pub struct FoundTags {
    #[serde(rename = "SeriesInstanceUID", default, deserialize_with = "lenient")]
    pub series: Option<String>,
    #[serde(rename = "StudyInstanceUID", default, deserialize_with = "lenient")]
    pub study: Option<String>,
    #[serde(rename = "Modality", default, deserialize_with = "lenient")]
    pub modality: Option<String>,
}

/// An instance's tags as `/instances/{id}/tags?short` answers them (`"gggg,eeee": value`, a
/// sequence an array, a long or binary value null): only what an image series' sampled
/// geometry needs. Orthanc reads the file only up to its pixel data to answer it.
#[derive(Debug, Default, Deserialize)]
pub struct ShortTags {
    #[serde(rename = "0008,0016", default, deserialize_with = "lenient")]
    pub sop_class: Option<String>,
    #[serde(rename = "0008,0018", default, deserialize_with = "lenient")]
    pub sop: Option<String>,
    #[serde(rename = "0008,0060", default, deserialize_with = "lenient")]
    pub modality: Option<String>,
    #[serde(
        rename = "0020,000d",
        alias = "0020,000D",
        default,
        deserialize_with = "lenient"
    )]
    pub study: Option<String>,
    #[serde(
        rename = "0020,000e",
        alias = "0020,000E",
        default,
        deserialize_with = "lenient"
    )]
    pub series: Option<String>,
    #[serde(rename = "0020,0032", default, deserialize_with = "lenient")]
    pub position: Option<String>,
    #[serde(rename = "0020,0037", default, deserialize_with = "lenient")]
    pub orientation: Option<String>,
    #[serde(rename = "0028,0010", default, deserialize_with = "lenient")]
    pub rows: Option<String>,
    #[serde(rename = "0028,0011", default, deserialize_with = "lenient")]
    pub cols: Option<String>,
}

impl ShortTags {
    /// The instance as the file's own header would give it (see
    /// [`crate::dicom::reader::read_instance_from_bytes`]): nothing for a SEG, or when a UID
    /// is missing or malformed. An unreadable size is 0 (not an image), an unreadable plane
    /// none, as from the file.
    pub fn image(&self) -> Option<ImageInstance> {
        fn uid(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|u| is_uid(u))
        }
        let class = uid(&self.sop_class)?;
        if crate::dicom::is_seg_sop_class(class) {
            return None;
        }
        // US: 0 to 65535
        let size = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .map_or(0, u32::from)
        };
        Some(ImageInstance {
            sop_instance: uid(&self.sop)?.to_string(),
            series: uid(&self.series)?.to_string(),
            study: uid(&self.study)?.to_string(),
            modality: self.modality.as_deref().unwrap_or("").trim().to_string(),
            geometry: InstanceGeometry {
                rows: size(&self.rows),
                cols: size(&self.cols),
                position: self.position.as_deref().and_then(decimals::<3>),
                orientation: self.orientation.as_deref().and_then(decimals::<6>),
            },
        })
    }
}

/// A string, or nothing when the server sent something else (one odd value must not fail the
/// whole listing, and is skipped without being kept).
fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_or_none(d)
}

/// A list of IDs; anything else is no list (and odd items are dropped, never kept).
fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of IDs")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut s: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = s.next_element::<Loose>()? {
                if let Loose::Str(id) = v {
                    out.push(id);
                }
            }
            Ok(Some(out))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            while m
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// One page of `/changes`, typed (an odd value in a change is skipped, never kept).
#[derive(Debug, Deserialize)]
pub(super) struct ChangesPage {
    #[serde(rename = "Changes")]
    pub changes: Vec<Change>,
    #[serde(rename = "Done", default)]
    pub done: Loose,
    #[serde(rename = "Last", default)]
    pub last: Loose,
}

#[derive(Debug, Deserialize)]
pub(super) struct Change {
    #[serde(rename = "ChangeType", default, deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(rename = "ResourceType", default, deserialize_with = "lenient")]
    pub resource: Option<String>,
    #[serde(rename = "ID", default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(rename = "Seq", default)]
    pub seq: Loose,
}

/// `GET /statistics`: the one count the deletion check reads (the other fields are skipped).
#[derive(Debug, Deserialize)]
pub(super) struct Statistics {
    #[serde(rename = "CountSeries", default)]
    pub series: Loose,
}

/// What one poll of `/changes` found.
#[derive(Debug, Default)]
pub struct ChangesPoll {
    /// Orthanc IDs of series that became stable (or new), in feed order, deduplicated.
    pub series: Vec<String>,
    /// Feed positions (Seq) of the NewSeries entries read: series created (and not deleted
    /// since, or their entries would be gone), whatever `on_new_series` says.
    pub created: Vec<i64>,
    pub last: i64,
    /// The feed said it was done: nothing after `last` when it was read.
    pub caught_up: bool,
    pub requests: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_indexed_plane_is_exactly_three_and_six_finite_decimals() {
        let tags = |p: &str, o: &str| FoundInstanceTags {
            sop: None,
            position: Some(p.into()),
            orientation: Some(o.into()),
        };
        let o = "1\\0\\0\\0\\1\\0";
        assert_eq!(
            tags(" -12.5\\+3\\1e1 ", o).plane(),
            Some(([-12.5, 3.0, 10.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        );
        for bad in [
            "1\\2",
            "1\\2\\3\\4",
            "1\\x\\3",
            "1\\NaN\\3",
            "1\\inf\\3",
            "",
            "1\\\\3",
        ] {
            assert_eq!(tags(bad, o).plane(), None, "{bad:?}");
        }
        assert_eq!(tags("0\\0\\0", "1\\0\\0\\0\\1").plane(), None);
        let none = FoundInstanceTags::default();
        assert_eq!(none.plane(), None);
    }

    #[test]
    fn an_image_is_read_from_its_short_tags_as_from_its_file() {
        // the shape Orthanc 1.10 answers (lower-case hex, sequences as arrays, pixels null)
        let answer = r#"{
            "0008,0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008,0018": "2.25.7", "0008,0060": "CT",
            "0008,1140": [{"0008,1155": "2.25.9"}],
            "0020,000d": "2.25.5", "0020,000e": "2.25.6",
            "0020,0032": "-10\\2.5\\30", "0020,0037": "1\\0\\0\\0\\1\\0",
            "0028,0010": "512", "0028,0011": "256", "7fe0,0010": null
        }"#;
        let t: ShortTags = serde_json::from_str(answer).unwrap();
        let i = t.image().unwrap();
        assert_eq!(
            (i.sop_instance.as_str(), i.series.as_str(), i.study.as_str()),
            ("2.25.7", "2.25.6", "2.25.5")
        );
        assert_eq!(i.modality, "CT");
        assert_eq!((i.geometry.rows, i.geometry.cols), (512, 256));
        assert_eq!(i.geometry.position, Some([-10.0, 2.5, 30.0]));
        assert_eq!(i.geometry.orientation, Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
        // upper-case hex is read too
        let upper = answer.replace("000d", "000D").replace("000e", "000E");
        let u: ShortTags = serde_json::from_str(&upper).unwrap();
        assert_eq!(format!("{:?}", u.image()), format!("{:?}", Some(&i)));

        let with = |key: &str, v: &str| {
            let mut j: serde_json::Value = serde_json::from_str(answer).unwrap();
            j[key] = serde_json::from_str(v).unwrap();
            serde_json::from_value::<ShortTags>(j).unwrap().image()
        };
        // a SEG, or an instance without a usable UID, is no image
        assert!(with("0008,0016", r#""1.2.840.10008.5.1.4.1.1.66.4""#).is_none());
        assert!(with("0008,0016", "null").is_none());
        for key in ["0008,0018", "0020,000d", "0020,000e"] {
            assert!(with(key, r#""2.25.x""#).is_none(), "{key}");
            assert!(with(key, "[]").is_none(), "{key}");
        }
        // a size that is no US value is 0 (not an image), an odd plane none: as from the file
        for bad in [r#""70000""#, r#""-1""#, r#""""#, "512", "null"] {
            assert_eq!(with("0028,0010", bad).unwrap().geometry.rows, 0, "{bad}");
        }
        assert_eq!(
            with("0020,0032", r#""1\\2""#).unwrap().geometry.position,
            None
        );
        assert_eq!(with("0020,0037", "[1]").unwrap().geometry.orientation, None);
        // padding around a value is dropped, as the file reader trims it
        let padded = with("0008,0018", r#"" 2.25.7 ""#).unwrap();
        assert_eq!(padded.sop_instance, "2.25.7");
        assert_eq!(with("0028,0011", r#"" 256 ""#).unwrap().geometry.cols, 256);
    }
}
