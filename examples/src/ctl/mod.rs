//! What `idnsctl` does: talk to idnsd's API ([`Client`]), print its status as readable tables
//! ([`render_table`], [`render_detail`]), and [`follow`] a runbook to its end with a progress
//! bar per step.
//!
//! The request and answer bodies are the daemon's [`wire`](crate::daemon::wire) types.

mod client;
mod follow;
mod render;

pub use client::{Client, ClientError};
pub use follow::{Progress, follow};
pub use render::{render_detail, render_table};
