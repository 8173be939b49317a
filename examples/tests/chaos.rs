//! Real servers: named (bind9), postgres (postgresql-15), dig, nsupdate, pg_basebackup, pg_rewind
//!
//! Chaos against the real `idnsd` with BIND 9 (RFC 2136 + TSIG) and a PostgreSQL
//! primary/standby pair, as in `paper_scenario.rs`:
//!
//! - BIND dies in the middle of a failover and comes back a few seconds later: the runbook
//!   retries the DNS step and completes; the epoch went up exactly once.
//! - The old primary comes back with a lower epoch: as a writable PostgreSQL primary (split
//!   brain) it is never routed to and is rewound before the failback switches back to it; a
//!   second controller started from an old copy of the journal tries to point the name at it
//!   and BIND's compare-and-swap on the ownership record refuses the stale write.
//!
//! A controller killed mid-runbook and a bad configuration file are covered by `idnsd.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Idnsd, RECOVERY, Stage, api_addr, in_recovery, insert, order_ids, resolver, wait_orders,
    wait_resolves,
};
use idns_core::{Event, RunbookKind, StepName};
use idns_examples::daemon::wire::EventRecord;

/// The stage for `zone` with a daemon in its steady state and orders 1-5 written at the
/// primary and streamed to the standby; `None` when a server is not installed.
async fn steady_with_orders(zone: &str) -> Option<(Stage, Idnsd)> {
    let stage = Stage::start(zone).await?;
    let d = stage.steady("main", "").await;
    insert(&stage.pg.a, 1..=5, "before the disaster").await;
    wait_orders(&stage.pg.b, &[1, 2, 3, 4, 5]).await;
    Some((stage, d))
}

/// Kills the primary site: its web app and its database (immediate stop, as in a crash).
async fn kill_primary(stage: &mut Stage) {
    stage.stop_primary_web().await;
    stage.pg.a.stop("immediate");
}

fn decisions(events: &[EventRecord]) -> Vec<(RunbookKind, u64)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Decision { kind, epoch, .. }) => Some((*kind, epoch.get())),
            _ => None,
        })
        .collect()
}

/// What `e` says of a step: `started` or `retry`, and which step.
fn step_event(e: &EventRecord) -> Option<(&'static str, StepName)> {
    match &e.event {
        Some(Event::StepStarted { name, .. }) => Some(("started", *name)),
        Some(Event::StepRetry { name, .. }) => Some(("retry", *name)),
        _ => None,
    }
}

/// Every file under `dir` whose text contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle)) {
            found.push(p);
        }
    }
    found
}

/// BIND is killed right after the failover's promote step starts (seen on the event stream)
/// and started again a few seconds later: the switch_dns step fails while it is away, is
/// retried, and completes; the name answers the recovery site; the epoch went from 1 to 2 and
/// no further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_dies_mid_failover_and_the_dns_step_is_retried() {
    let Some((mut stage, d)) = steady_with_orders("chaos-dns.test").await else {
        return;
    };
    let t0 = Instant::now();
    let name = stage.name.clone();

    let mut cursor = d.status().await.last_event;
    kill_primary(&mut stage).await;
    say!(t0, "*** the primary is killed ***");
    let started = d
        .wait_event(&mut cursor, "the promote step to start", |e| {
            step_event(e) == Some(("started", StepName::Promote))
        })
        .await;
    stage.bind.stop();
    let stopped_at = Instant::now();
    say!(t0, "{}; *** BIND killed ***", started.text);
    let s = d.status().await;
    assert_eq!((s.phase.as_str(), s.epoch), ("failover", 2), "{s:#?}");

    // While BIND is away the DNS step fails and is scheduled again.
    let retry = d
        .wait_event(&mut cursor, "a retry of switch_dns", |e| {
            step_event(e) == Some(("retry", StepName::SwitchDns))
        })
        .await;
    say!(t0, "{}", retry.text);
    let s = d.status().await;
    let waiting = s.runbook.expect("the failover waits for BIND");
    let dns_step = waiting
        .steps
        .iter()
        .find(|x| x.name == "switch_dns")
        .unwrap();
    assert_ne!(dns_step.status, "done", "{waiting:#?}");
    assert_eq!(s.epoch, 2);

    // A few seconds later BIND is back, with what it had journaled.
    let away = Duration::from_secs(3);
    tokio::time::sleep(away.saturating_sub(stopped_at.elapsed())).await;
    stage.bind.restart();
    say!(t0, "*** BIND restarted ***");

    let s = d
        .wait_status("the failover to finish", |s| {
            s.active == "recovery" && s.runbook.is_none()
        })
        .await;
    let report = s.last_switch.clone().unwrap();
    assert_eq!(
        (report.kind.as_str(), report.outcome.as_str(), report.epoch),
        ("failover", "completed", 2),
        "{report:#?}"
    );
    let dns_step = report
        .steps
        .iter()
        .find(|x| x.name == "switch_dns")
        .unwrap();
    assert_eq!(dns_step.status, "done", "{report:#?}");
    assert!(
        dns_step.attempts >= 2,
        "switch_dns succeeded only after retrying: {report:#?}"
    );
    say!(
        t0,
        "failover completed: switch_dns done after {} attempts; RTO {:.0} ms",
        dns_step.attempts,
        report.rto_seconds * 1000.0
    );

    // Exactly one switch: epoch 2, one failover decision, BIND owned at epoch 2.
    assert_eq!((s.epoch, s.switches), (2, 1));
    let all = d.all_events().await;
    assert_eq!(
        decisions(&all),
        [(RunbookKind::Bootstrap, 1), (RunbookKind::Failover, 2)],
        "the first publication, then one failover"
    );
    assert_eq!(stage.dig_a(), ["127.0.0.2"]);
    assert_eq!(stage.dig_owner(), ["\"epoch=2 site=recovery\""]);
    wait_resolves(&resolver(stage.bind.addr()), &name, RECOVERY).await;
    assert!(!in_recovery(&stage.pg.b).await);
    assert_eq!(order_ids(&stage.pg.b).await, [1, 2, 3, 4, 5]);
    let m = d.metrics().await;
    assert!(
        m.lines()
            .any(|l| l == format!("idns_service_epoch{{service=\"{name}\"}} 2")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == format!("idns_failovers_total{{service=\"{name}\"}} 1")),
        "{m}"
    );
}

/// After a failover the old primary's PostgreSQL is started again as a writable primary and
/// takes a write (split brain): the name keeps answering the recovery site, and the failback
/// rewinds the old primary (saving its divergent write aside) before it switches back. Later,
/// with the service failed over again, a second idnsd started from a copy of the journal of
/// epoch 2 tries to fail back to the old primary at epoch 3: BIND refuses the update (its
/// ownership record holds epoch 4), the stale controller holds, and the name never moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_with_a_lower_epoch_is_never_routed_to() {
    let Some((mut stage, d)) = steady_with_orders("chaos-fence.test").await else {
        return;
    };
    let t0 = Instant::now();
    let name = stage.name.clone();

    // ---- Failover to the recovery site (epoch 2) --------------------------------------------
    kill_primary(&mut stage).await;
    say!(t0, "*** the primary is killed ***");
    d.wait_status("the failover to finish", |s| {
        s.active == "recovery" && s.runbook.is_none() && s.epoch == 2
    })
    .await;
    assert_eq!(stage.dig_owner(), ["\"epoch=2 site=recovery\""]);
    insert(&stage.pg.b, 6..=10, "at the recovery site").await;
    // The journal of epoch 2, kept for a stale controller later.
    let journal_file = format!("{name}.json");
    let old_journal = std::fs::read(stage.path("main/journal").join(&journal_file)).unwrap();

    // ---- Split brain: the old primary's database comes back writable ------------------------
    // The fence left a standby.signal (if it reached the data directory): someone lifts it.
    let _ = std::fs::remove_file(stage.pg.a.data.join("standby.signal"));
    stage.pg.a.start();
    assert!(
        !in_recovery(&stage.pg.a).await,
        "the old primary came back as a primary"
    );
    insert(
        &stage.pg.a,
        1001..=1001,
        "split-brain write at the old primary",
    )
    .await;
    stage.start_primary_web().await;
    say!(
        t0,
        "*** the old primary is back: its web app, and its PostgreSQL as a second writable primary (it took order 1001) ***"
    );
    let s = d
        .wait_status(
            "the primary site up and its database seen as a second primary",
            |s| {
                s.sites
                    .iter()
                    .any(|x| x.id == "primary" && x.health == "up")
                    && s.replication.iter().filter(|r| r.role == "primary").count() == 2
            },
        )
        .await;
    // Several probe rounds later nothing has moved: the recovery site keeps the name.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(stage.dig_a(), ["127.0.0.2"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = d.status().await;
    assert_eq!(
        (now.active.as_str(), now.epoch, now.switches),
        ("recovery", 2, 1)
    );
    assert_eq!(stage.dig_owner(), ["\"epoch=2 site=recovery\""]);
    say!(
        t0,
        "two writable primaries, yet BIND answers 127.0.0.2 with TXT {:?}",
        stage.dig_owner()
    );

    // ---- Failback: the revived primary is rewound before anything switches -----------------
    let cursor = s.last_event;
    let (code, body) = d.command("failback", "{}").await;
    assert_eq!(code, 202, "{body}");
    let s = d
        .wait_status("the failback to finish", |s| {
            s.active == "primary" && s.runbook.is_none()
        })
        .await;
    assert_eq!((s.epoch, s.switches), (3, 2));
    let failback = s.last_switch.clone().unwrap();
    assert_eq!(failback.outcome, "completed", "{failback:#?}");
    let order: Vec<(StepName, String)> = d
        .events(cursor, 0)
        .await
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepFinished { record, .. }) => {
                Some((record.name, format!("{:?}", record.status)))
            }
            _ => None,
        })
        .collect();
    let at = |step: StepName| {
        order
            .iter()
            .position(|(n, _)| *n == step)
            .unwrap_or_else(|| panic!("no {step} in {order:?}"))
    };
    assert_eq!(
        order[0],
        (StepName::Reprotect, "Done".to_owned()),
        "{order:?}"
    );
    assert!(at(StepName::Reprotect) < at(StepName::Promote), "{order:?}");
    assert!(at(StepName::Promote) < at(StepName::SwitchDns), "{order:?}");
    assert!(
        d.logs().contains("split brain"),
        "the backend saw the second primary and stopped it before the rewind"
    );
    // The split-brain write was not kept by the rewind, but saved aside for a person to merge.
    let ids = order_ids(&stage.pg.a).await;
    assert_eq!(ids, (1..=10).collect::<Vec<i32>>());
    let saved = files_containing(
        &stage.pg.dir().join("saved"),
        "split-brain write at the old primary",
    );
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(stage.dig_owner(), ["\"epoch=3 site=primary\""]);
    say!(
        t0,
        "failback at epoch 3 after the rewind: orders 1-10 at the primary, order 1001 saved aside in {}",
        saved[0].display()
    );

    // ---- Failover again (epoch 4), then a stale controller ----------------------------------
    // Once the standby's lag is known again, so that the RPO guard lets the switch through.
    d.wait_status("the recovery site eligible again", |s| {
        s.sites.iter().any(|x| x.id == "recovery" && x.eligible)
    })
    .await;
    let (code, body) = d.command("failover", r#"{"to": "recovery"}"#).await;
    assert_eq!(code, 202, "{body}");
    d.wait_status("the second failover to finish", |s| {
        s.active == "recovery" && s.runbook.is_none() && s.epoch == 4
    })
    .await;
    assert_eq!(stage.dig_a(), ["127.0.0.2"]);
    assert_eq!(stage.dig_owner(), ["\"epoch=4 site=recovery\""]);

    // A second controller from the journal of epoch 2, whose failback switches the name first.
    let stale_dir = stage.path("stale/journal");
    std::fs::create_dir_all(&stale_dir).unwrap();
    std::fs::write(stale_dir.join(&journal_file), &old_journal).unwrap();
    let runbook = r#"
[services.runbook]
failback = [{ step = "switch_dns" }, { step = "verify_dns" }]
"#;
    let api = api_addr();
    let cfg = stage.write_config("stale", api, runbook);
    let mut stale = Idnsd::start(&cfg, api, &name);
    stale.ready().await;
    let s = stale
        .wait_status("the stale controller to see the old primary up", |s| {
            s.sites
                .iter()
                .any(|x| x.id == "primary" && x.health == "up")
        })
        .await;
    assert_eq!(
        (s.active.as_str(), s.epoch),
        ("recovery", 2),
        "it lives in epoch 2"
    );
    let serial = stage.bind.serial();
    let (code, body) = stale.command("failback", "{}").await;
    assert_eq!(
        code, 202,
        "its election accepts: it knows no better: {body}"
    );
    let s = stale
        .wait_status("the stale failback to be refused", |s| {
            s.runbook.as_ref().is_some_and(|r| r.held.is_some())
        })
        .await;
    let held = s.runbook.unwrap().held.unwrap();
    say!(
        t0,
        "a controller from the journal of epoch 2 tried to fail back at epoch 3: {held}"
    );
    assert!(held.contains("stale epoch"), "{held}");
    assert!(held.contains('4'), "BIND reported epoch 4: {held}");
    assert_eq!(stage.dig_a(), ["127.0.0.2"]);
    assert_eq!(stage.dig_owner(), ["\"epoch=4 site=recovery\""]);
    assert_eq!(stage.bind.serial(), serial, "BIND's zone did not change");
    wait_resolves(&resolver(stage.bind.addr()), &name, RECOVERY).await;
    let s = d.status().await;
    assert_eq!((s.active.as_str(), s.epoch), ("recovery", 4));
    assert!(!in_recovery(&stage.pg.b).await);
    assert_eq!(stale.terminate().code(), Some(0), "{}", stale.logs());
}
