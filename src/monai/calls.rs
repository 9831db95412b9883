//! The typed calls: one method per API call of the workflow, so callers neither write paths nor
//! read JSON. Each sends a body from [`super::types`] and reads the answer into one.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::client::{Answer, ApiError, Client};
use super::types::{
    AnnotationSpecs, BaseExperiment, BaseExperiments, Dataset, DatasetJob, DatasetSpec, Experiment,
    ExperimentJob, ExperimentPatch, ExperimentSpec, InferenceSpecs, Job, JobControl, JobCreated,
    JobList, NextImage, Workspace, WorkspaceSpec,
};

/// What `DELETE /orgs/{org}/{collection}/{id}` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Experiment,
    Dataset,
    Workspace,
}

impl Resource {
    /// The collection in the path: `experiments`, `datasets`, `workspaces`.
    pub fn collection(self) -> &'static str {
        match self {
            Resource::Experiment => "experiments",
            Resource::Dataset => "datasets",
            Resource::Workspace => "workspaces",
        }
    }
}

impl Client {
    /// An authenticated call under `/orgs/{org}` with a typed body, its answer read as `T`.
    async fn typed<T: DeserializeOwned>(
        &mut self,
        method: Method,
        rest: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let ans = self.send(method.clone(), rest, body).await?;
        self.read(&method, rest, ans.body)
    }

    /// An authenticated call under `/orgs/{org}` with a typed body, the answer as it came.
    async fn send(
        &mut self,
        method: Method,
        rest: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Answer, ApiError> {
        let path = self.org_path(rest);
        let body = match body {
            Some(b) => Some(self.encode(method.as_str(), &path, b)?),
            None => None,
        };
        self.call(method, &path, body.as_ref()).await
    }

    fn read<T: DeserializeOwned>(
        &self,
        method: &Method,
        rest: &str,
        body: Value,
    ) -> Result<T, ApiError> {
        serde_json::from_value(body).map_err(|e| ApiError::BadAnswer {
            method: method.to_string(),
            url: self.url(&self.org_path(rest)),
            reason: e.to_string(),
        })
    }

    /// `POST /datasets` → the dataset (its id).
    pub async fn create_dataset(&mut self, spec: &DatasetSpec) -> Result<Dataset, ApiError> {
        self.typed(Method::POST, "/datasets", Some(spec)).await
    }

    /// `GET /datasets/{id}`: where the server reads the dataset's images (`client_url`, as
    /// `client_id`) and which ones (`filters`).
    pub async fn dataset(&mut self, id: &str) -> Result<Dataset, ApiError> {
        self.typed(Method::GET, &format!("/datasets/{id}"), None::<&()>)
            .await
    }

    /// `POST /datasets/{id}/jobs` `{"action": "nextimage"}` → a random unlabeled image.
    pub async fn next_image(&mut self, dataset: &str) -> Result<NextImage, ApiError> {
        let rest = format!("/datasets/{dataset}/jobs");
        self.typed(Method::POST, &rest, Some(&DatasetJob::NextImage))
            .await
    }

    /// `POST /workspaces` → the workspace (its id).
    pub async fn create_workspace(&mut self, spec: &WorkspaceSpec) -> Result<Workspace, ApiError> {
        self.typed(Method::POST, "/workspaces", Some(spec)).await
    }

    /// `GET /experiments:base`, in the server's order.
    pub async fn base_experiments(&mut self) -> Result<Vec<BaseExperiment>, ApiError> {
        let list: BaseExperiments = self
            .typed(Method::GET, "/experiments:base", None::<&()>)
            .await?;
        Ok(list.experiments)
    }

    /// `POST /experiments` → the experiment, which has an id.
    pub async fn create_experiment(
        &mut self,
        spec: &ExperimentSpec,
    ) -> Result<Experiment, ApiError> {
        let e: Experiment = self.typed(Method::POST, "/experiments", Some(spec)).await?;
        if e.id.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::BadAnswer {
                method: "POST".into(),
                url: self.url(&self.org_path("/experiments")),
                reason: "no \"id\" in the answer".into(),
            });
        }
        Ok(e)
    }

    /// `GET /experiments/{id}` (its `model_params.labels` among the rest).
    pub async fn experiment(&mut self, id: &str) -> Result<Experiment, ApiError> {
        self.typed(Method::GET, &format!("/experiments/{id}"), None::<&()>)
            .await
    }

    /// `PATCH /experiments/{id}` → the experiment as the server answers it (the contract does
    /// not say it answers one: `None` when it did not).
    pub async fn patch_experiment(
        &mut self,
        id: &str,
        patch: &ExperimentPatch,
    ) -> Result<Option<Experiment>, ApiError> {
        let rest = format!("/experiments/{id}");
        let ans = self.send(Method::PATCH, &rest, Some(patch)).await?;
        // the change is made: an answer that is no experiment is no error
        Ok(serde_json::from_value(ans.body).ok().flatten())
    }

    /// `DELETE /{collection}/{id}`.
    pub async fn delete(&mut self, what: Resource, id: &str) -> Result<(), ApiError> {
        let rest = format!("/{}/{id}", what.collection());
        self.send(Method::DELETE, &rest, None::<&()>).await?;
        Ok(())
    }

    /// `POST /experiments/{id}/jobs` `{"action": "annotation", ...}` → the CL job's id.
    pub async fn start_cl(
        &mut self,
        experiment: &str,
        specs: AnnotationSpecs,
    ) -> Result<String, ApiError> {
        let rest = format!("/experiments/{experiment}/jobs");
        let body = ExperimentJob::Annotation(specs);
        let created: JobCreated = self.typed(Method::POST, &rest, Some(&body)).await?;
        Ok(created.id())
    }

    /// `POST /experiments/{id}/jobs` `{"action": "inference", ...}` → the multipart answer as
    /// it came (`raw`, `content_type`): the label volume is its `.nrrd` part.
    pub async fn infer(
        &mut self,
        experiment: &str,
        specs: InferenceSpecs,
    ) -> Result<Answer, ApiError> {
        let rest = format!("/experiments/{experiment}/jobs");
        self.send(Method::POST, &rest, Some(&ExperimentJob::Inference(specs)))
            .await
    }

    /// `GET /experiments/{id}/jobs`: the experiment's jobs, oldest first.
    pub async fn jobs(&mut self, experiment: &str) -> Result<Vec<Job>, ApiError> {
        let rest = format!("/experiments/{experiment}/jobs");
        let list: JobList = self.typed(Method::GET, &rest, None::<&()>).await?;
        Ok(list.jobs)
    }

    /// `GET /experiments/{id}/jobs/{job}`.
    pub async fn job(&mut self, experiment: &str, job: &str) -> Result<Job, ApiError> {
        let rest = format!("/experiments/{experiment}/jobs/{job}");
        self.typed(Method::GET, &rest, None::<&()>).await
    }

    /// `GET /experiments/{id}/jobs/{job}/logs` (text).
    pub async fn job_logs(&mut self, experiment: &str, job: &str) -> Result<String, ApiError> {
        let rest = format!("/experiments/{experiment}/jobs/{job}/logs");
        let ans = self.send(Method::GET, &rest, None::<&()>).await?;
        Ok(String::from_utf8_lossy(&ans.raw).into_owned())
    }

    /// `POST /experiments/{id}/jobs/{job}:cancel|:pause|:resume`.
    pub async fn control_job(
        &mut self,
        experiment: &str,
        job: &str,
        control: JobControl,
    ) -> Result<(), ApiError> {
        let rest = format!("/experiments/{experiment}/jobs/{job}:{}", control.as_str());
        self.send(Method::POST, &rest, None::<&()>).await?;
        Ok(())
    }
}
