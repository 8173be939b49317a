//! The report as Markdown: a readable summary for a ticket, a wiki page or a terminal.

use std::fmt::Write as _;

use super::model::{Block, ListKind, Report, Span, Table};

/// Lays out `r` as Markdown.
pub(super) fn render(r: &Report) -> String {
    let mut o = String::new();
    let a = &r.assessment;
    let _ = writeln!(o, "# {}: {}\n", r.title, md(&r.service));
    let _ = writeln!(o, "**{}**: {}\n", a.verdict.label(), md(&r.summary));
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
    for (label, value) in &r.facts {
        let _ = writeln!(o, "| {label} | {} |", spans(value));
    }
    o.push('\n');
    for s in &r.sections {
        let _ = writeln!(o, "## {}\n", s.title);
        for b in &s.blocks {
            block(&mut o, b);
        }
    }
    let _ = writeln!(o, "_{}_", md(&r.footer));
    o
}

fn block(o: &mut String, b: &Block) {
    match b {
        Block::Para(p) => {
            let _ = writeln!(o, "{}\n", spans(p));
        }
        Block::Note(n) => {
            let _ = writeln!(o, "{}\n", md(n));
        }
        Block::Heading(h) => {
            let _ = writeln!(o, "### {h}\n");
        }
        Block::List(kind, items) => {
            for (i, item) in items.iter().enumerate() {
                match kind {
                    ListKind::Numbered => {
                        let _ = writeln!(o, "{}. {}", i + 1, spans(item));
                    }
                    ListKind::Bullets | ListKind::Checks => {
                        let _ = writeln!(o, "- {}", spans(item));
                    }
                }
            }
            o.push('\n');
        }
        Block::Table(t) => table(o, t),
    }
}

fn table(o: &mut String, t: &Table) {
    row(o, t.columns.iter().map(|c| c.title.to_owned()));
    o.push('|');
    for c in &t.columns {
        o.push_str(if c.numeric { "---:|" } else { "---|" });
    }
    o.push('\n');
    for r in &t.rows {
        row(o, r.cells.iter().map(|c| spans(&c.spans)));
    }
    o.push('\n');
}

fn row(o: &mut String, cells: impl Iterator<Item = String>) {
    o.push('|');
    for c in cells {
        // An empty cell stays one space wide.
        if c.is_empty() {
            o.push_str(" |");
        } else {
            let _ = write!(o, " {c} |");
        }
    }
    o.push('\n');
}

fn spans(spans: &[Span]) -> String {
    let mut out = String::new();
    for s in spans {
        match s {
            Span::Text(t) | Span::Detail(t) => out.push_str(&md(t)),
            Span::Name(n) => out.push_str(&md_code(n)),
            Span::Strong(t) => {
                let _ = write!(out, "**{}**", md(t));
            }
            Span::Badge(passed) => out.push_str(if *passed { "**PASS**" } else { "**FAIL**" }),
        }
    }
    out
}

/// Text for Markdown: characters that Markdown or inline HTML would interpret are escaped
/// (`#` where the text starts), line breaks become spaces (so a table cell stays one cell).
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            // A `#` opens a heading only where a line starts.
            '#' if i > 0 => out.push(c),
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
