//! The election: a sans-IO state machine that decides which site of a service is active and
//! drives the runbook that makes it so.
//!
//! The parts, as quinn-proto's `connection/` is split:
//! - `input`: reports and step results (never refused) and the timers;
//! - `command`: operator commands (may be refused);
//! - `decide`: which site should be active, and whether a switch may go ahead now;
//! - `plan`: pure functions from a decision to the runbook's steps, delays and phases;
//! - `step`: handing out steps, taking their results, ending a runbook with its RTO and RPO.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::ServiceConfig;
use crate::dns::DnsChange;
use crate::epoch::Epoch;
use crate::error::{Error, Refused};
use crate::event::{Event, Trigger};
use crate::health::HealthBook;
use crate::journal::Journal;
use crate::probe::Health;
use crate::reason::Reason;
use crate::runbook::{Action, RunbookKind, Step, StepId};
use crate::timer::TimerTable;
use crate::view::{ObserverView, ProbeView, RunbookView, ServiceView, SiteView};

mod command;
mod decide;
mod dry_run;
mod input;
mod plan;
mod step;

pub use command::{Command, Resume};
pub use dry_run::{Guard, Plan, PlanStep};
pub use input::{Feed, Input, StepDone, StepOutput};

/// The election of one service.
///
/// Sans-IO: it never reads a clock, sleeps, spawns or touches the network. It is fed inputs
/// and the current time, and asked what to do. The same code runs in the tokio driver, the
/// simulator, property tests and the fuzzer. It is `Clone`, so a test can fork it and feed
/// each copy differently.
///
/// # Methods
/// - **Queries**: [`view`](Self::view) (active site, epoch, health, dwell, observers),
///   [`journal`](Self::journal), [`journal_version`](Self::journal_version),
///   [`config`](Self::config).
/// - **Inputs**, never refused: [`handle`](Self::handle) (probe and replication reports, step
///   results) and [`handle_timeout`](Self::handle_timeout).
/// - **Commands**, which may be [`Refused`]: [`command`](Self::command).
/// - **Outputs**: [`poll_action`](Self::poll_action), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// # The driver's contract
/// After every input or command: drain `poll_action` and execute each action (persisting the
/// journal first when `journal_version` changed), drain `poll_event`, then sleep until
/// `poll_timeout` and call `handle_timeout`. At most one action is outstanding at a time; its
/// result comes back as [`Input::StepDone`] with the same [`StepId`]. Results for any other
/// id are ignored.
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use idns_core::*;
///
/// let cfg = ServiceConfig::from_toml(r#"
///     name = "www.example.com"
///     zone = "example.com"
///     [[sites]]
///     id = "a"
///     priority = 1
///     addresses = ["192.0.2.1"]
///     probes = [{ id = "http", interval = "1s", rise = 1, fall = 3 }]
///     [[sites]]
///     id = "b"
///     priority = 2
///     addresses = ["192.0.2.2"]
///     probes = [{ id = "http", interval = "1s", rise = 1, fall = 3 }]
///     [policy]
///     min_dwell = "0s"
/// "#).unwrap();
/// let (t0, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
/// let mut e = Election::new(cfg, None, t0, wall).unwrap();
///
/// // The canonical driver loop: run each action, feed its result back.
/// fn drive(e: &mut Election, now: Instant) {
///     while let Some(a) = e.poll_action() {
///         let done = StepDone { id: a.id, result: Ok(StepOutput::Done) };
///         e.handle(Input::StepDone(done), now);
///     }
///     while let Some(event) = e.poll_event() {
///         println!("{event}");
///     }
/// }
/// drive(&mut e, t0); // the bootstrap publishes the home site
///
/// let report = |site: &str, up: bool, t: Instant| Input::Probe(ProbeReport {
///     site: site.parse().unwrap(),
///     probe: "http".parse().unwrap(),
///     observer: "local".parse().unwrap(),
///     outcome: if up { ProbeOutcome::up(Duration::ZERO) }
///              else { ProbeOutcome::down(Duration::ZERO, "refused") },
///     at: wall,
/// });
/// for i in 0..3u64 {
///     let t = t0 + Duration::from_secs(i);
///     e.handle(report("a", false, t), t);
///     e.handle(report("b", true, t), t);
///     drive(&mut e, t);
/// }
/// assert_eq!(e.view().active.as_str(), "b");
/// assert_eq!(e.view().epoch, Epoch::new(2));
///
/// // Commands may be refused, with the reason.
/// let t = t0 + Duration::from_secs(3);
/// let refused = e.command(Command::Failback { force: false }, t).unwrap_err();
/// assert!(refused.reason.contains("site a not eligible: down"), "{refused}");
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    cfg: ServiceConfig,
    health: HealthBook,
    /// `lag[site][resource]`.
    lag: Vec<Vec<Option<Duration>>>,
    /// Site indices by preference.
    order: Vec<usize>,
    journal: Journal,
    last_switch: Option<Instant>,
    origin: (Instant, SystemTime),
    timers: TimerTable,
    in_flight: Option<StepId>,
    /// An action whose runbook ended while it ran; nothing new goes out until it returns.
    orphan: Option<StepId>,
    step_started: Option<Instant>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    view: ServiceView,
    rng: ChaCha8Rng,
    last_note: Option<String>,
}

impl Election {
    /// Starts an election from a validated configuration and, when there is one, the journal
    /// of a previous run; `now` and `wall` are the same moment on the monotonic and the
    /// wall clock.
    ///
    /// Without a journal the home site is published at epoch 1 (a bootstrap runbook). With
    /// one, the runbook in progress resumes at its first unfinished step.
    pub fn new(
        cfg: ServiceConfig,
        journal: Option<Journal>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, Error> {
        let fresh = journal.is_none();
        let mut journal = match journal {
            Some(j) => {
                j.check(&cfg)?;
                j
            }
            None => Journal::new(cfg.name().clone(), cfg.home().id.clone()),
        };
        journal.forget_changes();
        let last_switch = journal.last_switch().map(|t| {
            let ago = wall.duration_since(t).unwrap_or(Duration::ZERO);
            now.checked_sub(ago).unwrap_or(now)
        });
        let n_res = cfg.resources().len();
        let lag = vec![vec![None; n_res]; cfg.sites().len()];
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed() ^ journal.next_runbook());
        let view = ServiceView {
            service: cfg.name().clone(),
            active: journal.active().clone(),
            epoch: journal.epoch(),
            serving: journal.serving(),
            frozen: journal.frozen(),
            sites: Vec::new(),
            runbook: None,
            switches: journal.switches(),
            last_switch: None,
            dwell_until: None,
            observers: Vec::new(),
        };
        let mut e = Election {
            health: HealthBook::new(&cfg),
            order: plan::by_priority(&cfg),
            cfg,
            lag,
            journal,
            last_switch,
            origin: (now, wall),
            timers: TimerTable::default(),
            in_flight: None,
            orphan: None,
            step_started: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            view,
            rng,
            last_note: None,
        };
        if fresh {
            let home = e.cfg.home().id.clone();
            e.start_runbook(
                RunbookKind::Bootstrap,
                Some(home),
                false,
                Trigger::Election,
                vec![Reason::Note("no journal: publishing the home site".into())],
                now,
            );
        } else {
            e.launch_next(now);
        }
        e.refresh_view();
        Ok(e)
    }

    // ----------------------------------------------------------------------------------------
    // Queries
    // ----------------------------------------------------------------------------------------

    /// The current state: active site, epoch, per-site health and reasons, runbook progress,
    /// the last switch and the dwell, each observer's liveness and each probe's last report.
    pub fn view(&self) -> &ServiceView {
        &self.view
    }

    /// The durable state; persist it before executing an action when
    /// [`journal_version`](Self::journal_version) has changed.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// A counter that changes whenever the journal does (including each new attempt of a
    /// step, whose count is journaled): the journal counts its own changes. It starts at 0
    /// when the election is built, but [`new`](Self::new) may already have changed the
    /// journal it was given (a bootstrap, or a restored runbook whose last step had
    /// finished): a driver compares with what it loaded before deciding that the store is up
    /// to date.
    pub fn journal_version(&self) -> u64 {
        self.journal.changes()
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// What the journal says the service's name publishes, as the change that publishes it
    /// at the journal's epoch: what a restarted driver checks the DNS against, and applies
    /// again when the DNS holds something else. `None` before the first decision, and while
    /// the runbook in progress has yet to publish the name itself (its own `switch_dns` step
    /// will).
    pub fn published(&self) -> Option<DnsChange> {
        let epoch = self.journal.epoch();
        if epoch == Epoch::ZERO {
            return None;
        }
        if let Some(rb) = self.journal.runbook() {
            let will_publish = rb.steps.iter().skip(rb.next_index()).any(|s| {
                matches!(&s.step, Step::SwitchDns { change } if change.name == *self.cfg.name())
            });
            if will_publish {
                return None;
            }
        }
        Some(plan::serving_change(
            &self.cfg,
            self.journal.serving(),
            self.journal.active(),
            epoch,
        ))
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// Feeds a report or a step result: an [`Input`], or a reference to one. Inputs are never
    /// refused: reports for an unknown site, probe, observer or resource, and results for a
    /// step not in flight, are ignored (and traced at debug level).
    ///
    /// The election copies what it keeps of a report, so a caller that feeds the same report
    /// again and again (a scheduler, a simulator) can keep it and pass `&input`; a step result
    /// given by value is moved into the journal without a copy.
    ///
    /// Time-dependent state is first brought up to `now`: timers whose moment has passed (an
    /// observer gone silent, say) are handled before the input, so an input never counts on
    /// what was true only before `now`, however late the driver calls
    /// [`handle_timeout`](Self::handle_timeout). A timer due at `now` itself is left to it,
    /// after the inputs of the same moment.
    pub fn handle(&mut self, input: impl Feed, now: Instant) {
        input.feed(self, now);
    }

    /// Handles the timers whose moment passed before `now`: what every input does first
    /// (from [`Feed`], once the input is borrowed, so that nothing is copied around it).
    #[inline]
    fn catch_up(&mut self, now: Instant) {
        if self.timers.next().is_some_and(|t| t < now) {
            self.handle_overdue(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn handle_overdue(&mut self, now: Instant) {
        self.handle_timeout(now);
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.take_expired(now) {
            self.on_timer(timer, now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Commands
    // ----------------------------------------------------------------------------------------

    /// Carries out an operator's command, or refuses it with the reason (which also comes
    /// out as [`Event::Refused`]). A refused command changes nothing else.
    pub fn command(&mut self, command: Command, now: Instant) -> Result<(), Refused> {
        let result = self.on_command(command, now);
        if let Err(r) = &result {
            self.events.push_back(Event::Refused(r.clone()));
        }
        self.refresh_view();
        result
    }

    // ----------------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------------

    /// The next action for the driver, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----------------------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------------------

    fn wall(&self, now: Instant) -> SystemTime {
        self.origin.1 + now.saturating_duration_since(self.origin.0)
    }

    fn wall_of(&self, t: Option<Instant>) -> Option<SystemTime> {
        t.map(|t| self.wall(t))
    }

    /// Keeps a report's time in the view, and the probe's health when it changed (the rest
    /// of the view changes only with a site's health, in `refresh_view`).
    fn note_report(&mut self, si: usize, pi: usize, oi: usize, at: SystemTime, changed: bool) {
        let n_obs = self.view.observers.len();
        if let Some(o) = self.view.observers.get_mut(oi) {
            o.last_report = Some(at);
        }
        let health = changed.then(|| self.health.probe(si, pi, oi));
        if let Some(p) = self
            .view
            .sites
            .get_mut(si)
            .and_then(|s| s.probes.get_mut(pi * n_obs + oi))
        {
            p.last_report = Some(at);
            if let Some(h) = health {
                p.health = h;
            }
        }
    }

    fn refresh_view(&mut self) {
        let journal = &self.journal;
        let v = &mut self.view;
        v.active = journal.active().clone();
        v.epoch = journal.epoch();
        v.serving = journal.serving();
        v.frozen = journal.frozen();
        v.switches = journal.switches();
        v.last_switch = journal.last_switch();
        v.dwell_until = journal
            .last_switch()
            .map(|t| t + self.cfg.policy().min_dwell);
        v.runbook = journal.runbook().map(|rb| RunbookView {
            id: rb.id,
            kind: rb.kind,
            to: rb.to.clone(),
            step: rb.next_index(),
            steps: rb.steps.len(),
            name: rb.steps.get(rb.next_index()).map(|s| s.name),
            held: rb.held.clone(),
        });
        // In place: the view is refreshed after every change, and its shape never changes.
        let observers = &self.cfg.observers().ids;
        if self.view.observers.len() != observers.len() {
            self.view.observers = observers
                .iter()
                .map(|id| ObserverView {
                    id: id.clone(),
                    live: false,
                    last_report: None,
                })
                .collect();
        }
        for oi in 0..observers.len() {
            self.view.observers[oi].live = self.health.live(oi);
        }
        if self.view.sites.len() != self.cfg.sites().len() {
            self.view.sites = self
                .cfg
                .sites()
                .iter()
                .map(|s| SiteView {
                    id: s.id.clone(),
                    priority: s.priority,
                    health: Health::Unknown,
                    eligible: false,
                    lag: None,
                    reasons: Vec::new(),
                    up_since: None,
                    probes: s
                        .probes
                        .iter()
                        .flat_map(|p| {
                            observers.iter().map(|o| ProbeView {
                                probe: p.id.clone(),
                                observer: o.clone(),
                                health: Health::Unknown,
                                last_report: None,
                                live: false,
                            })
                        })
                        .collect(),
                })
                .collect();
        }
        for si in 0..self.cfg.sites().len() {
            let mut reasons = self.health.reasons(&self.cfg, si);
            let eligible = self.eligibility(si, true);
            let ok = eligible.is_ok();
            reasons.push(match eligible {
                Ok(r) | Err(r) => r,
            });
            let up_since = self.wall_of(self.health.sites[si].up_since);
            let n_obs = observers.len();
            for (c, p) in self.view.sites[si].probes.iter_mut().enumerate() {
                let (pi, oi) = (c / n_obs.max(1), c % n_obs.max(1));
                p.health = self.health.probe(si, pi, oi);
                p.live = self.view.observers[oi].live;
            }
            let site = &mut self.view.sites[si];
            site.health = self.health.sites[si].health;
            site.eligible = ok;
            site.lag = self.lag[si].iter().flatten().max().copied();
            site.reasons = reasons;
            site.up_since = up_since;
        }
    }
}

#[cfg(test)]
mod tests;
