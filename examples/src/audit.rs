//! A drill's evidence for its report, kept by watching the image backend
//! ([`Watched`](crate::watched::Watched)): every mutating call and whether it was on the
//! drill copy, the integrity check's result, the markers written into the drill copy — read
//! back and verified just before the cleanup removes the copy — and what a client got for
//! the drill name at that moment.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_core::{
    IntegrityReport, IntegrityRequest, Manifest, OpContext, ReplicationBackend, ResourceId, SiteId,
};
use idns_replication::image::ImageReplication;

use crate::report::IntegrityResult;
use crate::watched::{Call, Returned, Watcher};

/// Markers read back from a drill copy: where, what was expected, what the backend found.
type MarkerCheck = (
    ResourceId,
    SiteId,
    Manifest,
    Result<IntegrityReport, String>,
);

/// What the audit keeps for the report.
#[derive(Debug, Default)]
pub struct AuditLog {
    /// Every mutating call, and whether it was on the drill copy.
    pub calls: Vec<(String, bool)>,
    /// What a client got for the drill name just before each cleanup.
    pub drill_answers: Vec<Result<IpAddr, String>>,
    marks: BTreeMap<(ResourceId, SiteId), Manifest>,
    checks: Vec<(ResourceId, SiteId, IntegrityReport)>,
    verified: Vec<MarkerCheck>,
}

/// Watches the replication backend ([`Watched`](crate::watched::Watched)) to keep evidence for the report: every
/// mutating call and whether it was on the drill copy, the integrity check's result, the
/// markers written into the drill copy. Before the cleanup removes a drill copy that holds
/// markers, it reads them back and verifies them through the backend, and a client resolves
/// the drill name: the last moment the rehearsal is whole.
#[derive(Debug)]
pub struct DrillAudit {
    inner: ImageReplication,
    client: Resolver<TokioRuntimeProvider>,
    drill_name: String,
    corrupt: bool,
    log: Mutex<AuditLog>,
}

#[async_trait]
impl Watcher for DrillAudit {
    async fn before(&self, call: Call<'_>) {
        if let Call::Fence {
            resource,
            site,
            ctx,
        } = call
            && ctx.drill
        {
            // The cleanup is about to remove the drill copy.
            self.verify_markers(resource, site, ctx).await;
            let answer = match self.client.lookup_ip(format!("{}.", self.drill_name)).await {
                Ok(a) => a.iter().next().ok_or_else(|| "an empty answer".to_owned()),
                Err(e) => Err(format!("query failed: {e}")),
            };
            self.lock().drill_answers.push(answer);
        }
    }

    fn after(&self, call: Call<'_>, _: Instant, _: Duration, returned: Returned<'_>) {
        let (drill, mut log) = (call_ctx(&call).is_some_and(|c| c.drill), self.lock());
        log.calls.push((call.to_string(), drill));
        if let (
            Call::Integrity {
                resource,
                site,
                request,
                ..
            },
            Ok(Some(report)),
            true,
        ) = (call, returned, drill)
        {
            let key = (resource.clone(), site.clone());
            match request {
                IntegrityRequest::Check => log.checks.push((key.0, key.1, report.clone())),
                IntegrityRequest::Mark { .. } => {
                    let entries = report.manifest.entries.clone();
                    log.marks.entry(key).or_default().entries.extend(entries);
                }
                _ => {}
            }
        }
    }
}

fn call_ctx<'a>(call: &Call<'a>) -> Option<&'a OpContext> {
    match *call {
        Call::Fence { ctx, .. }
        | Call::Promote { ctx, .. }
        | Call::Reprotect { ctx, .. }
        | Call::Integrity { ctx, .. } => Some(ctx),
        _ => None,
    }
}

impl DrillAudit {
    /// Audits `inner`'s drills, resolving `drill_name` with `client` before each cleanup;
    /// with `corrupt`, one marker is changed before it is verified (a rehearsal of the check
    /// itself, which must then fail the drill).
    pub fn new(
        inner: ImageReplication,
        client: Resolver<TokioRuntimeProvider>,
        drill_name: String,
        corrupt: bool,
    ) -> Self {
        DrillAudit {
            inner,
            client,
            drill_name,
            corrupt,
            log: Mutex::default(),
        }
    }

    /// What has been kept so far.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, AuditLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads back the markers written into the drill copy of `resource` at `site`.
    async fn verify_markers(&self, resource: &ResourceId, site: &SiteId, ctx: &OpContext) {
        let key = (resource.clone(), site.clone());
        let Some(expected) = self.lock().marks.remove(&key) else {
            return;
        };
        if self.corrupt
            && let Err(e) = self.corrupt_one(resource, site, &expected)
        {
            tracing::error!("could not inject the corruption: {e}");
        }
        let request = IntegrityRequest::Verify {
            expected: expected.clone(),
        };
        self.lock()
            .calls
            .push((format!("verify markers in {resource} at {site}"), ctx.drill));
        let result = self.inner.integrity(resource, site, &request, ctx).await;
        let result = result.map_err(|e| e.to_string());
        self.lock().verified.push((key.0, key.1, expected, result));
    }

    /// Appends a byte to the first marker file of the drill copy.
    fn corrupt_one(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        markers: &Manifest,
    ) -> std::io::Result<()> {
        let root = self.inner.paths(resource, site).map(|p| p.drill);
        let root = root.ok_or_else(|| std::io::Error::other("no such site"))?;
        let key = markers.entries.keys().next();
        let path = root.join(key.ok_or_else(|| std::io::Error::other("no markers"))?);
        let mut data = std::fs::read(&path)?;
        data.push(b'!');
        std::fs::write(&path, data)
    }

    /// The integrity results, per resource and site, for the report.
    pub fn integrity_results(&self) -> Vec<IntegrityResult> {
        let log = self.lock();
        let mut out = Vec::new();
        for (resource, site, report) in &log.checks {
            let mut r = IntegrityResult {
                resource: resource.to_string(),
                site: site.to_string(),
                scope: "drill copy checked file by file against its checkpoint's manifest; \
                        markers written into it and read back before it was removed"
                    .into(),
                checked: report.manifest.entries.len() as u64,
                unit: "files".into(),
                markers_written: 0,
                markers_verified: 0,
                mismatches: report.mismatches.iter().map(|m| m.to_string()).collect(),
            };
            let verified = log
                .verified
                .iter()
                .filter(|(r2, s2, ..)| r2 == resource && s2 == site);
            for (_, _, expected, result) in verified {
                r.markers_written += expected.entries.len() as u64;
                match result {
                    Ok(v) => {
                        let bad: Vec<&str> = v.mismatches.iter().map(|m| m.key.as_str()).collect();
                        let good = expected
                            .entries
                            .keys()
                            .filter(|k| !bad.contains(&k.as_str()));
                        r.markers_verified += good.count() as u64;
                        r.mismatches
                            .extend(v.mismatches.iter().map(|m| format!("marker {m}")));
                    }
                    Err(e) => r
                        .mismatches
                        .push(format!("markers could not be verified: {e}")),
                }
            }
            out.push(r);
        }
        // Markers written but never read back (no cleanup ran) count as unverified.
        for ((resource, site), m) in &log.marks {
            out.push(IntegrityResult {
                resource: resource.to_string(),
                site: site.to_string(),
                scope: "markers written into the drill copy, never read back".into(),
                checked: 0,
                unit: "files".into(),
                markers_written: m.entries.len() as u64,
                markers_verified: 0,
                mismatches: Vec::new(),
            });
        }
        out
    }
}
