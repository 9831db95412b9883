//! Workspaces: `POST /orgs/{org}/workspaces` `{"name", "cloud_type", "cloud_specific_details"}`
//! → `{"id", ...}`. The cloud type and the names of its credential keys go together: `aws` has
//! `access_key` and `secret_key`, `azure` has `account_name` and `access_key`.

use serde::{Deserialize, Serialize};

use super::Extra;
use crate::util::Secret;

/// `{"name", "cloud_type": "aws"|"azure", "cloud_specific_details": {...}}`
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceSpec {
    pub name: String,
    #[serde(flatten)]
    pub cloud: Cloud,
}

/// `cloud_type` and its `cloud_specific_details`.
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "cloud_type",
    content = "cloud_specific_details",
    rename_all = "lowercase"
)]
pub enum Cloud {
    Aws(AwsDetails),
    Azure(AzureDetails),
}

#[derive(Debug, Clone, Serialize)]
pub struct AwsDetails {
    pub cloud_bucket_name: String,
    #[serde(with = "super::secret")]
    pub access_key: Secret,
    #[serde(with = "super::secret")]
    pub secret_key: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_region: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AzureDetails {
    pub cloud_bucket_name: String,
    pub account_name: String,
    #[serde(with = "super::secret")]
    pub access_key: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_region: Option<String>,
}

/// The create answer: `{"id", ...}` (the rest may echo what was sent; secrets are not echoed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cloud_type_names_its_credential_keys() {
        let aws = WorkspaceSpec {
            name: "w".into(),
            cloud: Cloud::Aws(AwsDetails {
                cloud_bucket_name: "b".into(),
                access_key: Secret::new("AK"),
                secret_key: Secret::new("SK"),
                cloud_region: Some("eu-west-1".into()),
            }),
        };
        assert_eq!(
            serde_json::to_value(&aws).unwrap(),
            json!({"name": "w", "cloud_type": "aws", "cloud_specific_details": {
                "cloud_bucket_name": "b", "access_key": "AK", "secret_key": "SK",
                "cloud_region": "eu-west-1"}})
        );
        let azure = WorkspaceSpec {
            name: "w".into(),
            cloud: Cloud::Azure(AzureDetails {
                cloud_bucket_name: "b".into(),
                account_name: "acct".into(),
                access_key: Secret::new("KEY"),
                cloud_region: None,
            }),
        };
        assert_eq!(
            serde_json::to_value(&azure).unwrap(),
            json!({"name": "w", "cloud_type": "azure", "cloud_specific_details": {
                "cloud_bucket_name": "b", "account_name": "acct", "access_key": "KEY"}})
        );
        assert!(!format!("{azure:?}").contains("KEY"), "a secret in Debug");
    }
}
