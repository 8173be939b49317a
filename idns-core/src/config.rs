//! Configuration of one service: its name, sites, probes, observers, policies and runbooks.
//!
//! A person writes a [`ServiceSpec`] (serde, TOML in the daemon, or built in code); it is
//! validated once by [`ServiceConfig::new`], which lists *every* problem with its field path
//! and the bad value. Everything downstream takes the validated [`ServiceConfig`] and never
//! checks again.
//!
//! ```
//! let cfg = idns_core::ServiceConfig::from_toml(r#"
//!     name = "www.example.com"
//!     zone = "example.com"
//!     [[sites]]
//!     id = "primary"
//!     priority = 1
//!     addresses = ["192.0.2.10"]
//!     probes = [{ id = "http", interval = "1s", fall = 3 }]
//!     [[sites]]
//!     id = "recovery"
//!     priority = 2
//!     addresses = ["198.51.100.10"]
//!     probes = [{ id = "http", interval = "1s", fall = 3 }]
//! "#).unwrap();
//! assert_eq!(cfg.home().id.as_str(), "primary");
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Problems};
use crate::id::{DnsName, ObserverId, ProbeId, ResourceId, SiteId};
use crate::runbook::{OnFailure, StepName, StepPolicy};

// ---------------------------------------------------------------------------------------------
// What a person writes
// ---------------------------------------------------------------------------------------------

/// A service as written in a configuration file, before validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's DNS name, the one clients use and never change.
    pub name: String,
    /// The zone the name lives in (the DNS backend's zone).
    pub zone: String,
    /// How the name points at the active site.
    #[serde(default)]
    pub record: RecordMode,
    /// TTL of the service's records.
    #[serde(default = "defaults::ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// The sites, two or more.
    pub sites: Vec<SiteSpec>,
    /// The vantage points whose probe reports count, and their quorum.
    #[serde(default)]
    pub observers: ObserversSpec,
    /// When to fail over and fail back.
    #[serde(default)]
    pub policy: PolicySpec,
    /// The consistency group: replicated resources that fail over together.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The steps of each runbook; missing lists take the defaults.
    #[serde(default)]
    pub runbook: RunbookSpec,
    /// The isolated name drills publish (default `drill.<name>`).
    #[serde(default)]
    pub drill_name: Option<String>,
    /// Seed of the retry jitter, so a simulation replays exactly.
    #[serde(default)]
    pub seed: u64,
}

/// One site as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Unique id of the site.
    pub id: String,
    /// Preference: the lowest number is the home site, the one failback returns to.
    pub priority: u32,
    /// Addresses published for this site in `address` mode (A and AAAA records).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The site's own host name, published as a CNAME in `alias` mode.
    #[serde(default)]
    pub alias: Option<String>,
    /// The probes that tell whether this site is alive.
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    /// How the probes combine into the site's health.
    #[serde(default)]
    pub health: HealthRule,
}

/// The health knobs of one probe as written; what the probe checks is in `check`, which
/// `idns-probe` reads. Its `Debug` hides secrets in `check` (see [`redacted`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// Unique id within the site.
    pub id: String,
    /// How often the probe runs (the paper's Interval, 30 s).
    #[serde(default = "defaults::interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Limit for one attempt (the paper's Probe Timeout, 10 s).
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that mark the probe up.
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    /// Failures that mark the probe down (consecutive, or net in `leaky` counting).
    #[serde(default = "defaults::fall")]
    pub fall: u32,
    /// How failures are counted.
    #[serde(default)]
    pub counting: Counting,
    /// The paper's Timeout (60 s): down when no attempt has succeeded for this long.
    #[serde(default, with = "humantime_serde")]
    pub down_after: Option<Duration>,
    /// The paper's Ignore Down Response: when true, failures are ignored until `down_after`
    /// passes without a success.
    #[serde(default)]
    pub ignore_down_response: bool,
    /// What to check (HTTP page, TCP port, database, …), read by `idns-probe`.
    #[serde(default)]
    pub check: serde_json::Value,
}

/// The observers as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserversSpec {
    /// Observer ids; default one observer, `local`.
    #[serde(default = "defaults::observers")]
    pub ids: Vec<String>,
    /// How many observers must agree that a site is down (or up); default a majority.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// An observer silent for this long no longer counts; default three times the longest
    /// probe interval plus its timeout.
    #[serde(default, with = "humantime_serde")]
    pub stale_after: Option<Duration>,
}

impl Default for ObserversSpec {
    fn default() -> Self {
        Self {
            ids: defaults::observers(),
            quorum: None,
            stale_after: None,
        }
    }
}

/// The failover policy as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Whether the election fails over by itself.
    #[serde(default)]
    pub failover: FailoverMode,
    /// Whether the election returns to the home site by itself.
    #[serde(default)]
    pub failback: FailbackMode,
    /// With automatic failback: how long the home site must stay eligible first.
    #[serde(default = "defaults::hold_down", with = "humantime_serde")]
    pub failback_hold_down: Duration,
    /// Minimum time between two switches (anti-flap).
    #[serde(default = "defaults::min_dwell", with = "humantime_serde")]
    pub min_dwell: Duration,
    /// Largest replication lag a site may have to be failed over to; none = no RPO guard.
    #[serde(default, with = "humantime_serde")]
    pub rpo_budget: Option<Duration>,
    /// What to publish when every site is down.
    #[serde(default)]
    pub all_down: AllDownPolicy,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            failover: FailoverMode::default(),
            failback: FailbackMode::default(),
            failback_hold_down: defaults::hold_down(),
            min_dwell: defaults::min_dwell(),
            rpo_budget: None,
            all_down: AllDownPolicy::default(),
        }
    }
}

/// Runbooks as written: each list replaces the default list of that runbook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookSpec {
    /// Steps of a failover (away from a failed site).
    #[serde(default)]
    pub failover: Option<Vec<StepSpec>>,
    /// Steps of a failback (back to a more preferred site).
    #[serde(default)]
    pub failback: Option<Vec<StepSpec>>,
    /// Steps of a drill (a rehearsal on the drill name).
    #[serde(default)]
    pub drill: Option<Vec<StepSpec>>,
}

/// One runbook step as written; unset knobs take the step's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Which step.
    pub step: StepName,
    /// Limit for one attempt.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retries after the first attempt, for failures that a retry can help.
    #[serde(default)]
    pub retries: Option<u32>,
    /// First retry delay; doubles each retry.
    #[serde(default, with = "humantime_serde")]
    pub backoff: Option<Duration>,
    /// Longest retry delay.
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
    /// What to do when the retries are spent or the failure is permanent.
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
}

impl StepSpec {
    /// A step with its default knobs.
    pub fn new(step: StepName) -> Self {
        Self {
            step,
            timeout: None,
            retries: None,
            backoff: None,
            max_backoff: None,
            on_failure: None,
        }
    }
}

/// How the service's name points at the active site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// A and AAAA records with the active site's addresses.
    #[default]
    Address,
    /// A CNAME to the active site's own host name.
    Alias,
}

/// How a site's probes combine into its health (per observer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthRule {
    /// Up when every probe is up; down when any is down.
    #[default]
    All,
    /// Up when any probe is up; down when all are down.
    Any,
    /// Up when at least k probes are up; down when k can no longer be reached.
    AtLeast(usize),
}

/// How probe failures are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// `fall` failures in a row mark down; one success resets the count.
    #[default]
    Consecutive,
    /// A leaky counter (gdnsd's style): each failure adds one, each success takes one away;
    /// down when it reaches `fall`. Catches a probe that fails every other time.
    Leaky,
}

/// Whether the election fails over by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverMode {
    /// Fail over as soon as the active site is down and another is eligible.
    #[default]
    Automatic,
    /// Only recommend; an operator command carries it out.
    Manual,
}

/// Whether the election returns to the home site by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailbackMode {
    /// An operator decides (as VMware SRM does).
    #[default]
    Manual,
    /// After the home site has been eligible for the hold-down period.
    Automatic,
}

/// What to publish when every site is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDownPolicy {
    /// Keep pointing at the last active site.
    #[default]
    KeepLast,
    /// Publish every site's addresses and let clients try them.
    FailOpen,
    /// Withdraw the records.
    FailClosed,
}

/// A copy of a check table with every value whose key names a secret (`password`, `secret`,
/// `token`, `key`, `credential`, in any case and position) replaced by `"<redacted>"`, so
/// configurations can be logged. `password_env` (the name of a variable) is kept.
pub fn redacted(check: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match check {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = !lower.ends_with("_env")
                        && ["password", "secret", "token", "key", "credential"]
                            .iter()
                            .any(|w| lower.contains(w));
                    let v = if secret && !v.is_null() {
                        Value::String("<redacted>".to_owned())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// `Debug` for the two probe types, with the check's secrets redacted.
macro_rules! probe_debug {
    ($ty:ident) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("id", &self.id)
                    .field("interval", &self.interval)
                    .field("timeout", &self.timeout)
                    .field("rise", &self.rise)
                    .field("fall", &self.fall)
                    .field("counting", &self.counting)
                    .field("down_after", &self.down_after)
                    .field("ignore_down_response", &self.ignore_down_response)
                    .field("check", &redacted(&self.check))
                    .finish()
            }
        }
    };
}
probe_debug!(ProbeSpec);
probe_debug!(ProbeSettings);

mod defaults {
    use std::time::Duration;

    pub(super) fn ttl() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn interval() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn rise() -> u32 {
        2
    }
    pub(super) fn fall() -> u32 {
        3
    }
    pub(super) fn observers() -> Vec<String> {
        vec!["local".to_owned()]
    }
    pub(super) fn hold_down() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn min_dwell() -> Duration {
        Duration::from_secs(60)
    }
}

// ---------------------------------------------------------------------------------------------
// What the rest of the crate uses
// ---------------------------------------------------------------------------------------------

/// A validated service configuration. Build it with [`ServiceConfig::new`] or
/// [`ServiceConfig::from_toml`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ServiceSpec", into = "ServiceSpec")]
pub struct ServiceConfig {
    spec: ServiceSpec,
    name: DnsName,
    zone: DnsName,
    drill_name: DnsName,
    sites: Vec<Site>,
    observers: Observers,
    policy: Policy,
    resources: Vec<ResourceId>,
    failover: Vec<StepPolicy>,
    failback: Vec<StepPolicy>,
    drill: Vec<StepPolicy>,
}

/// A validated site.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Site {
    /// Unique id.
    pub id: SiteId,
    /// Preference: lowest is the home site.
    pub priority: u32,
    /// Published addresses (address mode).
    pub addresses: Vec<IpAddr>,
    /// Published alias (alias mode).
    pub alias: Option<DnsName>,
    /// The probes, in configuration order.
    pub probes: Vec<ProbeSettings>,
    /// How the probes combine.
    pub health: HealthRule,
}

/// The validated health knobs of one probe. Its `Debug` hides secrets in `check`.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ProbeSettings {
    /// Unique id within the site.
    pub id: ProbeId,
    /// How often it runs.
    pub interval: Duration,
    /// Limit for one attempt.
    pub timeout: Duration,
    /// Successes in a row that mark it up.
    pub rise: u32,
    /// Failures that mark it down.
    pub fall: u32,
    /// How failures are counted.
    pub counting: Counting,
    /// Down when no success for this long.
    pub down_after: Option<Duration>,
    /// Ignore failures until `down_after` passes.
    pub ignore_down_response: bool,
    /// What to check, for `idns-probe`.
    pub check: serde_json::Value,
}

/// The validated observers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Observers {
    /// The observers, in configuration order.
    pub ids: Vec<ObserverId>,
    /// How many must agree.
    pub quorum: usize,
    /// When a silent observer stops counting.
    pub stale_after: Duration,
}

/// The validated policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// Automatic or manual failover.
    pub failover: FailoverMode,
    /// Manual or automatic failback.
    pub failback: FailbackMode,
    /// Hold-down before an automatic failback.
    pub failback_hold_down: Duration,
    /// Minimum time between switches.
    pub min_dwell: Duration,
    /// RPO guard.
    pub rpo_budget: Option<Duration>,
    /// All-sites-down policy.
    pub all_down: AllDownPolicy,
}

impl ServiceConfig {
    /// Validates a specification, listing every problem found.
    pub fn new(spec: ServiceSpec) -> Result<Self, ConfigError> {
        validate(spec)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let spec: ServiceSpec = toml::from_str(text).map_err(|e| {
            let path = match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    let key = text[span.start.min(text.len())..span.end.min(text.len())].trim();
                    if key.is_empty() || key.contains('\n') {
                        format!("line {line}, column {column}")
                    } else {
                        format!("line {line}, column {column} ({key})")
                    }
                }
                None => "(document)".to_owned(),
            };
            ConfigError::single(path, "", e.message().trim().to_owned())
        })?;
        Self::new(spec)
    }

    /// The specification this was built from.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }
    /// The service's DNS name.
    pub fn name(&self) -> &DnsName {
        &self.name
    }
    /// The zone.
    pub fn zone(&self) -> &DnsName {
        &self.zone
    }
    /// The name drills publish.
    pub fn drill_name(&self) -> &DnsName {
        &self.drill_name
    }
    /// How the name points at the active site.
    pub fn record_mode(&self) -> RecordMode {
        self.spec.record
    }
    /// TTL of the service's records.
    pub fn ttl(&self) -> Duration {
        self.spec.ttl
    }
    /// The sites, in configuration order.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }
    /// The site with this id.
    pub fn site(&self, id: &SiteId) -> Option<&Site> {
        self.site_index(id).map(|i| &self.sites[i])
    }
    /// Index of the site with this id.
    pub fn site_index(&self, id: &SiteId) -> Option<usize> {
        id.index_in(&self.sites, |s| &s.id)
    }
    /// The home site: the lowest priority number.
    pub fn home(&self) -> &Site {
        // Validation guarantees at least two sites.
        let mut best = &self.sites[0];
        for s in &self.sites[1..] {
            if s.priority < best.priority {
                best = s;
            }
        }
        best
    }
    /// The observers.
    pub fn observers(&self) -> &Observers {
        &self.observers
    }
    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// The consistency group.
    pub fn resources(&self) -> &[ResourceId] {
        &self.resources
    }
    /// The steps of a runbook kind.
    pub fn runbook(&self, kind: crate::runbook::RunbookKind) -> &[StepPolicy] {
        use crate::runbook::RunbookKind as K;
        match kind {
            K::Failover | K::Bootstrap | K::AllDown | K::Restore => &self.failover,
            K::Failback => &self.failback,
            K::Drill => &self.drill,
        }
    }
    /// The seed of the retry jitter.
    pub fn seed(&self) -> u64 {
        self.spec.seed
    }
}

impl TryFrom<ServiceSpec> for ServiceConfig {
    type Error = ConfigError;
    fn try_from(spec: ServiceSpec) -> Result<Self, ConfigError> {
        Self::new(spec)
    }
}

impl From<ServiceConfig> for ServiceSpec {
    fn from(cfg: ServiceConfig) -> ServiceSpec {
        cfg.spec
    }
}

/// The default steps of a failover: fence the old site, promote each resource at the new one,
/// check its integrity, switch DNS, verify propagation, then write drill markers.
pub fn default_failover_steps() -> Vec<StepSpec> {
    use StepName::*;
    [
        Fence,
        Promote,
        VerifyIntegrity,
        SwitchDns,
        VerifyDns,
        WriteMarkers,
    ]
    .into_iter()
    .map(StepSpec::new)
    .collect()
}

/// The default steps of a failback (the paper's procedure): reverse replication, wait until it
/// has caught up, fence the current site, promote the home site, verify the markers written
/// meanwhile, switch DNS, verify propagation, and reprotect the other way.
pub fn default_failback_steps() -> Vec<StepSpec> {
    use StepName::*;
    [
        Reprotect,
        CatchUp,
        Fence,
        Promote,
        VerifyMarkers,
        SwitchDns,
        VerifyDns,
        Reprotect,
    ]
    .into_iter()
    .map(StepSpec::new)
    .collect()
}

/// The default steps of a drill: promote an isolated copy, check it, publish the drill name,
/// verify propagation, clean up.
pub fn default_drill_steps() -> Vec<StepSpec> {
    use StepName::*;
    [Promote, VerifyIntegrity, SwitchDns, VerifyDns, Cleanup]
        .into_iter()
        .map(StepSpec::new)
        .collect()
}

fn validate(spec: ServiceSpec) -> Result<ServiceConfig, ConfigError> {
    let mut p = Problems::default();

    let name = DnsName::try_from(spec.name.as_str())
        .map_err(|e| p.push("name", &spec.name, e.problem))
        .ok();
    let zone = DnsName::try_from(spec.zone.as_str())
        .map_err(|e| p.push("zone", &spec.zone, e.problem))
        .ok();
    if let (Some(n), Some(z)) = (&name, &zone)
        && !n.is_within(z)
    {
        p.push("name", n, format!("is not inside zone {z}"));
    }
    let drill_name = match &spec.drill_name {
        Some(d) => DnsName::try_from(d.as_str())
            .map_err(|e| p.push("drill_name", d, e.problem))
            .ok(),
        None => name.as_ref().and_then(|n| n.prepend("drill").ok()),
    };
    if let (Some(d), Some(z), Some(n)) = (&drill_name, &zone, &name) {
        if !d.is_within(z) {
            p.push("drill_name", d, format!("is not inside zone {z}"));
        }
        if d == n {
            p.push("drill_name", d, "must differ from the service name");
        }
    }
    if spec.ttl.is_zero() || spec.ttl > Duration::from_secs(86_400) {
        p.push(
            "ttl",
            humantime::format_duration(spec.ttl),
            "must be between 1s and 1day",
        );
    } else if spec.ttl.subsec_nanos() != 0 {
        p.push(
            "ttl",
            humantime::format_duration(spec.ttl),
            "must be whole seconds",
        );
    }

    // Sites.
    if spec.sites.len() < 2 {
        p.push(
            "sites",
            spec.sites.len(),
            "a service needs at least two sites to fail over between",
        );
    }
    let mut sites = Vec::new();
    let mut seen_ids = BTreeSet::new();
    let mut seen_prio = BTreeSet::new();
    for (i, s) in spec.sites.iter().enumerate() {
        let path = format!("sites[{i}]");
        let id = SiteId::try_from(s.id.as_str())
            .map_err(|e| p.push(format!("{path}.id"), &s.id, e.problem))
            .ok();
        if !seen_ids.insert(s.id.clone()) {
            p.push(format!("{path}.id"), &s.id, "is used by another site");
        }
        if !seen_prio.insert(s.priority) {
            p.push(
                format!("{path}.priority"),
                s.priority,
                "is used by another site (priorities must be unique)",
            );
        }
        let alias = match &s.alias {
            Some(a) => DnsName::try_from(a.as_str())
                .map_err(|e| p.push(format!("{path}.alias"), a, e.problem))
                .ok(),
            None => None,
        };
        match spec.record {
            RecordMode::Address if s.addresses.is_empty() => p.push(
                format!("{path}.addresses"),
                "",
                "address mode needs at least one address per site",
            ),
            RecordMode::Alias if s.alias.is_none() => p.push(
                format!("{path}.alias"),
                "",
                "alias mode needs the site's own host name",
            ),
            _ => {}
        }
        if let (Some(a), Some(n)) = (&alias, &name)
            && a == n
        {
            p.push(
                format!("{path}.alias"),
                a,
                "must differ from the service name (a CNAME loop)",
            );
        }
        let mut probes = Vec::new();
        if s.probes.is_empty() {
            p.push(
                format!("{path}.probes"),
                "",
                "a site needs at least one probe, or it can never be judged alive",
            );
        }
        let mut seen_probe = BTreeSet::new();
        for (j, pr) in s.probes.iter().enumerate() {
            let pp = format!("{path}.probes[{j}]");
            if !seen_probe.insert(pr.id.clone()) {
                p.push(
                    format!("{pp}.id"),
                    &pr.id,
                    "is used by another probe of this site",
                );
            }
            if let Some(probe) = validate_probe(&mut p, &pp, pr) {
                probes.push(probe);
            }
        }
        if let HealthRule::AtLeast(k) = s.health
            && (k == 0 || k > s.probes.len())
        {
            p.push(
                format!("{path}.health.at_least"),
                k,
                format!(
                    "must be between 1 and the number of probes ({})",
                    s.probes.len()
                ),
            );
        }
        if let Some(id) = id {
            sites.push(Site {
                id,
                priority: s.priority,
                addresses: s.addresses.clone(),
                alias,
                probes,
                health: s.health,
            });
        }
    }

    // Observers.
    let mut observer_ids = Vec::new();
    if spec.observers.ids.is_empty() {
        p.push("observers.ids", "[]", "at least one observer is needed");
    }
    let mut seen_obs = BTreeSet::new();
    for (i, o) in spec.observers.ids.iter().enumerate() {
        if !seen_obs.insert(o.clone()) {
            p.push(format!("observers.ids[{i}]"), o, "is listed twice");
        }
        match ObserverId::try_from(o.as_str()) {
            Ok(id) => observer_ids.push(id),
            Err(e) => p.push(format!("observers.ids[{i}]"), o, e.problem),
        }
    }
    let n_obs = spec.observers.ids.len();
    let quorum = spec.observers.quorum.unwrap_or(n_obs / 2 + 1);
    if n_obs > 0 && (quorum == 0 || quorum > n_obs) {
        p.push(
            "observers.quorum",
            quorum,
            format!("must be between 1 and the number of observers ({n_obs})"),
        );
    }
    let longest = spec
        .sites
        .iter()
        .flat_map(|s| s.probes.iter())
        .map(|pr| pr.interval.saturating_add(pr.timeout))
        .max()
        .unwrap_or(Duration::from_secs(40));
    let stale_after = spec
        .observers
        .stale_after
        .unwrap_or(longest.saturating_mul(3));
    if stale_after.is_zero() {
        p.push("observers.stale_after", "0s", "must be more than zero");
    }
    at_most(&mut p, "observers.stale_after", stale_after, MONTH);

    // Policy.
    let pol = &spec.policy;
    at_most(
        &mut p,
        "policy.failback_hold_down",
        pol.failback_hold_down,
        YEAR,
    );
    at_most(&mut p, "policy.min_dwell", pol.min_dwell, YEAR);
    if let Some(b) = pol.rpo_budget {
        at_most(&mut p, "policy.rpo_budget", b, YEAR);
    }
    if pol.all_down == AllDownPolicy::FailOpen && spec.record == RecordMode::Alias {
        p.push(
            "policy.all_down",
            "fail_open",
            "needs address mode: a name can hold only one CNAME",
        );
    }

    // Resources.
    let mut resources = Vec::new();
    let mut seen_res = BTreeSet::new();
    for (i, r) in spec.resources.iter().enumerate() {
        if !seen_res.insert(r.clone()) {
            p.push(format!("resources[{i}]"), r, "is listed twice");
        }
        match ResourceId::try_from(r.as_str()) {
            Ok(id) => resources.push(id),
            Err(e) => p.push(format!("resources[{i}]"), r, e.problem),
        }
    }

    // Runbooks.
    let failover = validate_runbook(
        &mut p,
        "runbook.failover",
        spec.runbook
            .failover
            .clone()
            .unwrap_or_else(default_failover_steps),
    );
    let failback = validate_runbook(
        &mut p,
        "runbook.failback",
        spec.runbook
            .failback
            .clone()
            .unwrap_or_else(default_failback_steps),
    );
    let drill = validate_runbook(
        &mut p,
        "runbook.drill",
        spec.runbook
            .drill
            .clone()
            .unwrap_or_else(default_drill_steps),
    );

    p.finish()?;
    let (Some(name), Some(zone), Some(drill_name)) = (name, zone, drill_name) else {
        // Unreachable: any missing piece pushed a problem above.
        return Err(ConfigError::single("name", &spec.name, "is invalid"));
    };
    Ok(ServiceConfig {
        name,
        zone,
        drill_name,
        sites,
        observers: Observers {
            ids: observer_ids,
            quorum,
            stale_after,
        },
        policy: Policy {
            failover: pol.failover,
            failback: pol.failback,
            failback_hold_down: pol.failback_hold_down,
            min_dwell: pol.min_dwell,
            rpo_budget: pol.rpo_budget,
            all_down: pol.all_down,
        },
        resources,
        failover,
        failback,
        drill,
        spec,
    })
}

const DAY: Duration = Duration::from_secs(86_400);
const MONTH: Duration = Duration::from_secs(30 * 86_400);
const YEAR: Duration = Duration::from_secs(366 * 86_400);

/// Bounds a duration, so that time arithmetic downstream can never overflow.
fn at_most(p: &mut Problems, path: &str, d: Duration, max: Duration) {
    if d > max {
        p.push(
            path,
            humantime::format_duration(d),
            format!("must be at most {}", humantime::format_duration(max)),
        );
    }
}

fn validate_probe(p: &mut Problems, path: &str, pr: &ProbeSpec) -> Option<ProbeSettings> {
    let id = ProbeId::try_from(pr.id.as_str())
        .map_err(|e| p.push(format!("{path}.id"), &pr.id, e.problem))
        .ok();
    let fmt = |d: Duration| humantime::format_duration(d).to_string();
    if pr.interval < Duration::from_millis(10) {
        p.push(
            format!("{path}.interval"),
            fmt(pr.interval),
            "must be at least 10ms",
        );
    }
    if pr.timeout.is_zero() {
        p.push(
            format!("{path}.timeout"),
            fmt(pr.timeout),
            "must be more than zero",
        );
    }
    at_most(p, &format!("{path}.interval"), pr.interval, DAY);
    at_most(p, &format!("{path}.timeout"), pr.timeout, DAY);
    if let Some(d) = pr.down_after {
        at_most(p, &format!("{path}.down_after"), d, MONTH);
    }
    if pr.rise == 0 {
        p.push(format!("{path}.rise"), 0, "must be at least 1");
    }
    if pr.fall == 0 {
        p.push(format!("{path}.fall"), 0, "must be at least 1");
    }
    if let Some(d) = pr.down_after
        && d.is_zero()
    {
        p.push(
            format!("{path}.down_after"),
            fmt(d),
            "must be more than zero",
        );
    }
    if pr.ignore_down_response && pr.down_after.is_none() {
        p.push(
            format!("{path}.ignore_down_response"),
            true,
            "needs down_after: with failures ignored, only the timeout can mark the site down",
        );
    }
    Some(ProbeSettings {
        id: id?,
        interval: pr.interval,
        timeout: pr.timeout,
        rise: pr.rise,
        fall: pr.fall,
        counting: pr.counting,
        down_after: pr.down_after,
        ignore_down_response: pr.ignore_down_response,
        check: pr.check.clone(),
    })
}

fn validate_runbook(p: &mut Problems, path: &str, steps: Vec<StepSpec>) -> Vec<StepPolicy> {
    let switches = steps
        .iter()
        .filter(|s| s.step == StepName::SwitchDns)
        .count();
    if switches != 1 {
        p.push(
            path,
            switches,
            "must contain the switch_dns step exactly once",
        );
    }
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.into_iter().enumerate() {
        let d = StepPolicy::default_for(s.step);
        let policy = StepPolicy {
            step: s.step,
            timeout: s.timeout.unwrap_or(d.timeout),
            retries: s.retries.unwrap_or(d.retries),
            backoff: s.backoff.unwrap_or(d.backoff),
            max_backoff: s.max_backoff.unwrap_or(d.max_backoff),
            on_failure: s.on_failure.unwrap_or(d.on_failure),
        };
        let sp = format!("{path}[{i}]");
        if policy.timeout.is_zero() {
            p.push(format!("{sp}.timeout"), "0s", "must be more than zero");
        }
        at_most(p, &format!("{sp}.timeout"), policy.timeout, MONTH);
        at_most(p, &format!("{sp}.backoff"), policy.backoff, DAY);
        at_most(p, &format!("{sp}.max_backoff"), policy.max_backoff, DAY);
        if policy.retries > 1000 {
            p.push(
                format!("{sp}.retries"),
                policy.retries,
                "must be at most 1000",
            );
        }
        if policy.backoff.is_zero() && (policy.retries > 0 || policy.on_failure == OnFailure::Retry)
        {
            p.push(
                format!("{sp}.backoff"),
                "0s",
                "must be more than zero when retrying",
            );
        }
        if policy.max_backoff < policy.backoff {
            p.push(
                format!("{sp}.max_backoff"),
                humantime::format_duration(policy.max_backoff),
                "must not be shorter than backoff",
            );
        }
        out.push(policy);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "www.example.com"
        zone = "example.com"
        [[sites]]
        id = "a"
        priority = 1
        addresses = ["127.0.0.1"]
        probes = [{ id = "http" }]
        [[sites]]
        id = "b"
        priority = 2
        addresses = ["127.0.0.2"]
        probes = [{ id = "http" }]
    "#;

    #[test]
    fn a_good_config_takes_the_paper_defaults() {
        let c = ServiceConfig::from_toml(GOOD).unwrap();
        let p = &c.sites()[0].probes[0];
        assert_eq!(p.interval, Duration::from_secs(30));
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert_eq!((p.rise, p.fall), (2, 3));
        assert_eq!(c.observers().quorum, 1);
        assert_eq!(c.drill_name().as_str(), "drill.www.example.com");
        assert_eq!(c.home().id.as_str(), "a");
        assert_eq!(c.policy().failback, FailbackMode::Manual);
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let text = r#"
            name = "www.other.org"
            zone = "example.com"
            [observers]
            ids = ["x", "x"]
            quorum = 5
            [[sites]]
            id = "a b"
            priority = 1
            probes = [{ id = "p", fall = 0, ignore_down_response = true }]
            [[sites]]
            id = "c"
            priority = 1
            addresses = ["127.0.0.1"]
        "#;
        let err = ServiceConfig::from_toml(text).unwrap_err();
        let msg = err.to_string();
        for needle in [
            "name = www.other.org: is not inside zone example.com",
            "sites[0].id = a b",
            "sites[0].addresses",
            "sites[0].probes[0].fall = 0",
            "sites[0].probes[0].ignore_down_response",
            "sites[1].priority = 1",
            "sites[1].probes",
            "observers.ids[1] = x",
            "observers.quorum = 5",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let err = ServiceConfig::from_toml(&format!("{GOOD}\nbogus = 1")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(err.to_string().contains("line 15"), "{err}");
        let err = ServiceConfig::from_toml(&GOOD.replace("priority = 2", "priority = \"x\""))
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn huge_durations_are_refused_not_overflowed() {
        let text = GOOD.replacen(
            r#"{ id = "http" }"#,
            r#"{ id = "http", interval = "18446744073709551615s" }"#,
            1,
        ) + "\n[policy]\nmin_dwell = \"7000000000000000000s\"\n";
        let err = ServiceConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("sites[0].probes[0].interval"), "{err}");
        assert!(err.contains("policy.min_dwell"), "{err}");
        assert!(err.contains("observers.stale_after"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets_in_checks() {
        let text = GOOD.replacen(
            r#"{ id = "http" }"#,
            r#"{ id = "http", check = { kind = "postgres", password = "hunter2", password_env = "PGPASS", nested = { api_key = "k3y" } } }"#,
            1,
        );
        let cfg = ServiceConfig::from_toml(&text).unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("k3y"), "{shown}");
        assert!(shown.contains("PGPASS"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(cfg.sites()[0].probes[0].check["password"], "hunter2");
    }

    #[test]
    fn runbooks_need_exactly_one_dns_switch() {
        let text = format!("{GOOD}\n[runbook]\nfailover = [{{ step = \"fence\" }}]\n");
        let err = ServiceConfig::from_toml(&text).unwrap_err();
        assert!(err.to_string().contains("runbook.failover = 0"), "{err}");
    }

    #[test]
    fn round_trips_through_serde() {
        let c = ServiceConfig::from_toml(GOOD).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: ServiceConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(c, back);
    }
}
