//! Configuration of the PostgreSQL streaming backend.

use std::path::PathBuf;
use std::time::Duration;

use std::path::Path;
use std::str::FromStr;

use idns_core::{ConfigError, Problems, ResourceId, Secret, SiteId};
use serde::{Deserialize, Serialize};

/// PostgreSQL replication as written in a configuration file.
///
/// ```
/// # use idns_replication::postgres::{PgConfig, PgSpec};
/// let spec: PgSpec = serde_json::from_str(r#"{
///   "state_file": "/var/lib/idns/pg-epochs.json",
///   "save_dir": "/var/lib/idns/split-brain",
///   "resources": [{
///     "id": "orders",
///     "tables": ["public.orders", "public.customers"],
///     "sites": [
///       { "site": "dc1", "host": "10.0.1.5", "port": 5432, "data_dir": "/var/lib/postgresql/15/main",
///         "command_prefix": ["ssh", "postgres@10.0.1.5"] },
///       { "site": "dc2", "host": "10.0.2.5", "port": 5432, "data_dir": "/var/lib/postgresql/15/main",
///         "command_prefix": ["ssh", "postgres@10.0.2.5"] }
///     ]
///   }]
/// }"#)?;
/// let cfg = PgConfig::try_from(spec)?;
/// assert_eq!(cfg.resources[0].sites[1].bin_dir.to_str(), Some("/usr/lib/postgresql/15/bin"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSpec {
    /// The replicated databases (clusters).
    pub resources: Vec<PgResourceSpec>,
    /// Keeps the highest epoch accepted per resource across restarts (recommended).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// Where rows that only an old primary holds are saved before it is rewound (on the
    /// controller's machine).
    pub save_dir: PathBuf,
}

/// One cluster replicated between sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgResourceSpec {
    /// The resource id.
    pub id: String,
    /// The sites (at least two).
    pub sites: Vec<PgSiteSpec>,
    /// Database the backend connects to (default `postgres`).
    #[serde(default = "default_db")]
    pub database: String,
    /// User the backend connects as and replicates with (default `postgres`).
    #[serde(default = "default_user")]
    pub user: String,
    /// Tables (`schema.table`) checksummed by integrity checks and compared before a rewind;
    /// empty: every table outside the system schemas.
    #[serde(default)]
    pub tables: Vec<String>,
    /// The drill marker table (default `public.idns_markers`; created on first use).
    #[serde(default = "default_marker_table")]
    pub marker_table: String,
    /// How to fence a primary: `stop`, the only mode (and the default): a `standby.signal` in
    /// its data directory, then a clean shutdown (which also sends the last WAL to the
    /// standbys), so that a restart brings it up read-only, as a standby. The former
    /// `read_only` mode is refused: a read-only default is undone by any client
    /// (`BEGIN READ WRITE`), so it fences nothing.
    #[serde(default)]
    pub fence: FenceMode,
}

/// How a primary is fenced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
#[non_exhaustive]
pub enum FenceMode {
    /// Write `standby.signal` into the data directory, then stop the server
    /// (`pg_ctl stop -m fast`): it cannot take writes, and whatever starts it again (a service
    /// manager, an operator) starts a read-only standby, never a primary.
    #[default]
    Stop,
}

impl TryFrom<String> for FenceMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "stop" => Ok(FenceMode::Stop),
            "read_only" => Err(
                "fence \"read_only\" is no longer offered: any client undoes a \
                                read-only default (BEGIN READ WRITE), so it fences nothing; use \
                                \"stop\" (stops the server and leaves a standby.signal)"
                    .into(),
            ),
            other => Err(format!(
                "unknown fence mode {:?}: the only mode is \"stop\"",
                other.chars().take(100).collect::<String>()
            )),
        }
    }
}

/// One site's server and the local control of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSiteSpec {
    /// The site id.
    pub site: String,
    /// Host the server listens on, as the controller and the other sites reach it.
    pub host: String,
    /// Its port (passed on the command line when the backend starts it).
    pub port: u16,
    /// Its data directory (on the site's machine).
    pub data_dir: PathBuf,
    /// The PostgreSQL binaries (default `/usr/lib/postgresql/15/bin`).
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// Runs the control commands on the site's machine, e.g. `["ssh", "postgres@db2"]`
    /// (default: run locally). It must end in something that hands one command line to a
    /// POSIX shell, as `ssh host`, `sh -c` or `sudo -u postgres sh -c` do: the command and each
    /// of its arguments are quoted for that shell and passed as one last argument. The
    /// commands run as whoever the prefix logs in as (`os_user` is not applied).
    #[serde(default)]
    pub command_prefix: Vec<String>,
    /// The OS user that runs the server's programs; when the controller runs as root on the
    /// site's machine they run through `runuser -u <user> --` (default `postgres`).
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// Extra key-value connection parameters for the backend's own connections, in libpq
    /// syntax (e.g. `password=...`; never shown). `sslmode` (`disable`, the default, `prefer`,
    /// `require`, `verify-ca`, `verify-full`) and `sslrootcert` (an absolute path to a PEM file
    /// of the CAs to trust, needed by `verify-ca` and `verify-full`) also reach `pg_rewind`,
    /// `pg_basebackup` and the `primary_conninfo` of standbys following this site: the file
    /// must then be at that path on the other sites' machines too.
    #[serde(default)]
    pub conninfo: Option<Secret>,
    /// A port for drill copies at this site (drills are unsupported without one).
    #[serde(default)]
    pub drill_port: Option<u16>,
}

impl PgSpec {
    /// Takes the relative paths (`save_dir`, `state_file`) relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.save_dir.is_relative() {
            self.save_dir = base.join(&self.save_dir);
        }
        if let Some(f) = &mut self.state_file
            && f.is_relative()
        {
            *f = base.join(&*f);
        }
    }
}

fn default_db() -> String {
    "postgres".into()
}
fn default_user() -> String {
    "postgres".into()
}
fn default_marker_table() -> String {
    "public.idns_markers".into()
}
fn default_bin_dir() -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin")
}
fn default_os_user() -> String {
    "postgres".into()
}

/// Validated PostgreSQL settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgConfig {
    /// The resources.
    pub resources: Vec<PgResource>,
    /// Where accepted epochs are kept.
    pub state_file: Option<PathBuf>,
    /// Where rows saved aside go.
    pub save_dir: PathBuf,
}

/// A validated resource.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgResource {
    /// The resource id.
    pub id: ResourceId,
    /// The sites.
    pub sites: Vec<PgSite>,
    /// Database connected to.
    pub database: String,
    /// User connected as.
    pub user: String,
    /// Tables compared (empty: all user tables).
    pub tables: Vec<String>,
    /// The marker table.
    pub marker_table: String,
    /// How a primary is fenced.
    pub fence: FenceMode,
}

/// A validated site.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgSite {
    /// The site id.
    pub site: SiteId,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Binaries.
    pub bin_dir: PathBuf,
    /// Command prefix.
    pub command_prefix: Vec<String>,
    /// OS user of the server.
    pub os_user: String,
    /// Extra connection parameters (never shown).
    pub conninfo: Option<Secret>,
    /// Drill port.
    pub drill_port: Option<u16>,
}

impl PgResource {
    /// The site's settings.
    pub fn site(&self, site: &SiteId) -> Option<&PgSite> {
        self.sites.iter().find(|s| &s.site == site)
    }
}

fn table_name_ok(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !p.as_bytes()[0].is_ascii_digit()
        })
}

impl TryFrom<PgSpec> for PgConfig {
    type Error = ConfigError;

    fn try_from(spec: PgSpec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        let mut push = |path: String, value: String, problem: &str| p.push(path, value, problem);
        if spec.resources.is_empty() {
            push("resources".into(), String::new(), "lists no resource");
        }
        if !spec.save_dir.is_absolute() {
            push(
                "save_dir".into(),
                spec.save_dir.display().to_string(),
                "must be an absolute path",
            );
        }
        if let Some(f) = &spec.state_file
            && !f.is_absolute()
        {
            push(
                "state_file".into(),
                f.display().to_string(),
                "must be an absolute path",
            );
        }
        let mut resources: Vec<PgResource> = Vec::new();
        for (i, r) in spec.resources.iter().enumerate() {
            let at = |f: &str| format!("resources[{i}].{f}");
            let id = ResourceId::try_from(r.id.as_str())
                .map_err(|e| push(at("id"), r.id.clone(), e.problem))
                .ok();
            if let Some(id) = &id
                && resources.iter().any(|x| &x.id == id)
            {
                push(at("id"), r.id.clone(), "is used by another resource");
            }
            for (j, t) in r.tables.iter().enumerate() {
                if !table_name_ok(t) {
                    push(
                        at(&format!("tables[{j}]")),
                        t.clone(),
                        "must be schema.table (letters, digits, '_')",
                    );
                }
            }
            if !table_name_ok(&r.marker_table) {
                push(
                    at("marker_table"),
                    r.marker_table.clone(),
                    "must be schema.table (letters, digits, '_')",
                );
            }
            if r.sites.len() < 2 {
                push(
                    at("sites"),
                    r.sites.len().to_string(),
                    "needs at least two sites",
                );
            }
            let mut sites: Vec<PgSite> = Vec::new();
            for (j, s) in r.sites.iter().enumerate() {
                let at = |f: &str| format!("resources[{i}].sites[{j}].{f}");
                let site = SiteId::try_from(s.site.as_str())
                    .map_err(|e| push(at("site"), s.site.clone(), e.problem))
                    .ok();
                if let Some(site) = &site
                    && sites.iter().any(|x| &x.site == site)
                {
                    push(at("site"), s.site.clone(), "is listed twice");
                }
                if s.port == 0 {
                    push(at("port"), "0".into(), "must be a port number");
                }
                if s.drill_port == Some(s.port) {
                    push(
                        at("drill_port"),
                        s.port.to_string(),
                        "must differ from port",
                    );
                }
                if !s.data_dir.is_absolute() {
                    push(
                        at("data_dir"),
                        s.data_dir.display().to_string(),
                        "must be an absolute path",
                    );
                }
                if s.host.is_empty() {
                    push(at("host"), String::new(), "is empty");
                }
                if let Some(c) = &s.conninfo {
                    match super::tls::ConnTls::parse(Some(c.expose())) {
                        Err(e) => push(at("conninfo"), c.to_string(), &e),
                        Ok(t) if tokio_postgres::Config::from_str(&t.rest).is_err() => push(
                            at("conninfo"),
                            c.to_string(),
                            "is not key=value connection parameters",
                        ),
                        Ok(_) => {}
                    }
                }
                if let Some(site) = site {
                    sites.push(PgSite {
                        site,
                        host: s.host.clone(),
                        port: s.port,
                        data_dir: s.data_dir.clone(),
                        bin_dir: s.bin_dir.clone(),
                        command_prefix: s.command_prefix.clone(),
                        os_user: s.os_user.clone(),
                        conninfo: s.conninfo.clone(),
                        drill_port: s.drill_port,
                    });
                }
            }
            if let Some(id) = id {
                resources.push(PgResource {
                    id,
                    sites,
                    database: r.database.clone(),
                    user: r.user.clone(),
                    tables: r.tables.clone(),
                    marker_table: r.marker_table.clone(),
                    fence: r.fence,
                });
            }
        }
        p.finish_with(PgConfig {
            resources,
            state_file: spec.state_file,
            save_dir: spec.save_dir,
        })
    }
}

/// How long a single connection attempt may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fence: &str) -> Result<PgSpec, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "save_dir": "/var/lib/idns/saved",
            "resources": [{
                "id": "db", "fence": fence,
                "sites": [
                    { "site": "a", "host": "127.0.0.1", "port": 5432, "data_dir": "/pg/a" },
                    { "site": "b", "host": "127.0.0.1", "port": 5433, "data_dir": "/pg/b" }
                ]
            }]
        }))
    }

    #[test]
    fn only_the_stop_fence_is_offered() {
        assert_eq!(spec("stop").unwrap().resources[0].fence, FenceMode::Stop);
        let e = spec("read_only").unwrap_err().to_string();
        assert!(
            e.contains("read_only") && e.contains("BEGIN READ WRITE"),
            "{e}"
        );
        let e = spec(&"x".repeat(1000)).unwrap_err().to_string();
        assert!(e.contains("unknown fence mode") && e.len() < 300, "{e}");
    }
}
