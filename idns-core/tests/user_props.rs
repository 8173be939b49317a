//! A property test as a user of the crate writes one, with the public API only: services
//! built with the spec builders, arbitrary sequences of probe reports, replication reports,
//! operator commands, step results (successes, transient and permanent failures, lost
//! calls), timer ticks and controller restarts, every invariant checked after every input by
//! `test_util::Checker`.

use std::time::{Duration, Instant, SystemTime};

use idns_core::test_util::Checker;
use idns_core::*;
use proptest::prelude::*;

/// What happens next.
#[derive(Debug, Clone)]
enum Op {
    /// A probe report: site, probe and observer by index, and what the attempt found.
    Probe(usize, usize, usize, ProbeStatus),
    /// A replica's lag in seconds (`None`: unknown).
    Lag(usize, Option<u64>),
    /// An operator command (to sites that may not exist: those are refused).
    Command(Command),
    /// The oldest action handed out returns: done, or a transient or permanent failure.
    Answer(Result<(), bool>),
    /// The oldest action handed out never returns.
    Lose,
    /// Time passes (milliseconds); due timers fire.
    Wait(u64),
    /// The controller restarts from its journal.
    Restart,
}

/// A service of `sites` sites with two probes each, `observers` observers, automatic or
/// manual failback, and one replicated resource with an RPO budget.
fn service(
    sites: usize,
    observers: usize,
    auto: bool,
    dwell: u64,
) -> Result<ServiceConfig, ConfigError> {
    let mut spec = ServiceSpec::new("app.example.com", "example.com")
        .observers(ObserversSpec::new((0..observers).map(|o| format!("o{o}"))))
        .policy(
            PolicySpec::default()
                .failback(if auto {
                    FailbackMode::Automatic
                } else {
                    FailbackMode::Manual
                })
                .failback_hold_down(Duration::from_secs(20))
                .min_dwell(Duration::from_secs(dwell))
                .rpo_budget(Duration::from_secs(30)),
        )
        .resource("db");
    for s in 0..sites {
        let mut site = SiteSpec::new(format!("s{s}"), s as u32 + 1)
            .address(std::net::IpAddr::from([192, 0, 2, s as u8 + 1]))
            .health(HealthRule::Any);
        for p in ["web", "db"] {
            site = site.probe(
                ProbeSpec::new(p)
                    .interval(Duration::from_secs(1))
                    .rise(1)
                    .fall(2),
            );
        }
        spec = spec.site(site);
    }
    spec.build()
}

fn site() -> impl Strategy<Value = SiteId> {
    (0..4usize).prop_filter_map("a valid id", |s| SiteId::try_from(format!("s{s}")).ok())
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        3 => Just(ProbeStatus::Up),
        2 => Just(ProbeStatus::Down),
        1 => Just(ProbeStatus::Timeout)
    ];
    let command = prop_oneof![
        (proptest::option::of(site()), any::<bool>())
            .prop_map(|(to, force)| Command::Failover { to, force }),
        any::<bool>().prop_map(|force| Command::Failback { force }),
        Just(Command::Freeze),
        Just(Command::Unfreeze),
        site().prop_map(|to| Command::StartDrill { to }),
        Just(Command::StopDrill),
        prop_oneof![Just(Resume::Retry), Just(Resume::Skip), Just(Resume::Abort)]
            .prop_map(Command::Resume),
    ];
    prop_oneof![
        12 => (0..4usize, 0..2usize, 0..3usize, status)
            .prop_map(|(s, p, o, st)| Op::Probe(s, p, o, st)),
        2 => (0..4usize, proptest::option::of(0..60u64)).prop_map(|(s, l)| Op::Lag(s, l)),
        2 => command.prop_map(Op::Command),
        6 => prop_oneof![4 => Just(Ok(())), 1 => any::<bool>().prop_map(Err)].prop_map(Op::Answer),
        1 => Just(Op::Lose),
        4 => (0..30_000u64).prop_map(Op::Wait),
        1 => Just(Op::Restart),
    ]
}

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    // Only an origin: every later time is an offset from it.
    Instant::now()
}

/// Runs `ops` against a checked election; the first broken invariant fails the case.
fn run(cfg: ServiceConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sites: Vec<SiteId> = cfg.sites().iter().map(|s| s.id.clone()).collect();
    let probes: Vec<ProbeId> = cfg.sites()[0].probes.iter().map(|p| p.id.clone()).collect();
    let (observers, resource) = (cfg.observers().ids.clone(), cfg.resources()[0].clone());
    let t0 = origin();
    let wall = |t: Instant| SystemTime::UNIX_EPOCH + t.duration_since(t0);
    let mut now = t0;
    let mut c = Checker::new(cfg, now, wall(now))?;
    let mut pending: Vec<Action> = Vec::new();
    for op in ops {
        pending.extend(std::iter::from_fn(|| c.poll_action()));
        match op {
            Op::Probe(s, p, o, status) => {
                let outcome = match status {
                    ProbeStatus::Up => ProbeOutcome::up(Duration::from_millis(3)),
                    ProbeStatus::Down => ProbeOutcome::down(Duration::ZERO, "refused"),
                    _ => ProbeOutcome::timeout(Duration::from_secs(1)),
                };
                let report = ProbeReport {
                    site: sites[s % sites.len()].clone(),
                    probe: probes[p].clone(),
                    observer: observers[o % observers.len()].clone(),
                    outcome,
                    at: wall(now),
                };
                c.handle(Input::Probe(report), now)?;
            }
            Op::Lag(s, lag) => {
                let report = ReplicationReport {
                    resource: resource.clone(),
                    site: sites[s % sites.len()].clone(),
                    role: Role::Replica,
                    lag: lag.map(Duration::from_secs),
                    at: wall(now),
                };
                c.handle(Input::Replication(report), now)?;
            }
            // A refusal is an answer, not a failure.
            Op::Command(command) => {
                c.command(command, now)?;
            }
            Op::Answer(answer) if !pending.is_empty() => {
                let id = pending.remove(0).id;
                let result = match answer {
                    Ok(()) => Ok(StepOutput::Done),
                    Err(true) => Err(BackendError::Unavailable("lost packet".into())),
                    Err(false) => Err(BackendError::Refused("not allowed".into())),
                };
                c.handle(Input::StepDone(StepDone { id, result }), now)?;
            }
            Op::Lose if !pending.is_empty() => c.abandon(pending.remove(0).id),
            Op::Answer(_) | Op::Lose => {}
            Op::Wait(ms) => {
                now += Duration::from_millis(ms);
                c.handle_timeout(now)?;
            }
            Op::Restart => {
                pending.clear();
                c.restart(now, wall(now))?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_inputs_breaks_an_invariant(
        shape in (2..=4usize, 1..=3usize, any::<bool>(), 0..60u64),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let (sites, observers, auto, dwell) = shape;
        run(service(sites, observers, auto, dwell)?, ops)?;
    }
}
