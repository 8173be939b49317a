//! Whether an old primary may hold writes the new primary lacks, decided from what one
//! reprotect observes: the old server's control file (or, while it runs as a standby, its
//! timeline and replayed LSN) against the new primary's timeline history. Nothing remembered
//! from an earlier call counts: a server restarted as a primary after a clean switchover is
//! caught by its own WAL.

use std::collections::BTreeMap;

use super::control::{format_lsn, parse_lsn};

/// The new primary's line of timelines: its own, and where its history left each earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lineage {
    /// The new primary's timeline.
    pub timeline: u32,
    /// For each ancestor timeline, the LSN at which the next one began (the switch point).
    pub left_at: BTreeMap<u32, u64>,
}

/// What the observation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Divergence {
    /// Everything the old server holds is in the new primary's history (why, in words).
    None(String),
    /// It may hold writes the new primary lacks (why, in words): save them before a rewind.
    Possible(String),
}

impl Lineage {
    /// From the timeline and the contents of its history file (`<TLI>.history`: lines of
    /// `parent-timeline <tab> switch-point <tab> reason`); `None` when a line does not parse.
    pub(crate) fn parse(timeline: u32, history: &str) -> Option<Self> {
        let mut left_at = BTreeMap::new();
        for line in history.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let tli = fields.next()?.parse::<u32>().ok()?;
            let at = parse_lsn(fields.next()?)?;
            left_at.insert(tli, at);
        }
        Some(Self { timeline, left_at })
    }

    /// Up to where the new primary's history shares timeline `tli` (`u64::MAX` for its own
    /// timeline); `None` when `tli` is not in its history.
    fn shared_until(&self, tli: u32) -> Option<u64> {
        if tli == self.timeline {
            Some(u64::MAX)
        } else {
            self.left_at.get(&tli).copied()
        }
    }

    /// A server running as a standby: on checkpoint timeline `tli`, streaming timeline
    /// `receiving` (if it streams), having replayed up to `replayed`.
    pub(crate) fn of_standby(&self, tli: u32, receiving: Option<u32>, replayed: u64) -> Divergence {
        if receiving == Some(self.timeline) {
            return Divergence::None(format!(
                "it streams the new primary's timeline {}",
                self.timeline
            ));
        }
        match self.shared_until(tli) {
            Some(until) if replayed <= until => Divergence::None(format!(
                "it replayed up to {} on timeline {tli}, which the new primary's history holds",
                format_lsn(replayed)
            )),
            Some(until) => Divergence::Possible(format!(
                "it replayed up to {} on timeline {tli}, past {} where the new primary's \
                 timeline began",
                format_lsn(replayed),
                format_lsn(until)
            )),
            None => Divergence::Possible(format!(
                "its timeline {tli} is not in the new primary's history"
            )),
        }
    }
}

/// A stopped server, from its `pg_controldata`, against the new primary's `lineage` (`None`:
/// unknown, so divergence is possible).
///
/// A clean primary shutdown ends its WAL with the checkpoint record: nothing diverged when
/// that record starts before the new timeline's switch point (switch points are record
/// boundaries, so the whole record is then shared). A standby's WAL ends at the later of its
/// checkpoint and its minimum recovery point, as `pg_rewind` reckons it. A server that was not
/// shut down cleanly may hold anything.
pub(crate) fn of_stopped(cd: &BTreeMap<String, String>, lineage: Option<&Lineage>) -> Divergence {
    let get = |k: &str| cd.get(k).map(String::as_str).unwrap_or("");
    let state = get("Database cluster state");
    let tli = get("Latest checkpoint's TimeLineID").parse::<u32>().ok();
    let checkpoint = parse_lsn(get("Latest checkpoint location"));
    let min_recovery = parse_lsn(get("Minimum recovery ending location")).unwrap_or(0);
    let min_tli = get("Min recovery ending loc's timeline")
        .parse::<u32>()
        .unwrap_or(0);
    let Some(lineage) = lineage else {
        return Divergence::Possible("the new primary's timeline history is unknown".into());
    };
    let (Some(tli), Some(checkpoint)) = (tli, checkpoint) else {
        return Divergence::Possible("its control data names no checkpoint".into());
    };
    match state {
        "shut down" if tli == lineage.timeline => Divergence::Possible(format!(
            "it was a primary on timeline {tli}, the new primary's own: two promotions chose \
             the same timeline"
        )),
        "shut down" | "shut down in recovery" => {
            if min_recovery != 0 && min_tli != tli {
                return Divergence::Possible(format!(
                    "its minimum recovery point is on timeline {min_tli}, its checkpoint on {tli}"
                ));
            }
            let Some(until) = lineage.shared_until(tli) else {
                return Divergence::Possible(format!(
                    "its timeline {tli} is not in the new primary's history"
                ));
            };
            if checkpoint < until && min_recovery <= until {
                Divergence::None(format!(
                    "its WAL on timeline {tli} ends before {}, where the new primary's \
                     timeline began",
                    format_lsn(until)
                ))
            } else {
                Divergence::Possible(format!(
                    "its WAL on timeline {tli} goes on to {} (checkpoint) and {} (minimum \
                     recovery point), past {} where the new primary's timeline began: it \
                     took writes after the split",
                    format_lsn(checkpoint),
                    format_lsn(min_recovery),
                    format_lsn(until)
                ))
            }
        }
        other => Divergence::Possible(format!("it was not shut down cleanly ({other:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cd(state: &str, tli: u32, checkpoint: &str, min: &str) -> BTreeMap<String, String> {
        [
            ("Database cluster state", state.to_owned()),
            ("Latest checkpoint's TimeLineID", tli.to_string()),
            ("Latest checkpoint location", checkpoint.to_owned()),
            ("Minimum recovery ending location", min.to_owned()),
            (
                "Min recovery ending loc's timeline",
                if min == "0/0" { 0 } else { tli }.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn lineage() -> Lineage {
        Lineage::parse(2, "# comment\n1\t0/3000100\tno recovery target specified\n").unwrap()
    }

    fn clean(d: Divergence) -> bool {
        matches!(d, Divergence::None(_))
    }

    #[test]
    fn a_clean_switchover_did_not_diverge_and_later_writes_did() {
        let l = lineage();
        assert_eq!(l.left_at.get(&1), Some(&0x300_0100));
        // The fenced primary's shutdown checkpoint was replayed before the promotion.
        assert!(clean(of_stopped(
            &cd("shut down", 1, "0/3000028", "0/0"),
            Some(&l)
        )));
        // Restarted as a primary and written to: its checkpoint moved past the switch point.
        assert!(!clean(of_stopped(
            &cd("shut down", 1, "0/3000200", "0/0"),
            Some(&l)
        )));
        // The switch point itself is the end of the shared WAL.
        assert!(!clean(of_stopped(
            &cd("shut down", 1, "0/3000100", "0/0"),
            Some(&l)
        )));
    }

    #[test]
    fn unknown_or_unclean_means_possible() {
        let l = lineage();
        assert!(!clean(of_stopped(
            &cd("shut down", 1, "0/3000028", "0/0"),
            None
        )));
        assert!(!clean(of_stopped(
            &cd("in production", 1, "0/3000028", "0/0"),
            Some(&l)
        )));
        assert!(!clean(of_stopped(
            &cd("shut down", 7, "0/3000028", "0/0"),
            Some(&l)
        )));
        // A primary on the new primary's own timeline: a second promotion to the same number.
        assert!(!clean(of_stopped(
            &cd("shut down", 2, "0/3000028", "0/0"),
            Some(&l)
        )));
        assert!(Lineage::parse(2, "1\tnot-an-lsn\treason\n").is_none());
    }

    #[test]
    fn standbys_are_judged_by_what_they_replayed() {
        let l = lineage();
        assert!(clean(of_stopped(
            &cd("shut down in recovery", 2, "0/5000000", "0/5000100"),
            Some(&l)
        )));
        assert!(clean(of_stopped(
            &cd("shut down in recovery", 1, "0/3000028", "0/3000100"),
            Some(&l)
        )));
        assert!(!clean(of_stopped(
            &cd("shut down in recovery", 1, "0/3000028", "0/3000200"),
            Some(&l)
        )));
        assert!(clean(l.of_standby(1, Some(2), 0x900_0000)));
        assert!(clean(l.of_standby(1, None, 0x300_0100)));
        assert!(!clean(l.of_standby(1, None, 0x300_0101)));
        assert!(!clean(l.of_standby(5, None, 0)));
    }
}
