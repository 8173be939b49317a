//! The election: a sans-IO state machine that decides which site of a service is active and
//! drives the runbook that makes it so.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{AllDownPolicy, FailbackMode, FailoverMode, RecordMode, ServiceConfig};
use crate::dns::{DnsChange, Propagation, RecordSet};
use crate::epoch::Epoch;
use crate::error::{BackendError, Error, Refused};
use crate::event::{Event, Outcome, PhaseTime, SwitchReport};
use crate::health::HealthBook;
use crate::id::SiteId;
use crate::journal::{JOURNAL_VERSION, Journal, Serving};
use crate::probe::ProbeReport;
use crate::reason::{Health, Reason, explain};
use crate::replication::{IntegrityReport, IntegrityRequest, Promoted, ReplicationReport, Role};
use crate::runbook::{
    Action, OnFailure, Phase, PlannedStep, Runbook, RunbookKind, Step, StepId, StepName,
    StepRecord, StepStatus,
};
use crate::timer::{Timer, TimerTable};
use crate::view::{RunbookView, ServiceView, SiteView};

/// Something the election is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// A probe's outcome, from any observer.
    Probe(ProbeReport),
    /// A replica's role and lag.
    Replication(ReplicationReport),
    /// An operator's command; it may be refused.
    Command(Command),
    /// The result of an [`Action`].
    StepDone(StepDone),
}

/// What an operator can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Fail over to `to` (or the best eligible site). Without `force`, the target must be
    /// eligible and the minimum dwell must have passed.
    Failover {
        /// The target; `None` picks the best eligible site.
        to: Option<SiteId>,
        /// Go past the health, RPO and dwell guards.
        force: bool,
    },
    /// Return to the home site with the failback runbook (reverse replication first).
    Failback {
        /// Go past the health and dwell guards.
        force: bool,
    },
    /// Stop automatic decisions (commands still work).
    Freeze,
    /// Resume automatic decisions.
    Unfreeze,
    /// Rehearse a failover to `to` on the drill name, leaving production alone.
    StartDrill {
        /// The site to rehearse on.
        to: SiteId,
    },
    /// Stop a drill: skip its remaining steps and clean up.
    StopDrill,
    /// Continue a runbook that waits for an operator.
    Resume(Resume),
}

/// How to continue a held runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// Try the held step again.
    Retry,
    /// Record it as skipped and go on.
    Skip,
    /// Stop the runbook.
    Abort,
}

/// The result of one [`Action`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDone {
    /// The action's id, as it was handed out.
    pub id: StepId,
    /// What the backend returned.
    pub result: Result<StepOutput, BackendError>,
}

/// What a successful step returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutput {
    /// Nothing to report.
    Done,
    /// From a promotion.
    Promoted(Promoted),
    /// From an integrity request.
    Integrity(IntegrityReport),
    /// From a propagation check.
    Propagation(Propagation),
}

/// The election of one service.
///
/// Sans-IO: it never reads a clock, sleeps, spawns or touches the network. It is fed inputs
/// and the current time, and asked what to do. The same code runs in the tokio driver, the
/// simulator, property tests and the fuzzer.
///
/// # Methods
/// - **Queries**: [`view`](Self::view), [`journal`](Self::journal),
///   [`journal_version`](Self::journal_version), [`config`](Self::config).
/// - **Inputs**: [`handle`](Self::handle) (probe and replication reports, commands, step
///   results) and [`handle_timeout`](Self::handle_timeout).
/// - **Outputs**: [`poll_action`](Self::poll_action), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// # The driver's contract
/// After every input: drain `poll_action` and execute each action (persisting the journal
/// first when `journal_version` changed), drain `poll_event`, then sleep until `poll_timeout`
/// and call `handle_timeout`. At most one action is outstanding at a time; its result comes
/// back as [`Input::StepDone`] with the same [`StepId`]. Results for any other id are ignored.
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
///         e.handle(Input::StepDone(done), now).unwrap();
///     }
///     while let Some(_event) = e.poll_event() {}
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
///     e.handle(report("a", false, t), t).unwrap();
///     e.handle(report("b", true, t), t).unwrap();
///     drive(&mut e, t);
/// }
/// assert_eq!(e.view().active.as_str(), "b");
/// assert_eq!(e.view().epoch, Epoch::new(2));
/// ```
#[derive(Debug)]
pub struct Election {
    cfg: ServiceConfig,
    health: HealthBook,
    /// `lag[site][resource]`.
    lag: Vec<Vec<Option<Duration>>>,
    journal: Journal,
    journal_version: u64,
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
        let journal = match journal {
            Some(j) => {
                check_journal(&cfg, &j)?;
                j
            }
            None => Journal {
                version: JOURNAL_VERSION,
                service: cfg.name().clone(),
                active: cfg.home().id.clone(),
                epoch: Epoch::ZERO,
                serving: Serving::Active,
                frozen: false,
                last_switch: None,
                next_runbook: 1,
                runbook: None,
                markers: BTreeMap::new(),
                switches: 0,
                pending_cleanup: Vec::new(),
            },
        };
        let last_switch = journal.last_switch.map(|t| {
            let ago = wall.duration_since(t).unwrap_or(Duration::ZERO);
            now.checked_sub(ago).unwrap_or(now)
        });
        let n_res = cfg.resources().len();
        let lag = vec![vec![None; n_res]; cfg.sites().len()];
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed() ^ journal.next_runbook);
        let view = ServiceView {
            service: cfg.name().clone(),
            active: journal.active.clone(),
            epoch: journal.epoch,
            serving: journal.serving,
            frozen: journal.frozen,
            sites: Vec::new(),
            runbook: None,
            switches: journal.switches,
        };
        let mut e = Election {
            health: HealthBook::new(&cfg),
            cfg,
            lag,
            journal,
            journal_version: 0,
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

    /// The current state: active site, epoch, per-site health and reasons, runbook progress.
    pub fn view(&self) -> &ServiceView {
        &self.view
    }

    /// The durable state; persist it before executing an action when
    /// [`journal_version`](Self::journal_version) has changed.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// A counter that changes whenever the journal does (including each new attempt of a
    /// step, whose count is journaled). It starts at 0 when the election is built, but
    /// [`new`](Self::new) may already have changed the journal it was given (a bootstrap, or
    /// a restored runbook whose last step had finished): a driver compares with what it
    /// loaded before deciding that the store is up to date.
    pub fn journal_version(&self) -> u64 {
        self.journal_version
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// Feeds one input. Reports and step results never fail (unknown or stale ones are
    /// ignored); a command may be [`Refused`], with the reason.
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<(), Refused> {
        match input {
            Input::Probe(r) => {
                self.on_probe(r, now);
                Ok(())
            }
            Input::Replication(r) => {
                self.on_replication(r, now);
                Ok(())
            }
            Input::StepDone(d) => {
                self.on_step_done(d, now);
                Ok(())
            }
            Input::Command(c) => {
                let res = self.on_command(c, now);
                if let Err(r) = &res {
                    self.events.push_back(Event::Refused(r.clone()));
                }
                self.refresh_view();
                res
            }
        }
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.take_expired(now) {
            match timer {
                Timer::ObserverStale => {
                    let stale = self.health.expire(now);
                    for oi in stale {
                        self.events.push_back(Event::ObserverChanged {
                            observer: self.cfg.observers().ids[oi].clone(),
                            live: false,
                        });
                    }
                    let mut changed = false;
                    for si in 0..self.cfg.sites().len() {
                        if let Some((from, to)) = self.health.refresh(si, now) {
                            self.site_changed(si, from, to);
                            changed = true;
                        }
                    }
                    self.timers
                        .set_or_stop(Timer::ObserverStale, self.health.next_stale());
                    if changed {
                        self.refresh_view();
                        self.decide(now);
                    }
                }
                Timer::Dwell | Timer::HoldDown => self.decide(now),
                Timer::Retry => self.launch_next(now),
                Timer::Watchdog => {
                    if let Some(id) = self.orphan.or(self.in_flight) {
                        let timeout = self.current_step().map(|p| p.policy.timeout);
                        self.on_step_done(
                            StepDone {
                                id,
                                result: Err(BackendError::Timeout(format!(
                                    "no result within {}",
                                    humantime::format_duration(timeout.unwrap_or_default())
                                ))),
                            },
                            now,
                        );
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------------

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----------------------------------------------------------------------------------------
    // Reports
    // ----------------------------------------------------------------------------------------

    fn on_probe(&mut self, r: ProbeReport, now: Instant) {
        let Some(si) = self.cfg.site_index(&r.site) else {
            tracing::debug!(site = %r.site, "probe report for an unknown site ignored");
            return;
        };
        let site = &self.cfg.sites()[si];
        let Some(pi) = r.probe.index_in(&site.probes, |p| &p.id) else {
            tracing::debug!(site = %r.site, probe = %r.probe, "report for an unknown probe ignored");
            return;
        };
        let Some(oi) = r.observer.index_in(&self.cfg.observers().ids, |o| o) else {
            tracing::debug!(observer = %r.observer, "report from an unknown observer ignored");
            return;
        };
        let change = self.health.record(site, si, pi, oi, r.outcome, now);
        self.timers
            .set_or_stop(Timer::ObserverStale, self.health.next_stale());
        if change.observer_back {
            self.events.push_back(Event::ObserverChanged {
                observer: r.observer.clone(),
                live: true,
            });
        }
        if let Some(health) = change.probe {
            let reason = match health {
                Health::Up => String::new(),
                _ => self.health.last_reason(si, pi, oi).to_owned(),
            };
            self.events.push_back(Event::ProbeChanged {
                site: r.site,
                probe: r.probe,
                observer: r.observer,
                health,
                reason,
            });
        }
        for &(si, from, to) in &change.sites {
            self.site_changed(si, from, to);
        }
        if !change.sites.is_empty() || change.observer_back {
            self.refresh_view();
            self.decide(now);
        }
    }

    fn site_changed(&mut self, si: usize, from: Health, to: Health) {
        let reasons = self.health.reasons(&self.cfg, si);
        self.events.push_back(Event::SiteChanged {
            site: self.cfg.sites()[si].id.clone(),
            from,
            to,
            reasons,
        });
    }

    fn on_replication(&mut self, r: ReplicationReport, now: Instant) {
        let Some(si) = self.cfg.site_index(&r.site) else {
            tracing::debug!(site = %r.site, "replication report for an unknown site ignored");
            return;
        };
        let Some(ri) = r.resource.index_in(self.cfg.resources(), |x| x) else {
            tracing::debug!(resource = %r.resource, "report for an unknown resource ignored");
            return;
        };
        let lag = if r.role == Role::Primary {
            Some(Duration::ZERO)
        } else {
            r.lag
        };
        if self.lag[si][ri] == lag {
            return;
        }
        let before = self.lag_check(si).is_ok();
        self.lag[si][ri] = lag;
        let after = self.lag_check(si).is_ok();
        self.refresh_view();
        if before != after {
            self.decide(now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Eligibility
    // ----------------------------------------------------------------------------------------

    /// The largest lag of the site over the consistency group, or why it fails the RPO guard.
    fn lag_check(&self, si: usize) -> Result<Option<Duration>, Reason> {
        let site = &self.cfg.sites()[si].id;
        let lags = &self.lag[si];
        let max = lags.iter().flatten().max().copied();
        let Some(budget) = self.cfg.policy().rpo_budget else {
            return Ok(max);
        };
        if lags.iter().any(|l| l.is_none()) {
            return Err(Reason::LagUnknown { site: site.clone() });
        }
        match max {
            Some(lag) if lag > budget => Err(Reason::LagOverBudget {
                site: site.clone(),
                lag,
                budget,
            }),
            other => Ok(other),
        }
    }

    /// Whether a failover (`guard_rpo`) or failback may go to the site, and why (not).
    fn eligibility(&self, si: usize, guard_rpo: bool) -> Result<Reason, Reason> {
        let site = &self.cfg.sites()[si].id;
        let health = self.health.sites[si].health;
        if health != Health::Up {
            return Err(Reason::NotUp {
                site: site.clone(),
                health,
            });
        }
        let lag = match self.lag_check(si) {
            Ok(l) => l,
            Err(r) if guard_rpo => return Err(r),
            Err(_) => None,
        };
        Ok(Reason::Eligible {
            site: site.clone(),
            lag,
            budget: self.cfg.policy().rpo_budget,
        })
    }

    /// Sites by preference (lowest priority number first).
    fn by_priority(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.cfg.sites().len()).collect();
        order.sort_by_key(|&i| self.cfg.sites()[i].priority);
        order
    }

    fn active_index(&self) -> usize {
        // The journal was checked against the configuration.
        self.cfg.site_index(&self.journal.active).unwrap_or(0)
    }

    fn home_index(&self) -> usize {
        self.cfg.site_index(&self.cfg.home().id).unwrap_or(0)
    }

    fn dwell_remaining(&self, now: Instant) -> Option<Duration> {
        let min = self.cfg.policy().min_dwell;
        let since = now.saturating_duration_since(self.last_switch?);
        (since < min).then(|| min - since)
    }

    // ----------------------------------------------------------------------------------------
    // Decisions
    // ----------------------------------------------------------------------------------------

    fn decide(&mut self, now: Instant) {
        if let Some(rb) = &self.journal.runbook {
            let active_down = self.health.sites[self.active_index()].health == Health::Down;
            if rb.kind == RunbookKind::Drill
                && active_down
                && self.journal.serving == Serving::Active
            {
                self.abandon_drill(now);
            } else {
                return;
            }
        }
        self.timers.stop(Timer::Dwell);
        self.timers.stop(Timer::HoldDown);
        let active = self.active_index();
        let serving = self.journal.serving;
        let active_health = self.health.sites[active].health;
        if serving == Serving::Active && active_health != Health::Down {
            self.consider_failback(now);
            return;
        }

        let mut reasons = Vec::new();
        if serving == Serving::Active {
            reasons.extend(self.health.reasons(&self.cfg, active));
        }
        let mut candidate = None;
        let mut why_not = Vec::new();
        for si in self.by_priority() {
            if serving == Serving::Active && si == active {
                continue;
            }
            match self.eligibility(si, true) {
                Ok(r) => {
                    reasons.push(r);
                    candidate = Some(si);
                    break;
                }
                Err(r) => why_not.push(r),
            }
        }

        let (kind, target) = match candidate {
            Some(si) if serving != Serving::Active && si == active => {
                (RunbookKind::Restore, Some(si))
            }
            Some(si) => (RunbookKind::Failover, Some(si)),
            None if serving != Serving::Active => return,
            None => {
                let all_down = self.health.sites.iter().all(|s| s.health == Health::Down);
                let policy = self.cfg.policy().all_down;
                if all_down && policy != AllDownPolicy::KeepLast {
                    reasons.push(Reason::AllDown { policy });
                    (RunbookKind::AllDown, None)
                } else {
                    reasons.extend(why_not);
                    if all_down {
                        reasons.push(Reason::AllDown { policy });
                    }
                    self.note(Event::Blocked { reasons });
                    return;
                }
            }
        };

        if self.cfg.policy().failover == FailoverMode::Manual
            && let Some(si) = target
        {
            reasons.push(Reason::ManualFailover);
            self.note(Event::Recommendation {
                kind,
                to: self.cfg.sites()[si].id.clone(),
                reasons,
            });
            return;
        }
        if self.journal.frozen {
            reasons.push(Reason::Frozen);
            self.note(Event::Blocked { reasons });
            return;
        }
        if let Some(remaining) = self.dwell_remaining(now) {
            reasons.push(Reason::Dwell {
                remaining,
                min_dwell: self.cfg.policy().min_dwell,
            });
            self.timers.set(Timer::Dwell, now + remaining);
            self.note(Event::Blocked { reasons });
            return;
        }
        let to = target.map(|si| self.cfg.sites()[si].id.clone());
        self.start_runbook(kind, to, false, reasons, now);
    }

    fn consider_failback(&mut self, now: Instant) {
        let home = self.home_index();
        let active = self.active_index();
        if home == active {
            self.last_note = None;
            return;
        }
        let Ok(eligible) = self.eligibility(home, false) else {
            return;
        };
        let home_id = self.cfg.sites()[home].id.clone();
        match self.cfg.policy().failback {
            FailbackMode::Manual => {
                self.note(Event::Recommendation {
                    kind: RunbookKind::Failback,
                    to: home_id,
                    reasons: vec![eligible, Reason::ManualFailback],
                });
            }
            FailbackMode::Automatic => {
                if self.journal.frozen {
                    self.note(Event::Blocked {
                        reasons: vec![eligible, Reason::Frozen],
                    });
                    return;
                }
                let up_since = self.health.sites[home].up_since.unwrap_or(now);
                let ready = up_since + self.cfg.policy().failback_hold_down;
                if now < ready {
                    self.timers.set(Timer::HoldDown, ready);
                    self.note(Event::Blocked {
                        reasons: vec![
                            eligible,
                            Reason::HoldDown {
                                site: home_id,
                                remaining: ready - now,
                            },
                        ],
                    });
                    return;
                }
                if let Some(remaining) = self.dwell_remaining(now) {
                    self.timers.set(Timer::Dwell, now + remaining);
                    self.note(Event::Blocked {
                        reasons: vec![
                            eligible,
                            Reason::Dwell {
                                remaining,
                                min_dwell: self.cfg.policy().min_dwell,
                            },
                        ],
                    });
                    return;
                }
                self.start_runbook(
                    RunbookKind::Failback,
                    Some(home_id),
                    false,
                    vec![eligible],
                    now,
                );
            }
        }
    }

    /// Emits a `Blocked` or `Recommendation` event unless it says what the last one said.
    fn note(&mut self, event: Event) {
        let key = match &event {
            Event::Blocked { reasons } => format!("blocked: {}", explain(reasons)),
            Event::Recommendation { kind, to, reasons } => {
                format!("{kind} to {to}: {}", explain(reasons))
            }
            other => format!("{other:?}"),
        };
        if self.last_note.as_deref() != Some(key.as_str()) {
            tracing::info!(service = %self.cfg.name(), "{key}");
            self.last_note = Some(key);
            self.events.push_back(event);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Commands
    // ----------------------------------------------------------------------------------------

    fn on_command(&mut self, c: Command, now: Instant) -> Result<(), Refused> {
        let refuse = |command: String, reason: String| Err(Refused { command, reason });
        match c {
            Command::Freeze | Command::Unfreeze => {
                let frozen = c == Command::Freeze;
                if self.journal.frozen != frozen {
                    self.journal.frozen = frozen;
                    self.bump();
                    self.events.push_back(Event::Frozen { frozen });
                    self.last_note = None;
                    if !frozen {
                        self.decide(now);
                    }
                }
                Ok(())
            }
            Command::Failover { to, force } => {
                let name = match &to {
                    Some(t) => format!("failover to {t}"),
                    None => "failover".to_owned(),
                };
                self.check_room(&name)?;
                let active = self.active_index();
                let target = match to {
                    Some(t) => match self.cfg.site_index(&t) {
                        Some(si) => si,
                        None => return refuse(name, format!("there is no site {t}")),
                    },
                    None => {
                        let best = self
                            .by_priority()
                            .into_iter()
                            .filter(|&si| si != active)
                            .find(|&si| force || self.eligibility(si, true).is_ok());
                        match best {
                            Some(si) => si,
                            None => {
                                let why: Vec<Reason> = (0..self.cfg.sites().len())
                                    .filter(|&si| si != active)
                                    .filter_map(|si| self.eligibility(si, true).err())
                                    .collect();
                                return refuse(
                                    name,
                                    format!("no site is eligible: {}", explain(&why)),
                                );
                            }
                        }
                    }
                };
                if target == active && self.journal.serving == Serving::Active {
                    return refuse(name, format!("{} is already active", self.journal.active));
                }
                let mut reasons = vec![Reason::Operator];
                if force {
                    reasons.push(Reason::Forced);
                } else {
                    match self.eligibility(target, true) {
                        Ok(r) => reasons.push(r),
                        Err(r) => {
                            return refuse(name, format!("{r}; use force to override"));
                        }
                    }
                    if let Some(rem) = self.dwell_remaining(now) {
                        let r = Reason::Dwell {
                            remaining: rem,
                            min_dwell: self.cfg.policy().min_dwell,
                        };
                        return refuse(name, format!("{r}; use force to override"));
                    }
                }
                let to = self.cfg.sites()[target].id.clone();
                self.yield_drill(now);
                self.start_runbook(RunbookKind::Failover, Some(to), force, reasons, now);
                Ok(())
            }
            Command::Failback { force } => {
                let name = "failback".to_owned();
                self.check_room(&name)?;
                let home = self.home_index();
                if home == self.active_index() && self.journal.serving == Serving::Active {
                    return refuse(
                        name,
                        format!("home site {} is already active", self.journal.active),
                    );
                }
                let mut reasons = vec![Reason::Operator];
                if force {
                    reasons.push(Reason::Forced);
                } else {
                    match self.eligibility(home, false) {
                        Ok(r) => reasons.push(r),
                        Err(r) => return refuse(name, format!("{r}; use force to override")),
                    }
                    if let Some(rem) = self.dwell_remaining(now) {
                        let r = Reason::Dwell {
                            remaining: rem,
                            min_dwell: self.cfg.policy().min_dwell,
                        };
                        return refuse(name, format!("{r}; use force to override"));
                    }
                }
                let to = self.cfg.sites()[home].id.clone();
                self.yield_drill(now);
                self.start_runbook(RunbookKind::Failback, Some(to), force, reasons, now);
                Ok(())
            }
            Command::StartDrill { to } => {
                let name = format!("drill at {to}");
                if let Some(rb) = &self.journal.runbook {
                    return refuse(
                        name,
                        format!("runbook {} ({}) is in progress", rb.id, rb.kind),
                    );
                }
                if self.cfg.site_index(&to).is_none() {
                    return refuse(name, format!("there is no site {to}"));
                }
                self.start_runbook(
                    RunbookKind::Drill,
                    Some(to),
                    false,
                    vec![Reason::Operator],
                    now,
                );
                Ok(())
            }
            Command::StopDrill => {
                let Some(rb) = &self.journal.runbook else {
                    return refuse("stop drill".into(), "no drill is running".into());
                };
                if rb.kind != RunbookKind::Drill {
                    return refuse(
                        "stop drill".into(),
                        format!("runbook {} is a {}", rb.id, rb.kind),
                    );
                }
                self.stop_drill("stopped by an operator", now);
                Ok(())
            }
            Command::Resume(how) => {
                let held = self.journal.runbook.as_ref().and_then(|rb| rb.held.clone());
                if held.is_none() {
                    return refuse(format!("resume ({how:?})"), "no runbook is held".into());
                }
                if let Some(rb) = self.journal.runbook.as_mut() {
                    rb.held = None;
                }
                self.bump();
                match how {
                    Resume::Retry => {
                        self.set_attempt(0);
                        self.launch_next(now);
                    }
                    Resume::Skip => {
                        self.finish_step(StepStatus::Skipped, "skipped by an operator".into(), now)
                    }
                    Resume::Abort => {
                        self.finish_step(StepStatus::Failed, "aborted by an operator".into(), now)
                    }
                }
                Ok(())
            }
        }
    }

    /// Refuses a switch command while a runbook other than a drill runs.
    fn check_room(&self, name: &str) -> Result<(), Refused> {
        match &self.journal.runbook {
            Some(rb) if rb.kind != RunbookKind::Drill => Err(Refused {
                command: name.to_owned(),
                reason: format!(
                    "runbook {} ({} to {}) is in progress",
                    rb.id,
                    rb.kind,
                    rb.to.as_ref().map(|s| s.as_str()).unwrap_or("-")
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A switch command that will go ahead ends a running drill first.
    fn yield_drill(&mut self, now: Instant) {
        if self
            .journal
            .runbook
            .as_ref()
            .is_some_and(|rb| rb.kind == RunbookKind::Drill)
        {
            self.abandon_drill(now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Runbooks
    // ----------------------------------------------------------------------------------------

    fn start_runbook(
        &mut self,
        kind: RunbookKind,
        to: Option<SiteId>,
        forced: bool,
        reasons: Vec<Reason>,
        now: Instant,
    ) {
        let id = self.journal.next_runbook;
        self.journal.next_runbook += 1;
        let from = (kind != RunbookKind::Bootstrap).then(|| self.journal.active.clone());
        let active = self.active_index();
        let (detect, decide) = match (kind, self.health.sites[active].down_at) {
            (RunbookKind::Failover | RunbookKind::AllDown, Some(down_at)) => {
                let since = self.health.sites[active].failing_since.unwrap_or(down_at);
                (
                    down_at.saturating_duration_since(since),
                    now.saturating_duration_since(down_at),
                )
            }
            _ => (Duration::ZERO, Duration::ZERO),
        };
        let rpo = to
            .as_ref()
            .and_then(|t| self.cfg.site_index(t))
            .and_then(|si| self.lag[si].iter().flatten().max().copied());

        let wall = self.wall(now);
        if kind != RunbookKind::Drill {
            self.journal.epoch = self.journal.epoch.next();
            match kind {
                RunbookKind::AllDown => {
                    self.journal.serving = match self.cfg.policy().all_down {
                        AllDownPolicy::FailClosed => Serving::Withdrawn,
                        _ => Serving::AllSites,
                    };
                }
                _ => {
                    self.journal.serving = Serving::Active;
                    if let Some(t) = &to {
                        self.journal.active = t.clone();
                    }
                }
            }
            if kind != RunbookKind::Bootstrap {
                self.journal.last_switch = Some(wall);
                self.last_switch = Some(now);
                self.journal.switches += 1;
            }
        }
        let epoch = self.journal.epoch;
        let mut steps = self.plan(kind, from.as_ref(), to.as_ref(), epoch, id);
        // A drill abandoned for this runbook cleans up after it, under the new epoch.
        for mut s in std::mem::take(&mut self.journal.pending_cleanup) {
            if let Step::SwitchDns { change } = &mut s.step {
                change.epoch = epoch;
            }
            steps.push(s);
        }
        self.events.push_back(Event::Decision {
            runbook: id,
            kind,
            from: from.clone(),
            to: to.clone(),
            epoch,
            forced,
            reasons: reasons.clone(),
        });
        tracing::info!(
            service = %self.cfg.name(), runbook = id, %kind, %epoch,
            "decision: {}", explain(&reasons)
        );
        self.journal.runbook = Some(Runbook {
            id,
            kind,
            epoch,
            from,
            to,
            forced,
            steps,
            done: Vec::new(),
            decided_at: wall,
            detect,
            decide,
            rpo,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            held: None,
            attempt: 0,
        });
        self.last_note = None;

        self.step_started = None;
        self.orphan_in_flight();
        self.timers.stop(Timer::Retry);

        self.timers.stop(Timer::Dwell);
        self.timers.stop(Timer::HoldDown);
        self.bump();
        self.launch_next(now);
        self.refresh_view();
    }

    /// Expands the configured steps of a runbook into concrete steps.
    fn plan(
        &self,
        kind: RunbookKind,
        from: Option<&SiteId>,
        to: Option<&SiteId>,
        epoch: Epoch,
        id: u64,
    ) -> Vec<PlannedStep> {
        let drill = kind == RunbookKind::Drill;
        let dns_only = matches!(
            kind,
            RunbookKind::Bootstrap | RunbookKind::AllDown | RunbookKind::Restore
        );
        let change = self.dns_change(kind, to, epoch, false);
        let mut out = Vec::new();
        let mut promoted = false;
        for policy in self.cfg.runbook(kind) {
            let name = policy.step;
            if dns_only && !matches!(name, StepName::SwitchDns | StepName::VerifyDns) {
                continue;
            }
            let mut push = |step: Step| {
                out.push(PlannedStep {
                    name,
                    step,
                    policy: *policy,
                    drill,
                })
            };
            let resources = self.cfg.resources();
            match (name, from, to) {
                (StepName::Fence, Some(from), Some(to)) if !drill && from != to => {
                    for r in resources {
                        push(Step::Fence {
                            resource: r.clone(),
                            site: from.clone(),
                        });
                    }
                }
                (StepName::Promote, _, Some(to)) => {
                    promoted = true;
                    for r in resources {
                        push(Step::Promote {
                            resource: r.clone(),
                            site: to.clone(),
                        });
                    }
                }
                (StepName::Reprotect | StepName::CatchUp, from, to) => {
                    let primary = if promoted { to } else { from };
                    if let Some(primary) = primary.filter(|_| !drill) {
                        for r in resources {
                            push(Step::Reprotect {
                                resource: r.clone(),
                                primary: primary.clone(),
                                wait: name == StepName::CatchUp,
                            });
                        }
                    }
                }
                (StepName::VerifyIntegrity, _, Some(to)) => {
                    for r in resources {
                        push(Step::Integrity {
                            resource: r.clone(),
                            site: to.clone(),
                            request: IntegrityRequest::Check,
                        });
                    }
                }
                (StepName::WriteMarkers, _, Some(to)) => {
                    let label = if drill {
                        format!("drill-{id}")
                    } else {
                        format!("epoch-{epoch}")
                    };
                    for r in resources {
                        push(Step::Integrity {
                            resource: r.clone(),
                            site: to.clone(),
                            request: IntegrityRequest::Mark {
                                label: label.clone(),
                            },
                        });
                    }
                }
                (StepName::VerifyMarkers, _, Some(to)) => {
                    for r in resources {
                        if let Some(m) = self.journal.markers.get(r) {
                            push(Step::Integrity {
                                resource: r.clone(),
                                site: to.clone(),
                                request: IntegrityRequest::Verify {
                                    expected: m.clone(),
                                },
                            });
                        }
                    }
                }
                (StepName::SwitchDns, _, _) => push(Step::SwitchDns {
                    change: change.clone(),
                }),
                (StepName::VerifyDns, _, _) => push(Step::VerifyDns {
                    change: change.clone(),
                }),
                (StepName::Cleanup, _, to) => out.extend(self.cleanup_steps(to, epoch, *policy)),
                _ => {}
            }
        }
        out
    }

    /// The steps that remove what a drill created.
    fn cleanup_steps(
        &self,
        to: Option<&SiteId>,
        epoch: Epoch,
        policy: crate::runbook::StepPolicy,
    ) -> Vec<PlannedStep> {
        let mut out = Vec::new();
        if let Some(to) = to {
            for r in self.cfg.resources() {
                out.push(PlannedStep {
                    name: StepName::Cleanup,
                    step: Step::Fence {
                        resource: r.clone(),
                        site: to.clone(),
                    },
                    policy,
                    drill: true,
                });
            }
        }
        let mut change = self.dns_change(RunbookKind::Drill, None, epoch, true);
        change.records = RecordSet::Empty;
        change.site = None;
        out.push(PlannedStep {
            name: StepName::Cleanup,
            step: Step::SwitchDns { change },
            policy,
            drill: true,
        });
        out
    }

    fn dns_change(
        &self,
        kind: RunbookKind,
        to: Option<&SiteId>,
        epoch: Epoch,
        cleanup: bool,
    ) -> DnsChange {
        let name = if kind == RunbookKind::Drill {
            self.cfg.drill_name().clone()
        } else {
            self.cfg.name().clone()
        };
        let site_records = |si: usize| {
            let s = &self.cfg.sites()[si];
            match (self.cfg.record_mode(), &s.alias) {
                (RecordMode::Alias, Some(a)) => RecordSet::Alias(a.clone()),
                _ => RecordSet::Addresses(s.addresses.clone()),
            }
        };
        let (records, site) = if cleanup {
            (RecordSet::Empty, None)
        } else if kind == RunbookKind::AllDown {
            match self.cfg.policy().all_down {
                AllDownPolicy::FailClosed => (RecordSet::Empty, None),
                _ => {
                    let all = self
                        .cfg
                        .sites()
                        .iter()
                        .flat_map(|s| s.addresses.iter().copied())
                        .collect();
                    (RecordSet::Addresses(all), None)
                }
            }
        } else {
            match to.and_then(|t| self.cfg.site_index(t)) {
                // A drill rehearses on its own name and makes no site active: its ownership
                // record names none, so the next drill may replace it under the same epoch.
                Some(si) if kind == RunbookKind::Drill => (site_records(si), None),
                Some(si) => (site_records(si), to.cloned()),
                None => (RecordSet::Empty, None),
            }
        };
        DnsChange {
            zone: self.cfg.zone().clone(),
            name,
            records,
            ttl: self.cfg.ttl(),
            epoch,
            site,
        }
    }

    fn current_step(&self) -> Option<&PlannedStep> {
        let rb = self.journal.runbook.as_ref()?;
        rb.steps.get(rb.next_index())
    }

    /// Hands out the next step of the runbook in progress (or finishes it).
    fn launch_next(&mut self, now: Instant) {
        let Some(rb) = &self.journal.runbook else {
            return;
        };
        if rb.held.is_some() || self.in_flight.is_some() || self.orphan.is_some() {
            return;
        }
        if rb.finished() {
            self.finish_runbook(Outcome::Completed, now, true);
            return;
        }
        let index = rb.next_index();
        self.step_started.get_or_insert(now);
        let Some(rb) = self.journal.runbook.as_mut() else {
            return;
        };
        rb.attempt += 1;
        let planned = &rb.steps[index];
        let action = Action {
            id: StepId {
                runbook: rb.id,
                index: index as u32,
                attempt: rb.attempt,
            },
            epoch: rb.epoch,
            kind: rb.kind,
            name: planned.name,
            step: planned.step.clone(),
            drill: planned.drill,
            timeout: planned.policy.timeout,
        };
        // The driver enforces the timeout; the watchdog only catches a result that never
        // comes back.
        let grace = (planned.policy.timeout / 10).max(Duration::from_secs(1));
        self.timers
            .set(Timer::Watchdog, now + planned.policy.timeout + grace);
        self.in_flight = Some(action.id);
        self.bump();
        self.events.push_back(Event::StepStarted {
            id: action.id,
            name: action.name,
            description: action.step.to_string(),
        });
        self.actions.push_back(action);
        self.refresh_view();
    }

    fn on_step_done(&mut self, d: StepDone, now: Instant) {
        if self.orphan == Some(d.id) {
            // The step of a runbook that ended while it ran: its result no longer matters,
            // but only now may the next action go out.
            self.orphan = None;
            self.timers.stop(Timer::Watchdog);
            self.launch_next(now);
            return;
        }
        if self.in_flight != Some(d.id) {
            tracing::debug!(id = %d.id, "result for a step not in flight ignored");
            return;
        }
        self.in_flight = None;
        self.timers.stop(Timer::Watchdog);
        let Some(planned) = self.current_step().cloned() else {
            return;
        };
        let result = match d.result {
            Ok(StepOutput::Integrity(report)) if !report.mismatches.is_empty() => {
                let list: Vec<String> = report.mismatches.iter().map(|m| m.to_string()).collect();
                Err(BackendError::Integrity(list.join("; ")))
            }
            Ok(StepOutput::Propagation(p)) if !p.complete() => {
                let behind: Vec<String> = p
                    .servers
                    .iter()
                    .filter(|s| !s.current)
                    .map(|s| format!("{} ({})", s.server, s.detail))
                    .collect();
                Err(BackendError::Unavailable(format!(
                    "not every server answers the new records yet: {}",
                    if behind.is_empty() {
                        "no server was asked".to_owned()
                    } else {
                        behind.join(", ")
                    }
                )))
            }
            other => other,
        };
        match result {
            Ok(output) => {
                let detail = self.absorb(&planned, output);
                self.finish_step(StepStatus::Done, detail, now);
            }
            Err(BackendError::Unsupported(what)) if planned.drill => {
                // A backend that cannot clone: the rehearsal goes on without this step.
                self.finish_step(
                    StepStatus::Skipped,
                    format!("not supported in a drill: {what}"),
                    now,
                );
            }
            Err(err) => {
                let policy = planned.policy;
                let budget_left = self.attempt() <= policy.retries;
                if err.is_transient() && (budget_left || policy.on_failure == OnFailure::Retry) {
                    let delay = self.backoff(policy.backoff, policy.max_backoff);
                    self.timers.set(Timer::Retry, now + delay);
                    self.events.push_back(Event::StepRetry {
                        id: d.id,
                        name: planned.name,
                        delay,
                        error: err.to_string(),
                    });
                    return;
                }
                let detail = format!("after {} attempt(s): {err}", self.attempt());
                match policy.on_failure {
                    OnFailure::Skip => self.finish_step(StepStatus::Skipped, detail, now),
                    OnFailure::Abort => self.finish_step(StepStatus::Failed, detail, now),
                    OnFailure::Hold | OnFailure::Retry => {
                        let Some(rb) = self.journal.runbook.as_mut() else {
                            return;
                        };
                        rb.held = Some(detail.clone());
                        let id = rb.id;
                        self.bump();
                        self.events.push_back(Event::Held {
                            runbook: id,
                            name: planned.name,
                            reason: detail,
                        });
                        self.refresh_view();
                    }
                }
            }
        }
    }

    /// Keeps what a successful step returned; returns its summary.
    fn absorb(&mut self, planned: &PlannedStep, output: StepOutput) -> String {
        match (&planned.step, output) {
            (
                Step::Integrity {
                    resource,
                    request: IntegrityRequest::Mark { .. },
                    ..
                },
                StepOutput::Integrity(report),
            ) => {
                let n = report.manifest.entries.len();
                if !planned.drill {
                    self.journal
                        .markers
                        .insert(resource.clone(), report.manifest);
                }
                format!("{n} marker(s) written")
            }
            (Step::Integrity { .. }, StepOutput::Integrity(report)) => {
                format!("{} entries verified", report.manifest.entries.len())
            }
            (Step::Promote { .. }, StepOutput::Promoted(p)) => {
                if let (Some(rpo), Some(rb)) = (p.rpo, self.journal.runbook.as_mut()) {
                    rb.rpo = Some(rb.rpo.map_or(rpo, |r| r.max(rpo)));
                }
                p.position
                    .map(|pos| format!("promoted at {pos}"))
                    .unwrap_or_default()
            }
            (_, StepOutput::Propagation(p)) => {
                let slowest = p
                    .servers
                    .iter()
                    .map(|s| s.latency)
                    .max()
                    .unwrap_or_default();
                format!(
                    "{} server(s) current, slowest after {}",
                    p.servers.len(),
                    humantime::format_duration(Duration::from_millis(slowest.as_millis() as u64))
                )
            }
            _ => String::new(),
        }
    }

    fn backoff(&mut self, base: Duration, max: Duration) -> Duration {
        let exp = self.attempt().saturating_sub(1).min(20);
        let d = base.saturating_mul(1u32 << exp).min(max);
        // Up to 20 % of jitter, from the configured seed.
        let jitter = self.rng.random_range(0.0..0.2);
        d.mul_f64(1.0 + jitter).min(max.max(base))
    }

    fn finish_step(&mut self, status: StepStatus, detail: String, now: Instant) {
        let attempts = self.attempt();
        let started = self.step_started.take().unwrap_or(now);
        let Some(rb) = self.journal.runbook.as_mut() else {
            return;
        };
        let index = rb.next_index();
        let Some(planned) = rb.steps.get(index) else {
            return;
        };
        let record = StepRecord {
            name: planned.name,
            description: planned.step.to_string(),
            status,
            attempts,
            duration: now.saturating_duration_since(started),
            detail,
        };
        let id = rb.id;
        rb.done.push(record.clone());
        rb.attempt = 0;

        self.timers.stop(Timer::Retry);
        self.bump();
        self.events.push_back(Event::StepFinished {
            runbook: id,
            record,
        });
        if status == StepStatus::Failed {
            self.finish_runbook(Outcome::Aborted, now, true);
        } else {
            self.launch_next(now);
        }
    }

    fn finish_runbook(&mut self, outcome: Outcome, now: Instant, decide: bool) {
        let Some(rb) = self.journal.runbook.take() else {
            return;
        };
        let wall = self.wall(now);
        let mut phases = vec![
            PhaseTime {
                phase: Phase::Detect,
                duration: rb.detect,
            },
            PhaseTime {
                phase: Phase::Decide,
                duration: rb.decide,
            },
        ];
        for r in &rb.done {
            let phase = r.name.phase();
            match phases.last_mut() {
                Some(last) if last.phase == phase => last.duration += r.duration,
                _ => phases.push(PhaseTime {
                    phase,
                    duration: r.duration,
                }),
            }
        }
        let run = wall.duration_since(rb.decided_at).unwrap_or_default();
        if rb.kind == RunbookKind::Failback && outcome == Outcome::Completed {
            // The markers written while away were verified at home.
            self.journal.markers.clear();
        }
        let report = SwitchReport {
            runbook: rb.id,
            kind: rb.kind,
            outcome,
            from: rb.from,
            to: rb.to,
            epoch: rb.epoch,
            forced: rb.forced,
            decided_at: rb.decided_at,
            finished_at: wall,
            rto: rb.detect + rb.decide + run,
            phases,
            rpo: rb.rpo,
            steps: rb.done,
            reasons: rb.reasons,
        };
        tracing::info!(
            service = %self.cfg.name(), runbook = report.runbook, kind = %report.kind,
            outcome = ?outcome, rto_ms = report.rto.as_millis() as u64, "runbook finished"
        );
        self.events.push_back(Event::Finished(report));
        self.orphan_in_flight();

        self.step_started = None;
        self.timers.stop(Timer::Retry);

        self.last_note = None;
        self.bump();
        self.refresh_view();
        if decide {
            self.decide(now);
        }
    }

    /// Replaces the rest of a drill by its cleanup.
    fn stop_drill(&mut self, why: &str, now: Instant) {
        let Some(rb) = self.journal.runbook.as_ref() else {
            return;
        };
        let next = rb.next_index();
        if rb
            .steps
            .get(next)
            .is_some_and(|s| s.name == StepName::Cleanup)
        {
            return;
        }
        let fallback = self.cleanup_steps(rb.to.as_ref(), rb.epoch, cleanup_policy(&self.cfg));
        let Some(rb) = self.journal.runbook.as_mut() else {
            return;
        };
        let remaining = rb.steps.split_off(next);
        let (mut cleanup, skipped): (Vec<_>, Vec<_>) = remaining
            .into_iter()
            .partition(|s| s.name == StepName::Cleanup);
        if cleanup.is_empty() {
            cleanup = fallback;
        }
        for s in skipped {
            rb.done.push(StepRecord {
                name: s.name,
                description: s.step.to_string(),
                status: StepStatus::Skipped,
                attempts: 0,
                duration: Duration::ZERO,
                detail: why.to_owned(),
            });
            rb.steps.push(s);
        }
        rb.steps.extend(cleanup);
        rb.held = None;
        rb.attempt = 0;
        self.orphan_in_flight();

        self.step_started = None;
        self.timers.stop(Timer::Retry);

        self.bump();
        self.launch_next(now);
    }

    /// A production switch is needed while a drill runs: the drill ends at once (reported as
    /// aborted) and its cleanup runs after the next runbook's own steps.
    fn abandon_drill(&mut self, now: Instant) {
        let Some(rb) = self.journal.runbook.as_mut() else {
            return;
        };
        let next = rb.next_index();
        let mut cleanup: Vec<PlannedStep> = rb.steps[next..]
            .iter()
            .filter(|s| s.name == StepName::Cleanup)
            .cloned()
            .collect();
        if cleanup.is_empty() {
            let to = rb.to.clone();
            let epoch = rb.epoch;
            cleanup = self.cleanup_steps(to.as_ref(), epoch, cleanup_policy(&self.cfg));
        }
        self.journal.pending_cleanup = cleanup;
        self.finish_runbook(Outcome::Aborted, now, false);
    }

    /// The runbook of the action in flight ended: keep waiting for its result (at most one
    /// action is ever outstanding) but ignore it.
    fn orphan_in_flight(&mut self) {
        if let Some(id) = self.in_flight.take() {
            self.orphan = Some(id);
        }
        if self.orphan.is_none() {
            self.timers.stop(Timer::Watchdog);
        }
    }

    /// Attempts made at the current step of the runbook in progress.
    fn attempt(&self) -> u32 {
        self.journal.runbook.as_ref().map_or(0, |rb| rb.attempt)
    }

    fn set_attempt(&mut self, attempt: u32) {
        if let Some(rb) = self.journal.runbook.as_mut() {
            rb.attempt = attempt;
        }
    }

    fn bump(&mut self) {
        self.journal_version = self.journal_version.wrapping_add(1);
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.origin.1 + now.saturating_duration_since(self.origin.0)
    }

    fn refresh_view(&mut self) {
        let v = &mut self.view;
        v.active = self.journal.active.clone();
        v.epoch = self.journal.epoch;
        v.serving = self.journal.serving;
        v.frozen = self.journal.frozen;
        v.switches = self.journal.switches;
        v.runbook = self.journal.runbook.as_ref().map(|rb| RunbookView {
            id: rb.id,
            kind: rb.kind,
            to: rb.to.clone(),
            step: rb.next_index(),
            steps: rb.steps.len(),
            name: rb.steps.get(rb.next_index()).map(|s| s.name),
            held: rb.held.clone(),
        });
        let mut sites = Vec::with_capacity(self.cfg.sites().len());
        for (si, s) in self.cfg.sites().iter().enumerate() {
            let mut reasons = self.health.reasons(&self.cfg, si);
            let eligible = self.eligibility(si, true);
            let ok = eligible.is_ok();
            reasons.push(match eligible {
                Ok(r) | Err(r) => r,
            });
            sites.push(SiteView {
                id: s.id.clone(),
                priority: s.priority,
                health: self.health.sites[si].health,
                eligible: ok,
                lag: self.lag[si].iter().flatten().max().copied(),
                reasons,
            });
        }
        self.view.sites = sites;
    }
}

fn cleanup_policy(cfg: &ServiceConfig) -> crate::runbook::StepPolicy {
    cfg.runbook(RunbookKind::Drill)
        .iter()
        .find(|p| p.step == StepName::Cleanup)
        .copied()
        .unwrap_or_else(|| crate::runbook::StepPolicy::default_for(StepName::Cleanup))
}

fn check_journal(cfg: &ServiceConfig, j: &Journal) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Journal(m));
    if j.version != JOURNAL_VERSION {
        return bad(format!(
            "version {} (this build reads version {JOURNAL_VERSION})",
            j.version
        ));
    }
    if &j.service != cfg.name() {
        return bad(format!("it belongs to {}, not {}", j.service, cfg.name()));
    }
    if cfg.site(&j.active).is_none() {
        return bad(format!("its active site {} is not configured", j.active));
    }
    if let Some(rb) = &j.runbook {
        for s in rb.from.iter().chain(rb.to.iter()) {
            if cfg.site(s).is_none() {
                return bad(format!(
                    "runbook {} names site {s}, which is not configured",
                    rb.id
                ));
            }
        }
        if rb.done.len() > rb.steps.len() {
            return bad(format!(
                "runbook {} has more finished steps than steps",
                rb.id
            ));
        }
    }
    Ok(())
}
