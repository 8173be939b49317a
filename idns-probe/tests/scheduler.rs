//! The scheduler under tokio's paused clock: spread, fixed rate, removal, the concurrency bound,
//! slow probes, and a closed sink.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use idns_core::{Probe, ProbeOutcome, ProbeReport, ProbeStatus};
use idns_probe::{Error, ScheduledProbe, Scheduler, SchedulerOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Shared record of check starts, by `site/probe`, and of concurrency.
#[derive(Debug, Default)]
struct Log {
    starts: Mutex<BTreeMap<String, Vec<Instant>>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

#[derive(Debug)]
struct Fake {
    name: String,
    takes: Duration,
    log: Arc<Log>,
}

#[async_trait]
impl Probe for Fake {
    async fn check(&self) -> ProbeOutcome {
        let start = Instant::now();
        self.log
            .starts
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default()
            .push(start);
        let now = self.log.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.takes).await;
        self.log.running.fetch_sub(1, Ordering::SeqCst);
        ProbeOutcome::up(start.elapsed())
    }
}

fn probe(site: &str, id: &str, interval_ms: u64, takes_ms: u64, log: &Arc<Log>) -> ScheduledProbe {
    ScheduledProbe {
        site: site.parse().unwrap(),
        id: id.parse().unwrap(),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_secs(2),
        probe: Arc::new(Fake {
            name: format!("{site}/{id}"),
            takes: Duration::from_millis(takes_ms),
            log: log.clone(),
        }),
    }
}

fn options(seed: u64) -> SchedulerOptions {
    SchedulerOptions::new("local".parse().unwrap()).seed(seed)
}

fn starts(log: &Log, name: &str) -> Vec<Instant> {
    log.starts
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .unwrap_or_default()
}

fn assert_spacing(starts: &[Instant], interval: Duration) {
    for w in starts.windows(2) {
        let gap = w[1] - w[0];
        let off = gap.abs_diff(interval);
        assert!(
            off <= Duration::from_millis(2),
            "gap {gap:?} for interval {interval:?}"
        );
    }
}

/// First start of each of 50 probes, relative to the scheduler's start.
async fn first_offsets(seed: u64) -> Vec<Duration> {
    let log = Arc::new(Log::default());
    let (tx, _rx) = mpsc::unbounded_channel::<ProbeReport>();
    let t0 = Instant::now();
    let probes: Vec<_> = (0..50)
        .map(|i| probe(&format!("s{i}"), "p", 1000, 1, &log))
        .collect();
    let (handle, task) = Scheduler::spawn(options(seed), tx, probes);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    (0..50)
        .map(|i| starts(&log, &format!("s{i}/p"))[0] - t0)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn start_times_are_spread_over_the_interval_and_replay_with_the_seed() {
    let a = first_offsets(1).await;
    assert!(a.iter().all(|d| *d < Duration::from_millis(1002)), "{a:?}");
    let buckets: std::collections::BTreeSet<u128> = a.iter().map(|d| d.as_millis() / 100).collect();
    assert!(buckets.len() >= 8, "first starts bunch up: {a:?}");
    assert_eq!(first_offsets(1).await, a, "same seed, same schedule");
    assert_ne!(first_offsets(2).await, a, "another seed, another schedule");
}

#[tokio::test(start_paused = true)]
async fn intervals_are_kept_at_a_fixed_rate() {
    let log = Arc::new(Log::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The check takes 300 ms of a 1 s interval: the next run is still due 1 s after the last
    // one started, not 1 s after it ended.
    let probes = vec![
        probe("a", "web", 1000, 300, &log),
        probe("b", "db", 250, 10, &log),
    ];
    let (handle, task) = Scheduler::spawn(options(7), tx, probes);
    tokio::time::sleep(Duration::from_secs(10)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    let a = starts(&log, "a/web");
    let b = starts(&log, "b/db");
    assert!((9..=10).contains(&a.len()), "{}", a.len());
    assert!((39..=40).contains(&b.len()), "{}", b.len());
    assert_spacing(&a, Duration::from_secs(1));
    assert_spacing(&b, Duration::from_millis(250));

    let mut reports = Vec::new();
    while let Ok(r) = rx.try_recv() {
        reports.push(r);
    }
    assert!(reports.len() >= a.len() + b.len() - 2);
    let r = reports.iter().find(|r| r.probe.as_str() == "web").unwrap();
    assert_eq!((r.site.as_str(), r.observer.as_str()), ("a", "local"));
    assert_eq!(r.outcome.status, ProbeStatus::Up);
    let stats = handle.stats();
    assert_eq!(stats.missed, 0);
    assert_eq!(stats.started as usize, a.len() + b.len());
    assert!(
        stats.lateness.quantile(1.0) <= Duration::from_millis(2),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn removing_or_adding_a_probe_leaves_the_others_alone() {
    let log = Arc::new(Log::default());
    let (tx, _rx) = mpsc::unbounded_channel();
    let probes = vec![
        probe("a", "p", 1000, 5, &log),
        probe("b", "p", 1000, 5, &log),
    ];
    let (handle, task) = Scheduler::spawn(options(3), tx, probes);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    handle
        .remove(&"b".parse().unwrap(), &"p".parse().unwrap())
        .unwrap();
    let removed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let added_at = Instant::now();
    handle.add(probe("c", "p", 1000, 5, &log)).unwrap();
    tokio::time::sleep(Duration::from_millis(5000)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();

    let a = starts(&log, "a/p");
    assert_eq!(a.len(), 10);
    assert_spacing(&a, Duration::from_secs(1));
    let b = starts(&log, "b/p");
    assert!(b.len() >= 3 && b.iter().all(|t| *t < removed_at), "{b:?}");
    let c = starts(&log, "c/p");
    assert!(
        c[0] >= added_at && c[0] < added_at + Duration::from_millis(1002),
        "{c:?}"
    );
    assert_spacing(&c, Duration::from_secs(1));
    assert_eq!(handle.stats().probes, 2);
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_in_flight_checks_run_at_once() {
    let log = Arc::new(Log::default());
    let (tx, _rx) = mpsc::unbounded_channel();
    let probes: Vec<_> = (0..20)
        .map(|i| probe(&format!("s{i}"), "p", 1000, 500, &log))
        .collect();
    let (handle, task) = Scheduler::spawn(options(5).max_in_flight(5), tx, probes);
    tokio::time::sleep(Duration::from_secs(5)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(log.peak.load(Ordering::SeqCst), 5);
    // 20 checks of 500 ms per second through 5 places: 10 per second at most, so runs wait,
    // show as late, and some are skipped.
    let stats = handle.stats();
    assert!(stats.started <= 5 * 10 + 5, "{stats:?}");
    assert!(
        stats.lateness.quantile(0.99) >= Duration::from_millis(100),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_times_out_without_delaying_the_others() {
    let log = Arc::new(Log::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // "slow" takes 10 s per check, its timeout is 2 s.
    let probes = vec![
        probe("slow", "p", 1000, 10_000, &log),
        probe("fast", "p", 1000, 5, &log),
    ];
    let (handle, task) = Scheduler::spawn(options(9).max_in_flight(2), tx, probes);
    tokio::time::sleep(Duration::from_secs(10)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();

    let fast = starts(&log, "fast/p");
    assert_eq!(fast.len(), 10);
    assert_spacing(&fast, Duration::from_secs(1));
    let mut slow = Vec::new();
    while let Ok(r) = rx.try_recv() {
        if r.site.as_str() == "slow" {
            slow.push(r);
        }
    }
    assert!(slow.len() >= 3, "{slow:?}");
    for r in &slow {
        assert_eq!(r.outcome.status, ProbeStatus::Timeout, "{r:?}");
        assert_eq!(r.outcome.latency, Duration::from_secs(2));
    }
    // One probe never runs twice at once: the slots that came due while it ran were skipped.
    let s = starts(&log, "slow/p");
    for w in s.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(2), "{s:?}");
    }
    assert!(handle.stats().missed >= 3);
}

#[tokio::test(start_paused = true)]
async fn the_scheduler_stops_when_the_sink_closes() {
    let log = Arc::new(Log::default());
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let (_handle, task) = Scheduler::spawn(options(0), tx, vec![probe("a", "p", 100, 1, &log)]);
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::SinkClosed(_))), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn a_closure_sink_receives_reports() {
    let log = Arc::new(Log::default());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let sink = idns_probe::sink_fn(move |r: ProbeReport| {
        let g = g.clone();
        async move {
            g.lock().unwrap().push(r.site.to_string());
            Ok::<(), std::convert::Infallible>(())
        }
    });
    let (handle, task) = Scheduler::spawn(options(0), sink, vec![probe("a", "p", 100, 1, &log)]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    let n = got.lock().unwrap().len();
    assert!((9..=10).contains(&n), "{n}");
}

#[derive(Debug)]
struct Panics(Arc<AtomicUsize>);

#[async_trait]
impl Probe for Panics {
    async fn check(&self) -> ProbeOutcome {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a buggy probe");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_stays_scheduled_and_does_not_stop_the_others() {
    let log = Arc::new(Log::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, _rx) = mpsc::unbounded_channel();
    let bad = ScheduledProbe {
        site: "bad".parse().unwrap(),
        id: "p".parse().unwrap(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        probe: Arc::new(Panics(calls.clone())),
    };
    let (handle, task) =
        Scheduler::spawn(options(4), tx, vec![bad, probe("good", "p", 1000, 5, &log)]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert!(calls.load(Ordering::SeqCst) >= 4);
    assert_eq!(starts(&log, "good/p").len(), 5);
}
