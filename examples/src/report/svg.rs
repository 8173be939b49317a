//! The timeline as an SVG image: a bar per phase on a time axis with its steps inside, the
//! RPO window before the decision, and retried, skipped or failed steps marked.

use std::fmt::Write as _;
use std::time::Duration;

use idns_core::{Phase, StepStatus};

use super::model::{fmt_ms, status_word};
use super::timeline::Timeline;

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
pub(super) fn tick_step(span_ms: f64, n: f64) -> f64 {
    let raw = (span_ms / n).max(1e-3);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

pub(super) fn fmt_tick(ms: f64, step: f64) -> String {
    if step >= 1000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if step >= 1.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// The timeline: a row for the RPO window, a row per phase with its steps inside, a time axis
/// and a legend.
pub(super) fn render(tl: &Timeline) -> String {
    let segs = &tl.segments;
    let decision = tl.decision;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let end_ms = ms(tl.rto)
        .max(segs.last().map(|s| ms(s.end())).unwrap_or(0.0))
        .max(1.0);
    // The RPO window lies before the decision; keep it from crushing the phases: beyond the
    // length of the recovery itself it is drawn broken.
    let (rpo_from, rpo_broken) = match tl.rpo {
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
        esc(&fmt_ms(tl.rto))
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
    let rto_ms = ms(tl.rto);
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
        &format!("recovered: RTO {}", fmt_ms(tl.rto)),
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
    match (tl.rpo, rpo_from) {
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
        for p in &s.steps {
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

/// Text for HTML and SVG (element content and quoted attribute values).
pub(super) fn esc(s: &str) -> String {
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
