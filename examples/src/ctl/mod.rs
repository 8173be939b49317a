//! What `idnsctl` does: talk to idnsd's API ([`Client`]), print its status and the history of
//! its switches as readable tables ([`render_table`], [`render_detail`], [`render_history`]),
//! [`follow`] a runbook to its end with a progress bar per step, and [`watch`] a service's
//! events as they come.
//!
//! The request and answer bodies are the daemon's [`wire`](crate::daemon::wire) types.

mod client;
mod follow;
mod render;

pub use client::{Client, ClientError, EventStream, StreamMessage};
pub use follow::{Progress, WATCH_RETRIES, follow, watch};
pub use render::{render_detail, render_history, render_plan, render_table};
