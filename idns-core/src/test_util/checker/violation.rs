//! What a broken invariant is called and how it is reported.

use std::fmt;
use std::time::Duration;

/// Which invariant a run broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// The epoch went down.
    EpochDecreased,
    /// Two decisions (or DNS writes) named different sites for one epoch.
    TwoActivesInOneEpoch,
    /// A decision did not raise the epoch, or an action carried an epoch above the view's.
    EpochNotIncreased,
    /// An unforced switch went to a site that was not up, or over the RPO budget.
    IneligibleTarget,
    /// Two unforced switches closer than the minimum dwell.
    DwellViolated,
    /// An automatic failback the policy does not allow (manual, or before the hold-down).
    FailbackPolicy,
    /// A backend was asked to write an epoch lower than one it had accepted.
    StaleWrite,
    /// A restart from the journal did not reach the same state, switched again, or
    /// re-emitted a finished step; or a report or step result was refused.
    ReplayMismatch,
    /// An action was emitted while another was still outstanding (handed out, neither
    /// answered nor past its timeout).
    TwoActionsInFlight,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A broken invariant: which, when, why, and what led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// Time since the checker's origin.
    pub at: Duration,
    /// What happened.
    pub detail: String,
    /// The last lines of the trace, up to the violation (inputs, actions, restarts).
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:.3}s: {}",
            self.invariant,
            self.at.as_secs_f64(),
            self.detail
        )?;
        for line in &self.trace {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}
