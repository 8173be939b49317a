//! The election's current state, for status pages, metrics and tests.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::id::{DnsName, SiteId};
use crate::journal::Serving;
use crate::reason::{Health, Reason};
use crate::runbook::{RunbookKind, StepName};

/// Everything a status page shows. Borrowed from [`Election::view`](crate::Election::view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service's name.
    pub service: DnsName,
    /// The active site.
    pub active: SiteId,
    /// The fencing epoch.
    pub epoch: Epoch,
    /// What the name publishes.
    pub serving: Serving,
    /// Whether automatic decisions are frozen.
    pub frozen: bool,
    /// Each site, in configuration order.
    pub sites: Vec<SiteView>,
    /// The runbook in progress.
    pub runbook: Option<RunbookView>,
    /// Switches made so far.
    pub switches: u64,
}

/// One site in the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    /// The site.
    pub id: SiteId,
    /// Its priority (lowest is home).
    pub priority: u32,
    /// Its health by observer quorum.
    pub health: Health,
    /// Whether a failover could go there now.
    pub eligible: bool,
    /// Its largest replication lag over the consistency group.
    #[serde(with = "humantime_serde")]
    pub lag: Option<Duration>,
    /// Why it has this health and eligibility.
    pub reasons: Vec<Reason>,
}

/// The runbook in progress, in the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookView {
    /// Its id.
    pub id: u64,
    /// Its kind.
    pub kind: RunbookKind,
    /// Its target.
    pub to: Option<SiteId>,
    /// Position of the current step, from 0.
    pub step: usize,
    /// Number of steps.
    pub steps: usize,
    /// The current step.
    pub name: Option<StepName>,
    /// Set while it waits for an operator.
    pub held: Option<String>,
}
