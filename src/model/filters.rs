//! A dataset's `filters` as the MONAI service reads them: a QIDO-RS query string whose keys
//! `includefield`, `limit`, `offset` and `fuzzymatching` are QIDO options and every other key a
//! search filter; no filters at all means `Modality=CT`. The service lists the dataset's image
//! series with the search filters, and its SEG series with the SAME search filters and
//! `Modality=SEG`: a SEG that a filter on another attribute (say `StudyDescription=Kidney*`)
//! leaves out is never seen by the service, so never trained on.

/// What a dataset selects its image series with when it names no filters.
pub const DEFAULT_FILTERS: &str = "Modality=CT";

/// The keys the service passes to QIDO-RS as options, not as search filters.
pub const QIDO_OPTIONS: [&str; 4] = ["includefield", "limit", "offset", "fuzzymatching"];

/// One `key=value` of the query string: decoded for comparing, as written for sending on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    key: String,
    value: String,
    raw: String,
}

/// A dataset's filters split as the service splits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFilters {
    search: Vec<Pair>,
    options: Vec<Pair>,
}

/// Whether `key` names the Modality attribute (by keyword or by tag).
fn is_modality(key: &str) -> bool {
    key.eq_ignore_ascii_case("Modality") || key == "00080060"
}

impl DatasetFilters {
    /// Splits a query string; a blank one is [`DEFAULT_FILTERS`]. A part without `=` is a key
    /// with an empty value, as a query string parser reads it.
    pub fn parse(filters: &str) -> DatasetFilters {
        let text = if filters.trim().is_empty() {
            DEFAULT_FILTERS
        } else {
            filters
        };
        let mut out = DatasetFilters {
            search: vec![],
            options: vec![],
        };
        for raw in text.split('&').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = url::form_urlencoded::parse(raw.as_bytes()).next() else {
                continue;
            };
            let pair = Pair {
                key: key.trim().to_string(),
                value: value.into_owned(),
                raw: raw.to_string(),
            };
            if QIDO_OPTIONS
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&pair.key))
            {
                out.options.push(pair);
            } else {
                out.search.push(pair);
            }
        }
        out
    }

    /// [`DatasetFilters::parse`] of the dataset's `filters`, absent or not.
    pub fn of(filters: Option<&str>) -> DatasetFilters {
        DatasetFilters::parse(filters.unwrap_or(""))
    }

    /// The search filters as `(key, value)`, decoded.
    pub fn search(&self) -> Vec<(&str, &str)> {
        self.search
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    /// The QIDO options the filters carried (the service sends them; segbridge does not need
    /// them to decide what the service sees).
    pub fn options(&self) -> Vec<(&str, &str)> {
        self.options
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    /// The image series' query: the search filters as written, joined by `&`; `None` when
    /// there are none (every series).
    pub fn image_query(&self) -> Option<String> {
        join(self.search.iter())
    }

    /// What a SEG series must match besides `Modality=SEG`: the search filters other than
    /// Modality, as written; `None` when there are none (every SEG series is seen).
    pub fn seg_query(&self) -> Option<String> {
        join(self.search.iter().filter(|p| !is_modality(&p.key)))
    }

    /// The filters that only name Modality, as written (what a folder can check itself).
    pub fn modality_query(&self) -> Option<String> {
        join(self.search.iter().filter(|p| is_modality(&p.key)))
    }

    /// Whether two filters select the same series: the same search filters, in any order.
    pub fn same_search(&self, other: &DatasetFilters) -> bool {
        let sorted = |f: &DatasetFilters| {
            let mut v: Vec<(String, String)> = f
                .search
                .iter()
                .map(|p| (p.key.to_ascii_lowercase(), p.value.clone()))
                .collect();
            v.sort();
            v
        };
        sorted(self) == sorted(other)
    }
}

fn join<'a>(pairs: impl Iterator<Item = &'a Pair>) -> Option<String> {
    let v: Vec<&str> = pairs.map(|p| p.raw.as_str()).collect();
    (!v.is_empty()).then(|| v.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_not_search_filters_and_no_filters_mean_modality_ct() {
        let f = DatasetFilters::parse(
            "Modality=CT&StudyDescription=Kidney*&limit=10&offset=5&includefield=all&\
             fuzzymatching=true",
        );
        assert_eq!(
            f.search(),
            vec![("Modality", "CT"), ("StudyDescription", "Kidney*")]
        );
        assert_eq!(
            f.options(),
            vec![
                ("limit", "10"),
                ("offset", "5"),
                ("includefield", "all"),
                ("fuzzymatching", "true")
            ]
        );
        assert_eq!(
            f.image_query().as_deref(),
            Some("Modality=CT&StudyDescription=Kidney*")
        );
        // SEG series: the same search filters, Modality replaced by SEG
        assert_eq!(f.seg_query().as_deref(), Some("StudyDescription=Kidney*"));
        assert_eq!(f.modality_query().as_deref(), Some("Modality=CT"));
        for none in [None, Some(""), Some("  ")] {
            let d = DatasetFilters::of(none);
            assert_eq!(d.search(), vec![("Modality", "CT")], "{none:?}");
            assert_eq!(d.seg_query(), None);
        }
        // options alone select every series; a Modality filter alone hides no SEG
        assert_eq!(DatasetFilters::parse("limit=5").image_query(), None);
        assert_eq!(DatasetFilters::parse("00080060=MR").seg_query(), None);
    }

    #[test]
    fn values_are_decoded_for_comparing_and_kept_as_written_for_sending() {
        let f = DatasetFilters::parse("StudyDescription=Kidney%20CT&Modality=CT");
        assert_eq!(f.search()[0], ("StudyDescription", "Kidney CT"));
        assert_eq!(
            f.seg_query().as_deref(),
            Some("StudyDescription=Kidney%20CT")
        );
        let g = DatasetFilters::parse("Modality=CT&StudyDescription=Kidney+CT&limit=3");
        assert!(f.same_search(&g));
        assert!(!f.same_search(&DatasetFilters::parse("Modality=CT")));
        assert!(DatasetFilters::parse("").same_search(&DatasetFilters::parse("Modality=CT")));
    }
}
