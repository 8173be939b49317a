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
/// `replica` following it. It fails over to the replica and back, checking in this order:
///
/// 1. `status` lists both sites, `primary` as [`Role::Primary`] and `replica` as
///    [`Role::Replica`].
/// 2. The starting epoch `e`: the one given to [`new`](Self::new), or else one above the
///    highest the backend has accepted, found by promoting the current primary at epoch 0
///    (a promotion of a primary is a no-op; a backend with history refuses it as stale and
///    names its current epoch).
/// 3. `promote(replica, e)` makes it primary.
/// 4. A call with epoch `e-1` (fencing the new primary) fails with
///    [`BackendError::StaleEpoch`] naming both epochs, and the new primary stays primary.
/// 5. `fence(primary, e)` stops the old primary taking writes (its role is no longer primary).
/// 6. `integrity(Mark)` at the new primary returns a non-empty manifest.
/// 7. `reprotect(new primary, wait = true)` makes the old primary a replica.
/// 8. `integrity(Verify)` of the markers at the old primary finds no mismatch; with one
///    checksum changed, it reports a mismatch naming that entry.
/// 9. A drill (`ctx.drill`) `promote` then `fence` at the replica each succeed or return
///    [`BackendError::Unsupported`], and leave the production roles unchanged.
/// 10. Failback at `e+1`: promote `primary`, fence `replica`, reprotect; the markers are
///     verified at `primary`, and the roles are back as they were, so the suite can run again.
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
        }
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

        // 3. Promote the replica.
        if let Err(err) = backend.promote(&self.resource, replica, &op).await {
            ctx.fail(
                "promoting the replica",
                format!("promote({replica}) at epoch {e} failed: {err} ({err:?})"),
            );
        }
        ctx.expect_roles(
            "status after promoting the replica",
            &[(replica, Role::Primary)],
        )
        .await;

        // 4. A stale epoch is refused: an old controller cannot fence the new primary.
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

        // 5. Fence the old primary.
        if let Err(err) = backend.fence(&self.resource, primary, &op).await {
            ctx.fail(
                "fencing the old primary",
                format!("fence({primary}) at epoch {e} failed: {err} ({err:?})"),
            );
        }
        let status = ctx.status("status after fencing the old primary").await;
        if ctx.role(&status, primary) == Role::Primary {
            ctx.fail(
                "status after fencing the old primary",
                format!("{primary} is still primary: {status:?}"),
            );
        }

        // 6. Markers at the new primary.
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

        // 7. Reverse replication.
        ctx.reprotect("reprotecting towards the old primary", replica, &op)
            .await;
        ctx.expect_roles(
            "status after reprotect",
            &[(replica, Role::Primary), (primary, Role::Replica)],
        )
        .await;

        // 8. The markers arrived, and a tampered manifest is caught.
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

        // 9. A drill leaves production alone.
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

        // 10. Fail back, so the backend ends as it started.
        let back = e.next();
        let op = ctx.op(back, false);
        if let Err(err) = backend.promote(&self.resource, primary, &op).await {
            ctx.fail(
                "failing back: promoting the original primary",
                format!("promote({primary}) at epoch {back} failed: {err} ({err:?})"),
            );
        }
        if let Err(err) = backend.fence(&self.resource, replica, &op).await {
            ctx.fail(
                "failing back: fencing the other site",
                format!("fence({replica}) at epoch {back} failed: {err} ({err:?})"),
            );
        }
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
