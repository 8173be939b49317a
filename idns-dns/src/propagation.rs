//! The propagation check: ask every authoritative server directly, without any cache, until
//! all of them answer a name with the expected records, or a deadline passes.
//!
//! Every backend's [`verify`](idns_core::DnsBackend::verify) uses it, and a runbook's "verify
//! DNS" step can use it on its own for servers no backend writes to (secondaries).
//!
//! ```no_run
//! use std::time::Duration;
//! use idns_core::{DnsName, RecordSet};
//! use idns_dns::propagation::PropagationChecker;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let checker = PropagationChecker::new(["192.0.2.53:53".parse()?, "198.51.100.53:53".parse()?]);
//! let name: DnsName = "app.example.com".parse()?;
//! let want = RecordSet::Addresses(vec!["203.0.113.7".parse()?]);
//! let report = checker.check(&name, &want, Duration::from_secs(30)).await;
//! for server in &report.servers {
//!     println!("{}: current={} after {:?} ({})", server.server, server.current, server.latency, server.detail);
//! }
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use idns_core::{
    BackendError, ConfigError, DnsName, Problems, Propagation, RecordSet, ServerAnswer,
};
use serde::{Deserialize, Serialize};

use crate::bounds::MAX_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

/// Which servers to check and how, as written in a backend's configuration;
/// [`PropagationChecker::try_from`] checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagationSpec {
    /// The authoritative servers (address and port), every one of which must answer.
    pub servers: Vec<SocketAddr>,
    /// Limit for one query (default 1 s).
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Pause between two rounds of queries to a server that is not current yet (default
    /// 100 ms).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_query_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(100)
}

impl PropagationSpec {
    /// Checks `servers` with the default timeouts.
    pub fn new(servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            servers: servers.into_iter().collect(),
            query_timeout: default_query_timeout(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl TryFrom<PropagationSpec> for PropagationChecker {
    type Error = ConfigError;

    /// Checks every field; the error lists every problem with its field path.
    fn try_from(spec: PropagationSpec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        let query_timeout = spec.query_timeout;
        p.duration(
            "query_timeout",
            query_timeout,
            Problems::ABOVE_ZERO,
            MAX_TIMEOUT,
        );
        // A pause of zero would query a lagging server in a tight loop.
        let poll = spec.poll_interval;
        p.duration(
            "poll_interval",
            poll,
            Duration::from_millis(10),
            MAX_TIMEOUT,
        );
        for (i, s) in spec.servers.iter().enumerate() {
            if s.port() == 0 {
                p.push(format!("servers[{i}]"), s, "needs a port");
            }
        }
        p.finish_with(
            PropagationChecker::new(spec.servers)
                .with_query_timeout(spec.query_timeout)
                .with_poll_interval(spec.poll_interval),
        )
    }
}

/// Reads an optional `propagation` table into `p`, its problems under `propagation`.
pub(crate) fn parse_optional(
    p: &mut Problems,
    spec: Option<PropagationSpec>,
) -> Option<PropagationChecker> {
    spec.and_then(|s| {
        PropagationChecker::try_from(s)
            .map_err(|e| p.extend("propagation", e))
            .ok()
    })
}

/// Asks a list of authoritative servers what a name answers (see the [module](self) docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagationChecker {
    servers: Vec<SocketAddr>,
    query_timeout: Duration,
    poll_interval: Duration,
}

/// What one server answered for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The A/AAAA records, or the CNAME, of the name; [`RecordSet::Empty`] for NODATA and
    /// NXDOMAIN.
    pub records: RecordSet,
    /// The smallest TTL of those records (zero when there are none).
    pub ttl: Duration,
}

impl PropagationChecker {
    /// A checker of `servers`, with a query timeout of 1 s and 100 ms between rounds.
    pub fn new(servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            servers: servers.into_iter().collect(),
            query_timeout: default_query_timeout(),
            poll_interval: default_poll_interval(),
        }
    }

    /// A checker of every name server of `zone`: asks `via` (any server that answers for
    /// the zone, e.g. its primary) for the zone's NS records and their addresses (A and AAAA,
    /// also asked of `via`), and checks each address on `port` (53 in production).
    ///
    /// Fails when `via` cannot be asked, or when no NS record has an address.
    pub async fn from_nameservers(
        zone: &DnsName,
        via: SocketAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let zone_name = Name::from_ascii(zone.to_fqdn())
            .map_err(|e| BackendError::Invalid(format!("{zone}: {e}")))?;
        let ns = query(via, &zone_name, RecordType::NS, timeout).await?;
        let mut servers = Vec::new();
        for record in &ns.answers {
            let RData::NS(target) = &record.data else {
                continue;
            };
            for rtype in [RecordType::A, RecordType::AAAA] {
                let Ok(answer) = query(via, &target.0, rtype, timeout).await else {
                    continue;
                };
                for r in &answer.answers {
                    let ip = match &r.data {
                        RData::A(v4) => IpAddr::V4(v4.0),
                        RData::AAAA(v6) => IpAddr::V6(v6.0),
                        _ => continue,
                    };
                    let server = SocketAddr::new(ip, port);
                    if !servers.contains(&server) {
                        servers.push(server);
                    }
                }
            }
        }
        if servers.is_empty() {
            return Err(BackendError::NotFound(format!(
                "{via} names no name server of {zone} with an address"
            )));
        }
        Ok(Self::new(servers).with_query_timeout(timeout))
    }

    /// Sets the limit for one query.
    #[must_use]
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Sets the pause between two rounds of queries to a server that is not current yet.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The servers checked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Asks every server, in parallel and again every poll interval, until each answers
    /// `name` with `expected` (in any order) or `timeout` passes. One entry per server, in the
    /// order of [`servers`](Self::servers); the latency is the time from the start of the
    /// check until that server answered the expected records.
    pub async fn check(
        &self,
        name: &DnsName,
        expected: &RecordSet,
        timeout: Duration,
    ) -> Propagation {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, server) in self.servers.iter().copied().enumerate() {
            let this = self.clone();
            let name = name.clone();
            let expected = expected.clone();
            tasks.spawn(async move {
                (
                    i,
                    this.wait_for(server, &name, &expected, start, deadline)
                        .await,
                )
            });
        }
        let mut answers: Vec<Option<ServerAnswer>> = vec![None; self.servers.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, answer)) => answers[i] = Some(answer),
                Err(e) => tracing::warn!(error = %e, "propagation task failed"),
            }
        }
        let servers = answers
            .into_iter()
            .zip(&self.servers)
            .map(|(a, s)| {
                a.unwrap_or_else(|| ServerAnswer {
                    server: s.to_string(),
                    current: false,
                    latency: start.elapsed(),
                    detail: "the check of this server failed".into(),
                })
            })
            .collect();
        Propagation { servers }
    }

    async fn wait_for(
        &self,
        server: SocketAddr,
        name: &DnsName,
        expected: &RecordSet,
        start: Instant,
        deadline: Instant,
    ) -> ServerAnswer {
        // What the server answered last: a query cut short by the deadline does not hide it.
        let mut answered: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let per_query = self.query_timeout.min(left).max(Duration::from_millis(10));
            let detail = match self.observe_within(server, name, per_query).await {
                Ok(seen) if seen.records.same_as(expected) => {
                    tracing::debug!(%server, %name, records = %seen.records, "server is current");
                    return ServerAnswer {
                        server: server.to_string(),
                        current: true,
                        latency: start.elapsed(),
                        detail: seen.records.to_string(),
                    };
                }
                Ok(seen) => {
                    let detail = format!("answers [{}]", seen.records);
                    answered = Some(detail.clone());
                    detail
                }
                Err(e) => match &answered {
                    Some(last) => format!("{last}, then: {e}"),
                    None => e.to_string(),
                },
            };
            let now = Instant::now();
            if now >= deadline {
                tracing::info!(%server, %name, %detail, "server is not current");
                return ServerAnswer {
                    server: server.to_string(),
                    current: false,
                    latency: start.elapsed(),
                    detail,
                };
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    /// What `server` answers for `name` now (A and AAAA queries, without recursion).
    pub async fn observe(
        &self,
        server: SocketAddr,
        name: &DnsName,
    ) -> Result<Observed, BackendError> {
        self.observe_within(server, name, self.query_timeout).await
    }

    async fn observe_within(
        &self,
        server: SocketAddr,
        name: &DnsName,
        timeout: Duration,
    ) -> Result<Observed, BackendError> {
        let qname = Name::from_ascii(name.to_fqdn())
            .map_err(|e| BackendError::Invalid(format!("{name}: {e}")))?;
        let (a, aaaa) = tokio::join!(
            query(server, &qname, RecordType::A, timeout),
            query(server, &qname, RecordType::AAAA, timeout)
        );
        let (a, aaaa) = (a?, aaaa?);
        let mut addresses = Vec::new();
        let mut ttl: Option<u32> = None;
        for response in [&a, &aaaa] {
            match response.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => {}
                other => {
                    return Err(BackendError::Refused(format!("{server} answered {other}")));
                }
            }
            if !response.metadata.authoritative {
                return Err(BackendError::Refused(format!(
                    "{server} is not authoritative for {name} (AA not set)"
                )));
            }
            for record in &response.answers {
                if record.name != qname {
                    continue;
                }
                ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                match &record.data {
                    RData::CNAME(target) => {
                        let target = DnsName::try_from(target.0.to_ascii()).map_err(|e| {
                            BackendError::Invalid(format!("{server} answered a CNAME to {e}"))
                        })?;
                        return Ok(Observed {
                            records: RecordSet::Alias(target),
                            ttl: Duration::from_secs(u64::from(record.ttl)),
                        });
                    }
                    RData::A(v4) => addresses.push(IpAddr::V4(v4.0)),
                    RData::AAAA(v6) => addresses.push(IpAddr::V6(v6.0)),
                    _ => {}
                }
            }
        }
        Ok(Observed {
            records: RecordSet::Addresses(addresses).normalized(),
            ttl: Duration::from_secs(u64::from(ttl.unwrap_or(0))),
        })
    }
}

/// Sends one query for `name`/`rtype` to `server` without recursion: over UDP, and again over
/// TCP when the answer is truncated. Errors are transient ([`BackendError::Timeout`],
/// [`BackendError::Unavailable`]).
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, BackendError> {
    let mut request = Message::query();
    request.metadata.recursion_desired = false;
    request.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    request.set_edns(edns);
    let bytes = request
        .to_vec()
        .map_err(|e| BackendError::Invalid(format!("cannot encode a query for {name}: {e}")))?;
    let id = request.metadata.id;
    let what = || format!("{rtype} {name} at {server}");
    let response = tokio::time::timeout(timeout, udp_exchange(server, &bytes, id))
        .await
        .map_err(|_| BackendError::Timeout(format!("no answer to {} within {timeout:?}", what())))?
        .map_err(|e| BackendError::Unavailable(format!("{}: {e}", what())))?;
    if !response.metadata.truncation {
        return Ok(response);
    }
    tokio::time::timeout(timeout, tcp_exchange(server, &bytes, id))
        .await
        .map_err(|_| {
            BackendError::Timeout(format!(
                "no answer over TCP to {} within {timeout:?}",
                what()
            ))
        })?
        .map_err(|e| BackendError::Unavailable(format!("{} over TCP: {e}", what())))
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).into(),
        SocketAddr::V6(_) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // Ignore anything that is not the answer to this query (wrong ID or garbage).
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
        {
            return Ok(m);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_owned())?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let len = stream.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let m = Message::from_vec(&buf).map_err(|e| format!("malformed answer: {e}"))?;
    if m.metadata.id != id {
        return Err("answer with a wrong ID".into());
    }
    Ok(m)
}
