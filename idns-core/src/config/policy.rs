//! When the election switches: the policy as written ([`PolicySpec`]) and validated
//! ([`Policy`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bounds::{YEAR, ZERO};
use super::site::RecordMode;
use crate::error::Problems;

/// The failover policy as written.
///
/// # The election's rules
/// - A site is **eligible** when it is up (see [`HealthRule`](crate::HealthRule) and the
///   quorum rule of [`ObserversSpec`](crate::ObserversSpec)) and, for a failover with an
///   `rpo_budget`, every replica of the consistency group reports a lag within the budget.
/// - When the active site is down, the election fails over to the eligible site with the
///   lowest priority number ([`FailoverMode::Manual`]: it only recommends it).
/// - Two switches are at least `min_dwell` apart, unless an operator forces one.
/// - Failback to the home site is an operator's decision ([`FailbackMode::Manual`]), or
///   automatic once the home site has been up for `failback_hold_down`.
/// - With every site down, `all_down` says what the name publishes; with
///   [`FailoverMode::Manual`] the election only says so, and the name is left as it is.
///
/// ```
/// use std::time::Duration;
/// use idns_core::{FailbackMode, PolicySpec};
///
/// let policy = PolicySpec::default()
///     .failback(FailbackMode::Automatic)
///     .min_dwell(Duration::ZERO)
///     .rpo_budget(Duration::from_secs(5));
/// assert_eq!(policy.failback_hold_down, Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Whether the election fails over by itself.
    #[serde(default)]
    pub failover: FailoverMode,
    /// Whether the election returns to the home site by itself.
    #[serde(default)]
    pub failback: FailbackMode,
    /// With automatic failback: how long the home site must stay eligible first (default
    /// 5 minutes).
    #[serde(default = "defaults::hold_down", with = "humantime_serde")]
    pub failback_hold_down: Duration,
    /// Minimum time between two switches (anti-flap; default 1 minute).
    #[serde(default = "defaults::min_dwell", with = "humantime_serde")]
    pub min_dwell: Duration,
    /// Largest replication lag a site may have to be failed over to; none = no RPO guard.
    #[serde(default, with = "humantime_serde")]
    pub rpo_budget: Option<Duration>,
    /// What to publish when every site is down (applied by the election itself only with
    /// automatic failover; with `failover = "manual"` it is reported, not applied).
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

impl PolicySpec {
    /// Sets whether the election fails over by itself.
    #[must_use]
    pub fn failover(mut self, mode: FailoverMode) -> Self {
        self.failover = mode;
        self
    }

    /// Sets whether the election returns to the home site by itself.
    #[must_use]
    pub fn failback(mut self, mode: FailbackMode) -> Self {
        self.failback = mode;
        self
    }

    /// Sets how long the home site must stay eligible before an automatic failback.
    #[must_use]
    pub fn failback_hold_down(mut self, hold_down: Duration) -> Self {
        self.failback_hold_down = hold_down;
        self
    }

    /// Sets the minimum time between two switches.
    #[must_use]
    pub fn min_dwell(mut self, min_dwell: Duration) -> Self {
        self.min_dwell = min_dwell;
        self
    }

    /// Sets the largest replication lag a failover may accept.
    #[must_use]
    pub fn rpo_budget(mut self, budget: Duration) -> Self {
        self.rpo_budget = Some(budget);
        self
    }

    /// Sets what to publish when every site is down.
    #[must_use]
    pub fn all_down(mut self, policy: AllDownPolicy) -> Self {
        self.all_down = policy;
        self
    }
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

/// The validated policy (the rules are in [`PolicySpec`]).
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

/// Validates the policy of a service whose name points at its sites by `record`.
pub(super) fn validate_policy(p: &mut Problems, pol: &PolicySpec, record: RecordMode) -> Policy {
    p.duration(
        "policy.failback_hold_down",
        pol.failback_hold_down,
        ZERO,
        YEAR,
    );
    p.duration("policy.min_dwell", pol.min_dwell, ZERO, YEAR);
    if let Some(b) = pol.rpo_budget {
        p.duration("policy.rpo_budget", b, ZERO, YEAR);
    }
    if pol.all_down == AllDownPolicy::FailOpen && record == RecordMode::Alias {
        p.push(
            "policy.all_down",
            "fail_open",
            "needs address mode: a name can hold only one CNAME",
        );
    }
    Policy {
        failover: pol.failover,
        failback: pol.failback,
        failback_hold_down: pol.failback_hold_down,
        min_dwell: pol.min_dwell,
        rpo_budget: pol.rpo_budget,
        all_down: pol.all_down,
    }
}

mod defaults {
    use std::time::Duration;

    pub(super) fn hold_down() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn min_dwell() -> Duration {
        Duration::from_secs(60)
    }
}
