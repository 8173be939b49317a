//! Unit tests of the election as a property-test author uses it: the view's times and
//! liveness, the decision's trigger, commands that are refused, and forking an election.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::event::Outcome;
use crate::probe::Health;
use crate::probe::{ProbeOutcome, ProbeReport};
use crate::runbook::{Step, StepStatus};

const S: fn(u64) -> Duration = Duration::from_secs;

/// Two sites and two observers; `top` goes before the tables, `extra` into `[policy]`.
fn config(top: &str, extra: &str) -> ServiceConfig {
    ServiceConfig::from_toml(&format!(
        r#"
        name = "www.example.com"
        zone = "example.com"
        {top}
        [observers]
        ids = ["o1", "o2"]
        quorum = 1
        stale_after = "10s"
        [policy]
        min_dwell = "60s"
        {extra}
        [[sites]]
        id = "a"
        priority = 1
        addresses = ["192.0.2.1"]
        probes = [{{ id = "http", interval = "1s", rise = 1, fall = 1 }}]
        [[sites]]
        id = "b"
        priority = 2
        addresses = ["192.0.2.2"]
        probes = [{{ id = "http", interval = "1s", rise = 1, fall = 1 }}]
        "#
    ))
    .unwrap()
}

/// An election in virtual time whose backend always succeeds at once.
struct Rig {
    e: Election,
    t0: Instant,
    wall0: SystemTime,
    events: Vec<Event>,
}

impl Rig {
    fn new(extra: &str) -> Rig {
        Rig::with("", extra)
    }

    fn with(top: &str, extra: &str) -> Rig {
        // Only an origin: every time in these tests is an offset from it.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + S(1_700_000_000);
        let e = Election::new(config(top, extra), None, t0, wall0).unwrap();
        let mut rig = Rig {
            e,
            t0,
            wall0,
            events: Vec::new(),
        };
        rig.drive(0);
        rig
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + S(secs)
    }

    fn wall(&self, secs: u64) -> SystemTime {
        self.wall0 + S(secs)
    }

    fn drive(&mut self, secs: u64) {
        let now = self.at(secs);
        while let Some(a) = self.e.poll_action() {
            let done = StepDone {
                id: a.id,
                result: Ok(StepOutput::Done),
            };
            self.e.handle(Input::StepDone(done), now);
        }
        self.events
            .extend(std::iter::from_fn(|| self.e.poll_event()));
    }

    fn report(&mut self, site: &str, observer: &str, up: bool, secs: u64) {
        self.e.handle(
            report_of(site, observer, up, self.wall(secs)),
            self.at(secs),
        );
        self.drive(secs);
    }

    /// An operator's forced failover, at `secs`; its actions are left to the test.
    fn switch(&mut self, secs: u64) {
        let failover = Command::Failover {
            to: None,
            force: true,
        };
        self.e.command(failover, self.at(secs)).unwrap();
    }

    /// Both sites up at both observers, at `secs`.
    fn all_up(&mut self, secs: u64) {
        for o in ["o1", "o2"] {
            self.report("a", o, true, secs);
            self.report("b", o, true, secs);
        }
    }

    fn decisions(&self) -> Vec<(RunbookKind, Trigger)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Decision { kind, trigger, .. } => Some((*kind, *trigger)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn the_view_tells_the_last_switch_and_the_dwell_left() {
    let mut r = Rig::new("");
    let v = r.e.view();
    assert_eq!(
        (v.last_switch, v.dwell_until),
        (None, None),
        "a bootstrap is no switch"
    );
    assert_eq!(v.dwell_left(r.wall(0)), Duration::ZERO);

    r.report("b", "o1", true, 1);
    r.report("a", "o1", false, 2);
    let v = r.e.view();
    assert_eq!(v.active.as_str(), "b");
    assert_eq!(v.last_switch, Some(r.wall(2)));
    assert_eq!(v.dwell_until, Some(r.wall(62)));
    assert_eq!(v.dwell_left(r.wall(12)), S(50));
    assert_eq!(v.dwell_left(r.wall(70)), Duration::ZERO);
}

#[test]
fn the_view_tells_how_long_each_site_has_been_up() {
    let mut r = Rig::new("");
    assert_eq!(r.e.view().home().map(|s| s.id.as_str()), Some("a"));
    assert_eq!(r.e.view().sites[0].up_since, None);
    r.report("a", "o1", true, 3);
    r.report("a", "o1", true, 5);
    let home = r.e.view().home().unwrap();
    assert_eq!(home.health, Health::Up);
    assert_eq!(home.up_since, Some(r.wall(3)), "up since the first success");
    assert_eq!(home.up_for(r.wall(10)), Some(S(7)));
    r.report("a", "o1", false, 6);
    let home = r.e.view().home().unwrap();
    assert_eq!((home.up_since, home.up_for(r.wall(10))), (None, None));
}

#[test]
fn the_view_tells_each_observers_liveness_and_last_report() {
    let mut r = Rig::new("");
    let v = r.e.view();
    assert_eq!(v.observers.len(), 2);
    assert!(
        v.observers
            .iter()
            .all(|o| !o.live && o.last_report.is_none())
    );
    assert_eq!(v.sites[0].probes.len(), 2, "one per probe and observer");

    r.report("a", "o1", true, 1);
    r.report("b", "o1", true, 4);
    let v = r.e.view();
    assert!(v.observers[0].live);
    assert_eq!(v.observers[0].last_report, Some(r.wall(4)));
    assert!(!v.observers[1].live);
    let a_o1 = &v.sites[0].probes[0];
    assert_eq!(
        (a_o1.probe.as_str(), a_o1.observer.as_str()),
        ("http", "o1")
    );
    assert_eq!(
        (a_o1.health, a_o1.last_report, a_o1.live),
        (Health::Up, Some(r.wall(1)), true)
    );
    let a_o2 = &v.sites[0].probes[1];
    assert_eq!(
        (a_o2.health, a_o2.last_report, a_o2.live),
        (Health::Unknown, None, false)
    );

    // Silent for `stale_after`: the observer no longer counts, and the view says so.
    let stale = r.e.poll_timeout().unwrap();
    assert_eq!(stale, r.at(14));
    r.e.handle_timeout(stale);
    let v = r.e.view();
    assert!(!v.observers[0].live);
    assert_eq!(v.observers[0].last_report, Some(r.wall(4)));
    assert!(!v.sites[0].probes[0].live);
    assert_eq!(v.sites[0].probes[0].last_report, Some(r.wall(1)));
}

#[test]
fn a_decision_says_whether_the_election_or_a_command_caused_it() {
    let mut r = Rig::new("");
    r.report("a", "o1", true, 1);
    r.report("b", "o1", true, 1);
    r.switch(2);
    r.drive(2);
    r.report("b", "o1", false, 70);
    assert_eq!(
        r.decisions(),
        [
            (RunbookKind::Bootstrap, Trigger::Election),
            (RunbookKind::Failover, Trigger::Command),
            (RunbookKind::Failover, Trigger::Election),
        ]
    );
    assert_eq!(r.e.view().active.as_str(), "a");
}

#[test]
fn a_refused_command_changes_nothing_and_says_why() {
    let mut r = Rig::new("");
    let version = r.e.journal_version();
    let journal = r.e.journal().clone();
    let view = r.e.view().clone();
    let refused =
        r.e.command(Command::Failback { force: false }, r.at(1))
            .unwrap_err();
    assert_eq!(refused.command, "failback");
    assert!(refused.reason.contains("already active"), "{refused}");
    assert_eq!(r.e.journal_version(), version);
    assert_eq!(*r.e.journal(), journal);
    assert_eq!(*r.e.view(), view);
    assert_eq!(r.e.poll_event(), Some(Event::Refused(refused)));
    assert_eq!(r.e.poll_action(), None);
}

#[test]
fn unknown_reports_and_stale_results_are_ignored() {
    let mut r = Rig::new("");
    let view = r.e.view().clone();
    let version = r.e.journal_version();
    r.report("nowhere", "o1", false, 1);
    r.report("a", "stranger", false, 1);
    r.e.handle(
        Input::StepDone(StepDone {
            id: StepId {
                runbook: 99,
                index: 0,
                attempt: 1,
            },
            result: Ok(StepOutput::Done),
        }),
        r.at(1),
    );
    assert_eq!(*r.e.view(), view);
    assert_eq!(r.e.journal_version(), version);
    assert_eq!(r.e.poll_event(), None);
}

#[test]
fn a_cloned_election_goes_its_own_way() {
    let mut r = Rig::new("");
    r.report("a", "o1", true, 1);
    r.report("b", "o1", true, 1);
    let mut fork = r.e.clone();
    r.report("a", "o1", false, 2);
    assert_eq!(r.e.view().active.as_str(), "b");
    assert_eq!(fork.view().active.as_str(), "a", "the fork saw none of it");
    fork.command(Command::Freeze, r.at(2)).unwrap();
    assert!(fork.journal().frozen());
    assert!(!r.e.journal().frozen());
    let finished = r
        .events
        .iter()
        .filter(|e| matches!(e, Event::Finished(s) if s.outcome == Outcome::Completed))
        .count();
    assert_eq!(finished, 2, "bootstrap and failover");
}

#[test]
fn the_journal_changes_with_every_step_attempt_and_only_then() {
    let mut r = Rig::new("");
    r.report("a", "o1", true, 1);
    r.report("b", "o1", true, 1);
    let quiet = r.e.journal_version();
    // Reports that change no decision leave the journal alone.
    r.report("a", "o1", true, 2);
    r.report("b", "o2", true, 2);
    assert_eq!(r.e.journal_version(), quiet);
    // A decision changes it before its first action goes out.
    r.switch(3);
    let decided = r.e.journal_version();
    assert_ne!(decided, quiet);
    let action = r.e.poll_action().unwrap();
    assert_eq!(action.id.attempt, 1);
    assert_eq!(r.e.journal().runbook().map(|rb| rb.attempt), Some(1));
}

#[test]
fn step_ids_order_by_runbook_then_step_then_attempt() {
    let id = |runbook, index, attempt| StepId {
        runbook,
        index,
        attempt,
    };
    let mut ids = vec![id(2, 0, 1), id(1, 1, 1), id(1, 0, 2), id(1, 0, 1)];
    ids.sort();
    assert_eq!(ids, [id(1, 0, 1), id(1, 0, 2), id(1, 1, 1), id(2, 0, 1)]);
}

/// A report of the `http` probe.
fn report_of(site: &str, observer: &str, up: bool, at: SystemTime) -> Input {
    let outcome = if up {
        ProbeOutcome::up(Duration::ZERO)
    } else {
        ProbeOutcome::down(Duration::ZERO, "refused")
    };
    Input::Probe(ProbeReport {
        site: site.parse().unwrap(),
        probe: "http".parse().unwrap(),
        observer: observer.parse().unwrap(),
        outcome,
        at,
    })
}

/// Drives an election whose backend fails every fence (permanently, so no retry) and
/// carries out every other step; returns the steps it was given.
fn fence_fails(r: &mut Rig, secs: u64) -> Vec<Step> {
    let now = r.at(secs);
    let mut steps = Vec::new();
    while let Some(a) = r.e.poll_action() {
        let result = match a.step {
            Step::Fence { .. } => Err(crate::error::BackendError::Refused(
                "pg_ctl stop: server did not shut down".into(),
            )),
            _ => Ok(StepOutput::Done),
        };
        steps.push(a.step);
        r.e.handle(Input::StepDone(StepDone { id: a.id, result }), now);
    }
    r.events.extend(std::iter::from_fn(|| r.e.poll_event()));
    steps
}

#[test]
fn a_failed_fence_of_a_site_an_observer_still_reaches_holds_instead_of_being_skipped() {
    let mut r = Rig::with("resources = [\"db\"]", "");
    r.all_up(1);
    // A planned switch: a is up, so its fence failing means it may still take writes.
    r.switch(2);
    let steps = fence_fails(&mut r, 2);
    assert!(
        matches!(steps.as_slice(), [Step::Fence { .. }]),
        "{steps:?}"
    );
    let rb =
        r.e.journal()
            .runbook()
            .expect("the runbook is held, not over");
    let held = rb.held.as_deref().unwrap_or_default();
    assert!(
        held.contains("not skipped: site a is still reached by an observer"),
        "{held}"
    );
    assert!(
        !r.events
            .iter()
            .any(|e| matches!(e, Event::StepFinished { record, .. }
            if record.status == StepStatus::Skipped)),
        "no step skipped: {:?}",
        r.events
    );
    assert!(
        r.events.iter().any(|e| matches!(e, Event::Held { .. })),
        "an operator is asked: {:?}",
        r.events
    );
}

#[test]
fn a_failed_fence_of_a_site_no_observer_reaches_is_skipped_and_says_so() {
    let mut r = Rig::with("resources = [\"db\"]", "");
    r.all_up(1);
    // Both observers call a down: the failover fences it, fails, and goes on.
    r.e.handle(report_of("a", "o1", false, r.wall(2)), r.at(2));
    r.e.handle(report_of("a", "o2", false, r.wall(2)), r.at(2));
    let steps = fence_fails(&mut r, 2);
    assert!(
        steps.len() > 1,
        "the runbook went on past the fence: {steps:?}"
    );
    assert!(r.e.journal().runbook().is_none(), "the failover finished");
    assert_eq!(r.e.view().active.as_str(), "b");
    let skipped = r.events.iter().find_map(|e| match e {
        Event::StepFinished { record, .. } if record.status == StepStatus::Skipped => {
            Some(record.detail.clone())
        }
        _ => None,
    });
    let skipped = skipped.expect("the fence was skipped");
    assert!(
        skipped.contains("skipped: site a is unreachable by every observer"),
        "{skipped}"
    );
}

#[test]
fn a_late_result_of_an_abandoned_attempt_is_not_taken_for_the_operators_retry() {
    let mut r = Rig::with("resources = [\"db\"]", "");
    r.all_up(1);
    r.switch(2);
    // The fence never answers: the watchdog gives up on each attempt, and the runbook holds.
    let mut abandoned = Vec::new();
    while r.e.journal().runbook().is_some_and(|rb| rb.held.is_none()) {
        abandoned.extend(std::iter::from_fn(|| r.e.poll_action()).map(|a| a.id));
        let t = r.e.poll_timeout().expect("a watchdog or retry timer");
        r.e.handle_timeout(t);
        assert!(abandoned.len() < 10, "{abandoned:?}");
    }
    assert_eq!(abandoned.len(), 3, "the first attempt and two retries");
    let now = r.e.poll_timeout().unwrap_or(r.at(600));
    r.e.command(Command::Resume(Resume::Retry), now).unwrap();
    let retry = r.e.poll_action().expect("the operator's retry").id;
    assert!(
        !abandoned.contains(&retry),
        "{retry} reuses an abandoned id"
    );
    // The first attempt's result comes in late: it is not the retry's.
    let late = StepDone {
        id: abandoned[0],
        result: Ok(StepOutput::Done),
    };
    r.e.handle(Input::StepDone(late), now);
    assert_eq!(r.e.poll_action(), None, "nothing went on");
    let rb = r.e.journal().runbook().expect("the runbook still runs");
    assert!(rb.done.is_empty(), "{:?}", rb.done);
    // The retry's own result is.
    let done = StepDone {
        id: retry,
        result: Ok(StepOutput::Done),
    };
    r.e.handle(Input::StepDone(done), now);
    let rb = r.e.journal().runbook().expect("the runbook goes on");
    assert_eq!(rb.done.len(), 1);
    assert_eq!(rb.done[0].attempts, 4, "every attempt is counted");
}

#[test]
fn a_silent_observer_is_expired_before_the_next_input_however_late_the_timers_run() {
    let mut r = Rig::new("");
    // o1 watches b only, o2 watches a only.
    r.report("b", "o1", true, 1);
    r.report("a", "o2", true, 1);
    // o1 falls silent: stale from 11 s on, but the driver has not run the timers yet when
    // o2 calls a down at 20 s.
    assert_eq!(r.e.poll_timeout(), Some(r.at(11)));
    r.report("a", "o2", false, 20);
    let v = r.e.view();
    assert!(!v.observers[0].live, "o1 no longer counts");
    assert_ne!(
        v.sites[1].health,
        Health::Up,
        "b was up only by o1's stale word"
    );
    assert_eq!(
        v.active.as_str(),
        "a",
        "no failover to a site no live observer sees"
    );
    assert!(
        !r.decisions()
            .iter()
            .any(|(kind, _)| *kind == RunbookKind::Failover),
        "{:?}",
        r.decisions()
    );
}

#[test]
fn with_manual_failover_the_all_down_policy_is_reported_not_applied() {
    let mut r = Rig::new("failover = \"manual\"\nall_down = \"fail_closed\"");
    r.all_up(1);
    for site in ["a", "b"] {
        r.report(site, "o1", false, 2);
        r.report(site, "o2", false, 2);
    }
    assert!(r.e.view().sites.iter().all(|s| s.health == Health::Down));
    assert_eq!(r.e.journal().serving(), crate::journal::Serving::Active);
    assert_eq!(
        r.e.view().active.as_str(),
        "a",
        "the name is left as it was"
    );
    let blocked = r.events.iter().rev().find_map(|e| match e {
        Event::Blocked { reasons } => Some(crate::reason::explain(reasons)),
        _ => None,
    });
    let blocked = blocked.expect("the election says why it does nothing");
    assert!(blocked.contains("failover is manual"), "{blocked}");
    assert_eq!(
        r.decisions().len(),
        1,
        "only the bootstrap: {:?}",
        r.decisions()
    );
}

#[test]
fn a_plan_of_an_allowed_failover_lists_its_steps_and_guards_and_changes_nothing() {
    let mut r = Rig::with("resources = [\"db\"]", "rpo_budget = \"5s\"");
    r.all_up(1);
    let lag = Input::Replication(crate::replication::ReplicationReport {
        resource: "db".parse().unwrap(),
        site: "b".parse().unwrap(),
        role: crate::replication::Role::Replica,
        lag: Some(S(2)),
        at: r.wall(1),
    });
    r.e.handle(lag, r.at(1));
    r.drive(1);
    let version = r.e.journal_version();
    let failover = Command::Failover {
        to: Some("b".parse().unwrap()),
        force: false,
    };
    // The dwell since the bootstrap's switch (none) has passed; b is up and within budget.
    let plan = r.e.plan(failover.clone(), r.at(5));
    assert!(plan.allowed, "{plan:#?}");
    assert_eq!(plan.command, "failover to b");
    assert_eq!(plan.kind, Some(RunbookKind::Failover));
    assert_eq!(
        (
            plan.from.as_ref().map(|s| s.as_str()),
            plan.to.as_ref().map(|s| s.as_str())
        ),
        (Some("a"), Some("b"))
    );
    assert_eq!(plan.epoch, Some(crate::epoch::Epoch::new(2)));
    let names: Vec<_> = plan.steps.iter().map(|s| s.name).collect();
    assert_eq!(names[0], crate::runbook::StepName::Fence, "{names:?}");
    assert!(names.contains(&crate::runbook::StepName::Promote));
    assert!(
        plan.steps[0].description.contains("fence db at a"),
        "{plan:#?}"
    );
    let guard = |n: &str| {
        plan.guards
            .iter()
            .find(|g| g.name == n)
            .unwrap_or_else(|| panic!("no guard {n}: {:#?}", plan.guards))
    };
    assert!(
        guard("eligibility of b").value.contains("lag 2s"),
        "{plan:#?}"
    );
    assert!(
        guard("fence of a")
            .value
            .contains("reached by a live observer")
    );
    assert!(guard("minimum dwell").passes);
    assert!(plan.reasons.contains(&Reason::Operator), "{plan:#?}");
    // Nothing happened to the election itself.
    assert_eq!(r.e.journal_version(), version);
    assert!(r.e.journal().runbook().is_none());
    assert_eq!(r.e.poll_action(), None);
    // The same command then carries out what the plan said.
    r.e.command(failover, r.at(5)).unwrap();
    let rb = r.e.journal().runbook().unwrap();
    assert_eq!(rb.steps.len(), plan.steps.len());
    assert_eq!(rb.epoch, crate::epoch::Epoch::new(2));
}

#[test]
fn a_plan_of_a_refused_failover_says_why_and_shows_the_guard_that_refuses() {
    let mut r = Rig::with("resources = [\"db\"]", "");
    r.all_up(1);
    r.report("b", "o1", false, 2);
    r.report("b", "o2", false, 2);
    let plan = r.e.plan(
        Command::Failover {
            to: Some("b".parse().unwrap()),
            force: false,
        },
        r.at(3),
    );
    assert!(!plan.allowed, "{plan:#?}");
    let why = plan.refused.as_deref().unwrap();
    assert!(why.contains("site b not eligible: down"), "{why}");
    let g = plan
        .guards
        .iter()
        .find(|g| g.name == "eligibility of b")
        .unwrap();
    assert!(!g.passes && g.value.contains("down"), "{g:?}");
    // The configured runbook is still shown, with its limits and failure policies.
    assert_eq!(plan.steps[0].name, crate::runbook::StepName::Fence);
    assert!(plan.steps.iter().all(|s| s.timeout > Duration::ZERO));
    // Forced, the same failover is allowed and says it goes past the guard.
    let forced = r.e.plan(
        Command::Failover {
            to: Some("b".parse().unwrap()),
            force: true,
        },
        r.at(3),
    );
    assert!(forced.allowed && forced.forced, "{forced:#?}");
    let g = forced
        .guards
        .iter()
        .find(|g| g.name == "eligibility of b")
        .unwrap();
    assert!(g.passes && g.value.contains("forced past"), "{g:?}");
    // A dwell not yet passed after a switch refuses a failback, with the time left.
    r.switch(4);
    r.drive(4);
    r.all_up(5);
    let back = r.e.plan(Command::Failback { force: false }, r.at(10));
    assert!(!back.allowed, "{back:#?}");
    assert!(
        back.refused.as_deref().unwrap().contains("dwell"),
        "{back:#?}"
    );
    let g = back
        .guards
        .iter()
        .find(|g| g.name == "minimum dwell")
        .unwrap();
    assert!(!g.passes && g.value.contains("54s left of 1m"), "{g:?}");
}
