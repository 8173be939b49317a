//! The embedded authoritative DNS server: the default backend, so no other DNS server is
//! needed.
//!
//! [`EmbeddedServer::start`] serves one or more zones over UDP and TCP, as an
//! [`EmbeddedConfig`] (checked from an [`EmbeddedSpec`]) says. Each zone has its SOA
//! and NS records; every service name published through the server's [`EmbeddedBackend`]
//! answers with A/AAAA records or a CNAME, and its ownership TXT record `_idns.<name>` holds
//! [`Ownership::to_txt`](idns_core::Ownership::to_txt). A change is one atomic swap of the
//! whole answer set and bumps the zone's SOA serial; a change with an epoch lower than the
//! highest accepted for that name is refused.
//! With a [`state_file`](EmbeddedSpec::state_file), a change is on disk before it is served
//! or returned; the file is written on tokio's blocking threads, never on the workers that
//! serve TCP.
//!
//! What it answers, and how:
//! - authoritative only: AA set for names in its zones; anything else is REFUSED; no
//!   recursion, no zone transfers (REFUSED), no wildcards, no DNSSEC;
//! - NXDOMAIN and NODATA with the SOA (negative TTL) in the authority section; an empty
//!   non-terminal is NODATA; a CNAME is followed inside its zone;
//! - ANY gets one RRset (RFC 8482);
//! - UDP answers fit 512 bytes, or the client's EDNS size up to
//!   [`max_udp_payload`](EmbeddedSpec::max_udp_payload); larger ones are sent empty with TC
//!   set, so the client retries over TCP;
//! - a request that cannot be parsed gets FORMERR (its header only), another opcode NOTIMP, a
//!   packet shorter than a header or with QR set nothing at all;
//! - the 0x20 spelling of the question is echoed;
//! - over TCP, at most [`max_tcp_connections`](EmbeddedSpec::max_tcp_connections) are
//!   served at once, and
//!   [`max_tcp_connections_per_client`](EmbeddedSpec::max_tcp_connections_per_client) for
//!   one client address (a connection beyond it is closed at once); a client that stalls
//!   in the middle of a query or stops reading its answers is dropped after
//!   [`tcp_idle_timeout`](EmbeddedSpec::tcp_idle_timeout);
//! - with [`dynamic_ttl`](EmbeddedSpec::dynamic_ttl), a service name answers with a short
//!   TTL while its site is suspect and a long one when stable (see [Dynamic TTL](#dynamic-ttl)).
//!
//! Speed: answers are rendered once by the complete path (hickory-proto parses and encodes)
//! and replayed from a per-thread cache with only the ID, flags, question spelling and OPT
//! record patched, byte for byte what the complete path sends; each UDP thread owns a socket
//! on the shared port (`SO_REUSEPORT`) and reads and writes up to 32 datagrams per system
//! call (`recvmmsg`/`sendmmsg`), allocating nothing per datagram. `bench/compare.sh`
//! measures it against BIND, PowerDNS, Knot and gdnsd.
//!
//! # Dynamic TTL
//! With [`DynamicTtl`] configured, each service name holds a [`TtlMode`], set with
//! [`EmbeddedBackend::set_ttl_mode`]: [`Suspect`](TtlMode::Suspect) answers with the short
//! TTL, so resolvers pick up a switch quickly, [`Stable`](TtlMode::Stable) with the long one,
//! so they cache; neither above the TTL the name's change asked for unless
//! [`exceed_requested`](DynamicTtl::exceed_requested) is set. A name never set answers with
//! the TTL its change asked for. A mode change swaps the answer set and bumps the SOA serial
//! like a change does, but leaves the epoch, the ownership record and what
//! [`read`](idns_core::DnsBackend::read) returns alone.
//!
//! [`TtlAdvisor`] decides the mode from the election's [`Event`](idns_core::Event)s, sans IO;
//! [`EmbeddedBackend::follow_events`] runs one on the driver's event stream.
//!
//! [`Responder`] is the same request handling without sockets (for fuzzing, or another
//! transport).
//!
//! ```
//! use std::time::Duration;
//! use idns_core::{DnsBackend, DnsChange, Epoch, RecordSet};
//! use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let zone = "example.com".parse()?;
//! let config = EmbeddedConfig::new(vec!["127.0.0.1:0".parse()?], &[zone])?;
//! let server = EmbeddedServer::start(config).await?;
//! let backend = server.backend();
//! let change = DnsChange {
//!     zone: "example.com".parse()?,
//!     name: "app.example.com".parse()?,
//!     records: RecordSet::Addresses(vec!["192.0.2.7".parse()?]),
//!     ttl: Duration::from_secs(30),
//!     epoch: Epoch::new(1),
//!     site: Some("primary".parse()?),
//! };
//! backend.apply(&change).await?;
//! let report = backend.verify(&change, Duration::from_secs(5)).await?;
//! assert!(report.complete());
//! server.shutdown();
//! # Ok(()) }
//! ```

mod answer;
mod backend;
mod config;
mod dynamic_ttl;
mod fast;
mod net;
mod zone;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use backend::EmbeddedBackend;
pub use config::{EmbeddedConfig, EmbeddedSpec, NameServerSpec, ZoneSpec};
pub use dynamic_ttl::{DynamicTtl, TtlAdvisor, TtlMode};

use crate::error::Error;
use backend::{Shared, State};

/// Bind attempts when port 0 picks a UDP port whose TCP twin is taken.
const BIND_ATTEMPTS: usize = 20;

/// A running embedded authoritative server. Stops when dropped (or by
/// [`shutdown`](Self::shutdown), which also waits for its threads).
#[derive(Debug)]
pub struct EmbeddedServer {
    shared: Arc<Shared>,
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Restores the state file if there is one, opens every socket and starts serving. Must
    /// run inside a tokio runtime (TCP is served on it; UDP on threads of its own).
    pub async fn start(config: EmbeddedConfig) -> Result<EmbeddedServer, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        // Reading the state file is disk work: off the async workers.
        let (zones, state_file) = (config.zones.clone(), config.state_file.clone());
        let (state, snapshot) =
            tokio::task::spawn_blocking(move || State::load(zones, state_file.as_deref()))
                .await
                .map_err(|e| Error::State(format!("reading the state file stopped: {e}")))?
                .map_err(Error::State)?;
        let shared = Arc::new(Shared::new(state, snapshot, config.state_file.clone()));
        let threads_per_addr = match config.udp_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = EmbeddedServer {
            shared: Arc::clone(&shared),
            udp: Vec::new(),
            tcp: Vec::new(),
            stop: Arc::clone(&stop),
            threads: Mutex::new(Vec::new()),
            tasks: Vec::new(),
        };
        let mut threads = Vec::new();
        for addr in &config.listen {
            let (udp_sockets, tcp) = bind_pair(*addr, threads_per_addr)?;
            let local = udp_sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(*addr);
            let tcp_local = tcp.local_addr().unwrap_or(local);
            for (i, socket) in udp_sockets.into_iter().enumerate() {
                let cell = Arc::clone(&shared.cell);
                let stop = Arc::clone(&stop);
                let max_udp = config.max_udp_payload;
                let handle = std::thread::Builder::new()
                    .name(format!("idns-udp-{}-{i}", local.port()))
                    .spawn(move || net::udp_loop(socket, cell, max_udp, stop))
                    .map_err(|source| Error::Io {
                        what: "cannot start a UDP worker thread".into(),
                        source,
                    })?;
                threads.push(handle);
            }
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(tcp).map_err(|source| Error::Io {
                what: format!("cannot serve TCP on {tcp_local}"),
                source,
            })?;
            server.tasks.push(runtime.spawn(net::tcp_accept(
                listener,
                Arc::clone(&shared.cell),
                config.max_udp_payload,
                net::TcpLimits {
                    max: config.max_tcp_connections,
                    per_client: config.max_tcp_connections_per_client,
                    idle: config.tcp_idle_timeout,
                },
            )));
            tracing::info!(udp = %local, tcp = %tcp_local, threads = threads_per_addr, "embedded DNS server listening");
            server.udp.push(local);
            server.tcp.push(tcp_local);
        }
        server.threads = Mutex::new(threads);
        Ok(server)
    }

    /// The UDP addresses served (with the ports the system picked for port 0).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// The TCP addresses served.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// A [`DnsBackend`](idns_core::DnsBackend) that changes this server's records; it keeps
    /// working (without answering anyone) after the server stops.
    pub fn backend(&self) -> EmbeddedBackend {
        EmbeddedBackend {
            shared: Arc::clone(&self.shared),
            servers: self.udp.iter().map(|a| reachable(*a)).collect(),
        }
    }

    /// Stops serving and waits for the UDP threads to finish (up to about 0.1 s), so the
    /// ports are free when it returns. A server shared by several services
    /// ([`DnsServers`](crate::DnsServers)) stops for all of them.
    pub fn shutdown(&self) {
        self.stop_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    fn stop_all(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The embedded server's request handling without its sockets: answers one DNS message at a
/// time exactly as the server would (same fast path, same size limits). For fuzzing, tests,
/// and serving over a transport of your own.
///
/// ```
/// use idns_dns::embedded::{EmbeddedConfig, Responder};
///
/// let config = EmbeddedConfig::new(vec!["127.0.0.1:0".parse()?], &["example.com".parse()?])?;
/// let mut responder = Responder::new(&config)?;
/// assert!(responder.answer(&[0, 1, 2], false).is_none()); // shorter than a header: no answer
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Responder {
    backend: EmbeddedBackend,
    worker: fast::Worker,
    out: Vec<u8>,
    max_udp_payload: u16,
}

impl Responder {
    /// A responder for `config`'s zones, starting empty (the listen addresses and the state
    /// file are not used).
    pub fn new(config: &EmbeddedConfig) -> Result<Responder, Error> {
        let (state, snapshot) = State::load(config.zones.clone(), None).map_err(Error::State)?;
        let shared = Arc::new(Shared::new(state, snapshot, None));
        Ok(Responder {
            worker: fast::Worker::new(Arc::clone(&shared.cell), config.max_udp_payload),
            backend: EmbeddedBackend {
                shared,
                servers: Vec::new(),
            },
            out: Vec::with_capacity(4096),
            max_udp_payload: config.max_udp_payload,
        })
    }

    /// A backend that changes what this responder answers (its `verify` has no server to
    /// ask).
    pub fn backend(&self) -> EmbeddedBackend {
        self.backend.clone()
    }

    /// The largest UDP answer this responder sends to an EDNS client.
    pub fn max_udp_payload(&self) -> u16 {
        self.max_udp_payload
    }

    /// The answer to `request` (received over TCP when `over_tcp`, else UDP), or `None` when
    /// the server would send nothing.
    pub fn answer(&mut self, request: &[u8], over_tcp: bool) -> Option<&[u8]> {
        let transport = if over_tcp {
            answer::Transport::Tcp
        } else {
            answer::Transport::Udp
        };
        self.worker
            .handle(request, transport, &mut self.out)
            .then_some(self.out.as_slice())
    }
}

/// The address a client uses to reach a socket bound to `addr`.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Binds `threads` UDP sockets and one TCP listener on the same port of `addr`.
fn bind_pair(
    addr: SocketAddr,
    threads: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let first = net::udp_socket(addr, true).map_err(|source| Error::Bind {
            transport: "udp",
            addr,
            source,
        })?;
        let port = first
            .local_addr()
            .map_err(|source| Error::Bind {
                transport: "udp",
                addr,
                source,
            })?
            .port();
        let bound = SocketAddr::new(addr.ip(), port);
        let tcp = match net::tcp_listener(bound) {
            Ok(l) => l,
            Err(e)
                if addr.port() == 0
                    && attempt < BIND_ATTEMPTS
                    && e.kind() == std::io::ErrorKind::AddrInUse =>
            {
                continue;
            }
            Err(source) => {
                return Err(Error::Bind {
                    transport: "tcp",
                    addr: bound,
                    source,
                });
            }
        };
        let mut sockets = vec![first];
        for _ in 1..threads {
            sockets.push(net::udp_socket(bound, true).map_err(|source| Error::Bind {
                transport: "udp",
                addr: bound,
                source,
            })?);
        }
        return Ok((sockets, tcp));
    }
}

#[cfg(test)]
mod tests;
