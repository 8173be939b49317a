//! One site: as written ([`SiteSpec`]) and validated ([`Site`]); how its probes combine
//! ([`HealthRule`]) and how the service's name points at it ([`RecordMode`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::probe::{ProbeSettings, ProbeSpec, validate_probe};
use crate::error::Problems;
use crate::id::{DnsName, SiteId};

/// One site as written.
///
/// ```
/// use idns_core::{HealthRule, ProbeSpec, SiteSpec};
///
/// let site = SiteSpec::new("primary", 1)
///     .address("192.0.2.10".parse()?)
///     .probe(ProbeSpec::new("http"))
///     .probe(ProbeSpec::new("db"))
///     .health(HealthRule::Any);
/// assert_eq!(site.probes.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Unique id of the site.
    pub id: String,
    /// Preference: the lowest number is the home site, the one failback returns to.
    pub priority: u32,
    /// Addresses published for this site in `address` mode (A and AAAA records).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The site's own host name, published as a CNAME in `alias` mode.
    #[serde(default)]
    pub alias: Option<String>,
    /// The probes that tell whether this site is alive.
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    /// How the probes combine into the site's health.
    #[serde(default)]
    pub health: HealthRule,
}

impl SiteSpec {
    /// A site with no address, alias or probe yet; the lowest `priority` is the home site.
    pub fn new(id: impl Into<String>, priority: u32) -> Self {
        Self {
            id: id.into(),
            priority,
            addresses: Vec::new(),
            alias: None,
            probes: Vec::new(),
            health: HealthRule::default(),
        }
    }

    /// Adds an address published for this site in `address` mode.
    #[must_use]
    pub fn address(mut self, address: IpAddr) -> Self {
        self.addresses.push(address);
        self
    }

    /// Sets the site's own host name, published as a CNAME in `alias` mode.
    #[must_use]
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }

    /// Adds a probe.
    #[must_use]
    pub fn probe(mut self, probe: ProbeSpec) -> Self {
        self.probes.push(probe);
        self
    }

    /// Sets how the probes combine into the site's health.
    #[must_use]
    pub fn health(mut self, rule: HealthRule) -> Self {
        self.health = rule;
        self
    }
}

/// How the service's name points at the active site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// A and AAAA records with the active site's addresses.
    #[default]
    Address,
    /// A CNAME to the active site's own host name.
    Alias,
}

/// How a site's probes combine into one observer's verdict on the site.
///
/// Each observer judges each probe up, down or unknown (see [`ProbeSpec`]); the rule turns
/// those into the observer's verdict on the site. A site is then **down** when at least
/// [`quorum`](crate::ObserversSpec::quorum) live observers say down and fewer than `quorum`
/// say up, **up** in the mirror case, and **unknown** otherwise (too few verdicts, or a
/// dispute). Only an up site is eligible to be switched to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthRule {
    /// Up when every probe is up; down when any is down.
    #[default]
    All,
    /// Up when any probe is up; down when all are down.
    Any,
    /// Up when at least k probes are up; down when k can no longer be reached.
    AtLeast(usize),
}

/// A validated site.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Site {
    /// Unique id.
    pub id: SiteId,
    /// Preference: lowest is the home site.
    pub priority: u32,
    /// Published addresses (address mode).
    pub addresses: Vec<IpAddr>,
    /// Published alias (alias mode).
    pub alias: Option<DnsName>,
    /// The probes, in configuration order.
    pub probes: Vec<ProbeSettings>,
    /// How the probes combine.
    pub health: HealthRule,
}

/// Validates a site at `path` (`sites[i]`) past its id, which the caller checked for
/// uniqueness; `name` is the service's name, which an alias must differ from.
pub(super) fn validate_site(
    p: &mut Problems,
    path: &str,
    s: &SiteSpec,
    id: Option<SiteId>,
    record: RecordMode,
    name: Option<&DnsName>,
) -> Option<Site> {
    let alias = match &s.alias {
        Some(a) => DnsName::try_from(a.as_str())
            .map_err(|e| p.push(format!("{path}.alias"), a, e.problem))
            .ok(),
        None => None,
    };
    match record {
        RecordMode::Address if s.addresses.is_empty() => p.push(
            format!("{path}.addresses"),
            "",
            "address mode needs at least one address per site",
        ),
        RecordMode::Alias if s.alias.is_none() => p.push(
            format!("{path}.alias"),
            "",
            "alias mode needs the site's own host name",
        ),
        _ => {}
    }
    if let (Some(a), Some(n)) = (&alias, name)
        && a == n
    {
        p.push(
            format!("{path}.alias"),
            a,
            "must differ from the service name (a CNAME loop)",
        );
    }
    let mut probes = Vec::new();
    if s.probes.is_empty() {
        p.push(
            format!("{path}.probes"),
            "",
            "a site needs at least one probe, or it can never be judged alive",
        );
    }
    let mut seen_probe = BTreeSet::new();
    for (j, pr) in s.probes.iter().enumerate() {
        let pp = format!("{path}.probes[{j}]");
        if !seen_probe.insert(pr.id.clone()) {
            p.push(
                format!("{pp}.id"),
                &pr.id,
                "is used by another probe of this site",
            );
        }
        if let Some(probe) = validate_probe(p, &pp, pr) {
            probes.push(probe);
        }
    }
    if let HealthRule::AtLeast(k) = s.health
        && (k == 0 || k > s.probes.len())
    {
        p.push(
            format!("{path}.health.at_least"),
            k,
            format!(
                "must be between 1 and the number of probes ({})",
                s.probes.len()
            ),
        );
    }
    Some(Site {
        id: id?,
        priority: s.priority,
        addresses: s.addresses.clone(),
        alias,
        probes,
        health: s.health,
    })
}
