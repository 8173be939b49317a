//! The driver loop of a [`Controller`]: runs one service's [`Election`] on tokio.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::pending;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{self, JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::controller::{Controller, PolledStatus, REPORTS_KEPT, Reply, Request, Shared};
use crate::config::ServiceConfig;
use crate::dns::{DnsBackend, DnsChange, Published};
use crate::election::{Command, Election, Input, StepDone, StepOutput};
use crate::epoch::Epoch;
use crate::error::{BackendError, ConfigError, Error, Problems, Refused};
use crate::event::{Event, SwitchReport};
use crate::id::ResourceId;
use crate::journal::Journal;
use crate::reason::Reason;
use crate::replication::ReplicationBackend;
use crate::runbook::{Action, RunbookKind, Step, StepId, StepName, StepPolicy};
use crate::store::StateStore;
use crate::view::ServiceView;

/// The backends a [`Driver`] executes actions on, and where it keeps the journal.
///
/// Kept for programs written before [`Controller::builder`]; hand the backends to the
/// builder instead.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Publishes the service's name (`switch_dns`, `verify_dns`); also read once at start by a
    /// controller that has no journal yet.
    pub dns: Arc<dyn DnsBackend>,
    /// Fences, promotes, reprotects and checks the consistency group. Required when the
    /// configuration lists resources.
    pub replication: Option<Arc<dyn ReplicationBackend>>,
    /// Where the journal survives a crash, e.g. a [`FileStore`](super::FileStore).
    pub store: Arc<dyn StateStore>,
}

/// How a driver is started: by the builder (which owns the background work), or by a
/// program written before it.
#[derive(Debug, Default)]
pub(super) struct Start {
    /// Run [`ReplicationBackend::run`] for every resource while the driver runs.
    pub(super) background: bool,
    /// The event channel, when someone subscribed before the start.
    pub(super) events: Option<broadcast::Sender<Event>>,
}

/// The longest an on-demand replication status read (after a runbook, or for a decision the
/// RPO guard blocks for an unknown lag) may take, when the poll interval is longer.
const FRESH_READ_LIMIT: Duration = Duration::from_secs(5);

/// The first delay before the published records are checked again after a failed check;
/// it doubles with each failure, up to [`RECHECK_MAX`].
const RECHECK_FIRST: Duration = Duration::from_secs(1);

/// The longest delay between two checks of the published records that fail.
const RECHECK_MAX: Duration = Duration::from_secs(60);

/// The knobs of a [`Driver`]; [`Default`] suits most services.
///
/// Kept for programs written before [`Controller::builder`], whose setters these are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    /// Poll [`ReplicationBackend::status`] of every resource this often and feed the lag to
    /// the election (the RPO guard needs it); the status is also read at once when a runbook
    /// finishes and when the RPO guard blocks a failover for an unknown lag. `None` (the
    /// default): replication reports come only through [`Controller::replication`].
    pub replication_poll: Option<Duration>,
    /// How many reports and commands may wait for the driver before
    /// [`Controller::report`] waits for room (default 1024).
    pub inbox: usize,
    /// How many events a slow subscriber may fall behind before it misses some (default
    /// 1024; see [`broadcast::Receiver`]).
    pub events: usize,
    /// After a failed save of a finished runbook (no action waiting on it), try again after
    /// this long (default 1 s). A save before an action is retried by the runbook's own policy.
    pub save_retry: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            replication_poll: None,
            inbox: 1024,
            events: 1024,
            save_retry: Duration::from_secs(1),
        }
    }
}

impl DriverOptions {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        if let Some(d) = self.replication_poll.filter(|d| d.is_zero()) {
            problems.push(
                "replication_poll",
                humantime::format_duration(d),
                "must be longer than zero",
            );
        }
        if self.inbox == 0 {
            problems.push("inbox", self.inbox, "must be at least 1");
        }
        if self.events == 0 {
            problems.push("events", self.events, "must be at least 1");
        }
        if self.save_retry.is_zero() {
            problems.push(
                "save_retry",
                humantime::format_duration(self.save_retry),
                "must be longer than zero",
            );
        }
        problems.finish()
    }
}

/// The monotonic clock (tokio's, so paused test time works) and the wall clock, read together
/// once at start; wall times are derived from the monotonic clock after that.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: Instant,
    wall: SystemTime,
}

impl Clock {
    // The runtime is the one place in idns-core allowed to read the wall clock (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn start() -> Self {
        Self {
            origin: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.wall + at.saturating_duration_since(self.origin)
    }
}

/// The loop of a [`Controller`]: runs one service's [`Election`] on tokio, like quinn's
/// `ConnectionDriver` runs a connection — a thin loop around the sans-IO state machine.
///
/// - **Inputs**: probe and replication reports and operator commands arrive through the
///   [`Controller`]; replication status is polled when
///   [`DriverOptions::replication_poll`] says so, and published. With polling on, the status
///   is also read at once when a runbook finishes (its roles changed) and when the RPO guard
///   blocks a failover because a lag is unknown; a failover or failback command (unforced)
///   that arrives while such a read is in flight is answered after it, so a second failover
///   right after a failback is judged on the lag read after the failback. The driver does not
///   run probes: whoever runs them sends their reports to the controller.
/// - **Actions**: before executing an action, the journal is saved to the
///   [`StateStore`] whenever it changed, so a restarted controller resumes the same runbook
///   and never repeats a finished step. A failed save does not execute the action: it fails
///   as [`BackendError::Unavailable`] and the runbook's retry policy applies. A
///   [`BackendError::Conflict`] (another controller wrote the store) stops the driver with
///   that error. Each action runs in its own task, cut off after its timeout
///   ([`BackendError::Timeout`]); the backend is given a little less
///   ([`Action::context`](crate::Action::context)), so a backend that waits reports what it
///   found before it is cut off. Retries and backoff are the election's.
/// - **Outputs**: every event is logged and broadcast ([`Controller::subscribe`]); the
///   current [`ServiceView`] ([`Controller::view`]), the reports of finished runbooks
///   ([`Controller::wait_for_runbook`]), the polled replication status
///   ([`Controller::replication_status`]) and, at the end, the driver's result
///   ([`Controller::stopped`]) are published in watch channels.
/// - **Background work**: when started by [`Controller::builder`], the replication
///   backend's [`run`](ReplicationBackend::run) for each resource, stopped with the driver.
/// - **Time**: tokio's clock, so tests run in paused virtual time; the wall clock is read
///   once at start.
///
/// # Starting
/// The journal is loaded from the store. Without one, the driver reads what the DNS
/// publishes: when it holds an ownership record, the controller adopts its site and epoch
/// ([`Journal::adopt`]) instead of publishing the home site again at a stale epoch;
/// otherwise the election bootstraps the home site. A store or DNS that cannot be read then
/// fails the start.
///
/// A driver resumed from a stored journal checks that the DNS publishes what the journal
/// says ([`Election::published`]): when the records are missing, point at another site, or
/// carry a lower epoch, it publishes them again at the journal's epoch (never a lower one)
/// and emits [`Event::Republished`] saying why. It does not while the runbook in progress
/// has yet to publish the name (its own `switch_dns` step will), nor when the DNS holds a
/// higher epoch than the journal (another controller decided since: that is logged). A DNS
/// that cannot be read does not stop the driver: the check is logged and tried again later.
///
/// # Stopping
/// [`Controller::shutdown`], or dropping every controller, stops the driver gracefully and
/// `run` returns `Ok`. Aborting its task stops it at once; the journal saved before the last
/// action lets the next driver resume.
///
/// Public only for programs written before [`Controller::builder`], which replaces
/// [`Driver::new`], [`Driver::start`] and [`Driver::run`].
#[derive(Debug)]
pub struct Driver {
    election: Election,
    backends: Backends,
    options: DriverOptions,
    clock: Clock,
    inbox: mpsc::Receiver<Request>,
    shutdown: watch::Receiver<bool>,
    events: broadcast::Sender<Event>,
    view: watch::Sender<ServiceView>,
    /// The reports of the last finished runbooks.
    reports: watch::Sender<VecDeque<SwitchReport>>,
    /// The last status read of each resource.
    replication: watch::Sender<BTreeMap<ResourceId, PolledStatus>>,
    /// How the driver ended.
    end: watch::Sender<Option<Result<(), Error>>>,
    /// The store's revision of the last save (or load).
    revision: Option<u64>,
    /// The election's journal version that the store holds.
    saved_version: Option<u64>,
    /// When to try again a save that failed with no action waiting on it.
    save_retry_at: Option<Instant>,
    /// Actions being executed, and the step of each task.
    running: JoinSet<StepDone>,
    running_ids: HashMap<task::Id, StepId>,
    /// A replication status read in progress (several when an on-demand read overtook a
    /// periodic one, which is then cancelled); each says whether it was on demand.
    polls: JoinSet<(bool, Vec<(ResourceId, PolledStatus)>)>,
    /// An on-demand status read is in flight: unforced switch commands wait for it.
    fresh_read: bool,
    /// A switch command waiting for that read.
    deferred: Option<(Command, Reply)>,
    /// Whether the journal was loaded from the store (then the published records are
    /// checked against it).
    resumed: bool,
    /// The check of the published records, and their republication.
    checks: JoinSet<DnsCheck>,
    /// When to check the published records again after a failure.
    check_at: Option<Instant>,
    /// Checks of the published records that failed in a row.
    check_failures: u32,
    /// Whether to run the replication backend's background work.
    start_background: bool,
    /// The replication backend's background work, one task per resource.
    background: JoinSet<(ResourceId, Result<(), BackendError>)>,
}

impl Driver {
    /// Loads the journal and spawns the driver; replaced by [`Controller::builder`] and
    /// [`ControllerBuilder::start`](super::ControllerBuilder::start). Unlike the builder, it
    /// does not run the replication backend's background work.
    pub async fn start(
        cfg: ServiceConfig,
        backends: Backends,
        options: DriverOptions,
    ) -> Result<(Controller, JoinHandle<Result<(), Error>>), Error> {
        let (driver, controller) = Self::new(cfg, backends, options).await?;
        let task = tokio::spawn(driver.run());
        controller.set_task(task.abort_handle());
        Ok((controller, task))
    }

    /// Loads the journal and returns the driver to [`run`](Self::run), and its controller;
    /// replaced by [`Controller::builder`] (subscribe on the builder to see every event from
    /// the first). Unlike the builder, it does not run the replication backend's background
    /// work.
    pub async fn new(
        cfg: ServiceConfig,
        backends: Backends,
        options: DriverOptions,
    ) -> Result<(Driver, Controller), Error> {
        Self::prepare(cfg, backends, options, Start::default()).await
    }

    /// Loads the journal (or adopts what the DNS publishes), starts the election, and makes
    /// the driver and its controller.
    pub(super) async fn prepare(
        cfg: ServiceConfig,
        backends: Backends,
        options: DriverOptions,
        start: Start,
    ) -> Result<(Driver, Controller), Error> {
        options.validate()?;
        if !cfg.resources().is_empty() && backends.replication.is_none() {
            let list: Vec<&str> = cfg.resources().iter().map(|r| r.as_str()).collect();
            return Err(ConfigError::single(
                "resources",
                list.join(", "),
                "a replication backend is needed to fail these over",
            )
            .into());
        }
        let clock = Clock::start();
        let stored = backends.store.load().await?;
        let revision = stored.as_ref().map(|s| s.revision);
        let resumed = stored.is_some();
        let journal = match &stored {
            Some(s) => Some(s.journal.clone()),
            None => adopt(&cfg, backends.dns.as_ref()).await?,
        };
        let election = Election::new(cfg.clone(), journal, clock.origin.into_std(), clock.wall)?;
        // The store already holds this journal unless the election changed it on the way in
        // (or it was adopted from the DNS): then the first pass saves it.
        let saved_version = stored
            .filter(|s| &s.journal == election.journal())
            .map(|_| election.journal_version());
        tracing::info!(
            service = %election.config().name(),
            active = %election.view().active,
            epoch = %election.view().epoch,
            revision = ?revision,
            "driver starting"
        );

        let (inbox_tx, inbox) = mpsc::channel(options.inbox);
        let events = start
            .events
            .unwrap_or_else(|| broadcast::channel(options.events).0);
        let (view, view_rx) = watch::channel(election.view().clone());
        let (reports, reports_rx) = watch::channel(VecDeque::new());
        let (replication, replication_rx) = watch::channel(BTreeMap::new());
        let (end, end_rx) = watch::channel(None);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let controller = Controller::new(
            inbox_tx,
            Shared {
                config: cfg,
                events: events.downgrade(),
                view: view_rx,
                reports: reports_rx,
                replication: replication_rx,
                end: end_rx,
                shutdown: shutdown_tx,
                task: OnceLock::new(),
            },
        );
        let driver = Driver {
            election,
            backends,
            options,
            clock,
            inbox,
            shutdown,
            events,
            view,
            reports,
            replication,
            end,
            revision,
            saved_version,
            save_retry_at: None,
            running: JoinSet::new(),
            running_ids: HashMap::new(),
            polls: JoinSet::new(),
            fresh_read: false,
            deferred: None,
            resumed,
            checks: JoinSet::new(),
            check_at: None,
            check_failures: 0,
            start_background: start.background,
            background: JoinSet::new(),
        };
        Ok((driver, controller))
    }

    /// Runs the loop until a graceful shutdown (`Ok`) or an error that stops the driver: a
    /// [`BackendError::Conflict`] from the store, or a failed final save.
    pub async fn run(mut self) -> Result<(), Error> {
        self.spawn_background();
        let result = self.run_loop().await;
        // The background work stops with the driver.
        self.background.shutdown().await;
        let service = self.election.config().name();
        match &result {
            Ok(()) => tracing::info!(%service, "driver stopped"),
            Err(e) => tracing::error!(%service, error = %e, "driver stopped"),
        }
        self.end.send_replace(Some(result.clone()));
        result
    }

    /// Starts the replication backend's background work, once per resource.
    fn spawn_background(&mut self) {
        let Some(replication) = self.backends.replication.clone() else {
            return;
        };
        if !self.start_background {
            return;
        }
        for resource in self.election.config().resources() {
            let replication = replication.clone();
            let resource = resource.clone();
            self.background.spawn(async move {
                let result = replication.run(&resource).await;
                (resource, result)
            });
        }
    }

    async fn run_loop(&mut self) -> Result<(), Error> {
        let mut poll = self.replication_interval();
        let mut stopping = false;
        if self.resumed {
            self.check_published();
        }
        self.process(stopping).await?;
        loop {
            if stopping && self.running.is_empty() {
                break;
            }
            let deadline = self.election.poll_timeout().map(Instant::from_std);
            let save_retry = self.save_retry_at;
            let check_at = self.check_at;
            let mut reply = None;
            tokio::select! {
                biased;
                _ = self.shutdown.changed(), if !stopping => {
                    // An error means every handle is gone: stop just the same.
                    stopping = self.begin_shutdown("asked to shut down");
                }
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    if let Some(done) = self.reap(joined) {
                        self.feed(Input::StepDone(done));
                    }
                }
                () = sleep_until(deadline), if !stopping && deadline.is_some() => {
                    // Never tell the election a time before the deadline it asked for.
                    let now = self.clock.now();
                    let now = deadline.map_or(now, |d| now.max(d.into_std()));
                    self.election.handle_timeout(now);
                }
                () = sleep_until(save_retry), if save_retry.is_some() => self.save_retry_at = None,
                Some(joined) = self.polls.join_next(), if !stopping && !self.polls.is_empty() => {
                    reply = self.on_polled(joined);
                }
                () = tick(&mut poll), if !stopping && self.polls.is_empty() => self.spawn_poll(false),
                Some(joined) = self.checks.join_next(), if !stopping && !self.checks.is_empty() => {
                    self.on_checked(joined);
                }
                () = sleep_until(check_at), if !stopping && check_at.is_some() => {
                    self.check_at = None;
                    self.check_published();
                }
                Some(joined) = self.background.join_next(), if !self.background.is_empty() => {
                    log_background(joined);
                }
                // Last, so that a flood of reports cannot hold back timers and step results;
                // not while a command waits for a status read, so requests keep their order.
                request = self.inbox.recv(), if !stopping && self.deferred.is_none() => match request {
                    Some(request) => reply = self.on_request(request),
                    None => stopping = self.begin_shutdown("every handle is gone"),
                },
            }
            let processed = self.process(stopping).await;
            // Answer a command once its effects are saved, started and in the view.
            if let Some((tx, result)) = reply {
                // The caller may have given up waiting; the command stands all the same.
                let _ = tx.send(result);
            }
            processed?;
        }
        // Whatever the last result changed (a finished step, a finished runbook).
        let saved = self.persist().await;
        self.publish();
        saved.map_err(Error::Backend)
    }

    fn begin_shutdown(&mut self, why: &str) -> bool {
        tracing::info!(
            service = %self.election.config().name(),
            in_flight = self.running.len(),
            "{why}: shutting down"
        );
        self.inbox.close();
        // A command that waited for a status read is not carried out: its caller gets
        // `Error::Stopped`.
        self.deferred = None;
        true
    }

    /// Feeds a request; for a command, returns where its answer goes and the answer. An
    /// unforced switch command waits while an on-demand status read is in flight, so the
    /// RPO guard judges it on the lag read after the last runbook.
    fn on_request(&mut self, request: Request) -> Option<(Reply, Result<(), Refused>)> {
        match request {
            Request::Report(input) => {
                self.feed(input);
                None
            }
            Request::Command(command, reply) if self.fresh_read && wants_lag(&command) => {
                tracing::debug!(
                    ?command,
                    "waiting for the replication status read in flight"
                );
                self.deferred = Some((command, reply));
                None
            }
            Request::Command(command, reply) => Some(self.command(command, reply)),
            Request::Plan(command, reply) => {
                let plan = self.election.plan(command, self.clock.now());
                // The asker may have gone; a plan changes nothing, so nothing is lost.
                let _ = reply.send(plan);
                None
            }
        }
    }

    fn command(&mut self, command: Command, reply: Reply) -> (Reply, Result<(), Refused>) {
        let now = self.clock.now();
        let result = self.election.command(command, now);
        (reply, result)
    }

    /// Takes the result of a status read: publishes what it read and feeds it to the
    /// election; once no on-demand read is in flight, carries out the command that waited
    /// for it.
    fn on_polled(
        &mut self,
        joined: Result<(bool, Vec<(ResourceId, PolledStatus)>), JoinError>,
    ) -> Option<(Reply, Result<(), Refused>)> {
        match joined {
            Ok((fresh, polled)) => {
                if fresh {
                    self.fresh_read = false;
                }
                self.feed_polled(polled);
            }
            // A periodic read that an on-demand one replaced.
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::warn!(error = %e, "replication status poll failed"),
        }
        if self.polls.is_empty() {
            self.fresh_read = false;
        }
        if self.fresh_read {
            return None;
        }
        let (command, reply) = self.deferred.take()?;
        Some(self.command(command, reply))
    }

    /// Publishes the status read by a poll and feeds it to the election.
    fn feed_polled(&mut self, polled: Vec<(ResourceId, PolledStatus)>) {
        if polled.is_empty() {
            return;
        }
        self.replication.send_modify(|map| {
            for (resource, read) in &polled {
                map.insert(resource.clone(), read.clone());
            }
        });
        for (_, read) in polled {
            for report in read.status.reports(read.at) {
                self.feed(Input::Replication(report));
            }
        }
    }

    /// Feeds a report or a step result (never refused).
    fn feed(&mut self, input: Input) {
        let now = self.clock.now();
        self.election.handle(input, now);
    }

    /// After every input: save and execute the actions, save what changed, publish the events
    /// and the view.
    async fn process(&mut self, stopping: bool) -> Result<(), Error> {
        let result = self.run_actions(stopping).await;
        self.publish();
        result
    }

    async fn run_actions(&mut self, stopping: bool) -> Result<(), Error> {
        let mut failed = false;
        while let Some(action) = self.election.poll_action() {
            if stopping {
                tracing::info!(id = %action.id, step = %action.name, "shutting down: step not started");
                continue;
            }
            match self.persist().await {
                Ok(()) => self.execute(action),
                Err(err) => {
                    let err = not_conflict(err)?;
                    failed = true;
                    tracing::warn!(id = %action.id, error = %err, "journal not saved: step not started");
                    self.feed(Input::StepDone(StepDone {
                        id: action.id,
                        result: Err(BackendError::Unavailable(format!(
                            "journal could not be saved: {err}"
                        ))),
                    }));
                }
            }
        }
        if failed {
            // Not again at once: with the next attempt of the step, or after a while.
            self.save_retry_at = Some(Instant::now() + self.options.save_retry);
            return Ok(());
        }
        match self.persist().await {
            Ok(()) => self.save_retry_at = None,
            Err(err) => {
                let err = not_conflict(err)?;
                tracing::warn!(error = %err, "journal not saved: trying again later");
                self.save_retry_at = Some(Instant::now() + self.options.save_retry);
            }
        }
        Ok(())
    }

    /// Saves the journal if it changed since the last save.
    async fn persist(&mut self) -> Result<(), BackendError> {
        let version = self.election.journal_version();
        if self.saved_version == Some(version) {
            return Ok(());
        }
        let revision = self
            .backends
            .store
            .save(self.election.journal(), self.revision)
            .await?;
        tracing::debug!(revision, "journal saved");
        self.revision = Some(revision);
        self.saved_version = Some(version);
        Ok(())
    }

    fn execute(&mut self, action: Action) {
        tracing::info!(id = %action.id, step = %action.name, epoch = %action.epoch, "{}", action.step);
        let backends = self.backends.clone();
        let id = action.id;
        let task = self.running.spawn(async move {
            let result = cut_off(action.timeout, action.name, run_step(&backends, &action)).await;
            StepDone {
                id: action.id,
                result,
            }
        });
        self.running_ids.insert(task.id(), id);
    }

    /// The result of a finished action task; a task that panicked fails its step.
    fn reap(&mut self, joined: Result<(task::Id, StepDone), JoinError>) -> Option<StepDone> {
        match joined {
            Ok((task, done)) => {
                self.running_ids.remove(&task);
                if let Err(e) = &done.result {
                    tracing::warn!(id = %done.id, error = %e, "step failed");
                }
                Some(done)
            }
            Err(e) => {
                let id = self.running_ids.remove(&e.id())?;
                let what = if e.is_panic() {
                    "the backend panicked"
                } else {
                    "the step's task was cancelled"
                };
                tracing::error!(%id, "{what}");
                Some(StepDone {
                    id,
                    result: Err(BackendError::Invalid(format!("{what} while running {id}"))),
                })
            }
        }
    }

    fn replication_interval(&self) -> Option<Interval> {
        let every = self.options.replication_poll?;
        if self.backends.replication.is_none() || self.election.config().resources().is_empty() {
            return None;
        }
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(interval)
    }

    /// Reads the replication status at once (when polling is on): after a runbook, whose
    /// switch changed the roles, or when the RPO guard blocks for an unknown lag. A periodic
    /// read in flight is cancelled, as it may have been taken before the switch.
    fn read_status_now(&mut self) {
        if self.fresh_read
            || self.options.replication_poll.is_none()
            || self.backends.replication.is_none()
            || self.election.config().resources().is_empty()
        {
            return;
        }
        self.polls.abort_all();
        self.spawn_poll(true);
        self.fresh_read = true;
    }

    /// Asks the replication backend for the status of every resource, in a task bounded by
    /// the poll interval (an on-demand read, `fresh`, by at most [`FRESH_READ_LIMIT`]).
    fn spawn_poll(&mut self, fresh: bool) {
        let (Some(replication), Some(every)) = (
            self.backends.replication.clone(),
            self.options.replication_poll,
        ) else {
            return;
        };
        let limit = if fresh {
            every.min(FRESH_READ_LIMIT)
        } else {
            every
        };
        let resources = self.election.config().resources().to_vec();
        // Named in the warnings: a program may run many controllers.
        let service = self.election.config().name().clone();
        let clock = self.clock;
        self.polls.spawn(async move {
            let mut polled = Vec::new();
            for resource in resources {
                match tokio::time::timeout(limit, replication.status(&resource)).await {
                    Ok(Ok(status)) => {
                        let read = PolledStatus::new(status, clock.wall(Instant::now()));
                        polled.push((resource, read));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%service, %resource, error = %e, "replication status failed");
                    }
                    Err(_) => {
                        tracing::warn!(%service, %resource, "replication status timed out");
                    }
                }
            }
            (fresh, polled)
        });
    }

    /// Reads what the DNS publishes, to compare it with what the journal says
    /// ([`Election::published`]); nothing to do while a runbook has yet to publish the name.
    fn check_published(&mut self) {
        let Some(want) = self.election.published() else {
            tracing::debug!("the runbook in progress publishes the name: nothing to check");
            return;
        };
        let dns = self.backends.dns.clone();
        let limit = self.dns_limit();
        self.checks.spawn(async move {
            let what = format!("reading {}", want.name);
            let read = cut_off(limit, what, dns.read(&want.zone, &want.name)).await;
            DnsCheck::Read { want, read }
        });
    }

    /// Takes a step of the check of the published records: a read to compare, or a
    /// republication to report.
    fn on_checked(&mut self, joined: Result<DnsCheck, JoinError>) {
        let check = match joined {
            Ok(check) => check,
            Err(e) => {
                tracing::error!(error = %e, "the check of the published records failed");
                self.recheck();
                return;
            }
        };
        match check {
            DnsCheck::Read { read: Err(e), .. } => {
                tracing::warn!(error = %e, "the published records could not be read: checking again later");
                self.recheck();
            }
            DnsCheck::Read {
                want,
                read: Ok(found),
            } => {
                if self.election.published().as_ref() != Some(&want) {
                    // A decision since the read: its own runbook publishes the name.
                    tracing::debug!(epoch = %want.epoch, "the journal moved on since the read");
                    return;
                }
                self.check_failures = 0;
                match compare(&want, &found) {
                    Found::Same => tracing::info!(
                        epoch = %want.epoch, "the DNS publishes what the journal says"
                    ),
                    Found::Newer(epoch) => tracing::warn!(
                        journal = %want.epoch, dns = %epoch,
                        "the DNS holds a higher epoch than the journal: another controller \
                         decided since; not publishing the journal's records"
                    ),
                    Found::Differs(reason) => {
                        tracing::warn!(
                            epoch = %want.epoch, %reason,
                            "the DNS does not publish what the journal says: publishing it again"
                        );
                        self.republish(want, reason);
                    }
                }
            }
            DnsCheck::Applied {
                change,
                reason,
                result: Ok(()),
            } => {
                self.check_failures = 0;
                self.emit(Event::Republished {
                    epoch: change.epoch,
                    site: change.site,
                    records: change.records,
                    reason,
                });
            }
            DnsCheck::Applied {
                change,
                result: Err(e),
                ..
            } => {
                if self.election.journal().epoch() > change.epoch {
                    tracing::debug!(error = %e, "a newer decision overtook the republication");
                } else if e.is_transient() {
                    tracing::warn!(error = %e, "the journal's records could not be published again: checking again later");
                    self.recheck();
                } else {
                    tracing::error!(error = %e, "the journal's records could not be published again");
                }
            }
        }
    }

    /// Publishes the journal's records again, at the journal's epoch.
    fn republish(&mut self, change: DnsChange, reason: String) {
        let dns = self.backends.dns.clone();
        let limit = self.dns_limit();
        self.checks.spawn(async move {
            let what = format!("publishing {} again", change.name);
            let result = cut_off(limit, what, dns.apply(&change)).await;
            DnsCheck::Applied {
                change,
                reason,
                result,
            }
        });
    }

    /// Checks the published records again later, each failure in a row waiting twice as
    /// long (from [`RECHECK_FIRST`] to [`RECHECK_MAX`]).
    fn recheck(&mut self) {
        let delay = RECHECK_FIRST
            .saturating_mul(1 << self.check_failures.min(16))
            .min(RECHECK_MAX);
        self.check_failures = self.check_failures.saturating_add(1);
        self.check_at = Some(Instant::now() + delay);
    }

    /// The limit of one DNS read or write of the check: the `switch_dns` step's timeout.
    fn dns_limit(&self) -> Duration {
        self.election
            .config()
            .runbook(RunbookKind::Failover)
            .iter()
            .find(|p| p.step == StepName::SwitchDns)
            .map_or_else(
                || StepPolicy::default_for(StepName::SwitchDns).timeout,
                |p| p.timeout,
            )
    }

    /// Logs and broadcasts an event of the driver's own.
    fn emit(&mut self, event: Event) {
        log_event(self.election.config().name(), &event);
        // An error only means nobody is subscribed.
        let _ = self.events.send(event);
    }

    /// Broadcasts and logs the election's events, publishes its view; reads the replication
    /// status at once after a runbook, and when the RPO guard blocks for an unknown lag.
    fn publish(&mut self) {
        let service = self.election.config().name().clone();
        while let Some(event) = self.election.poll_event() {
            log_event(&service, &event);
            match &event {
                Event::Finished(report) => {
                    // Before the report is out, so a command sent on seeing it waits for the
                    // read.
                    self.read_status_now();
                    self.reports.send_modify(|kept| {
                        if kept.len() >= REPORTS_KEPT {
                            kept.pop_front();
                        }
                        kept.push_back(report.clone());
                    });
                }
                Event::Blocked { reasons }
                    if reasons
                        .iter()
                        .any(|r| matches!(r, Reason::LagUnknown { .. })) =>
                {
                    self.read_status_now();
                }
                _ => {}
            }
            // An error only means nobody is subscribed.
            let _ = self.events.send(event);
        }
        let view = self.election.view();
        self.view.send_if_modified(|current| {
            if current == view {
                false
            } else {
                current.clone_from(view);
                true
            }
        });
    }
}

/// A step of the check of the published records, as its task returns it.
#[derive(Debug)]
enum DnsCheck {
    /// What the DNS published when the journal said `want`.
    Read {
        want: DnsChange,
        read: Result<Published, BackendError>,
    },
    /// `change` published again because of `reason`.
    Applied {
        change: DnsChange,
        reason: String,
        result: Result<(), BackendError>,
    },
}

/// How what the DNS publishes compares with what the journal says.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The journal's records, site and epoch.
    Same,
    /// A higher epoch than the journal's: another controller decided since.
    Newer(Epoch),
    /// Something else, in words.
    Differs(String),
}

fn compare(want: &DnsChange, found: &Published) -> Found {
    let Some(owner) = &found.owner else {
        return Found::Differs(format!(
            "the DNS held {} and no ownership record",
            found.records
        ));
    };
    if owner.epoch > want.epoch {
        return Found::Newer(owner.epoch);
    }
    if owner.epoch == want.epoch && owner.site == want.site && found.records.same_as(&want.records)
    {
        return Found::Same;
    }
    let site = owner
        .site
        .as_ref()
        .map_or_else(String::new, |s| format!(" for {s}"));
    Found::Differs(format!(
        "the DNS held {}{site} at epoch {}",
        found.records, owner.epoch
    ))
}

/// Whether the election judges `command` on the replication lag: an unforced switch.
fn wants_lag(command: &Command) -> bool {
    matches!(
        command,
        Command::Failover { force: false, .. } | Command::Failback { force: false }
    )
}

/// Reads what the DNS publishes for a controller without a journal.
async fn adopt(cfg: &ServiceConfig, dns: &dyn DnsBackend) -> Result<Option<Journal>, Error> {
    let published = dns.read(cfg.zone(), cfg.name()).await?;
    Ok(published.owner.map(|owner| {
        tracing::info!(
            service = %cfg.name(), epoch = %owner.epoch, owner = %owner.to_txt(),
            "no journal: adopting what the DNS publishes"
        );
        Journal::adopt(cfg.name().clone(), &owner, cfg.home().id.clone())
    }))
}

/// Executes one action on the backends.
async fn run_step(backends: &Backends, action: &Action) -> Result<StepOutput, BackendError> {
    let ctx = action.context();
    let replication = || {
        backends
            .replication
            .as_deref()
            .ok_or_else(|| BackendError::Invalid("no replication backend configured".to_owned()))
    };
    match &action.step {
        Step::Fence { resource, site } => replication()?
            .fence(resource, site, &ctx)
            .await
            .map(|()| StepOutput::Done),
        Step::Promote { resource, site } => replication()?
            .promote(resource, site, &ctx)
            .await
            .map(StepOutput::Promoted),
        Step::Reprotect {
            resource,
            primary,
            wait,
        } => {
            let replication = replication()?;
            replication
                .reprotect(resource, primary, *wait, &ctx)
                .await?;
            if !*wait {
                return Ok(StepOutput::Done);
            }
            // A catch-up is judged on the target's lag as it ended: read it now (a failed read
            // leaves the election the lag last reported).
            Ok(match replication.status(resource).await {
                Ok(status) => StepOutput::CaughtUp(status),
                Err(e) => {
                    tracing::warn!(%resource, error = %e, "status after the catch-up failed");
                    StepOutput::Done
                }
            })
        }
        Step::Integrity {
            resource,
            site,
            request,
        } => replication()?
            .integrity(resource, site, request, &ctx)
            .await
            .map(StepOutput::Integrity),
        Step::SwitchDns { change } => backends.dns.apply(change).await.map(|()| StepOutput::Done),
        Step::VerifyDns { change } => backends
            .dns
            .verify(change, ctx.timeout)
            .await
            .map(StepOutput::Propagation),
    }
}

/// Runs a backend call, cut off after `limit` with a [`BackendError::Timeout`] that names
/// `what` was asked.
async fn cut_off<T>(
    limit: Duration,
    what: impl std::fmt::Display,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(BackendError::Timeout(format!(
            "{what} gave no answer within {}",
            humantime::format_duration(limit)
        )))
    })
}

/// Passes on a store error, unless it says that another controller owns the store.
fn not_conflict(err: BackendError) -> Result<BackendError, Error> {
    match err {
        BackendError::Conflict(_) => {
            tracing::error!(error = %err, "another controller owns the state store: stopping");
            Err(Error::Backend(err))
        }
        other => Ok(other),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => pending().await,
    }
}

/// Logs the end of a resource's background work (the default has none and ends at once).
fn log_background(joined: Result<(ResourceId, Result<(), BackendError>), JoinError>) {
    match joined {
        Ok((resource, Ok(()))) => {
            tracing::debug!(%resource, "replication background work finished");
        }
        Ok((resource, Err(e))) => {
            tracing::error!(%resource, error = %e, "replication background work stopped");
        }
        Err(e) => tracing::error!(error = %e, "replication background work failed"),
    }
}

fn log_event(service: &crate::id::DnsName, event: &Event) {
    match event {
        Event::StepRetry { .. } | Event::Held { .. } => {
            tracing::warn!(%service, %event, "event");
        }
        Event::ProbeChanged { .. } | Event::Decision { .. } | Event::Finished(_) => {
            // The election logs its decisions and finished runbooks itself.
            tracing::debug!(%service, %event, "event");
        }
        _ => tracing::info!(%service, %event, "event"),
    }
}
