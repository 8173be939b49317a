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
    /// `blocked[observer * sites + site]`.
    blocked: Vec<bool>,
    silent: Vec<bool>,
    lag: Vec<Option<Duration>>,
    hang: u32,
}

/// One observer's runs of one probe of one site.
struct Tick {
    /// The next run, in virtual nanoseconds.
    at: u64,
    every: u64,
    si: usize,
    pi: usize,
    oi: usize,
    /// The report it feeds, built once: each run sets its outcome and time, and the election
    /// is given a reference (no id is cloned or dropped per report).
    report: Input,
}

/// Copies `from` into `to`, reusing `to`'s reason allocation.
fn set_outcome(to: &mut ProbeOutcome, from: &ProbeOutcome) {
    to.status = from.status;
    to.latency = from.latency;
    to.reason.clone_from(&from.reason);
}

/// Virtual time in nanoseconds: the simulator's clock, cheap to compare and add.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The simulator. Build it from a [`Scenario`] and [`run`](Self::run) it.
pub struct Simulator {
    sc: Scenario,
    rng: ChaCha8Rng,
    origin: Instant,
    /// Virtual time, in nanoseconds from the origin.
    now: u64,
    /// `now` on the monotonic and the wall clock, computed once per step.
    clock: (Instant, SystemTime),
    /// The wall-clock time of the origin.
    wall_origin: SystemTime,
    end: u64,
    /// The election behind its invariant checks; down between a crash and its restart.
    checker: Checker,
    /// When the controller starts again (`u64::MAX`: it runs, or never will).
    restart_at: u64,
    dns: MemoryDns,
    repl: MemoryReplication,
    world: World,
    ticks: Vec<Tick>,
    /// The ticks due in this step (a buffer kept between steps).
    due: Vec<usize>,
    /// The earliest run of `ticks`.
    next_tick: u64,
    /// When the election's next timer fires, as of the end of the last step.
    next_timer: u64,
    /// The last timer converted to virtual time, and what it converted to.
    timer_seen: Option<(Instant, u64)>,
    /// The timed-out outcome of each probe, `[site][probe]`, built once.
    timeouts: Vec<Vec<ProbeOutcome>>,
    /// The outcome of a probe of a dead site.
    refused: ProbeOutcome,
    /// The outcome of a probe of a live site.
    up: ProbeOutcome,
    next_repl_report: u64,
    repl_every: u64,
    /// The replication reports, `[resource * sites + site]`, built once as the probe reports
    /// are.
    repl_reports: Vec<Input>,
    in_flight: Option<(Action, u64)>,
    /// When the action in flight completes (`u64::MAX`: none is).
    in_flight_at: u64,
    script: VecDeque<(u64, WorldEvent)>,
    /// Sites holding the primary copy, `[resource][site]`; `None` after a replication step.
    primaries: Option<Vec<Vec<bool>>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("seed", &self.sc.seed)
            .field("now", &Duration::from_nanos(self.now))
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
                for (oi, observer) in cfg.observers().ids.iter().enumerate() {
                    // Spread the first runs over one interval, as a scheduler does.
                    let offset = rng.random_range(0..p.interval.as_millis().max(1) as u64);
                    ticks.push(Tick {
                        at: nanos(Duration::from_millis(offset)),
                        every: nanos(p.interval),
                        si,
                        pi,
                        oi,
                        report: Input::Probe(ProbeReport {
                            site: s.id.clone(),
                            probe: p.id.clone(),
                            observer: observer.clone(),
                            outcome: ProbeOutcome::up(Duration::ZERO),
                            at: SystemTime::UNIX_EPOCH,
                        }),
                    });
                }
            }
        }
        let world = World {
            alive: vec![true; sites.len()],
            blocked: vec![false; sites.len() * n_obs],
            silent: vec![false; n_obs],
            lag: vec![Some(Duration::ZERO); sites.len()],
            hang: 0,
        };
        let script = sc
            .script
            .iter()
            .map(|(t, e)| (nanos(*t), e.clone()))
            .collect();
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
        let next_tick = ticks.iter().map(|t| t.at).min().unwrap_or(u64::MAX);
        let repl_every = nanos(cfg.sites()[0].probes[0].interval);
        let repl_reports = cfg
            .resources()
            .iter()
            .flat_map(|r| {
                cfg.sites().iter().map(|s| {
                    Input::Replication(ReplicationReport {
                        resource: r.clone(),
                        site: s.id.clone(),
                        role: Role::Replica,
                        lag: None,
                        at: SystemTime::UNIX_EPOCH,
                    })
                })
            })
            .collect();
        let mut checker = Checker::stopped(cfg.clone(), origin);
        checker.trace_reports(false);
        Simulator {
            rng,
            origin,
            now: 0,
            clock: (origin, SystemTime::UNIX_EPOCH + WALL_ORIGIN),
            wall_origin: SystemTime::UNIX_EPOCH + WALL_ORIGIN,
            end: nanos(sc.duration),
            checker,
            restart_at: 0,
            dns,
            repl,
            world,
            ticks,
            due: Vec::new(),
            next_tick,
            next_timer: u64::MAX,
            timer_seen: None,
            timeouts,
            refused: ProbeOutcome::down(Duration::from_millis(1), "connection refused"),
            up: ProbeOutcome::up(Duration::from_millis(2)),
            next_repl_report: 0,
            repl_every,
            repl_reports,
            in_flight: None,
            in_flight_at: u64::MAX,
            script,
            primaries: None,
            sc,
        }
    }

    fn instant(&self) -> Instant {
        self.clock.0
    }

    fn wall(&self) -> SystemTime {
        self.clock.1
    }

    fn set_now(&mut self, now: u64) {
        if now != self.now {
            self.now = now;
            let d = Duration::from_nanos(now);
            self.clock = (self.origin + d, self.wall_origin + d);
        }
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
            let t = self.next_time();
            if t == u64::MAX || t > self.end {
                break;
            }
            self.set_now(self.now.max(t));
            self.step();
        }
        self.set_now(self.now.min(self.end));
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
            simulated: Duration::from_nanos(self.now),
            dns: self.dns,
            replication: self.repl,
        }
    }

    /// The time of the next step (`u64::MAX`: nothing will ever happen).
    fn next_time(&self) -> u64 {
        let script = self.script.front().map_or(u64::MAX, |(t, _)| *t);
        let t = script.min(self.restart_at);
        if self.running() {
            t.min(self.next_tick)
                .min(self.next_repl_report)
                .min(self.in_flight_at)
                .min(self.next_timer)
        } else {
            t
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while self.script.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, ev)) = self.script.pop_front() {
                self.world_event(ev);
            }
        }
        if self.restart_at <= now {
            self.restart_at = u64::MAX;
            self.restart();
        }
        if !self.running() {
            self.next_timer = u64::MAX;
            return;
        }
        if self.in_flight_at <= now
            && let Some((action, _)) = self.in_flight.take()
        {
            self.in_flight_at = u64::MAX;
            let result = self.execute(&action);
            self.feed(Input::StepDone(StepDone {
                id: action.id,
                result,
            }));
        }
        if self.next_tick <= now {
            // Every tick due runs now, in tick order (after a restart several may be
            // overdue).
            let mut next = u64::MAX;
            let mut due = std::mem::take(&mut self.due);
            for (i, tick) in self.ticks.iter_mut().enumerate() {
                if tick.at <= now {
                    tick.at = now.saturating_add(tick.every);
                    due.push(i);
                }
                next = next.min(tick.at);
            }
            self.next_tick = next;
            for &i in &due {
                self.probe(i);
            }
            due.clear();
            self.due = due;
        }
        if self.next_repl_report <= now {
            self.next_repl_report = now.saturating_add(self.repl_every);
            self.replication_reports();
        }
        let at = self.instant();
        let mut timer = self.checker.election().and_then(|e| e.poll_timeout());
        if timer.is_some_and(|t| t <= at) {
            // A violation is kept by the checker; the run loop stops on it.
            let _ = self.checker.handle_timeout(at);
            self.take_actions();
            timer = self.checker.election().and_then(|e| e.poll_timeout());
        }
        self.next_timer = match (timer, self.timer_seen) {
            (None, _) => u64::MAX,
            (Some(t), Some((seen, at))) if t == seen => at,
            (Some(t), _) => {
                let at = nanos(t.saturating_duration_since(self.origin));
                self.timer_seen = Some((t, at));
                at
            }
        };
    }

    fn world_event(&mut self, ev: WorldEvent) {
        self.log(format!("world: {ev:?}"));
        match ev {
            WorldEvent::Kill(s) => self.world.alive[s] = false,
            WorldEvent::Revive(s) => self.world.alive[s] = true,
            WorldEvent::Partition(o, s) => {
                self.world.blocked[o * self.world.alive.len() + s] = true
            }
            WorldEvent::Heal(o, s) => self.world.blocked[o * self.world.alive.len() + s] = false,
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
        self.in_flight_at = u64::MAX;
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
        self.restart_at = self.now.saturating_add(nanos(after));
    }

    fn restart(&mut self) {
        let (at, wall) = (self.instant(), self.wall());
        let _ = self.checker.restart(at, wall);
        self.take_actions();
    }

    /// Takes the actions the last input produced: each runs after a random latency, unless
    /// the backend hangs.
    #[inline(always)]
    fn take_actions(&mut self) {
        if self.checker.has_actions() {
            self.start_actions();
        }
    }

    fn start_actions(&mut self) {
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
            let at = self.now.saturating_add(nanos(latency));
            self.in_flight = Some((action, at));
            self.in_flight_at = at;
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

    fn probe(&mut self, i: usize) {
        let tick = &mut self.ticks[i];
        let (si, pi, oi) = (tick.si, tick.pi, tick.oi);
        if self.world.silent[oi] {
            return;
        }
        let outcome = if self.world.blocked[oi * self.world.alive.len() + si] {
            &self.timeouts[si][pi]
        } else if self.world.alive[si] {
            &self.up
        } else {
            &self.refused
        };
        if let Input::Probe(report) = &mut tick.report {
            set_outcome(&mut report.outcome, outcome);
            report.at = self.clock.1;
        }
        // A violation is kept by the checker; the run loop stops on it.
        let _ = self.checker.handle(&tick.report, self.clock.0);
        self.take_actions();
    }

    fn replication_reports(&mut self) {
        if self.primaries.is_none() {
            let cfg = &self.sc.config;
            let primaries = cfg
                .resources()
                .iter()
                .map(|r| {
                    let primaries = self.repl.primaries(r);
                    cfg.sites()
                        .iter()
                        .map(|s| primaries.contains(&s.id))
                        .collect()
                })
                .collect();
            self.primaries = Some(primaries);
        }
        let sites = self.sc.config.sites().len();
        for i in 0..self.repl_reports.len() {
            let (ri, si) = (i / sites, i % sites);
            let primary = self.primaries.as_ref().is_some_and(|p| p[ri][si]);
            if let Input::Replication(report) = &mut self.repl_reports[i] {
                report.role = if primary {
                    Role::Primary
                } else {
                    Role::Replica
                };
                report.lag = self.world.lag[si];
                report.at = self.clock.1;
            }
            // A violation is kept by the checker; the run loop stops on it.
            let _ = self.checker.handle(&self.repl_reports[i], self.clock.0);
            self.take_actions();
        }
    }

    #[inline(always)]
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
