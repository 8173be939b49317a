//! Health probes for idns: the checks that tell which sites of a service are alive.
//!
//! What it does:
//! - **Typed check configuration** ([`CheckSpec`]): the free-form `check` table of each probe in
//!   a [`ServiceConfig`](idns_core::ServiceConfig), read by `kind` and validated up front — a
//!   bad URL, regex, port, status range or CA file is a [`ConfigError`](idns_core::ConfigError)
//!   naming the field (`sites[1].probes[0].check.url`).
//! - **Probes** implementing [`idns_core::Probe`]: an HTTP(S) page ([`HttpProbe`]: status codes,
//!   a search string or regex in a bounded window of the body, the site's address pinned while
//!   Host and SNI carry the service's name, TLS verified by default) and a TCP port
//!   ([`TcpProbe`]: connect, optional send and expected reply), a DNS query ([`DnsProbe`]:
//!   expected response code and answer, UDP with TCP fallback) and a program ([`CommandProbe`]:
//!   exit status 0 is up, the first line of output is the reason, killed with its process
//!   group on timeout). Each outcome says up, down or timeout, with the latency and a reason a
//!   person can act on.
//! - **Database probes** (cargo features `postgres` and `mysql`, both on by default):
//!   [`PostgresProbe`] and [`MysqlProbe`] connect and authenticate (the paper's option 1) or run
//!   a query and check a cell at a row/column, or the row count (option 2), reusing one
//!   connection for `reconnect_after` checks (F5's "count"; 0 keeps it open). Passwords are
//!   [`Secret`]s: never in `Debug`, logs or reasons.
//! - [`probes_for_service`]: every probe of every site of a service, built and ready to run.
//! - **The [`Scheduler`]**: runs any set of probes at their intervals — spread start times,
//!   seeded jitter, a hard timeout per attempt, a global bound on checks in flight, one heap of
//!   deadlines instead of a task per probe — and sends each [`ProbeReport`](idns_core::ProbeReport)
//!   to a [`ReportSink`]: `idns-core`'s controller itself (feature `controller`, on by
//!   default), a tokio channel, or any async closure via [`sink_fn`]. Probes can be added and
//!   removed while it runs. [`spawn_probes`] runs every probe of a controller's service
//!   into it.
//!
//! What it does not do: decide anything. Rise/fall counting, `down_after`, quorum and the choice
//! of the active site belong to `idns-core`'s election; a probe only reports what one attempt
//! found. It never follows the service's own DNS name: each site is probed at its own address
//! (or its alias), so a probe cannot be fooled by the record it helps to set.
//!
//! Logging goes through `tracing`, one target per kind (`idns_probe::http`, `idns_probe::tcp`,
//! `idns_probe::dns`, `idns_probe::command`, `idns_probe::scheduler`)
//! with the probe as `site/probe` in the `probe` field; a check's `debug = true` (the paper's
//! Debug knob) raises that probe's details from `debug` to `info`.
//!
//! # Example
//! Build the probes of a service whose two sites are TCP listeners on loopback, and run each
//! once: the site that listens is up, the other is down.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use idns_core::{ProbeStatus, ServiceConfig};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let cfg = ServiceConfig::from_toml(&format!(r#"
//!     name = "app.example.com"
//!     zone = "example.com"
//!     [[sites]]
//!     id = "primary"
//!     priority = 1
//!     addresses = ["127.0.0.1"]
//!     probes = [{{ id = "port", interval = "1s", timeout = "1s",
//!                  check = {{ kind = "tcp", port = {port} }} }}]
//!     [[sites]]
//!     id = "recovery"
//!     priority = 2
//!     addresses = ["127.0.0.1"]
//!     probes = [{{ id = "port", interval = "1s", timeout = "1s",
//!                  check = {{ kind = "tcp", port = 1 }} }}]
//! "#))?;
//! let probes = idns_probe::probes_for_service(&cfg)?;
//! let primary = probes[0].probe.check().await;
//! let recovery = probes[1].probe.check().await;
//! assert_eq!(primary.status, ProbeStatus::Up);
//! assert_eq!(recovery.status, ProbeStatus::Down);
//! assert_eq!(recovery.reason, "connection refused by 127.0.0.1:1");
//!
//! // Run them on schedule, reports into a channel (or straight into a controller:
//! // `Scheduler::spawn(options, controller.clone(), probes)`).
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let options = idns_probe::SchedulerOptions::new("local".parse()?);
//! let (handle, task) = idns_probe::Scheduler::spawn(options, tx, probes);
//! let first = rx.recv().await.expect("a report within the first interval");
//! assert_eq!(first.probe.as_str(), "port");
//! handle.shutdown();
//! task.await??;
//! # Ok(())
//! # }
//! ```

/// Logs a probe's detail at `info` when its `debug` knob is on, else at `debug`.
macro_rules! probe_log {
    ($debug:expr, $target:literal, $($rest:tt)+) => {
        if $debug {
            tracing::info!(target: $target, $($rest)+)
        } else {
            tracing::debug!(target: $target, $($rest)+)
        }
    };
}
pub(crate) use probe_log;

mod command;
mod db;
mod dns;
mod error;
mod http;
mod matcher;
pub mod scheduler;
mod sink;
mod spec;
mod tcp;
mod tls;

pub use command::{CommandProbe, CommandSpec};
#[cfg(feature = "mysql")]
pub use db::MysqlProbe;
#[cfg(feature = "postgres")]
pub use db::PostgresProbe;
pub use db::{DbSpec, Secret};
pub use dns::{DnsProbe, DnsSpec};
pub use error::Error;
pub use http::{HttpProbe, HttpSpec, StatusSpec};
#[cfg(feature = "controller")]
pub use scheduler::spawn_probes;
pub use scheduler::{Scheduler, SchedulerHandle, SchedulerOptions, SchedulerStats};
pub use sink::{FnSink, ReportSink, SinkClosed, sink_fn};
pub use spec::{
    AliasSpec, CheckSpec, ScheduledProbe, TIMEOUT_GRACE, Target, build_probe, probes_for_service,
};
pub use tcp::{TcpProbe, TcpSpec};
