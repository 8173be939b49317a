//! etcd v3 for controllers at several sites (feature `etcd`): a [`Client`], a
//! [`StateStore`](crate::StateStore) on it ([`EtcdStore`]), the leadership of one controller
//! among several ([`Leadership`]) and the observers' reports shared between sites
//! ([`ReportBoard`]).
//!
//! What it does: the key-value calls (get, get by prefix, put, delete, transactions with
//! comparisons on revisions, versions, values and leases), leases (grant, keep-alive, revoke),
//! the member's status and the member list, over several endpoints with fail-over between
//! them; and the journal kept in one key, saved by compare-and-swap on its revision and,
//! optionally, only while a leader key is the one this controller created. Leases and
//! transactions are what a leader election needs: create a leader key bound to a lease only if
//! it does not exist, keep the lease alive, and guard every write by the key's
//! `create_revision`. [`Leadership`] runs that loop on a background task and publishes its
//! [`LeaderState`]; the holder's right to act ends at a deadline tracked on its own clock, not
//! etcd's. [`ReportBoard`] publishes each observer's probe reports bound to its own lease, so
//! an observer that stops goes silent (and abstains) when its lease lapses.
//!
//! What it does not do (yet): watches, etcd's user authentication or client certificates.
//!
//! Why the JSON gateway: etcd serves its v3 API as HTTP and JSON on the client port (the
//! gateway grpc-gateway generates from its protobuf definitions), so the client is reqwest and
//! serde, and building the workspace needs no `protoc` and no C toolchain; Patroni's etcd3
//! support speaks the same gateway. The gateway's client is written here by hand because no
//! maintained crate speaks it (the etcd crates speak gRPC). Its wire rules: keys and values
//! in base64, 64-bit integers as JSON strings, zero values (a false `succeeded`, a dead lease's
//! `TTL`) left out.
//!
//! ```no_run
//! # async fn run(journal: idns_core::Journal) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use idns_core::StateStore;
//! use idns_core::etcd::{Client, EtcdStore};
//!
//! let client = Client::new(
//!     ["http://10.0.1.5:2379", "http://10.0.2.5:2379", "http://10.0.3.5:2379"],
//!     Duration::from_secs(2),
//! )?;
//! let store = EtcdStore::new(client, "/idns/app.example.com", "app")?;
//! let loaded = store.load().await?;
//! let revision = store.save(&journal, loaded.map(|s| s.revision)).await?;
//! # let _ = revision;
//! # Ok(()) }
//! ```

mod client;
mod kv;
mod leader;
mod reports;
mod store;
mod wire;

pub use client::Client;
pub use kv::{
    Compare, CompareOp, Deleted, Header, KeyValue, Lease, LeaseId, Member, Members, Op, OpResponse,
    Range, Status, TxnResult,
};
pub use leader::{LeaderState, Leadership, LeadershipConfig};
pub use reports::{Rejected, ReportBoard, Reports};
pub use store::EtcdStore;

/// Records that the setting at `path` must not be empty when `value` is, with an example of
/// what to write.
fn require_non_empty(problems: &mut crate::Problems, path: &str, value: &str, example: &str) {
    if value.is_empty() {
        problems.push(path, "", format!("must not be empty ({example})"));
    }
}
