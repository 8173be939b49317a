//! The daemon's configuration: one TOML file with a `[daemon]` table and one or more
//! `[[services]]`.
//!
//! ```toml
//! [daemon]
//! listen = "127.0.0.1:9480"          # HTTP API and /metrics
//! token_file = "token"               # or token = "…" (at least 16 characters); commands need it
//! read_token_file = "read-token"     # optional: a token that may only read (dashboards, scrapers)
//! metrics_public = false             # true: /metrics without a token
//! max_connections_per_client = 16    # connections one client address may hold
//! # HTTPS instead of plain HTTP: PEM files, the key readable by its owner only
//! tls = { cert_file = "api.crt", key_file = "api.key" }
//! journal_dir = "state"              # one journal per service, and the embedded DNS state
//! reports_keep = 50                  # reports kept per service in <journal_dir>/reports
//! observers = ["local"]              # the vantage points this process probes as
//!
//! [[services]]
//! name = "www.example.test"          # … every field of idns-core's service configuration …
//! zone = "example.test"
//! dns = { backend = "embedded", listen = ["127.0.0.1:5353"] }
//! replication = { backend = "image", resources = [ … ] }
//! [[services.sites]]
//! …
//! ```
//!
//! A service holds every field `idns_core::ServiceConfig::from_toml` accepts (`name`, `zone`,
//! `record`, `ttl`, `sites` with their `probes`, `observers`, `policy`, `resources`,
//! `runbook`, `drill_name`, `seed`), plus:
//! - `dns`: idns-dns's `DnsSpec`, a table tagged by `backend` (`embedded`, `rfc2136`,
//!   `powerdns`); an embedded server's `zones` default to the service's zone, its `state_file`
//!   to a file in the journal directory;
//! - `replication`: idns-replication's `ReplicationSpec`, tagged the same way (`image`,
//!   `postgres`, `command`), or `backend = "none"` (the default).
//!
//! The daemon names no backend: each backend crate reads, checks and builds its own. Services
//! whose embedded DNS settings are identical share one server.
//!
//! Relative paths are taken relative to the directory of the configuration file.
//!
//! [`DaemonConfig::load`] checks everything before anything starts and lists *every* problem
//! with its field path and line: unknown keys, wrong types, missing fields, values out of
//! range, references to sites or resources that do not exist, probes that cannot be built.
//! Secrets (the API token, TSIG keys, API keys, database passwords) are never shown.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use idns_core::{BackendSpec, DnsName, ObserverId, Secret, ServiceConfig, ServiceSpec};
use idns_dns::{DnsConfig, DnsSpec};
use idns_replication::{ReplicationConfig, ReplicationSpec};
use serde::Deserialize;

use super::api::{ApiTls, MAX_CONNECTIONS, TlsFileError};
use super::parse::{Lines, Problem, Reader, join};

/// Shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Most reports `daemon.reports_keep` may keep per service.
pub const MAX_REPORTS_KEEP: usize = 10_000;

/// A checked daemon configuration: everything in it has been validated.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The `[daemon]` table.
    pub daemon: DaemonSettings,
    /// The services, in file order.
    pub services: Vec<ServiceEntry>,
}

/// The `[daemon]` table, checked.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Where the HTTP API and `/metrics` listen.
    pub listen: SocketAddr,
    /// The operator's bearer token: every request may carry it, commands need it (never shown).
    pub token: Secret,
    /// The read-only role's token: status, events, reports and `/metrics`, no commands.
    pub read_token: Option<Secret>,
    /// Whether `/metrics` is served without a token (default: no; it shows the topology).
    pub metrics_public: bool,
    /// Connections one client address may hold open at once.
    pub max_connections_per_client: usize,
    /// The API's certificate and key: with them it speaks HTTPS only.
    pub tls: Option<ApiTls>,
    /// One journal per service is kept here (and the embedded DNS servers' state).
    pub journal_dir: PathBuf,
    /// The observers this process probes as; a service runs those of them it lists.
    pub observers: Vec<ObserverId>,
    /// How often replication status is read (lag, roles) and fed to the election.
    pub replication_poll: Duration,
    /// How many recent events are kept per service for `/events`.
    pub event_log: usize,
    /// How many reports of finished runbooks are kept per service in
    /// `<journal_dir>/reports/` (the oldest are deleted).
    pub reports_keep: usize,
}

/// One service, checked.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// The election's configuration.
    pub config: ServiceConfig,
    /// The DNS backend.
    pub dns: DnsConfig,
    /// The replication backend; `None` for DNS failover only.
    pub replication: Option<ReplicationConfig>,
    /// The journal file.
    pub journal: PathBuf,
}

/// A configuration that was refused, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, when it came from one.
    pub file: Option<PathBuf>,
    /// The problems, in the order of the file.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_ref()
            .map(|p| format!(" {}", p.display()))
            .unwrap_or_default();
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration{file} ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The `[daemon]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSpec {
    #[serde(default = "defaults::listen")]
    listen: SocketAddr,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    journal_dir: PathBuf,
    #[serde(default = "defaults::observers")]
    observers: Vec<String>,
    #[serde(default = "defaults::replication_poll", with = "humantime_serde")]
    replication_poll: Duration,
    #[serde(default)]
    read_token: Option<Secret>,
    #[serde(default)]
    read_token_file: Option<PathBuf>,
    #[serde(default)]
    metrics_require_token: Option<bool>,
    #[serde(default)]
    metrics_public: bool,
    #[serde(default = "defaults::max_connections_per_client")]
    max_connections_per_client: usize,
    #[serde(default = "defaults::event_log")]
    event_log: usize,
    #[serde(default = "defaults::reports_keep")]
    reports_keep: usize,
    #[serde(default)]
    tls: Option<TlsSpec>,
}

/// `daemon.tls` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    cert_file: PathBuf,
    key_file: PathBuf,
}

mod defaults {
    use super::*;

    pub(super) fn listen() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9480)
    }
    pub(super) fn observers() -> Vec<String> {
        vec!["local".to_owned()]
    }
    pub(super) fn replication_poll() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn max_connections_per_client() -> usize {
        16
    }
    pub(super) fn event_log() -> usize {
        1000
    }
    pub(super) fn reports_keep() -> usize {
        50
    }
}

impl DaemonConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: Some(path.to_owned()),
            problems: vec![Problem {
                path: "(file)".into(),
                value: String::new(),
                problem: format!("cannot be read: {e}"),
                line: None,
            }],
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let base = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        Self::parse(&text, &base).map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Checks configuration text; relative paths in it are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<DaemonConfig, ConfigErrors> {
        let root: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigErrors {
                file: None,
                problems: vec![Problem {
                    path: "(syntax)".into(),
                    value: String::new(),
                    problem: e.message().trim().to_owned(),
                    line,
                }],
            }
        })?;
        let mut p = Reader::new(Lines::of(text));
        let result = check(&mut p, root, base);
        let mut problems = p.finish();
        if problems.is_empty() {
            if let Some(cfg) = result {
                return Ok(cfg);
            }
            problems.push(Problem {
                path: "(document)".into(),
                value: String::new(),
                problem: "is incomplete".into(),
                line: None,
            });
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        problems.dedup();
        Err(ConfigErrors {
            file: None,
            problems,
        })
    }

    /// What is allowed but unsafe in this configuration, one sentence each: `idnsd --check`
    /// prints them and `idnsd` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let d = &self.daemon;
        if !d.listen.ip().is_loopback() {
            if d.tls.is_none() {
                out.push(format!(
                    "daemon.listen = {}: the API listens beyond loopback in plain HTTP, so its \
                     tokens and commands cross the network unencrypted; set daemon.tls, listen \
                     on loopback behind a TLS proxy, or on a network only the operators reach",
                    d.listen
                ));
            }
            if d.metrics_public {
                out.push(format!(
                    "daemon.metrics_public = true with daemon.listen = {}: anyone who reaches \
                     the port reads the services' topology and health from /metrics",
                    d.listen
                ));
            }
        }
        out
    }

    /// A summary for `idnsd --check`, without secrets.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "API and metrics on {}://{}, journals in {}, observers {}",
            if self.daemon.tls.is_some() {
                "https"
            } else {
                "http"
            },
            self.daemon.listen,
            self.daemon.journal_dir.display(),
            list(&self.daemon.observers)
        );
        for s in &self.services {
            let dns = &s.dns;
            let repl = match &s.replication {
                None => "no replication".to_owned(),
                Some(r) => r.to_string(),
            };
            let sites: Vec<String> = s
                .config
                .sites()
                .iter()
                .map(|x| format!("{} (priority {})", x.id, x.priority))
                .collect();
            out.push_str(&format!(
                "\nservice {}: sites {}; {dns}; {repl}",
                s.config.name(),
                sites.join(", ")
            ));
        }
        out
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

fn check(p: &mut Reader, mut root: toml::Table, base: &Path) -> Option<DaemonConfig> {
    let daemon = root.remove("daemon");
    let services = root.remove("services");
    for key in root.keys() {
        p.push(
            key.clone(),
            "",
            "unknown key (expected the [daemon] table and [[services]])",
        );
    }
    let daemon = match daemon {
        Some(v) => check_daemon(p, v, base),
        None => {
            p.push(
                "daemon",
                "",
                "is missing: add a [daemon] table (listen, token or token_file, journal_dir)",
            );
            None
        }
    };
    let tables = match services {
        None => {
            p.push("services", "", "is missing: add one or more [[services]]");
            Vec::new()
        }
        Some(toml::Value::Array(a)) => {
            if a.is_empty() {
                p.push("services", "", "lists no service");
            }
            a
        }
        Some(other) => {
            p.push(
                "services",
                "",
                format!(
                    "must be an array of tables ([[services]]), not a {}",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    };
    let mut services = Vec::new();
    let mut complete = true;
    for (i, v) in tables.into_iter().enumerate() {
        match check_service(p, i, v, daemon.as_ref(), base) {
            Some(s) => services.push(s),
            None => complete = false,
        }
    }
    check_across(p, daemon.as_ref(), &services);
    let daemon = daemon?;
    complete.then_some(DaemonConfig { daemon, services })
}

fn check_daemon(p: &mut Reader, v: toml::Value, base: &Path) -> Option<DaemonSettings> {
    let spec: DaemonSpec = p.take(v, "daemon")?;
    let mut ok = true;
    if spec.journal_dir.as_os_str().is_empty() {
        // Resolved against the file's folder, it would scatter journals among the configs.
        p.push("daemon.journal_dir", "", "must name a directory");
        ok = false;
    }
    let mut journal_dir = spec.journal_dir;
    resolve(base, &mut journal_dir);
    let token = read_token(
        p,
        base,
        spec.token,
        spec.token_file,
        ("daemon.token", "daemon.token_file"),
    );
    let read_token = match (&spec.read_token, &spec.read_token_file) {
        (None, None) => Some(None),
        _ => read_token(
            p,
            base,
            spec.read_token,
            spec.read_token_file,
            ("daemon.read_token", "daemon.read_token_file"),
        )
        .map(Some),
    };
    if let (Some(t), Some(Some(r))) = (&token, &read_token)
        && t.expose() == r.expose()
    {
        p.push(
            "daemon.read_token",
            "",
            "is the operator token: give the read-only role a token of its own",
        );
        ok = false;
    }
    if spec.metrics_require_token.is_some() {
        p.push(
            "daemon.metrics_require_token",
            "",
            "was replaced by metrics_public: /metrics needs a token (either role) unless \
             metrics_public = true",
        );
        ok = false;
    }
    if !(1..=MAX_CONNECTIONS).contains(&spec.max_connections_per_client) {
        p.push(
            "daemon.max_connections_per_client",
            spec.max_connections_per_client,
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        );
        ok = false;
    }
    let mut observers = Vec::new();
    if spec.observers.is_empty() {
        p.push("daemon.observers", "[]", "needs at least one observer");
        ok = false;
    }
    for (i, o) in spec.observers.iter().enumerate() {
        match ObserverId::try_from(o.as_str()) {
            Ok(id) if observers.contains(&id) => {
                p.push(format!("daemon.observers[{i}]"), o, "is listed twice");
                ok = false;
            }
            Ok(id) => observers.push(id),
            Err(e) => {
                p.push(format!("daemon.observers[{i}]"), o, e.problem);
                ok = false;
            }
        }
    }
    if spec.replication_poll < Duration::from_millis(10)
        || spec.replication_poll > Duration::from_secs(3600)
    {
        p.push(
            "daemon.replication_poll",
            humantime::format_duration(spec.replication_poll),
            "must be between 10ms and 1h",
        );
        ok = false;
    }
    if !(16..=100_000).contains(&spec.event_log) {
        p.push(
            "daemon.event_log",
            spec.event_log,
            "must be between 16 and 100000",
        );
        ok = false;
    }
    if !(1..=MAX_REPORTS_KEEP).contains(&spec.reports_keep) {
        p.push(
            "daemon.reports_keep",
            spec.reports_keep,
            format!("must be between 1 and {MAX_REPORTS_KEEP}"),
        );
        ok = false;
    }
    let tls = match spec.tls {
        None => Some(None),
        Some(t) => read_tls(p, base, t).map(Some),
    };
    let token = token?;
    let read_token = read_token?;
    let tls = tls?;
    ok.then_some(DaemonSettings {
        listen: spec.listen,
        token,
        read_token,
        metrics_public: spec.metrics_public,
        max_connections_per_client: spec.max_connections_per_client,
        tls,
        journal_dir,
        observers,
        replication_poll: spec.replication_poll,
        event_log: spec.event_log,
        reports_keep: spec.reports_keep,
    })
}

/// Reads one role's token, given inline or in a file (`names`: the two keys), and checks it.
///
/// A token file that other users may read or write is refused: the token is the key to the
/// daemon's commands.
fn read_token(
    p: &mut Reader,
    base: &Path,
    inline: Option<Secret>,
    file: Option<PathBuf>,
    (key, file_key): (&str, &str),
) -> Option<Secret> {
    let (token, path) = match (inline, file) {
        (Some(_), Some(_)) => {
            p.push(
                file_key,
                "",
                format!("give either {key} or {file_key}, not both"),
            );
            return None;
        }
        (None, None) => {
            p.push(
                key,
                "",
                format!("is missing: set {key}, or {file_key} naming a file that holds it"),
            );
            return None;
        }
        (Some(t), None) => (t, key),
        (None, Some(mut f)) => {
            resolve(base, &mut f);
            let text = std::fs::metadata(&f).and_then(|meta| {
                check_private(&meta).map_err(|problem| {
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, problem)
                })?;
                std::fs::read_to_string(&f)
            });
            match text {
                Ok(text) => (Secret::new(text.trim()), file_key),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    p.push(file_key, f.display(), e.to_string());
                    return None;
                }
                Err(e) => {
                    p.push(file_key, f.display(), format!("cannot be read: {e}"));
                    return None;
                }
            }
        }
    };
    let s = token.expose();
    if s.chars().count() < MIN_TOKEN_LEN {
        p.push(
            path,
            "",
            format!("the token must be at least {MIN_TOKEN_LEN} characters"),
        );
        None
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.push(
            path,
            "",
            "the token must not contain spaces or control characters",
        );
        None
    } else {
        Some(token)
    }
}

/// Loads the API's certificate and key (`daemon.tls`); the key file must be private, as a
/// token file must.
fn read_tls(p: &mut Reader, base: &Path, spec: TlsSpec) -> Option<ApiTls> {
    let TlsSpec {
        mut cert_file,
        mut key_file,
    } = spec;
    resolve(base, &mut cert_file);
    resolve(base, &mut key_file);
    let private = std::fs::metadata(&key_file)
        .map_err(|e| format!("cannot be read: {e}"))
        .and_then(|meta| check_private(&meta));
    if let Err(problem) = private {
        p.push("daemon.tls.key_file", key_file.display(), problem);
        return None;
    }
    ApiTls::load(&cert_file, &key_file)
        .map_err(|e| match e {
            TlsFileError::Cert(problem) => {
                p.push("daemon.tls.cert_file", cert_file.display(), problem);
            }
            TlsFileError::Key(problem) => {
                p.push("daemon.tls.key_file", key_file.display(), problem);
            }
        })
        .ok()
}

/// Refuses a secret file that users other than its owner may read or write.
fn check_private(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "is open to other users (mode {mode:04o}): make it readable by its owner only \
             (chmod 600)"
        ));
    }
    Ok(())
}

fn check_service(
    p: &mut Reader,
    i: usize,
    v: toml::Value,
    daemon: Option<&DaemonSettings>,
    base: &Path,
) -> Option<ServiceEntry> {
    let path = format!("services[{i}]");
    let mut table = match v {
        toml::Value::Table(t) => t,
        other => {
            p.push(
                path,
                "",
                format!("must be a table ([[services]]), not a {}", other.type_str()),
            );
            return None;
        }
    };
    let dns = table.remove("dns");
    let replication = table.remove("replication");
    let zone = table
        .get("zone")
        .and_then(|z| z.as_str())
        .map(str::to_owned);

    let config = p
        .take::<ServiceSpec>(toml::Value::Table(table), &path)
        .and_then(|spec| match ServiceConfig::new(spec) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                p.extend(&path, e);
                None
            }
        });
    if let Some(cfg) = &config
        && let Err(e) = idns_probe::probes_for_service(cfg)
    {
        p.extend(&path, e);
    }

    let dns = match dns {
        Some(v) => check_dns(p, &path, v, zone.as_deref(), daemon, base),
        None => {
            p.push(
                join(&path, "dns"),
                "",
                "is missing: dns = { backend = \"embedded\" | \"rfc2136\" | \"powerdns\", ... }",
            );
            None
        }
    };
    let replication = match replication {
        Some(v) => check_replication(p, &path, v, base),
        None => Some(None),
    };

    let (config, dns, replication) = (config?, dns?, replication?);
    let mut ok = true;

    // The DNS backend must serve the service's zone.
    let zones = dns.zones();
    if !zones.contains(config.zone()) {
        p.push(
            join(&path, "zone"),
            config.zone(),
            format!(
                "is not among the zones of the {} DNS backend ({})",
                dns.backend(),
                list(&zones)
            ),
        );
        ok = false;
    }

    // This process must probe as at least one of the service's observers.
    if let Some(d) = daemon
        && !d
            .observers
            .iter()
            .any(|o| config.observers().ids.contains(o))
    {
        p.push(
            join(&path, "observers.ids"),
            list(&config.observers().ids),
            format!(
                "lists none of this daemon's observers ({}): its sites would never be probed",
                list(&d.observers)
            ),
        );
        ok = false;
    }

    ok &= check_resources(p, &path, &config, replication.as_ref());

    let journal = daemon
        .map(|d| d.journal_dir.join(format!("{}.json", config.name())))
        .unwrap_or_default();
    ok.then_some(ServiceEntry {
        config,
        dns,
        replication,
        journal,
    })
}

/// Splits `backend = "…"` off a backend table.
fn backend_of(p: &mut Reader, path: &str, v: toml::Value) -> Option<(String, toml::Table)> {
    let mut table = match v {
        toml::Value::Table(t) => t,
        other => {
            p.push(
                path,
                "",
                format!("must be a table, not a {}", other.type_str()),
            );
            return None;
        }
    };
    match table.remove("backend") {
        Some(toml::Value::String(b)) => Some((b, table)),
        Some(other) => {
            p.push(
                join(path, "backend"),
                "",
                format!("must be a string, not a {}", other.type_str()),
            );
            None
        }
        None => {
            p.push(join(path, "backend"), "", "is missing");
            None
        }
    }
}

fn check_dns(
    p: &mut Reader,
    service: &str,
    v: toml::Value,
    zone: Option<&str>,
    daemon: Option<&DaemonSettings>,
    base: &Path,
) -> Option<DnsConfig> {
    let path = join(service, "dns");
    let mut spec: DnsSpec = read_backend(p, &path, v, &[])??;
    if let Some(z) = zone.and_then(|z| DnsName::try_from(z).ok()) {
        spec.default_zone(&z);
    }
    spec.resolve_paths(base);
    if let Some(d) = daemon {
        spec.default_state_dir(&d.journal_dir);
    }
    DnsConfig::try_from(spec)
        .map_err(|e| p.extend(&path, e))
        .ok()
}

fn check_replication(
    p: &mut Reader,
    service: &str,
    v: toml::Value,
    base: &Path,
) -> Option<Option<ReplicationConfig>> {
    let path = join(service, "replication");
    let Some(mut spec) = read_backend::<ReplicationSpec>(p, &path, v, &["none"])? else {
        return Some(None);
    };
    spec.resolve_paths(base);
    ReplicationConfig::try_from(spec)
        .map(Some)
        .map_err(|e| p.extend(&path, e))
        .ok()
}

/// Reads a backend table, `{ backend = "…", <its settings> }`, at `path`: `Some(None)` for one
/// of the `absent` names (which take no settings), `None` when it cannot be read.
fn read_backend<T: BackendSpec>(
    p: &mut Reader,
    path: &str,
    v: toml::Value,
    absent: &[&str],
) -> Option<Option<T>> {
    let (backend, table) = backend_of(p, path, v)?;
    if absent.contains(&backend.as_str()) {
        for key in table.keys() {
            p.push(
                join(path, key),
                "",
                format!("unknown key (backend \"{backend}\" takes none)"),
            );
        }
        return table.is_empty().then_some(None);
    }
    if !T::BACKENDS.contains(&backend.as_str()) {
        let names: Vec<&str> = T::BACKENDS.iter().chain(absent).copied().collect();
        let expected = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        p.push(
            join(path, "backend"),
            backend,
            format!("is not a {}: expected {expected}", T::KIND),
        );
        return None;
    }
    p.take_backend(&backend, toml::Value::Table(table), path)
        .map(Some)
}

/// The service's consistency group and the replication backend's resources must match, and
/// every resource must live at every site of the service.
fn check_resources(
    p: &mut Reader,
    path: &str,
    cfg: &ServiceConfig,
    replication: Option<&ReplicationConfig>,
) -> bool {
    let before = p.count();
    let rpath = join(path, "replication");
    let Some(replication) = replication else {
        if !cfg.resources().is_empty() {
            p.push(
                rpath,
                "",
                format!(
                    "is missing: the service lists resources ({}) that need a replication backend",
                    list(cfg.resources())
                ),
            );
        }
        return p.count() == before;
    };
    let backend = replication.resources();
    if cfg.resources().is_empty() {
        p.push(
            join(path, "resources"),
            "[]",
            "lists no resource, but a replication backend is configured: name the resources \
             that fail over together",
        );
    }
    for (k, r) in cfg.resources().iter().enumerate() {
        if !backend.iter().any(|b| &b.id == r) {
            p.push(
                format!("{path}.resources[{k}]"),
                r,
                format!(
                    "is not a resource of the {} replication backend",
                    replication.backend()
                ),
            );
        }
    }
    for (j, placed) in backend.iter().enumerate() {
        let at = format!("{rpath}.resources[{j}]");
        if !cfg.resources().contains(&placed.id) {
            p.push(
                join(&at, "id"),
                &placed.id,
                "is not in the service's resources (its consistency group)",
            );
        }
        for (k, s) in placed.sites.iter().enumerate() {
            if cfg.site(s).is_none() {
                p.push(
                    format!("{at}.sites[{k}]"),
                    s,
                    format!(
                        "is not a site of this service (sites: {})",
                        list(&cfg.sites().iter().map(|x| x.id.clone()).collect::<Vec<_>>())
                    ),
                );
            }
        }
        for site in cfg.sites() {
            if !placed.sites.contains(&site.id) {
                p.push(
                    join(&at, "sites"),
                    "",
                    format!("has no entry for site {} of the service", site.id),
                );
            }
        }
        if let Some(home) = &placed.home
            && cfg.site(home).is_none()
        {
            p.push(join(&at, "home"), home, "is not a site of this service");
        }
    }
    p.count() == before
}

/// Checks between services and the daemon: unique names, embedded DNS servers that share an
/// address share their settings too, and nothing else listens where the API does.
fn check_across(p: &mut Reader, daemon: Option<&DaemonSettings>, services: &[ServiceEntry]) {
    let mut names: BTreeMap<&DnsName, usize> = BTreeMap::new();
    for (i, s) in services.iter().enumerate() {
        if let Some(j) = names.insert(s.config.name(), i) {
            p.push(
                format!("services[{i}].name"),
                s.config.name(),
                format!("is also the name of services[{j}]"),
            );
        }
    }
    let mut bound: BTreeMap<SocketAddr, (usize, &DnsConfig)> = BTreeMap::new();
    for (i, s) in services.iter().enumerate() {
        let c = &s.dns;
        for (k, a) in c.listen().iter().enumerate() {
            if a.port() == 0 {
                continue;
            }
            if let Some(d) = daemon
                && d.listen == *a
            {
                p.push(
                    format!("services[{i}].dns.listen[{k}]"),
                    a,
                    "is also the API's address (daemon.listen)",
                );
            }
            match bound.get(a) {
                Some((j, other)) if !other.shares_server_with(c) => p.push(
                    format!("services[{i}].dns.listen[{k}]"),
                    a,
                    format!(
                        "is also served by services[{j}]'s embedded DNS with other settings: \
                         give both the same dns table (they then share one server) or another \
                         address"
                    ),
                ),
                Some(_) => {}
                None => {
                    bound.insert(*a, (i, c));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAEMON: &str = r#"
[daemon]
listen = "127.0.0.1:9480"
token = "0123456789abcdef-token"
journal_dir = "state"
observers = ["east"]
"#;

    fn service(name: &str, zone: &str, dns: &str) -> String {
        format!(
            r#"
[[services]]
name = "{name}"
zone = "{zone}"
dns = {dns}
[services.observers]
ids = ["east", "west"]
[[services.sites]]
id = "a"
priority = 1
addresses = ["192.0.2.1"]
probes = [{{ id = "web", check = {{ kind = "tcp", port = 80 }} }}]
[[services.sites]]
id = "b"
priority = 2
addresses = ["192.0.2.2"]
probes = [{{ id = "web", check = {{ kind = "tcp", port = 80 }} }}]
"#
        )
    }

    fn parse(text: &str) -> Result<DaemonConfig, ConfigErrors> {
        DaemonConfig::parse(text, Path::new("/srv/idns"))
    }

    #[test]
    fn an_empty_journal_dir_is_refused() {
        let text = format!(
            "{}{}",
            DAEMON.replace("journal_dir = \"state\"", "journal_dir = \"\""),
            service(
                "www.example.test",
                "example.test",
                r#"{ backend = "embedded", listen = ["127.0.0.1:5354"] }"#
            )
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("daemon.journal_dir"), "{err}");
        assert!(err.contains("must name a directory"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file_and_the_embedded_state_goes_to_the_journal() {
        let cfg = parse(&format!(
            "{DAEMON}{}",
            service(
                "www.example.test",
                "example.test",
                r#"{ backend = "embedded", listen = ["127.0.0.1:5354"] }"#
            )
        ))
        .unwrap();
        assert_eq!(cfg.daemon.journal_dir, Path::new("/srv/idns/state"));
        let s = &cfg.services[0];
        assert_eq!(
            s.journal,
            Path::new("/srv/idns/state/www.example.test.json")
        );
        let DnsConfig::Embedded(e) = &s.dns else {
            panic!("embedded expected");
        };
        assert_eq!(
            e.zones().map(ToString::to_string).collect::<Vec<_>>(),
            ["example.test"]
        );
        assert_eq!(
            e.state_file(),
            Some(Path::new("/srv/idns/state/dns-127.0.0.1_5354.json"))
        );
        assert!(!format!("{cfg:?}").contains("0123456789abcdef-token"));
    }

    #[test]
    fn services_share_an_embedded_server_only_with_the_same_settings() {
        let shared = r#"{ backend = "embedded", listen = ["127.0.0.1:5354"], zones = [{ name = "example.test" }] }"#;
        let ok = format!(
            "{DAEMON}{}{}",
            service("www.example.test", "example.test", shared),
            service("api.example.test", "example.test", shared)
        );
        assert_eq!(parse(&ok).unwrap().services.len(), 2);
        let clash = format!(
            "{DAEMON}{}{}",
            service("www.example.test", "example.test", shared),
            service(
                "www.other.test",
                "other.test",
                r#"{ backend = "embedded", listen = ["127.0.0.1:5354"] }"#
            )
        );
        let err = parse(&clash).unwrap_err().to_string();
        assert!(
            err.contains(
                "services[1].dns.listen[0] = 127.0.0.1:5354: is also served by services[0]"
            ),
            "{err}"
        );
        let twice = format!(
            "{DAEMON}{}{}",
            service("www.example.test", "example.test", shared),
            service("www.example.test", "example.test", shared)
        );
        let err = parse(&twice).unwrap_err().to_string();
        assert!(
            err.contains("services[1].name = www.example.test: is also the name of services[0]"),
            "{err}"
        );
    }

    #[test]
    fn references_across_sections_are_checked() {
        let text = format!(
            "{}{}",
            DAEMON.replace(r#"observers = ["east"]"#, r#"observers = ["north"]"#),
            service(
                "www.example.test",
                "example.test",
                r#"{ backend = "embedded", listen = ["127.0.0.1:5354"], zones = [{ name = "other.test" }] }"#
            )
            .replace(
                "zone = \"example.test\"\n",
                "zone = \"example.test\"\nresources = [\"db\"]\n"
            )
        );
        let err = parse(&text).unwrap_err().to_string();
        for needle in [
            "services[0].zone = example.test: is not among the zones of the embedded DNS backend (other.test)",
            "services[0].observers.ids = east, west: lists none of this daemon's observers (north)",
            "services[0].replication: is missing: the service lists resources (db)",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
        }
    }

    #[test]
    fn secrets_in_backend_tables_are_never_shown() {
        let text = format!(
            "{DAEMON}{}",
            service(
                "www.example.test",
                "example.test",
                r#"{ backend = "rfc2136", server = "127.0.0.1:53", zones = ["example.test"], tsig = { name = "k", algorithm = "hmac-sha256", secret = 123456789 } }"#
            )
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("services[0].dns.tsig.secret"), "{err}");
        assert!(!err.contains("123456789"), "{err}");
        let text = format!(
            "{DAEMON}{}",
            service(
                "www.example.test",
                "example.test",
                r#"{ backend = "rfc2136", server = "127.0.0.1:53", zones = ["example.test"], tsig = { name = "k", algorithm = "hmac-sha256", secret = "not*base64-but-secret" } }"#
            )
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("services[0].dns.tsig.secret"), "{err}");
        assert!(!err.contains("not*base64-but-secret"), "{err}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = parse("[daemon]\nlisten = \n").unwrap_err().to_string();
        assert!(err.contains("(syntax)"), "{err}");
        assert!(err.contains("(line 2)"), "{err}");
    }

    #[test]
    fn a_huge_value_is_quoted_short_wherever_it_is_refused() {
        let big = "x".repeat(1 << 20);
        let text = format!(
            "{DAEMON}{}",
            service(
                "www.example.test",
                "example.test",
                &format!(r#"{{ backend = "{big}", listen = ["127.0.0.1:5354"] }}"#)
            )
        )
        .replace(
            "[services.observers]",
            &format!("ttl = \"{big}\"\nrecord = \"{big}\"\n[services.observers]"),
        )
        .replace("id = \"a\"", &format!("id = \"{big}\""));
        let err = parse(&text).unwrap_err();
        assert!(err.problems.len() >= 4, "{err}");
        for line in err.to_string().lines() {
            assert!(
                line.chars().count() < 400,
                "{} characters: {}…",
                line.len(),
                &line[..300]
            );
        }
    }

    const EMBEDDED: &str = r#"{ backend = "embedded", listen = ["127.0.0.1:5354"] }"#;

    #[test]
    fn roles_and_limits_of_the_api_are_checked() {
        let text = format!(
            "{DAEMON}{}",
            service("www.example.test", "example.test", EMBEDDED)
        );
        let cfg = parse(&text).unwrap();
        assert!(cfg.daemon.read_token.is_none() && !cfg.daemon.metrics_public);
        assert_eq!(cfg.daemon.max_connections_per_client, 16);
        assert_eq!(cfg.daemon.reports_keep, 50);
        let same = text.replace(
            "token = \"0123456789abcdef-token\"",
            "token = \"0123456789abcdef-token\"\nread_token = \"0123456789abcdef-token\"\n\
             metrics_require_token = false\nmax_connections_per_client = 0\nreports_keep = 10001",
        );
        let err = parse(&same).unwrap_err().to_string();
        for want in [
            "daemon.read_token: is the operator token",
            "daemon.metrics_require_token: was replaced by metrics_public",
            "daemon.max_connections_per_client = 0: must be between 1 and 256",
            "daemon.reports_keep = 10001: must be between 1 and 10000",
        ] {
            assert!(err.contains(want), "{want} missing: {err}");
        }
        assert!(!err.contains("0123456789abcdef-token"), "{err}");
    }

    /// Writes `name` in `dir` with `mode`.
    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_api_certificate_and_key_are_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ours = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = ours.signing_key.serialize_pem();
        write(dir.path(), "api.crt", &ours.cert.pem(), 0o644);
        write(dir.path(), "api.key", &key, 0o600);
        write(
            dir.path(),
            "other.key",
            &other.signing_key.serialize_pem(),
            0o600,
        );
        write(dir.path(), "open.key", &key, 0o644);
        write(dir.path(), "no.key", &ours.cert.pem(), 0o600);
        write(
            dir.path(),
            "bad.crt",
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
            0o644,
        );
        write(dir.path(), "empty.crt", "nothing here\n", 0o644);
        let with = |cert: &str, key: &str| {
            let text = format!(
                "{}{}",
                DAEMON.replace(
                    "journal_dir",
                    &format!(
                        "tls = {{ cert_file = \"{cert}\", key_file = \"{key}\" }}\njournal_dir"
                    )
                ),
                service("www.example.test", "example.test", EMBEDDED)
            );
            DaemonConfig::parse(&text, dir.path())
        };
        let cfg = with("api.crt", "api.key").unwrap();
        let tls = cfg.daemon.tls.as_ref().unwrap();
        assert_eq!(tls.key_file(), dir.path().join("api.key"));
        assert!(
            cfg.summary()
                .starts_with("API and metrics on https://127.0.0.1:9480")
        );
        assert!(!format!("{cfg:?}").contains(key.lines().nth(1).unwrap()));
        let key_line = key.lines().nth(1).unwrap().to_owned();
        for (cert, keyf, want) in [
            ("api.crt", "open.key", "daemon.tls.key_file = "),
            ("api.crt", "open.key", "is open to other users (mode 0644)"),
            ("api.crt", "missing.key", "daemon.tls.key_file = "),
            ("api.crt", "missing.key", "cannot be read"),
            ("api.crt", "no.key", "holds no private key"),
            (
                "api.crt",
                "other.key",
                "is not the key of the certificate in",
            ),
            ("bad.crt", "api.key", "daemon.tls.cert_file = "),
            ("bad.crt", "api.key", "is not a usable X.509 certificate"),
            ("empty.crt", "api.key", "holds no certificate"),
            ("missing.crt", "api.key", "daemon.tls.cert_file = "),
        ] {
            let err = with(cert, keyf).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{cert}, {keyf}: {want:?} missing: {err}"
            );
            assert!(!err.contains(&key_line), "{err}");
        }
    }

    #[test]
    fn the_plain_http_warning_is_not_given_with_tls() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["idnsd.example".to_owned()]).unwrap();
        write(dir.path(), "api.crt", &c.cert.pem(), 0o644);
        write(dir.path(), "api.key", &c.signing_key.serialize_pem(), 0o600);
        let text = format!(
            "{DAEMON}{}",
            service("www.example.test", "example.test", EMBEDDED)
        )
        .replace("127.0.0.1:9480", "0.0.0.0:9480");
        let plain = DaemonConfig::parse(&text, dir.path()).unwrap();
        assert!(
            plain.warnings()[0].contains("plain HTTP"),
            "{:?}",
            plain.warnings()
        );
        let tls = DaemonConfig::parse(
            &text.replace(
                "journal_dir",
                "tls = { cert_file = \"api.crt\", key_file = \"api.key\" }\njournal_dir",
            ),
            dir.path(),
        )
        .unwrap();
        assert!(tls.warnings().is_empty(), "{:?}", tls.warnings());
    }
}
