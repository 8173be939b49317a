//! The invariant checker: an [`Election`] wrapped so that every input is checked against the
//! election's safety rules, whoever chooses the inputs (a property test, a fuzzer, the
//! simulator).

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::config::ServiceConfig;
use crate::election::{Command, Election, Feed, Input, StepDone};
use crate::epoch::Epoch;
use crate::error::Refused;
use crate::event::Event;
use crate::id::SiteId;
use crate::journal::Journal;
use crate::runbook::{Action, StepId};
use crate::test_util::Trace;
use crate::test_util::trace::Entry;

mod rules;
mod violation;

use rules::Seen;
pub use violation::{Invariant, Violation};

/// A DNS write of the service's name: its epoch and the site it publishes.
type Write = (Epoch, Option<SiteId>);

/// Lines of trace a [`Violation`] carries.
const TRACE_TAIL: usize = 40;

/// An [`Election`] whose every step is checked against its invariants.
///
/// Feed it what a driver would feed the election — probe and replication reports, operator
/// commands, step results of your choice, timeouts, crashes — and it checks after each input:
///
/// - the epoch never decreases, and every decision raises it ([`Invariant::EpochDecreased`],
///   [`Invariant::EpochNotIncreased`]);
/// - one epoch belongs to one site, in decisions and in DNS writes
///   ([`Invariant::TwoActivesInOneEpoch`]);
/// - an unforced switch goes only to an up site within the RPO budget, never inside the
///   minimum dwell, and fails back only as the policy allows ([`Invariant::IneligibleTarget`],
///   [`Invariant::DwellViolated`], [`Invariant::FailbackPolicy`]);
/// - at most one action is outstanding: a new one comes only after the last was answered
///   or its timeout passed ([`Invariant::TwoActionsInFlight`]);
/// - a restart from the journal persisted before each action reaches the same state and never
///   repeats a finished step ([`Invariant::ReplayMismatch`]).
///
/// The first violation is returned by the call that found it, and by every call after it,
/// with the tail of a readable trace. Actions are collected for you to carry out
/// ([`poll_action`](Self::poll_action)); answer each with [`Input::StepDone`] (any result you
/// like) or declare it lost with [`abandon`](Self::abandon).
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use idns_core::test_util::Checker;
/// use idns_core::*;
///
/// let probe = ProbeSpec::new("web").interval(Duration::from_secs(1)).rise(1).fall(2);
/// let cfg = ServiceSpec::new("app.example.com", "example.com")
///     .site(SiteSpec::new("a", 1).address("192.0.2.1".parse()?).probe(probe.clone()))
///     .site(SiteSpec::new("b", 2).address("192.0.2.2".parse()?).probe(probe))
///     .policy(PolicySpec::default().min_dwell(Duration::ZERO))
///     .build()?;
/// let (t0, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
/// let mut checker = Checker::new(cfg, t0, wall)?;
/// for second in 0..4 {
///     let now = t0 + Duration::from_secs(second);
///     while let Some(action) = checker.poll_action() {
///         let done = StepDone { id: action.id, result: Ok(StepOutput::Done) };
///         checker.handle(Input::StepDone(done), now)?;
///     }
///     for (site, up) in [("a", false), ("b", true)] {
///         let outcome = if up {
///             ProbeOutcome::up(Duration::ZERO)
///         } else {
///             ProbeOutcome::down(Duration::ZERO, "refused")
///         };
///         let report = ProbeReport {
///             site: site.parse()?,
///             probe: "web".parse()?,
///             observer: "local".parse()?,
///             outcome,
///             at: wall,
///         };
///         checker.handle(Input::Probe(report), now)?;
///     }
/// }
/// assert_eq!(checker.election().map(|e| e.view().active.as_str()), Some("b"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Checker {
    config: ServiceConfig,
    origin: Instant,
    /// The time of the latest call.
    clock: Instant,
    /// `None` while the controller is down.
    election: Option<Election>,
    /// The journal as the driver persisted it: before each action, and after each input.
    persisted: Option<Journal>,
    saved_version: Option<u64>,
    /// The action handed out and not yet answered: its id, the DNS write it makes, if any,
    /// and when its timeout ends.
    outstanding: Option<(StepId, Option<Write>, Option<Instant>)>,
    actions: VecDeque<Action>,
    events: Vec<(Duration, Event)>,
    trace: Trace,
    trace_reports: bool,
    seen: Seen,
    violation: Option<Violation>,
    inputs: u64,
}
impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("service", self.config.name())
            .field("now", &self.elapsed())
            .field("running", &self.election.is_some())
            .field("violation", &self.violation.as_ref().map(|v| v.invariant))
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// Starts a checked election on `config`, without a journal (a bootstrap publishes the
    /// home site); `now` and `wall` are the same moment on the monotonic and the wall clock,
    /// and `now` is the origin of the times in the trace.
    pub fn new(config: ServiceConfig, now: Instant, wall: SystemTime) -> Result<Self, Violation> {
        let mut checker = Self::stopped(config, now);
        checker.restart(now, wall)?;
        Ok(checker)
    }

    /// A checker whose controller has not started yet; [`restart`](Self::restart) starts it.
    pub(crate) fn stopped(config: ServiceConfig, origin: Instant) -> Self {
        Self {
            config,
            origin,
            clock: origin,
            election: None,
            persisted: None,
            saved_version: None,
            outstanding: None,
            actions: VecDeque::new(),
            events: Vec::new(),
            trace: Trace::default(),
            trace_reports: true,
            seen: Seen::default(),
            violation: None,
            inputs: 0,
        }
    }

    /// Whether probe and replication reports are written to the trace (the default); the
    /// simulator turns it off, as its world events say more in fewer lines.
    pub fn trace_reports(&mut self, on: bool) {
        self.trace_reports = on;
    }

    // ----------------------------------------------------------------------------------------
    // Queries
    // ----------------------------------------------------------------------------------------

    /// The election, unless the controller is down (between a crash and its restart).
    pub fn election(&self) -> Option<&Election> {
        self.election.as_ref()
    }

    /// The journal as the driver last persisted it.
    pub fn journal(&self) -> Option<&Journal> {
        self.persisted.as_ref()
    }

    /// The first violation found, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Every event the election emitted, with its time from the origin.
    pub fn events(&self) -> &[(Duration, Event)] {
        &self.events
    }

    /// Everything traced so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Inputs the election was fed (reports, commands, step results).
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// Feeds a report or a step result (a command goes to [`command`](Self::command)), then
    /// checks: an [`Input`] or a reference to one, as [`Election::handle`] takes. A result for
    /// the outstanding action that succeeded counts as carried out (a DNS write is checked
    /// against the epoch's owner). While the controller is down the input is lost, as it
    /// would be.
    #[inline]
    pub fn handle(
        &mut self,
        input: impl Feed + Borrow<Input>,
        now: Instant,
    ) -> Result<(), Violation> {
        self.clock = now;
        if self.election.is_none() {
            return self.result();
        }
        match input.borrow() {
            Input::StepDone(done) => self.step_done(done),
            _ if self.trace_reports => {
                let at = self.elapsed();
                self.trace.push(at, Entry::Input(input.borrow().clone()));
            }
            _ => {}
        }
        if let Some(e) = self.election.as_mut() {
            self.inputs += 1;
            e.handle(input, now);
        }
        self.pump(None);
        self.result()
    }

    /// Feeds an operator command, then checks; returns the election's refusal, if any.
    pub fn command(
        &mut self,
        command: Command,
        now: Instant,
    ) -> Result<Option<Refused>, Violation> {
        self.at(now);
        let Some(e) = self.election.as_mut() else {
            self.result()?;
            return Ok(None);
        };
        let desc = format!("{command:?}");
        self.inputs += 1;
        let refused = e.command(command, now).err();
        if let Some(r) = &refused {
            self.note(format!("command {desc} refused: {}", r.reason));
        }
        self.pump(None);
        self.result().map(|()| refused)
    }

    /// Handles the election's timers due at `now`, then checks.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Violation> {
        self.at(now);
        if let Some(e) = self.election.as_mut() {
            e.handle_timeout(now);
            self.pump(None);
        }
        self.result()
    }

    /// The controller process dies and starts again from the journal it last persisted,
    /// at `now`: queued and outstanding actions are lost, and the new election must reach
    /// the state the journal records without repeating a finished step. Also starts a
    /// checker whose controller has not started yet.
    pub fn restart(&mut self, now: Instant, wall: SystemTime) -> Result<(), Violation> {
        self.at(now);
        if self.election.is_some() {
            self.crash();
        }
        let journal = self.persisted.clone();
        self.note(format!(
            "controller starts from {}",
            match &journal {
                Some(j) => format!("journal (epoch {}, active {})", j.epoch(), j.active()),
                None => "no journal".to_owned(),
            }
        ));
        let e = match Election::new(self.config.clone(), journal.clone(), now, wall) {
            Ok(e) => e,
            Err(err) => {
                self.violate(
                    Invariant::ReplayMismatch,
                    format!("the persisted journal was refused: {err}"),
                );
                return self.result();
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
        self.pump(journal.as_ref());
        self.result()
    }

    // ----------------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------------

    /// Whether [`poll_action`](Self::poll_action) has something.
    pub(crate) fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Declares that the result of action `id` will never come (the call hung): it no longer
    /// counts as outstanding, and the election's watchdog is expected to give up on it.
    pub fn abandon(&mut self, id: StepId) {
        if self.outstanding.as_ref().is_some_and(|(o, _, _)| *o == id) {
            self.outstanding = None;
        }
    }

    // ----------------------------------------------------------------------------------------
    // For the simulator
    // ----------------------------------------------------------------------------------------

    /// The controller process dies: the election and its queued actions are gone until
    /// [`restart`](Self::restart).
    pub(crate) fn crash(&mut self) {
        self.note("controller killed");
        self.election = None;
        self.outstanding = None;
        self.actions.clear();
    }

    /// A backend carried out `action`, whether or not its result comes back: a DNS write of
    /// the service's name is checked against the site its epoch belongs to.
    pub(crate) fn applied(&mut self, action: &Action) {
        if let Some(write) = self.dns_write(action) {
            self.check_write(write);
        }
    }

    /// Adds a line to the trace at the time of the latest call.
    pub(crate) fn note(&mut self, line: impl Into<String>) {
        let at = self.elapsed();
        self.trace.push(at, Entry::Text(line.into()));
    }

    /// Sets the time of the next trace lines and checks.
    pub(crate) fn at(&mut self, now: Instant) {
        self.clock = now;
    }

    /// The time of the latest call, from the origin.
    fn elapsed(&self) -> Duration {
        self.clock.saturating_duration_since(self.origin)
    }

    /// Records a violation found outside the election (a backend's own bookkeeping).
    pub(crate) fn violate(&mut self, invariant: Invariant, detail: String) {
        if self.violation.is_some() {
            return;
        }
        self.note(format!("VIOLATION {invariant}: {detail}"));
        self.violation = Some(Violation {
            invariant,
            at: self.elapsed(),
            detail,
            trace: self.trace.tail(TRACE_TAIL),
        });
    }

    /// The whole run: events, trace, and the number of inputs.
    pub(crate) fn into_parts(self) -> (Vec<(Duration, Event)>, Trace, u64) {
        (self.events, self.trace, self.inputs)
    }

    // ----------------------------------------------------------------------------------------
    // Checks
    // ----------------------------------------------------------------------------------------

    fn result(&self) -> Result<(), Violation> {
        match &self.violation {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }

    fn step_done(&mut self, done: &StepDone) {
        let at = self.elapsed();
        let error = done.result.as_ref().err().cloned();
        match self.outstanding.take() {
            Some((id, write, _)) if id == done.id => {
                let ok = error.is_none();
                self.trace.push(at, Entry::Done { id, error });
                if let Some(write) = write.filter(|_| ok) {
                    self.check_write(write);
                }
            }
            other => {
                self.outstanding = other;
                self.note(format!("result of {}, which is not outstanding", done.id));
                self.trace.push(at, Entry::Done { id: done.id, error });
            }
        }
    }

    #[inline]
    fn pump(&mut self, resumed: Option<&Journal>) {
        let Some(e) = self.election.as_mut() else {
            return;
        };
        let action = e.poll_action();
        let version = e.journal_version();
        if self.saved_version != Some(version) {
            self.persisted = Some(e.journal().clone());
            self.saved_version = Some(version);
        }
        if let Some(action) = action {
            self.take_actions(action, resumed);
        }
        if let Some(event) = self.election.as_mut().and_then(|e| e.poll_event()) {
            self.take_events(event);
        }
        self.check_view();
    }

    fn take_actions(&mut self, first: Action, resumed: Option<&Journal>) {
        if let Some(j) = resumed
            && let Some(rb) = j.runbook()
            && rb.id == first.id.runbook
            && (first.id.index as usize) < rb.done.len()
        {
            self.violate(
                Invariant::ReplayMismatch,
                format!("finished step {} was emitted again", first.id),
            );
        }
        let mut next = Some(first);
        while let Some(action) = next {
            self.on_action(action);
            next = self.election.as_mut().and_then(|e| e.poll_action());
        }
    }

    fn take_events(&mut self, first: Event) {
        let at = self.elapsed();
        let mut next = Some(first);
        while let Some(event) = next {
            self.check_event(&event, at);
            self.events.push((at, event));
            next = self.election.as_mut().and_then(|e| e.poll_event());
        }
    }

    /// An action the election emitted: checked, traced, outstanding and queued.
    fn on_action(&mut self, action: Action) {
        // An action past its timeout may be given up by the election's watchdog.
        if self
            .outstanding
            .as_ref()
            .is_some_and(|(_, _, end)| end.is_none_or(|end| self.clock < end))
        {
            self.violate(
                Invariant::TwoActionsInFlight,
                format!("{} emitted while another action was outstanding", action.id),
            );
        }
        self.check_action(&action);
        let at = self.elapsed();
        self.trace.push(at, Entry::Action(action.clone()));
        let end = self.clock.checked_add(action.timeout);
        self.outstanding = Some((action.id, self.dns_write(&action), end));
        self.actions.push_back(action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;
    use crate::runbook::{RunbookKind, Step};
    use crate::test_util::sim::{ServiceShape, site_id};

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        // Only an origin: every time in these tests is an offset from it.
        Instant::now()
    }

    fn checker(shape: ServiceShape) -> Checker {
        Checker::stopped(shape.build(), origin())
    }

    fn broken(c: &Checker) -> Option<Invariant> {
        c.violation().map(|v| v.invariant)
    }

    fn started() -> (Checker, Instant) {
        let o = origin();
        match Checker::new(ServiceShape::default().build(), o, SystemTime::UNIX_EPOCH) {
            Ok(c) => (c, o),
            Err(v) => panic!("a bootstrap broke an invariant: {v}"),
        }
    }

    /// Shows the checker a decision at epoch 2 (an operator's, or the election's own).
    fn decide(
        c: &mut Checker,
        kind: RunbookKind,
        to: Option<usize>,
        forced: bool,
        by_operator: bool,
    ) {
        let reasons = if by_operator {
            vec![Reason::Operator]
        } else {
            Vec::new()
        };
        let now = c.elapsed();
        c.check_decision(now, kind, to.map(site_id), Epoch::new(2), forced, &reasons);
    }

    #[test]
    fn it_catches_a_manual_failback_done_automatically() {
        let mut c = checker(ServiceShape::default());
        decide(&mut c, RunbookKind::Failback, Some(0), false, false);
        assert_eq!(broken(&c), Some(Invariant::FailbackPolicy));
        let mut c = checker(ServiceShape::default());
        decide(&mut c, RunbookKind::Failback, Some(0), false, true);
        assert_ne!(broken(&c), Some(Invariant::FailbackPolicy));
    }

    #[test]
    fn it_catches_two_switches_inside_the_dwell_and_a_reused_epoch() {
        let mut c = checker(ServiceShape {
            min_dwell: Duration::from_secs(30),
            ..ServiceShape::default()
        });
        c.seen.last_switch = Some(Duration::ZERO);
        c.clock = c.origin + Duration::from_secs(10);
        decide(&mut c, RunbookKind::Failover, None, false, true);
        assert_eq!(broken(&c), Some(Invariant::DwellViolated));

        let mut c = checker(ServiceShape::default());
        decide(&mut c, RunbookKind::Failover, Some(1), true, true);
        decide(&mut c, RunbookKind::Failover, Some(0), true, true);
        assert_eq!(broken(&c), Some(Invariant::EpochNotIncreased));

        let mut c = checker(ServiceShape::default());
        c.check_owner(Epoch::new(3), Some(site_id(1)), "write");
        c.check_owner(Epoch::new(3), Some(site_id(0)), "write");
        assert_eq!(broken(&c), Some(Invariant::TwoActivesInOneEpoch));
    }

    #[test]
    fn it_catches_a_switch_to_a_site_that_is_not_up() {
        let (mut c, o) = started();
        // Nothing has been probed yet: every site is unknown.
        decide(&mut c, RunbookKind::Failover, Some(1), false, false);
        assert_eq!(broken(&c), Some(Invariant::IneligibleTarget));
        let v = c.violation().cloned().unwrap();
        assert!(v.to_string().contains("IneligibleTarget"), "{v}");
        assert!(
            v.trace.iter().any(|l| l.contains("controller starts")),
            "{v}"
        );
        assert_eq!(c.handle_timeout(o), Err(v), "the first violation sticks");
    }

    #[test]
    fn it_catches_a_second_action_while_one_is_outstanding() {
        let (mut c, _) = started();
        let first = c
            .poll_action()
            .expect("the bootstrap publishes the home site");
        let mut second = first.clone();
        second.id.attempt += 1;
        c.abandon(second.id);
        c.on_action(second.clone());
        assert_eq!(broken(&c), Some(Invariant::TwoActionsInFlight));

        let (mut c, _) = started();
        c.abandon(first.id);
        c.on_action(second);
        assert_eq!(
            broken(&c),
            None,
            "an abandoned action is no longer outstanding"
        );
    }

    #[test]
    fn a_successful_dns_step_is_checked_against_the_epochs_owner() {
        let (mut c, o) = started();
        let action = c
            .poll_action()
            .expect("the bootstrap publishes the home site");
        let Step::SwitchDns { change } = &action.step else {
            panic!("the bootstrap starts with its DNS switch: {action:?}");
        };
        let mut other = action.clone();
        if let Step::SwitchDns { change: c2 } = &mut other.step {
            c2.site = Some(site_id(1));
        }
        assert_eq!(change.site, Some(site_id(0)));
        let done = StepDone {
            id: action.id,
            result: Ok(crate::election::StepOutput::Done),
        };
        assert!(c.handle(Input::StepDone(done), o).is_ok());
        assert_eq!(broken(&c), None);
        c.applied(&other);
        assert_eq!(broken(&c), Some(Invariant::TwoActivesInOneEpoch));
    }
}
