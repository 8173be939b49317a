//! The runnable side of idns.
//!
//! This package holds the example binaries that assemble the crates into a complete
//! controller: `quickstart` (two sites on loopback, the embedded DNS server, a real failover
//! and failback with measured RTO), `idnsd` (the controller as a daemon driven by one TOML
//! file), `idnsctl` (its command-line client) and drill reports. The pieces the binaries
//! share live in this library so that tests can use them directly:
//!
//! - [`daemon`]: the `idnsd` controller: its configuration, backends, HTTP API and metrics;
//! - [`ctl`]: the client of that API that `idnsctl` is;
//! - [`report`]: drill and switch reports as Markdown, HTML and SVG;
//! - [`loopback`]: the two loopback sites, replicated data, a client resolver and the service
//!   configuration that `quickstart`, `drill`, `failover_bench` and the tests share;
//! - [`watched`]: one generic wrapper that watches the calls a controller makes on any backend;
//! - [`audit`]: a drill's evidence for its report, kept by watching the image backend.
//!
//! `examples/README.md` gives a reading order.

pub mod audit;
pub mod ctl;
pub mod loopback;
pub mod daemon;
pub mod report;
pub mod watched;
