//! The [`Probe`] trait, the reports probes produce, and the [`Health`] the election judges
//! from them.

use std::fmt::{self, Debug};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::{ObserverId, ProbeId, SiteId};

/// One check of one target: an HTTP page, a TCP port, a database, a command.
///
/// A probe is bound to its target when it is built and enforces no schedule: whoever runs it
/// (`idns-probe`'s scheduler, a remote observer) decides when, and bounds each attempt with the
/// probe's timeout. A failed check is an outcome, not an error.
#[async_trait]
pub trait Probe: Send + Sync + Debug {
    /// Runs the check once.
    async fn check(&self) -> ProbeOutcome;
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    /// The check passed.
    Up,
    /// An explicit failure: connection refused, wrong status, string not found, bad reply.
    Down,
    /// No answer within the attempt's timeout.
    Timeout,
}

impl ProbeStatus {
    /// The name, as serde spells it: `up`, `down`, `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStatus::Up => "up",
            ProbeStatus::Down => "down",
            ProbeStatus::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// Up, down or timed out.
    pub status: ProbeStatus,
    /// How long the attempt took.
    pub latency: Duration,
    /// Why, in words a person can act on (`HTTP 503`, `"OK" not found in first 65536 bytes`).
    pub reason: String,
}

impl ProbeOutcome {
    /// A passed check.
    pub fn up(latency: Duration) -> Self {
        Self {
            status: ProbeStatus::Up,
            latency,
            reason: String::new(),
        }
    }

    /// An explicit failure, with its reason.
    pub fn down(latency: Duration, reason: impl Into<String>) -> Self {
        Self {
            status: ProbeStatus::Down,
            latency,
            reason: reason.into(),
        }
    }

    /// A timed-out attempt.
    pub fn timeout(latency: Duration) -> Self {
        Self {
            status: ProbeStatus::Timeout,
            latency,
            reason: format!("no answer within {}", humantime::format_duration(latency)),
        }
    }

    /// Whether the check passed.
    pub fn is_up(&self) -> bool {
        self.status == ProbeStatus::Up
    }
}

/// What an observer reports to the election after one attempt: plain data that can travel
/// between processes (serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The site probed.
    pub site: SiteId,
    /// The probe that ran.
    pub probe: ProbeId,
    /// The vantage point it ran from.
    pub observer: ObserverId,
    /// What it found.
    pub outcome: ProbeOutcome,
    /// Wall-clock time the attempt started.
    pub at: SystemTime,
}

/// Health of a probe or site, as the election sees it.
///
/// # How health is judged
/// - **A probe at one observer** turns up after `rise` successes in a row, and down after
///   `fall` failures (in a row with [`Counting::Consecutive`](crate::Counting::Consecutive), or net with
///   [`Counting::Leaky`](crate::Counting::Leaky), where each success takes one failure back), or when no attempt has
///   succeeded for `down_after`. With `ignore_down_response`, failures do not count; only
///   `down_after` does. Until it has crossed a threshold it is unknown.
/// - **An observer's verdict on a site** combines that site's probes at that observer by the
///   site's [`HealthRule`](crate::HealthRule): with `k` probes required up (all, any, or at least `k`), the
///   verdict is up when `k` probes are up, down when fewer than `k` can still be up (too many
///   are down), unknown otherwise.
/// - **Silent observers abstain.** An observer whose last report of anything is
///   `stale_after` old is not live: it has no verdict until it reports again (silence says
///   nothing about the sites it probes).
/// - **The quorum rule.** A site is down when at least `quorum` live observers say down and
///   fewer than `quorum` say up; up in the mirror case; unknown otherwise (not enough data,
///   or disputed). With one observer and a quorum of one, the site's health is that
///   observer's verdict.
/// - **What the election does with it**: a failover needs the active site down (unknown is
///   not enough); a site is eligible as a target only when up (and within the RPO budget).
///   [`ServiceView`](crate::ServiceView) shows each site's health, the time it came up and
///   every probe's last report at every observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Alive.
    Up,
    /// Dead.
    Down,
    /// Not known yet, disputed between observers, or the observers are silent.
    Unknown,
}

impl Health {
    /// The name, as serde spells it: `up`, `down`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
