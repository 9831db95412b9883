//! The dataset's image filter where segbridge can apply it itself.

/// The dataset's image filter as a folder can apply it: the folder knows each image series'
/// Modality from its headers, so `Modality=CT` (or a QIDO list, `Modality=CT,MR`) is understood;
/// any other attribute is refused when the settings are read, never silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModalityFilter {
    query: String,
    allowed: Vec<String>,
}

impl ModalityFilter {
    /// Parses a QIDO-style filter; `Err` names what a folder cannot apply.
    pub fn parse(query: &str) -> Result<ModalityFilter, String> {
        let mut allowed = Vec::new();
        for part in query.split('&').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("image filter {query:?}: {part:?} is not KEY=VALUE"));
            };
            let key = key.trim();
            if !(key.eq_ignore_ascii_case("Modality")
                || key == crate::dicom::json::json_key(dicom_dictionary_std::tags::MODALITY))
            {
                return Err(format!(
                    "image filter {query:?}: a folder source can filter only on Modality, not {key}"
                ));
            }
            allowed.extend(
                value
                    .split(',')
                    .map(|v| v.trim().to_ascii_uppercase())
                    .filter(|v| !v.is_empty()),
            );
        }
        if allowed.is_empty() {
            return Err(format!("image filter {query:?}: no Modality value"));
        }
        Ok(ModalityFilter {
            query: query.to_string(),
            allowed,
        })
    }

    /// The filter when the PACS's own matching would give the same answer as comparing the
    /// series' Modality here: plain values, no wildcard. Sources then check the Modality they
    /// already have instead of asking the server again.
    pub fn local(query: &str) -> Option<ModalityFilter> {
        if query.contains(['*', '?', '\\']) {
            return None;
        }
        ModalityFilter::parse(query).ok()
    }

    /// Whether a series of `modality` passes.
    pub fn allows(&self, modality: &str) -> bool {
        self.allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(modality))
    }

    /// The filter as it was given.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Marks the index's image series whose modality the filter does not allow.
    pub fn apply(&self, index: &mut crate::dicom::ImageIndex) {
        let out: Vec<String> = index
            .series_modalities()
            .into_iter()
            .filter(|(_, m)| !self.allows(m))
            .map(|(s, _)| s.to_string())
            .collect();
        for s in out {
            index.exclude(&s, self.query.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ModalityFilter;

    #[test]
    fn a_folder_understands_modality_and_refuses_the_rest() {
        let f = ModalityFilter::parse("Modality=ct,MR").unwrap();
        assert_eq!(f.allowed, vec!["CT", "MR"]);
        assert!(f.allows("ct") && f.allows("MR") && !f.allows("SEG"));
        assert!(ModalityFilter::parse("00080060=CT").is_ok());
        let e = ModalityFilter::parse("StudyDescription=abdomen").unwrap_err();
        assert!(e.contains("only on Modality"), "{e}");
        assert!(ModalityFilter::parse("Modality=").is_err());
        assert!(ModalityFilter::parse("CT").is_err());
        // what a PACS would match otherwise (a wildcard) is left to the PACS
        assert!(ModalityFilter::local("Modality=C*").is_none());
        assert!(ModalityFilter::local("StudyDescription=abdomen").is_none());
        assert!(ModalityFilter::local("Modality=CT").is_some());
    }
}
