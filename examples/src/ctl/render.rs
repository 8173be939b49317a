//! idnsd's status as readable tables.

use std::fmt::Write as _;

use crate::daemon::wire::{History, ReportSummary, ServiceStatus};

pub(super) fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1000.0)
}

fn lag(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| format!("{:.1} s", s))
}

/// Lays out rows in columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(super) fn switch_line(r: &ReportSummary) -> String {
    let mut s = format!(
        "{} {} -> {} {}: RTO {}",
        r.kind,
        r.from.as_deref().unwrap_or("-"),
        r.to.as_deref().unwrap_or("-"),
        r.outcome,
        ms(r.rto_seconds)
    );
    if let Some(rpo) = r.rpo_seconds {
        let _ = write!(s, ", RPO {}", ms(rpo));
    }
    if let Some(lag) = r
        .rpo_at_decision_seconds
        .filter(|&l| Some(l) != r.rpo_seconds)
    {
        let _ = write!(s, " (lag at the decision {})", ms(lag));
    }
    s
}

/// The active site as the table shows it: the elected site, and what DNS answers when that
/// differs (a DNS step held or failing): `recovery (elected; DNS: primary at epoch 1)`.
fn active(s: &ServiceStatus) -> String {
    match &s.dns {
        Some(d) if !d.agrees(&s.active, s.epoch) => {
            format!("{} (elected; DNS: {})", s.active, d.describe())
        }
        _ => s.active.clone(),
    }
}

/// The services as a table: service, active site, epoch, phase, each site's health, last
/// RTO and RPO.
pub fn render_table(services: &[ServiceStatus]) -> String {
    let mut rows = vec![
        [
            "SERVICE",
            "ACTIVE",
            "EPOCH",
            "PHASE",
            "SITES",
            "LAST SWITCH",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in services {
        let sites: Vec<String> = s
            .sites
            .iter()
            .map(|x| format!("{}{} {}", x.id, if x.active { "*" } else { "" }, x.health))
            .collect();
        let mut phase = s.phase.clone();
        if s.frozen {
            phase.push_str(" (frozen)");
        }
        if !s.running {
            phase = "STOPPED".into();
        }
        rows.push(vec![
            s.name.clone(),
            active(s),
            s.epoch.to_string(),
            phase,
            sites.join(", "),
            s.last_switch.as_ref().map_or("-".to_owned(), switch_line),
        ]);
    }
    table(&rows)
}

/// A plan as `idnsctl plan` prints it: the verdict, the steps in order with their limits and
/// failure policies, and every guard with its value (`ok`, or `NO` for the one that refuses).
pub fn render_plan(service: &str, p: &idns_core::Plan) -> String {
    let mut s = String::new();
    let verdict = if p.allowed {
        let mut v = format!("{} of {service}: allowed now", p.command);
        if let (Some(from), Some(to), Some(epoch)) = (&p.from, &p.to, p.epoch) {
            let _ = write!(v, " ({from} -> {to} at epoch {epoch})");
        }
        if p.forced {
            v.push_str(", forced past the guards");
        }
        v
    } else {
        format!(
            "{} of {service}: REFUSED: {}",
            p.command,
            p.refused.as_deref().unwrap_or("-")
        )
    };
    let _ = writeln!(s, "{verdict}");
    if !p.reasons.is_empty() {
        let reasons: Vec<String> = p.reasons.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "because: {}", reasons.join("; "));
    }
    if !p.guards.is_empty() {
        let _ = writeln!(s, "\nguards:");
        let width = p.guards.iter().map(|g| g.name.len()).max().unwrap_or(0);
        for g in &p.guards {
            let mark = if g.passes { "ok" } else { "NO" };
            let _ = writeln!(s, "  {mark}  {:<width$}  {}", g.name, g.value);
        }
    }
    if !p.steps.is_empty() {
        let _ = writeln!(
            s,
            "\nrunbook{}:",
            if p.allowed { "" } else { " (as configured)" }
        );
        for (i, st) in p.steps.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:>2}. {:<44} timeout {:>6}, retries {}, on failure {}",
                i + 1,
                st.description,
                humantime::format_duration(st.timeout).to_string(),
                st.retries,
                format!("{:?}", st.on_failure).to_lowercase()
            );
        }
    }
    s
}

/// The reports a daemon keeps of a service, newest first, as a table: id, kind, outcome,
/// from → to, RTO, RPO and when it finished.
pub fn render_history(h: &History) -> String {
    if h.reports.is_empty() {
        return format!("no report of {} is kept yet\n", h.service);
    }
    let mut rows = vec![
        [
            "ID",
            "KIND",
            "OUTCOME",
            "FROM → TO",
            "RTO",
            "RPO",
            "FINISHED AT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in &h.reports {
        rows.push(vec![
            r.id.to_string(),
            r.kind.clone(),
            format!("{}{}", r.outcome, if r.forced { " (forced)" } else { "" }),
            format!(
                "{} → {}",
                r.from.as_deref().unwrap_or("-"),
                r.to.as_deref().unwrap_or("-")
            ),
            ms(r.rto_seconds),
            r.rpo_seconds.map_or_else(|| "-".to_owned(), ms),
            r.finished_at.clone(),
        ]);
    }
    table(&rows)
}

/// One service in detail: sites with probes and reasons, replication, the last decision, the
/// runbook in progress and the last switch and drill, phase by phase.
pub fn render_detail(s: &ServiceStatus) -> String {
    let mut out = render_table(std::slice::from_ref(s));
    if let Some(d) = &s.dns {
        let _ = writeln!(
            out,
            "DNS answers: {}{}",
            d.describe(),
            if d.agrees(&s.active, s.epoch) {
                String::new()
            } else {
                format!(
                    " (elected: {} at epoch {}; the name does not answer it yet)",
                    s.active, s.epoch
                )
            }
        );
    }
    out.push('\n');
    let mut rows = vec![
        ["SITE", "PRIORITY", "HEALTH", "ELIGIBLE", "LAG", "WHY"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for x in &s.sites {
        rows.push(vec![
            format!("{}{}", x.id, if x.active { " (active)" } else { "" }),
            x.priority.to_string(),
            x.health.clone(),
            if x.eligible { "yes" } else { "no" }.to_owned(),
            lag(x.lag_seconds),
            x.reasons.join("; "),
        ]);
    }
    out.push_str(&table(&rows));
    let probes: Vec<Vec<String>> = s
        .sites
        .iter()
        .flat_map(|x| {
            x.probes.iter().map(move |p| {
                vec![
                    x.id.clone(),
                    p.probe.clone(),
                    p.observer.clone(),
                    p.status.clone(),
                    ms(p.latency_seconds),
                    p.reason.clone(),
                ]
            })
        })
        .collect();
    if !probes.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["SITE", "PROBE", "OBSERVER", "LAST", "LATENCY", "REASON"]
                .map(str::to_owned)
                .to_vec(),
        ];
        rows.extend(probes);
        out.push_str(&table(&rows));
    }
    if !s.replication.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["RESOURCE", "SITE", "ROLE", "LAG"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for r in &s.replication {
            rows.push(vec![
                r.resource.clone(),
                r.site.clone(),
                r.role.clone(),
                lag(r.lag_seconds),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if let Some(d) = &s.decision {
        let _ = write!(
            out,
            "\nlast decision: {} {} -> {} at epoch {}{} ({})\n",
            d.kind,
            d.from.as_deref().unwrap_or("-"),
            d.to.as_deref().unwrap_or("-"),
            d.epoch,
            if d.forced { ", forced" } else { "" },
            d.at
        );
        for r in &d.reasons {
            let _ = writeln!(out, "  because {r}");
        }
    }
    if let Some(r) = &s.runbook {
        let _ = writeln!(
            out,
            "\nrunbook {} in progress: {} -> {} at epoch {}",
            r.kind,
            r.from.as_deref().unwrap_or("-"),
            r.to.as_deref().unwrap_or("-"),
            r.epoch
        );
        if let Some(h) = &r.held {
            let _ = writeln!(
                out,
                "  HELD: {h} (idnsctl resume {} retry|skip|abort)",
                s.name
            );
        }
        for st in &r.steps {
            let _ = writeln!(
                out,
                "  {:<8} {}{}",
                st.status,
                st.description,
                st.seconds
                    .map(|x| format!(" ({})", ms(x)))
                    .unwrap_or_default()
            );
        }
    }
    for (label, r) in [
        ("last switch", &s.last_switch),
        ("last drill", &s.last_drill),
    ] {
        if let Some(r) = r {
            let _ = writeln!(
                out,
                "\n{label}: {} (finished {})",
                switch_line(r),
                r.finished_at
            );
            for p in &r.phases {
                let _ = writeln!(out, "  {:<12} {:>10}", p.phase, ms(p.seconds));
            }
        }
    }
    out
}
