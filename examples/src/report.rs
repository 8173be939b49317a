//! Drill and switch reports: a Markdown summary and a self-contained HTML page with an SVG
//! timeline.
//!
//! Both renderers take the [`SwitchReport`] the election produced when a runbook ended (its
//! phases, RTO, RPO, steps and reason chain) and a [`ReportContext`] with what only the
//! program around the election knows: which name was published, who started the runbook,
//! what the integrity verification found, and the checks an auditor asks for (was production
//! left alone, was the drill cleaned up).
//!
//! - [`markdown`]: a readable summary — verdict, RTO, RPO, a phase table, every step with its
//!   attempts, retries and errors, integrity results, checks and the decision's reasons.
//! - [`html`]: one page with inline CSS and no scripts or external assets (a
//!   Content-Security-Policy forbids them), every text HTML-escaped, and an SVG timeline: a bar
//!   per phase on a time axis, the RPO window before the decision, and retried, skipped or
//!   failed steps marked.
//! - [`assess`]: the verdict both renderers print, for a program's exit code.
//!
//! ```
//! # fn demo(report: &idns_core::SwitchReport) {
//! use idns_examples::report::{self, Check, ReportContext};
//!
//! let mut ctx = ReportContext::new("www.example.com", "drill.www.example.com");
//! ctx.started_by = "a scheduled drill".into();
//! ctx.checks.push(Check::new("production untouched", true, "www.example.com answered 192.0.2.1 throughout"));
//! let md = report::markdown(report, &ctx);
//! let page = report::html(report, &ctx);
//! let ok = report::assess(report, &ctx).passed();
//! # let _ = (md, page, ok);
//! # }
//! ```

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idns_core::{
    Event, Outcome, Phase, RunbookKind, StepName, StepRecord, StepStatus, SwitchReport,
};

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
    fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "PASSED",
            Verdict::Warnings => "PASSED WITH WARNINGS",
            Verdict::Failed => "FAILED",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Verdict::Passed => "pass",
            Verdict::Warnings => "warn",
            Verdict::Failed => "fail",
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

// ------------------------------------------------------------------------------------------
// The timeline both renderers share
// ------------------------------------------------------------------------------------------

/// Every phase a runbook can have, in the order a failover goes through them.
const ALL_PHASES: [Phase; 9] = [
    Phase::Detect,
    Phase::Decide,
    Phase::Reprotect,
    Phase::Fence,
    Phase::Promote,
    Phase::Verify,
    Phase::SwitchDns,
    Phase::Propagate,
    Phase::Cleanup,
];

/// One phase entry of the report, placed on the time axis (from the first failure, or the
/// command).
#[derive(Debug, Clone, Copy)]
struct Segment {
    phase: Phase,
    start: Duration,
    duration: Duration,
}

impl Segment {
    fn end(&self) -> Duration {
        self.start + self.duration
    }
}

/// One step placed on the time axis.
#[derive(Debug, Clone, Copy)]
struct Placed<'a> {
    index: usize,
    record: &'a StepRecord,
    start: Duration,
}

fn segments(report: &SwitchReport) -> Vec<Segment> {
    let mut at = Duration::ZERO;
    report
        .phases
        .iter()
        .map(|p| {
            let s = Segment {
                phase: p.phase,
                start: at,
                duration: p.duration,
            };
            at += p.duration;
            s
        })
        .collect()
}

/// When the runbook was decided, on the time axis.
fn decision_at(report: &SwitchReport) -> Duration {
    report.phase(Phase::Detect) + report.phase(Phase::Decide)
}

fn placed_steps(report: &SwitchReport) -> Vec<Placed<'_>> {
    let mut at = decision_at(report);
    report
        .steps
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let p = Placed {
                index,
                record,
                start: at,
            };
            at += record.duration;
            p
        })
        .collect()
}

/// The steps of each phase entry, by the entry's index: the election sums consecutive steps
/// of one phase into one entry, after the detect and decide entries.
fn steps_by_segment<'a>(report: &'a SwitchReport, segs: &[Segment]) -> Vec<Vec<Placed<'a>>> {
    let mut out: Vec<Vec<Placed<'a>>> = vec![Vec::new(); segs.len()];
    let first = segs
        .iter()
        .position(|s| !matches!(s.phase, Phase::Detect | Phase::Decide))
        .unwrap_or(segs.len());
    let mut seg = first;
    let mut last: Option<Phase> = None;
    for p in placed_steps(report) {
        let phase = p.record.name.phase();
        if last.is_some_and(|l| l != phase) {
            seg += 1;
        }
        last = Some(phase);
        match out.get_mut(seg) {
            Some(list) if segs[seg].phase == phase => list.push(p),
            // Not the shape the election builds: draw the phases without their steps.
            _ => return vec![Vec::new(); segs.len()],
        }
    }
    out
}

/// Time of the RTO not covered by any phase (between steps, in the driver).
fn unaccounted(report: &SwitchReport) -> Duration {
    let covered: Duration = report.phases.iter().map(|p| p.duration).sum();
    report.rto.saturating_sub(covered)
}

fn missing_phases(report: &SwitchReport) -> Vec<Phase> {
    ALL_PHASES
        .into_iter()
        .filter(|p| !report.phases.iter().any(|x| x.phase == *p))
        .collect()
}

fn title(report: &SwitchReport) -> String {
    let kind = report.kind.to_string();
    let mut c = kind.chars();
    let kind = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>(),
        None => kind,
    };
    format!("{kind} report")
}

/// One sentence: what ran, how it ended, how long it took.
fn summary_line(report: &SwitchReport, ctx: &ReportContext, a: &Assessment) -> String {
    let site = |s: &Option<idns_core::SiteId>| {
        s.as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let ended = match report.outcome {
        Outcome::Completed => "completed",
        Outcome::Aborted => "was aborted",
    };
    let mut line = match report.kind {
        RunbookKind::Drill => format!(
            "The drill of {} at site {} on {} {ended}; recovery time {}",
            ctx.service,
            site(&report.to),
            ctx.published_name,
            fmt_ms(report.rto)
        ),
        _ => format!(
            "The {} of {} from {} to {} {ended}; recovery time {}",
            report.kind,
            ctx.service,
            site(&report.from),
            site(&report.to),
            fmt_ms(report.rto)
        ),
    };
    if let Some(rpo) = report.rpo {
        let _ = write!(line, ", recovery point {}", fmt_ms(rpo));
    }
    let markers: u64 = ctx.integrity.iter().map(|r| r.markers_verified).sum();
    let checked: u64 = ctx.integrity.iter().map(|r| r.checked).sum();
    if !ctx.integrity.is_empty() {
        if ctx.integrity.iter().all(IntegrityResult::passed) {
            let _ = write!(
                line,
                "; integrity verified ({checked} entries checked, {markers} marker(s) verified)"
            );
        } else {
            line.push_str("; integrity verification FAILED");
        }
    }
    let failed = a.failures.len();
    if failed > 0 {
        let _ = write!(line, "; {failed} problem(s)");
    }
    line.push('.');
    line
}

// ------------------------------------------------------------------------------------------
// Formatting
// ------------------------------------------------------------------------------------------

/// A duration as milliseconds with one decimal, or seconds from 10 s on.
fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn share(part: Duration, whole: Duration) -> String {
    if whole.is_zero() {
        "-".into()
    } else {
        format!("{:.0} %", part.as_secs_f64() / whole.as_secs_f64() * 100.0)
    }
}

/// A wall-clock time as RFC 3339 in UTC, to the millisecond.
fn fmt_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Done => "done",
        StepStatus::Skipped => "skipped",
        StepStatus::Failed => "failed",
    }
}

fn or_dash(s: &str) -> &str {
    if s.trim().is_empty() { "-" } else { s }
}

/// Text for Markdown: characters that Markdown or inline HTML would interpret are escaped,
/// line breaks become spaces (so a table cell stays one cell).
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A name as a Markdown code span. A name with characters a code span shows literally but a
/// renderer's HTML pass might not (`<`, `>`, `&`, backticks) is escaped text instead.
fn md_code(s: &str) -> String {
    if s.is_empty()
        || s.chars()
            .any(|c| matches!(c, '<' | '>' | '&' | '`' | '|' | '\\') || c.is_control())
    {
        return md(s);
    }
    format!("`{s}`")
}

/// Text for HTML (element content and quoted attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Markdown
// ------------------------------------------------------------------------------------------

/// The report as a Markdown summary.
pub fn markdown(report: &SwitchReport, ctx: &ReportContext) -> String {
    let a = assess(report, ctx);
    let mut o = String::new();
    let site = |s: &Option<idns_core::SiteId>| {
        s.as_ref()
            .map(|s| md_code(s.as_str()))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(o, "# {}: {}\n", title(report), md(&ctx.service));
    let _ = writeln!(
        o,
        "**{}**: {}\n",
        a.verdict.label(),
        md(&summary_line(report, ctx, &a))
    );
    for f in &a.failures {
        let _ = writeln!(o, "- FAILED: {}", md(f));
    }
    for w in &a.warnings {
        let _ = writeln!(o, "- warning: {}", md(w));
    }
    if !a.failures.is_empty() || !a.warnings.is_empty() {
        o.push('\n');
    }

    o.push_str("| | |\n|---|---|\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "| {k} | {v} |");
    };
    row("Service", md_code(&ctx.service));
    row("Name published", md_code(&ctx.published_name));
    row(
        "Runbook",
        format!(
            "{} #{}, epoch {}{}",
            report.kind,
            report.runbook,
            report.epoch,
            if report.forced { ", forced" } else { "" }
        ),
    );
    row(
        "Switch",
        format!("{} → {}", site(&report.from), site(&report.to)),
    );
    row("Started by", md(or_dash(&ctx.started_by)));
    row("Controller", md(or_dash(&ctx.controller)));
    row("Decided at", fmt_time(report.decided_at));
    row("Finished at", fmt_time(report.finished_at));
    row(
        "Outcome",
        match report.outcome {
            Outcome::Completed => "completed".into(),
            Outcome::Aborted => "**aborted**".into(),
        },
    );
    row("RTO", format!("**{}**", fmt_ms(report.rto)));
    row(
        "RPO",
        match report.rpo {
            Some(rpo) => format!(
                "**{}** (replication lag of the target at the decision)",
                fmt_ms(rpo)
            ),
            None => "not measured (no replicated resource, or the lag was unknown)".into(),
        },
    );
    o.push('\n');

    if !report.reasons.is_empty() {
        o.push_str("## Why\n\n");
        for (i, r) in report.reasons.iter().enumerate() {
            let _ = writeln!(o, "{}. {}", i + 1, md(r));
        }
        o.push('\n');
    }

    o.push_str("## Phases\n\n");
    o.push_str("| Phase | Starts at | Duration | Share of RTO |\n|---|---:|---:|---:|\n");
    for s in segments(report) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            s.phase,
            fmt_ms(s.start),
            fmt_ms(s.duration),
            share(s.duration, report.rto)
        );
    }
    let gap = unaccounted(report);
    if gap >= Duration::from_micros(100) {
        let _ = writeln!(
            o,
            "| between steps | | {} | {} |",
            fmt_ms(gap),
            share(gap, report.rto)
        );
    }
    let _ = writeln!(o, "| **RTO** | | **{}** | 100 % |", fmt_ms(report.rto));
    let missing = missing_phases(report);
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(o, "\nNot part of this runbook: {}.", names.join(", "));
    }
    o.push_str(
        "\nTime runs from the first failed probe (or the command) to the end of the last step.\n\n",
    );

    o.push_str("## Steps\n\n");
    if report.steps.is_empty() {
        o.push_str("No step ran.\n\n");
    } else {
        o.push_str(
            "| # | Step | What | Phase | Status | Attempts | Retries | Duration | Detail |\n\
             |---:|---|---|---|---|---:|---:|---:|---|\n",
        );
        for p in placed_steps(report) {
            let s = p.record;
            let status = match s.status {
                StepStatus::Done => "done".to_owned(),
                other => format!("**{}**", status_word(other)),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.index + 1,
                md_code(s.name.as_str()),
                md(&s.description),
                s.name.phase(),
                status,
                s.attempts,
                s.attempts.saturating_sub(1),
                fmt_ms(s.duration),
                md(or_dash(&s.detail))
            );
        }
        o.push('\n');
    }
    let retries: Vec<&RetryNote> = ctx
        .retries
        .iter()
        .filter(|r| r.runbook == report.runbook)
        .collect();
    if !retries.is_empty() {
        o.push_str("Failed attempts:\n\n");
        for r in retries {
            let at = match (r.index, r.attempt) {
                (Some(i), Some(n)) => format!("step {} attempt {n}", i + 1),
                _ => "step".into(),
            };
            let then = match r.delay {
                Some(d) => format!("retried after {}", fmt_ms(d)),
                None => "held for an operator".into(),
            };
            let _ = writeln!(
                o,
                "- {at} ({}): {} — {then}",
                md_code(r.step.as_str()),
                md(&r.error)
            );
        }
        o.push('\n');
    }

    o.push_str("## Integrity\n\n");
    if ctx.integrity.is_empty() {
        o.push_str("No integrity verification was recorded.\n\n");
    } else {
        o.push_str(
            "| Resource | Site | What | Checked | Markers written | Markers verified | Result |\n\
             |---|---|---|---:|---:|---:|---|\n",
        );
        for r in &ctx.integrity {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} {} | {} | {} | {} |",
                md_code(&r.resource),
                md_code(&r.site),
                md(or_dash(&r.scope)),
                r.checked,
                md(&r.unit),
                r.markers_written,
                r.markers_verified,
                if r.passed() {
                    "verified".to_owned()
                } else {
                    format!("**FAILED** ({} difference(s))", r.mismatches.len())
                }
            );
        }
        o.push('\n');
        for r in ctx.integrity.iter().filter(|r| !r.mismatches.is_empty()) {
            let _ = writeln!(
                o,
                "Differences in {} at {}:\n",
                md_code(&r.resource),
                md_code(&r.site)
            );
            for m in &r.mismatches {
                let _ = writeln!(o, "- {}", md(m));
            }
            o.push('\n');
        }
    }

    if !ctx.checks.is_empty() {
        o.push_str("## Checks\n\n");
        for c in &ctx.checks {
            let _ = writeln!(
                o,
                "- **{}** {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                md(&c.what),
                md(&c.detail)
            );
        }
        o.push('\n');
    }

    if !ctx.sites.is_empty() {
        o.push_str("## Sites\n\n| Site | Addresses | Role |\n|---|---|---|\n");
        for s in &ctx.sites {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                md_code(&s.id),
                md(&s.addresses),
                md(&s.role)
            );
        }
        o.push('\n');
    }

    if !ctx.notes.is_empty() {
        o.push_str("## Notes\n\n");
        for n in &ctx.notes {
            let _ = writeln!(o, "- {}", md(n));
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "_Report written {} by {}._",
        fmt_time(ctx.generated_at),
        md(or_dash(&ctx.controller))
    );
    o
}

// ------------------------------------------------------------------------------------------
// HTML
// ------------------------------------------------------------------------------------------

const CSS: &str = r#"
:root { --fg:#1d2330; --muted:#5d6678; --line:#d9dee8; --bg:#f6f7fa; --card:#fff;
        --pass:#1a7f37; --warn:#9a6700; --fail:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
main { max-width:1100px; margin:0 auto; padding:24px; }
header.verdict { background:var(--card); border:1px solid var(--line); border-left:8px solid;
                 border-radius:8px; padding:16px 20px; margin-bottom:16px; }
header.pass { border-left-color:var(--pass); } header.warn { border-left-color:var(--warn); }
header.fail { border-left-color:var(--fail); }
h1 { margin:0 0 4px; font-size:22px; } h2 { font-size:17px; margin:0 0 10px; }
.badge { display:inline-block; padding:2px 10px; border-radius:12px; color:#fff;
         font-weight:700; font-size:13px; letter-spacing:.04em; }
.pass .badge, .badge.pass { background:var(--pass); } .warn .badge, .badge.warn { background:var(--warn); }
.fail .badge, .badge.fail { background:var(--fail); }
.name { font-family:ui-monospace,"DejaVu Sans Mono",monospace; }
.summary { margin:8px 0 0; }
ul.findings { margin:8px 0 0; padding-left:20px; }
ul.findings li.f { color:var(--fail); } ul.findings li.w { color:var(--warn); }
.cards { display:grid; grid-template-columns:repeat(4,1fr); gap:12px; margin-bottom:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
.card .v { font-size:22px; font-weight:700; margin-top:2px; }
.card .s { color:var(--muted); font-size:12px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:16px 20px; margin-bottom:16px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.total td { font-weight:700; border-top:2px solid var(--line); }
td.st-done { color:var(--pass); } td.st-skipped { color:var(--warn); font-weight:600; }
td.st-failed { color:var(--fail); font-weight:700; }
.detail { color:var(--muted); word-break:break-word; }
.note { color:var(--muted); font-size:12px; margin:8px 0 0; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; word-break:break-word; }
ul.checks { list-style:none; padding:0; margin:0; }
ul.checks li { padding:4px 0; }
svg { width:100%; height:auto; display:block; }
svg text { font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; font-size:12px; fill:#1d2330; }
svg .axis text { fill:#5d6678; font-size:11px; }
svg .small { font-size:11px; fill:#5d6678; }
svg .inbar { fill:#fff; font-weight:600; }
footer { color:var(--muted); font-size:12px; text-align:center; margin:8px 0 24px; }
@media (max-width:800px) { .cards { grid-template-columns:repeat(2,1fr); } }
"#;

/// The report as one self-contained HTML page (inline CSS, an SVG timeline, no scripts).
pub fn html(report: &SwitchReport, ctx: &ReportContext) -> String {
    let a = assess(report, ctx);
    let mut o = String::new();
    let title = format!("{}: {}", title(report), ctx.service);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );

    // The verdict.
    let _ = write!(
        o,
        "<header class=\"verdict {}\">\n<h1>{} <span class=\"name\">{}</span></h1>\n\
         <span class=\"badge\">{}</span>\n<p class=\"summary\">{}</p>\n",
        a.verdict.class(),
        esc(&self::title(report)),
        esc(&ctx.service),
        a.verdict.label(),
        esc(&summary_line(report, ctx, &a))
    );
    if !a.failures.is_empty() || !a.warnings.is_empty() {
        o.push_str("<ul class=\"findings\">\n");
        for f in &a.failures {
            let _ = writeln!(o, "<li class=\"f\">{}</li>", esc(f));
        }
        for w in &a.warnings {
            let _ = writeln!(o, "<li class=\"w\">{}</li>", esc(w));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</header>\n");

    // The figures at a glance.
    let integrity = if ctx.integrity.is_empty() {
        ("-".to_owned(), "not recorded".to_owned())
    } else if ctx.integrity.iter().all(IntegrityResult::passed) {
        let m: u64 = ctx.integrity.iter().map(|r| r.markers_verified).sum();
        let c: u64 = ctx.integrity.iter().map(|r| r.checked).sum();
        (
            "verified".to_owned(),
            format!("{c} entries checked, {m} marker(s) verified"),
        )
    } else {
        let n: usize = ctx.integrity.iter().map(|r| r.mismatches.len()).sum();
        ("FAILED".to_owned(), format!("{n} difference(s)"))
    };
    let outcome = match report.outcome {
        Outcome::Completed => "completed",
        Outcome::Aborted => "aborted",
    };
    let cards = [
        (
            "RTO",
            fmt_ms(report.rto),
            "from the first failure (or the command) to the end".to_owned(),
        ),
        (
            "RPO",
            report.rpo.map(fmt_ms).unwrap_or_else(|| "-".into()),
            if report.rpo.is_some() {
                "replication lag of the target at the decision".to_owned()
            } else {
                "not measured".to_owned()
            },
        ),
        (
            "Outcome",
            outcome.to_owned(),
            format!(
                "{} step(s), {} retried",
                report.steps.len(),
                report.steps.iter().filter(|s| s.attempts > 1).count()
            ),
        ),
        ("Integrity", integrity.0, integrity.1),
    ];
    o.push_str("<div class=\"cards\">\n");
    for (k, v, s) in cards {
        let _ = writeln!(
            o,
            "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"s\">{}</div></div>",
            esc(k),
            esc(&v),
            esc(&s)
        );
    }
    o.push_str("</div>\n");

    // The timeline.
    o.push_str("<section>\n<h2>Timeline</h2>\n");
    o.push_str(&svg_timeline(report));
    o.push_str(
        "<p class=\"note\">Time runs from the first failed probe (or the command) to the end of \
         the last step. Each bar is a phase; the segments inside it are its steps.</p>\n</section>\n",
    );

    // Phases.
    o.push_str(
        "<section>\n<h2>Phases</h2>\n<table>\n<thead><tr><th>Phase</th><th class=\"n\">Starts at</th>\
         <th class=\"n\">Duration</th><th class=\"n\">Share of RTO</th></tr></thead>\n<tbody>\n",
    );
    for s in segments(report) {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&s.phase.to_string()),
            fmt_ms(s.start),
            fmt_ms(s.duration),
            share(s.duration, report.rto)
        );
    }
    let gap = unaccounted(report);
    if gap >= Duration::from_micros(100) {
        let _ = writeln!(
            o,
            "<tr><td>between steps</td><td class=\"n\"></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            fmt_ms(gap),
            share(gap, report.rto)
        );
    }
    let _ = writeln!(
        o,
        "<tr class=\"total\"><td>RTO</td><td class=\"n\"></td><td class=\"n\">{}</td><td class=\"n\">100 %</td></tr>",
        fmt_ms(report.rto)
    );
    o.push_str("</tbody>\n</table>\n");
    let missing = missing_phases(report);
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            o,
            "<p class=\"note\">Not part of this runbook: {}.</p>",
            esc(&names.join(", "))
        );
    }
    o.push_str("</section>\n");

    // Steps.
    o.push_str("<section>\n<h2>Steps</h2>\n");
    if report.steps.is_empty() {
        o.push_str("<p>No step ran.</p>\n");
    } else {
        o.push_str(
            "<table>\n<thead><tr><th class=\"n\">#</th><th>Step</th><th>What</th><th>Phase</th>\
             <th>Status</th><th class=\"n\">Attempts</th><th class=\"n\">Retries</th>\
             <th class=\"n\">Duration</th><th>Detail</th></tr></thead>\n<tbody>\n",
        );
        for p in placed_steps(report) {
            let s = p.record;
            let _ = writeln!(
                o,
                "<tr><td class=\"n\">{}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td>\
                 <td class=\"st-{st}\">{st}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"detail\">{}</td></tr>",
                p.index + 1,
                esc(s.name.as_str()),
                esc(&s.description),
                esc(&s.name.phase().to_string()),
                s.attempts,
                s.attempts.saturating_sub(1),
                fmt_ms(s.duration),
                esc(or_dash(&s.detail)),
                st = status_word(s.status),
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    let retries: Vec<&RetryNote> = ctx
        .retries
        .iter()
        .filter(|r| r.runbook == report.runbook)
        .collect();
    if !retries.is_empty() {
        o.push_str("<h2 style=\"margin-top:14px\">Failed attempts</h2>\n<ul>\n");
        for r in retries {
            let at = match (r.index, r.attempt) {
                (Some(i), Some(n)) => format!("step {} attempt {n}", i + 1),
                _ => "step".into(),
            };
            let then = match r.delay {
                Some(d) => format!("retried after {}", fmt_ms(d)),
                None => "held for an operator".into(),
            };
            let _ = writeln!(
                o,
                "<li>{} (<span class=\"name\">{}</span>): <span class=\"detail\">{}</span> — {}</li>",
                esc(&at),
                esc(r.step.as_str()),
                esc(&r.error),
                esc(&then)
            );
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");

    // Integrity.
    o.push_str("<section>\n<h2>Integrity</h2>\n");
    if ctx.integrity.is_empty() {
        o.push_str("<p>No integrity verification was recorded.</p>\n");
    } else {
        o.push_str(
            "<table>\n<thead><tr><th>Resource</th><th>Site</th><th>What</th><th class=\"n\">Checked</th>\
             <th class=\"n\">Markers written</th><th class=\"n\">Markers verified</th><th>Result</th></tr></thead>\n<tbody>\n",
        );
        for r in &ctx.integrity {
            let (class, result) = if r.passed() {
                ("st-done", "verified".to_owned())
            } else {
                (
                    "st-failed",
                    format!("FAILED ({} difference(s))", r.mismatches.len()),
                )
            };
            let _ = writeln!(
                o,
                "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td>\
                 <td class=\"n\">{} {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"{class}\">{}</td></tr>",
                esc(&r.resource),
                esc(&r.site),
                esc(or_dash(&r.scope)),
                r.checked,
                esc(&r.unit),
                r.markers_written,
                r.markers_verified,
                esc(&result)
            );
        }
        o.push_str("</tbody>\n</table>\n");
        for r in ctx.integrity.iter().filter(|r| !r.mismatches.is_empty()) {
            let _ = writeln!(
                o,
                "<p>Differences in <span class=\"name\">{}</span> at <span class=\"name\">{}</span>:</p>\n<ul>",
                esc(&r.resource),
                esc(&r.site)
            );
            for m in &r.mismatches {
                let _ = writeln!(o, "<li class=\"detail\">{}</li>", esc(m));
            }
            o.push_str("</ul>\n");
        }
    }
    o.push_str("</section>\n");

    // Checks.
    if !ctx.checks.is_empty() {
        o.push_str("<section>\n<h2>Checks</h2>\n<ul class=\"checks\">\n");
        for c in &ctx.checks {
            let (class, word) = if c.passed {
                ("pass", "PASS")
            } else {
                ("fail", "FAIL")
            };
            let _ = writeln!(
                o,
                "<li><span class=\"badge {class}\">{word}</span> <strong>{}</strong>: {}</li>",
                esc(&c.what),
                esc(&c.detail)
            );
        }
        o.push_str("</ul>\n</section>\n");
    }

    // The decision and the facts.
    o.push_str("<section>\n<h2>Decision</h2>\n");
    if report.reasons.is_empty() {
        o.push_str("<p>No reason was recorded.</p>\n");
    } else {
        o.push_str("<ol>\n");
        for r in &report.reasons {
            let _ = writeln!(o, "<li>{}</li>", esc(r));
        }
        o.push_str("</ol>\n");
    }
    let site = |s: &Option<idns_core::SiteId>| {
        s.as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let facts = [
        ("Service", ctx.service.clone()),
        ("Name published", ctx.published_name.clone()),
        (
            "Runbook",
            format!(
                "{} #{}, epoch {}{}",
                report.kind,
                report.runbook,
                report.epoch,
                if report.forced { ", forced" } else { "" }
            ),
        ),
        (
            "Switch",
            format!("{} → {}", site(&report.from), site(&report.to)),
        ),
        ("Started by", or_dash(&ctx.started_by).to_owned()),
        ("Controller", or_dash(&ctx.controller).to_owned()),
        ("Decided at", fmt_time(report.decided_at)),
        ("Finished at", fmt_time(report.finished_at)),
    ];
    o.push_str("<dl class=\"facts\">\n");
    for (k, v) in facts {
        let _ = writeln!(o, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    o.push_str("</dl>\n</section>\n");

    if !ctx.sites.is_empty() {
        o.push_str(
            "<section>\n<h2>Sites</h2>\n<table>\n<thead><tr><th>Site</th><th>Addresses</th><th>Role</th></tr></thead>\n<tbody>\n",
        );
        for s in &ctx.sites {
            let _ = writeln!(
                o,
                "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td></tr>",
                esc(&s.id),
                esc(&s.addresses),
                esc(&s.role)
            );
        }
        o.push_str("</tbody>\n</table>\n</section>\n");
    }
    if !ctx.notes.is_empty() {
        o.push_str("<section>\n<h2>Notes</h2>\n<ul>\n");
        for n in &ctx.notes {
            let _ = writeln!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul>\n</section>\n");
    }
    let _ = write!(
        o,
        "<footer>Report written {} by {}.</footer>\n</main>\n</body>\n</html>\n",
        esc(&fmt_time(ctx.generated_at)),
        esc(or_dash(&ctx.controller))
    );
    o
}

// ------------------------------------------------------------------------------------------
// The SVG timeline
// ------------------------------------------------------------------------------------------

const SVG_W: f64 = 1000.0;
const LABEL_X: f64 = 14.0;
const PLOT_X0: f64 = 150.0;
const PLOT_X1: f64 = 860.0;
const ROW_H: f64 = 30.0;
const BAR_H: f64 = 16.0;
const TOP: f64 = 34.0;
/// Approximate width of one character of 12 px text.
const CHAR_W: f64 = 6.6;

fn phase_color(p: Phase) -> &'static str {
    match p {
        Phase::Detect => "#8250df",
        Phase::Decide => "#bf3989",
        Phase::Reprotect => "#6e7781",
        Phase::Fence => "#bc4c00",
        Phase::Promote => "#0969da",
        Phase::Verify => "#1a7f37",
        Phase::SwitchDns => "#0550ae",
        Phase::Propagate => "#1b7c83",
        Phase::Cleanup => "#57606a",
    }
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
fn tick_step(span_ms: f64, n: f64) -> f64 {
    let raw = (span_ms / n).max(1e-3);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn fmt_tick(ms: f64, step: f64) -> String {
    if step >= 1000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if step >= 1.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The SVG timeline: a row for the RPO window, a row per phase with its steps inside, a time
/// axis and a legend.
fn svg_timeline(report: &SwitchReport) -> String {
    let segs = segments(report);
    let groups = steps_by_segment(report, &segs);
    let decision = decision_at(report);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let end_ms = ms(report.rto)
        .max(segs.last().map(|s| ms(s.end())).unwrap_or(0.0))
        .max(1.0);
    // The RPO window lies before the decision; keep it from crushing the phases: beyond the
    // length of the recovery itself it is drawn broken.
    let (rpo_from, rpo_broken) = match report.rpo {
        Some(rpo) => {
            let from = ms(decision) - ms(rpo);
            // At most about a quarter of the axis.
            let floor = -end_ms / 3.0;
            if from < floor {
                (Some(floor), true)
            } else {
                (Some(from), false)
            }
        }
        None => (None, false),
    };
    let min_ms = rpo_from.unwrap_or(0.0).min(0.0);
    let step = tick_step(end_ms - min_ms, 8.0);
    let lo = (min_ms / step).floor() * step;
    let hi = (end_ms / step).ceil() * step;
    let x = |t_ms: f64| PLOT_X0 + (t_ms - lo) / (hi - lo) * (PLOT_X1 - PLOT_X0);

    let rows = segs.len() + 1;
    let axis_y = TOP + rows as f64 * ROW_H + 6.0;
    let legend_y = axis_y + 60.0;
    let height = legend_y + 22.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {SVG_W} {height:.0}\" role=\"img\" \
         aria-label=\"timeline of the phases, RTO {}\">",
        esc(&fmt_ms(report.rto))
    );
    o.push_str(
        "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#ffebe9\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#cf222e\" stroke-width=\"2\"/></pattern>\
         <pattern id=\"skip\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#eaeef2\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#9a6700\" stroke-width=\"2\"/></pattern></defs>\n",
    );

    // Grid and axis.
    o.push_str("<g class=\"axis\">\n");
    let n_ticks = ((hi - lo) / step).round() as i64;
    for i in 0..=n_ticks {
        let t = lo + i as f64 * step;
        let tx = x(t);
        let _ = writeln!(
            o,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{axis_y:.1}\" stroke=\"#eef1f5\"/>\
             <line x1=\"{tx:.1}\" y1=\"{axis_y:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#8c959f\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP - 6.0,
            axis_y + 5.0,
            axis_y + 18.0,
            esc(&fmt_tick(t, step))
        );
    }
    let _ = writeln!(
        o,
        "<line x1=\"{PLOT_X0}\" y1=\"{axis_y:.1}\" x2=\"{PLOT_X1}\" y2=\"{axis_y:.1}\" stroke=\"#8c959f\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time since {}</text>",
        (PLOT_X0 + PLOT_X1) / 2.0,
        axis_y + 34.0,
        if decision.is_zero() {
            "the command"
        } else {
            "the first failed probe"
        }
    );
    o.push_str("</g>\n");

    // Markers: the decision and the end of the recovery.
    let mark = |o: &mut String, t: f64, label: &str, color: &str, anchor: &str| {
        let tx = x(t);
        let _ = writeln!(
            o,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{axis_y:.1}\" stroke=\"{color}\" \
             stroke-dasharray=\"4 3\"/><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" \
             class=\"small\">{}</text>",
            TOP - 14.0,
            TOP - 18.0,
            esc(label)
        );
    };
    let decision_ms = ms(decision);
    let rto_ms = ms(report.rto);
    // Keep the two labels apart when the recovery is short on this scale.
    let close = x(rto_ms) - x(decision_ms) < 150.0;
    mark(
        &mut o,
        decision_ms,
        &if decision.is_zero() {
            "decision: the command".to_owned()
        } else {
            format!("decision at {}", fmt_ms(decision))
        },
        "#57606a",
        if close { "end" } else { "middle" },
    );
    mark(
        &mut o,
        rto_ms,
        &format!("recovered: RTO {}", fmt_ms(report.rto)),
        "#1d2330",
        if close { "start" } else { "end" },
    );

    // The RPO row.
    let y0 = TOP;
    let bar_y = |row: usize| y0 + row as f64 * ROW_H + (ROW_H - BAR_H) / 2.0;
    let label_y = |row: usize| y0 + row as f64 * ROW_H + ROW_H / 2.0 + 4.0;
    let _ = writeln!(
        o,
        "<text x=\"{LABEL_X}\" y=\"{:.1}\">RPO window</text>",
        label_y(0)
    );
    match (report.rpo, rpo_from) {
        (Some(rpo), Some(from)) => {
            let (x0, x1) = (x(from), x(decision_ms));
            let w = (x1 - x0).max(2.0);
            let _ = writeln!(
                o,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" fill=\"url(#hatch)\" \
                 stroke=\"#cf222e\"><title>{}</title></rect>",
                bar_y(0),
                esc(&format!(
                    "RPO {}: writes in this window before the decision had not reached the target",
                    fmt_ms(rpo)
                ))
            );
            if rpo_broken {
                // A break in the bar: it is longer than drawn.
                let (bx, by) = (x0 + 14.0, bar_y(0));
                let _ = writeln!(
                    o,
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"6\" height=\"{:.1}\" fill=\"#fff\"/>\
                     <path d=\"M{:.1} {:.1} l4 -{:.1} M{:.1} {:.1} l4 -{:.1}\" stroke=\"#cf222e\" \
                     stroke-width=\"1.5\" fill=\"none\"/>",
                    by - 2.0,
                    BAR_H + 4.0,
                    bx - 2.0,
                    by + BAR_H + 2.0,
                    BAR_H + 4.0,
                    bx + 4.0,
                    by + BAR_H + 2.0,
                    BAR_H + 4.0
                );
            }
            let text = format!(
                "RPO {}{}",
                fmt_ms(rpo),
                if rpo_broken { " (not to scale)" } else { "" }
            );
            label_beside(&mut o, x0, x0 + w, label_y(0), &text, "#cf222e");
        }
        _ => {
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"small\">RPO not measured</text>",
                x(0.0) + 4.0,
                label_y(0)
            );
        }
    }

    // A row per phase, its steps inside.
    for (i, s) in segs.iter().enumerate() {
        let row = i + 1;
        let color = phase_color(s.phase);
        let _ = writeln!(
            o,
            "<text x=\"{LABEL_X}\" y=\"{:.1}\">{}</text>",
            label_y(row),
            esc(&s.phase.to_string())
        );
        let (x0, x1) = (x(ms(s.start)), x(ms(s.end())));
        let w = (x1 - x0).max(2.0);
        let _ = writeln!(
            o,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" rx=\"2\" fill=\"{color}\">\
             <title>{}</title></rect>",
            bar_y(row),
            esc(&format!(
                "{}: {} (from {} to {})",
                s.phase,
                fmt_ms(s.duration),
                fmt_ms(s.start),
                fmt_ms(s.end())
            ))
        );
        // The steps of this phase entry.
        let mut marks = Vec::new();
        let mut failed = false;
        for p in groups.get(i).map(Vec::as_slice).unwrap_or_default() {
            let (sx0, sx1) = (x(ms(p.start)), x(ms(p.start + p.record.duration)));
            let troubled = p.record.status != StepStatus::Done || p.record.attempts > 1;
            let sw = (sx1 - sx0).max(if troubled { 5.0 } else { 2.0 });
            let fill = match p.record.status {
                StepStatus::Done => None,
                StepStatus::Skipped => Some("url(#skip)"),
                StepStatus::Failed => Some("#cf222e"),
            };
            let _ = writeln!(
                o,
                "<rect x=\"{sx0:.1}\" y=\"{:.1}\" width=\"{sw:.1}\" height=\"{BAR_H}\" fill=\"{}\" \
                 stroke=\"#fff\" stroke-width=\"1\"><title>{}</title></rect>",
                bar_y(row),
                fill.unwrap_or(color),
                esc(&format!(
                    "step {} {}: {} — {} in {} after {} attempt(s){}",
                    p.index + 1,
                    p.record.name,
                    p.record.description,
                    status_word(p.record.status),
                    fmt_ms(p.record.duration),
                    p.record.attempts,
                    if p.record.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.record.detail)
                    }
                ))
            );
            if p.record.attempts > 1 {
                marks.push(format!("↻{}", p.record.attempts));
            }
            match p.record.status {
                StepStatus::Failed => {
                    failed = true;
                    marks.push("✕ failed".into());
                }
                StepStatus::Skipped => marks.push("skipped".into()),
                StepStatus::Done => {}
            }
        }
        let mut text = fmt_ms(s.duration);
        if decision.is_zero() && matches!(s.phase, Phase::Detect | Phase::Decide) {
            text.push_str(" (started by a command)");
        }
        for m in &marks {
            text.push_str("  ");
            text.push_str(m);
        }
        let color = if failed {
            "#cf222e"
        } else if marks.is_empty() {
            "#1d2330"
        } else {
            "#9a6700"
        };
        label_beside(&mut o, x0, x0 + w, label_y(row), &text, color);
    }

    // Legend.
    let items: [(&str, &str); 5] = [
        ("#0969da", "step done (bar colour: phase)"),
        ("#9a6700", "↻n retried (n attempts)"),
        ("url(#skip)", "skipped"),
        ("#cf222e", "✕ failed"),
        ("url(#hatch)", "RPO window (data at risk)"),
    ];
    let mut lx = PLOT_X0;
    for (fill, text) in items {
        let _ = writeln!(
            o,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{fill}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"small\">{}</text>",
            legend_y - 10.0,
            lx + 17.0,
            legend_y,
            esc(text)
        );
        lx += 17.0 + text.chars().count() as f64 * 6.0 + 22.0;
    }
    o.push_str("</svg>\n");
    o
}

/// A bar's label: right of the bar when it fits, else left of it.
fn label_beside(o: &mut String, x0: f64, x1: f64, y: f64, text: &str, color: &str) {
    let width = text.chars().count() as f64 * CHAR_W;
    let (tx, anchor) = if x1 + 6.0 + width <= SVG_W - 4.0 {
        (x1 + 6.0, "start")
    } else {
        (x0 - 6.0, "end")
    };
    let _ = writeln!(
        o,
        "<text x=\"{tx:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" style=\"fill:{color}\">{}</text>",
        esc(text)
    );
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use idns_core::{
        Action, BackendError, Command, Election, IntegrityReport, IntegrityRequest, Manifest,
        ManifestEntry, ProbeOutcome, ProbeReport, Promoted, Propagation, ReplicationReport, Role,
        ServerAnswer, ServiceConfig, Step, StepDone, StepOutput,
    };

    use super::*;

    const SERVICE: &str = "www.example.test";

    fn config(extra: &str) -> ServiceConfig {
        let text = format!(
            r#"
name = "{SERVICE}"
zone = "example.test"
resources = ["app-data"]
[observers]
ids = ["east", "west"]
[policy]
min_dwell = "0s"
rpo_budget = "5s"
[[sites]]
id = "primary"
priority = 1
addresses = ["192.0.2.1"]
probes = [{{ id = "http", interval = "100ms", rise = 1, fall = 3 }}]
[[sites]]
id = "recovery"
priority = 2
addresses = ["198.51.100.1"]
probes = [{{ id = "http", interval = "100ms", rise = 1, fall = 3 }}]
{extra}"#
        );
        match ServiceConfig::from_toml(&text) {
            Ok(c) => c,
            Err(e) => panic!("test configuration: {e}"),
        }
    }

    /// How long a backend takes for an action, and what it answers.
    type Backend<'a> = dyn FnMut(&Action) -> (Duration, Result<StepOutput, BackendError>) + 'a;

    /// An election fed by hand in virtual time, as the driver would feed it.
    struct Run {
        e: Election,
        t0: Instant,
        now: Instant,
        wall: SystemTime,
        ctx_events: Vec<Event>,
        reports: Vec<SwitchReport>,
    }

    impl Run {
        fn new(cfg: ServiceConfig) -> Self {
            let t0 = Instant::now();
            let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let e = match Election::new(cfg, None, t0, wall) {
                Ok(e) => e,
                Err(e) => panic!("election: {e}"),
            };
            let mut run = Run {
                e,
                t0,
                now: t0,
                wall,
                ctx_events: Vec::new(),
                reports: Vec::new(),
            };
            // The bootstrap publishes the home site.
            run.drive(&mut |_| (Duration::from_millis(1), Ok(StepOutput::Done)));
            run
        }

        fn at(&mut self, ms: u64) {
            self.now = self.now.max(self.t0 + Duration::from_millis(ms));
        }

        fn wall_now(&self) -> SystemTime {
            self.wall + self.now.saturating_duration_since(self.t0)
        }

        fn probe(&mut self, site: &str, observer: &str, up: bool) {
            let outcome = if up {
                ProbeOutcome::up(Duration::from_millis(2))
            } else {
                ProbeOutcome::down(
                    Duration::from_millis(1),
                    "connection refused by 192.0.2.1:80",
                )
            };
            let input = idns_core::Input::Probe(ProbeReport {
                site: parse(site),
                probe: parse("http"),
                observer: parse(observer),
                outcome,
                at: self.wall_now(),
            });
            self.e.handle(input, self.now);
        }

        fn lag(&mut self, site: &str, role: Role, lag: Duration) {
            let input = idns_core::Input::Replication(ReplicationReport {
                resource: parse("app-data"),
                site: parse(site),
                role,
                lag: Some(lag),
                at: self.wall_now(),
            });
            self.e.handle(input, self.now);
        }

        fn command(&mut self, c: Command) {
            if let Err(e) = self.e.command(c, self.now) {
                panic!("command refused: {e}");
            }
        }

        /// Runs actions on `backend` and fires timers until no runbook is in progress.
        fn drive(&mut self, backend: &mut Backend<'_>) {
            for _ in 0..1000 {
                while let Some(a) = self.e.poll_action() {
                    let (cost, result) = backend(&a);
                    self.now += cost;
                    let done = StepDone { id: a.id, result };
                    self.e.handle(idns_core::Input::StepDone(done), self.now);
                }
                while let Some(ev) = self.e.poll_event() {
                    if let Event::Finished(r) = &ev {
                        self.reports.push(r.clone());
                    }
                    self.ctx_events.push(ev);
                }
                if self.e.view().runbook.is_none() {
                    return;
                }
                match self.e.poll_timeout() {
                    Some(t) => {
                        self.now = self.now.max(t);
                        self.e.handle_timeout(self.now);
                    }
                    None => return,
                }
            }
            panic!("the runbook did not end");
        }

        fn last(&self, kind: RunbookKind) -> SwitchReport {
            match self.reports.iter().rev().find(|r| r.kind == kind) {
                Some(r) => r.clone(),
                None => panic!("no {kind} report among {:?}", self.reports),
            }
        }

        fn context(&self, published: &str) -> ReportContext {
            let mut ctx = ReportContext::new(SERVICE, published);
            ctx.generated_at = self.wall_now();
            for ev in &self.ctx_events {
                ctx.record(ev);
            }
            ctx
        }
    }

    fn parse<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        match s.parse() {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e:?}"),
        }
    }

    fn manifest(n: usize) -> Manifest {
        let mut m = Manifest::default();
        for i in 0..n {
            m.entries.insert(
                format!("file-{i}"),
                ManifestEntry {
                    size: 100 + i as u64,
                    checksum: format!("{i:064x}"),
                    modified: None,
                },
            );
        }
        m
    }

    fn propagation() -> StepOutput {
        StepOutput::Propagation(Propagation {
            servers: vec![ServerAnswer {
                server: "127.0.0.1:53".into(),
                current: true,
                latency: Duration::from_millis(1),
                detail: "198.51.100.1".into(),
            }],
        })
    }

    /// A backend that answers like a healthy one, after a few milliseconds per step.
    fn healthy(a: &Action) -> (Duration, Result<StepOutput, BackendError>) {
        let ms = Duration::from_millis;
        match &a.step {
            Step::Fence { .. } => (ms(4), Ok(StepOutput::Done)),
            Step::Promote { .. } => (
                ms(20),
                Ok(StepOutput::Promoted(Promoted {
                    rpo: if a.drill { None } else { Some(ms(160)) },
                    position: Some("checkpoint 4".into()),
                })),
            ),
            Step::Integrity { request, .. } => {
                let n = match request {
                    IntegrityRequest::Mark { .. } => 2,
                    _ => 3,
                };
                (
                    ms(8),
                    Ok(StepOutput::Integrity(IntegrityReport {
                        manifest: manifest(n),
                        mismatches: Vec::new(),
                    })),
                )
            }
            Step::SwitchDns { .. } => (ms(3), Ok(StepOutput::Done)),
            Step::VerifyDns { .. } => (ms(2), Ok(propagation())),
            Step::Reprotect { .. } => (ms(30), Ok(StepOutput::Done)),
            _ => (ms(1), Ok(StepOutput::Done)),
        }
    }

    /// Fails the primary: three refused probes from both observers, 100 ms apart.
    fn fail_primary(run: &mut Run) {
        run.at(1000);
        run.lag("recovery", Role::Replica, Duration::from_millis(150));
        for i in 0..3 {
            run.at(1000 + i * 100);
            for obs in ["east", "west"] {
                run.probe("primary", obs, false);
                run.probe("recovery", obs, true);
            }
        }
    }

    /// A failover whose fence is refused (skipped) and whose DNS switch fails once with a
    /// hostile error text before it succeeds.
    fn failover_with_trouble(error: &str) -> (SwitchReport, ReportContext) {
        let mut run = Run::new(config(""));
        for obs in ["east", "west"] {
            run.probe("primary", obs, true);
            run.probe("recovery", obs, true);
        }
        fail_primary(&mut run);
        let mut dns_attempts = 0;
        let error = error.to_owned();
        run.drive(&mut |a| match &a.step {
            Step::Fence { .. } => (
                Duration::from_millis(2),
                Err(BackendError::Refused("site primary is unreachable".into())),
            ),
            Step::SwitchDns { .. } => {
                dns_attempts += 1;
                if dns_attempts == 1 {
                    (
                        Duration::from_millis(5),
                        Err(BackendError::Unavailable(error.clone())),
                    )
                } else {
                    healthy(a)
                }
            }
            _ => healthy(a),
        });
        let report = run.last(RunbookKind::Failover);
        let ctx = run.context(SERVICE);
        (report, ctx)
    }

    fn drill(extra: &str) -> (SwitchReport, ReportContext) {
        let mut run = Run::new(config(extra));
        for obs in ["east", "west"] {
            run.probe("primary", obs, true);
            run.probe("recovery", obs, true);
        }
        run.at(500);
        run.lag("recovery", Role::Replica, Duration::from_millis(120));
        run.command(Command::StartDrill {
            to: parse("recovery"),
        });
        run.drive(&mut healthy);
        let report = run.last(RunbookKind::Drill);
        let mut ctx = run.context("drill.www.example.test");
        ctx.started_by = "an operator, through the drill program".into();
        ctx.integrity.push(IntegrityResult {
            resource: "app-data".into(),
            site: "recovery".into(),
            scope: "drill copy against checkpoint 4".into(),
            checked: 3,
            unit: "files".into(),
            markers_written: 2,
            markers_verified: 2,
            mismatches: Vec::new(),
        });
        ctx.checks.push(Check::new(
            "production untouched",
            true,
            "www.example.test answered 192.0.2.1 in all 40 queries",
        ));
        (report, ctx)
    }

    /// Checks that every element opened is closed in order (void elements aside) and that
    /// no text contains a raw `<`: what a hostile string that escaped escaping would break.
    fn assert_well_formed(page: &str) {
        const VOID: [&str; 6] = ["meta", "br", "hr", "img", "input", "link"];
        let mut stack: Vec<String> = Vec::new();
        let mut rest = page;
        while let Some(open) = rest.find('<') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('>') else {
                panic!("unclosed tag near {:?}", &rest[..rest.len().min(60)]);
            };
            let tag = &rest[..close];
            rest = &rest[close + 1..];
            assert!(!tag.contains('<'), "a '<' inside a tag: {tag:?}");
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop();
                assert_eq!(
                    top.as_deref(),
                    Some(name.trim()),
                    "closing {name} in {stack:?}"
                );
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(!name.is_empty(), "not a tag: <{tag}>");
            if tag.ends_with('/') || VOID.contains(&name.as_str()) {
                continue;
            }
            if name == "style" {
                let Some(end) = rest.find("</style>") else {
                    panic!("style not closed");
                };
                assert!(!rest[..end].contains('<'), "markup inside the style sheet");
                rest = &rest[end + "</style>".len()..];
                continue;
            }
            stack.push(name);
        }
        assert!(stack.is_empty(), "left open: {stack:?}");
    }

    #[test]
    fn failover_markdown_lists_phases_steps_retries_and_errors() {
        let (report, ctx) = failover_with_trouble("server 127.0.0.1:53 did not answer");
        assert_eq!(report.outcome, Outcome::Completed);
        let md = markdown(&report, &ctx);

        assert!(
            md.starts_with("# Failover report: www.example.test\n"),
            "{md}"
        );
        assert!(md.contains("**PASSED WITH WARNINGS**"), "{md}");
        // Three failures 100 ms apart: the site is down 200 ms after the first.
        assert!(md.contains("| detect | 0.0 ms | 200.0 ms |"), "{md}");
        for phase in [
            "decide",
            "fence",
            "promote",
            "verify",
            "switch DNS",
            "propagate",
        ] {
            assert!(
                md.contains(&format!("\n| {phase} | ")),
                "no {phase} row:\n{md}"
            );
        }
        assert!(md.contains(&format!(
            "| **RTO** | | **{}** | 100 % |",
            fmt_ms(report.rto)
        )));
        assert!(md.contains("| RPO | **160.0 ms**"), "{md}");
        assert!(
            md.contains("Not part of this runbook: reprotect, cleanup."),
            "{md}"
        );
        // The fence was skipped, with its error.
        let fence = md
            .lines()
            .find(|l| l.contains("| `fence` |"))
            .unwrap_or_else(|| panic!("no fence row:\n{md}"));
        assert!(
            fence.contains("**skipped**") && fence.contains("unreachable"),
            "{fence}"
        );
        // The DNS switch needed a second attempt, and the first attempt's error is listed.
        let switch = md
            .lines()
            .find(|l| l.contains("| `switch_dns` |"))
            .unwrap_or_else(|| panic!("no switch_dns row:\n{md}"));
        assert!(switch.contains("| done | 2 | 1 |"), "{switch}");
        assert!(
            md.contains("server 127.0.0.1:53 did not answer — retried after"),
            "{md}"
        );
        assert!(md.contains("step switch\\_dns"), "{md}");
        assert!(md.contains("site primary down"), "the reason chain: {md}");
    }

    #[test]
    fn drill_markdown_shows_integrity_checks_and_a_pass() {
        let (report, ctx) = drill("");
        assert_eq!(report.kind, RunbookKind::Drill);
        let md = markdown(&report, &ctx);
        assert!(md.starts_with("# Drill report: www.example.test\n"), "{md}");
        assert!(md.contains("**PASSED**: The drill of www.example.test at site recovery on drill.www.example.test completed"), "{md}");
        assert!(
            md.contains("| Name published | `drill.www.example.test` |"),
            "{md}"
        );
        assert!(md.contains("| RPO | **120.0 ms**"), "{md}");
        assert!(
            md.contains("Not part of this runbook: reprotect, fence."),
            "{md}"
        );
        assert!(md.contains("| cleanup | "), "{md}");
        assert!(
            md.contains("| `app-data` | `recovery` | drill copy against checkpoint 4 | 3 files | 2 | 2 | verified |"),
            "{md}"
        );
        assert!(
            md.contains("- **PASS** production untouched: www.example.test answered 192.0.2.1"),
            "{md}"
        );
        assert!(
            md.contains("| Started by | an operator, through the drill program |"),
            "{md}"
        );
        assert!(assess(&report, &ctx).passed());
    }

    #[test]
    fn a_failed_marker_or_check_fails_the_verdict() {
        let (report, mut ctx) = drill("");
        ctx.integrity[0].markers_verified = 1;
        ctx.integrity[0]
            .mismatches
            .push(".idns-markers/drill-2/marker.txt: checksum 00 where 11 was expected".into());
        let a = assess(&report, &ctx);
        assert_eq!(a.verdict, Verdict::Failed);
        assert_eq!(a.failures.len(), 2, "{a:?}");
        let md = markdown(&report, &ctx);
        assert!(md.contains("**FAILED**"), "{md}");
        assert!(md.contains("1 of 2 marker(s) verified"), "{md}");
        assert!(md.contains("integrity verification FAILED"), "{md}");
        let page = html(&report, &ctx);
        assert!(page.contains("<header class=\"verdict fail\">"), "{page}");

        let (report, mut ctx) = drill("");
        ctx.checks
            .push(Check::new("drill name removed", false, "still answers"));
        assert_eq!(assess(&report, &ctx).verdict, Verdict::Failed);
        assert!(markdown(&report, &ctx).contains("- **FAIL** drill name removed: still answers"));
    }

    #[test]
    fn an_aborted_runbook_is_a_failure_marked_on_the_timeline() {
        let mut run = Run::new(config(
            r#"
[runbook]
failover = [{ step = "promote" }, { step = "switch_dns", retries = 0, on_failure = "abort" }]
"#,
        ));
        for obs in ["east", "west"] {
            run.probe("primary", obs, true);
            run.probe("recovery", obs, true);
        }
        fail_primary(&mut run);
        run.drive(&mut |a| match &a.step {
            Step::SwitchDns { .. } => (
                Duration::from_millis(3),
                Err(BackendError::Refused(
                    "zone example.test is not served here".into(),
                )),
            ),
            _ => healthy(a),
        });
        let report = run.last(RunbookKind::Failover);
        assert_eq!(report.outcome, Outcome::Aborted);
        let ctx = run.context(SERVICE);
        let a = assess(&report, &ctx);
        assert_eq!(a.verdict, Verdict::Failed);
        let md = markdown(&report, &ctx);
        assert!(md.contains("| Outcome | **aborted** |"), "{md}");
        assert!(md.contains("**failed**"), "{md}");
        let page = html(&report, &ctx);
        assert_well_formed(&page);
        assert!(page.contains("✕ failed"), "the failed step is marked");
        assert!(page.contains("<td class=\"st-failed\">failed</td>"));
    }

    #[test]
    fn html_is_self_contained_with_a_timeline() {
        let (report, ctx) = failover_with_trouble("server did not answer");
        let page = html(&report, &ctx);
        assert_well_formed(&page);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("Content-Security-Policy"));
        // Nothing to fetch or run.
        for needle in [
            "<script", "src=", "href=", "@import", "url(http", "<link", "<iframe",
        ] {
            assert!(!page.contains(needle), "{needle} in the page");
        }
        let outside_svg_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!outside_svg_ns.contains("http://") && !outside_svg_ns.contains("https://"));
        // One bar per phase, each with its label, and the RPO window.
        assert_eq!(page.matches("<svg").count(), 1);
        for p in &report.phases {
            assert!(
                page.contains(&format!(">{}</text>", esc(&p.phase.to_string()))),
                "no label for {}",
                p.phase
            );
            assert!(
                page.contains(&format!(
                    "<title>{}: {}",
                    esc(&p.phase.to_string()),
                    fmt_ms(p.duration)
                )),
                "no bar for {}",
                p.phase
            );
        }
        assert!(page.contains(">RPO window</text>"));
        assert!(page.contains("RPO 160.0 ms"));
        assert!(page.contains(&format!("recovered: RTO {}", fmt_ms(report.rto))));
        // The retried and the skipped step are marked on their bars.
        assert!(page.contains("↻2"), "retried step marked");
        assert!(page.contains("skipped</text>"), "skipped step marked");
        assert!(page.contains("<td class=\"st-skipped\">skipped</td>"));
    }

    #[test]
    fn hostile_names_and_errors_cannot_inject_markup() {
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)> | ` ** \"quoted\" 'single' & </svg>";
        let (report, mut ctx) = failover_with_trouble(evil);
        ctx.service = format!("www.{evil}");
        ctx.published_name = evil.into();
        ctx.started_by = evil.into();
        ctx.controller = evil.into();
        ctx.checks.push(Check::new(evil, true, evil));
        ctx.notes.push(evil.into());
        ctx.sites.push(SiteNote {
            id: evil.into(),
            addresses: evil.into(),
            role: evil.into(),
        });
        ctx.integrity.push(IntegrityResult {
            resource: evil.into(),
            site: evil.into(),
            scope: evil.into(),
            checked: 1,
            unit: evil.into(),
            markers_written: 1,
            markers_verified: 1,
            mismatches: vec![evil.into()],
        });

        let page = html(&report, &ctx);
        assert_well_formed(&page);
        for raw in ["<script", "<img", "onerror=alert(2)>", "</svg><"] {
            assert!(!page.contains(raw), "{raw} got through");
        }
        assert!(
            page.contains(
                "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
            )
        );
        assert!(page.contains("&quot;quoted&quot; &#39;single&#39; &amp; &lt;/svg&gt;"));
        assert_eq!(page.matches("<svg").count(), 1);
        assert_eq!(page.matches("</svg>").count(), 1);

        let md = markdown(&report, &ctx);
        for raw in ["<script", "<img", "</svg>"] {
            assert!(!md.contains(raw), "{raw} got through the Markdown");
        }
        // A pipe in a name or an error does not add table cells.
        let header_cells =
            "| # | Step | What | Phase | Status | Attempts | Retries | Duration | Detail |"
                .matches(" | ")
                .count();
        for line in md
            .lines()
            .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        {
            let cells = line.replace("\\|", "").matches(" | ").count();
            assert_eq!(cells, header_cells, "{line}");
        }
        // The integrity row (seven cells) and the site row (three) keep their shape.
        let rows: Vec<usize> = md
            .lines()
            .filter(|l| l.starts_with("| &lt;script"))
            .map(|l| l.replace("\\|", "").matches(" | ").count())
            .collect();
        assert_eq!(rows, vec![6, 2], "{md}");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(fmt_time(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            fmt_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(fmt_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(350.0, 8.0), 50.0);
        assert_eq!(tick_step(48.0, 8.0), 10.0);
        assert_eq!(tick_step(2_500.0, 8.0), 500.0);
        assert_eq!(fmt_tick(1500.0, 500.0), "1500 ms");
        assert_eq!(fmt_tick(4000.0, 1000.0), "4 s");
    }
}
