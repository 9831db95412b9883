//! The CL job on the status page: what [`crate::app::cl`] says of the experiment's CL job (the
//! same as `segbridge status --experiment`), kept in a small cache so that page views do not
//! call the API. A view finds the answer older than [`REFRESH`] (or none yet) and starts one
//! refresh in the background; it waits at most [`WAIT`] for it, then shows what the cache holds.
//! A refresh gives up after [`TIMEOUT`]: a slow or down API shows as "unreachable" with the age
//! of the last good answer, and never holds the page.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::page::ClView;
use crate::app::cl::{self, ClSummary};
use crate::ledger::{Ledger, StateAt};
use crate::monai::{ApiConfig, ApiError, Client};

/// An answer younger than this is shown as it is; an older one is asked again.
pub const REFRESH: Duration = Duration::from_secs(super::page::CL_REFRESH_SECS);
/// A refresh gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// A view waits at most this long for the refresh it started.
pub const WAIT: Duration = Duration::from_secs(1);

/// The experiment's CL job for the page; cheap to clone (one cache shared by every view).
/// Without an experiment it holds nothing, and the page says how to give one.
#[derive(Clone, Default)]
pub struct ClWatch {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    experiment: String,
    dataset: Option<String>,
    state: StateAt,
    client: tokio::sync::Mutex<Client>,
    cache: Mutex<Cache>,
    /// Counts finished refreshes: a view waits for it to move.
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct Cache {
    /// The last good answer, and when it came (Unix seconds).
    last: Option<(i64, ClSummary)>,
    /// Why the last refresh failed, as shown (None: it did not).
    error: Option<String>,
    /// When the last refresh started.
    asked: Option<Instant>,
    in_flight: bool,
}

impl ClWatch {
    /// No experiment: the page says how to give one.
    pub fn none() -> ClWatch {
        ClWatch::default()
    }

    /// The CL job of `experiment`, asked of the API `api` describes (one try, bounded by
    /// [`TIMEOUT`]); the images notified to `dataset` since the last round counted in `state`.
    pub fn new(
        experiment: &str,
        mut api: ApiConfig,
        dataset: Option<String>,
        state: StateAt,
    ) -> Result<ClWatch, ApiError> {
        api.timeout = api.timeout.min(TIMEOUT);
        api.retry_for = Duration::ZERO;
        Ok(ClWatch {
            inner: Some(Arc::new(Inner {
                experiment: experiment.to_string(),
                dataset,
                state,
                client: tokio::sync::Mutex::new(Client::new(api)?),
                cache: Mutex::new(Cache::default()),
                done: watch::channel(0).0,
            })),
        })
    }

    /// What `serve` shows: the experiment of `--experiment`, if any.
    pub fn from_settings(s: &crate::app::settings::Settings) -> Result<ClWatch, ApiError> {
        match &s.pacs.experiment {
            Some(exp) => ClWatch::new(exp, s.api_config(), s.dataset.clone(), s.state.clone()),
            None => Ok(ClWatch::none()),
        }
    }

    /// What the page shows now (None: no experiment). Starts a refresh when the answer is
    /// stale, and waits at most [`WAIT`] for it.
    pub async fn view(&self) -> Option<ClView> {
        let inner = self.inner.as_ref()?;
        let mut done = inner.done.subscribe();
        let started = {
            let mut c = inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            let stale = c.asked.is_none_or(|t| t.elapsed() >= REFRESH);
            if stale && !c.in_flight {
                c.in_flight = true;
                c.asked = Some(Instant::now());
                true
            } else {
                c.in_flight
            }
        };
        if started {
            let refresh = Arc::clone(inner);
            tokio::spawn(async move { refresh.refresh().await });
            let _ = tokio::time::timeout(WAIT, done.changed()).await;
        }
        Some(inner.shown())
    }
}

impl Inner {
    async fn refresh(self: Arc<Self>) {
        let asked = async {
            let mut client = self.client.lock().await;
            cl::ask(&mut client, &self.experiment).await
        };
        let result = match tokio::time::timeout(TIMEOUT, asked).await {
            Err(_) => Err(format!(
                "API unreachable: no answer in {} s",
                TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("API unreachable: {}", crate::util::error_chain(&e))),
            Ok(Ok(answer)) => {
                let me = Arc::clone(&self);
                tokio::task::spawn_blocking(move || {
                    let ledger = Ledger::open_read_only(&me.state).map_err(|e| e.to_string())?;
                    answer
                        .summarize(&ledger, me.dataset.as_deref())
                        .map_err(|e| format!("cannot read the ledger: {e}"))
                })
                .await
                .unwrap_or_else(|e| Err(format!("cannot read the ledger: {e}")))
            }
        };
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(summary) => {
                    c.last = Some((crate::util::time::now(), summary));
                    c.error = None;
                }
                Err(why) => {
                    tracing::debug!("status page: the CL job of {}: {why}", self.experiment);
                    c.error = Some(why);
                }
            }
            c.in_flight = false;
        }
        self.done.send_modify(|n| *n += 1);
    }

    fn shown(&self) -> ClView {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        ClView {
            experiment: self.experiment.clone(),
            last: c.last.clone(),
            error: c.error.clone(),
        }
    }
}
