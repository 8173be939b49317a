//! The `idnsd` controller: its configuration file, the backends it builds, its HTTP API and metrics.
//!
//! - [`config`]: the one TOML file (`[daemon]` and `[[services]]`), checked up front with
//!   every problem listed by field path and line;
//! - [`start`]: [`Daemon::start`] builds each service's DNS and replication backends and
//!   starts its [`Controller`](idns_core::runtime::Controller) on them (journal in the
//!   journal directory; the controller polls the replication status and runs the backend's
//!   background work), one probe scheduler per local observer reporting into it, and the
//!   HTTP API; [`Daemon::shutdown`] stops it all gracefully with the journals saved;
//! - [`service`]: what the daemon keeps of each running service (its controller, what it
//!   has seen of it) for the API and metrics, and [`events`] its recent events;
//! - [`api`]: the HTTP API (status, commands, events, reports) behind a bearer token, and
//!   `/metrics` ([`metrics`]); [`wire`] holds its JSON bodies, which its client
//!   [`ctl`](crate::ctl) (what `idnsctl` does) shares;
//! - [`run()`]: the daemon until SIGTERM/SIGINT.

pub mod api;
pub mod config;
pub mod events;
pub mod metrics;
mod parse;
pub mod run;
pub mod service;
pub mod start;
pub mod wire;

pub use config::{ConfigErrors, DaemonConfig};
pub use parse::Problem;
pub use run::{RunError, run};
pub use start::{Daemon, StartError};
