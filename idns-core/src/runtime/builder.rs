//! [`ControllerBuilder`]: assembles a [`Controller`] from a configuration and its backends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::controller::Controller;
use super::driver::{Backends, Driver, DriverOptions, Start};
use crate::config::ServiceConfig;
use crate::dns::DnsBackend;
use crate::error::{ConfigError, Error};
use crate::event::Event;
use crate::replication::ReplicationBackend;
use crate::store::StateStore;

impl Controller {
    /// Starts assembling a controller of the service `config` describes: hand it the
    /// backends, then [`start`](ControllerBuilder::start) it.
    pub fn builder(config: ServiceConfig) -> ControllerBuilder {
        ControllerBuilder::new(config)
    }
}

/// Assembles a [`Controller`]: each backend handed in once, a few knobs, then
/// [`start`](Self::start). Made by [`Controller::builder`].
///
/// ```
/// # use idns_core::runtime::{Controller, FileStore};
/// # use idns_core::test_util::{MemoryDns, MemoryReplication};
/// # use idns_core::ServiceConfig;
/// # use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cfg = ServiceConfig::from_toml(r#"
/// #     name = "app.example.com"
/// #     zone = "example.com"
/// #     resources = ["db"]
/// #     [[sites]]
/// #     id = "primary"
/// #     priority = 1
/// #     addresses = ["192.0.2.1"]
/// #     probes = [{ id = "web" }]
/// #     [[sites]]
/// #     id = "recovery"
/// #     priority = 2
/// #     addresses = ["198.51.100.1"]
/// #     probes = [{ id = "web" }]
/// # "#)?;
/// # let dir = tempfile::tempdir()?;
/// # let sites: Vec<_> = cfg.sites().iter().map(|s| s.id.clone()).collect();
/// # let dns = MemoryDns::new(&[cfg.zone().clone()]);
/// # let replication = MemoryReplication::new(cfg.resources(), &sites, &cfg.home().id);
/// let mut builder = Controller::builder(cfg)
///     .dns(dns)
///     .replication(replication)
///     .replication_poll(Duration::from_secs(1))
///     .store(FileStore::new(dir.path().join("app.json")));
/// let mut events = builder.subscribe(); // every event, from the first
/// let controller = builder.start().await?;
/// assert!(matches!(events.recv().await?, idns_core::Event::Decision { .. }));
/// # controller.shutdown();
/// # controller.stopped().await?;
/// # Ok(())
/// # }
/// ```
///
/// Knobs not set keep their defaults: no replication polling, an inbox of 1024 reports and
/// commands, 1024 events of room for a slow subscriber, a failed save retried after 1 s.
#[must_use = "a builder does nothing until it is started"]
pub struct ControllerBuilder {
    config: ServiceConfig,
    dns: Option<Arc<dyn DnsBackend>>,
    replication: Option<Arc<dyn ReplicationBackend>>,
    store: Option<Arc<dyn StateStore>>,
    options: DriverOptions,
    events: Option<broadcast::Sender<Event>>,
}

impl std::fmt::Debug for ControllerBuilder {
    // Not the configuration: a probe's check may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerBuilder")
            .field("service", self.config.name())
            .field("dns", &self.dns)
            .field("replication", &self.replication)
            .field("store", &self.store)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ControllerBuilder {
    pub(super) fn new(config: ServiceConfig) -> Self {
        Self {
            config,
            dns: None,
            replication: None,
            store: None,
            options: DriverOptions::default(),
            events: None,
        }
    }

    /// The DNS backend that publishes the service's name (required). At start, a controller
    /// without a journal reads what it publishes and adopts a site and epoch found there.
    pub fn dns(mut self, backend: impl DnsBackend + 'static) -> Self {
        self.dns = Some(Arc::new(backend));
        self
    }

    /// The replication backend that fences, promotes, reprotects and checks the consistency
    /// group; required when the configuration lists resources. The controller runs its
    /// background work ([`ReplicationBackend::run`]) once per resource while it runs.
    pub fn replication(mut self, backend: impl ReplicationBackend + 'static) -> Self {
        self.replication = Some(Arc::new(backend));
        self
    }

    /// Where the journal survives a crash (required), e.g. a
    /// [`FileStore`](super::FileStore).
    pub fn store(mut self, store: impl StateStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Reads [`ReplicationBackend::status`] of every resource this often, feeds the lag to
    /// the election (the RPO guard needs it) and publishes it
    /// ([`Controller::replication_status`]). Each read is cut off after the same time. The
    /// status is also read at once when a runbook finishes and when the RPO guard blocks a
    /// failover for an unknown lag (cut off after at most 5 s), so a failover right after a
    /// failback is judged on the roles the failback left. Without it, replication reports
    /// come only through [`Controller::replication`].
    pub fn replication_poll(mut self, every: Duration) -> Self {
        self.options.replication_poll = Some(every);
        self
    }

    /// How many reports and commands may wait for the driver before
    /// [`Controller::report`] waits for room (default 1024).
    pub fn inbox(mut self, capacity: usize) -> Self {
        self.options.inbox = capacity;
        self
    }

    /// How many events a slow subscriber may fall behind before it misses some (default
    /// 1024). Set it before [`subscribe`](Self::subscribe).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.options.events = capacity;
        self
    }

    /// After a failed save of a finished runbook (no action waiting on it), try again after
    /// this long (default 1 s). A save before an action is retried by the runbook's own
    /// policy.
    pub fn save_retry(mut self, after: Duration) -> Self {
        self.options.save_retry = after;
        self
    }

    /// A receiver of every event of the controller, from its very first (the decision a
    /// controller without a journal makes at start), which
    /// [`Controller::subscribe`] after the start could miss.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Event> {
        let capacity = self.options.events.max(1);
        self.events
            .get_or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe()
    }

    /// Checks the knobs, loads the journal (or, without one, adopts what the DNS publishes),
    /// starts the election and spawns the controller's tasks on the current tokio runtime.
    ///
    /// Fails with [`Error::Config`] when a required backend is missing, a resource has no
    /// replication backend or a knob is zero; with [`Error::Journal`] when the stored journal
    /// does not fit the configuration; with [`Error::Backend`] when the store or the DNS
    /// cannot be read.
    pub async fn start(self) -> Result<Controller, Error> {
        let missing = |what: &str, call: &str| {
            ConfigError::single(
                what,
                "none",
                format!("is required: hand one to ControllerBuilder::{call}"),
            )
        };
        let dns = self.dns.ok_or_else(|| missing("dns", "dns"))?;
        let store = self.store.ok_or_else(|| missing("store", "store"))?;
        let backends = Backends {
            dns,
            replication: self.replication,
            store,
        };
        let start = Start {
            background: true,
            events: self.events,
        };
        let (driver, controller) =
            Driver::prepare(self.config, backends, self.options, start).await?;
        let task = tokio::spawn(driver.run());
        controller.set_task(task.abort_handle());
        Ok(controller)
    }
}
