//! Real servers: dig
//!
//! `dig`, an independent client, sees the embedded server's answers: AA set, answers changing
//! with each epoch, the SOA serial increasing, CNAME mode, out-of-zone queries refused, the
//! ownership TXT record, TCP, and minimal ANY answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use idns_core::test_util::servers::require;
use idns_core::{DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};

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
    let bin = require("dig", &[], "bind9-dnsutils")?;
    let config = EmbeddedConfig::new(vec!["127.0.0.1:0".parse().unwrap()], &[zone()]);
    let server = EmbeddedServer::start(config).await.unwrap();
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
