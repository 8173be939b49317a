//! Which DNS backend a service uses: what is written ([`DnsSpec`], tagged by `backend`) and
//! what is validated ([`DnsConfig`]), in the shape of `idns-probe`'s `CheckSpec`.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use idns_core::{BackendSpec, ConfigError, DnsName};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::embedded::{EmbeddedConfig, EmbeddedSpec};
#[cfg(feature = "powerdns")]
use crate::powerdns::{PowerDnsConfig, PowerDnsSpec};
#[cfg(feature = "rfc2136")]
use crate::rfc2136::{Rfc2136Config, Rfc2136Spec};

/// A DNS backend as written in a configuration file: one table whose `backend` field picks
/// the variant, the other fields being that backend's settings. [`DnsConfig::try_from`]
/// checks it.
///
/// ```
/// use idns_dns::{DnsConfig, DnsSpec};
///
/// let spec: DnsSpec = toml::from_str(r#"
///     backend = "rfc2136"
///     server = "192.0.2.53:53"
///     zones = ["example.com"]
///     tsig = { name = "idns-key", algorithm = "hmac-sha256", secret = "c2VjcmV0IGtleSBmb3IgaWRucyB0ZXN0cyEhISEhISE=" }
/// "#)?;
/// let config = DnsConfig::try_from(spec)?;
/// assert_eq!(config.to_string(), "RFC 2136 updates to 192.0.2.53:53");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum DnsSpec {
    /// The embedded authoritative server (`backend = "embedded"`).
    Embedded(EmbeddedSpec),
    /// RFC 2136 dynamic updates signed with TSIG (`backend = "rfc2136"`, feature `rfc2136`).
    #[cfg(feature = "rfc2136")]
    Rfc2136(Rfc2136Spec),
    /// The PowerDNS HTTP API (`backend = "powerdns"`, feature `powerdns`).
    #[cfg(feature = "powerdns")]
    PowerDns(PowerDnsSpec),
}

impl BackendSpec for DnsSpec {
    const KIND: &'static str = "DNS backend";

    const BACKENDS: &'static [&'static str] = &[
        "embedded",
        #[cfg(feature = "rfc2136")]
        "rfc2136",
        #[cfg(feature = "powerdns")]
        "powerdns",
    ];

    fn deserialize_backend<'de, D: Deserializer<'de>>(
        backend: &str,
        settings: D,
    ) -> Result<Self, D::Error> {
        match backend {
            "embedded" => EmbeddedSpec::deserialize(settings).map(Self::Embedded),
            #[cfg(feature = "rfc2136")]
            "rfc2136" => Rfc2136Spec::deserialize(settings).map(Self::Rfc2136),
            #[cfg(feature = "powerdns")]
            "powerdns" => PowerDnsSpec::deserialize(settings).map(Self::PowerDns),
            other => Err(D::Error::unknown_variant(other, Self::BACKENDS)),
        }
    }
}

impl DnsSpec {
    /// Fills in what the configuration leaves to the service around it: an embedded server
    /// that lists no zone serves `zone`.
    pub fn default_zone(&mut self, zone: &DnsName) {
        if let Self::Embedded(s) = self {
            s.default_zone(zone);
        }
    }

    /// Fills in where state is kept when the configuration does not say: an embedded server
    /// without a `state_file` keeps one in `dir`, named after its listen addresses.
    pub fn default_state_dir(&mut self, dir: &Path) {
        if let Self::Embedded(s) = self {
            s.default_state_dir(dir);
        }
    }

    /// Takes the relative paths of the configuration relative to `base` (the directory of
    /// the file it was read from).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Self::Embedded(s) = self {
            s.resolve_paths(base);
        }
    }
}

/// A checked DNS backend configuration; [`build`](Self::build) makes the backend (a
/// [`Dns`](crate::Dns)).
///
/// It deserialises like a [`DnsSpec`] and is checked on the way, so a program that does not
/// need every problem named by its path can read it directly:
///
/// ```
/// use idns_dns::DnsConfig;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: DnsConfig = toml::from_str(r#"
///     backend = "embedded"
///     listen = ["127.0.0.1:0"]
///     zones = [{ name = "example.com" }]
/// "#)?;
/// let dns = config.build().await?; // keep it: dropping it stops the server
/// let backend = dns.backend(); // an Arc<dyn idns_core::DnsBackend>
/// assert_eq!(backend.capabilities().atomic_epoch, true);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "DnsSpec")]
#[non_exhaustive]
pub enum DnsConfig {
    /// The embedded authoritative server.
    Embedded(EmbeddedConfig),
    /// RFC 2136 dynamic updates signed with TSIG.
    #[cfg(feature = "rfc2136")]
    Rfc2136(Rfc2136Config),
    /// The PowerDNS HTTP API.
    #[cfg(feature = "powerdns")]
    PowerDns(PowerDnsConfig),
}

impl TryFrom<DnsSpec> for DnsConfig {
    type Error = ConfigError;

    /// Checks the backend's settings; the error lists every problem with its field path
    /// (relative to the table).
    fn try_from(spec: DnsSpec) -> Result<Self, ConfigError> {
        Ok(match spec {
            DnsSpec::Embedded(s) => Self::Embedded(s.try_into()?),
            #[cfg(feature = "rfc2136")]
            DnsSpec::Rfc2136(s) => Self::Rfc2136(s.try_into()?),
            #[cfg(feature = "powerdns")]
            DnsSpec::PowerDns(s) => Self::PowerDns(s.try_into()?),
        })
    }
}

impl DnsConfig {
    /// The backend's name, as the `backend` field spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            #[cfg(feature = "rfc2136")]
            Self::Rfc2136(_) => "rfc2136",
            #[cfg(feature = "powerdns")]
            Self::PowerDns(_) => "powerdns",
        }
    }

    /// The zones the backend may change.
    pub fn zones(&self) -> Vec<DnsName> {
        match self {
            Self::Embedded(c) => c.zones().cloned().collect(),
            #[cfg(feature = "rfc2136")]
            Self::Rfc2136(c) => c.zones().to_vec(),
            #[cfg(feature = "powerdns")]
            Self::PowerDns(c) => c.zones().to_vec(),
        }
    }

    /// The addresses this process serves DNS on for the backend (the embedded server's
    /// `listen`); empty for backends that change a server elsewhere. Two configurations that
    /// serve on the same address must be equal, so that [`DnsServers`](crate::DnsServers) can
    /// share one server.
    pub fn listen(&self) -> &[SocketAddr] {
        match self {
            Self::Embedded(c) => c.listen(),
            #[cfg(feature = "rfc2136")]
            Self::Rfc2136(_) => &[],
            #[cfg(feature = "powerdns")]
            Self::PowerDns(_) => &[],
        }
    }

    /// Whether a server started for `self` can serve `other` too (equal embedded settings).
    pub fn shares_server_with(&self, other: &DnsConfig) -> bool {
        match (self, other) {
            (Self::Embedded(a), Self::Embedded(b)) => a == b,
            _ => false,
        }
    }
}

/// What the backend does, for a summary: `embedded DNS on 127.0.0.1:53`.
impl fmt::Display for DnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded(c) => {
                let listen: Vec<String> = c.listen().iter().map(ToString::to_string).collect();
                write!(f, "embedded DNS on {}", listen.join(", "))
            }
            #[cfg(feature = "rfc2136")]
            Self::Rfc2136(c) => write!(f, "RFC 2136 updates to {}", c.server()),
            #[cfg(feature = "powerdns")]
            Self::PowerDns(c) => write!(f, "PowerDNS API at {}", c.api_url()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> DnsSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn each_backend_parses_from_its_tagged_table() {
        let cases = [
            (
                r#"backend = "embedded"
                   listen = ["127.0.0.1:5354"]
                   zones = [{ name = "example.com" }]"#,
                "embedded DNS on 127.0.0.1:5354",
            ),
            (
                r#"backend = "rfc2136"
                   server = "127.0.0.1:53"
                   zones = ["example.com"]
                   insecure_allow_unsigned_updates = true"#,
                "RFC 2136 updates to 127.0.0.1:53",
            ),
            (
                r#"backend = "powerdns"
                   api_url = "http://127.0.0.1:8081"
                   api_key = "k"
                   zones = ["example.com"]"#,
                "PowerDNS API at http://127.0.0.1:8081",
            ),
        ];
        for ((text, summary), name) in cases.iter().zip(DnsSpec::BACKENDS) {
            let c = DnsConfig::try_from(spec(text)).unwrap();
            assert_eq!(c.to_string(), *summary);
            assert_eq!(c.backend(), *name);
            assert_eq!(c.zones(), ["example.com".parse::<DnsName>().unwrap()]);
            // The same table read the path-keeping way, the tag taken off first.
            let mut table: toml::Table = toml::from_str(text).unwrap();
            let backend = table.remove("backend").unwrap();
            let direct =
                DnsSpec::deserialize_backend(backend.as_str().unwrap(), toml::Value::Table(table))
                    .unwrap();
            assert_eq!(direct, spec(text));
            // And straight into the checked form.
            let c: DnsConfig = toml::from_str(text).unwrap();
            assert_eq!(c.backend(), *name);
        }
    }

    #[test]
    fn a_bad_value_is_named_by_its_path() {
        let err = DnsConfig::try_from(spec(
            r#"backend = "embedded"
               listen = ["127.0.0.1:5354"]
               zones = [{ name = "example.com", soa_ttl = "1.5s" }]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("zones[0].soa_ttl = 1s 500ms: must be whole seconds"),
            "{err}"
        );
        let err = toml::from_str::<DnsConfig>(
            r#"backend = "powerdns"
               api_url = "http://127.0.0.1:8081"
               api_key = "k"
               zones = ["bad zone"]"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("zones[0] = bad zone"), "{err}");
        let err = toml::from_str::<DnsSpec>(r#"backend = "carrier-pigeon""#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `carrier-pigeon`"), "{err}");
        let err =
            DnsSpec::deserialize_backend("carrier-pigeon", toml::Value::Table(toml::Table::new()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("embedded"), "{err}");
    }

    #[test]
    fn every_duration_of_every_backend_is_bounded() {
        let cases = [
            (
                r#"backend = "rfc2136"
                   server = "127.0.0.1:53"
                   zones = ["example.com"]
                   insecure_allow_unsigned_updates = true
                   timeout = "500000000years"
                   propagation = { servers = ["127.0.0.1:53"], poll_interval = "0s" }"#,
                &[
                    "timeout = 500000000years: must be at most 1h",
                    "propagation.poll_interval = 0s: must be at least 10ms",
                ][..],
            ),
            (
                r#"backend = "powerdns"
                   api_url = "http://127.0.0.1:8081"
                   api_key = "k"
                   zones = ["example.com"]
                   timeout = "2h"
                   propagation = { servers = ["127.0.0.1:53"], query_timeout = "0s" }"#,
                &[
                    "timeout = 2h: must be at most 1h",
                    "propagation.query_timeout = 0s: must be more than zero",
                ],
            ),
            (
                r#"backend = "embedded"
                   listen = ["127.0.0.1:5354"]
                   zones = [{ name = "example.com" }]
                   tcp_idle_timeout = "1year""#,
                &["tcp_idle_timeout = 1year: must be at most 1h"],
            ),
        ];
        for (text, problems) in cases {
            let err = DnsConfig::try_from(spec(text)).unwrap_err();
            let got: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
            assert_eq!(got, problems, "{text}");
        }
    }

    #[test]
    fn defaults_fill_the_embedded_server_only() {
        let mut s = spec(r#"backend = "embedded""#);
        s.default_zone(&"example.test".parse().unwrap());
        s.default_state_dir(Path::new("/srv/state"));
        let c = DnsConfig::try_from(s).unwrap();
        assert_eq!(c.zones(), ["example.test".parse::<DnsName>().unwrap()]);
        assert_eq!(c.listen(), ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]);
        let DnsConfig::Embedded(e) = &c else {
            panic!("embedded expected");
        };
        assert_eq!(
            e.state_file(),
            Some(Path::new("/srv/state/dns-127.0.0.1_53.json"))
        );
        assert!(c.shares_server_with(&c.clone()));
    }
}
