//! The trace of a checked run: what happened, in order, kept as data and written out only
//! when someone reads it (a run of millions of inputs formats nothing it does not show).

use std::fmt;
use std::time::Duration;

use crate::election::Input;
use crate::error::BackendError;
use crate::runbook::{Action, StepId};

/// What happened in a checked run, in order, each entry with its time from the origin.
///
/// Read it as lines ([`lines`](Self::lines), [`tail`](Self::tail)) or print it whole
/// (`Display`, one line per entry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    entries: Vec<(Duration, Entry)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Text(String),
    Input(Input),
    Action(Action),
    Done {
        id: StepId,
        error: Option<BackendError>,
    },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Text(text) => f.write_str(text),
            Entry::Input(input) => write!(f, "input {input:?}"),
            Entry::Action(a) => write!(f, "action {} [{}] {}", a.id, a.epoch, a.step),
            Entry::Done { id, error: None } => write!(f, "done {id}: ok"),
            Entry::Done { id, error: Some(e) } => write!(f, "done {id}: {e}"),
        }
    }
}

impl Trace {
    pub(crate) fn push(&mut self, at: Duration, entry: Entry) {
        self.entries.push((at, entry));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was traced.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry as a line: `   12.345s what happened`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.iter().map(|(at, e)| line(*at, e))
    }

    /// The last `n` entries as lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let from = self.entries.len().saturating_sub(n);
        self.entries[from..]
            .iter()
            .map(|(at, e)| line(*at, e))
            .collect()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, e) in &self.entries {
            writeln!(f, "{}", line(*at, e))?;
        }
        Ok(())
    }
}

fn line(at: Duration, entry: &Entry) -> String {
    format!("{:>10.3}s {entry}", at.as_secs_f64())
}
