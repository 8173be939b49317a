//! Real servers: postgres, pg_basebackup, pg_rewind
//!
//! A primary and a streaming standby from the Debian binaries, in a temporary directory on
//! free loopback ports, driven through failover, split brain, rewind and failback; fencing
//! that holds, promotions refused beside a writable primary, rows saved aside before every
//! rewind that could lose them, and control through a remote shell.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ctx, drill};
use idns_core::test_util::conformance::ReplicationSuite;
use idns_core::{
    BackendError, IntegrityRequest, OpContext, ReplicationBackend, ResourceId, Role, SiteId,
};
use idns_replication::Operation;
use idns_replication::postgres::{PgConfig, PostgresReplication};
use idns_replication::testing::{PgNode, PgPair, is_root, pg};

fn backend(c: &PgPair, tables: &[&str]) -> PostgresReplication {
    let spec = c.spec("db", ["a", "b"], tables, "stop");
    PostgresReplication::new(PgConfig::try_from(spec).unwrap())
}

/// A step an operator forced.
fn forced(epoch: u64) -> OpContext {
    OpContext {
        force: true,
        ..ctx(epoch)
    }
}

async fn in_recovery(port: u16) -> bool {
    client(port)
        .await
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Runs `sql` on a fresh connection and returns the server's error message.
async fn refused(port: u16, sql: &str) -> String {
    match client(port).await.batch_execute(sql).await {
        Ok(()) => panic!("{sql:?} succeeded"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    }
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
    let mut saving = false;
    while let Ok(p) = progress.try_recv() {
        match p.operation {
            Operation::CatchUp => last = Some(p),
            Operation::SaveAside => saving = true,
            other => panic!("unexpected progress {other:?}"),
        }
    }
    assert!(saving, "progress of saving the split-brain row aside");
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
    ReplicationSuite::new(res, a, b, None)
        .expecting_refusal_beside_writable_primary()
        .run(&r)
        .await;
    // The drill copy was made (pg_basebackup, started on the drill port) and removed.
    assert!(!Path::new(&format!("{}.idns-drill", c.a.data.display())).exists());
}

async fn create_items(port: u16) {
    client(port)
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_primary_restarts_read_only_whatever_a_client_asks() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &["public.items"]);
    let (res, a, b) = ids();
    create_items(c.a.port).await;
    insert(c.a.port, 1..=5, "before the fence").await;
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Fenced, Role::Replica]);
    assert!(c.a.try_client().await.is_err(), "a fenced server is down");

    // Its service manager starts it again: it comes up as a standby, and no client setting
    // makes it take a write.
    c.a.start();
    assert!(
        in_recovery(c.a.port).await,
        "the fenced primary came back as a primary"
    );
    for sql in [
        "INSERT INTO items VALUES (99, 'after the fence')",
        "BEGIN READ WRITE; INSERT INTO items VALUES (99, 'after the fence'); COMMIT",
        "SET default_transaction_read_only = off; INSERT INTO items VALUES (99, 'after the fence')",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; \
         INSERT INTO items VALUES (99, 'after the fence')",
    ] {
        let e = refused(c.a.port, sql).await;
        assert!(
            e.contains("read-only") || e.contains("during recovery"),
            "{sql}: {e}"
        );
    }
    assert_eq!(item_ids(c.a.port).await, [1, 2, 3, 4, 5]);

    // The switch still loses nothing, and the restarted server simply follows.
    let p = r.promote(&res, &b, &ctx(1)).await.unwrap();
    assert_eq!(p.rpo, Some(Duration::ZERO));
    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    insert(c.b.port, 6..=6, "at b after the switch").await;
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(item_ids(c.a.port).await, [1, 2, 3, 4, 5, 6]);
    assert!(r.saved_aside().is_empty(), "nothing diverged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_beside_a_writable_primary_is_refused_unless_forced() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &["public.items"]);
    let (res, _, b) = ids();
    create_items(c.a.port).await;
    let err = r.promote(&res, &b, &ctx(1)).await.unwrap_err();
    assert!(matches!(err, BackendError::Refused(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("db at a is reachable and writable"),
        "{err}"
    );
    assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
    assert!(in_recovery(c.b.port).await);
    insert(c.a.port, 1..=1, "the primary still takes writes").await;

    let p = r.promote(&res, &b, &forced(1)).await.unwrap();
    assert!(p.rpo.is_some(), "{p:?}");
    assert_eq!(roles(&r).await, [Role::Primary, Role::Primary]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_an_old_primary_restarted_after_a_clean_switchover_are_saved_before_the_rewind() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &["public.items"]);
    let (res, a, b) = ids();
    create_items(c.a.port).await;
    insert(c.a.port, 1..=5, "before the switchover").await;
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    let p = r.promote(&res, &b, &ctx(1)).await.unwrap();
    assert_eq!(p.rpo, Some(Duration::ZERO), "a clean switchover");
    insert(c.b.port, 6..=7, "at b after the switchover").await;

    // Someone lifts the fence and starts the old primary as a primary: it takes writes.
    fs::remove_file(c.a.data.join("standby.signal")).unwrap();
    c.a.start();
    assert!(!in_recovery(c.a.port).await);
    insert(
        c.a.port,
        1001..=1003,
        "written at the old primary after the switchover",
    )
    .await;

    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    let saved = r.saved_aside();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].site, a);
    assert_eq!(saved[0].rows.get("public.items"), Some(&3));
    assert_eq!(
        saved[0].files.get("public.items").map(String::as_str),
        Some("public.items.copy")
    );
    let file = fs::read_to_string(saved[0].dir.join("public.items.copy")).unwrap();
    let ids: BTreeSet<&str> = file
        .lines()
        .map(|l| {
            assert!(
                l.ends_with("\twritten at the old primary after the switchover"),
                "{l}"
            );
            l.split('\t').next().unwrap()
        })
        .collect();
    assert_eq!(ids, BTreeSet::from(["1001", "1002", "1003"]));
    assert!(saved[0].dir.join("summary.json").exists());
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(item_ids(c.a.port).await, [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_table_with_an_odd_name_are_saved_intact_under_a_safe_file_name() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &[]);
    let (res, a, b) = ids();
    let table = r#""we.ird"."odd name/x""#;
    client(c.a.port)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA \"we.ird\"; CREATE TABLE {table} (id int, note text); \
             INSERT INTO {table} VALUES (1, 'before')"
        ))
        .await
        .unwrap();
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    // a dies; b takes over; a comes back as a second primary and takes writes.
    c.a.stop("immediate");
    r.promote(&res, &b, &ctx(1)).await.unwrap();
    c.a.start();
    client(c.a.port)
        .await
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (1, 'before'), (2, E'tab\\there'), \
             (3, E'line\\nbreak \\\\ back'), (4, 'it''s \"quoted\"')"
        ))
        .await
        .unwrap();

    let mut progress = r.subscribe();
    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    let saved = r.saved_aside();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].site, a);
    let key = "we.ird.odd name/x";
    assert_eq!(saved[0].rows.get(key), Some(&4), "{saved:?}");
    let name = "we%2Eird.odd%20name%2Fx.copy";
    assert_eq!(saved[0].files.get(key).map(String::as_str), Some(name));
    let mut entries: Vec<String> = fs::read_dir(&saved[0].dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["summary.json", name]);
    let file = fs::read_to_string(saved[0].dir.join(name)).unwrap();
    let rows: BTreeSet<&str> = file.lines().collect();
    let want = BTreeSet::from([
        "1\tbefore",
        "2\ttab\\there",
        "3\tline\\nbreak \\\\ back",
        "4\tit's \"quoted\"",
    ]);
    assert_eq!(rows, want, "{file:?}");
    assert_eq!(file.lines().count(), 4);

    let mut last = None;
    while let Ok(p) = progress.try_recv() {
        if p.operation == Operation::SaveAside {
            assert_eq!(p.file.as_deref(), Some(key));
            last = Some(p);
        }
    }
    let last = last.expect("progress of saving rows aside");
    assert!(
        last.bytes_done > 0 && last.bytes_done == last.bytes_total,
        "{last:?}"
    );

    // The rewound site follows: it holds b's rows only.
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    let n: i64 = client(c.a.port)
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// Stops servers this test moved away from where [`PgPair`] stops them.
struct Moved(Vec<PgNode>);

impl Drop for Moved {
    fn drop(&mut self) {
        for n in &self.0 {
            for data in [
                n.data.display().to_string(),
                format!("{}.idns-drill", n.data.display()),
            ] {
                if Path::new(&data).exists() {
                    pg("pg_ctl", &["stop", "-D", &data, "-m", "immediate"]);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_and_a_switch_run_through_a_remote_shell_on_a_data_directory_with_a_space() {
    let Some(c) = PgPair::start() else { return };
    c.b.stop("fast");
    c.a.stop("fast");
    let root = c.dir().join("pg data");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    let moved = |n: &PgNode, name: &str| PgNode {
        data: root.join(name),
        ..n.clone()
    };
    let (na, nb) = (moved(&c.a, "a"), moved(&c.b, "b"));
    fs::rename(&c.a.data, &na.data).unwrap();
    fs::rename(&c.b.data, &nb.data).unwrap();
    let _moved = Moved(vec![na.clone(), nb.clone()]);
    na.start();
    nb.start();
    // A stand-in for ssh: it joins its arguments with spaces into one command line for a
    // shell, as ssh does for the remote one.
    let ssh = c.dir().join("remote-shell");
    let user = if is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    fs::write(&ssh, format!("#!/bin/sh\nexec {user}sh -c \"$*\"\n")).unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = c.spec("db", ["a", "b"], &["public.items"], "stop");
    for (site, node) in spec.resources[0].sites.iter_mut().zip([&na, &nb]) {
        site.data_dir = node.data.clone();
        site.command_prefix = vec![ssh.display().to_string()];
    }
    let r = PostgresReplication::new(PgConfig::try_from(spec).unwrap());
    let (res, a, b) = ids();
    create_items(na.port).await;
    insert(na.port, 1..=3, "before the drill").await;
    assert!(
        r.compare_tables(&res, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    // A drill: a copy of b beside its data directory, started on the drill port, removed.
    r.promote(&res, &b, &drill(1)).await.unwrap();
    let copy = format!("{}.idns-drill", nb.data.display());
    assert!(Path::new(&copy).exists());
    assert!(
        !in_recovery(nb.drill_port).await,
        "the drill copy is writable"
    );
    assert_eq!(item_ids(nb.drill_port).await, [1, 2, 3]);
    r.fence(&res, &b, &drill(1)).await.unwrap();
    assert!(!Path::new(&copy).exists());
    assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);

    // A switch; then the old primary, restarted as a primary, takes a write and is stopped.
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    assert!(na.data.join("standby.signal").exists());
    let p = r.promote(&res, &b, &ctx(1)).await.unwrap();
    assert_eq!(p.rpo, Some(Duration::ZERO));
    fs::remove_file(na.data.join("standby.signal")).unwrap();
    na.start();
    insert(na.port, 1001..=1001, "written at a after the switch").await;
    na.stop("fast");

    // Reprotect compares through psql on a socket beside the data directory, rewinds, follows.
    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    let saved = r.saved_aside();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].rows.get("public.items"), Some(&1));
    let file = fs::read_to_string(saved[0].dir.join("public.items.copy")).unwrap();
    assert_eq!(file, "1001\twritten at a after the switch\n");
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    assert_eq!(item_ids(na.port).await, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_holding_writes_past_the_switch_point_is_saved_from_before_its_rewind() {
    let Some(c) = PgPair::start() else { return };
    let r = backend(&c, &["public.items"]);
    let (res, a, b) = ids();
    create_items(c.a.port).await;
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    r.promote(&res, &b, &ctx(1)).await.unwrap();
    // The old primary is started as a primary, written to, fenced again, and started once
    // more by its service manager: now a standby whose own WAL goes past b's switch point.
    fs::remove_file(c.a.data.join("standby.signal")).unwrap();
    c.a.start();
    insert(c.a.port, 7..=7, "written at a after the switch").await;
    r.fence(&res, &a, &ctx(1)).await.unwrap();
    c.a.start();
    assert!(in_recovery(c.a.port).await);

    r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
    let saved = r.saved_aside();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let file = fs::read_to_string(saved[0].dir.join("public.items.copy")).unwrap();
    assert_eq!(file, "7\twritten at a after the switch\n");
    assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
    assert!(item_ids(c.a.port).await.is_empty(), "a follows b now");
}
