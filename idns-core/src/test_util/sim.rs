//! A deterministic simulator: many sites, observers, partitions, flapping, replication lag,
//! backend faults and controller crashes, all in virtual time from one seed.
//!
//! The simulator plays the world (which sites are alive, which observer can reach which site),
//! the observers (probe ticks at each probe's interval), the driver (persist the journal
//! before executing each action, execute it against [`MemoryDns`] and [`MemoryReplication`]
//! after a random latency, feed the result back) and the operator (scripted commands). After
//! every step it checks the election's invariants; the first violation stops the run and is
//! reported with the seed and the tail of the trace. The same seed replays exactly.
//!
//! ```
//! use idns_core::test_util::sim::{Scenario, Simulator};
//! let outcome = Simulator::new(Scenario::random(7)).run();
//! assert!(outcome.violation.is_none(), "{}", outcome.report());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{
    AllDownPolicy, FailbackMode, FailoverMode, HealthRule, ObserversSpec, PolicySpec, ProbeSpec,
    RecordMode, RunbookSpec, ServiceConfig, ServiceSpec, SiteSpec,
};
use crate::dns::RecordSet;
use crate::election::{Command, Election, Input, Resume, StepDone, StepOutput};
use crate::epoch::Epoch;
use crate::error::BackendError;
use crate::event::Event;
use crate::health::Health;
use crate::id::{ObserverId, SiteId};
use crate::journal::Journal;
use crate::probe::{ProbeOutcome, ProbeReport};
use crate::reason::Reason;
use crate::replication::{ReplicationReport, Role};
use crate::runbook::{Action, RunbookKind, Step};

use super::{DnsFaults, MemoryDns, MemoryReplication, ReplFaults};

/// Something that happens in the simulated world at a point in virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorldEvent {
    /// The site's service dies: every observer's probes fail.
    Kill(usize),
    /// The site's service comes back.
    Revive(usize),
    /// Observer `.0` can no longer reach site `.1` (its probes time out).
    Partition(usize, usize),
    /// Observer `.0` reaches site `.1` again.
    Heal(usize, usize),
    /// The observer's reports stop reaching the controller.
    Silence(usize),
    /// The observer's reports reach the controller again.
    Unsilence(usize),
    /// The site's replicas fall behind by this much (`None`: unknown).
    Lag(usize, Option<Duration>),
    /// The DNS backend is unreachable (`true`) or back (`false`).
    DnsDown(bool),
    /// The next this-many DNS updates fail.
    DnsFailApplies(u32),
    /// The next this-many propagation checks find the change not yet everywhere.
    DnsLagging(u32),
    /// The replication backend cannot reach the site (`true`) or can again.
    ReplUnreachable(usize, bool),
    /// The next this-many backend calls never return (the watchdog must catch them).
    Hang(u32),
    /// The controller process is killed; it restarts from its journal after the delay.
    Crash(Duration),
    /// An operator command.
    Command(Command),
}

/// A scenario: a service configuration, a seed, a duration and a script of world events.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed of every random choice the simulator makes (step latencies, crash effects).
    pub seed: u64,
    /// The service.
    pub config: ServiceConfig,
    /// How long to run, in virtual time.
    pub duration: Duration,
    /// The world events, by virtual time from the start.
    pub script: Vec<(Duration, WorldEvent)>,
    /// Shortest and longest time a backend takes for one step.
    pub step_latency: (Duration, Duration),
}

/// Knobs for building a scenario's service by hand.
#[derive(Debug, Clone)]
pub struct ServiceShape {
    /// Number of sites (site `i` is `s{i}`, priority `i + 1`, address `127.0.0.{i+1}`).
    pub sites: usize,
    /// Number of observers (`o{i}`).
    pub observers: usize,
    /// Observer quorum (`None`: majority).
    pub quorum: Option<usize>,
    /// Probes per site (`p{i}`).
    pub probes: usize,
    /// Probe interval.
    pub interval: Duration,
    /// Rise threshold.
    pub rise: u32,
    /// Fall threshold.
    pub fall: u32,
    /// Site health rule.
    pub health: HealthRule,
    /// Replicated resources (`r{i}`).
    pub resources: usize,
    /// Failover mode.
    pub failover: FailoverMode,
    /// Failback mode.
    pub failback: FailbackMode,
    /// Failback hold-down.
    pub hold_down: Duration,
    /// Minimum dwell.
    pub min_dwell: Duration,
    /// RPO budget.
    pub rpo_budget: Option<Duration>,
    /// All-down policy.
    pub all_down: AllDownPolicy,
    /// Record mode.
    pub record: RecordMode,
    /// Retry jitter seed.
    pub seed: u64,
}

impl Default for ServiceShape {
    fn default() -> Self {
        Self {
            sites: 2,
            observers: 1,
            quorum: None,
            probes: 1,
            interval: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            health: HealthRule::All,
            resources: 1,
            failover: FailoverMode::Automatic,
            failback: FailbackMode::Manual,
            hold_down: Duration::from_secs(60),
            min_dwell: Duration::from_secs(30),
            rpo_budget: None,
            all_down: AllDownPolicy::KeepLast,
            record: RecordMode::Address,
            seed: 0,
        }
    }
}

impl ServiceShape {
    /// The validated configuration of this shape.
    pub fn build(&self) -> ServiceConfig {
        let spec = ServiceSpec {
            name: "svc.example.com".into(),
            zone: "example.com".into(),
            record: self.record,
            ttl: Duration::from_secs(30),
            sites: (0..self.sites)
                .map(|i| SiteSpec {
                    id: format!("s{i}"),
                    priority: i as u32 + 1,
                    addresses: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1))],
                    alias: Some(format!("s{i}.sites.example.com")),
                    probes: (0..self.probes)
                        .map(|p| ProbeSpec {
                            id: format!("p{p}"),
                            interval: self.interval,
                            timeout: self.interval / 2,
                            rise: self.rise,
                            fall: self.fall,
                            counting: Default::default(),
                            down_after: None,
                            ignore_down_response: false,
                            check: serde_json::Value::Null,
                        })
                        .collect(),
                    health: self.health,
                })
                .collect(),
            observers: ObserversSpec {
                ids: (0..self.observers).map(|o| format!("o{o}")).collect(),
                quorum: self.quorum,
                stale_after: None,
            },
            policy: PolicySpec {
                failover: self.failover,
                failback: self.failback,
                failback_hold_down: self.hold_down,
                min_dwell: self.min_dwell,
                rpo_budget: self.rpo_budget,
                all_down: self.all_down,
            },
            resources: (0..self.resources).map(|r| format!("r{r}")).collect(),
            runbook: RunbookSpec::default(),
            drill_name: None,
            seed: self.seed,
        };
        match ServiceConfig::new(spec) {
            Ok(c) => c,
            // The shape is built from known-good parts; a failure is a bug in the simulator.
            Err(e) => panic!("simulator built an invalid configuration: {e}"),
        }
    }
}

impl Scenario {
    /// A scenario with no events.
    pub fn new(seed: u64, config: ServiceConfig, duration: Duration) -> Self {
        Self {
            seed,
            config,
            duration,
            script: Vec::new(),
            step_latency: (Duration::from_millis(5), Duration::from_millis(300)),
        }
    }

    /// Adds a world event at `at` from the start.
    #[must_use]
    pub fn at(mut self, at: Duration, event: WorldEvent) -> Self {
        self.script.push((at, event));
        self
    }

    /// A random scenario of 15 minutes: shape, policies and a script of failures drawn from
    /// the seed.
    pub fn random(seed: u64) -> Self {
        Self::random_for(seed, Duration::from_secs(900))
    }

    /// A random scenario lasting `duration`, with about one world event per 40 seconds.
    pub fn random_for(seed: u64, duration: Duration) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sites = rng.random_range(2..=4usize);
        let observers = rng.random_range(1..=3usize);
        let interval = Duration::from_secs(rng.random_range(1..=10u64));
        let rpo_budget = rng
            .random_bool(0.4)
            .then(|| Duration::from_secs(rng.random_range(5..=60u64)));
        let record = if rng.random_bool(0.2) {
            RecordMode::Alias
        } else {
            RecordMode::Address
        };
        let all_down = match (rng.random_range(0..3u8), record) {
            (1, RecordMode::Address) => AllDownPolicy::FailOpen,
            (2, _) => AllDownPolicy::FailClosed,
            _ => AllDownPolicy::KeepLast,
        };
        let shape = ServiceShape {
            sites,
            observers,
            quorum: None,
            probes: rng.random_range(1..=2usize),
            interval,
            rise: rng.random_range(1..=3u32),
            fall: rng.random_range(1..=4u32),
            health: if rng.random_bool(0.3) {
                HealthRule::Any
            } else {
                HealthRule::All
            },
            resources: rng.random_range(0..=2usize),
            failover: if rng.random_bool(0.1) {
                FailoverMode::Manual
            } else {
                FailoverMode::Automatic
            },
            failback: if rng.random_bool(0.5) {
                FailbackMode::Automatic
            } else {
                FailbackMode::Manual
            },
            hold_down: Duration::from_secs(rng.random_range(0..=120u64)),
            min_dwell: Duration::from_secs(rng.random_range(0..=120u64)),
            rpo_budget,
            all_down,
            record,
            seed,
        };
        let mut s = Scenario::new(seed, shape.build(), duration);
        let per_15_min = rng.random_range(4..=24usize);
        let n = (per_15_min as f64 * duration.as_secs_f64() / 900.0).ceil() as usize;
        for _ in 0..n {
            let at = Duration::from_millis(rng.random_range(0..duration.as_millis() as u64));
            let site = rng.random_range(0..sites);
            let obs = rng.random_range(0..observers);
            let ev = match rng.random_range(0..20u8) {
                0..=3 => WorldEvent::Kill(site),
                4..=6 => WorldEvent::Revive(site),
                7 => WorldEvent::Partition(obs, site),
                8 => WorldEvent::Heal(obs, site),
                9 => WorldEvent::Silence(obs),
                10 => WorldEvent::Unsilence(obs),
                11 => WorldEvent::Lag(
                    site,
                    rng.random_bool(0.8)
                        .then(|| Duration::from_secs(rng.random_range(0..=120u64))),
                ),
                12 => WorldEvent::DnsFailApplies(rng.random_range(1..=15u32)),
                13 => WorldEvent::DnsLagging(rng.random_range(1..=4u32)),
                14 => WorldEvent::ReplUnreachable(site, rng.random_bool(0.5)),
                15 => WorldEvent::Hang(rng.random_range(1..=2u32)),
                16 => WorldEvent::Crash(Duration::from_millis(rng.random_range(0..=30_000u64))),
                17 => WorldEvent::DnsDown(rng.random_bool(0.5)),
                _ => WorldEvent::Command(random_command(&mut rng, sites)),
            };
            s.script.push((at, ev));
        }
        s
    }
}

fn random_command(rng: &mut ChaCha8Rng, sites: usize) -> Command {
    let site = |rng: &mut ChaCha8Rng| site_id(rng.random_range(0..sites));
    match rng.random_range(0..9u8) {
        0 => Command::Failover {
            to: rng.random_bool(0.7).then(|| site(rng)),
            force: rng.random_bool(0.3),
        },
        1 => Command::Failback {
            force: rng.random_bool(0.3),
        },
        2 => Command::Freeze,
        3 => Command::Unfreeze,
        4 => Command::StartDrill { to: site(rng) },
        5 => Command::StopDrill,
        6 => Command::Resume(Resume::Retry),
        7 => Command::Resume(Resume::Skip),
        _ => Command::Resume(Resume::Abort),
    }
}

/// The id of site `i` in a [`ServiceShape`].
pub fn site_id(i: usize) -> SiteId {
    match SiteId::try_from(format!("s{i}")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Which invariant a run broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// The epoch went down.
    EpochDecreased,
    /// Two decisions (or DNS writes) named different sites for one epoch.
    TwoActivesInOneEpoch,
    /// A decision did not raise the epoch.
    EpochNotIncreased,
    /// An unforced switch went to a site that was not up, or over the RPO budget.
    IneligibleTarget,
    /// Two unforced switches closer than the minimum dwell.
    DwellViolated,
    /// An automatic failback the policy does not allow (manual, or before the hold-down).
    FailbackPolicy,
    /// A backend was asked to write an epoch lower than one it had accepted.
    StaleWrite,
    /// A restart from the journal did not reach the same state, switched again, or
    /// re-emitted a finished step.
    ReplayMismatch,
    /// An action was emitted while another was still outstanding.
    TwoActionsInFlight,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A broken invariant, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// Virtual time from the start.
    pub at: Duration,
    /// What happened.
    pub detail: String,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The scenario's seed.
    pub seed: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Every event the election emitted, with its virtual time.
    pub events: Vec<(Duration, Event)>,
    /// The trace of what happened (world events, actions, restarts).
    pub trace: Vec<String>,
    /// The final journal.
    pub journal: Option<Journal>,
    /// Inputs fed to the election.
    pub inputs: u64,
    /// Virtual time simulated.
    pub simulated: Duration,
    /// The DNS backend, for inspection.
    pub dns: MemoryDns,
    /// The replication backend, for inspection.
    pub replication: MemoryReplication,
}

impl SimOutcome {
    /// A readable report: the seed, the violation and the last lines of the trace.
    pub fn report(&self) -> String {
        let mut out = format!("seed {}", self.seed);
        match &self.violation {
            Some(v) => out.push_str(&format!(
                ": {} at {:?}: {}\nreplay: Simulator::new(Scenario::random({})).run()\n",
                v.invariant, v.at, v.detail, self.seed
            )),
            None => out.push_str(": no violation\n"),
        }
        let tail = self.trace.len().saturating_sub(40);
        for line in &self.trace[tail..] {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Decisions (kind, target, forced, virtual time), in order.
    pub fn decisions(&self) -> Vec<(Duration, RunbookKind, Option<SiteId>, bool)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Decision {
                    kind, to, forced, ..
                } => Some((*t, *kind, to.clone(), *forced)),
                _ => None,
            })
            .collect()
    }
}

struct World {
    alive: Vec<bool>,
    blocked: Vec<Vec<bool>>,
    silent: Vec<bool>,
    lag: Vec<Option<Duration>>,
    hang: u32,
}

struct Checker {
    epoch: Epoch,
    last_decision_epoch: Epoch,
    owners: BTreeMap<Epoch, Option<SiteId>>,
    last_switch: Option<Duration>,
    home_up_since: Option<Duration>,
}

/// The simulator. Build it from a [`Scenario`] and [`run`](Self::run) it.
pub struct Simulator {
    sc: Scenario,
    rng: ChaCha8Rng,
    origin: Instant,
    now: Duration,
    election: Option<Election>,
    persisted: Option<Journal>,
    saved_version: Option<u64>,
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
    checker: Checker,
    events: Vec<(Duration, Event)>,
    /// Trace lines with their virtual time, formatted only when the outcome is built.
    trace: Vec<(Duration, String)>,
    /// Sites holding the primary copy, `[resource][site]`; `None` after a replication step.
    primaries: Option<Vec<Vec<bool>>>,
    violation: Option<Violation>,
    inputs: u64,
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
        Simulator {
            rng,
            origin: virtual_origin(),
            now: Duration::ZERO,
            election: None,
            persisted: None,
            saved_version: None,
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
            checker: Checker {
                epoch: Epoch::ZERO,
                last_decision_epoch: Epoch::ZERO,
                owners: BTreeMap::new(),
                last_switch: None,
                home_up_since: None,
            },
            events: Vec::new(),
            trace: Vec::new(),
            primaries: None,
            violation: None,
            inputs: 0,
            sc,
        }
    }

    fn instant(&self) -> Instant {
        self.origin + self.now
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + WALL_ORIGIN + self.now
    }

    fn log(&mut self, line: impl fmt::Display) {
        self.trace.push((self.now, line.to_string()));
    }

    fn violate(&mut self, invariant: Invariant, detail: String) {
        if self.violation.is_none() {
            self.log(format!("VIOLATION {invariant}: {detail}"));
            self.violation = Some(Violation {
                invariant,
                at: self.now,
                detail,
            });
        }
    }

    /// Runs the scenario to its end, or to the first violation.
    pub fn run(mut self) -> SimOutcome {
        while self.violation.is_none() {
            let next = self.next_time();
            let Some(t) = next.filter(|t| *t <= self.sc.duration) else {
                break;
            };
            self.now = self.now.max(t);
            self.step();
        }
        self.now = self.now.min(self.sc.duration);
        self.final_checks();
        SimOutcome {
            seed: self.sc.seed,
            violation: self.violation,
            events: self.events,
            trace: self
                .trace
                .into_iter()
                .map(|(t, line)| format!("{:>10.3}s {line}", t.as_secs_f64()))
                .collect(),
            journal: self.election.as_ref().map(|e| e.journal().clone()),
            inputs: self.inputs,
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
        if let Some(e) = &self.election {
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
        if self.election.is_none() {
            return;
        }
        if self.in_flight.as_ref().is_some_and(|(_, t)| *t <= now)
            && let Some((action, _)) = self.in_flight.take()
        {
            {
                let result = self.execute(&action);
                self.log(format!(
                    "done {} {}: {}",
                    action.id,
                    action.step,
                    match &result {
                        Ok(_) => "ok".to_owned(),
                        Err(e) => e.to_string(),
                    }
                ));
                self.feed(Input::StepDone(StepDone {
                    id: action.id,
                    result,
                }));
            }
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
        let due = self
            .election
            .as_ref()
            .and_then(|e| e.poll_timeout())
            .is_some_and(|at| at <= self.instant());
        if due {
            let at = self.instant();
            if let Some(e) = self.election.as_mut() {
                e.handle_timeout(at);
            }
            self.pump();
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
                if self.election.is_some() {
                    let desc = format!("{c:?}");
                    let at = self.instant();
                    let res = self.election.as_mut().map(|e| e.command(c, at));
                    self.inputs += 1;
                    if let Some(Err(r)) = res {
                        self.log(format!("command {desc} refused: {}", r.reason));
                    }
                    self.pump();
                }
            }
        }
    }

    fn crash(&mut self, after: Duration) {
        if self.election.is_none() {
            return;
        }
        self.log("controller killed");
        // An action in flight may or may not have taken effect before the crash.
        if let Some((action, _)) = self.in_flight.take()
            && self.rng.random_bool(0.5)
        {
            let _ = self.execute(&action);
            self.log(format!(
                "in-flight {} took effect before the crash",
                action.id
            ));
        }
        self.election = None;
        self.restart_at = Some(self.now + after);
    }

    fn restart(&mut self) {
        let journal = self.persisted.clone();
        self.log(format!(
            "controller starts from {}",
            match &journal {
                Some(j) => format!("journal (epoch {}, active {})", j.epoch(), j.active()),
                None => "no journal".to_owned(),
            }
        ));
        let e = match Election::new(
            self.sc.config.clone(),
            journal.clone(),
            self.instant(),
            self.wall(),
        ) {
            Ok(e) => e,
            Err(err) => {
                self.violate(
                    Invariant::ReplayMismatch,
                    format!("the persisted journal was refused: {err}"),
                );
                return;
            }
        };
        if let Some(j) = &journal {
            let v = e.view();
            if v.epoch != j.epoch() || v.active != *j.active() || v.serving != j.serving() {
                let detail = format!(
                    "restart reached epoch {} active {} ({:?}), journal says epoch {} active {} ({:?})",
                    v.epoch,
                    v.active,
                    v.serving,
                    j.epoch(),
                    j.active(),
                    j.serving()
                );
                self.violate(Invariant::ReplayMismatch, detail);
            }
            let rb_now = e.journal().runbook().map(|r| (r.id, r.done.len()));
            let rb_then = j.runbook().map(|r| (r.id, r.done.len()));
            if rb_now != rb_then {
                self.violate(
                    Invariant::ReplayMismatch,
                    format!("restart runbook {rb_now:?}, journal runbook {rb_then:?}"),
                );
            }
        }
        self.saved_version = None;
        self.election = Some(e);
        self.pump_with(journal.as_ref());
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
        let Some(e) = self.election.as_mut() else {
            return;
        };
        self.inputs += 1;
        e.handle(input, at);
        self.pump();
    }

    fn pump(&mut self) {
        self.pump_with(None);
    }

    /// Drains actions (persisting the journal first) and events, checking invariants.
    fn pump_with(&mut self, resumed: Option<&Journal>) {
        let mut first_after_restart = resumed.is_some();
        loop {
            let Some(e) = self.election.as_mut() else {
                return;
            };
            let action = e.poll_action();
            let version = e.journal_version();
            if let Some(action) = action {
                if self.saved_version != Some(version) {
                    self.persisted = Some(e.journal().clone());
                    self.saved_version = Some(version);
                }
                if first_after_restart {
                    first_after_restart = false;
                    if let Some(j) = resumed
                        && let Some(rb) = j.runbook()
                        && rb.id == action.id.runbook
                        && (action.id.index as usize) < rb.done.len()
                    {
                        self.violate(
                            Invariant::ReplayMismatch,
                            format!("finished step {} was emitted again", action.id),
                        );
                    }
                }
                if self.in_flight.is_some() {
                    self.violate(
                        Invariant::TwoActionsInFlight,
                        format!("{} emitted while another action was outstanding", action.id),
                    );
                }
                self.check_action(&action);
                let lo = self.sc.step_latency.0.as_millis() as u64;
                let hi = self.sc.step_latency.1.as_millis().max(1) as u64;
                let latency = Duration::from_millis(self.rng.random_range(lo..=hi.max(lo)));
                self.log(format!(
                    "action {} [{}] {}",
                    action.id, action.epoch, action.step
                ));
                if self.world.hang > 0 {
                    self.world.hang -= 1;
                    self.log(format!("{} hangs", action.id));
                    // Never completes: the election's watchdog must notice.
                    continue;
                }
                self.in_flight = Some((action, self.now + latency));
                continue;
            }
            if let Some(e) = self.election.as_mut()
                && self.saved_version != Some(e.journal_version())
            {
                self.persisted = Some(e.journal().clone());
                self.saved_version = Some(e.journal_version());
            }
            let Some(ev) = self.election.as_mut().and_then(|e| e.poll_event()) else {
                break;
            };
            self.check_event(&ev);
            self.events.push((self.now, ev));
        }
        self.check_view();
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
            Step::SwitchDns { change } => {
                let res = self.dns.apply_now(change).map(|()| StepOutput::Done);
                if res.is_ok() && change.name == *self.sc.config.name() {
                    self.check_owner(change.epoch, change.site.clone(), "DNS write");
                }
                res
            }
            Step::VerifyDns { change } => self.dns.verify_now(change).map(StepOutput::Propagation),
        }
    }

    fn check_owner(&mut self, epoch: Epoch, site: Option<SiteId>, what: &str) {
        match self.checker.owners.get(&epoch) {
            Some(prev) if *prev != site => {
                let detail = format!(
                    "{what} for epoch {epoch} names {site:?}, but epoch {epoch} already belongs to {prev:?}"
                );
                self.violate(Invariant::TwoActivesInOneEpoch, detail);
            }
            Some(_) => {}
            None => {
                self.checker.owners.insert(epoch, site);
            }
        }
    }

    fn check_action(&mut self, action: &Action) {
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

    fn check_event(&mut self, ev: &Event) {
        match ev {
            Event::SiteChanged { site, to, .. } if *site == self.sc.config.home().id => {
                self.checker.home_up_since = (*to == Health::Up).then_some(self.now);
            }
            Event::Decision {
                kind,
                to,
                epoch,
                forced,
                reasons,
                ..
            } => self.check_decision(*kind, to.clone(), *epoch, *forced, reasons),
            _ => {}
        }
    }

    fn check_decision(
        &mut self,
        kind: RunbookKind,
        to: Option<SiteId>,
        epoch: Epoch,
        forced: bool,
        reasons: &[Reason],
    ) {
        if kind == RunbookKind::Drill {
            return;
        }
        if epoch <= self.checker.last_decision_epoch {
            let detail = format!(
                "{kind} decision at epoch {epoch}, not above the previous decision's {}",
                self.checker.last_decision_epoch
            );
            self.violate(Invariant::EpochNotIncreased, detail);
        }
        self.checker.last_decision_epoch = epoch;
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
        let policy = self.sc.config.policy().clone();
        // Dwell: measured against the previous switch, forced or not.
        if !forced
            && let Some(prev) = self.checker.last_switch
            && self.now.saturating_sub(prev) < policy.min_dwell
        {
            let detail = format!(
                "{kind} {:.3}s after the previous switch, minimum dwell {:?}",
                (self.now - prev).as_secs_f64(),
                policy.min_dwell
            );
            self.violate(Invariant::DwellViolated, detail);
        }
        self.checker.last_switch = Some(self.now);
        if kind == RunbookKind::Failback && !operator {
            if policy.failback == FailbackMode::Manual {
                self.violate(
                    Invariant::FailbackPolicy,
                    "automatic failback with a manual failback policy".into(),
                );
            } else if self
                .checker
                .home_up_since
                .is_none_or(|t| self.now.saturating_sub(t) < policy.failback_hold_down)
            {
                let detail = format!(
                    "automatic failback with the home site up since {:?}, hold-down {:?}",
                    self.checker.home_up_since, policy.failback_hold_down
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
        let Some(view) = self.election.as_ref().map(|e| e.view().clone()) else {
            return;
        };
        let Some(site) = view.sites.iter().find(|s| s.id == to) else {
            return;
        };
        if site.health != Health::Up {
            let detail = format!("{kind} to {to}, which is {}", site.health);
            self.violate(Invariant::IneligibleTarget, detail);
        }
        if matches!(kind, RunbookKind::Failover | RunbookKind::Restore)
            && let Some(budget) = policy.rpo_budget
            && !self.sc.config.resources().is_empty()
            && site.lag.is_none_or(|l| l > budget)
        {
            let detail = format!(
                "{kind} to {to} with lag {:?} over the budget {budget:?}",
                site.lag
            );
            self.violate(Invariant::IneligibleTarget, detail);
        }
    }

    fn check_view(&mut self) {
        let Some(e) = self.election.as_ref() else {
            return;
        };
        let epoch = e.view().epoch;
        if epoch < self.checker.epoch {
            let detail = format!("epoch went from {} down to {epoch}", self.checker.epoch);
            self.violate(Invariant::EpochDecreased, detail);
        }
        self.checker.epoch = self.checker.epoch.max(epoch);
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

/// Observer id `o{i}`.
pub fn observer_id(i: usize) -> ObserverId {
    match ObserverId::try_from(format!("o{i}")) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(shape: ServiceShape) -> Simulator {
        Simulator::new(Scenario::new(0, shape.build(), Duration::from_secs(10)))
    }

    fn operator() -> Vec<Reason> {
        vec![Reason::Operator]
    }

    #[test]
    fn the_checker_catches_a_manual_failback_done_automatically() {
        let mut s = sim(ServiceShape::default());
        s.check_decision(
            RunbookKind::Failback,
            Some(site_id(0)),
            Epoch::new(2),
            false,
            &[],
        );
        assert_eq!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::FailbackPolicy)
        );
        let mut s = sim(ServiceShape::default());
        s.check_decision(
            RunbookKind::Failback,
            Some(site_id(0)),
            Epoch::new(2),
            false,
            &operator(),
        );
        assert_ne!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::FailbackPolicy)
        );
    }

    #[test]
    fn the_checker_catches_two_switches_inside_the_dwell_and_a_reused_epoch() {
        let mut s = sim(ServiceShape {
            min_dwell: Duration::from_secs(30),
            ..ServiceShape::default()
        });
        s.checker.last_switch = Some(Duration::ZERO);
        s.now = Duration::from_secs(10);
        s.check_decision(
            RunbookKind::Failover,
            None,
            Epoch::new(2),
            false,
            &operator(),
        );
        assert_eq!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::DwellViolated)
        );

        let mut s = sim(ServiceShape::default());
        s.check_decision(
            RunbookKind::Failover,
            Some(site_id(1)),
            Epoch::new(2),
            true,
            &operator(),
        );
        s.check_decision(
            RunbookKind::Failover,
            Some(site_id(0)),
            Epoch::new(2),
            true,
            &operator(),
        );
        assert_eq!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::EpochNotIncreased)
        );

        let mut s = sim(ServiceShape::default());
        s.check_owner(Epoch::new(3), Some(site_id(1)), "write");
        s.check_owner(Epoch::new(3), Some(site_id(0)), "write");
        assert_eq!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::TwoActivesInOneEpoch)
        );
    }

    #[test]
    fn the_checker_catches_a_switch_to_a_site_that_is_not_up() {
        let mut s = sim(ServiceShape::default());
        s.restart();
        // Nothing has been probed yet: every site is unknown.
        s.check_decision(
            RunbookKind::Failover,
            Some(site_id(1)),
            Epoch::new(2),
            false,
            &[],
        );
        assert_eq!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::IneligibleTarget)
        );
    }

    #[test]
    fn the_checker_catches_a_stale_write() {
        let mut s = sim(ServiceShape::default());
        let name = s.sc.config.name().clone();
        let change = |epoch| crate::dns::DnsChange {
            zone: s.sc.config.zone().clone(),
            name: name.clone(),
            records: RecordSet::Empty,
            ttl: Duration::from_secs(1),
            epoch: Epoch::new(epoch),
            site: None,
        };
        let (c5, c4) = (change(5), change(4));
        assert!(s.dns.apply_now(&c5).is_ok());
        assert!(s.dns.apply_now(&c4).is_err());
        s.final_checks();
        assert_eq!(
            s.violation.map(|v| v.invariant),
            Some(Invariant::StaleWrite)
        );
    }
}
