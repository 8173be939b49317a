//! How many inputs per second the election handles on one core.
//!
//! Run with `cargo bench -p idns-core --bench election`.
//!
//! - `steady`: a three-site service, two observers, two probes per site, every site up. The
//!   reports alternate between sites, probes and observers; one in five is a failure, never
//!   enough in a row to cross `fall`, so no decision is made: this is what the election does
//!   almost all of the time. Goal: at least 1,000,000 inputs/s.
//! - `transitions`: the home site goes down (three failures from both observers), the
//!   election fails over with a full runbook (one replicated resource), the home site comes
//!   back and the election fails back automatically; every action is drained and its result
//!   fed back as `StepDone`. The throughput counts every input (reports and step results) of
//!   one such cycle: the cost of decisions, runbooks, reasons and events.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use idns_core::{
    Action, Election, Input, IntegrityReport, IntegrityRequest, Manifest, ManifestEntry,
    ProbeOutcome, ProbeReport, Promoted, Propagation, ReplicationReport, Role, ServerAnswer,
    ServiceConfig, Step, StepDone, StepOutput,
};

const SITES: [&str; 3] = ["primary", "recovery", "third"];
const PROBES: [&str; 2] = ["http", "db"];
const OBSERVERS: [&str; 2] = ["o1", "o2"];
/// Rounds of reports (one per site, probe and observer) per measured batch.
const ROUNDS: usize = 100;

fn config(automatic_failback: bool) -> ServiceConfig {
    let failback = if automatic_failback {
        "automatic"
    } else {
        "manual"
    };
    let mut text = format!(
        r#"
        name = "www.example.com"
        zone = "example.com"
        resources = ["db"]
        [observers]
        ids = ["o1", "o2"]
        [policy]
        min_dwell = "0s"
        failback = "{failback}"
        failback_hold_down = "0s"
        "#
    );
    for (i, site) in SITES.iter().enumerate() {
        text.push_str(&format!(
            r#"
            [[sites]]
            id = "{site}"
            priority = {i}
            addresses = ["192.0.2.{}"]
            probes = [
                {{ id = "http", interval = "1s", rise = 1, fall = 3 }},
                {{ id = "db", interval = "1s", rise = 1, fall = 3 }},
            ]
            "#,
            i + 1
        ));
    }
    match ServiceConfig::from_toml(&text) {
        Ok(c) => c,
        Err(e) => panic!("the benchmark's configuration is invalid: {e}"),
    }
}

fn report(site: &'static str, probe: &'static str, observer: &'static str, up: bool) -> Input {
    Input::Probe(ProbeReport {
        site: id(site),
        probe: id(probe),
        observer: id(observer),
        outcome: if up {
            ProbeOutcome::up(Duration::from_millis(3))
        } else {
            ProbeOutcome::down(Duration::from_millis(1), "HTTP 503")
        },
        at: SystemTime::UNIX_EPOCH,
    })
}

/// An identifier from a constant of this file.
fn id<T: TryFrom<&'static str, Error = idns_core::InvalidId>>(text: &'static str) -> T {
    T::try_from(text).unwrap_or_else(|e| panic!("{e}"))
}

/// One round: a report from each observer for each probe of each site; `down(site, probe,
/// observer)` says which fail.
fn round(down: impl Fn(usize, usize, usize) -> bool) -> Vec<Input> {
    let mut out = Vec::new();
    for (o, observer) in OBSERVERS.iter().enumerate() {
        for (s, site) in SITES.iter().enumerate() {
            for (p, probe) in PROBES.iter().enumerate() {
                out.push(report(site, probe, observer, !down(s, p, o)));
            }
        }
    }
    out
}

/// What a backend would answer to `action`.
fn output(action: &Action) -> StepOutput {
    match &action.step {
        Step::Promote { .. } => StepOutput::Promoted(Promoted {
            rpo: Some(Duration::from_millis(200)),
            position: Some("0/3000060".into()),
        }),
        Step::Integrity {
            request: IntegrityRequest::Mark { label },
            ..
        } => {
            let mut manifest = Manifest::default();
            manifest.entries.insert(
                format!("marker/{label}/0"),
                ManifestEntry {
                    size: 42,
                    checksum: "cbf29ce484222325".into(),
                    modified: None,
                },
            );
            StepOutput::Integrity(IntegrityReport {
                manifest,
                mismatches: Vec::new(),
            })
        }
        Step::Integrity { .. } => StepOutput::Integrity(IntegrityReport::default()),
        Step::VerifyDns { .. } => StepOutput::Propagation(Propagation {
            servers: vec![ServerAnswer {
                server: "127.0.0.1:53".into(),
                current: true,
                latency: Duration::from_millis(5),
                detail: String::new(),
            }],
        }),
        _ => StepOutput::Done,
    }
}

/// Runs every action to completion and drains the events; returns the inputs fed.
fn drive(e: &mut Election, now: Instant) -> u64 {
    let mut fed = 0;
    while let Some(action) = e.poll_action() {
        let done = StepDone {
            id: action.id,
            result: Ok(output(&action)),
        };
        // Step results are never refused.
        e.handle(Input::StepDone(done), now);
        fed += 1;
    }
    while let Some(event) = e.poll_event() {
        black_box(event);
    }
    fed
}

/// A started election with every site up, and the time it has reached.
fn warmed_up(automatic_failback: bool, origin: Instant) -> (Election, Instant) {
    let mut e = match Election::new(
        config(automatic_failback),
        None,
        origin,
        SystemTime::UNIX_EPOCH,
    ) {
        Ok(e) => e,
        Err(err) => panic!("the election did not start: {err}"),
    };
    let mut now = origin;
    drive(&mut e, now);
    for _ in 0..3 {
        now += Duration::from_secs(1);
        for input in round(|_, _, _| false) {
            e.handle(input, now);
        }
        for s in SITES {
            e.handle(lag(s, Duration::ZERO), now);
        }
        drive(&mut e, now);
    }
    assert!(
        e.view().sites.iter().all(|s| s.eligible),
        "every site is up"
    );
    (e, now)
}

fn lag(site: &'static str, lag: Duration) -> Input {
    Input::Replication(ReplicationReport {
        resource: id("db"),
        site: id(site),
        role: if site == SITES[0] {
            Role::Primary
        } else {
            Role::Replica
        },
        lag: Some(lag),
        at: SystemTime::UNIX_EPOCH,
    })
}

/// `ROUNDS` rounds of steady-state reports, one failure in five, never two in a row for a
/// probe at an observer.
fn steady_inputs(with_lag: bool) -> Vec<Vec<Input>> {
    (0..ROUNDS)
        .map(|r| {
            let mut inputs = round(|s, p, o| (r + s + 2 * p + 3 * o) % 5 == 0);
            if with_lag {
                for (s, site) in SITES.iter().enumerate() {
                    inputs.push(lag(site, Duration::from_millis((r * 7 + s) as u64 % 500)));
                }
            }
            inputs
        })
        .collect()
}

fn steady(c: &mut Criterion, origin: Instant) {
    let mut group = c.benchmark_group("steady");
    for (label, with_lag) in [("probe_reports", false), ("probe_and_lag_reports", true)] {
        let batch = steady_inputs(with_lag);
        let n: usize = batch.iter().map(Vec::len).sum();
        group.throughput(Throughput::Elements(n as u64));
        let (mut e, mut now) = warmed_up(false, origin);
        let switches = e.view().switches;
        group.bench_function(label, |b| {
            b.iter_batched(
                || batch.clone(),
                |batch| {
                    for round in batch {
                        now += Duration::from_secs(1);
                        for input in round {
                            e.handle(input, now);
                        }
                        if e.poll_timeout().is_some_and(|t| t <= now) {
                            e.handle_timeout(now);
                        }
                        while let Some(event) = e.poll_event() {
                            black_box(event);
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(e.view().switches, switches, "steady state made no switch");
        assert!(e.poll_action().is_none(), "steady state made no decision");
    }
    group.finish();
}

/// One cycle: the home site fails (three rounds), failover, it comes back (one round),
/// automatic failback. Returns the inputs fed.
fn cycle(e: &mut Election, now: &mut Instant, down: &[Vec<Input>], up: &[Input]) -> u64 {
    let mut fed = 0;
    for round in down {
        *now += Duration::from_secs(1);
        for input in round.iter().cloned() {
            e.handle(input, *now);
            fed += 1;
        }
        fed += drive(e, *now);
    }
    *now += Duration::from_secs(1);
    for input in up.iter().cloned() {
        e.handle(input, *now);
        fed += 1;
    }
    fed += drive(e, *now);
    if e.poll_timeout().is_some_and(|t| t <= *now) {
        e.handle_timeout(*now);
        fed += drive(e, *now);
    }
    fed
}

fn transitions(c: &mut Criterion, origin: Instant) {
    let mut group = c.benchmark_group("transitions");
    let down: Vec<Vec<Input>> = (0..3).map(|_| round(|s, _, _| s == 0)).collect();
    let up = round(|_, _, _| false);
    let (mut e, mut now) = warmed_up(true, origin);

    // One cycle to count its inputs and check that it does what it says.
    let before = e.view().switches;
    let n = cycle(&mut e, &mut now, &down, &up);
    assert_eq!(
        e.view().switches,
        before + 2,
        "one failover and one failback"
    );
    assert_eq!(e.view().active.as_str(), SITES[0]);

    group.throughput(Throughput::Elements(n));
    group.bench_function("failover_and_failback_cycle", |b| {
        b.iter(|| black_box(cycle(&mut e, &mut now, &down, &up)))
    });
    group.finish();
    assert_eq!(e.view().active.as_str(), SITES[0]);
    assert!(e.view().runbook.is_none());
}

fn benches(c: &mut Criterion) {
    // The one reading of the clock: an origin for virtual time, which the benchmark advances.
    #[allow(clippy::disallowed_methods)]
    let origin = Instant::now();
    steady(c, origin);
    transitions(c, origin);
}

criterion_group!(election, benches);
criterion_main!(election);
