//! End to end with `idns-core`'s controller: probes built from a service configuration, run by
//! the scheduler, reported straight into the controller; when the primary's web server dies
//! the election fails over and the DNS points at the recovery site.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use idns_core::runtime::{Controller, FileStore};
use idns_core::test_util::MemoryDns;
use idns_core::{Health, RecordSet, RunbookKind, ServiceConfig, ServiceView};
use idns_probe::{Error, ReportSink, Scheduler, SchedulerOptions, probes_for_service};
use tokio::net::TcpListener;

/// How long a test waits for the controller before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// One listener per site on the same port: 127.0.0.2 (primary) and 127.0.0.3 (recovery).
async fn two_sites() -> (support::Server, support::Server) {
    for _ in 0..20 {
        let a = TcpListener::bind(("127.0.0.2", 0)).await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.3", port)).await {
            return (support::serve_on(a, None), support::serve_on(b, None));
        }
    }
    panic!("no port free on both addresses");
}

/// A two-site service whose sites are probed with `probe` (a TOML array of probes).
fn service(probe: &str) -> ServiceConfig {
    ServiceConfig::from_toml(&format!(
        r#"
        name = "app.example.com"
        zone = "example.com"
        [policy]
        min_dwell = "0s"
        [[sites]]
        id = "primary"
        priority = 1
        addresses = ["127.0.0.2"]
        probes = {probe}
        [[sites]]
        id = "recovery"
        priority = 2
        addresses = ["127.0.0.3"]
        probes = {probe}
        "#
    ))
    .unwrap()
}

/// Waits until the controller's view satisfies `condition`.
async fn wait_for(
    controller: &Controller,
    what: &str,
    condition: impl FnMut(&ServiceView) -> bool,
) -> ServiceView {
    tokio::time::timeout(PATIENCE, controller.wait_for(condition))
        .await
        .unwrap_or_else(|_| panic!("{what} within {PATIENCE:?}"))
        .unwrap()
}

#[tokio::test]
async fn a_dead_primary_fails_over_to_the_recovery_site() {
    let (primary, recovery) = two_sites().await;
    let port = primary.addr.port();
    let cfg = service(&format!(
        r#"[{{ id = "web", interval = "100ms", timeout = "500ms", allow_timeout_over_interval = true, rise = 1, fall = 2,
              check = {{ kind = "http", url = "http://app.example.com:{port}/ok", expect = "OK" }} }}]"#
    ));
    let dns = MemoryDns::new(&[cfg.zone().clone()]);
    let dir = tempfile::tempdir().unwrap();
    let probes = probes_for_service(&cfg).unwrap();
    let controller = Controller::builder(cfg)
        .dns(dns.clone())
        .store(FileStore::new(dir.path().join("app.json")))
        .start()
        .await
        .unwrap();

    // The paved path: the scheduler reports straight into the controller.
    let options = SchedulerOptions::new("local".parse().unwrap()).seed(1);
    let (scheduler, scheduler_task) = Scheduler::spawn(options, controller.clone(), probes);

    let name = "app.example.com".parse().unwrap();
    wait_for(&controller, "both sites up, the primary published", |v| {
        v.active.as_str() == "primary"
            && v.runbook.is_none()
            && v.sites.iter().all(|s| s.health == Health::Up)
    })
    .await;
    assert_eq!(
        dns.records(&name),
        RecordSet::Addresses(vec!["127.0.0.2".parse().unwrap()])
    );
    // Both sites were probed at their own address with the service's name.
    for srv in [&primary, &recovery] {
        let seen = srv.seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        assert!(
            seen.iter()
                .all(|s| s.host.as_deref() == Some(format!("app.example.com:{port}").as_str()))
        );
    }

    drop(primary);
    let failover = tokio::time::timeout(
        PATIENCE,
        controller.wait_for_runbook(|r| r.kind == RunbookKind::Failover),
    )
    .await
    .expect("failed over within 10 s")
    .unwrap();
    assert_eq!(failover.to, Some("recovery".parse().unwrap()));
    assert_eq!(controller.view().active.as_str(), "recovery");
    assert_eq!(
        dns.records(&name),
        RecordSet::Addresses(vec!["127.0.0.3".parse().unwrap()])
    );

    scheduler.shutdown();
    scheduler_task.await.unwrap().unwrap();
    controller.shutdown();
    controller.stopped().await.unwrap();
}

#[tokio::test]
async fn the_probes_of_a_controller_stop_when_it_stops() {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = service(&format!(
        r#"[{{ id = "port", interval = "100ms", timeout = "500ms", allow_timeout_over_interval = true, rise = 1,
              check = {{ kind = "tcp", port = {port}, alias = {{ address = "127.0.0.1" }} }} }}]"#
    ));
    let dns = MemoryDns::new(&[cfg.zone().clone()]);
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::builder(cfg)
        .dns(dns)
        .store(FileStore::new(dir.path().join("app.json")))
        .start()
        .await
        .unwrap();
    let (_scheduler, task) =
        idns_probe::spawn_probes(&controller, "local".parse().unwrap()).unwrap();
    wait_for(&controller, "both sites up", |v| {
        v.runbook.is_none() && v.sites.iter().all(|s| s.health == Health::Up)
    })
    .await;

    controller.shutdown();
    controller.stopped().await.unwrap();
    // The controller is a sink that says it is closed once the controller has stopped, and
    // the scheduler stops at its next report.
    let report = idns_core::ProbeReport {
        site: "primary".parse().unwrap(),
        probe: "port".parse().unwrap(),
        observer: "local".parse().unwrap(),
        outcome: idns_core::ProbeOutcome::up(Duration::ZERO),
        at: std::time::SystemTime::UNIX_EPOCH,
    };
    let closed = ReportSink::report(&controller, report).await.unwrap_err();
    assert!(closed.to_string().contains("stopped"), "{closed}");
    let ended = tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
    assert!(matches!(ended, Err(Error::SinkClosed(_))), "{ended:?}");
    drop(listener);
}
