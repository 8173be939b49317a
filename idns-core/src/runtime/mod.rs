//! The controller and the crash-safe file store (feature `runtime`).
//!
//! - [`Controller`]: one service's controller, assembled with [`Controller::builder`] from its
//!   configuration, a DNS backend, an optional replication backend and a
//!   [`StateStore`](crate::StateStore). It owns its tasks — the driver loop around the
//!   [`Election`](crate::Election) (persist the journal before each action, execute actions
//!   on the backends with their timeouts, sleep until the election's next deadline, poll and
//!   publish the replication status, broadcast events) and the replication backend's
//!   background work — and is the cheap-to-clone handle that feeds, reads, waits on and stops
//!   them. It does not run probes: whoever does sends their reports to it (`idns-probe`'s
//!   scheduler takes a controller as its report sink).
//! - [`FileStore`]: a [`StateStore`](crate::StateStore) in one JSON file, written to a
//!   temporary file, fsynced and renamed over the old one.
//!
//! This module is the one place in `idns-core` that reads the clock, spawns tasks and touches
//! the disk; the items that must do so say so with an `allow` of the crate's
//! `disallowed-methods` lint.

mod builder;
mod controller;
mod driver;
mod file_store;

pub use builder::ControllerBuilder;
pub use controller::{Controller, PolledStatus};
pub use file_store::FileStore;

// Programs written before `Controller::builder` compile unchanged with these; new code uses
// the builder and names the controller `Controller`.
#[doc(hidden)]
pub use driver::{Backends, Driver, DriverOptions};
/// The controller, under the name it had before [`Controller::builder`].
#[doc(hidden)]
pub type Handle = Controller;
