//! An in-memory replication backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::epoch::Epoch;
use crate::error::BackendError;
use crate::id::{ResourceId, SiteId};
use crate::replication::{
    IntegrityReport, IntegrityRequest, Manifest, ManifestEntry, OpContext, Promoted,
    ReplicationBackend, ReplicationStatus, Role, SiteReplication,
};

use super::checksum;

/// A replication backend held in memory: each resource is a key–value map per site, copied
/// from the primary to the replicas on [`sync`](Self::sync). It enforces epochs, records every
/// call, supports drills (isolated copies) and fails on demand. Clones share one state.
///
/// Like a real backend, it refuses an unforced promotion while another site's copy is primary
/// and reachable (not in [`ReplFaults::unreachable`]): fence that site first, or force the
/// step.
#[derive(Debug, Clone)]
pub struct MemoryReplication {
    inner: Arc<Mutex<State>>,
}

/// One call made to a [`MemoryReplication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplCall {
    /// `status`.
    Status(ResourceId),
    /// `fence`.
    Fence(ResourceId, SiteId, OpContext),
    /// `promote`.
    Promote(ResourceId, SiteId, OpContext),
    /// `reprotect`.
    Reprotect(ResourceId, SiteId, bool, OpContext),
    /// `integrity`.
    Integrity(ResourceId, SiteId, IntegrityRequest),
}

/// Failures to inject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplFaults {
    /// Sites that cannot be reached (calls touching them fail as unavailable).
    pub unreachable: Vec<SiteId>,
    /// The next this-many mutating calls fail as unavailable.
    pub fail_next: u32,
}

#[derive(Debug, Default)]
struct State {
    resources: BTreeMap<ResourceId, Resource>,
    log: Vec<ReplCall>,
    faults: ReplFaults,
    stale: Vec<(ResourceId, Epoch, Epoch)>,
}

#[derive(Debug, Clone, Default)]
struct Resource {
    highest: Epoch,
    copies: BTreeMap<SiteId, Copy>,
    drills: BTreeMap<SiteId, BTreeMap<String, String>>,
}

#[derive(Debug, Clone)]
struct Copy {
    role: Role,
    lag: Option<Duration>,
    data: BTreeMap<String, String>,
}

impl MemoryReplication {
    /// A backend where each resource's copy at `primary` is primary and the other sites
    /// replicate it with no lag.
    pub fn new(resources: &[ResourceId], sites: &[SiteId], primary: &SiteId) -> Self {
        let mut state = State::default();
        for r in resources {
            let mut res = Resource::default();
            for s in sites {
                res.copies.insert(
                    s.clone(),
                    Copy {
                        role: if s == primary {
                            Role::Primary
                        } else {
                            Role::Replica
                        },
                        lag: Some(Duration::ZERO),
                        data: BTreeMap::new(),
                    },
                );
            }
            state.resources.insert(r.clone(), res);
        }
        Self {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, faults: ReplFaults) {
        self.state().faults = faults;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<ReplCall> {
        self.state().log.clone()
    }

    /// Calls refused for a stale epoch: (resource, attempted, highest accepted).
    pub fn stale_attempts(&self) -> Vec<(ResourceId, Epoch, Epoch)> {
        self.state().stale.clone()
    }

    /// Writes `key = value` at the site's copy, which must be primary.
    pub fn write(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        key: &str,
        value: &str,
    ) -> Result<(), BackendError> {
        let mut s = self.state();
        let copy = copy_mut(&mut s, resource, site)?;
        if copy.role != Role::Primary {
            return Err(BackendError::Refused(format!(
                "{resource} at {site} is {} and takes no writes",
                copy.role
            )));
        }
        copy.data.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// The value of `key` at the site's copy.
    pub fn read(&self, resource: &ResourceId, site: &SiteId, key: &str) -> Option<String> {
        let s = self.state();
        s.resources
            .get(resource)?
            .copies
            .get(site)?
            .data
            .get(key)
            .cloned()
    }

    /// Sets the lag a replica reports (a pause in replication).
    pub fn set_lag(&self, resource: &ResourceId, site: &SiteId, lag: Option<Duration>) {
        let mut s = self.state();
        if let Ok(c) = copy_mut(&mut s, resource, site) {
            c.lag = lag;
        }
    }

    /// Copies the primary's data to every reachable replica with no lag set (replication
    /// catching up).
    pub fn sync(&self, resource: &ResourceId) {
        let mut s = self.state();
        let unreachable = s.faults.unreachable.clone();
        let Some(res) = s.resources.get_mut(resource) else {
            return;
        };
        let Some(data) = res
            .copies
            .iter()
            .find(|(site, c)| c.role == Role::Primary && !unreachable.contains(site))
            .map(|(_, c)| c.data.clone())
        else {
            return;
        };
        for (site, c) in res.copies.iter_mut() {
            if c.role == Role::Replica
                && c.lag == Some(Duration::ZERO)
                && !unreachable.contains(site)
            {
                c.data = data.clone();
            }
        }
    }

    /// Sites whose copy of the resource is primary (more than one is a split brain).
    pub fn primaries(&self, resource: &ResourceId) -> Vec<SiteId> {
        let s = self.state();
        s.resources
            .get(resource)
            .map(|r| {
                r.copies
                    .iter()
                    .filter(|(_, c)| c.role == Role::Primary)
                    .map(|(s, _)| s.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a drill copy exists at the site.
    pub fn has_drill_copy(&self, resource: &ResourceId, site: &SiteId) -> bool {
        let s = self.state();
        s.resources
            .get(resource)
            .is_some_and(|r| r.drills.contains_key(site))
    }

    fn status_now(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        let mut s = self.state();
        s.log.push(ReplCall::Status(resource.clone()));
        let unreachable = s.faults.unreachable.clone();
        let res = s
            .resources
            .get(resource)
            .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))?;
        Ok(ReplicationStatus {
            resource: resource.clone(),
            sites: res
                .copies
                .iter()
                .map(|(site, c)| {
                    let reachable = !unreachable.contains(site);
                    SiteReplication {
                        site: site.clone(),
                        role: if reachable { c.role } else { Role::Unknown },
                        lag: if reachable && c.role == Role::Replica {
                            c.lag
                        } else if c.role == Role::Primary && reachable {
                            Some(Duration::ZERO)
                        } else {
                            None
                        },
                        lag_bytes: None,
                    }
                })
                .collect(),
        })
    }

    /// Checks faults and the epoch before a mutating call.
    fn admit(
        s: &mut State,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        if s.faults.unreachable.contains(site) {
            return Err(BackendError::Unavailable(format!(
                "{site} cannot be reached"
            )));
        }
        if s.faults.fail_next > 0 {
            s.faults.fail_next -= 1;
            return Err(BackendError::Unavailable("injected failure".into()));
        }
        let res = s
            .resources
            .get_mut(resource)
            .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))?;
        if !res.copies.contains_key(site) {
            return Err(BackendError::NotFound(format!(
                "{resource} has no copy at {site}"
            )));
        }
        if ctx.epoch < res.highest {
            let current = res.highest;
            s.stale.push((resource.clone(), ctx.epoch, current));
            return Err(BackendError::StaleEpoch {
                attempted: ctx.epoch,
                current,
            });
        }
        res.highest = ctx.epoch;
        Ok(())
    }

    /// `fence` without async, for the simulator.
    pub fn fence_now(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let mut s = self.state();
        s.log
            .push(ReplCall::Fence(resource.clone(), site.clone(), ctx.clone()));
        Self::admit(&mut s, resource, site, ctx)?;
        let res = res_mut(&mut s, resource)?;
        if ctx.drill {
            res.drills.remove(site);
            return Ok(());
        }
        if let Some(c) = res.copies.get_mut(site)
            && c.role == Role::Primary
        {
            c.role = Role::Fenced;
        }
        Ok(())
    }

    /// `promote` without async, for the simulator.
    pub fn promote_now(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        let mut s = self.state();
        s.log.push(ReplCall::Promote(
            resource.clone(),
            site.clone(),
            ctx.clone(),
        ));
        Self::admit(&mut s, resource, site, ctx)?;
        let unreachable = s.faults.unreachable.clone();
        let res = res_mut(&mut s, resource)?;
        let Some(copy) = res.copies.get(site) else {
            return Err(BackendError::NotFound(format!("{resource} at {site}")));
        };
        if ctx.drill {
            let data = copy.data.clone();
            res.drills.insert(site.clone(), data);
            return Ok(Promoted::default());
        }
        if copy.role != Role::Primary && !ctx.force {
            let writable = res.copies.iter().find(|(other, c)| {
                *other != site && c.role == Role::Primary && !unreachable.contains(other)
            });
            if let Some((other, _)) = writable {
                return Err(BackendError::Refused(format!(
                    "{resource} at {other} is reachable and primary (not fenced): fence it \
                     before promoting {site}, or force the step"
                )));
            }
        }
        let Some(copy) = res.copies.get_mut(site) else {
            return Err(BackendError::NotFound(format!("{resource} at {site}")));
        };
        let rpo = if copy.role == Role::Primary {
            None
        } else {
            copy.lag
        };
        copy.role = Role::Primary;
        copy.lag = Some(Duration::ZERO);
        Ok(Promoted {
            rpo,
            position: Some(format!("{} keys", copy.data.len())),
        })
    }

    /// `reprotect` without async, for the simulator.
    pub fn reprotect_now(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let mut s = self.state();
        s.log.push(ReplCall::Reprotect(
            resource.clone(),
            primary.clone(),
            wait,
            ctx.clone(),
        ));
        Self::admit(&mut s, resource, primary, ctx)?;
        let unreachable = s.faults.unreachable.clone();
        let res = res_mut(&mut s, resource)?;
        let Some(p) = res.copies.get(primary) else {
            return Err(BackendError::NotFound(format!("{resource} at {primary}")));
        };
        if p.role != Role::Primary {
            return Err(BackendError::Refused(format!(
                "{resource} at {primary} is {}, not primary",
                p.role
            )));
        }
        let data = p.data.clone();
        for (site, c) in res.copies.iter_mut() {
            if site == primary {
                continue;
            }
            if unreachable.contains(site) {
                return Err(BackendError::Unavailable(format!(
                    "{site} cannot be reached"
                )));
            }
            c.role = Role::Replica;
            c.lag = Some(Duration::ZERO);
            c.data = data.clone();
        }
        Ok(())
    }

    /// `integrity` without async, for the simulator.
    pub fn integrity_now(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        let mut s = self.state();
        s.log.push(ReplCall::Integrity(
            resource.clone(),
            site.clone(),
            request.clone(),
        ));
        if s.faults.unreachable.contains(site) {
            return Err(BackendError::Unavailable(format!(
                "{site} cannot be reached"
            )));
        }
        let res = res_mut(&mut s, resource)?;
        let data = if ctx.drill {
            res.drills.get_mut(site)
        } else {
            res.copies.get_mut(site).map(|c| &mut c.data)
        }
        .ok_or_else(|| BackendError::NotFound(format!("{resource} at {site}")))?;
        let manifest_of = |data: &BTreeMap<String, String>, prefix: &str| Manifest {
            entries: data
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        ManifestEntry {
                            size: v.len() as u64,
                            checksum: checksum(v.as_bytes()),
                            modified: None,
                        },
                    )
                })
                .collect(),
        };
        Ok(match request {
            IntegrityRequest::Check => IntegrityReport {
                manifest: manifest_of(data, ""),
                mismatches: Vec::new(),
            },
            IntegrityRequest::Mark { label } => {
                let prefix = format!("marker/{label}/");
                data.insert(
                    format!("{prefix}0"),
                    format!("{label} written at epoch {}", ctx.epoch),
                );
                IntegrityReport {
                    manifest: manifest_of(data, &prefix),
                    mismatches: Vec::new(),
                }
            }
            IntegrityRequest::Verify { expected } => {
                let have = manifest_of(data, "");
                IntegrityReport {
                    mismatches: have.verify(expected),
                    manifest: have,
                }
            }
        })
    }
}

fn res_mut<'a>(s: &'a mut State, resource: &ResourceId) -> Result<&'a mut Resource, BackendError> {
    s.resources
        .get_mut(resource)
        .ok_or_else(|| BackendError::NotFound(format!("resource {resource}")))
}

fn copy_mut<'a>(
    s: &'a mut State,
    resource: &ResourceId,
    site: &SiteId,
) -> Result<&'a mut Copy, BackendError> {
    res_mut(s, resource)?
        .copies
        .get_mut(site)
        .ok_or_else(|| BackendError::NotFound(format!("{resource} at {site}")))
}

#[async_trait]
impl ReplicationBackend for MemoryReplication {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        self.status_now(resource)
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.fence_now(resource, site, ctx)
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        self.promote_now(resource, site, ctx)
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.reprotect_now(resource, primary, wait, ctx)
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        self.integrity_now(resource, site, request, ctx)
    }
}
