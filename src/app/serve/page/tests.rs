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
    s.problems = (0..PROBLEMS_SHOWN + 3)
        .map(|i| Problem {
            path: format!("/exports/f{i}"),
            reason: "not DICOM".into(),
        })
        .collect();
    let page = render(&s);
    assert!(page.contains("The 200 first seen most recently, of 1000 (800 more not shown)."));
    assert_eq!(page.matches("<td>ready</td>").count(), LABELS_SHOWN);
    assert!(page.contains("53 in the last listing (3 more not shown)."));
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
