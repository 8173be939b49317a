//! The [`DnsBackend`] side of the embedded server: epochs, atomic swaps, the state file.
//!
//! A change is checked, written to the state file and swapped in while one lock, `changes`,
//! is held: changes are written and served in the order they were accepted, and a change is
//! on disk before it is served (or before `read` shows it). The records themselves sit
//! behind another lock, `state`, held only for a moment (never across the disk write), so a
//! `read` does not wait for a write. As `changes` is held across the disk write, it is taken
//! only off the async workers: the async calls hand a change to tokio's blocking threads
//! when there is a state file to write.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use idns_core::{
    BackendError, DnsBackend, DnsCapabilities, DnsChange, DnsName, Event, Propagation, Published,
    RecordSet, SameEpoch, SiteId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::config::ValidZone;
use super::dynamic_ttl::{TtlAdvisor, TtlBounds, TtlMode};
use super::fast::SnapshotCell;
use super::zone::{Entry, Snapshot, ZoneState};
use crate::propagation::PropagationChecker;

/// The records and epochs of every zone, changed under a lock.
#[derive(Debug)]
pub(crate) struct State {
    zones: Vec<ZoneState>,
    generation: u64,
}

/// What the state file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    zones: Vec<PersistedZone>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PersistedZone {
    name: DnsName,
    serial: u32,
    names: BTreeMap<DnsName, Entry>,
}

const STATE_VERSION: u32 = 1;

impl State {
    /// The state of `zones`, restored from `state_file` when it exists.
    pub(crate) fn load(
        zones: Vec<ValidZone>,
        state_file: Option<&Path>,
    ) -> Result<(State, Snapshot), String> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let mut zones: Vec<ZoneState> = zones.into_iter().map(|z| ZoneState::new(z, now)).collect();
        if let Some(path) = state_file
            && path.exists()
        {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read state file {}: {e}", path.display()))?;
            let persisted: Persisted = serde_json::from_str(&text)
                .map_err(|e| format!("state file {} is not valid: {e}", path.display()))?;
            if persisted.version != STATE_VERSION {
                return Err(format!(
                    "state file {} has version {}, expected {STATE_VERSION}",
                    path.display(),
                    persisted.version
                ));
            }
            for saved in persisted.zones {
                match zones.iter_mut().find(|z| z.cfg.name == saved.name) {
                    Some(z) => {
                        z.serial = z.serial.max(saved.serial);
                        z.names = saved.names;
                    }
                    None => tracing::warn!(
                        zone = %saved.name,
                        "the state file holds a zone that is no longer configured; ignored"
                    ),
                }
            }
        }
        let snapshot = Snapshot::build(1, &zones)?;
        Ok((
            State {
                zones,
                generation: 1,
            },
            snapshot,
        ))
    }

    fn save(path: &Path, zones: &[ZoneState]) -> std::io::Result<()> {
        let persisted = Persisted {
            version: STATE_VERSION,
            zones: zones
                .iter()
                .map(|z| PersistedZone {
                    name: z.cfg.name.clone(),
                    serial: z.serial,
                    names: z.names.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&persisted).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The data shared by the server's workers and its backend handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cell: Arc<SnapshotCell>,
    /// What is published; held only for a moment, never across a disk write.
    state: Mutex<State>,
    /// Held by a change from its check to its swap, across the state file's write: taken
    /// only on a blocking thread (or the caller's own, for the blocking calls). Taken before
    /// `state`, never after.
    changes: Mutex<()>,
    state_file: Option<PathBuf>,
}

/// Proof that the caller holds [`Shared::changes`].
type Changing<'a> = MutexGuard<'a, ()>;

impl Shared {
    pub(crate) fn new(state: State, snapshot: Snapshot, state_file: Option<PathBuf>) -> Self {
        Self {
            cell: Arc::new(SnapshotCell::new(snapshot)),
            state: Mutex::new(state),
            changes: Mutex::new(()),
            state_file,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is built aside and committed at the end, so the data behind a poisoned
        // lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a change: waits for the one in progress (and its disk write) to end.
    fn changing(&self) -> Changing<'_> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the change `f` from async code: on a blocking thread when it writes the state
    /// file (so no async worker waits on the disk or on a change that does), else in place.
    /// Dropping the future does not cancel a change already handed over.
    pub(crate) async fn change<T, F>(self: &Arc<Self>, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, BackendError> + Send + 'static,
    {
        if self.state_file.is_none() {
            return f(self);
        }
        let shared = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&shared)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(BackendError::Unavailable(format!(
                "the change was dropped before it was written: {e}"
            ))),
        }
    }

    pub(crate) fn zones(&self) -> Vec<DnsName> {
        self.state()
            .zones
            .iter()
            .map(|z| z.cfg.name.clone())
            .collect()
    }

    pub(crate) fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        let state = self.state();
        let Some(z) = state.zones.iter().find(|z| z.cfg.name == *zone) else {
            return Err(BackendError::NotFound(format!(
                "zone {zone} is not served here"
            )));
        };
        if !name.is_within(zone) {
            return Err(BackendError::NotFound(format!(
                "{name} is not in zone {zone}"
            )));
        }
        Ok(match z.names.get(name) {
            Some(e) => Published {
                ttl: if e.records == RecordSet::Empty {
                    Duration::ZERO
                } else {
                    Duration::from_secs(u64::from(e.ttl))
                },
                records: e.records.clone(),
                owner: Some(e.owner.clone()),
            },
            None => Published {
                records: RecordSet::Empty,
                ttl: Duration::ZERO,
                owner: None,
            },
        })
    }

    /// Publishes `change`; blocks on the state file's write.
    pub(crate) fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        let changing = self.changing();
        let state = self.state();
        let Some(index) = state.zones.iter().position(|z| z.cfg.name == change.zone) else {
            return Err(BackendError::Refused(format!(
                "zone {} is not served here",
                change.zone
            )));
        };
        if !change.name.is_within(&change.zone) {
            return Err(BackendError::Refused(format!(
                "{} is not in zone {}",
                change.name, change.zone
            )));
        }
        let zone = &state.zones[index];
        if let Some(problem) = zone.reserved(&change.name) {
            return Err(BackendError::Invalid(format!(
                "{} {problem}; it cannot be a service name",
                change.name
            )));
        }
        let ttl = crate::Ttl::try_from(change.ttl)?.as_secs();
        if change.records == RecordSet::Alias(change.name.clone()) {
            return Err(BackendError::Invalid(format!(
                "{} cannot be an alias of itself",
                change.name
            )));
        }
        let current = zone.names.get(&change.name);
        if let Some(e) = current
            && change.epoch < e.owner.epoch
        {
            tracing::warn!(
                name = %change.name,
                attempted = %change.epoch,
                current = %e.owner.epoch,
                "refused a change with a stale epoch"
            );
            return Err(BackendError::StaleEpoch {
                attempted: change.epoch,
                current: e.owner.epoch,
            });
        }
        if let Some(e) = current
            && change.epoch == e.owner.epoch
            && change.at_same_epoch(e.owner.site.as_ref(), &e.records) == SameEpoch::Conflict
        {
            tracing::warn!(
                name = %change.name,
                epoch = %change.epoch,
                records = %change.records,
                published = %e.records,
                "refused a conflicting change at the accepted epoch"
            );
            return Err(BackendError::StaleEpoch {
                attempted: change.epoch,
                current: e.owner.epoch,
            });
        }
        let entry = Entry {
            records: change.records.normalized(),
            ttl,
            owner: change.ownership(),
        };
        if current == Some(&entry) {
            return Ok(());
        }
        let mut zones = state.zones.clone();
        let generation = state.generation + 1;
        drop(state);
        let changed = &mut zones[index];
        changed.names.insert(change.name.clone(), entry);
        changed.serial = next_serial(changed.serial);
        let serial = changed.serial;
        self.commit(&changing, generation, zones)?;
        tracing::info!(
            name = %change.name,
            records = %change.records,
            epoch = %change.epoch,
            serial,
            "published"
        );
        Ok(())
    }
}

impl Shared {
    /// Builds the answer set `generation` of `zones`, writes the state file (holding no
    /// lock but `changes`), then swaps both in. Nothing is served or shown by `read` before
    /// it is on disk, and a failed write leaves everything as it was.
    fn commit(
        &self,
        _changing: &Changing<'_>,
        generation: u64,
        zones: Vec<ZoneState>,
    ) -> Result<(), BackendError> {
        let snapshot = Snapshot::build(generation, &zones).map_err(BackendError::Invalid)?;
        if let Some(path) = &self.state_file {
            State::save(path, &zones).map_err(|e| {
                BackendError::Unavailable(format!(
                    "cannot write the state file {}: {e}",
                    path.display()
                ))
            })?;
        }
        let mut state = self.state();
        state.zones = zones;
        state.generation = generation;
        self.cell.store(snapshot);
        Ok(())
    }

    /// The dynamic TTL of the zone of `name`.
    fn dynamic_ttl(&self, name: &DnsName) -> Result<(usize, TtlBounds), BackendError> {
        let state = self.state();
        let Some(index) = state.zones.iter().position(|z| name.is_within(&z.cfg.name)) else {
            return Err(BackendError::Refused(format!(
                "{name} is not in a zone served here"
            )));
        };
        match state.zones[index].cfg.dynamic_ttl {
            Some(bounds) => Ok((index, bounds)),
            None => Err(BackendError::Unsupported(
                "dynamic TTL is not configured (dynamic_ttl)".into(),
            )),
        }
    }

    /// Sets `name`'s TTL mode; blocks on the state file's write when the TTL served changes.
    pub(crate) fn set_ttl_mode(&self, name: &DnsName, mode: TtlMode) -> Result<(), BackendError> {
        let (index, _) = self.dynamic_ttl(name)?;
        let changing = self.changing();
        let mut state = self.state();
        let zone = &state.zones[index];
        if zone.modes.get(name) == Some(&mode) {
            return Ok(());
        }
        let before = zone.names.get(name).map(|e| zone.served_ttl(name, e.ttl));
        let mut zones = state.zones.clone();
        let generation = state.generation + 1;
        let changed = &mut zones[index];
        changed.modes.insert(name.clone(), mode);
        let after = changed
            .names
            .get(name)
            .map(|e| changed.served_ttl(name, e.ttl));
        if before == after {
            // Nothing served changes: no new answer set, no new serial.
            state.zones = zones;
            return Ok(());
        }
        changed.serial = next_serial(changed.serial);
        let serial = changed.serial;
        drop(state);
        self.commit(&changing, generation, zones)?;
        tracing::info!(%name, ?mode, ttl = after, serial, "TTL changed");
        Ok(())
    }

    fn owner_site(&self, name: &DnsName) -> Option<SiteId> {
        let state = self.state();
        state
            .zones
            .iter()
            .find_map(|z| z.names.get(name))
            .and_then(|e| e.owner.site.clone())
    }
}

/// The next SOA serial (RFC 1982: one more, skipping zero).
fn next_serial(serial: u32) -> u32 {
    match serial.wrapping_add(1) {
        0 => 1,
        s => s,
    }
}

/// A handle on an [`EmbeddedServer`](super::EmbeddedServer)'s records, implementing
/// [`DnsBackend`]. Cheap to clone; every clone changes the same server.
///
/// `apply` swaps the whole answer set at once and bumps the zone's SOA serial (a change
/// identical to what is published, at the same epoch, is accepted and changes nothing; other
/// records or another site at the same epoch are refused as a stale epoch);
/// `verify` asks the server itself over UDP, like any client would.
#[derive(Clone)]
pub struct EmbeddedBackend {
    pub(crate) shared: Arc<Shared>,
    pub(crate) servers: Vec<SocketAddr>,
}

impl fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("zones", &self.shared.zones())
            .field("servers", &self.servers)
            .finish()
    }
}

impl EmbeddedBackend {
    /// The addresses `verify` asks (the server's UDP addresses, with an unspecified address
    /// replaced by loopback).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The zones served.
    pub fn zones(&self) -> Vec<DnsName> {
        self.shared.zones()
    }

    /// [`apply`](DnsBackend::apply) without async: the change is in the state file, in
    /// memory and served when this returns. It blocks the calling thread on the state file's
    /// write (and on a change in progress); from async code, call `apply`.
    pub fn apply_now(&self, change: &DnsChange) -> Result<(), BackendError> {
        self.shared.apply(change)
    }

    /// Makes `name` answer with the suspect or the stable TTL of the server's
    /// [`DynamicTtl`](super::DynamicTtl) (the mode is kept across changes, until set again).
    /// When the TTL served changes, the answer set is swapped and the zone's SOA serial
    /// bumped; the epoch and the ownership record are not touched. Fails with
    /// [`BackendError::Unsupported`] when the server has no `dynamic_ttl`, and
    /// [`BackendError::Refused`] for a name outside its zones. Like
    /// [`apply_now`](Self::apply_now), it blocks the calling thread on the state file's
    /// write; [`follow_events`](Self::follow_events) does not.
    pub fn set_ttl_mode(&self, name: &DnsName, mode: TtlMode) -> Result<(), BackendError> {
        self.shared.set_ttl_mode(name, mode)
    }

    /// A [`TtlAdvisor`] with the server's `settle`, pointed at the site `name`'s ownership
    /// record names (seed it with [`TtlAdvisor::seed`] when the election's view is at hand).
    pub fn ttl_advisor(&self, name: &DnsName) -> Result<TtlAdvisor, BackendError> {
        let (_, bounds) = self.shared.dynamic_ttl(name)?;
        let mut advisor = TtlAdvisor::new(bounds.settle);
        advisor.set_active(self.shared.owner_site(name));
        Ok(advisor)
    }

    /// Keeps `name`'s TTL mode in step with the election: feeds `events` (e.g. the driver's
    /// `subscribe()`) to `advisor`, with tokio's clock, and sets the mode it advises after
    /// every event and at the end of every settle period. Returns `Ok` when the event stream
    /// closes, or the error of a mode that could not be set. Spawn it:
    ///
    /// ```no_run
    /// # async fn demo(dns: idns_dns::embedded::EmbeddedBackend,
    /// #     events: tokio::sync::broadcast::Receiver<idns_core::Event>) -> Result<(), idns_core::BackendError> {
    /// let name: idns_core::DnsName = "app.example.com".parse().expect("a valid name");
    /// let advisor = dns.ttl_advisor(&name)?;
    /// tokio::spawn(async move { dns.follow_events(name, advisor, events).await });
    /// # Ok(()) }
    /// ```
    pub async fn follow_events(
        &self,
        name: DnsName,
        mut advisor: TtlAdvisor,
        mut events: broadcast::Receiver<Event>,
    ) -> Result<(), BackendError> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let now = tokio::time::Instant::now().into_std();
            advisor.handle_timeout(now);
            let (mode, named) = (advisor.mode(now), name.clone());
            self.shared
                .change(move |shared| shared.set_ttl_mode(&named, mode))
                .await?;
            let received = match advisor.poll_timeout() {
                Some(deadline) => tokio::select! {
                    r = events.recv() => Some(r),
                    () = tokio::time::sleep_until(deadline.into()) => None,
                },
                None => Some(events.recv().await),
            };
            match received {
                None => {}
                Some(Ok(event)) => advisor.handle(&event, tokio::time::Instant::now().into_std()),
                Some(Err(RecvError::Lagged(missed))) => {
                    tracing::warn!(%name, missed, "missed events; the TTL mode may lag until the next one");
                }
                Some(Err(RecvError::Closed)) => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl DnsBackend for EmbeddedBackend {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::new(true, true, true)
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.shared.read(zone, name)
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        let change = change.clone();
        self.shared
            .change(move |shared| shared.apply(&change))
            .await
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        if self.servers.is_empty() {
            return Err(BackendError::Invalid("the server listens nowhere".into()));
        }
        let checker = PropagationChecker::new(self.servers.iter().copied());
        Ok(checker.check(&change.name, &change.records, timeout).await)
    }
}
