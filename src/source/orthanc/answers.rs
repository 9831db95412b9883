//! Orthanc's JSON answers, typed: only the fields segbridge reads are kept, and an odd value
//! (a number where a string is expected, a huge array) is skipped while parsing, never held.

use serde::{Deserialize, Deserializer};

use crate::source::dicom_json::{string_or_none, Loose};

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
}
