//! What a simulation runs: a service ([`ServiceShape`]) and a script of [`WorldEvent`]s in
//! virtual time ([`Scenario`]), written by hand or drawn from a seed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{
    AllDownPolicy, FailbackMode, FailoverMode, HealthRule, ObserversSpec, PolicySpec, ProbeSpec,
    RecordMode, ServiceConfig, ServiceSpec, SiteSpec,
};
use crate::election::{Command, Resume};
use crate::id::{ObserverId, SiteId};

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
        let probe = |p: usize| {
            ProbeSpec::new(format!("p{p}"))
                .interval(self.interval)
                .timeout(self.interval / 2)
                .rise(self.rise)
                .fall(self.fall)
        };
        let mut observers = ObserversSpec::new((0..self.observers).map(|o| format!("o{o}")));
        observers.quorum = self.quorum;
        let mut policy = PolicySpec::default()
            .failover(self.failover)
            .failback(self.failback)
            .failback_hold_down(self.hold_down)
            .min_dwell(self.min_dwell)
            .all_down(self.all_down);
        policy.rpo_budget = self.rpo_budget;
        let mut spec = ServiceSpec::new("svc.example.com", "example.com")
            .record(self.record)
            .observers(observers)
            .policy(policy)
            .seed(self.seed);
        for i in 0..self.sites {
            let site = SiteSpec::new(format!("s{i}"), i as u32 + 1)
                .address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1)))
                .alias(format!("s{i}.sites.example.com"))
                .health(self.health);
            spec = spec.site((0..self.probes).fold(site, |s, p| s.probe(probe(p))));
        }
        for r in 0..self.resources {
            spec = spec.resource(format!("r{r}"));
        }
        match spec.build() {
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

/// Observer id `o{i}`.
pub fn observer_id(i: usize) -> ObserverId {
    match ObserverId::try_from(format!("o{i}")) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}
