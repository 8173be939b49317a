//! Real servers: named (bind9), dig, nsupdate
//!
//! The RFC 2136 backend against a real BIND 9 started on a free loopback port: the core's
//! conformance suite, a wrong TSIG key, a stale epoch, BIND stopped mid-run, and the
//! propagation check. `dig` (an independent client) confirms what the zone holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use idns_core::test_util::conformance::DnsSuite;
use idns_core::{BackendError, DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::propagation::PropagationChecker;
use idns_dns::rfc2136::{Rfc2136Backend, Rfc2136Config};
use idns_dns::testing::Bind;

const SECRET: &str = Bind::SECRET;
const WRONG_SECRET: &str = "d3Jvbmcga2V5IGZvciBCSU5ELCAzMiBieXRlcyAhISE=";

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn backend(bind: &Bind, secret: &str) -> Rfc2136Backend {
    let mut spec = bind.rfc2136_spec();
    if let Some(tsig) = &mut spec.tsig {
        tsig.secret = idns_core::Secret::new(secret);
    }
    Rfc2136Backend::new(Rfc2136Config::try_from(spec).unwrap())
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

/// The error of an update by `b`, which must be refused as an authentication failure.
async fn auth_error(b: &Rfc2136Backend) -> String {
    match b
        .apply(&change("app.example.com", addrs(&["203.0.113.9"]), 2, "b"))
        .await
    {
        Err(BackendError::Auth(m)) => {
            // Our words, never a dependency's.
            assert!(!m.to_ascii_lowercase().contains("file an issue"), "{m}");
            assert!(!m.contains("truncated HMAC"), "{m}");
            m
        }
        other => panic!("expected Err(Auth), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_or_a_wrong_secret_is_named_in_our_words() {
    let Some(bind) = Bind::start() else {
        return;
    };
    // A key name BIND does not know: NOTAUTH with the TSIG error BADKEY.
    let mut spec = bind.rfc2136_spec();
    if let Some(tsig) = &mut spec.tsig {
        tsig.name = "no-such-key".into();
    }
    let unknown = Rfc2136Backend::new(Rfc2136Config::try_from(spec).unwrap());
    let m = auth_error(&unknown).await;
    assert!(m.contains("BADKEY") && m.contains("'no-such-key'"), "{m}");
    assert!(m.contains("does not know TSIG key"), "{m}");
    assert!(m.contains(&bind.addr().to_string()), "{m}");
    // The right name with another secret: BADSIG.
    let m = auth_error(&backend(&bind, WRONG_SECRET)).await;
    assert!(
        m.contains("BADSIG") && m.contains(&format!("'{}'", Bind::KEY_NAME)),
        "{m}"
    );
    assert!(m.contains("secret"), "{m}");
    assert!(!m.contains(WRONG_SECRET), "{m}");
    assert!(bind.short("app.example.com", "A").is_empty());
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
    bind.nsupdate(
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
    bind.nsupdate(
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
    bind.restart();
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
