//! Configuration of the RFC 2136 backend: what is written ([`Rfc2136Spec`]) and what is
//! validated ([`Rfc2136Config`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};
use idns_core::{ConfigError, DnsName, Problems, Secret};
use serde::{Deserialize, Serialize};

use crate::bounds::MAX_TIMEOUT;

use crate::propagation::{self, PropagationChecker, PropagationSpec};

/// Where to send dynamic updates, for which zones, and how to sign them, as written;
/// [`Rfc2136Config::try_from`] checks it.
///
/// ```
/// use idns_dns::rfc2136::{Rfc2136Config, Rfc2136Spec};
///
/// let spec: Rfc2136Spec = toml::from_str(r#"
///     server = "192.0.2.53:53"
///     zones = ["example.com"]
///     [tsig]
///     name = "idns-key"
///     algorithm = "hmac-sha256"
///     secret = "c2VjcmV0IGtleSBmb3IgaWRucyB0ZXN0cyEhISEhISE="
/// "#)?;
/// assert_eq!(format!("{:?}", spec.tsig.as_ref().map(|t| &t.secret)), "Some(<redacted>)");
/// let config = Rfc2136Config::try_from(spec)?;
/// assert!(!format!("{config:?}").contains("c2VjcmV0"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Spec {
    /// The primary server that takes the updates (address and port).
    pub server: SocketAddr,
    /// The zones this backend may change; a change outside them is refused locally.
    pub zones: Vec<String>,
    /// The TSIG key that signs every update; required unless
    /// [`insecure_allow_unsigned_updates`](Self::insecure_allow_unsigned_updates) is set.
    #[serde(default)]
    pub tsig: Option<TsigSpec>,
    /// Sends updates unsigned, so anyone who can reach the server could forge a failover.
    /// Only for servers that authorise updates by address on a trusted network.
    #[serde(default)]
    pub insecure_allow_unsigned_updates: bool,
    /// Limit for one query or update (default 5 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The servers `verify` asks; default the primary alone.
    #[serde(default)]
    pub propagation: Option<PropagationSpec>,
}

/// A TSIG key, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigSpec {
    /// The key's name, as the server knows it (`key "idns-key" { ... }` in BIND).
    pub name: String,
    /// The HMAC algorithm.
    pub algorithm: TsigAlgorithmName,
    /// The key, base64 (as `tsig-keygen` prints it).
    pub secret: Secret,
    /// Allowed clock difference with the server, in seconds (default 300).
    #[serde(default = "default_fudge")]
    pub fudge: u16,
}

/// The TSIG algorithms accepted (the SHA-2 HMACs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithmName {
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_fudge() -> u16 {
    300
}

impl Rfc2136Spec {
    /// A configuration for `zones` on `server`, signed with `tsig`.
    pub fn new(server: SocketAddr, zones: &[DnsName], tsig: TsigSpec) -> Self {
        Self {
            server,
            zones: zones.iter().map(ToString::to_string).collect(),
            tsig: Some(tsig),
            insecure_allow_unsigned_updates: false,
            timeout: default_timeout(),
            propagation: None,
        }
    }
}

/// A checked RFC 2136 configuration: built only from an [`Rfc2136Spec`], so the zones are
/// names, the key is a key, and the timeouts are above zero. Its `Debug` shows the key's name
/// only.
#[derive(Clone)]
pub struct Rfc2136Config {
    pub(crate) server: SocketAddr,
    pub(crate) zones: Vec<DnsName>,
    /// The signer and the key's name; `None` for unsigned updates.
    pub(crate) tsig: Option<(TSigner, String)>,
    pub(crate) timeout: Duration,
    pub(crate) checker: PropagationChecker,
}

impl Rfc2136Config {
    /// The server that takes the updates.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The zones this backend may change.
    pub fn zones(&self) -> &[DnsName] {
        &self.zones
    }
}

impl fmt::Debug for Rfc2136Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signer holds the key: only its name is shown.
        f.debug_struct("Rfc2136Config")
            .field("server", &self.server)
            .field("zones", &self.zones)
            .field(
                "tsig_key",
                &self.tsig.as_ref().map_or("NONE (unsigned)", |(_, n)| n),
            )
            .field("timeout", &self.timeout)
            .field("propagation", &self.checker)
            .finish()
    }
}

impl TryFrom<Rfc2136Spec> for Rfc2136Config {
    type Error = ConfigError;

    /// Checks every field; the error lists every problem with its field path.
    fn try_from(spec: Rfc2136Spec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        if spec.server.port() == 0 {
            p.push("server", spec.server, "needs a port");
        }
        if spec.zones.is_empty() {
            p.push("zones", "", "needs at least one zone");
        }
        let mut zones = Vec::new();
        for (i, z) in spec.zones.iter().enumerate() {
            match DnsName::try_from(z.as_str()) {
                Ok(n) => zones.push(n),
                Err(e) => p.push(format!("zones[{i}]"), z, e.problem),
            }
        }
        let tsig = match (&spec.tsig, spec.insecure_allow_unsigned_updates) {
            (None, false) => {
                p.push(
                    "tsig",
                    "",
                    "is required (or set insecure_allow_unsigned_updates = true to send unsigned \
                     updates)",
                );
                None
            }
            (Some(_), true) => {
                p.push(
                    "insecure_allow_unsigned_updates",
                    "true",
                    "contradicts the tsig key that is also given",
                );
                None
            }
            (Some(t), false) => signer(&mut p, t),
            (None, true) => None,
        };
        p.duration("timeout", spec.timeout, Problems::ABOVE_ZERO, MAX_TIMEOUT);
        let checker = propagation::parse_optional(&mut p, spec.propagation).unwrap_or_else(|| {
            PropagationChecker::new([spec.server])
                .with_query_timeout(spec.timeout.min(Duration::from_secs(2)))
        });
        p.finish_with(Rfc2136Config {
            server: spec.server,
            zones,
            tsig,
            timeout: spec.timeout,
            checker,
        })
    }
}

/// The signer of the key `t`, its problems under `tsig`.
fn signer(p: &mut Problems, t: &TsigSpec) -> Option<(TSigner, String)> {
    let name = match DnsName::try_from(t.name.as_str()) {
        Ok(_) => Name::from_ascii(&t.name)
            .map_err(|e| p.push("tsig.name", &t.name, e.to_string()))
            .ok(),
        Err(_) => {
            p.push("tsig.name", &t.name, "is not a valid key name");
            None
        }
    };
    let key = match base64_decode(t.secret.expose()) {
        Some(k) if k.len() >= 16 => Some(k),
        Some(_) => {
            p.push(
                "tsig.secret",
                t.secret.to_string(),
                "is shorter than 16 bytes; make one with tsig-keygen",
            );
            None
        }
        None => {
            p.push("tsig.secret", t.secret.to_string(), "is not base64");
            None
        }
    };
    let algorithm = match t.algorithm {
        TsigAlgorithmName::HmacSha256 => TsigAlgorithm::HmacSha256,
        TsigAlgorithmName::HmacSha384 => TsigAlgorithm::HmacSha384,
        TsigAlgorithmName::HmacSha512 => TsigAlgorithm::HmacSha512,
    };
    let signer = TSigner::new(key?, algorithm, name?, t.fudge)
        .map_err(|e| {
            p.push(
                "tsig.algorithm",
                format!("{:?}", t.algorithm),
                e.to_string(),
            )
        })
        .ok()?;
    Some((signer, t.name.clone()))
}

/// Decodes standard base64 (with or without padding, whitespace ignored), as `tsig-keygen`
/// writes TSIG secrets.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut padding = false;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            _ => return None,
        };
        if padding {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rfc2136Config, ConfigError> {
        Rfc2136Config::try_from(toml::from_str::<Rfc2136Spec>(text).unwrap())
    }

    #[test]
    fn a_key_is_required_unless_loudly_waived() {
        let err = parse(
            r#"
            server = "127.0.0.1:53"
            zones = ["example.com", "bad zone"]
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tsig: is required"), "{err}");
        assert!(err.contains("zones[1] = bad zone"), "{err}");
        let c = parse(
            r#"
            server = "127.0.0.1:53"
            zones = ["example.com"]
            insecure_allow_unsigned_updates = true
            propagation = { servers = ["127.0.0.1:53", "127.0.0.2:53"] }
            "#,
        )
        .unwrap();
        assert!(c.tsig.is_none());
        assert_eq!(c.checker.servers().len(), 2);
    }

    #[test]
    fn bad_secrets_are_named_but_not_shown() {
        let err = parse(
            r#"
            server = "127.0.0.1:53"
            zones = ["example.com"]
            tsig = { name = "k", algorithm = "hmac-sha512", secret = "not*base64" }
            propagation = { servers = ["127.0.0.1:0"] }
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tsig.secret = <redacted>: is not base64"),
            "{err}"
        );
        assert!(
            err.contains("propagation.servers[0] = 127.0.0.1:0: needs a port"),
            "{err}"
        );
        assert!(!err.contains("not*base64"), "{err}");
    }

    #[test]
    fn a_valid_key_makes_a_signer_that_debug_does_not_show() {
        let c = parse(
            r#"
            server = "127.0.0.1:53"
            zones = ["example.com"]
            tsig = { name = "idns-key", algorithm = "hmac-sha256", secret = "c2VjcmV0IGtleSBmb3IgaWRucyB0ZXN0cyEhISEhISE=" }
            "#,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("idns-key"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert_eq!(c.checker.servers(), ["127.0.0.1:53".parse().unwrap()]);
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("c2VjcmV0").unwrap(), b"secret");
        assert_eq!(base64_decode("c2VjcmV0MQ==").unwrap(), b"secret1");
        assert_eq!(base64_decode("c2Vj cmV0 MTI=").unwrap(), b"secret12");
        assert!(base64_decode("c2V*").is_none());
        assert!(base64_decode("ab=c").is_none());
    }
}
