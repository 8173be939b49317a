//! The tokio driver and the crash-safe file store (feature `runtime`).
//!
//! - [`Driver`]: runs one service's [`Election`](crate::Election) — persists the journal
//!   before each action, executes actions on the backends with their timeouts, sleeps until
//!   the election's next deadline, broadcasts its events. It does not run probes: whoever
//!   does sends their reports through a [`Handle`].
//! - [`FileStore`]: a [`StateStore`](crate::StateStore) in one JSON file, written to a
//!   temporary file, fsynced and renamed over the old one.
//!
//! This module is the one place in `idns-core` that reads the clock, spawns tasks and touches
//! the disk; the items that must do so say so with an `allow` of the crate's
//! `disallowed-methods` lint.

mod driver;
mod file_store;

pub use driver::{Backends, Driver, DriverOptions, Handle};
pub use file_store::FileStore;
