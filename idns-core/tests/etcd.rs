//! Real servers: etcd (one member and three, on loopback high ports).
//!
//! The etcd client over the JSON gateway (every call, fail-over between endpoints, endpoints
//! that answer garbage or nothing, a cluster that loses and regains quorum) and the state
//! store on it (compare-and-swap, deployments, formats, the leadership guard).

use std::error::Error;
use std::time::{Duration, SystemTime};

use idns_core::etcd::{Client, Compare, CompareOp, EtcdStore, Op, OpResponse};
use idns_core::test_util::etcd::EtcdCluster;
use idns_core::test_util::servers::free_port;
use idns_core::test_util::sim::ServiceShape;
use idns_core::{BackendError, ConfigError, Election, Journal, StateStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type TestResult = Result<(), Box<dyn Error>>;

fn client<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Result<Client, ConfigError> {
    Client::new(urls, Duration::from_secs(10))
}

/// A freshly bootstrapped journal (of the simulator's default two-site service).
fn journal() -> Result<Journal, Box<dyn Error>> {
    let now = tokio::time::Instant::now().into_std();
    let election = Election::new(
        ServiceShape::default().build(),
        None,
        now,
        SystemTime::UNIX_EPOCH,
    )?;
    Ok(election.journal().clone())
}

#[tokio::test]
async fn every_client_call_against_one_member() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;

    let first = c.put("app/a", "1", None).await?;
    assert!(first.cluster_id != 0 && first.member_id != 0 && first.raft_term != 0);
    let second = c.put("app/b", "", None).await?;
    assert_eq!(second.revision, first.revision + 1);
    c.put("apq", "outside the prefix", None).await?;

    let a = c.get("app/a").await?;
    let kv = a.first().expect("app/a exists");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"1"[..], 1));
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (first.revision, first.revision)
    );
    assert_eq!(kv.lease, None);
    assert_eq!(a.header.cluster_id, first.cluster_id);
    assert!(c.get("app/none").await?.kvs.is_empty());

    let prefix = c.get_prefix("app/").await?;
    let keys: Vec<&[u8]> = prefix.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"app/a"[..], b"app/b"]);
    assert_eq!(prefix.count, 2);
    assert!(
        prefix.kvs[1].value.is_empty(),
        "an empty value comes back empty"
    );

    // A transaction whose comparison holds runs its success branch.
    let txn = c
        .txn(
            &[Compare::mod_revision(
                "app/a",
                CompareOp::Equal,
                first.revision,
            )],
            &[Op::put("app/a", "2", None), Op::get("app/a")],
            &[],
        )
        .await?;
    assert!(txn.succeeded);
    assert!(matches!(txn.responses[0], OpResponse::Put(h) if h.revision == txn.header.revision));
    let OpResponse::Get(read) = &txn.responses[1] else {
        panic!("not a read: {txn:?}");
    };
    assert_eq!(read.kvs[0].value, b"2");

    // One whose comparison fails runs the failure branch, and says so.
    let txn = c
        .txn(
            &[Compare::create_revision("app/a", CompareOp::Equal, 0)],
            &[Op::put("app/a", "3", None)],
            &[Op::get_prefix("app/")],
        )
        .await?;
    assert!(!txn.succeeded);
    let OpResponse::Get(read) = &txn.responses[0] else {
        panic!("not a read: {txn:?}");
    };
    assert_eq!(read.kvs.len(), 2);
    assert_eq!(c.get("app/a").await?.kvs[0].value, b"2", "not overwritten");

    let deleted = c.delete("app/a").await?;
    assert_eq!(deleted.deleted, 1);
    assert!(deleted.header.revision > txn.header.revision);
    assert_eq!(c.delete("app/a").await?.deleted, 0);
    assert!(c.get("app/a").await?.kvs.is_empty());

    let status = c.status().await?;
    assert!(status.version.starts_with("3."), "{status:?}");
    assert!(status.is_leader(), "a lone member leads: {status:?}");
    assert_eq!(status.header.cluster_id, first.cluster_id);

    let members = c.members().await?;
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].name, "m1");
    assert_eq!(members.members[0].client_urls, etcd.client_urls());
    assert_eq!(members.members[0].id, status.header.member_id);
    Ok(())
}

#[tokio::test]
async fn leases_are_granted_kept_alive_and_revoked_with_their_keys() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;

    let lease = c.lease_grant(Duration::from_secs(30)).await?;
    assert_eq!(lease.ttl, 30);
    c.put("leader", "east", Some(lease.id)).await?;
    let kv = c.get("leader").await?.kvs.remove(0);
    assert_eq!(kv.lease, Some(lease.id));
    assert!(
        c.txn(
            &[Compare::lease("leader", CompareOp::Equal, Some(lease.id))],
            &[],
            &[]
        )
        .await?
        .succeeded
    );

    let renewed = c.lease_keepalive(lease.id).await?;
    assert_eq!((renewed.id, renewed.ttl), (lease.id, 30));

    c.lease_revoke(lease.id).await?;
    assert!(
        c.get("leader").await?.kvs.is_empty(),
        "the key went with its lease"
    );
    let gone = c.lease_keepalive(lease.id).await.unwrap_err();
    assert!(
        matches!(&gone, BackendError::NotFound(m) if m.contains(&lease.id.to_string()) && m.contains(&etcd.client_url(0))),
        "{gone}"
    );
    let again = c.lease_revoke(lease.id).await.unwrap_err();
    assert!(matches!(again, BackendError::NotFound(_)), "{again}");
    let unbound = c.put("leader", "west", Some(lease.id)).await.unwrap_err();
    assert!(
        matches!(&unbound, BackendError::NotFound(m) if m.contains("\"leader\"")),
        "{unbound}"
    );

    // The shortest lease these members allow is granted too.
    assert!(c.lease_grant(Duration::from_millis(300)).await?.ttl >= 1);
    Ok(())
}

#[tokio::test]
async fn the_store_saves_by_compare_and_swap_on_the_key_revision() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let store = EtcdStore::new(c.clone(), "/idns/db/", "prod")?;
    assert_eq!(store.key(), "/idns/db/journal");
    let journal = journal()?;

    assert_eq!(store.load().await?, None);
    let r1 = store.save(&journal, None).await?;
    let loaded = store.load().await?.expect("saved");
    assert_eq!((loaded.revision, &loaded.journal), (r1, &journal));
    assert_eq!(c.get(store.key()).await?.kvs[0].mod_revision, r1);

    let r2 = store.save(&journal, Some(r1)).await?;
    assert!(r2 > r1);

    let stale = store.save(&journal, Some(r1)).await.unwrap_err();
    let BackendError::Conflict(msg) = &stale else {
        panic!("not a conflict: {stale}");
    };
    assert!(msg.contains("/idns/db/journal"), "{msg}");
    assert!(msg.contains(&format!("at revision {r2}")), "{msg}");
    assert!(
        msg.contains(&format!("revision {r1} was expected")),
        "{msg}"
    );

    let fresh = store.save(&journal, None).await.unwrap_err();
    assert!(
        matches!(&fresh, BackendError::Conflict(m) if m.contains("no revision")),
        "{fresh}"
    );
    assert_eq!(
        store.load().await?.map(|s| s.revision),
        Some(r2),
        "nothing was written"
    );

    let status = c.status().await?;
    assert_eq!(store.cluster_id(), Some(status.header.cluster_id));
    Ok(())
}

#[tokio::test]
async fn the_store_refuses_other_deployments_newer_formats_and_garbage() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let prod = EtcdStore::new(c.clone(), "/idns/db", "prod")?;
    let staging = EtcdStore::new(c.clone(), "/idns/db", "staging")?;
    prod.save(&journal()?, None).await?;

    let other = staging.load().await.unwrap_err();
    let BackendError::Integrity(msg) = &other else {
        panic!("not an integrity error: {other}");
    };
    assert!(
        msg.contains("\"prod\"") && msg.contains("\"staging\""),
        "{msg}"
    );

    let mut value: serde_json::Value =
        serde_json::from_slice(&c.get(prod.key()).await?.kvs[0].value)?;
    value["format"] = 2.into();
    c.put(prod.key(), serde_json::to_vec(&value)?, None).await?;
    let newer = prod.load().await.unwrap_err();
    assert!(
        matches!(&newer, BackendError::Integrity(m) if m.contains("newer version")),
        "{newer}"
    );

    c.put(prod.key(), "{\"format\": 1", None).await?;
    let garbage = prod.load().await.unwrap_err();
    assert!(
        matches!(&garbage, BackendError::Integrity(m) if m.contains("/idns/db/journal")),
        "{garbage}"
    );

    let empty = EtcdStore::new(c, "/", "").unwrap_err().to_string();
    assert!(
        empty.contains("prefix") && empty.contains("deployment"),
        "{empty}"
    );
    Ok(())
}

#[tokio::test]
async fn a_guarded_save_fails_once_the_leader_key_was_created_again() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let leader = c.put("/idns/db/leader", "east", None).await?.revision;
    let store =
        EtcdStore::new(c.clone(), "/idns/db", "prod")?.guarded_by("/idns/db/leader", leader);
    let journal = journal()?;
    let r1 = store.save(&journal, None).await?;
    // The leader key is rewritten by its holder: still the same leadership.
    c.put("/idns/db/leader", "east", None).await?;
    let r2 = store.save(&journal, Some(r1)).await?;

    c.delete("/idns/db/leader").await?;
    let gone = store.save(&journal, Some(r2)).await.unwrap_err();
    assert!(
        matches!(&gone, BackendError::Conflict(m) if m.contains("no longer exists")),
        "{gone}"
    );

    let again = c.put("/idns/db/leader", "west", None).await?.revision;
    let lost = store.save(&journal, Some(r2)).await.unwrap_err();
    let BackendError::Conflict(msg) = &lost else {
        panic!("not a conflict: {lost}");
    };
    assert!(msg.contains("leadership was lost"), "{msg}");
    assert!(
        msg.contains(&format!("created again at revision {again}")),
        "{msg}"
    );
    assert!(
        !msg.contains("another controller wrote it"),
        "the journal itself matched: {msg}"
    );
    assert_eq!(
        store.load().await?.map(|s| s.revision),
        Some(r2),
        "nothing was written"
    );

    // The new holder's guard passes.
    let west = EtcdStore::new(c, "/idns/db", "prod")?.guarded_by("/idns/db/leader", again);
    assert!(west.save(&journal, Some(r2)).await? > r2);
    Ok(())
}

#[tokio::test]
async fn a_dead_first_endpoint_falls_through_to_a_live_one() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let dead = format!("http://127.0.0.1:{}", free_port()?);
    let c = client([dead.clone(), etcd.client_url(0)])?;
    c.put("k", "v", None).await?;
    assert_eq!(c.get("k").await?.kvs[0].value, b"v");

    // With the dead endpoint alone, the error names it and is worth a retry.
    let alone = client([&dead])?.get("k").await.unwrap_err();
    assert!(
        matches!(&alone, BackendError::Unavailable(m) if m.contains(&dead)),
        "{alone}"
    );
    assert!(alone.is_transient());
    Ok(())
}

/// A TCP listener on loopback that answers every connection with `reply` (or, when `None`,
/// accepts and never answers); stops with the test's runtime.
async fn fake_endpoint(reply: Option<&'static str>) -> Result<String, Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut conn, _)) = listener.accept().await {
            match reply {
                Some(reply) => {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf).await;
                        let _ = conn.write_all(reply.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    });
                }
                None => held.push(conn),
            }
        }
    });
    Ok(url)
}

#[tokio::test]
async fn an_endpoint_that_answers_garbage_is_invalid_and_named() -> TestResult {
    let url = fake_endpoint(Some(
        "HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\nthis is not JSON!",
    ))
    .await?;
    let err = client([&url])?.get("k").await.unwrap_err();
    let BackendError::Invalid(msg) = &err else {
        panic!("not an invalid answer: {err}");
    };
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("kv/range") && msg.contains("\"k\""), "{msg}");
    assert!(msg.contains("this is not JSON!"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out() -> TestResult {
    let url = fake_endpoint(None).await?;
    let c = Client::new([&url], Duration::from_millis(300))?;
    let err = c.put("k", "v", None).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Timeout(m) if m.contains(&url)),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn three_members_lose_quorum_fail_fast_and_recover() -> TestResult {
    let Some(mut etcd) = EtcdCluster::start(3).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    assert_eq!(c.members().await?.members.len(), 3);
    c.put("k", "1", None).await?;

    etcd.stop(0);
    etcd.stop(1);
    // A put sent before the survivor notices it has lost its leader waits in etcd and fails
    // with "request timed out"; once it has noticed (about a second), puts fail at once with
    // "no leader". Both are Unavailable; none succeeds.
    let mut errors = Vec::new();
    for _ in 0..5 {
        let err = c.put("k", "2", None).await.unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err}");
        let no_leader = err.to_string().contains("no leader");
        errors.push(err);
        if no_leader {
            break;
        }
    }
    let last = errors.last().expect("one attempt at least");
    assert!(
        last.to_string().contains("quorum may be lost"),
        "{errors:?}"
    );

    etcd.restart(0).await;
    etcd.restart(1).await;
    c.put("k", "3", None).await?;
    assert_eq!(c.get("k").await?.kvs[0].value, b"3");
    Ok(())
}
