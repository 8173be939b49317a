//! Named scenarios in virtual time: the behaviours a DR engineer relies on, each shown on the
//! deterministic simulator with the in-memory backends.

use std::net::IpAddr;
use std::time::Duration;

use idns_core::test_util::sim::{
    Scenario, ServiceShape, SimOutcome, Simulator, WorldEvent::*, site_id,
};
use idns_core::{
    AllDownPolicy, Command, Event, FailbackMode, Health, Outcome, Phase, Reason, RecordSet,
    RunbookKind, StepName, StepStatus, SwitchReport,
};

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn run(sc: Scenario) -> SimOutcome {
    let out = Simulator::new(sc).run();
    assert!(out.violation.is_none(), "{}", out.report());
    out
}

fn switches(out: &SimOutcome) -> Vec<(Duration, RunbookKind, Option<String>, bool)> {
    out.decisions()
        .into_iter()
        .filter(|d| !matches!(d.1, RunbookKind::Bootstrap | RunbookKind::Drill))
        .map(|(t, k, to, f)| (t, k, to.map(|s| s.to_string()), f))
        .collect()
}

fn finished(out: &SimOutcome, kind: RunbookKind) -> Vec<SwitchReport> {
    out.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Finished(r) if r.kind == kind => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn addr(last: u8) -> RecordSet {
    RecordSet::Addresses(vec![IpAddr::from([127, 0, 0, last])])
}

fn name() -> idns_core::DnsName {
    match "svc.example.com".parse() {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn primary_dies_and_fails_over_after_the_fall_threshold() {
    let shape = ServiceShape {
        rise: 1,
        fall: 3,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let out = run(Scenario::new(1, shape.build(), s(120.0)).at(s(20.0), Kill(0)));
    let sw = switches(&out);
    assert_eq!(sw.len(), 1, "{sw:?}");
    let (t, kind, to, forced) = &sw[0];
    assert_eq!(
        (*kind, to.as_deref(), *forced),
        (RunbookKind::Failover, Some("s1"), false)
    );
    // Three failed probes at a 1 s interval: the third lands between 22 s and 23 s.
    assert!(*t > s(22.0) && *t <= s(23.0), "decided at {t:?}");
    let report = &finished(&out, RunbookKind::Failover)[0];
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(
        report.phase(Phase::Detect),
        s(2.0),
        "two intervals between the 1st and 3rd failure"
    );
    assert!(report.phase(Phase::SwitchDns) > Duration::ZERO);
    assert!(report.phase(Phase::Promote) > Duration::ZERO);
    assert!(report.rto >= report.phase(Phase::Detect) + report.phase(Phase::SwitchDns));
    assert_eq!(out.dns.records(&name()), addr(2));
    assert_eq!(out.dns.epoch(&name()).get(), 2);
}

#[test]
fn fewer_failures_than_the_threshold_do_not_fail_over() {
    let shape = ServiceShape {
        rise: 1,
        fall: 3,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    // Dead for 1.5 s: at most two failed probes.
    let sc = Scenario::new(2, shape.build(), s(120.0))
        .at(s(20.0), Kill(0))
        .at(s(21.5), Revive(0));
    let out = run(sc);
    assert!(switches(&out).is_empty(), "{:?}", switches(&out));
    assert_eq!(out.dns.records(&name()), addr(1));
}

#[test]
fn a_flapping_primary_never_switches_inside_the_dwell() {
    let shape = ServiceShape {
        rise: 1,
        fall: 1,
        min_dwell: s(60.0),
        failback: FailbackMode::Automatic,
        hold_down: Duration::ZERO,
        ..ServiceShape::default()
    };
    let mut sc = Scenario::new(3, shape.build(), s(400.0));
    for i in 0..40 {
        let t = 10.0 + 8.0 * f64::from(i);
        sc = sc.at(s(t), Kill(0)).at(s(t + 4.0), Revive(0));
    }
    let out = run(sc);
    let sw = switches(&out);
    assert!(
        sw.len() >= 2,
        "the flapping should cause a failover and a failback: {sw:?}"
    );
    for pair in sw.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= s(60.0),
            "switches too close: {pair:?}"
        );
    }
    let dwell_blocks = out
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Blocked { reasons } if reasons.iter().any(|r| matches!(r, Reason::Dwell { .. }))))
        .count();
    assert!(dwell_blocks > 0, "the dwell should have held back a switch");
}

#[test]
fn a_replica_over_the_rpo_budget_blocks_failover_until_forced() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        rpo_budget: Some(s(10.0)),
        ..ServiceShape::default()
    };
    let sc = Scenario::new(4, shape.build(), s(200.0))
        .at(s(5.0), Lag(1, Some(s(30.0))))
        .at(s(20.0), Kill(0))
        .at(
            s(60.0),
            Command(Command::Failover {
                to: Some(site_id(1)),
                force: false,
            }),
        )
        .at(
            s(80.0),
            Command(Command::Failover {
                to: Some(site_id(1)),
                force: true,
            }),
        );
    let out = run(sc);
    let sw = switches(&out);
    assert_eq!(sw.len(), 1, "{sw:?}");
    assert_eq!(sw[0].0, s(80.0), "only the forced command switched");
    assert!(sw[0].3, "the switch is marked forced");
    let blocked = out.events.iter().any(|(t, e)| {
        *t < s(60.0)
            && matches!(e, Event::Blocked { reasons } if reasons.iter().any(|r| matches!(r,
                Reason::LagOverBudget { lag, budget, .. } if *lag == s(30.0) && *budget == s(10.0))))
    });
    assert!(blocked, "a Blocked event must name the lag and the budget");
    let refused = out.events.iter().any(|(t, e)| {
        *t == s(60.0) && matches!(e, Event::Refused(r) if r.reason.contains("lag 30s > rpo 10s"))
    });
    assert!(refused, "the unforced command is refused with the reason");
    let report = &finished(&out, RunbookKind::Failover)[0];
    assert_eq!(
        report.rpo_at_decision,
        Some(s(30.0)),
        "the report keeps the lag at the decision"
    );
    assert_eq!(
        report.rpo,
        Some(Duration::ZERO),
        "the RPO is what the promotion measured: the in-memory copy it promoted had no lag"
    );
    assert_eq!(out.dns.records(&name()), addr(2));
}

fn all_down(policy: AllDownPolicy) -> SimOutcome {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        all_down: policy,
        ..ServiceShape::default()
    };
    run(Scenario::new(5, shape.build(), s(100.0))
        .at(s(5.0), Kill(1))
        .at(s(10.0), Kill(0))
        .at(s(60.0), Revive(1)))
}

#[test]
fn all_sites_down_keeps_the_last_site_by_default() {
    let out = all_down(AllDownPolicy::KeepLast);
    let before_revival: Vec<_> = switches(&out)
        .into_iter()
        .filter(|d| d.0 < s(60.0))
        .collect();
    assert!(before_revival.is_empty(), "{before_revival:?}");
    assert!(
        out.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Blocked { reasons }
        if reasons.contains(&Reason::AllDown { policy: AllDownPolicy::KeepLast })))
    );
    // Once s1 is back, it takes over.
    assert_eq!(out.dns.records(&name()), addr(2));
}

#[test]
fn all_sites_down_fails_open_or_closed_as_configured() {
    let open = all_down(AllDownPolicy::FailOpen);
    let sw = switches(&open);
    assert_eq!(sw[0].1, RunbookKind::AllDown);
    let published_all = open.dns.calls().iter().any(|c| matches!(c,
        idns_core::test_util::DnsCall::Apply(ch, true)
            if ch.records.same_as(&RecordSet::Addresses(vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])]))));
    assert!(published_all, "fail-open publishes every site");
    assert_eq!(
        sw[1].1,
        RunbookKind::Failover,
        "a revived site is failed over to: {sw:?}"
    );
    assert_eq!(open.dns.records(&name()), addr(2));

    let closed = all_down(AllDownPolicy::FailClosed);
    let withdrew = closed.dns.calls().iter().any(|c| matches!(c,
        idns_core::test_util::DnsCall::Apply(ch, true) if ch.records == RecordSet::Empty && ch.name == name()));
    assert!(withdrew, "fail-closed withdraws the records");
    assert_eq!(closed.dns.records(&name()), addr(2));
}

#[test]
fn failback_is_manual_by_default_and_verifies_the_markers() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let sc = Scenario::new(6, shape.build(), s(900.0))
        .at(s(10.0), Kill(0))
        .at(s(100.0), Revive(0))
        .at(s(800.0), Command(Command::Failback { force: false }));
    let out = run(sc);
    let sw = switches(&out);
    assert_eq!(sw.len(), 2, "{sw:?}");
    assert_eq!(sw[0].1, RunbookKind::Failover);
    assert_eq!(
        (sw[1].0, sw[1].1),
        (s(800.0), RunbookKind::Failback),
        "only the operator fails back"
    );
    assert!(out.events.iter().any(|(_, e)| matches!(e,
        Event::Recommendation { kind: RunbookKind::Failback, reasons, .. } if reasons.contains(&Reason::ManualFailback))));
    let back = &finished(&out, RunbookKind::Failback)[0];
    assert_eq!(back.outcome, Outcome::Completed);
    let verified = back
        .steps
        .iter()
        .any(|s| s.name == StepName::VerifyMarkers && s.status == StepStatus::Done);
    assert!(
        verified,
        "the markers written at the recovery site were verified at home: {:?}",
        back.steps
    );
    assert_eq!(out.dns.records(&name()), addr(1));
}

#[test]
fn automatic_failback_waits_for_the_hold_down() {
    let shape = ServiceShape {
        rise: 2,
        fall: 2,
        min_dwell: Duration::ZERO,
        failback: FailbackMode::Automatic,
        hold_down: s(60.0),
        ..ServiceShape::default()
    };
    let sc = Scenario::new(7, shape.build(), s(400.0))
        .at(s(10.0), Kill(0))
        .at(s(100.0), Revive(0));
    let out = run(sc);
    let up_again = out
        .events
        .iter()
        .find(|(t, e)| *t > s(100.0) && matches!(e, Event::SiteChanged { site, to: Health::Up, .. } if site.as_str() == "s0"))
        .map(|(t, _)| *t)
        .expect("home comes back up");
    let sw = switches(&out);
    assert_eq!(sw.len(), 2, "{sw:?}");
    assert_eq!(sw[1].1, RunbookKind::Failback);
    assert_eq!(
        sw[1].0 - up_again,
        s(60.0),
        "failback exactly when the hold-down ends"
    );
    assert_eq!(out.dns.records(&name()), addr(1));
}

#[test]
fn a_controller_killed_mid_runbook_resumes_from_its_journal() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        resources: 2,
        ..ServiceShape::default()
    };
    let mut sc = Scenario::new(8, shape.build(), s(200.0))
        .at(s(10.0), Kill(0))
        // The failover starts near 12 s; each step takes 2 s; die in the middle of it.
        .at(s(17.0), Crash(s(5.0)));
    sc.step_latency = (s(2.0), s(2.0));
    let out = run(sc);
    assert!(
        out.trace
            .lines()
            .any(|l| l.contains("controller starts from journal (epoch 2"))
    );
    let sw = switches(&out);
    assert_eq!(
        sw.len(),
        1,
        "exactly one decision despite the crash: {sw:?}"
    );
    let report = &finished(&out, RunbookKind::Failover)[0];
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.epoch.get(), 2);
    let promotes = out
        .replication
        .calls()
        .iter()
        .filter(|c| matches!(c, idns_core::test_util::ReplCall::Promote(..)))
        .count();
    assert!(
        (2..=3).contains(&promotes),
        "each resource promoted once (one may repeat if in flight): {promotes}"
    );
    assert_eq!(out.dns.records(&name()), addr(2));
}

#[test]
fn one_observer_cut_off_from_a_healthy_primary_does_not_fail_it_over() {
    let shape = ServiceShape {
        observers: 3,
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let sc = Scenario::new(9, shape.build(), s(300.0)).at(s(10.0), Partition(0, 0));
    let out = run(sc);
    assert!(switches(&out).is_empty(), "{:?}", switches(&out));
    let probe_down_at_o0 = out.events.iter().any(|(_, e)| {
        matches!(e,
        Event::ProbeChanged { observer, health: Health::Down, .. } if observer.as_str() == "o0")
    });
    assert!(
        probe_down_at_o0,
        "the partitioned observer did see the primary down"
    );
    // With two observers cut off, the quorum says down and the failover happens.
    let shape = ServiceShape {
        observers: 3,
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let sc = Scenario::new(9, shape.build(), s(300.0))
        .at(s(10.0), Partition(0, 0))
        .at(s(10.0), Partition(1, 0));
    assert_eq!(switches(&run(sc)).len(), 1);
}

#[test]
fn a_dns_backend_failing_mid_runbook_is_retried_until_it_completes() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let sc = Scenario::new(10, shape.build(), s(200.0))
        .at(s(9.0), DnsFailApplies(4))
        .at(s(10.0), Kill(0));
    let out = run(sc);
    let retries = out
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::StepRetry {
                    name: StepName::SwitchDns,
                    ..
                }
            )
        })
        .count();
    assert_eq!(retries, 4);
    let report = &finished(&out, RunbookKind::Failover)[0];
    assert_eq!(report.outcome, Outcome::Completed);
    let dns_step = report
        .steps
        .iter()
        .find(|s| s.name == StepName::SwitchDns)
        .expect("dns step");
    assert_eq!(dns_step.attempts, 5);
    assert_eq!(out.dns.records(&name()), addr(2));
}

#[test]
fn a_hung_backend_call_is_caught_by_the_watchdog() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let sc = Scenario::new(11, shape.build(), s(300.0))
        .at(s(9.0), Hang(1))
        .at(s(10.0), Kill(0));
    let out = run(sc);
    let report = &finished(&out, RunbookKind::Failover)[0];
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(
        report.steps[0].attempts, 2,
        "the hung first attempt was retried: {:?}",
        report.steps[0]
    );
}

#[test]
fn a_drill_rehearses_on_the_drill_name_and_cleans_up() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let sc = Scenario::new(12, shape.build(), s(100.0))
        .at(s(20.0), Command(Command::StartDrill { to: site_id(1) }));
    let out = run(sc);
    let drill = &finished(&out, RunbookKind::Drill)[0];
    assert_eq!(drill.outcome, Outcome::Completed);
    assert!(
        drill
            .steps
            .iter()
            .any(|s| s.name == StepName::Promote && s.status == StepStatus::Done)
    );
    assert_eq!(drill.epoch.get(), 1, "a drill does not change the epoch");
    let drill_name: idns_core::DnsName = "drill.svc.example.com".parse().expect("valid");
    let rehearsed = out.dns.calls().iter().any(|c| matches!(c,
        idns_core::test_util::DnsCall::Apply(ch, true) if ch.name == drill_name && ch.records == addr(2)));
    assert!(rehearsed, "the drill name pointed at the recovery site");
    assert_eq!(out.dns.records(&drill_name), RecordSet::Empty, "cleaned up");
    assert_eq!(out.dns.records(&name()), addr(1), "production untouched");
    let r0 = "r0".parse().expect("valid");
    assert!(
        !out.replication.has_drill_copy(&r0, &site_id(1)),
        "the isolated copy is gone"
    );
    assert_eq!(
        out.replication.primaries(&r0),
        vec![site_id(0)],
        "production roles untouched"
    );
}

#[test]
fn a_production_failure_during_a_drill_wins_and_the_drill_is_cleaned_up_after() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let mut sc = Scenario::new(13, shape.build(), s(200.0))
        .at(s(20.0), Command(Command::StartDrill { to: site_id(1) }))
        .at(s(20.5), Kill(0));
    sc.step_latency = (s(1.0), s(1.0));
    let out = run(sc);
    let drill = &finished(&out, RunbookKind::Drill)[0];
    assert_eq!(drill.outcome, Outcome::Aborted);
    let fo = &finished(&out, RunbookKind::Failover)[0];
    assert_eq!(fo.outcome, Outcome::Completed);
    assert!(
        fo.steps.iter().any(|s| s.name == StepName::Cleanup),
        "the drill's cleanup ran after: {:?}",
        fo.steps
    );
    let drill_name: idns_core::DnsName = "drill.svc.example.com".parse().expect("valid");
    assert_eq!(out.dns.records(&drill_name), RecordSet::Empty);
    assert_eq!(out.dns.records(&name()), addr(2));
}

#[test]
fn a_refused_command_leaves_a_running_drill_alone() {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        ..ServiceShape::default()
    };
    let mut sc = Scenario::new(14, shape.build(), s(100.0))
        .at(s(20.0), Command(Command::StartDrill { to: site_id(1) }))
        // Refused: the home site is already active.
        .at(s(21.5), Command(Command::Failback { force: false }));
    sc.step_latency = (s(1.0), s(1.0));
    let out = run(sc);
    assert!(
        out.events
            .iter()
            .any(|(t, e)| *t == s(21.5) && matches!(e, Event::Refused(_)))
    );
    let drill = &finished(&out, RunbookKind::Drill)[0];
    assert_eq!(drill.outcome, Outcome::Completed, "{:?}", drill.steps);
    assert!(
        drill.steps.iter().all(|s| s.status == StepStatus::Done),
        "{:?}",
        drill.steps
    );
}

/// A failover to `s1`, then the home site `s0` back but 60 s behind with an RPO budget of 5 s,
/// and a failback at 800 s (`force` as given).
fn failback_behind_the_budget(force: bool) -> SimOutcome {
    let shape = ServiceShape {
        rise: 1,
        fall: 2,
        min_dwell: Duration::ZERO,
        rpo_budget: Some(s(5.0)),
        ..ServiceShape::default()
    };
    let sc = Scenario::new(6, shape.build(), s(900.0))
        .at(s(10.0), Kill(0))
        .at(s(100.0), Revive(0))
        .at(s(300.0), Lag(0, Some(s(60.0))))
        .at(s(800.0), Command(Command::Failback { force }));
    run(sc)
}

#[test]
fn a_failback_to_a_site_that_has_not_caught_up_holds_at_the_catch_up() {
    let out = failback_behind_the_budget(false);
    let sw = switches(&out);
    assert_eq!(sw.len(), 2, "{sw:?}");
    assert_eq!(sw[1].1, RunbookKind::Failback, "the failback is decided");
    let held: Vec<&String> = out
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Held {
                name: StepName::CatchUp,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 1, "{}", out.report());
    assert!(
        held[0].contains("site s0") && held[0].contains("lag 1m > RPO budget 5s"),
        "the reason names the site and its lag against the budget: {}",
        held[0]
    );
    assert!(
        finished(&out, RunbookKind::Failback).is_empty(),
        "the failback never completes"
    );
    assert_eq!(out.dns.records(&name()), addr(2), "still served by s1");
}

#[test]
fn a_forced_failback_goes_past_a_target_that_has_not_caught_up_and_says_so() {
    let out = failback_behind_the_budget(true);
    let back = &finished(&out, RunbookKind::Failback)[0];
    assert_eq!(back.outcome, Outcome::Completed);
    assert!(back.forced);
    let catch_up: Vec<&str> = back
        .steps
        .iter()
        .filter(|s| s.name == StepName::CatchUp)
        .map(|s| s.detail.as_str())
        .collect();
    assert_eq!(catch_up.len(), 1, "{:?}", back.steps);
    assert!(
        catch_up[0].starts_with("forced past the RPO guard:") && catch_up[0].contains("site s0"),
        "{}",
        catch_up[0]
    );
    assert_eq!(out.dns.records(&name()), addr(1));
}
