//! Property tests of the election's invariants. Each property generates scenarios aimed at
//! one invariant (proptest shrinks a failure to a short script) and runs them on the
//! deterministic simulator, which checks every invariant after every step.

use std::time::Duration;

use idns_core::test_util::Invariant;
use idns_core::test_util::sim::{Scenario, ServiceShape, Simulator, WorldEvent, site_id};
use idns_core::{AllDownPolicy, Command, FailbackMode, Journal, Resume};
use proptest::prelude::*;

fn shape() -> impl Strategy<Value = ServiceShape> {
    (
        2..=4usize,
        1..=3usize,
        1..=2usize,
        1..=3u32,
        1..=4u32,
        0..=2usize,
        prop_oneof![Just(FailbackMode::Manual), Just(FailbackMode::Automatic)],
        0..=90u64,
        0..=90u64,
        proptest::option::of(1..=60u64),
        prop_oneof![
            Just(AllDownPolicy::KeepLast),
            Just(AllDownPolicy::FailOpen),
            Just(AllDownPolicy::FailClosed)
        ],
        any::<u64>(),
    )
        .prop_map(
            |(
                sites,
                observers,
                probes,
                rise,
                fall,
                resources,
                failback,
                hold,
                dwell,
                rpo,
                all_down,
                seed,
            )| {
                ServiceShape {
                    sites,
                    observers,
                    probes,
                    rise,
                    fall,
                    resources,
                    failback,
                    hold_down: Duration::from_secs(hold),
                    min_dwell: Duration::from_secs(dwell),
                    rpo_budget: rpo.map(Duration::from_secs),
                    all_down,
                    seed,
                    ..ServiceShape::default()
                }
            },
        )
}

/// World events with their weights; `crashy` favours controller crashes, `operator` favours
/// commands (forced or not).
fn event(crashy: bool, operator: bool) -> impl Strategy<Value = WorldEvent> {
    let site = 0..4usize;
    let obs = 0..3usize;
    let crash_w = if crashy { 6 } else { 1 };
    let cmd_w = if operator { 6 } else { 1 };
    prop_oneof![
        4 => site.clone().prop_map(WorldEvent::Kill),
        3 => site.clone().prop_map(WorldEvent::Revive),
        1 => (obs.clone(), site.clone()).prop_map(|(o, s)| WorldEvent::Partition(o, s)),
        1 => (obs.clone(), site.clone()).prop_map(|(o, s)| WorldEvent::Heal(o, s)),
        1 => obs.clone().prop_map(WorldEvent::Silence),
        1 => obs.prop_map(WorldEvent::Unsilence),
        2 => (site.clone(), proptest::option::of(0..120u64))
            .prop_map(|(s, l)| WorldEvent::Lag(s, l.map(Duration::from_secs))),
        1 => (1..12u32).prop_map(WorldEvent::DnsFailApplies),
        1 => (1..4u32).prop_map(WorldEvent::DnsLagging),
        1 => any::<bool>().prop_map(WorldEvent::DnsDown),
        1 => (site.clone(), any::<bool>()).prop_map(|(s, on)| WorldEvent::ReplUnreachable(s, on)),
        1 => (1..3u32).prop_map(WorldEvent::Hang),
        crash_w => (0..20_000u64).prop_map(|ms| WorldEvent::Crash(Duration::from_millis(ms))),
        cmd_w => command(site).prop_map(WorldEvent::Command),
    ]
}

fn command(site: std::ops::Range<usize>) -> impl Strategy<Value = Command> {
    prop_oneof![
        (proptest::option::of(site.clone()), any::<bool>()).prop_map(|(to, force)| {
            Command::Failover {
                to: to.map(site_id),
                force,
            }
        }),
        any::<bool>().prop_map(|force| Command::Failback { force }),
        Just(Command::Freeze),
        Just(Command::Unfreeze),
        site.prop_map(|s| Command::StartDrill { to: site_id(s) }),
        Just(Command::StopDrill),
        Just(Command::Resume(Resume::Retry)),
        Just(Command::Resume(Resume::Skip)),
        Just(Command::Resume(Resume::Abort)),
    ]
}

fn scenario(crashy: bool, operator: bool) -> impl Strategy<Value = Scenario> {
    (
        shape(),
        proptest::collection::vec((0..600_000u64, event(crashy, operator)), 1..30),
        any::<u64>(),
    )
        .prop_map(|(shape, script, seed)| {
            let mut sc = Scenario::new(seed, shape.build(), Duration::from_secs(600));
            for (ms, ev) in script {
                // Clamp indices to the shape.
                let ev = clamp(ev, shape.sites, shape.observers);
                sc = sc.at(Duration::from_millis(ms), ev);
            }
            sc
        })
}

fn clamp(ev: WorldEvent, sites: usize, observers: usize) -> WorldEvent {
    let s = |i: usize| i % sites;
    let o = |i: usize| i % observers;
    match ev {
        WorldEvent::Kill(i) => WorldEvent::Kill(s(i)),
        WorldEvent::Revive(i) => WorldEvent::Revive(s(i)),
        WorldEvent::Partition(a, b) => WorldEvent::Partition(o(a), s(b)),
        WorldEvent::Heal(a, b) => WorldEvent::Heal(o(a), s(b)),
        WorldEvent::Silence(a) => WorldEvent::Silence(o(a)),
        WorldEvent::Unsilence(a) => WorldEvent::Unsilence(o(a)),
        WorldEvent::Lag(i, l) => WorldEvent::Lag(s(i), l),
        WorldEvent::ReplUnreachable(i, on) => WorldEvent::ReplUnreachable(s(i), on),
        WorldEvent::Command(Command::Failover { to, force }) => {
            WorldEvent::Command(Command::Failover {
                to: to.map(|t| site_id(s(t.as_str()[1..].parse().unwrap_or(0)))),
                force,
            })
        }
        WorldEvent::Command(Command::StartDrill { to }) => {
            WorldEvent::Command(Command::StartDrill {
                to: site_id(s(to.as_str()[1..].parse().unwrap_or(0))),
            })
        }
        other => other,
    }
}

fn check(sc: Scenario, focus: &[Invariant]) -> Result<(), TestCaseError> {
    let out = Simulator::new(sc).run();
    if let Some(v) = &out.violation {
        let aimed = if focus.contains(&v.invariant) {
            ""
        } else {
            " (not the invariant this property aims at)"
        };
        return Err(TestCaseError::fail(format!(
            "{}{aimed}\n{}",
            v.invariant,
            out.report()
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn at_most_one_active_site_per_epoch(sc in scenario(false, true)) {
        check(sc, &[Invariant::TwoActivesInOneEpoch])?;
    }

    #[test]
    fn the_epoch_strictly_increases_with_every_switch(sc in scenario(true, true)) {
        check(sc, &[Invariant::EpochDecreased, Invariant::EpochNotIncreased])?;
    }

    #[test]
    fn no_switch_to_an_ineligible_site_unless_forced(sc in scenario(false, true)) {
        check(sc, &[Invariant::IneligibleTarget])?;
    }

    #[test]
    fn no_two_switches_within_the_dwell(sc in scenario(false, false)) {
        check(sc, &[Invariant::DwellViolated])?;
    }

    #[test]
    fn failback_only_as_the_policy_allows(sc in scenario(false, false)) {
        check(sc, &[Invariant::FailbackPolicy])?;
    }

    #[test]
    fn journal_replay_reaches_the_same_state_and_repeats_no_finished_step(sc in scenario(true, false)) {
        check(sc, &[Invariant::ReplayMismatch, Invariant::TwoActionsInFlight])?;
    }

    #[test]
    fn backends_are_never_asked_to_write_an_older_epoch(sc in scenario(true, true)) {
        check(sc, &[Invariant::StaleWrite])?;
    }

    #[test]
    fn the_journal_survives_serialisation(sc in scenario(true, true)) {
        let out = Simulator::new(sc).run();
        if let Some(j) = out.journal {
            let text = serde_json::to_string(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Journal = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, j);
        }
    }
}
