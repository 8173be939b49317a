//! Real servers: etcd (one member and three, on loopback high ports).
//!
//! The leadership of one controller among several (campaign, resignation, the client-side
//! deadline when etcd is lost or loses quorum) and the observers' report board (reports bound
//! to each observer's lease, silent observers, lying keys).

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use idns_core::etcd::{
    Client, EtcdStore, LeaderState, Leadership, LeadershipConfig, ReportBoard, Reports,
};
use idns_core::test_util::etcd::EtcdCluster;
use idns_core::{
    BackendError, DnsName, Epoch, Journal, ObserverId, Ownership, ProbeOutcome, ProbeReport,
    SiteId, StateStore,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn Error>>;

const KEY: &str = "/idns/app.example.com/leader";
const PREFIX: &str = "/idns/app.example.com";

/// How long any state change may take to show: generous, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Short leases, so the tests do not wait long: a keep-alive every second, the right to act
/// ending two seconds after the last successful one was sent.
fn config() -> LeadershipConfig {
    LeadershipConfig {
        ttl: Duration::from_secs(3),
        margin: Duration::from_secs(1),
    }
}

fn client(urls: Vec<String>) -> Result<Client, Box<dyn Error>> {
    Ok(Client::new(urls, Duration::from_secs(1))?)
}

/// Waits until `rx`'s state satisfies `ok`, failing the test after [`PATIENCE`].
async fn wait_until(
    rx: &mut watch::Receiver<LeaderState>,
    what: &str,
    ok: impl FnMut(&LeaderState) -> bool,
) -> Result<LeaderState, Box<dyn Error>> {
    let waited = match tokio::time::timeout(PATIENCE, rx.wait_for(ok)).await {
        Ok(Ok(state)) => Ok(state.clone()),
        Ok(Err(_)) => Err(format!("the leadership stopped before: {what}")),
        Err(_) => Err(format!("not within {PATIENCE:?}: {what}")),
    };
    waited.map_err(|e| format!("{e}; now {:?}", *rx.borrow()).into())
}

fn is_leader(s: &LeaderState) -> bool {
    matches!(s, LeaderState::Leader { .. })
}

/// Waits until one of the two leads and the other follows it, by name; returns (leader,
/// follower) indices into `pair`.
async fn settled(pair: [&Leadership; 2]) -> Result<(usize, usize), Box<dyn Error>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let states = [pair[0].current(), pair[1].current()];
        for (l, f) in [(0, 1), (1, 0)] {
            if let (
                LeaderState::Leader { .. },
                LeaderState::Follower {
                    leader: Some(holder),
                },
            ) = (&states[l], &states[f])
                && holder == pair[l].id()
            {
                return Ok((l, f));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no leader and follower within {PATIENCE:?}: {states:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watches two controllers' states all along and records every moment both had the right to
/// act.
struct Overlap {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<String>>,
}

impl Overlap {
    fn watch(a: &Leadership, b: &Leadership) -> Self {
        let (a, b) = (a.state(), b.state());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let now = Instant::now();
                let (sa, sb) = (a.borrow().clone(), b.borrow().clone());
                if sa.is_leader_at(now) && sb.is_leader_at(now) {
                    seen.push(format!("{sa:?} and {sb:?}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        Self { stop, task }
    }

    async fn check(self) -> TestResult {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.await?;
        assert!(seen.is_empty(), "two leaders at once: {seen:?}");
        Ok(())
    }
}

/// Both controllers' states now, checked: never two leaders with the right to act.
fn assert_one_leader_at_most(a: &Leadership, b: &Leadership) {
    let now = Instant::now();
    let (sa, sb) = (a.current(), b.current());
    assert!(
        !(sa.is_leader_at(now) && sb.is_leader_at(now)),
        "two leaders: {sa:?} and {sb:?}"
    );
}

/// Follows a leader's state until it leaves `Leader`, and checks it did so only once the
/// deadline of its last `Leader` state had passed, saying the deadline is why; then waits
/// until the follower, which cannot reach etcd either, knows nothing.
async fn both_step_back(
    leader: &mut watch::Receiver<LeaderState>,
    follower: &mut watch::Receiver<LeaderState>,
) -> TestResult {
    let mut last_deadline = None;
    let gone = loop {
        let state = leader.borrow_and_update().clone();
        match state {
            LeaderState::Leader { deadline, .. } => last_deadline = Some(deadline),
            other => break other,
        }
        tokio::time::timeout(PATIENCE, leader.changed())
            .await
            .map_err(|_| format!("still leader after {PATIENCE:?}: {:?}", *leader.borrow()))??;
    };
    let stepped_down = Instant::now();
    let deadline = last_deadline.ok_or("the leader was not leading when etcd was lost")?;
    assert!(
        stepped_down >= deadline,
        "stepped down before its deadline: {gone:?}"
    );
    assert!(
        matches!(&gone, LeaderState::Unknown { why } if why.contains("leadership lost") && why.contains("deadline")),
        "{gone:?}"
    );
    wait_until(follower, "the follower knows nothing", |s| {
        matches!(s, LeaderState::Unknown { .. })
    })
    .await?;
    Ok(())
}

fn journal() -> Result<Journal, Box<dyn Error>> {
    let owner = Ownership {
        epoch: Epoch::new(1),
        site: Some(SiteId::try_from("east")?),
    };
    Ok(Journal::adopt(
        DnsName::try_from("app.example.com")?,
        &owner,
        SiteId::try_from("east")?,
    ))
}

#[tokio::test]
async fn one_of_two_leads_and_resigning_hands_over_with_a_new_revision() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let east = Leadership::start(c.clone(), KEY, "east", config())?;
    let west = Leadership::start(c.clone(), KEY, "west", config())?;
    let overlap = Overlap::watch(&east, &west);
    let pair = [&east, &west];
    let (l, f) = settled(pair).await?;
    assert_one_leader_at_most(&east, &west);

    let LeaderState::Leader {
        create_revision: first,
        lease,
        deadline,
        since,
    } = pair[l].current()
    else {
        panic!("not the leader any more: {:?}", pair[l].current());
    };
    assert!(since < deadline);
    let kv = c.get(KEY).await?.kvs.remove(0);
    assert_eq!(
        kv.value,
        pair[l].id().as_bytes(),
        "the key names the leader"
    );
    assert_eq!((kv.create_revision, kv.lease), (first, Some(lease)));

    // The leader's store is guarded by its key; the follower gets none.
    let store = EtcdStore::new(c.clone(), PREFIX, "prod")?;
    assert!(pair[f].guarded_store(store.clone()).is_none());
    let old_guard = pair[l]
        .guarded_store(store.clone())
        .ok_or("the leader has no guarded store")?;
    let journal = journal()?;
    let r1 = old_guard.save(&journal, None).await?;

    // Resigning: the key goes with the lease, and the other takes it.
    let (leader, follower) = if l == 0 { (east, west) } else { (west, east) };
    let mut after = leader.state();
    let follower_id = follower.id().to_owned();
    leader.resign().await?;
    assert!(
        matches!(&*after.borrow_and_update(), LeaderState::Unknown { why } if why.contains("resigned")),
        "{:?}",
        *after.borrow()
    );
    let mut rx = follower.state();
    let now = wait_until(&mut rx, "the follower takes over", is_leader).await?;
    let second = now.create_revision().ok_or("not a leader")?;
    assert!(second > first, "{second} after {first}");
    let kv = c.get(KEY).await?.kvs.remove(0);
    assert_eq!(kv.value, follower_id.as_bytes());
    assert_eq!(kv.create_revision, second);

    // The old leader's guard no longer passes; the new one's does.
    let lost = old_guard.save(&journal, Some(r1)).await.unwrap_err();
    assert!(
        matches!(&lost, BackendError::Conflict(m) if m.contains("leadership was lost") && m.contains(&format!("created again at revision {second}"))),
        "{lost}"
    );
    let new_guard = follower
        .guarded_store(store)
        .ok_or("the new leader has no guarded store")?;
    assert!(new_guard.save(&journal, Some(r1)).await? > r1);
    overlap.check().await?;

    // Dropping the handle stops its task and says so.
    drop(follower);
    assert!(matches!(&*rx.borrow(), LeaderState::Unknown { why } if why.contains("dropped")));
    Ok(())
}

#[tokio::test]
async fn a_leader_that_loses_etcd_steps_down_at_its_own_deadline() -> TestResult {
    let Some(mut etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let east = Leadership::start(c.clone(), KEY, "east", config())?;
    let mut rx = east.state();
    wait_until(&mut rx, "the only controller leads", is_leader).await?;
    let west = Leadership::start(c.clone(), KEY, "west", config())?;
    let mut wx = west.state();
    wait_until(
        &mut wx,
        "the second follows the first",
        |s| matches!(s, LeaderState::Follower { leader: Some(l) } if l == "east"),
    )
    .await?;
    let overlap = Overlap::watch(&east, &west);

    // etcd crashes: no keep-alive reaches it, and nothing expires there either.
    etcd.kill(0);
    both_step_back(&mut rx, &mut wx).await?;
    assert_one_leader_at_most(&east, &west);

    // etcd is back with the old lease (renewed to its full TTL): the old leader revokes it,
    // and one of the two leads again.
    etcd.restart(0).await;
    let (l, _) = settled([&east, &west]).await?;
    assert_one_leader_at_most(&east, &west);
    let kv = c.get(KEY).await?.kvs.remove(0);
    let leader = [&east, &west][l];
    assert_eq!(kv.value, leader.id().as_bytes());
    assert_eq!(Some(kv.create_revision), leader.current().create_revision());
    overlap.check().await
}

#[tokio::test]
async fn three_members_losing_quorum_make_the_leader_step_down_until_it_is_back() -> TestResult {
    let Some(mut etcd) = EtcdCluster::start(3).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let east = Leadership::start(c.clone(), KEY, "east", config())?;
    let west = Leadership::start(c.clone(), KEY, "west", config())?;
    let overlap = Overlap::watch(&east, &west);
    let (l, f) = settled([&east, &west]).await?;
    let pair = [&east, &west];
    let first = pair[l].current().create_revision().ok_or("not a leader")?;

    // Two of three members stop: the survivor has no quorum, refuses every request and
    // expires no lease.
    let mut lx = pair[l].state();
    let mut fx = pair[f].state();
    etcd.stop(0);
    etcd.stop(1);
    both_step_back(&mut lx, &mut fx).await?;
    assert_one_leader_at_most(&east, &west);

    // Quorum back: the same handles settle on one leader again.
    etcd.restart(0).await;
    etcd.restart(1).await;
    let (l, _) = settled([&east, &west]).await?;
    assert_one_leader_at_most(&east, &west);
    let again = pair[l].current().create_revision().ok_or("not a leader")?;
    assert!(again > first, "a new campaign: {again} after {first}");
    overlap.check().await
}

fn report(observer: &str, site: &str, probe: &str) -> Result<ProbeReport, Box<dyn Error>> {
    Ok(ProbeReport {
        site: site.try_into()?,
        probe: probe.try_into()?,
        observer: observer.try_into()?,
        outcome: ProbeOutcome::down(Duration::from_millis(12), "HTTP 503"),
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    })
}

fn observers(r: &Reports) -> Vec<String> {
    let mut seen: Vec<String> = r.reports.iter().map(|r| r.observer.to_string()).collect();
    seen.dedup();
    seen
}

/// Reads the board until `ok` holds, failing the test after [`PATIENCE`].
async fn read_until(
    board: &ReportBoard,
    what: &str,
    ok: impl Fn(&Reports) -> bool,
) -> Result<Reports, Box<dyn Error>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let read = board.read().await?;
        if ok(&read) {
            return Ok(read);
        }
        if Instant::now() > deadline {
            return Err(format!("not within {PATIENCE:?}: {what}; read {read:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn observers_publish_reports_that_vanish_with_their_lease() -> TestResult {
    let Some(etcd) = EtcdCluster::start(1).await else {
        return Ok(());
    };
    let c = client(etcd.client_urls())?;
    let ttl = Duration::from_secs(2);
    let east = ReportBoard::start(c.clone(), PREFIX, ObserverId::try_from("east")?, ttl)?;
    let west = ReportBoard::start(c.clone(), PREFIX, ObserverId::try_from("west")?, ttl)?;
    let e1 = report("east", "primary", "http")?;
    let e2 = report("east", "recovery", "http")?;
    let w1 = report("west", "primary", "http")?;
    east.publish(&e1).await?;
    east.publish(&e2).await?;
    west.publish(&w1).await?;
    assert_eq!(
        east.key_of(&e1),
        "/idns/app.example.com/reports/east/primary/http"
    );

    let read = west.read().await?;
    assert_eq!(read.reports, [e1.clone(), e2.clone(), w1.clone()]);
    assert!(read.rejected.is_empty(), "{:?}", read.rejected);

    // An observer publishes only its own reports.
    let foreign = east.publish(&w1).await.unwrap_err();
    assert!(
        matches!(&foreign, BackendError::Invalid(m) if m.contains("observer east") && m.contains("observer west")),
        "{foreign}"
    );

    // Keys written by hand that lie about their report, or hold none, are named and skipped.
    let lying = "/idns/app.example.com/reports/mallory/primary/http";
    c.put(lying, serde_json::to_vec(&w1)?, None).await?;
    let garbage = "/idns/app.example.com/reports/west/primary/db";
    c.put(garbage, "{not json", None).await?;
    let short = "/idns/app.example.com/reports/west/primary";
    c.put(short, serde_json::to_vec(&w1)?, None).await?;
    let read = east.read().await?;
    assert_eq!(read.reports, [e1.clone(), e2.clone(), w1.clone()]);
    let rejected: Vec<(&str, &str)> = read
        .rejected
        .iter()
        .map(|r| (r.key.as_str(), r.why.as_str()))
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected.iter().any(|(k, why)| *k == lying
            && why.contains("observer mallory")
            && why.contains("observer west")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|(k, why)| *k == garbage && why.contains("not a probe report")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|(k, why)| *k == short && why.contains("<observer>/<site>/<probe>")),
        "{rejected:?}"
    );
    for key in [lying, garbage, short] {
        c.delete(key).await?;
    }

    // Kept alive: the reports outlive their lease's TTL several times over.
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(observers(&east.read().await?), ["east", "west"]);

    // A lease lost behind the observer's back (a long cut) is replaced by the next publish.
    let lease = c.get(east.key_of(&e1)).await?.kvs[0]
        .lease
        .ok_or("no lease")?;
    c.lease_revoke(lease).await?;
    assert_eq!(observers(&west.read().await?), ["west"]);
    east.publish(&e1).await?;
    let renewed = c.get(east.key_of(&e1)).await?.kvs[0].lease;
    assert!(renewed.is_some() && renewed != Some(lease), "{renewed:?}");

    // Closing revokes at once; dropping lets the lease lapse. Either way: silent.
    east.close().await?;
    assert_eq!(west.read().await?.reports, [w1]);
    drop(west);
    let reader = ReportBoard::start(c.clone(), PREFIX, ObserverId::try_from("witness")?, ttl)?;
    read_until(&reader, "the dropped observer goes silent", |r| {
        r.reports.is_empty()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn bad_settings_are_refused_with_their_numbers() -> TestResult {
    let c = Client::new(["http://127.0.0.1:9"], Duration::from_secs(1))?;
    let refuse = |ttl: Duration, margin: Duration| {
        Leadership::start(c.clone(), KEY, "east", LeadershipConfig { ttl, margin })
            .unwrap_err()
            .to_string()
    };
    let zero = refuse(Duration::ZERO, Duration::ZERO);
    assert!(zero.contains("ttl = 0s: must be at least 1s"), "{zero}");
    let margin = refuse(Duration::from_secs(5), Duration::from_secs(6));
    assert!(
        margin.contains("margin = 6s: must be less than ttl (5s)"),
        "{margin}"
    );
    let long = refuse(Duration::from_secs(7200), Duration::from_secs(1));
    assert!(long.contains("ttl = 2h: must be at most 1h"), "{long}");

    let empty = Leadership::start(c.clone(), "", "", config())
        .unwrap_err()
        .to_string();
    assert!(empty.contains("key") && empty.contains("id"), "{empty}");

    let board = ReportBoard::start(
        c.clone(),
        "/",
        ObserverId::try_from("east")?,
        Duration::from_millis(500),
    )
    .unwrap_err()
    .to_string();
    assert!(board.contains("prefix"), "{board}");
    assert!(
        board.contains("ttl = 500ms: must be at least 1s"),
        "{board}"
    );
    Ok(())
}
