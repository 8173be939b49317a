//! Planning: pure functions from the configuration and a decision to the steps of a runbook,
//! the DNS change it publishes, retry delays, the RPO guard and the phases of the RTO.
//!
//! Nothing here holds state or reads time; the tests below are tables of inputs and the plans
//! they give.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{AllDownPolicy, RecordMode, ServiceConfig};
use crate::dns::{DnsChange, RecordSet};
use crate::epoch::Epoch;
use crate::event::PhaseTime;
use crate::id::{ResourceId, SiteId};
use crate::journal::Serving;
use crate::reason::Reason;
use crate::replication::{IntegrityRequest, Manifest};
use crate::runbook::{PlannedStep, RunbookKind, Step, StepName, StepPolicy, StepRecord};

/// What a runbook is planned from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decision<'a> {
    /// Why it runs.
    pub(super) kind: RunbookKind,
    /// The site it switches away from (none for a bootstrap).
    pub(super) from: Option<&'a SiteId>,
    /// The site it switches to (none for an all-down runbook).
    pub(super) to: Option<&'a SiteId>,
    /// Its epoch.
    pub(super) epoch: Epoch,
    /// Its id (names a drill's markers).
    pub(super) id: u64,
}

/// Expands the configured steps of a runbook into concrete steps. `markers` are those written
/// while away from home, verified by a failback.
pub(super) fn plan(
    cfg: &ServiceConfig,
    markers: &BTreeMap<ResourceId, Manifest>,
    d: Decision<'_>,
) -> Vec<PlannedStep> {
    let Decision {
        kind,
        from,
        to,
        epoch,
        id,
    } = d;
    let drill = kind == RunbookKind::Drill;
    let dns_only = matches!(
        kind,
        RunbookKind::Bootstrap | RunbookKind::AllDown | RunbookKind::Restore
    );
    let change = dns_change(cfg, kind, to, epoch);
    let mut out = Vec::new();
    let mut promoted = false;
    let resources = cfg.resources();
    for policy in cfg.runbook(kind) {
        let name = policy.step;
        if dns_only && !matches!(name, StepName::SwitchDns | StepName::VerifyDns) {
            continue;
        }
        let mut push = |step: Step| {
            out.push(PlannedStep {
                name,
                step,
                policy: *policy,
                drill,
            })
        };
        match (name, from, to) {
            (StepName::Fence, Some(from), Some(to)) if !drill && from != to => {
                for r in resources {
                    push(Step::Fence {
                        resource: r.clone(),
                        site: from.clone(),
                    });
                }
            }
            (StepName::Promote, _, Some(to)) => {
                promoted = true;
                for r in resources {
                    push(Step::Promote {
                        resource: r.clone(),
                        site: to.clone(),
                    });
                }
            }
            (StepName::Reprotect | StepName::CatchUp, from, to) => {
                let primary = if promoted { to } else { from };
                if let Some(primary) = primary.filter(|_| !drill) {
                    for r in resources {
                        push(Step::Reprotect {
                            resource: r.clone(),
                            primary: primary.clone(),
                            wait: name == StepName::CatchUp,
                        });
                    }
                }
            }
            (StepName::VerifyIntegrity, _, Some(to)) => {
                for r in resources {
                    push(Step::Integrity {
                        resource: r.clone(),
                        site: to.clone(),
                        request: IntegrityRequest::Check,
                    });
                }
            }
            (StepName::WriteMarkers, _, Some(to)) => {
                let label = if drill {
                    format!("drill-{id}")
                } else {
                    format!("epoch-{epoch}")
                };
                for r in resources {
                    push(Step::Integrity {
                        resource: r.clone(),
                        site: to.clone(),
                        request: IntegrityRequest::Mark {
                            label: label.clone(),
                        },
                    });
                }
            }
            (StepName::VerifyMarkers, _, Some(to)) => {
                for r in resources {
                    if let Some(m) = markers.get(r) {
                        push(Step::Integrity {
                            resource: r.clone(),
                            site: to.clone(),
                            request: IntegrityRequest::Verify {
                                expected: m.clone(),
                            },
                        });
                    }
                }
            }
            (StepName::SwitchDns, _, _) => push(Step::SwitchDns {
                change: change.clone(),
            }),
            (StepName::VerifyDns, _, _) => push(Step::VerifyDns {
                change: change.clone(),
            }),
            (StepName::Cleanup, _, to) => out.extend(cleanup_steps(cfg, to, epoch, *policy)),
            _ => {}
        }
    }
    out
}

/// The steps that remove what a drill created: its isolated copies at `to`, then its name's
/// records.
pub(super) fn cleanup_steps(
    cfg: &ServiceConfig,
    to: Option<&SiteId>,
    epoch: Epoch,
    policy: StepPolicy,
) -> Vec<PlannedStep> {
    let mut out = Vec::new();
    if let Some(to) = to {
        for r in cfg.resources() {
            out.push(PlannedStep {
                name: StepName::Cleanup,
                step: Step::Fence {
                    resource: r.clone(),
                    site: to.clone(),
                },
                policy,
                drill: true,
            });
        }
    }
    let change = DnsChange {
        records: RecordSet::Empty,
        site: None,
        ..dns_change(cfg, RunbookKind::Drill, None, epoch)
    };
    out.push(PlannedStep {
        name: StepName::Cleanup,
        step: Step::SwitchDns { change },
        policy,
        drill: true,
    });
    out
}

/// The knobs of a drill's cleanup: as configured in the drill runbook, or the defaults.
pub(super) fn cleanup_policy(cfg: &ServiceConfig) -> StepPolicy {
    cfg.runbook(RunbookKind::Drill)
        .iter()
        .find(|p| p.step == StepName::Cleanup)
        .copied()
        .unwrap_or_else(|| StepPolicy::default_for(StepName::Cleanup))
}

/// The DNS change a runbook publishes: the target's records on the service's name (on the
/// drill name for a drill, which makes no site active), every site or nothing when all are
/// down.
pub(super) fn dns_change(
    cfg: &ServiceConfig,
    kind: RunbookKind,
    to: Option<&SiteId>,
    epoch: Epoch,
) -> DnsChange {
    let name = if kind == RunbookKind::Drill {
        cfg.drill_name().clone()
    } else {
        cfg.name().clone()
    };
    let site_records = |si: usize| {
        let s = &cfg.sites()[si];
        match (cfg.record_mode(), &s.alias) {
            (RecordMode::Alias, Some(a)) => RecordSet::Alias(a.clone()),
            _ => RecordSet::Addresses(s.addresses.clone()),
        }
    };
    let (records, site) = if kind == RunbookKind::AllDown {
        match cfg.policy().all_down {
            AllDownPolicy::FailClosed => (RecordSet::Empty, None),
            _ => (every_address(cfg), None),
        }
    } else {
        match to.and_then(|t| cfg.site_index(t)) {
            // A drill rehearses on its own name and makes no site active: its ownership
            // record names none, so the next drill may replace it under the same epoch.
            Some(si) if kind == RunbookKind::Drill => (site_records(si), None),
            Some(si) => (site_records(si), to.cloned()),
            None => (RecordSet::Empty, None),
        }
    };
    DnsChange {
        zone: cfg.zone().clone(),
        name,
        records,
        ttl: cfg.ttl(),
        epoch,
        site,
    }
}

/// Every site's addresses: what the name publishes when all sites are down and it fails open.
fn every_address(cfg: &ServiceConfig) -> RecordSet {
    let all = cfg
        .sites()
        .iter()
        .flat_map(|s| s.addresses.iter().copied())
        .collect();
    RecordSet::Addresses(all)
}

/// The change that publishes what a journal says the service's name serves (`serving`, with
/// `active` as the active site), at `epoch`: what a restarted controller checks the DNS
/// against.
pub(super) fn serving_change(
    cfg: &ServiceConfig,
    serving: Serving,
    active: &SiteId,
    epoch: Epoch,
) -> DnsChange {
    match serving {
        Serving::Active => dns_change(cfg, RunbookKind::Failover, Some(active), epoch),
        // No target: no records, no site.
        Serving::Withdrawn => dns_change(cfg, RunbookKind::Failover, None, epoch),
        Serving::AllSites => DnsChange {
            records: every_address(cfg),
            ..dns_change(cfg, RunbookKind::Failover, None, epoch)
        },
    }
}

/// The delay before attempt `attempt + 1` of a failed step: `base` doubled per attempt made,
/// at most `max`, plus `jitter` (a fraction, from the configured seed).
pub(super) fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let d = base.saturating_mul(1u32 << exp).min(max);
    d.mul_f64(1.0 + jitter).min(max.max(base))
}

/// The RTO split into phases: detection and decision, then the finished steps' durations,
/// consecutive steps of one phase added up.
pub(super) fn phases(detect: Duration, decide: Duration, done: &[StepRecord]) -> Vec<PhaseTime> {
    use crate::runbook::Phase;
    let mut phases = vec![
        PhaseTime {
            phase: Phase::Detect,
            duration: detect,
        },
        PhaseTime {
            phase: Phase::Decide,
            duration: decide,
        },
    ];
    for r in done {
        let phase = r.name.phase();
        match phases.last_mut() {
            Some(last) if last.phase == phase => last.duration += r.duration,
            _ => phases.push(PhaseTime {
                phase,
                duration: r.duration,
            }),
        }
    }
    phases
}

/// The RPO guard: the site's largest lag over the consistency group, or why it fails the
/// budget (a lag over it, or unknown while a budget is in force).
pub(super) fn lag_check(
    site: &SiteId,
    lags: &[Option<Duration>],
    budget: Option<Duration>,
) -> Result<Option<Duration>, Reason> {
    let max = lags.iter().flatten().max().copied();
    let Some(budget) = budget else {
        return Ok(max);
    };
    if lags.iter().any(|l| l.is_none()) {
        return Err(Reason::LagUnknown { site: site.clone() });
    }
    match max {
        Some(lag) if lag > budget => Err(Reason::LagOverBudget {
            site: site.clone(),
            lag,
            budget,
        }),
        other => Ok(other),
    }
}

/// Site indices by preference: lowest priority number first (priorities are unique).
pub(super) fn by_priority(cfg: &ServiceConfig) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cfg.sites().len()).collect();
    order.sort_by_key(|&i| cfg.sites()[i].priority);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::ManifestEntry;
    use crate::runbook::{Phase, StepStatus};

    fn config(resources: &str, extra: &str) -> ServiceConfig {
        ServiceConfig::from_toml(&format!(
            r#"
            name = "www.example.com"
            zone = "example.com"
            resources = [{resources}]
            {extra}
            [[sites]]
            id = "a"
            priority = 1
            addresses = ["192.0.2.1"]
            alias = "a.example.net"
            probes = [{{ id = "http" }}]
            [[sites]]
            id = "b"
            priority = 2
            addresses = ["192.0.2.2"]
            alias = "b.example.net"
            probes = [{{ id = "http" }}]
            "#
        ))
        .unwrap()
    }

    fn site(s: &str) -> SiteId {
        SiteId::try_from(s).unwrap()
    }

    /// A plan in words: one line per step.
    fn words(steps: &[PlannedStep]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let drill = if s.drill { " [drill]" } else { "" };
                format!("{}: {}{drill}", s.name, s.step)
            })
            .collect()
    }

    #[test]
    fn runbooks_expand_into_the_steps_of_their_kind() {
        let cfg = config(r#""db""#, "");
        let (a, b) = (site("a"), site("b"));
        let mut markers = BTreeMap::new();
        let mut manifest = Manifest::default();
        manifest.entries.insert(
            "marker".into(),
            ManifestEntry {
                size: 1,
                checksum: "00".into(),
                modified: None,
            },
        );
        markers.insert(ResourceId::try_from("db").unwrap(), manifest);
        let none = BTreeMap::new();
        let d = |kind, from, to, epoch| Decision {
            kind,
            from,
            to,
            epoch: Epoch::new(epoch),
            id: 7,
        };
        let table: Vec<(Decision<'_>, &BTreeMap<_, _>, Vec<&str>)> = vec![
            (
                d(RunbookKind::Bootstrap, None, Some(&a), 1),
                &none,
                vec![
                    "switch_dns: point www.example.com at 192.0.2.1 (epoch 1)",
                    "verify_dns: wait until every server answers 192.0.2.1 for www.example.com",
                ],
            ),
            (
                d(RunbookKind::Failover, Some(&a), Some(&b), 2),
                &none,
                vec![
                    "fence: fence db at a",
                    "promote: promote db at b",
                    "verify_integrity: check integrity of db at b",
                    "switch_dns: point www.example.com at 192.0.2.2 (epoch 2)",
                    "verify_dns: wait until every server answers 192.0.2.2 for www.example.com",
                    "write_markers: write markers epoch-2 for db at b",
                ],
            ),
            (
                d(RunbookKind::Failback, Some(&b), Some(&a), 3),
                &markers,
                vec![
                    "reprotect: reprotect db to follow b",
                    "catch_up: wait until db has caught up with b",
                    "fence: fence db at b",
                    "promote: promote db at a",
                    "verify_markers: verify 1 markers of db at a",
                    "switch_dns: point www.example.com at 192.0.2.1 (epoch 3)",
                    "verify_dns: wait until every server answers 192.0.2.1 for www.example.com",
                    "reprotect: reprotect db to follow a",
                ],
            ),
            (
                // Without markers there is nothing to verify.
                d(RunbookKind::Failback, Some(&b), Some(&a), 3),
                &none,
                vec![
                    "reprotect: reprotect db to follow b",
                    "catch_up: wait until db has caught up with b",
                    "fence: fence db at b",
                    "promote: promote db at a",
                    "switch_dns: point www.example.com at 192.0.2.1 (epoch 3)",
                    "verify_dns: wait until every server answers 192.0.2.1 for www.example.com",
                    "reprotect: reprotect db to follow a",
                ],
            ),
            (
                d(RunbookKind::Drill, Some(&a), Some(&b), 2),
                &none,
                vec![
                    "promote: promote db at b [drill]",
                    "verify_integrity: check integrity of db at b [drill]",
                    "switch_dns: point drill.www.example.com at 192.0.2.2 (epoch 2) [drill]",
                    "verify_dns: wait until every server answers 192.0.2.2 for \
                     drill.www.example.com [drill]",
                    "cleanup: fence db at b [drill]",
                    "cleanup: point drill.www.example.com at (no records) (epoch 2) [drill]",
                ],
            ),
            (
                d(RunbookKind::AllDown, Some(&a), None, 4),
                &none,
                vec![
                    "switch_dns: point www.example.com at 192.0.2.1, 192.0.2.2 (epoch 4)",
                    "verify_dns: wait until every server answers 192.0.2.1, 192.0.2.2 for \
                     www.example.com",
                ],
            ),
            (
                d(RunbookKind::Restore, Some(&b), Some(&b), 5),
                &none,
                vec![
                    "switch_dns: point www.example.com at 192.0.2.2 (epoch 5)",
                    "verify_dns: wait until every server answers 192.0.2.2 for www.example.com",
                ],
            ),
        ];
        for (decision, markers, want) in table {
            let got = words(&plan(&cfg, markers, decision));
            assert_eq!(got, want, "{decision:?}");
        }
    }

    #[test]
    fn a_drill_never_fences_or_reprotects_and_labels_its_markers_by_runbook() {
        let cfg = config(
            r#""db""#,
            r#"[runbook]
            drill = [
                { step = "fence" },
                { step = "write_markers" },
                { step = "reprotect" },
                { step = "switch_dns" },
            ]"#,
        );
        let (a, b) = (site("a"), site("b"));
        let d = Decision {
            kind: RunbookKind::Drill,
            from: Some(&a),
            to: Some(&b),
            epoch: Epoch::new(2),
            id: 7,
        };
        assert_eq!(
            words(&plan(&cfg, &BTreeMap::new(), d)),
            [
                "write_markers: write markers drill-7 for db at b [drill]",
                "switch_dns: point drill.www.example.com at 192.0.2.2 (epoch 2) [drill]",
            ]
        );
    }

    #[test]
    fn without_resources_only_the_dns_steps_remain() {
        let cfg = config("", "");
        let (a, b) = (site("a"), site("b"));
        for kind in [RunbookKind::Failover, RunbookKind::Failback] {
            let d = Decision {
                kind,
                from: Some(&a),
                to: Some(&b),
                epoch: Epoch::new(2),
                id: 2,
            };
            let names: Vec<StepName> = plan(&cfg, &BTreeMap::new(), d)
                .iter()
                .map(|s| s.name)
                .collect();
            assert_eq!(names, [StepName::SwitchDns, StepName::VerifyDns], "{kind}");
        }
    }

    #[test]
    fn the_dns_change_follows_the_record_mode_and_the_all_down_policy() {
        let (a, b) = (site("a"), site("b"));
        // (configuration, kind, target, records, owner)
        let table = [
            ("", RunbookKind::Failover, Some(&b), "192.0.2.2", Some(&b)),
            ("", RunbookKind::Drill, Some(&b), "192.0.2.2", None),
            ("", RunbookKind::Failover, None, "(no records)", None),
            (
                r#"record = "alias""#,
                RunbookKind::Failover,
                Some(&a),
                "CNAME a.example.net",
                Some(&a),
            ),
            (
                r#"record = "alias""#,
                RunbookKind::Drill,
                Some(&b),
                "CNAME b.example.net",
                None,
            ),
            (
                "[policy]\nall_down = \"fail_open\"",
                RunbookKind::AllDown,
                None,
                "192.0.2.1, 192.0.2.2",
                None,
            ),
            (
                "[policy]\nall_down = \"fail_closed\"",
                RunbookKind::AllDown,
                None,
                "(no records)",
                None,
            ),
        ];
        for (extra, kind, to, records, owner) in table {
            let cfg = config("", extra);
            let c = dns_change(&cfg, kind, to, Epoch::new(3));
            assert_eq!(c.records.to_string(), records, "{extra} {kind} {to:?}");
            assert_eq!(c.site.as_ref(), owner, "{extra} {kind} {to:?}");
            assert_eq!(c.epoch, Epoch::new(3));
            let name = if kind == RunbookKind::Drill {
                "drill.www.example.com"
            } else {
                "www.example.com"
            };
            assert_eq!(c.name.as_str(), name);
        }
    }

    #[test]
    fn the_published_change_follows_what_the_journal_serves_whatever_the_all_down_policy() {
        let b = site("b");
        // (what the journal serves, records, owner), under a fail-closed policy.
        let table = [
            (Serving::Active, "192.0.2.2", Some(&b)),
            (Serving::AllSites, "192.0.2.1, 192.0.2.2", None),
            (Serving::Withdrawn, "(no records)", None),
        ];
        let cfg = config("", "[policy]\nall_down = \"fail_closed\"");
        for (serving, records, owner) in table {
            let c = serving_change(&cfg, serving, &b, Epoch::new(5));
            assert_eq!(c.records.to_string(), records, "{serving:?}");
            assert_eq!(c.site.as_ref(), owner, "{serving:?}");
            assert_eq!(
                (c.epoch, c.name.as_str()),
                (Epoch::new(5), "www.example.com")
            );
        }
    }

    #[test]
    fn a_cleanup_without_a_target_only_withdraws_the_drill_name() {
        let cfg = config(r#""db", "files""#, "");
        let steps = cleanup_steps(&cfg, None, Epoch::new(4), cleanup_policy(&cfg));
        assert_eq!(
            words(&steps),
            ["cleanup: point drill.www.example.com at (no records) (epoch 4) [drill]"]
        );
        let steps = cleanup_steps(&cfg, Some(&site("b")), Epoch::new(4), cleanup_policy(&cfg));
        assert_eq!(steps.len(), 3, "{:?}", words(&steps));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_its_jitter() {
        let ms = Duration::from_millis;
        // (attempts made, base, max, jitter, delay)
        let table = [
            (1, ms(500), ms(30_000), 0.0, ms(500)),
            (2, ms(500), ms(30_000), 0.0, ms(1000)),
            (3, ms(500), ms(30_000), 0.25, ms(2500)),
            (10, ms(500), ms(30_000), 0.0, ms(30_000)),
            (10, ms(500), ms(30_000), 0.19, ms(30_000)),
            (0, ms(500), ms(30_000), 0.0, ms(500)),
            (u32::MAX, ms(500), ms(30_000), 0.0, ms(30_000)),
            // A maximum below the base caps it.
            (1, ms(500), ms(100), 0.0, ms(100)),
        ];
        for (attempt, base, max, jitter, want) in table {
            assert_eq!(
                backoff(attempt, base, max, jitter),
                want,
                "attempt {attempt} jitter {jitter}"
            );
        }
    }

    #[test]
    fn phases_add_up_consecutive_steps_of_one_phase() {
        let ms = Duration::from_millis;
        let rec = |name, d| StepRecord {
            name,
            description: String::new(),
            status: StepStatus::Done,
            attempts: 1,
            duration: ms(d),
            detail: String::new(),
        };
        let done = [
            rec(StepName::Fence, 1),
            rec(StepName::Promote, 2),
            rec(StepName::Promote, 3),
            rec(StepName::VerifyIntegrity, 4),
            rec(StepName::WriteMarkers, 5),
            rec(StepName::SwitchDns, 6),
            rec(StepName::Reprotect, 7),
        ];
        let got: Vec<(Phase, Duration)> = phases(ms(10), ms(20), &done)
            .iter()
            .map(|p| (p.phase, p.duration))
            .collect();
        assert_eq!(
            got,
            [
                (Phase::Detect, ms(10)),
                (Phase::Decide, ms(20)),
                (Phase::Fence, ms(1)),
                (Phase::Promote, ms(5)),
                (Phase::Verify, ms(9)),
                (Phase::SwitchDns, ms(6)),
                (Phase::Reprotect, ms(7)),
            ]
        );
    }

    #[test]
    fn the_rpo_guard_needs_every_lag_within_the_budget() {
        let s = Duration::from_secs;
        let b = site("b");
        // (lags, budget, result: Ok(max) or Err(reason in words))
        let table = [
            (vec![], None, Ok(None)),
            (vec![], Some(s(5)), Ok(None)),
            (vec![None], None, Ok(None)),
            (vec![Some(s(1)), Some(s(3))], None, Ok(Some(s(3)))),
            (vec![Some(s(1)), Some(s(5))], Some(s(5)), Ok(Some(s(5)))),
            (
                vec![Some(s(1)), Some(s(6))],
                Some(s(5)),
                Err("site b blocked: lag 6s > rpo 5s"),
            ),
            (
                vec![Some(s(1)), None],
                Some(s(5)),
                Err("site b blocked: replication lag unknown"),
            ),
        ];
        for (lags, budget, want) in table {
            let got = lag_check(&b, &lags, budget).map_err(|r| r.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{lags:?} {budget:?}");
        }
    }

    #[test]
    fn sites_are_ordered_by_priority() {
        let cfg = ServiceConfig::from_toml(
            r#"
            name = "www.example.com"
            zone = "example.com"
            [[sites]]
            id = "c"
            priority = 3
            addresses = ["192.0.2.3"]
            probes = [{ id = "http" }]
            [[sites]]
            id = "a"
            priority = 1
            addresses = ["192.0.2.1"]
            probes = [{ id = "http" }]
            [[sites]]
            id = "b"
            priority = 2
            addresses = ["192.0.2.2"]
            probes = [{ id = "http" }]
            "#,
        )
        .unwrap();
        assert_eq!(by_priority(&cfg), [1, 2, 0]);
    }
}
