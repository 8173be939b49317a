//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `idns_service_epoch` | gauge | service |
//! | `idns_service_active_site` | gauge (info: 1 for the active site, 0 for the others) | service, site |
//! | `idns_service_frozen` | gauge | service |
//! | `idns_service_switches` | gauge (switches kept in the journal) | service |
//! | `idns_runbook_in_progress` | gauge | service, kind |
//! | `idns_runbook_held` | gauge (1 while waiting for an operator) | service |
//! | `idns_rpo_budget_seconds` | gauge (when a budget is set) | service |
//! | `idns_observer_live` | gauge (0: silent, its votes abstain) | service, observer |
//! | `idns_observer_last_report_timestamp_seconds` | gauge | service, observer |
//! | `idns_site_up` | gauge (1 up, 0 down or unknown) | service, site |
//! | `idns_site_eligible` | gauge | service, site |
//! | `idns_failovers_total`, `idns_failbacks_total`, `idns_drills_total` | counter | service |
//! | `idns_runbooks_total` | counter | service, kind, outcome |
//! | `idns_last_runbook_timestamp_seconds` | gauge (Unix time the last one ended) | service, kind |
//! | `idns_last_rto_seconds`, `idns_last_rpo_seconds`, `idns_last_rpo_at_decision_seconds` | gauge | service, kind |
//! | `idns_last_phase_seconds` | gauge | service, kind, phase |
//! | `idns_replication_lag_seconds` | gauge | service, resource, site |
//! | `idns_replication_lag_bytes` | gauge | service, resource, site |
//! | `idns_replication_role` | gauge (1 for the current role) | service, resource, site, role |
//! | `idns_probe_up` | gauge (last attempt) | service, site, probe, observer |
//! | `idns_probe_latency_seconds` | histogram | service, site, probe, observer |
//! | `idns_step_retries_total` | counter | service, step |
//! | `idns_events_total` | counter (events logged) | service |
//!
//! Counters count since the daemon started.

use std::fmt::Write as _;

use idns_core::{Health, ProbeStatus, Role, StepName};

use super::service::{LATENCY_BUCKETS, ServiceRuntime};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float as the format writes it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v == 0.0 {
        // Not "-0", which an empty float sum gives.
        "0".into()
    } else {
        format!("{v}")
    }
}

/// Seconds since the Unix epoch (0 for a time before it).
fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Collects samples family by family, so each family's HELP and TYPE come once, before its
/// samples, as the format requires.
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    families: std::collections::HashMap<&'static str, (&'static str, &'static str, String)>,
}

impl Families {
    fn sample(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        suffix: &str,
        labels: &str,
        value: f64,
    ) {
        let entry = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            (kind, help, String::new())
        });
        let _ = writeln!(entry.2, "{name}{suffix}{labels} {}", num(value));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: &str, value: f64) {
        self.sample(name, "gauge", help, "", labels, value);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: &str, value: f64) {
        self.sample(name, "counter", help, "", labels, value);
    }

    fn render(self) -> String {
        let mut out = String::new();
        for name in self.order {
            if let Some((kind, help, body)) = self.families.get(name) {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                out.push_str(body);
            }
        }
        out
    }
}

/// Renders the metrics of every service.
pub fn render(services: &[std::sync::Arc<ServiceRuntime>]) -> String {
    let mut f = Families::default();
    for s in services {
        let name = s.name().to_string();
        let svc = name.as_str();
        let view = s.controller.view();
        let l = labels(&[("service", svc)]);
        f.gauge(
            "idns_service_epoch",
            "The fencing epoch of the service's last decision.",
            &l,
            view.epoch.get() as f64,
        );
        for site in &view.sites {
            let sl = labels(&[("service", svc), ("site", site.id.as_str())]);
            f.gauge(
                "idns_service_active_site",
                "1 for the site the service's name points at, 0 for the others.",
                &sl,
                if site.id == view.active { 1.0 } else { 0.0 },
            );
        }
        f.gauge(
            "idns_service_frozen",
            "1 while automatic decisions are frozen.",
            &l,
            if view.frozen { 1.0 } else { 0.0 },
        );
        f.gauge(
            "idns_service_switches",
            "Switches of the active site made so far (kept in the journal).",
            &l,
            view.switches as f64,
        );
        for kind in ["failover", "failback", "drill"] {
            let running = view
                .runbook
                .as_ref()
                .is_some_and(|r| r.kind.to_string() == kind);
            f.gauge(
                "idns_runbook_in_progress",
                "1 while a runbook of this kind runs.",
                &labels(&[("service", svc), ("kind", kind)]),
                if running { 1.0 } else { 0.0 },
            );
        }
        f.gauge(
            "idns_runbook_held",
            "1 while the service's runbook waits for an operator (idnsctl resume).",
            &l,
            if view.runbook.as_ref().is_some_and(|r| r.held.is_some()) {
                1.0
            } else {
                0.0
            },
        );
        if let Some(budget) = s.config.policy().rpo_budget {
            f.gauge(
                "idns_rpo_budget_seconds",
                "The service's RPO budget: the most replication lag a failover may lose.",
                &l,
                budget.as_secs_f64(),
            );
        }
        for obs in &view.observers {
            let ol = labels(&[("service", svc), ("observer", obs.id.as_str())]);
            f.gauge(
                "idns_observer_live",
                "1 while the observer reports in time, 0 when it is silent (its votes abstain).",
                &ol,
                if obs.live { 1.0 } else { 0.0 },
            );
            if let Some(at) = obs.last_report {
                f.gauge(
                    "idns_observer_last_report_timestamp_seconds",
                    "When the observer's last report arrived (Unix time).",
                    &ol,
                    unix_seconds(at),
                );
            }
        }
        for site in &view.sites {
            let sl = labels(&[("service", svc), ("site", site.id.as_str())]);
            f.gauge(
                "idns_site_up",
                "1 when the site is up by observer quorum, 0 when down or unknown.",
                &sl,
                if site.health == Health::Up { 1.0 } else { 0.0 },
            );
            f.gauge(
                "idns_site_eligible",
                "1 when a failover could go to the site now.",
                &sl,
                if site.eligible { 1.0 } else { 0.0 },
            );
        }

        let o = s.observed.lock().unwrap_or_else(|p| p.into_inner());
        let total = |kind: &str| -> f64 {
            o.finished
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|(_, n)| *n as f64)
                .sum()
        };
        f.counter(
            "idns_failovers_total",
            "Failover runbooks finished since the daemon started.",
            &l,
            total("failover"),
        );
        f.counter(
            "idns_failbacks_total",
            "Failback runbooks finished since the daemon started.",
            &l,
            total("failback"),
        );
        f.counter(
            "idns_drills_total",
            "Drills finished since the daemon started.",
            &l,
            total("drill"),
        );
        for ((kind, outcome), n) in &o.finished {
            f.counter(
                "idns_runbooks_total",
                "Runbooks finished since the daemon started, by kind and outcome.",
                &labels(&[("service", svc), ("kind", kind), ("outcome", outcome)]),
                *n as f64,
            );
        }
        for (kind, (r, _)) in &o.last {
            let kl = labels(&[("service", svc), ("kind", kind)]);
            f.gauge(
                "idns_last_runbook_timestamp_seconds",
                "When the last runbook of this kind ended (Unix time; since the daemon started).",
                &kl,
                unix_seconds(r.finished_at),
            );
            f.gauge(
                "idns_last_rto_seconds",
                "Recovery time of the last runbook of this kind.",
                &kl,
                r.rto.as_secs_f64(),
            );
            if let Some(rpo) = r.rpo {
                f.gauge(
                    "idns_last_rpo_seconds",
                    "Data lost by the last runbook of this kind, measured at its catch-up or promotion.",
                    &kl,
                    rpo.as_secs_f64(),
                );
            }
            if let Some(lag) = r.rpo_at_decision {
                f.gauge(
                    "idns_last_rpo_at_decision_seconds",
                    "Replication lag of the target when the last runbook of this kind was decided.",
                    &kl,
                    lag.as_secs_f64(),
                );
            }
            // A phase can come more than once (reprotect before and after a failback): one
            // series per phase, with its total.
            let mut seen = Vec::new();
            for p in &r.phases {
                if seen.contains(&p.phase) {
                    continue;
                }
                seen.push(p.phase);
                f.gauge(
                    "idns_last_phase_seconds",
                    "Time spent in each phase of the last runbook of this kind.",
                    &labels(&[
                        ("service", svc),
                        ("kind", kind),
                        ("phase", p.phase.as_str()),
                    ]),
                    r.phase(p.phase).as_secs_f64(),
                );
            }
        }
        for ((resource, site), r) in &s.replication() {
            let rl = labels(&[
                ("service", svc),
                ("resource", resource.as_str()),
                ("site", site.as_str()),
            ]);
            if let Some(lag) = r.lag {
                f.gauge(
                    "idns_replication_lag_seconds",
                    "How far the resource's copy at the site is behind its primary.",
                    &rl,
                    lag.as_secs_f64(),
                );
            }
            if let Some(b) = r.lag_bytes {
                f.gauge(
                    "idns_replication_lag_bytes",
                    "How far the copy is behind, in bytes, where the backend knows.",
                    &rl,
                    b as f64,
                );
            }
            for role in [Role::Primary, Role::Replica, Role::Fenced, Role::Unknown] {
                f.gauge(
                    "idns_replication_role",
                    "1 for the current role of the resource's copy at the site.",
                    &labels(&[
                        ("service", svc),
                        ("resource", resource.as_str()),
                        ("site", site.as_str()),
                        ("role", &role.to_string()),
                    ]),
                    if r.role == role { 1.0 } else { 0.0 },
                );
            }
        }
        for ((site, probe, observer), p) in &o.probes {
            let pl = [
                ("service", svc),
                ("site", site.as_str()),
                ("probe", probe.as_str()),
                ("observer", observer.as_str()),
            ];
            f.gauge(
                "idns_probe_up",
                "1 when the probe's last attempt passed.",
                &labels(&pl),
                if p.outcome.status == ProbeStatus::Up {
                    1.0
                } else {
                    0.0
                },
            );
            const HIST: &str = "idns_probe_latency_seconds";
            const HELP: &str = "Latency of probe attempts.";
            for (bound, n) in LATENCY_BUCKETS.iter().zip(p.latency.buckets) {
                let le = num(*bound);
                let mut with_le = pl.to_vec();
                with_le.push(("le", &le));
                f.sample(
                    HIST,
                    "histogram",
                    HELP,
                    "_bucket",
                    &labels(&with_le),
                    n as f64,
                );
            }
            let mut inf = pl.to_vec();
            inf.push(("le", "+Inf"));
            f.sample(
                HIST,
                "histogram",
                HELP,
                "_bucket",
                &labels(&inf),
                p.latency.count as f64,
            );
            f.sample(HIST, "histogram", HELP, "_sum", &labels(&pl), p.latency.sum);
            f.sample(
                HIST,
                "histogram",
                HELP,
                "_count",
                &labels(&pl),
                p.latency.count as f64,
            );
        }
        // Every step's counter from the start (at 0), so that a first retry is an increase.
        let steps = StepName::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .chain(o.retries.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>();
        for step in &steps {
            f.counter(
                "idns_step_retries_total",
                "Retries of runbook steps since the daemon started.",
                &labels(&[("service", svc), ("step", step)]),
                o.retries.get(step).copied().unwrap_or(0) as f64,
            );
        }
        drop(o);
        f.counter(
            "idns_events_total",
            "Events logged for the service since the daemon started.",
            &l,
            s.log.last() as f64,
        );
    }
    f.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_the_format_wants() {
        let empty: f64 = std::iter::empty::<f64>().sum();
        assert_eq!(num(empty), "0");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(f64::NAN), "NaN");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\nw")]),
            "{a=\"x\\\"y\\\\z\\nw\"}".to_owned()
        );
    }

    #[test]
    fn families_are_grouped_with_one_header() {
        let mut f = Families::default();
        f.gauge("m_one", "One.", "{a=\"1\"}", 1.0);
        f.gauge("m_two", "Two.", "{a=\"1\"}", 2.5);
        f.gauge("m_one", "One.", "{a=\"2\"}", 3.0);
        let text = f.render();
        assert_eq!(
            text,
            "# HELP m_one One.\n# TYPE m_one gauge\nm_one{a=\"1\"} 1\nm_one{a=\"2\"} 3\n\
             # HELP m_two Two.\n# TYPE m_two gauge\nm_two{a=\"1\"} 2.5\n"
        );
    }
}
