//! PostgreSQL streaming replication: status with lag, fence, promote, zero-loss switchover,
//! reprotect with `pg_rewind`, table checksums and drill marker rows.
//!
//! Each resource is one cluster with a server per site; the backend connects to each with
//! tokio-postgres and controls each through its binaries (`pg_ctl`, `pg_rewind`, `psql`,
//! `pg_basebackup`), locally or behind a command prefix such as `ssh postgres@db2`, and as the
//! server's OS user (`runuser -u postgres --` when the controller runs as root).
//!
//! - **status**: role from `pg_is_in_recovery()`; a standby's lag in seconds (time since the
//!   last replayed transaction while it has WAL left to replay) and in bytes (the primary's
//!   current LSN minus the standby's replayed LSN). A server that is down is `fenced` when this
//!   backend fenced it, else `unknown`.
//! - **fence**: writes `standby.signal` into the data directory, then `pg_ctl stop -m fast` (a
//!   clean shutdown also streams the last WAL to the standbys; its checkpoint LSN is
//!   remembered). No client setting undoes it, and whatever starts the server again starts a
//!   read-only standby, never a primary.
//! - **promote**: refused while another site of the resource is reachable and writable (not
//!   in recovery), unless the step is forced (`ctx.force`); the error names that site. When
//!   another site was fenced with a known final LSN, first waits until this standby has
//!   replayed it — a planned switchover loses nothing (RPO 0); then `pg_promote()`. A stopped
//!   server is started. With `ctx.drill`: a `pg_basebackup` of the site started alone on its
//!   `drill_port` (unsupported without one); fence with `ctx.drill` removes it.
//! - **reprotect**: `CHECKPOINT` on the new primary; every other site follows it. Whether a
//!   site may hold writes the new primary lacks is decided from what this call observes —
//!   the site's timeline and end of WAL (its control data, or what a running standby
//!   replayed) against the new primary's timeline history — never from an earlier call. A
//!   running standby within that history is pointed at the new primary. Any other site — a
//!   second primary (split brain), a standby past the switch point, a stopped server that
//!   may have diverged — is stopped and started alone (no TCP, a private socket), its tables
//!   compared row by row with the new primary's, and the rows only it holds saved under
//!   `save_dir`, streamed to one file per table, and reported
//!   ([`PostgresReplication::saved_aside`], progress as [`Operation::SaveAside`]); then
//!   `pg_rewind`, and it starts as a standby; with `wait`, until it streams and has replayed
//!   the primary's LSN (progress in bytes of WAL: [`PostgresReplication::subscribe`]). If
//!   the old primary cannot be started to compare, the rewind is refused: nothing is dropped
//!   silently. Every wait, the comparison included, ends at the step's timeout.
//! - **remote control**: behind a `command_prefix` (`ssh …`), every argument is quoted for
//!   the remote shell, so data directories with spaces and SQL pass intact.
//! - **integrity**: `Check` checksums the chosen tables (count and md5 of the ordered rows,
//!   keys `table/<schema.table>`) and compares them with every other site at the same LSN;
//!   `Mark` inserts rows into the marker table (keys `marker/<label>/<n>`); `Verify` finds
//!   them (or tables) at a site, standbys included.
//!
//! Not done: choosing the standby with the most WAL among several (sites are promoted as the
//! election says), logical replication, managing `pg_hba.conf` or replication slots.

mod aside;
mod config;
mod control;
mod divergence;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use idns_core::{
    BackendError, Epoch, IntegrityReport, IntegrityRequest, Manifest, ManifestEntry, Mismatch,
    OpContext, Promoted, ReplicationBackend, ReplicationStatus, ResourceId, Role, SiteId,
    SiteReplication,
};
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use tls::{ConnTls, conninfo};

pub use config::{FenceMode, PgConfig, PgResource, PgResourceSpec, PgSite, PgSiteSpec, PgSpec};

use crate::fsutil::{IoContext, atomic_write};
use crate::progress::{Operation, Progress};
use config::CONNECT_TIMEOUT;
use control::{Control, format_lsn, parse_lsn};
use divergence::{Divergence, Lineage};

/// Rows an old primary held that the new primary did not, saved before a rewind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SavedAside {
    /// The resource.
    pub resource: ResourceId,
    /// The old primary's site.
    pub site: SiteId,
    /// The directory holding one file (COPY text format) per table.
    pub dir: PathBuf,
    /// Rows saved per table (`schema.table`).
    pub rows: BTreeMap<String, u64>,
    /// The file in `dir` holding each table's rows: `<schema>.<table>.copy`, with every byte
    /// other than letters, digits, `_` and `-` written as `%XX`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// When they were saved.
    pub at: SystemTime,
}

/// What is kept per resource (in the state file when one is configured).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ResState {
    epoch: Epoch,
    /// Sites this backend fenced, with the final LSN of a clean stop.
    fenced: BTreeMap<SiteId, Option<String>>,
}

/// The PostgreSQL [`ReplicationBackend`]. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct PostgresReplication {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: PgConfig,
    state: tokio::sync::Mutex<Option<BTreeMap<ResourceId, ResState>>>,
    locks: BTreeMap<ResourceId, Arc<tokio::sync::Mutex<()>>>,
    saved: Mutex<Vec<SavedAside>>,
    progress: tokio::sync::broadcast::Sender<Progress>,
}

/// A row count and checksum of one table.
type TableSum = (u64, String);

impl PostgresReplication {
    /// A backend for the configured clusters (no I/O until the first call).
    pub fn new(config: PgConfig) -> Self {
        let locks = config
            .resources
            .iter()
            .map(|r| (r.id.clone(), Arc::new(tokio::sync::Mutex::new(()))))
            .collect();
        Self {
            inner: Arc::new(Inner {
                config,
                state: tokio::sync::Mutex::new(None),
                locks,
                saved: Mutex::new(Vec::new()),
                progress: tokio::sync::broadcast::channel(256).0,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// Progress of standbys catching up after a reprotect ([`Operation::CatchUp`]), for
    /// progress bars.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// Every set of rows saved aside before a rewind, oldest first.
    pub fn saved_aside(&self) -> Vec<SavedAside> {
        self.inner
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn resource(&self, id: &ResourceId) -> Result<&PgResource, BackendError> {
        self.inner
            .config
            .resources
            .iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| BackendError::NotFound(format!("resource {id}")))
    }

    fn site<'a>(res: &'a PgResource, site: &SiteId) -> Result<&'a PgSite, BackendError> {
        res.site(site).ok_or_else(|| {
            BackendError::NotFound(format!("{} has no server at site {site}", res.id))
        })
    }

    async fn lock(
        &self,
        res: &ResourceId,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, BackendError> {
        let l = self
            .inner
            .locks
            .get(res)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(format!("resource {res}")))?;
        Ok(l.lock_owned().await)
    }

    /// Reads the resource's state.
    async fn state(&self, res: &ResourceId) -> Result<ResState, BackendError> {
        let mut g = self.inner.state.lock().await;
        if g.is_none() {
            *g = Some(self.load_states().await?);
        }
        Ok(g.as_ref()
            .and_then(|m| m.get(res).cloned())
            .unwrap_or_default())
    }

    async fn load_states(&self) -> Result<BTreeMap<ResourceId, ResState>, BackendError> {
        let Some(path) = self.inner.config.state_file.clone() else {
            return Ok(BTreeMap::new());
        };
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                BackendError::Integrity(format!("state file {} is damaged: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(crate::fsutil::io_err(path.display(), &e)),
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("worker failed: {e}")))?
    }

    /// Changes the resource's state and persists it.
    async fn update(
        &self,
        res: &ResourceId,
        f: impl FnOnce(&mut ResState),
    ) -> Result<(), BackendError> {
        let mut g = self.inner.state.lock().await;
        if g.is_none() {
            *g = Some(self.load_states().await?);
        }
        let map = g.get_or_insert_with(BTreeMap::new);
        f(map.entry(res.clone()).or_default());
        if let Some(path) = self.inner.config.state_file.clone() {
            let data = serde_json::to_vec_pretty(&*map)
                .map_err(|e| BackendError::Invalid(format!("state does not serialize: {e}")))?;
            tokio::task::spawn_blocking(move || atomic_write(&path, &data).ctx(path.display()))
                .await
                .map_err(|e| BackendError::Unavailable(format!("worker failed: {e}")))??;
        }
        Ok(())
    }

    /// Refuses an epoch below the highest accepted; records a higher one.
    async fn admit(&self, res: &ResourceId, epoch: Epoch) -> Result<(), BackendError> {
        let current = self.state(res).await?.epoch;
        if epoch < current {
            tracing::warn!(resource = %res, attempted = %epoch, %current, "refusing a stale epoch");
            return Err(BackendError::StaleEpoch {
                attempted: epoch,
                current,
            });
        }
        if epoch > current {
            self.update(res, |s| s.epoch = epoch).await?;
        }
        Ok(())
    }

    /// A planned switchover with zero loss: fences the current primary (a clean stop streams
    /// its last WAL to the standbys), waits until `to` has replayed it, promotes `to`, and
    /// makes every other site follow it. Fails rather than promote with less than everything.
    pub async fn switchover(
        &self,
        resource: &ResourceId,
        to: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        let status = self.status(resource).await?;
        let current: Vec<SiteId> = status
            .sites
            .iter()
            .filter(|s| s.role == Role::Primary && &s.site != to)
            .map(|s| s.site.clone())
            .collect();
        let [from] = current.as_slice() else {
            return Err(BackendError::Refused(format!(
                "a switchover needs exactly one other primary; found {current:?}"
            )));
        };
        self.fence(resource, from, ctx).await?;
        let promoted = self.promote(resource, to, ctx).await?;
        if promoted.rpo != Some(Duration::ZERO) {
            return Err(BackendError::Integrity(format!(
                "{to} was promoted without the fenced primary's final LSN: {promoted:?}"
            )));
        }
        self.reprotect(resource, to, true, ctx).await?;
        Ok(promoted)
    }

    /// Waits until every standby has replayed the primary's current LSN, then compares the
    /// chosen tables' checksums across all sites; returns every difference.
    pub async fn compare_tables(
        &self,
        resource: &ResourceId,
        timeout: Duration,
    ) -> Result<Vec<Mismatch>, BackendError> {
        let res = self.resource(resource)?;
        let mut primary = None;
        let mut clients = Vec::new();
        for s in &res.sites {
            let c = connect(res, s, None).await?;
            if !in_recovery(&c).await? {
                primary = Some(s.site.clone());
            }
            clients.push((s.site.clone(), c));
        }
        let Some(primary) = primary else {
            return Err(BackendError::Refused(format!("{resource} has no primary")));
        };
        let p = &clients
            .iter()
            .find(|(s, _)| s == &primary)
            .ok_or_else(|| BackendError::NotFound(primary.to_string()))?
            .1;
        let target = current_lsn(p).await?;
        let deadline = Instant::now() + timeout;
        for (site, c) in &clients {
            if site != &primary {
                wait_replayed(c, site, target, deadline).await?;
            }
        }
        let tables = table_list(res, p).await?;
        let want = table_sums(p, &tables).await?;
        let mut out = Vec::new();
        for (site, c) in &clients {
            if site == &primary {
                continue;
            }
            let have = table_sums(c, &tables).await?;
            for (t, sum) in &want {
                if have.get(t) != Some(sum) {
                    out.push(Mismatch {
                        key: format!("table/{t}"),
                        problem: format!("at {site}: {:?}, at {primary}: {sum:?}", have.get(t)),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Refuses to promote `site` while another site of the resource answers as a primary
    /// (reachable, not in recovery): two writable primaries would split the data.
    async fn refuse_beside_a_writable_site(
        &self,
        res: &PgResource,
        site: &SiteId,
    ) -> Result<(), BackendError> {
        for other in res.sites.iter().filter(|o| &o.site != site) {
            let Ok(c) = connect(res, other, None).await else {
                continue;
            };
            if let Ok(false) = in_recovery(&c).await {
                tracing::warn!(resource = %res.id, site = %site, writable = %other.site, "promotion refused: another site is writable");
                return Err(BackendError::Refused(format!(
                    "{} at {} is reachable and writable (a primary, not in recovery): fence it \
                     before promoting {site}, or force the step",
                    res.id, other.site
                )));
            }
        }
        Ok(())
    }

    /// The connection string a standby uses to follow `site`.
    fn source_conninfo(res: &PgResource, site: &PgSite, app: &SiteId) -> String {
        let port = site.port.to_string();
        let words = conninfo(&[
            ("host", &site.host),
            ("port", &port),
            ("user", &res.user),
            ("application_name", app.as_str()),
        ]);
        format!("{words}{}", tls_words(site))
    }

    /// Starts the old primary alone (no TCP, a private socket; as a standby when its data
    /// directory says so), compares its tables with the new primary's and saves the rows only
    /// it holds, streamed to files. Leaves it stopped cleanly, with its `standby.signal` as it
    /// was.
    async fn save_aside(
        &self,
        res: &PgResource,
        old: &PgSite,
        primary: &PgSite,
        deadline: Instant,
    ) -> Result<Option<SavedAside>, BackendError> {
        let ctl = Control::new(old);
        let data = ctl.data();
        let sock = ctl.socket_dir();
        let t = Duration::from_secs(30);
        ctl.sys_ok("mkdir", &["-p".into(), sock.clone()], t).await?;
        let signal = format!("{data}/standby.signal");
        let cd = ctl.controldata().await?;
        let state = cd
            .get("Database cluster state")
            .map(String::as_str)
            .unwrap_or("");
        // A standby start opens read-only connections once consistent, which after a crash
        // of a primary may be before its last writes are replayed: such a server is started
        // as the primary it was (its crash recovery replays everything first).
        let crashed_primary = !matches!(
            state,
            "shut down" | "shut down in recovery" | "in archive recovery"
        );
        let lifted = crashed_primary
            && ctl
                .sys("test", &["-e".into(), signal.clone()], t)
                .await?
                .code
                == Some(0);
        if lifted {
            ctl.sys_ok("rm", &["-f".into(), signal.clone()], t).await?;
        }
        let socket_dirs = format!("\"{}\"", sock.replace('"', "\"\""));
        let started = ctl
            .start(
                &data,
                old.port,
                &[
                    ("listen_addresses", ""),
                    ("unix_socket_directories", &socket_dirs),
                    ("primary_conninfo", ""),
                    ("hot_standby", "on"),
                ],
                left(deadline),
            )
            .await;
        let result = match started {
            Ok(()) => {
                let saved = self
                    .diff_rows(res, old, &ctl, &sock, primary, deadline)
                    .await;
                let stopped = ctl.stop(&data, "fast", left(deadline)).await;
                saved.and_then(|s| stopped.map(|()| s))
            }
            Err(e) => Err(BackendError::Refused(format!(
                "cannot start the old primary at {} alone to save its writes before the rewind \
                 ({e}); refusing to rewind it (its writes would be lost)",
                old.site
            ))),
        };
        if lifted {
            ctl.sys_ok("touch", &[signal], t).await?;
        }
        let (dir, saved) = result?;
        if saved.is_empty() {
            return Ok(None);
        }
        let saved = SavedAside {
            resource: res.id.clone(),
            site: old.site.clone(),
            dir: dir.clone(),
            rows: saved.iter().map(|(t, (n, _))| (t.clone(), *n)).collect(),
            files: saved.into_iter().map(|(t, (_, f))| (t, f)).collect(),
            at: SystemTime::now(),
        };
        let summary =
            serde_json::to_vec_pretty(&saved).map_err(|e| BackendError::Invalid(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let path = dir.join("summary.json");
            atomic_write(&path, &summary).ctx(path.display())
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("worker failed: {e}")))??;
        tracing::warn!(resource = %res.id, site = %old.site, dir = %saved.dir.display(), rows = ?saved.rows, "rows only the old primary held were saved aside before the rewind");
        self.inner
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(saved.clone());
        Ok(Some(saved))
    }

    /// A directory of its own under `save_dir` for what is saved from `old` now (created
    /// when the first row is written).
    fn aside_dir(&self, res: &PgResource, old: &PgSite) -> PathBuf {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let base = format!("{}-{}-{stamp}", res.id, old.site);
        let save_dir = &self.inner.config.save_dir;
        (0..)
            .map(|n| match n {
                0 => save_dir.join(&base),
                n => save_dir.join(format!("{base}-{n}")),
            })
            .find(|d| !d.exists())
            .unwrap_or_else(|| save_dir.join(base))
    }

    /// Compares every table of the old primary (started alone on `sock`) with the new
    /// primary's and streams the rows only the old one holds into files in a new directory.
    async fn diff_rows(
        &self,
        res: &PgResource,
        old: &PgSite,
        ctl: &Control,
        sock: &str,
        primary: &PgSite,
        deadline: Instant,
    ) -> Result<(PathBuf, aside::Saved), BackendError> {
        let psql = |sql: Vec<&str>| {
            let mut args: Vec<String> = [
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                sock,
                "-p",
                &old.port.to_string(),
                "-U",
                &res.user,
                "-d",
                &res.database,
            ]
            .map(String::from)
            .to_vec();
            for s in sql {
                args.extend(["-c".to_owned(), s.to_owned()]);
            }
            args
        };
        let listing = ctl
            .bin_ok("psql", &psql(vec![aside::LIST_TABLES]), left(deadline))
            .await?;
        let mut tables = aside::parse_tables(&listing)
            .map_err(|e| BackendError::Unavailable(format!("site {}: {e}", old.site)))?;
        if !res.tables.is_empty() {
            tables.retain(|t| res.tables.contains(&t.key()));
        }
        let nc = connect(res, primary, None).await?;
        nc.batch_execute(aside::SESSION)
            .await
            .map_err(|e| pg_err(&primary.site, "setting up the comparison", &e))?;
        let dir = self.aside_dir(res, old);
        let mut saved = aside::Saved::new();
        for table in &tables {
            let key = table.key();
            let report = |done: u64, last: bool| {
                let _ = self.inner.progress.send(Progress {
                    resource: res.id.clone(),
                    site: old.site.clone(),
                    operation: Operation::SaveAside,
                    file: Some(key.clone()),
                    bytes_done: done,
                    bytes_total: if last { done } else { table.size.max(done) },
                });
            };
            let mut next_report = 0u64;
            let mut progress = |done: u64| {
                if done >= next_report {
                    report(done, false);
                    next_report = done + PROGRESS_STEP;
                }
            };
            let new = aside::CopyLines::start(&nc, &table.new_rows_sql(), deadline).await?;
            let mut old_rows = ctl.bin_stream(
                "psql",
                &psql(vec![aside::SESSION, &table.old_rows_sql()]),
                deadline,
            )?;
            let file = table.file_name();
            let mut out = aside::AsideFile::new(dir.join(&file));
            let mut read = 0u64;
            let mut counting = |done: u64| {
                read = done;
                progress(done);
            };
            let merged = aside::diff_table(&mut old_rows, new, &mut out, &mut counting).await;
            let finished = old_rows.finish().await;
            let rows = out.finish().await?;
            merged.and(finished).map_err(|e| {
                BackendError::Unavailable(format!(
                    "comparing {key} at the old primary {} with the new primary: {e}",
                    old.site
                ))
            })?;
            report(read, true);
            if rows > 0 {
                saved.insert(key, (rows, file));
            }
        }
        Ok((dir, saved))
    }

    /// Makes a stopped `old` follow `primary`: saves aside what it may hold that the primary
    /// lacks (always when the caller saw `diverged` — a second primary, or a standby past the
    /// switch point — else unless `lineage` proves nothing diverged), rewinds it and starts it
    /// as a standby.
    async fn rewind_and_follow(
        &self,
        res: &PgResource,
        old: &PgSite,
        primary: &PgSite,
        lineage: Option<&Lineage>,
        diverged: Option<String>,
        deadline: Instant,
    ) -> Result<(), BackendError> {
        let ctl = Control::new(old);
        let verdict = if let Some(why) = diverged {
            Divergence::Possible(why)
        } else {
            divergence::of_stopped(&ctl.controldata().await?, lineage)
        };
        match verdict {
            Divergence::None(why) => {
                tracing::info!(resource = %res.id, site = %old.site, why, "nothing to save aside");
            }
            Divergence::Possible(why) => {
                tracing::info!(resource = %res.id, site = %old.site, why, "comparing rows before the rewind");
                self.save_aside(res, old, primary, deadline).await?;
            }
        }
        let port = primary.port.to_string();
        let words = conninfo(&[
            ("host", &primary.host),
            ("port", &port),
            ("user", &res.user),
            ("dbname", &res.database),
        ]);
        let source = format!("{words}{}", tls_words(primary));
        let out = ctl
            .bin(
                "pg_rewind",
                &[
                    format!("--target-pgdata={}", ctl.data()),
                    format!("--source-server={source}"),
                    "--write-recovery-conf".into(),
                ],
                left(deadline),
            )
            .await?;
        if out.code != Some(0) {
            return Err(BackendError::Unavailable(format!(
                "pg_rewind of {} failed: {}{}",
                old.site,
                out.stdout.trim(),
                out.stderr.trim()
            )));
        }
        tracing::info!(resource = %res.id, site = %old.site, from = %primary.site, output = %out.stderr.trim(), "rewound");
        ctl.sys_ok(
            "touch",
            &[format!("{}/standby.signal", ctl.data())],
            Duration::from_secs(30),
        )
        .await?;
        ctl.start(&ctl.data(), old.port, &[], left(deadline))
            .await?;
        let c = connect(res, old, None).await?;
        point_at(&c, &Self::source_conninfo(res, primary, &old.site)).await
    }

    /// The new primary's timeline history, or `None` (after saying why) when it cannot be
    /// read: then every old site is compared before its rewind.
    async fn lineage(&self, resource: &ResourceId, site: &SiteId, c: &Client) -> Option<Lineage> {
        let read = async {
            let tli: i32 = c
                .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
                .await?
                .get(0);
            let tli = u32::try_from(tli).unwrap_or(0);
            if tli <= 1 {
                return Ok(Some(Lineage::parse(tli, "").unwrap_or(Lineage {
                    timeline: tli,
                    left_at: BTreeMap::new(),
                })));
            }
            let history: String = c
                .query_one(
                    "SELECT pg_read_file($1)",
                    &[&format!("pg_wal/{tli:08X}.history")],
                )
                .await?
                .get(0);
            Ok::<_, tokio_postgres::Error>(Lineage::parse(tli, &history))
        };
        match read.await {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                tracing::warn!(resource = %resource, site = %site, "the timeline history does not parse: every other site is compared before its rewind");
                None
            }
            Err(e) => {
                tracing::warn!(resource = %resource, site = %site, error = %e, "cannot read the timeline history: every other site is compared before its rewind");
                None
            }
        }
    }

    /// Whether a running standby may hold writes the new primary lacks.
    async fn standby_divergence(
        c: &Client,
        lineage: Option<&Lineage>,
    ) -> Result<Divergence, BackendError> {
        let Some(lineage) = lineage else {
            return Ok(Divergence::None(
                "the new primary's history is unknown; pointing a standby discards nothing".into(),
            ));
        };
        let row = c
            .query_one(
                "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), \
                 (SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'), \
                 pg_last_wal_replay_lsn()::text",
                &[],
            )
            .await
            .map_err(|e| BackendError::Unavailable(format!("reading a standby's timeline: {e}")))?;
        let tli: i32 = row.get(0);
        let receiving: Option<i32> = row.get(1);
        let replayed: Option<String> = row.get(2);
        Ok(lineage.of_standby(
            u32::try_from(tli).unwrap_or(0),
            receiving.and_then(|r| u32::try_from(r).ok()),
            replayed.as_deref().and_then(parse_lsn).unwrap_or(0),
        ))
    }
}

/// Progress of saving rows aside is reported about this often (bytes read).
const PROGRESS_STEP: u64 = 4 * 1024 * 1024;

/// Time left until `deadline` (at least a moment, so a late call still fails cleanly).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1))
}

fn quote_table(t: &str) -> String {
    t.split('.')
        .map(aside::quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

fn pg_err(site: &SiteId, what: &str, e: &tokio_postgres::Error) -> BackendError {
    let msg = match e.as_db_error() {
        Some(db) => format!(
            "site {site}: {what}: {} ({})",
            db.message(),
            db.code().code()
        ),
        None => format!("site {site}: {what}: {e}"),
    };
    if e.is_closed() || e.as_db_error().is_none() {
        BackendError::Unavailable(msg)
    } else {
        BackendError::Refused(msg)
    }
}

/// Connects to a site (or to its drill copy's port).
async fn connect(
    res: &PgResource,
    site: &PgSite,
    port: Option<u16>,
) -> Result<Client, BackendError> {
    let invalid = |e: String| BackendError::Invalid(format!("site {}: conninfo: {e}", site.site));
    let tls = ConnTls::parse(site.conninfo.as_ref().map(|c| c.expose())).map_err(invalid)?;
    let mut cfg = match &site.conninfo {
        Some(_) => tokio_postgres::Config::from_str(&tls.rest).map_err(|e| {
            BackendError::Invalid(format!("site {}: conninfo does not parse: {e}", site.site))
        })?,
        None => tokio_postgres::Config::new(),
    };
    cfg.host(&site.host)
        .port(port.unwrap_or(site.port))
        .user(&res.user)
        .dbname(&res.database)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("idns");
    let connector = tls.connector().map_err(invalid)?;
    let wait = CONNECT_TIMEOUT + Duration::from_secs(1);
    let timed_out =
        |_| BackendError::Unavailable(format!("site {}: connection timed out", site.site));
    let failed = |e: tokio_postgres::Error| {
        let mut err = pg_err(&site.site, &format!("connecting{}", tls.shown()), &e);
        if let BackendError::Unavailable(m) | BackendError::Refused(m) = &mut err {
            m.push_str(&tls.explain(&e));
        }
        err
    };
    let name = site.site.clone();
    let ended = move |e: tokio_postgres::Error| {
        tracing::debug!(site = %name, error = %e, "connection ended");
    };
    match connector {
        None => {
            let (client, conn) = tokio::time::timeout(wait, cfg.connect(NoTls))
                .await
                .map_err(timed_out)?
                .map_err(failed)?;
            tokio::spawn(async move { conn.await.map_err(ended) });
            Ok(client)
        }
        Some((rustls, mode)) => {
            cfg.ssl_mode(mode);
            let (client, conn) = tokio::time::timeout(wait, cfg.connect(rustls))
                .await
                .map_err(timed_out)?
                .map_err(failed)?;
            tokio::spawn(async move { conn.await.map_err(ended) });
            Ok(client)
        }
    }
}

/// The site's `sslmode`/`sslrootcert` as conninfo words for commands and standbys (never its
/// password or other parameters).
fn tls_words(site: &PgSite) -> String {
    ConnTls::parse(site.conninfo.as_ref().map(|c| c.expose()))
        .map(|t| t.libpq_words())
        .unwrap_or_default()
}

async fn in_recovery(c: &Client) -> Result<bool, BackendError> {
    let row = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| BackendError::Unavailable(format!("pg_is_in_recovery: {e}")))?;
    Ok(row.get(0))
}

/// The primary's current LSN, or a standby's replayed LSN.
async fn current_lsn(c: &Client) -> Result<u64, BackendError> {
    let row = c
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_lsn() END)::text",
            &[],
        )
        .await
        .map_err(|e| BackendError::Unavailable(format!("reading the LSN: {e}")))?;
    let s: Option<String> = row.get(0);
    Ok(s.as_deref().and_then(parse_lsn).unwrap_or(0))
}

async fn wait_replayed(
    c: &Client,
    site: &SiteId,
    target: u64,
    deadline: Instant,
) -> Result<(), BackendError> {
    loop {
        let have = current_lsn(c).await?;
        if have >= target {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Timeout(format!(
                "{site} replayed up to {} but {} was expected",
                format_lsn(have),
                format_lsn(target)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Points a standby at a primary (takes effect on reload).
async fn point_at(c: &Client, conninfo: &str) -> Result<(), BackendError> {
    let sql = format!(
        "ALTER SYSTEM SET primary_conninfo = '{}'",
        conninfo.replace('\'', "''")
    );
    c.batch_execute(&sql)
        .await
        .map_err(|e| BackendError::Unavailable(format!("setting primary_conninfo: {e}")))?;
    c.batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(|e| BackendError::Unavailable(format!("reloading: {e}")))
}

async fn table_list(res: &PgResource, c: &Client) -> Result<Vec<String>, BackendError> {
    if !res.tables.is_empty() {
        return Ok(res.tables.clone());
    }
    let rows = c
        .query(
            "SELECT format('%s.%s', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| BackendError::Unavailable(format!("listing tables: {e}")))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Count and md5 of the ordered rows of each table (a missing table is left out).
async fn table_sums(
    c: &Client,
    tables: &[String],
) -> Result<BTreeMap<String, TableSum>, BackendError> {
    let mut out = BTreeMap::new();
    for t in tables {
        let q = quote_table(t);
        let sql = format!(
            "SELECT count(*)::int8, coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), md5('')) \
             FROM {q} x"
        );
        match c.query_one(&sql, &[]).await {
            Ok(row) => {
                let n: i64 = row.get(0);
                out.insert(t.clone(), (n.max(0) as u64, row.get::<_, String>(1)));
            }
            Err(e) if e.as_db_error().is_some() => {
                tracing::debug!(table = %t, error = %e, "table not checksummed");
            }
            Err(e) => return Err(BackendError::Unavailable(format!("checksumming {t}: {e}"))),
        }
    }
    Ok(out)
}

fn manifest_of_sums(sums: &BTreeMap<String, TableSum>) -> Manifest {
    Manifest {
        entries: sums
            .iter()
            .map(|(t, (n, sum))| {
                (
                    format!("table/{t}"),
                    ManifestEntry {
                        size: *n,
                        checksum: sum.clone(),
                        modified: None,
                    },
                )
            })
            .collect(),
    }
}

const MARKER_SUM: &str = "md5(format('%s|%s|%s|%s|%s', label, n, epoch, site, payload))";

async fn marker_entry(
    c: &Client,
    table: &str,
    label: &str,
    n: i32,
) -> Result<Option<ManifestEntry>, BackendError> {
    let sql = format!(
        "SELECT length(payload)::int8, {MARKER_SUM}, extract(epoch FROM written_at)::float8 \
         FROM {} WHERE label = $1 AND n = $2",
        quote_table(table)
    );
    match c.query_opt(&sql, &[&label, &n]).await {
        Ok(Some(row)) => {
            let size: i64 = row.get(0);
            let secs: f64 = row.get(2);
            Ok(Some(ManifestEntry {
                size: size.max(0) as u64,
                checksum: row.get(1),
                modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))),
            }))
        }
        Ok(None) => Ok(None),
        Err(e) if e.as_db_error().is_some() => Ok(None),
        Err(e) => Err(BackendError::Unavailable(format!("reading markers: {e}"))),
    }
}

#[async_trait]
impl ReplicationBackend for PostgresReplication {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        let res = self.resource(resource)?;
        let state = self.state(resource).await?;
        struct Seen {
            role: Role,
            lsn: u64,
            lag: Option<Duration>,
        }
        let mut seen = Vec::new();
        for s in &res.sites {
            let row = match connect(res, s, None).await {
                Ok(c) => c
                    .query_one(
                        "SELECT pg_is_in_recovery(), \
                         (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
                         (CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                          WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
                          ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END)::float8",
                        &[],
                    )
                    .await
                    .ok(),
                Err(e) => {
                    tracing::debug!(resource = %resource, site = %s.site, error = %e, "site not reachable");
                    None
                }
            };
            seen.push(match row {
                Some(r) => {
                    let recovery: bool = r.get(0);
                    let lsn: Option<String> = r.get(1);
                    let lag: f64 = r.get(2);
                    let role = if recovery {
                        Role::Replica
                    } else {
                        Role::Primary
                    };
                    Seen {
                        role,
                        lsn: lsn.as_deref().and_then(parse_lsn).unwrap_or(0),
                        lag: Some(Duration::from_secs_f64(lag.max(0.0))),
                    }
                }
                None => Seen {
                    role: if state.fenced.contains_key(&s.site) {
                        Role::Fenced
                    } else {
                        Role::Unknown
                    },
                    lsn: 0,
                    lag: None,
                },
            });
        }
        let primary_lsn = seen
            .iter()
            .filter(|x| x.role == Role::Primary)
            .map(|x| x.lsn)
            .max();
        Ok(ReplicationStatus {
            resource: resource.clone(),
            sites: res
                .sites
                .iter()
                .zip(seen)
                .map(|(s, x)| SiteReplication {
                    site: s.site.clone(),
                    role: x.role,
                    lag: match x.role {
                        Role::Primary => Some(Duration::ZERO),
                        Role::Replica => x.lag,
                        _ => None,
                    },
                    lag_bytes: match (x.role, primary_lsn) {
                        (Role::Primary, _) => Some(0),
                        (Role::Replica, Some(p)) => Some(p.saturating_sub(x.lsn)),
                        _ => None,
                    },
                })
                .collect(),
        })
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        let res = self.resource(resource)?;
        let s = Self::site(res, site)?;
        let _g = self.lock(resource).await?;
        self.admit(resource, ctx.epoch).await?;
        let ctl = Control::new(s);
        if ctx.drill {
            let drill = ctl.drill_dir();
            ctl.stop(&drill, "immediate", ctx.timeout).await.ok();
            ctl.sys(
                "rm",
                &["-rf".into(), drill.clone(), format!("{drill}.log")],
                ctx.timeout,
            )
            .await?;
            tracing::info!(resource = %resource, site = %site, "drill copy removed");
            return Ok(());
        }
        let config::FenceMode::Stop = res.fence;
        // The signal first: whatever starts the server again, even if the stop below fails
        // half-way, starts a read-only standby, never a primary.
        ctl.sys_ok(
            "touch",
            &[format!("{}/standby.signal", ctl.data())],
            ctx.timeout,
        )
        .await?;
        let was_running = ctl.running(&ctl.data()).await?;
        ctl.stop(&ctl.data(), "fast", ctx.timeout).await?;
        let cd = ctl.controldata().await?;
        let primary_shutdown = cd
            .get("Database cluster state")
            .is_some_and(|v| v == "shut down");
        tracing::info!(resource = %resource, site = %site, was_running, "fenced: stopped, standby.signal written");
        let lsn = cd
            .get("Latest checkpoint location")
            .filter(|_| primary_shutdown)
            .cloned();
        self.update(resource, |st| {
            st.fenced.insert(site.clone(), lsn);
        })
        .await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        let res = self.resource(resource)?;
        let s = Self::site(res, site)?;
        let _g = self.lock(resource).await?;
        self.admit(resource, ctx.epoch).await?;
        let ctl = Control::new(s);
        if ctx.drill {
            let Some(port) = s.drill_port else {
                return Err(BackendError::Unsupported(format!(
                    "site {site} has no drill_port for an isolated copy"
                )));
            };
            let drill = ctl.drill_dir();
            ctl.stop(&drill, "immediate", ctx.timeout).await.ok();
            ctl.sys("rm", &["-rf".into(), drill.clone()], ctx.timeout)
                .await?;
            ctl.bin_ok(
                "pg_basebackup",
                &[
                    "-d".into(),
                    format!(
                        "{}{}",
                        conninfo(&[
                            ("host", &s.host),
                            ("port", &s.port.to_string()),
                            ("user", &res.user),
                        ]),
                        tls_words(s)
                    ),
                    "-D".into(),
                    drill.clone(),
                    "-X".into(),
                    "stream".into(),
                    "-c".into(),
                    "fast".into(),
                ],
                ctx.timeout,
            )
            .await?;
            ctl.sys(
                "rm",
                &["-f".into(), format!("{drill}/standby.signal")],
                ctx.timeout,
            )
            .await?;
            ctl.start(&drill, port, &[("archive_mode", "off")], ctx.timeout)
                .await?;
            tracing::info!(resource = %resource, site = %site, port, "drill copy started");
            return Ok(Promoted {
                rpo: None,
                position: Some(format!("drill copy on port {port}")),
            });
        }
        if !ctx.force {
            self.refuse_beside_a_writable_site(res, site).await?;
        }
        let deadline = Instant::now() + ctx.timeout.saturating_sub(Duration::from_secs(1));
        let client = match connect(res, s, None).await {
            Ok(c) => c,
            Err(e) => {
                // A stopped server (fenced, or crashed) is started first; a fenced one comes
                // up as a standby (its standby.signal) and is promoted below.
                if ctl.running(&ctl.data()).await? {
                    return Err(e);
                }
                ctl.start(&ctl.data(), s.port, &[], ctx.timeout).await?;
                connect(res, s, None).await?
            }
        };
        let state = self.state(resource).await?;
        if !in_recovery(&client).await? {
            // A read-only default may be left by the read-only fence of earlier versions.
            for sql in [
                "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()",
            ] {
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| pg_err(site, "lifting read-only", &e))?;
            }
            self.update(resource, |st| {
                st.fenced.remove(site);
            })
            .await?;
            return Ok(Promoted {
                rpo: None,
                position: Some("already primary".into()),
            });
        }
        // A planned switchover: replay everything the fenced primary wrote, its shutdown
        // checkpoint record included (past its start), so the new timeline begins after it.
        let mut clean = false;
        for (other, lsn) in &state.fenced {
            if other == site {
                continue;
            }
            if let Some(target) = lsn.as_deref().and_then(parse_lsn) {
                wait_replayed(&client, site, target + 1, deadline).await?;
                clean = true;
            }
        }
        let rpo = if clean {
            Duration::ZERO
        } else {
            let row = client
                .query_one(
                    "SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8",
                    &[],
                )
                .await
                .map_err(|e| pg_err(site, "reading the replay time", &e))?;
            Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0))
        };
        let wait = i32::try_from(left(deadline).as_secs()).unwrap_or(i32::MAX);
        let ok: bool = client
            .query_one("SELECT pg_promote(true, $1)", &[&wait])
            .await
            .map_err(|e| pg_err(site, "pg_promote", &e))?
            .get(0);
        if !ok {
            return Err(BackendError::Unavailable(format!(
                "{site} did not finish promotion within {wait} s"
            )));
        }
        let position = format_lsn(current_lsn(&client).await?);
        self.update(resource, |st| {
            st.fenced.remove(site);
        })
        .await?;
        tracing::info!(resource = %resource, site = %site, %position, ?rpo, clean, epoch = %ctx.epoch, "promoted");
        Ok(Promoted {
            rpo: Some(rpo),
            position: Some(position),
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
        let p = Self::site(res, primary)?;
        let _g = self.lock(resource).await?;
        self.admit(resource, ctx.epoch).await?;
        let pc = connect(res, p, None).await?;
        if in_recovery(&pc).await? {
            return Err(BackendError::Refused(format!(
                "{primary} is a standby: promote it before reprotecting towards it"
            )));
        }
        // Without this CHECKPOINT, pg_rewind may say "no rewind required" and the old
        // primary would hang as a standby on the wrong timeline.
        pc.batch_execute("CHECKPOINT")
            .await
            .map_err(|e| pg_err(primary, "CHECKPOINT", &e))?;
        let lineage = self.lineage(resource, primary, &pc).await;
        let deadline = Instant::now() + ctx.timeout;
        for s in res.sites.iter().filter(|s| &s.site != primary) {
            let ctl = Control::new(s);
            match connect(res, s, None).await {
                Ok(c) if in_recovery(&c).await? => {
                    match Self::standby_divergence(&c, lineage.as_ref()).await? {
                        Divergence::None(why) => {
                            point_at(&c, &Self::source_conninfo(res, p, &s.site)).await?;
                            tracing::info!(resource = %resource, site = %s.site, follows = %primary, why, "standby pointed at the primary");
                        }
                        Divergence::Possible(why) => {
                            tracing::warn!(resource = %resource, site = %s.site, why, "a standby off the primary's history: stopping it");
                            ctl.stop(&ctl.data(), "fast", left(deadline)).await?;
                            self.rewind_and_follow(
                                res,
                                s,
                                p,
                                lineage.as_ref(),
                                Some(why),
                                deadline,
                            )
                            .await?;
                        }
                    }
                }
                Ok(_) => {
                    tracing::warn!(resource = %resource, site = %s.site, "a second primary is running (split brain): stopping it");
                    // The same signal as a fence: a restart now brings up a standby.
                    ctl.sys_ok(
                        "touch",
                        &[format!("{}/standby.signal", ctl.data())],
                        left(deadline),
                    )
                    .await?;
                    ctl.stop(&ctl.data(), "fast", left(deadline)).await?;
                    let why = Some("it ran as a second primary".to_owned());
                    self.rewind_and_follow(res, s, p, lineage.as_ref(), why, deadline)
                        .await?;
                }
                Err(_) => {
                    if ctl.running(&ctl.data()).await? {
                        return Err(BackendError::Unavailable(format!(
                            "{} runs but cannot be reached",
                            s.site
                        )));
                    }
                    self.rewind_and_follow(res, s, p, lineage.as_ref(), None, deadline)
                        .await?;
                }
            }
            self.update(resource, |st| {
                st.fenced.remove(&s.site);
            })
            .await?;
        }
        if wait {
            let target = current_lsn(&pc).await?;
            for s in res.sites.iter().filter(|s| &s.site != primary) {
                let mut first = None;
                loop {
                    let streaming = match connect(res, s, None).await {
                        Ok(c) => {
                            let st: Option<String> = c
                                .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                                .await
                                .ok()
                                .flatten()
                                .map(|r| r.get(0));
                            let lsn = current_lsn(&c).await?;
                            let start = *first.get_or_insert(lsn.min(target));
                            let _ = self.inner.progress.send(Progress {
                                resource: resource.clone(),
                                site: s.site.clone(),
                                operation: Operation::CatchUp,
                                file: None,
                                bytes_done: lsn.min(target) - start,
                                bytes_total: target - start,
                            });
                            st.as_deref() == Some("streaming") && lsn >= target
                        }
                        Err(_) => false,
                    };
                    if streaming {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(BackendError::Timeout(format!(
                            "{} is not streaming from {primary} and caught up yet",
                            s.site
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracing::info!(resource = %resource, primary = %primary, wait, epoch = %ctx.epoch, "reprotected");
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
        let s = Self::site(res, site)?;
        let port = if ctx.drill {
            Some(s.drill_port.ok_or_else(|| {
                BackendError::Unsupported(format!("site {site} has no drill_port"))
            })?)
        } else {
            None
        };
        let c = connect(res, s, port).await?;
        match request {
            IntegrityRequest::Check => {
                let tables = table_list(res, &c).await?;
                let mine = table_sums(&c, &tables).await?;
                let my_lsn = current_lsn(&c).await?;
                let mut mismatches = Vec::new();
                if !ctx.drill {
                    for other in res.sites.iter().filter(|o| &o.site != site) {
                        let Ok(oc) = connect(res, other, None).await else {
                            continue;
                        };
                        if current_lsn(&oc).await? != my_lsn {
                            continue;
                        }
                        let theirs = table_sums(&oc, &tables).await?;
                        for (t, sum) in &mine {
                            if theirs.get(t).is_some_and(|x| x != sum) {
                                mismatches.push(Mismatch {
                                    key: format!("table/{t}"),
                                    problem: format!(
                                        "differs from {} at the same LSN {}",
                                        other.site,
                                        format_lsn(my_lsn)
                                    ),
                                });
                            }
                        }
                    }
                }
                Ok(IntegrityReport {
                    manifest: manifest_of_sums(&mine),
                    mismatches,
                })
            }
            IntegrityRequest::Mark { label } => {
                self.admit(resource, ctx.epoch).await?;
                if in_recovery(&c).await? {
                    return Err(BackendError::Refused(format!(
                        "{site} is a standby: markers are written at the primary"
                    )));
                }
                let t = quote_table(&res.marker_table);
                c.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {t} (label text NOT NULL, n int NOT NULL, \
                     epoch bigint NOT NULL, site text NOT NULL, written_at timestamptz NOT NULL \
                     DEFAULT now(), payload text NOT NULL, PRIMARY KEY (label, n))"
                ))
                .await
                .map_err(|e| pg_err(site, "creating the marker table", &e))?;
                let epoch = ctx.epoch.get() as i64;
                for n in 0..2i32 {
                    c.execute(
                        &format!(
                            "INSERT INTO {t} (label, n, epoch, site, payload) \
                             VALUES ($1, $2, $3, $4, md5(random()::text) || repeat(md5($1), $2 + 1)) \
                             ON CONFLICT (label, n) DO UPDATE SET epoch = EXCLUDED.epoch, \
                             site = EXCLUDED.site, written_at = now(), payload = EXCLUDED.payload"
                        ),
                        &[label, &n, &epoch, &site.as_str()],
                    )
                    .await
                    .map_err(|e| pg_err(site, "writing markers", &e))?;
                }
                let mut manifest = Manifest::default();
                for n in 0..2i32 {
                    if let Some(e) = marker_entry(&c, &res.marker_table, label, n).await? {
                        manifest.entries.insert(format!("marker/{label}/{n}"), e);
                    }
                }
                tracing::info!(resource = %resource, site = %site, label, "drill markers written");
                Ok(IntegrityReport {
                    manifest,
                    mismatches: Vec::new(),
                })
            }
            IntegrityRequest::Verify { expected } => {
                let mut have = Manifest::default();
                let mut bad = Vec::new();
                let tables: Vec<String> = expected
                    .entries
                    .keys()
                    .filter_map(|k| k.strip_prefix("table/"))
                    .map(str::to_owned)
                    .collect();
                for (t, sum) in table_sums(&c, &tables).await? {
                    have.entries.insert(
                        format!("table/{t}"),
                        ManifestEntry {
                            size: sum.0,
                            checksum: sum.1,
                            modified: None,
                        },
                    );
                }
                for key in expected.entries.keys() {
                    if let Some(rest) = key.strip_prefix("marker/") {
                        let parsed = rest
                            .rsplit_once('/')
                            .and_then(|(l, n)| n.parse::<i32>().ok().map(|n| (l, n)));
                        match parsed {
                            Some((label, n)) => {
                                if let Some(e) =
                                    marker_entry(&c, &res.marker_table, label, n).await?
                                {
                                    have.entries.insert(key.clone(), e);
                                }
                            }
                            None => bad.push(Mismatch {
                                key: key.clone(),
                                problem: "not a marker key (marker/<label>/<n>)".into(),
                            }),
                        }
                    } else if !key.starts_with("table/") {
                        bad.push(Mismatch {
                            key: key.clone(),
                            problem: "not a key this backend writes (table/… or marker/…)".into(),
                        });
                    }
                }
                bad.extend(have.verify(expected));
                Ok(IntegrityReport {
                    manifest: have,
                    mismatches: bad,
                })
            }
        }
    }
}
