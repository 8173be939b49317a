//! Runbook steps as written ([`RunbookSpec`], [`StepSpec`]), the default runbooks, and their
//! validation into [`StepPolicy`] lists.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bounds::{DAY, MONTH, NONZERO, ZERO};
use crate::error::Problems;
use crate::runbook::{OnFailure, StepName, StepPolicy};

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

/// Validates one runbook at `path` (`runbook.failover`, …).
pub(super) fn validate_runbook(
    p: &mut Problems,
    path: &str,
    steps: Vec<StepSpec>,
) -> Vec<StepPolicy> {
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
        let sp = || format!("{path}[{i}]");
        p.duration(
            format_args!("{}.timeout", sp()),
            policy.timeout,
            NONZERO,
            MONTH,
        );
        p.duration(format_args!("{}.backoff", sp()), policy.backoff, ZERO, DAY);
        let max_backoff = policy.max_backoff;
        p.duration(format_args!("{}.max_backoff", sp()), max_backoff, ZERO, DAY);
        if policy.retries > 1000 {
            p.push(
                format!("{}.retries", sp()),
                policy.retries,
                "must be at most 1000",
            );
        }
        if policy.backoff.is_zero() && (policy.retries > 0 || policy.on_failure == OnFailure::Retry)
        {
            p.push(
                format!("{}.backoff", sp()),
                "0s",
                "must be more than zero when retrying",
            );
        }
        if policy.max_backoff < policy.backoff {
            p.push(
                format!("{}.max_backoff", sp()),
                humantime::format_duration(policy.max_backoff),
                "must not be shorter than backoff",
            );
        }
        out.push(policy);
    }
    out
}
