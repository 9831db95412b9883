//! `api dataset …` and `api workspace …`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::{call, env_secret, id_of, Out};
use crate::app::exit::Failure;
use crate::monai::Client;

#[derive(Subcommand, Debug)]
pub enum DatasetCmd {
    /// Create a DICOMweb dataset (password from env DICOMWEB_PASSWORD)
    Create {
        #[arg(long)]
        name: String,
        /// The DICOMweb root the server reads images and labels from
        #[arg(long)]
        dicomweb: String,
        #[arg(long)]
        dicomweb_user: Option<String>,
        /// QIDO query string selecting the dataset's images
        #[arg(long, default_value = "Modality=CT")]
        filters: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Dataset format ("monai"; some server versions name it "medical")
        #[arg(long, default_value = "monai")]
        format: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Create a workspace. aws: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; azure:
    /// AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (from the environment)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["aws", "azure"])]
        cloud: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        region: Option<String>,
    },
    Delete {
        id: String,
    },
}

pub(super) async fn dataset(c: &mut Client, out: &Out, cmd: DatasetCmd) -> Result<(), Failure> {
    match cmd {
        DatasetCmd::Create {
            name,
            dicomweb,
            dicomweb_user,
            filters,
            description,
            format,
        } => {
            let mut body = json!({"name": name, "description": description,
                "type": "semantic_segmentation", "format": format, "client_url": dicomweb,
                "filters": filters});
            if let Some(u) = dicomweb_user {
                body["client_id"] = json!(u);
                body["client_secret"] = json!(env_secret("DICOMWEB_PASSWORD")?);
            }
            let v = call(c, Method::POST, "/datasets", Some(body)).await?;
            out.show(&v, || format!("dataset {}", id_of(&v)))
        }
        DatasetCmd::Delete { id } => {
            call(c, Method::DELETE, &format!("/datasets/{id}"), None).await?;
            out.show(&json!({"deleted": id}), || format!("dataset {id} deleted"))
        }
    }
}

pub(super) async fn workspace(c: &mut Client, out: &Out, cmd: WorkspaceCmd) -> Result<(), Failure> {
    match cmd {
        WorkspaceCmd::Create {
            name,
            cloud,
            bucket,
            region,
        } => {
            let mut details = json!({"cloud_bucket_name": bucket});
            if cloud == "aws" {
                details["access_key"] = json!(env_secret("AWS_ACCESS_KEY_ID")?);
                details["secret_key"] = json!(env_secret("AWS_SECRET_ACCESS_KEY")?);
            } else {
                details["account_name"] = json!(env_secret("AZURE_STORAGE_ACCOUNT")?);
                details["access_key"] = json!(env_secret("AZURE_STORAGE_KEY")?);
            }
            if let Some(r) = region {
                details["cloud_region"] = json!(r);
            }
            let v = call(
                c,
                Method::POST,
                "/workspaces",
                Some(json!({"name": name, "cloud_type": cloud,
                "cloud_specific_details": details})),
            )
            .await?;
            // only the id: the answer may echo what was sent
            let id = id_of(&v);
            out.show(&json!({"id": id}), || format!("workspace {id}"))
        }
        WorkspaceCmd::Delete { id } => {
            call(c, Method::DELETE, &format!("/workspaces/{id}"), None).await?;
            out.show(&json!({"deleted": id}), || {
                format!("workspace {id} deleted")
            })
        }
    }
}
