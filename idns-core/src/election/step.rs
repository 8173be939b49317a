//! Step execution: starting a runbook, handing out its steps one attempt at a time, taking
//! their results (retry, skip, hold or abort by each step's policy), and ending it with its
//! measured RTO and RPO.

use std::time::{Duration, Instant};

use rand::Rng;

use super::Election;
use super::input::{StepDone, StepOutput};
use super::plan::{self, Decision};
use crate::config::AllDownPolicy;
use crate::error::BackendError;
use crate::event::{Event, Outcome, SwitchReport, Trigger};
use crate::id::SiteId;
use crate::journal::Serving;
use crate::reason::{Reason, explain};
use crate::replication::{IntegrityRequest, Role};
use crate::runbook::{
    Action, OnFailure, PlannedStep, Runbook, RunbookKind, Step, StepId, StepName, StepRecord,
    StepStatus,
};
use crate::timer::Timer;

impl Election {
    /// Decides to run a runbook: a new epoch (except for a drill), the plan, and its first
    /// step.
    pub(super) fn start_runbook(
        &mut self,
        kind: RunbookKind,
        to: Option<SiteId>,
        forced: bool,
        trigger: Trigger,
        reasons: Vec<Reason>,
        now: Instant,
    ) {
        let id = self.journal.take_runbook_id();
        let from = (kind != RunbookKind::Bootstrap).then(|| self.journal.active().clone());
        let active = self.active_index();
        let (detect, decide) = match (kind, self.health.sites[active].down_at) {
            (RunbookKind::Failover | RunbookKind::AllDown, Some(down_at)) => {
                let since = self.health.sites[active].failing_since.unwrap_or(down_at);
                (
                    down_at.saturating_duration_since(since),
                    now.saturating_duration_since(down_at),
                )
            }
            _ => (Duration::ZERO, Duration::ZERO),
        };
        let rpo_at_decision = to
            .as_ref()
            .and_then(|t| self.cfg.site_index(t))
            .and_then(|si| self.lag[si].iter().flatten().max().copied());

        let wall = self.wall(now);
        if kind != RunbookKind::Drill {
            let (serving, active) = match kind {
                RunbookKind::AllDown => match self.cfg.policy().all_down {
                    AllDownPolicy::FailClosed => (Serving::Withdrawn, None),
                    _ => (Serving::AllSites, None),
                },
                _ => (Serving::Active, to.as_ref()),
            };
            let switched = kind != RunbookKind::Bootstrap;
            self.journal
                .decide(serving, active, switched.then_some(wall));
            if switched {
                self.last_switch = Some(now);
            }
        }
        let epoch = self.journal.epoch();
        let decision = Decision {
            kind,
            from: from.as_ref(),
            to: to.as_ref(),
            epoch,
            id,
        };
        let mut steps = plan::plan(&self.cfg, self.journal.markers(), decision);
        // A drill abandoned for this runbook cleans up after it, under the new epoch.
        for mut s in self.journal.take_pending_cleanup() {
            if let Step::SwitchDns { change } = &mut s.step {
                change.epoch = epoch;
            }
            steps.push(s);
        }
        self.events.push_back(Event::Decision {
            runbook: id,
            kind,
            from: from.clone(),
            to: to.clone(),
            epoch,
            forced,
            trigger,
            reasons: reasons.clone(),
        });
        tracing::info!(
            service = %self.cfg.name(), runbook = id, %kind, %epoch, %trigger,
            "decision: {}", explain(&reasons)
        );
        self.journal.start_runbook(Runbook {
            id,
            kind,
            epoch,
            from,
            to,
            forced,
            steps,
            done: Vec::new(),
            decided_at: wall,
            detect,
            decide,
            rpo: None,
            rpo_at_decision,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            held: None,
            attempt: 0,
            retried_after: 0,
        });
        self.last_note = None;

        self.step_started = None;
        self.orphan_in_flight();
        self.timers.stop(Timer::Retry);

        self.timers.stop(Timer::Dwell);
        self.timers.stop(Timer::HoldDown);
        self.launch_next(now);
        self.refresh_view();
    }

    pub(super) fn current_step(&self) -> Option<&PlannedStep> {
        let rb = self.journal.runbook()?;
        rb.steps.get(rb.next_index())
    }

    /// Hands out the next step of the runbook in progress (or finishes it).
    pub(super) fn launch_next(&mut self, now: Instant) {
        let Some(rb) = self.journal.runbook() else {
            return;
        };
        if rb.held.is_some() || self.in_flight.is_some() || self.orphan.is_some() {
            return;
        }
        if rb.finished() {
            self.finish_runbook(Outcome::Completed, now, true);
            return;
        }
        let index = rb.next_index();
        self.step_started.get_or_insert(now);
        // The attempt count is journaled: a crash-looping controller gets no fresh budget.
        let Some(rb) = self.journal.runbook_mut() else {
            return;
        };
        rb.attempt += 1;
        let planned = &rb.steps[index];
        let action = Action {
            id: StepId {
                runbook: rb.id,
                index: index as u32,
                attempt: rb.attempt,
            },
            epoch: rb.epoch,
            kind: rb.kind,
            name: planned.name,
            step: planned.step.clone(),
            drill: planned.drill,
            timeout: planned.policy.timeout,
            forced: rb.forced,
        };
        // The driver enforces the timeout; the watchdog only catches a result that never
        // comes back.
        let grace = (planned.policy.timeout / 10).max(Duration::from_secs(1));
        self.timers
            .set(Timer::Watchdog, now + planned.policy.timeout + grace);
        self.in_flight = Some(action.id);
        self.events.push_back(Event::StepStarted {
            id: action.id,
            name: action.name,
            description: action.step.to_string(),
        });
        self.actions.push_back(action);
        self.refresh_view();
    }

    pub(super) fn on_step_done(&mut self, d: StepDone, now: Instant) {
        if self.orphan == Some(d.id) {
            // The step of a runbook that ended while it ran: its result no longer matters,
            // but only now may the next action go out.
            self.orphan = None;
            self.timers.stop(Timer::Watchdog);
            self.launch_next(now);
            return;
        }
        if self.in_flight != Some(d.id) {
            tracing::debug!(id = %d.id, "result for a step not in flight ignored");
            return;
        }
        self.in_flight = None;
        self.timers.stop(Timer::Watchdog);
        let Some(planned) = self.current_step().cloned() else {
            return;
        };
        let result = judge(d.result);
        let measured = result
            .as_ref()
            .ok()
            .and_then(|output| self.measure_catch_up(&planned, output));
        let forced = self.journal.runbook().is_some_and(|rb| rb.forced);
        let result = match (result, &measured) {
            (Ok(_), Some(Err(behind))) if !forced => Err(BackendError::Refused(behind.clone())),
            (result, _) => result,
        };
        match result {
            Ok(output) => {
                let detail = match measured {
                    Some(m) => self.note_catch_up(m),
                    None => self.absorb(&planned, output),
                };
                self.finish_step(StepStatus::Done, detail, now);
            }
            Err(BackendError::Unsupported(what)) if planned.drill => {
                // A backend that cannot clone: the rehearsal goes on without this step.
                self.finish_step(
                    StepStatus::Skipped,
                    format!("not supported in a drill: {what}"),
                    now,
                );
            }
            Err(err) => {
                let policy = planned.policy;
                let budget_left = self.budget_attempt() <= policy.retries;
                if err.is_transient() && (budget_left || policy.on_failure == OnFailure::Retry) {
                    let jitter = self.rng.random_range(0.0..0.2);
                    let delay = plan::backoff(
                        self.budget_attempt(),
                        policy.backoff,
                        policy.max_backoff,
                        jitter,
                    );
                    self.timers.set(Timer::Retry, now + delay);
                    self.events.push_back(Event::StepRetry {
                        id: d.id,
                        name: planned.name,
                        delay,
                        error: err.to_string(),
                    });
                    return;
                }
                let mut detail = format!("after {} attempt(s): {err}", self.attempt());
                match self.fence_failure(&planned, policy.on_failure, &mut detail) {
                    OnFailure::Skip => self.finish_step(StepStatus::Skipped, detail, now),
                    OnFailure::Abort => self.finish_step(StepStatus::Failed, detail, now),
                    OnFailure::Hold | OnFailure::Retry => {
                        let Some(rb) = self.journal.runbook_mut() else {
                            return;
                        };
                        rb.held = Some(detail.clone());
                        let id = rb.id;
                        self.events.push_back(Event::Held {
                            runbook: id,
                            name: planned.name,
                            reason: detail,
                        });
                        self.refresh_view();
                    }
                }
            }
        }
    }

    /// What a step's final failure leads to. A fence is skipped only when every live
    /// observer calls its site down: a site some observer still reaches may still take
    /// writes, so a failed fence there holds for an operator instead (skipping it could leave
    /// two writable primaries). `detail` is told which case it was.
    fn fence_failure(
        &self,
        planned: &PlannedStep,
        configured: OnFailure,
        detail: &mut String,
    ) -> OnFailure {
        let Step::Fence { site, .. } = &planned.step else {
            return configured;
        };
        if configured != OnFailure::Skip {
            return configured;
        }
        let Some(si) = self.cfg.site_index(site) else {
            return configured;
        };
        if self.health.unreachable(si) {
            detail.push_str(&format!(
                "; skipped: site {site} is unreachable by every observer"
            ));
            return OnFailure::Skip;
        }
        detail.push_str(&format!(
            "; not skipped: site {site} is still reached by an observer and may take writes"
        ));
        OnFailure::Hold
    }

    /// The RPO guard of a catch-up that the switch's target must pass before it is promoted:
    /// `None` for any other step; else the target's lag behind the primary once the catch-up
    /// ended (measured by the step's own status read, or else the last reported lag), or why
    /// it has not caught up (it does not follow the primary, or lags over the RPO budget).
    fn measure_catch_up(
        &self,
        planned: &PlannedStep,
        output: &StepOutput,
    ) -> Option<Result<Option<Duration>, String>> {
        let Step::Reprotect {
            resource,
            primary,
            wait: true,
        } = &planned.step
        else {
            return None;
        };
        let target = self.journal.runbook()?.to.as_ref()?;
        if target == primary || planned.drill {
            return None;
        }
        let lag = match output {
            StepOutput::CaughtUp(status) => {
                let Some(at) = status.sites.iter().find(|s| &s.site == target) else {
                    return Some(Err(format!(
                        "{resource} at site {target} has not caught up with {primary}: the \
                         status read after the catch-up does not list site {target}"
                    )));
                };
                if at.role != Role::Replica {
                    return Some(Err(format!(
                        "{resource} at site {target} has not caught up with {primary}: it is \
                         {} after the catch-up, not a replica following {primary}",
                        at.role
                    )));
                }
                at.lag
            }
            _ => {
                let ti = self.cfg.site_index(target)?;
                let ri = resource.index_in(self.cfg.resources(), |x| x)?;
                self.lag[ti][ri]
            }
        };
        let budget = self.cfg.policy().rpo_budget;
        Some(match (lag, budget) {
            (Some(lag), Some(budget)) if lag > budget => Err(format!(
                "{resource} at site {target} has not caught up with {primary}: lag {} > RPO \
                 budget {}",
                humantime::format_duration(lag),
                humantime::format_duration(budget)
            )),
            (None, Some(budget)) => Err(format!(
                "{resource} at site {target} has not caught up with {primary}: lag unknown \
                 (RPO budget {})",
                humantime::format_duration(budget)
            )),
            (lag, _) => Ok(lag),
        })
    }

    /// Records a catch-up's measured lag as the runbook's RPO (the largest over its
    /// catch-ups: what the promoted target may lack); returns the step's summary, which says
    /// when a forced switch went past a target that had not caught up.
    fn note_catch_up(&mut self, measured: Result<Option<Duration>, String>) -> String {
        let Some(rb) = self.journal.runbook_mut() else {
            return String::new();
        };
        match measured {
            Ok(lag) => {
                if let Some(lag) = lag {
                    rb.rpo = Some(rb.rpo.map_or(lag, |r| r.max(lag)));
                }
                lag.map(|l| format!("caught up: lag {}", humantime::format_duration(l)))
                    .unwrap_or_else(|| "caught up: lag unknown".to_owned())
            }
            Err(behind) => format!("forced past the RPO guard: {behind}"),
        }
    }

    /// Keeps what a successful step returned; returns its summary.
    fn absorb(&mut self, planned: &PlannedStep, output: StepOutput) -> String {
        match (&planned.step, output) {
            (
                Step::Integrity {
                    resource,
                    request: IntegrityRequest::Mark { .. },
                    ..
                },
                StepOutput::Integrity(report),
            ) => {
                let n = report.manifest.entries.len();
                if !planned.drill {
                    self.journal
                        .insert_marker(resource.clone(), report.manifest);
                }
                format!("{n} marker(s) written")
            }
            (Step::Integrity { .. }, StepOutput::Integrity(report)) => {
                format!("{} entries verified", report.manifest.entries.len())
            }
            (Step::Promote { .. }, StepOutput::Promoted(p)) => {
                if let Some(rpo) = p.rpo
                    && let Some(rb) = self.journal.runbook_mut()
                {
                    rb.rpo = Some(rb.rpo.map_or(rpo, |r| r.max(rpo)));
                }
                p.position
                    .map(|pos| format!("promoted at {pos}"))
                    .unwrap_or_default()
            }
            (_, StepOutput::Propagation(p)) => {
                let slowest = p
                    .servers
                    .iter()
                    .map(|s| s.latency)
                    .max()
                    .unwrap_or_default();
                format!(
                    "{} server(s) current, slowest after {}",
                    p.servers.len(),
                    humantime::format_duration(Duration::from_millis(slowest.as_millis() as u64))
                )
            }
            _ => String::new(),
        }
    }

    pub(super) fn finish_step(&mut self, status: StepStatus, detail: String, now: Instant) {
        let attempts = self.attempt();
        let started = self.step_started.take().unwrap_or(now);
        let Some(rb) = self.journal.runbook_mut() else {
            return;
        };
        let index = rb.next_index();
        let Some(planned) = rb.steps.get(index) else {
            return;
        };
        let record = StepRecord {
            name: planned.name,
            description: planned.step.to_string(),
            status,
            attempts,
            duration: now.saturating_duration_since(started),
            detail,
        };
        let id = rb.id;
        rb.done.push(record.clone());
        rb.attempt = 0;
        rb.retried_after = 0;

        self.timers.stop(Timer::Retry);
        self.events.push_back(Event::StepFinished {
            runbook: id,
            record,
        });
        if status == StepStatus::Failed {
            self.finish_runbook(Outcome::Aborted, now, true);
        } else {
            self.launch_next(now);
        }
    }

    fn finish_runbook(&mut self, outcome: Outcome, now: Instant, decide: bool) {
        let Some(rb) = self.journal.take_runbook() else {
            return;
        };
        let wall = self.wall(now);
        let phases = plan::phases(rb.detect, rb.decide, &rb.done);
        let run = wall.duration_since(rb.decided_at).unwrap_or_default();
        if rb.kind == RunbookKind::Failback && outcome == Outcome::Completed {
            // The markers written while away were verified at home.
            self.journal.clear_markers();
        }
        let report = SwitchReport {
            runbook: rb.id,
            kind: rb.kind,
            outcome,
            from: rb.from,
            to: rb.to,
            epoch: rb.epoch,
            forced: rb.forced,
            decided_at: rb.decided_at,
            finished_at: wall,
            rto: rb.detect + rb.decide + run,
            phases,
            rpo: rb.rpo.or(rb.rpo_at_decision),
            rpo_at_decision: rb.rpo_at_decision,
            steps: rb.done,
            reasons: rb.reasons,
        };
        tracing::info!(
            service = %self.cfg.name(), runbook = report.runbook, kind = %report.kind,
            outcome = %outcome, rto_ms = report.rto.as_millis() as u64, "runbook finished"
        );
        self.events.push_back(Event::Finished(report));
        self.orphan_in_flight();

        self.step_started = None;
        self.timers.stop(Timer::Retry);

        self.last_note = None;
        self.refresh_view();
        if decide {
            self.decide(now);
        }
    }

    /// Replaces the rest of a drill by its cleanup.
    pub(super) fn stop_drill(&mut self, why: &str, now: Instant) {
        let Some(rb) = self.journal.runbook() else {
            return;
        };
        let next = rb.next_index();
        if rb
            .steps
            .get(next)
            .is_some_and(|s| s.name == StepName::Cleanup)
        {
            return;
        }
        let fallback = plan::cleanup_steps(
            &self.cfg,
            rb.to.as_ref(),
            rb.epoch,
            plan::cleanup_policy(&self.cfg),
        );
        let Some(rb) = self.journal.runbook_mut() else {
            return;
        };
        let remaining = rb.steps.split_off(next);
        let (mut cleanup, skipped): (Vec<_>, Vec<_>) = remaining
            .into_iter()
            .partition(|s| s.name == StepName::Cleanup);
        if cleanup.is_empty() {
            cleanup = fallback;
        }
        for s in skipped {
            rb.done.push(StepRecord {
                name: s.name,
                description: s.step.to_string(),
                status: StepStatus::Skipped,
                attempts: 0,
                duration: Duration::ZERO,
                detail: why.to_owned(),
            });
            rb.steps.push(s);
        }
        rb.steps.extend(cleanup);
        rb.held = None;
        rb.attempt = 0;
        rb.retried_after = 0;
        self.orphan_in_flight();

        self.step_started = None;
        self.timers.stop(Timer::Retry);

        self.launch_next(now);
    }

    /// A production switch is needed while a drill runs: the drill ends at once (reported as
    /// aborted) and its cleanup runs after the next runbook's own steps.
    pub(super) fn abandon_drill(&mut self, now: Instant) {
        let Some(rb) = self.journal.runbook() else {
            return;
        };
        let next = rb.next_index();
        let mut cleanup: Vec<PlannedStep> = rb.steps[next..]
            .iter()
            .filter(|s| s.name == StepName::Cleanup)
            .cloned()
            .collect();
        if cleanup.is_empty() {
            cleanup = plan::cleanup_steps(
                &self.cfg,
                rb.to.as_ref(),
                rb.epoch,
                plan::cleanup_policy(&self.cfg),
            );
        }
        self.journal.set_pending_cleanup(cleanup);
        self.finish_runbook(Outcome::Aborted, now, false);
    }

    /// The runbook of the action in flight ended: keep waiting for its result (at most one
    /// action is ever outstanding) but ignore it.
    fn orphan_in_flight(&mut self) {
        if let Some(id) = self.in_flight.take() {
            self.orphan = Some(id);
        }
        if self.orphan.is_none() {
            self.timers.stop(Timer::Watchdog);
        }
    }

    /// Attempts made at the current step of the runbook in progress.
    fn attempt(&self) -> u32 {
        self.journal.runbook().map_or(0, |rb| rb.attempt)
    }

    /// The current attempt counted from the operator's last retry: what the retry budget and
    /// the backoff go by.
    fn budget_attempt(&self) -> u32 {
        self.journal
            .runbook()
            .map_or(0, |rb| rb.attempt.saturating_sub(rb.retried_after))
    }

    /// An operator's retry of a held step: a fresh retry budget, while the attempt numbers
    /// (and so the step ids) go on counting.
    pub(super) fn fresh_budget(&mut self) {
        if let Some(rb) = self.journal.runbook_mut() {
            rb.retried_after = rb.attempt;
        }
    }
}

/// A step's result as the runbook sees it: an integrity report with mismatches, or a
/// propagation check that some server fails, is a failure.
pub(super) fn judge(result: Result<StepOutput, BackendError>) -> Result<StepOutput, BackendError> {
    match result {
        Ok(StepOutput::Integrity(report)) if !report.mismatches.is_empty() => {
            let list: Vec<String> = report.mismatches.iter().map(|m| m.to_string()).collect();
            Err(BackendError::Integrity(list.join("; ")))
        }
        Ok(StepOutput::Propagation(p)) if !p.complete() => {
            let behind: Vec<String> = p
                .servers
                .iter()
                .filter(|s| !s.current)
                .map(|s| format!("{} ({})", s.server, s.detail))
                .collect();
            Err(BackendError::Unavailable(format!(
                "not every server answers the new records yet: {}",
                if behind.is_empty() {
                    "no server was asked".to_owned()
                } else {
                    behind.join(", ")
                }
            )))
        }
        other => other,
    }
}
