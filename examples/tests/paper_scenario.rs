//! Real servers: named (bind9), postgres (postgresql-15), dig, nsupdate, pg_basebackup, pg_rewind
//!
//! The paper's whole scenario on real servers, driven by the real `idnsd`: BIND 9 takes the
//! service's name over RFC 2136 signed with TSIG, PostgreSQL streams from the primary site to
//! the recovery site, and a small web app runs at each site (127.0.0.1 and 127.0.0.2).
//!
//! The primary is killed (web app and database) → the election fails over → BIND answers the
//! recovery site → the standby was promoted and takes orders → the primary's web app comes
//! back, and an operator fails back: the old primary is rewound and reprotected first, catches
//! up, and only then takes over again → every order written on either side is at the final
//! primary, the drill markers written during the outage are verified there, and the RTO and
//! RPO of both switches are in `/metrics` and in the status and reports. A second test runs a
//! drill on the same kind of servers: a rehearsal on an isolated copy that leaves production
//! alone and cleans up after itself.
//!
//! Run with `--nocapture` to read the narration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[macro_use]
mod common;

use std::net::IpAddr;
use std::time::Instant;

use common::{
    PG_PASSWORD, PRIMARY, RECOVERY, Stage, TOKEN, in_recovery, insert, markers, metric, order_ids,
    resolve, resolver, text, wait_orders, wait_resolves,
};
use idns_core::{Event, Health, RunbookKind, StepName, StepStatus};
use idns_dns::testing::Bind;
use idns_examples::daemon::wire::{EventRecord, ReportSummary, ServiceStatus};

/// The steps of a finished runbook, as `name status`.
fn steps(r: &ReportSummary) -> Vec<String> {
    r.steps
        .iter()
        .map(|s| format!("{} {}", s.name, s.status))
        .collect()
}

/// The finished steps among `events`, in order, as (step, status, description, detail).
fn finished(events: &[EventRecord]) -> Vec<(StepName, StepStatus, String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepFinished { record, .. }) => Some((
                record.name,
                record.status,
                record.description.clone(),
                record.detail.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn position(list: &[(StepName, StepStatus, String, String)], step: StepName) -> usize {
    list.iter()
        .position(|(n, ..)| *n == step)
        .unwrap_or_else(|| panic!("no {step} among {list:#?}"))
}

fn show_switch(t0: Instant, what: &str, r: &ReportSummary) {
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| format!("{} {:.0} ms", p.phase, p.seconds * 1000.0))
        .collect();
    say!(
        t0,
        "{what}: RTO {:.0} ms, RPO {}; phases: {}",
        r.rto_seconds * 1000.0,
        r.rpo_seconds
            .map_or("unknown".to_owned(), |s| format!("{:.0} ms", s * 1000.0)),
        phases.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paper_scenario_on_bind_and_postgres() {
    let Some(mut stage) = Stage::start("paper.test").await else {
        return;
    };
    let t0 = Instant::now();
    let name = stage.name.clone();

    // ---- Steady state -----------------------------------------------------------------------
    let mut d = stage.steady("main", "").await;
    let s = d.status().await;
    assert!(
        s.replication
            .iter()
            .any(|r| r.resource == "orders" && r.site == "primary" && r.role == "primary"),
        "{:#?}",
        s.replication
    );
    let r = resolver(stage.bind.addr());
    assert_eq!(resolve(&r, &name).await, Some(IpAddr::V4(PRIMARY)));
    say!(
        t0,
        "idnsd runs {name}: BIND on {} answers 127.0.0.1 (epoch 1, TXT {:?}); PostgreSQL primary on port {}, standby on port {}",
        stage.bind.addr(),
        stage.dig_owner(),
        stage.pg.a.port,
        stage.pg.b.port
    );

    insert(&stage.pg.a, 1..=10, "taken at the primary").await;
    let want: Vec<i32> = (1..=10).collect();
    wait_orders(&stage.pg.b, &want).await;
    say!(
        t0,
        "10 orders taken at the primary and streamed to the standby"
    );

    // ---- Disaster: the primary is killed ----------------------------------------------------
    let mut cursor = d.status().await.last_event;
    let killed = Instant::now();
    stage.stop_primary_web().await;
    stage.pg.a.stop("immediate");
    say!(
        t0,
        "*** the primary is killed: its web app on 127.0.0.1:{} and its PostgreSQL (immediate stop) ***",
        stage.web_port
    );

    let down = d
        .wait_event(&mut cursor, "the primary site down", |e| {
            matches!(&e.event, Some(Event::SiteChanged { site, to: Health::Down, .. }) if site.as_str() == "primary")
        })
        .await;
    say!(t0, "{}", down.text);
    let decision = d
        .wait_event(&mut cursor, "the failover decision", |e| {
            matches!(&e.event, Some(Event::Decision { .. }))
        })
        .await;
    say!(t0, "{}", decision.text);
    match &decision.event {
        Some(Event::Decision {
            kind,
            from,
            to,
            epoch,
            forced,
            ..
        }) => {
            assert_eq!(*kind, RunbookKind::Failover, "{}", decision.text);
            assert_eq!(from.as_ref().map(|s| s.as_str()), Some("primary"));
            assert_eq!(to.as_ref().map(|s| s.as_str()), Some("recovery"));
            assert_eq!(epoch.get(), 2);
            assert!(!forced, "nobody forced it");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        decision
            .text
            .contains("decision: failover primary -> recovery at epoch 2"),
        "{}",
        decision.text
    );
    assert!(
        decision.text.contains("site primary down"),
        "{}",
        decision.text
    );
    assert!(
        decision.text.contains("site recovery eligible"),
        "{}",
        decision.text
    );

    wait_resolves(&r, &name, RECOVERY).await;
    let to_dns = killed.elapsed();
    say!(
        t0,
        "a client asking BIND for {name} (no cache) gets 127.0.0.2, {:.0} ms after the kill",
        to_dns.as_secs_f64() * 1000.0
    );

    let s = d
        .wait_status("the failover to finish", |s: &ServiceStatus| {
            s.active == "recovery" && s.runbook.is_none() && s.last_switch.is_some()
        })
        .await;
    let failover = s.last_switch.clone().unwrap();
    for (_, status, description, detail) in finished(&d.events(cursor, 0).await.events) {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        say!(t0, "  {status:?} {description}{detail}");
    }
    assert_eq!((s.epoch, s.switches), (2, 1));
    assert_eq!(
        (
            failover.kind.as_str(),
            failover.outcome.as_str(),
            failover.epoch
        ),
        ("failover", "completed", 2)
    );
    let failover_steps = steps(&failover);
    assert_eq!(
        failover_steps[1..],
        [
            "promote done",
            "verify_integrity done",
            "switch_dns done",
            "verify_dns done",
            "write_markers done"
        ],
        "{failover:#?}"
    );
    // The dead primary cannot be reached to be fenced; the epoch fences it at the DNS.
    assert!(
        ["fence done", "fence skipped"].contains(&failover_steps[0].as_str()),
        "{failover:#?}"
    );
    assert!(failover.rto_seconds > 0.0, "{failover:#?}");
    let failover_rpo = failover.rpo_seconds.expect("the failover measured its RPO");
    for phase in ["detect", "promote", "switch_dns"] {
        assert!(
            failover.phases.iter().any(|p| p.phase == phase),
            "{phase} missing: {failover:#?}"
        );
    }
    show_switch(t0, "failover finished", &failover);

    // BIND, asked directly: the recovery site, owned at epoch 2.
    assert_eq!(stage.dig_a(), ["127.0.0.2"]);
    assert_eq!(stage.dig_owner(), ["\"epoch=2 site=recovery\""]);

    // ---- The promoted standby takes orders ---------------------------------------------------
    assert!(!in_recovery(&stage.pg.b).await, "the standby was promoted");
    insert(
        &stage.pg.b,
        11..=20,
        "taken at the recovery site during the outage",
    )
    .await;
    let during = markers(&stage.pg.b).await;
    assert_eq!(
        during,
        [
            ("epoch-2".to_owned(), 0, 2, "recovery".to_owned()),
            ("epoch-2".to_owned(), 1, 2, "recovery".to_owned())
        ]
    );
    say!(
        t0,
        "the recovery site (promoted, read-write) takes 10 orders; drill markers epoch-2 written there"
    );

    // ---- The primary's web app comes back; its database is still down ----------------------
    stage.start_primary_web().await;
    d.wait_status("the primary site up again", |s| {
        s.sites
            .iter()
            .any(|x| x.id == "primary" && x.health == "up")
    })
    .await;
    let s = d.status().await;
    assert_eq!(
        (s.active.as_str(), s.epoch),
        ("recovery", 2),
        "failback is manual: nothing switched by itself"
    );
    assert_eq!(stage.dig_a(), ["127.0.0.2"]);
    say!(
        t0,
        "*** the primary's web app is back; failback is manual, BIND still answers 127.0.0.2 ***"
    );

    // ---- Failback, by an operator through idnsctl -------------------------------------------
    let cursor = s.last_event;
    let shown = d.idnsctl_ok(&["failback", &name, "--wait"]).await;
    for line in shown.lines() {
        say!(t0, "idnsctl | {line}");
    }
    assert!(shown.contains("accepted: failback"), "{shown}");
    assert!(
        shown.contains("failback recovery -> primary completed: RTO"),
        "{shown}"
    );

    // The runbook, step by step from the event stream: the old primary is rewound and follows
    // the recovery site (reprotect), catches up, and only then is the recovery site fenced,
    // the primary promoted, the markers verified and the name switched back.
    let events = d.events(cursor, 0).await.events;
    let steps_seen = finished(&events);
    let reprotect = position(&steps_seen, StepName::Reprotect);
    let catch_up = position(&steps_seen, StepName::CatchUp);
    let fence = position(&steps_seen, StepName::Fence);
    let promote = position(&steps_seen, StepName::Promote);
    let verify = position(&steps_seen, StepName::VerifyMarkers);
    let switch = position(&steps_seen, StepName::SwitchDns);
    assert!(
        reprotect < catch_up
            && catch_up < fence
            && fence < promote
            && promote < verify
            && verify < switch,
        "{steps_seen:#?}"
    );
    let (_, status, description, _) = &steps_seen[reprotect];
    assert_eq!(*status, StepStatus::Done, "{steps_seen:#?}");
    assert!(
        description.contains("orders") && description.contains("recovery"),
        "the first reprotect makes the others follow the recovery site: {description}"
    );
    let (_, status, _, detail) = &steps_seen[verify];
    assert_eq!(*status, StepStatus::Done, "{steps_seen:#?}");
    assert!(detail.contains("verified"), "{detail}");
    assert!(
        steps_seen.iter().all(|(_, st, ..)| *st == StepStatus::Done),
        "{steps_seen:#?}"
    );

    let s = d
        .wait_status("the failback to finish", |s| {
            s.active == "primary" && s.runbook.is_none()
        })
        .await;
    assert_eq!((s.epoch, s.switches), (3, 2));
    let failback = s.last_switch.clone().unwrap();
    assert_eq!(
        (
            failback.kind.as_str(),
            failback.outcome.as_str(),
            failback.epoch
        ),
        ("failback", "completed", 3)
    );
    assert_eq!(
        steps(&failback),
        [
            "reprotect done",
            "catch_up done",
            "fence done",
            "promote done",
            "verify_markers done",
            "switch_dns done",
            "verify_dns done",
            "reprotect done"
        ],
        "{failback:#?}"
    );
    let failback_rpo = failback.rpo_seconds.expect("the failback measured its RPO");
    assert_eq!(failback_rpo, 0.0, "a planned failback loses nothing");
    show_switch(t0, "failback finished", &failback);

    assert_eq!(stage.dig_a(), ["127.0.0.1"]);
    assert_eq!(stage.dig_owner(), ["\"epoch=3 site=primary\""]);
    assert_eq!(resolve(&r, &name).await, Some(IpAddr::V4(PRIMARY)));
    say!(
        t0,
        "BIND answers 127.0.0.1 again (TXT {:?})",
        stage.dig_owner()
    );

    // ---- Integrity: every order from either side is at the final primary --------------------
    assert!(
        !in_recovery(&stage.pg.a).await,
        "the primary is primary again"
    );
    assert!(
        in_recovery(&stage.pg.b).await,
        "the recovery site follows it again"
    );
    let all: Vec<i32> = (1..=20).collect();
    assert_eq!(order_ids(&stage.pg.a).await, all);
    assert_eq!(markers(&stage.pg.a).await, during, "markers survived");
    insert(
        &stage.pg.a,
        21..=21,
        "taken at the primary after the failback",
    )
    .await;
    let mut all_and_new = all.clone();
    all_and_new.push(21);
    assert_eq!(wait_orders(&stage.pg.b, &all_and_new).await, all_and_new);
    say!(
        t0,
        "integrity: orders 1-20 (10 from each side) and the epoch-2 markers are at the primary; order 21 streams to the recovery site again"
    );

    // ---- RTO and RPO in the metrics and the reports -----------------------------------------
    let m = d.metrics().await;
    let sample = |metric_name: &str, kind: &str| {
        metric(
            &m,
            &format!("{metric_name}{{service=\"{name}\",kind=\"{kind}\"}} "),
        )
        .unwrap_or_else(|| panic!("{metric_name} of the {kind} missing from:\n{m}"))
    };
    let (rto_over, rpo_over) = (
        sample("idns_last_rto_seconds", "failover"),
        sample("idns_last_rpo_seconds", "failover"),
    );
    let (rto_back, rpo_back) = (
        sample("idns_last_rto_seconds", "failback"),
        sample("idns_last_rpo_seconds", "failback"),
    );
    // The metrics and the status carry the same durations, printed as decimal seconds each
    // its own way: equal to the microsecond.
    let same = |metric: f64, status: f64, what: &str| {
        assert!(
            (metric - status).abs() < 1e-6,
            "{what}: {metric} in /metrics, {status} in the status"
        );
    };
    same(rto_over, failover.rto_seconds, "failover RTO");
    same(rpo_over, failover_rpo, "failover RPO");
    same(rto_back, failback.rto_seconds, "failback RTO");
    same(rpo_back, 0.0, "failback RPO");
    for line in [
        format!("idns_service_epoch{{service=\"{name}\"}} 3"),
        format!("idns_service_active_site{{service=\"{name}\",site=\"primary\"}} 1"),
        format!("idns_failovers_total{{service=\"{name}\"}} 1"),
        format!("idns_failbacks_total{{service=\"{name}\"}} 1"),
        format!("idns_site_up{{service=\"{name}\",site=\"primary\"}} 1"),
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing from:\n{m}");
    }
    for kind in ["failover", "failback"] {
        let (code, body) = d
            .get(&format!(
                "/v1/services/{name}/report?kind={kind}&format=json"
            ))
            .await;
        assert_eq!(code, 200, "{body}");
        let report: ReportSummary = serde_json::from_str(&body).unwrap();
        let expected = if kind == "failover" {
            &failover
        } else {
            &failback
        };
        assert_eq!(&report, expected);
    }
    say!(
        t0,
        "metrics: failover RTO {:.0} ms RPO {:.0} ms; failback RTO {:.0} ms RPO {:.0} ms (the same in the status and /report)",
        rto_over * 1000.0,
        rpo_over * 1000.0,
        rto_back * 1000.0,
        rpo_back * 1000.0
    );

    // ---- No secret in anything the run showed or wrote ---------------------------------------
    let mut shown = vec![(
        "the status".to_owned(),
        d.get(&format!("/v1/services/{name}")).await.1,
    )];
    shown.push(("the events".into(), format!("{:?}", d.all_events().await)));
    shown.push(("the metrics".into(), d.metrics().await));
    for kind in ["failover", "failback"] {
        for format in ["json", "md", "html"] {
            let path = format!("/v1/services/{name}/report?kind={kind}&format={format}");
            shown.push((path.clone(), d.get(&path).await.1));
        }
    }
    for args in [
        &["status", name.as_str()][..],
        &["status", name.as_str(), "--json"],
    ] {
        let out = d.idnsctl(args).await;
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        shown.push((format!("idnsctl {args:?}"), all));
    }

    // ---- A graceful stop keeps the journal ---------------------------------------------------
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", d.logs());
    // Every file the run wrote (logs, journals, reports, saved rows) but the configurations.
    let mut dirs = vec![stage.dir.path().to_owned(), stage.pg.dir().join("saved")];
    let state = stage.pg.dir().join("idns-state.json");
    shown.push((
        state.display().to_string(),
        std::fs::read_to_string(&state).unwrap(),
    ));
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_none_or(|x| x != "toml") {
                let bytes = std::fs::read(&path).unwrap_or_default();
                shown.push((path.display().to_string(), text(&bytes)));
            }
        }
    }
    assert!(
        shown.len() > 15,
        "{:?}",
        shown.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for secret in [TOKEN, PG_PASSWORD, Bind::SECRET] {
        for (what, body) in &shown {
            assert!(!body.contains(secret), "{what} shows a secret: {body}");
        }
    }
    say!(
        t0,
        "measured: failover RTO {:.0} ms, RPO {:.0} ms; name answered the recovery site {:.0} ms after the kill; failback RTO {:.0} ms, RPO {:.0} ms",
        failover.rto_seconds * 1000.0,
        failover_rpo * 1000.0,
        to_dns.as_secs_f64() * 1000.0,
        failback.rto_seconds * 1000.0,
        failback_rpo * 1000.0
    );
}

/// A drill on the same servers: the recovery site's database is rehearsed on an isolated copy
/// (a base backup started on the drill port), the drill name is published through BIND and
/// withdrawn afterwards, and the report (JSON, Markdown, HTML) is written with its RTO and
/// RPO; production (the name, its epoch, both databases' roles) is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_on_bind_and_postgres_rehearses_on_a_copy_and_cleans_up() {
    let Some(stage) = Stage::start("drill.test").await else {
        return;
    };
    let t0 = Instant::now();
    let name = stage.name.clone();
    let drill_name = format!("drill.{name}");
    let mut d = stage.steady("main", "").await;
    insert(&stage.pg.a, 1..=10, "taken at the primary").await;
    let want: Vec<i32> = (1..=10).collect();
    wait_orders(&stage.pg.b, &want).await;

    let shown = d.idnsctl_ok(&["drill", &name, "--wait"]).await;
    for line in shown.lines() {
        say!(t0, "idnsctl | {line}");
    }
    assert!(shown.contains("drill on recovery"), "{shown}");
    assert!(shown.contains("completed: RTO"), "{shown}");
    let (code, body) = d
        .get(&format!("/v1/services/{name}/report?kind=drill"))
        .await;
    assert_eq!(code, 200, "{body}");
    let drill: ReportSummary = serde_json::from_str(&body).unwrap();
    show_switch(t0, "drill finished", &drill);
    assert_eq!(drill.outcome, "completed", "{drill:#?}");
    let promote = drill.steps.iter().find(|s| s.name == "promote").unwrap();
    assert!(
        promote
            .detail
            .contains(&format!("port {}", stage.pg.b.drill_port)),
        "the copy runs on the drill port: {drill:#?}"
    );
    // Every step did its work, the clean-up included.
    assert!(drill.steps.iter().all(|s| s.status == "done"), "{drill:#?}");
    assert!(drill.rto_seconds > 0.0);
    assert!(drill.rpo_seconds.is_some(), "{drill:#?}");

    // Production untouched; the drill name withdrawn; no copy left running.
    let s = d.status().await;
    assert_eq!((s.active.as_str(), s.epoch, s.switches), ("primary", 1, 0));
    assert_eq!(stage.dig_a(), ["127.0.0.1"]);
    assert_eq!(stage.dig_owner(), ["\"epoch=1 site=primary\""]);
    let left = stage.bind.short(&drill_name, "A");
    assert!(left.is_empty(), "the drill left {left:?} at {drill_name}");
    assert!(
        in_recovery(&stage.pg.b).await,
        "the standby is still a standby"
    );
    assert!(!in_recovery(&stage.pg.a).await);
    assert!(
        !std::path::Path::new(&format!("{}.idns-drill", stage.pg.b.data.display())).exists(),
        "the drill copy was removed"
    );
    insert(&stage.pg.a, 11..=11, "after the drill").await;
    let mut more = want.clone();
    more.push(11);
    wait_orders(&stage.pg.b, &more).await;

    // The report, as files beside the journal and in the metrics.
    let dir = stage.path("main/journal/reports");
    let base = format!("{name}-drill-{}", drill.runbook);
    let md = std::fs::read_to_string(dir.join(format!("{base}.md"))).unwrap();
    let html = std::fs::read_to_string(dir.join(format!("{base}.html"))).unwrap();
    let json: ReportSummary =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{base}.json"))).unwrap())
            .unwrap();
    assert_eq!(json, drill);
    assert!(md.contains("RTO") && md.contains("RPO"), "{md}");
    assert!(html.contains("<svg"), "the HTML page draws the timeline");
    let m = d.metrics().await;
    let rto = metric(
        &m,
        &format!("idns_last_rto_seconds{{service=\"{name}\",kind=\"drill\"}} "),
    )
    .unwrap_or_else(|| panic!("no drill RTO in:\n{m}"));
    assert!(
        (rto - drill.rto_seconds).abs() < 1e-6,
        "drill RTO: {rto} in /metrics, {} in the report",
        drill.rto_seconds
    );
    assert!(
        m.lines()
            .any(|l| l == format!("idns_drills_total{{service=\"{name}\"}} 1")),
        "{m}"
    );
    assert_eq!(d.terminate().code(), Some(0), "log:\n{}", d.logs());
}
