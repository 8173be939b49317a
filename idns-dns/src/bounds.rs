//! Bounds on the durations of every DNS backend's settings, for
//! [`Problems::duration`](idns_core::Problems::duration).

use std::time::Duration;

/// The longest timeout or pause any DNS backend setting may give: an hour is already far
/// beyond any sensible DNS exchange, and the bound keeps `timeout + margin` from overflowing.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
