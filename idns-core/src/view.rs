//! The election's current state, for status pages, metrics and tests.
//!
//! Times in the view are wall-clock [`SystemTime`]s, so the view can be serialised, and a
//! property test can check the dwell, the hold-down and each observer's liveness from it. The
//! election's own times (the last switch, the dwell, since when a site is up) are on its clock:
//! the `wall` it was started with, advanced by the `now` of each input. A report's time is the
//! one the report carries.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::id::{DnsName, ObserverId, ProbeId, SiteId};
use crate::journal::Serving;
use crate::probe::Health;
use crate::reason::Reason;
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
    /// When the last switch was decided (none before the first one).
    #[serde(default)]
    pub last_switch: Option<SystemTime>,
    /// When the minimum dwell after the last switch ends: no automatic or unforced switch is
    /// decided before. See [`dwell_left`](Self::dwell_left).
    #[serde(default)]
    pub dwell_until: Option<SystemTime>,
    /// Each observer, in configuration order.
    #[serde(default)]
    pub observers: Vec<ObserverView>,
}

impl ServiceView {
    /// The site with this id.
    pub fn site(&self, id: &SiteId) -> Option<&SiteView> {
        self.sites.iter().find(|s| &s.id == id)
    }

    /// The home site: the most preferred (lowest priority number, first in configuration
    /// order among equals).
    pub fn home(&self) -> Option<&SiteView> {
        self.sites
            .iter()
            .reduce(|best, s| if s.priority < best.priority { s } else { best })
    }

    /// How much of the minimum dwell is left at `at` (zero once it has passed, or before the
    /// first switch).
    pub fn dwell_left(&self, at: SystemTime) -> Duration {
        self.dwell_until
            .and_then(|until| until.duration_since(at).ok())
            .unwrap_or(Duration::ZERO)
    }
}

/// One site in the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    /// The site.
    pub id: SiteId,
    /// Its priority (lowest is home).
    pub priority: u32,
    /// Its health by observer quorum (the rules are on [`Health`]).
    pub health: Health,
    /// Whether a failover could go there now.
    pub eligible: bool,
    /// Its largest replication lag over the consistency group.
    #[serde(with = "humantime_serde")]
    pub lag: Option<Duration>,
    /// Why it has this health and eligibility.
    pub reasons: Vec<Reason>,
    /// Since when it has been up without a break (none while it is not up).
    #[serde(default)]
    pub up_since: Option<SystemTime>,
    /// Each of its probes at each observer, probe by probe, in configuration order.
    #[serde(default)]
    pub probes: Vec<ProbeView>,
}

impl SiteView {
    /// How long it has been up at `at` (none while it is not up).
    pub fn up_for(&self, at: SystemTime) -> Option<Duration> {
        self.up_since
            .map(|since| at.duration_since(since).unwrap_or(Duration::ZERO))
    }
}

/// One probe of a site as one observer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeView {
    /// The probe.
    pub probe: ProbeId,
    /// The observer.
    pub observer: ObserverId,
    /// Its health at that observer (rise and fall applied).
    pub health: Health,
    /// When the observer last reported this probe: the report's own time
    /// ([`ProbeReport::at`](crate::ProbeReport::at)).
    pub last_report: Option<SystemTime>,
    /// Whether the observer is live: a stale observer's results do not count.
    pub live: bool,
}

/// One observer in the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverView {
    /// The observer.
    pub id: ObserverId,
    /// Whether its reports count: it has reported within `stale_after` (on the election's
    /// clock).
    pub live: bool,
    /// When it last reported anything: the report's own time
    /// ([`ProbeReport::at`](crate::ProbeReport::at)).
    pub last_report: Option<SystemTime>,
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
