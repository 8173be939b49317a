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
//! - **fence**: `pg_ctl stop -m fast` (a clean shutdown also streams the last WAL to the
//!   standbys; its checkpoint LSN is remembered), or, with `fence = "read_only"`,
//!   `default_transaction_read_only` plus ending the open sessions.
//! - **promote**: when another site was fenced with a known final LSN, first waits until this
//!   standby has replayed it — a planned switchover loses nothing (RPO 0); then
//!   `pg_promote()`. A stopped server is started. With `ctx.drill`: a `pg_basebackup` of the
//!   site started alone on its `drill_port` (unsupported without one); fence with `ctx.drill`
//!   removes it.
//! - **reprotect**: `CHECKPOINT` on the new primary; every other site follows it: a running
//!   standby is pointed at it; a stopped (or still running) old primary is first started
//!   alone (no TCP, a private socket), its chosen tables compared row by row with the new
//!   primary's, and the rows only it holds — writes it took after the split — saved under
//!   `save_dir` and reported ([`PostgresReplication::saved_aside`]); then `pg_rewind`,
//!   started as a standby; with `wait`, until it streams and has replayed the primary's LSN
//!   (progress in bytes of WAL: [`PostgresReplication::subscribe`]).
//!   If the old primary cannot be started to compare, the rewind is refused: nothing is
//!   dropped silently.
//! - **integrity**: `Check` checksums the chosen tables (count and md5 of the ordered rows,
//!   keys `table/<schema.table>`) and compares them with every other site at the same LSN;
//!   `Mark` inserts rows into the marker table (keys `marker/<label>/<n>`); `Verify` finds
//!   them (or tables) at a site, standbys included.
//!
//! Not done: choosing the standby with the most WAL among several (sites are promoted as the
//! election says), logical replication, managing `pg_hba.conf` or replication slots.

mod config;
mod control;

use std::collections::{BTreeMap, HashMap};
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

pub use config::{FenceMode, PgConfig, PgResource, PgResourceSpec, PgSite, PgSiteSpec, PgSpec};

use crate::fsutil::{IoContext, atomic_write};
use crate::progress::{Operation, Progress};
use config::CONNECT_TIMEOUT;
use control::{Control, format_lsn, parse_lsn};

/// Rows an old primary held that the new primary did not, saved before a rewind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SavedAside {
    /// The resource.
    pub resource: ResourceId,
    /// The old primary's site.
    pub site: SiteId,
    /// The directory holding one `<schema.table>.copy` file (COPY text format) per table.
    pub dir: PathBuf,
    /// Rows saved per table.
    pub rows: BTreeMap<String, u64>,
    /// When they were saved.
    pub at: SystemTime,
}

/// What is kept per resource (in the state file when one is configured).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ResState {
    epoch: Epoch,
    /// Sites this backend fenced, with the final LSN of a clean stop.
    fenced: BTreeMap<SiteId, Option<String>>,
    /// The last promotion replayed everything a fenced primary had: nothing diverged.
    clean_promotion: bool,
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

    /// The connection string a standby uses to follow `site`.
    fn source_conninfo(res: &PgResource, site: &PgSite, app: &SiteId) -> String {
        format!(
            "host={} port={} user={} application_name={}",
            site.host, site.port, res.user, app
        )
    }

    /// Starts the old primary alone, compares its tables with the new primary's and saves
    /// the rows only it holds. Leaves it stopped cleanly.
    async fn save_aside(
        &self,
        res: &PgResource,
        old: &PgSite,
        new_primary: &Client,
        timeout: Duration,
    ) -> Result<Option<SavedAside>, BackendError> {
        let ctl = Control::new(old);
        let sock = ctl.socket_dir();
        let t = Duration::from_secs(30);
        ctl.sys("mkdir", &["-p".into(), sock.clone()], t).await?;
        // A standby never took writes of its own.
        let standby = ctl
            .sys(
                "test",
                &["-e".into(), format!("{}/standby.signal", ctl.data())],
                t,
            )
            .await?
            .code
            == Some(0);
        if standby {
            return Ok(None);
        }
        ctl.start(
            &ctl.data(),
            old.port,
            &format!("-c listen_addresses='' -c unix_socket_directories='{sock}'"),
            timeout,
        )
        .await
        .map_err(|e| {
            BackendError::Refused(format!(
                "cannot start the old primary at {} alone to save its writes before the rewind \
                 ({e}); refusing to rewind it (its writes would be lost)",
                old.site
            ))
        })?;
        let result = self.diff_rows(res, old, &ctl, &sock, new_primary).await;
        let stopped = ctl.stop(&ctl.data(), "fast", timeout).await;
        let rows = result?;
        stopped?;
        if rows.values().all(Vec::is_empty) {
            return Ok(None);
        }
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let dir = self
            .inner
            .config
            .save_dir
            .join(format!("{}-{}-{stamp}", res.id, old.site));
        let counts: BTreeMap<String, u64> = rows
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(t, r)| (t.clone(), r.len() as u64))
            .collect();
        let saved = SavedAside {
            resource: res.id.clone(),
            site: old.site.clone(),
            dir: dir.clone(),
            rows: counts,
            at: SystemTime::now(),
        };
        let summary =
            serde_json::to_vec_pretty(&saved).map_err(|e| BackendError::Invalid(e.to_string()))?;
        tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
            std::fs::create_dir_all(&dir).ctx(dir.display())?;
            for (table, lines) in rows.iter().filter(|(_, r)| !r.is_empty()) {
                let path = dir.join(format!("{table}.copy"));
                let mut text = lines.join("\n");
                text.push('\n');
                atomic_write(&path, text.as_bytes()).ctx(path.display())?;
            }
            atomic_write(&dir.join("summary.json"), &summary).ctx(dir.display())
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

    async fn diff_rows(
        &self,
        res: &PgResource,
        old: &PgSite,
        ctl: &Control,
        sock: &str,
        new_primary: &Client,
    ) -> Result<BTreeMap<String, Vec<String>>, BackendError> {
        let t = Duration::from_secs(120);
        let psql = |sql: String| {
            let args: Vec<String> = vec![
                "-X".into(),
                "-q".into(),
                "-At".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-h".into(),
                sock.to_owned(),
                "-p".into(),
                old.port.to_string(),
                "-U".into(),
                res.user.clone(),
                "-d".into(),
                res.database.clone(),
                "-c".into(),
                sql,
            ];
            async move { ctl.bin_ok("psql", &args, t).await }
        };
        let tables: Vec<String> = if res.tables.is_empty() {
            psql(
                "SELECT format('%s.%s', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
                    .into(),
            )
            .await?
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
        } else {
            res.tables.clone()
        };
        let mut out = BTreeMap::new();
        for table in tables {
            let q = quote_table(&table);
            let old_rows = psql(format!("COPY (SELECT * FROM {q}) TO STDOUT")).await;
            let old_rows = match old_rows {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(site = %old.site, table, error = %e, "table not readable at the old primary");
                    continue;
                }
            };
            let new_rows = copy_rows(new_primary, &q).await.unwrap_or_default();
            let mut have: HashMap<&str, usize> = HashMap::new();
            for l in new_rows.lines() {
                *have.entry(l).or_default() += 1;
            }
            let mut only_old = Vec::new();
            for l in old_rows.lines().filter(|l| !l.is_empty()) {
                match have.get_mut(l) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => only_old.push(l.to_owned()),
                }
            }
            out.insert(table, only_old);
        }
        Ok(out)
    }

    async fn rewind_and_follow(
        &self,
        res: &PgResource,
        old: &PgSite,
        primary: &PgSite,
        primary_client: &Client,
        state: &ResState,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let ctl = Control::new(old);
        // Divergent writes are possible unless the last promotion replayed everything this
        // site had when it was fenced.
        let clean =
            state.clean_promotion && state.fenced.get(&old.site).is_some_and(Option::is_some);
        if !clean {
            self.save_aside(res, old, primary_client, timeout).await?;
        }
        let source = format!(
            "host={} port={} user={} dbname={}",
            primary.host, primary.port, res.user, res.database
        );
        let out = ctl
            .bin(
                "pg_rewind",
                &[
                    format!("--target-pgdata={}", ctl.data()),
                    format!("--source-server={source}"),
                    "--write-recovery-conf".into(),
                ],
                timeout,
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
        ctl.sys(
            "touch",
            &[format!("{}/standby.signal", ctl.data())],
            Duration::from_secs(30),
        )
        .await?;
        ctl.start(&ctl.data(), old.port, "", timeout).await?;
        let c = connect(res, old, None).await?;
        point_at(&c, &Self::source_conninfo(res, primary, &old.site)).await
    }
}

fn quote_table(t: &str) -> String {
    t.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
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
    let mut cfg = match &site.conninfo {
        Some(extra) => tokio_postgres::Config::from_str(extra.expose()).map_err(|e| {
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
    let fut = cfg.connect(NoTls);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), fut)
        .await
        .map_err(|_| {
            BackendError::Unavailable(format!("site {}: connection timed out", site.site))
        })?
        .map_err(|e| pg_err(&site.site, "connecting", &e))?;
    let name = site.site.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(site = %name, error = %e, "connection ended");
        }
    });
    Ok(client)
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

async fn copy_rows(c: &Client, quoted: &str) -> Result<String, BackendError> {
    use futures::TryStreamExt;
    let stream = c
        .copy_out(&format!("COPY (SELECT * FROM {quoted}) TO STDOUT"))
        .await
        .map_err(|e| BackendError::Unavailable(format!("COPY {quoted}: {e}")))?;
    let chunks: Vec<bytes::Bytes> = stream
        .try_collect()
        .await
        .map_err(|e| BackendError::Unavailable(format!("COPY {quoted}: {e}")))?;
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&c);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
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
                          ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END)::float8, \
                         current_setting('default_transaction_read_only')",
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
                    let ro: String = r.get(3);
                    let role = if recovery {
                        Role::Replica
                    } else if ro == "on" && state.fenced.contains_key(&s.site) {
                        Role::Fenced
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
        let lsn = match res.fence {
            config::FenceMode::Stop => {
                let was_running = ctl.running(&ctl.data()).await?;
                ctl.stop(&ctl.data(), "fast", ctx.timeout).await?;
                let cd = ctl.controldata().await?;
                let primary_shutdown = cd
                    .get("Database cluster state")
                    .is_some_and(|v| v == "shut down");
                tracing::info!(resource = %resource, site = %site, was_running, "fenced: stopped");
                cd.get("Latest checkpoint location")
                    .filter(|_| primary_shutdown)
                    .cloned()
            }
            config::FenceMode::ReadOnly => {
                let c = connect(res, s, None).await?;
                for sql in [
                    "ALTER SYSTEM SET default_transaction_read_only = on",
                    "SELECT pg_reload_conf()",
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                ] {
                    c.batch_execute(sql)
                        .await
                        .map_err(|e| pg_err(site, "making it read-only", &e))?;
                }
                tracing::info!(resource = %resource, site = %site, "fenced: read-only");
                if in_recovery(&c).await? {
                    None
                } else {
                    Some(format_lsn(current_lsn(&c).await?))
                }
            }
        };
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
                    "-h".into(),
                    s.host.clone(),
                    "-p".into(),
                    s.port.to_string(),
                    "-U".into(),
                    res.user.clone(),
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
            ctl.start(&drill, port, "-c archive_mode=off", ctx.timeout)
                .await?;
            tracing::info!(resource = %resource, site = %site, port, "drill copy started");
            return Ok(Promoted {
                rpo: None,
                position: Some(format!("drill copy on port {port}")),
            });
        }
        let client = match connect(res, s, None).await {
            Ok(c) => c,
            Err(e) => {
                // A stopped server (fenced, or crashed) is started first.
                if ctl.running(&ctl.data()).await? {
                    return Err(e);
                }
                ctl.start(&ctl.data(), s.port, "", ctx.timeout).await?;
                connect(res, s, None).await?
            }
        };
        let state = self.state(resource).await?;
        if !in_recovery(&client).await? {
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
        // A planned switchover: replay everything the fenced primary wrote.
        let deadline = Instant::now() + ctx.timeout.saturating_sub(Duration::from_secs(1));
        let mut clean = false;
        for (other, lsn) in &state.fenced {
            if other == site {
                continue;
            }
            if let Some(target) = lsn.as_deref().and_then(parse_lsn) {
                wait_replayed(&client, site, target, deadline).await?;
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
        let ok: bool = client
            .query_one("SELECT pg_promote(true, 60)", &[])
            .await
            .map_err(|e| pg_err(site, "pg_promote", &e))?
            .get(0);
        if !ok {
            return Err(BackendError::Unavailable(format!(
                "{site} did not finish promotion within 60 s"
            )));
        }
        let position = format_lsn(current_lsn(&client).await?);
        self.update(resource, |st| {
            st.fenced.remove(site);
            st.clean_promotion = clean;
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
        let state = self.state(resource).await?;
        let deadline = Instant::now() + ctx.timeout;
        for s in res.sites.iter().filter(|s| &s.site != primary) {
            let ctl = Control::new(s);
            let left = deadline.saturating_duration_since(Instant::now());
            match connect(res, s, None).await {
                Ok(c) if in_recovery(&c).await? => {
                    point_at(&c, &Self::source_conninfo(res, p, &s.site)).await?;
                    tracing::info!(resource = %resource, site = %s.site, follows = %primary, "standby pointed at the primary");
                }
                Ok(_) => {
                    tracing::warn!(resource = %resource, site = %s.site, "a second primary is running (split brain): stopping it");
                    ctl.stop(&ctl.data(), "fast", left).await?;
                    self.rewind_and_follow(res, s, p, &pc, &state, left).await?;
                }
                Err(_) => {
                    if ctl.running(&ctl.data()).await? {
                        return Err(BackendError::Unavailable(format!(
                            "{} runs but cannot be reached",
                            s.site
                        )));
                    }
                    self.rewind_and_follow(res, s, p, &pc, &state, left).await?;
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
