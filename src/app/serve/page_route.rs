//! `GET /`: the status page for operators (rendered by [`super::page`]). Read-only: the route
//! answers GET (and HEAD) only, and reads the ledger through a read-only connection, as
//! `segbridge status` does while the daemon writes.
//!
//! Who may read it: with a token the operator configured (`SEGBRIDGE_HOOK_TOKEN`, required off
//! loopback), the same token as the hooks, as `Authorization: Bearer TOKEN` or as the password
//! of HTTP Basic authentication (any user name), which a browser asks for by itself; never in
//! the URL, where it would end in logs and history. Without one the endpoint is on loopback
//! (`bind` refuses otherwise), and the page answers only requests addressed to a loopback name
//! (`Host: 127.0.0.1:…`, `localhost:…`, `[::1]:…`): a web page that rebinds its own domain to
//! 127.0.0.1 cannot read it. The hook's generated token is not asked for: it lives in a file the
//! operator's browser cannot offer, and the page changes nothing.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::page::{self, Snapshot};
use super::{constant_time_eq, AppState, Refusal};
use crate::ledger::Ledger;
use crate::model::LabelStatus;
use crate::monai::Secret;

/// What the status page reads, and who may read it.
#[derive(Clone)]
pub struct PageConfig {
    /// The ledger, opened read-only for each view.
    pub state: crate::ledger::StateAt,
    pub dataset: String,
    /// The token the operator configured; None: loopback only, no token.
    pub token: Option<Secret>,
}

/// The Content-Security-Policy of the page: nothing but its own inline style.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn answer(code: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    answer(code, "text/plain; charset=utf-8", body.into() + "\n")
}

/// Whether `headers` carry `token`: as a bearer token, or as a Basic password.
fn has_token(token: &Secret, headers: &HeaderMap) -> bool {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let want = token.expose().as_bytes();
    if let Some(got) = auth.strip_prefix("Bearer ") {
        return constant_time_eq(got.as_bytes(), want);
    }
    let basic = auth.strip_prefix("Basic ").and_then(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
    });
    let password = basic.as_deref().and_then(|b| {
        let colon = b.iter().position(|&c| c == b':')?;
        Some(&b[colon + 1..])
    });
    password.is_some_and(|p| constant_time_eq(p, want))
}

/// Whether the request is addressed to a loopback name (its `Host` header).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// None when the request may read the page, else the answer that refuses it.
fn refusal(cfg: &PageConfig, headers: &HeaderMap) -> Option<Response> {
    match &cfg.token {
        Some(token) if !has_token(token, headers) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "the status page needs the hook token: Authorization: Bearer TOKEN, or TOKEN as \
                 the password (any user name)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"segbridge\", charset=\"UTF-8\""),
            );
            Some(r)
        }
        Some(_) => None,
        None if loopback_host(headers) => None,
        None => Some(text(
            StatusCode::FORBIDDEN,
            "without SEGBRIDGE_HOOK_TOKEN the status page answers only requests to a loopback \
             name (127.0.0.1, localhost, [::1])",
        )),
    }
}

/// The `status` filter of the query: None for all labels.
fn filter(query: Option<&str>) -> Result<Option<LabelStatus>, String> {
    let query = query.unwrap_or("");
    let Some((_, v)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "status")
    else {
        return Ok(None);
    };
    if v.is_empty() || v == "all" {
        return Ok(None);
    }
    LabelStatus::parse(&v).map(Some).ok_or_else(|| {
        let names: Vec<&str> = LabelStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status; one of: all, {}", names.join(", "))
    })
}

/// What the ledger knows, read-only.
fn read(cfg: &PageConfig, filter: Option<LabelStatus>) -> Result<Snapshot, String> {
    let ledger = Ledger::open_read_only(&cfg.state).map_err(|e| e.to_string())?;
    // bounded: counts, and the rows shown (never every label nor every unreadable file)
    let r = ledger
        .overview(Some(page::PROBLEMS_SHOWN))
        .map_err(|e| e.to_string())?;
    let labels = ledger
        .recent_labels(filter, page::LABELS_SHOWN)
        .map_err(|e| e.to_string())?;
    Ok(Snapshot {
        now: crate::util::time::now(),
        dataset: cfg.dataset.clone(),
        outbox_depth: r.outbox_depth,
        outbox_oldest: r.outbox_oldest,
        outbox_last_error: r.outbox_last_error,
        last_notify: r.last_notify,
        images_notified: r.images_notified,
        entries_sent: r.entries_sent,
        entries_sent_by_hand: r.entries_sent_by_hand,
        labels_by_status: r.labels_by_status,
        labels_gone: r.labels_gone,
        filter,
        labels,
        problems: r.problems,
        problems_total: r.problems_total,
        ..Snapshot::default()
    })
}

pub(super) async fn status_page(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let cfg = st.page.clone();
    if let Some(refused) = refusal(&cfg, &headers) {
        tracing::debug!("status page request refused");
        return refused;
    }
    let filter = match filter(query.as_deref()) {
        Ok(f) => f,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    // the ledger read, and meanwhile the CL job from its cache (a stale answer refreshed in
    // the background, waited for a moment at most)
    let (snap, cl) = tokio::join!(
        tokio::task::spawn_blocking(move || read(&cfg, filter)),
        st.cl.view()
    );
    let mut snap = match snap {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!("status page: cannot read the ledger: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the ledger");
        }
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the ledger"),
    };
    snap.cl = cl;
    let m = &st.metrics;
    snap.api_reachable = m.api_down.load(Ordering::Relaxed) == 0;
    snap.sources = st
        .sources
        .iter()
        .map(|name| (name.clone(), m.source_health(name)))
        .collect();
    if let Some(c) = m.cluster() {
        snap.held_elsewhere = c
            .leases
            .into_iter()
            .filter(|l| l.holder != c.holder && l.expires_in_s >= 0)
            .filter_map(|l| Some((l.name.strip_prefix("source:")?.to_string(), l.holder)))
            .collect();
    }
    snap.hooks_received = m.hooks_received.load(Ordering::Relaxed);
    snap.hooks_refused = Refusal::ALL
        .iter()
        .map(|r| r.counter(m).load(Ordering::Relaxed))
        .sum();
    answer(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page::render(&snap),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn cfg(token: Option<&str>) -> PageConfig {
        PageConfig {
            state: crate::ledger::StateAt::File(std::path::PathBuf::from("/nonexistent")),
            dataset: "ds".into(),
            token: token.map(Secret::new),
        }
    }

    #[test]
    fn without_a_token_only_loopback_names_are_answered() {
        let c = cfg(None);
        for host in [
            "127.0.0.1:8765",
            "localhost:8765",
            "LOCALHOST",
            "[::1]:8765",
            "127.0.0.2",
        ] {
            assert!(refusal(&c, &headers(&[("host", host)])).is_none(), "{host}");
        }
        for host in [
            "evil.example:8765",
            "192.168.1.5:8765",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            let r = refusal(&c, &headers(&[("host", host)])).expect(host);
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{host}");
        }
        assert!(refusal(&c, &HeaderMap::new()).is_some());
    }

    #[test]
    fn with_a_token_bearer_or_basic_password_is_needed() {
        let c = cfg(Some("s3cret"));
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let ok = [
            "Bearer s3cret".to_string(),
            basic("operator:s3cret"),
            basic(":s3cret"),
        ];
        for a in &ok {
            let h = headers(&[("host", "evil.example"), ("authorization", a)]);
            assert!(refusal(&c, &h).is_none(), "{a}");
        }
        let refused = [
            "Bearer wrong".to_string(),
            "Bearer s3cret2".to_string(),
            basic("s3cret:"),
            basic("s3cret"),
            basic("operator:wrong"),
            "Basic !!!".to_string(),
            "s3cret".to_string(),
        ];
        for a in &refused {
            let h = headers(&[("host", "127.0.0.1"), ("authorization", a)]);
            let r = refusal(&c, &h).expect(a);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert!(r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic "));
        }
        // a loopback Host is no substitute for the token
        assert!(refusal(&c, &headers(&[("host", "127.0.0.1")])).is_some());
    }

    #[test]
    fn the_filter_is_a_status_or_all() {
        assert_eq!(filter(None), Ok(None));
        assert_eq!(filter(Some("")), Ok(None));
        assert_eq!(filter(Some("status=all")), Ok(None));
        assert_eq!(
            filter(Some("x=1&status=invalid")),
            Ok(Some(LabelStatus::Invalid))
        );
        assert_eq!(filter(Some("status=gone")), Ok(Some(LabelStatus::Gone)));
        assert!(filter(Some("status=%3Cscript%3E"))
            .unwrap_err()
            .contains("one of: all, gone, invalid"));
    }

    #[test]
    fn every_answer_is_uncached_unsniffed_and_under_the_policy() {
        let r = text(StatusCode::BAD_REQUEST, "x");
        let h = r.headers();
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'; style-src 'unsafe-inline'"));
    }
}
