//! Replication driven by user commands (hooks), for replication that lives elsewhere: VMware
//! SRM, RecoverPoint, DRBD, ZFS send/receive, Ceph RBD mirroring, a storage array's CLI.
//!
//! # The contract (version 1)
//!
//! For every call the backend runs the resource's hook (one program for every operation, or
//! one per operation) and writes one JSON object to its standard input:
//!
//! ```json
//! {"version": 1, "operation": "promote", "resource": "db", "sites": ["a", "b"],
//!  "site": "b", "epoch": 7, "drill": false, "force": false, "timeout_ms": 110000}
//! ```
//!
//! | operation | extra fields | standard output on success (exit code 0) |
//! |---|---|---|
//! | `status` | — (no `epoch`) | `{"sites": [{"site": "a", "role": "primary", "lag_ms": 0, "lag_bytes": 0}, …]}`; role is `primary`, `replica`, `fenced` or `unknown`; a site left out is `unknown` |
//! | `fence` | `site`, `epoch`, `drill`, `force` | anything (ignored) |
//! | `promote` | `site`, `epoch`, `drill`, `force` | optional `{"rpo_ms": 1200, "position": "snapshot 42"}` |
//! | `reprotect` | `primary`, `wait`, `epoch` | anything (ignored) |
//! | `integrity` | `site`, `epoch`, `drill`, `request`: `{"check": {}}`, `{"mark": {"label": "epoch-7"}}` or `{"verify": {"expected": {"entries": {…}}}}` | `{"manifest": {"entries": {"key": {"size": 1, "checksum": "…", "modified_ms": 0}}}, "mismatches": [{"key": "…", "problem": "…"}]}`; for `verify` the manifest of what was found is enough: the backend compares it with `expected` itself |
//!
//! The same facts are in the environment for scripts that do not parse JSON: `IDNS_OPERATION`,
//! `IDNS_RESOURCE`, `IDNS_SITES` (space-separated), `IDNS_SITE`, `IDNS_PRIMARY`, `IDNS_WAIT`,
//! `IDNS_EPOCH`, `IDNS_DRILL` and `IDNS_FORCE` (`0`/`1`), `IDNS_TIMEOUT_MS`, `IDNS_INTEGRITY` (`check`, `mark`,
//! `verify`) and `IDNS_LABEL`.
//!
//! **Errors.** A non-zero exit code is an error. Its standard output may describe it:
//! `{"error": "SRM is unreachable", "transient": true}`; `kind` may name it exactly
//! (`refused`, `not_found`, `unsupported` — e.g. a drill the storage cannot clone —,
//! `integrity`, `conflict`, `invalid`, `auth`, `timeout`, `unavailable`, or `stale_epoch`
//! with `current_epoch`). Without JSON, exit code 75 (`EX_TEMPFAIL`) or a death by signal is
//! transient, anything else permanent, and the message is the end of standard error.
//!
//! **Two writable primaries.** Before an unforced production `promote`, the backend runs the
//! `status` hook and refuses ([`BackendError::Refused`], naming the site) while another site
//! reports `primary`: fence it first, or force the step. A status hook that fails leaves the
//! other sites unknown, as an unreachable site is, and the promotion goes ahead with a warning
//! (the fence step before it has already dealt with a reachable old primary). A forced step
//! carries `"force": true`, for hooks that check for themselves.
//!
//! **Time.** A hook that outlives its budget (`ctx.timeout`; `status_timeout` for status) is
//! killed with its whole process group, and the call fails as [`BackendError::Timeout`].
//!
//! **Epochs.** The backend refuses epochs below the highest it has accepted for the resource
//! before it runs anything, and keeps that epoch in `state_file` (when configured) across
//! restarts; a hook whose storage keeps its own epoch can refuse too (`stale_epoch`).

mod config;
mod wire;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idns_core::{
    BackendError, Epoch, IntegrityReport, IntegrityRequest, Manifest, OpContext, Promoted,
    ReplicationBackend, ReplicationStatus, ResourceId, Role, SiteId, SiteReplication,
};
use tokio::io::AsyncWriteExt;

pub use config::{CommandConfig, CommandResource, CommandResourceSpec, CommandSpec, OPERATIONS};
pub use wire::{HookRequest, WireEntry, WireIntegrity, WireManifest};

use crate::fsutil::{IoContext, atomic_write};

/// The command-hook [`ReplicationBackend`]. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct CommandReplication {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CommandConfig,
    /// Highest accepted epoch per resource; `None` until loaded from the state file.
    epochs: tokio::sync::Mutex<Option<BTreeMap<ResourceId, Epoch>>>,
}

impl CommandReplication {
    /// A backend for the configured resources (no I/O until the first call).
    pub fn new(config: CommandConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                epochs: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CommandConfig {
        &self.inner.config
    }

    fn resource(&self, id: &ResourceId) -> Result<&CommandResource, BackendError> {
        self.inner
            .config
            .resources
            .iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| BackendError::NotFound(format!("resource {id}")))
    }

    fn check_site(res: &CommandResource, site: &SiteId) -> Result<(), BackendError> {
        if res.sites.contains(site) {
            Ok(())
        } else {
            Err(BackendError::NotFound(format!(
                "{} has no copy at site {site}",
                res.id
            )))
        }
    }

    /// Refuses a stale epoch; records (and persists) a higher one.
    async fn admit(&self, res: &ResourceId, epoch: Epoch) -> Result<(), BackendError> {
        let mut guard = self.inner.epochs.lock().await;
        if guard.is_none() {
            let loaded = match self.inner.config.state_file.clone() {
                Some(path) => tokio::task::spawn_blocking(move || load_epochs(&path))
                    .await
                    .map_err(|e| BackendError::Unavailable(format!("worker failed: {e}")))??,
                None => BTreeMap::new(),
            };
            *guard = Some(loaded);
        }
        let map = guard.get_or_insert_with(BTreeMap::new);
        let current = map.get(res).copied().unwrap_or(Epoch::ZERO);
        if epoch < current {
            tracing::warn!(resource = %res, attempted = %epoch, %current, "refusing a stale epoch");
            return Err(BackendError::StaleEpoch {
                attempted: epoch,
                current,
            });
        }
        if epoch > current {
            map.insert(res.clone(), epoch);
            if let Some(path) = self.inner.config.state_file.clone() {
                let snapshot: BTreeMap<String, u64> =
                    map.iter().map(|(k, v)| (k.to_string(), v.get())).collect();
                tokio::task::spawn_blocking(move || {
                    let data = serde_json::to_vec_pretty(&snapshot)
                        .map_err(|e| BackendError::Invalid(e.to_string()))?;
                    atomic_write(&path, &data).ctx(path.display())
                })
                .await
                .map_err(|e| BackendError::Unavailable(format!("worker failed: {e}")))??;
            }
        }
        Ok(())
    }

    /// Runs the hook of `request.operation` and returns its standard output.
    async fn run(
        &self,
        res: &CommandResource,
        request: HookRequest,
        timeout: Duration,
    ) -> Result<Vec<u8>, BackendError> {
        let op = request.operation.clone();
        let argv = res
            .hooks
            .get(op.as_str())
            .ok_or_else(|| BackendError::Invalid(format!("no hook for {op}")))?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(&res.env)
            .env("IDNS_OPERATION", &op)
            .env("IDNS_RESOURCE", &request.resource)
            .env("IDNS_SITES", request.sites.join(" "))
            .env("IDNS_DRILL", if request.drill { "1" } else { "0" })
            .env("IDNS_FORCE", if request.force { "1" } else { "0" })
            .env("IDNS_TIMEOUT_MS", request.timeout_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        for (k, v) in [
            ("IDNS_SITE", request.site.clone()),
            ("IDNS_PRIMARY", request.primary.clone()),
            (
                "IDNS_WAIT",
                request.wait.map(|w| if w { "1" } else { "0" }.to_owned()),
            ),
            ("IDNS_EPOCH", request.epoch.map(|e| e.to_string())),
        ] {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        if let Some(r) = &request.request {
            let (kind, label) = match r {
                WireIntegrity::Check {} => ("check", None),
                WireIntegrity::Mark { label } => ("mark", Some(label.clone())),
                WireIntegrity::Verify { .. } => ("verify", None),
            };
            cmd.env("IDNS_INTEGRITY", kind);
            if let Some(l) = label {
                cmd.env("IDNS_LABEL", l);
            }
        }
        if let Some(dir) = &res.dir {
            cmd.current_dir(dir);
        }
        let input = serde_json::to_vec(&request)
            .map_err(|e| BackendError::Invalid(format!("request does not serialize: {e}")))?;
        let mut child = cmd.spawn().map_err(|e| {
            BackendError::Invalid(format!("cannot run the {op} hook {:?}: {e}", argv[0]))
        })?;
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                // A hook that does not read its input closes the pipe: that is fine.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            });
        }
        tracing::debug!(resource = %res.id, operation = %op, hook = ?argv, ?pid, "hook started");
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out.map_err(|e| {
                BackendError::Unavailable(format!("the {op} hook failed to run: {e}"))
            })?,
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                tracing::warn!(resource = %res.id, operation = %op, ?timeout, "hook timed out and was killed");
                return Err(BackendError::Timeout(format!(
                    "the {op} hook of {} did not finish within {} ms and was killed",
                    res.id,
                    timeout.as_millis()
                )));
            }
        };
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = {
            let t = stderr.trim();
            let start = t.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
            t[start..].to_owned()
        };
        if let Ok(e) = serde_json::from_slice::<wire::ErrorOut>(&output.stdout) {
            let err = e.into_error(request.epoch);
            tracing::warn!(resource = %res.id, operation = %op, error = %err, "hook failed");
            return Err(err);
        }
        use std::os::unix::process::ExitStatusExt;
        let what = match (output.status.code(), output.status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "failure".to_owned(),
        };
        let msg = if tail.is_empty() {
            format!("the {op} hook of {} failed ({what})", res.id)
        } else {
            format!("the {op} hook of {} failed ({what}): {tail}", res.id)
        };
        tracing::warn!(resource = %res.id, operation = %op, %msg, "hook failed");
        if output.status.code() == Some(75) || output.status.signal().is_some() {
            Err(BackendError::Unavailable(msg))
        } else {
            Err(BackendError::Refused(msg))
        }
    }

    /// Refuses to promote `site` while the status hook reports another site primary (two
    /// writable primaries would split the data). A failing status hook is let through with a
    /// warning, as an unreachable site is.
    async fn refuse_beside_a_writable_site(
        &self,
        resource: &ResourceId,
        site: &SiteId,
    ) -> Result<(), BackendError> {
        let status = match self.status(resource).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(resource = %resource, site = %site, error = %e, "status hook failed before promotion: the other sites are not known to be fenced");
                return Ok(());
            }
        };
        match status
            .sites
            .iter()
            .find(|s| &s.site != site && s.role == Role::Primary)
        {
            Some(other) => {
                tracing::warn!(resource = %resource, site = %site, writable = %other.site, "promotion refused: the status hook reports another site primary");
                Err(BackendError::Refused(format!(
                    "{resource} at {} is reported primary (writable) by the status hook: fence \
                     it before promoting {site}, or force the step",
                    other.site
                )))
            }
            None => Ok(()),
        }
    }

    fn request(
        res: &CommandResource,
        operation: &str,
        ctx: Option<&OpContext>,
        timeout: Duration,
    ) -> HookRequest {
        HookRequest {
            version: 1,
            operation: operation.to_owned(),
            resource: res.id.to_string(),
            sites: res.sites.iter().map(ToString::to_string).collect(),
            site: None,
            primary: None,
            wait: None,
            epoch: ctx.map(|c| c.epoch),
            drill: ctx.is_some_and(|c| c.drill),
            force: ctx.is_some_and(|c| c.force),
            timeout_ms: timeout.as_millis() as u64,
            request: None,
        }
    }
}

fn load_epochs(path: &std::path::Path) -> Result<BTreeMap<ResourceId, Epoch>, BackendError> {
    let raw = match std::fs::read(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(crate::fsutil::io_err(path.display(), &e)),
    };
    let map: BTreeMap<String, u64> = serde_json::from_slice(&raw).map_err(|e| {
        BackendError::Integrity(format!("epoch file {} is damaged: {e}", path.display()))
    })?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| ResourceId::try_from(k).ok().map(|id| (id, Epoch::new(v))))
        .collect())
}

fn parse<T: serde::de::DeserializeOwned + Default>(
    op: &str,
    out: &[u8],
) -> Result<T, BackendError> {
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(out).map_err(|e| {
        let shown: String = String::from_utf8_lossy(out).chars().take(200).collect();
        BackendError::Invalid(format!(
            "the {op} hook printed something that is not the documented JSON ({e}): {shown}"
        ))
    })
}

#[async_trait]
impl ReplicationBackend for CommandReplication {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        let res = self.resource(resource)?;
        let req = Self::request(res, "status", None, res.status_timeout);
        let out = self.run(res, req, res.status_timeout).await?;
        let parsed: wire::StatusOut = parse("status", &out)?;
        let mut sites = Vec::new();
        for site in &res.sites {
            let found = parsed.sites.iter().find(|s| s.site == site.as_str());
            let role = match found.map(|s| s.role.as_str()) {
                Some("primary") => Role::Primary,
                Some("replica") => Role::Replica,
                Some("fenced") => Role::Fenced,
                Some("unknown") | None => Role::Unknown,
                Some(other) => {
                    return Err(BackendError::Invalid(format!(
                        "the status hook of {resource} gave site {site} the role {other:?} \
                         (expected primary, replica, fenced or unknown)"
                    )));
                }
            };
            sites.push(SiteReplication {
                site: site.clone(),
                role,
                lag: found.and_then(|s| s.lag_ms).map(Duration::from_millis),
                lag_bytes: found.and_then(|s| s.lag_bytes),
            });
        }
        for s in &parsed.sites {
            if !res.sites.iter().any(|x| x.as_str() == s.site) {
                tracing::warn!(resource = %resource, site = %s.site, "the status hook reported a site that is not configured");
            }
        }
        Ok(ReplicationStatus {
            resource: resource.clone(),
            sites,
        })
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let res = self.resource(resource)?;
        Self::check_site(res, site)?;
        self.admit(resource, ctx.epoch).await?;
        let mut req = Self::request(res, "fence", Some(ctx), ctx.timeout);
        req.site = Some(site.to_string());
        self.run(res, req, ctx.timeout).await?;
        tracing::info!(resource = %resource, site = %site, epoch = %ctx.epoch, drill = ctx.drill, "fenced by hook");
        Ok(())
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        let res = self.resource(resource)?;
        Self::check_site(res, site)?;
        self.admit(resource, ctx.epoch).await?;
        if !ctx.drill && !ctx.force {
            self.refuse_beside_a_writable_site(resource, site).await?;
        }
        let mut req = Self::request(res, "promote", Some(ctx), ctx.timeout);
        req.site = Some(site.to_string());
        let out = self.run(res, req, ctx.timeout).await?;
        let p: wire::PromoteOut = parse("promote", &out)?;
        tracing::info!(resource = %resource, site = %site, epoch = %ctx.epoch, drill = ctx.drill, "promoted by hook");
        Ok(Promoted {
            rpo: p.rpo_ms.map(Duration::from_millis),
            position: p.position,
        })
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let res = self.resource(resource)?;
        Self::check_site(res, primary)?;
        self.admit(resource, ctx.epoch).await?;
        let mut req = Self::request(res, "reprotect", Some(ctx), ctx.timeout);
        req.primary = Some(primary.to_string());
        req.wait = Some(wait);
        self.run(res, req, ctx.timeout).await?;
        tracing::info!(resource = %resource, primary = %primary, wait, epoch = %ctx.epoch, "reprotected by hook");
        Ok(())
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        let res = self.resource(resource)?;
        Self::check_site(res, site)?;
        if matches!(request, IntegrityRequest::Mark { .. }) {
            self.admit(resource, ctx.epoch).await?;
        }
        let mut req = Self::request(res, "integrity", Some(ctx), ctx.timeout);
        req.site = Some(site.to_string());
        req.request = Some(WireIntegrity::from(request));
        let out = self.run(res, req, ctx.timeout).await?;
        let parsed: wire::IntegrityOut = parse("integrity", &out)?;
        let manifest = Manifest::from(parsed.manifest);
        let mut mismatches = parsed.mismatches;
        match request {
            IntegrityRequest::Verify { expected } => {
                for m in manifest.verify(expected) {
                    if !mismatches.iter().any(|x| x.key == m.key) {
                        mismatches.push(m);
                    }
                }
            }
            IntegrityRequest::Mark { label } if manifest.entries.is_empty() => {
                return Err(BackendError::Invalid(format!(
                    "the integrity hook of {resource} wrote markers {label} but returned no manifest"
                )));
            }
            _ => {}
        }
        Ok(IntegrityReport {
            manifest,
            mismatches,
        })
    }
}
