//! Starting and stopping the daemon: one [`Controller`] per service of a checked
//! [`DaemonConfig`] (which owns the service's election, its replication poller and its
//! replication backend's background work), the probe schedulers that report into it, and the
//! HTTP API.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use idns_core::runtime::{Controller, FileStore};
use idns_core::{ObserverId, ProbeReport, SwitchReport};
use idns_dns::DnsServers;
use idns_probe::{
    ReportSink, ScheduledProbe, Scheduler, SchedulerHandle, SchedulerOptions, SinkClosed,
    probes_for_service,
};
use idns_replication::{Progress, Replication};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::api::{Access, ApiState, router, serve};
use super::config::{DaemonConfig, ServiceEntry};
use super::service::{ReportFiles, ReportHook, ServiceRuntime};
use crate::report::ReportContext;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A file or directory could not be prepared.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Another idnsd holds the journal directory.
    #[error("another idnsd uses the journal directory {0} (its lock file is held)")]
    Locked(PathBuf),
    /// A DNS backend could not be set up.
    #[error("service {service}: DNS backend: {source}")]
    Dns {
        /// The service.
        service: String,
        /// What went wrong.
        #[source]
        source: idns_dns::Error,
    },
    /// A controller could not start (its journal does not fit the configuration, the store
    /// or the DNS cannot be read).
    #[error("service {service}: {source}")]
    Controller {
        /// The service.
        service: String,
        /// What went wrong.
        #[source]
        source: idns_core::Error,
    },
    /// A probe could not be built.
    #[error("service {service}: probes: {source}")]
    Probes {
        /// The service.
        service: String,
        /// What went wrong.
        #[source]
        source: idns_core::ConfigError,
    },
}

/// A controller that ended, with how: the service's name and the controller's result.
pub type ControllerEnd = (String, Result<(), idns_core::Error>);

/// A probe scheduler: its handle and its task.
type Probing = (SchedulerHandle, JoinHandle<Result<(), idns_probe::Error>>);

/// A running daemon. Stop it with [`shutdown`](Self::shutdown); dropping it aborts the
/// controllers and the background tasks without saving anything beyond what the controllers
/// saved before their last action (as a crash would).
#[derive(Debug)]
pub struct Daemon {
    api_addr: SocketAddr,
    services: Vec<Arc<ServiceRuntime>>,
    dns_servers: Option<DnsServers>,
    dns_addrs: BTreeMap<String, Vec<SocketAddr>>,
    /// One task per controller, waiting for its end.
    ends: JoinSet<ControllerEnd>,
    schedulers: Vec<Probing>,
    background: JoinSet<()>,
    api: JoinHandle<()>,
    stop: watch::Sender<bool>,
    _lock: File,
}

/// A service whose backends and probes are built, its controller not started yet.
struct Prepared {
    entry: ServiceEntry,
    dns: Arc<dyn idns_core::DnsBackend>,
    replication: Option<Replication>,
    /// The probes each local observer runs.
    probes: Vec<(ObserverId, Vec<ScheduledProbe>)>,
}

impl Daemon {
    /// Starts everything the configuration describes. Nothing is left running when it fails:
    /// the controllers already started are shut down gracefully first.
    pub async fn start(cfg: DaemonConfig) -> Result<Daemon, StartError> {
        for w in cfg.warnings() {
            tracing::warn!("{w}");
        }
        let d = &cfg.daemon;
        std::fs::create_dir_all(&d.journal_dir).map_err(|source| StartError::Io {
            what: format!(
                "cannot create the journal directory {}",
                d.journal_dir.display()
            ),
            source,
        })?;
        let lock = lock(&d.journal_dir)?;
        let listener = TcpListener::bind(d.listen)
            .await
            .map_err(|source| StartError::Io {
                what: format!("cannot listen on {} for the API", d.listen),
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| StartError::Io {
            what: "cannot read the API's address".into(),
            source,
        })?;

        // Embedded DNS servers: one per distinct setting, shared by the services that have it.
        let mut servers = DnsServers::new();
        let mut dns_addrs = BTreeMap::new();
        let mut prepared = Vec::new();
        for entry in &cfg.services {
            let service = entry.config.name().to_string();
            let dns = servers
                .build(&entry.dns)
                .await
                .map_err(|source| StartError::Dns {
                    service: service.clone(),
                    source,
                })?;
            if !dns.udp_addrs().is_empty() {
                dns_addrs.insert(service.clone(), dns.udp_addrs().to_vec());
            }
            let mut probes = Vec::new();
            for observer in &d.observers {
                if entry.config.observers().ids.contains(observer) {
                    let built =
                        probes_for_service(&entry.config).map_err(|source| StartError::Probes {
                            service: service.clone(),
                            source,
                        })?;
                    probes.push((observer.clone(), built));
                }
            }
            prepared.push(Prepared {
                entry: entry.clone(),
                dns: dns.backend(),
                replication: entry.replication.as_ref().map(|r| r.build()),
                probes,
            });
        }

        // Everything is built: start each service's controller, then what feeds and follows it.
        let (stop, stop_rx) = watch::channel(false);
        let mut ends = JoinSet::new();
        let mut schedulers = Vec::new();
        let mut background = JoinSet::new();
        let mut services: Vec<Arc<ServiceRuntime>> = Vec::new();
        let on_report: ReportHook = Arc::new(write_report);
        for p in prepared {
            let name = p.entry.config.name().to_string();
            let store = FileStore::new(&p.entry.journal);
            let mut builder = Controller::builder(p.entry.config.clone())
                .dns(p.dns.clone())
                .store(store.clone())
                .replication_poll(d.replication_poll);
            if let Some(repl) = &p.replication {
                builder = builder.replication(repl.backend());
            }
            // Before the start, so the first decision is seen too.
            let events = builder.subscribe();
            let controller = match builder.start().await {
                Ok(c) => c,
                Err(source) => {
                    stop_started(&services).await;
                    return Err(StartError::Controller {
                        service: name,
                        source,
                    });
                }
            };
            let rt = Arc::new(
                ServiceRuntime::new(
                    p.entry.config.clone(),
                    controller.clone(),
                    store,
                    ReportFiles::new(d.journal_dir.join("reports"), d.reports_keep),
                    d.event_log,
                )
                .with_dns(p.dns),
            );
            background.spawn(rt.clone().track(events, on_report.clone()));
            ends.spawn(async move { (name, controller.stopped().await) });

            for (observer, probes) in p.probes {
                tracing::info!(service = %rt.name(), %observer, "probing");
                let options = SchedulerOptions::new(observer).seed(p.entry.config.seed());
                schedulers.push(Scheduler::spawn(options, Recorded(rt.clone()), probes));
            }
            if let Some(rx) = p.replication.as_ref().and_then(Replication::subscribe) {
                background.spawn(forward_progress(rt.clone(), rx));
            }
            services.push(rt);
        }

        let access = Access {
            operator: cfg.daemon.token.clone(),
            reader: cfg.daemon.read_token.clone(),
            metrics_public: cfg.daemon.metrics_public,
        };
        let state = Arc::new(ApiState::new(services.clone(), &access, stop_rx.clone()));
        let api = tokio::spawn(serve(
            listener,
            router(state),
            cfg.daemon.max_connections_per_client,
            cfg.daemon.tls.clone(),
            stop_rx,
        ));
        let scheme = if cfg.daemon.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(%api_addr, scheme, services = services.len(), "idnsd running");
        Ok(Daemon {
            api_addr,
            services,
            dns_servers: Some(servers),
            dns_addrs,
            ends,
            schedulers,
            background,
            api,
            stop,
            _lock: lock,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The services.
    pub fn services(&self) -> &[Arc<ServiceRuntime>] {
        &self.services
    }

    /// The UDP addresses of the embedded DNS server of `service`, if it has one.
    pub fn dns_addrs(&self, service: &str) -> Option<&[SocketAddr]> {
        self.dns_addrs.get(service).map(Vec::as_slice)
    }

    /// Waits until a controller stops on its own (an error: another controller took the
    /// store, a journal that cannot be saved); returns which and how. Each end is returned
    /// once; pending forever while all run.
    pub async fn controller_stopped(&mut self) -> ControllerEnd {
        match self.ends.join_next().await {
            Some(Ok(end)) => end,
            // The waiting task cannot panic; it is aborted only with the daemon.
            Some(Err(e)) => (
                "(unknown)".into(),
                Err(idns_core::Error::Journal(format!(
                    "the task waiting for a controller failed: {e}"
                ))),
            ),
            None => std::future::pending().await,
        }
    }

    /// Stops gracefully: the API stops taking requests, probing stops, each controller lets
    /// its step in flight finish, saves its journal and stops its replication work. Returns
    /// the first controller error, if any.
    pub async fn shutdown(mut self) -> Result<(), idns_core::Error> {
        tracing::info!("shutting down");
        self.stop.send_replace(true);
        for (h, _) in &self.schedulers {
            h.shutdown();
        }
        for s in &self.services {
            s.controller.shutdown();
        }
        let mut result = Ok(());
        for s in &self.services {
            if let Err(e) = s.controller.stopped().await {
                tracing::error!(service = %s.name(), error = %e, "controller stopped with an error");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.ends.shutdown().await;
        for (_, task) in self.schedulers.drain(..) {
            let _ = task.await;
        }
        self.background.shutdown().await;
        let _ = (&mut self.api).await;
        if let Some(servers) = self.dns_servers.take() {
            servers.shutdown();
        }
        tracing::info!("journals saved; stopped");
        result
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.api.abort();
        for s in &self.services {
            s.controller.abort();
        }
        for (h, task) in &self.schedulers {
            h.shutdown();
            task.abort();
        }
    }
}

/// Shuts down the controllers started before a later one failed to start, and waits for them
/// (journals saved), so a failed start leaves nothing running.
async fn stop_started(services: &[Arc<ServiceRuntime>]) {
    for s in services {
        s.controller.shutdown();
    }
    for s in services {
        if let Err(e) = s.controller.stopped().await {
            tracing::error!(service = %s.name(), error = %e, "controller stopped with an error");
        }
    }
}

/// The report sink of a service's probe schedulers: notes each report in the service's
/// runtime (for its status and metrics), then hands it to the service's controller.
struct Recorded(Arc<ServiceRuntime>);

#[async_trait]
impl ReportSink for Recorded {
    async fn report(&self, report: ProbeReport) -> Result<(), SinkClosed> {
        self.0.record_probe(&report);
        ReportSink::report(&self.0.controller, report).await
    }
}

/// Takes the journal directory's lock, so two daemons never drive the same services.
fn lock(dir: &Path) -> Result<File, StartError> {
    let path = dir.join("idnsd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::Io {
            what: format!("cannot open the lock file {}", path.display()),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| StartError::Locked(dir.to_owned()))?;
    Ok(file)
}

/// Notes the replication backend's progress events (passes, promotions, rewinds) in the
/// service's event log.
async fn forward_progress(rt: Arc<ServiceRuntime>, mut rx: broadcast::Receiver<Progress>) {
    loop {
        match rx.recv().await {
            Ok(p) => rt.record_progress(&p),
            // Only the latest matters.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Writes a finished runbook's report into `<journal_dir>/reports/`: the Markdown summary,
/// the self-contained HTML page and the JSON (see [`ReportFiles`]); a failure is logged, the
/// runbook is done either way.
fn write_report(rt: &ServiceRuntime, report: &SwitchReport, ctx: &ReportContext) {
    match rt.reports.write(rt.name().as_str(), report, ctx) {
        Ok(path) => {
            tracing::info!(service = %rt.name(), kind = %report.kind, path = %path.display(), "report written");
        }
        Err(e) => {
            tracing::error!(service = %rt.name(), kind = %report.kind, dir = %rt.reports.dir().display(), error = %e, "report not written");
        }
    }
}
