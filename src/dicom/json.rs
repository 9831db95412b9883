//! DICOM JSON answers (QIDO-RS, WADO-RS metadata) read without building the whole answer as a
//! `serde_json::Value`, which costs about 25 times the answer's size (a 60 MB QIDO page took
//! 1.5 GB). A QIDO answer is parsed straight into [`QidoItem`]s, which keep the first value of
//! the few tags segbridge reads (everything else is skipped while parsing); a metadata answer is
//! split into its instances (borrowed slices of the body), each parsed, used and dropped before
//! the next, and each at most [`MAX_ITEM`] bytes. So the peak is the body (at most
//! [`MAX_JSON`]) plus one instance.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use serde::de::{Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::dicom::reader::{group_series, header_from_object, text, InstanceHeader, SegSeries};

/// Largest DICOM JSON answer read (a QIDO page, a series' metadata).
pub const MAX_JSON: usize = 32 * 1024 * 1024;
/// Largest single instance of a metadata answer.
pub const MAX_ITEM: usize = 4 * 1024 * 1024;

/// The first value of an attribute when it is a string or a number (trimmed; empty is none).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct First(pub Option<String>);

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<First, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = First;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of values")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<First, A::Error> {
                let first = seq.next_element::<Scalar>()?.and_then(|s| s.0);
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
            fn visit_unit<E>(self) -> Result<First, E> {
                Ok(First(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<First, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(First(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<First, E> {
                Ok(First(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<First, E> {
                Ok(First(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<First, E> {
                Ok(First(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<First, E> {
                Ok(First(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<First, E> {
                Ok(First(None))
            }
        }
        d.deserialize_any(Values)
    }
}

/// A string or a number as text; anything else (skipped without keeping it) is none.
struct Scalar(Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(s.trim().to_string()).filter(|s| !s.is_empty())))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(n.to_string())))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(n.to_string())))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(n.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Scalar, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Scalar, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON scalar as found, or `Other` for anything else (skipped without being kept: a
/// hostile server's 60 MB array in a field costs nothing).
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Loose {
    Str(String),
    Int(i64),
    Bool(bool),
    #[default]
    Other,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Loose, E> {
                Ok(Loose::Str(s.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Loose, E> {
                Ok(Loose::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Loose, E> {
                Ok(i64::try_from(n).map(Loose::Int).unwrap_or(Loose::Other))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Loose, E> {
                Ok(Loose::Bool(b))
            }
            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Loose, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Loose, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl Loose {
    pub fn str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Loose::Int(n) => Some(*n),
            _ => None,
        }
    }
    pub fn bool(&self) -> Option<bool> {
        match self {
            Loose::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// A string field, or none when the server sent anything else (one odd value must not fail a
/// whole answer, and is never kept).
pub fn string_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Loose::deserialize(d)? {
        Loose::Str(s) => Some(s),
        _ => None,
    })
}

/// One DICOM JSON attribute, keeping only its first value.
#[derive(Debug, Default, Deserialize)]
pub struct Attr {
    #[serde(rename = "Value", default)]
    pub value: First,
}

/// One QIDO-RS result with the attributes segbridge reads (serde needs the keys as literals:
/// StudyInstanceUID, SeriesInstanceUID, NumberOfSeriesRelatedInstances, Modality; a unit test
/// checks them against the dictionary).
#[derive(Debug, Default, Deserialize)]
pub struct QidoItem {
    #[serde(rename = "0020000D", default)]
    study: Option<Attr>,
    #[serde(rename = "0020000E", default)]
    series: Option<Attr>,
    #[serde(rename = "00201209", default)]
    instances: Option<Attr>,
    #[serde(rename = "00080060", default)]
    modality: Option<Attr>,
}

fn first(a: &Option<Attr>) -> Option<String> {
    a.as_ref().and_then(|a| a.value.0.clone())
}

impl QidoItem {
    pub fn study(&self) -> Option<String> {
        first(&self.study)
    }
    pub fn series(&self) -> Option<String> {
        first(&self.series)
    }
    pub fn modality(&self) -> Option<String> {
        first(&self.modality)
    }
    pub fn instances(&self) -> Option<i64> {
        first(&self.instances).and_then(|s| s.parse().ok())
    }
}

/// A QIDO-RS answer: a JSON array of results; an empty body (HTTP 204) is none.
pub fn qido_items(bytes: &[u8]) -> Result<Vec<QidoItem>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice::<Vec<QidoItem>>(bytes).map_err(|e| {
        if e.is_data() {
            format!("QIDO answer is not a JSON array of objects: {e}")
        } else {
            format!("not JSON: {e}")
        }
    })
}

/// Calls `f` with each element of a JSON array, parsed one at a time: the array is first split
/// into borrowed slices of `bytes` (16 bytes each), and an element over [`MAX_ITEM`] bytes is an
/// error.
pub fn each_item(
    bytes: &[u8],
    mut f: impl FnMut(usize, Value) -> Result<(), String>,
) -> Result<(), String> {
    let items: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            "metadata answer is not a JSON array".to_string()
        } else {
            format!("not JSON: {e}")
        }
    })?;
    for (i, raw) in items.into_iter().enumerate() {
        let text = raw.get();
        if text.len() > MAX_ITEM {
            return Err(format!(
                "metadata item {i} is {} bytes, more than {MAX_ITEM}",
                text.len()
            ));
        }
        let v: Value = serde_json::from_str(text).map_err(|e| format!("metadata item {i}: {e}"))?;
        f(i, v)?;
    }
    Ok(())
}

/// Parses a WADO-RS metadata answer (a JSON array of DICOM JSON instances) into SEG series.
/// Elements the parser cannot take (a PN of `[null]`, say) are dropped first: segbridge needs
/// UIDs, dates and sequences, never names.
/// The answer is parsed one instance at a time (see [`each_item`]).
pub fn segs_from_metadata(bytes: &[u8], location: &str) -> Result<Vec<SegSeries>, String> {
    let mut found = Vec::new();
    each_item(bytes, |i, mut item| {
        if !item.is_object() {
            return Err(format!("metadata item {i} is not a JSON object"));
        }
        sanitize(&mut item, 0);
        let sop_class = json_str(&item, tags::SOP_CLASS_UID).unwrap_or_default();
        let obj: dicom_object::InMemDicomObject =
            dicom_json::from_value(item).map_err(|e| format!("metadata item {i}: {e}"))?;
        let sop_class = if sop_class.is_empty() {
            text(&obj, dicom_dictionary_std::tags::SOP_CLASS_UID)
        } else {
            sop_class
        };
        match header_from_object(&obj, sop_class) {
            Ok(InstanceHeader::Seg(s)) => found.push((s, location.to_string())),
            Ok(InstanceHeader::Image(_)) => {}
            Err(e) => return Err(format!("metadata item {i}: {e}")),
        }
        Ok(())
    })?;
    Ok(group_series(found))
}

/// Removes DICOM JSON elements that cannot matter here and that the parser refuses: person
/// names and values holding nulls. Depth is bounded.
pub fn sanitize(v: &mut Value, depth: usize) {
    let Value::Object(m) = v else { return };
    if depth > 32 {
        m.clear();
        return;
    }
    m.retain(|_, el| {
        let vr = el
            .get("vr")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if vr == "PN" {
            return false;
        }
        match el.get_mut("Value") {
            Some(Value::Array(vals)) if vr == "SQ" => {
                vals.retain(|x| x.is_object());
                true
            }
            Some(Value::Array(vals)) => !vals.iter().any(Value::is_null),
            Some(_) => false,
            None => true,
        }
    });
    for el in m.values_mut() {
        if el.get("vr").and_then(Value::as_str) == Some("SQ") {
            if let Some(Value::Array(items)) = el.get_mut("Value") {
                for it in items {
                    sanitize(it, depth + 1);
                }
            }
        }
    }
}

/// The first string value of a tag in a DICOM JSON object.
/// The DICOM JSON key of a tag: eight upper-case hex digits, e.g. `0020000E`.
pub fn json_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// The first value of `tag` in a DICOM JSON object, as text.
pub fn json_str(obj: &Value, tag: Tag) -> Option<String> {
    let v = obj.get(json_key(tag))?.get("Value")?.get(0)?;
    match v {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn json_int(obj: &Value, tag: Tag) -> Option<i64> {
    let v = obj.get(json_key(tag))?.get("Value")?.get(0)?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qido_keys_are_the_dictionarys() {
        for (key, tag) in [
            ("0020000D", tags::STUDY_INSTANCE_UID),
            ("0020000E", tags::SERIES_INSTANCE_UID),
            ("00201209", tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
            ("00080060", tags::MODALITY),
        ] {
            assert_eq!(json_key(tag), key);
        }
    }
    use serde_json::json;

    fn seg_instance(series: &str, refd: &str) -> Value {
        json!({
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.66.4"]},
            "00080018": {"vr": "UI", "Value": [format!("{series}.1")]},
            "00100010": {"vr": "PN", "Value": [null]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "0020000E": {"vr": "UI", "Value": [series]},
            "00080023": {"vr": "DA", "Value": ["20240101"]},
            "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": [refd]}}]},
            "7FE00010": {"vr": "OB", "BulkDataURI": "http://x/bulk"}
        })
    }

    #[test]
    fn metadata_with_null_person_names_still_reads() {
        let segs = segs_from_metadata(
            json!([seg_instance("9.9", "1.1")]).to_string().as_bytes(),
            "loc",
        )
        .unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].first.referenced_series, vec!["1.1".to_string()]);
        assert_eq!(segs[0].first.sort_key.content, "20240101");
    }

    #[test]
    fn hostile_metadata_is_an_error_not_a_panic() {
        assert!(segs_from_metadata(br#"{"not": "an array"}"#, "loc").is_err());
        assert!(segs_from_metadata(b"[1, 2]", "loc").is_err());
        let mut wrong = seg_instance("9.9", "1.1");
        wrong["0020000E"] = json!({"vr": "UI", "Value": [12]});
        let _ = segs_from_metadata(json!([wrong]).to_string().as_bytes(), "loc");
        let missing =
            json!([{"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.66.4"]}}]);
        let e = segs_from_metadata(missing.to_string().as_bytes(), "loc").unwrap_err();
        assert!(e.contains("SOPInstanceUID"), "{e}");
    }

    #[test]
    fn deep_nesting_is_cut() {
        let mut v = json!({"0020000E": {"vr": "UI", "Value": ["x"]}});
        for _ in 0..200 {
            v = json!({"00081115": {"vr": "SQ", "Value": [v]}});
        }
        sanitize(&mut v, 0);
    }

    #[test]
    fn qido_answers_keep_first_values_only() {
        let items = qido_items(
            br#"[{"0020000D": {"vr": "UI", "Value": ["1.2", "x"]},
                  "0020000E": {"vr": "UI", "Value": [{"deep": [1, 2]}]},
                  "00201209": {"vr": "IS", "Value": [3]},
                  "00081030": {"vr": "LO", "Value": ["ignored"]}},
                 {"0020000E": {"vr": "UI"}}]"#,
        )
        .unwrap();
        assert_eq!(items[0].study().as_deref(), Some("1.2"));
        assert_eq!(items[0].series(), None);
        assert_eq!(items[0].instances(), Some(3));
        assert_eq!(items[1].series(), None);
        assert!(qido_items(b"").unwrap().is_empty());
        assert!(qido_items(br#"{"a": 1}"#).is_err());
    }

    #[test]
    fn metadata_items_over_the_cap_are_refused() {
        let big = format!(r#"[{{"x": "{}"}}]"#, "a".repeat(MAX_ITEM));
        let e = each_item(big.as_bytes(), |_, _| Ok(())).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
