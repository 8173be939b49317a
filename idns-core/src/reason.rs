//! Reasons: the pieces of an explanation a person can read.
//!
//! Every decision, refusal and health change carries a chain of [`Reason`]s, e.g.
//! `site a down: 2 of 3 observers (quorum 2); probe http failed 3/3 at o1: HTTP 503;
//! site b eligible: up on 3 of 3 observers, lag 1.2s <= rpo 5s`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::AllDownPolicy;
use crate::id::{ObserverId, ProbeId, SiteId};
use crate::probe::Health;

/// One link of a reason chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// A site's health per observer quorum.
    SiteHealth {
        /// The site.
        site: SiteId,
        /// Its health.
        health: Health,
        /// Observers whose probes say up.
        up: usize,
        /// Observers whose probes say down.
        down: usize,
        /// Observers configured.
        observers: usize,
        /// The quorum.
        quorum: usize,
    },
    /// A probe that failed, as one observer saw it.
    ProbeFailed {
        /// The site.
        site: SiteId,
        /// The probe.
        probe: ProbeId,
        /// The observer.
        observer: ObserverId,
        /// Failures counted.
        failures: u32,
        /// The fall threshold.
        fall: u32,
        /// The last failure's reason.
        last: String,
    },
    /// A site that may be switched to.
    Eligible {
        /// The site.
        site: SiteId,
        /// Its replication lag, where there is a consistency group.
        #[serde(with = "humantime_serde")]
        lag: Option<Duration>,
        /// The RPO budget.
        #[serde(with = "humantime_serde")]
        budget: Option<Duration>,
    },
    /// A site that may not be switched to because it is not up.
    NotUp {
        /// The site.
        site: SiteId,
        /// Its health.
        health: Health,
    },
    /// A site whose replication lag exceeds the RPO budget.
    LagOverBudget {
        /// The site.
        site: SiteId,
        /// Its lag.
        #[serde(with = "humantime_serde")]
        lag: Duration,
        /// The budget.
        #[serde(with = "humantime_serde")]
        budget: Duration,
    },
    /// A site whose replication lag is not known, with an RPO budget in force.
    LagUnknown {
        /// The site.
        site: SiteId,
    },
    /// The minimum dwell since the last switch has not passed.
    Dwell {
        /// Time left.
        #[serde(with = "humantime_serde")]
        remaining: Duration,
        /// The minimum dwell.
        #[serde(with = "humantime_serde")]
        min_dwell: Duration,
    },
    /// Automatic failback waits for the hold-down.
    HoldDown {
        /// The home site.
        site: SiteId,
        /// Time left.
        #[serde(with = "humantime_serde")]
        remaining: Duration,
    },
    /// Automatic decisions are frozen by an operator.
    Frozen,
    /// Failover is manual: the election only recommends.
    ManualFailover,
    /// Failback is manual: an operator decides.
    ManualFailback,
    /// Every site is down.
    AllDown {
        /// The policy applied.
        policy: AllDownPolicy,
    },
    /// An operator forced the switch past the guards.
    Forced,
    /// An operator asked for it.
    Operator,
    /// Anything else, in words.
    Note(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| humantime::format_duration(round_ms(*d)).to_string();
        match self {
            Reason::SiteHealth {
                site,
                health,
                up,
                down,
                observers,
                quorum,
            } => match health {
                Health::Up => write!(
                    f,
                    "site {site} up: {up} of {observers} observers (quorum {quorum})"
                ),
                Health::Down => write!(
                    f,
                    "site {site} down: {down} of {observers} observers (quorum {quorum})"
                ),
                Health::Unknown => write!(
                    f,
                    "site {site} unknown: {up} up, {down} down, {} undecided or silent of \
                     {observers} observers (quorum {quorum})",
                    observers.saturating_sub(up + down)
                ),
            },
            Reason::ProbeFailed {
                site,
                probe,
                observer,
                failures: 0,
                last,
                ..
            } => {
                write!(f, "probe {probe} of {site} down at {observer}, recovering")?;
                if !last.is_empty() {
                    write!(f, " (last failure: {last})")?;
                }
                Ok(())
            }
            Reason::ProbeFailed {
                site,
                probe,
                observer,
                failures,
                fall,
                last,
            } => {
                write!(
                    f,
                    "probe {probe} of {site} failed {failures}/{fall} at {observer}"
                )?;
                if !last.is_empty() {
                    write!(f, ": {last}")?;
                }
                Ok(())
            }
            Reason::Eligible { site, lag, budget } => {
                write!(f, "site {site} eligible")?;
                match (lag, budget) {
                    (Some(l), Some(b)) => write!(f, ": lag {} <= rpo {}", d(l), d(b)),
                    (Some(l), None) => write!(f, ": lag {}", d(l)),
                    _ => Ok(()),
                }
            }
            Reason::NotUp { site, health } => write!(f, "site {site} not eligible: {health}"),
            Reason::LagOverBudget { site, lag, budget } => {
                write!(f, "site {site} blocked: lag {} > rpo {}", d(lag), d(budget))
            }
            Reason::LagUnknown { site } => {
                write!(f, "site {site} blocked: replication lag unknown")
            }
            Reason::Dwell {
                remaining,
                min_dwell,
            } => write!(
                f,
                "waiting {} more for the minimum dwell of {}",
                d(remaining),
                d(min_dwell)
            ),
            Reason::HoldDown { site, remaining } => write!(
                f,
                "failback to {site} waits {} more for the hold-down",
                d(remaining)
            ),
            Reason::Frozen => f.write_str("automatic decisions are frozen"),
            Reason::ManualFailover => f.write_str("failover is manual: an operator must confirm"),
            Reason::ManualFailback => f.write_str("failback is manual: an operator must confirm"),
            Reason::AllDown { policy } => write!(
                f,
                "every site is down: {}",
                match policy {
                    AllDownPolicy::KeepLast => "keeping the last active site",
                    AllDownPolicy::FailOpen => "publishing every site",
                    AllDownPolicy::FailClosed => "withdrawing the records",
                }
            ),
            Reason::Forced => f.write_str("forced by an operator"),
            Reason::Operator => f.write_str("requested by an operator"),
            Reason::Note(s) => f.write_str(s),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u64::MAX as u128) as u64)
}

/// Joins a reason chain into one line.
pub fn explain(reasons: &[Reason]) -> String {
    let mut out = String::new();
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&r.to_string());
    }
    out
}
