//! End to end with `idns-core`'s driver: probes built from a service configuration, run by the
//! scheduler, reported into the driver's handle; when the primary's web server dies the
//! election fails over and the DNS points at the recovery site.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use idns_core::runtime::{Backends, Driver, DriverOptions, FileStore};
use idns_core::test_util::MemoryDns;
use idns_core::{RecordSet, ServiceConfig};
use idns_probe::{Scheduler, SchedulerOptions, probes_for_service, sink_fn};
use tokio::net::TcpListener;

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

#[tokio::test]
async fn a_dead_primary_fails_over_to_the_recovery_site() {
    let (primary, recovery) = two_sites().await;
    let port = primary.addr.port();
    let probe = format!(
        r#"[{{ id = "web", interval = "100ms", timeout = "500ms", rise = 1, fall = 2,
              check = {{ kind = "http", url = "http://app.example.com:{port}/ok", expect = "OK" }} }}]"#
    );
    let cfg = ServiceConfig::from_toml(&format!(
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
    .unwrap();
    let dns = MemoryDns::new(&[cfg.zone().clone()]);
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends {
        dns: Arc::new(dns.clone()),
        replication: None,
        store: Arc::new(FileStore::new(dir.path().join("app.json"))),
    };
    let probes = probes_for_service(&cfg).unwrap();
    let (driver, driver_task) = Driver::start(cfg, backends, DriverOptions::default())
        .await
        .unwrap();

    // The paved path: the scheduler reports straight into the driver's handle.
    let h = driver.clone();
    let sink = sink_fn(move |report| {
        let h = h.clone();
        async move { h.report(report).await }
    });
    let options = SchedulerOptions::new("local".parse().unwrap()).seed(1);
    let (scheduler, scheduler_task) = Scheduler::spawn(options, sink, probes);

    let name = "app.example.com".parse().unwrap();
    let mut view = driver.watch();
    tokio::time::timeout(
        Duration::from_secs(10),
        view.wait_for(|v| v.active.as_str() == "primary" && v.runbook.is_none()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        dns.records(&name),
        RecordSet::Addresses(vec!["127.0.0.2".parse().unwrap()])
    );
    // Both sites were probed at their own address with the service's name.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for srv in [&primary, &recovery] {
        let seen = srv.seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        assert!(
            seen.iter()
                .all(|s| s.host.as_deref() == Some(format!("app.example.com:{port}").as_str()))
        );
    }

    drop(primary);
    tokio::time::timeout(
        Duration::from_secs(10),
        view.wait_for(|v| v.active.as_str() == "recovery" && v.runbook.is_none()),
    )
    .await
    .expect("failed over within 10 s")
    .unwrap();
    assert_eq!(
        dns.records(&name),
        RecordSet::Addresses(vec!["127.0.0.3".parse().unwrap()])
    );

    scheduler.shutdown();
    scheduler_task.await.unwrap().unwrap();
    driver.shutdown();
    driver_task.await.unwrap().unwrap();
}
