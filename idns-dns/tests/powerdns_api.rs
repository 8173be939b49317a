//! Real servers: pdns_server, pdnsutil, sqlite3
//!
//! The PowerDNS API backend, and the RFC 2136 backend against PowerDNS (`dnsupdate=yes`),
//! against a real PowerDNS 4 with the sqlite3 backend started on free loopback ports: the
//! core's conformance suite, a wrong API key, a stale epoch, an out-of-zone name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idns_core::Secret;
use idns_core::test_util::conformance::DnsSuite;
use idns_core::test_util::servers::{free_port, require};
use idns_core::{BackendError, DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::powerdns::{PowerDnsBackend, PowerDnsConfig, PowerDnsSpec};
use idns_dns::propagation::{PropagationChecker, PropagationSpec};
use idns_dns::rfc2136::{Rfc2136Backend, Rfc2136Config, Rfc2136Spec, TsigAlgorithmName, TsigSpec};

const API_KEY: &str = "idns-test-api-key";
const KEY_NAME: &str = "idns-key";
const SECRET: &str = "aWRucyB0ZXN0IGtleSBmb3IgQklORCwgMzIgYnl0ZXM=";

/// A PowerDNS serving `example.com` from sqlite3 in a temporary directory.
struct Pdns {
    dir: tempfile::TempDir,
    pdnsutil: PathBuf,
    dns_port: u16,
    api_port: u16,
    child: Option<Child>,
}

impl Pdns {
    async fn start() -> Option<Pdns> {
        let server = require("pdns_server", &[], "pdns-server")?;
        let pdnsutil = require("pdnsutil", &[], "pdns-server")?;
        let sqlite3 = require("sqlite3", &[], "sqlite3")?;
        let schema = "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql";
        if !std::path::Path::new(schema).exists() {
            require("pdns-backend-sqlite3-schema", &[], "pdns-backend-sqlite3")?;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pdns.sqlite3");
        let status = Command::new(&sqlite3)
            .arg(&db)
            .stdin(std::fs::File::open(schema).unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        let dns_port = free_port().unwrap();
        let api_port = free_port().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("pdns.conf"),
            format!(
                "launch=gsqlite3\ngsqlite3-database={}\nlocal-address=127.0.0.1\n\
                 local-port={dns_port}\nsocket-dir={d}\ndaemon=no\nguardian=no\n\
                 disable-syslog=yes\nwebserver=yes\nwebserver-address=127.0.0.1\n\
                 webserver-port={api_port}\nwebserver-allow-from=127.0.0.0/8\napi=yes\n\
                 api-key={API_KEY}\nsecurity-poll-suffix=\ndnsupdate=yes\n\
                 allow-dnsupdate-from=127.0.0.0/8\nloglevel=4\n",
                db.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("pdns.log")).unwrap();
        let child = Command::new(&server)
            .arg(format!("--config-dir={d}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pdns = Pdns {
            dir,
            pdnsutil,
            dns_port,
            api_port,
            child: Some(child),
        };
        pdns.create_zone().await;
        Some(pdns)
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn dns(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    async fn create_zone(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let body = serde_json::json!({
            "name": "example.com.",
            "kind": "Native",
            "nameservers": ["ns1.example.com."],
        });
        loop {
            let sent = http
                .post(format!("{}/api/v1/servers/localhost/zones", self.api()))
                .header("X-API-Key", API_KEY)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().as_u16() == 201 => break,
                Ok(r) => panic!(
                    "creating the zone: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.dir.path().join("pdns.log"))
                        .unwrap_or_default();
                    panic!("PowerDNS API not up on port {}: {e}\n{log}", self.api_port);
                }
            }
        }
        // RFC 2136 with TSIG on this zone.
        let d = format!("--config-dir={}", self.dir.path().display());
        for args in [
            vec![
                d.as_str(),
                "import-tsig-key",
                KEY_NAME,
                "hmac-sha256",
                SECRET,
            ],
            vec![
                d.as_str(),
                "set-meta",
                "example.com",
                "TSIG-ALLOW-DNSUPDATE",
                KEY_NAME,
            ],
        ] {
            let out = Command::new(&self.pdnsutil).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "pdnsutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn backend(&self, key: &str) -> PowerDnsBackend {
        let mut spec = PowerDnsSpec::new(&self.api(), Secret::new(key), &[zone()]);
        spec.propagation = Some(PropagationSpec::new([self.dns()]));
        PowerDnsBackend::new(PowerDnsConfig::try_from(spec).unwrap()).unwrap()
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn change(name: &str, records: RecordSet, epoch: u64, site: &str) -> DnsChange {
    DnsChange {
        zone: zone(),
        name: name.parse().unwrap(),
        records,
        ttl: Duration::from_secs(30),
        epoch: Epoch::new(epoch),
        site: Some(site.parse().unwrap()),
    }
}

fn addrs(list: &[&str]) -> RecordSet {
    RecordSet::Addresses(list.iter().map(|a| a.parse().unwrap()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_through_the_api() {
    let Some(pdns) = Pdns::start().await else {
        return;
    };
    let backend = pdns.backend(API_KEY);
    let suite = DnsSuite::new(zone()).unwrap();
    suite.run(&backend).await;
    suite.run(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_an_auth_error_and_changes_nothing() {
    let Some(pdns) = Pdns::start().await else {
        return;
    };
    let good = pdns.backend(API_KEY);
    let c1 = change("app.example.com", addrs(&["192.0.2.1"]), 1, "a");
    good.apply(&c1).await.unwrap();
    let wrong = pdns.backend("not-the-key");
    match wrong
        .apply(&change("app.example.com", addrs(&["203.0.113.9"]), 2, "b"))
        .await
    {
        Err(BackendError::Auth(m)) => assert!(!m.contains("not-the-key"), "{m}"),
        other => panic!("expected Err(Auth), got {other:?}"),
    }
    assert!(!format!("{wrong:?}").contains("not-the-key"));
    let p = good.read(&zone(), &c1.name).await.unwrap();
    assert_eq!(p.records, c1.records);
    assert_eq!(p.owner, Some(c1.ownership()));
    assert!(
        good.verify(&c1, Duration::from_secs(5))
            .await
            .unwrap()
            .complete()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_epochs_and_foreign_names_are_refused() {
    let Some(pdns) = Pdns::start().await else {
        return;
    };
    let b = pdns.backend(API_KEY);
    b.apply(&change("app.example.com", addrs(&["192.0.2.1"]), 5, "a"))
        .await
        .unwrap();
    match b
        .apply(&change("app.example.com", addrs(&["203.0.113.9"]), 4, "b"))
        .await
    {
        Err(BackendError::StaleEpoch { attempted, current }) => {
            assert_eq!((attempted, current), (Epoch::new(4), Epoch::new(5)));
        }
        other => panic!("expected Err(StaleEpoch), got {other:?}"),
    }
    let p = b
        .read(&zone(), &"app.example.com".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(p.records, addrs(&["192.0.2.1"]));
    // PowerDNS itself refuses data it cannot take (422), with its own words.
    let mut bad = change("app.example.com", addrs(&["192.0.2.1"]), 6, "a");
    bad.ttl = Duration::from_secs(30);
    bad.records = RecordSet::Alias("app.example.com.example.com".parse().unwrap());
    bad.name = "example.com".parse().unwrap();
    match b.apply(&bad).await {
        Err(BackendError::Refused(m)) => assert!(m.contains("PowerDNS refused"), "{m}"),
        other => panic!("expected Err(Refused) for a CNAME at the apex, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_backend_against_powerdns() {
    let Some(pdns) = Pdns::start().await else {
        return;
    };
    let mut spec = Rfc2136Spec::new(
        pdns.dns(),
        &[zone()],
        TsigSpec {
            name: KEY_NAME.into(),
            algorithm: TsigAlgorithmName::HmacSha256,
            secret: Secret::new(SECRET),
            fudge: 300,
        },
    );
    spec.timeout = Duration::from_secs(2);
    let backend = Rfc2136Backend::new(Rfc2136Config::try_from(spec).unwrap());
    let suite = DnsSuite::new(zone()).unwrap();
    suite.run(&backend).await;
    // What the RFC 2136 path wrote, the API reads back.
    let api = pdns.backend(API_KEY);
    let via_update = backend.read(&zone(), &suite.name).await.unwrap();
    let via_api = api.read(&zone(), &suite.name).await.unwrap();
    assert_eq!(via_update.owner, via_api.owner);
    let c = change("app.example.com", addrs(&["192.0.2.44"]), 1, "a");
    backend.apply(&c).await.unwrap();
    let p = PropagationChecker::new([pdns.dns()])
        .check(&c.name, &c.records, Duration::from_secs(5))
        .await;
    assert!(p.complete(), "{p:?}");
}
