//! Starting and stopping the daemon: the backends, drivers, probe schedulers, replication
//! pollers and the HTTP API of a checked [`DaemonConfig`].

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use idns_core::runtime::{Backends, Driver, DriverOptions, FileStore};
use idns_core::{ReplicationBackend, ResourceId, SwitchReport};
use idns_dns::DnsServers;
use idns_probe::{Scheduler, SchedulerHandle, SchedulerOptions, probes_for_service, sink_fn};
use idns_replication::{Progress, Replication};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::api::{ApiState, router, serve};
use super::config::{DaemonConfig, ServiceEntry};
use super::events::stopped;
use super::service::{DrillHook, ServiceRuntime, summary};
use crate::report::{self, ReportContext};

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
    /// A driver could not start (its journal does not fit the configuration, the store or
    /// the DNS cannot be read).
    #[error("service {service}: {source}")]
    Driver {
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

/// A driver that ended, with how.
pub type DriverEnd = (String, Result<(), idns_core::Error>);

/// A running daemon. Stop it with [`shutdown`](Self::shutdown); dropping it stops the
/// background tasks without saving anything beyond what the drivers saved before their last
/// action (as a crash would).
#[derive(Debug)]
pub struct Daemon {
    api_addr: SocketAddr,
    services: Vec<Arc<ServiceRuntime>>,
    dns_servers: Option<DnsServers>,
    dns_addrs: BTreeMap<String, Vec<SocketAddr>>,
    drivers: JoinSet<DriverEnd>,
    schedulers: Vec<(SchedulerHandle, JoinHandle<Result<(), idns_probe::Error>>)>,
    background: JoinSet<()>,
    api: JoinHandle<()>,
    stop: watch::Sender<bool>,
    _lock: File,
}

/// A service built but not started yet.
struct Prepared {
    entry: ServiceEntry,
    runtime: Arc<ServiceRuntime>,
    driver: Driver,
    events: broadcast::Receiver<idns_core::Event>,
    replication: Option<Replication>,
}

impl Daemon {
    /// Starts everything the configuration describes. Nothing is left running when it fails.
    pub async fn start(cfg: DaemonConfig) -> Result<Daemon, StartError> {
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
            let replication = entry.replication.as_ref().map(|r| r.build());
            let store = FileStore::new(&entry.journal);
            let (driver, handle) = Driver::new(
                entry.config.clone(),
                Backends {
                    dns: dns.backend(),
                    replication: replication.as_ref().map(Replication::backend),
                    store: Arc::new(store.clone()),
                },
                DriverOptions::default(),
            )
            .await
            .map_err(|source| StartError::Driver {
                service: service.clone(),
                source,
            })?;
            let events = handle.subscribe();
            let runtime = Arc::new(ServiceRuntime::new(
                entry.config.clone(),
                handle,
                store,
                d.journal_dir.join("reports"),
                d.event_log,
            ));
            prepared.push(Prepared {
                entry: entry.clone(),
                runtime,
                driver,
                events,
                replication,
            });
        }

        // Everything is built: start it.
        let (stop, stop_rx) = watch::channel(false);
        let mut drivers = JoinSet::new();
        let mut schedulers = Vec::new();
        let mut background = JoinSet::new();
        let mut services = Vec::new();
        let on_drill: DrillHook = Arc::new(write_drill_report);
        for p in prepared {
            let rt = p.runtime.clone();
            let name = rt.name().to_string();
            background.spawn(rt.clone().track(p.events, on_drill.clone()));
            let driver = p.driver;
            drivers.spawn(async move { (name, driver.run().await) });

            for observer in &cfg.daemon.observers {
                if !p.entry.config.observers().ids.contains(observer) {
                    continue;
                }
                let probes =
                    probes_for_service(&p.entry.config).map_err(|source| StartError::Probes {
                        service: rt.name().to_string(),
                        source,
                    })?;
                let sink_rt = rt.clone();
                let sink = sink_fn(move |report| {
                    sink_rt.record_probe(&report);
                    let h = sink_rt.handle.clone();
                    async move { h.report(report).await }
                });
                let options = SchedulerOptions::new(observer.clone()).seed(p.entry.config.seed());
                schedulers.push(Scheduler::spawn(options, sink, probes));
                tracing::info!(service = %rt.name(), %observer, "probing");
            }

            if let Some(repl) = &p.replication {
                background.spawn(poll_replication(
                    rt.clone(),
                    repl.backend(),
                    cfg.daemon.replication_poll,
                    stop_rx.clone(),
                ));
                for resource in p.entry.config.resources() {
                    if let Some(work) = repl.background(resource) {
                        let resource = resource.clone();
                        background.spawn(async move {
                            if let Err(e) = work.await {
                                tracing::error!(%resource, error = %e, "continuous replication stopped");
                            }
                        });
                    }
                }
                if let Some(rx) = repl.subscribe() {
                    background.spawn(forward_progress(rt.clone(), rx));
                }
            }
            services.push(rt);
        }

        let state = Arc::new(ApiState::new(
            services.clone(),
            cfg.daemon.token.expose(),
            cfg.daemon.metrics_require_token,
            stop_rx.clone(),
        ));
        let api = tokio::spawn(serve(listener, router(state), stop_rx));
        tracing::info!(%api_addr, services = services.len(), "idnsd running");
        Ok(Daemon {
            api_addr,
            services,
            dns_servers: Some(servers),
            dns_addrs,
            drivers,
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

    /// Waits until a driver stops on its own (an error: another controller took the store,
    /// a journal that cannot be saved); returns which and how. Pending forever while all run.
    pub async fn driver_stopped(&mut self) -> DriverEnd {
        match self.drivers.join_next().await {
            Some(Ok(end)) => end,
            Some(Err(e)) => (
                "(unknown)".into(),
                Err(idns_core::Error::Journal(format!(
                    "driver task failed: {e}"
                ))),
            ),
            None => std::future::pending().await,
        }
    }

    /// Stops gracefully: the API stops taking requests, probing stops, each driver lets its
    /// step in flight finish and saves its journal. Returns the first driver error, if any.
    pub async fn shutdown(mut self) -> Result<(), idns_core::Error> {
        tracing::info!("shutting down");
        self.stop.send_replace(true);
        for (h, _) in &self.schedulers {
            h.shutdown();
        }
        for s in &self.services {
            s.handle.shutdown();
        }
        let mut result = Ok(());
        while let Some(joined) = self.drivers.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::error!(service = %name, error = %e, "driver stopped with an error");
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Err(e) => tracing::error!(error = %e, "driver task failed"),
            }
        }
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
        self.drivers.abort_all();
        for (h, task) in &self.schedulers {
            h.shutdown();
            task.abort();
        }
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

/// Reads each resource's replication status every `every`, notes it and feeds it to the
/// election (lag for the RPO guard).
async fn poll_replication(
    rt: Arc<ServiceRuntime>,
    repl: Arc<dyn ReplicationBackend>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let resources: Vec<ResourceId> = rt.config.resources().to_vec();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        for resource in &resources {
            let limit = every.max(Duration::from_secs(5));
            match tokio::time::timeout(limit, repl.status(resource)).await {
                Ok(Ok(status)) => {
                    let at = SystemTime::now();
                    rt.record_replication(&status, at);
                    for report in status.reports(at) {
                        if rt.handle.replication(report).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(service = %rt.name(), %resource, error = %e, "replication status failed");
                }
                Err(_) => {
                    tracing::warn!(service = %rt.name(), %resource, "replication status timed out");
                }
            }
        }
    }
}

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

/// Writes a finished drill's report into `<journal_dir>/reports/`: the JSON summary, the
/// Markdown summary and the self-contained HTML page.
fn write_drill_report(rt: &ServiceRuntime, report: &SwitchReport, ctx: &ReportContext) {
    let dir = &rt.report_dir;
    let base = format!("{}-drill-{}", rt.name(), report.runbook);
    let json = match serde_json::to_vec_pretty(&summary(report)) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "drill report not serialisable");
            return;
        }
    };
    let files = [
        (format!("{base}.json"), json),
        (
            format!("{base}.md"),
            report::markdown(report, ctx).into_bytes(),
        ),
        (
            format!("{base}.html"),
            report::html(report, ctx).into_bytes(),
        ),
    ];
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::error!(service = %rt.name(), dir = %dir.display(), error = %e, "drill report not written");
        return;
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        match std::fs::write(&path, bytes) {
            Ok(()) => {
                tracing::info!(service = %rt.name(), path = %path.display(), "drill report written");
            }
            Err(e) => {
                tracing::error!(service = %rt.name(), path = %path.display(), error = %e, "drill report not written");
            }
        }
    }
}
