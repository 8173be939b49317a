//! The PowerDNS HTTP API backend: each change is one `PATCH` of the zone that replaces the
//! name's A, AAAA and CNAME RRsets and its ownership TXT record together.
//!
//! The API has no compare-and-swap, so the epoch check is read-then-write: the backend reads
//! the ownership TXT record `_idns.<name>` and the records first and refuses a stale epoch
//! itself (a lower one, or the same one with other records or another site)
//! ([`DnsCapabilities::atomic_epoch`] is `false`). Two controllers writing in the same
//! instant could both pass the check; the fencing of the election (one active controller)
//! must prevent that, or use the RFC 2136 backend against PowerDNS (`dnsupdate=yes`), whose
//! UPDATE prerequisite makes the check atomic.
//!
//! Errors: 401/403 (a wrong API key) are [`BackendError::Auth`]; 404 (no such zone) is
//! [`BackendError::NotFound`]; 422 (PowerDNS refused the data) is [`BackendError::Refused`]
//! with the server's own error text; 5xx, timeouts and connection errors are transient. A
//! redirect (3xx) is never followed, since the API key would go with it: it is
//! [`BackendError::Invalid`], naming the status and the `Location`.
//!
//! ```no_run
//! use idns_core::Secret;
//! use idns_dns::powerdns::{PowerDnsBackend, PowerDnsConfig, PowerDnsSpec};
//! use idns_dns::propagation::PropagationSpec;
//!
//! let mut spec = PowerDnsSpec::new(
//!     "http://127.0.0.1:8081",
//!     Secret::new(std::env::var("PDNS_API_KEY")?),
//!     &["example.com".parse()?],
//! );
//! spec.propagation = Some(PropagationSpec::new(["127.0.0.1:53".parse()?]));
//! let backend = PowerDnsBackend::new(PowerDnsConfig::try_from(spec)?)?; // an idns_core::DnsBackend
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use idns_core::{
    BackendError, DnsBackend, DnsCapabilities, DnsChange, DnsName, Ownership, Propagation,
    Published, RecordSet, SameEpoch, Secret, ownership_name,
};
use serde::{Deserialize, Serialize};

pub use config::{PowerDnsConfig, PowerDnsSpec};

use crate::error::Error;
use crate::propagation::PropagationChecker;

/// A [`DnsBackend`] that writes through the PowerDNS HTTP API.
#[derive(Clone)]
pub struct PowerDnsBackend {
    http: reqwest::Client,
    base: String,
    api_key: Secret,
    zones: Vec<DnsName>,
    checker: Option<PropagationChecker>,
}

impl fmt::Debug for PowerDnsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerDnsBackend")
            .field("api", &self.base)
            .field("api_key", &self.api_key)
            .field("zones", &self.zones)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    changetype: Option<&'static str>,
    #[serde(default)]
    records: Vec<Rec>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Rec {
    content: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Serialize)]
struct Patch {
    rrsets: Vec<RrSet>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    error: String,
}

/// What the zone holds for one service name.
struct Current {
    records: RecordSet,
    ttl: Duration,
    owner: Option<Ownership>,
}

impl PowerDnsBackend {
    /// A backend from a validated configuration.
    pub fn new(config: PowerDnsConfig) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            // A redirect would carry the X-API-Key header to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Io {
                what: "cannot build the HTTP client".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(Self {
            http,
            base: config.base,
            api_key: config.api_key,
            zones: config.zones,
            checker: config.checker,
        })
    }

    fn zone_url(&self, zone: &DnsName) -> String {
        format!("{}/zones/{}", self.base, zone.to_fqdn())
    }

    fn check_zone(&self, zone: &DnsName, name: &DnsName) -> Result<(), BackendError> {
        if !self.zones.contains(zone) {
            return Err(BackendError::Refused(format!(
                "zone {zone} is not configured for this backend"
            )));
        }
        if !name.is_within(zone) {
            return Err(BackendError::Refused(format!(
                "{name} is not in zone {zone}"
            )));
        }
        Ok(())
    }

    async fn current(&self, zone: &DnsName, name: &DnsName) -> Result<Current, BackendError> {
        let response = self
            .http
            .get(self.zone_url(zone))
            .header("X-API-Key", self.api_key.expose())
            .send()
            .await
            .map_err(|e| http_error(&e))?;
        let response = check_status(response, zone).await?;
        let zone_data: Zone = response
            .json()
            .await
            .map_err(|e| BackendError::Unavailable(format!("unreadable zone from the API: {e}")))?;
        let fqdn = name.to_fqdn();
        let txt_fqdn = ownership_name(name)
            .map_err(|e| BackendError::Invalid(e.to_string()))?
            .to_fqdn();
        let mut addresses = Vec::new();
        let mut alias = None;
        let mut ttl = None;
        let mut owner: Option<Ownership> = None;
        for set in &zone_data.rrsets {
            let enabled = set.records.iter().filter(|r| !r.disabled);
            if set.name.eq_ignore_ascii_case(&fqdn) {
                match set.rtype.as_str() {
                    "A" | "AAAA" => {
                        for r in enabled {
                            let ip: IpAddr = r.content.parse().map_err(|_| {
                                BackendError::Invalid(format!(
                                    "the API returned a bad address {:?}",
                                    r.content
                                ))
                            })?;
                            addresses.push(ip);
                            ttl = set.ttl;
                        }
                    }
                    "CNAME" => {
                        if let Some(r) = enabled.into_iter().next() {
                            alias = Some(DnsName::try_from(r.content.as_str()).map_err(|e| {
                                BackendError::Invalid(format!("the API returned a bad CNAME: {e}"))
                            })?);
                            ttl = set.ttl;
                        }
                    }
                    _ => {}
                }
            } else if set.name.eq_ignore_ascii_case(&txt_fqdn) && set.rtype == "TXT" {
                owner = enabled
                    .filter_map(|r| Ownership::from_txt(&unquote(&r.content)))
                    .max_by_key(|o| o.epoch);
            }
        }
        let records = match alias {
            Some(a) => RecordSet::Alias(a),
            None => RecordSet::Addresses(addresses).normalized(),
        };
        let ttl = match records {
            RecordSet::Empty => Duration::ZERO,
            _ => Duration::from_secs(u64::from(ttl.unwrap_or(0))),
        };
        Ok(Current {
            records,
            ttl,
            owner,
        })
    }
}

/// The text of a TXT record's content as PowerDNS writes it (`"a" "b"` → `ab`).
fn unquote(content: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut escaped = false;
    for c in content.chars() {
        match (inside, escaped, c) {
            (true, true, c) => {
                out.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (_, false, '"') => inside = !inside,
            (true, false, c) => out.push(c),
            (false, _, _) => {}
        }
    }
    if out.is_empty() && !content.contains('"') {
        return content.to_owned();
    }
    out
}

fn http_error(e: &reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout(format!("the PowerDNS API did not answer in time: {e}"))
    } else {
        BackendError::Unavailable(format!("cannot reach the PowerDNS API: {e}"))
    }
}

async fn check_status(
    response: reqwest::Response,
    zone: &DnsName,
) -> Result<reqwest::Response, BackendError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| {
                String::from_utf8_lossy(l.as_bytes())
                    .chars()
                    .take(300)
                    .collect()
            })
            .unwrap_or_else(|| "nowhere (no Location header)".to_owned());
        return Err(BackendError::Invalid(format!(
            "the PowerDNS API answered {status} with a redirect to {location}; redirects are \
             not followed, so the API key is not sent there: set api_url to the address that \
             answers"
        )));
    }
    let body = response.text().await.unwrap_or_default();
    let text = serde_json::from_str::<ApiError>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.chars().take(300).collect());
    Err(match status.as_u16() {
        401 | 403 => BackendError::Auth(format!(
            "the PowerDNS API refused the API key ({status}): {text}"
        )),
        404 => BackendError::NotFound(format!("zone {zone} ({status}): {text}")),
        422 => BackendError::Refused(format!("PowerDNS refused the change: {text}")),
        400 => BackendError::Invalid(format!("PowerDNS says the request is malformed: {text}")),
        s if s >= 500 => {
            BackendError::Unavailable(format!("the PowerDNS API failed ({status}): {text}"))
        }
        _ => BackendError::Refused(format!("the PowerDNS API answered {status}: {text}")),
    })
}

#[async_trait]
impl DnsBackend for PowerDnsBackend {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::new(true, true, false)
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.check_zone(zone, name).map_err(|e| match e {
            BackendError::Refused(m) => BackendError::NotFound(m),
            other => other,
        })?;
        let c = self.current(zone, name).await?;
        Ok(Published {
            records: c.records,
            ttl: c.ttl,
            owner: c.owner,
        })
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        self.check_zone(&change.zone, &change.name)?;
        let ttl = crate::Ttl::try_from(change.ttl)?.as_secs();
        let current = self.current(&change.zone, &change.name).await?;
        if let Some(o) = &current.owner
            && change.epoch < o.epoch
        {
            tracing::warn!(name = %change.name, attempted = %change.epoch, current = %o.epoch, "refused a change with a stale epoch");
            return Err(BackendError::StaleEpoch {
                attempted: change.epoch,
                current: o.epoch,
            });
        }
        if let Some(o) = &current.owner
            && change.epoch == o.epoch
            && change.at_same_epoch(o.site.as_ref(), &current.records) == SameEpoch::Conflict
        {
            tracing::warn!(name = %change.name, epoch = %change.epoch, records = %change.records, published = %current.records, "refused a conflicting change at the accepted epoch");
            return Err(BackendError::StaleEpoch {
                attempted: change.epoch,
                current: o.epoch,
            });
        }
        let fqdn = change.name.to_fqdn();
        let (mut v4, mut v6, mut cname) = (Vec::new(), Vec::new(), Vec::new());
        match change.records.normalized() {
            RecordSet::Addresses(ips) => {
                for ip in ips {
                    let rec = Rec {
                        content: ip.to_string(),
                        disabled: false,
                    };
                    if ip.is_ipv4() {
                        v4.push(rec)
                    } else {
                        v6.push(rec)
                    }
                }
            }
            RecordSet::Alias(target) => cname.push(Rec {
                content: target.to_fqdn(),
                disabled: false,
            }),
            RecordSet::Empty => {}
        }
        let set = |name: &str, rtype: &str, records: Vec<Rec>| RrSet {
            name: name.to_owned(),
            rtype: rtype.to_owned(),
            ttl: (!records.is_empty()).then_some(ttl),
            changetype: Some(if records.is_empty() {
                "DELETE"
            } else {
                "REPLACE"
            }),
            records,
        };
        let txt = ownership_name(&change.name)
            .map_err(|e| BackendError::Invalid(e.to_string()))?
            .to_fqdn();
        // Deletions first, so a CNAME never meets the addresses it replaces (and back).
        let mut rrsets = vec![
            set(&fqdn, "A", v4),
            set(&fqdn, "AAAA", v6),
            set(&fqdn, "CNAME", cname),
        ];
        rrsets.sort_by_key(|s| s.changetype != Some("DELETE"));
        rrsets.push(set(
            &txt,
            "TXT",
            vec![Rec {
                content: format!("\"{}\"", change.ownership().to_txt()),
                disabled: false,
            }],
        ));
        let response = self
            .http
            .patch(self.zone_url(&change.zone))
            .header("X-API-Key", self.api_key.expose())
            .json(&Patch { rrsets })
            .send()
            .await
            .map_err(|e| http_error(&e))?;
        check_status(response, &change.zone).await?;
        tracing::info!(name = %change.name, records = %change.records, epoch = %change.epoch, "updated through the PowerDNS API");
        Ok(())
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        match &self.checker {
            Some(c) if !c.servers().is_empty() => {
                Ok(c.check(&change.name, &change.records, timeout).await)
            }
            _ => Err(BackendError::Invalid(
                "no servers to check: set propagation.servers to the PowerDNS DNS address(es)"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unquote;

    #[test]
    fn txt_contents_are_unquoted() {
        assert_eq!(unquote("\"epoch=1 site=a\""), "epoch=1 site=a");
        assert_eq!(unquote("\"epoch=1 \" \"site=a\""), "epoch=1 site=a");
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("bare"), "bare");
    }
}
