//! The MONAI Cloud API's request bodies and answers, typed, one file per resource, as
//! `shared/monai-api.md` has them. The client (`monai/client.rs`, `monai/calls.rs`) sends and
//! reads these; the emulator serves the same shapes, so both sides agree by construction.
//!
//! Answers are tolerant: unknown fields are kept (`extra`, written back by `--json`), fields the
//! contract may leave out are `Option`, and open value sets (job status, job action) have a
//! fallback variant, so a new server version never makes an answer unreadable.

mod auth;
mod datasets;
mod experiments;
mod jobs;
mod notify;
mod workspaces;

pub use auth::{LoginAnswer, LoginRequest};
pub use datasets::{
    split_filters, Dataset, DatasetJob, DatasetSpec, ImageMeta, NextImage, QueryPairs,
    DEFAULT_FILTERS, QIDO_OPTIONS,
};
pub use experiments::{
    newest_first, BaseExperiment, BaseExperiments, Experiment, ExperimentPatch, ExperimentSpec,
    Labels, ModelParams, VISTA3D_ARCH,
};
pub use jobs::{
    AnnotationSpecs, BundleParams, ExperimentJob, InferenceSpecs, Job, JobAction, JobControl,
    JobCreated, JobList, JobResult, JobSpecs, JobStatus, StopCriteria, TrainSpec,
};
pub use notify::{Entry, NotifyBody, Specs};
pub use workspaces::{AwsDetails, AzureDetails, Cloud, Workspace, WorkspaceSpec};

/// Unknown fields of an answer, kept in the server's order.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// A [`Secret`](crate::util::Secret) on the wire: the one place a request body exposes it.
mod secret {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::util::Secret;

    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
        String::deserialize(de).map(Secret::new)
    }
}

/// An optional [`Secret`](crate::util::Secret) on the wire (skip it when `None`).
mod opt_secret {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::util::Secret;

    pub fn serialize<S: Serializer>(s: &Option<Secret>, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_some(s.expose()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Secret>, D::Error> {
        Option::<String>::deserialize(de).map(|s| s.map(Secret::new))
    }
}

/// An enum of the contract's spellings plus a fallback that keeps any other spelling: it never
/// fails to parse, compares case-insensitively (the contract says statuses do) and writes the
/// contract's spelling back.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident, $other:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A spelling the contract does not list, kept as the server sent it.
            $other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::$other(s) => s,
                }
            }

            /// Any spelling, case-insensitively; never fails.
            pub fn parse(s: &str) -> $name {
                $(if s.eq_ignore_ascii_case($wire) {
                    return $name::$variant;
                })+
                $name::$other(s.to_string())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &$name) -> bool {
                self.as_str().eq_ignore_ascii_case(other.as_str())
            }
        }

        impl Eq for $name {}

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<$name, Self::Err> {
                Ok($name::parse(s))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                String::deserialize(d).map(|s| $name::parse(&s))
            }
        }
    };
}
pub(crate) use open_enum;
