//! The vantage points whose probe reports count: as written ([`ObserversSpec`]) and validated
//! ([`Observers`]), with the quorum rule.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bounds::{MONTH, NONZERO};
use crate::error::Problems;
use crate::id::ObserverId;

/// The observers as written.
///
/// # The quorum rule
/// Each observer judges each site by its own probe results (see [`ProbeSpec`](crate::ProbeSpec)
/// and [`HealthRule`](crate::HealthRule)). A site is **down** when at least `quorum` observers
/// say down and fewer than `quorum` say up; **up** in the mirror case; **unknown** otherwise.
/// So with three observers and the default quorum of two, one observer cut off from a healthy
/// site cannot fail it over, and one observer alone cannot keep a dead site up.
///
/// An observer whose reports stop for `stale_after` is **silent**: it abstains (its verdicts
/// count neither way) until its next report, because its silence says nothing about the sites.
/// With every observer silent, no site changes health.
///
/// ```
/// use idns_core::ObserversSpec;
/// let observers = ObserversSpec::new(["a", "b", "w"]).quorum(2);
/// assert_eq!(observers.ids.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserversSpec {
    /// Observer ids; default one observer, `local`.
    #[serde(default = "default_ids")]
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
            ids: default_ids(),
            quorum: None,
            stale_after: None,
        }
    }
}

impl ObserversSpec {
    /// These observers, with a majority quorum and the default `stale_after`.
    pub fn new<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            ids: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets how many observers must agree.
    #[must_use]
    pub fn quorum(mut self, quorum: usize) -> Self {
        self.quorum = Some(quorum);
        self
    }

    /// Sets how long an observer may stay silent and still count.
    #[must_use]
    pub fn stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = Some(stale_after);
        self
    }
}

/// The validated observers (the rules are in [`ObserversSpec`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Observers {
    /// The observers, in configuration order.
    pub ids: Vec<ObserverId>,
    /// How many must agree that a site is down (or up).
    pub quorum: usize,
    /// When a silent observer stops counting.
    pub stale_after: Duration,
}

fn default_ids() -> Vec<String> {
    vec!["local".to_owned()]
}

/// Validates the observers; `longest` is the longest probe interval plus its timeout.
pub(super) fn validate_observers(
    p: &mut Problems,
    spec: &ObserversSpec,
    longest: Duration,
) -> Observers {
    let mut ids = Vec::new();
    if spec.ids.is_empty() {
        p.push("observers.ids", "[]", "at least one observer is needed");
    }
    let mut seen_obs = BTreeSet::new();
    for (i, o) in spec.ids.iter().enumerate() {
        if !seen_obs.insert(o.clone()) {
            p.push(format!("observers.ids[{i}]"), o, "is listed twice");
        }
        match ObserverId::try_from(o.as_str()) {
            Ok(id) => ids.push(id),
            Err(e) => p.push(format!("observers.ids[{i}]"), o, e.problem),
        }
    }
    let n_obs = spec.ids.len();
    let quorum = spec.quorum.unwrap_or(n_obs / 2 + 1);
    if n_obs > 0 && (quorum == 0 || quorum > n_obs) {
        p.push(
            "observers.quorum",
            quorum,
            format!("must be between 1 and the number of observers ({n_obs})"),
        );
    }
    let stale_after = spec.stale_after.unwrap_or(longest.saturating_mul(3));
    p.duration("observers.stale_after", stale_after, NONZERO, MONTH);
    Observers {
        ids,
        quorum,
        stale_after,
    }
}
