//! Runbooks: the ordered steps of a failover, failback or drill, each with its own timeout,
//! retry budget and on-failure policy.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::dns::DnsChange;
use crate::epoch::Epoch;
use crate::id::{ResourceId, SiteId};
use crate::replication::{IntegrityRequest, OpContext};

/// The steps a runbook can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepName {
    /// Stop the old site's copies from taking writes.
    Fence,
    /// Make the new site's copies primary.
    Promote,
    /// Check the new site's copies against their own evidence.
    VerifyIntegrity,
    /// Write drill markers at the new site (time stamp, size, checksum noted).
    WriteMarkers,
    /// Verify, at the site being returned to, the markers written while it was away.
    VerifyMarkers,
    /// Point the name at the new site.
    SwitchDns,
    /// Wait until every authoritative server answers the new records.
    VerifyDns,
    /// Reverse replication so the other sites follow the current primary.
    Reprotect,
    /// Wait until replication towards the target has caught up.
    CatchUp,
    /// Remove what a drill created (the drill name's records, the isolated copies).
    Cleanup,
}

impl StepName {
    /// Every step, in the order a runbook would run them.
    pub const ALL: [StepName; 10] = [
        StepName::Fence,
        StepName::Promote,
        StepName::VerifyIntegrity,
        StepName::WriteMarkers,
        StepName::VerifyMarkers,
        StepName::SwitchDns,
        StepName::VerifyDns,
        StepName::Reprotect,
        StepName::CatchUp,
        StepName::Cleanup,
    ];

    /// The phase of the RTO this step's time counts towards.
    pub fn phase(self) -> Phase {
        match self {
            StepName::Fence => Phase::Fence,
            StepName::Promote => Phase::Promote,
            StepName::SwitchDns => Phase::SwitchDns,
            StepName::VerifyDns => Phase::Propagate,
            StepName::VerifyIntegrity | StepName::WriteMarkers | StepName::VerifyMarkers => {
                Phase::Verify
            }
            StepName::Reprotect | StepName::CatchUp => Phase::Reprotect,
            StepName::Cleanup => Phase::Cleanup,
        }
    }

    /// The name as configuration files (and serde) spell it: `switch_dns`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Fence => "fence",
            StepName::Promote => "promote",
            StepName::VerifyIntegrity => "verify_integrity",
            StepName::WriteMarkers => "write_markers",
            StepName::VerifyMarkers => "verify_markers",
            StepName::SwitchDns => "switch_dns",
            StepName::VerifyDns => "verify_dns",
            StepName::Reprotect => "reprotect",
            StepName::CatchUp => "catch_up",
            StepName::Cleanup => "cleanup",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The phases a switch's recovery time is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// From the first failed probe to the site being judged down.
    Detect,
    /// From the site being judged down to the decision (dwell, quorum, operator).
    Decide,
    /// Fencing the old site.
    Fence,
    /// Promoting the new site's copies.
    Promote,
    /// Reversing replication and catching up.
    Reprotect,
    /// Integrity checks and markers.
    Verify,
    /// Writing the DNS change.
    SwitchDns,
    /// Waiting for every authoritative server.
    Propagate,
    /// Cleaning up after a drill.
    Cleanup,
}

impl Phase {
    /// The name as serde, metrics and JSON spell it: `switch_dns`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Detect => "detect",
            Phase::Decide => "decide",
            Phase::Fence => "fence",
            Phase::Promote => "promote",
            Phase::Reprotect => "reprotect",
            Phase::Verify => "verify",
            Phase::SwitchDns => "switch_dns",
            Phase::Propagate => "propagate",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// In words, for people: `switch DNS` (where [`Phase::as_str`] says `switch_dns`).
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Phase::Detect => "detect",
            Phase::Decide => "decide",
            Phase::Fence => "fence",
            Phase::Promote => "promote",
            Phase::Reprotect => "reprotect",
            Phase::Verify => "verify",
            Phase::SwitchDns => "switch DNS",
            Phase::Propagate => "propagate",
            Phase::Cleanup => "cleanup",
        })
    }
}

/// What to do when a step's retries are spent, or its failure is one a retry cannot help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Keep retrying transient failures without a budget (permanent ones hold).
    Retry,
    /// Record the step as skipped and go on. For a fence, only when every live observer
    /// calls the site down; otherwise the runbook holds (a site still reached may take writes).
    Skip,
    /// Stop the runbook; the new epoch stands and an operator decides what next.
    Abort,
    /// Pause the runbook until an operator resumes, skips or aborts it.
    Hold,
}

/// The validated knobs of one runbook step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPolicy {
    /// Which step.
    pub step: StepName,
    /// Limit for one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt (for transient failures).
    pub retries: u32,
    /// First retry delay; doubles each retry, with seeded jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// What happens when the step finally fails.
    pub on_failure: OnFailure,
}

impl StepPolicy {
    /// The defaults of a step: a failed fence is skipped only when every live observer calls
    /// its site down (the epoch still fences it at the DNS; the step's record says so), and
    /// holds for an operator when an observer still reaches the site, whatever the policy says;
    /// everything that touches data holds for an operator.
    pub fn default_for(step: StepName) -> StepPolicy {
        let s = Duration::from_secs;
        let (timeout, retries, on_failure) = match step {
            StepName::Fence => (s(30), 2, OnFailure::Skip),
            StepName::Promote => (s(120), 3, OnFailure::Hold),
            StepName::VerifyIntegrity | StepName::VerifyMarkers => (s(300), 2, OnFailure::Hold),
            StepName::WriteMarkers => (s(60), 3, OnFailure::Skip),
            StepName::SwitchDns => (s(10), 10, OnFailure::Hold),
            StepName::VerifyDns => (s(30), 5, OnFailure::Hold),
            StepName::Reprotect => (s(600), 3, OnFailure::Hold),
            StepName::CatchUp => (s(3600), 3, OnFailure::Hold),
            StepName::Cleanup => (s(60), 3, OnFailure::Skip),
        };
        StepPolicy {
            step,
            timeout,
            retries,
            backoff: Duration::from_millis(500),
            max_backoff: s(30),
            on_failure,
        }
    }
}

/// Why a runbook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunbookKind {
    /// First publication of the home site by a controller with no journal.
    Bootstrap,
    /// Away from a failed (or operator-chosen) site.
    Failover,
    /// Back to a more preferred site that is healthy again (planned, no data loss).
    Failback,
    /// Every site is down: publish all of them, or withdraw the records.
    AllDown,
    /// A site is back after an all-down period and already holds the data: publish it again.
    Restore,
    /// A rehearsal on the drill name; production is not touched.
    Drill,
}

impl RunbookKind {
    /// The name as serde, metrics and JSON spell it: `all_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunbookKind::Bootstrap => "bootstrap",
            RunbookKind::Failover => "failover",
            RunbookKind::Failback => "failback",
            RunbookKind::AllDown => "all_down",
            RunbookKind::Restore => "restore",
            RunbookKind::Drill => "drill",
        }
    }
}

/// In words, for people: `all-down` (where [`RunbookKind::as_str`] says `all_down`).
impl fmt::Display for RunbookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            RunbookKind::Bootstrap => "bootstrap",
            RunbookKind::Failover => "failover",
            RunbookKind::Failback => "failback",
            RunbookKind::AllDown => "all-down",
            RunbookKind::Restore => "restore",
            RunbookKind::Drill => "drill",
        })
    }
}

/// One concrete thing for a backend to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// `ReplicationBackend::fence`.
    Fence {
        /// The resource.
        resource: ResourceId,
        /// The site to fence.
        site: SiteId,
    },
    /// `ReplicationBackend::promote`.
    Promote {
        /// The resource.
        resource: ResourceId,
        /// The site to promote.
        site: SiteId,
    },
    /// `ReplicationBackend::reprotect`.
    Reprotect {
        /// The resource.
        resource: ResourceId,
        /// The site every other site must follow.
        primary: SiteId,
        /// Return only once the others have caught up.
        wait: bool,
    },
    /// `ReplicationBackend::integrity`.
    Integrity {
        /// The resource.
        resource: ResourceId,
        /// The site checked.
        site: SiteId,
        /// What to take, write or verify.
        request: IntegrityRequest,
    },
    /// `DnsBackend::apply`.
    SwitchDns {
        /// The change.
        change: DnsChange,
    },
    /// `DnsBackend::verify`.
    VerifyDns {
        /// The change to find on every server.
        change: DnsChange,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Fence { resource, site } => write!(f, "fence {resource} at {site}"),
            Step::Promote { resource, site } => write!(f, "promote {resource} at {site}"),
            Step::Reprotect {
                resource,
                primary,
                wait: false,
            } => write!(f, "reprotect {resource} to follow {primary}"),
            Step::Reprotect {
                resource, primary, ..
            } => write!(f, "wait until {resource} has caught up with {primary}"),
            Step::Integrity {
                resource,
                site,
                request,
            } => match request {
                IntegrityRequest::Check => write!(f, "check integrity of {resource} at {site}"),
                IntegrityRequest::Mark { label } => {
                    write!(f, "write markers {label} for {resource} at {site}")
                }
                IntegrityRequest::Verify { expected } => write!(
                    f,
                    "verify {} markers of {resource} at {site}",
                    expected.entries.len()
                ),
            },
            Step::SwitchDns { change } => write!(
                f,
                "point {} at {} (epoch {})",
                change.name, change.records, change.epoch
            ),
            Step::VerifyDns { change } => {
                write!(
                    f,
                    "wait until every server answers {} for {}",
                    change.records, change.name
                )
            }
        }
    }
}

/// Identifies one attempt of one step of one runbook.
///
/// Ordered as the election hands attempts out: by runbook, then step, then attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepId {
    /// The runbook (unique per service, never reused).
    pub runbook: u64,
    /// The step's position in the runbook.
    pub index: u32,
    /// The attempt, from 1.
    pub attempt: u32,
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "runbook {} step {} attempt {}",
            self.runbook,
            self.index + 1,
            self.attempt
        )
    }
}

/// What the election asks the driver to do: one attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Which attempt of which step; echo it in [`Input::StepDone`](crate::Input::StepDone).
    pub id: StepId,
    /// The fencing epoch; backends refuse anything older than they have seen.
    pub epoch: Epoch,
    /// Why the runbook runs.
    pub kind: RunbookKind,
    /// The configured step this comes from.
    pub name: StepName,
    /// What to do.
    pub step: Step,
    /// A rehearsal: isolated copies and the drill name only.
    pub drill: bool,
    /// Limit for this attempt; the driver cancels it after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Whether an operator forced the runbook past its guards.
    #[serde(default)]
    pub forced: bool,
}

impl Action {
    /// The context backend calls carry. Its timeout is the backend's budget: a tenth less than
    /// the action's (at most one second less), so that a backend that waits (for a catch-up,
    /// for propagation) reports what it found before the driver cuts the attempt off.
    pub fn context(&self) -> OpContext {
        let margin = (self.timeout / 10).min(Duration::from_secs(1));
        OpContext {
            epoch: self.epoch,
            drill: self.drill,
            timeout: self.timeout.saturating_sub(margin),
            force: self.forced,
        }
    }
}

/// A step of a runbook in progress, as planned when the runbook started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The configured step.
    pub name: StepName,
    /// What to do.
    pub step: Step,
    /// Its knobs.
    pub policy: StepPolicy,
    /// For a drill: part of the rehearsal even inside another runbook.
    pub drill: bool,
}

/// How a finished step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It did what it should.
    Done,
    /// It failed and its policy (or an operator) said to go on.
    Skipped,
    /// It failed and the runbook stopped.
    Failed,
}

impl StepStatus {
    /// The name, as serde spells it: `done`, `skipped`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Done => "done",
            StepStatus::Skipped => "skipped",
            StepStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A finished step, for the journal and the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The configured step.
    pub name: StepName,
    /// What was done, in words.
    pub description: String,
    /// How it ended.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Time from its first attempt to its end.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The error of the last failed attempt, or what the step found.
    pub detail: String,
}

/// A runbook in progress: everything about it that must survive a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runbook {
    /// Unique id.
    pub id: u64,
    /// Why it runs.
    pub kind: RunbookKind,
    /// The epoch of the decision.
    pub epoch: Epoch,
    /// The site it switches away from.
    pub from: Option<SiteId>,
    /// The site it switches to (none for all-down runbooks).
    pub to: Option<SiteId>,
    /// Whether an operator forced it past the guards.
    pub forced: bool,
    /// The steps, as planned.
    pub steps: Vec<PlannedStep>,
    /// Finished steps, in order; the next step to run is `done.len()`.
    pub done: Vec<StepRecord>,
    /// Wall-clock time of the decision.
    pub decided_at: SystemTime,
    /// Time from the first failure to the site being judged down.
    #[serde(with = "humantime_serde")]
    pub detect: Duration,
    /// Time from the site being judged down to the decision.
    #[serde(with = "humantime_serde")]
    pub decide: Duration,
    /// The data loss measured so far by its steps: the largest lag a catch-up left the
    /// target with, or a promotion reported (the position promoted versus the primary's
    /// last known one); `None` until one measured it.
    #[serde(with = "humantime_serde")]
    pub rpo: Option<Duration>,
    /// Replication lag of the target at the decision: the data a failover might lose, as
    /// judged before any step ran.
    #[serde(default, with = "humantime_serde")]
    pub rpo_at_decision: Option<Duration>,
    /// The reason chain of the decision.
    pub reasons: Vec<String>,
    /// Set while the runbook waits for an operator: why.
    pub held: Option<String>,
    /// Attempts made so far at the current step (kept across restarts, so a crash-looping
    /// controller does not get a fresh retry budget each time). Also the number in each
    /// attempt's [`StepId`]: it only grows while the step runs, so every attempt's id is
    /// unique and a late result of an abandoned attempt is never taken for a later one.
    #[serde(default)]
    pub attempt: u32,
    /// The attempts made before an operator's retry of a held step: the step's retry budget
    /// counts only the attempts after them.
    #[serde(default)]
    pub retried_after: u32,
}

impl Runbook {
    /// Index of the next step to run.
    pub fn next_index(&self) -> usize {
        self.done.len()
    }

    /// Whether every step has finished.
    pub fn finished(&self) -> bool {
        self.done.len() >= self.steps.len()
    }
}
