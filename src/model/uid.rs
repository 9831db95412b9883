//! The DICOM UID grammar: every UID read from a file or a PACS answer is checked with it before
//! it is used anywhere (a URL, the ledger, a notify body).

/// Why a string is not a DICOM UID (at most 64 characters; components of digits separated by
/// single dots), if it is not.
pub fn uid_problem(v: &str) -> Option<String> {
    if v.is_empty() {
        return Some("empty".into());
    }
    if v.len() > 64 {
        return Some(format!("{} characters, at most 64", v.len()));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
        return Some(format!("character {c:?}"));
    }
    if v.split('.').any(str::is_empty) {
        return Some("an empty component".into());
    }
    None
}

/// Whether a string is a DICOM UID (see [`uid_problem`]).
pub fn is_uid(v: &str) -> bool {
    uid_problem(v).is_none()
}
