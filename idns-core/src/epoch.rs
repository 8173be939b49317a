//! The fencing epoch.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A fencing epoch: it increases by one every time the election changes what the service's
/// name points at, and every action carries it.
///
/// Backends remember the highest epoch they have accepted and refuse anything lower, so a
/// controller that was partitioned away, or restarted from an old journal, can never undo a
/// newer decision. Epoch 0 means "no decision yet".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(u64);

impl Epoch {
    /// The epoch before any decision.
    pub const ZERO: Epoch = Epoch(0);

    /// An epoch from its number (as read back from a backend or a store).
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The epoch that follows this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}
