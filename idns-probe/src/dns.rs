//! The DNS probe: ask a server for a name; expect a response code and, optionally, an answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use idns_core::{ConfigError, Probe, ProbeOutcome, ProbeStatus};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::spec::target::{AliasSpec, BuildContext, Endpoint, Target};
use idns_core::Problems;

/// A DNS check, as written (`kind = "dns"`): ask the site's DNS server (or `alias`) for a
/// name over UDP (TCP when the answer is truncated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// The name to ask for (default: the service's name).
    #[serde(default)]
    pub name: Option<String>,
    /// The record type to ask for (default `A`).
    #[serde(default = "default_type")]
    pub record_type: String,
    /// The server's port (default 53; `alias.port` overrides it).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The response code that counts as up: `NOERROR` (default), `NXDOMAIN`, `REFUSED`, …
    #[serde(default = "default_rcode")]
    pub rcode: String,
    /// An answer whose data must be exactly this (`192.0.2.1`, `www.example.net.`; names
    /// compare without case and trailing dot).
    #[serde(default)]
    pub expect: Option<String>,
    /// Set the RD bit (ask a resolver to recurse); off by default, for authoritative servers.
    #[serde(default)]
    pub recursion_desired: bool,
    /// Ask another server on the site's behalf.
    #[serde(default)]
    pub alias: Option<AliasSpec>,
    /// Log this probe's details at `info` instead of `debug`.
    #[serde(default)]
    pub debug: bool,
}

fn default_type() -> String {
    "A".to_owned()
}

fn default_port() -> u16 {
    53
}

fn default_rcode() -> String {
    "NOERROR".to_owned()
}

const RCODES: [(&str, u16); 11] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
];

fn rcode_name(code: u16) -> String {
    RCODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(n, _)| (*n).to_owned())
        .unwrap_or_else(|| format!("RCODE{code}"))
}

/// A built DNS probe.
#[derive(Debug)]
pub struct DnsProbe {
    label: String,
    endpoint: Endpoint,
    port: u16,
    name: Name,
    record_type: RecordType,
    rcode: u16,
    expect: Option<String>,
    recursion_desired: bool,
    timeout: Duration,
    debug: bool,
}

impl DnsProbe {
    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &DnsSpec,
        target: &Target,
    ) -> Result<DnsProbe, ConfigError> {
        let path = ctx.path.as_str();
        let mut p = Problems::default();
        let name_text = spec
            .name
            .clone()
            .unwrap_or_else(|| target.service.to_fqdn());
        let name = Name::from_ascii(&name_text)
            .map(|mut n| {
                n.set_fqdn(true);
                n
            })
            .map_err(|e| {
                p.push(
                    format!("{path}.name"),
                    &name_text,
                    format!("is not a DNS name: {e}"),
                )
            })
            .ok();
        let record_type = RecordType::from_str(&spec.record_type.to_ascii_uppercase())
            .map_err(|_| {
                p.push(
                    format!("{path}.record_type"),
                    &spec.record_type,
                    "is not a record type (A, AAAA, CNAME, MX, NS, SOA, TXT, …)",
                )
            })
            .ok();
        let rcode = RCODES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&spec.rcode))
            .map(|(_, c)| *c);
        if rcode.is_none() {
            p.push(
                format!("{path}.rcode"),
                &spec.rcode,
                "is not a response code (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, …)",
            );
        }
        let port = spec
            .alias
            .as_ref()
            .and_then(|a| a.port)
            .unwrap_or(spec.port);
        if port == 0 {
            p.push(format!("{path}.port"), 0, "must be 1-65535");
        }
        if spec.expect.as_deref() == Some("") {
            p.push(
                format!("{path}.expect"),
                "\"\"",
                "must not be empty (leave it out)",
            );
        }
        let endpoint = Endpoint::choose(&mut p, path, spec.alias.as_ref(), target);
        p.finish()?;
        let (Some(name), Some(record_type), Some(rcode), Some(endpoint)) =
            (name, record_type, rcode, endpoint)
        else {
            return Err(ConfigError::single(path, "", "is invalid"));
        };
        Ok(DnsProbe {
            label: ctx.label.clone(),
            endpoint,
            port,
            name,
            record_type,
            rcode,
            expect: spec.expect.as_ref().map(|e| normalise(e)),
            recursion_desired: spec.recursion_desired,
            timeout: ctx.timeout,
            debug: spec.debug,
        })
    }

    async fn server(&self) -> Result<SocketAddr, String> {
        match &self.endpoint {
            Endpoint::Addr(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Endpoint::Host(h) => tokio::net::lookup_host((h.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot resolve {h}: {e}"))?
                .next()
                .ok_or_else(|| format!("{h} has no address")),
        }
    }

    async fn attempt(&self, server: &mut Option<SocketAddr>) -> Result<(), String> {
        let addr = self.server().await?;
        *server = Some(addr);
        let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = self.recursion_desired;
        query.add_query(Query::query(self.name.clone(), self.record_type));
        let wire = query
            .to_vec()
            .map_err(|e| format!("cannot encode the query: {e}"))?;
        let local: SocketAddr = match addr.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("UDP socket: {e}"))?;
        sock.connect(addr)
            .await
            .map_err(|e| format!("UDP to {addr}: {e}"))?;
        sock.send(&wire)
            .await
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let reply = loop {
            let n = sock.recv(&mut buf).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("{addr} refused (ICMP port unreachable)")
                }
                _ => format!("receiving from {addr}: {e}"),
            })?;
            // Anything that is not the answer to this query (wrong ID, garbage) is ignored.
            if let Ok(m) = Message::from_vec(&buf[..n])
                && m.metadata.id == query.metadata.id
                && m.metadata.message_type == MessageType::Response
            {
                break m;
            }
        };
        let reply = if reply.metadata.truncation {
            self.over_tcp(addr, &wire, query.metadata.id).await?
        } else {
            reply
        };
        self.judge(&reply)
    }

    async fn over_tcp(&self, addr: SocketAddr, wire: &[u8], id: u16) -> Result<Message, String> {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("TCP to {addr} (answer truncated over UDP): {e}"))?;
        let len = u16::try_from(wire.len()).map_err(|_| "query too long".to_owned())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(wire);
        s.write_all(&framed)
            .await
            .map_err(|e| format!("TCP to {addr}: {e}"))?;
        let n = s
            .read_u16()
            .await
            .map_err(|e| format!("TCP from {addr}: {e}"))?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("TCP from {addr}: {e}"))?;
        let m = Message::from_vec(&buf).map_err(|e| format!("bad answer from {addr}: {e}"))?;
        if m.metadata.id != id {
            return Err(format!("answer from {addr} over TCP has the wrong ID"));
        }
        Ok(m)
    }

    fn judge(&self, reply: &Message) -> Result<(), String> {
        let code = u16::from(reply.metadata.response_code);
        if code != self.rcode {
            return Err(format!(
                "rcode {} (expected {})",
                rcode_name(code),
                rcode_name(self.rcode)
            ));
        }
        let Some(expect) = &self.expect else {
            return Ok(());
        };
        let got: Vec<String> = reply
            .answers
            .iter()
            .filter(|r| r.record_type() == self.record_type)
            .map(|r| normalise(&r.data.to_string()))
            .collect();
        if got.iter().any(|g| g == expect) {
            return Ok(());
        }
        if got.is_empty() {
            Err(format!(
                "no {} answer (expected {expect})",
                self.record_type
            ))
        } else {
            Err(format!(
                "{} answer is {} (expected {expect})",
                self.record_type,
                got.join(", ")
            ))
        }
    }
}

/// Lower case without a trailing dot, so names compare as DNS compares them.
fn normalise(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A query ID that a spoofer cannot guess from the previous one.
fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u16
}

#[async_trait]
impl Probe for DnsProbe {
    async fn check(&self) -> ProbeOutcome {
        let start = Instant::now();
        let mut server = None;
        let result = tokio::time::timeout(self.timeout, self.attempt(&mut server)).await;
        let latency = start.elapsed();
        let outcome = match result {
            Ok(Ok(())) => ProbeOutcome::up(latency),
            Ok(Err(reason)) => ProbeOutcome::down(
                latency,
                format!("{} {}: {reason}", self.name, self.record_type),
            ),
            Err(_) => {
                let mut o = ProbeOutcome::timeout(latency);
                o.reason = match server {
                    Some(s) => format!(
                        "no answer from {s} within {}",
                        humantime::format_duration(self.timeout)
                    ),
                    None => format!(
                        "server address not resolved within {}",
                        humantime::format_duration(self.timeout)
                    ),
                };
                o
            }
        };
        debug_assert!(outcome.status != ProbeStatus::Down || !outcome.reason.is_empty());
        crate::probe_log!(
            self.debug,
            "idns_probe::dns",
            probe = %self.label,
            name = %self.name,
            status = ?outcome.status,
            latency = ?outcome.latency,
            reason = %outcome.reason,
            "dns check"
        );
        outcome
    }
}
