//! Configuration of the RFC 2136 backend.

use std::net::SocketAddr;
use std::time::Duration;

use idns_core::{ConfigError, DnsName, FieldError};
use serde::{Deserialize, Serialize};

use crate::propagation::PropagationConfig;
use crate::secret::{Secret, base64_decode};

/// Where to send dynamic updates, for which zones, and how to sign them.
///
/// ```
/// use idns_dns::rfc2136::Rfc2136Config;
///
/// let config: Rfc2136Config = toml::from_str(r#"
///     server = "192.0.2.53:53"
///     zones = ["example.com"]
///     [tsig]
///     name = "idns-key"
///     algorithm = "hmac-sha256"
///     secret = "c2VjcmV0IGtleSBmb3IgaWRucyB0ZXN0cyEhISEhISE="
/// "#)?;
/// config.validate()?;
/// assert_eq!(format!("{:?}", config.tsig.unwrap().secret), "<redacted>");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// The primary server that takes the updates (address and port).
    pub server: SocketAddr,
    /// The zones this backend may change; a change outside them is refused locally.
    pub zones: Vec<String>,
    /// The TSIG key that signs every update; required unless
    /// [`insecure_allow_unsigned_updates`](Self::insecure_allow_unsigned_updates) is set.
    #[serde(default)]
    pub tsig: Option<TsigConfig>,
    /// Sends updates unsigned, so anyone who can reach the server could forge a failover.
    /// Only for servers that authorise updates by address on a trusted network.
    #[serde(default)]
    pub insecure_allow_unsigned_updates: bool,
    /// Limit for one query or update (default 5 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The servers `verify` asks; default the primary alone.
    #[serde(default)]
    pub propagation: Option<PropagationConfig>,
}

/// A TSIG key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
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

impl Rfc2136Config {
    /// A configuration for `zones` on `server`, signed with `tsig`.
    pub fn new(server: SocketAddr, zones: &[DnsName], tsig: TsigConfig) -> Self {
        Self {
            server,
            zones: zones.iter().map(ToString::to_string).collect(),
            tsig: Some(tsig),
            insecure_allow_unsigned_updates: false,
            timeout: default_timeout(),
            propagation: None,
        }
    }

    /// Checks every field; the error lists every problem with its field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validated().map(|_| ())
    }

    pub(crate) fn validated(&self) -> Result<(Vec<DnsName>, Option<Vec<u8>>), ConfigError> {
        let mut errors = Vec::new();
        let mut push = |path: &str, value: String, problem: &str| {
            errors.push(FieldError {
                path: path.to_owned(),
                value,
                problem: problem.to_owned(),
            });
        };
        if self.server.port() == 0 {
            push("server", self.server.to_string(), "needs a port");
        }
        if self.zones.is_empty() {
            push("zones", String::new(), "needs at least one zone");
        }
        let mut zones = Vec::new();
        for (i, z) in self.zones.iter().enumerate() {
            match DnsName::try_from(z.as_str()) {
                Ok(n) => zones.push(n),
                Err(e) => push(&format!("zones[{i}]"), z.clone(), e.problem),
            }
        }
        let mut key = None;
        match (&self.tsig, self.insecure_allow_unsigned_updates) {
            (None, false) => push(
                "tsig",
                String::new(),
                "is required (or set insecure_allow_unsigned_updates = true to send unsigned \
                 updates)",
            ),
            (Some(_), true) => push(
                "insecure_allow_unsigned_updates",
                "true".into(),
                "contradicts the tsig key that is also given",
            ),
            (Some(t), false) => {
                if DnsName::try_from(t.name.as_str()).is_err() {
                    push("tsig.name", t.name.clone(), "is not a valid key name");
                }
                match base64_decode(t.secret.expose()) {
                    Some(k) if k.len() >= 16 => key = Some(k),
                    Some(_) => push(
                        "tsig.secret",
                        "<redacted>".into(),
                        "is shorter than 16 bytes; make one with tsig-keygen",
                    ),
                    None => push("tsig.secret", "<redacted>".into(), "is not base64"),
                }
            }
            (None, true) => {}
        }
        if self.timeout.is_zero() {
            push("timeout", "0s".into(), "must be longer than zero");
        }
        let mut result = ConfigError { errors };
        if let Some(p) = &self.propagation
            && let Err(e) = p.validate("propagation")
        {
            result.errors.extend(e.errors);
        }
        if result.errors.is_empty() {
            Ok((zones, key))
        } else {
            Err(result)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_required_unless_loudly_waived() {
        let mut c: Rfc2136Config = toml::from_str(
            r#"
            server = "127.0.0.1:53"
            zones = ["example.com", "bad zone"]
            "#,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tsig: is required"), "{err}");
        assert!(err.contains("zones[1] = bad zone"), "{err}");
        c.zones.pop();
        c.insecure_allow_unsigned_updates = true;
        c.validate().unwrap();
    }

    #[test]
    fn bad_secrets_are_named_but_not_shown() {
        let c: Rfc2136Config = toml::from_str(
            r#"
            server = "127.0.0.1:53"
            zones = ["example.com"]
            tsig = { name = "k", algorithm = "hmac-sha512", secret = "not*base64" }
            "#,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("tsig.secret = <redacted>: is not base64"),
            "{err}"
        );
        assert!(!err.contains("not*base64"), "{err}");
    }
}
