//! Simulated scenario-hours per wall-second on one core.
//!
//! `cargo bench -p idns-core --bench simulator`. Each iteration runs one random one-hour
//! scenario (2–4 sites, 1–3 observers, probe intervals of 1–10 s, failures, partitions, lag,
//! backend faults, crashes and operator commands), checking every invariant after every step.
//! Criterion reports the throughput in simulated seconds per second; divide by 3,600 for
//! scenario-hours per wall-second (goal ≥ 1,000).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idns_core::test_util::sim::{Scenario, Simulator};

fn scenario_hours(c: &mut Criterion) {
    let hour = Duration::from_secs(3600);
    let mut g = c.benchmark_group("simulator");
    g.throughput(Throughput::Elements(hour.as_secs()));
    g.sample_size(30);
    let mut seed = 0u64;
    g.bench_function(
        "one random scenario-hour (elements = simulated seconds)",
        |b| {
            b.iter(|| {
                seed += 1;
                let out = Simulator::new(Scenario::random_for(seed, hour)).run();
                assert!(out.violation.is_none(), "{}", out.report());
                out.inputs
            })
        },
    );
    g.finish();
}

criterion_group!(benches, scenario_hours);
criterion_main!(benches);
