//! Runs random one-hour scenarios through the simulator and prints the rate: a quick check
//! beside the criterion bench, and a steady workload for profilers
//! (`valgrind --tool=callgrind` counts instructions whatever else the machine is doing).
//!
//! `cargo run --release -p idns-core --example sim_hours -- [SCENARIOS] [THREADS]`
//!
//! Each thread runs its own seeds; the rate is scenario-hours per wall-second over all threads.
// A benchmark program reads the clock and prints; the crate's sans-IO rules are for its library.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

use std::time::{Duration, Instant};

use idns_core::test_util::sim::{Scenario, Simulator};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let threads: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let hour = Duration::from_secs(3600);
    let started = Instant::now();
    let inputs: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut inputs = 0;
                    for seed in (1..=count).filter(|seed| seed % threads == t) {
                        let out = Simulator::new(Scenario::random_for(seed, hour)).run();
                        assert!(out.violation.is_none(), "{}", out.report());
                        inputs += out.inputs;
                    }
                    inputs
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .sum()
    });
    let took = started.elapsed().as_secs_f64();
    println!(
        "{count} scenario-hours on {threads} thread(s) in {took:.3} s: \
         {:.0} scenario-hours per wall-second ({:.0} per thread), {inputs} inputs",
        count as f64 / took,
        count as f64 / took / threads as f64,
    );
}
