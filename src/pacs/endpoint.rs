//! Where a PACS request goes, built from parts: every path segment and query value is
//! percent-encoded here (by the `url` crate), never concatenated into a string. Together with
//! the grammar checks below (a UID, an Orthanc ID), nothing read from a file, a PACS answer or a
//! hook call can change which resource is asked for, nor add a parameter to a query.

/// A resource below a PACS root (DICOMweb or Orthanc REST), with its query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    segments: Vec<String>,
    query: Vec<(String, Option<String>)>,
}

impl Endpoint {
    /// The resource at these path segments (each one encoded as one segment: a `/` or `..` in
    /// a value stays inside it).
    pub fn at(segments: &[&str]) -> Endpoint {
        Endpoint {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
        }
    }

    /// Adds `key=value` to the query.
    pub fn query(mut self, key: &str, value: impl ToString) -> Endpoint {
        self.query.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// Adds a bare `key` (Orthanc's `/changes?last`).
    pub fn flag(mut self, key: &str) -> Endpoint {
        self.query.push((key.to_string(), None));
        self
    }

    /// Adds the pairs of an operator's query string (the dataset's image filter,
    /// `Modality=CT&BodyPartExamined=CHEST`), each pair decoded and encoded again.
    pub fn filter(mut self, q: &str) -> Endpoint {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            self.query.push((k.into_owned(), Some(v.into_owned())));
        }
        self
    }

    /// The full URL below `root`.
    pub fn below(&self, root: &url::Url) -> url::Url {
        let mut u = root.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            p.extend(&self.segments);
        }
        if !self.query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in &self.query {
                match v {
                    Some(v) => q.append_pair(k, v),
                    None => q.append_key_only(k),
                };
            }
        }
        u
    }
}

pub use crate::model::uid::is_uid;

/// Whether `id` is an Orthanc resource ID: SHA-1 as 40 lowercase hex digits in five groups of
/// eight joined by `-`.
pub fn is_orthanc_id(id: &str) -> bool {
    id.len() == 44
        && id.split('-').count() == 5
        && id.split('-').all(|g| {
            g.len() == 8
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn values_stay_inside_their_segment_and_parameter() {
        let r = root("http://pacs:8042/dicom-web/");
        let e = Endpoint::at(&["series"])
            .query("SeriesInstanceUID", "9.9.9&SeriesInstanceUID=2.25.1")
            .query("includefield", "00080060");
        assert_eq!(
            e.below(&r).as_str(),
            "http://pacs:8042/dicom-web/series?SeriesInstanceUID=9.9.9%26SeriesInstanceUID%3D2.25.1&includefield=00080060"
        );
        let u = Endpoint::at(&["series", "../tools/find"]).below(&root("http://o:8042"));
        assert_eq!(u.as_str(), "http://o:8042/series/..%2Ftools%2Ffind");
        let u = Endpoint::at(&["changes"])
            .flag("last")
            .below(&root("http://o"));
        assert_eq!(u.as_str(), "http://o/changes?last");
        let u = Endpoint::at(&["series"])
            .filter("Modality=CT&x=a%26b")
            .below(&root("http://o/dw"));
        assert_eq!(u.as_str(), "http://o/dw/series?Modality=CT&x=a%26b");
    }

    #[test]
    fn orthanc_ids() {
        let id = crate::source::orthanc::series_id("P", "1.2", "1.2.3");
        assert!(is_orthanc_id(&id));
        for bad in [
            "../tools/find",
            "x/../../instances?expand=1&",
            "%2e%2e/%2e%2e/changes",
            "",
            &id.to_uppercase(),
            &id.replace('-', "/"),
        ] {
            assert!(!is_orthanc_id(bad), "{bad}");
        }
    }

    #[test]
    fn uids() {
        assert!(is_uid("1.2.840.10008.5.1.4.1.1.66.4"));
        for bad in ["*", "2.25.1750*", "9.9.9,2.25.1", "1..2", ".1", "1.", ""] {
            assert!(!is_uid(bad), "{bad}");
        }
    }
}
