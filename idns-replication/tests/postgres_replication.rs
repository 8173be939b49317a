//! Real servers: postgres, pg_basebackup, pg_rewind
//!
//! A primary and a streaming standby from the Debian binaries, in a temporary directory on
//! free loopback ports, driven through failover, split brain, rewind and failback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::ctx;
use idns_core::test_util::conformance::ReplicationSuite;
use idns_core::{IntegrityRequest, ReplicationBackend, ResourceId, Role, SiteId};
use idns_replication::Operation;
use idns_replication::postgres::{PgConfig, PostgresReplication};
use idns_replication::testing::PgPair;

fn backend(c: &PgPair, tables: &[&str]) -> PostgresReplication {
    backend_fencing(c, tables, "stop")
}

fn backend_fencing(c: &PgPair, tables: &[&str], fence: &str) -> PostgresReplication {
    let spec = c.spec("db", ["a", "b"], tables, fence);
    PostgresReplication::new(PgConfig::try_from(spec).unwrap())
}

async fn client(port: u16) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

fn ids() -> (ResourceId, SiteId, SiteId) {
    (
        "db".parse().unwrap(),
        "a".parse().unwrap(),
        "b".parse().unwrap(),
    )
}

async fn roles(r: &PostgresReplication) -> Vec<Role> {
    let (res, _, _) = ids();
    r.status(&res)
        .await
        .unwrap()
        .sites
        .iter()
        .map(|s| s.role)
        .collect()
}

async fn insert(port: u16, ids: std::ops::RangeInclusive<i32>, note: &str) {
    let c = client(port).await;
    for i in ids {
        c.execute("INSERT INTO items VALUES ($1, $2)", &[&i, &note])
            .await
            .unwrap();
    }
}

async fn item_ids(port: u16) -> Vec<i32> {
    client(port)
        .await
        .query("SELECT id FROM items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_split_brain_rewind_and_failback_keep_every_row() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &["public.items"]);
    let (res, a, b) = ids();
    assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
    client(c.a.port)
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    insert(c.a.port, 1..=10, "written at a before the failover").await;
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        item_ids(c.b.port).await.len(),
        10,
        "the standby has the rows"
    );

    // Disaster: a dies. Fail over to b.
    c.a.stop("immediate");
    assert_eq!(roles(&r).await, [Role::Unknown, Role::Replica]);
    let p = r.promote(&res, &b, &ctx(1)).await.unwrap();
    assert!(p.rpo.is_some() && p.position.is_some(), "{p:?}");
    assert_eq!(roles(&r).await, [Role::Unknown, Role::Primary]);
    insert(c.b.port, 11..=20, "written at b after the failover").await;

    // a comes back as a second primary and takes a write before it is fenced.
    c.a.start();
    insert(c.a.port, 1001..=1001, "split-brain write at a").await;
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Fenced, Role::Primary]);
    let markers = r
        .integrity(
            &res,
            &b,
            &IntegrityRequest::Mark {
                label: "epoch-1".into(),
            },
            &ctx(1),
        )
        .await
        .unwrap()
        .manifest;
    assert_eq!(markers.entries.len(), 2);

    // Failback, as the runbook does it: reprotect (rewind a), catch up, fence b, promote a.
    let mut progress = r.subscribe();
    r.reprotect(&res, &b, false, &ctx(1)).await.unwrap();
    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    let mut last = None;
    while let Ok(p) = progress.try_recv() {
        assert_eq!(p.operation, Operation::CatchUp);
        last = Some(p);
    }
    let last = last.expect("catch-up progress");
    assert_eq!(
        (last.site.as_str(), last.bytes_done),
        ("a", last.bytes_total)
    );
    let saved = r.saved_aside();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].site, a);
    assert_eq!(saved[0].rows.get("public.items"), Some(&1));
    let file = fs::read_to_string(saved[0].dir.join("public.items.copy")).unwrap();
    assert!(file.contains("split-brain write at a"), "{file}");
    assert!(
        !item_ids(c.a.port).await.contains(&1001),
        "the rewind removed the split-brain row"
    );

    r.fence(&res, &b, &ctx(2)).await.unwrap();
    let p = r.promote(&res, &a, &ctx(2)).await.unwrap();
    assert_eq!(
        p.rpo,
        Some(Duration::ZERO),
        "a planned failback loses nothing"
    );
    let v = r
        .integrity(
            &res,
            &a,
            &IntegrityRequest::Verify { expected: markers },
            &ctx(2),
        )
        .await
        .unwrap();
    assert!(v.mismatches.is_empty(), "{:?}", v.mismatches);
    r.reprotect(&res, &a, true, &ctx(2)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
    assert_eq!(
        r.saved_aside().len(),
        1,
        "a clean switchover has nothing to save aside"
    );

    // Every row written on either side before its side's demotion is present.
    let want: Vec<i32> = (1..=20).collect();
    assert_eq!(item_ids(c.a.port).await, want);
    insert(c.a.port, 21..=21, "written at a after the failback").await;
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(item_ids(c.b.port).await.len(), 21);
    let check = r
        .integrity(&res, &a, &IntegrityRequest::Check, &ctx(2))
        .await
        .unwrap();
    assert!(check.mismatches.is_empty(), "{:?}", check.mismatches);
    assert_eq!(check.manifest.entries["table/public.items"].size, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_reported_while_a_load_runs() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &["public.items"]);
    let (res, _, b) = ids();
    client(c.a.port)
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    // Replay paused on the standby: WAL arrives but is not applied, as on a slow replica.
    client(c.b.port)
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let load = tokio::spawn({
        let port = c.a.port;
        async move {
            let c = client(port).await;
            let until = Instant::now() + Duration::from_millis(2500);
            let mut i = 0;
            while Instant::now() < until {
                c.execute("INSERT INTO items VALUES ($1, 'load')", &[&i])
                    .await
                    .unwrap();
                i += 1;
            }
            i
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = r.status(&res).await.unwrap();
    let standby = st.sites.iter().find(|s| s.site == b).unwrap();
    assert_eq!(standby.role, Role::Replica);
    assert!(standby.lag_bytes.unwrap() > 0, "{standby:?}");
    assert!(
        standby.lag.unwrap() > Duration::from_millis(100),
        "{standby:?}"
    );
    let rows = load.await.unwrap();
    client(c.b.port)
        .await
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(item_ids(c.b.port).await.len(), rows as usize);
    let st = r.status(&res).await.unwrap();
    let standby = st.sites.iter().find(|s| s.site == b).unwrap();
    assert_eq!(standby.lag_bytes, Some(0), "{standby:?}");

    // A planned switchover while writes keep coming until the fence: nothing is lost.
    insert(c.a.port, 100_000..=100_050, "just before the switchover").await;
    let p = r.switchover(&res, &b, &ctx(1)).await.unwrap();
    assert_eq!(p.rpo, Some(Duration::ZERO));
    assert_eq!(item_ids(c.b.port).await.len(), rows as usize + 51);
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    assert!(r.saved_aside().is_empty(), "nothing diverged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_replication_suite() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &[]);
    let (res, a, b) = ids();
    ReplicationSuite::new(res, a, b, None).run(&r).await;
    // The drill copy was made (pg_basebackup, started on the drill port) and removed.
    assert!(!Path::new(&format!("{}.idns-drill", c.a.data.display())).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_fence_refuses_writes_and_the_switch_loses_nothing() {
    let Some(c) = PgPair::start() else { return };
    let r = backend_fencing(&c, &["public.items"], "read_only");
    let (res, a, b) = ids();
    client(c.a.port)
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    insert(c.a.port, 1..=5, "before the fence").await;
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Fenced, Role::Replica]);
    let refused = client(c.a.port)
        .await
        .execute("INSERT INTO items VALUES (99, 'after the fence')", &[])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("read-only") || format!("{refused:?}").contains("read-only"),
        "{refused:?}"
    );
    let p = r.promote(&res, &b, &ctx(1)).await.unwrap();
    assert_eq!(p.rpo, Some(Duration::ZERO));
    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    assert_eq!(item_ids(c.a.port).await, [1, 2, 3, 4, 5]);
    assert!(r.saved_aside().is_empty());
}
