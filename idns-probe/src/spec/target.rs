//! What every probe builds on: where it connects ([`Target`], the alias, the endpoint), the
//! context of its construction, and the body-window knob the text probes share.

use std::net::IpAddr;
use std::time::Duration;

use idns_core::{DnsName, Problems, Site, SiteId};
use serde::{Deserialize, Serialize};

/// F5's "Alias Address / Service Port": probe this address and/or port on the site's behalf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasSpec {
    /// Connect to this address instead of the site's own.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Connect to this port instead of the check's (TCP only; an HTTP probe takes its port
    /// from the URL).
    #[serde(default)]
    pub port: Option<u16>,
}

/// Where a site's probes connect: the service's name (sent as HTTP Host and TLS SNI) and the
/// site's own address or host name (where the connection goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service's DNS name, the one clients use.
    pub service: DnsName,
    /// The site this target belongs to.
    pub site: SiteId,
    /// The site's address to connect to (its first published address).
    pub address: Option<IpAddr>,
    /// The site's own host name, resolved at each check when there is no address.
    pub host: Option<DnsName>,
}

impl Target {
    /// The target of `site` of a service named `service`: its first address, else its alias
    /// host name.
    pub fn for_site(service: &DnsName, site: &Site) -> Target {
        Target {
            service: service.clone(),
            site: site.id.clone(),
            address: site.addresses.first().copied(),
            host: site.alias.clone(),
        }
    }

    /// A target that connects to `address` for the service `service`.
    pub fn at(service: DnsName, site: SiteId, address: IpAddr) -> Target {
        Target {
            service,
            site,
            address: Some(address),
            host: None,
        }
    }
}

/// Where a check connects, after the alias is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// An address known up front.
    Addr(IpAddr),
    /// A host name resolved at each check (a site in alias mode).
    Host(DnsName),
}

impl Endpoint {
    /// The alias address if set, else the target's address, else its host name.
    pub(crate) fn choose(
        p: &mut Problems,
        path: &str,
        alias: Option<&AliasSpec>,
        target: &Target,
    ) -> Option<Endpoint> {
        if let Some(a) = alias.and_then(|a| a.address) {
            return Some(Endpoint::Addr(a));
        }
        if let Some(a) = target.address {
            return Some(Endpoint::Addr(a));
        }
        if let Some(h) = &target.host {
            return Some(Endpoint::Host(h.clone()));
        }
        p.push(
            format!("{path}.alias.address"),
            "",
            format!(
                "site {} has neither an address nor a host name to probe: set this",
                target.site
            ),
        );
        None
    }
}

/// What every probe constructor needs besides its own spec.
#[derive(Debug, Clone)]
pub(crate) struct BuildContext {
    /// Path of the `check` table, for errors.
    pub(crate) path: String,
    /// `site/probe`, for logs.
    pub(crate) label: String,
    /// The limit of one attempt.
    pub(crate) timeout: Duration,
}

pub(crate) fn default_window() -> usize {
    64 * 1024
}

/// The largest search window accepted.
pub(crate) const MAX_WINDOW: usize = 16 * 1024 * 1024;

pub(crate) fn check_window(p: &mut Problems, path: &str, window: usize) {
    if window == 0 || window > MAX_WINDOW {
        p.push(
            path,
            window,
            format!("must be between 1 and {MAX_WINDOW} bytes"),
        );
    }
}
