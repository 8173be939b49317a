//! The conformance suite of a [`ReplicationBackend`].

use std::fmt::Debug;
use std::time::Duration;

use crate::epoch::Epoch;
use crate::error::BackendError;
use crate::id::{ResourceId, SiteId};
use crate::replication::{
    IntegrityReport, IntegrityRequest, Manifest, OpContext, ReplicationBackend, ReplicationStatus,
    Role,
};

/// The conformance suite of a [`ReplicationBackend`].
///
/// It needs one resource replicated between two sites, `primary` holding the primary copy and
/// `replica` following it. It fails over to the replica and back in the failover runbook's
/// safe order (fence the old primary, then promote), with no step forced, checking in this
/// order:
///
/// 1. `status` lists both sites, `primary` as [`Role::Primary`] and `replica` as
///    [`Role::Replica`].
/// 2. The starting epoch `e`: the one given to [`new`](Self::new), or else one above the
///    highest the backend has accepted, found by promoting the current primary at epoch 0
///    (a promotion of a primary is a no-op; a backend with history refuses it as stale and
///    names its current epoch).
/// 3. Only with [`expect_refusal_beside_writable_primary`]: `promote(replica, e)` while
///    `primary` is reachable and writable fails with [`BackendError::Refused`] naming
///    `primary`, and the roles are unchanged.
/// 4. `fence(primary, e)` stops the old primary taking writes (its role is no longer primary).
/// 5. `promote(replica, e)` makes it primary.
/// 6. A call with epoch `e-1` (fencing the new primary) fails with
///    [`BackendError::StaleEpoch`] naming both epochs, and the new primary stays primary.
/// 7. `integrity(Mark)` at the new primary returns a non-empty manifest.
/// 8. `reprotect(new primary, wait = true)` makes the old primary a replica.
/// 9. `integrity(Verify)` of the markers at the old primary finds no mismatch; with one
///    checksum changed, it reports a mismatch naming that entry.
/// 10. A drill (`ctx.drill`) `promote` then `fence` at the replica each succeed or return
///     [`BackendError::Unsupported`], and leave the production roles unchanged.
/// 11. Failback at `e+1`: (only with [`expect_refusal_beside_writable_primary`]: promoting
///     `primary` beside the writable `replica` is refused, as in step 3), fence `replica`,
///     promote `primary`, reprotect; the markers are verified at `primary`, and the roles are
///     back as they were, so the suite can run again.
///
/// [`expect_refusal_beside_writable_primary`]: Self::expect_refusal_beside_writable_primary
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationSuite {
    /// The resource the suite fails over and back.
    pub resource: ResourceId,
    /// The site holding the primary copy at the start (and at the end).
    pub primary: SiteId,
    /// The site holding a replica at the start (and at the end).
    pub replica: SiteId,
    /// The first epoch to use; `None` derives it from the backend (step 2).
    pub start_epoch: Option<Epoch>,
    /// The timeout carried in every [`OpContext`].
    pub timeout: Duration,
    /// Whether the suite checks that an unforced promotion beside a reachable, writable
    /// primary is refused (steps 3 and 11). Off by default, for backends that cannot see the
    /// other sites; every backend that can (the PostgreSQL, image, command and in-memory ones
    /// do) should turn it on with
    /// [`expecting_refusal_beside_writable_primary`](Self::expecting_refusal_beside_writable_primary).
    pub expect_refusal_beside_writable_primary: bool,
}

impl ReplicationSuite {
    /// A suite for `resource`, replicated from `primary` to `replica`. With `start_epoch`, the
    /// suite uses that epoch and the one after it (at least 1; it must be above every epoch
    /// the backend has accepted); without, it derives one from the backend.
    pub fn new(
        resource: ResourceId,
        primary: SiteId,
        replica: SiteId,
        start_epoch: Option<Epoch>,
    ) -> Self {
        Self {
            resource,
            primary,
            replica,
            start_epoch,
            timeout: Duration::from_secs(60),
            expect_refusal_beside_writable_primary: false,
        }
    }

    /// The suite, also checking that an unforced promotion beside a reachable, writable
    /// primary is refused (see [`expect_refusal_beside_writable_primary`]).
    ///
    /// [`expect_refusal_beside_writable_primary`]: Self::expect_refusal_beside_writable_primary
    pub fn expecting_refusal_beside_writable_primary(mut self) -> Self {
        self.expect_refusal_beside_writable_primary = true;
        self
    }

    /// Runs the suite against `backend`; panics with the broken rule on the first violation.
    pub async fn run(&self, backend: &dyn ReplicationBackend) {
        let ctx = ReplCtx {
            suite: self,
            backend,
        };
        tracing::info!(backend = ?backend, resource = %self.resource, "replication conformance suite");
        let (primary, replica) = (&self.primary, &self.replica);

        // 1. Roles at the start.
        ctx.expect_roles(
            "status at the start",
            &[(primary, Role::Primary), (replica, Role::Replica)],
        )
        .await;

        // 2. The starting epoch.
        let e = match self.start_epoch {
            Some(e) => e.max(Epoch::new(1)),
            None => ctx.derive_epoch().await,
        };
        let op = ctx.op(e, false);

        // 3.–5. No second writable primary unless forced; fence the old primary, then
        // promote the replica.
        let failover = Move {
            prefix: "",
            old: (primary, "the old primary"),
            new: (replica, "the replica"),
        };
        ctx.fence_then_promote(&failover, &op).await;
        ctx.expect_roles(
            "status after promoting the replica",
            &[(replica, Role::Primary)],
        )
        .await;

        // 6. A stale epoch is refused: an old controller cannot fence the new primary.
        let stale = Epoch::new(e.get() - 1);
        match backend
            .fence(&self.resource, replica, &ctx.op(stale, false))
            .await
        {
            Err(BackendError::StaleEpoch { attempted, current })
                if attempted == stale && current == e => {}
            Err(BackendError::StaleEpoch { attempted, current }) => ctx.fail(
                "fencing the new primary at a lower epoch",
                format!(
                    "StaleEpoch names the wrong epochs: attempted {attempted}, current \
                     {current}; expected attempted {stale}, current {e}"
                ),
            ),
            other => ctx.fail(
                "fencing the new primary at a lower epoch",
                format!(
                    "epoch {stale} is lower than the accepted epoch {e} and must be refused \
                     with Err(StaleEpoch), got {other:?}"
                ),
            ),
        }
        ctx.expect_roles(
            "status after a refused stale fence",
            &[(replica, Role::Primary)],
        )
        .await;

        // 7. Markers at the new primary.
        let label = format!("conformance-{e}");
        let marked = ctx
            .integrity(
                "writing markers at the new primary",
                replica,
                &IntegrityRequest::Mark {
                    label: label.clone(),
                },
                &op,
            )
            .await;
        let markers = marked.manifest;
        if markers.entries.is_empty() {
            ctx.fail(
                "writing markers at the new primary",
                "Mark returned an empty manifest",
            );
        }

        // 8. Reverse replication.
        ctx.reprotect("reprotecting towards the old primary", replica, &op)
            .await;
        ctx.expect_roles(
            "status after reprotect",
            &[(replica, Role::Primary), (primary, Role::Replica)],
        )
        .await;

        // 9. The markers arrived, and a tampered manifest is caught.
        ctx.expect_markers(
            "verifying the markers at the old primary",
            primary,
            &markers,
            &op,
        )
        .await;
        let mut tampered = markers.clone();
        let Some((key, entry)) = tampered.entries.iter_mut().next() else {
            ctx.fail("tampering with the manifest", "the manifest is empty");
        };
        entry.checksum = format!("{}-tampered", entry.checksum);
        let key = key.clone();
        let report = ctx
            .integrity(
                "verifying a tampered manifest",
                primary,
                &IntegrityRequest::Verify { expected: tampered },
                &op,
            )
            .await;
        if !report.mismatches.iter().any(|m| m.key == key) {
            ctx.fail(
                "verifying a tampered manifest",
                format!(
                    "the checksum of {key:?} was changed, but no mismatch names it: {:?}",
                    report.mismatches
                ),
            );
        }

        // 10. A drill leaves production alone.
        let production = [(replica, Role::Primary), (primary, Role::Replica)];
        let drill = ctx.op(e, true);
        match backend.promote(&self.resource, primary, &drill).await {
            Ok(_) | Err(BackendError::Unsupported(_)) => {}
            Err(err) => ctx.fail(
                "a drill promotion",
                format!("expected Ok or Err(Unsupported), got {err} ({err:?})"),
            ),
        }
        ctx.expect_roles("status after a drill promotion", &production)
            .await;
        match backend.fence(&self.resource, primary, &drill).await {
            Ok(()) | Err(BackendError::Unsupported(_)) => {}
            Err(err) => ctx.fail(
                "a drill cleanup (fence with drill set)",
                format!("expected Ok or Err(Unsupported), got {err} ({err:?})"),
            ),
        }
        ctx.expect_roles("status after a drill cleanup", &production)
            .await;

        // 11. Fail back, so the backend ends as it started.
        let back = e.next();
        let op = ctx.op(back, false);
        let failback = Move {
            prefix: "failing back: ",
            old: (replica, "the other site"),
            new: (primary, "the original primary"),
        };
        ctx.fence_then_promote(&failback, &op).await;
        ctx.reprotect("failing back: reprotecting", primary, &op)
            .await;
        ctx.expect_markers(
            "failing back: verifying the markers at the original primary",
            primary,
            &markers,
            &op,
        )
        .await;
        ctx.expect_roles(
            "status at the end",
            &[(primary, Role::Primary), (replica, Role::Replica)],
        )
        .await;
        tracing::info!(backend = ?backend, from = %e, to = %back, "replication conformance suite passed");
    }
}

/// A change of primary the suite makes, and the words its failures use for it.
struct Move<'a> {
    /// Put before every step's name.
    prefix: &'static str,
    /// The site that is primary before, and its name in the steps.
    old: (&'a SiteId, &'static str),
    /// The site that is primary after, and its name in the steps.
    new: (&'a SiteId, &'static str),
}

/// One run of the replication suite: the suite and the backend under test.
struct ReplCtx<'a> {
    suite: &'a ReplicationSuite,
    backend: &'a dyn ReplicationBackend,
}

impl ReplCtx<'_> {
    fn fail(&self, step: &str, problem: impl std::fmt::Display) -> ! {
        panic!(
            "replication conformance ({:?}, resource {}): {step}: {problem}",
            self.backend, self.suite.resource
        )
    }

    fn op(&self, epoch: Epoch, drill: bool) -> OpContext {
        OpContext {
            epoch,
            drill,
            timeout: self.suite.timeout,
            force: false,
        }
    }

    async fn derive_epoch(&self) -> Epoch {
        let step = "finding the starting epoch (promoting the current primary at epoch 0)";
        let probe = self.op(Epoch::ZERO, false);
        match self
            .backend
            .promote(&self.suite.resource, &self.suite.primary, &probe)
            .await
        {
            Ok(_) => {}
            Err(BackendError::StaleEpoch { current, .. }) => return current.next(),
            Err(e) => self.fail(
                step,
                format!(
                    "expected Ok (promoting a primary is a no-op) or Err(StaleEpoch), got {e} \
                     ({e:?}); or give the suite a starting epoch"
                ),
            ),
        }
        self.expect_roles(
            "status after promoting the primary again",
            &[
                (&self.suite.primary, Role::Primary),
                (&self.suite.replica, Role::Replica),
            ],
        )
        .await;
        Epoch::new(1)
    }

    async fn status(&self, step: &str) -> ReplicationStatus {
        match self.backend.status(&self.suite.resource).await {
            Ok(s) if s.resource == self.suite.resource => s,
            Ok(s) => self.fail(
                step,
                format!(
                    "status names resource {}, not {}",
                    s.resource, self.suite.resource
                ),
            ),
            Err(e) => self.fail(step, format!("status failed: {e} ({e:?})")),
        }
    }

    fn role(&self, status: &ReplicationStatus, site: &SiteId) -> Role {
        match status.sites.iter().find(|s| &s.site == site) {
            Some(s) => s.role,
            None => self.fail(
                "reading status",
                format!("site {site} is missing from the status: {status:?}"),
            ),
        }
    }

    async fn expect_roles(&self, step: &str, want: &[(&SiteId, Role)]) {
        let status = self.status(step).await;
        for (site, role) in want {
            let have = self.role(&status, site);
            if have != *role {
                self.fail(
                    step,
                    format!("{site} is {have}, expected {role} (status: {status:?})"),
                );
            }
        }
    }

    async fn integrity(
        &self,
        step: &str,
        site: &SiteId,
        request: &IntegrityRequest,
        op: &OpContext,
    ) -> IntegrityReport {
        match self
            .backend
            .integrity(&self.suite.resource, site, request, op)
            .await
        {
            Ok(r) => r,
            Err(e) => self.fail(step, format!("integrity at {site} failed: {e} ({e:?})")),
        }
    }

    async fn expect_markers(&self, step: &str, site: &SiteId, markers: &Manifest, op: &OpContext) {
        let request = IntegrityRequest::Verify {
            expected: markers.clone(),
        };
        let report = self.integrity(step, site, &request, op).await;
        if !report.mismatches.is_empty() {
            let list: Vec<String> = report.mismatches.iter().map(ToString::to_string).collect();
            self.fail(
                step,
                format!(
                    "the markers written at the other site differ: {}",
                    list.join("; ")
                ),
            );
        }
    }

    /// The failover runbook's safe order, unforced: (when the suite expects it) a promotion
    /// of the new site beside the old one is refused; the old site is fenced and is no
    /// longer primary; the new site is promoted.
    async fn fence_then_promote(&self, m: &Move<'_>, op: &OpContext) {
        let ((old, old_name), (new, new_name), prefix) = (m.old, m.new, m.prefix);
        let e = op.epoch;
        if self.suite.expect_refusal_beside_writable_primary {
            let step = format!("{prefix}promoting {new_name} while {old_name} is writable");
            self.expect_refused_beside(&step, new, old, op).await;
        }
        if let Err(err) = self.backend.fence(&self.suite.resource, old, op).await {
            self.fail(
                &format!("{prefix}fencing {old_name}"),
                format!("fence({old}) at epoch {e} failed: {err} ({err:?})"),
            );
        }
        let step = format!("{prefix}status after fencing {old_name}");
        let status = self.status(&step).await;
        if self.role(&status, old) == Role::Primary {
            self.fail(&step, format!("{old} is still primary: {status:?}"));
        }
        if let Err(err) = self.backend.promote(&self.suite.resource, new, op).await {
            self.fail(
                &format!("{prefix}promoting {new_name}"),
                format!(
                    "promote({new}) at epoch {e}, after fencing {old}, failed: {err} ({err:?})"
                ),
            );
        }
    }

    /// Checks that promoting `site` (unforced) while `writable` is primary is refused with an
    /// error naming `writable`, and that both keep their roles.
    async fn expect_refused_beside(
        &self,
        step: &str,
        site: &SiteId,
        writable: &SiteId,
        op: &OpContext,
    ) {
        let before = [(writable, Role::Primary), (site, Role::Replica)];
        self.expect_roles(step, &before).await;
        match self.backend.promote(&self.suite.resource, site, op).await {
            Err(BackendError::Refused(why)) if why.contains(writable.as_str()) => {}
            Err(BackendError::Refused(why)) => self.fail(
                step,
                format!("the refusal should name the writable site {writable}: {why}"),
            ),
            Ok(p) => self.fail(
                step,
                format!(
                    "promote({site}) at epoch {} without force was accepted ({p:?}) while \
                     {writable} is reachable and writable: two primaries would split the data; \
                     it must fail with Err(Refused) naming {writable}",
                    op.epoch
                ),
            ),
            Err(other) => self.fail(
                step,
                format!(
                    "promote({site}) without force while {writable} is writable must fail \
                     with Err(Refused) naming {writable}, got {other} ({other:?})"
                ),
            ),
        }
        self.expect_roles(&format!("status after: {step}"), &before)
            .await;
    }

    async fn reprotect(&self, step: &str, primary: &SiteId, op: &OpContext) {
        if let Err(e) = self
            .backend
            .reprotect(&self.suite.resource, primary, true, op)
            .await
        {
            self.fail(
                step,
                format!(
                    "reprotect(primary = {primary}, wait = true) at epoch {} failed: {e} ({e:?})",
                    op.epoch
                ),
            );
        }
    }
}
