//! Decisions: which site should be active, whether a switch may go ahead now (manual mode,
//! freeze, dwell, hold-down), and what the election says when it may not.

use std::time::{Duration, Instant};

use super::Election;
use crate::config::{AllDownPolicy, FailbackMode, FailoverMode};
use crate::event::{Event, Trigger};
use crate::journal::Serving;
use crate::probe::Health;
use crate::reason::{Reason, explain};
use crate::runbook::RunbookKind;
use crate::timer::Timer;

impl Election {
    /// Whether a failover (`guard_rpo`) or failback may go to the site, and why (not).
    pub(super) fn eligibility(&self, si: usize, guard_rpo: bool) -> Result<Reason, Reason> {
        let site = &self.cfg.sites()[si].id;
        let health = self.health.sites[si].health;
        if health != Health::Up {
            return Err(Reason::NotUp {
                site: site.clone(),
                health,
            });
        }
        let lag = match self.lag_check(si) {
            Ok(l) => l,
            Err(r) if guard_rpo => return Err(r),
            Err(_) => None,
        };
        Ok(Reason::Eligible {
            site: site.clone(),
            lag,
            budget: self.cfg.policy().rpo_budget,
        })
    }

    pub(super) fn active_index(&self) -> usize {
        // The journal was checked against the configuration.
        self.cfg.site_index(self.journal.active()).unwrap_or(0)
    }

    pub(super) fn home_index(&self) -> usize {
        self.cfg.site_index(&self.cfg.home().id).unwrap_or(0)
    }

    pub(super) fn dwell_remaining(&self, now: Instant) -> Option<Duration> {
        let min = self.cfg.policy().min_dwell;
        let since = now.saturating_duration_since(self.last_switch?);
        (since < min).then(|| min - since)
    }

    /// Decides what the election itself should do after a change of health, lag or time.
    pub(super) fn decide(&mut self, now: Instant) {
        if let Some(rb) = self.journal.runbook() {
            let active_down = self.health.sites[self.active_index()].health == Health::Down;
            if rb.kind == RunbookKind::Drill
                && active_down
                && self.journal.serving() == Serving::Active
            {
                self.abandon_drill(now);
            } else {
                return;
            }
        }
        self.timers.stop(Timer::Dwell);
        self.timers.stop(Timer::HoldDown);
        let active = self.active_index();
        let serving = self.journal.serving();
        let active_health = self.health.sites[active].health;
        if serving == Serving::Active && active_health != Health::Down {
            self.consider_failback(now);
            return;
        }

        let mut reasons = Vec::new();
        if serving == Serving::Active {
            reasons.extend(self.health.reasons(&self.cfg, active));
        }
        let mut candidate = None;
        let mut why_not = Vec::new();
        for i in 0..self.order.len() {
            let si = self.order[i];
            if serving == Serving::Active && si == active {
                continue;
            }
            match self.eligibility(si, true) {
                Ok(r) => {
                    reasons.push(r);
                    candidate = Some(si);
                    break;
                }
                Err(r) => why_not.push(r),
            }
        }

        let (kind, target) = match candidate {
            Some(si) if serving != Serving::Active && si == active => {
                (RunbookKind::Restore, Some(si))
            }
            Some(si) => (RunbookKind::Failover, Some(si)),
            None if serving != Serving::Active => return,
            None => {
                let all_down = self.health.sites.iter().all(|s| s.health == Health::Down);
                let policy = self.cfg.policy().all_down;
                if all_down && policy != AllDownPolicy::KeepLast {
                    reasons.push(Reason::AllDown { policy });
                    (RunbookKind::AllDown, None)
                } else {
                    reasons.extend(why_not);
                    if all_down {
                        reasons.push(Reason::AllDown { policy });
                    }
                    self.note(Event::Blocked { reasons });
                    return;
                }
            }
        };

        if self.cfg.policy().failover == FailoverMode::Manual {
            // Manual means the election never changes the name by itself: not for a failover,
            // a restore, nor the all-down policy.
            reasons.push(Reason::ManualFailover);
            match target {
                Some(si) => self.note(Event::Recommendation {
                    kind,
                    to: self.cfg.sites()[si].id.clone(),
                    reasons,
                }),
                None => self.note(Event::Blocked { reasons }),
            }
            return;
        }
        if self.journal.frozen() {
            reasons.push(Reason::Frozen);
            self.note(Event::Blocked { reasons });
            return;
        }
        if let Some(remaining) = self.dwell_remaining(now) {
            reasons.push(Reason::Dwell {
                remaining,
                min_dwell: self.cfg.policy().min_dwell,
            });
            self.timers.set(Timer::Dwell, now + remaining);
            self.note(Event::Blocked { reasons });
            return;
        }
        let to = target.map(|si| self.cfg.sites()[si].id.clone());
        self.start_runbook(kind, to, false, Trigger::Election, reasons, now);
    }

    fn consider_failback(&mut self, now: Instant) {
        let home = self.home_index();
        let active = self.active_index();
        if home == active {
            self.last_note = None;
            return;
        }
        let Ok(eligible) = self.eligibility(home, false) else {
            return;
        };
        let home_id = self.cfg.sites()[home].id.clone();
        match self.cfg.policy().failback {
            FailbackMode::Manual => {
                self.note(Event::Recommendation {
                    kind: RunbookKind::Failback,
                    to: home_id,
                    reasons: vec![eligible, Reason::ManualFailback],
                });
            }
            FailbackMode::Automatic => {
                if self.journal.frozen() {
                    self.note(Event::Blocked {
                        reasons: vec![eligible, Reason::Frozen],
                    });
                    return;
                }
                let up_since = self.health.sites[home].up_since.unwrap_or(now);
                let ready = up_since + self.cfg.policy().failback_hold_down;
                if now < ready {
                    self.timers.set(Timer::HoldDown, ready);
                    self.note(Event::Blocked {
                        reasons: vec![
                            eligible,
                            Reason::HoldDown {
                                site: home_id,
                                remaining: ready - now,
                            },
                        ],
                    });
                    return;
                }
                if let Some(remaining) = self.dwell_remaining(now) {
                    self.timers.set(Timer::Dwell, now + remaining);
                    self.note(Event::Blocked {
                        reasons: vec![
                            eligible,
                            Reason::Dwell {
                                remaining,
                                min_dwell: self.cfg.policy().min_dwell,
                            },
                        ],
                    });
                    return;
                }
                self.start_runbook(
                    RunbookKind::Failback,
                    Some(home_id),
                    false,
                    Trigger::Election,
                    vec![eligible],
                    now,
                );
            }
        }
    }

    /// Emits a `Blocked` or `Recommendation` event unless it says what the last one said.
    fn note(&mut self, event: Event) {
        let key = match &event {
            Event::Blocked { reasons } => format!("blocked: {}", explain(reasons)),
            Event::Recommendation { kind, to, reasons } => {
                format!("{kind} to {to}: {}", explain(reasons))
            }
            other => format!("{other:?}"),
        };
        if self.last_note.as_deref() != Some(key.as_str()) {
            tracing::info!(service = %self.cfg.name(), "{key}");
            self.last_note = Some(key);
            self.events.push_back(event);
        }
    }
}
