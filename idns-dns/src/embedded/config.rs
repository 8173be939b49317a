//! Configuration of the embedded authoritative server: what is written ([`EmbeddedSpec`]) and
//! what is validated ([`EmbeddedConfig`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use idns_core::{ConfigError, DnsName, Problems};
use serde::{Deserialize, Serialize};

use crate::bounds::MAX_TIMEOUT;

/// The most TCP connections the server, or one client, may be allowed: far more than a DNS
/// server needs, and within what a process can hold open.
const MAX_TCP_CONNECTIONS: usize = 65_536;

use super::dynamic_ttl::{DynamicTtl, TtlBounds};
use crate::ttl::Ttl;

/// How the embedded server listens and which zones it serves, as written in a configuration
/// file; [`EmbeddedConfig::try_from`] checks it.
///
/// ```
/// use idns_dns::embedded::{EmbeddedConfig, EmbeddedSpec};
///
/// let spec: EmbeddedSpec = toml::from_str(r#"
///     listen = ["127.0.0.1:5353"]
///     [[zones]]
///     name = "example.com"
///     nameservers = [{ name = "ns1.example.com", addresses = ["127.0.0.1"] }]
/// "#)?;
/// let config = EmbeddedConfig::try_from(spec)?;
/// assert_eq!(config.listen(), ["127.0.0.1:5353".parse()?]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSpec {
    /// Addresses to serve on, each over UDP and TCP; port 0 lets the system pick a free port
    /// (the same one for UDP and TCP). Default `127.0.0.1:53`.
    #[serde(default = "defaults::listen")]
    pub listen: Vec<SocketAddr>,
    /// The zones served; at least one (see [`default_zone`](Self::default_zone)).
    #[serde(default)]
    pub zones: Vec<ZoneSpec>,
    /// UDP worker threads per listen address, each with its own socket (`SO_REUSEPORT`);
    /// 0 means one per CPU core.
    #[serde(default)]
    pub udp_threads: usize,
    /// Largest UDP answer sent to a client that announces EDNS (512–4096; default 1232, the
    /// DNS flag day 2020 value). Clients without EDNS get at most 512 bytes.
    #[serde(default = "defaults::max_udp_payload")]
    pub max_udp_payload: u16,
    /// Open TCP connections served at once (1–65536, default 256); more wait to be
    /// accepted.
    #[serde(default = "defaults::max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// Open TCP connections served at once for one client address (1–65536, default 16;
    /// never more than [`max_tcp_connections`](Self::max_tcp_connections)). A connection
    /// beyond it is closed as soon as it is accepted, so one client cannot take every slot
    /// from the others. Each IPv6 address counts on its own.
    #[serde(default = "defaults::max_tcp_connections_per_client")]
    pub max_tcp_connections_per_client: usize,
    /// A TCP connection idle this long is closed (default 10 s). It is also the read
    /// deadline of a whole query once its first byte has come, and the write deadline of
    /// an answer, so a client that stalls mid-query or stops reading is dropped.
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

/// One zone of the embedded server, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// The zone's name, e.g. `example.com`.
    pub name: String,
    /// The zone's name servers (its NS records); default one, `ns1.<zone>`, without address.
    #[serde(default)]
    pub nameservers: Vec<NameServerSpec>,
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

/// A name server of a zone, as written: its NS record, and its addresses when it lies inside
/// the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameServerSpec {
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
    pub(super) fn max_tcp_connections_per_client() -> usize {
        16
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

impl EmbeddedSpec {
    /// A configuration serving `zones` (with default name servers) on `listen`.
    pub fn new(listen: Vec<SocketAddr>, zones: &[DnsName]) -> Self {
        Self {
            listen,
            zones: zones.iter().map(|z| ZoneSpec::new(z.as_str())).collect(),
            udp_threads: 0,
            max_udp_payload: defaults::max_udp_payload(),
            max_tcp_connections: defaults::max_tcp_connections(),
            max_tcp_connections_per_client: defaults::max_tcp_connections_per_client(),
            tcp_idle_timeout: defaults::tcp_idle_timeout(),
            state_file: None,
            dynamic_ttl: None,
        }
    }

    /// Serves `zone` when no zone is listed (a service's own zone, say).
    pub fn default_zone(&mut self, zone: &DnsName) {
        if self.zones.is_empty() {
            self.zones.push(ZoneSpec::new(zone.as_str()));
        }
    }

    /// Keeps the state in `dir` when no state file is named: one file per set of listen
    /// addresses, `dns-127.0.0.1_5353.json`, so servers on other addresses never share one.
    pub fn default_state_dir(&mut self, dir: &Path) {
        if self.state_file.is_some() {
            return;
        }
        let name: Vec<String> = self
            .listen
            .iter()
            .map(|a| {
                a.to_string()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            })
            .collect();
        self.state_file = Some(dir.join(format!("dns-{}.json", name.join("+"))));
    }

    /// Takes a relative `state_file` relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = &mut self.state_file
            && f.is_relative()
        {
            *f = base.join(&*f);
        }
    }
}

impl ZoneSpec {
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

/// A checked configuration of the embedded server: built only from an [`EmbeddedSpec`], so
/// every value in it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) zones: Vec<ValidZone>,
    pub(crate) udp_threads: usize,
    pub(crate) max_udp_payload: u16,
    pub(crate) max_tcp_connections: usize,
    pub(crate) max_tcp_connections_per_client: usize,
    pub(crate) tcp_idle_timeout: Duration,
    pub(crate) state_file: Option<PathBuf>,
}

impl EmbeddedConfig {
    /// A server of `zones` (with default name servers and SOA values) on `listen`.
    pub fn new(listen: Vec<SocketAddr>, zones: &[DnsName]) -> Result<Self, ConfigError> {
        EmbeddedSpec::new(listen, zones).try_into()
    }

    /// The addresses served, over UDP and TCP.
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The zones served.
    pub fn zones(&self) -> impl Iterator<Item = &DnsName> {
        self.zones.iter().map(|z| &z.name)
    }

    /// The file that keeps the published records across restarts.
    pub fn state_file(&self) -> Option<&Path> {
        self.state_file.as_deref()
    }
}

impl TryFrom<EmbeddedSpec> for EmbeddedConfig {
    type Error = ConfigError;

    /// Checks every field; the error lists every problem with its field path.
    fn try_from(spec: EmbeddedSpec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        if spec.listen.is_empty() {
            p.push("listen", "", "needs at least one address");
        }
        for (i, a) in spec.listen.iter().enumerate() {
            if spec.listen[..i].contains(a) && a.port() != 0 {
                p.push(format!("listen[{i}]"), a, "is listed twice");
            }
        }
        if spec.zones.is_empty() {
            p.push("zones", "", "needs at least one zone");
        }
        if !(512..=4096).contains(&spec.max_udp_payload) {
            p.push(
                "max_udp_payload",
                spec.max_udp_payload,
                "must be between 512 and 4096",
            );
        }
        for (field, value) in [
            ("max_tcp_connections", spec.max_tcp_connections),
            (
                "max_tcp_connections_per_client",
                spec.max_tcp_connections_per_client,
            ),
        ] {
            if !(1..=MAX_TCP_CONNECTIONS).contains(&value) {
                p.push(
                    field,
                    value,
                    format!("must be between 1 and {MAX_TCP_CONNECTIONS}"),
                );
            }
        }
        let idle = spec.tcp_idle_timeout;
        p.duration("tcp_idle_timeout", idle, Problems::ABOVE_ZERO, MAX_TIMEOUT);
        let dynamic_ttl = spec
            .dynamic_ttl
            .and_then(|d| d.check("dynamic_ttl", &mut p));
        let mut zones: Vec<ValidZone> = Vec::new();
        for (i, z) in spec.zones.iter().enumerate() {
            if let Some(zone) = ValidZone::parse(&mut p, &format!("zones[{i}]"), z, dynamic_ttl) {
                if zones.iter().any(|v| v.name == zone.name) {
                    p.push(format!("zones[{i}].name"), &z.name, "is listed twice");
                }
                zones.push(zone);
            }
        }
        for (i, a) in zones.iter().enumerate() {
            for b in &zones[i + 1..] {
                if a.name != b.name && (a.name.is_within(&b.name) || b.name.is_within(&a.name)) {
                    p.push(
                        "zones",
                        format!("{} and {}", a.name, b.name),
                        "one zone lies inside the other; serve the parent only",
                    );
                }
            }
        }
        p.finish_with(EmbeddedConfig {
            listen: spec.listen,
            zones,
            udp_threads: spec.udp_threads,
            max_udp_payload: spec.max_udp_payload,
            max_tcp_connections: spec.max_tcp_connections,
            max_tcp_connections_per_client: spec
                .max_tcp_connections_per_client
                .min(spec.max_tcp_connections),
            tcp_idle_timeout: spec.tcp_idle_timeout,
            state_file: spec.state_file,
        })
    }
}

/// A zone whose configuration has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidZone {
    pub(crate) name: DnsName,
    pub(crate) nameservers: Vec<(DnsName, Vec<IpAddr>)>,
    pub(crate) hostmaster: DnsName,
    pub(crate) soa_ttl: Ttl,
    pub(crate) negative_ttl: Ttl,
    pub(crate) serial: Option<u32>,
    pub(crate) dynamic_ttl: Option<TtlBounds>,
}

impl ValidZone {
    /// Checks the zone `z` written at `path`; `None` when it cannot be served.
    fn parse(
        p: &mut Problems,
        path: &str,
        z: &ZoneSpec,
        dynamic_ttl: Option<TtlBounds>,
    ) -> Option<ValidZone> {
        let name = match DnsName::try_from(z.name.as_str()) {
            Ok(n) => n,
            Err(e) => {
                p.push(format!("{path}.name"), &z.name, e.problem);
                return None;
            }
        };
        let mut nameservers = Vec::new();
        if z.nameservers.is_empty() {
            match name.prepend("ns1") {
                Ok(n) => nameservers.push((n, Vec::new())),
                Err(e) => p.push(
                    format!("{path}.nameservers"),
                    "",
                    format!("the default ns1.{name} is not a valid name: {}", e.problem),
                ),
            }
        }
        for (j, ns) in z.nameservers.iter().enumerate() {
            match DnsName::try_from(ns.name.as_str()) {
                Ok(n) => {
                    if !ns.addresses.is_empty() && !n.is_within(&name) {
                        p.push(
                            format!("{path}.nameservers[{j}].addresses"),
                            &ns.name,
                            "addresses can only be served for a name inside the zone",
                        );
                    }
                    nameservers.push((n, ns.addresses.clone()));
                }
                Err(e) => p.push(format!("{path}.nameservers[{j}].name"), &ns.name, e.problem),
            }
        }
        let hostmaster = match &z.hostmaster {
            Some(h) => DnsName::try_from(h.as_str())
                .map_err(|e| p.push(format!("{path}.hostmaster"), h, e.problem))
                .ok(),
            None => name
                .prepend("hostmaster")
                .map_err(|e| {
                    p.push(
                        format!("{path}.hostmaster"),
                        "",
                        format!("the default hostmaster.{name} is not valid: {}", e.problem),
                    )
                })
                .ok(),
        };
        let mut ttl = |field: &str, d: Duration| {
            Ttl::try_from(d)
                .map_err(|_| {
                    p.push(
                        format!("{path}.{field}"),
                        humantime::format_duration(d),
                        "must be whole seconds, at most 2^31 - 1",
                    )
                })
                .ok()
        };
        let soa_ttl = ttl("soa_ttl", z.soa_ttl);
        let negative_ttl = ttl("negative_ttl", z.negative_ttl);
        Some(ValidZone {
            name,
            nameservers,
            hostmaster: hostmaster?,
            soa_ttl: soa_ttl?,
            negative_ttl: negative_ttl?,
            serial: z.serial,
            dynamic_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_by_its_field() {
        let spec: EmbeddedSpec = toml::from_str(
            r#"
            listen = []
            max_udp_payload = 100
            max_tcp_connections = 0
            max_tcp_connections_per_client = 100000
            [[zones]]
            name = "exa mple.com"
            [[zones]]
            name = "example.org"
            hostmaster = "-bad"
            nameservers = [{ name = "ns.other.net", addresses = ["192.0.2.1"] }]
            "#,
        )
        .unwrap();
        let err = EmbeddedConfig::try_from(spec).unwrap_err().to_string();
        for needle in [
            "listen: needs at least one address",
            "max_udp_payload = 100",
            "max_tcp_connections = 0: must be between 1 and 65536",
            "max_tcp_connections_per_client = 100000: must be between 1 and 65536",
            "zones[0].name = exa mple.com",
            "zones[1].hostmaster = -bad",
            "zones[1].nameservers[0].addresses",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from: {err}");
        }
    }

    #[test]
    fn dynamic_ttl_problems_are_named() {
        let spec: EmbeddedSpec = toml::from_str(
            r#"
            dynamic_ttl = { suspect = "10m", stable = "1m", settle = "30s" }
            [[zones]]
            name = "example.com"
            "#,
        )
        .unwrap();
        let err = EmbeddedConfig::try_from(spec).unwrap_err().to_string();
        assert!(
            err.contains("dynamic_ttl.suspect = 10m: must not be longer than dynamic_ttl.stable"),
            "{err}"
        );
        let config: Result<EmbeddedSpec, _> = toml::from_str(
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
        let err = EmbeddedConfig::new(defaults::listen(), &zones)
            .unwrap_err()
            .to_string();
        assert!(err.contains("one zone lies inside the other"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        let zones: Vec<DnsName> = vec!["example.com".parse().unwrap()];
        let valid = EmbeddedConfig::new(defaults::listen(), &zones).unwrap();
        assert_eq!(valid.zones[0].nameservers[0].0.as_str(), "ns1.example.com");
        assert_eq!(valid.zones[0].hostmaster.as_str(), "hostmaster.example.com");
        assert_eq!(valid.zones[0].soa_ttl.as_secs(), 3600);
        assert_eq!(valid.max_tcp_connections_per_client, 16);
        let mut spec = EmbeddedSpec::new(defaults::listen(), &zones);
        spec.max_tcp_connections = 4;
        let small = EmbeddedConfig::try_from(spec).unwrap();
        assert_eq!(small.max_tcp_connections_per_client, 4);
    }

    #[test]
    fn defaults_from_the_service_fill_only_what_is_missing() {
        let mut spec: EmbeddedSpec =
            toml::from_str(r#"listen = ["127.0.0.1:5354", "[::1]:5354"]"#).unwrap();
        spec.default_zone(&"example.test".parse().unwrap());
        spec.default_state_dir(Path::new("/srv/state"));
        spec.resolve_paths(Path::new("/etc/idns"));
        assert_eq!(spec.zones[0].name, "example.test");
        assert_eq!(
            spec.state_file.as_deref(),
            Some(Path::new("/srv/state/dns-127.0.0.1_5354+___1__5354.json"))
        );
        let mut spec: EmbeddedSpec = toml::from_str(
            r#"state_file = "dns.json"
            zones = [{ name = "other.test" }]"#,
        )
        .unwrap();
        spec.default_zone(&"example.test".parse().unwrap());
        spec.default_state_dir(Path::new("/srv/state"));
        spec.resolve_paths(Path::new("/etc/idns"));
        assert_eq!(spec.zones.len(), 1);
        assert_eq!(
            spec.state_file.as_deref(),
            Some(Path::new("/etc/idns/dns.json"))
        );
    }
}
