//! The report's model: every section built once from a [`SwitchReport`] and its
//! [`ReportContext`], as text with a little structure (spans, lists, tables). The renderers
//! ([`markdown`](super::markdown), [`html`](super::html), [`svg`](super::svg)) lay it out and
//! escape it; none of them decides what a section says.

use std::time::{Duration, SystemTime};

use idns_core::{Outcome, Phase, SiteId, StepStatus, SwitchReport};

use super::context::{IntegrityResult, ReportContext};
use super::timeline::{Timeline, placed_steps};
use super::verdict::{Assessment, assess};

/// A piece of text and how it is set; each renderer escapes it for its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Span {
    /// Running text.
    Text(String),
    /// A name (a site, a resource, a step): a code span, a monospace font.
    Name(String),
    /// Emphasised text.
    Strong(String),
    /// An error or a finding: muted where the format can.
    Detail(String),
    /// PASS or FAIL.
    Badge(bool),
}

/// A column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Column {
    /// Its heading.
    pub(super) title: &'static str,
    /// Whether it holds figures (aligned right).
    pub(super) numeric: bool,
}

/// One cell: its text, and the status it shows, if any (coloured in HTML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cell {
    pub(super) spans: Vec<Span>,
    pub(super) tone: Option<StepStatus>,
}

/// One row; `total` marks the sum under a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) cells: Vec<Cell>,
    pub(super) total: bool,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    pub(super) columns: Vec<Column>,
    pub(super) rows: Vec<Row>,
}

/// How a list is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListKind {
    /// Bullets.
    Bullets,
    /// Numbers from 1.
    Numbered,
    /// Each item opens with its own [`Span::Badge`].
    Checks,
}

/// A part of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Block {
    /// A paragraph.
    Para(Vec<Span>),
    /// A remark under a table.
    Note(String),
    /// A heading inside a section.
    Heading(&'static str),
    /// A list, one item per entry.
    List(ListKind, Vec<Vec<Span>>),
    /// A table.
    Table(Table),
}

/// A titled section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Section {
    pub(super) title: &'static str,
    pub(super) blocks: Vec<Block>,
}

/// One figure at a glance: RTO, RPO, outcome, integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Figure {
    pub(super) label: &'static str,
    pub(super) value: String,
    pub(super) note: String,
}

/// A drill or switch report, built once and rendered as Markdown ([`markdown`](Self::markdown)),
/// an HTML page ([`html`](Self::html)) or the SVG timeline alone ([`svg`](Self::svg)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// "Failover report", "Drill report", …
    pub(super) title: String,
    pub(super) service: String,
    pub(super) assessment: Assessment,
    /// One sentence: what ran, how it ended, how long it took.
    pub(super) summary: String,
    /// The runbook's facts, label and value.
    pub(super) facts: Vec<(&'static str, Vec<Span>)>,
    pub(super) figures: Vec<Figure>,
    /// Decision, phases, steps, integrity and, where there are any, checks, sites and notes.
    pub(super) sections: Vec<Section>,
    pub(super) timeline: Timeline,
    /// Who wrote the report, and when.
    pub(super) footer: String,
}

impl Report {
    /// The report of the runbook `report`, with what `ctx` adds.
    pub fn new(report: &SwitchReport, ctx: &ReportContext) -> Report {
        let assessment = assess(report, ctx);
        let timeline = Timeline::new(report);
        let mut sections = vec![
            decision(report),
            phases(report, &timeline),
            steps(report, ctx),
            integrity(ctx),
        ];
        sections.extend(checks(ctx));
        sections.extend(sites(ctx));
        sections.extend(notes(ctx));
        Report {
            title: title(report),
            service: ctx.service.clone(),
            summary: summary_line(report, ctx, &assessment),
            assessment,
            facts: facts(report, ctx),
            figures: figures(report, ctx),
            sections,
            timeline,
            footer: format!(
                "Report written {} by {}.",
                time(ctx.generated_at),
                or_dash(&ctx.controller)
            ),
        }
    }

    /// The verdict, with what failed and what deserves a look.
    pub fn assessment(&self) -> &Assessment {
        &self.assessment
    }
}

// ------------------------------------------------------------------------------------------
// Words and figures
// ------------------------------------------------------------------------------------------

/// A duration as milliseconds with one decimal, or seconds from 10 s on.
pub(super) fn fmt_ms(d: Duration) -> String {
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
pub(super) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A step's status in one word.
pub(super) fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Done => "done",
        StepStatus::Skipped => "skipped",
        StepStatus::Failed => "failed",
    }
}

/// An outcome in one word.
fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::Aborted => "aborted",
    }
}

fn or_dash(s: &str) -> &str {
    if s.trim().is_empty() { "-" } else { s }
}

fn site_name(s: Option<&SiteId>) -> String {
    s.map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn text(s: impl Into<String>) -> Span {
    Span::Text(s.into())
}

fn cell(spans: Vec<Span>) -> Cell {
    Cell { spans, tone: None }
}

fn cells(texts: impl IntoIterator<Item = String>) -> Vec<Cell> {
    texts.into_iter().map(|t| cell(vec![text(t)])).collect()
}

fn columns(spec: &[(&'static str, bool)]) -> Vec<Column> {
    spec.iter()
        .map(|&(title, numeric)| Column { title, numeric })
        .collect()
}

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

// ------------------------------------------------------------------------------------------
// The verdict and the facts
// ------------------------------------------------------------------------------------------

fn title(report: &SwitchReport) -> String {
    let kind = report.kind.to_string();
    let mut c = kind.chars();
    let kind = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>(),
        None => kind,
    };
    format!("{kind} report")
}

fn summary_line(report: &SwitchReport, ctx: &ReportContext, a: &Assessment) -> String {
    let ended = match report.outcome {
        Outcome::Completed => "completed",
        Outcome::Aborted => "was aborted",
    };
    let mut line = match report.kind {
        idns_core::RunbookKind::Drill => format!(
            "The drill of {} at site {} on {} {ended}; recovery time {}",
            ctx.service,
            site_name(report.to.as_ref()),
            ctx.published_name,
            fmt_ms(report.rto)
        ),
        _ => format!(
            "The {} of {} from {} to {} {ended}; recovery time {}",
            report.kind,
            ctx.service,
            site_name(report.from.as_ref()),
            site_name(report.to.as_ref()),
            fmt_ms(report.rto)
        ),
    };
    if let Some(rpo) = report.rpo {
        line.push_str(&format!(", recovery point {}", fmt_ms(rpo)));
    }
    if !ctx.integrity.is_empty() {
        if ctx.integrity.iter().all(IntegrityResult::passed) {
            let markers: u64 = ctx.integrity.iter().map(|r| r.markers_verified).sum();
            let checked: u64 = ctx.integrity.iter().map(|r| r.checked).sum();
            line.push_str(&format!(
                "; integrity verified ({checked} entries checked, {markers} marker(s) verified)"
            ));
        } else {
            line.push_str("; integrity verification FAILED");
        }
    }
    if !a.failures.is_empty() {
        line.push_str(&format!("; {} problem(s)", a.failures.len()));
    }
    line.push('.');
    line
}

fn facts(report: &SwitchReport, ctx: &ReportContext) -> Vec<(&'static str, Vec<Span>)> {
    let site = |s: Option<&SiteId>| match s {
        Some(s) => Span::Name(s.to_string()),
        None => text("-"),
    };
    vec![
        ("Service", vec![Span::Name(ctx.service.clone())]),
        (
            "Name published",
            vec![Span::Name(ctx.published_name.clone())],
        ),
        (
            "Runbook",
            vec![text(format!(
                "{} #{}, epoch {}{}",
                report.kind,
                report.runbook,
                report.epoch,
                if report.forced { ", forced" } else { "" }
            ))],
        ),
        (
            "Switch",
            vec![
                site(report.from.as_ref()),
                text(" → "),
                site(report.to.as_ref()),
            ],
        ),
        ("Started by", vec![text(or_dash(&ctx.started_by))]),
        ("Controller", vec![text(or_dash(&ctx.controller))]),
        ("Decided at", vec![text(time(report.decided_at))]),
        ("Finished at", vec![text(time(report.finished_at))]),
        (
            "Outcome",
            vec![match report.outcome {
                Outcome::Completed => text(outcome_word(report.outcome)),
                Outcome::Aborted => Span::Strong(outcome_word(report.outcome).into()),
            }],
        ),
        ("RTO", vec![Span::Strong(fmt_ms(report.rto))]),
        (
            "RPO",
            match report.rpo {
                Some(rpo) => vec![Span::Strong(fmt_ms(rpo)), text(rpo_source(report))],
                None => vec![text(
                    "not measured (no replicated resource, or the lag was unknown)",
                )],
            },
        ),
    ]
}

/// Where the RPO figure comes from: measured by the catch-up or the promotion (with the lag
/// at the decision beside it when that differs), or the lag at the decision alone.
fn rpo_source(report: &SwitchReport) -> String {
    match report.rpo_at_decision {
        Some(lag) if Some(lag) != report.rpo => format!(
            " (measured at the promotion; replication lag at the decision {})",
            fmt_ms(lag)
        ),
        Some(_) => " (replication lag of the target at the decision, or measured equal to it at the promotion)".into(),
        None => " (measured at the promotion)".into(),
    }
}

fn figures(report: &SwitchReport, ctx: &ReportContext) -> Vec<Figure> {
    let (integrity, integrity_note) = if ctx.integrity.is_empty() {
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
    vec![
        Figure {
            label: "RTO",
            value: fmt_ms(report.rto),
            note: "from the first failure (or the command) to the end".into(),
        },
        Figure {
            label: "RPO",
            value: report.rpo.map_or_else(|| "-".into(), fmt_ms),
            note: if report.rpo.is_some() {
                rpo_source(report).trim_start().into()
            } else {
                "not measured".into()
            },
        },
        Figure {
            label: "Outcome",
            value: outcome_word(report.outcome).into(),
            note: format!(
                "{} step(s), {} retried",
                report.steps.len(),
                report.steps.iter().filter(|s| s.attempts > 1).count()
            ),
        },
        Figure {
            label: "Integrity",
            value: integrity,
            note: integrity_note,
        },
    ]
}

// ------------------------------------------------------------------------------------------
// The sections
// ------------------------------------------------------------------------------------------

fn decision(report: &SwitchReport) -> Section {
    let blocks = if report.reasons.is_empty() {
        vec![Block::Para(vec![text("No reason was recorded.")])]
    } else {
        let items = report.reasons.iter().map(|r| vec![text(r)]).collect();
        vec![Block::List(ListKind::Numbered, items)]
    };
    Section {
        title: "Decision",
        blocks,
    }
}

fn phases(report: &SwitchReport, timeline: &Timeline) -> Section {
    let mut rows: Vec<Row> = timeline
        .segments
        .iter()
        .map(|s| Row {
            cells: cells([
                s.phase.to_string(),
                fmt_ms(s.start),
                fmt_ms(s.duration),
                share(s.duration, report.rto),
            ]),
            total: false,
        })
        .collect();
    // Time of the RTO not covered by any phase (between steps, in the driver).
    let covered: Duration = report.phases.iter().map(|p| p.duration).sum();
    let gap = report.rto.saturating_sub(covered);
    if gap >= Duration::from_micros(100) {
        rows.push(Row {
            cells: cells([
                "between steps".into(),
                String::new(),
                fmt_ms(gap),
                share(gap, report.rto),
            ]),
            total: false,
        });
    }
    rows.push(Row {
        cells: vec![
            cell(vec![Span::Strong("RTO".into())]),
            cell(Vec::new()),
            cell(vec![Span::Strong(fmt_ms(report.rto))]),
            cell(vec![text("100 %")]),
        ],
        total: true,
    });
    let mut blocks = vec![Block::Table(Table {
        columns: columns(&[
            ("Phase", false),
            ("Starts at", true),
            ("Duration", true),
            ("Share of RTO", true),
        ]),
        rows,
    })];
    let missing: Vec<String> = ALL_PHASES
        .into_iter()
        .filter(|p| !report.phases.iter().any(|x| x.phase == *p))
        .map(|p| p.to_string())
        .collect();
    if !missing.is_empty() {
        blocks.push(Block::Note(format!(
            "Not part of this runbook: {}.",
            missing.join(", ")
        )));
    }
    blocks.push(Block::Note(
        "Time runs from the first failed probe (or the command) to the end of the last step."
            .into(),
    ));
    Section {
        title: "Phases",
        blocks,
    }
}

fn steps(report: &SwitchReport, ctx: &ReportContext) -> Section {
    let mut blocks = Vec::new();
    if report.steps.is_empty() {
        blocks.push(Block::Para(vec![text("No step ran.")]));
    } else {
        let rows = placed_steps(report)
            .into_iter()
            .map(|p| {
                let s = &p.record;
                let status = match s.status {
                    StepStatus::Done => text(status_word(s.status)),
                    other => Span::Strong(status_word(other).into()),
                };
                let mut cells = vec![
                    cell(vec![text((p.index + 1).to_string())]),
                    cell(vec![Span::Name(s.name.as_str().into())]),
                    cell(vec![text(&s.description)]),
                    cell(vec![text(s.name.phase().to_string())]),
                    Cell {
                        spans: vec![status],
                        tone: Some(s.status),
                    },
                ];
                cells.extend(self::cells([
                    s.attempts.to_string(),
                    s.attempts.saturating_sub(1).to_string(),
                    fmt_ms(s.duration),
                ]));
                cells.push(cell(vec![Span::Detail(or_dash(&s.detail).into())]));
                Row {
                    cells,
                    total: false,
                }
            })
            .collect();
        blocks.push(Block::Table(Table {
            columns: columns(&[
                ("#", true),
                ("Step", false),
                ("What", false),
                ("Phase", false),
                ("Status", false),
                ("Attempts", true),
                ("Retries", true),
                ("Duration", true),
                ("Detail", false),
            ]),
            rows,
        }));
    }
    let retries: Vec<Vec<Span>> = ctx
        .retries
        .iter()
        .filter(|r| r.runbook == report.runbook)
        .map(|r| {
            let at = match (r.index, r.attempt) {
                (Some(i), Some(n)) => format!("step {} attempt {n}", i + 1),
                _ => "step".into(),
            };
            let then = match r.delay {
                Some(d) => format!("retried after {}", fmt_ms(d)),
                None => "held for an operator".into(),
            };
            vec![
                text(format!("{at} (")),
                Span::Name(r.step.as_str().into()),
                text("): "),
                Span::Detail(r.error.clone()),
                text(format!(" — {then}")),
            ]
        })
        .collect();
    if !retries.is_empty() {
        blocks.push(Block::Heading("Failed attempts"));
        blocks.push(Block::List(ListKind::Bullets, retries));
    }
    Section {
        title: "Steps",
        blocks,
    }
}

fn integrity(ctx: &ReportContext) -> Section {
    if ctx.integrity.is_empty() {
        return Section {
            title: "Integrity",
            blocks: vec![Block::Para(vec![text(
                "No integrity verification was recorded.",
            )])],
        };
    }
    let rows = ctx
        .integrity
        .iter()
        .map(|r| {
            let result = if r.passed() {
                Cell {
                    spans: vec![text("verified")],
                    tone: Some(StepStatus::Done),
                }
            } else {
                Cell {
                    spans: vec![
                        Span::Strong("FAILED".into()),
                        text(format!(" ({} difference(s))", r.mismatches.len())),
                    ],
                    tone: Some(StepStatus::Failed),
                }
            };
            let mut cells = vec![
                cell(vec![Span::Name(r.resource.clone())]),
                cell(vec![Span::Name(r.site.clone())]),
            ];
            cells.extend(self::cells([
                or_dash(&r.scope).to_owned(),
                format!("{} {}", r.checked, r.unit),
                r.markers_written.to_string(),
                r.markers_verified.to_string(),
            ]));
            cells.push(result);
            Row {
                cells,
                total: false,
            }
        })
        .collect();
    let mut blocks = vec![Block::Table(Table {
        columns: columns(&[
            ("Resource", false),
            ("Site", false),
            ("What", false),
            ("Checked", true),
            ("Markers written", true),
            ("Markers verified", true),
            ("Result", false),
        ]),
        rows,
    })];
    for r in ctx.integrity.iter().filter(|r| !r.mismatches.is_empty()) {
        blocks.push(Block::Para(vec![
            text("Differences in "),
            Span::Name(r.resource.clone()),
            text(" at "),
            Span::Name(r.site.clone()),
            text(":"),
        ]));
        let items = r
            .mismatches
            .iter()
            .map(|m| vec![Span::Detail(m.clone())])
            .collect();
        blocks.push(Block::List(ListKind::Bullets, items));
    }
    Section {
        title: "Integrity",
        blocks,
    }
}

fn checks(ctx: &ReportContext) -> Option<Section> {
    let items: Vec<Vec<Span>> = ctx
        .checks
        .iter()
        .map(|c| {
            vec![
                Span::Badge(c.passed),
                text(format!(" {}: {}", c.what, c.detail)),
            ]
        })
        .collect();
    (!items.is_empty()).then(|| Section {
        title: "Checks",
        blocks: vec![Block::List(ListKind::Checks, items)],
    })
}

fn sites(ctx: &ReportContext) -> Option<Section> {
    let rows: Vec<Row> = ctx
        .sites
        .iter()
        .map(|s| Row {
            cells: vec![
                cell(vec![Span::Name(s.id.clone())]),
                cell(vec![Span::Name(s.addresses.clone())]),
                cell(vec![text(&s.role)]),
            ],
            total: false,
        })
        .collect();
    (!rows.is_empty()).then(|| Section {
        title: "Sites",
        blocks: vec![Block::Table(Table {
            columns: columns(&[("Site", false), ("Addresses", false), ("Role", false)]),
            rows,
        })],
    })
}

fn notes(ctx: &ReportContext) -> Option<Section> {
    let items: Vec<Vec<Span>> = ctx.notes.iter().map(|n| vec![text(n)]).collect();
    (!items.is_empty()).then(|| Section {
        title: "Notes",
        blocks: vec![Block::List(ListKind::Bullets, items)],
    })
}
