//! Commands: what an operator can ask, and why the election may refuse it.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Election;
use crate::error::Refused;
use crate::event::{Event, Trigger};
use crate::id::SiteId;
use crate::journal::Serving;
use crate::reason::{Reason, explain};
use crate::runbook::{RunbookKind, StepStatus};

/// What an operator can ask, with [`Election::command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// Fail over to `to` (or the best eligible site). Without `force`, the target must be
    /// eligible and the minimum dwell must have passed.
    Failover {
        /// The target; `None` picks the best eligible site.
        to: Option<SiteId>,
        /// Go past the health, RPO and dwell guards.
        force: bool,
    },
    /// Return to the home site with the failback runbook (reverse replication first).
    Failback {
        /// Go past the health and dwell guards.
        force: bool,
    },
    /// Stop automatic decisions (commands still work).
    Freeze,
    /// Resume automatic decisions.
    Unfreeze,
    /// Rehearse a failover to `to` on the drill name, leaving production alone.
    StartDrill {
        /// The site to rehearse on.
        to: SiteId,
    },
    /// Stop a drill: skip its remaining steps and clean up.
    StopDrill,
    /// Continue a runbook that waits for an operator.
    Resume(Resume),
}

/// How to continue a held runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// Try the held step again.
    Retry,
    /// Record it as skipped and go on.
    Skip,
    /// Stop the runbook.
    Abort,
}

impl Resume {
    /// The name, as serde spells it: `retry`, `skip`, `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resume::Retry => "retry",
            Resume::Skip => "skip",
            Resume::Abort => "abort",
        }
    }
}

fn refuse(command: String, reason: String) -> Result<(), Refused> {
    Err(Refused { command, reason })
}

impl Election {
    pub(super) fn on_command(&mut self, c: Command, now: Instant) -> Result<(), Refused> {
        match c {
            Command::Freeze | Command::Unfreeze => {
                let frozen = c == Command::Freeze;
                if self.journal.set_frozen(frozen) {
                    self.events.push_back(Event::Frozen { frozen });
                    self.last_note = None;
                    if !frozen {
                        self.decide(now);
                    }
                }
                Ok(())
            }
            Command::Failover { to, force } => self.failover(to, force, now),
            Command::Failback { force } => self.failback(force, now),
            Command::StartDrill { to } => {
                let name = format!("drill at {to}");
                if let Some(rb) = self.journal.runbook() {
                    return refuse(
                        name,
                        format!("runbook {} ({}) is in progress", rb.id, rb.kind),
                    );
                }
                if self.cfg.site_index(&to).is_none() {
                    return refuse(name, format!("there is no site {to}"));
                }
                self.start_runbook(
                    RunbookKind::Drill,
                    Some(to),
                    false,
                    Trigger::Command,
                    vec![Reason::Operator],
                    now,
                );
                Ok(())
            }
            Command::StopDrill => {
                let Some(rb) = self.journal.runbook() else {
                    return refuse("stop drill".into(), "no drill is running".into());
                };
                if rb.kind != RunbookKind::Drill {
                    return refuse(
                        "stop drill".into(),
                        format!("runbook {} is a {}", rb.id, rb.kind),
                    );
                }
                self.stop_drill("stopped by an operator", now);
                Ok(())
            }
            Command::Resume(how) => {
                let held = self.journal.runbook().is_some_and(|rb| rb.held.is_some());
                if !held {
                    return refuse(format!("resume ({how:?})"), "no runbook is held".into());
                }
                if let Some(rb) = self.journal.runbook_mut() {
                    rb.held = None;
                }
                match how {
                    Resume::Retry => {
                        self.fresh_budget();
                        self.launch_next(now);
                    }
                    Resume::Skip => {
                        self.finish_step(StepStatus::Skipped, "skipped by an operator".into(), now)
                    }
                    Resume::Abort => {
                        self.finish_step(StepStatus::Failed, "aborted by an operator".into(), now)
                    }
                }
                Ok(())
            }
        }
    }

    fn failover(&mut self, to: Option<SiteId>, force: bool, now: Instant) -> Result<(), Refused> {
        let name = match &to {
            Some(t) => format!("failover to {t}"),
            None => "failover".to_owned(),
        };
        self.check_room(&name)?;
        let active = self.active_index();
        let target = match to {
            Some(t) => match self.cfg.site_index(&t) {
                Some(si) => si,
                None => return refuse(name, format!("there is no site {t}")),
            },
            None => {
                let best = self
                    .order
                    .iter()
                    .copied()
                    .filter(|&si| si != active)
                    .find(|&si| force || self.eligibility(si, true).is_ok());
                match best {
                    Some(si) => si,
                    None => {
                        let why: Vec<Reason> = (0..self.cfg.sites().len())
                            .filter(|&si| si != active)
                            .filter_map(|si| self.eligibility(si, true).err())
                            .collect();
                        return refuse(name, format!("no site is eligible: {}", explain(&why)));
                    }
                }
            }
        };
        if target == active && self.journal.serving() == Serving::Active {
            return refuse(name, format!("{} is already active", self.journal.active()));
        }
        self.switch(RunbookKind::Failover, &name, target, force, now)
    }

    fn failback(&mut self, force: bool, now: Instant) -> Result<(), Refused> {
        let name = "failback".to_owned();
        self.check_room(&name)?;
        let home = self.home_index();
        if home == self.active_index() && self.journal.serving() == Serving::Active {
            return refuse(
                name,
                format!("home site {} is already active", self.journal.active()),
            );
        }
        self.switch(RunbookKind::Failback, &name, home, force, now)
    }

    /// A switch an operator asked for: unless forced, the target must be eligible (a failover
    /// also within the RPO budget) and the minimum dwell must have passed.
    fn switch(
        &mut self,
        kind: RunbookKind,
        name: &str,
        target: usize,
        force: bool,
        now: Instant,
    ) -> Result<(), Refused> {
        let override_it =
            |r: Reason| refuse(name.to_owned(), format!("{r}; use force to override"));
        let mut reasons = vec![Reason::Operator];
        if force {
            reasons.push(Reason::Forced);
        } else {
            match self.eligibility(target, kind == RunbookKind::Failover) {
                Ok(r) => reasons.push(r),
                Err(r) => return override_it(r),
            }
            if let Some(remaining) = self.dwell_remaining(now) {
                return override_it(Reason::Dwell {
                    remaining,
                    min_dwell: self.cfg.policy().min_dwell,
                });
            }
        }
        let to = self.cfg.sites()[target].id.clone();
        self.yield_drill(now);
        self.start_runbook(kind, Some(to), force, Trigger::Command, reasons, now);
        Ok(())
    }

    /// Refuses a switch command while a runbook other than a drill runs.
    fn check_room(&self, name: &str) -> Result<(), Refused> {
        match self.journal.runbook() {
            Some(rb) if rb.kind != RunbookKind::Drill => refuse(
                name.to_owned(),
                format!(
                    "runbook {} ({} to {}) is in progress",
                    rb.id,
                    rb.kind,
                    rb.to.as_ref().map(|s| s.as_str()).unwrap_or("-")
                ),
            ),
            _ => Ok(()),
        }
    }

    /// A switch command that will go ahead ends a running drill first.
    fn yield_drill(&mut self, now: Instant) {
        if self
            .journal
            .runbook()
            .is_some_and(|rb| rb.kind == RunbookKind::Drill)
        {
            self.abandon_drill(now);
        }
    }
}
