//! Real servers: pdns_server, pdnsutil, sqlite3
//!
//! The PowerDNS API backend, and the RFC 2136 backend against PowerDNS (`dnsupdate=yes`),
//! against a real PowerDNS 4 with the sqlite3 backend started on free loopback ports: the
//! core's conformance suite, a wrong API key, a stale epoch, an out-of-zone name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use idns_core::Secret;
use idns_core::test_util::conformance::DnsSuite;
use idns_core::{BackendError, DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::powerdns::{PowerDnsBackend, PowerDnsConfig, PowerDnsSpec};
use idns_dns::propagation::{PropagationChecker, PropagationSpec};
use idns_dns::rfc2136::{Rfc2136Backend, Rfc2136Config, Rfc2136Spec, TsigAlgorithmName, TsigSpec};
use idns_dns::testing::{Bind, PowerDns};

const API_KEY: &str = PowerDns::API_KEY;
const KEY_NAME: &str = Bind::KEY_NAME;
const SECRET: &str = Bind::SECRET;

/// A backend of `pdns` with the API key `key`, checking propagation at the server.
fn api_backend(pdns: &PowerDns, key: &str) -> PowerDnsBackend {
    let mut spec = PowerDnsSpec::new(&pdns.api(), Secret::new(key), &[zone()]);
    spec.propagation = Some(PropagationSpec::new([pdns.dns()]));
    PowerDnsBackend::new(PowerDnsConfig::try_from(spec).unwrap()).unwrap()
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
    let Some(pdns) = PowerDns::start().await else {
        return;
    };
    let backend = api_backend(&pdns, API_KEY);
    let suite = DnsSuite::new(zone()).unwrap();
    suite.run(&backend).await;
    suite.run(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_an_auth_error_and_changes_nothing() {
    let Some(pdns) = PowerDns::start().await else {
        return;
    };
    let good = api_backend(&pdns, API_KEY);
    let c1 = change("app.example.com", addrs(&["192.0.2.1"]), 1, "a");
    good.apply(&c1).await.unwrap();
    let wrong = api_backend(&pdns, "not-the-key");
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
    let Some(pdns) = PowerDns::start().await else {
        return;
    };
    let b = api_backend(&pdns, API_KEY);
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
    let Some(pdns) = PowerDns::start().await else {
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
    let api = api_backend(&pdns, API_KEY);
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

/// A loopback listener that answers each request with `reply` and keeps each request's head.
struct Listener {
    port: u16,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(reply: String) -> Listener {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    Listener { port, heads, task }
}

#[tokio::test]
async fn a_redirect_is_an_error_and_the_api_key_never_follows_it() {
    let elsewhere = listen(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\
         connection: close\r\n\r\n{\"rrsets\":[]}"
            .to_owned(),
    )
    .await;
    let location = format!(
        "http://127.0.0.1:{}/api/v1/servers/localhost/zones/example.com.",
        elsewhere.port
    );
    let api = listen(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\
         connection: close\r\n\r\n"
    ))
    .await;
    let spec = PowerDnsSpec::new(
        &format!("http://127.0.0.1:{}", api.port),
        Secret::new("redirect-test-key"),
        &[zone()],
    );
    let backend = PowerDnsBackend::new(PowerDnsConfig::try_from(spec).unwrap()).unwrap();
    let name: DnsName = "app.example.com".parse().unwrap();
    match backend.read(&zone(), &name).await {
        Err(BackendError::Invalid(m)) => {
            assert!(m.contains("307") && m.contains(&location), "{m}");
            assert!(!m.contains("redirect-test-key"), "{m}");
        }
        other => panic!("expected Err(Invalid) naming the redirect, got {other:?}"),
    }
    let asked = api.heads.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].to_ascii_lowercase().contains("x-api-key"),
        "{asked:?}"
    );
    let followed = elsewhere.heads.lock().unwrap().clone();
    assert!(
        followed
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("x-api-key")),
        "the API key followed the redirect: {followed:?}"
    );
    assert!(
        followed.is_empty(),
        "the redirect was followed: {followed:?}"
    );
}

/// The configuration of `api_url`, with `allow_plain_http` when `allow`.
fn api_config(api_url: &str, allow: bool) -> Result<PowerDnsConfig, String> {
    let mut spec = PowerDnsSpec::new(api_url, Secret::new("k"), &[zone()]);
    spec.allow_plain_http = allow;
    PowerDnsConfig::try_from(spec).map_err(|e| e.to_string())
}

#[test]
fn plain_http_is_refused_beyond_loopback_unless_allowed() {
    let e = api_config("http://10.0.0.1:8081", false).unwrap_err();
    assert!(e.contains("api_url = http://10.0.0.1:8081"), "{e}");
    assert!(e.contains("allow_plain_http"), "{e}");
    for url in [
        "http://127.0.0.1:8081",
        "http://127.0.0.2:8081",
        "http://[::1]:8081",
        "http://localhost:8081",
        "https://10.0.0.1:8443",
        "https://pdns.example.com",
    ] {
        api_config(url, false).unwrap_or_else(|e| panic!("{url} refused: {e}"));
    }
    api_config("http://10.0.0.1:8081", true).unwrap();
    // The refusal names the URL without the credentials it carries.
    let e = api_config("http://admin:pa55word@pdns.example.com:8081", false).unwrap_err();
    assert!(e.contains("http://pdns.example.com:8081"), "{e}");
    assert!(!e.contains("pa55word") && !e.contains("admin"), "{e}");
    let e = api_config("ftp://admin:pa55word@pdns.example.com", false).unwrap_err();
    assert!(!e.contains("pa55word"), "{e}");
    let shown = api_config("http://admin:pa55word@127.0.0.1:8081", false).unwrap();
    assert_eq!(shown.api_url(), "http://127.0.0.1:8081");
}
