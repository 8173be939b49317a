//! Upper bounds on durations, so that time arithmetic downstream can never overflow.

use std::fmt;
use std::time::Duration;

use crate::error::Problems;

pub(super) const DAY: Duration = Duration::from_secs(86_400);
pub(super) const MONTH: Duration = Duration::from_secs(30 * 86_400);
pub(super) const YEAR: Duration = Duration::from_secs(366 * 86_400);

/// Bounds a duration, so that time arithmetic downstream can never overflow. The path is
/// written out only for a problem.
pub(super) fn at_most(p: &mut Problems, path: impl fmt::Display, d: Duration, max: Duration) {
    if d > max {
        p.push(
            path.to_string(),
            humantime::format_duration(d),
            format!("must be at most {}", humantime::format_duration(max)),
        );
    }
}
