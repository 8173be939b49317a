//! What a probe checks: the typed form of [`ProbeSettings::check`], and building probes from it.
//!
//! A site's probe is written in the service configuration with its health knobs (interval,
//! timeout, rise, fall, …, read by `idns-core`) and a free-form `check` table that this crate
//! reads into a [`CheckSpec`], tagged by `kind`:
//!
//! ```toml
//! probes = [
//!   { id = "web", interval = "5s", timeout = "2s",
//!     check = { kind = "http", url = "https://app.example.com/health", expect = "OK" } },
//!   { id = "smtp", check = { kind = "tcp", port = 25, expect = "220 " } },
//! ]
//! ```
//!
//! Every field is checked when the probe is built — URL, regex, port, status range, CA file —
//! and each problem is reported with its path (`sites[0].probes[1].check.url`) and value.

pub(crate) mod target;

use std::sync::Arc;
use std::time::Duration;

use idns_core::{ConfigError, Probe, ProbeId, ProbeSettings, Problems, ServiceConfig, SiteId};
use serde::{Deserialize, Serialize};

use crate::command::{CommandProbe, CommandSpec};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::db::DbSpec;
use crate::dns::{DnsProbe, DnsSpec};
use crate::http::{HttpProbe, HttpSpec};
use crate::tcp::{TcpProbe, TcpSpec};

use target::BuildContext;
pub use target::{AliasSpec, Target};

/// What one probe checks, as written in the `check` table of a probe; the `kind` field picks
/// the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckSpec {
    /// An HTTP(S) page: status and an optional search string in the body.
    Http(HttpSpec),
    /// A TCP port: connect, with optional send and expected reply.
    Tcp(TcpSpec),
    /// A DNS query: expected response code and answer.
    Dns(DnsSpec),
    /// A program: exit status 0 is up.
    Command(CommandSpec),
    /// A PostgreSQL server: connect, or run a query and check its result (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(DbSpec),
    /// A MySQL or MariaDB server: connect, or run a query and check its result (feature
    /// `mysql`).
    #[cfg(feature = "mysql")]
    Mysql(DbSpec),
}

impl CheckSpec {
    /// Reads a `check` value (as found in [`ProbeSettings::check`]); `path` names it in errors.
    pub fn from_value(value: &serde_json::Value, path: &str) -> Result<CheckSpec, ConfigError> {
        if value.is_null() {
            return Err(ConfigError::single(
                path,
                "",
                "is missing: say what to check, e.g. { kind = \"http\", url = \"http://app.example.com/\" } \
                 or { kind = \"tcp\", port = 443 }",
            ));
        }
        serde_json::from_value(value.clone()).map_err(|e| {
            let shown = match value.get("kind") {
                Some(serde_json::Value::String(k)) => format!("kind = {k}"),
                _ => String::new(),
            };
            ConfigError::single(path, shown, e.to_string())
        })
    }
}

/// One probe of one site, built and ready to run at its interval.
#[derive(Debug, Clone)]
pub struct ScheduledProbe {
    /// The site it probes.
    pub site: SiteId,
    /// The probe's id within the site.
    pub id: ProbeId,
    /// How often it runs.
    pub interval: Duration,
    /// Hard limit for one attempt, enforced by the scheduler; an attempt still running then
    /// is reported as [`ProbeStatus::Timeout`](idns_core::ProbeStatus::Timeout).
    pub timeout: Duration,
    /// The check itself.
    pub probe: Arc<dyn Probe>,
}

/// Slack the scheduler gives a probe built by this crate beyond its own timeout, so the probe's
/// own, more precise reason ("body stalled after 1234 bytes") wins over the scheduler's.
pub const TIMEOUT_GRACE: Duration = Duration::from_millis(50);

impl ScheduledProbe {
    /// Builds the probe `settings` describes for `target`; errors are named under `check`.
    pub fn build(settings: &ProbeSettings, target: &Target) -> Result<ScheduledProbe, ConfigError> {
        Self::build_at("check", settings, target)
    }

    fn build_at(
        path: &str,
        settings: &ProbeSettings,
        target: &Target,
    ) -> Result<ScheduledProbe, ConfigError> {
        let probe = build_probe_at(path, settings, target)?;
        Ok(ScheduledProbe {
            site: target.site.clone(),
            id: settings.id.clone(),
            interval: settings.interval,
            timeout: settings.timeout + TIMEOUT_GRACE,
            probe,
        })
    }
}

/// Builds the probe that `settings.check` describes, aimed at `target`, with `settings.timeout`
/// as its limit per attempt. Errors name fields under `check`.
pub fn build_probe(
    settings: &ProbeSettings,
    target: &Target,
) -> Result<Arc<dyn Probe>, ConfigError> {
    build_probe_at("check", settings, target)
}

fn build_probe_at(
    path: &str,
    settings: &ProbeSettings,
    target: &Target,
) -> Result<Arc<dyn Probe>, ConfigError> {
    CheckSpec::from_value(&settings.check, path)?.build_at(
        path,
        target,
        &settings.id,
        settings.timeout,
    )
}

impl CheckSpec {
    /// Builds the probe of this check, aimed at `target`, with `timeout` as its limit per
    /// attempt; `probe` names it in logs. Errors name fields under `check`.
    pub fn build(
        &self,
        target: &Target,
        probe: &ProbeId,
        timeout: Duration,
    ) -> Result<Arc<dyn Probe>, ConfigError> {
        self.build_at("check", target, probe, timeout)
    }

    fn build_at(
        &self,
        path: &str,
        target: &Target,
        probe: &ProbeId,
        timeout: Duration,
    ) -> Result<Arc<dyn Probe>, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::single(
                "timeout",
                "0s",
                "must be more than zero",
            ));
        }
        let ctx = BuildContext {
            path: path.to_owned(),
            label: format!("{}/{probe}", target.site),
            timeout,
        };
        match self {
            CheckSpec::Http(s) => Ok(Arc::new(HttpProbe::new(&ctx, s, target)?)),
            CheckSpec::Tcp(s) => Ok(Arc::new(TcpProbe::new(&ctx, s, target)?)),
            CheckSpec::Dns(s) => Ok(Arc::new(DnsProbe::new(&ctx, s, target)?)),
            CheckSpec::Command(s) => Ok(Arc::new(CommandProbe::new(&ctx, s, target)?)),
            #[cfg(feature = "postgres")]
            CheckSpec::Postgres(s) => Ok(Arc::new(crate::db::PostgresProbe::new(&ctx, s, target)?)),
            #[cfg(feature = "mysql")]
            CheckSpec::Mysql(s) => Ok(Arc::new(crate::db::MysqlProbe::new(&ctx, s, target)?)),
        }
    }
}

/// Builds every probe of every site of a service, listing every problem found (with paths
/// like `sites[1].probes[0].check.url`).
pub fn probes_for_service(cfg: &ServiceConfig) -> Result<Vec<ScheduledProbe>, ConfigError> {
    let mut out = Vec::new();
    let mut problems = Problems::new();
    for (i, site) in cfg.sites().iter().enumerate() {
        let target = Target::for_site(cfg.name(), site);
        for (j, settings) in site.probes.iter().enumerate() {
            let path = format!("sites[{i}].probes[{j}].check");
            match ScheduledProbe::build_at(&path, settings, &target) {
                Ok(p) => out.push(p),
                Err(e) => problems.extend("", e),
            }
        }
    }
    problems.finish_with(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(second_check: &str) -> ServiceConfig {
        ServiceConfig::from_toml(&format!(
            r#"
            name = "app.example.com"
            zone = "example.com"
            record = "alias"
            [[sites]]
            id = "a"
            priority = 1
            alias = "a.example.net"
            addresses = ["127.0.0.1"]
            probes = [{{ id = "web", timeout = "2s", check = {{ kind = "http", url = "/health", expect = "OK" }} }},
                      {{ id = "port", check = {{ kind = "tcp", port = 443 }} }}]
            [[sites]]
            id = "b"
            priority = 2
            alias = "b.example.net"
            probes = [{{ id = "web", check = {second_check} }}]
            "#
        ))
        .unwrap()
    }

    #[test]
    fn every_probe_of_every_site_is_built() {
        let probes = probes_for_service(&cfg(r#"{ kind = "tcp", port = 80 }"#)).unwrap();
        let names: Vec<String> = probes
            .iter()
            .map(|p| format!("{}/{}", p.site, p.id))
            .collect();
        assert_eq!(names, ["a/web", "a/port", "b/web"]);
        assert_eq!(probes[0].timeout, Duration::from_secs(2) + TIMEOUT_GRACE);
        assert_eq!(probes[0].interval, Duration::from_secs(30));
        // Site b has no address: its probe connects to its own host name.
        let shown = format!("{:?}", probes[2].probe);
        assert!(shown.contains("Host(\"b.example.net\")"), "{shown}");
    }

    #[test]
    fn problems_are_named_by_their_full_path() {
        let e = probes_for_service(&cfg(
            r#"{ kind = "http", url = "http://x/", status = ["abc"], expect_regex = "(" }"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sites[1].probes[0].check.status[0] = abc"),
            "{e}"
        );
        assert!(
            e.contains("sites[1].probes[0].check.expect_regex = ("),
            "{e}"
        );
        let e = probes_for_service(&cfg("{}")).unwrap_err().to_string();
        assert!(
            e.contains("sites[1].probes[0].check: missing field `kind`"),
            "{e}"
        );
    }
}
