//! `api notify`: the guide's manual "Notify Server" cell, one entry, through the same client as
//! the bridge, journalled in the ledger (marked by hand). It never changes what segbridge
//! believes the dataset holds, nor its outbox: README, "A notify by hand", says why.

use clap::Args;
use serde_json::json;
use tracing::warn;

use super::Out;
use crate::app::exit::{self, Failure};
use crate::app::pipeline::{self, DeliveryError};
use crate::app::settings::{ConfigError, DatasetLayer, Settings, StateLayer, WriterLayer};
use crate::ledger::Ledger;
use crate::model::uid::uid_problem;
use crate::model::{Change, Section};
use crate::monai::Client;

#[derive(Args, Debug)]
pub struct NotifyArgs {
    /// The image series: its SeriesInstanceUID
    #[arg(long)]
    pub image: String,
    /// The label, a SEG series: its SeriesInstanceUID
    #[arg(long)]
    pub label: String,
    /// Send it as `updated` (the new label of an image that had one) instead of `added`
    #[arg(long, conflicts_with = "removed")]
    pub updated: bool,
    /// Send it as `removed` (the label is gone)
    #[arg(long)]
    pub removed: bool,
    #[command(flatten)]
    pub dataset: DatasetLayer,
    #[command(flatten)]
    pub state: StateLayer,
    #[command(flatten)]
    pub writer: WriterLayer,
}

impl NotifyArgs {
    fn change(&self) -> Result<Change, ConfigError> {
        for (flag, v) in [("--image", &self.image), ("--label", &self.label)] {
            if let Some(why) = uid_problem(v) {
                return Err(ConfigError(format!(
                    "{flag} {v:?}: not a series UID ({why})"
                )));
            }
        }
        let section = if self.updated {
            Section::Updated
        } else if self.removed {
            Section::Removed
        } else {
            Section::Added
        };
        Ok(Change::new(section, &self.image, &self.label))
    }
}

pub(super) async fn notify(
    c: &mut Client,
    s: &Settings,
    out: &Out,
    a: NotifyArgs,
) -> Result<(), Failure> {
    let dataset = s.require_dataset()?;
    let change = a.change()?;
    // before the call: a state file in use fails here (exit 4), and nothing is sent
    let mut ledger = Ledger::open(&s.state, s.lock_wait)?;
    let told = ledger.told_label(dataset, &change.image)?;
    let body = match pipeline::notify_by_hand(&mut ledger, c, dataset, &change).await {
        Ok(b) => b,
        Err(DeliveryError::Ledger(e)) => {
            return Err(Failure {
                code: exit::STATE,
                error: anyhow::anyhow!(
                    "{e}; the API accepted the notify, but it could not be journalled"
                ),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let contradicts = match change.section {
        Section::Removed => told.as_deref() == Some(change.label.as_str()),
        Section::Added | Section::Updated => told.as_deref() != Some(change.label.as_str()),
    };
    if contradicts {
        warn!(
            "segbridge's ledger still holds that dataset {dataset} was told {} for image {} (a \
             notify by hand does not change it): segbridge sends its next change of this image \
             from there",
            told.as_deref()
                .map_or("no label".to_string(), |l| format!("label {l}")),
            change.image
        );
    }
    let state = ledger.path().to_string();
    out.show(
        &json!({"dataset": dataset, "notified": body, "journal": state, "ledger_label": told}),
        || {
            format!(
                "notified dataset {dataset}: {} image {} label {}\njournalled in {state} (by hand)",
                change.section.as_str(),
                change.image,
                change.label
            )
        },
    )
}
