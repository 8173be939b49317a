//! DNS backends for idns: point the service's name at the active site.
//!
//! This crate will hold the [`DnsBackend`](idns_core::DnsBackend) implementations: an embedded
//! authoritative server (the default, so no other server is needed), RFC 2136 dynamic updates
//! with TSIG for BIND, Knot or PowerDNS, and the PowerDNS HTTP API; and the propagation check
//! that asks every authoritative server until all of them answer the new records.
//!
//! It does not decide which site is active; it only carries out the election's decisions,
//! refusing any change whose fencing epoch is older than one it has accepted.
