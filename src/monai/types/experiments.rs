//! Experiments: the base-experiment catalogue, the create body, the experiment as the server
//! answers it (with `model_params.labels`), and the realtime-inference patch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Extra;

/// The network architecture of VISTA-3D base experiments.
pub const VISTA3D_ARCH: &str = "monai_vista3d";

/// Label number (as the wire spells it, `"1"`) → class name. Training maps voxel value N to the
/// class of key `"N"`.
pub type Labels = BTreeMap<String, String>;

/// `GET /orgs/{org}/experiments:base` → `{"experiments": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaseExperiments {
    #[serde(default)]
    pub experiments: Vec<BaseExperiment>,
}

/// One base experiment: `{"id", "name", "version", "network_arch", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseExperiment {
    pub id: String,
    pub name: String,
    pub version: String,
    pub network_arch: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl BaseExperiment {
    /// The version's numbers, for ordering (`0.5.10` after `0.5.8`).
    pub fn version_key(&self) -> Vec<u64> {
        self.version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
}

/// Sorts base experiments newest version first (a stable sort: equal versions keep their order).
pub fn newest_first(bases: &mut [BaseExperiment]) {
    bases.sort_by_key(|b| std::cmp::Reverse(b.version_key()));
}

/// `POST /orgs/{org}/experiments`.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSpec {
    pub name: String,
    pub description: String,
    pub network_arch: String,
    pub base_experiment: Vec<String>,
    pub inference_dataset: String,
    pub eval_dataset: String,
    pub train_datasets: Vec<String>,
    pub realtime_infer: bool,
    pub workspace: String,
    pub model_params: ModelParams,
}

impl ExperimentSpec {
    /// The guide's experiment: one dataset for training, evaluation and inference, a VISTA-3D
    /// base, no description, realtime inference off.
    pub fn new(
        name: &str,
        base: &str,
        dataset: &str,
        workspace: &str,
        labels: Labels,
    ) -> ExperimentSpec {
        ExperimentSpec {
            name: name.to_string(),
            description: String::new(),
            network_arch: VISTA3D_ARCH.into(),
            base_experiment: vec![base.to_string()],
            inference_dataset: dataset.to_string(),
            eval_dataset: dataset.to_string(),
            train_datasets: vec![dataset.to_string()],
            realtime_infer: false,
            workspace: workspace.to_string(),
            model_params: ModelParams {
                labels: Some(labels),
                extra: Extra::new(),
            },
        }
    }
}

/// `"model_params": {"labels": {...}, ...}`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An experiment as the server answers it (create, get, patch). Create answers always carry the
/// id; the contract does not say what else.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Experiment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_infer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_params: Option<ModelParams>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Experiment {
    /// `model_params.labels`, when the experiment has them.
    pub fn labels(&self) -> Option<&Labels> {
        self.model_params.as_ref()?.labels.as_ref()
    }
}

/// `PATCH /orgs/{org}/experiments/{id}`: only what is given changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExperimentPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime_infer: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_experiment_body_is_the_contracts() {
        let labels = Labels::from([("1".into(), "liver".into()), ("2".into(), "kidney".into())]);
        let mut e = ExperimentSpec::new("e", "B", "D", "W", labels);
        e.realtime_infer = true;
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"name": "e", "description": "", "network_arch": "monai_vista3d",
                "base_experiment": ["B"], "inference_dataset": "D", "eval_dataset": "D",
                "train_datasets": ["D"], "realtime_infer": true, "workspace": "W",
                "model_params": {"labels": {"1": "liver", "2": "kidney"}}})
        );
        assert_eq!(
            serde_json::to_value(ExperimentPatch {
                realtime_infer: Some(false)
            })
            .unwrap(),
            json!({"realtime_infer": false})
        );
    }

    #[test]
    fn experiments_read_with_labels_extra_and_missing_fields() {
        let e: Experiment = serde_json::from_value(json!({"id": "E", "status": "ok",
            "model_params": {"labels": {"1": "liver"}, "lr": 0.001}}))
        .unwrap();
        assert_eq!(e.labels().unwrap()["1"], "liver");
        assert_eq!(e.extra["status"], "ok");
        assert_eq!(e.model_params.as_ref().unwrap().extra["lr"], 0.001);
        let bare: Experiment = serde_json::from_value(json!({})).unwrap();
        assert!(bare.id.is_none() && bare.labels().is_none());
    }

    #[test]
    fn bases_sort_by_version_numbers() {
        let b = |v: &str| BaseExperiment {
            id: v.into(),
            name: "n".into(),
            version: v.into(),
            network_arch: VISTA3D_ARCH.into(),
            extra: Extra::new(),
        };
        let mut list = vec![b("0.5.8"), b("0.5.10"), b("0.4")];
        newest_first(&mut list);
        let order: Vec<&str> = list.iter().map(|b| b.version.as_str()).collect();
        assert_eq!(order, ["0.5.10", "0.5.8", "0.4"]);
        let parsed: BaseExperiments = serde_json::from_value(json!({"experiments": [
            {"id": "x", "name": "VISTA-3D", "version": "1", "network_arch": "monai_vista3d",
             "description": "kept"}]}))
        .unwrap();
        assert_eq!(parsed.experiments[0].extra["description"], "kept");
    }
}
