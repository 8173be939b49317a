//! The election's timers: a closed set, kept in a small table (as quinn-proto does).

use std::time::Instant;

/// Every timer the election can arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The next observer to fall silent.
    ObserverStale = 0,
    /// The end of the minimum dwell, when a switch waits for it.
    Dwell = 1,
    /// The end of the failback hold-down.
    HoldDown = 2,
    /// The next attempt of a failed step.
    Retry = 3,
    /// A step whose result never came back.
    Watchdog = 4,
}

impl Timer {
    const VALUES: [Timer; 5] = [
        Timer::ObserverStale,
        Timer::Dwell,
        Timer::HoldDown,
        Timer::Retry,
        Timer::Watchdog,
    ];
}

/// When each timer fires, if armed, and the earliest of them (asked before every input, so
/// kept rather than recomputed).
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; 5],
    earliest: Option<Instant>,
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.set_or_stop(timer, Some(at));
    }

    pub(crate) fn set_or_stop(&mut self, timer: Timer, at: Option<Instant>) {
        self.data[timer as usize] = at;
        self.earliest = self.data.iter().flatten().min().copied();
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.set_or_stop(timer, None);
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.earliest
    }

    /// Disarms and returns the timers that are due at `now`.
    pub(crate) fn take_expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due = Vec::new();
        for t in Timer::VALUES {
            if self.data[t as usize].is_some_and(|at| at <= now) {
                self.data[t as usize] = None;
                due.push(t);
            }
        }
        self.earliest = self.data.iter().flatten().min().copied();
        due.into_iter()
    }
}
