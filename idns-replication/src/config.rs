//! Which replication backend a service uses: what is written ([`ReplicationSpec`], tagged by
//! `backend`) and what is validated ([`ReplicationConfig`]), in the shape of `idns-probe`'s
//! `CheckSpec`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use idns_core::{BackendSpec, ConfigError, ReplicationBackend, ResourceId, SiteId};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::broadcast;

use crate::command::{CommandConfig, CommandReplication, CommandSpec};
use crate::image::{ImageConfig, ImageReplication, ImageSpec};
use crate::postgres::{PgConfig, PgSpec, PostgresReplication};
use crate::progress::Progress;

/// A replication backend as written in a configuration file: one table whose `backend` field
/// picks the variant, the other fields being that backend's settings.
/// [`ReplicationConfig::try_from`] checks it.
///
/// ```
/// use idns_replication::{ReplicationConfig, ReplicationSpec};
///
/// let spec: ReplicationSpec = serde_json::from_str(r#"{
///   "backend": "command",
///   "resources": [{ "id": "vmfs", "sites": ["dc1", "dc2"], "command": ["/usr/local/bin/srm-hook"] }]
/// }"#)?;
/// let config = ReplicationConfig::try_from(spec)?;
/// assert_eq!(config.backend(), "command");
/// assert_eq!(config.resources()[0].id.as_str(), "vmfs");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ReplicationSpec {
    /// Disk images and file trees (`backend = "image"`).
    Image(ImageSpec),
    /// PostgreSQL streaming replication (`backend = "postgres"`).
    Postgres(PgSpec),
    /// User hooks (`backend = "command"`).
    Command(CommandSpec),
}

impl BackendSpec for ReplicationSpec {
    const KIND: &'static str = "replication backend";

    const BACKENDS: &'static [&'static str] = &["image", "postgres", "command"];

    fn deserialize_backend<'de, D: Deserializer<'de>>(
        backend: &str,
        settings: D,
    ) -> Result<Self, D::Error> {
        match backend {
            "image" => ImageSpec::deserialize(settings).map(Self::Image),
            "postgres" => PgSpec::deserialize(settings).map(Self::Postgres),
            "command" => CommandSpec::deserialize(settings).map(Self::Command),
            other => Err(D::Error::unknown_variant(other, Self::BACKENDS)),
        }
    }
}

impl ReplicationSpec {
    /// Takes the relative paths of the configuration relative to `base` (the directory of
    /// the file it was read from).
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            Self::Image(s) => s.resolve_paths(base),
            Self::Postgres(s) => s.resolve_paths(base),
            Self::Command(s) => s.resolve_paths(base),
        }
    }
}

/// A checked replication backend configuration; [`build`](Self::build) makes the backend.
///
/// It deserialises like a [`ReplicationSpec`] and is checked on the way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ReplicationSpec")]
#[non_exhaustive]
pub enum ReplicationConfig {
    /// Disk images and file trees.
    Image(ImageConfig),
    /// PostgreSQL streaming replication.
    Postgres(PgConfig),
    /// User hooks.
    Command(CommandConfig),
}

impl TryFrom<ReplicationSpec> for ReplicationConfig {
    type Error = ConfigError;

    /// Checks the backend's settings; the error lists every problem with its field path
    /// (relative to the table).
    fn try_from(spec: ReplicationSpec) -> Result<Self, ConfigError> {
        Ok(match spec {
            ReplicationSpec::Image(s) => Self::Image(s.try_into()?),
            ReplicationSpec::Postgres(s) => Self::Postgres(s.try_into()?),
            ReplicationSpec::Command(s) => Self::Command(s.try_into()?),
        })
    }
}

/// A replicated resource as a backend's configuration places it, for checking it against a
/// service's consistency group and sites.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placement {
    /// The resource.
    pub id: ResourceId,
    /// The sites it lives at, in configuration order.
    pub sites: Vec<SiteId>,
    /// The site whose copy is primary before any state exists, for backends that have one.
    pub home: Option<SiteId>,
}

impl ReplicationConfig {
    /// The backend's name, as the `backend` field spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Image(_) => "image",
            Self::Postgres(_) => "postgres",
            Self::Command(_) => "command",
        }
    }

    /// Each resource with the sites it lives at.
    pub fn resources(&self) -> Vec<Placement> {
        match self {
            Self::Image(c) => c
                .resources
                .iter()
                .map(|r| Placement {
                    id: r.id.clone(),
                    sites: r.sites.iter().map(|s| s.site.clone()).collect(),
                    home: Some(r.home.clone()),
                })
                .collect(),
            Self::Postgres(c) => c
                .resources
                .iter()
                .map(|r| Placement {
                    id: r.id.clone(),
                    sites: r.sites.iter().map(|s| s.site.clone()).collect(),
                    home: None,
                })
                .collect(),
            Self::Command(c) => c
                .resources
                .iter()
                .map(|r| Placement {
                    id: r.id.clone(),
                    sites: r.sites.clone(),
                    home: None,
                })
                .collect(),
        }
    }

    /// Builds the backend. Nothing runs until it is asked to: continuous replication is the
    /// backend's [`ReplicationBackend::run`], started by the controller it is handed to.
    pub fn build(&self) -> Replication {
        match self {
            Self::Image(c) => {
                let r = ImageReplication::new(c.clone());
                Replication {
                    backend: Arc::new(r.clone()),
                    progress: Some(r.subscribe()),
                }
            }
            Self::Postgres(c) => {
                let r = PostgresReplication::new(c.clone());
                Replication {
                    progress: Some(r.subscribe()),
                    backend: Arc::new(r),
                }
            }
            Self::Command(c) => Replication {
                backend: Arc::new(CommandReplication::new(c.clone())),
                progress: None,
            },
        }
    }
}

/// What the backend replicates, for a summary: `image replication of app-data`.
impl fmt::Display for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.resources().iter().map(|r| r.id.to_string()).collect();
        write!(f, "{} replication of {}", self.backend(), ids.join(", "))
    }
}

/// A replication backend built from a [`ReplicationConfig`], with its progress events. Its
/// background work (continuous image replication) is [`ReplicationBackend::run`], which the
/// controller that is handed the backend starts and stops.
pub struct Replication {
    backend: Arc<dyn ReplicationBackend>,
    progress: Option<broadcast::Receiver<Progress>>,
}

impl Replication {
    /// The backend, to hand to a controller.
    pub fn backend(&self) -> Arc<dyn ReplicationBackend> {
        Arc::clone(&self.backend)
    }

    /// Progress events of long operations (passes, promotions, rewinds), for backends that
    /// report them.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Progress>> {
        self.progress.as_ref().map(broadcast::Receiver::resubscribe)
    }
}

impl fmt::Debug for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replication")
            .field("backend", &self.backend)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = r#"
        backend = "image"
        [[resources]]
        id = "app-data"
        home = "primary"
        sites = [{ site = "primary", root = "state/primary" }, { site = "recovery", root = "/mnt/recovery" }]
    "#;
    const POSTGRES: &str = r#"
        backend = "postgres"
        save_dir = "split-brain"
        [[resources]]
        id = "orders"
        sites = [
          { site = "dc1", host = "10.0.1.5", port = 5432, data_dir = "/var/lib/postgresql/15/main", conninfo = "password=hunter2" },
          { site = "dc2", host = "10.0.2.5", port = 5432, data_dir = "/var/lib/postgresql/15/main" },
        ]
    "#;
    const COMMAND: &str = r#"
        backend = "command"
        [[resources]]
        id = "vmfs"
        sites = ["dc1", "dc2"]
        command = ["/usr/local/bin/srm-hook"]
        dir = "hooks"
    "#;

    fn spec(text: &str) -> ReplicationSpec {
        let mut s: ReplicationSpec = toml::from_str(text).unwrap();
        s.resolve_paths(Path::new("/etc/idns"));
        s
    }

    #[tokio::test]
    async fn each_backend_parses_from_its_tagged_table_and_builds() {
        for (text, name, summary) in [
            (IMAGE, "image", "image replication of app-data"),
            (POSTGRES, "postgres", "postgres replication of orders"),
            (COMMAND, "command", "command replication of vmfs"),
        ] {
            let c = ReplicationConfig::try_from(spec(text)).unwrap();
            assert_eq!(c.backend(), name);
            assert_eq!(c.to_string(), summary);
            assert_eq!(c.resources()[0].sites.len(), 2);
            let mut table: toml::Table = toml::from_str(text).unwrap();
            let backend = table.remove("backend").unwrap();
            let direct = ReplicationSpec::deserialize_backend(
                backend.as_str().unwrap(),
                toml::Value::Table(table),
            )
            .unwrap();
            assert_eq!(direct, toml::from_str::<ReplicationSpec>(text).unwrap());
            let built = c.build();
            assert_eq!(built.subscribe().is_some(), name != "command");
        }
        let ReplicationConfig::Image(i) = ReplicationConfig::try_from(spec(IMAGE)).unwrap() else {
            panic!("image expected");
        };
        assert_eq!(
            i.resources[0].sites[0].root,
            Path::new("/etc/idns/state/primary")
        );
        let c = ReplicationConfig::try_from(spec(POSTGRES)).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let ReplicationConfig::Postgres(p) = c else {
            panic!("postgres expected");
        };
        assert_eq!(p.save_dir, Path::new("/etc/idns/split-brain"));
    }

    #[test]
    fn a_bad_value_is_named_by_its_path() {
        let err = toml::from_str::<ReplicationConfig>(&COMMAND.replace("\"dc2\"", "\"d c2\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("resources[0].sites[1] = d c2"), "{err}");
        let err = ReplicationConfig::try_from(spec(
            &POSTGRES.replace("password=hunter2", "password='hunter2"),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("resources[0].sites[0].conninfo"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err =
            ReplicationSpec::deserialize_backend("tape", toml::Value::Table(toml::Table::new()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown variant `tape`"), "{err}");
    }

    #[test]
    fn every_duration_is_bounded() {
        let image = IMAGE.replace(
            "home = \"primary\"",
            "home = \"primary\"\ninterval = \"0s\"",
        );
        let command = COMMAND.replace(
            "dir = \"hooks\"",
            "dir = \"hooks\"\nstatus_timeout = \"1year\"",
        );
        for (text, problem) in [
            (image, "resources[0].interval = 0s: must be at least 10ms"),
            (
                command,
                "resources[0].status_timeout = 1year: must be at most 1h",
            ),
        ] {
            let err = ReplicationConfig::try_from(spec(&text)).unwrap_err();
            let got: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
            assert_eq!(got, [problem], "{text}");
        }
    }

    #[test]
    fn secret_variables_of_a_hook_never_reach_debug_output() {
        let text = COMMAND.replace(
            "dir = \"hooks\"",
            "dir = \"hooks\"\nenv = { Srm_Password = \"s3cr3t\", SRM_HOST = \"vc1\" }",
        );
        let s = spec(&text);
        let c = ReplicationConfig::try_from(s.clone()).unwrap();
        for shown in [format!("{s:?}"), format!("{c:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("vc1"), "{shown}");
        }
    }
}
