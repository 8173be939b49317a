//! Real servers: BIND 9 (named), PowerDNS (pdns_server, sqlite3), PostgreSQL 15 (primary + standby)
//!
//! A controller assembled from TOML through the backend crates' own configuration enums —
//! `idns_dns::DnsConfig` and `idns_replication::ReplicationConfig` — once with each DNS
//! backend and each replication backend, paired: the embedded server with image replication,
//! RFC 2136 to a real BIND with PostgreSQL streaming replication, and the PowerDNS API with the
//! command backend's hooks. Each controller publishes the primary, is told both sites are up,
//! switches over to the recovery site on an operator's command, and the name then resolves to
//! the recovery site at the real server while the replication backend reports it primary.
//! Nothing here names a backend type: only TOML goes in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use idns_core::runtime::{Controller, FileStore};
use idns_core::{
    Command, Outcome, ProbeOutcome, ProbeReport, ResourceId, Role, RunbookKind, ServiceConfig,
    SiteId,
};
use idns_dns::DnsConfig;
use idns_dns::testing::{Bind, PowerDns};
use idns_examples::loopback::{resolve, resolver};
use idns_replication::ReplicationConfig;
use idns_replication::testing::{HookArray, PgPair};

const NAME: &str = "app.example.com";
const PRIMARY: &str = "192.0.2.1";
const RECOVERY: &str = "198.51.100.1";
/// The longest any one wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The service: two sites, one probe each, one replicated resource.
fn service(resource: &str) -> ServiceConfig {
    ServiceConfig::from_toml(&format!(
        r#"
        name = "{NAME}"
        zone = "example.com"
        ttl = "5s"
        resources = ["{resource}"]
        [[sites]]
        id = "primary"
        priority = 1
        addresses = ["{PRIMARY}"]
        probes = [{{ id = "web", rise = 1, fall = 1 }}]
        [[sites]]
        id = "recovery"
        priority = 2
        addresses = ["{RECOVERY}"]
        probes = [{{ id = "web", rise = 1, fall = 1 }}]
        "#
    ))
    .unwrap()
}

/// Builds a controller from the two TOML tables, switches the service over to the recovery
/// site, and checks the answer at `server` and the role the backend reports.
async fn switch_over(dns: &str, replication: &str, resource: &str, server: Option<SocketAddr>) {
    let dir = tempfile::tempdir().unwrap();
    let dns: DnsConfig = toml::from_str(dns).unwrap();
    let replication: ReplicationConfig = toml::from_str(replication).unwrap();
    let built = dns.build().await.unwrap();
    let server = server
        .or_else(|| built.udp_addrs().first().copied())
        .unwrap();
    let cfg = service(resource);
    let controller = Controller::builder(cfg.clone())
        .dns(built.backend())
        .replication(replication.build().backend())
        .replication_poll(Duration::from_millis(200))
        .store(FileStore::new(dir.path().join("journal.json")))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{dns} with {replication}: {e}"));
    let what = format!("{dns} with {replication}");

    // The primary is published at the real server.
    let client = resolver(server).unwrap();
    let primary: IpAddr = PRIMARY.parse().unwrap();
    let recovery_ip: IpAddr = RECOVERY.parse().unwrap();
    // The first decision sets epoch 1; its bootstrap runbook publishes the primary.
    let published = controller.wait_for(|v| v.epoch.get() >= 1 && v.runbook.is_none());
    tokio::time::timeout(PATIENCE, published)
        .await
        .unwrap_or_else(|_| {
            let view = controller.view();
            panic!("{what}: the primary was never published: {view:?}")
        })
        .unwrap();
    assert_eq!(resolve(&client, NAME).await, Some(primary), "{what}");

    // Both sites are up, and the replica's lag is known from the controller's poller.
    for site in ["primary", "recovery"] {
        controller
            .report(ProbeReport {
                site: site.parse().unwrap(),
                probe: "web".parse().unwrap(),
                observer: "local".parse().unwrap(),
                outcome: ProbeOutcome::up(Duration::from_millis(1)),
                at: SystemTime::now(),
            })
            .await
            .unwrap();
    }
    let recovery: SiteId = "recovery".parse().unwrap();
    let ready = controller.wait_for(|v| {
        v.sites
            .iter()
            .any(|s| s.id == recovery && s.eligible && s.lag.is_some())
    });
    tokio::time::timeout(PATIENCE, ready)
        .await
        .unwrap_or_else(|_| {
            let view = controller.view();
            panic!("{what}: the recovery site never became eligible: {view:?}")
        })
        .unwrap();

    // An operator switches over; the runbook runs on the real backends.
    controller
        .command(Command::Failover {
            to: Some(recovery.clone()),
            force: false,
        })
        .await
        .unwrap();
    let report = tokio::time::timeout(
        PATIENCE,
        controller.wait_for_runbook(|r| r.kind == RunbookKind::Failover),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the switchover did not finish"))
    .unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{what}: {report:?}");
    assert_eq!(report.to.as_ref(), Some(&recovery), "{what}");
    assert_eq!(resolve(&client, NAME).await, Some(recovery_ip), "{what}");

    // The controller's poller publishes the backend's view: the recovery copy is primary.
    let resource: ResourceId = resource.parse().unwrap();
    let promoted = controller.wait_for_replication(|polled| {
        polled.get(&resource).is_some_and(|read| {
            read.at > report.finished_at
                && read
                    .status
                    .sites
                    .iter()
                    .any(|s| s.site == recovery && s.role == Role::Primary)
        })
    });
    tokio::time::timeout(PATIENCE, promoted)
        .await
        .unwrap_or_else(|_| {
            let read = controller.replication_status();
            panic!("{what}: {recovery} is not reported primary: {read:?}")
        })
        .unwrap();

    controller.shutdown();
    controller.stopped().await.unwrap();
}

/// Image replication of `app-data` between two directories under `dir`, continuous every
/// 100 ms (the controller runs the passes).
fn image_toml(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("primary/live")).unwrap();
    std::fs::create_dir_all(dir.join("recovery")).unwrap();
    std::fs::write(dir.join("primary/live/disk.img"), vec![7u8; 64 << 10]).unwrap();
    format!(
        r#"
        backend = "image"
        [[resources]]
        id = "app-data"
        home = "primary"
        interval = "100ms"
        sites = [{{ site = "primary", root = "{d}/primary" }}, {{ site = "recovery", root = "{d}/recovery" }}]
        "#,
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_with_image_replication() {
    let dir = tempfile::tempdir().unwrap();
    let dns = r#"
        backend = "embedded"
        listen = ["127.0.0.1:0"]
        zones = [{ name = "example.com" }]
    "#;
    switch_over(dns, &image_toml(dir.path()), "app-data", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_to_bind_with_postgres_streaming_replication() {
    let Some(bind) = Bind::start() else { return };
    let Some(pair) = PgPair::start() else { return };
    let dns = format!(
        r#"
        backend = "rfc2136"
        server = "{}"
        zones = ["example.com"]
        timeout = "2s"
        tsig = {{ name = "{}", algorithm = "hmac-sha256", secret = "{}" }}
        "#,
        bind.addr(),
        Bind::KEY_NAME,
        Bind::SECRET
    );
    let spec = pair.spec("orders", ["primary", "recovery"], &[], "stop");
    let replication = idns_replication::ReplicationSpec::Postgres(spec);
    let replication = toml::to_string(&replication).unwrap();
    switch_over(&dns, &replication, "orders", Some(bind.addr())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_powerdns_api_with_command_hooks() {
    let Some(pdns) = PowerDns::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let array = HookArray::new(dir.path(), &["primary", "recovery"]);
    let dns = format!(
        r#"
        backend = "powerdns"
        api_url = "{}"
        api_key = "{}"
        zones = ["example.com"]
        propagation = {{ servers = ["{}"] }}
        "#,
        pdns.api(),
        PowerDns::API_KEY,
        pdns.dns()
    );
    let replication = format!(
        r#"
        backend = "command"
        [[resources]]
        id = "array"
        sites = ["primary", "recovery"]
        command = ["{}"]
        env = {{ HOOK_STATE = "{}" }}
        "#,
        array.hook.display(),
        array.state.display()
    );
    switch_over(&dns, &replication, "array", Some(pdns.dns())).await;
}
