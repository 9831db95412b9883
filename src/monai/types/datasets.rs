//! Datasets: the create body (the one place it is built, for the command line, the demo and
//! the emulator), the create answer, and the dataset jobs the workflow sends besides notify
//! (`nextimage` and its answer).

use serde::{Deserialize, Serialize};

use super::Extra;
use crate::util::Secret;

/// The QIDO-RS query a dataset selects its image series with when none is given.
pub const DEFAULT_FILTERS: &str = "Modality=CT";

/// `POST /orgs/{org}/datasets` for a DICOMweb dataset: `{"name", "description", "type",
/// "format", "client_url", "client_id", "client_secret", "filters"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `semantic_segmentation` ([`DatasetSpec::SEMANTIC_SEGMENTATION`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// `monai` (some server versions name it `medical`).
    pub format: String,
    /// The DICOMweb root the server reads images and labels from.
    pub client_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::opt_secret"
    )]
    pub client_secret: Option<Secret>,
    /// The QIDO-RS query string selecting the dataset's image series (the server's default is
    /// [`DEFAULT_FILTERS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<String>,
}

impl DatasetSpec {
    pub const SEMANTIC_SEGMENTATION: &'static str = "semantic_segmentation";
    pub const FORMAT: &'static str = "monai";

    /// A segmentation dataset read from `client_url`, the contract's defaults otherwise: no
    /// description, format `monai`, filters [`DEFAULT_FILTERS`], no credentials.
    pub fn dicomweb(name: &str, client_url: &str) -> DatasetSpec {
        DatasetSpec {
            name: name.to_string(),
            description: String::new(),
            kind: Self::SEMANTIC_SEGMENTATION.into(),
            format: Self::FORMAT.into(),
            client_url: client_url.to_string(),
            client_id: None,
            client_secret: None,
            filters: Some(DEFAULT_FILTERS.into()),
        }
    }

    /// The DICOMweb server's basic-auth user and password.
    pub fn with_credentials(mut self, user: &str, password: Secret) -> DatasetSpec {
        self.client_id = Some(user.to_string());
        self.client_secret = Some(password);
        self
    }

    /// The filters the server applies: the given ones, or [`DEFAULT_FILTERS`].
    pub fn filters_or_default(&self) -> &str {
        self.filters
            .as_deref()
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FILTERS)
    }
}

/// The keys of a dataset's `filters` that the server reads as QIDO-RS options (compared
/// case-insensitively); every other key is a search filter.
pub const QIDO_OPTIONS: [&str; 4] = ["includefield", "limit", "offset", "fuzzymatching"];

/// A query string's `(key, value)` pairs, decoded, in order.
pub type QueryPairs = Vec<(String, String)>;

/// How the server reads a dataset's `filters`: `(QIDO options, search filters)`, each pair
/// decoded, in the order given. The image series are listed with both; the SEG series with the
/// search filters only (and `Modality=SEG`).
pub fn split_filters(filters: &str) -> (QueryPairs, QueryPairs) {
    url::form_urlencoded::parse(filters.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| !k.is_empty())
        .partition(|(k, _)| QIDO_OPTIONS.iter().any(|o| k.eq_ignore_ascii_case(o)))
}

/// The create answer: `{"id", ...}` (the rest echoes the dataset, without its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    pub id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /orgs/{org}/datasets/{id}/jobs` besides notify ([`super::NotifyBody`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "specs", rename_all = "lowercase")]
pub enum DatasetJob {
    /// `{"action": "nextimage"}`: a random unlabeled image series.
    NextImage,
}

/// The `nextimage` answer: `{"image": IMAGE_ID, "meta": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextImage {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ImageMeta>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What the server tells of the image (it writes `"UNK"` for what the PACS did not say).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageMeta {
    #[serde(
        rename = "SeriesInstanceUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub series_instance_uid: Option<String>,
    #[serde(
        rename = "StudyInstanceUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub study_instance_uid: Option<String>,
    #[serde(rename = "StudyDate", default, skip_serializing_if = "Option::is_none")]
    pub study_date: Option<String>,
    #[serde(rename = "StudyTime", default, skip_serializing_if = "Option::is_none")]
    pub study_time: Option<String>,
    #[serde(rename = "Modality", default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    #[serde(rename = "PatientID", default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(
        rename = "RetrieveURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retrieve_url: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_dataset_body_is_the_contracts() {
        let spec = DatasetSpec::dicomweb("d", "http://pacs/dicom-web")
            .with_credentials("orthanc", Secret::new("pw"));
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"name": "d", "description": "", "type": "semantic_segmentation",
                "format": "monai", "client_url": "http://pacs/dicom-web", "client_id": "orthanc",
                "client_secret": "pw", "filters": "Modality=CT"})
        );
        assert!(!format!("{spec:?}").contains("pw"), "a secret in Debug");
        // what the server reads back, the minimal body included
        let back: DatasetSpec =
            serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let min: DatasetSpec = serde_json::from_value(json!({"name": "t",
            "type": "semantic_segmentation", "format": "monai", "client_url": "u", "x": 1}))
        .unwrap();
        assert_eq!(min.filters_or_default(), "Modality=CT");
        assert_eq!((min.description.as_str(), &min.client_secret), ("", &None));
    }

    #[test]
    fn filters_split_into_qido_options_and_search_filters() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let (options, search) = split_filters(
            "Modality=CT&limit=5&StudyDescription=Liver%2A&IncludeField=00080020&offset=2&fuzzymatching=true&=x",
        );
        assert_eq!(
            options,
            vec![
                pair("limit", "5"),
                pair("IncludeField", "00080020"),
                pair("offset", "2"),
                pair("fuzzymatching", "true")
            ]
        );
        assert_eq!(
            search,
            vec![pair("Modality", "CT"), pair("StudyDescription", "Liver*")]
        );
        let (options, search) = split_filters(DEFAULT_FILTERS);
        assert!(options.is_empty());
        assert_eq!(search, vec![pair("Modality", "CT")]);
    }

    #[test]
    fn nextimage_is_an_action_without_specs() {
        assert_eq!(
            serde_json::to_value(DatasetJob::NextImage).unwrap(),
            json!({"action": "nextimage"})
        );
    }

    #[test]
    fn next_image_answers_read_with_missing_and_extra_fields() {
        let a: NextImage = serde_json::from_value(json!({"image": "1.2", "cached": true,
            "meta": {"SeriesInstanceUID": "1.2", "Modality": "CT", "Laterality": "L"}}))
        .unwrap();
        let m = a.meta.as_ref().unwrap();
        assert_eq!(m.modality.as_deref(), Some("CT"));
        assert_eq!(m.patient_id, None);
        // written back as it came
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"image": "1.2", "cached": true,
                "meta": {"SeriesInstanceUID": "1.2", "Modality": "CT", "Laterality": "L"}})
        );
        let bare: NextImage = serde_json::from_value(json!({"image": "1.3"})).unwrap();
        assert!(bare.meta.is_none());
    }
}
