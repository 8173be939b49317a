//! Configuration of the PowerDNS API backend: what is written ([`PowerDnsSpec`]) and what is
//! validated ([`PowerDnsConfig`]).

use std::time::Duration;

use idns_core::{ConfigError, DnsName, Problems, Secret};
use serde::{Deserialize, Serialize};

use crate::bounds::MAX_TIMEOUT;

use crate::propagation::{self, PropagationChecker, PropagationSpec};

/// Where the PowerDNS API is, its key, and the zones this backend may change, as written;
/// [`PowerDnsConfig::try_from`] checks it.
///
/// ```
/// use idns_dns::powerdns::{PowerDnsConfig, PowerDnsSpec};
///
/// let spec: PowerDnsSpec = toml::from_str(r#"
///     api_url = "http://127.0.0.1:8081"
///     api_key = "s3cret"
///     zones = ["example.com"]
///     propagation = { servers = ["127.0.0.1:53"] }
/// "#)?;
/// let config = PowerDnsConfig::try_from(spec)?;
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerDnsSpec {
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
    pub propagation: Option<PropagationSpec>,
}

fn default_server_id() -> String {
    "localhost".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl PowerDnsSpec {
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
}

/// A checked PowerDNS configuration: built only from a [`PowerDnsSpec`].
#[derive(Debug, Clone)]
pub struct PowerDnsConfig {
    pub(crate) api_url: String,
    /// `<api_url>/api/v1/servers/<server_id>`.
    pub(crate) base: String,
    pub(crate) api_key: Secret,
    pub(crate) zones: Vec<DnsName>,
    pub(crate) timeout: Duration,
    pub(crate) checker: Option<PropagationChecker>,
}

impl PowerDnsConfig {
    /// The API's base URL, as written.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The URL of the server in the API, `<api_url>/api/v1/servers/<server_id>`.
    pub fn server_url(&self) -> &str {
        &self.base
    }

    /// The zones this backend may change.
    pub fn zones(&self) -> &[DnsName] {
        &self.zones
    }
}

impl TryFrom<PowerDnsSpec> for PowerDnsConfig {
    type Error = ConfigError;

    /// Checks every field; the error lists every problem with its field path.
    fn try_from(spec: PowerDnsSpec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        let scheme_ok = spec.api_url.starts_with("http://") || spec.api_url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&spec.api_url).is_err() {
            p.push(
                "api_url",
                &spec.api_url,
                "must be an http:// or https:// URL",
            );
        }
        if spec.api_key.is_empty() {
            p.push("api_key", "", "is empty");
        }
        if spec.server_id.is_empty() || spec.server_id.contains('/') {
            p.push(
                "server_id",
                &spec.server_id,
                "must be a non-empty path segment",
            );
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
        p.duration("timeout", spec.timeout, Problems::ABOVE_ZERO, MAX_TIMEOUT);
        let checker = propagation::parse_optional(&mut p, spec.propagation);
        p.finish_with(PowerDnsConfig {
            base: format!(
                "{}/api/v1/servers/{}",
                spec.api_url.trim_end_matches('/'),
                spec.server_id
            ),
            api_url: spec.api_url,
            api_key: spec.api_key,
            zones,
            timeout: spec.timeout,
            checker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named_by_field() {
        let spec: PowerDnsSpec = toml::from_str(
            r#"
            api_url = "ftp://x"
            api_key = ""
            zones = ["ok.example", "bad zone"]
            "#,
        )
        .unwrap();
        let err = PowerDnsConfig::try_from(spec).unwrap_err().to_string();
        for needle in [
            "api_url = ftp://x",
            "api_key: is empty",
            "zones[1] = bad zone",
        ] {
            assert!(err.contains(needle), "{needle:?} missing: {err}");
        }
    }
}
