//! The image backend under a controller: its continuous replication is the backend's
//! background work, which the controller starts and stops; the controller's one poller
//! publishes the status it reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::Duration;

use idns_core::runtime::{Controller, FileStore};
use idns_core::test_util::MemoryDns;
use idns_core::{ResourceId, Role, ServiceConfig, SiteId};
use idns_replication::image::{ImageConfig, ImageReplication, Operation};

mod common;

/// How long the test waits for the controller before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_runs_continuous_image_replication_and_publishes_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::image_spec(dir.path());
    fs::create_dir_all(dir.path().join("a/live")).unwrap();
    fs::create_dir_all(dir.path().join("b")).unwrap();
    let image = ImageReplication::new(ImageConfig::try_from(spec).unwrap());
    let (vms, b): (ResourceId, SiteId) = ("vms".parse().unwrap(), "b".parse().unwrap());
    let live = image.paths(&vms, &"a".parse().unwrap()).unwrap().live;
    fs::write(live.join("disk.img"), vec![7u8; 256 << 10]).unwrap();

    let cfg = ServiceConfig::from_toml(
        r#"
        name = "app.example.com"
        zone = "example.com"
        resources = ["vms"]
        [[sites]]
        id = "a"
        priority = 1
        addresses = ["192.0.2.1"]
        probes = [{ id = "web" }]
        [[sites]]
        id = "b"
        priority = 2
        addresses = ["198.51.100.1"]
        probes = [{ id = "web" }]
        "#,
    )
    .unwrap();
    let mut progress = image.subscribe();
    let controller = Controller::builder(cfg.clone())
        .dns(MemoryDns::new(&[cfg.zone().clone()]))
        .replication(image.clone())
        .replication_poll(Duration::from_millis(100))
        .store(FileStore::new(dir.path().join("journal.json")))
        .start()
        .await
        .unwrap();

    // Nobody syncs by hand: the controller runs the passes.
    let pass = async {
        loop {
            let p = progress.recv().await.unwrap();
            if p.operation == Operation::Pass && p.bytes_total > 0 && p.bytes_done == p.bytes_total
            {
                return p;
            }
        }
    };
    let p = tokio::time::timeout(PATIENCE, pass).await.expect("a pass");
    assert_eq!(p.bytes_total, 256 << 10);

    // The replica's lag reaches the election and is published for everyone else.
    let view = tokio::time::timeout(
        PATIENCE,
        controller.wait_for(|v| v.sites.iter().any(|s| s.id == b && s.lag.is_some())),
    )
    .await
    .expect("the lag in the view")
    .unwrap();
    assert!(view.sites.iter().any(|s| s.id == b && s.lag.is_some()));
    let published = controller.replication_status();
    let read = &published[&vms];
    let replica = read.status.sites.iter().find(|s| s.site == b).unwrap();
    assert_eq!(replica.role, Role::Replica);
    assert!(replica.lag.is_some());

    controller.shutdown();
    controller.stopped().await.unwrap();
}
