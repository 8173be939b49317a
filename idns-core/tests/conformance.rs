//! The conformance suites against the in-memory backends, and proof that the suites fail on
//! backends that break the rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use idns_core::test_util::conformance::{DnsSuite, ReplicationSuite};
use idns_core::test_util::{DnsCall, MemoryDns, MemoryReplication, ReplCall, ReplFaults};
use idns_core::{
    BackendError, DnsBackend, DnsCapabilities, DnsChange, DnsName, Epoch, IntegrityReport,
    IntegrityRequest, OpContext, Promoted, Propagation, Published, RecordSet, ReplicationBackend,
    ReplicationStatus, ResourceId, SiteId,
};

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn dns_suite() -> DnsSuite {
    DnsSuite::new(zone()).unwrap()
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `f`, which must panic, and returns its message.
fn panic_message<F: Future>(f: F) -> String {
    let payload = match std::panic::catch_unwind(AssertUnwindSafe(|| block_on(f))) {
        Ok(_) => panic!("the suite passed on a backend that breaks the rules"),
        Err(p) => p,
    };
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            message.contains(n),
            "{n:?} missing from the panic message: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// DNS: conforming backends
// ---------------------------------------------------------------------------------------------

#[test]
fn dns_suite_passes_on_memory_dns_and_runs_again_on_its_history() {
    let suite = dns_suite();
    let dns = MemoryDns::new(&[zone()]);
    block_on(suite.run(&dns));
    let after_first = dns.epoch(&suite.name);
    assert!(after_first > Epoch::new(4), "{after_first:?}");
    assert_eq!(dns.records(&suite.name), RecordSet::Empty);

    block_on(suite.run(&dns));
    let after_second = dns.epoch(&suite.name);
    assert_eq!(
        after_second.get(),
        2 * after_first.get(),
        "the second run starts above the first"
    );

    // The suite did what it claims: stale changes were refused, a CNAME and AAAA records
    // were published, and the out-of-zone change was refused.
    let stale = dns.stale_attempts();
    assert_eq!(stale.len(), 4, "{stale:?}");
    assert!(
        stale
            .iter()
            .all(|(n, tried, cur)| *n == suite.name && tried < cur)
    );
    let applied = |pred: &dyn Fn(&DnsChange, bool) -> bool| {
        dns.calls().iter().any(|c| match c {
            DnsCall::Apply(change, ok) => pred(change, *ok),
            _ => false,
        })
    };
    assert!(applied(
        &|c, ok| ok && matches!(c.records, RecordSet::Alias(_))
    ));
    assert!(applied(&|c, ok| ok
        && matches!(&c.records, RecordSet::Addresses(a) if a.iter().any(|ip| ip.is_ipv6()))));
    assert!(applied(&|c, ok| !ok && c.name == suite.outside));
    assert!(dns.calls().iter().any(|c| matches!(c, DnsCall::Verify(_))));
}

#[test]
fn dns_suite_passes_without_alias_support() {
    let suite = dns_suite();
    let dns = MemoryDns::without_alias(&[zone()]);
    block_on(suite.run(&dns));
    let refused_alias = dns.calls().iter().any(|c| {
        matches!(c, DnsCall::Apply(change, false) if matches!(change.records, RecordSet::Alias(_)))
    });
    assert!(refused_alias, "the suite tried a CNAME and saw it refused");
}

#[test]
fn dns_suite_starts_above_an_existing_owner() {
    let suite = dns_suite();
    let dns = MemoryDns::new(&[zone()]);
    let history = DnsChange {
        zone: zone(),
        name: suite.name.clone(),
        records: RecordSet::Addresses(vec!["203.0.113.9".parse().unwrap()]),
        ttl: Duration::from_secs(300),
        epoch: Epoch::new(41),
        site: Some("old".parse().unwrap()),
    };
    dns.apply_now(&history).unwrap();
    block_on(suite.run(&dns));
    let first_apply = dns.calls().into_iter().find_map(|c| match c {
        DnsCall::Apply(change, true) if change.epoch != Epoch::new(41) => Some(change.epoch),
        _ => None,
    });
    assert_eq!(first_apply, Some(Epoch::new(42)));
}

#[test]
fn dns_suite_with_custom_names_and_addresses() {
    let mut suite = dns_suite();
    suite.name = "svc.sub.example.com".parse().unwrap();
    suite.alias = "elsewhere.example.net".parse().unwrap();
    suite.first = vec!["10.0.0.1".parse().unwrap()];
    suite.second = vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
    let dns = MemoryDns::new(&[zone()]);
    block_on(suite.run(&dns));
    assert_eq!(dns.records(&suite.name), RecordSet::Empty);
    assert!(dns.epoch(&suite.name) > Epoch::ZERO);
}

#[test]
fn dns_suite_default_outside_name_is_outside_any_zone() {
    let s = DnsSuite::new("invalid".parse().unwrap()).unwrap();
    assert!(!s.outside.is_within(&s.zone), "{:?}", s.outside);
    let s = dns_suite();
    assert!(!s.outside.is_within(&s.zone));
    assert!(s.name.is_within(&s.zone));
    assert!(s.first.iter().chain(&s.second).all(|ip| ip.is_ipv4()));
    assert!(DnsSuite::new(format!("{}com", "a.".repeat(120)).parse().unwrap()).is_err());
}

// ---------------------------------------------------------------------------------------------
// DNS: broken backends make the suite fail
// ---------------------------------------------------------------------------------------------

/// How a [`BrokenDns`] breaks the contract.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DnsBug {
    /// Accepts stale epochs (writes them as the current epoch).
    IgnoresEpochs,
    /// Reports the wrong epochs in `StaleEpoch`.
    WrongStaleEpochs,
    /// Drops the ownership record when the records are withdrawn.
    ForgetsOwnerOnWithdraw,
    /// Reports a refused out-of-zone change as a transient failure.
    TransientOutOfZone,
    /// Claims CNAME support that it does not have.
    ClaimsAlias,
    /// Verify never sees the change.
    NeverPropagates,
    /// Drops AAAA records.
    DropsIpv6,
    /// Ignores the TTL.
    FixedTtl,
}

#[derive(Debug)]
struct BrokenDns {
    inner: MemoryDns,
    bug: DnsBug,
}

impl BrokenDns {
    fn new(bug: DnsBug) -> Self {
        let inner = if bug == DnsBug::ClaimsAlias {
            MemoryDns::without_alias(&[zone()])
        } else {
            MemoryDns::new(&[zone()])
        };
        Self { inner, bug }
    }
}

#[async_trait]
impl DnsBackend for BrokenDns {
    fn capabilities(&self) -> DnsCapabilities {
        let c = self.inner.capabilities();
        if self.bug == DnsBug::ClaimsAlias {
            DnsCapabilities::new(true, c.ipv6, c.atomic_epoch)
        } else {
            c
        }
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        let mut p = self.inner.read(zone, name).await?;
        if self.bug == DnsBug::ForgetsOwnerOnWithdraw && p.records == RecordSet::Empty {
            p.owner = None;
        }
        if self.bug == DnsBug::FixedTtl && p.records != RecordSet::Empty {
            p.ttl = Duration::from_secs(3600);
        }
        Ok(p)
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        let mut change = change.clone();
        match self.bug {
            DnsBug::IgnoresEpochs => {
                change.epoch = change.epoch.max(self.inner.epoch(&change.name))
            }
            DnsBug::DropsIpv6 => {
                if let RecordSet::Addresses(a) = &mut change.records {
                    a.retain(|ip| ip.is_ipv4());
                }
            }
            _ => {}
        }
        match self.inner.apply(&change).await {
            Err(BackendError::StaleEpoch { current, .. })
                if self.bug == DnsBug::WrongStaleEpochs =>
            {
                Err(BackendError::StaleEpoch {
                    attempted: current,
                    current,
                })
            }
            Err(BackendError::Refused(m)) if self.bug == DnsBug::TransientOutOfZone => {
                Err(BackendError::Unavailable(m))
            }
            other => other,
        }
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        let mut p = self.inner.verify(change, timeout).await?;
        if self.bug == DnsBug::NeverPropagates {
            for s in &mut p.servers {
                s.current = false;
            }
        }
        Ok(p)
    }
}

fn dns_failure(bug: DnsBug) -> String {
    let suite = dns_suite();
    let backend = BrokenDns::new(bug);
    panic_message(async move { suite.run(&backend).await })
}

#[test]
fn dns_suite_fails_on_a_backend_that_ignores_epochs() {
    let msg = dns_failure(DnsBug::IgnoresEpochs);
    assert_mentions(
        &msg,
        &[
            "DNS conformance",
            "a change at a lower epoch",
            "must be refused with Err(StaleEpoch)",
        ],
    );
}

#[test]
fn dns_suite_fails_on_wrong_stale_epochs() {
    let msg = dns_failure(DnsBug::WrongStaleEpochs);
    assert_mentions(&msg, &["StaleEpoch names the wrong epochs"]);
}

#[test]
fn dns_suite_fails_when_withdrawal_drops_the_fence() {
    let msg = dns_failure(DnsBug::ForgetsOwnerOnWithdraw);
    assert_mentions(&msg, &["after withdrawing the records", "ownership (none)"]);
}

#[test]
fn dns_suite_fails_on_a_transient_out_of_zone_error() {
    let msg = dns_failure(DnsBug::TransientOutOfZone);
    assert_mentions(&msg, &["outside the zone", "transient"]);
}

#[test]
fn dns_suite_fails_on_claimed_but_missing_alias_support() {
    let msg = dns_failure(DnsBug::ClaimsAlias);
    assert_mentions(
        &msg,
        &["publishing a CNAME in place of addresses", "not supported"],
    );
}

#[test]
fn dns_suite_fails_when_verify_never_sees_the_change() {
    let msg = dns_failure(DnsBug::NeverPropagates);
    assert_mentions(&msg, &["verify did not report", "complete"]);
}

#[test]
fn dns_suite_fails_when_aaaa_records_are_lost() {
    let msg = dns_failure(DnsBug::DropsIpv6);
    assert_mentions(
        &msg,
        &["after publishing A and AAAA records", "2001:db8::10"],
    );
}

#[test]
fn dns_suite_fails_when_the_ttl_is_ignored() {
    let msg = dns_failure(DnsBug::FixedTtl);
    assert_mentions(&msg, &["read back TTL 1h, expected 30s"]);
}

// ---------------------------------------------------------------------------------------------
// Replication: conforming backends
// ---------------------------------------------------------------------------------------------

fn res() -> ResourceId {
    "db".parse().unwrap()
}
fn site(s: &str) -> SiteId {
    s.parse().unwrap()
}

fn memory_replication() -> MemoryReplication {
    MemoryReplication::new(&[res()], &[site("a"), site("b")], &site("a"))
}

fn epochs_used(repl: &MemoryReplication) -> Vec<(Epoch, bool)> {
    repl.calls()
        .into_iter()
        .filter_map(|c| match c {
            ReplCall::Fence(_, _, ctx)
            | ReplCall::Promote(_, _, ctx)
            | ReplCall::Reprotect(_, _, _, ctx) => Some((ctx.epoch, ctx.drill)),
            _ => None,
        })
        .collect()
}

#[test]
fn replication_suite_passes_on_memory_replication_and_runs_again() {
    let repl = memory_replication();
    let suite = ReplicationSuite::new(res(), site("a"), site("b"), None);
    block_on(suite.run(&repl));
    assert_eq!(
        repl.primaries(&res()),
        vec![site("a")],
        "roles are restored"
    );
    let first: Vec<Epoch> = epochs_used(&repl).iter().map(|(e, _)| *e).collect();
    assert_eq!(first.iter().max(), Some(&Epoch::new(2)));

    // A second run derives its epoch from the backend's history.
    block_on(suite.run(&repl));
    let all: Vec<(Epoch, bool)> = epochs_used(&repl);
    assert_eq!(all.iter().map(|(e, _)| *e).max(), Some(Epoch::new(4)));
    assert_eq!(repl.primaries(&res()), vec![site("a")]);

    // The suite did what it claims: stale calls refused, a drill run on an isolated copy and
    // cleaned up, markers verified.
    let stale = repl.stale_attempts();
    // Each run: the stale fence; the second run also its epoch probe at 0.
    assert_eq!(stale.len(), 3, "{stale:?}");
    assert!(all.iter().any(|(_, drill)| *drill));
    assert!(!repl.has_drill_copy(&res(), &site("a")));
    assert!(repl.calls().iter().any(|c| matches!(
        c,
        ReplCall::Integrity(_, s, IntegrityRequest::Verify { .. }) if *s == site("a")
    )));
    assert!(
        repl.read(&res(), &site("b"), "marker/conformance-1/0")
            .is_some()
    );
}

#[test]
fn replication_suite_checks_the_refusal_beside_a_writable_primary_when_asked() {
    let repl = memory_replication();
    let suite = ReplicationSuite::new(res(), site("a"), site("b"), None)
        .expecting_refusal_beside_writable_primary();
    block_on(suite.run(&repl));
    assert_eq!(repl.primaries(&res()), vec![site("a")]);
    // The run tried the unforced promotion beside the writable primary, both ways, and
    // fenced before each promotion that went through (the stale fence at epoch 0 and the
    // drill calls left out).
    let calls: Vec<(bool, SiteId)> = repl
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            ReplCall::Fence(_, s, ctx) if !ctx.drill && ctx.epoch > Epoch::ZERO => Some((false, s)),
            ReplCall::Promote(_, s, ctx) if !ctx.drill && ctx.epoch > Epoch::ZERO => {
                Some((true, s))
            }
            _ => None,
        })
        .collect();
    let run = [
        (true, site("b")),
        (false, site("a")),
        (true, site("b")),
        (true, site("a")),
        (false, site("b")),
        (true, site("a")),
    ];
    assert_eq!(calls, run);
    block_on(suite.run(&repl));
    assert_eq!(repl.primaries(&res()), vec![site("a")]);
}

#[test]
fn memory_replication_refuses_a_promotion_beside_a_writable_primary_unless_forced() {
    let repl = memory_replication();
    let op = |force| OpContext {
        epoch: Epoch::new(1),
        drill: false,
        timeout: Duration::from_secs(1),
        force,
    };
    let err = block_on(repl.promote(&res(), &site("b"), &op(false))).unwrap_err();
    assert!(
        matches!(&err, BackendError::Refused(m) if m.contains("db at a is reachable and primary")),
        "{err}"
    );
    assert_eq!(repl.primaries(&res()), vec![site("a")]);
    // An unreachable primary does not stop a failover.
    repl.set_faults(ReplFaults {
        unreachable: vec![site("a")],
        fail_next: 0,
    });
    block_on(repl.promote(&res(), &site("b"), &op(false))).unwrap();
    repl.set_faults(ReplFaults::default());
    assert_eq!(repl.primaries(&res()), vec![site("a"), site("b")]);
    // Forced, it goes through beside a writable primary.
    let repl = memory_replication();
    block_on(repl.promote(&res(), &site("b"), &op(true))).unwrap();
    assert_eq!(repl.primaries(&res()), vec![site("a"), site("b")]);
}

#[test]
fn replication_suite_accepts_an_explicit_starting_epoch() {
    let repl = memory_replication();
    let suite = ReplicationSuite::new(res(), site("a"), site("b"), Some(Epoch::new(10)));
    block_on(suite.run(&repl));
    let used: Vec<Epoch> = epochs_used(&repl).iter().map(|(e, _)| *e).collect();
    assert_eq!(used.first(), Some(&Epoch::new(10)));
    assert!(
        used.iter()
            .all(|e| [Epoch::new(9), Epoch::new(10), Epoch::new(11)].contains(e))
    );
}

#[test]
fn replication_suite_works_between_any_two_sites_of_several() {
    let repl = MemoryReplication::new(
        &[res(), "other".parse().unwrap()],
        &[site("x"), site("y"), site("z")],
        &site("y"),
    );
    let suite = ReplicationSuite::new(res(), site("y"), site("z"), None);
    block_on(suite.run(&repl));
    assert_eq!(repl.primaries(&res()), vec![site("y")]);
}

#[test]
fn replication_suite_refuses_a_backend_in_the_wrong_roles() {
    let repl = memory_replication();
    let suite = ReplicationSuite::new(res(), site("b"), site("a"), None);
    let msg = panic_message(async move { suite.run(&repl).await });
    assert_mentions(
        &msg,
        &["status at the start", "b is replica, expected primary"],
    );
}

// ---------------------------------------------------------------------------------------------
// Replication: broken backends make the suite fail
// ---------------------------------------------------------------------------------------------

/// How a [`BrokenReplication`] breaks the contract.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ReplBug {
    /// Accepts every epoch.
    IgnoresEpochs,
    /// Verification never reports mismatches.
    BlindVerify,
    /// A drill promotion promotes production.
    DrillTouchesProduction,
    /// Reprotect says Ok and does nothing.
    LazyReprotect,
    /// Mark writes nothing.
    NoMarkers,
    /// Fence leaves the primary writable.
    NoopFence,
    /// Promoting a copy that is already primary fails.
    PromoteNotIdempotent,
    /// Promotes beside a writable primary without being forced.
    PromotesBesideAWritablePrimary,
}

#[derive(Debug)]
struct BrokenReplication {
    inner: MemoryReplication,
    bug: ReplBug,
}

#[async_trait]
impl ReplicationBackend for BrokenReplication {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        self.inner.status(resource).await
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let mut ctx = self.ctx(ctx);
        if self.bug == ReplBug::NoopFence {
            // Checks the epoch, then leaves production alone.
            ctx.drill = true;
        }
        self.inner.fence(resource, site, &ctx).await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        if self.bug == ReplBug::PromoteNotIdempotent
            && self.inner.primaries(resource).contains(site)
        {
            return Err(BackendError::Refused("already primary".into()));
        }
        self.inner.promote(resource, site, &self.ctx(ctx)).await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        if self.bug == ReplBug::LazyReprotect {
            return Ok(());
        }
        self.inner
            .reprotect(resource, primary, wait, &self.ctx(ctx))
            .await
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        if self.bug == ReplBug::NoMarkers && matches!(request, IntegrityRequest::Mark { .. }) {
            return Ok(IntegrityReport::default());
        }
        let mut r = self
            .inner
            .integrity(resource, site, request, &self.ctx(ctx))
            .await?;
        if self.bug == ReplBug::BlindVerify {
            r.mismatches.clear();
        }
        Ok(r)
    }
}

impl BrokenReplication {
    fn ctx(&self, ctx: &OpContext) -> OpContext {
        let mut ctx = ctx.clone();
        match self.bug {
            ReplBug::IgnoresEpochs => ctx.epoch = Epoch::new(u64::MAX),
            ReplBug::DrillTouchesProduction => {
                // Past the guards a drill does not need (it makes no second writable copy).
                ctx.force = ctx.drill;
                ctx.drill = false;
            }
            ReplBug::PromotesBesideAWritablePrimary => ctx.force = true,
            _ => {}
        }
        ctx
    }
}

fn replication_failure(bug: ReplBug) -> String {
    let backend = BrokenReplication {
        inner: memory_replication(),
        bug,
    };
    let suite = ReplicationSuite::new(res(), site("a"), site("b"), None)
        .expecting_refusal_beside_writable_primary();
    panic_message(async move { suite.run(&backend).await })
}

#[test]
fn replication_suite_fails_on_a_backend_that_ignores_epochs() {
    let msg = replication_failure(ReplBug::IgnoresEpochs);
    assert_mentions(
        &msg,
        &[
            "replication conformance",
            "fencing the new primary at a lower epoch",
            "must be refused with Err(StaleEpoch)",
        ],
    );
}

#[test]
fn replication_suite_fails_when_tampering_goes_unnoticed() {
    let msg = replication_failure(ReplBug::BlindVerify);
    assert_mentions(
        &msg,
        &["verifying a tampered manifest", "marker/conformance-1/0"],
    );
}

#[test]
fn replication_suite_fails_when_a_drill_touches_production() {
    let msg = replication_failure(ReplBug::DrillTouchesProduction);
    assert_mentions(
        &msg,
        &[
            "status after a drill promotion",
            "a is primary, expected replica",
        ],
    );
}

#[test]
fn replication_suite_fails_when_reprotect_does_nothing() {
    let msg = replication_failure(ReplBug::LazyReprotect);
    assert_mentions(
        &msg,
        &["status after reprotect", "a is fenced, expected replica"],
    );
}

#[test]
fn replication_suite_fails_when_no_markers_are_written() {
    let msg = replication_failure(ReplBug::NoMarkers);
    assert_mentions(
        &msg,
        &["writing markers at the new primary", "empty manifest"],
    );
}

#[test]
fn replication_suite_fails_when_fencing_leaves_the_primary_writable() {
    let msg = replication_failure(ReplBug::NoopFence);
    assert_mentions(
        &msg,
        &["status after fencing the old primary", "a is still primary"],
    );
}

#[test]
fn replication_suite_fails_when_a_promotion_beside_a_writable_primary_goes_through() {
    let msg = replication_failure(ReplBug::PromotesBesideAWritablePrimary);
    assert_mentions(
        &msg,
        &[
            "promoting the replica while the old primary is writable",
            "without force was accepted",
            "a is reachable and writable",
        ],
    );
}

#[test]
fn replication_suite_fails_when_promoting_a_primary_is_not_idempotent() {
    let msg = replication_failure(ReplBug::PromoteNotIdempotent);
    assert_mentions(&msg, &["finding the starting epoch", "already primary"]);
}
