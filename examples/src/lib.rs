//! The runnable side of idns.
//!
//! This package holds the example binaries that assemble the crates into a complete
//! controller: `quickstart` (two sites on loopback, the embedded DNS server, a real failover
//! and failback with measured RTO), `idnsd` (the controller as a daemon driven by one TOML
//! file), `idnsctl` (its command-line client) and drill reports. The pieces the binaries
//! share live in this library so that tests can use them directly.

pub mod daemon;
pub mod report;
