//! The service: as written ([`ServiceSpec`]) and validated ([`ServiceConfig`]).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::observers::{Observers, ObserversSpec, validate_observers};
use super::policy::{Policy, PolicySpec, validate_policy};
use super::site::{RecordMode, Site, SiteSpec, validate_site};
use super::steps::{
    RunbookSpec, default_drill_steps, default_failback_steps, default_failover_steps,
    validate_runbook,
};
use crate::error::{ConfigError, Problems};
use crate::id::{DnsName, ResourceId, SiteId};
use crate::runbook::StepPolicy;

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

impl ServiceSpec {
    /// A service named `name` in `zone`, with no site yet and every other knob at its
    /// default: address records with a 30 s TTL, one observer (`local`), the default
    /// [`PolicySpec`] and runbooks, no replicated resource.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idns_core::{ProbeSpec, ServiceSpec, SiteSpec};
    ///
    /// let probe = ProbeSpec::new("http").interval(Duration::from_secs(1));
    /// let config = ServiceSpec::new("www.example.com", "example.com")
    ///     .site(SiteSpec::new("a", 1).address("192.0.2.1".parse()?).probe(probe.clone()))
    ///     .site(SiteSpec::new("b", 2).address("192.0.2.2".parse()?).probe(probe))
    ///     .build()?;
    /// assert_eq!(config.home().id.as_str(), "a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(name: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            zone: zone.into(),
            record: RecordMode::default(),
            ttl: defaults::ttl(),
            sites: Vec::new(),
            observers: ObserversSpec::default(),
            policy: PolicySpec::default(),
            resources: Vec::new(),
            runbook: RunbookSpec::default(),
            drill_name: None,
            seed: 0,
        }
    }

    /// Sets how the name points at the active site.
    #[must_use]
    pub fn record(mut self, record: RecordMode) -> Self {
        self.record = record;
        self
    }

    /// Sets the TTL of the service's records.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adds a site.
    #[must_use]
    pub fn site(mut self, site: SiteSpec) -> Self {
        self.sites.push(site);
        self
    }

    /// Sets the observers and their quorum.
    #[must_use]
    pub fn observers(mut self, observers: ObserversSpec) -> Self {
        self.observers = observers;
        self
    }

    /// Sets the failover and failback policy.
    #[must_use]
    pub fn policy(mut self, policy: PolicySpec) -> Self {
        self.policy = policy;
        self
    }

    /// Adds a replicated resource to the consistency group.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Sets the steps of the runbooks.
    #[must_use]
    pub fn runbook(mut self, runbook: RunbookSpec) -> Self {
        self.runbook = runbook;
        self
    }

    /// Sets the seed of the retry jitter.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the service: [`ServiceConfig::new`].
    pub fn build(self) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::new(self)
    }
}

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
        if let Some(site) = validate_site(&mut p, &path, s, id, spec.record, name.as_ref()) {
            sites.push(site);
        }
    }

    // Observers.
    let longest = spec
        .sites
        .iter()
        .flat_map(|s| s.probes.iter())
        // The paper's 10 s timeout when none is given, as before timeouts followed short
        // intervals: an observer is not called silent sooner than it used to be.
        .map(|pr| {
            pr.interval
                .saturating_add(pr.timeout.unwrap_or(Duration::from_secs(10)))
        })
        .max()
        .unwrap_or(Duration::from_secs(40));
    let observers = validate_observers(&mut p, &spec.observers, longest);

    // Policy.
    let policy = validate_policy(&mut p, &spec.policy, spec.record);

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
        observers,
        policy,
        resources,
        failover,
        failback,
        drill,
        spec,
    })
}

mod defaults {
    use std::time::Duration;

    pub(super) fn ttl() -> Duration {
        Duration::from_secs(30)
    }
}
