//! The verdict of a report: what failed, what deserves a look.

use idns_core::{Outcome, RunbookKind, StepStatus, SwitchReport};

use super::context::ReportContext;

/// The verdict of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Completed; every step done, integrity verified, every check held.
    Passed,
    /// Completed, but a step was skipped or needed retries.
    Warnings,
    /// Aborted, a step failed, integrity failed or a check did not hold.
    Failed,
}

impl Verdict {
    /// The verdict in capitals, as the report prints it.
    pub(super) fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "PASSED",
            Verdict::Warnings => "PASSED WITH WARNINGS",
            Verdict::Failed => "FAILED",
        }
    }
}

/// A verdict and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The verdict.
    pub verdict: Verdict,
    /// What made it fail.
    pub failures: Vec<String>,
    /// What deserves a look although it did not fail.
    pub warnings: Vec<String>,
}

impl Assessment {
    /// Whether nothing failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.verdict != Verdict::Failed
    }
}

/// Judges a runbook: its outcome, its steps, the integrity results and the checks.
pub fn assess(report: &SwitchReport, ctx: &ReportContext) -> Assessment {
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    if report.outcome == Outcome::Aborted {
        failures.push(format!("the {} was aborted", report.kind));
    }
    for s in &report.steps {
        match s.status {
            StepStatus::Failed => failures.push(format!(
                "step {} ({}) failed after {} attempt(s): {}",
                s.name, s.description, s.attempts, s.detail
            )),
            StepStatus::Skipped => warnings.push(format!(
                "step {} ({}) was skipped: {}",
                s.name, s.description, s.detail
            )),
            StepStatus::Done if s.attempts > 1 => warnings.push(format!(
                "step {} ({}) needed {} attempts",
                s.name, s.description, s.attempts
            )),
            StepStatus::Done => {}
        }
    }
    for r in &ctx.integrity {
        if !r.mismatches.is_empty() {
            failures.push(format!(
                "integrity of {} at {}: {} difference(s): {}",
                r.resource,
                r.site,
                r.mismatches.len(),
                r.mismatches.join("; ")
            ));
        }
        if r.markers_verified != r.markers_written {
            failures.push(format!(
                "integrity of {} at {}: {} of {} marker(s) verified",
                r.resource, r.site, r.markers_verified, r.markers_written
            ));
        }
    }
    if ctx.integrity.is_empty() && report.kind == RunbookKind::Drill {
        warnings.push("no integrity verification was recorded".into());
    }
    for c in ctx.checks.iter().filter(|c| !c.passed) {
        failures.push(format!("check failed: {}: {}", c.what, c.detail));
    }
    let verdict = if !failures.is_empty() {
        Verdict::Failed
    } else if !warnings.is_empty() {
        Verdict::Warnings
    } else {
        Verdict::Passed
    };
    Assessment {
        verdict,
        failures,
        warnings,
    }
}
