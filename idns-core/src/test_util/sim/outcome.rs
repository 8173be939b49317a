//! What a simulation run leaves: [`SimOutcome`].

use std::time::Duration;

use crate::event::Event;
use crate::id::SiteId;
use crate::journal::Journal;
use crate::runbook::RunbookKind;
use crate::test_util::{MemoryDns, MemoryReplication, Trace, Violation};

/// The result of a run.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The scenario's seed.
    pub seed: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Every event the election emitted, with its virtual time.
    pub events: Vec<(Duration, Event)>,
    /// The trace of what happened (world events, actions, restarts).
    pub trace: Trace,
    /// The final journal.
    pub journal: Option<Journal>,
    /// Inputs fed to the election.
    pub inputs: u64,
    /// Virtual time simulated.
    pub simulated: Duration,
    /// The DNS backend, for inspection.
    pub dns: MemoryDns,
    /// The replication backend, for inspection.
    pub replication: MemoryReplication,
}

impl SimOutcome {
    /// A readable report: the seed, the violation and the last lines of the trace.
    pub fn report(&self) -> String {
        let mut out = format!("seed {}", self.seed);
        match &self.violation {
            Some(v) => out.push_str(&format!(
                ": {} at {:?}: {}\nreplay: Simulator::new(Scenario::random({})).run()\n",
                v.invariant, v.at, v.detail, self.seed
            )),
            None => out.push_str(": no violation\n"),
        }
        for line in self.trace.tail(40) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Decisions (kind, target, forced, virtual time), in order.
    pub fn decisions(&self) -> Vec<(Duration, RunbookKind, Option<SiteId>, bool)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Decision {
                    kind, to, forced, ..
                } => Some((*t, *kind, to.clone(), *forced)),
                _ => None,
            })
            .collect()
    }
}
