//! The journal: the part of the election's state that must survive a crash.
//!
//! It holds no `Instant`: times are wall-clock [`SystemTime`]s and durations. The driver saves
//! it *before* executing each action, so a restarted controller resumes the runbook in
//! progress at the step that had not finished, never repeats a finished one, and never makes
//! the same decision twice.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::dns::Ownership;
use crate::epoch::Epoch;
use crate::id::{DnsName, ResourceId, SiteId};
use crate::replication::Manifest;
use crate::runbook::{PlannedStep, Runbook};

/// The current journal format.
pub const JOURNAL_VERSION: u32 = 1;

/// What the service's name publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serving {
    /// The active site.
    #[default]
    Active,
    /// Every site (all down, fail open).
    AllSites,
    /// Nothing (all down, fail closed).
    Withdrawn,
}

/// The election's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub version: u32,
    /// The service it belongs to.
    pub service: DnsName,
    /// The active site: where the data's primary copy is, and what the name points at unless
    /// `serving` says otherwise.
    pub active: SiteId,
    /// The fencing epoch of the last decision.
    pub epoch: Epoch,
    /// What the name publishes.
    pub serving: Serving,
    /// Whether automatic decisions are frozen.
    pub frozen: bool,
    /// Wall-clock time of the last switch (for the minimum dwell).
    pub last_switch: Option<SystemTime>,
    /// The id the next runbook gets.
    pub next_runbook: u64,
    /// The runbook in progress.
    pub runbook: Option<Runbook>,
    /// Drill markers written at the active site since the last failover, by resource, to be
    /// verified after failback.
    pub markers: BTreeMap<ResourceId, Manifest>,
    /// Switches made so far.
    pub switches: u64,
    /// Cleanup of a drill that a production switch cut short, to run after that switch.
    #[serde(default)]
    pub pending_cleanup: Vec<PlannedStep>,
}

impl Journal {
    /// A journal that adopts what the DNS already publishes (the ownership record read back),
    /// for a controller that starts without a journal of its own: it keeps the published site
    /// and continues from the published epoch instead of publishing the home site again.
    pub fn adopt(service: DnsName, owner: &Ownership, fallback: SiteId) -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            service,
            active: owner.site.clone().unwrap_or(fallback),
            epoch: owner.epoch,
            serving: if owner.site.is_some() {
                Serving::Active
            } else {
                Serving::AllSites
            },
            frozen: false,
            last_switch: None,
            next_runbook: 1,
            runbook: None,
            markers: BTreeMap::new(),
            switches: 0,
            pending_cleanup: Vec::new(),
        }
    }
}
