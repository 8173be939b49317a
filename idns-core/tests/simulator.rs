//! The deterministic simulator: thousands of seeded scenarios checked against the election's
//! invariants, and named scenarios for the behaviours a DR engineer relies on.

use std::time::Duration;

use idns_core::test_util::sim::{Scenario, SimOutcome, Simulator};

/// Seeds run by `cargo test`; `IDNS_SIM_SEEDS` raises it for a longer soak.
fn seed_count() -> u64 {
    std::env::var("IDNS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn run_range(seeds: std::ops::Range<u64>) -> (Vec<SimOutcome>, u64, Duration) {
    let mut bad = Vec::new();
    let mut inputs = 0;
    let mut simulated = Duration::ZERO;
    for seed in seeds {
        let out = Simulator::new(Scenario::random(seed)).run();
        inputs += out.inputs;
        simulated += out.simulated;
        if out.violation.is_some() {
            bad.push(out);
        }
    }
    (bad, inputs, simulated)
}

#[test]
// The simulator is sans-IO; the test may still use both cores.
#[allow(clippy::disallowed_methods)]
fn ten_thousand_seeded_scenarios_break_no_invariant() {
    let n = seed_count();
    let half = n / 2;
    // Two threads: this machine has two cores.
    let other = std::thread::spawn(move || run_range(half..n));
    let (mut bad, inputs_a, sim_a) = run_range(0..half);
    let (bad_b, inputs_b, sim_b) = other.join().expect("simulator thread panicked");
    bad.extend(bad_b);
    let total_inputs = inputs_a + inputs_b;
    let hours = (sim_a + sim_b).as_secs_f64() / 3600.0;
    eprintln!("{n} scenarios, {total_inputs} inputs, {hours:.0} simulated hours");
    assert!(
        total_inputs > n * 100,
        "scenarios fed too few inputs to mean anything"
    );
    if !bad.is_empty() {
        let seeds: Vec<u64> = bad.iter().map(|o| o.seed).collect();
        panic!(
            "{} of {n} scenarios broke an invariant (seeds {:?})\nfirst:\n{}",
            bad.len(),
            &seeds[..seeds.len().min(20)],
            bad[0].report()
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [1, 42, 4242] {
        let a = Simulator::new(Scenario::random(seed)).run();
        let b = Simulator::new(Scenario::random(seed)).run();
        assert_eq!(a.trace, b.trace, "seed {seed} did not replay");
        assert_eq!(a.events, b.events, "seed {seed} did not replay");
    }
}
