//! DNS backends for idns: point a service's name at the active site.
//!
//! What it does:
//! - [`embedded`]: an authoritative DNS server inside your program (the default backend, so
//!   no other DNS server is needed), serving the service names of one or more zones over UDP
//!   and TCP, with a fast path for the few names it serves.
//! - [`rfc2136`] (feature `rfc2136`, default): RFC 2136 dynamic updates signed with TSIG, for
//!   BIND, Knot, PowerDNS or any primary; each change is one UPDATE guarded by a
//!   compare-and-swap prerequisite on the ownership record.
//! - [`powerdns`] (feature `powerdns`, default): the PowerDNS HTTP API, one `PATCH` per change,
//!   the epoch read from the ownership record before writing.
//! - [`propagation`]: asks every authoritative server directly, without caches, until all of
//!   them answer the new records; every backend's `verify` uses it.
//!
//! A configuration file names a backend with one table, `{ backend = "embedded" | "rfc2136" |
//! "powerdns", … }`: a [`DnsSpec`], checked into a [`DnsConfig`] whose
//! [`build`](DnsConfig::build) makes the backend ([`DnsServers`] lets several services share
//! one embedded server).
//!
//! Every backend implements [`DnsBackend`](idns_core::DnsBackend): it refuses a change whose
//! fencing epoch is lower than one it has accepted for that name, accepts the same epoch again,
//! and publishes the ownership TXT record `_idns.<name>` (`epoch=7 site=recovery`) so anyone
//! can see who decided what.
//!
//! What it does not do: decide which site is active (that is `idns-core`'s election), probe
//! sites (`idns-probe`), sign zones (no DNSSEC), transfer zones, or resolve recursively.
//!
//! # Example
//! Start the embedded server on a free loopback port, publish a site and fail over:
//!
//! ```
//! use std::time::Duration;
//! use idns_core::{BackendError, DnsBackend, DnsChange, Epoch, RecordSet};
//! use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EmbeddedConfig::new(vec!["127.0.0.1:0".parse()?], &["example.com".parse()?])?;
//! let server = EmbeddedServer::start(config).await?;
//! println!("serving on {:?} (UDP) and {:?} (TCP)", server.udp_addrs(), server.tcp_addrs());
//! let dns = server.backend();
//!
//! let mut change = DnsChange {
//!     zone: "example.com".parse()?,
//!     name: "app.example.com".parse()?,
//!     records: RecordSet::Addresses(vec!["192.0.2.1".parse()?]),
//!     ttl: Duration::from_secs(30),
//!     epoch: Epoch::new(1),
//!     site: Some("primary".parse()?),
//! };
//! dns.apply(&change).await?;
//!
//! // Fail over to the recovery site with the next epoch.
//! change.records = RecordSet::Addresses(vec!["198.51.100.1".parse()?]);
//! change.epoch = Epoch::new(2);
//! change.site = Some("recovery".parse()?);
//! dns.apply(&change).await?;
//! assert!(dns.verify(&change, Duration::from_secs(5)).await?.complete());
//!
//! // A controller still living in epoch 1 is fenced off.
//! change.epoch = Epoch::new(1);
//! assert!(matches!(dns.apply(&change).await, Err(BackendError::StaleEpoch { .. })));
//! # Ok(()) }
//! ```

mod bounds;
mod config;
pub mod embedded;
mod error;
#[cfg(feature = "powerdns")]
pub mod powerdns;
pub mod propagation;
#[cfg(feature = "rfc2136")]
pub mod rfc2136;
mod servers;
#[cfg(feature = "test-util")]
pub mod testing;
mod ttl;

pub use config::{DnsConfig, DnsSpec};
pub use error::Error;
pub use servers::{Dns, DnsServers};
pub use ttl::{InvalidTtl, Ttl};
