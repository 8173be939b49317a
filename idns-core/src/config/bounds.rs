//! Bounds on durations, given to [`Problems::duration`](crate::Problems::duration): upper
//! ones so that time arithmetic downstream can never overflow, and "more than zero".

use std::time::Duration;

use crate::error::Problems;

/// As a lower bound: zero is allowed.
pub(super) const ZERO: Duration = Duration::ZERO;
/// As a lower bound: anything longer than zero.
pub(super) const NONZERO: Duration = Problems::ABOVE_ZERO;
pub(super) const DAY: Duration = Duration::from_secs(86_400);
pub(super) const MONTH: Duration = Duration::from_secs(30 * 86_400);
pub(super) const YEAR: Duration = Duration::from_secs(366 * 86_400);
