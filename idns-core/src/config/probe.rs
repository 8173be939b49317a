//! One probe's health knobs: as written ([`ProbeSpec`]) and validated ([`ProbeSettings`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bounds::{DAY, MONTH, NONZERO};
use crate::error::Problems;
use crate::id::ProbeId;

/// The health knobs of one probe as written; what the probe checks is in `check`, which
/// `idns-probe` reads. Its `Debug` hides secrets in `check` (see [`redacted`]).
///
/// # When a probe is up or down
/// Each observer keeps its own verdict on each probe, from the attempts it ran:
/// - it turns **up** after `rise` successes in a row;
/// - it turns **down** after `fall` failures (in a row with
///   [`Counting::Consecutive`], net of successes with [`Counting::Leaky`]), or when no attempt
///   has succeeded for `down_after`;
/// - with `ignore_down_response`, failures do not count at all:
///   only `down_after` can mark it down;
/// - until then it is unknown.
///
/// How the probes of a site combine is the site's [`HealthRule`](crate::HealthRule); how the
/// observers combine is their [`quorum`](crate::ObserversSpec::quorum).
///
/// # Building one in code
/// Start from [`ProbeSpec::new`] (the paper's defaults) and change what differs:
///
/// ```
/// use std::time::Duration;
/// use idns_core::ProbeSpec;
///
/// let probe = ProbeSpec::new("http").interval(Duration::from_secs(1)).rise(1).fall(3);
/// assert_eq!(probe.timeout, None, "10 s, or the interval when that is shorter");
/// assert!(probe.check.is_null(), "idns-probe reads the check; the election never does");
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// Unique id within the site.
    pub id: String,
    /// How often the probe runs (the paper's Interval, 30 s).
    #[serde(default = "defaults::interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Limit for one attempt (the paper's Probe Timeout, 10 s; by default the interval when
    /// that is shorter). A timeout longer than the interval is refused unless
    /// `allow_timeout_over_interval` is set: while one attempt runs, the next ones are skipped.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Allows a `timeout` longer than the `interval` (a slow check on a short interval): the
    /// attempts due while one still runs are skipped, not run side by side.
    #[serde(default)]
    pub allow_timeout_over_interval: bool,
    /// Consecutive successes that mark the probe up (default 2).
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    /// Failures that mark the probe down (consecutive, or net in `leaky` counting; default 3).
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
    /// What to check (HTTP page, TCP port, database, …), read by `idns-probe`; `null` (the
    /// default) for a probe whose reports come from elsewhere, as in tests.
    #[serde(default)]
    pub check: serde_json::Value,
}

impl ProbeSpec {
    /// A probe with the paper's knobs: every 30 s, 10 s per attempt, up after 2 successes in
    /// a row, down after 3 failures in a row, and no check (set one with
    /// `check` for `idns-probe`).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            interval: defaults::interval(),
            timeout: None,
            allow_timeout_over_interval: false,
            rise: defaults::rise(),
            fall: defaults::fall(),
            counting: Counting::default(),
            down_after: None,
            ignore_down_response: false,
            check: serde_json::Value::Null,
        }
    }

    /// Sets how often the probe runs.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the limit for one attempt.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The limit for one attempt: the one set, else 10 s or the interval when that is shorter.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| defaults::timeout().min(self.interval))
    }

    /// Sets the successes in a row that mark the probe up.
    #[must_use]
    pub fn rise(mut self, rise: u32) -> Self {
        self.rise = rise;
        self
    }

    /// Sets the failures that mark the probe down.
    #[must_use]
    pub fn fall(mut self, fall: u32) -> Self {
        self.fall = fall;
        self
    }

    /// Sets how failures are counted.
    #[must_use]
    pub fn counting(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// Marks the probe down when no attempt has succeeded for this long.
    #[must_use]
    pub fn down_after(mut self, down_after: Duration) -> Self {
        self.down_after = Some(down_after);
        self
    }

    /// Ignores failures until `down_after` passes without a success.
    #[must_use]
    pub fn ignore_down_response(mut self, ignore: bool) -> Self {
        self.ignore_down_response = ignore;
        self
    }

    /// Sets what `idns-probe` checks (its `CheckSpec` as a table).
    #[must_use]
    pub fn check(mut self, check: serde_json::Value) -> Self {
        self.check = check;
        self
    }
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

/// The validated health knobs of one probe (the rules are in [`ProbeSpec`]: up after `rise`
/// successes in a row, down after `fall` failures or `down_after` without a success). Its
/// `Debug` hides secrets in `check`.
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

/// A copy of a check table with every value whose key is a
/// [secret name](crate::is_secret_name) replaced by `"<redacted>"`, so configurations can be
/// logged. `password_env` (the name of a variable) is kept.
pub fn redacted(check: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match check {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if crate::is_secret_name(k) && !v.is_null() {
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

/// Validates one probe at `path` (`sites[i].probes[j]`).
pub(super) fn validate_probe(
    p: &mut Problems,
    path: &str,
    pr: &ProbeSpec,
) -> Option<ProbeSettings> {
    let id = ProbeId::try_from(pr.id.as_str())
        .map_err(|e| p.push(format!("{path}.id"), &pr.id, e.problem))
        .ok();
    let interval = format_args!("{path}.interval");
    p.duration(interval, pr.interval, Duration::from_millis(10), DAY);
    let timeout = pr.effective_timeout();
    p.duration(format_args!("{path}.timeout"), timeout, NONZERO, DAY);
    if timeout > pr.interval && !pr.allow_timeout_over_interval {
        p.push(
            format!("{path}.timeout"),
            humantime::format_duration(timeout),
            format!(
                "is longer than the interval ({}): the attempts due while one runs would be \
                 skipped; shorten it, or set allow_timeout_over_interval = true if that is meant",
                humantime::format_duration(pr.interval)
            ),
        );
    }
    if let Some(d) = pr.down_after {
        p.duration(format_args!("{path}.down_after"), d, NONZERO, MONTH);
    }
    for (field, n) in [("rise", pr.rise), ("fall", pr.fall)] {
        if !(1..=MAX_RUN).contains(&n) {
            let problem = format!("must be from 1 to {MAX_RUN}");
            p.push(format!("{path}.{field}"), n, problem);
        }
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
        timeout,
        rise: pr.rise,
        fall: pr.fall,
        counting: pr.counting,
        down_after: pr.down_after,
        ignore_down_response: pr.ignore_down_response,
        check: pr.check.clone(),
    })
}

/// The most consecutive results `rise` and `fall` may ask for: at the shortest interval, more
/// than ten seconds of them, and far beyond any sensible setting at longer ones.
const MAX_RUN: u32 = 1000;

mod defaults {
    use std::time::Duration;

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
}
