//! Test support for idns and for the crates that implement its traits (feature `test-util`).
//!
//! - [`MemoryDns`] and [`MemoryReplication`]: in-memory backends that enforce epochs, record
//!   every call, and fail on demand.
//! - [`conformance`]: the suites every [`DnsBackend`](crate::DnsBackend) and
//!   [`ReplicationBackend`](crate::ReplicationBackend) implementation must pass.
//! - [`servers`]: finding real server binaries, skipping (or failing, with
//!   `IDNS_REQUIRE_SERVERS=1`) when they are missing.
//! - `etcd` (with feature `etcd`): a real etcd of one or three members for tests.
//! - [`Checker`]: an election whose every input is checked against its invariants, for
//!   property tests of your own (any reports, commands and step results, crashes included).
//! - [`sim`]: a deterministic simulator of sites, observers, partitions, lag, backend faults and
//!   controller crashes in virtual time, checked by a [`Checker`].

mod checker;
pub mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
mod memory_dns;
mod memory_replication;
pub mod servers;
pub mod sim;
mod trace;

pub use checker::{Checker, Invariant, Violation};
pub use memory_dns::{DnsCall, DnsFaults, MemoryDns};
pub use memory_replication::{MemoryReplication, ReplCall, ReplFaults};
pub use trace::Trace;

/// A short, stable checksum (FNV-1a, 64 bit, as hex) for test data.
pub fn checksum(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
