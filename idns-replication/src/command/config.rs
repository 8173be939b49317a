//! Configuration of command replication: what is written ([`CommandSpec`]) and what is
//! validated ([`CommandConfig`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use idns_core::{ConfigError, Problems, RedactedMap, ResourceId, SiteId};
use serde::{Deserialize, Serialize};

/// The longest a status hook may be given.
const HOUR: Duration = Duration::from_secs(3600);

/// The operations a hook is run for.
pub const OPERATIONS: [&str; 5] = ["status", "fence", "promote", "reprotect", "integrity"];

/// Command replication as written in a configuration file.
///
/// ```
/// # use idns_replication::command::{CommandConfig, CommandSpec};
/// let spec: CommandSpec = serde_json::from_str(r#"{
///   "state_file": "/var/lib/idns/command-epochs.json",
///   "resources": [{
///     "id": "vmfs",
///     "sites": ["dc1", "dc2"],
///     "command": ["/usr/local/bin/srm-hook"],
///     "commands": { "status": ["/usr/local/bin/srm-status", "--json"] },
///     "status_timeout": "5s"
///   }]
/// }"#)?;
/// let cfg = CommandConfig::try_from(spec)?;
/// assert_eq!(cfg.resources[0].hooks["status"][1], "--json");
/// assert_eq!(cfg.resources[0].hooks["promote"][0], "/usr/local/bin/srm-hook");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The resources.
    pub resources: Vec<CommandResourceSpec>,
    /// A file that keeps the highest epoch accepted per resource, so a restarted controller
    /// still refuses stale ones (recommended; without it they are kept in memory only).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
}

/// One resource's hooks. Its `Debug` shows the value of a secret variable in `env`
/// (`SRM_PASSWORD`, …: see [`is_secret_name`](idns_core::is_secret_name)) as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResourceSpec {
    /// The resource id.
    pub id: String,
    /// Its sites (at least two).
    pub sites: Vec<String>,
    /// The hook run for every operation without its own: program, then arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Hooks for single operations (`status`, `fence`, `promote`, `reprotect`,
    /// `integrity`), overriding `command`.
    #[serde(default)]
    pub commands: BTreeMap<String, Vec<String>>,
    /// Time a status hook may take (default 10 s); other operations get the step's timeout.
    #[serde(default = "default_status_timeout", with = "humantime_serde")]
    pub status_timeout: Duration,
    /// Extra environment for the hooks.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the hooks.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

fn default_status_timeout() -> Duration {
    Duration::from_secs(10)
}

impl CommandSpec {
    /// Takes the relative paths (`state_file`, each resource's `dir`) relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.state_file);
        for r in &mut self.resources {
            resolve(base, &mut r.dir);
        }
    }
}

fn resolve(base: &Path, path: &mut Option<PathBuf>) {
    if let Some(p) = path
        && p.is_relative()
    {
        *p = base.join(&*p);
    }
}

impl fmt::Debug for CommandResourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandResourceSpec")
            .field("id", &self.id)
            .field("sites", &self.sites)
            .field("command", &self.command)
            .field("commands", &self.commands)
            .field("status_timeout", &self.status_timeout)
            .field("env", &RedactedMap(&self.env))
            .field("dir", &self.dir)
            .finish()
    }
}

impl fmt::Debug for CommandResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandResource")
            .field("id", &self.id)
            .field("sites", &self.sites)
            .field("hooks", &self.hooks)
            .field("status_timeout", &self.status_timeout)
            .field("env", &RedactedMap(&self.env))
            .field("dir", &self.dir)
            .finish()
    }
}

/// Validated command replication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandConfig {
    /// The resources.
    pub resources: Vec<CommandResource>,
    /// Where accepted epochs are kept.
    pub state_file: Option<PathBuf>,
}

/// A validated resource; its `Debug` redacts secret variables in `env`, as the spec's does.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandResource {
    /// The resource id.
    pub id: ResourceId,
    /// Its sites.
    pub sites: Vec<SiteId>,
    /// The hook of every operation (each in [`OPERATIONS`]).
    pub hooks: BTreeMap<&'static str, Vec<String>>,
    /// Time a status hook may take.
    pub status_timeout: Duration,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub dir: Option<PathBuf>,
}

impl TryFrom<CommandSpec> for CommandConfig {
    type Error = ConfigError;

    fn try_from(spec: CommandSpec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        if spec.resources.is_empty() {
            p.push("resources", "", "lists no resource");
        }
        let mut resources: Vec<CommandResource> = Vec::new();
        for (i, r) in spec.resources.iter().enumerate() {
            let at = |f: &str| format!("resources[{i}].{f}");
            let id = ResourceId::try_from(r.id.as_str())
                .map_err(|e| p.push(at("id"), r.id.clone(), e.problem))
                .ok();
            if let Some(id) = &id
                && resources.iter().any(|x| &x.id == id)
            {
                p.push(at("id"), r.id.clone(), "is used by another resource");
            }
            if r.sites.len() < 2 {
                p.push(
                    at("sites"),
                    r.sites.len().to_string(),
                    "needs at least two sites",
                );
            }
            let mut sites: Vec<SiteId> = Vec::new();
            for (j, s) in r.sites.iter().enumerate() {
                match SiteId::try_from(s.as_str()) {
                    Ok(site) if sites.contains(&site) => {
                        p.push(at(&format!("sites[{j}]")), s.clone(), "is listed twice")
                    }
                    Ok(site) => sites.push(site),
                    Err(e) => p.push(at(&format!("sites[{j}]")), s.clone(), e.problem),
                }
            }
            if r.command.as_ref().is_some_and(|c| c.is_empty()) {
                p.push(at("command"), "[]", "names no program");
            }
            for (op, argv) in &r.commands {
                if !OPERATIONS.contains(&op.as_str()) {
                    p.push(
                        at(&format!("commands.{op}")),
                        "",
                        "is not an operation (status, fence, promote, reprotect, integrity)",
                    );
                } else if argv.is_empty() {
                    p.push(at(&format!("commands.{op}")), "[]", "names no program");
                }
            }
            let mut hooks = BTreeMap::new();
            for op in OPERATIONS {
                match r
                    .commands
                    .get(op)
                    .or(r.command.as_ref())
                    .filter(|c| !c.is_empty())
                {
                    Some(argv) => {
                        hooks.insert(op, argv.clone());
                    }
                    None => p.push(
                        at(&format!("commands.{op}")),
                        "",
                        "has no hook: set `command` or `commands.<operation>`",
                    ),
                }
            }
            let status_timeout = at("status_timeout");
            p.duration(status_timeout, r.status_timeout, Problems::ABOVE_ZERO, HOUR);
            if let Some(id) = id {
                resources.push(CommandResource {
                    id,
                    sites,
                    hooks,
                    status_timeout: r.status_timeout,
                    env: r.env.clone(),
                    dir: r.dir.clone(),
                });
            }
        }
        if let Some(f) = &spec.state_file
            && !f.is_absolute()
        {
            p.push(
                "state_file",
                f.display().to_string(),
                "must be an absolute path",
            );
        }
        p.finish_with(CommandConfig {
            resources,
            state_file: spec.state_file,
        })
    }
}
