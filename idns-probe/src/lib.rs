//! Health probes for idns: the checks that tell which sites of a service are alive.
//!
//! This crate will hold the [`Probe`](idns_core::Probe) implementations the paper names — an
//! HTTP(S) page with a search string, a TCP port with optional send/expect strings, a database
//! connect or connect-and-query (PostgreSQL, MySQL/MariaDB), a DNS query and a command — and the
//! scheduler that runs thousands of them on time and sends each
//! [`ProbeReport`](idns_core::ProbeReport) to the controller.
//!
//! It does not decide anything: deciding which site is active is `idns-core`'s election.
