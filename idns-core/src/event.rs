//! Events: what the election reports happened, for logs, metrics and reports.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::Refused;
use crate::id::{ObserverId, ProbeId, SiteId};
use crate::reason::{Health, Reason};
use crate::runbook::{Phase, RunbookKind, StepId, StepName, StepRecord, StepStatus};

/// Something that happened. Drained with [`Election::poll_event`](crate::Election::poll_event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A probe crossed its rise or fall threshold at one observer.
    ProbeChanged {
        /// The site.
        site: SiteId,
        /// The probe.
        probe: ProbeId,
        /// The observer.
        observer: ObserverId,
        /// Its new health.
        health: Health,
        /// The reason of the last attempt.
        reason: String,
    },
    /// An observer fell silent, or spoke again.
    ObserverChanged {
        /// The observer.
        observer: ObserverId,
        /// Whether its reports count.
        live: bool,
    },
    /// A site's health (by observer quorum) changed.
    SiteChanged {
        /// The site.
        site: SiteId,
        /// Before.
        from: Health,
        /// After.
        to: Health,
        /// Why.
        reasons: Vec<Reason>,
    },
    /// The election decided to run a runbook.
    Decision {
        /// The runbook.
        runbook: u64,
        /// Its kind.
        kind: RunbookKind,
        /// Switching away from.
        from: Option<SiteId>,
        /// Switching to.
        to: Option<SiteId>,
        /// The new epoch.
        epoch: Epoch,
        /// Whether an operator forced it.
        forced: bool,
        /// The reason chain.
        reasons: Vec<Reason>,
    },
    /// The election would switch but may not (RPO, dwell, frozen, no eligible site).
    Blocked {
        /// The reason chain.
        reasons: Vec<Reason>,
    },
    /// In manual mode: what the election would do.
    Recommendation {
        /// The kind of switch recommended.
        kind: RunbookKind,
        /// The site recommended.
        to: SiteId,
        /// The reason chain.
        reasons: Vec<Reason>,
    },
    /// A step attempt was handed to the driver.
    StepStarted {
        /// Which attempt.
        id: StepId,
        /// The step.
        name: StepName,
        /// What it does, in words.
        description: String,
    },
    /// A step attempt failed and will be retried.
    StepRetry {
        /// Which attempt failed.
        id: StepId,
        /// The step.
        name: StepName,
        /// Delay before the next attempt.
        #[serde(with = "humantime_serde")]
        delay: Duration,
        /// The error.
        error: String,
    },
    /// A step finished (done, skipped or failed).
    StepFinished {
        /// Its runbook.
        runbook: u64,
        /// Its record.
        record: StepRecord,
    },
    /// A runbook is waiting for an operator.
    Held {
        /// The runbook.
        runbook: u64,
        /// The step it waits at.
        name: StepName,
        /// Why.
        reason: String,
    },
    /// A runbook ended (completed or aborted), with its measured RTO and RPO.
    Finished(SwitchReport),
    /// An operator command was refused.
    Refused(Refused),
    /// Automatic decisions were frozen or unfrozen.
    Frozen {
        /// Whether they are frozen now.
        frozen: bool,
    },
}

/// How a runbook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step done or skipped.
    Completed,
    /// Stopped by a step's policy or an operator.
    Aborted,
}

/// The measured result of one runbook: RTO per phase, RPO, every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchReport {
    /// The runbook.
    pub runbook: u64,
    /// Its kind.
    pub kind: RunbookKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Switched away from.
    pub from: Option<SiteId>,
    /// Switched to.
    pub to: Option<SiteId>,
    /// Its epoch.
    pub epoch: Epoch,
    /// Whether an operator forced it.
    pub forced: bool,
    /// Wall-clock time of the decision.
    pub decided_at: SystemTime,
    /// Wall-clock time it ended.
    pub finished_at: SystemTime,
    /// Recovery time: from the first failed probe (or the command) to the end.
    #[serde(with = "humantime_serde")]
    pub rto: Duration,
    /// The recovery time split into phases, in order.
    pub phases: Vec<PhaseTime>,
    /// Replication lag of the target at the decision (or measured at promotion).
    #[serde(with = "humantime_serde")]
    pub rpo: Option<Duration>,
    /// Every step.
    pub steps: Vec<StepRecord>,
    /// The reason chain of the decision.
    pub reasons: Vec<String>,
}

impl SwitchReport {
    /// The time spent in one phase.
    pub fn phase(&self, phase: Phase) -> Duration {
        self.phases
            .iter()
            .filter(|p| p.phase == phase)
            .map(|p| p.duration)
            .sum()
    }

    /// Steps that did not end `Done`.
    pub fn problems(&self) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(|s| s.status != StepStatus::Done)
    }
}

/// Time spent in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// The phase.
    pub phase: Phase,
    /// Its duration.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}
