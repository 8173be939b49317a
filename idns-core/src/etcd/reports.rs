//! [`ReportBoard`]: observers at every site publish their probe reports in etcd, each bound to
//! its observer's lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::client::{Client, show_key};
use super::kv::{KeyValue, LeaseId};
use super::leader::check_ttl;
use super::require_non_empty;
use crate::error::{BackendError, ConfigError, Problems};
use crate::id::{ObserverId, ProbeId, SiteId};
use crate::probe::ProbeReport;

/// The reports of every observer in etcd, under `<prefix>/reports/<observer>/<site>/<probe>`
/// (one key per probe, holding the last [`ProbeReport`] as JSON).
///
/// Publishing: [`publish`](Self::publish) writes a report of this board's observer, bound to
/// the observer's own lease, which the board grants on the first publish and keeps alive every
/// third of its TTL on a background task. When the observer stops (its board dropped, its
/// process dead, its site cut off), the lease lapses after its TTL and every key of the
/// observer vanishes with it: that is how an observer goes **silent**. A lease that lapsed
/// while the observer lived (a long cut) is replaced by the next publish.
///
/// Silence is not "down": the election treats an observer with no report as silent, and a
/// silent observer abstains (it has no verdict on any site); it never counts as a vote that a
/// site is down. A controller feeds what [`read`](Self::read) returns to the election as
/// ordinary `ProbeReport` inputs; an observer whose keys are gone simply sends nothing.
///
/// Reading: [`read`](Self::read) reads every observer's keys. A key whose path is not
/// `<observer>/<site>/<probe>`, whose value does not decode, or whose report names another
/// observer, site or probe than its path is skipped with a warning naming the key, and listed
/// in [`Reports::rejected`]: a peer that lies about who it is or what it probed is never
/// trusted.
///
/// Dropping the board stops the keep-alives (the reports lapse after the TTL);
/// [`close`](Self::close) revokes the lease, so they vanish at once.
///
/// ```no_run
/// # async fn run(client: idns_core::etcd::Client, report: idns_core::ProbeReport)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use idns_core::ObserverId;
/// use idns_core::etcd::ReportBoard;
///
/// let board = ReportBoard::start(
///     client,
///     "/idns/app.example.com",
///     ObserverId::try_from("site-a")?,
///     Duration::from_secs(10),
/// )?;
/// board.publish(&report).await?;
/// let read = board.read().await?;
/// for report in read.reports {
///     // Feed it to the election as any other report.
///     # let _ = report;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReportBoard {
    client: Client,
    /// `<prefix>/reports/`.
    prefix: String,
    observer: ObserverId,
    ttl: Duration,
    lease: Arc<Mutex<Option<LeaseId>>>,
    keeper: JoinHandle<()>,
}

/// What [`ReportBoard::read`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    /// The reports whose key and content agree, in key order (by observer, site, probe).
    pub reports: Vec<ProbeReport>,
    /// The keys skipped, each with why.
    pub rejected: Vec<Rejected>,
}

/// A key of the board that was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The key, as written (invalid UTF-8 replaced).
    pub key: String,
    /// Why it was skipped.
    pub why: String,
}

impl ReportBoard {
    /// The board of deployment `prefix` (keys under `<prefix>/reports/`; a trailing `/` of the
    /// prefix is dropped) for `observer`, whose lease has a TTL of `ttl` (1s..=1h): how long
    /// its reports outlive it.
    ///
    /// Fails when the prefix is empty or the TTL out of bounds.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(
        client: Client,
        prefix: &str,
        observer: ObserverId,
        ttl: Duration,
    ) -> Result<Self, ConfigError> {
        let prefix = prefix.trim_end_matches('/');
        let mut problems = Problems::new();
        require_non_empty(
            &mut problems,
            "prefix",
            prefix,
            "e.g. /idns/app.example.com",
        );
        check_ttl(&mut problems, "ttl", ttl);
        problems.finish()?;
        let lease = Arc::new(Mutex::new(None));
        let keeper = tokio::spawn(keep_alive(
            client.clone(),
            observer.clone(),
            ttl / 3,
            lease.clone(),
        ));
        Ok(Self {
            client,
            prefix: format!("{prefix}/reports/"),
            observer,
            ttl,
            lease,
            keeper,
        })
    }

    /// The observer whose reports this board publishes.
    pub fn observer(&self) -> &ObserverId {
        &self.observer
    }

    /// The key a report is published under.
    pub fn key_of(&self, report: &ProbeReport) -> String {
        format!(
            "{}{}/{}/{}",
            self.prefix, report.observer, report.site, report.probe
        )
    }

    /// Publishes `report` (replacing the last one of its probe), bound to the observer's
    /// lease.
    ///
    /// Fails with [`BackendError::Invalid`] when the report is another observer's, and with
    /// etcd's error when the lease cannot be granted or the key written.
    pub async fn publish(&self, report: &ProbeReport) -> Result<(), BackendError> {
        let key = self.key_of(report);
        if report.observer != self.observer {
            return Err(BackendError::Invalid(format!(
                "etcd key {}: observer {}'s board cannot publish a report of observer {}",
                show_key(key.as_bytes()),
                self.observer,
                report.observer
            )));
        }
        let value = serde_json::to_vec(report).map_err(|e| {
            BackendError::Invalid(format!(
                "etcd key {}: cannot encode the report: {e}",
                show_key(key.as_bytes())
            ))
        })?;
        let mut lease = self.lease.lock().await;
        let id = match *lease {
            Some(id) => id,
            None => self.grant(&mut lease).await?,
        };
        match self.client.put(&key, &value, Some(id)).await {
            // The lease lapsed (a long cut): the observer's other reports are gone with it.
            Err(BackendError::NotFound(e)) => {
                tracing::warn!(observer = %self.observer, lease = %id, error = %e,
                    "the observer's lease lapsed; granting a new one");
                let id = self.grant(&mut lease).await?;
                self.client.put(&key, &value, Some(id)).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    async fn grant(&self, lease: &mut Option<LeaseId>) -> Result<LeaseId, BackendError> {
        let granted = self.client.lease_grant(self.ttl).await?;
        *lease = Some(granted.id);
        tracing::debug!(observer = %self.observer, lease = %granted.id, ttl = granted.ttl,
            "granted the observer's lease");
        Ok(granted.id)
    }

    /// Reads every observer's reports; untrusted keys are skipped and listed (see the type's
    /// documentation).
    pub async fn read(&self) -> Result<Reports, BackendError> {
        let range = self.client.get_prefix(&self.prefix).await?;
        let mut out = Reports::default();
        for kv in &range.kvs {
            match self.decode(kv) {
                Ok(report) => out.reports.push(report),
                Err(why) => {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    tracing::warn!(key = %key, %why, "skipped an untrusted probe report");
                    out.rejected.push(Rejected { key, why });
                }
            }
        }
        Ok(out)
    }

    /// Decodes one key, checking that its path and content agree.
    fn decode(&self, kv: &KeyValue) -> Result<ProbeReport, String> {
        let path = kv
            .key
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or("the key is not valid UTF-8 under the board's prefix")?;
        let parts: Vec<&str> = path.split('/').collect();
        let [observer, site, probe] = parts.as_slice() else {
            return Err(format!(
                "the path {path:?} is not <observer>/<site>/<probe>"
            ));
        };
        let observer = ObserverId::try_from(*observer).map_err(|e| e.to_string())?;
        let site = SiteId::try_from(*site).map_err(|e| e.to_string())?;
        let probe = ProbeId::try_from(*probe).map_err(|e| e.to_string())?;
        let report: ProbeReport = serde_json::from_slice(&kv.value)
            .map_err(|e| format!("the value is not a probe report ({e})"))?;
        if (&report.observer, &report.site, &report.probe) != (&observer, &site, &probe) {
            return Err(format!(
                "the path names observer {observer}, site {site}, probe {probe}, but the \
                 report is of observer {}, site {}, probe {}",
                report.observer, report.site, report.probe
            ));
        }
        Ok(report)
    }

    /// Stops the keep-alives and revokes the observer's lease: its reports vanish at once
    /// (it goes silent). A lease already gone is not an error.
    pub async fn close(self) -> Result<(), BackendError> {
        self.keeper.abort();
        let lease = self.lease.lock().await.take();
        match lease {
            None => Ok(()),
            Some(id) => match self.client.lease_revoke(id).await {
                Ok(_) | Err(BackendError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }
}

impl Drop for ReportBoard {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Keeps the observer's lease alive every `interval`; forgets it when etcd says it is gone,
/// so that the next publish grants a new one.
async fn keep_alive(
    client: Client,
    observer: ObserverId,
    interval: Duration,
    lease: Arc<Mutex<Option<LeaseId>>>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(id) = *lease.lock().await else {
            continue;
        };
        match client.lease_keepalive(id).await {
            Ok(_) => {}
            Err(BackendError::NotFound(e)) => {
                tracing::warn!(%observer, lease = %id, error = %e,
                    "the observer's lease lapsed: its reports are gone until it publishes again");
                let mut held = lease.lock().await;
                if *held == Some(id) {
                    *held = None;
                }
            }
            Err(e) => {
                tracing::warn!(%observer, lease = %id, error = %e, "keep-alive of the observer's lease failed");
            }
        }
    }
}
