//! Drill and switch reports: a Markdown summary and a self-contained HTML page with an SVG
//! timeline.
//!
//! A [`Report`] is built once from the [`SwitchReport`] the election produced when a runbook
//! ended (its phases, RTO, RPO, steps and reason chain) and a [`ReportContext`] with what only
//! the program around the election knows: which name was published, who started the runbook,
//! what the integrity verification found, and the checks an auditor asks for (was production
//! left alone, was the drill cleaned up). Its sections — verdict, facts, decision, phases,
//! steps with their attempts, retries and errors, integrity, checks — are then rendered:
//!
//! - [`Report::markdown`]: a readable summary;
//! - [`Report::html`]: one page with inline CSS and no scripts or external assets (a
//!   Content-Security-Policy forbids them), every text HTML-escaped, and the timeline;
//! - [`Report::svg`]: the timeline alone: a bar per phase on a time axis, the RPO window
//!   before the decision, and retried, skipped or failed steps marked;
//! - [`Report::assessment`] (or [`assess`]): the verdict every rendering prints, for a
//!   program's exit code.
//!
//! ```
//! # fn demo(report: &idns_core::SwitchReport) {
//! use idns_examples::report::{Check, Report, ReportContext};
//!
//! let mut ctx = ReportContext::new("www.example.com", "drill.www.example.com");
//! ctx.started_by = "a scheduled drill".into();
//! ctx.checks.push(Check::new("production untouched", true, "www.example.com answered 192.0.2.1 throughout"));
//! let report = Report::new(report, &ctx);
//! let md = report.markdown();
//! let page = report.html();
//! let ok = report.assessment().passed();
//! # let _ = (md, page, ok);
//! # }
//! ```

mod context;
mod html;
mod markdown;
mod model;
mod svg;
mod timeline;
mod verdict;

pub use context::{Check, IntegrityResult, ReportContext, RetryNote, SiteNote};
pub use model::Report;
pub use verdict::{Assessment, Verdict, assess};

use idns_core::SwitchReport;

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        markdown::render(self)
    }

    /// The report as one self-contained HTML page (inline CSS, an SVG timeline, no scripts).
    pub fn html(&self) -> String {
        html::render(self)
    }

    /// The timeline alone, as an SVG image.
    pub fn svg(&self) -> String {
        svg::render(&self.timeline)
    }
}

/// The report of `report` as Markdown: `Report::new(report, ctx).markdown()`.
pub fn markdown(report: &SwitchReport, ctx: &ReportContext) -> String {
    Report::new(report, ctx).markdown()
}

/// The report of `report` as an HTML page: `Report::new(report, ctx).html()`.
pub fn html(report: &SwitchReport, ctx: &ReportContext) -> String {
    Report::new(report, ctx).html()
}

#[cfg(test)]
mod tests;
