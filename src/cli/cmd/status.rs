//! `status`: what the ledger knows, and with `--experiment` the continual-learning job.

use std::io::Write;

use serde_json::json;

use crate::app::cl;
use crate::app::settings::{ConfigError, Settings};
use crate::app::Failure;
use crate::ledger::Ledger;
use crate::monai::Client;

pub fn status(s: &Settings, json_out: bool, experiment: Option<&str>) -> Result<(), Failure> {
    if let Some(file) = s.state.file().filter(|f| !f.exists()) {
        return Err(ConfigError(format!(
            "state file {} does not exist yet: run `segbridge sync` first (or give --state)",
            file.display()
        ))
        .into());
    }
    let ledger = Ledger::open_read_only(&s.state)?;
    if ledger.schema_version()? == 0 {
        return Err(ConfigError(format!(
            "{} holds no segbridge ledger yet: run `segbridge sync` or `watch` on it first",
            ledger.path()
        ))
        .into());
    }
    let report = ledger.status()?;
    // a shared ledger: who holds what (none on SQLite)
    let leases = ledger.leases()?;
    // the CL job, when asked: from the API, with the images notified since from the ledger
    let cl = match experiment {
        Some(exp) => {
            s.require_key()?;
            let rt = crate::app::runtime()?;
            let answer = rt.block_on(async {
                let mut c = Client::new(s.api_config())?;
                Ok::<_, Failure>(cl::ask(&mut c, exp).await?)
            })?;
            Some(answer.summarize(&ledger, s.dataset.as_deref())?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if json_out {
        let labels = ledger.labels()?;
        let v = json!({"status": report, "labels": labels, "continual_learning": cl,
                       "leases": leases});
        writeln!(out, "{v}").map_err(anyhow::Error::from)?;
        return Ok(());
    }
    let w = |out: &mut std::io::StdoutLock, s: String| {
        writeln!(out, "{s}").map_err(anyhow::Error::from)
    };
    w(
        &mut out,
        format!(
            "state           {} (schema {})",
            report.state, report.schema_version
        ),
    )?;
    let by: Vec<String> = report
        .labels_by_status
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    w(
        &mut out,
        format!(
            "labels          {} ; {} gone",
            if by.is_empty() {
                "none".into()
            } else {
                by.join(", ")
            },
            report.labels_gone
        ),
    )?;
    w(
        &mut out,
        format!("images told     {}", report.images_notified),
    )?;
    let by_hand = match report.entries_sent_by_hand {
        0 => String::new(),
        n => format!(" ({n} by hand, `api notify`)"),
    };
    w(
        &mut out,
        format!("entries sent    {}{by_hand}", report.entries_sent),
    )?;
    w(
        &mut out,
        format!(
            "last notify     {}",
            report.last_notify.as_deref().unwrap_or("never")
        ),
    )?;
    w(
        &mut out,
        format!(
            "outbox          {} waiting{}",
            report.outbox_depth,
            report
                .outbox_oldest
                .as_ref()
                .map(|o| format!(", oldest {o}"))
                .unwrap_or_default()
        ),
    )?;
    if let Some(e) = &report.outbox_last_error {
        w(&mut out, format!("last error      {e}"))?;
    }
    if !leases.is_empty() {
        w(
            &mut out,
            "\nleases (several processes share this ledger):".into(),
        )?;
        for l in &leases {
            let state = match l.expires_in_s {
                e if e < 0 => format!("expired {}s ago, free to take", -e),
                e => format!("renewed {}s ago, expires in {e}s", l.age_s),
            };
            w(
                &mut out,
                format!("  {:<40} {} epoch {} ({state})", l.name, l.holder, l.epoch),
            )?;
        }
    }
    if !report.attention.is_empty() {
        w(&mut out, "\nlabels that will not be notified:".into())?;
        for l in &report.attention {
            w(
                &mut out,
                format!("  {} {} ({}): {}", l.status, l.label, l.rule, l.reason),
            )?;
        }
    }
    if let Some(cl) = &cl {
        match (&cl.cl_job, &cl.progress) {
            (Some(job), Some(p)) => {
                w(
                    &mut out,
                    format!(
                        "CL job          {job} {}: {} rounds done{} ({} started), last key metric {}",
                        p.status,
                        p.rounds_done,
                        p.max_rounds.map(|m| format!(" of {m}")).unwrap_or_default(),
                        p.rounds_started,
                        p.last_key_metric
                            .map(|m| format!("{m:.3}"))
                            .unwrap_or_else(|| "-".into())
                    ),
                )?;
                w(
                    &mut out,
                    format!(
                        "next round      {} images notified since the last round; {} more start the next (round size {})",
                        p.images_since_last_round, p.images_to_next_round, p.round_size
                    ),
                )?;
            }
            _ => w(
                &mut out,
                format!("CL job          none in experiment {}", cl.experiment),
            )?,
        }
    }
    if !report.problems.is_empty() {
        w(&mut out, "\nunreadable files (last listing):".into())?;
        for p in &report.problems {
            let safe = |t: &str| crate::util::logsafe::escape_controls(t, false);
            w(
                &mut out,
                format!("  {}: {}", safe(&p.path), safe(&p.reason)),
            )?;
        }
    }
    Ok(())
}
