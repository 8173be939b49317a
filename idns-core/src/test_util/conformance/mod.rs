//! Conformance suites: what every [`DnsBackend`](crate::DnsBackend) and
//! [`ReplicationBackend`](crate::ReplicationBackend) implementation must do, as executable
//! checks.
//!
//! Each suite is an `async fn run(&self, backend)` that drives a backend through the contract
//! of its trait and **panics with a message that names the broken rule** on the first
//! violation, so it reads well as the failure of a `#[test]`. The suites use no runtime of
//! their own: call them from `#[tokio::test]`, `futures::executor::block_on` or anything else.
//!
//! They are written for real servers that keep state between runs (BIND, PowerDNS,
//! PostgreSQL): each run starts from the highest epoch the backend has already accepted and
//! only uses epochs above it, and leaves the backend in a state a later run can start from.
//!
//! ```
//! use idns_core::test_util::MemoryDns;
//! use idns_core::test_util::conformance::DnsSuite;
//! use idns_core::DnsName;
//!
//! let zone: DnsName = "example.com".parse()?;
//! let backend = MemoryDns::new(std::slice::from_ref(&zone));
//! let suite = DnsSuite::new(zone)?;
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! rt.block_on(suite.run(&backend));
//! // Runs again from where the first run left the backend.
//! rt.block_on(suite.run(&backend));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dns;
mod replication;

pub use dns::DnsSuite;
pub use replication::ReplicationSuite;
