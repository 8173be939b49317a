//! Dry runs: what a command would do now and whether it would be allowed, answered by the
//! same code that carries commands out ([`Election::plan`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Command, Election};
use crate::epoch::Epoch;
use crate::id::SiteId;
use crate::journal::Serving;
use crate::reason::Reason;
use crate::runbook::{OnFailure, RunbookKind, StepName};

/// What a command would do if given now ([`Election::plan`]): allowed or refused with the
/// reason, the runbook's steps in order with their limits and failure policies, and every
/// guard with its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Plan {
    /// The command, in words (`failover to recovery`).
    pub command: String,
    /// Whether the election would carry it out now.
    pub allowed: bool,
    /// Why it would be refused.
    pub refused: Option<String>,
    /// The runbook it would start (none for a command that starts none, or a refused one
    /// whose kind is not known).
    pub kind: Option<RunbookKind>,
    /// The site it would switch away from.
    pub from: Option<SiteId>,
    /// The site it would switch to.
    pub to: Option<SiteId>,
    /// The epoch the runbook would run at.
    pub epoch: Option<Epoch>,
    /// Whether it goes past the guards.
    pub forced: bool,
    /// The decision's reason chain (when allowed).
    pub reasons: Vec<Reason>,
    /// The runbook's steps in order: as planned when allowed, as configured when refused.
    pub steps: Vec<PlanStep>,
    /// Every guard that applies, with its value now.
    pub guards: Vec<Guard>,
}

/// One step of a planned runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanStep {
    /// The step.
    pub name: StepName,
    /// What it would do (`fence db at primary`); the step's name when only configured.
    pub description: String,
    /// Limit for one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// What happens when it finally fails.
    pub on_failure: OnFailure,
}

/// A guard and its value now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Guard {
    /// What is checked (`eligibility of recovery`, `minimum dwell`, `fence of primary`).
    pub name: String,
    /// Its value, in words.
    pub value: String,
    /// Whether it lets the command through (a forced command goes past health, RPO and dwell).
    pub passes: bool,
}

impl Guard {
    /// A guard named `name` with its value; `passes` when it lets the command through. For
    /// a caller that adds what only it knows (a daemon: when the last drill ran).
    pub fn new(name: impl Into<String>, value: impl Into<String>, passes: bool) -> Guard {
        Guard {
            name: name.into(),
            value: value.into(),
            passes,
        }
    }
}

impl Election {
    /// What `command` would do if given at `now`, without doing it: the election is copied,
    /// the copy carries the command out, and its decision (or refusal) and the runbook it
    /// planned are read back. Nothing is executed and this election does not change.
    pub fn plan(&self, command: Command, now: Instant) -> Plan {
        let mut copy = self.clone();
        copy.catch_up(now);
        let guards = copy.guards(&command, now);
        let (kind, forced, to) = match &command {
            Command::Failover { to, force } => (Some(RunbookKind::Failover), *force, to.clone()),
            Command::Failback { force } => (
                Some(RunbookKind::Failback),
                *force,
                Some(copy.cfg.home().id.clone()),
            ),
            Command::StartDrill { to } => (Some(RunbookKind::Drill), false, Some(to.clone())),
            _ => (None, false, None),
        };
        let before = copy.journal.next_runbook();
        let seen = copy.events.len();
        let name = command_words(&command);
        match copy.on_command(command, now) {
            Err(refused) => Plan {
                command: refused.command,
                allowed: false,
                refused: Some(refused.reason),
                kind,
                from: kind.map(|_| copy.journal.active().clone()),
                to,
                epoch: None,
                forced,
                reasons: Vec::new(),
                steps: kind.map(|k| copy.configured_steps(k)).unwrap_or_default(),
                guards,
            },
            Ok(()) => {
                let started = copy.journal.runbook().filter(|rb| rb.id >= before).cloned();
                let reasons = copy
                    .events
                    .iter()
                    .skip(seen)
                    .find_map(|e| match e {
                        crate::event::Event::Decision { reasons, .. } => Some(reasons.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                match started {
                    Some(rb) => Plan {
                        command: name,
                        allowed: true,
                        refused: None,
                        kind: Some(rb.kind),
                        from: rb.from.clone(),
                        to: rb.to.clone(),
                        epoch: Some(rb.epoch),
                        forced: rb.forced,
                        reasons,
                        steps: rb
                            .steps
                            .iter()
                            .map(|p| PlanStep {
                                name: p.name,
                                description: p.step.to_string(),
                                timeout: p.policy.timeout,
                                retries: p.policy.retries,
                                on_failure: p.policy.on_failure,
                            })
                            .collect(),
                        guards,
                    },
                    None => Plan {
                        command: name,
                        allowed: true,
                        refused: None,
                        kind: None,
                        from: None,
                        to: None,
                        epoch: None,
                        forced,
                        reasons,
                        steps: Vec::new(),
                        guards,
                    },
                }
            }
        }
    }

    /// The configured steps of a runbook kind, for a refused command's plan.
    fn configured_steps(&self, kind: RunbookKind) -> Vec<PlanStep> {
        self.cfg
            .runbook(kind)
            .iter()
            .map(|p| PlanStep {
                name: p.step,
                description: p.step.as_str().to_owned(),
                timeout: p.timeout,
                retries: p.retries,
                on_failure: p.on_failure,
            })
            .collect()
    }

    /// The guards that apply to `command` now, each with its value.
    fn guards(&self, command: &Command, now: Instant) -> Vec<Guard> {
        let mut out = Vec::new();
        let (switch, force, failover) = match command {
            Command::Failover { force, .. } => (true, *force, true),
            Command::Failback { force } => (true, *force, false),
            Command::StartDrill { .. } => (false, false, false),
            _ => return out,
        };
        out.push(match self.journal.runbook() {
            None => Guard::new("runbook in progress", "none", true),
            Some(rb) => Guard::new(
                "runbook in progress",
                format!(
                    "runbook {} ({}{})",
                    rb.id,
                    rb.kind,
                    if rb.kind == RunbookKind::Drill && switch {
                        ", which a switch ends first"
                    } else {
                        ""
                    }
                ),
                rb.kind == RunbookKind::Drill && switch,
            ),
        });
        let active = self.active_index();
        let serving = self.journal.serving() == Serving::Active;
        // The sites the command could switch to: the one named, the home site for a
        // failback, or every other site for a failover to the best one.
        let named = match command {
            Command::Failover { to: Some(t), .. } | Command::StartDrill { to: t } => {
                self.cfg.site_index(t)
            }
            Command::Failback { .. } => Some(self.home_index()),
            _ => None,
        };
        if switch && let Some(ti) = named.filter(|&ti| ti == active && serving) {
            out.push(Guard::new(
                "target",
                format!("{} is already active", self.cfg.sites()[ti].id),
                false,
            ));
        }
        for si in 0..self.cfg.sites().len() {
            let site = &self.cfg.sites()[si].id;
            for r in self.health.reasons(&self.cfg, si).into_iter().take(1) {
                out.push(Guard::new(format!("health of {site}"), r.to_string(), true));
            }
            if !switch || (si == active && serving) || named.is_some_and(|ti| ti != si) {
                continue;
            }
            let g = match self.eligibility(si, failover) {
                Ok(r) => Guard::new(format!("eligibility of {site}"), r.to_string(), true),
                Err(r) => Guard::new(
                    format!("eligibility of {site}"),
                    if force {
                        format!("{r} (forced past)")
                    } else {
                        r.to_string()
                    },
                    force,
                ),
            };
            out.push(g);
        }
        if switch {
            let min = self.cfg.policy().min_dwell;
            out.push(match self.dwell_remaining(now) {
                None => Guard::new(
                    "minimum dwell",
                    format!("passed ({} minimum)", hms(min)),
                    true,
                ),
                Some(left) => Guard::new(
                    "minimum dwell",
                    format!(
                        "{} left of {}{}",
                        hms(left),
                        hms(min),
                        if force { " (forced past)" } else { "" }
                    ),
                    force,
                ),
            });
            if let Some(budget) = self.cfg.policy().rpo_budget {
                out.push(Guard::new(
                    "RPO budget",
                    format!(
                        "{}{}",
                        hms(budget),
                        if failover {
                            " (checked at the decision, and at the catch-up)"
                        } else {
                            " (checked at the catch-up)"
                        }
                    ),
                    true,
                ));
            }
            let kind = if failover {
                RunbookKind::Failover
            } else {
                RunbookKind::Failback
            };
            let fences = self
                .cfg
                .runbook(kind)
                .iter()
                .any(|p| p.step == StepName::Fence);
            if fences && !self.cfg.resources().is_empty() {
                let site = self.journal.active();
                let value = if self.health.unreachable(active) {
                    format!(
                        "{site} is unreachable by every live observer: a failed fence is \
                         skipped (the epoch still fences it at the DNS)"
                    )
                } else {
                    format!(
                        "{site} is reached by a live observer: a failed fence holds the runbook \
                         for an operator"
                    )
                };
                out.push(Guard::new(format!("fence of {site}"), value, true));
            }
        }
        out.push(Guard::new(
            "automatic decisions",
            if self.journal.frozen() {
                "frozen (commands still run)"
            } else {
                "not frozen"
            },
            true,
        ));
        out
    }
}

/// A command in words, as the election names it when it refuses one.
fn command_words(c: &Command) -> String {
    match c {
        Command::Failover { to: Some(t), .. } => format!("failover to {t}"),
        Command::Failover { to: None, .. } => "failover".into(),
        Command::Failback { .. } => "failback".into(),
        Command::Freeze => "freeze".into(),
        Command::Unfreeze => "unfreeze".into(),
        Command::StartDrill { to } => format!("drill at {to}"),
        Command::StopDrill => "stop drill".into(),
        Command::Resume(how) => format!("resume ({})", how.as_str()),
    }
}

/// A duration rounded to milliseconds, in words (`1m 30s`).
fn hms(d: Duration) -> String {
    let ms = Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64);
    humantime::format_duration(ms).to_string()
}
