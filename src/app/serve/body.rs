//! Hook bodies: what each endpoint accepts, checked before anything is done with it. Orthanc IDs
//! and UIDs must match their grammar: they become parts of PACS requests (made with the PACS
//! credentials).

use serde::{Deserialize, Serialize};

use crate::source::endpoint::{is_orthanc_id, is_uid};

/// Which hook a call came in on (its endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `OnStableSeries` (and the generic `/hooks/series` webhook, which shares its body).
    StableSeries,
    /// `OnDeletedSeries`.
    DeletedSeries,
    /// `OnStoredInstance`, SEG instances only.
    StoredInstance,
}

impl HookKind {
    pub const ALL: [HookKind; 3] = [
        HookKind::StableSeries,
        HookKind::DeletedSeries,
        HookKind::StoredInstance,
    ];
}

/// What a hook call asks for, queued for the background worker (with a shared ledger, through
/// the database: its JSON form is what the `hook_events` table holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum HookEvent {
    /// A series became stable in Orthanc (its Orthanc ID).
    OrthancStable { id: String },
    /// A series was deleted in Orthanc (its Orthanc ID).
    OrthancDeleted { id: String },
    /// A SEG instance was stored in Orthanc: its Orthanc ID, its series' Orthanc ID when the
    /// script could tell, and the SeriesInstanceUID (for the log).
    OrthancStored {
        instance: String,
        series: Option<String>,
        uid: Option<String>,
    },
    /// A generic webhook: a series was stored (by SeriesInstanceUID).
    SeriesStored { uid: String, study: Option<String> },
}

impl HookEvent {
    /// Whether its IDs and UIDs are well-formed, as a hook call's are checked: an event read
    /// back from the shared ledger is checked again before it is acted on.
    pub fn is_valid(&self) -> bool {
        let opt = |v: &Option<String>, f: fn(&str) -> bool| v.as_deref().is_none_or(f);
        match self {
            HookEvent::OrthancStable { id } | HookEvent::OrthancDeleted { id } => is_orthanc_id(id),
            HookEvent::OrthancStored {
                instance,
                series,
                uid,
            } => is_orthanc_id(instance) && opt(series, is_orthanc_id) && opt(uid, is_uid),
            HookEvent::SeriesStored { uid, study } => is_uid(uid) && opt(study, is_uid),
        }
    }
}

/// The body the shipped Lua script's `OnStableSeries` sends (Orthanc ID plus main tags), or a
/// generic webhook's; `OnDeletedSeries` sends `id` alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookBody {
    pub id: Option<String>,
    pub modality: Option<String>,
    pub uid: Option<String>,
    pub series_uid: Option<String>,
    pub study_uid: Option<String>,
}

/// The body the shipped Lua script's `OnStoredInstance` sends: the instance's Orthanc ID, its
/// series' Orthanc ID (when Orthanc's `RestApiGet` answered), its SeriesInstanceUID and
/// Modality.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBody {
    pub id: Option<String>,
    pub series: Option<String>,
    pub uid: Option<String>,
    pub modality: Option<String>,
}

/// A hook body as an event, `None` for a call to ignore (not a SEG), or why it is refused (400,
/// the reason is shown to the caller).
pub fn parse_hook(body: &[u8], kind: HookKind) -> Result<Option<HookEvent>, String> {
    match kind {
        HookKind::StoredInstance => parse_stored(body),
        HookKind::DeletedSeries | HookKind::StableSeries => {
            parse_series(body, kind == HookKind::DeletedSeries)
        }
    }
}

fn malformed(e: serde_json::Error) -> String {
    format!("malformed JSON: {e}")
}

fn orthanc_id(id: Option<String>, field: &str, what: &str) -> Result<String, String> {
    match id {
        Some(id) if is_orthanc_id(&id) => Ok(id),
        Some(_) => Err(format!(
            "\"{field}\" is not an Orthanc {what} ID (40 hex digits in five groups of 8)"
        )),
        None => Err(format!("\"{field}\" (the Orthanc {what} ID) is required")),
    }
}

fn is_seg(modality: Option<&str>) -> bool {
    // absent: the series is read and its modality checked there
    modality.is_none_or(|m| m.eq_ignore_ascii_case("SEG"))
}

fn parse_series(body: &[u8], deleted: bool) -> Result<Option<HookEvent>, String> {
    let b: HookBody = serde_json::from_slice(body).map_err(malformed)?;
    if deleted {
        let id = orthanc_id(b.id, "id", "series")?;
        return Ok(Some(HookEvent::OrthancDeleted { id }));
    }
    if let Some(uid) = b.series_uid {
        if !is_uid(&uid) {
            return Err("\"series_uid\" is not a DICOM UID".into());
        }
        if b.study_uid.as_deref().is_some_and(|s| !is_uid(s)) {
            return Err("\"study_uid\" is not a DICOM UID".into());
        }
        return Ok(Some(HookEvent::SeriesStored {
            uid,
            study: b.study_uid,
        }));
    }
    let id = b
        .id
        .ok_or_else(|| "\"id\" (the Orthanc series ID) or \"series_uid\" is required".to_string());
    let id = orthanc_id(Some(id?), "id", "series")?;
    if !is_seg(b.modality.as_deref()) {
        return Ok(None); // not a label: ignored cheaply
    }
    Ok(Some(HookEvent::OrthancStable { id }))
}

fn parse_stored(body: &[u8]) -> Result<Option<HookEvent>, String> {
    let b: StoredBody = serde_json::from_slice(body).map_err(malformed)?;
    let instance = orthanc_id(b.id, "id", "instance")?;
    let series = match b.series {
        Some(s) => Some(orthanc_id(Some(s), "series", "series")?),
        None => None,
    };
    if b.uid.as_deref().is_some_and(|u| !is_uid(u)) {
        return Err("\"uid\" is not a DICOM UID (the SeriesInstanceUID)".into());
    }
    if !is_seg(b.modality.as_deref()) {
        return Ok(None);
    }
    Ok(Some(HookEvent::OrthancStored {
        instance,
        series,
        uid: b.uid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use HookKind::*;

    #[test]
    fn series_hook_bodies() {
        let id = crate::source::orthanc::series_id("P", "1.2", "1.2.3");
        let body = |s: &str| s.replace("ID", &id).into_bytes();
        assert_eq!(
            parse_hook(
                &body(r#"{"id": "ID", "modality": "SEG", "uid": "1.2"}"#),
                StableSeries
            )
            .unwrap(),
            Some(HookEvent::OrthancStable { id: id.clone() })
        );
        assert_eq!(
            parse_hook(&body(r#"{"id": "ID", "modality": "CT"}"#), StableSeries).unwrap(),
            None
        );
        assert_eq!(
            parse_hook(br#"{"series_uid": "1.2.3"}"#, StableSeries).unwrap(),
            Some(HookEvent::SeriesStored {
                uid: "1.2.3".into(),
                study: None
            })
        );
        assert_eq!(
            parse_hook(&body(r#"{"id": "ID"}"#), DeletedSeries).unwrap(),
            Some(HookEvent::OrthancDeleted { id: id.clone() })
        );
    }

    #[test]
    fn stored_instance_bodies() {
        let inst = crate::source::orthanc::series_id("P", "1.2", "1.2.3.4");
        let series = crate::source::orthanc::series_id("P", "1.2", "1.2.3");
        let body = |s: &str| {
            s.replace("INST", &inst)
                .replace("SER", &series)
                .into_bytes()
        };
        assert_eq!(
            parse_hook(
                &body(r#"{"id": "INST", "series": "SER", "uid": "1.2.3", "modality": "SEG"}"#),
                StoredInstance
            )
            .unwrap(),
            Some(HookEvent::OrthancStored {
                instance: inst.clone(),
                series: Some(series.clone()),
                uid: Some("1.2.3".into())
            })
        );
        // the series' ID is optional: segbridge asks Orthanc for the instance's parent
        assert_eq!(
            parse_hook(&body(r#"{"id": "INST"}"#), StoredInstance).unwrap(),
            Some(HookEvent::OrthancStored {
                instance: inst.clone(),
                series: None,
                uid: None
            })
        );
        assert_eq!(
            parse_hook(&body(r#"{"id": "INST", "modality": "CT"}"#), StoredInstance).unwrap(),
            None
        );
        for (bad, why) in [
            (
                r#"{"series": "SER"}"#,
                "\"id\" (the Orthanc instance ID) is required",
            ),
            (
                r#"{"id": "INST", "series": "../tools/find"}"#,
                "\"series\" is not",
            ),
            (r#"{"id": "1.2.3"}"#, "\"id\" is not an Orthanc instance ID"),
            (
                r#"{"id": "INST", "uid": "1.2; DROP"}"#,
                "\"uid\" is not a DICOM UID",
            ),
            (r#"{"id": "INST", "study_uid": "1.2"}"#, "unknown field"),
            (r#"{"id": "INST", "series": 7}"#, "malformed JSON"),
        ] {
            let err = parse_hook(&body(bad), StoredInstance).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn hostile_bodies_are_refused_by_every_hook() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"null",
            br#"{"id": 5}"#,
            br#"{"evil": 1}"#,
            br#"{"series_uid": "1.2; DROP"}"#,
            br#"{}"#,
            br#"{"id": "../tools/find"}"#,
            br#"{"id": "x/../../instances?expand=1&"}"#,
            br#"{"id": "%2e%2e/%2e%2e/changes"}"#,
            br#"{"series_uid": "1.2", "study_uid": "../../../tools/reset?x="}"#,
        ] {
            for kind in HookKind::ALL {
                assert!(
                    parse_hook(bad, kind).is_err(),
                    "{kind:?}: {}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        let long = format!(r#"{{"id": "{}"}}"#, "a".repeat(500));
        for kind in HookKind::ALL {
            assert!(parse_hook(long.as_bytes(), kind).is_err());
        }
    }
}
