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
use crate::dns::DnsBackend;
use crate::election::{Election, Input, StepDone, StepOutput};
use crate::error::{BackendError, ConfigError, Error, Problems, Refused};
use crate::event::{Event, SwitchReport};
use crate::id::ResourceId;
use crate::journal::Journal;
use crate::replication::ReplicationBackend;
use crate::runbook::{Action, Step, StepId};
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

/// The knobs of a [`Driver`]; [`Default`] suits most services.
///
/// Kept for programs written before [`Controller::builder`], whose setters these are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    /// Poll [`ReplicationBackend::status`] of every resource this often and feed the lag to
    /// the election (the RPO guard needs it). `None` (the default): replication reports come
    /// only through [`Controller::replication`].
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
///   [`DriverOptions::replication_poll`] says so, and published. The driver does not run
///   probes: whoever runs them sends their reports to the controller.
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
    /// A replication status poll in progress.
    polls: JoinSet<Vec<(ResourceId, PolledStatus)>>,
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
        self.process(stopping).await?;
        loop {
            if stopping && self.running.is_empty() {
                break;
            }
            let deadline = self.election.poll_timeout().map(Instant::from_std);
            let save_retry = self.save_retry_at;
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
                    match joined {
                        Ok(polled) => self.on_polled(polled),
                        Err(e) => tracing::warn!(error = %e, "replication status poll failed"),
                    }
                }
                () = tick(&mut poll), if !stopping && self.polls.is_empty() => self.spawn_poll(),
                Some(joined) = self.background.join_next(), if !self.background.is_empty() => {
                    log_background(joined);
                }
                // Last, so that a flood of reports cannot hold back timers and step results.
                request = self.inbox.recv(), if !stopping => match request {
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
        true
    }

    /// Feeds a request; for a command, returns where its answer goes and the answer.
    fn on_request(&mut self, request: Request) -> Option<(Reply, Result<(), Refused>)> {
        match request {
            Request::Report(input) => {
                self.feed(input);
                None
            }
            Request::Command(command, reply) => {
                let now = self.clock.now();
                let result = self.election.command(command, now);
                Some((reply, result))
            }
        }
    }

    /// Publishes the status read by a poll and feeds it to the election.
    fn on_polled(&mut self, polled: Vec<(ResourceId, PolledStatus)>) {
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
            let result =
                match tokio::time::timeout(action.timeout, run_step(&backends, &action)).await {
                    Ok(result) => result,
                    Err(_) => Err(BackendError::Timeout(format!(
                        "{} gave no answer within {}",
                        action.name,
                        humantime::format_duration(action.timeout)
                    ))),
                };
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

    /// Asks the replication backend for the status of every resource, in a task bounded by
    /// the poll interval.
    fn spawn_poll(&mut self) {
        let (Some(replication), Some(limit)) = (
            self.backends.replication.clone(),
            self.options.replication_poll,
        ) else {
            return;
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
            polled
        });
    }

    /// Broadcasts and logs the election's events, publishes its view.
    fn publish(&mut self) {
        let service = self.election.config().name().clone();
        while let Some(event) = self.election.poll_event() {
            log_event(&service, &event);
            if let Event::Finished(report) = &event {
                self.reports.send_modify(|kept| {
                    if kept.len() >= REPORTS_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(report.clone());
                });
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
        } => replication()?
            .reprotect(resource, primary, *wait, &ctx)
            .await
            .map(|()| StepOutput::Done),
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
