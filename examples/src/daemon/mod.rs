//! The `idnsd` controller: its configuration file, the backends it builds, its HTTP API and metrics.
//!
//! - [`config`]: the one TOML file (`[daemon]` and `[[services]]`), checked up front with
//!   every problem listed by field path and line;
//! - [`build`]: [`Daemon::start`] builds each service's DNS and replication backends, its
//!   driver with a journal in the journal directory, one probe scheduler per local observer,
//!   the replication status poller, and the HTTP API; [`Daemon::shutdown`] stops it all
//!   gracefully with the journals saved;
//! - [`api`]: the HTTP API (status, commands, events, reports) behind a bearer token, and
//!   `/metrics` ([`metrics`]); [`wire`] holds its JSON bodies, which its client
//!   [`ctl`](crate::ctl) (what `idnsctl` does) shares;
//! - [`run()`]: the daemon until SIGTERM/SIGINT.

pub mod api;
pub mod build;
pub mod config;
pub mod events;
pub mod metrics;
mod parse;
pub mod run;
pub mod service;
pub mod wire;

pub use build::{Daemon, StartError};
pub use config::{ConfigErrors, DaemonConfig};
pub use parse::Problem;
pub use run::{RunError, run};
