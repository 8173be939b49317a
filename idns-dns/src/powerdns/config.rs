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
    /// The API's base URL, `https://host:port` (the `webserver-address`/`-port`, or a TLS proxy
    /// in front of it). Plain `http://` is accepted only to a loopback host (`127.0.0.0/8`,
    /// `::1`, `localhost`) unless [`allow_plain_http`](Self::allow_plain_http) is set.
    pub api_url: String,
    /// Accepts an `http://` API URL beyond loopback, so the API key crosses the network in
    /// clear text. Only for a network where nobody else can listen.
    #[serde(default)]
    pub allow_plain_http: bool,
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
            allow_plain_http: false,
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
    /// The API's base URL, as written but without any user name or password.
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
        let shown = shown_url(&spec.api_url);
        match reqwest::Url::parse(&spec.api_url) {
            Ok(url) if url.scheme() == "https" => {}
            Ok(url) if url.scheme() == "http" => {
                if !spec.allow_plain_http && !is_loopback(&url) {
                    p.push(
                        "api_url",
                        &shown,
                        "is plain http:// to a host beyond loopback, so the API key would cross \
                         the network in clear text: use https://, or set allow_plain_http = true",
                    );
                }
            }
            _ => p.push("api_url", &shown, "must be an http:// or https:// URL"),
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
            api_url: shown,
            api_key: spec.api_key,
            zones,
            timeout: spec.timeout,
            checker,
        })
    }
}

/// Whether `url`'s host is this machine's loopback: an address in `127.0.0.0/8`, `::1`, or
/// the name `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// `url` as it may be shown: without the user name and password it may carry.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                // Both only fail for URLs that cannot carry credentials at all.
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            u.to_string().trim_end_matches('/').to_owned()
        }
        // Unparsable: keep what follows the last '@', which ends any credentials.
        Err(_) => match url.rsplit_once('@') {
            Some((_, rest)) => format!("<redacted>@{rest}"),
            None => url.to_owned(),
        },
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
