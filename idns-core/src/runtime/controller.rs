//! [`Controller`]: the handle of one running service controller.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::config::ServiceConfig;
use crate::election::{Command, Input, Plan};
use crate::error::{Error, Refused};
use crate::event::{Event, SwitchReport};
use crate::id::ResourceId;
use crate::probe::ProbeReport;
use crate::replication::{ReplicationReport, ReplicationStatus};
use crate::view::ServiceView;

/// How many finished runbooks a controller remembers for [`Controller::wait_for_runbook`].
pub(super) const REPORTS_KEPT: usize = 32;

/// What a [`Controller`] sends its driver.
#[derive(Debug)]
pub(super) enum Request {
    /// A probe or replication report.
    Report(Input),
    /// An operator command and where its answer goes.
    Command(Command, Reply),
    /// A dry run of a command and where the plan goes.
    Plan(Command, oneshot::Sender<Plan>),
}

/// Where the answer to a command goes.
pub(super) type Reply = oneshot::Sender<Result<(), Refused>>;

/// The last status a controller read of one resource ([`Controller::replication_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolledStatus {
    /// Role and lag of the resource at each site, as the backend reported them.
    pub status: ReplicationStatus,
    /// Wall-clock time of the read.
    pub at: SystemTime,
}

impl PolledStatus {
    pub(super) fn new(status: ReplicationStatus, at: SystemTime) -> Self {
        Self { status, at }
    }
}

/// The receiving ends of what the driver publishes, shared by every clone of a controller.
pub(super) struct Shared {
    pub(super) config: ServiceConfig,
    pub(super) events: broadcast::WeakSender<Event>,
    pub(super) view: watch::Receiver<ServiceView>,
    /// The reports of the last [`REPORTS_KEPT`] finished runbooks, oldest first.
    pub(super) reports: watch::Receiver<VecDeque<SwitchReport>>,
    pub(super) replication: watch::Receiver<BTreeMap<ResourceId, PolledStatus>>,
    /// How the driver ended; `None` while it runs.
    pub(super) end: watch::Receiver<Option<Result<(), Error>>>,
    pub(super) shutdown: watch::Sender<bool>,
    /// The driver's task, once spawned.
    pub(super) task: OnceLock<AbortHandle>,
}

/// A running controller of one service: the cheap-to-clone handle that feeds its election,
/// reads its state, waits on it and stops it. Build one with [`Controller::builder`].
///
/// The controller owns its tasks: the driver loop (which persists the journal before each
/// action, executes the runbook's steps on the backends with their timeouts, polls the
/// replication status and wakes the election at its deadlines) and the replication backend's
/// background work ([`ReplicationBackend::run`](crate::ReplicationBackend::run), once per
/// resource). Every clone talks to the same driver.
///
/// Its methods, by kind:
/// - **Inputs**: [`report`](Self::report) (probe reports; `idns-probe`'s scheduler calls it
///   as a report sink), [`replication`](Self::replication) (pushed replication reports) and
///   [`command`](Self::command) (operator commands, answered with the election's refusal
///   when it declines).
/// - **State**: [`view`](Self::view), [`replication_status`](Self::replication_status) (the
///   last status the controller's single replication poller read),
///   [`subscribe`](Self::subscribe) (events), [`config`](Self::config).
/// - **Waits**, built on watch channels, none of them polling: [`wait_for`](Self::wait_for)
///   a state of the view, [`wait_for_runbook`](Self::wait_for_runbook) to finish, and
///   [`stopped`](Self::stopped) for the driver's end and result.
/// - **Stopping**: [`shutdown`](Self::shutdown) (graceful), [`abort`](Self::abort) (at once,
///   as a crash would). Dropping every clone shuts down gracefully too.
///
/// Every input and wait fails with [`Error::Stopped`] once the driver has stopped; none
/// waits forever for a driver that is gone.
///
/// # Example
/// ```
/// use idns_core::runtime::{Controller, FileStore};
/// use idns_core::test_util::MemoryDns;
/// use idns_core::{Epoch, RecordSet, RunbookKind, ServiceConfig};
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
/// let controller = Controller::builder(cfg)
///     .dns(dns.clone())
///     .store(FileStore::new(dir.path().join("app.json")))
///     .start()
///     .await?;
///
/// // Without a journal, the controller publishes the home site at epoch 1.
/// let boot = controller.wait_for_runbook(|r| r.kind == RunbookKind::Bootstrap).await?;
/// assert_eq!(boot.epoch, Epoch::new(1));
/// assert_eq!(
///     dns.records(&"app.example.com".parse()?),
///     RecordSet::Addresses(vec!["192.0.2.1".parse()?])
/// );
///
/// controller.shutdown();
/// controller.stopped().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Controller {
    inbox: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Controller {
    // Not the configuration: a probe's check may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("service", self.shared.config.name())
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Controller {
    pub(super) fn new(inbox: mpsc::Sender<Request>, shared: Shared) -> Self {
        Self {
            inbox,
            shared: Arc::new(shared),
        }
    }

    /// Notes the spawned driver's task, for [`abort`](Self::abort).
    pub(super) fn set_task(&self, task: AbortHandle) {
        // Set once, right after the spawn; a second call cannot happen.
        let _ = self.shared.task.set(task);
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Feeds a probe's report. Waits while the inbox is full (backpressure).
    pub async fn report(&self, report: ProbeReport) -> Result<(), Error> {
        self.send(Request::Report(Input::Probe(report))).await
    }

    /// Feeds a replica's role and lag, on top of (or instead of) the controller's own
    /// polling
    /// ([`ControllerBuilder::replication_poll`](super::ControllerBuilder::replication_poll)).
    pub async fn replication(&self, report: ReplicationReport) -> Result<(), Error> {
        self.send(Request::Report(Input::Replication(report))).await
    }

    /// Gives the election an operator command and waits for its answer:
    /// [`Error::Refused`] with the reason when it declines. Once accepted, the command's
    /// effects are saved and in the view, and its runbook runs in the background; wait for
    /// it with [`wait_for_runbook`](Self::wait_for_runbook).
    pub async fn command(&self, command: Command) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Command(command, tx)).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(Error::Refused(refused)),
            Err(_) => Err(Error::Stopped),
        }
    }

    /// What `command` would do if given now, and whether it would be allowed, without doing
    /// it ([`Election::plan`](crate::Election::plan), run by the driver on the live election).
    pub async fn plan(&self, command: Command) -> Result<Plan, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Plan(command, tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    async fn send(&self, request: Request) -> Result<(), Error> {
        self.inbox.send(request).await.map_err(|_| Error::Stopped)
    }

    // ----- state ---------------------------------------------------------------------------

    /// The service's configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.shared.config
    }

    /// The election's current view (the last one, once the driver has stopped).
    pub fn view(&self) -> ServiceView {
        self.shared.view.borrow().clone()
    }

    /// The view as a [`watch`] channel, to follow every change.
    pub fn watch(&self) -> watch::Receiver<ServiceView> {
        self.shared.view.clone()
    }

    /// The last replication status read of each resource, from the controller's poller
    /// ([`ControllerBuilder::replication_poll`](super::ControllerBuilder::replication_poll));
    /// empty until the first read, and without polling. This is the one poller of the program: read the status here rather than
    /// asking the backend again.
    pub fn replication_status(&self) -> BTreeMap<ResourceId, PolledStatus> {
        self.shared.replication.borrow().clone()
    }

    /// The election's events from now on. A subscriber that falls more than
    /// [`ControllerBuilder::event_capacity`](super::ControllerBuilder::event_capacity) behind gets
    /// [`broadcast::error::RecvError::Lagged`]; once the driver has stopped, `recv` returns
    /// [`broadcast::error::RecvError::Closed`]. To see the events of the very start, subscribe
    /// on the builder ([`ControllerBuilder::subscribe`](super::ControllerBuilder::subscribe)).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        match self.shared.events.upgrade() {
            Some(tx) => tx.subscribe(),
            // The driver is gone: a receiver whose sender is gone too, closed at once.
            None => broadcast::channel(1).1,
        }
    }

    // ----- waits ---------------------------------------------------------------------------

    /// Waits until the view satisfies `condition` (checked at once, then at every change)
    /// and returns that view. Fails with [`Error::Stopped`] when the driver stops first.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&ServiceView) -> bool,
    ) -> Result<ServiceView, Error> {
        let mut view = self.shared.view.clone();
        let found = view
            .wait_for(|v| condition(v))
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(found.clone())
    }

    /// Waits until the polled replication status ([`replication_status`](Self::replication_status))
    /// satisfies `condition` (checked at once, then after every poll) and returns it: e.g.
    /// a read taken after a switch finished, showing the promoted copy primary. Fails with
    /// [`Error::Stopped`] when the driver stops first.
    pub async fn wait_for_replication(
        &self,
        mut condition: impl FnMut(&BTreeMap<ResourceId, PolledStatus>) -> bool,
    ) -> Result<BTreeMap<ResourceId, PolledStatus>, Error> {
        let mut polled = self.shared.replication.clone();
        let found = polled
            .wait_for(|p| condition(p))
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(found.clone())
    }

    /// Waits until a runbook that `which` accepts has finished, completed or aborted (see
    /// [`SwitchReport::outcome`]), and returns its report: the earliest such runbook.
    ///
    /// Runbooks that finished before the call count too (the last 32 since the controller
    /// started), so a runbook that ends before its waiter gets to wait is not missed; tell
    /// runbooks apart by [`kind`](SwitchReport::kind) and by [`runbook`](SwitchReport::runbook)
    /// id, which increases. Fails with [`Error::Stopped`] when the driver stops first.
    pub async fn wait_for_runbook(
        &self,
        mut which: impl FnMut(&SwitchReport) -> bool,
    ) -> Result<SwitchReport, Error> {
        let mut reports = self.shared.reports.clone();
        let mut found = None;
        // An error means the driver stopped; a report it published last still counts.
        let _ = reports
            .wait_for(|list| {
                found = list.iter().find(|r| which(r)).cloned();
                found.is_some()
            })
            .await;
        found.ok_or(Error::Stopped)
    }

    /// Waits until the driver has stopped and returns how: `Ok` after a graceful shutdown,
    /// the error that stopped it otherwise (a [`BackendError::Conflict`] when another
    /// controller wrote the store, a failed final save), and [`Error::Stopped`] when its
    /// task was aborted or panicked. Every clone may wait; each gets the result.
    ///
    /// [`BackendError::Conflict`]: crate::BackendError::Conflict
    pub async fn stopped(&self) -> Result<(), Error> {
        let mut end = self.shared.end.clone();
        // An error means the driver is gone without a result (aborted, or it panicked).
        let _ = end.wait_for(Option::is_some).await;
        let result = end.borrow().clone();
        result.unwrap_or(Err(Error::Stopped))
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.end.borrow().is_some() || self.shared.end.has_changed().is_err()
    }

    // ----- stopping ------------------------------------------------------------------------

    /// Asks the driver to stop gracefully: it takes no more reports or commands, lets the
    /// action in flight finish (within its timeout) and feeds its result, saves the journal,
    /// starts nothing further, stops the backend's background work and ends with `Ok`.
    /// Returns at once; [`stopped`](Self::stopped) waits for the end.
    ///
    /// Dropping every clone has the same effect.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Stops the driver and its background work at once, as a crash would: the action in
    /// flight is dropped and nothing more is saved. The journal saved before the last action
    /// lets the next controller resume the runbook.
    pub fn abort(&self) {
        if let Some(task) = self.shared.task.get() {
            task.abort();
        }
    }
}
