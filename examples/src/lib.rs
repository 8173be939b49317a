//! The runnable side of idns.
//!
//! This package will hold the example binaries that assemble the crates into a complete
//! controller: `quickstart` (two sites on loopback, the embedded DNS server, a real failover
//! and failback with measured RTO), `idnsd` (the controller as a daemon driven by one TOML
//! file) and `drill` (a rehearsal that writes a report).
