//! A deterministic simulator: many sites, observers, partitions, flapping, replication lag,
//! backend faults and controller crashes, all in virtual time from one seed.
//!
//! The simulator plays the world (which sites are alive, which observer can reach which site),
//! the observers (probe ticks at each probe's interval), the driver (persist the journal
//! before executing each action, execute it against [`MemoryDns`] and [`MemoryReplication`]
//! after a random latency, feed the result back) and the operator (scripted commands). It
//! feeds the election through a [`Checker`], which checks the election's invariants after
//! every step; the first violation stops the run and is reported with the seed and the tail
//! of the trace. The same seed replays exactly.
//!
//! ```
//! use idns_core::test_util::sim::{Scenario, Simulator};
//! let outcome = Simulator::new(Scenario::random(7)).run();
//! assert!(outcome.violation.is_none(), "{}", outcome.report());
//! ```

mod outcome;
mod scenario;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dns::RecordSet;
use crate::election::{Input, StepDone, StepOutput};
use crate::error::BackendError;
use crate::id::SiteId;
use crate::probe::{ProbeOutcome, ProbeReport};
use crate::replication::{ReplicationReport, Role};
use crate::runbook::{Action, Step};
use crate::test_util::{
    Checker, DnsFaults, Invariant, MemoryDns, MemoryReplication, ReplFaults, Violation,
};

pub use outcome::SimOutcome;
pub use scenario::{Scenario, ServiceShape, WorldEvent, observer_id, site_id};

struct World {
    alive: Vec<bool>,
    blocked: Vec<Vec<bool>>,
    silent: Vec<bool>,
    lag: Vec<Option<Duration>>,
    hang: u32,
}

/// The simulator. Build it from a [`Scenario`] and [`run`](Self::run) it.
pub struct Simulator {
    sc: Scenario,
    rng: ChaCha8Rng,
    origin: Instant,
    now: Duration,
    /// The election behind its invariant checks; down between a crash and its restart.
    checker: Checker,
    restart_at: Option<Duration>,
    dns: MemoryDns,
    repl: MemoryReplication,
    world: World,
    /// Next tick of each (site, probe, observer).
    ticks: Vec<(Duration, usize, usize, usize)>,
    /// The timed-out outcome of each probe, `[site][probe]`, built once.
    timeouts: Vec<Vec<ProbeOutcome>>,
    /// The outcome of a probe of a dead site.
    refused: ProbeOutcome,
    next_repl_report: Duration,
    in_flight: Option<(Action, Duration)>,
    script: VecDeque<(Duration, WorldEvent)>,
    /// Sites holding the primary copy, `[resource][site]`; `None` after a replication step.
    primaries: Option<Vec<Vec<bool>>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("seed", &self.sc.seed)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)]
fn virtual_origin() -> Instant {
    // The one clock read of the simulator: the origin of virtual time. Everything after it is
    // an offset, so a seed replays exactly whatever this value is.
    Instant::now()
}

const WALL_ORIGIN: Duration = Duration::from_secs(1_800_000_000);

impl Simulator {
    /// A simulator for the scenario.
    pub fn new(mut sc: Scenario) -> Self {
        sc.script.sort_by_key(|(t, _)| *t);
        let cfg = &sc.config;
        let sites: Vec<SiteId> = cfg.sites().iter().map(|s| s.id.clone()).collect();
        let dns = MemoryDns::new(std::slice::from_ref(cfg.zone()));
        let repl = MemoryReplication::new(cfg.resources(), &sites, &cfg.home().id);
        let n_obs = cfg.observers().ids.len();
        let mut rng = ChaCha8Rng::seed_from_u64(sc.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut ticks = Vec::new();
        for (si, s) in cfg.sites().iter().enumerate() {
            for (pi, p) in s.probes.iter().enumerate() {
                for oi in 0..n_obs {
                    // Spread the first runs over one interval, as a scheduler does.
                    let offset = rng.random_range(0..p.interval.as_millis().max(1) as u64);
                    ticks.push((Duration::from_millis(offset), si, pi, oi));
                }
            }
        }
        let world = World {
            alive: vec![true; sites.len()],
            blocked: vec![vec![false; sites.len()]; n_obs],
            silent: vec![false; n_obs],
            lag: vec![Some(Duration::ZERO); sites.len()],
            hang: 0,
        };
        let script = sc.script.iter().cloned().collect();
        let timeouts = cfg
            .sites()
            .iter()
            .map(|s| {
                s.probes
                    .iter()
                    .map(|p| ProbeOutcome::timeout(p.timeout))
                    .collect()
            })
            .collect();
        let origin = virtual_origin();
        let mut checker = Checker::stopped(cfg.clone(), origin);
        checker.trace_reports(false);
        Simulator {
            rng,
            origin,
            now: Duration::ZERO,
            checker,
            restart_at: Some(Duration::ZERO),
            dns,
            repl,
            world,
            ticks,
            timeouts,
            refused: ProbeOutcome::down(Duration::from_millis(1), "connection refused"),
            next_repl_report: Duration::ZERO,
            in_flight: None,
            script,
            primaries: None,
            sc,
        }
    }

    fn instant(&self) -> Instant {
        self.origin + self.now
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + WALL_ORIGIN + self.now
    }

    fn log(&mut self, line: impl Into<String>) {
        let at = self.instant();
        self.checker.at(at);
        self.checker.note(line);
    }

    fn violate(&mut self, invariant: Invariant, detail: String) {
        let at = self.instant();
        self.checker.at(at);
        self.checker.violate(invariant, detail);
    }

    fn running(&self) -> bool {
        self.checker.election().is_some()
    }

    /// Runs the scenario to its end, or to the first violation.
    pub fn run(mut self) -> SimOutcome {
        while self.checker.violation().is_none() {
            let next = self.next_time();
            let Some(t) = next.filter(|t| *t <= self.sc.duration) else {
                break;
            };
            self.now = self.now.max(t);
            self.step();
        }
        self.now = self.now.min(self.sc.duration);
        self.final_checks();
        let violation: Option<Violation> = self.checker.violation().cloned();
        let journal = self.checker.election().map(|e| e.journal().clone());
        let (events, trace, inputs) = self.checker.into_parts();
        SimOutcome {
            seed: self.sc.seed,
            violation,
            events,
            trace,
            journal,
            inputs,
            simulated: self.now,
            dns: self.dns,
            replication: self.repl,
        }
    }

    fn next_time(&self) -> Option<Duration> {
        let mut t: Option<Duration> = None;
        let mut consider = |c: Option<Duration>| {
            if let Some(c) = c {
                t = Some(t.map_or(c, |t| t.min(c)));
            }
        };
        consider(self.script.front().map(|(t, _)| *t));
        consider(self.restart_at);
        if let Some(e) = self.checker.election() {
            consider(self.ticks.iter().map(|t| t.0).min());
            consider(Some(self.next_repl_report));
            consider(self.in_flight.as_ref().map(|(_, t)| *t));
            consider(
                e.poll_timeout()
                    .map(|at| at.saturating_duration_since(self.origin)),
            );
        }
        t
    }

    fn step(&mut self) {
        let now = self.now;
        while self.script.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, ev)) = self.script.pop_front() {
                self.world_event(ev);
            }
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            self.restart();
        }
        if !self.running() {
            return;
        }
        if self.in_flight.as_ref().is_some_and(|(_, t)| *t <= now)
            && let Some((action, _)) = self.in_flight.take()
        {
            let result = self.execute(&action);
            self.feed(Input::StepDone(StepDone {
                id: action.id,
                result,
            }));
        }
        for i in 0..self.ticks.len() {
            if self.ticks[i].0 > now {
                continue;
            }
            let (_, si, pi, oi) = self.ticks[i];
            let interval = self.sc.config.sites()[si].probes[pi].interval;
            self.ticks[i].0 = now + interval;
            self.probe(si, pi, oi);
        }
        if self.next_repl_report <= now {
            let every = self.sc.config.sites()[0].probes[0].interval;
            self.next_repl_report = now + every;
            self.replication_reports();
        }
        let at = self.instant();
        let due = self
            .checker
            .election()
            .and_then(|e| e.poll_timeout())
            .is_some_and(|t| t <= at);
        if due {
            // A violation is kept by the checker; the run loop stops on it.
            let _ = self.checker.handle_timeout(at);
            self.take_actions();
        }
    }

    fn world_event(&mut self, ev: WorldEvent) {
        self.log(format!("world: {ev:?}"));
        match ev {
            WorldEvent::Kill(s) => self.world.alive[s] = false,
            WorldEvent::Revive(s) => self.world.alive[s] = true,
            WorldEvent::Partition(o, s) => self.world.blocked[o][s] = true,
            WorldEvent::Heal(o, s) => self.world.blocked[o][s] = false,
            WorldEvent::Silence(o) => self.world.silent[o] = true,
            WorldEvent::Unsilence(o) => self.world.silent[o] = false,
            WorldEvent::Lag(s, lag) => self.world.lag[s] = lag,
            WorldEvent::DnsDown(down) => self.dns.set_faults(DnsFaults {
                down,
                ..Default::default()
            }),
            WorldEvent::DnsFailApplies(n) => self.dns.set_faults(DnsFaults {
                fail_applies: n,
                ..Default::default()
            }),
            WorldEvent::DnsLagging(n) => self.dns.set_faults(DnsFaults {
                lagging_verifies: n,
                ..Default::default()
            }),
            WorldEvent::ReplUnreachable(s, on) => {
                let unreachable = if on { vec![site_id(s)] } else { Vec::new() };
                self.repl.set_faults(ReplFaults {
                    unreachable,
                    fail_next: 0,
                });
            }
            WorldEvent::Hang(n) => self.world.hang = n,
            WorldEvent::Crash(after) => self.crash(after),
            WorldEvent::Command(c) => {
                if self.running() {
                    let at = self.instant();
                    let _ = self.checker.command(c, at);
                    self.take_actions();
                }
            }
        }
    }

    fn crash(&mut self, after: Duration) {
        if !self.running() {
            return;
        }
        self.checker.crash();
        // An action in flight may or may not have taken effect before the crash.
        if let Some((action, _)) = self.in_flight.take()
            && self.rng.random_bool(0.5)
        {
            if self.execute(&action).is_ok() {
                self.checker.applied(&action);
            }
            self.log(format!(
                "in-flight {} took effect before the crash",
                action.id
            ));
        }
        self.restart_at = Some(self.now + after);
    }

    fn restart(&mut self) {
        let (at, wall) = (self.instant(), self.wall());
        let _ = self.checker.restart(at, wall);
        self.take_actions();
    }

    /// Takes the actions the last input produced: each runs after a random latency, unless
    /// the backend hangs.
    fn take_actions(&mut self) {
        while let Some(action) = self.checker.poll_action() {
            let lo = self.sc.step_latency.0.as_millis() as u64;
            let hi = self.sc.step_latency.1.as_millis().max(1) as u64;
            let latency = Duration::from_millis(self.rng.random_range(lo..=hi.max(lo)));
            if self.world.hang > 0 {
                self.world.hang -= 1;
                self.log(format!("{} hangs", action.id));
                // Never completes: the election's watchdog must notice.
                self.checker.abandon(action.id);
                continue;
            }
            self.in_flight = Some((action, self.now + latency));
        }
    }

    fn execute(&mut self, action: &Action) -> Result<StepOutput, BackendError> {
        let ctx = action.context();
        if !matches!(action.step, Step::SwitchDns { .. } | Step::VerifyDns { .. }) {
            // A replication step may move a primary copy.
            self.primaries = None;
        }
        match &action.step {
            Step::Fence { resource, site } => self
                .repl
                .fence_now(resource, site, &ctx)
                .map(|()| StepOutput::Done),
            Step::Promote { resource, site } => self
                .repl
                .promote_now(resource, site, &ctx)
                .map(StepOutput::Promoted),
            Step::Reprotect {
                resource,
                primary,
                wait,
            } => self
                .repl
                .reprotect_now(resource, primary, *wait, &ctx)
                .map(|()| StepOutput::Done),
            Step::Integrity {
                resource,
                site,
                request,
            } => self
                .repl
                .integrity_now(resource, site, request, &ctx)
                .map(StepOutput::Integrity),
            Step::SwitchDns { change } => self.dns.apply_now(change).map(|()| StepOutput::Done),
            Step::VerifyDns { change } => self.dns.verify_now(change).map(StepOutput::Propagation),
        }
    }

    fn probe(&mut self, si: usize, pi: usize, oi: usize) {
        if self.world.silent[oi] {
            return;
        }
        let outcome = if self.world.blocked[oi][si] {
            self.timeouts[si][pi].clone()
        } else if self.world.alive[si] {
            ProbeOutcome::up(Duration::from_millis(2))
        } else {
            self.refused.clone()
        };
        let site = &self.sc.config.sites()[si];
        let report = ProbeReport {
            site: site.id.clone(),
            probe: site.probes[pi].id.clone(),
            observer: self.sc.config.observers().ids[oi].clone(),
            outcome,
            at: self.wall(),
        };
        self.feed(Input::Probe(report));
    }

    fn replication_reports(&mut self) {
        let cfg = &self.sc.config;
        let primaries = self.primaries.get_or_insert_with(|| {
            cfg.resources()
                .iter()
                .map(|r| {
                    let primaries = self.repl.primaries(r);
                    cfg.sites()
                        .iter()
                        .map(|s| primaries.contains(&s.id))
                        .collect()
                })
                .collect()
        });
        let mut reports = Vec::with_capacity(primaries.len() * cfg.sites().len());
        let at = SystemTime::UNIX_EPOCH + WALL_ORIGIN + self.now;
        for (r, primary) in cfg.resources().iter().zip(primaries.iter()) {
            for (si, site) in cfg.sites().iter().enumerate() {
                reports.push(ReplicationReport {
                    resource: r.clone(),
                    site: site.id.clone(),
                    role: if primary[si] {
                        Role::Primary
                    } else {
                        Role::Replica
                    },
                    lag: self.world.lag[si],
                    at,
                });
            }
        }
        for report in reports {
            self.feed(Input::Replication(report));
        }
    }

    fn feed(&mut self, input: Input) {
        let at = self.instant();
        // A violation is kept by the checker; the run loop stops on it.
        let _ = self.checker.handle(input, at);
        self.take_actions();
    }

    fn final_checks(&mut self) {
        let stale = self.dns.stale_attempts();
        if let Some((name, attempted, current)) = stale.first() {
            let detail =
                format!("DNS asked to write {name} at epoch {attempted} after accepting {current}");
            self.violate(Invariant::StaleWrite, detail);
        }
        let conflicts = self.dns.same_epoch_conflicts();
        if let Some((name, epoch)) = conflicts.first() {
            let detail = format!(
                "DNS asked to publish another decision for {name} at the accepted epoch {epoch}"
            );
            self.violate(Invariant::StaleWrite, detail);
        }
        let stale = self.repl.stale_attempts();
        if let Some((r, attempted, current)) = stale.first() {
            let detail = format!(
                "replication asked to change {r} at epoch {attempted} after accepting {current}"
            );
            self.violate(Invariant::StaleWrite, detail);
        }
    }

    /// What the service's name publishes now.
    pub fn published(&self) -> RecordSet {
        self.dns.records(self.sc.config.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_checks_catch_a_stale_write() {
        let mut s = Simulator::new(Scenario::new(
            0,
            ServiceShape::default().build(),
            Duration::from_secs(10),
        ));
        let change = |epoch| crate::dns::DnsChange {
            zone: s.sc.config.zone().clone(),
            name: s.sc.config.name().clone(),
            records: RecordSet::Empty,
            ttl: Duration::from_secs(1),
            epoch: crate::epoch::Epoch::new(epoch),
            site: None,
        };
        let (c5, c4) = (change(5), change(4));
        assert!(s.dns.apply_now(&c5).is_ok());
        assert!(s.dns.apply_now(&c4).is_err());
        s.final_checks();
        assert_eq!(
            s.checker.violation().map(|v| v.invariant),
            Some(Invariant::StaleWrite)
        );
    }
}
