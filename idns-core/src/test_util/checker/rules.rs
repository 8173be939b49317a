//! The rules the checker judges each action, event and view by, and what it remembers of the
//! run to judge them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Checker, Invariant, Write};
use crate::config::FailbackMode;
use crate::epoch::Epoch;
use crate::event::Event;
use crate::id::SiteId;
use crate::probe::Health;
use crate::reason::Reason;
use crate::runbook::{Action, RunbookKind, Step};

/// What the checker remembers of the run, to judge the next decision.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The highest epoch the view has shown.
    pub(super) epoch: Epoch,
    pub(super) last_decision_epoch: Epoch,
    /// The site each epoch belongs to (`None`: no site, as in an all-down decision).
    pub(super) owners: BTreeMap<Epoch, Option<SiteId>>,
    pub(super) last_switch: Option<Duration>,
    pub(super) home_up_since: Option<Duration>,
}

impl Checker {
    /// The DNS write of the service's name an action makes, if it makes one.
    pub(super) fn dns_write(&self, action: &Action) -> Option<Write> {
        match &action.step {
            Step::SwitchDns { change } if change.name == *self.config.name() => {
                Some((change.epoch, change.site.clone()))
            }
            _ => None,
        }
    }

    pub(super) fn check_write(&mut self, (epoch, site): Write) {
        self.check_owner(epoch, site, "DNS write");
    }

    /// Drains actions (persisting the journal first) and events, checking each. Only the
    /// election's answers to this one input are drained, and checking them never calls the
    /// election: the journal version is the same throughout.
    pub(super) fn check_owner(&mut self, epoch: Epoch, site: Option<SiteId>, what: &str) {
        match self.seen.owners.get(&epoch) {
            Some(prev) if *prev != site => {
                let detail = format!(
                    "{what} for epoch {epoch} names {site:?}, but epoch {epoch} already belongs to {prev:?}"
                );
                self.violate(Invariant::TwoActivesInOneEpoch, detail);
            }
            Some(_) => {}
            None => {
                self.seen.owners.insert(epoch, site);
            }
        }
    }

    pub(super) fn check_action(&mut self, action: &Action) {
        let epoch = self.election.as_ref().map(|e| e.view().epoch);
        if let Some(epoch) = epoch
            && action.epoch > epoch
        {
            self.violate(
                Invariant::EpochNotIncreased,
                format!(
                    "action {} carries epoch {} above the view's {epoch}",
                    action.id, action.epoch
                ),
            );
        }
    }

    pub(super) fn check_event(&mut self, ev: &Event, now: Duration) {
        match ev {
            Event::SiteChanged { site, to, .. } if *site == self.config.home().id => {
                self.seen.home_up_since = (*to == Health::Up).then_some(now);
            }
            Event::Decision {
                kind,
                to,
                epoch,
                forced,
                reasons,
                ..
            } => self.check_decision(now, *kind, to.clone(), *epoch, *forced, reasons),
            _ => {}
        }
    }

    pub(super) fn check_decision(
        &mut self,
        now: Duration,
        kind: RunbookKind,
        to: Option<SiteId>,
        epoch: Epoch,
        forced: bool,
        reasons: &[Reason],
    ) {
        if kind == RunbookKind::Drill {
            return;
        }
        if epoch <= self.seen.last_decision_epoch {
            let detail = format!(
                "{kind} decision at epoch {epoch}, not above the previous decision's {}",
                self.seen.last_decision_epoch
            );
            self.violate(Invariant::EpochNotIncreased, detail);
        }
        self.seen.last_decision_epoch = epoch;
        let owner = if kind == RunbookKind::AllDown {
            None
        } else {
            to.clone()
        };
        self.check_owner(epoch, owner, "decision");
        if kind == RunbookKind::Bootstrap {
            return;
        }
        let operator = reasons.contains(&Reason::Operator);
        let policy = self.config.policy();
        let (min_dwell, failback, hold_down, rpo_budget) = (
            policy.min_dwell,
            policy.failback,
            policy.failback_hold_down,
            policy.rpo_budget,
        );
        // Dwell: measured against the previous switch, forced or not.
        if !forced
            && let Some(prev) = self.seen.last_switch
            && now.saturating_sub(prev) < min_dwell
        {
            let detail = format!(
                "{kind} {:.3}s after the previous switch, minimum dwell {min_dwell:?}",
                (now - prev).as_secs_f64(),
            );
            self.violate(Invariant::DwellViolated, detail);
        }
        self.seen.last_switch = Some(now);
        if kind == RunbookKind::Failback && !operator {
            if failback == FailbackMode::Manual {
                self.violate(
                    Invariant::FailbackPolicy,
                    "automatic failback with a manual failback policy".into(),
                );
            } else if self
                .seen
                .home_up_since
                .is_none_or(|t| now.saturating_sub(t) < hold_down)
            {
                let detail = format!(
                    "automatic failback with the home site up since {:?}, hold-down {hold_down:?}",
                    self.seen.home_up_since
                );
                self.violate(Invariant::FailbackPolicy, detail);
            }
        }
        if forced {
            return;
        }
        let Some(to) = to else {
            return;
        };
        let Some(site) = self
            .election
            .as_ref()
            .and_then(|e| e.view().sites.iter().find(|s| s.id == to))
        else {
            return;
        };
        let (health, lag) = (site.health, site.lag);
        if health != Health::Up {
            let detail = format!("{kind} to {to}, which is {health}");
            self.violate(Invariant::IneligibleTarget, detail);
        }
        if matches!(kind, RunbookKind::Failover | RunbookKind::Restore)
            && let Some(budget) = rpo_budget
            && !self.config.resources().is_empty()
            && lag.is_none_or(|l| l > budget)
        {
            let detail = format!("{kind} to {to} with lag {lag:?} over the budget {budget:?}");
            self.violate(Invariant::IneligibleTarget, detail);
        }
    }

    pub(super) fn check_view(&mut self) {
        let Some(e) = self.election.as_ref() else {
            return;
        };
        let epoch = e.view().epoch;
        if epoch < self.seen.epoch {
            let detail = format!("epoch went from {} down to {epoch}", self.seen.epoch);
            self.violate(Invariant::EpochDecreased, detail);
        }
        self.seen.epoch = self.seen.epoch.max(epoch);
    }
}
