//! Backends wrapped to watch what the controller asks of them — one generic wrapper,
//! tower-style (the same trait outside as inside), for the benchmark's timings and the drill's
//! audit trail.
//!
//! [`Watched`] implements [`DnsBackend`], [`ReplicationBackend`] and [`StateStore`] for any
//! backend that implements them, forwarding every method (the replication backend's
//! background work too) and telling a [`Watcher`] about each call that changes something:
//! a journal save, a DNS change, a fence, promote, reprotect or integrity request.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idns_core::{
    BackendError, DnsBackend, DnsCapabilities, DnsChange, DnsName, IntegrityReport,
    IntegrityRequest, Journal, OpContext, Promoted, Propagation, Published, ReplicationBackend,
    ReplicationStatus, ResourceId, SiteId, StateStore, Stored,
};

/// A call a [`Watcher`] is told about.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Call<'a> {
    /// A journal save.
    Save,
    /// A DNS change.
    Apply(&'a DnsChange),
    /// A fence of `resource` at `site`.
    Fence {
        /// The resource.
        resource: &'a ResourceId,
        /// The site.
        site: &'a SiteId,
        /// The step's context.
        ctx: &'a OpContext,
    },
    /// A promotion of `resource` at `site`.
    Promote {
        /// The resource.
        resource: &'a ResourceId,
        /// The site.
        site: &'a SiteId,
        /// The step's context.
        ctx: &'a OpContext,
    },
    /// Reverse replication of `resource` to follow `primary`.
    Reprotect {
        /// The resource.
        resource: &'a ResourceId,
        /// The primary to follow.
        primary: &'a SiteId,
        /// The step's context.
        ctx: &'a OpContext,
    },
    /// An integrity request.
    Integrity {
        /// The resource.
        resource: &'a ResourceId,
        /// The site.
        site: &'a SiteId,
        /// What was asked.
        request: &'a IntegrityRequest,
        /// The step's context.
        ctx: &'a OpContext,
    },
}

impl std::fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Save => f.write_str("save the journal"),
            Call::Apply(change) => {
                write!(f, "publish {} at epoch {}", change.records, change.epoch)
            }
            Call::Fence { resource, site, .. } => write!(f, "fence {resource} at {site}"),
            Call::Promote { resource, site, .. } => write!(f, "promote {resource} at {site}"),
            Call::Reprotect {
                resource, primary, ..
            } => write!(f, "reprotect {resource} to follow {primary}"),
            Call::Integrity {
                resource,
                site,
                request,
                ..
            } => {
                let what = match request {
                    IntegrityRequest::Check => "check",
                    IntegrityRequest::Mark { .. } => "write markers into",
                    IntegrityRequest::Verify { .. } => "verify markers in",
                };
                write!(f, "{what} {resource} at {site}")
            }
        }
    }
}

/// What a call returned, as a [`Watcher`] sees it: the integrity report of an integrity
/// request, nothing of the others.
pub type Returned<'a> = Result<Option<&'a IntegrityReport>, &'a BackendError>;

/// Told about every call a [`Watched`] backend forwards that changes something.
#[async_trait]
pub trait Watcher: Send + Sync + Debug + 'static {
    /// Before the call reaches the backend (the default does nothing).
    async fn before(&self, call: Call<'_>) {
        let _ = call;
    }

    /// After it returned: when it started, how long it took, what it returned.
    fn after(&self, call: Call<'_>, started: Instant, took: Duration, returned: Returned<'_>);
}

/// A backend (or store) that tells `W` about the calls it forwards to `B`.
#[derive(Debug)]
pub struct Watched<B, W> {
    inner: B,
    watcher: Arc<W>,
}

impl<B, W: Watcher> Watched<B, W> {
    /// Wraps `inner`.
    pub fn new(inner: B, watcher: Arc<W>) -> Self {
        Watched { inner, watcher }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn watch<T>(
        &self,
        call: Call<'_>,
        work: impl Future<Output = Result<T, BackendError>>,
        report: impl Fn(&T) -> Option<&IntegrityReport>,
    ) -> Result<T, BackendError> {
        self.watcher.before(call).await;
        let started = Instant::now();
        let result = work.await;
        let returned = match &result {
            Ok(value) => Ok(report(value)),
            Err(e) => Err(e),
        };
        self.watcher
            .after(call, started, started.elapsed(), returned);
        result
    }
}

#[async_trait]
impl<B: StateStore, W: Watcher> StateStore for Watched<B, W> {
    async fn load(&self) -> Result<Option<Stored>, BackendError> {
        self.inner.load().await
    }

    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError> {
        let save = self.inner.save(journal, expected);
        self.watch(Call::Save, save, |_| None).await
    }
}

#[async_trait]
impl<B: DnsBackend, W: Watcher> DnsBackend for Watched<B, W> {
    fn capabilities(&self) -> DnsCapabilities {
        self.inner.capabilities()
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.inner.read(zone, name).await
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        self.watch(Call::Apply(change), self.inner.apply(change), |_| None)
            .await
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        self.inner.verify(change, timeout).await
    }
}

#[async_trait]
impl<B: ReplicationBackend, W: Watcher> ReplicationBackend for Watched<B, W> {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        self.inner.status(resource).await
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let call = Call::Fence {
            resource,
            site,
            ctx,
        };
        self.watch(call, self.inner.fence(resource, site, ctx), |_| None)
            .await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        let call = Call::Promote {
            resource,
            site,
            ctx,
        };
        self.watch(call, self.inner.promote(resource, site, ctx), |_| None)
            .await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let call = Call::Reprotect {
            resource,
            primary,
            ctx,
        };
        let work = self.inner.reprotect(resource, primary, wait, ctx);
        self.watch(call, work, |_| None).await
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        let call = Call::Integrity {
            resource,
            site,
            request,
            ctx,
        };
        let work = self.inner.integrity(resource, site, request, ctx);
        self.watch(call, work, |r| Some(r)).await
    }

    async fn run(&self, resource: &ResourceId) -> Result<(), BackendError> {
        self.inner.run(resource).await
    }
}
