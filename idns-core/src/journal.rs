//! The journal: the part of the election's state that must survive a crash.
//!
//! It holds no `Instant`: times are wall-clock [`SystemTime`]s and durations. The driver saves
//! it *before* executing each action, so a restarted controller resumes the runbook in
//! progress at the step that had not finished, never repeats a finished one, and never makes
//! the same decision twice.
//!
//! Only the election changes a journal, and only through the methods below, each of which
//! counts the change itself: whether the driver must save is never decided by hand.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::ServiceConfig;
use crate::dns::Ownership;
use crate::epoch::Epoch;
use crate::error::Error;
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

impl Serving {
    /// The name, as serde spells it: `active`, `all_sites`, `withdrawn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Serving::Active => "active",
            Serving::AllSites => "all_sites",
            Serving::Withdrawn => "withdrawn",
        }
    }
}

/// The election's durable state, read through [`Election::journal`](crate::Election::journal)
/// and saved by a [`StateStore`](crate::StateStore).
///
/// Its serde form is the format on disk ([`JOURNAL_VERSION`]). Equality compares the state
/// only, not how many times it changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    version: u32,
    service: DnsName,
    active: SiteId,
    epoch: Epoch,
    serving: Serving,
    frozen: bool,
    last_switch: Option<SystemTime>,
    next_runbook: u64,
    runbook: Option<Runbook>,
    markers: BTreeMap<ResourceId, Manifest>,
    switches: u64,
    #[serde(default)]
    pending_cleanup: Vec<PlannedStep>,
    /// Changes since the journal was built or loaded: not state, never saved.
    #[serde(skip)]
    changes: u64,
}

impl PartialEq for Journal {
    fn eq(&self, other: &Self) -> bool {
        // Every field but the change count; naming each one makes a new field a compile error
        // here until it is compared.
        let Journal {
            version,
            service,
            active,
            epoch,
            serving,
            frozen,
            last_switch,
            next_runbook,
            runbook,
            markers,
            switches,
            pending_cleanup,
            changes: _,
        } = self;
        *version == other.version
            && *service == other.service
            && *active == other.active
            && *epoch == other.epoch
            && *serving == other.serving
            && *frozen == other.frozen
            && *last_switch == other.last_switch
            && *next_runbook == other.next_runbook
            && *runbook == other.runbook
            && *markers == other.markers
            && *switches == other.switches
            && *pending_cleanup == other.pending_cleanup
    }
}

impl Eq for Journal {}

impl Journal {
    /// A journal of a service that has made no decision yet, with `active` as its active site.
    pub(crate) fn new(service: DnsName, active: SiteId) -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            service,
            active,
            epoch: Epoch::ZERO,
            serving: Serving::Active,
            frozen: false,
            last_switch: None,
            next_runbook: 1,
            runbook: None,
            markers: BTreeMap::new(),
            switches: 0,
            pending_cleanup: Vec::new(),
            changes: 0,
        }
    }

    /// A journal that adopts what the DNS already publishes (the ownership record read back),
    /// for a controller that starts without a journal of its own: it keeps the published site
    /// and continues from the published epoch instead of publishing the home site again.
    pub fn adopt(service: DnsName, owner: &Ownership, fallback: SiteId) -> Journal {
        let mut j = Journal::new(service, owner.site.clone().unwrap_or(fallback));
        j.epoch = owner.epoch;
        if owner.site.is_none() {
            j.serving = Serving::AllSites;
        }
        j
    }

    // ----------------------------------------------------------------------------------------
    // Queries
    // ----------------------------------------------------------------------------------------

    /// Format version ([`JOURNAL_VERSION`] for a journal this build wrote).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The service it belongs to.
    pub fn service(&self) -> &DnsName {
        &self.service
    }

    /// The active site: where the data's primary copy is, and what the name points at unless
    /// [`serving`](Self::serving) says otherwise.
    pub fn active(&self) -> &SiteId {
        &self.active
    }

    /// The fencing epoch of the last decision.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// What the name publishes.
    pub fn serving(&self) -> Serving {
        self.serving
    }

    /// Whether automatic decisions are frozen.
    pub fn frozen(&self) -> bool {
        self.frozen
    }

    /// Wall-clock time of the last switch (for the minimum dwell).
    pub fn last_switch(&self) -> Option<SystemTime> {
        self.last_switch
    }

    /// The id the next runbook gets.
    pub fn next_runbook(&self) -> u64 {
        self.next_runbook
    }

    /// The runbook in progress.
    pub fn runbook(&self) -> Option<&Runbook> {
        self.runbook.as_ref()
    }

    /// Drill markers written at the active site since the last failover, by resource, to be
    /// verified after failback.
    pub fn markers(&self) -> &BTreeMap<ResourceId, Manifest> {
        &self.markers
    }

    /// Switches made so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Cleanup of a drill that a production switch cut short, to run after that switch.
    pub fn pending_cleanup(&self) -> &[PlannedStep] {
        &self.pending_cleanup
    }

    /// How many times the journal changed since it was built or loaded.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// Checks that a journal read back belongs to this configuration.
    pub(crate) fn check(&self, cfg: &ServiceConfig) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Journal(m));
        if self.version != JOURNAL_VERSION {
            return bad(format!(
                "version {} (this build reads version {JOURNAL_VERSION})",
                self.version
            ));
        }
        if &self.service != cfg.name() {
            return bad(format!(
                "it belongs to {}, not {}",
                self.service,
                cfg.name()
            ));
        }
        if cfg.site(&self.active).is_none() {
            return bad(format!("its active site {} is not configured", self.active));
        }
        if let Some(rb) = &self.runbook {
            for s in rb.from.iter().chain(rb.to.iter()) {
                if cfg.site(s).is_none() {
                    return bad(format!(
                        "runbook {} names site {s}, which is not configured",
                        rb.id
                    ));
                }
            }
            if rb.done.len() > rb.steps.len() {
                return bad(format!(
                    "runbook {} has more finished steps than steps",
                    rb.id
                ));
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Changes: each one counts itself
    // ----------------------------------------------------------------------------------------

    fn touch(&mut self) {
        self.changes = self.changes.wrapping_add(1);
    }

    /// Forgets the change count (a new election starts from the journal it was given).
    pub(crate) fn forget_changes(&mut self) {
        self.changes = 0;
    }

    /// Freezes or unfreezes automatic decisions; returns whether that changed anything.
    pub(crate) fn set_frozen(&mut self, frozen: bool) -> bool {
        if self.frozen == frozen {
            return false;
        }
        self.frozen = frozen;
        self.touch();
        true
    }

    /// Hands out the next runbook id.
    pub(crate) fn take_runbook_id(&mut self) -> u64 {
        let id = self.next_runbook;
        self.next_runbook += 1;
        self.touch();
        id
    }

    /// A new decision: the next epoch, with the name publishing `serving` (and `active` when
    /// given). `switched_at` counts it as a switch, for the dwell and the switch count.
    pub(crate) fn decide(
        &mut self,
        serving: Serving,
        active: Option<&SiteId>,
        switched_at: Option<SystemTime>,
    ) -> Epoch {
        self.epoch = self.epoch.next();
        self.serving = serving;
        if let Some(a) = active {
            self.active = a.clone();
        }
        if let Some(at) = switched_at {
            self.last_switch = Some(at);
            self.switches += 1;
        }
        self.touch();
        self.epoch
    }

    /// Starts a runbook (the previous one, if any, is replaced).
    pub(crate) fn start_runbook(&mut self, runbook: Runbook) {
        self.runbook = Some(runbook);
        self.touch();
    }

    /// Ends the runbook in progress and returns it.
    pub(crate) fn take_runbook(&mut self) -> Option<Runbook> {
        let rb = self.runbook.take();
        if rb.is_some() {
            self.touch();
        }
        rb
    }

    /// The runbook in progress, to change it (counted as a change).
    pub(crate) fn runbook_mut(&mut self) -> Option<&mut Runbook> {
        if self.runbook.is_some() {
            self.touch();
        }
        self.runbook.as_mut()
    }

    /// Keeps the markers written for a resource.
    pub(crate) fn insert_marker(&mut self, resource: ResourceId, manifest: Manifest) {
        self.markers.insert(resource, manifest);
        self.touch();
    }

    /// Forgets every marker (they were verified at home).
    pub(crate) fn clear_markers(&mut self) {
        if !self.markers.is_empty() {
            self.markers.clear();
            self.touch();
        }
    }

    /// Sets the cleanup of a drill cut short.
    pub(crate) fn set_pending_cleanup(&mut self, steps: Vec<PlannedStep>) {
        self.pending_cleanup = steps;
        self.touch();
    }

    /// Takes the cleanup of a drill cut short, to run it.
    pub(crate) fn take_pending_cleanup(&mut self) -> Vec<PlannedStep> {
        if self.pending_cleanup.is_empty() {
            return Vec::new();
        }
        self.touch();
        std::mem::take(&mut self.pending_cleanup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Journal {
        Journal::new(
            DnsName::try_from("www.example.com").unwrap(),
            SiteId::try_from("a").unwrap(),
        )
    }

    #[test]
    fn every_change_counts_itself_and_equality_ignores_the_count() {
        let mut j = journal();
        let fresh = j.clone();
        assert_eq!(j.changes(), 0);
        assert!(!j.set_frozen(false), "no change, nothing counted");
        assert_eq!(j.changes(), 0);
        assert!(j.set_frozen(true));
        assert_eq!(j.changes(), 1);
        assert_ne!(j, fresh);
        assert!(j.set_frozen(false));
        assert_eq!(j.changes(), 2);
        assert_eq!(j, fresh, "the same state, whatever the count");
        let epoch = j.decide(Serving::Active, None, None);
        assert_eq!((epoch, j.epoch(), j.changes()), (Epoch::new(1), epoch, 3));
        assert!(j.runbook_mut().is_none());
        assert_eq!(j.changes(), 3, "no runbook to change");
    }

    #[test]
    fn the_serde_form_is_the_format_on_disk() {
        let mut j = journal();
        j.set_frozen(true);
        let value = serde_json::to_value(&j).unwrap();
        let fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "active",
                "epoch",
                "frozen",
                "last_switch",
                "markers",
                "next_runbook",
                "pending_cleanup",
                "runbook",
                "service",
                "serving",
                "switches",
                "version"
            ]
        );
        let back: Journal = serde_json::from_value(value).unwrap();
        assert_eq!(back, j);
        assert_eq!(back.changes(), 0, "a loaded journal has no changes yet");
    }
}
