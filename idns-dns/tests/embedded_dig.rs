//! Real servers: dig
//!
//! `dig`, an independent client, sees the embedded server's answers: AA set, answers changing
//! with each epoch, the SOA serial increasing, CNAME mode, out-of-zone queries refused, the
//! ownership TXT record, TCP, minimal ANY answers, and the dynamic TTL following health
//! events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use idns_core::test_util::servers::require;
use idns_core::{
    BackendError, DnsBackend, DnsChange, DnsName, Epoch, Event, Health, Outcome, RecordSet,
    RunbookKind, SwitchReport,
};
use idns_dns::embedded::{DynamicTtl, EmbeddedConfig, EmbeddedServer, EmbeddedSpec, TtlMode};

struct Dig {
    bin: PathBuf,
    server: SocketAddr,
}

impl Dig {
    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(&self.bin)
            .arg(format!("@{}", self.server.ip()))
            .arg("-p")
            .arg(self.server.port().to_string())
            .args(["+norec", "+time=2", "+tries=1"])
            .args(args)
            .output()
            .await
            .expect("dig runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn short(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .run(&[name, rtype, "+short"])
            .await
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// The TTL of the A records of `name`, as dig sees them.
    async fn ttl(&self, name: &str) -> u32 {
        let out = self.run(&["+noall", "+answer", name, "A"]).await;
        let ttls: Vec<u32> = out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect();
        assert!(!ttls.is_empty(), "no A record for {name}: {out}");
        assert!(ttls.iter().all(|t| *t == ttls[0]), "{out}");
        ttls[0]
    }

    /// Waits (up to 10 s) until dig sees `ttl` on `name`; panics with the last TTL seen.
    async fn wait_for_ttl(&self, name: &str, ttl: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.ttl(name).await;
            if seen == ttl {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} still answers with TTL {seen}, expected {ttl}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn serial(&self) -> u64 {
        let soa = self.short("example.com", "SOA").await;
        let fields: Vec<&str> = soa[0].split_whitespace().collect();
        fields[2].parse().expect("SOA serial")
    }
}

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn change(records: RecordSet, epoch: u64, site: &str) -> DnsChange {
    DnsChange {
        zone: zone(),
        name: "app.example.com".parse().unwrap(),
        records,
        ttl: Duration::from_secs(20),
        epoch: Epoch::new(epoch),
        site: Some(site.parse().unwrap()),
    }
}

fn addrs(list: &[&str]) -> RecordSet {
    RecordSet::Addresses(list.iter().map(|a| a.parse().unwrap()).collect())
}

async fn start() -> Option<(EmbeddedServer, Dig)> {
    start_with(None).await
}

async fn start_with(dynamic_ttl: Option<DynamicTtl>) -> Option<(EmbeddedServer, Dig)> {
    let bin = require("dig", &[], "bind9-dnsutils")?;
    let mut spec = EmbeddedSpec::new(vec!["127.0.0.1:0".parse().unwrap()], &[zone()]);
    spec.dynamic_ttl = dynamic_ttl;
    let server = EmbeddedServer::start(EmbeddedConfig::try_from(spec).unwrap())
        .await
        .unwrap();
    let dig = Dig {
        bin: Path::new(&bin).to_path_buf(),
        server: server.udp_addrs()[0],
    };
    Some((server, dig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_answers_change_with_aa_and_a_rising_serial() {
    let Some((server, dig)) = start().await else {
        return;
    };
    let backend = server.backend();
    let serial0 = dig.serial().await;

    backend
        .apply(&change(addrs(&["192.0.2.1", "2001:db8::1"]), 1, "primary"))
        .await
        .unwrap();
    let full = dig.run(&["app.example.com", "A"]).await;
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains("flags: qr aa;"), "AA set, RA not: {full}");
    assert_eq!(dig.short("app.example.com", "A").await, ["192.0.2.1"]);
    assert_eq!(dig.short("app.example.com", "AAAA").await, ["2001:db8::1"]);
    assert_eq!(
        dig.short("_idns.app.example.com", "TXT").await,
        ["\"epoch=1 site=primary\""]
    );
    let serial1 = dig.serial().await;
    assert!(serial1 > serial0, "{serial1} > {serial0}");

    // Failover: new records, new epoch, new serial.
    backend
        .apply(&change(addrs(&["198.51.100.1"]), 2, "recovery"))
        .await
        .unwrap();
    assert_eq!(dig.short("app.example.com", "A").await, ["198.51.100.1"]);
    assert!(dig.short("app.example.com", "AAAA").await.is_empty());
    assert_eq!(
        dig.short("_idns.app.example.com", "TXT").await,
        ["\"epoch=2 site=recovery\""]
    );
    let serial2 = dig.serial().await;
    assert!(serial2 > serial1, "{serial2} > {serial1}");

    // A stale epoch changes nothing that dig can see.
    assert!(
        backend
            .apply(&change(addrs(&["203.0.113.66"]), 1, "primary"))
            .await
            .is_err()
    );
    assert_eq!(dig.short("app.example.com", "A").await, ["198.51.100.1"]);
    assert_eq!(dig.serial().await, serial2);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_cname_mode() {
    let Some((server, dig)) = start().await else {
        return;
    };
    let backend = server.backend();
    backend
        .apply(&change(
            RecordSet::Alias("site-b.example.net".parse().unwrap()),
            1,
            "b",
        ))
        .await
        .unwrap();
    assert_eq!(
        dig.short("app.example.com", "CNAME").await,
        ["site-b.example.net."]
    );
    let full = dig.run(&["app.example.com", "A"]).await;
    assert!(full.contains("flags: qr aa;"), "{full}");
    assert!(full.contains("CNAME\tsite-b.example.net."), "{full}");
    backend
        .apply(&change(addrs(&["192.0.2.7"]), 2, "a"))
        .await
        .unwrap();
    assert_eq!(dig.short("app.example.com", "A").await, ["192.0.2.7"]);
    assert!(dig.short("app.example.com", "CNAME").await.is_empty());
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_refusals_negative_answers_tcp_and_minimal_any() {
    let Some((server, dig)) = start().await else {
        return;
    };
    server
        .backend()
        .apply(&change(addrs(&["192.0.2.1", "2001:db8::1"]), 1, "a"))
        .await
        .unwrap();

    let out = dig.run(&["www.example.net", "A"]).await;
    assert!(out.contains("status: REFUSED"), "{out}");
    assert!(!out.contains(" aa"), "no AA outside the zone: {out}");
    let out = dig.run(&["example.com", "AXFR"]).await;
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );

    let out = dig.run(&["missing.example.com", "A"]).await;
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(out.contains("flags: qr aa;"), "{out}");
    assert!(
        out.contains("AUTHORITY: 1"),
        "SOA in the authority section: {out}"
    );

    let out = dig.run(&["app.example.com", "ANY"]).await;
    assert!(out.contains("ANSWER: 1,"), "ANY gets one RRset: {out}");

    let out = dig.run(&["+tcp", "app.example.com", "A"]).await;
    assert!(out.contains("192.0.2.1"), "{out}");
    assert!(out.contains("(TCP)"), "{out}");

    // 0x20 mixed case is echoed.
    let out = dig.run(&["ApP.ExAmPlE.CoM", "A"]).await;
    assert!(out.contains("ApP.ExAmPlE.CoM."), "{out}");
    server.shutdown();
}

fn site_changed(site: &str, from: Health, to: Health) -> Event {
    Event::SiteChanged {
        site: site.parse().unwrap(),
        from,
        to,
        reasons: vec![],
    }
}

fn failover(runbook: u64, finished: bool) -> Event {
    let (from, to) = (
        Some("primary".parse().unwrap()),
        Some("recovery".parse().unwrap()),
    );
    if !finished {
        return Event::Decision {
            runbook,
            kind: RunbookKind::Failover,
            from,
            to,
            epoch: Epoch::new(2),
            forced: false,
            trigger: idns_core::Trigger::Election,
            reasons: vec![],
        };
    }
    Event::Finished(SwitchReport {
        runbook,
        kind: RunbookKind::Failover,
        outcome: Outcome::Completed,
        from,
        to,
        epoch: Epoch::new(2),
        forced: false,
        decided_at: std::time::SystemTime::UNIX_EPOCH,
        finished_at: std::time::SystemTime::UNIX_EPOCH,
        rto: Duration::ZERO,
        phases: vec![],
        rpo: None,
        rpo_at_decision: None,
        steps: vec![],
        reasons: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_the_ttl_follow_health_events() {
    let settle = Duration::from_secs(60);
    let mut dynamic = DynamicTtl::new(Duration::from_secs(5), Duration::from_secs(300));
    dynamic.settle = settle;
    let Some((server, dig)) = start_with(Some(dynamic)).await else {
        return;
    };
    let backend = server.backend();
    let name: DnsName = "app.example.com".parse().unwrap();
    let mut first = change(addrs(&["192.0.2.1"]), 1, "primary");
    first.ttl = Duration::from_secs(120);
    backend.apply(&first).await.unwrap();
    assert_eq!(
        dig.ttl("app.example.com").await,
        120,
        "no advice yet: as asked"
    );

    // The advisor, driven by hand with explicit times; the server answers what it says.
    let mut advisor = backend.ttl_advisor(&name).unwrap();
    let set = |mode| backend.set_ttl_mode(&name, mode).unwrap();
    let t0 = Instant::now();
    let serial = dig.serial().await;
    assert_eq!(advisor.mode(t0), TtlMode::Suspect, "health not known yet");
    set(advisor.mode(t0));
    assert_eq!(dig.ttl("app.example.com").await, 5);
    let ownership = dig.short("_idns.app.example.com", "TXT").await;
    assert_eq!(ownership, ["\"epoch=1 site=primary\""], "the epoch stays");
    assert!(dig.serial().await > serial, "the serial moves with the TTL");
    let published = backend.read(&zone(), &name).await.unwrap();
    assert_eq!(
        published.ttl,
        Duration::from_secs(120),
        "read tells what was asked"
    );
    assert_eq!(published.owner, Some(first.ownership()));

    // The primary comes up: suspect for `settle`, then stable (capped by the 120 s asked).
    advisor.handle(&site_changed("primary", Health::Unknown, Health::Up), t0);
    set(advisor.mode(t0));
    assert_eq!(dig.ttl("app.example.com").await, 5);
    let t1 = advisor.poll_timeout().unwrap();
    assert_eq!(t1, t0 + settle);
    advisor.handle_timeout(t1);
    set(advisor.mode(t1));
    assert_eq!(dig.ttl("app.example.com").await, 120);
    let serial = dig.serial().await;
    set(TtlMode::Stable);
    assert_eq!(
        dig.serial().await,
        serial,
        "the same mode again changes nothing"
    );

    // The primary fails: suspect at once, through the failover and `settle` after it.
    advisor.handle(&site_changed("primary", Health::Up, Health::Down), t1);
    set(advisor.mode(t1));
    assert_eq!(dig.ttl("app.example.com").await, 5);
    advisor.handle(&site_changed("recovery", Health::Unknown, Health::Up), t1);
    advisor.handle(&failover(2, false), t1);
    let mut second = change(addrs(&["198.51.100.1"]), 2, "recovery");
    second.ttl = Duration::from_secs(120);
    backend.apply(&second).await.unwrap();
    set(advisor.mode(t1));
    assert_eq!(dig.short("app.example.com", "A").await, ["198.51.100.1"]);
    assert_eq!(
        dig.ttl("app.example.com").await,
        5,
        "the mode outlives a change"
    );
    let t2 = t1 + Duration::from_secs(3);
    advisor.handle(&failover(2, true), t2);
    advisor.handle_timeout(t2 + Duration::from_secs(59));
    set(advisor.mode(t2 + Duration::from_secs(59)));
    assert_eq!(dig.ttl("app.example.com").await, 5, "still settling");
    advisor.handle_timeout(t2 + settle);
    set(advisor.mode(t2 + settle));
    assert_eq!(dig.ttl("app.example.com").await, 120);
    assert_eq!(
        dig.short("_idns.app.example.com", "TXT").await,
        ["\"epoch=2 site=recovery\""]
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_the_ttl_follow_the_event_stream() {
    let mut dynamic = DynamicTtl::new(Duration::from_secs(5), Duration::from_secs(300));
    dynamic.settle = Duration::ZERO;
    dynamic.exceed_requested = true;
    let Some((server, dig)) = start_with(Some(dynamic)).await else {
        return;
    };
    let backend = server.backend();
    let name: DnsName = "app.example.com".parse().unwrap();
    backend
        .apply(&change(addrs(&["192.0.2.1"]), 1, "primary"))
        .await
        .unwrap();
    let (events, rx) = tokio::sync::broadcast::channel(16);
    let advisor = backend.ttl_advisor(&name).unwrap();
    assert_eq!(advisor.active(), Some(&"primary".parse().unwrap()));
    let follower = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.follow_events(name, advisor, rx).await })
    };
    dig.wait_for_ttl("app.example.com", 5).await;
    events
        .send(site_changed("primary", Health::Unknown, Health::Up))
        .unwrap();
    // Stable, and above the 20 s asked: exceed_requested is set.
    dig.wait_for_ttl("app.example.com", 300).await;
    events
        .send(site_changed("primary", Health::Up, Health::Down))
        .unwrap();
    dig.wait_for_ttl("app.example.com", 5).await;
    drop(events);
    follower.await.unwrap().unwrap();
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dynamic_ttl_a_mode_is_refused() {
    let Some((server, dig)) = start().await else {
        return;
    };
    let backend = server.backend();
    backend
        .apply(&change(addrs(&["192.0.2.1"]), 1, "primary"))
        .await
        .unwrap();
    let name: DnsName = "app.example.com".parse().unwrap();
    assert!(matches!(
        backend.set_ttl_mode(&name, TtlMode::Suspect),
        Err(BackendError::Unsupported(_))
    ));
    assert!(matches!(
        backend.ttl_advisor(&name),
        Err(BackendError::Unsupported(_))
    ));
    assert_eq!(dig.ttl("app.example.com").await, 20);
    server.shutdown();
}
