//! An in-memory DNS backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::dns::{
    DnsBackend, DnsCapabilities, DnsChange, Ownership, Propagation, Published, RecordSet,
    SameEpoch, ServerAnswer,
};
use crate::epoch::Epoch;
use crate::error::BackendError;
use crate::id::DnsName;

/// A DNS backend held in memory: it enforces epochs per name exactly as a real backend must
/// (see [`DnsBackend::apply`]: a lower epoch is refused, the same epoch is accepted again as
/// [`DnsChange::at_same_epoch`] rules), records every call, and fails on demand. Clones share one
/// state.
#[derive(Debug, Clone)]
pub struct MemoryDns {
    inner: Arc<Mutex<State>>,
}

/// One call made to a [`MemoryDns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsCall {
    /// `read`.
    Read(DnsName),
    /// `apply`, with whether it was accepted.
    Apply(DnsChange, bool),
    /// `verify`.
    Verify(DnsChange),
}

/// Failures to inject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsFaults {
    /// Every call fails as unreachable while set.
    pub down: bool,
    /// The next this-many `apply` calls fail as unreachable.
    pub fail_applies: u32,
    /// The next this-many `verify` calls report the change as not yet propagated.
    pub lagging_verifies: u32,
}

#[derive(Debug, Default)]
struct State {
    zones: Vec<DnsName>,
    alias: bool,
    names: BTreeMap<DnsName, Entry>,
    log: Vec<DnsCall>,
    faults: DnsFaults,
    stale: Vec<(DnsName, Epoch, Epoch)>,
    conflicts: Vec<(DnsName, Epoch)>,
}

#[derive(Debug, Clone)]
struct Entry {
    records: RecordSet,
    ttl: Duration,
    owner: Ownership,
}

impl MemoryDns {
    /// A backend serving `zones`, with CNAME support.
    pub fn new(zones: &[DnsName]) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                zones: zones.to_vec(),
                alias: true,
                ..State::default()
            })),
        }
    }

    /// The same, without CNAME support (to test capability checks).
    pub fn without_alias(zones: &[DnsName]) -> Self {
        let d = Self::new(zones);
        d.state().alias = false;
        d
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a test bug; keep going with the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, faults: DnsFaults) {
        self.state().faults = faults;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<DnsCall> {
        self.state().log.clone()
    }

    /// Changes refused for a stale epoch: (name, attempted, highest accepted). A correct
    /// controller never causes one.
    pub fn stale_attempts(&self) -> Vec<(DnsName, Epoch, Epoch)> {
        self.state().stale.clone()
    }

    /// Changes refused because they carried the epoch already accepted for the name but other
    /// records or another site (name, epoch). A correct controller never causes one either.
    pub fn same_epoch_conflicts(&self) -> Vec<(DnsName, Epoch)> {
        self.state().conflicts.clone()
    }

    /// What `name` answers now.
    pub fn records(&self, name: &DnsName) -> RecordSet {
        self.state()
            .names
            .get(name)
            .map(|e| e.records.clone())
            .unwrap_or(RecordSet::Empty)
    }

    /// The highest epoch accepted for `name`.
    pub fn epoch(&self, name: &DnsName) -> Epoch {
        self.state()
            .names
            .get(name)
            .map(|e| e.owner.epoch)
            .unwrap_or(Epoch::ZERO)
    }

    /// `apply` without async, for the simulator.
    pub fn apply_now(&self, change: &DnsChange) -> Result<(), BackendError> {
        let mut s = self.state();
        if s.faults.down {
            s.log.push(DnsCall::Apply(change.clone(), false));
            return Err(BackendError::Unavailable("memory DNS is down".into()));
        }
        if s.faults.fail_applies > 0 {
            s.faults.fail_applies -= 1;
            s.log.push(DnsCall::Apply(change.clone(), false));
            return Err(BackendError::Unavailable("injected failure".into()));
        }
        if !s
            .zones
            .iter()
            .any(|z| change.name.is_within(z) && *z == change.zone)
        {
            s.log.push(DnsCall::Apply(change.clone(), false));
            return Err(BackendError::Refused(format!(
                "{} is not in a zone served here",
                change.name
            )));
        }
        if matches!(change.records, RecordSet::Alias(_)) && !s.alias {
            s.log.push(DnsCall::Apply(change.clone(), false));
            return Err(BackendError::Unsupported("CNAME records".into()));
        }
        let (current, same_epoch) = match s.names.get(&change.name) {
            Some(e) => (
                e.owner.epoch,
                change.at_same_epoch(e.owner.site.as_ref(), &e.records),
            ),
            None => (Epoch::ZERO, SameEpoch::Replace),
        };
        if change.epoch < current {
            s.stale.push((change.name.clone(), change.epoch, current));
            s.log.push(DnsCall::Apply(change.clone(), false));
            return Err(BackendError::StaleEpoch {
                attempted: change.epoch,
                current,
            });
        }
        if change.epoch == current && same_epoch == SameEpoch::Conflict {
            s.conflicts.push((change.name.clone(), change.epoch));
            s.log.push(DnsCall::Apply(change.clone(), false));
            return Err(BackendError::StaleEpoch {
                attempted: change.epoch,
                current,
            });
        }
        s.names.insert(
            change.name.clone(),
            Entry {
                records: change.records.normalized(),
                ttl: change.ttl,
                owner: change.ownership(),
            },
        );
        s.log.push(DnsCall::Apply(change.clone(), true));
        Ok(())
    }

    /// `verify` without async, for the simulator.
    pub fn verify_now(&self, change: &DnsChange) -> Result<Propagation, BackendError> {
        let mut s = self.state();
        s.log.push(DnsCall::Verify(change.clone()));
        if s.faults.down {
            return Err(BackendError::Unavailable("memory DNS is down".into()));
        }
        let lagging = s.faults.lagging_verifies > 0;
        if lagging {
            s.faults.lagging_verifies -= 1;
        }
        let have = s
            .names
            .get(&change.name)
            .map(|e| e.records.clone())
            .unwrap_or(RecordSet::Empty);
        let current = !lagging && have.same_as(&change.records);
        Ok(Propagation {
            servers: vec![ServerAnswer {
                server: "memory".into(),
                current,
                latency: Duration::ZERO,
                detail: have.to_string(),
            }],
        })
    }
}

#[async_trait]
impl DnsBackend for MemoryDns {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::new(self.state().alias, true, true)
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        let mut s = self.state();
        s.log.push(DnsCall::Read(name.clone()));
        if s.faults.down {
            return Err(BackendError::Unavailable("memory DNS is down".into()));
        }
        if !s.zones.contains(zone) || !name.is_within(zone) {
            return Err(BackendError::NotFound(format!("{name} in zone {zone}")));
        }
        Ok(match s.names.get(name) {
            Some(e) => Published {
                records: e.records.clone(),
                ttl: e.ttl,
                owner: Some(e.owner.clone()),
            },
            None => Published {
                records: RecordSet::Empty,
                ttl: Duration::ZERO,
                owner: None,
            },
        })
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        self.apply_now(change)
    }

    async fn verify(
        &self,
        change: &DnsChange,
        _timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        self.verify_now(change)
    }
}
