//! What the program around the election knows about a runbook: the report's input besides
//! the election's [`SwitchReport`](idns_core::SwitchReport).

use std::time::{Duration, SystemTime};

use idns_core::{Event, StepName};

/// What the program around the election knows about a runbook, for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportContext {
    /// The service's DNS name.
    pub service: String,
    /// The name the runbook published: the drill name for a drill, the service's name
    /// otherwise.
    pub published_name: String,
    /// Who or what started it: an operator (and through what), the automatic election, a
    /// scheduled drill.
    pub started_by: String,
    /// The program that ran it, and where.
    pub controller: String,
    /// When the report was written.
    pub generated_at: SystemTime,
    /// The sites of the service.
    pub sites: Vec<SiteNote>,
    /// What integrity verification found, per resource and site.
    pub integrity: Vec<IntegrityResult>,
    /// Further checks an auditor asks for.
    pub checks: Vec<Check>,
    /// Failed attempts that were retried, and holds for an operator (see
    /// [`record`](Self::record)).
    pub retries: Vec<RetryNote>,
    /// Free remarks, printed at the end.
    pub notes: Vec<String>,
}

/// One site of the service, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteNote {
    /// The site's id.
    pub id: String,
    /// Its addresses (or alias), as published.
    pub addresses: String,
    /// Its part in this runbook, e.g. "active, production" or "drill target".
    pub role: String,
}

/// What integrity verification found for one resource at one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityResult {
    /// The resource (a consistency group).
    pub resource: String,
    /// The site whose copy was checked.
    pub site: String,
    /// What was checked against what, in words (e.g. "drill copy against checkpoint 4").
    pub scope: String,
    /// Entries checked against the copy's own evidence.
    pub checked: u64,
    /// What an entry is: "files", "rows", "tables".
    pub unit: String,
    /// Drill markers written at the copy.
    pub markers_written: u64,
    /// Markers read back and found identical (size and checksum).
    pub markers_verified: u64,
    /// Every difference found; empty when the copy matched.
    pub mismatches: Vec<String>,
}

impl IntegrityResult {
    /// Whether the copy matched its evidence and every marker written was verified.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.markers_verified == self.markers_written
    }
}

/// A check an auditor asks for, with what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

impl Check {
    /// A check with its result.
    pub fn new(what: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// A failed attempt that was retried, or a hold for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNote {
    /// The runbook.
    pub runbook: u64,
    /// The step.
    pub step: StepName,
    /// The step's position in the runbook (from 0), where known.
    pub index: Option<u32>,
    /// The attempt that failed (from 1), where known.
    pub attempt: Option<u32>,
    /// The error.
    pub error: String,
    /// The delay before the next attempt; `None` for a hold.
    pub delay: Option<Duration>,
}

impl ReportContext {
    /// A context for a runbook of `service` that published `published_name`, written now by
    /// this program.
    pub fn new(service: impl Into<String>, published_name: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            published_name: published_name.into(),
            started_by: String::new(),
            controller: format!("idns {}", env!("CARGO_PKG_VERSION")),
            generated_at: SystemTime::now(),
            sites: Vec::new(),
            integrity: Vec::new(),
            checks: Vec::new(),
            retries: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Keeps what the report needs from one of the election's events: failed attempts
    /// ([`Event::StepRetry`]) and holds ([`Event::Held`]). Feed it every event while the
    /// runbook runs; others are ignored.
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::StepRetry {
                id,
                name,
                delay,
                error,
            } => self.retries.push(RetryNote {
                runbook: id.runbook,
                step: *name,
                index: Some(id.index),
                attempt: Some(id.attempt),
                error: error.clone(),
                delay: Some(*delay),
            }),
            Event::Held {
                runbook,
                name,
                reason,
            } => self.retries.push(RetryNote {
                runbook: *runbook,
                step: *name,
                index: None,
                attempt: None,
                error: reason.clone(),
                delay: None,
            }),
            _ => {}
        }
    }
}
