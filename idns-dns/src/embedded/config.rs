//! Configuration of the embedded authoritative server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use idns_core::{ConfigError, DnsName, FieldError};
use serde::{Deserialize, Serialize};

use super::ttl::{DynamicTtl, TtlBounds};

/// How the embedded server listens and which zones it serves.
///
/// ```
/// use idns_dns::embedded::EmbeddedConfig;
///
/// let config: EmbeddedConfig = toml::from_str(r#"
///     listen = ["127.0.0.1:5353"]
///     [[zones]]
///     name = "example.com"
///     nameservers = [{ name = "ns1.example.com", addresses = ["127.0.0.1"] }]
/// "#)?;
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Addresses to serve on, each over UDP and TCP; port 0 lets the system pick a free port
    /// (the same one for UDP and TCP). Default `127.0.0.1:53`.
    #[serde(default = "defaults::listen")]
    pub listen: Vec<SocketAddr>,
    /// The zones served; at least one.
    pub zones: Vec<ZoneConfig>,
    /// UDP worker threads per listen address, each with its own socket (`SO_REUSEPORT`);
    /// 0 means one per CPU core.
    #[serde(default)]
    pub udp_threads: usize,
    /// Largest UDP answer sent to a client that announces EDNS (512–4096; default 1232, the
    /// DNS flag day 2020 value). Clients without EDNS get at most 512 bytes.
    #[serde(default = "defaults::max_udp_payload")]
    pub max_udp_payload: u16,
    /// Open TCP connections served at once (default 256); more wait to be accepted.
    #[serde(default = "defaults::max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// A TCP connection idle this long is closed (default 10 s).
    #[serde(default = "defaults::tcp_idle_timeout", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// A file that keeps the published records and the highest accepted epoch of each name
    /// across restarts (written to a temporary file, synced, then renamed, before a change is
    /// served). Without it a restarted server starts empty and accepts any epoch.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// Short TTLs while a service's site is suspect, long ones when it is stable (see
    /// [`DynamicTtl`]); without it every name answers with the TTL its change asked for.
    #[serde(default)]
    pub dynamic_ttl: Option<DynamicTtl>,
}

/// One zone of the embedded server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's name, e.g. `example.com`.
    pub name: String,
    /// The zone's name servers (its NS records); default one, `ns1.<zone>`, without address.
    #[serde(default)]
    pub nameservers: Vec<NameServerConfig>,
    /// The SOA's responsible mailbox as a name (default `hostmaster.<zone>`).
    #[serde(default)]
    pub hostmaster: Option<String>,
    /// TTL of the SOA and NS records (default 1 h).
    #[serde(default = "defaults::soa_ttl", with = "humantime_serde")]
    pub soa_ttl: Duration,
    /// How long resolvers cache a negative answer (the SOA minimum; default 30 s).
    #[serde(default = "defaults::negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// The first SOA serial; default the current Unix time, so serials keep increasing across
    /// restarts. Every change adds one.
    #[serde(default)]
    pub serial: Option<u32>,
}

/// A name server of a zone: its NS record, and its addresses when it lies inside the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameServerConfig {
    /// The server's host name.
    pub name: String,
    /// Its addresses, served as A/AAAA records when the name lies inside the zone.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

mod defaults {
    use super::*;

    pub(super) fn listen() -> Vec<SocketAddr> {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
    }
    pub(super) fn max_udp_payload() -> u16 {
        1232
    }
    pub(super) fn max_tcp_connections() -> usize {
        256
    }
    pub(super) fn tcp_idle_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn soa_ttl() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn negative_ttl() -> Duration {
        Duration::from_secs(30)
    }
}

impl EmbeddedConfig {
    /// A configuration serving `zones` (with default name servers) on `listen`.
    pub fn new(listen: Vec<SocketAddr>, zones: &[DnsName]) -> Self {
        Self {
            listen,
            zones: zones.iter().map(|z| ZoneConfig::new(z.as_str())).collect(),
            udp_threads: 0,
            max_udp_payload: defaults::max_udp_payload(),
            max_tcp_connections: defaults::max_tcp_connections(),
            tcp_idle_timeout: defaults::tcp_idle_timeout(),
            state_file: None,
            dynamic_ttl: None,
        }
    }

    /// Checks every field; the error lists every problem with its field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validated().map(|_| ())
    }

    pub(crate) fn validated(&self) -> Result<Vec<ValidZone>, ConfigError> {
        let mut errors = Vec::new();
        let mut push = |path: String, value: String, problem: &str| {
            errors.push(FieldError {
                path,
                value,
                problem: problem.to_owned(),
            });
        };
        if self.listen.is_empty() {
            push("listen".into(), String::new(), "needs at least one address");
        }
        for (i, a) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(a) && a.port() != 0 {
                push(format!("listen[{i}]"), a.to_string(), "is listed twice");
            }
        }
        if self.zones.is_empty() {
            push("zones".into(), String::new(), "needs at least one zone");
        }
        if !(512..=4096).contains(&self.max_udp_payload) {
            push(
                "max_udp_payload".into(),
                self.max_udp_payload.to_string(),
                "must be between 512 and 4096",
            );
        }
        if self.max_tcp_connections == 0 {
            push(
                "max_tcp_connections".into(),
                "0".into(),
                "must be at least 1",
            );
        }
        if self.tcp_idle_timeout.is_zero() {
            push(
                "tcp_idle_timeout".into(),
                "0s".into(),
                "must be longer than zero",
            );
        }
        let dynamic_ttl = self
            .dynamic_ttl
            .and_then(|d| d.check("dynamic_ttl", &mut errors));
        let mut push = |path: String, value: String, problem: &str| {
            errors.push(FieldError {
                path,
                value,
                problem: problem.to_owned(),
            });
        };
        let mut zones = Vec::new();
        for (i, z) in self.zones.iter().enumerate() {
            let path = format!("zones[{i}]");
            let name = match DnsName::try_from(z.name.as_str()) {
                Ok(n) => n,
                Err(e) => {
                    push(format!("{path}.name"), z.name.clone(), e.problem);
                    continue;
                }
            };
            if zones.iter().any(|v: &ValidZone| v.name == name) {
                push(format!("{path}.name"), z.name.clone(), "is listed twice");
            }
            let mut nameservers = Vec::new();
            if z.nameservers.is_empty() {
                match name.prepend("ns1") {
                    Ok(n) => nameservers.push((n, Vec::new())),
                    Err(e) => push(
                        format!("{path}.nameservers"),
                        String::new(),
                        &format!("the default ns1.{name} is not a valid name: {}", e.problem),
                    ),
                }
            }
            for (j, ns) in z.nameservers.iter().enumerate() {
                match DnsName::try_from(ns.name.as_str()) {
                    Ok(n) => {
                        if !ns.addresses.is_empty() && !n.is_within(&name) {
                            push(
                                format!("{path}.nameservers[{j}].addresses"),
                                ns.name.clone(),
                                "addresses can only be served for a name inside the zone",
                            );
                        }
                        nameservers.push((n, ns.addresses.clone()));
                    }
                    Err(e) => push(
                        format!("{path}.nameservers[{j}].name"),
                        ns.name.clone(),
                        e.problem,
                    ),
                }
            }
            let hostmaster = match &z.hostmaster {
                Some(h) => match DnsName::try_from(h.as_str()) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        push(format!("{path}.hostmaster"), h.clone(), e.problem);
                        None
                    }
                },
                None => match name.prepend("hostmaster") {
                    Ok(n) => Some(n),
                    Err(e) => {
                        push(
                            format!("{path}.hostmaster"),
                            String::new(),
                            &format!("the default hostmaster.{name} is not valid: {}", e.problem),
                        );
                        None
                    }
                },
            };
            for (field, d) in [("soa_ttl", z.soa_ttl), ("negative_ttl", z.negative_ttl)] {
                if d.subsec_nanos() != 0 || d.as_secs() > 0x7fff_ffff {
                    push(
                        format!("{path}.{field}"),
                        humantime::format_duration(d).to_string(),
                        "must be whole seconds, at most 2^31 - 1",
                    );
                }
            }
            let Some(hostmaster) = hostmaster else {
                continue;
            };
            zones.push(ValidZone {
                name,
                nameservers,
                hostmaster,
                soa_ttl: secs(z.soa_ttl),
                negative_ttl: secs(z.negative_ttl),
                serial: z.serial,
                dynamic_ttl,
            });
        }
        for (i, a) in zones.iter().enumerate() {
            for b in &zones[i + 1..] {
                if a.name != b.name && (a.name.is_within(&b.name) || b.name.is_within(&a.name)) {
                    push(
                        "zones".into(),
                        format!("{} and {}", a.name, b.name),
                        "one zone lies inside the other; serve the parent only",
                    );
                }
            }
        }
        if errors.is_empty() {
            Ok(zones)
        } else {
            Err(ConfigError { errors })
        }
    }
}

impl ZoneConfig {
    /// A zone with default name server, SOA values and serial.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            nameservers: Vec::new(),
            hostmaster: None,
            soa_ttl: defaults::soa_ttl(),
            negative_ttl: defaults::negative_ttl(),
            serial: None,
        }
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs())
        .unwrap_or(u32::MAX)
        .min(0x7fff_ffff)
}

/// A zone whose configuration has been checked.
#[derive(Debug, Clone)]
pub(crate) struct ValidZone {
    pub(crate) name: DnsName,
    pub(crate) nameservers: Vec<(DnsName, Vec<IpAddr>)>,
    pub(crate) hostmaster: DnsName,
    pub(crate) soa_ttl: u32,
    pub(crate) negative_ttl: u32,
    pub(crate) serial: Option<u32>,
    pub(crate) dynamic_ttl: Option<TtlBounds>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_by_its_field() {
        let config: EmbeddedConfig = toml::from_str(
            r#"
            listen = []
            max_udp_payload = 100
            [[zones]]
            name = "exa mple.com"
            [[zones]]
            name = "example.org"
            hostmaster = "-bad"
            nameservers = [{ name = "ns.other.net", addresses = ["192.0.2.1"] }]
            "#,
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        for needle in [
            "listen: needs at least one address",
            "max_udp_payload = 100",
            "zones[0].name = exa mple.com",
            "zones[1].hostmaster = -bad",
            "zones[1].nameservers[0].addresses",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from: {err}");
        }
    }

    #[test]
    fn dynamic_ttl_problems_are_named() {
        let config: EmbeddedConfig = toml::from_str(
            r#"
            dynamic_ttl = { suspect = "10m", stable = "1m", settle = "30s" }
            [[zones]]
            name = "example.com"
            "#,
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("dynamic_ttl.suspect = 10m: must not be longer than dynamic_ttl.stable"),
            "{err}"
        );
        let config: Result<EmbeddedConfig, _> = toml::from_str(
            r#"
            dynamic_ttl = { suspect = "5s", stable = "5m", settle = "1m", sticky = true }
            zones = []
            "#,
        );
        assert!(config.unwrap_err().to_string().contains("sticky"));
    }

    #[test]
    fn nested_zones_are_refused() {
        let zones: Vec<DnsName> = vec![
            "example.com".parse().unwrap(),
            "a.example.com".parse().unwrap(),
        ];
        let config = EmbeddedConfig::new(defaults::listen(), &zones);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("one zone lies inside the other"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        let zones: Vec<DnsName> = vec!["example.com".parse().unwrap()];
        let config = EmbeddedConfig::new(defaults::listen(), &zones);
        let valid = config.validated().unwrap();
        assert_eq!(valid[0].nameservers[0].0.as_str(), "ns1.example.com");
        assert_eq!(valid[0].hostmaster.as_str(), "hostmaster.example.com");
    }
}
