//! Disk-image and file-tree replication with block-level deltas, point-in-time checkpoints
//! and blake3 manifests.
//!
//! A *resource* is a consistency group of files — the disk images (raw or qcow2) of every VM
//! of an application, or a directory tree — kept at each site under a root directory (a local
//! path or a mounted volume). The primary site's *live copy* is what the application uses;
//! every other site keeps *checkpoints* of it:
//!
//! - **Block-level delta.** Files are cut into fixed-size chunks (a power of two, default
//!   64 KiB) hashed with blake3; only chunks whose hash differs from the destination's are
//!   written. Files whose size and modification time did not change are not read at all
//!   (switch off with `trust_mtime = false`). All-zero chunks become holes, so sparse files
//!   stay sparse.
//! - **Point-in-time checkpoints.** A pass stages the changed chunks of the whole group in a
//!   staging directory, fsyncs, and commits them with one rename; a crash before the commit
//!   leaves the previous checkpoint untouched, a crash after it is finished on the next call.
//!   The newest checkpoint is kept materialized (`<root>/base`), the `keep - 1` before it as
//!   reverse deltas (only the chunks that changed), restorable with
//!   [`ImageReplication::restore`].
//! - **Manifests.** Every checkpoint lists path, size, modification time and the file's
//!   blake3 (the hash `b3sum` prints); per-chunk hashes come from the same read.
//!   [`IntegrityRequest::Check`] verifies a copy file by file against it.
//! - **Roles.** [`promote`](ReplicationBackend::promote) moves the newest checkpoint into the
//!   live copy (a rename; when the old primary is fenced and reachable, a final pass first,
//!   so a planned switchover loses nothing). [`fence`](ReplicationBackend::fence) marks a
//!   site's live copy fenced: the library neither writes to it nor takes it as the primary
//!   (stopping the VMs that use it is the job of the runbook around it).
//!   [`reprotect`](ReplicationBackend::reprotect) turns the other sites into replicas of the
//!   new primary: an old live copy is adopted as the base and the next pass compares chunk
//!   hashes on both sides, so only differing chunks move back; the chunks it overwrites (writes
//!   the old primary took after the split) are kept as the reverse delta of that checkpoint.
//! - **Drill markers.** [`IntegrityRequest::Mark`] writes marker files under
//!   `.idns-markers/<label>/` in the live copy and returns their manifest;
//!   [`IntegrityRequest::Verify`] checks it at any site.
//! - **Drills.** With `ctx.drill`, `promote` copies the newest checkpoint to `<root>/drill`
//!   (sparse) and `fence` deletes it; integrity requests then work on that copy.
//! - **Epochs** are kept per resource in every site's state file (written atomically), so a
//!   restarted process still refuses stale ones.
//!
//! Trust and cost: a pass trusts the destination's chunk hashes from its previous checkpoint
//! (it never reads the destination, except after a reprotect), so silent damage at the
//! destination is found by `Check`, which reads and hashes everything. `Check` on a live
//! copy compares it with the checkpoint it was promoted from, skipping files written since
//! the promotion; a primary that was never promoted has no such evidence and only gets its
//! manifest back.
//!
//! Not done here: quiescing the application (a pass re-reads a file that changed while it
//! was read, and fails after three tries: freeze or snapshot the VMs around passes for
//! application consistency), copying over a network (sites are paths; mount remote volumes),
//! hard links inside the tree, extended attributes.
//!
//! Safety on the failover path:
//! - **Mode bits.** Copies get the read, write and execute bits only; setuid, setgid and
//!   sticky bits (which would belong to the replicating process's user) are copied only with
//!   `preserve_special_bits`, and then with each file's owner and group, set first; where
//!   the owner cannot be set (not root), the special bits are dropped with a warning.
//! - **Site lock.** A pass, promotion or fence holds an exclusive `flock` on `<root>/lock`
//!   (never deleted). The system releases it when its holder ends, however it ends; a second
//!   holder, in this process or another, is refused at once with an error naming the file.
//! - **Status writes nothing.** A site without a state file is shown with the role its first
//!   use would give it (or `unknown`); state files are written only by operations.
//! - **A home site rebuilt empty.** When no site has state but some site cannot be read (or
//!   holds checkpoints without a state file), the home site may be new or may have lost its
//!   volume: it is not made primary by first use, only by a `promote` with
//!   [`OpContext::force`]. A replica with no complete checkpoint is promoted only with force
//!   too.
//! - **One writable copy.** `promote` is refused while another site of the resource can be
//!   read and is primary (not fenced), unless forced ([`OpContext::force`]); the error names
//!   that site. Fence it first (the failover runbook's order). A site whose root is missing
//!   or cannot be read is unreachable and does not stop a promotion. A drill promotion, and
//!   a promotion of the site that is already primary, are never refused for this.

mod config;
mod hash;
mod pass;
mod patch;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use idns_core::{
    BackendError, Epoch, IntegrityReport, IntegrityRequest, Manifest, ManifestEntry, Mismatch,
    OpContext, Promoted, ReplicationBackend, ReplicationStatus, ResourceId, Role, SiteId,
    SiteReplication,
};
use tokio::sync::broadcast;

pub use crate::progress::{Operation, Progress};
pub use config::{
    ImageConfig, ImageResourceSpec, ImageSiteSpec, ImageSpec, ResourceConfig, SiteConfig,
};
pub use pass::PassReport;
pub use store::{Checkpoint, Entry, EntryKind};

use crate::fsutil::{IoContext, SpecialBits, copy_tree, remove_tree, safe_join, sync_dir};
use pass::Env;
use store::{Base, Evidence, SiteLock, SiteState, SiteStore, StoredRole};

/// The directory markers are written to, inside a copy.
pub const MARKER_DIR: &str = ".idns-markers";

/// Where a resource's copies are at one site.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SitePaths {
    /// The site's root (state, checkpoints, drill copy).
    pub root: PathBuf,
    /// The live copy (used while the site is primary or fenced).
    pub live: PathBuf,
    /// The newest checkpoint, materialized (used while the site is a replica).
    pub base: PathBuf,
    /// The drill copy.
    pub drill: PathBuf,
}

/// The image and file-tree [`ReplicationBackend`]. Cheap to clone; clones share state.
///
/// See the [module documentation](self) for what it does, and the crate documentation for
/// an example.
#[derive(Clone)]
pub struct ImageReplication {
    inner: Arc<Inner>,
}

struct Inner {
    config: ImageConfig,
    locks: BTreeMap<ResourceId, Arc<tokio::sync::Mutex<()>>>,
    highest: std::sync::Mutex<BTreeMap<ResourceId, Epoch>>,
    progress: broadcast::Sender<Progress>,
}

impl std::fmt::Debug for ImageReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self
            .inner
            .config
            .resources
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        f.debug_struct("ImageReplication")
            .field("resources", &ids)
            .finish()
    }
}

type Cancel<'a> = &'a (dyn Fn() -> bool + Sync);

impl ImageReplication {
    /// A backend for the configured resources. Does no I/O: each site's state is created on
    /// first use by an operation (the home site as primary, the others as replicas with no
    /// checkpoint yet; see the [module documentation](self) for a home site that may have
    /// been rebuilt empty). [`status`](ReplicationBackend::status) never creates it.
    pub fn new(config: ImageConfig) -> Self {
        let locks = config
            .resources
            .iter()
            .map(|r| (r.id.clone(), Arc::new(tokio::sync::Mutex::new(()))))
            .collect();
        let (progress, _) = broadcast::channel(256);
        Self {
            inner: Arc::new(Inner {
                config,
                locks,
                highest: std::sync::Mutex::new(BTreeMap::new()),
                progress,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ImageConfig {
        &self.inner.config
    }

    /// Progress events of passes, drill copies and checks (for progress bars).
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// Where the resource's copies are at `site`.
    pub fn paths(&self, resource: &ResourceId, site: &SiteId) -> Option<SitePaths> {
        let s = self.inner.config.resource(resource)?.site(site)?;
        let store = SiteStore::new(s);
        Some(SitePaths {
            root: store.root.clone(),
            live: store.live.clone(),
            base: store.base(),
            drill: store.drill(),
        })
    }

    /// One pass from the primary to every replica that follows it. Fails when no site, or
    /// more than one, is primary.
    pub async fn sync(&self, resource: &ResourceId) -> Result<Vec<PassReport>, BackendError> {
        self.blocking(resource, None, |inner, cfg, cancel| {
            sync_now(inner, cfg, cancel)
        })
        .await
    }

    /// Continuous mode: a pass every `interval` (from the configuration), forever. Failed
    /// passes are logged and retried at the next interval; status reports the age of the
    /// newest complete checkpoint as each replica's lag. Returns only for an unknown
    /// resource; stop it by dropping or aborting the task that runs it. A controller built
    /// with this backend runs it for every resource
    /// ([`ReplicationBackend::run`]); do not spawn it by hand as well.
    pub async fn run_continuous(&self, resource: &ResourceId) -> Result<(), BackendError> {
        let interval = self
            .inner
            .config
            .resource(resource)
            .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))?
            .interval;
        loop {
            match self.sync(resource).await {
                Ok(reports) => {
                    for r in reports {
                        tracing::debug!(resource = %resource, to = %r.destination, checkpoint = r.checkpoint, "continuous pass done");
                    }
                }
                Err(e) => {
                    tracing::warn!(resource = %resource, error = %e, "continuous pass failed; retrying at the next interval")
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// The checkpoints kept at `site`, oldest first.
    pub async fn checkpoints(
        &self,
        resource: &ResourceId,
        site: &SiteId,
    ) -> Result<Vec<Checkpoint>, BackendError> {
        let site = site.clone();
        self.blocking(resource, None, move |_, cfg, _| {
            let store = store_of(cfg, &site)?;
            store
                .committed()?
                .into_iter()
                .map(|s| store.load_checkpoint(s))
                .collect()
        })
        .await
    }

    /// Materializes checkpoint `seq` of the replica at `site` into `out` (a new directory),
    /// from the newest checkpoint and the reverse deltas of the ones after `seq`.
    pub async fn restore(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        seq: u64,
        out: &Path,
    ) -> Result<(), BackendError> {
        let site = site.clone();
        let out = out.to_owned();
        self.blocking(resource, None, move |inner, cfg, cancel| {
            let store = store_of(cfg, &site)?;
            let _lock = store.lock()?;
            let mut state = state_of(cfg, &site)?;
            with_env(inner, cfg, cancel, |env| {
                pass::recover(&store, &mut state, env)?;
                pass::materialize(&store, &state, seq, &out, env)
            })
        })
        .await
    }

    /// Runs `f` on a blocking thread while holding the resource's lock; with a timeout, the
    /// work is cancelled (and waited for) when it passes.
    async fn blocking<T, F>(
        &self,
        resource: &ResourceId,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &ResourceConfig, Cancel<'_>) -> Result<T, BackendError> + Send + 'static,
    {
        let cfg = self
            .inner
            .config
            .resource(resource)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))?;
        let lock = self
            .inner
            .locks
            .get(resource)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let guard = match deadline {
            None => lock.lock_owned().await,
            Some(d) => tokio::time::timeout_at(d.into(), lock.lock_owned())
                .await
                .map_err(|_| {
                    BackendError::Timeout(format!("{resource} is busy with another operation"))
                })?,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let flag = cancel.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let cancelled = move || flag.load(Ordering::Relaxed);
            f(&inner, &cfg, &cancelled)
        });
        let joined = match deadline {
            None => (&mut task).await,
            Some(d) => match tokio::time::timeout_at(d.into(), &mut task).await {
                Ok(r) => r,
                Err(_) => {
                    cancel.store(true, Ordering::Relaxed);
                    let _ = task.await;
                    return Err(BackendError::Timeout(format!(
                        "{resource}: the operation took longer than {}",
                        humantime_serde::re::humantime::format_duration(
                            timeout.unwrap_or_default()
                        )
                    )));
                }
            },
        };
        joined.map_err(|e| BackendError::Unavailable(format!("worker thread failed: {e}")))?
    }
}

/// Runs `f` with a pass environment that sends progress to the broadcast channel.
fn with_env<T>(
    inner: &Inner,
    cfg: &ResourceConfig,
    cancel: Cancel<'_>,
    f: impl FnOnce(&Env<'_>) -> T,
) -> T {
    let send = |p: Progress| {
        let _ = inner.progress.send(p);
    };
    f(&Env {
        cfg,
        cancel,
        progress: &send,
    })
}

fn store_of(cfg: &ResourceConfig, site: &SiteId) -> Result<SiteStore, BackendError> {
    cfg.site(site)
        .map(SiteStore::new)
        .ok_or_else(|| BackendError::NotFound(format!("{} has no copy at site {site}", cfg.id)))
}

/// Every site's store and state.
struct Sites {
    slots: Vec<(SiteStore, Result<SiteState, BackendError>)>,
    /// Sites whose state was missing and is only planned: [`Sites::read`] leaves it so,
    /// [`Sites::load`] writes it.
    planned: BTreeSet<SiteId>,
    /// The home site, when it has no state and whether it is new or was rebuilt empty
    /// cannot be told (another site cannot be read, or holds checkpoints): it is made primary
    /// only by a forced promotion.
    undecided: Option<SiteId>,
}

impl Sites {
    /// Every site's state as stored, without writing anything. A site with none gets, in
    /// memory, the state its first use gives it: when no site has state and every site can
    /// be read, the home site is primary and the others follow it; otherwise a site without
    /// state is a replica with no data, except a home site that may have been rebuilt empty
    /// ([`Sites::undecided`]), which is left with an error.
    fn read(cfg: &ResourceConfig) -> Sites {
        let raw: Vec<(SiteStore, Result<Option<SiteState>, BackendError>)> = cfg
            .sites
            .iter()
            .map(|s| {
                let store = SiteStore::new(s);
                let state = store.load_state();
                (store, state)
            })
            .collect();
        let any_state = raw.iter().any(|(_, s)| matches!(s, Ok(Some(_))));
        // Sites that cannot be read, or hold checkpoints without a state file: they may
        // remember a history the home site has lost.
        let unknown: Vec<String> = raw
            .iter()
            .filter_map(|(store, s)| match s {
                Err(e) => Some(format!("{} ({e})", store.site)),
                Ok(None) if store.committed().map_or(true, |c| !c.is_empty()) => Some(format!(
                    "{} (holds checkpoints but no state file)",
                    store.site
                )),
                Ok(_) => None,
            })
            .collect();
        let fresh = !any_state && unknown.is_empty();
        let primary = raw.iter().find_map(|(_, s)| match s {
            Ok(Some(st)) if st.role == StoredRole::Primary => Some(st.site.clone()),
            _ => None,
        });
        let epoch = raw
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().and_then(|s| s.as_ref()).map(|s| s.epoch))
            .max()
            .unwrap_or(Epoch::ZERO);
        let mut planned = BTreeSet::new();
        let mut undecided = None;
        let slots = raw
            .into_iter()
            .map(|(store, state)| {
                let state = match state {
                    Ok(Some(st)) if st.resource != cfg.id || st.site != store.site => {
                        Err(BackendError::Invalid(format!(
                            "{} belongs to {} at {}, not {} at {}",
                            store.state_path().display(),
                            st.resource,
                            st.site,
                            cfg.id,
                            store.site
                        )))
                    }
                    Ok(Some(st)) => Ok(st),
                    Ok(None) if store.site == cfg.home && !any_state && !fresh => {
                        undecided = Some(store.site.clone());
                        Err(BackendError::Refused(format!(
                            "{} at {}: {} is missing and other sites cannot vouch for it: {}; \
                             the site is new or was rebuilt empty (no replicated data), so it \
                             is not made primary: bring the other sites back, or promote it \
                             with force to make it primary with what its live copy holds",
                            cfg.id,
                            store.site,
                            store.state_path().display(),
                            unknown.join(", ")
                        )))
                    }
                    Ok(None) => {
                        planned.insert(store.site.clone());
                        Ok(plan_site(cfg, &store, fresh, primary.as_ref(), epoch))
                    }
                    Err(e) => Err(e),
                };
                (store, state)
            })
            .collect();
        Sites {
            slots,
            planned,
            undecided,
        }
    }

    /// As [`Sites::read`], and writes the planned states (creating a new primary's live
    /// copy directory).
    fn load(cfg: &ResourceConfig) -> Sites {
        let mut sites = Sites::read(cfg);
        for (store, state) in &mut sites.slots {
            if !sites.planned.contains(&store.site) {
                continue;
            }
            if let Ok(st) = state
                && let Err(e) = init_site(cfg, store, st)
            {
                *state = Err(e);
            }
        }
        sites.planned.clear();
        sites
    }

    /// Makes the [undecided](Sites::undecided) home site primary (a forced promotion) and
    /// writes its state; its live copy is kept as it is.
    fn force_primary(
        &mut self,
        cfg: &ResourceConfig,
        site: &SiteId,
        epoch: Epoch,
    ) -> Result<(), BackendError> {
        let Some((store, state)) = self.slots.iter_mut().find(|(s, _)| &s.site == site) else {
            return Err(BackendError::NotFound(format!("no copy at site {site}")));
        };
        let mut st = SiteState::new(cfg.id.clone(), site.clone(), StoredRole::Primary);
        st.epoch = epoch;
        init_site(cfg, store, &st)?;
        *state = Ok(st);
        self.undecided = None;
        Ok(())
    }

    fn get(&self, site: &SiteId) -> Result<(SiteStore, SiteState), BackendError> {
        match self.slots.iter().find(|(s, _)| &s.site == site) {
            Some((store, Ok(state))) => Ok((store.clone(), state.clone())),
            Some((_, Err(e))) => Err(e.clone()),
            None => Err(BackendError::NotFound(format!("no copy at site {site}"))),
        }
    }

    /// Refuses an epoch below the highest accepted (by this process or any reachable site);
    /// records an accepted higher one at every reachable site.
    fn admit(
        &mut self,
        inner: &Inner,
        cfg: &ResourceConfig,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.admit_with(inner, cfg, ctx, None)
    }

    /// As [`Sites::admit`]; once the epoch is accepted, `change` (a site, and a change to its
    /// state that returns whether it changed anything) is applied too, so that site's new
    /// epoch and the change reach its disk in one write. The writes to several sites run at
    /// once, a thread each: their fsyncs overlap (on one volume they share a journal commit)
    /// instead of queueing one after the other.
    fn admit_with(
        &mut self,
        inner: &Inner,
        cfg: &ResourceConfig,
        ctx: &OpContext,
        change: Option<(&SiteId, StateChange<'_>)>,
    ) -> Result<(), BackendError> {
        let mut highest = inner.highest.lock().unwrap_or_else(|e| e.into_inner());
        let known = highest.get(&cfg.id).copied().unwrap_or(Epoch::ZERO);
        let stored = self
            .slots
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.epoch))
            .max()
            .unwrap_or(Epoch::ZERO);
        let current = known.max(stored);
        if ctx.epoch < current {
            tracing::warn!(resource = %cfg.id, attempted = %ctx.epoch, %current, "refusing a stale epoch");
            return Err(BackendError::StaleEpoch {
                attempted: ctx.epoch,
                current,
            });
        }
        let mut change = change;
        let mut writes: Vec<(&SiteStore, &SiteState)> = Vec::new();
        for (store, state) in &mut self.slots {
            let Ok(st) = state else { continue };
            let mut dirty = false;
            if st.epoch < ctx.epoch {
                st.epoch = ctx.epoch;
                dirty = true;
            }
            if let Some((site, f)) = change.as_mut()
                && &store.site == *site
            {
                dirty |= f(st);
            }
            if dirty {
                writes.push((store, st));
            }
        }
        match writes.as_slice() {
            [] => {}
            [(store, st)] => store.save_state(st)?,
            _ => std::thread::scope(|scope| {
                let running: Vec<_> = writes
                    .iter()
                    .map(|(store, st)| scope.spawn(move || store.save_state(st)))
                    .collect();
                running.into_iter().try_for_each(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(BackendError::Invalid("a state write panicked".into()))
                    })
                })
            })?,
        }
        highest.insert(cfg.id.clone(), ctx.epoch);
        Ok(())
    }

    /// Refuses to promote `site` while another site can be read and is primary (not
    /// fenced): two live copies taking writes would split the data. A site that cannot be
    /// read (its root missing or unreadable) is unreachable and does not count.
    fn refuse_beside_a_writable_site(
        &self,
        cfg: &ResourceConfig,
        site: &SiteId,
    ) -> Result<(), BackendError> {
        let writable = self.slots.iter().find_map(|(store, st)| match st {
            Ok(st) if &store.site != site && st.role == StoredRole::Primary => Some(&store.site),
            _ => None,
        });
        match writable {
            Some(other) => {
                tracing::warn!(resource = %cfg.id, site = %site, writable = %other, "promotion refused: another site is primary and not fenced");
                Err(BackendError::Refused(format!(
                    "{} at {other} is reachable and primary (not fenced): fence it before \
                     promoting {site}, or force the step",
                    cfg.id
                )))
            }
            None => Ok(()),
        }
    }

    /// The one primary site, or an error naming what is wrong.
    fn primary(&self, cfg: &ResourceConfig) -> Result<SiteId, BackendError> {
        let primaries: Vec<&SiteId> = self
            .slots
            .iter()
            .filter_map(|(s, st)| match st {
                Ok(st) if st.role == StoredRole::Primary => Some(&s.site),
                _ => None,
            })
            .collect();
        match primaries.as_slice() {
            [one] => Ok((*one).clone()),
            [] => match self.undecided.as_ref().and_then(|u| self.get(u).err()) {
                Some(e) => Err(e),
                None => Err(BackendError::Refused(format!(
                    "{} has no primary site that can be reached",
                    cfg.id
                ))),
            },
            many => Err(BackendError::Refused(format!(
                "{} is primary at {} sites ({}): fence all but one",
                cfg.id,
                many.len(),
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// The state a site without one gets on first use (see [`Sites::read`]).
fn plan_site(
    cfg: &ResourceConfig,
    store: &SiteStore,
    fresh: bool,
    primary: Option<&SiteId>,
    epoch: Epoch,
) -> SiteState {
    let role = if fresh && store.site == cfg.home {
        StoredRole::Primary
    } else {
        StoredRole::Replica
    };
    let mut st = SiteState::new(cfg.id.clone(), store.site.clone(), role);
    st.epoch = epoch;
    if role == StoredRole::Replica {
        st.upstream = primary
            .cloned()
            .or_else(|| Some(cfg.home.clone()))
            .filter(|up| up != &store.site);
    }
    st
}

/// Writes a new site's state (and creates a primary's live copy directory).
fn init_site(cfg: &ResourceConfig, store: &SiteStore, st: &SiteState) -> Result<(), BackendError> {
    if st.role == StoredRole::Primary {
        fs::create_dir_all(&store.live).ctx(store.live.display())?;
    }
    tracing::info!(resource = %cfg.id, site = %store.site, role = ?st.role, "initializing site state");
    store.save_state(st)
}

fn state_of(cfg: &ResourceConfig, site: &SiteId) -> Result<SiteState, BackendError> {
    Sites::load(cfg).get(site).map(|(_, s)| s)
}

/// Locks the given sites' lock files in configuration order.
fn lock_sites(cfg: &ResourceConfig, sites: &[&SiteId]) -> Result<Vec<SiteLock>, BackendError> {
    let mut out = Vec::new();
    for s in &cfg.sites {
        if sites.contains(&&s.site) {
            out.push(SiteStore::new(s).lock()?);
        }
    }
    Ok(out)
}

fn sync_now(
    inner: &Inner,
    cfg: &ResourceConfig,
    cancel: Cancel<'_>,
) -> Result<Vec<PassReport>, BackendError> {
    let sites = Sites::load(cfg);
    let primary = sites.primary(cfg)?;
    let (src, _) = sites.get(&primary)?;
    let mut reports = Vec::new();
    let mut first_err = None;
    for (dst, state) in &sites.slots {
        let Ok(state) = state else { continue };
        if state.role != StoredRole::Replica || state.upstream.as_ref() != Some(&primary) {
            continue;
        }
        let mut state = state.clone();
        let r = lock_sites(cfg, &[&primary, &dst.site]).and_then(|_locks| {
            with_env(inner, cfg, cancel, |env| {
                pass::pass(&src, dst, &mut state, env)
            })
        });
        match r {
            Ok(r) => reports.push(r),
            Err(e) => {
                tracing::warn!(resource = %cfg.id, to = %dst.site, error = %e, "pass failed");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// The status, from what the sites' state files say; writes nothing (a site without a
/// state file shows the state its first use would give it, or `Unknown`).
fn status_now(cfg: &ResourceConfig) -> ReplicationStatus {
    let sites = Sites::read(cfg);
    let now = SystemTime::now();
    ReplicationStatus {
        resource: cfg.id.clone(),
        sites: sites
            .slots
            .iter()
            .map(|(store, st)| match st {
                Ok(st) => SiteReplication {
                    site: store.site.clone(),
                    role: match st.role {
                        StoredRole::Primary => Role::Primary,
                        StoredRole::Replica => Role::Replica,
                        StoredRole::Fenced => Role::Fenced,
                    },
                    lag: match st.role {
                        StoredRole::Primary => Some(Duration::ZERO),
                        StoredRole::Replica => st
                            .checkpoint_at
                            .map(|t| now.duration_since(t).unwrap_or_default()),
                        StoredRole::Fenced => None,
                    },
                    lag_bytes: None,
                },
                Err(e) => {
                    tracing::debug!(resource = %cfg.id, site = %store.site, error = %e, "site state unavailable");
                    SiteReplication {
                        site: store.site.clone(),
                        role: Role::Unknown,
                        lag: None,
                        lag_bytes: None,
                    }
                }
            })
            .collect(),
    }
}

/// A change to one site's state, returning whether it changed anything.
type StateChange<'a> = &'a mut dyn FnMut(&mut SiteState) -> bool;

fn fence_now(
    inner: &Inner,
    cfg: &ResourceConfig,
    site: &SiteId,
    ctx: &OpContext,
) -> Result<(), BackendError> {
    let mut sites = Sites::load(cfg);
    let (store, _) = sites.get(site)?;
    if ctx.drill {
        sites.admit(inner, cfg, ctx)?;
        let (_, mut state) = sites.get(site)?;
        let _lock = store.lock()?;
        remove_tree(&store.drill()).ctx(store.drill().display())?;
        if state.drill.take().is_some() {
            store.save_state(&state)?;
        }
        tracing::info!(resource = %cfg.id, site = %site, "drill copy removed");
        return Ok(());
    }
    // The new epoch and the fence reach the site's state in one write.
    let _lock = store.lock()?;
    let mut fenced = false;
    let mut fence = |st: &mut SiteState| {
        fenced = st.role == StoredRole::Primary;
        if fenced {
            st.role = StoredRole::Fenced;
            st.fenced_at = Some(SystemTime::now());
        }
        fenced
    };
    sites.admit_with(inner, cfg, ctx, Some((site, &mut fence)))?;
    if fenced {
        tracing::info!(resource = %cfg.id, site = %site, epoch = %ctx.epoch, "fenced");
    }
    Ok(())
}

fn promote_now(
    inner: &Inner,
    cfg: &ResourceConfig,
    site: &SiteId,
    ctx: &OpContext,
    cancel: Cancel<'_>,
) -> Result<Promoted, BackendError> {
    let mut sites = Sites::load(cfg);
    if ctx.force && !ctx.drill && sites.undecided.as_ref() == Some(site) {
        // The home site lost its state (or is new while the others cannot be read): an
        // operator says it is primary, with whatever its live copy holds.
        let store = store_of(cfg, site)?;
        sites.admit(inner, cfg, ctx)?;
        let _lock = store.lock()?;
        sites.force_primary(cfg, site, ctx.epoch)?;
        tracing::warn!(resource = %cfg.id, site = %site, epoch = %ctx.epoch, "forced: a site with no replicated data made primary");
        return Ok(Promoted {
            rpo: None,
            position: Some("forced: no replicated data (live copy kept as it was)".into()),
        });
    }
    let (store, _) = sites.get(site)?;
    sites.admit(inner, cfg, ctx)?;
    let (_, mut state) = sites.get(site)?;
    if ctx.drill {
        let _lock = store.lock()?;
        with_env(inner, cfg, cancel, |env| {
            pass::recover(&store, &mut state, env)
        })?;
        let (from, seq) = match (state.role, state.base) {
            (StoredRole::Replica, Base::Checkpoint { seq }) => (store.base(), seq),
            (StoredRole::Replica, Base::Adopted) => (store.base(), 0),
            (StoredRole::Replica, Base::Empty) => {
                return Err(BackendError::Refused(format!(
                    "{} at {site} has no checkpoint yet to drill on",
                    cfg.id
                )));
            }
            _ => (store.live.clone(), 0),
        };
        let drill = store.drill();
        remove_tree(&drill).ctx(drill.display())?;
        let _ = inner.progress.send(Progress {
            resource: cfg.id.clone(),
            site: site.clone(),
            operation: Operation::DrillCopy,
            file: None,
            bytes_done: 0,
            bytes_total: 0,
        });
        let special = SpecialBits::from_setting(cfg.preserve_special_bits);
        let written = copy_tree(&from, &drill, special, cancel).ctx(drill.display())?;
        state.drill = Some(seq);
        store.save_state(&state)?;
        tracing::info!(resource = %cfg.id, site = %site, checkpoint = seq, bytes = written, "drill copy made");
        return Ok(Promoted {
            rpo: None,
            position: Some(format!("drill copy of checkpoint {seq}")),
        });
    }
    if state.role == StoredRole::Primary {
        return Ok(Promoted {
            rpo: None,
            position: Some("already primary".into()),
        });
    }
    if !ctx.force {
        sites.refuse_beside_a_writable_site(cfg, site)?;
    }
    if state.role == StoredRole::Fenced {
        let _lock = store.lock()?;
        state.role = StoredRole::Primary;
        state.fenced_at = None;
        store.save_state(&state)?;
        tracing::info!(resource = %cfg.id, site = %site, "fenced live copy taken back as primary");
        return Ok(Promoted {
            rpo: None,
            position: Some("fenced live copy unfenced".into()),
        });
    }
    // A planned switchover: the old primary is fenced and reachable, so copy what it wrote
    // since the last pass first.
    let mut final_pass = false;
    if let Some(up) = state.upstream.clone() {
        match sites.get(&up) {
            Ok((up_store, up_state)) if up_state.role == StoredRole::Fenced => {
                let _locks = lock_sites(cfg, &[&up, site])?;
                let r = with_env(inner, cfg, cancel, |env| {
                    pass::pass(&up_store, &store, &mut state, env)
                })?;
                tracing::info!(resource = %cfg.id, from = %up, to = %site, chunks = r.chunks_changed, "final pass before promotion");
                final_pass = true;
            }
            Ok((_, up_state)) if up_state.role == StoredRole::Primary => {
                tracing::warn!(resource = %cfg.id, site = %site, primary = %up, "forced: promoting while the old primary is not fenced: it stays primary too until it is fenced");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(resource = %cfg.id, site = %site, primary = %up, error = %e, "old primary unreachable: promoting the newest checkpoint");
            }
        }
    }
    let _lock = store.lock()?;
    with_env(inner, cfg, cancel, |env| {
        pass::recover(&store, &mut state, env)
    })?;
    let (seq, taken_at) = match state.base {
        Base::Checkpoint { seq } => (seq, store.load_checkpoint(seq)?.taken_at),
        Base::Adopted => {
            tracing::warn!(resource = %cfg.id, site = %site, "promoting an adopted copy that no pass has completed yet");
            (0, SystemTime::UNIX_EPOCH)
        }
        Base::Empty if ctx.force => {
            fs::create_dir_all(&store.live).ctx(store.live.display())?;
            state.role = StoredRole::Primary;
            state.upstream = None;
            state.evidence = None;
            state.fenced_at = None;
            store.save_state(&state)?;
            tracing::warn!(resource = %cfg.id, site = %site, epoch = %ctx.epoch, "forced: a site with no replicated data made primary");
            return Ok(Promoted {
                rpo: None,
                position: Some("forced: no replicated data (live copy kept as it was)".into()),
            });
        }
        Base::Empty => {
            return Err(BackendError::Refused(format!(
                "{} at {site} has no replicated data (no complete checkpoint: the site is new \
                 or was rebuilt empty): wait for a pass, or promote it with force to make it \
                 primary with what its live copy holds",
                cfg.id
            )));
        }
    };
    move_aside_if_present(&store, &store.live)?;
    if let Some(parent) = store.live.parent() {
        fs::create_dir_all(parent).ctx(parent.display())?;
    }
    fs::rename(store.base(), &store.live).map_err(|e| {
        if e.raw_os_error() == Some(18) {
            BackendError::Invalid(format!(
                "{} and {} are on different file systems; the live copy must be on the root's",
                store.base().display(),
                store.live.display()
            ))
        } else {
            crate::fsutil::io_err(store.live.display(), &e)
        }
    })?;
    // The rename is durable before the state says primary: the live copy's directory (and the
    // root's, where the base was, when that is another one) is synced, once each.
    let parent = store.live.parent().unwrap_or(&store.root);
    sync_dir(parent).ctx(parent.display())?;
    if parent != store.root {
        sync_dir(&store.root).ctx(store.root.display())?;
    }
    let now = SystemTime::now();
    state.role = StoredRole::Primary;
    state.upstream = None;
    state.base = Base::Empty;
    state.evidence = (seq > 0).then_some(Evidence { seq, since: now });
    state.fenced_at = None;
    store.save_state(&state)?;
    let rpo = if final_pass {
        Duration::ZERO
    } else {
        now.duration_since(taken_at).unwrap_or_default()
    };
    tracing::info!(resource = %cfg.id, site = %site, checkpoint = seq, ?rpo, epoch = %ctx.epoch, "promoted");
    Ok(Promoted {
        rpo: Some(rpo),
        position: Some(if seq > 0 {
            format!("checkpoint {seq}")
        } else {
            "adopted copy".into()
        }),
    })
}

/// Moves a non-empty directory aside into `<root>/displaced/` (never deletes data).
fn move_aside_if_present(store: &SiteStore, path: &Path) -> Result<(), BackendError> {
    match fs::read_dir(path) {
        Ok(mut rd) => {
            if rd.next().is_none() {
                fs::remove_dir(path).ctx(path.display())?;
                return Ok(());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::fsutil::io_err(path.display(), &e)),
    }
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "copy".into());
    let to = store.displaced().join(format!("{name}-{stamp}"));
    fs::create_dir_all(store.displaced()).ctx(store.displaced().display())?;
    fs::rename(path, &to).ctx(path.display())?;
    tracing::warn!(site = %store.site, from = %path.display(), to = %to.display(), "moved a copy aside");
    Ok(())
}

fn reprotect_now(
    inner: &Inner,
    cfg: &ResourceConfig,
    primary: &SiteId,
    wait: bool,
    ctx: &OpContext,
    cancel: Cancel<'_>,
) -> Result<(), BackendError> {
    let mut sites = Sites::load(cfg);
    let (p_store, p_state) = sites.get(primary)?;
    sites.admit(inner, cfg, ctx)?;
    if p_state.role != StoredRole::Primary {
        return Err(BackendError::Refused(format!(
            "{} at {primary} is {:?}, not primary: promote it first",
            cfg.id, p_state.role
        )));
    }
    for (store, state) in &sites.slots {
        if &store.site == primary {
            continue;
        }
        let mut state = state.clone()?;
        let _lock = store.lock()?;
        match state.role {
            StoredRole::Primary | StoredRole::Fenced => {
                if state.role == StoredRole::Primary {
                    tracing::warn!(resource = %cfg.id, site = %store.site, "demoting a site that was still primary (split brain): its writes since the split are kept as the next checkpoint's reverse delta");
                }
                // Adopt the old live copy as the base: the next pass compares both sides.
                for s in store.stale_staging()? {
                    remove_tree(&s).ctx(s.display())?;
                }
                move_aside_if_present(store, &store.base())?;
                let adopted = store.live.exists();
                if adopted {
                    fs::rename(&store.live, store.base()).map_err(|e| {
                        BackendError::Invalid(format!(
                            "cannot adopt {} as {}: {e}",
                            store.live.display(),
                            store.base().display()
                        ))
                    })?;
                    sync_dir(&store.root).ctx(store.root.display())?;
                }
                remove_tree(&store.checkpoints()).ctx(store.checkpoints().display())?;
                state.base = if adopted { Base::Adopted } else { Base::Empty };
                state.role = StoredRole::Replica;
                state.evidence = None;
                state.fenced_at = None;
                state.checkpoint_at = None;
            }
            StoredRole::Replica => {}
        }
        state.upstream = Some(primary.clone());
        store.save_state(&state)?;
        tracing::info!(resource = %cfg.id, site = %store.site, follows = %primary, "reprotected");
    }
    let _ = p_store;
    if wait {
        sync_now(inner, cfg, cancel)?;
    }
    Ok(())
}

fn label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 100
        && !label.starts_with('.')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn integrity_now(
    inner: &Inner,
    cfg: &ResourceConfig,
    site: &SiteId,
    request: &IntegrityRequest,
    ctx: &OpContext,
    cancel: Cancel<'_>,
) -> Result<IntegrityReport, BackendError> {
    let mut sites = Sites::load(cfg);
    let (store, _) = sites.get(site)?;
    if matches!(request, IntegrityRequest::Mark { .. }) {
        sites.admit(inner, cfg, ctx)?;
    }
    let (_, mut state) = sites.get(site)?;
    let _lock = store.lock()?;
    with_env(inner, cfg, cancel, |env| {
        pass::recover(&store, &mut state, env)
    })?;
    // The copy to look at, and the checkpoint it should match.
    let (root, evidence): (PathBuf, Option<(u64, Option<SystemTime>)>) = if ctx.drill {
        let Some(from) = state.drill else {
            return Err(BackendError::NotFound(format!(
                "no drill copy of {} at {site}",
                cfg.id
            )));
        };
        (store.drill(), (from > 0).then_some((from, None)))
    } else {
        match state.role {
            StoredRole::Replica => match state.base {
                Base::Checkpoint { seq } => (store.base(), Some((seq, None))),
                _ => (store.base(), None),
            },
            _ => (
                store.live.clone(),
                state.evidence.map(|e| (e.seq, Some(e.since))),
            ),
        }
    };
    match request {
        IntegrityRequest::Check => with_env(inner, cfg, cancel, |env| {
            let Some((seq, since)) = evidence else {
                tracing::info!(resource = %cfg.id, site = %site, "no checkpoint evidence for this copy: returning its manifest only");
                let m = pass::manifest_of_tree(&root, cfg, site, env, &|_, _| true)?;
                return Ok(IntegrityReport {
                    manifest: m,
                    mismatches: Vec::new(),
                });
            };
            let cp = store.load_checkpoint(seq)?;
            let want = cp.manifest();
            // A live copy may have been written since it was promoted: files modified after
            // that are the application's, not damage.
            let untouched = |_: &str, m: &fs::Metadata| match since {
                Some(since) => m.modified().map_or(true, |t| t <= since),
                None => true,
            };
            let have = pass::manifest_of_tree(&root, cfg, site, env, &untouched)?;
            let mut mismatches = have.verify(&want);
            if let Some(since) = since {
                // Files changed after the promotion were skipped above, not missing.
                mismatches.retain(|m| {
                    m.problem != "missing"
                        || safe_join(&root, &m.key)
                            .and_then(|p| fs::metadata(p).ok())
                            .and_then(|md| md.modified().ok())
                            .is_none_or(|t| t <= since)
                });
            }
            for key in have.entries.keys() {
                if !want.entries.contains_key(key) {
                    mismatches.push(Mismatch {
                        key: key.clone(),
                        problem: format!("not in checkpoint {seq}"),
                    });
                }
            }
            if mismatches.is_empty() {
                tracing::info!(resource = %cfg.id, site = %site, checkpoint = seq, files = have.entries.len(), "integrity check passed");
            } else {
                tracing::warn!(resource = %cfg.id, site = %site, checkpoint = seq, mismatches = mismatches.len(), "integrity check found differences");
            }
            Ok(IntegrityReport {
                manifest: have,
                mismatches,
            })
        }),
        IntegrityRequest::Mark { label } => {
            if !label_ok(label) {
                return Err(BackendError::Invalid(format!(
                    "marker label {label:?}: use letters, digits, '-', '_' and '.', not starting with '.'"
                )));
            }
            if !ctx.drill && state.role != StoredRole::Primary {
                return Err(BackendError::Refused(format!(
                    "{} at {site} is {:?}: markers are written at the primary",
                    cfg.id, state.role
                )));
            }
            let manifest = write_markers(cfg, site, &root, label, ctx.epoch)?;
            tracing::info!(resource = %cfg.id, site = %site, label, markers = manifest.entries.len(), "drill markers written");
            Ok(IntegrityReport {
                manifest,
                mismatches: Vec::new(),
            })
        }
        IntegrityRequest::Verify { expected } => {
            let mut have = Manifest::default();
            let mut mismatches = Vec::new();
            for key in expected.entries.keys() {
                if cancel() {
                    return Err(BackendError::Timeout("verification cancelled".into()));
                }
                let Some(path) = safe_join(&root, key) else {
                    mismatches.push(Mismatch {
                        key: key.clone(),
                        problem: "not a relative path inside the copy".into(),
                    });
                    continue;
                };
                match pass::manifest_entry(&path, cfg) {
                    Ok(e) => {
                        have.entries.insert(key.clone(), e);
                    }
                    Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            mismatches.extend(have.verify(expected));
            Ok(IntegrityReport {
                manifest: have,
                mismatches,
            })
        }
    }
}

/// Writes the drill markers of `label` (a short text and a binary file spanning two chunks)
/// and returns their manifest.
fn write_markers(
    cfg: &ResourceConfig,
    site: &SiteId,
    root: &Path,
    label: &str,
    epoch: Epoch,
) -> Result<Manifest, BackendError> {
    use std::io::Write;
    let dir = root.join(MARKER_DIR).join(label);
    fs::create_dir_all(&dir).ctx(dir.display())?;
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let text = format!(
        "idns drill marker\nresource: {}\nsite: {site}\nlabel: {label}\nepoch: {epoch}\nwritten: {}.{:09} (seconds since 1970)\n",
        cfg.id,
        secs.as_secs(),
        secs.subsec_nanos()
    );
    let mut bin = vec![0u8; (cfg.chunk_size + 4099) as usize];
    blake3::Hasher::new()
        .update(text.as_bytes())
        .finalize_xof()
        .fill(&mut bin);
    let mut manifest = Manifest::default();
    for (name, data) in [("0.txt", text.as_bytes()), ("1.bin", bin.as_slice())] {
        let path = dir.join(name);
        let mut f = fs::File::create(&path).ctx(path.display())?;
        f.write_all(data).ctx(path.display())?;
        f.sync_all().ctx(path.display())?;
        let modified = f.metadata().ok().and_then(|m| m.modified().ok());
        manifest.entries.insert(
            format!("{MARKER_DIR}/{label}/{name}"),
            ManifestEntry {
                size: data.len() as u64,
                checksum: blake3::hash(data).to_hex().to_string(),
                modified,
            },
        );
    }
    sync_dir(&dir).ctx(dir.display())?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent).ctx(parent.display())?;
    }
    sync_dir(root).ctx(root.display())?;
    Ok(manifest)
}

#[async_trait]
impl ReplicationBackend for ImageReplication {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        let cfg = self
            .inner
            .config
            .resource(resource)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))?;
        tokio::task::spawn_blocking(move || status_now(&cfg))
            .await
            .map_err(|e| BackendError::Unavailable(format!("worker thread failed: {e}")))
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let (site, c) = (site.clone(), ctx.clone());
        self.blocking(resource, Some(ctx.timeout), move |inner, cfg, _| {
            fence_now(inner, cfg, &site, &c)
        })
        .await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        let (site, c) = (site.clone(), ctx.clone());
        self.blocking(resource, Some(ctx.timeout), move |inner, cfg, cancel| {
            promote_now(inner, cfg, &site, &c, cancel)
        })
        .await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let (p, c) = (primary.clone(), ctx.clone());
        self.blocking(resource, Some(ctx.timeout), move |inner, cfg, cancel| {
            reprotect_now(inner, cfg, &p, wait, &c, cancel)
        })
        .await?;
        if !wait && tokio::runtime::Handle::try_current().is_ok() {
            // Start the resync now; `reprotect(wait = true)` (catch-up) waits for it.
            let this = self.clone();
            let resource = resource.clone();
            tokio::spawn(async move {
                if let Err(e) = this.sync(&resource).await {
                    tracing::warn!(resource = %resource, error = %e, "background resync after reprotect failed");
                }
            });
        }
        Ok(())
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        let (site, r, c) = (site.clone(), request.clone(), ctx.clone());
        self.blocking(resource, Some(ctx.timeout), move |inner, cfg, cancel| {
            integrity_now(inner, cfg, &site, &r, &c, cancel)
        })
        .await
    }

    /// Continuous replication ([`run_continuous`](Self::run_continuous)): a controller runs
    /// it for each resource while it runs.
    async fn run(&self, resource: &ResourceId) -> Result<(), BackendError> {
        self.run_continuous(resource).await
    }
}
