//! Inputs: what the election is told (probe and replication reports, step results) and its
//! timers. None of them can be refused: unknown or stale ones are ignored and traced.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Election;
use super::plan::lag_check;
use crate::dns::Propagation;
use crate::error::BackendError;
use crate::event::Event;
use crate::probe::Health;
use crate::probe::ProbeReport;
use crate::replication::{IntegrityReport, Promoted, ReplicationReport, ReplicationStatus, Role};
use crate::runbook::StepId;
use crate::timer::Timer;

/// Something the election is told: fed to [`Election::handle`], which never refuses it.
///
/// Operator commands are not inputs: they go to [`Election::command`], which may refuse them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Input {
    /// A probe's outcome, from any observer.
    Probe(ProbeReport),
    /// A replica's role and lag.
    Replication(ReplicationReport),
    /// The result of an [`Action`](crate::Action).
    StepDone(StepDone),
}

/// What [`Election::handle`] takes: an [`Input`], or a reference to one. Sealed.
pub trait Feed: sealed::Sealed {
    #[doc(hidden)]
    fn feed(self, e: &mut Election, now: Instant);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Input {}
    impl Sealed for &super::Input {}
}

impl Feed for Input {
    #[inline]
    fn feed(self, e: &mut Election, now: Instant) {
        match self {
            Input::StepDone(d) => {
                e.catch_up(now);
                e.on_step_done(d, now)
            }
            ref other => other.feed(e, now),
        }
    }
}

impl Feed for &Input {
    #[inline]
    fn feed(self, e: &mut Election, now: Instant) {
        e.catch_up(now);
        match self {
            Input::Probe(r) => e.on_probe(r, now),
            Input::Replication(r) => e.on_replication(r, now),
            Input::StepDone(d) => e.on_step_done(d.clone(), now),
        }
    }
}

/// The result of one [`Action`](crate::Action).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDone {
    /// The action's id, as it was handed out.
    pub id: StepId,
    /// What the backend returned.
    pub result: Result<StepOutput, BackendError>,
}

/// What a successful step returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepOutput {
    /// Nothing to report.
    Done,
    /// From a promotion.
    Promoted(Promoted),
    /// From an integrity request.
    Integrity(IntegrityReport),
    /// From a propagation check.
    Propagation(Propagation),
    /// From a catch-up (a reprotect that waits): the resource's status read once it ended,
    /// which the catch-up's RPO guard measures the target on.
    CaughtUp(ReplicationStatus),
}

impl Election {
    pub(super) fn on_probe(&mut self, r: &ProbeReport, now: Instant) {
        let Some(si) = self.cfg.site_index(&r.site) else {
            tracing::debug!(site = %r.site, "probe report for an unknown site ignored");
            return;
        };
        let site = &self.cfg.sites()[si];
        let Some(pi) = r.probe.index_in(&site.probes, |p| &p.id) else {
            tracing::debug!(site = %r.site, probe = %r.probe, "report for an unknown probe ignored");
            return;
        };
        let Some(oi) = r.observer.index_in(&self.cfg.observers().ids, |o| o) else {
            tracing::debug!(observer = %r.observer, "report from an unknown observer ignored");
            return;
        };
        let change = self.health.record(site, si, pi, oi, &r.outcome, now);
        if change.seen_moved || change.observer_back {
            // Otherwise the timer already says when the next observer falls silent.
            self.timers
                .set_or_stop(Timer::ObserverStale, self.health.next_stale());
        }
        self.note_report(si, pi, oi, r.at, change.probe.is_some());
        if change.observer_back {
            self.events.push_back(Event::ObserverChanged {
                observer: r.observer.clone(),
                live: true,
            });
        }
        if let Some(health) = change.probe {
            let reason = match health {
                Health::Up => String::new(),
                _ => self.health.last_reason(si, pi, oi).to_owned(),
            };
            self.events.push_back(Event::ProbeChanged {
                site: r.site.clone(),
                probe: r.probe.clone(),
                observer: r.observer.clone(),
                health,
                reason,
            });
        }
        for &(si, from, to) in &change.sites {
            self.site_changed(si, from, to);
        }
        if !change.sites.is_empty() || change.observer_back {
            self.refresh_view();
            self.decide(now);
        }
    }

    pub(super) fn site_changed(&mut self, si: usize, from: Health, to: Health) {
        let reasons = self.health.reasons(&self.cfg, si);
        self.events.push_back(Event::SiteChanged {
            site: self.cfg.sites()[si].id.clone(),
            from,
            to,
            reasons,
        });
    }

    pub(super) fn on_replication(&mut self, r: &ReplicationReport, now: Instant) {
        let Some(si) = self.cfg.site_index(&r.site) else {
            tracing::debug!(site = %r.site, "replication report for an unknown site ignored");
            return;
        };
        let Some(ri) = r.resource.index_in(self.cfg.resources(), |x| x) else {
            tracing::debug!(resource = %r.resource, "report for an unknown resource ignored");
            return;
        };
        let lag = if r.role == Role::Primary {
            Some(Duration::ZERO)
        } else {
            r.lag
        };
        if self.lag[si][ri] == lag {
            return;
        }
        let before = self.lag_check(si).is_ok();
        self.lag[si][ri] = lag;
        let after = self.lag_check(si).is_ok();
        self.refresh_view();
        if before != after {
            self.decide(now);
        }
    }

    /// The RPO guard for one site, with its current lags.
    pub(super) fn lag_check(&self, si: usize) -> Result<Option<Duration>, crate::reason::Reason> {
        lag_check(
            &self.cfg.sites()[si].id,
            &self.lag[si],
            self.cfg.policy().rpo_budget,
        )
    }

    pub(super) fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::ObserverStale => {
                let stale = self.health.expire(now);
                for &oi in &stale {
                    self.events.push_back(Event::ObserverChanged {
                        observer: self.cfg.observers().ids[oi].clone(),
                        live: false,
                    });
                }
                let mut changed = false;
                for si in 0..self.cfg.sites().len() {
                    if let Some((from, to)) = self.health.refresh(si, now) {
                        self.site_changed(si, from, to);
                        changed = true;
                    }
                }
                self.timers
                    .set_or_stop(Timer::ObserverStale, self.health.next_stale());
                if changed || !stale.is_empty() {
                    self.refresh_view();
                }
                if changed {
                    self.decide(now);
                }
            }
            Timer::Dwell | Timer::HoldDown => self.decide(now),
            Timer::Retry => self.launch_next(now),
            Timer::Watchdog => {
                if let Some(id) = self.orphan.or(self.in_flight) {
                    let timeout = self.current_step().map(|p| p.policy.timeout);
                    self.on_step_done(
                        StepDone {
                            id,
                            result: Err(BackendError::Timeout(format!(
                                "no result within {}",
                                humantime::format_duration(timeout.unwrap_or_default())
                            ))),
                        },
                        now,
                    );
                }
            }
        }
    }
}
