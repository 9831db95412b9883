//! `api infer`: realtime inference, the label volume written as .nrrd.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::Out;
use crate::app::exit::{self, Failure};
use crate::app::settings::ConfigError;
use crate::monai::{BundleParams, Client, InferenceSpecs};

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Experiment ID (realtime inference on)
    #[arg(long)]
    pub experiment: String,
    /// Image series UID
    #[arg(long)]
    pub image: String,
    /// Label numbers to segment, e.g. 1,2,3
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    pub classes: Vec<u64>,
    /// All 132 classes
    #[arg(long)]
    pub all: bool,
    /// A point prompt x,y,z:label (label 1 = inside, 0 = outside); may be repeated
    #[arg(long = "point")]
    pub points: Vec<String>,
    /// Where to write the label volume (.nrrd)
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses `x,y,z:label`.
pub fn parse_point(s: &str) -> Result<([f64; 3], i64), String> {
    let (xyz, label) = s
        .split_once(':')
        .ok_or(format!("--point {s}: expected x,y,z:label"))?;
    let c: Vec<f64> = xyz
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--point {s}: coordinates must be numbers"))?;
    if c.len() != 3 {
        return Err(format!("--point {s}: expected three coordinates"));
    }
    let label = label
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("--point {s}: the label must be an integer"))?;
    Ok(([c[0], c[1], c[2]], label))
}

pub(super) async fn infer(c: &mut Client, out: &Out, a: InferArgs) -> Result<(), Failure> {
    let classes: Vec<u64> = if a.all {
        (1..=132).collect()
    } else {
        a.classes.clone()
    };
    if let Some(bad) = classes.iter().find(|c| !(1..=132).contains(*c)) {
        return Err(ConfigError(format!("--classes: {bad} is outside 1..132")).into());
    }
    let mut params = BundleParams::default();
    if !classes.is_empty() {
        params.label_prompt = Some(classes.clone());
    }
    if !a.points.is_empty() {
        let (pts, labels) = a
            .points
            .iter()
            .map(|p| parse_point(p))
            .collect::<Result<(Vec<_>, Vec<_>), _>>()
            .map_err(ConfigError)?;
        params.points = Some(pts);
        params.point_labels = Some(labels);
    }
    if classes.is_empty() && a.points.is_empty() {
        return Err(ConfigError("give --classes, --all or --point".into()).into());
    }
    let specs = InferenceSpecs {
        image: a.image.clone(),
        bundle_params: params,
    };
    let ans = c.infer(&a.experiment, specs).await?;
    let ct = ans.content_type.clone().unwrap_or_default();
    let (name, bytes) = nrrd_part(&ct, ans.raw).await.map_err(|e| Failure {
        code: exit::DELIVERY,
        error: anyhow::anyhow!("inference answer: {e}"),
    })?;
    std::fs::write(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
    out.show(
        &json!({"out": a.out, "part": name, "bytes": bytes.len()}),
        || {
            format!(
                "wrote {} ({} bytes, part {name})",
                a.out.display(),
                bytes.len()
            )
        },
    )
}

/// Finds the `.nrrd` part of a multipart answer (named in its Content-Disposition).
pub async fn nrrd_part(content_type: &str, body: Vec<u8>) -> Result<(String, Vec<u8>), String> {
    let boundary = crate::source::http::boundary_of(content_type)
        .ok_or_else(|| format!("not a multipart answer ({content_type})"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes_of(body)) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut names = Vec::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| format!("malformed multipart: {e}"))?
    {
        let name = field.file_name().map(str::to_string).unwrap_or_default();
        if name.to_ascii_lowercase().ends_with(".nrrd") {
            let data = field
                .bytes()
                .await
                .map_err(|e| format!("malformed multipart: {e}"))?;
            if !data.starts_with(b"NRRD") {
                return Err(format!("part {name} is not NRRD"));
            }
            return Ok((name, data.to_vec()));
        }
        names.push(field.name().unwrap_or("?").to_string());
    }
    Err(format!("no .nrrd part (parts: {})", names.join(", ")))
}

fn bytes_of(v: Vec<u8>) -> multer::bytes::Bytes {
    multer::bytes::Bytes::from(v)
}
