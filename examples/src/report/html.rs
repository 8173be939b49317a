//! The report as one self-contained HTML page: inline CSS, the SVG timeline, no scripts or
//! external assets (a Content-Security-Policy forbids them), every text escaped.

use std::fmt::Write as _;

use super::model::{Block, ListKind, Report, Span, Table, status_word};
use super::svg::{self, esc};
use super::verdict::Verdict;

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
h3 { font-size:15px; margin:14px 0 8px; }
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
header dl.facts { margin-top:12px; }
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

/// Lays out `r` as an HTML page.
pub(super) fn render(r: &Report) -> String {
    let a = &r.assessment;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&r.title),
        esc(&r.service)
    );

    // The verdict and the facts.
    let _ = write!(
        o,
        "<header class=\"verdict {}\">\n<h1>{} <span class=\"name\">{}</span></h1>\n\
         <span class=\"badge\">{}</span>\n<p class=\"summary\">{}</p>\n",
        class(a.verdict),
        esc(&r.title),
        esc(&r.service),
        a.verdict.label(),
        esc(&r.summary)
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
    o.push_str("<dl class=\"facts\">\n");
    for (label, value) in &r.facts {
        let _ = writeln!(o, "<dt>{}</dt><dd>{}</dd>", esc(label), spans(value));
    }
    o.push_str("</dl>\n</header>\n");

    // The figures at a glance.
    o.push_str("<div class=\"cards\">\n");
    for f in &r.figures {
        let _ = writeln!(
            o,
            "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"s\">{}</div></div>",
            esc(f.label),
            esc(&f.value),
            esc(&f.note)
        );
    }
    o.push_str("</div>\n");

    o.push_str("<section>\n<h2>Timeline</h2>\n");
    o.push_str(&svg::render(&r.timeline));
    o.push_str(
        "<p class=\"note\">Each bar is a phase; the segments inside it are its steps.</p>\n</section>\n",
    );

    for s in &r.sections {
        let _ = writeln!(o, "<section>\n<h2>{}</h2>", esc(s.title));
        for b in &s.blocks {
            block(&mut o, b);
        }
        o.push_str("</section>\n");
    }
    let _ = write!(
        o,
        "<footer>{}</footer>\n</main>\n</body>\n</html>\n",
        esc(&r.footer)
    );
    o
}

fn class(v: Verdict) -> &'static str {
    match v {
        Verdict::Passed => "pass",
        Verdict::Warnings => "warn",
        Verdict::Failed => "fail",
    }
}

fn block(o: &mut String, b: &Block) {
    match b {
        Block::Para(p) => {
            let _ = writeln!(o, "<p>{}</p>", spans(p));
        }
        Block::Note(n) => {
            let _ = writeln!(o, "<p class=\"note\">{}</p>", esc(n));
        }
        Block::Heading(h) => {
            let _ = writeln!(o, "<h3>{}</h3>", esc(h));
        }
        Block::List(kind, items) => {
            let (open, close) = match kind {
                ListKind::Bullets => ("<ul>", "</ul>"),
                ListKind::Numbered => ("<ol>", "</ol>"),
                ListKind::Checks => ("<ul class=\"checks\">", "</ul>"),
            };
            let _ = writeln!(o, "{open}");
            for item in items {
                let _ = writeln!(o, "<li>{}</li>", spans(item));
            }
            let _ = writeln!(o, "{close}");
        }
        Block::Table(t) => table(o, t),
    }
}

fn table(o: &mut String, t: &Table) {
    let n = |numeric: bool| if numeric { " class=\"n\"" } else { "" };
    o.push_str("<table>\n<thead><tr>");
    for c in &t.columns {
        let _ = write!(o, "<th{}>{}</th>", n(c.numeric), esc(c.title));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for r in &t.rows {
        o.push_str(if r.total {
            "<tr class=\"total\">"
        } else {
            "<tr>"
        });
        for (c, col) in r.cells.iter().zip(&t.columns) {
            match c.tone {
                Some(status) => {
                    let _ = write!(o, "<td class=\"st-{}\">", status_word(status));
                }
                None => {
                    let _ = write!(o, "<td{}>", n(col.numeric));
                }
            }
            // The colour of a status, and the total row's weight, carry the emphasis here.
            for s in &c.spans {
                match s {
                    Span::Strong(t) => o.push_str(&esc(t)),
                    other => o.push_str(&spans(std::slice::from_ref(other))),
                }
            }
            o.push_str("</td>");
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
}

fn spans(spans: &[Span]) -> String {
    let mut out = String::new();
    for s in spans {
        let _ = match s {
            Span::Text(t) => write!(out, "{}", esc(t)),
            Span::Name(t) => write!(out, "<span class=\"name\">{}</span>", esc(t)),
            Span::Strong(t) => write!(out, "<strong>{}</strong>", esc(t)),
            Span::Detail(t) => write!(out, "<span class=\"detail\">{}</span>", esc(t)),
            Span::Badge(true) => write!(out, "<span class=\"badge pass\">PASS</span>"),
            Span::Badge(false) => write!(out, "<span class=\"badge fail\">FAIL</span>"),
        };
    }
    out
}
