//! `api dataset …` and `api workspace …`.

use clap::Subcommand;
use serde_json::json;

use super::{env_secret, env_var, Out};
use crate::app::exit::Failure;
use crate::monai::{
    AwsDetails, AzureDetails, Client, Cloud, DatasetSpec, Resource, WorkspaceSpec, DEFAULT_FILTERS,
};

#[derive(Subcommand, Debug)]
pub enum DatasetCmd {
    /// Create a DICOMweb dataset (password from env DICOMWEB_PASSWORD)
    Create {
        /// Dataset name
        #[arg(long)]
        name: String,
        /// The DICOMweb root the server reads images and labels from
        #[arg(long)]
        dicomweb: String,
        /// Basic-auth user the server reads the DICOMweb root as (password from env
        /// DICOMWEB_PASSWORD)
        #[arg(long)]
        dicomweb_user: Option<String>,
        /// QIDO query string selecting the dataset's images
        #[arg(long, default_value = DEFAULT_FILTERS)]
        filters: String,
        /// Free text
        #[arg(long, default_value = "")]
        description: String,
        /// Dataset format ("monai"; some server versions name it "medical")
        #[arg(long, default_value = DatasetSpec::FORMAT)]
        format: String,
    },
    /// Delete a dataset
    Delete {
        /// Dataset ID
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Create a workspace. aws: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; azure:
    /// AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (from the environment)
    Create {
        /// Workspace name
        #[arg(long)]
        name: String,
        /// The cloud of the bucket
        #[arg(long, value_parser = ["aws", "azure"])]
        cloud: String,
        /// The bucket (aws) or container (azure) results go to
        #[arg(long)]
        bucket: String,
        /// The bucket's region
        #[arg(long)]
        region: Option<String>,
    },
    /// Delete a workspace
    Delete {
        /// Workspace ID
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
            let mut spec = DatasetSpec {
                description,
                format,
                filters: Some(filters),
                ..DatasetSpec::dicomweb(&name, &dicomweb)
            };
            if let Some(u) = dicomweb_user {
                spec = spec.with_credentials(&u, env_secret("DICOMWEB_PASSWORD")?);
            }
            let d = c.create_dataset(&spec).await?;
            out.show(&d, || format!("dataset {}", d.id))
        }
        DatasetCmd::Delete { id } => {
            c.delete(Resource::Dataset, &id).await?;
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
            let cloud = if cloud == "aws" {
                Cloud::Aws(AwsDetails {
                    cloud_bucket_name: bucket,
                    access_key: env_secret("AWS_ACCESS_KEY_ID")?,
                    secret_key: env_secret("AWS_SECRET_ACCESS_KEY")?,
                    cloud_region: region,
                })
            } else {
                Cloud::Azure(AzureDetails {
                    cloud_bucket_name: bucket,
                    account_name: env_var("AZURE_STORAGE_ACCOUNT")?,
                    access_key: env_secret("AZURE_STORAGE_KEY")?,
                    cloud_region: region,
                })
            };
            let w = c.create_workspace(&WorkspaceSpec { name, cloud }).await?;
            // the answer as any create's; the credentials it may echo are never shown
            out.show(&w, || format!("workspace {}", w.id))
        }
        WorkspaceCmd::Delete { id } => {
            c.delete(Resource::Workspace, &id).await?;
            out.show(&json!({"deleted": id}), || {
                format!("workspace {id} deleted")
            })
        }
    }
}
