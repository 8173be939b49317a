//! The [`ReplicationBackend`] trait, replication status, and integrity manifests.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::BackendError;
use crate::id::{ResourceId, SiteId};

/// Replicates one or more resources (databases, VM images, volumes) between sites.
///
/// Every mutating call carries an [`OpContext`] with the fencing epoch; a backend refuses an
/// epoch lower than the highest it has accepted for that resource
/// ([`BackendError::StaleEpoch`]) and accepts the same epoch again (a retried step).
///
/// # Drills
/// With `ctx.drill` set, [`promote`](Self::promote) brings up an *isolated copy* at the site
/// (a clone or snapshot) and leaves production roles alone, and [`fence`](Self::fence) tears
/// that copy down again. A backend that cannot clone returns [`BackendError::Unsupported`],
/// and the drill records the step as skipped.
#[async_trait]
pub trait ReplicationBackend: Send + Sync + Debug {
    /// Role and lag of the resource at each site.
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError>;

    /// Stops the resource at `site` from taking writes (stop it, or make it read-only).
    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError>;

    /// Makes the copy at `site` the writable primary.
    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError>;

    /// Reverses replication so every other site follows `primary`; with `wait`, returns only
    /// once they have caught up (or `ctx.timeout` passes).
    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError>;

    /// Takes, writes or verifies integrity evidence at `site`.
    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError>;

    /// The backend's own background work for `resource`, such as continuous replication
    /// passes; the default has none and returns at once.
    ///
    /// A controller (`runtime::Controller`, feature `runtime`) calls it once per resource of
    /// its consistency group when it starts and drops the future when it stops, so an
    /// implementation runs until it is dropped and needs no stop signal of its own. It
    /// returns early only when it cannot work at all (an unknown resource); the controller
    /// logs that error and goes on without it. A wrapper around another backend forwards
    /// this method too, or the wrapped backend's work never starts.
    async fn run(&self, resource: &ResourceId) -> Result<(), BackendError> {
        let _ = resource;
        Ok(())
    }
}

/// A shared backend is a backend: `Arc<dyn ReplicationBackend>` can be handed wherever one
/// is expected.
#[async_trait]
impl<T: ReplicationBackend + ?Sized> ReplicationBackend for std::sync::Arc<T> {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        (**self).status(resource).await
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        (**self).fence(resource, site, ctx).await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        (**self).promote(resource, site, ctx).await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        (**self).reprotect(resource, primary, wait, ctx).await
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        (**self).integrity(resource, site, request, ctx).await
    }

    async fn run(&self, resource: &ResourceId) -> Result<(), BackendError> {
        (**self).run(resource).await
    }
}

/// What every mutating replication call carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpContext {
    /// The fencing epoch of the decision.
    pub epoch: Epoch,
    /// A rehearsal: work on an isolated copy, leave production alone.
    pub drill: bool,
    /// How long the step may take.
    pub timeout: Duration,
    /// An operator forced the decision past its guards: a backend may then do what it
    /// otherwise refuses as unsafe (and says so in what it returns).
    #[serde(default)]
    pub force: bool,
}

/// The role of a resource's copy at one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes writes.
    Primary,
    /// Follows a primary.
    Replica,
    /// Stopped from taking writes.
    Fenced,
    /// Could not be reached or judged.
    Unknown,
}

impl Role {
    /// The name, as serde spells it: `primary`, `replica`, `fenced`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Fenced => "fenced",
            Role::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A resource's state at every site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The resource.
    pub resource: ResourceId,
    /// One entry per site.
    pub sites: Vec<SiteReplication>,
}

/// A resource's state at one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteReplication {
    /// The site.
    pub site: SiteId,
    /// Its role.
    pub role: Role,
    /// How far behind the primary it is, in time (the RPO if it were promoted now).
    pub lag: Option<Duration>,
    /// How far behind, in bytes, where the backend knows.
    pub lag_bytes: Option<u64>,
}

/// What the election is told about replication (from a status poll, or pushed by a backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationReport {
    /// The resource.
    pub resource: ResourceId,
    /// The site whose copy this is.
    pub site: SiteId,
    /// Its role.
    pub role: Role,
    /// Its lag behind the primary; `None` when unknown.
    pub lag: Option<Duration>,
    /// Wall-clock time of the measurement.
    pub at: SystemTime,
}

impl ReplicationStatus {
    /// One report per site, for the election.
    pub fn reports(&self, at: SystemTime) -> impl Iterator<Item = ReplicationReport> + '_ {
        self.sites.iter().map(move |s| ReplicationReport {
            resource: self.resource.clone(),
            site: s.site.clone(),
            role: s.role,
            lag: s.lag,
            at,
        })
    }
}

/// What a promotion found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// The data-loss window measured at promotion (time of the newest replayed change versus
    /// the failure), where the backend can tell.
    pub rpo: Option<Duration>,
    /// Where the new primary starts (an LSN, a checkpoint id), for the report.
    pub position: Option<String>,
}

/// Integrity evidence to take, write or check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrityRequest {
    /// Check the copy against its own evidence (checksums of the last checkpoint) and return
    /// its manifest.
    Check,
    /// Write drill markers (the paper's "new files with time stamp, size and checksum") and
    /// return their manifest, to be verified after failback.
    Mark {
        /// A label for the markers, e.g. `epoch-7`.
        label: String,
    },
    /// Verify that everything in `expected` is present and identical.
    Verify {
        /// The manifest to find.
        expected: Manifest,
    },
}

/// The result of an integrity request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// The manifest taken or written.
    pub manifest: Manifest,
    /// Everything that did not match (empty when the check passed).
    pub mismatches: Vec<Mismatch>,
}

/// A list of entries (files, tables, marker rows) with size and checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Entries by key (a path, a table name).
    pub entries: BTreeMap<String, ManifestEntry>,
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Size in bytes (or rows).
    pub size: u64,
    /// Checksum as text (e.g. hex blake3).
    pub checksum: String,
    /// When it was written, where known.
    pub modified: Option<SystemTime>,
}

/// One difference found by [`Manifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The entry's key.
    pub key: String,
    /// What differs.
    pub problem: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl Manifest {
    /// Checks that every entry of `expected` is in `self` with the same size and checksum.
    /// Entries only in `self` are fine (the copy has more data).
    pub fn verify(&self, expected: &Manifest) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for (key, want) in &expected.entries {
            match self.entries.get(key) {
                None => out.push(Mismatch {
                    key: key.clone(),
                    problem: "missing".to_owned(),
                }),
                Some(have) if have.size != want.size => out.push(Mismatch {
                    key: key.clone(),
                    problem: format!("size {} where {} was expected", have.size, want.size),
                }),
                Some(have) if have.checksum != want.checksum => out.push(Mismatch {
                    key: key.clone(),
                    problem: format!(
                        "checksum {} where {} was expected",
                        have.checksum, want.checksum
                    ),
                }),
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, sum: &str) -> ManifestEntry {
        ManifestEntry {
            size,
            checksum: sum.to_owned(),
            modified: None,
        }
    }

    #[test]
    fn verify_names_each_missing_or_changed_entry() {
        let mut want = Manifest::default();
        want.entries.insert("a".into(), entry(1, "x"));
        want.entries.insert("b".into(), entry(2, "y"));
        want.entries.insert("c".into(), entry(3, "z"));
        let mut have = Manifest::default();
        have.entries.insert("a".into(), entry(1, "x"));
        have.entries.insert("b".into(), entry(2, "Y"));
        have.entries.insert("d".into(), entry(9, "extra"));
        let m = have.verify(&want);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].key, "b");
        assert!(m[0].problem.contains("checksum"));
        assert_eq!(m[1].key, "c");
        assert_eq!(m[1].problem, "missing");
        assert!(want.verify(&want).is_empty());
    }
}
