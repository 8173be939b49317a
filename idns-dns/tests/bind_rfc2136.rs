//! Real servers: named (bind9), dig, nsupdate
//!
//! The RFC 2136 backend against a real BIND 9 started on a free loopback port: the core's
//! conformance suite, a wrong TSIG key, a stale epoch, BIND stopped mid-run, and the
//! propagation check. `dig` (an independent client) confirms what the zone holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idns_core::test_util::conformance::DnsSuite;
use idns_core::test_util::servers::{free_port, require};
use idns_core::{BackendError, DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::Secret;
use idns_dns::propagation::PropagationChecker;
use idns_dns::rfc2136::{Rfc2136Backend, Rfc2136Config, TsigAlgorithmName, TsigConfig};

const KEY_NAME: &str = "idns-key";
const SECRET: &str = "aWRucyB0ZXN0IGtleSBmb3IgQklORCwgMzIgYnl0ZXM=";
const WRONG_SECRET: &str = "d3Jvbmcga2V5IGZvciBCSU5ELCAzMiBieXRlcyAhISE=";

/// A BIND 9 serving `example.com` in a temporary directory, stopped on drop.
struct Bind {
    named: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Bind {
    fn start() -> Option<Bind> {
        let named = require("named", &[], "bind9")?;
        require("dig", &[], "bind9-dnsutils")?;
        require("nsupdate", &[], "bind9-dnsutils")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("key.conf"),
            format!("key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("example.com.zone"),
            "$TTL 60\n\
             @ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 604800 30\n\
             @ IN NS ns1.example.com.\n\
             ns1 IN A 127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "include \"{d}/key.conf\";\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; \
                 session-keyfile \"{d}/session.key\"; managed-keys-directory \"{d}\"; \
                 listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; \
                 recursion no; dnssec-validation no; notify no; }};\n\
                 controls {{ }};\n\
                 zone \"example.com\" {{ type primary; file \"{d}/example.com.zone\"; \
                 update-policy {{ grant {KEY_NAME} zonesub ANY; }}; }};\n"
            ),
        )
        .unwrap();
        let mut bind = Bind {
            named,
            dir,
            port,
            child: None,
        };
        bind.run();
        Some(bind)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("named.log")).unwrap();
        let child = Command::new(&self.named)
            .arg("-g")
            .arg("-c")
            .arg(self.dir.path().join("named.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self
                .dig(&["example.com", "SOA", "+short"])
                .contains("ns1.example.com.")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default();
        panic!("named did not start on port {}:\n{log}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+norec", "+time=1", "+tries=1"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn short(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig(&[name, rtype, "+short"])
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    fn serial(&self) -> u64 {
        let soa = self.short("example.com", "SOA");
        soa[0].split_whitespace().nth(2).unwrap().parse().unwrap()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.stop();
    }
}

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn backend(bind: &Bind, secret: &str) -> Rfc2136Backend {
    let mut config = Rfc2136Config::new(
        bind.addr(),
        &[zone()],
        TsigConfig {
            name: KEY_NAME.into(),
            algorithm: TsigAlgorithmName::HmacSha256,
            secret: Secret::new(secret),
            fudge: 300,
        },
    );
    config.timeout = Duration::from_secs(2);
    Rfc2136Backend::new(config).unwrap()
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
async fn conformance_suite_passes_against_bind() {
    let Some(bind) = Bind::start() else {
        return;
    };
    let backend = backend(&bind, SECRET);
    let suite = DnsSuite::new(zone()).unwrap();
    suite.run(&backend).await;
    suite.run(&backend).await;
    // dig agrees on what the suite left: withdrawn records, the ownership record kept.
    assert!(bind.short("idns-conformance.example.com", "A").is_empty());
    let txt = bind.short("_idns.idns-conformance.example.com", "TXT");
    assert_eq!(txt.len(), 1, "{txt:?}");
    assert!(txt[0].starts_with("\"epoch="), "{txt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_an_auth_error_and_changes_nothing() {
    let Some(bind) = Bind::start() else {
        return;
    };
    backend(&bind, SECRET)
        .apply(&change("app.example.com", addrs(&["192.0.2.1"]), 1, "a"))
        .await
        .unwrap();
    let serial = bind.serial();
    let wrong = backend(&bind, WRONG_SECRET);
    match wrong
        .apply(&change("app.example.com", addrs(&["203.0.113.9"]), 2, "b"))
        .await
    {
        Err(BackendError::Auth(m)) => assert!(!m.contains(WRONG_SECRET), "{m}"),
        other => panic!("expected Err(Auth), got {other:?}"),
    }
    assert!(!format!("{wrong:?}").contains(WRONG_SECRET));
    assert_eq!(bind.short("app.example.com", "A"), ["192.0.2.1"]);
    assert_eq!(
        bind.short("_idns.app.example.com", "TXT"),
        ["\"epoch=1 site=a\""]
    );
    assert_eq!(bind.serial(), serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_is_refused_and_changes_nothing() {
    let Some(bind) = Bind::start() else {
        return;
    };
    let b = backend(&bind, SECRET);
    b.apply(&change("app.example.com", addrs(&["192.0.2.1"]), 5, "a"))
        .await
        .unwrap();
    let serial = bind.serial();
    match b
        .apply(&change("app.example.com", addrs(&["203.0.113.9"]), 4, "b"))
        .await
    {
        Err(BackendError::StaleEpoch { attempted, current }) => {
            assert_eq!((attempted, current), (Epoch::new(4), Epoch::new(5)));
        }
        other => panic!("expected Err(StaleEpoch), got {other:?}"),
    }
    assert_eq!(bind.short("app.example.com", "A"), ["192.0.2.1"]);
    assert_eq!(bind.serial(), serial);

    // Someone else (nsupdate, with the key) writes epoch 9 behind our back: our epoch 6 is
    // now stale too, and the server-side compare-and-swap would refuse it as well.
    nsupdate(
        &bind,
        "update delete _idns.app.example.com TXT\n\
         update add _idns.app.example.com 30 TXT \"epoch=9 site=other\"\n",
    );
    match b
        .apply(&change("app.example.com", addrs(&["203.0.113.9"]), 6, "b"))
        .await
    {
        Err(BackendError::StaleEpoch { current, .. }) => assert_eq!(current, Epoch::new(9)),
        other => panic!("expected Err(StaleEpoch), got {other:?}"),
    }
    assert_eq!(bind.short("app.example.com", "A"), ["192.0.2.1"]);
}

/// Runs an `nsupdate` script against `bind` with the right key.
fn nsupdate(bind: &Bind, commands: &str) {
    use std::io::Write;
    let script = format!(
        "server 127.0.0.1 {}\nzone example.com\n{commands}send\n",
        bind.port
    );
    let mut child = Command::new("nsupdate")
        .arg("-y")
        .arg(format!("hmac-sha256:{KEY_NAME}:{SECRET}"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_epoch_is_a_retry_only_with_the_same_records_and_site() {
    let Some(bind) = Bind::start() else {
        return;
    };
    let b = backend(&bind, SECRET);
    let first = change(
        "app.example.com",
        addrs(&["192.0.2.1", "192.0.2.2"]),
        3,
        "a",
    );
    b.apply(&first).await.unwrap();
    let serial = bind.serial();
    // A retry, records in another order: accepted, nothing changes.
    let retry = change(
        "app.example.com",
        addrs(&["192.0.2.2", "192.0.2.1"]),
        3,
        "a",
    );
    b.apply(&retry).await.unwrap();
    assert_eq!(bind.serial(), serial);
    for conflicting in [
        change("app.example.com", addrs(&["203.0.113.9"]), 3, "b"),
        change("app.example.com", addrs(&["203.0.113.9"]), 3, "a"),
        change(
            "app.example.com",
            addrs(&["192.0.2.1", "192.0.2.2"]),
            3,
            "b",
        ),
    ] {
        match b.apply(&conflicting).await {
            Err(BackendError::StaleEpoch { attempted, current }) => {
                assert_eq!((attempted, current), (Epoch::new(3), Epoch::new(3)));
            }
            other => panic!("expected Err(StaleEpoch) for {conflicting:?}, got {other:?}"),
        }
    }
    assert_eq!(
        bind.short("app.example.com", "A"),
        ["192.0.2.1", "192.0.2.2"]
    );
    assert_eq!(
        bind.short("_idns.app.example.com", "TXT"),
        ["\"epoch=3 site=a\""]
    );
    assert_eq!(bind.serial(), serial);

    // Someone rewrites the records behind our back, keeping the ownership record: the same
    // change is no longer a retry of what is published, and is refused.
    nsupdate(
        &bind,
        "update delete app.example.com A\nupdate add app.example.com 30 A 198.51.100.7\n",
    );
    let serial = bind.serial();
    match b.apply(&first).await {
        Err(BackendError::StaleEpoch { attempted, current }) => {
            assert_eq!((attempted, current), (Epoch::new(3), Epoch::new(3)));
        }
        other => panic!("expected Err(StaleEpoch), got {other:?}"),
    }
    assert_eq!(bind.short("app.example.com", "A"), ["198.51.100.7"]);
    assert_eq!(bind.serial(), serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_stopped_mid_run_is_transient_then_recovers() {
    let Some(mut bind) = Bind::start() else {
        return;
    };
    let b = backend(&bind, SECRET);
    b.apply(&change("app.example.com", addrs(&["192.0.2.1"]), 1, "a"))
        .await
        .unwrap();
    bind.stop();
    let failover = change("app.example.com", addrs(&["198.51.100.1"]), 2, "b");
    match b.apply(&failover).await {
        Err(e) if e.is_transient() => {}
        other => panic!("expected a transient error, got {other:?}"),
    }
    let p = b
        .verify(&failover, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(!p.complete());
    bind.run();
    b.apply(&failover).await.unwrap();
    assert_eq!(bind.short("app.example.com", "A"), ["198.51.100.1"]);
    let p = b.verify(&failover, Duration::from_secs(5)).await.unwrap();
    assert!(p.complete(), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_mode_and_the_propagation_check() {
    let Some(bind) = Bind::start() else {
        return;
    };
    let b = backend(&bind, SECRET);
    let alias = change(
        "app.example.com",
        RecordSet::Alias("site-b.example.net".parse().unwrap()),
        1,
        "b",
    );
    b.apply(&alias).await.unwrap();
    assert_eq!(
        bind.short("app.example.com", "CNAME"),
        ["site-b.example.net."]
    );
    let checker = PropagationChecker::new([bind.addr()]);
    let p = checker
        .check(&alias.name, &alias.records, Duration::from_secs(5))
        .await;
    assert!(p.complete(), "{p:?}");
    let back = change(
        "app.example.com",
        addrs(&["192.0.2.1", "2001:db8::1"]),
        2,
        "a",
    );
    b.apply(&back).await.unwrap();
    assert!(bind.short("app.example.com", "CNAME").is_empty());
    assert_eq!(bind.short("app.example.com", "AAAA"), ["2001:db8::1"]);
    // The old answer is not current any more; the new one is.
    let p = checker
        .check(&alias.name, &alias.records, Duration::from_secs(1))
        .await;
    assert!(!p.complete());
    assert!(p.servers[0].detail.contains("192.0.2.1"), "{p:?}");
    let p = b.verify(&back, Duration::from_secs(5)).await.unwrap();
    assert!(p.complete(), "{p:?}");
    let published = b.read(&zone(), &back.name).await.unwrap();
    assert!(published.records.same_as(&back.records));
    assert_eq!(published.owner, Some(back.ownership()));
}
