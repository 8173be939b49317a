//! The [`DnsBackend`] trait and the records it publishes.

use std::fmt::{self, Debug};
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::error::BackendError;
use crate::id::{DnsName, SiteId};

/// Points a service's name at a site: an embedded server, RFC 2136 updates, a vendor API.
///
/// # Fencing
/// A backend remembers the highest epoch it has accepted for each name and refuses a change
/// with a lower one ([`BackendError::StaleEpoch`]), leaving the records untouched. A change
/// with the *same* epoch is accepted again when it publishes the same records for the same
/// site, so a retried or resumed step is idempotent; a withdrawal, and site-less records (a
/// drill's), are accepted too; any other decision under that epoch is refused as stale (see
/// [`apply`](Self::apply)).
/// Backends that keep the epoch in the zone do so in the ownership TXT record
/// ([`ownership_name`]), which anyone can query to see who decided what.
#[async_trait]
pub trait DnsBackend: Send + Sync + Debug {
    /// What this backend can do.
    fn capabilities(&self) -> DnsCapabilities;

    /// The records currently published for `name`, and the ownership record.
    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError>;

    /// Replaces the records of `change.name`, refusing a stale epoch.
    ///
    /// Against the highest epoch `current` accepted for the name (the ownership record):
    ///
    /// | `change.epoch` | records and site | result |
    /// |---|---|---|
    /// | above `current` | any | applied; `current` becomes `change.epoch` |
    /// | equal | the same (records compared with [`RecordSet::same_as`], whatever their order) | `Ok(())`: a retried or resumed step; nothing else changes (a backend may rewrite the TTL) |
    /// | equal | a withdrawal (no records, no site), or site-less records where the epoch published site-less ones | applied: a drill's rehearsal makes no site active, so drills publish, replace and clean up their name under the unchanged production epoch |
    /// | equal | otherwise (other records, or another site) | [`BackendError::StaleEpoch`] with `attempted == current`: a conflicting decision under the same fence, which only a stale or split controller makes |
    /// | below | any | [`BackendError::StaleEpoch`] naming both epochs |
    ///
    /// [`DnsChange::at_same_epoch`] is the rule for an equal epoch; every backend uses it.
    ///
    /// A refused change leaves the published records and the ownership record untouched.
    /// `StaleEpoch` is never transient ([`BackendError::is_transient`] is false): the runbook
    /// does not retry it. Backends that cannot check atomically
    /// ([`DnsCapabilities::atomic_epoch`] false) read the ownership record, then write.
    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError>;

    /// Waits until every authoritative server answers `change`'s records, or `timeout` passes.
    /// Returns each server's answer; an `Err` only when the check itself could not run.
    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError>;
}

/// A shared backend is a backend: `Arc<dyn DnsBackend>` can be handed wherever one is
/// expected.
#[async_trait]
impl<T: DnsBackend + ?Sized> DnsBackend for std::sync::Arc<T> {
    fn capabilities(&self) -> DnsCapabilities {
        (**self).capabilities()
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        (**self).read(zone, name).await
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        (**self).apply(change).await
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        (**self).verify(change, timeout).await
    }
}

/// What a DNS backend supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DnsCapabilities {
    /// CNAME (alias) records.
    pub alias: bool,
    /// AAAA records.
    pub ipv6: bool,
    /// The epoch check is atomic with the write (compare-and-swap), not read-then-write.
    pub atomic_epoch: bool,
}

impl DnsCapabilities {
    /// Capabilities from their parts.
    pub fn new(alias: bool, ipv6: bool, atomic_epoch: bool) -> Self {
        Self {
            alias,
            ipv6,
            atomic_epoch,
        }
    }
}

/// The records a name answers with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordSet {
    /// A and AAAA records.
    Addresses(Vec<IpAddr>),
    /// A CNAME.
    Alias(DnsName),
    /// No records (withdrawn).
    Empty,
}

impl RecordSet {
    /// The same set in a canonical order, for comparisons.
    #[must_use]
    pub fn normalized(&self) -> RecordSet {
        match self {
            RecordSet::Addresses(a) => {
                let mut a = a.clone();
                a.sort();
                a.dedup();
                if a.is_empty() {
                    RecordSet::Empty
                } else {
                    RecordSet::Addresses(a)
                }
            }
            other => other.clone(),
        }
    }

    /// Whether both sets hold the same records, whatever their order.
    pub fn same_as(&self, other: &RecordSet) -> bool {
        self.normalized() == other.normalized()
    }
}

impl fmt::Display for RecordSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordSet::Addresses(a) => {
                for (i, ip) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{ip}")?;
                }
                Ok(())
            }
            RecordSet::Alias(n) => write!(f, "CNAME {n}"),
            RecordSet::Empty => f.write_str("(no records)"),
        }
    }
}

/// Who last decided what a name points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The epoch of the decision.
    pub epoch: Epoch,
    /// The site it made active (none when every site is published or none is).
    pub site: Option<SiteId>,
}

impl Ownership {
    /// The ownership record's text: `epoch=7 site=recovery`.
    pub fn to_txt(&self) -> String {
        match &self.site {
            Some(s) => format!("epoch={} site={s}", self.epoch),
            None => format!("epoch={} site=-", self.epoch),
        }
    }

    /// Parses the ownership record's text; `None` when it is not one of ours.
    pub fn from_txt(text: &str) -> Option<Ownership> {
        let mut epoch = None;
        let mut site = None;
        for part in text.split_whitespace() {
            if let Some(v) = part.strip_prefix("epoch=") {
                epoch = Some(Epoch::new(v.parse().ok()?));
            } else if let Some(v) = part.strip_prefix("site=") {
                site = Some(if v == "-" {
                    None
                } else {
                    Some(SiteId::try_from(v).ok()?)
                });
            }
        }
        Some(Ownership {
            epoch: epoch?,
            site: site?,
        })
    }
}

/// The name of the ownership TXT record of `name`: `_idns.<name>`.
pub fn ownership_name(name: &DnsName) -> Result<DnsName, crate::error::InvalidId> {
    name.prepend("_idns")
}

/// What a name currently answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The records.
    pub records: RecordSet,
    /// Their TTL (zero when there are none).
    pub ttl: Duration,
    /// The ownership record, when there is one.
    pub owner: Option<Ownership>,
}

/// A change the election asks for: publish `records` at `name`, fenced by `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsChange {
    /// The zone.
    pub zone: DnsName,
    /// The name to change (the service's name, or the drill name).
    pub name: DnsName,
    /// The records it must answer with.
    pub records: RecordSet,
    /// Their TTL.
    pub ttl: Duration,
    /// The fencing epoch of the decision.
    pub epoch: Epoch,
    /// The site made active, for the ownership record.
    pub site: Option<SiteId>,
}

impl DnsChange {
    /// The ownership record this change writes.
    pub fn ownership(&self) -> Ownership {
        Ownership {
            epoch: self.epoch,
            site: self.site.clone(),
        }
    }

    /// Whether this change withdraws the name: no records, no site.
    pub fn withdraws(&self) -> bool {
        self.site.is_none() && self.records.normalized() == RecordSet::Empty
    }

    /// What this change is to a name whose ownership record already holds the same epoch,
    /// naming `site` and publishing `published`. Every backend decides a same-epoch change
    /// with this one rule (see [`DnsBackend::apply`]).
    pub fn at_same_epoch(&self, site: Option<&SiteId>, published: &RecordSet) -> SameEpoch {
        if self.site.as_ref() == site && self.records.same_as(published) {
            SameEpoch::Retry
        } else if self.withdraws() || (self.site.is_none() && site.is_none()) {
            SameEpoch::Replace
        } else {
            SameEpoch::Conflict
        }
    }
}

/// How a backend treats a change carrying the epoch the name's ownership record already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameEpoch {
    /// The same site and records (in any order): a retried or resumed step; accepted, nothing
    /// changes but perhaps the TTL.
    Retry,
    /// A withdrawal by the holder of the epoch, or site-less records replacing site-less
    /// records (a drill's rehearsal makes no site active: drills publish, replace and clean
    /// up their name under the unchanged production epoch): accepted and applied.
    Replace,
    /// Another site, or other records for a site, or a site's records where the epoch
    /// published none, under a fence that already decided: refused as
    /// [`BackendError::StaleEpoch`].
    Conflict,
}

/// The answer of each authoritative server after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    /// One entry per server asked.
    pub servers: Vec<ServerAnswer>,
}

impl Propagation {
    /// Whether every server answers the new records.
    pub fn complete(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|s| s.current)
    }
}

/// What one authoritative server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAnswer {
    /// The server (address and port).
    pub server: String,
    /// Whether it answers the new records.
    pub current: bool,
    /// Time from the start of the check until it answered them.
    pub latency: Duration,
    /// What it answered last, or why it could not be asked.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_text_round_trips() {
        let o = Ownership {
            epoch: Epoch::new(7),
            site: Some(SiteId::try_from("recovery").unwrap()),
        };
        assert_eq!(o.to_txt(), "epoch=7 site=recovery");
        assert_eq!(Ownership::from_txt(&o.to_txt()), Some(o));
        let none = Ownership {
            epoch: Epoch::new(2),
            site: None,
        };
        assert_eq!(Ownership::from_txt(&none.to_txt()), Some(none));
        assert_eq!(Ownership::from_txt("v=spf1 -all"), None);
        assert_eq!(Ownership::from_txt("epoch=x site=a"), None);
    }

    #[test]
    fn record_sets_compare_without_order() {
        let a = RecordSet::Addresses(vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()]);
        let b = RecordSet::Addresses(vec!["::1".parse().unwrap(), "127.0.0.2".parse().unwrap()]);
        assert!(a.same_as(&b));
        assert!(RecordSet::Addresses(vec![]).same_as(&RecordSet::Empty));
    }
}
