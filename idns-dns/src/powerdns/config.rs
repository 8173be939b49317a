//! Configuration of the PowerDNS API backend.

use std::time::Duration;

use idns_core::{ConfigError, DnsName, FieldError};
use serde::{Deserialize, Serialize};

use crate::propagation::PropagationConfig;
use crate::secret::Secret;

/// Where the PowerDNS API is, its key, and the zones this backend may change.
///
/// ```
/// use idns_dns::powerdns::PowerDnsConfig;
///
/// let config: PowerDnsConfig = toml::from_str(r#"
///     api_url = "http://127.0.0.1:8081"
///     api_key = "s3cret"
///     zones = ["example.com"]
///     propagation = { servers = ["127.0.0.1:53"] }
/// "#)?;
/// config.validate()?;
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerDnsConfig {
    /// The API's base URL, `http(s)://host:port` (the `webserver-address`/`-port`).
    pub api_url: String,
    /// The `api-key`.
    pub api_key: Secret,
    /// The server id in the API's paths (default `localhost`).
    #[serde(default = "default_server_id")]
    pub server_id: String,
    /// The zones this backend may change; a change outside them is refused locally.
    pub zones: Vec<String>,
    /// Limit for one API request (default 5 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The DNS servers `verify` asks (PowerDNS's own `local-address:local-port`, and any
    /// secondaries). Without it `verify` fails.
    #[serde(default)]
    pub propagation: Option<PropagationConfig>,
}

fn default_server_id() -> String {
    "localhost".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl PowerDnsConfig {
    /// A configuration for `zones` behind the API at `api_url`.
    pub fn new(api_url: &str, api_key: Secret, zones: &[DnsName]) -> Self {
        Self {
            api_url: api_url.to_owned(),
            api_key,
            server_id: default_server_id(),
            zones: zones.iter().map(ToString::to_string).collect(),
            timeout: default_timeout(),
            propagation: None,
        }
    }

    /// Checks every field; the error lists every problem with its field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validated().map(|_| ())
    }

    pub(crate) fn validated(&self) -> Result<Vec<DnsName>, ConfigError> {
        let mut errors = Vec::new();
        let mut push = |path: &str, value: String, problem: &str| {
            errors.push(FieldError {
                path: path.to_owned(),
                value,
                problem: problem.to_owned(),
            });
        };
        let scheme_ok = self.api_url.starts_with("http://") || self.api_url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&self.api_url).is_err() {
            push(
                "api_url",
                self.api_url.clone(),
                "must be an http:// or https:// URL",
            );
        }
        if self.api_key.is_empty() {
            push("api_key", String::new(), "is empty");
        }
        if self.server_id.is_empty() || self.server_id.contains('/') {
            push(
                "server_id",
                self.server_id.clone(),
                "must be a non-empty path segment",
            );
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
            Ok(zones)
        } else {
            Err(result)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named_by_field() {
        let c: PowerDnsConfig = toml::from_str(
            r#"
            api_url = "ftp://x"
            api_key = ""
            zones = ["ok.example", "bad zone"]
            "#,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        for needle in [
            "api_url = ftp://x",
            "api_key: is empty",
            "zones[1] = bad zone",
        ] {
            assert!(err.contains(needle), "{needle:?} missing: {err}");
        }
    }
}
