//! The conformance suite of a [`DnsBackend`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::dns::{DnsBackend, DnsChange, Ownership, Published, RecordSet};
use crate::epoch::Epoch;
use crate::error::{BackendError, InvalidId};
use crate::id::{DnsName, SiteId};

/// The conformance suite of a [`DnsBackend`].
///
/// It checks, on the name [`name`](Self::name) of zone [`zone`](Self::zone), in this order:
///
/// 1. `read` works and tells the highest epoch accepted so far (`e`, zero when none).
/// 2. `apply` at `e+1` publishes [`first`](Self::first) with the ownership `(e+1, site a)`, with
///    the requested TTL, and `verify` then reports the change complete.
/// 3. Applying the same change again (same epoch, same records in another order, same site)
///    is accepted and changes nothing.
/// 4. A change at the same epoch `e+1` with other records or another site (a conflicting
///    decision: other records and site b, other records and site a, the same records and
///    site b) fails with [`BackendError::StaleEpoch`] whose `attempted` and `current` are both
///    `e+1`, and the records and ownership stay as they were.
/// 5. A change at epoch `e` (now stale) fails with [`BackendError::StaleEpoch`] naming both
///    epochs, and the records and ownership stay as they were.
/// 6. At `e+1`, a withdrawal is applied, then site-less record sets (a drill's rehearsal
///    makes no site active) are applied, replaced and withdrawn again (a drill's cleanup),
///    and a site's records are then refused as stale (the rule of
///    [`DnsChange::at_same_epoch`]).
/// 7. A newer epoch with other records ([`second`](Self::second), site b) wins.
/// 8. With `capabilities().ipv6`: A and AAAA records together ([`first`](Self::first) plus
///    [`ipv6`](Self::ipv6)).
/// 9. With `capabilities().alias`: a CNAME to [`alias`](Self::alias), and back to addresses;
///    without it, an alias change fails with [`BackendError::Unsupported`] and changes nothing.
/// 10. [`RecordSet::Empty`] withdraws the records but keeps the ownership record, so a stale
///     change is still refused afterwards.
/// 11. A change of [`outside`](Self::outside), a name outside the zone, fails with an error
///     that is not transient ([`BackendError::is_transient`] is false) and writes nothing.
///
/// The name is left withdrawn, owned by the last epoch used, so the next run starts above it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsSuite {
    /// The zone the backend serves.
    pub zone: DnsName,
    /// The name the suite changes (default `idns-conformance.<zone>`); nothing else may use it.
    pub name: DnsName,
    /// The first address set (IPv4 only, so backends without AAAA can run the suite).
    pub first: Vec<IpAddr>,
    /// The second address set (IPv4 only), disjoint from the first.
    pub second: Vec<IpAddr>,
    /// IPv6 addresses, published together with `first` when the backend supports AAAA.
    pub ipv6: Vec<IpAddr>,
    /// The CNAME target (default `target.idns-conformance.<zone>`).
    pub alias: DnsName,
    /// A name outside the zone (default under `invalid.`, or `test.` for such a zone).
    pub outside: DnsName,
    /// The site written with `first`.
    pub site_a: SiteId,
    /// The site written with `second`.
    pub site_b: SiteId,
    /// TTL of the records written.
    pub ttl: Duration,
    /// How long `verify` may wait for every server.
    pub verify_timeout: Duration,
}

impl DnsSuite {
    /// A suite for `zone` with the default test name, addresses (documentation ranges) and
    /// sites; change the public fields to adapt it. Fails only when `zone` is too long to
    /// hold the test names.
    pub fn new(zone: DnsName) -> Result<Self, InvalidId> {
        let name = zone.prepend("idns-conformance")?;
        let alias = name.prepend("target")?;
        let outside_parent = if zone.as_str() == "invalid" || zone.as_str().ends_with(".invalid") {
            "test"
        } else {
            "invalid"
        };
        let outside = DnsName::try_from(format!("idns-conformance.{outside_parent}"))?;
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let v6 = |last| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last));
        Ok(Self {
            zone,
            name,
            first: vec![v4(192, 0, 2, 10), v4(192, 0, 2, 11)],
            second: vec![v4(198, 51, 100, 20)],
            ipv6: vec![v6(0x10), v6(0x11)],
            alias,
            outside,
            site_a: SiteId::try_from("conformance-a")?,
            site_b: SiteId::try_from("conformance-b")?,
            ttl: Duration::from_secs(30),
            verify_timeout: Duration::from_secs(10),
        })
    }

    /// Runs the suite against `backend`; panics with the broken rule on the first violation.
    pub async fn run(&self, backend: &dyn DnsBackend) {
        let caps = backend.capabilities();
        let ctx = DnsCtx {
            suite: self,
            backend,
        };
        tracing::info!(backend = ?backend, ?caps, name = %self.name, "DNS conformance suite");

        // 1. Where the backend stands.
        let before = ctx.read("reading the test name before any change").await;
        let base = before.owner.as_ref().map_or(Epoch::ZERO, |o| o.epoch);
        let mut epoch = base;
        let mut next = || {
            epoch = epoch.next();
            epoch
        };

        // 2. Publish, read back, verify.
        let first = self.change(
            RecordSet::Addresses(self.first.clone()),
            next(),
            Some(&self.site_a),
        );
        ctx.apply_ok("publishing the first address set", &first)
            .await;
        ctx.expect_published("after publishing the first address set", &first)
            .await;
        ctx.expect_verified("after publishing the first address set", &first)
            .await;

        // 3. The same epoch again is accepted (a retried step), whatever the records' order.
        ctx.apply_ok("re-applying the same change at the same epoch", &first)
            .await;
        ctx.expect_published("after re-applying the same change", &first)
            .await;
        let mut reordered = first.clone();
        if let RecordSet::Addresses(a) = &mut reordered.records {
            a.reverse();
        }
        ctx.apply_ok(
            "re-applying the same records in another order at the same epoch",
            &reordered,
        )
        .await;
        ctx.expect_published(
            "after re-applying the same records in another order",
            &first,
        )
        .await;

        // 4. The same epoch with another decision is refused as stale and changes nothing.
        let conflicts = [
            (
                "other records and another site",
                RecordSet::Addresses(self.second.clone()),
                &self.site_b,
            ),
            (
                "other records and the same site",
                RecordSet::Addresses(self.second.clone()),
                &self.site_a,
            ),
            (
                "the same records and another site",
                RecordSet::Addresses(self.first.clone()),
                &self.site_b,
            ),
        ];
        for (what, records, site) in conflicts {
            let conflicting = self.change(records, first.epoch, Some(site));
            ctx.expect_stale(
                &format!("a change at the accepted epoch with {what}"),
                &conflicting,
                first.epoch,
            )
            .await;
            ctx.expect_published(
                &format!("after a refused change at the accepted epoch with {what}"),
                &first,
            )
            .await;
        }

        // 5. A stale epoch is refused and changes nothing.
        let stale = self.change(
            RecordSet::Addresses(self.second.clone()),
            base,
            Some(&self.site_b),
        );
        ctx.expect_stale("a change at a lower epoch", &stale, first.epoch)
            .await;
        ctx.expect_published("after a refused stale change", &first)
            .await;

        // 6. The holder of the epoch may withdraw the name, then publish site-less record sets
        // under it (a drill's rehearsal makes no site active) and replace them; a site's
        // records are then refused.
        let withdrawal = self.change(RecordSet::Empty, first.epoch, None);
        ctx.apply_ok("withdrawing the records at the accepted epoch", &withdrawal)
            .await;
        ctx.expect_published(
            "after withdrawing the records at the accepted epoch",
            &withdrawal,
        )
        .await;
        for records in [&self.second, &self.first] {
            let rehearsal = self.change(RecordSet::Addresses(records.clone()), first.epoch, None);
            ctx.apply_ok(
                "publishing a site-less record set at the accepted epoch",
                &rehearsal,
            )
            .await;
            ctx.expect_published(
                "after a site-less record set at the accepted epoch",
                &rehearsal,
            )
            .await;
        }
        // A drill cleans up: the site-less records are withdrawn again under the same epoch.
        ctx.apply_ok(
            "withdrawing site-less records at the accepted epoch",
            &withdrawal,
        )
        .await;
        ctx.expect_published("after withdrawing site-less records", &withdrawal)
            .await;
        let decision = self.change(
            RecordSet::Addresses(self.first.clone()),
            first.epoch,
            Some(&self.site_a),
        );
        ctx.expect_stale(
            "a site's records at the epoch that published site-less ones",
            &decision,
            first.epoch,
        )
        .await;

        // 7. A newer epoch wins.
        let second = self.change(
            RecordSet::Addresses(self.second.clone()),
            next(),
            Some(&self.site_b),
        );
        ctx.apply_ok("publishing other records at a newer epoch", &second)
            .await;
        ctx.expect_published("after a newer epoch", &second).await;
        ctx.expect_verified("after a newer epoch", &second).await;
        let mut current = second;

        // 8. IPv6.
        if caps.ipv6 {
            let mut both = self.first.clone();
            both.extend(self.ipv6.iter().copied());
            let dual = self.change(RecordSet::Addresses(both), next(), Some(&self.site_a));
            ctx.apply_ok("publishing A and AAAA records together", &dual)
                .await;
            ctx.expect_published("after publishing A and AAAA records", &dual)
                .await;
            ctx.expect_verified("after publishing A and AAAA records", &dual)
                .await;
            current = dual;
        } else {
            tracing::info!("backend has no AAAA support: IPv6 checks skipped");
        }

        // 9. Aliases.
        let alias = self.change(
            RecordSet::Alias(self.alias.clone()),
            next(),
            Some(&self.site_b),
        );
        if caps.alias {
            ctx.apply_ok("publishing a CNAME in place of addresses", &alias)
                .await;
            ctx.expect_published("after publishing a CNAME", &alias)
                .await;
            ctx.expect_verified("after publishing a CNAME", &alias)
                .await;
            let back = self.change(
                RecordSet::Addresses(self.first.clone()),
                next(),
                Some(&self.site_a),
            );
            ctx.apply_ok("publishing addresses in place of a CNAME", &back)
                .await;
            ctx.expect_published("after replacing a CNAME by addresses", &back)
                .await;
            ctx.expect_verified("after replacing a CNAME by addresses", &back)
                .await;
            current = back;
        } else {
            match backend.apply(&alias).await {
                Err(BackendError::Unsupported(_)) => {}
                other => ctx.fail(
                    "publishing a CNAME on a backend without alias support",
                    format!("expected Err(Unsupported), got {other:?}"),
                ),
            }
            ctx.expect_published("after a refused CNAME", &current)
                .await;
        }

        // 10. Withdrawal keeps the ownership record, and with it the fence.
        let withdrawn = self.change(RecordSet::Empty, next(), None);
        ctx.apply_ok("withdrawing the records", &withdrawn).await;
        ctx.expect_published("after withdrawing the records", &withdrawn)
            .await;
        ctx.expect_verified("after withdrawing the records", &withdrawn)
            .await;
        let stale = self.change(
            RecordSet::Addresses(self.first.clone()),
            current.epoch,
            Some(&self.site_a),
        );
        ctx.expect_stale(
            "a stale change after the records were withdrawn",
            &stale,
            withdrawn.epoch,
        )
        .await;
        ctx.expect_published("after a refused stale change", &withdrawn)
            .await;

        // 11. A name outside the zone.
        let mut outside = self.change(
            RecordSet::Addresses(self.first.clone()),
            next(),
            Some(&self.site_a),
        );
        outside.name = self.outside.clone();
        match backend.apply(&outside).await {
            Ok(()) => ctx.fail(
                "changing a name outside the zone",
                format!(
                    "{} is not in zone {}, but the change was accepted",
                    self.outside, self.zone
                ),
            ),
            Err(e) if e.is_transient() => ctx.fail(
                "changing a name outside the zone",
                format!(
                    "expected a permanent error, got a transient one (a retry cannot help): {e:?}"
                ),
            ),
            Err(_) => {}
        }
        if let Ok(p) = backend.read(&self.zone, &self.outside).await
            && p.owner.as_ref() == Some(&outside.ownership())
        {
            ctx.fail(
                "changing a name outside the zone",
                format!("the refused change was written anyway: {p:?}"),
            );
        }
        ctx.expect_published("after a refused out-of-zone change", &withdrawn)
            .await;
        tracing::info!(backend = ?backend, from = %base, to = %withdrawn.epoch, "DNS conformance suite passed");
    }

    fn change(&self, records: RecordSet, epoch: Epoch, site: Option<&SiteId>) -> DnsChange {
        DnsChange {
            zone: self.zone.clone(),
            name: self.name.clone(),
            records,
            ttl: self.ttl,
            epoch,
            site: site.cloned(),
        }
    }
}

/// One run of the DNS suite: the suite and the backend under test.
struct DnsCtx<'a> {
    suite: &'a DnsSuite,
    backend: &'a dyn DnsBackend,
}

impl DnsCtx<'_> {
    fn fail(&self, step: &str, problem: impl std::fmt::Display) -> ! {
        panic!(
            "DNS conformance ({:?}, name {}): {step}: {problem}",
            self.backend, self.suite.name
        )
    }

    async fn read(&self, step: &str) -> Published {
        match self.backend.read(&self.suite.zone, &self.suite.name).await {
            Ok(p) => p,
            Err(e) => self.fail(step, format!("read failed: {e} ({e:?})")),
        }
    }

    async fn apply_ok(&self, step: &str, change: &DnsChange) {
        if let Err(e) = self.backend.apply(change).await {
            self.fail(
                step,
                format!(
                    "apply of {} at epoch {} failed: {e} ({e:?})",
                    change.records, change.epoch
                ),
            );
        }
    }

    async fn expect_published(&self, step: &str, change: &DnsChange) {
        let p = self.read(step).await;
        if !p.records.same_as(&change.records) {
            self.fail(
                step,
                format!(
                    "read back records [{}], expected [{}]",
                    p.records, change.records
                ),
            );
        }
        let want = change.ownership();
        if p.owner.as_ref() != Some(&want) {
            self.fail(
                step,
                format!(
                    "read back ownership {}, expected {:?} ({})",
                    p.owner
                        .as_ref()
                        .map_or_else(|| "(none)".to_owned(), Ownership::to_txt),
                    want,
                    want.to_txt()
                ),
            );
        }
        if change.records.normalized() != RecordSet::Empty && p.ttl != change.ttl {
            self.fail(
                step,
                format!(
                    "read back TTL {}, expected {}",
                    humantime::format_duration(p.ttl),
                    humantime::format_duration(change.ttl)
                ),
            );
        }
    }

    async fn expect_verified(&self, step: &str, change: &DnsChange) {
        match self.backend.verify(change, self.suite.verify_timeout).await {
            Ok(p) if p.complete() => {}
            Ok(p) => self.fail(
                step,
                format!(
                    "verify did not report [{}] complete: {:?}",
                    change.records, p.servers
                ),
            ),
            Err(e) => self.fail(step, format!("verify failed: {e} ({e:?})")),
        }
    }

    async fn expect_stale(&self, step: &str, change: &DnsChange, accepted: Epoch) {
        match self.backend.apply(change).await {
            Err(BackendError::StaleEpoch { attempted, current })
                if attempted == change.epoch && current == accepted => {}
            Err(BackendError::StaleEpoch { attempted, current }) => self.fail(
                step,
                format!(
                    "StaleEpoch names the wrong epochs: attempted {attempted}, current \
                     {current}; expected attempted {}, current {accepted} (the change must be \
                     refused with Err(StaleEpoch) naming the epoch it carried and the accepted \
                     one)",
                    change.epoch
                ),
            ),
            other if change.epoch == accepted => self.fail(
                step,
                format!(
                    "epoch {accepted} was already accepted with other records or another site, \
                     so [{}] for site {} at that epoch is a conflicting decision and must be \
                     refused with Err(StaleEpoch), got {other:?}",
                    change.records,
                    change.site.as_ref().map_or("-", SiteId::as_str),
                ),
            ),
            other => self.fail(
                step,
                format!(
                    "epoch {} is lower than the accepted epoch {accepted} and must be refused \
                     with Err(StaleEpoch), got {other:?}",
                    change.epoch
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use async_trait::async_trait;

    use super::*;
    use crate::dns::{DnsCapabilities, Propagation};
    use crate::test_util::MemoryDns;

    /// How [`SameEpochBug`] answers a conflicting change at the accepted epoch.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        /// `Ok(())`, as if it were a retry (the records stay as they were).
        Ok,
        /// An error of the wrong kind (a retry cannot fix it, but the runbook does not see a
        /// stale decision).
        Conflict,
    }

    /// A [`MemoryDns`] that misreports a conflicting change at the accepted epoch.
    #[derive(Debug)]
    struct SameEpochBug(MemoryDns, Answer);

    #[async_trait]
    impl DnsBackend for SameEpochBug {
        fn capabilities(&self) -> DnsCapabilities {
            self.0.capabilities()
        }
        async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
            self.0.read(zone, name).await
        }
        async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
            match (self.0.apply(change).await, self.1) {
                (Err(BackendError::StaleEpoch { attempted, current }), Answer::Ok)
                    if attempted == current =>
                {
                    Ok(())
                }
                (Err(BackendError::StaleEpoch { attempted, current }), Answer::Conflict)
                    if attempted == current =>
                {
                    Err(BackendError::Conflict("already published".into()))
                }
                (other, _) => other,
            }
        }
        async fn verify(
            &self,
            change: &DnsChange,
            timeout: Duration,
        ) -> Result<Propagation, BackendError> {
            self.0.verify(change, timeout).await
        }
    }

    fn failure(answer: Answer) -> String {
        let zone: DnsName = "example.com".parse().unwrap();
        let suite = DnsSuite::new(zone.clone()).unwrap();
        let backend = SameEpochBug(MemoryDns::new(&[zone]), answer);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let payload = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(suite.run(&backend));
        }))
        .expect_err("the suite passed on a backend that accepts conflicting decisions");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_conflicting_change_at_the_accepted_epoch_must_be_refused_as_stale() {
        for answer in [Answer::Ok, Answer::Conflict] {
            let msg = failure(answer);
            for needle in [
                "a change at the accepted epoch with other records and another site",
                "is a conflicting decision and must be refused with Err(StaleEpoch)",
            ] {
                assert!(
                    msg.contains(needle),
                    "{answer:?}: {needle:?} missing: {msg}"
                );
            }
        }
    }

    #[test]
    fn memory_dns_refuses_a_conflicting_change_and_keeps_its_records() {
        let zone: DnsName = "example.com".parse().unwrap();
        let suite = DnsSuite::new(zone.clone()).unwrap();
        let dns = MemoryDns::new(&[zone]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(suite.run(&dns));
        let conflicts = dns.same_epoch_conflicts();
        // Three conflicting decisions, and a site's records where the epoch published
        // site-less ones.
        assert_eq!(conflicts.len(), 4, "{conflicts:?}");
        assert!(
            conflicts
                .iter()
                .all(|(n, e)| *n == suite.name && e.get() == 1)
        );
        assert!(
            dns.stale_attempts()
                .iter()
                .all(|(_, tried, cur)| tried < cur),
            "same-epoch conflicts are kept apart from lower epochs"
        );
    }
}
