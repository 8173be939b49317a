//! [`Driver`]: runs one service's [`Election`] on tokio, and the [`Handle`] that feeds it.

use std::collections::HashMap;
use std::future::pending;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{self, JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::config::ServiceConfig;
use crate::dns::DnsBackend;
use crate::election::{Command, Election, Input, StepDone, StepOutput};
use crate::error::{BackendError, ConfigError, Error, Refused};
use crate::event::Event;
use crate::journal::Journal;
use crate::probe::ProbeReport;
use crate::replication::{ReplicationBackend, ReplicationReport};
use crate::runbook::{Action, Step, StepId};
use crate::store::StateStore;
use crate::view::ServiceView;

/// The backends a [`Driver`] executes actions on, and where it keeps the journal.
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

/// The knobs of a [`Driver`]; [`Default`] suits most services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    /// Poll [`ReplicationBackend::status`] of every resource this often and feed the lag to
    /// the election (the RPO guard needs it). `None` (the default): replication reports come
    /// only through [`Handle::replication`].
    pub replication_poll: Option<Duration>,
    /// How many reports and commands may wait for the driver before
    /// [`Handle::report`] waits for room (default 1024).
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
        let mut errors = Vec::new();
        let mut check = |ok: bool, path: &str, value: String, problem: &str| {
            if !ok {
                errors.extend(ConfigError::single(path, value, problem).errors);
            }
        };
        if let Some(d) = self.replication_poll {
            check(
                !d.is_zero(),
                "replication_poll",
                humantime::format_duration(d).to_string(),
                "must be longer than zero",
            );
        }
        check(
            self.inbox > 0,
            "inbox",
            self.inbox.to_string(),
            "must be at least 1",
        );
        check(
            self.events > 0,
            "events",
            self.events.to_string(),
            "must be at least 1",
        );
        check(
            !self.save_retry.is_zero(),
            "save_retry",
            humantime::format_duration(self.save_retry).to_string(),
            "must be longer than zero",
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { errors })
        }
    }
}

/// What a [`Handle`] sends the driver.
#[derive(Debug)]
enum Request {
    /// A probe or replication report.
    Report(Input),
    /// An operator command and where its answer goes.
    Command(Command, Reply),
}

/// Where the answer to a command goes.
type Reply = oneshot::Sender<Result<(), Refused>>;

/// Talks to a running [`Driver`]: feeds it reports and commands, reads its view, subscribes
/// to its events, stops it. Cheap to clone; every clone talks to the same driver.
///
/// Every method fails with [`Error::Stopped`] (or returns at once) when the driver has
/// stopped; none waits forever for a driver that is gone.
#[derive(Debug, Clone)]
pub struct Handle {
    inbox: mpsc::Sender<Request>,
    events: broadcast::WeakSender<Event>,
    view: watch::Receiver<ServiceView>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl Handle {
    /// Feeds a probe's report. Waits while the inbox is full (backpressure).
    pub async fn report(&self, report: ProbeReport) -> Result<(), Error> {
        self.send(Request::Report(Input::Probe(report))).await
    }

    /// Feeds a replica's role and lag (on top of, or instead of,
    /// [`DriverOptions::replication_poll`]).
    pub async fn replication(&self, report: ReplicationReport) -> Result<(), Error> {
        self.send(Request::Report(Input::Replication(report))).await
    }

    /// Gives the election an operator command and waits for its answer:
    /// [`Error::Refused`] with the reason when it declines. Once accepted, the command's
    /// runbook runs in the background; follow it with [`subscribe`](Self::subscribe) or
    /// [`watch`](Self::watch).
    pub async fn command(&self, command: Command) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Command(command, tx)).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(Error::Refused(refused)),
            Err(_) => Err(Error::Stopped),
        }
    }

    /// The election's current view (the last one, once the driver has stopped).
    pub fn view(&self) -> ServiceView {
        self.view.borrow().clone()
    }

    /// The view as a [`watch`] channel, to wait for a change or a condition
    /// ([`watch::Receiver::wait_for`]).
    pub fn watch(&self) -> watch::Receiver<ServiceView> {
        self.view.clone()
    }

    /// The election's events from now on. A subscriber that falls more than
    /// [`DriverOptions::events`] behind gets [`broadcast::error::RecvError::Lagged`]; once
    /// the driver has stopped, `recv` returns [`broadcast::error::RecvError::Closed`].
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        match self.events.upgrade() {
            Some(tx) => tx.subscribe(),
            // The driver is gone: a receiver whose sender is gone too, closed at once.
            None => broadcast::channel(1).1,
        }
    }

    /// Asks the driver to stop gracefully: it takes no more reports or commands, lets the
    /// action in flight finish (within its timeout) and feeds its result, saves the journal,
    /// starts nothing further and returns `Ok`. Returns at once; await the driver's task, or
    /// [`stopped`](Self::stopped), to know it has finished.
    ///
    /// Dropping every handle has the same effect.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until the driver has stopped (gracefully, with an error, or aborted).
    pub async fn stopped(&self) {
        let mut view = self.view.clone();
        while view.changed().await.is_ok() {}
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.view.has_changed().is_err()
    }

    async fn send(&self, request: Request) -> Result<(), Error> {
        self.inbox.send(request).await.map_err(|_| Error::Stopped)
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

/// Runs one service's [`Election`] on tokio, like quinn's `ConnectionDriver` runs a
/// connection: a thin loop around the sans-IO state machine.
///
/// - **Inputs**: probe and replication reports and operator commands arrive through a
///   cloneable [`Handle`]; replication status is polled when
///   [`DriverOptions::replication_poll`] says so. The driver does not run probes: whoever
///   runs them sends their reports to the handle.
/// - **Actions**: before executing an action, the journal is saved to the
///   [`StateStore`] whenever it changed, so a restarted controller resumes the same runbook
///   and never repeats a finished step. A failed save does not execute the action: it fails
///   as [`BackendError::Unavailable`] and the runbook's retry policy applies. A
///   [`BackendError::Conflict`] (another controller wrote the store) stops the driver with
///   that error. Each action runs in its own task, cut off after its timeout
///   ([`BackendError::Timeout`]); the backend is given a little less
///   ([`Action::context`](crate::Action::context)), so a backend that waits reports what it
///   found before it is cut off. Retries and backoff are the election's.
/// - **Outputs**: every event is logged and broadcast ([`Handle::subscribe`]); the current
///   [`ServiceView`] is published in a watch channel ([`Handle::view`]).
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
/// [`Handle::shutdown`], or dropping every handle, stops the driver gracefully and `run`
/// returns `Ok`. Aborting its task stops it at once; the journal saved before the last action
/// lets the next driver resume.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use idns_core::runtime::{Backends, Driver, DriverOptions, FileStore};
/// use idns_core::test_util::MemoryDns;
/// use idns_core::{Epoch, RecordSet, ServiceConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cfg = ServiceConfig::from_toml(r#"
///     name = "app.example.com"
///     zone = "example.com"
///     [[sites]]
///     id = "primary"
///     priority = 1
///     addresses = ["192.0.2.1"]
///     probes = [{ id = "web" }]
///     [[sites]]
///     id = "recovery"
///     priority = 2
///     addresses = ["198.51.100.1"]
///     probes = [{ id = "web" }]
/// "#)?;
/// let dns = MemoryDns::new(&[cfg.zone().clone()]);
/// let dir = tempfile::tempdir()?;
/// let backends = Backends {
///     dns: Arc::new(dns.clone()),
///     replication: None,
///     store: Arc::new(FileStore::new(dir.path().join("app.json"))),
/// };
/// let (handle, task) = Driver::start(cfg, backends, DriverOptions::default()).await?;
///
/// // Without a journal, the driver publishes the home site at epoch 1.
/// let mut view = handle.watch();
/// view.wait_for(|v| v.epoch == Epoch::new(1) && v.runbook.is_none()).await?;
/// assert_eq!(
///     dns.records(&"app.example.com".parse()?),
///     RecordSet::Addresses(vec!["192.0.2.1".parse()?])
/// );
///
/// handle.shutdown();
/// task.await??;
/// # Ok(())
/// # }
/// ```
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
    polls: JoinSet<Vec<ReplicationReport>>,
}

impl Driver {
    /// Loads the journal (or adopts what the DNS publishes), starts the election and spawns
    /// the driver on the current tokio runtime. Returns the handle and the driver's task,
    /// which ends with `Ok` after a graceful shutdown and with the error that stopped it
    /// otherwise.
    ///
    /// Events produced before [`Handle::subscribe`] is called are not seen by that
    /// subscriber; to see every event from the first, use [`new`](Self::new), subscribe, then
    /// spawn [`run`](Self::run).
    pub async fn start(
        cfg: ServiceConfig,
        backends: Backends,
        options: DriverOptions,
    ) -> Result<(Handle, JoinHandle<Result<(), Error>>), Error> {
        let (driver, handle) = Self::new(cfg, backends, options).await?;
        Ok((handle, tokio::spawn(driver.run())))
    }

    /// Like [`start`](Self::start), without spawning: run the returned driver with
    /// [`run`](Self::run) on the executor of your choice.
    pub async fn new(
        cfg: ServiceConfig,
        backends: Backends,
        options: DriverOptions,
    ) -> Result<(Driver, Handle), Error> {
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
        let election = Election::new(cfg, journal, clock.origin.into_std(), clock.wall)?;
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
        let (events, _) = broadcast::channel(options.events);
        let (view, view_rx) = watch::channel(election.view().clone());
        let (shutdown_tx, shutdown) = watch::channel(false);
        let handle = Handle {
            inbox: inbox_tx,
            events: events.downgrade(),
            view: view_rx,
            shutdown: Arc::new(shutdown_tx),
        };
        let driver = Driver {
            election,
            backends,
            options,
            clock,
            inbox,
            shutdown,
            events,
            view,
            revision,
            saved_version,
            save_retry_at: None,
            running: JoinSet::new(),
            running_ids: HashMap::new(),
            polls: JoinSet::new(),
        };
        Ok((driver, handle))
    }

    /// Runs the loop until a graceful shutdown (`Ok`) or an error that stops the driver: a
    /// [`BackendError::Conflict`] from the store, or a failed final save.
    pub async fn run(mut self) -> Result<(), Error> {
        let result = self.run_loop().await;
        let service = self.election.config().name();
        match &result {
            Ok(()) => tracing::info!(%service, "driver stopped"),
            Err(e) => tracing::error!(%service, error = %e, "driver stopped"),
        }
        result
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
                        Ok(reports) => {
                            for r in reports {
                                self.feed(Input::Replication(r));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "replication status poll failed"),
                    }
                }
                () = tick(&mut poll), if !stopping && self.polls.is_empty() => self.spawn_poll(),
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
        let clock = self.clock;
        self.polls.spawn(async move {
            let mut reports = Vec::new();
            for resource in &resources {
                match tokio::time::timeout(limit, replication.status(resource)).await {
                    Ok(Ok(status)) => reports.extend(status.reports(clock.wall(Instant::now()))),
                    Ok(Err(e)) => {
                        tracing::warn!(%resource, error = %e, "replication status failed");
                    }
                    Err(_) => tracing::warn!(%resource, "replication status timed out"),
                }
            }
            reports
        });
    }

    /// Broadcasts and logs the election's events, publishes its view.
    fn publish(&mut self) {
        let service = self.election.config().name().clone();
        while let Some(event) = self.election.poll_event() {
            log_event(&service, &event);
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
