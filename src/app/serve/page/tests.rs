use super::*;
use crate::ledger::LabelRow;

const HOSTILE: &str = "<script>alert(\"x\")</script>&amp;'\"><img src=x onerror=alert(1)>";

fn label(uid: &str, status: LabelStatus, reason: &str) -> RecentLabel {
    RecentLabel {
        row: LabelRow {
            label: uid.into(),
            image: Some("1.2.3.4".into()),
            status,
            rule: "referenced-series".into(),
            reason: reason.into(),
            source: "folder:/exports".into(),
        },
        first_seen: 1_700_000_000,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        now: 1_700_000_100,
        dataset: "ds-1".into(),
        api_reachable: true,
        sources: vec![("folder:/exports".into(), None)],
        labels_by_status: vec![(LabelStatus::Invalid, 1), (LabelStatus::Ready, 2)],
        labels_gone: 1,
        labels: vec![
            label("1.2.9", LabelStatus::Invalid, "segment 1 is empty"),
            label("1.2.8", LabelStatus::Ready, ""),
        ],
        ..Default::default()
    }
}

#[test]
fn escape_makes_hostile_text_inert() {
    assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
    assert_eq!(escape("\"'"), "&quot;&#39;");
    assert_eq!(escape("&amp;"), "&amp;amp;");
    assert_eq!(
        escape(HOSTILE),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;&#39;&quot;&gt;\
         &lt;img src=x onerror=alert(1)&gt;"
    );
    // nothing that opens a tag, ends an attribute or starts an entity survives
    for c in ['<', '>', '"', '\''] {
        assert!(!escape(HOSTILE).contains(c), "{c}");
    }
    assert_eq!(escape("1.2.840.10008 é ✓"), "1.2.840.10008 é ✓");
}

#[test]
fn hostile_text_from_outside_is_shown_escaped_everywhere() {
    let mut s = snapshot();
    s.dataset = HOSTILE.into();
    s.sources = vec![(
        format!("folder:/{HOSTILE}"),
        Some(SourceHealth {
            state: SourceState::Down,
            since: 1_700_000_050,
            reason: Some(HOSTILE.into()),
        }),
    )];
    let mut l = label(HOSTILE, LabelStatus::Invalid, HOSTILE);
    l.row.image = Some(HOSTILE.into());
    l.row.rule = HOSTILE.into();
    l.row.source = HOSTILE.into();
    s.labels = vec![l];
    s.outbox_last_error = Some(HOSTILE.into());
    s.outbox_oldest = Some(HOSTILE.into());
    s.last_notify = Some(HOSTILE.into());
    s.problems = vec![Problem {
        path: HOSTILE.into(),
        reason: HOSTILE.into(),
    }];
    s.problems_total = 1;
    let page = render(&s);
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("alert(\""), "{page}");
    // every place: dataset, source, its error, label, image, rule, source, reason, outbox
    // oldest and error, last notify, problem path and reason
    assert_eq!(page.matches(&escape(HOSTILE)).count(), 13, "{page}");
}

#[test]
fn the_page_reloads_itself_and_has_no_script_or_outside_asset() {
    let page = render(&snapshot());
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    assert!(page.contains("<meta charset=\"utf-8\">"));
    for banned in [
        "<script", "<link", "src=", "http://", "https://", "@import", "url(",
    ] {
        assert!(!page.contains(banned), "{banned}");
    }
}

#[test]
fn labels_show_their_status_reason_and_the_filters_their_counts() {
    let page = render(&snapshot());
    assert!(
        page.contains("<td class=\"uid\">1.2.9</td><td>invalid</td><td>segment 1 is empty</td>")
    );
    assert!(
        page.contains("<a href=\"/\" class=\"current\">all (4)</a>"),
        "{page}"
    );
    assert!(page.contains("<a href=\"/?status=invalid\">invalid (1)</a>"));
    assert!(page.contains("<a href=\"/?status=ready\">ready (2)</a>"));
    assert!(page.contains("<a href=\"/?status=gone\">gone (1)</a>"));
    assert!(page.contains("<a href=\"/?status=unusable\">unusable (0)</a>"));
    assert!(page.contains("The 2 first seen most recently, of 4 (2 more not shown)."));
    assert!(page.contains(meaning(LabelStatus::Unmatched)));
    assert!(page.contains("id=\"last-notify\">never<"));
    assert!(page.contains("<span class=\"starting\">starting</span>"));

    let mut s = snapshot();
    s.filter = Some(LabelStatus::Invalid);
    s.labels.truncate(1);
    let page = render(&s);
    assert!(page.contains("<a href=\"/?status=invalid\" class=\"current\">invalid (1)</a>"));
    assert!(
        page.contains("The 1 first seen most recently, of 1."),
        "{page}"
    );
    assert!(page.contains(meaning(LabelStatus::Invalid)));
    assert!(!page.contains(meaning(LabelStatus::Unmatched)));

    s.filter = Some(LabelStatus::Unusable);
    s.labels.clear();
    assert!(render(&s).contains("No labels here."));
}

#[test]
fn the_lists_are_bounded_and_say_how_many_more() {
    let mut s = snapshot();
    s.labels_by_status = vec![(LabelStatus::Ready, 1000)];
    s.labels_gone = 0;
    s.labels = (0..LABELS_SHOWN + 5)
        .map(|i| label(&format!("1.2.{i}"), LabelStatus::Ready, ""))
        .collect();
    // the ledger reads the first PROBLEMS_SHOWN, and how many there are
    s.problems = (0..PROBLEMS_SHOWN)
        .map(|i| Problem {
            path: format!("/exports/f{i}"),
            reason: "not DICOM".into(),
        })
        .collect();
    s.problems_total = 1053;
    let page = render(&s);
    assert!(page.contains("The 200 first seen most recently, of 1000 (800 more not shown)."));
    assert_eq!(page.matches("<td>ready</td>").count(), LABELS_SHOWN);
    assert!(page.contains("1053 in the last listing (1003 more not shown)."));
    assert_eq!(page.matches("<td>not DICOM</td>").count(), PROBLEMS_SHOWN);
}

#[test]
fn a_source_down_or_the_api_unreachable_makes_the_page_say_degraded() {
    let mut s = snapshot();
    assert!(render(&s).contains("id=\"overall\">ok<"));
    s.sources.push((
        "orthanc:http://pacs:8042".into(),
        Some(SourceHealth {
            state: SourceState::Down,
            since: 1_700_000_000,
            reason: Some("connection refused".into()),
        }),
    ));
    let page = render(&s);
    assert!(page.contains("id=\"overall\">degraded<"));
    assert!(page.contains("<span class=\"bad\">down</span></td><td>2023-11-14T22:13:20Z</td><td>connection refused</td>"), "{page}");
    s.sources.pop();
    s.api_reachable = false;
    let page = render(&s);
    assert!(page.contains("id=\"overall\">degraded<"));
    assert!(page.contains("<span class=\"bad\">unreachable</span>"));
}

fn cl_summary(rounds_done: usize, since: i64) -> crate::app::cl::ClSummary {
    use crate::app::cl::{ClProgress, ClSummary};
    ClSummary {
        experiment: "exp-1".into(),
        cl_job: Some("cl-7".into()),
        progress: Some(ClProgress {
            status: crate::monai::JobStatus::Running,
            rounds_done,
            rounds_started: rounds_done + 1,
            max_rounds: Some(5),
            last_key_metric: Some(0.8125),
            round_size: 4,
            images_since_last_round: since,
            images_to_next_round: 4 - since,
        }),
    }
}

#[test]
fn with_an_experiment_the_cl_job_rounds_and_images_waiting_are_shown() {
    let mut s = snapshot();
    s.cl = Some(ClView {
        experiment: "exp-1".into(),
        last: Some((1_700_000_040, cl_summary(2, 3))),
        error: None,
    });
    let page = render(&s);
    for want in [
        "<th>experiment</th><td class=\"uid\">exp-1</td>",
        "<th>CL job</th><td><span class=\"uid\">cl-7</span> Running</td>",
        "<td id=\"cl-rounds\">2 / 5 (3 started)</td>",
        "<th>round size</th><td>4</td>",
        "<td id=\"cl-waiting\">3 (waiting for the next round; 1 more start it)</td>",
        "<th>last key metric</th><td>0.812</td>",
        "asked the API 60 s ago; asked again at most every 30 s.",
    ] {
        assert!(page.contains(want), "{want:?} not in\n{page}");
    }
    assert!(!page.contains("--experiment ID"), "{page}");
    assert!(!page.contains("unreachable"), "{page}");

    // an experiment without a CL job; an answer not come yet
    s.cl = Some(ClView {
        experiment: "exp-1".into(),
        last: Some((
            1_700_000_100,
            crate::app::cl::ClSummary {
                experiment: "exp-1".into(),
                cl_job: None,
                progress: None,
            },
        )),
        error: None,
    });
    assert!(render(&s).contains("<th>CL job</th><td>none in this experiment</td>"));
    s.cl = Some(ClView {
        experiment: "exp-1".into(),
        ..Default::default()
    });
    assert!(render(&s).contains("<th>CL job</th><td>asking the API…</td>"));
}

#[test]
fn without_an_experiment_the_page_says_how_to_give_one() {
    let page = render(&snapshot());
    assert!(page.contains("<code>--experiment ID</code>"), "{page}");
    assert!(!page.contains("id=\"cl-rounds\""), "{page}");
}

#[test]
fn an_api_error_shows_with_the_age_of_the_last_good_answer() {
    let mut s = snapshot();
    s.cl = Some(ClView {
        experiment: "exp-1".into(),
        last: Some((1_700_000_100 - 600, cl_summary(1, 0))),
        error: Some("API unreachable: connection refused".into()),
    });
    let page = render(&s);
    assert!(
        page.contains(
            "<span class=\"bad\">API unreachable: connection refused</span> \
             <span class=\"muted\">(the last good answer below is from 10 min ago)</span>"
        ),
        "{page}"
    );
    // the last good answer stays shown
    assert!(page.contains("<td id=\"cl-rounds\">1 / 5 (2 started)</td>"));
    s.cl = Some(ClView {
        experiment: "exp-1".into(),
        last: None,
        error: Some("API unreachable: no answer in 5 s".into()),
    });
    let page = render(&s);
    assert!(
        page.contains(
            "API unreachable: no answer in 5 s</span> <span class=\"muted\">(no answer yet)</span>"
        ),
        "{page}"
    );
    assert!(!page.contains("asking the API"), "{page}");

    // the experiment and the reason come from outside: escaped
    let mut sum = cl_summary(1, 0);
    sum.cl_job = Some(HOSTILE.into());
    sum.progress.as_mut().unwrap().status = crate::monai::JobStatus::Other(HOSTILE.into());
    s.cl = Some(ClView {
        experiment: HOSTILE.into(),
        last: Some((1_700_000_000, sum)),
        error: Some(format!("API unreachable: {HOSTILE}")),
    });
    let page = render(&s);
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{page}"
    );
    assert_eq!(page.matches(&escape(HOSTILE)).count(), 4, "{page}");
}

#[test]
fn a_source_another_process_holds_says_which_not_starting() {
    let mut s = snapshot();
    s.sources = vec![
        ("orthanc:http://a".into(), None),
        ("orthanc:http://b".into(), None),
    ];
    s.held_elsewhere
        .insert("orthanc:http://a".into(), "host<1>:42:ab".into());
    let html = render(&s);
    assert!(
        html.contains("watched by host&lt;1&gt;:42:ab (shared ledger)"),
        "{html}"
    );
    assert_eq!(html.matches(">elsewhere<").count(), 1, "{html}");
    assert_eq!(html.matches(">starting<").count(), 1, "{html}");
}
