//! The status page (`GET /`) as HTML: a pure function of a [`Snapshot`], so that what it shows
//! and how it escapes are tested without a server. Everything shown that came from outside
//! (source names, UIDs, reasons, file paths, errors) goes through [`escape`]; the page has no
//! script and no external asset (one inline style sheet), and reloads itself.

use std::fmt::Write;

use crate::app::cl::ClSummary;
use crate::ledger::RecentLabel;
use crate::model::scan::Problem;
use crate::model::LabelStatus;
use crate::util::metrics::{SourceHealth, SourceState};
use crate::util::time::fmt_time;

/// Labels listed at most (the rest are counted).
pub const LABELS_SHOWN: usize = 200;
/// Unreadable files listed at most (the rest are counted).
pub const PROBLEMS_SHOWN: usize = 50;
/// Seconds between the page's reloads.
pub const REFRESH_SECS: u32 = 10;
/// Seconds an answer of the API about the CL job is shown before it is asked again.
pub const CL_REFRESH_SECS: u64 = 30;

/// The statuses in the order the page lists them: notified first, then why others are not.
const ORDER: [LabelStatus; 6] = [
    LabelStatus::Ready,
    LabelStatus::Superseded,
    LabelStatus::Unmatched,
    LabelStatus::Unusable,
    LabelStatus::Invalid,
    LabelStatus::Gone,
];

/// The experiment's CL job as the page last learned it (see `page_cl`).
#[derive(Debug, Clone, Default)]
pub struct ClView {
    pub experiment: String,
    /// The last good answer, and when it came (Unix seconds).
    pub last: Option<(i64, ClSummary)>,
    /// Why the last try failed, such as "API unreachable: …" (None: it did not).
    pub error: Option<String>,
}

/// Everything the page shows, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Unix seconds of the reading.
    pub now: i64,
    pub dataset: String,
    pub api_reachable: bool,
    /// Each source by name, with its health once it has tried (None: starting).
    pub sources: Vec<(String, Option<SourceHealth>)>,
    /// With a shared ledger: the sources another process holds, and which (`host:pid:…`).
    pub held_elsewhere: std::collections::BTreeMap<String, String>,
    pub outbox_depth: i64,
    pub outbox_oldest: Option<String>,
    pub outbox_last_error: Option<String>,
    pub last_notify: Option<String>,
    pub images_notified: i64,
    pub entries_sent: i64,
    pub entries_sent_by_hand: i64,
    pub hooks_received: u64,
    pub hooks_refused: u64,
    /// The CL job, when an experiment is known (`--experiment`).
    pub cl: Option<ClView>,
    /// Present labels by status, and those gone.
    pub labels_by_status: Vec<(LabelStatus, i64)>,
    pub labels_gone: i64,
    /// The status the label list is filtered by.
    pub filter: Option<LabelStatus>,
    /// The labels first seen most recently (with `filter`), at most [`LABELS_SHOWN`].
    pub labels: Vec<RecentLabel>,
    /// The first unreadable files of the last listing, at most [`PROBLEMS_SHOWN`].
    pub problems: Vec<Problem>,
    /// How many unreadable files there are in all.
    pub problems_total: i64,
}

impl Snapshot {
    /// Labels with `status` (all labels for None).
    pub fn count(&self, status: Option<LabelStatus>) -> i64 {
        let present = |s: LabelStatus| {
            self.labels_by_status
                .iter()
                .filter(|(k, _)| *k == s)
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        match status {
            None => self.labels_by_status.iter().map(|(_, n)| n).sum::<i64>() + self.labels_gone,
            Some(LabelStatus::Gone) => self.labels_gone,
            Some(s) => present(s),
        }
    }

    fn healthy(&self) -> bool {
        self.api_reachable
            && self
                .sources
                .iter()
                .all(|(_, h)| h.as_ref().is_none_or(|h| h.state == SourceState::Up))
    }
}

/// Text made safe to put in HTML, in an element or in a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Why a label with this status is, or is not, used: the page's answer to "why was my SEG not
/// used?".
pub fn meaning(s: LabelStatus) -> &'static str {
    match s {
        LabelStatus::Ready => "notified: the newest usable label of its image",
        LabelStatus::Superseded => "not notified: a newer label of the same image is current",
        LabelStatus::Unmatched => {
            "not notified: its image series is not present (yet); matched again on every run"
        }
        LabelStatus::Unusable => {
            "not notified: paired only by its source instances, which the training server cannot \
             pair (it needs ReferencedSeriesSequence)"
        }
        LabelStatus::Invalid => "not notified: refused by the quality gate (the reason says why)",
        LabelStatus::Gone => "no longer present at its source",
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fff}\
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ccd}\
table{border-collapse:collapse;margin:.3em 0}th,td{text-align:left;padding:.25em .7em;border-bottom:1px solid #e3e3ea;vertical-align:top}\
th{background:#f2f2f7}.kv th{width:14em}.muted{color:#667}.uid{font-family:monospace;font-size:.92em;word-break:break-all}\
.ok{color:#fff;background:#1a7f37;padding:0 .4em;border-radius:3px}.bad{color:#fff;background:#c62828;padding:0 .4em;border-radius:3px}\
.starting{color:#fff;background:#8a6d00;padding:0 .4em;border-radius:3px}\
nav a{margin-right:.8em}nav a.current{font-weight:bold;text-decoration:none;color:#1d1d1f}";

/// The page.
pub fn render(s: &Snapshot) -> String {
    let mut h = String::with_capacity(16 * 1024 + s.labels.len() * 400);
    let e = escape;
    let when = |t: &Option<String>| t.as_deref().map(e).unwrap_or_else(|| "never".into());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>segbridge status</title><style>{STYLE}</style></head><body>\n"
    );
    let (class, word) = if s.healthy() {
        ("ok", "ok")
    } else {
        ("bad", "degraded")
    };
    let _ = writeln!(
        h,
        "<h1>segbridge <span class=\"{class}\" id=\"overall\">{word}</span></h1>\
         <p class=\"muted\">dataset <span class=\"uid\">{}</span> · read at {} · reloads every \
         {REFRESH_SECS} s · read-only</p>",
        e(&s.dataset),
        fmt_time(s.now)
    );

    h.push_str("<h2>Sources</h2>\n<table id=\"sources\"><tr><th>source</th><th>health</th><th>since</th><th>last error</th></tr>\n");
    for (name, health) in &s.sources {
        let elsewhere = s.held_elsewhere.get(name);
        let (class, word, since, reason) = match (elsewhere, health) {
            (Some(holder), _) => (
                "muted",
                "elsewhere",
                String::new(),
                format!("watched by {holder} (shared ledger)"),
            ),
            (None, None) => ("starting", "starting", String::new(), String::new()),
            (None, Some(hl)) => {
                let (c, w) = match hl.state {
                    SourceState::Up => ("ok", "up"),
                    SourceState::Down => ("bad", "down"),
                };
                (
                    c,
                    w,
                    fmt_time(hl.since),
                    hl.reason.clone().unwrap_or_default(),
                )
            }
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"uid\">{}</td><td><span class=\"{class}\">{word}</span></td><td>{since}</td><td>{}</td></tr>",
            e(name),
            e(&reason)
        );
    }
    let (class, word) = if s.api_reachable {
        ("ok", "reachable")
    } else {
        ("bad", "unreachable")
    };
    let _ = writeln!(
        h,
        "<tr><td>MONAI API</td><td><span class=\"{class}\">{word}</span></td><td></td><td></td></tr></table>"
    );

    let by_hand = match s.entries_sent_by_hand {
        0 => String::new(),
        n => format!(" ({n} by hand, <code>api notify</code>)"),
    };
    let oldest = s
        .outbox_oldest
        .as_deref()
        .map(|o| format!(", oldest {}", e(o)))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h2>Delivery</h2>\n<table class=\"kv\" id=\"delivery\">\
         <tr><th>outbox</th><td id=\"outbox\">{} waiting{oldest}</td></tr>\
         <tr><th>last notify</th><td id=\"last-notify\">{}</td></tr>\
         <tr><th>entries sent</th><td>{}{by_hand}</td></tr>\
         <tr><th>hook calls</th><td>{} received, {} refused</td></tr>",
        s.outbox_depth,
        when(&s.last_notify),
        s.entries_sent,
        s.hooks_received,
        s.hooks_refused
    );
    if let Some(err) = &s.outbox_last_error {
        let _ = write!(h, "<tr><th>last error</th><td>{}</td></tr>", e(err));
    }
    h.push_str("</table>\n");

    let _ = write!(
        h,
        "<h2>Continual learning</h2>\n<table class=\"kv\" id=\"cl\">\
         <tr><th>images told to the dataset</th><td>{}</td></tr>\
         <tr><th>labels ready</th><td>{}</td></tr>\
         <tr><th>entries waiting to be told</th><td>{}</td></tr></table>\n",
        s.images_notified,
        s.count(Some(LabelStatus::Ready)),
        s.outbox_depth
    );
    cl_job(&mut h, s);

    labels(&mut h, s);
    problems(&mut h, s);
    h.push_str("</body></html>\n");
    h
}

/// How long ago `t` was, from `now`, in a word.
fn ago(now: i64, t: i64) -> String {
    match (now - t).max(0) {
        n if n < 120 => format!("{n} s ago"),
        n if n < 7200 => format!("{} min ago", n / 60),
        n => format!("{} h ago", n / 3600),
    }
}

/// The experiment's CL job: its rounds and the images waiting for the next, from the API (as
/// `segbridge status --experiment` shows them), or why they are not known.
fn cl_job(h: &mut String, s: &Snapshot) {
    let e = escape;
    let Some(v) = &s.cl else {
        h.push_str(
            "<p class=\"muted\" id=\"cl-job\">Each told image counts toward the next training \
             round. The rounds themselves (done, images waiting for the next one) are the API's: \
             start <code>serve</code> with \
             <code>--experiment ID</code> and this page shows the experiment's CL job; \
             <code>segbridge status --experiment ID</code> asks for it once.</p>\n",
        );
        return;
    };
    let _ = write!(
        h,
        "<table class=\"kv\" id=\"cl-job\"><tr><th>experiment</th><td class=\"uid\">{}</td></tr>",
        e(&v.experiment)
    );
    if let Some(why) = &v.error {
        let last = match &v.last {
            Some((at, _)) => format!("the last good answer below is from {}", ago(s.now, *at)),
            None => "no answer yet".to_string(),
        };
        let _ = write!(
            h,
            "<tr><th>CL job</th><td id=\"cl-error\"><span class=\"bad\">{}</span> \
             <span class=\"muted\">({last})</span></td></tr>",
            e(why)
        );
    }
    match &v.last {
        None if v.error.is_none() => {
            h.push_str("<tr><th>CL job</th><td>asking the API…</td></tr>");
        }
        None => {}
        Some((_, sum)) => match (&sum.cl_job, &sum.progress) {
            (Some(id), Some(p)) => {
                let max = p.max_rounds.map(|m| format!(" / {m}")).unwrap_or_default();
                let metric = p
                    .last_key_metric
                    .map(|m| format!("{m:.3}"))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(
                    h,
                    "<tr><th>CL job</th><td><span class=\"uid\">{}</span> {}</td></tr>\
                     <tr><th>rounds done</th><td id=\"cl-rounds\">{}{max} ({} started)</td></tr>\
                     <tr><th>round size</th><td>{}</td></tr>\
                     <tr><th>images since the last round</th><td id=\"cl-waiting\">{} \
                     (waiting for the next round; {} more start it)</td></tr>\
                     <tr><th>last key metric</th><td>{metric}</td></tr>",
                    e(id),
                    e(&p.status.to_string()),
                    p.rounds_done,
                    p.rounds_started,
                    p.round_size,
                    p.images_since_last_round,
                    p.images_to_next_round,
                );
            }
            _ => h.push_str("<tr><th>CL job</th><td>none in this experiment</td></tr>"),
        },
    }
    let asked = match &v.last {
        Some((at, _)) => format!("asked the API {}; ", ago(s.now, *at)),
        None => String::new(),
    };
    let _ = writeln!(
        h,
        "</table><p class=\"muted\">{asked}asked again at most every {CL_REFRESH_SECS} s.</p>"
    );
}

fn labels(h: &mut String, s: &Snapshot) {
    let e = escape;
    h.push_str("<h2 id=\"labels\">Labels</h2>\n<nav id=\"filters\">");
    let link = |h: &mut String, status: Option<LabelStatus>| {
        let (href, name) = match status {
            None => ("/".to_string(), "all"),
            Some(k) => (format!("/?status={}", k.as_str()), k.as_str()),
        };
        let current = if s.filter == status {
            " class=\"current\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<a href=\"{}\"{current}>{name} ({})</a>",
            e(&href),
            s.count(status)
        );
    };
    link(h, None);
    for k in ORDER {
        link(h, Some(k));
    }
    h.push_str("</nav>\n<table id=\"meanings\" class=\"kv\">");
    let explained: Vec<LabelStatus> = match s.filter {
        Some(k) => vec![k],
        None => ORDER.to_vec(),
    };
    for k in explained {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", k.as_str(), meaning(k));
    }
    h.push_str("</table>\n");
    let total = s.count(s.filter);
    let shown = s.labels.len().min(LABELS_SHOWN);
    if shown == 0 {
        h.push_str("<p id=\"label-count\">No labels here.</p>\n");
        return;
    }
    let _ = writeln!(
        h,
        "<p id=\"label-count\">The {shown} first seen most recently, of {total}{}.</p>",
        match total - shown as i64 {
            n if n > 0 => format!(" ({n} more not shown)"),
            _ => String::new(),
        }
    );
    h.push_str(
        "<table id=\"label-list\"><tr><th>label series</th><th>status</th><th>reason</th>\
         <th>image series</th><th>match</th><th>source</th><th>first seen</th></tr>\n",
    );
    for l in s.labels.iter().take(LABELS_SHOWN) {
        let r = &l.row;
        let _ = writeln!(
            h,
            "<tr><td class=\"uid\">{}</td><td>{}</td><td>{}</td><td class=\"uid\">{}</td>\
             <td>{}</td><td class=\"uid\">{}</td><td>{}</td></tr>",
            e(&r.label),
            r.status.as_str(),
            e(&r.reason),
            e(r.image.as_deref().unwrap_or("")),
            e(&r.rule),
            e(&r.source),
            fmt_time(l.first_seen)
        );
    }
    h.push_str("</table>\n");
}

fn problems(h: &mut String, s: &Snapshot) {
    if s.problems.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<h2>Unreadable files</h2>\n<p>{} in the last listing{}.</p><table id=\"problems\">\
         <tr><th>file</th><th>reason</th></tr>",
        s.problems_total,
        match s.problems_total - s.problems.len().min(PROBLEMS_SHOWN) as i64 {
            n if n > 0 => format!(" ({n} more not shown)"),
            _ => String::new(),
        }
    );
    for p in s.problems.iter().take(PROBLEMS_SHOWN) {
        let _ = writeln!(
            h,
            "<tr><td class=\"uid\">{}</td><td>{}</td></tr>",
            escape(&p.path),
            escape(&p.reason)
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests;
