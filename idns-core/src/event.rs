//! Events: what the election reports happened, for logs, metrics and reports.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::dns::RecordSet;
use crate::epoch::Epoch;
use crate::error::Refused;
use crate::id::{ObserverId, ProbeId, SiteId};
use crate::probe::Health;
use crate::reason::{Reason, explain};
use crate::runbook::{Phase, RunbookKind, StepId, StepName, StepRecord, StepStatus};

/// Something that happened. Drained with [`Election::poll_event`](crate::Election::poll_event).
///
/// Its `Display` is the one wording every log, narration and report prints, e.g.
/// `decision: failover primary -> recovery at epoch 2: site primary down: …` or
/// `done     promote app-data at recovery (12.5 ms)`.
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
        /// What caused it: the election itself, or an operator's command.
        #[serde(default)]
        trigger: Trigger,
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
    /// A controller resumed from its journal found the DNS publishing something else than
    /// the journal says (records missing, another site's, a lower epoch) and published the
    /// journal's records again, at the journal's epoch.
    Republished {
        /// The journal's epoch, under which they were published again.
        epoch: Epoch,
        /// The site they point at (none when every site is published, or none).
        site: Option<SiteId>,
        /// The records published again.
        records: RecordSet,
        /// What the DNS held instead, in words.
        reason: String,
    },
}

/// What caused a [`Event::Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Trigger {
    /// The election, from what it was told (health, lag, timers), or a bootstrap.
    #[default]
    Election,
    /// An operator's [`Command`](crate::Command).
    Command,
}

impl Trigger {
    /// The name, as serde spells it: `election`, `command`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Election => "election",
            Trigger::Command => "command",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
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

impl Outcome {
    /// The name, as serde spells it: `completed`, `aborted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Aborted => "aborted",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
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
    /// The data loss as measured by its steps: the catch-up's lag or what the promotion
    /// reported (the position promoted versus the primary's last known one); the lag at the
    /// decision where no step measured it.
    #[serde(with = "humantime_serde")]
    pub rpo: Option<Duration>,
    /// Replication lag of the target at the decision, before any step ran.
    #[serde(default, with = "humantime_serde")]
    pub rpo_at_decision: Option<Duration>,
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

/// Milliseconds with `decimals` digits: `12.5 ms`.
fn ms(d: Duration, decimals: usize) -> String {
    format!("{:.*} ms", decimals, d.as_secs_f64() * 1000.0)
}

fn site_or_dash(site: &Option<SiteId>) -> &str {
    site.as_ref().map_or("-", |s| s.as_str())
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ProbeChanged {
                site,
                probe,
                observer,
                health,
                reason,
            } => {
                write!(f, "probe {probe} of {site} is {health} at {observer}")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Event::ObserverChanged { observer, live } => write!(
                f,
                "observer {observer} {}",
                if *live {
                    "reports again"
                } else {
                    "is silent: its reports no longer count"
                }
            ),
            Event::SiteChanged {
                site, to, reasons, ..
            } => write!(f, "site {site} is {to}: {}", explain(reasons)),
            Event::Decision {
                kind,
                from,
                to,
                epoch,
                forced,
                reasons,
                ..
            } => write!(
                f,
                "decision: {kind} {} -> {} at epoch {epoch}{}: {}",
                site_or_dash(from),
                site_or_dash(to),
                if *forced { " (forced)" } else { "" },
                explain(reasons)
            ),
            Event::Blocked { reasons } => write!(f, "waiting: {}", explain(reasons)),
            Event::Recommendation { kind, to, reasons } => {
                write!(f, "recommendation: {kind} to {to}: {}", explain(reasons))
            }
            Event::StepStarted {
                id, description, ..
            } => {
                write!(f, "{:<8} {description}", "started")?;
                if id.attempt > 1 {
                    write!(f, " (attempt {})", id.attempt)?;
                }
                Ok(())
            }
            Event::StepRetry {
                name, delay, error, ..
            } => write!(
                f,
                "retry {name} in {}: {error}",
                humantime::format_duration(Duration::from_millis(
                    delay.as_millis().min(u128::from(u64::MAX)) as u64
                ))
            ),
            Event::StepFinished { record, .. } => {
                write!(
                    f,
                    "{:<8} {} ({})",
                    record.status,
                    record.description,
                    ms(record.duration, 1)
                )?;
                if !record.detail.is_empty() {
                    write!(f, ": {}", record.detail)?;
                }
                Ok(())
            }
            Event::Held { name, reason, .. } => write!(
                f,
                "HELD at {name}: {reason} (an operator must resume: retry, skip or abort)"
            ),
            Event::Finished(r) => {
                write!(
                    f,
                    "{} {}: RTO {}",
                    r.kind,
                    if r.outcome == Outcome::Completed {
                        "finished"
                    } else {
                        "ABORTED"
                    },
                    ms(r.rto, 0)
                )?;
                if let Some(rpo) = r.rpo {
                    write!(f, ", RPO {}", ms(rpo, 0))?;
                }
                if let Some(lag) = r.rpo_at_decision.filter(|&l| Some(l) != r.rpo) {
                    write!(f, ", lag at decision {}", ms(lag, 0))?;
                }
                write!(f, " (epoch {})", r.epoch)
            }
            Event::Refused(r) => write!(f, "refused: {r}"),
            Event::Frozen { frozen } => f.write_str(if *frozen {
                "automatic decisions frozen"
            } else {
                "automatic decisions resumed"
            }),
            Event::Republished {
                epoch,
                site,
                records,
                reason,
            } => {
                write!(f, "republished {records}")?;
                if let Some(site) = site {
                    write!(f, " for {site}")?;
                }
                write!(f, " at epoch {epoch}: {reason}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::journal::Serving;
    use crate::probe::Health;
    use crate::probe::ProbeStatus;
    use crate::replication::Role;
    use crate::runbook::{StepName, StepStatus};
    use crate::{Phase, Resume};

    fn id<T: TryFrom<&'static str>>(s: &'static str) -> T
    where
        T::Error: fmt::Debug,
    {
        T::try_from(s).unwrap()
    }

    fn record(status: StepStatus, detail: &str) -> StepRecord {
        StepRecord {
            name: StepName::Promote,
            description: "promote app-data at recovery".into(),
            status,
            attempts: 1,
            duration: Duration::from_micros(12_480),
            detail: detail.into(),
        }
    }

    #[test]
    fn every_event_has_one_wording() {
        let step = StepId {
            runbook: 2,
            index: 1,
            attempt: 1,
        };
        let report = SwitchReport {
            runbook: 2,
            kind: RunbookKind::Failover,
            outcome: Outcome::Completed,
            from: Some(id("primary")),
            to: Some(id("recovery")),
            epoch: Epoch::new(2),
            forced: false,
            decided_at: UNIX_EPOCH,
            finished_at: UNIX_EPOCH,
            rto: Duration::from_millis(2345),
            phases: Vec::new(),
            rpo: Some(Duration::from_millis(120)),
            rpo_at_decision: Some(Duration::from_millis(900)),
            steps: Vec::new(),
            reasons: Vec::new(),
        };
        let table: Vec<(Event, &str)> = vec![
            (
                Event::ProbeChanged {
                    site: id("primary"),
                    probe: id("http"),
                    observer: id("east"),
                    health: Health::Down,
                    reason: "HTTP 503".into(),
                },
                "probe http of primary is down at east: HTTP 503",
            ),
            (
                Event::ObserverChanged {
                    observer: id("east"),
                    live: false,
                },
                "observer east is silent: its reports no longer count",
            ),
            (
                Event::ObserverChanged {
                    observer: id("east"),
                    live: true,
                },
                "observer east reports again",
            ),
            (
                Event::SiteChanged {
                    site: id("primary"),
                    from: Health::Up,
                    to: Health::Down,
                    reasons: vec![Reason::Frozen],
                },
                "site primary is down: automatic decisions are frozen",
            ),
            (
                Event::Decision {
                    runbook: 1,
                    kind: RunbookKind::Bootstrap,
                    from: None,
                    to: Some(id("primary")),
                    epoch: Epoch::new(1),
                    forced: false,
                    trigger: Trigger::Election,
                    reasons: vec![Reason::Note("no journal".into())],
                },
                "decision: bootstrap - -> primary at epoch 1: no journal",
            ),
            (
                Event::Decision {
                    runbook: 2,
                    kind: RunbookKind::Failover,
                    from: Some(id("primary")),
                    to: Some(id("recovery")),
                    epoch: Epoch::new(2),
                    forced: true,
                    trigger: Trigger::Command,
                    reasons: vec![Reason::Operator, Reason::Forced],
                },
                "decision: failover primary -> recovery at epoch 2 (forced): requested by an \
                 operator; forced by an operator",
            ),
            (
                Event::Blocked {
                    reasons: vec![Reason::Frozen],
                },
                "waiting: automatic decisions are frozen",
            ),
            (
                Event::Recommendation {
                    kind: RunbookKind::Failback,
                    to: id("primary"),
                    reasons: vec![Reason::ManualFailback],
                },
                "recommendation: failback to primary: failback is manual: an operator must \
                 confirm",
            ),
            (
                Event::StepStarted {
                    id: step,
                    name: StepName::Promote,
                    description: "promote app-data at recovery".into(),
                },
                "started  promote app-data at recovery",
            ),
            (
                Event::StepStarted {
                    id: StepId { attempt: 3, ..step },
                    name: StepName::Promote,
                    description: "promote app-data at recovery".into(),
                },
                "started  promote app-data at recovery (attempt 3)",
            ),
            (
                Event::StepRetry {
                    id: step,
                    name: StepName::SwitchDns,
                    delay: Duration::from_micros(1_500_700),
                    error: "refused".into(),
                },
                "retry switch_dns in 1s 500ms: refused",
            ),
            (
                Event::StepFinished {
                    runbook: 2,
                    record: record(StepStatus::Done, ""),
                },
                "done     promote app-data at recovery (12.5 ms)",
            ),
            (
                Event::StepFinished {
                    runbook: 2,
                    record: record(StepStatus::Failed, "after 3 attempt(s): gone"),
                },
                "failed   promote app-data at recovery (12.5 ms): after 3 attempt(s): gone",
            ),
            (
                Event::Held {
                    runbook: 2,
                    name: StepName::Promote,
                    reason: "gone".into(),
                },
                "HELD at promote: gone (an operator must resume: retry, skip or abort)",
            ),
            (
                Event::Finished(report.clone()),
                "failover finished: RTO 2345 ms, RPO 120 ms, lag at decision 900 ms (epoch 2)",
            ),
            (
                Event::Finished(SwitchReport {
                    outcome: Outcome::Aborted,
                    rpo: None,
                    rpo_at_decision: None,
                    ..report
                }),
                "failover ABORTED: RTO 2345 ms (epoch 2)",
            ),
            (
                Event::Refused(Refused {
                    command: "failback".into(),
                    reason: "home site primary is already active".into(),
                }),
                "refused: failback refused: home site primary is already active",
            ),
            (Event::Frozen { frozen: true }, "automatic decisions frozen"),
            (
                Event::Frozen { frozen: false },
                "automatic decisions resumed",
            ),
            (
                Event::Republished {
                    epoch: Epoch::new(3),
                    site: Some(id("recovery")),
                    records: RecordSet::Addresses(vec!["198.51.100.1".parse().unwrap()]),
                    reason: "the DNS held 192.0.2.1 for primary at epoch 2".into(),
                },
                "republished 198.51.100.1 for recovery at epoch 3: the DNS held 192.0.2.1 for \
                 primary at epoch 2",
            ),
        ];
        for (event, want) in table {
            assert_eq!(event.to_string(), want, "{event:?}");
        }
    }

    fn serde_name<T: Serialize>(value: T) -> String {
        match serde_json::to_value(value) {
            Ok(serde_json::Value::String(s)) => s,
            other => panic!("not a unit variant: {other:?}"),
        }
    }

    #[test]
    fn the_core_enums_say_their_serde_names() {
        let mut names: Vec<(String, &str)> = Vec::new();
        names.extend([Trigger::Election, Trigger::Command].map(|v| (serde_name(v), v.as_str())));
        names.extend([Outcome::Completed, Outcome::Aborted].map(|v| (serde_name(v), v.as_str())));
        names.extend(
            [Health::Up, Health::Down, Health::Unknown].map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [ProbeStatus::Up, ProbeStatus::Down, ProbeStatus::Timeout]
                .map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [Role::Primary, Role::Replica, Role::Fenced, Role::Unknown]
                .map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [Serving::Active, Serving::AllSites, Serving::Withdrawn]
                .map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [Resume::Retry, Resume::Skip, Resume::Abort].map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [StepStatus::Done, StepStatus::Skipped, StepStatus::Failed]
                .map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [
                RunbookKind::Bootstrap,
                RunbookKind::Failover,
                RunbookKind::Failback,
                RunbookKind::AllDown,
                RunbookKind::Restore,
                RunbookKind::Drill,
            ]
            .map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(
            [
                Phase::Detect,
                Phase::Decide,
                Phase::Fence,
                Phase::Promote,
                Phase::Reprotect,
                Phase::Verify,
                Phase::SwitchDns,
                Phase::Propagate,
                Phase::Cleanup,
            ]
            .map(|v| (serde_name(v), v.as_str())),
        );
        names.extend(StepName::ALL.map(|v| (serde_name(v), v.as_str())));
        for (serde, as_str) in &names {
            assert_eq!(serde, as_str);
        }
        assert_eq!(names.len(), 48);
        // Display pads like a string, so columns line up.
        assert_eq!(format!("[{:<8}]", StepStatus::Done), "[done    ]");
    }
}
