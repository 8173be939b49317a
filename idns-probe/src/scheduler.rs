//! The probe scheduler: runs any number of probes at their intervals and sends each report to a
//! [`ReportSink`].
//!
//! One task owns the schedule: a binary heap of deadlines (one entry per probe), a single
//! resettable timer for the earliest, and a bounded set of in-flight checks (a tokio
//! `JoinSet`, never more than [`SchedulerOptions::max_in_flight`]). No task exists for an idle
//! probe, so 10,000 probes cost 10,000 heap entries, not 10,000 sleeping tasks.
//!
//! Timing rules:
//! - **Spread**: a probe's first run is at a seeded pseudo-random offset within its interval
//!   (a function of the seed and the probe's site and id), so probes added together do not
//!   fire together, and the same seed gives the same schedule.
//! - **Fixed rate**: run *k* is due at `first + k × interval (+ jitter)`; a slow check does not
//!   push the next ones later. A run that comes due while the previous run of the same probe is
//!   still going is skipped and counted as missed (one probe never runs twice at once).
//! - **Jitter**: optionally each run is moved later by a seeded random amount below
//!   [`SchedulerOptions::jitter`].
//! - **Timeout**: each attempt is cut at [`ScheduledProbe::timeout`] and reported as
//!   [`ProbeStatus::Timeout`](idns_core::ProbeStatus::Timeout).
//! - **Concurrency**: at most `max_in_flight` checks run at once; due runs wait for a free
//!   place (their lateness shows in [`SchedulerStats`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use idns_core::{ObserverId, ProbeId, ProbeOutcome, ProbeReport, SiteId};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::Error;
use crate::sink::{ReportSink, SinkClosed};
use crate::spec::ScheduledProbe;

/// How the scheduler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerOptions {
    /// The vantage point named in every report.
    pub observer: ObserverId,
    /// Most checks running at once (default 1024).
    pub max_in_flight: usize,
    /// Seed of the start offsets and the jitter, so a schedule replays exactly.
    pub seed: u64,
    /// Each run starts up to this much after its slot, at random (default zero).
    pub jitter: Duration,
}

impl SchedulerOptions {
    /// Options for `observer` with the defaults.
    pub fn new(observer: ObserverId) -> Self {
        Self {
            observer,
            max_in_flight: 1024,
            seed: 0,
            jitter: Duration::ZERO,
        }
    }

    /// Sets the bound on concurrent checks (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets the seed of offsets and jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the largest random delay added to each run.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
}

/// Counters of the schedule kept, for metrics and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Checks started.
    pub started: u64,
    /// Runs skipped: the previous run of the probe was still going, or the scheduler fell a
    /// whole interval behind.
    pub missed: u64,
    /// Checks finished (reported).
    pub finished: u64,
    /// Probes currently scheduled.
    pub probes: usize,
    /// Checks running now.
    pub in_flight: usize,
    /// How late each start was after its due time (jitter excluded).
    pub lateness: Histogram,
}

/// A histogram of durations: 100 µs buckets up to 100 ms, then 10 ms buckets up to 10 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            fine: vec![0; 1000],
            coarse: vec![0; 1000],
            over: 0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Adds one duration.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros();
        self.count += 1;
        if us < 100_000 {
            self.fine[(us / 100) as usize] += 1;
        } else if us < 10_000_000 {
            self.coarse[(us / 10_000) as usize] += 1;
        } else {
            self.over += 1;
        }
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many recorded durations are at most `limit` (to the bucket's resolution).
    pub fn at_most(&self, limit: Duration) -> u64 {
        let us = limit.as_micros();
        let mut n = 0;
        for (i, c) in self.fine.iter().enumerate() {
            if (i as u128 + 1) * 100 <= us {
                n += c;
            }
        }
        for (i, c) in self.coarse.iter().enumerate() {
            if (i as u128 + 1) * 10_000 <= us {
                n += c;
            }
        }
        n
    }

    /// The `q` quantile (0.0–1.0), as the upper edge of its bucket; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.fine.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros((i as u64 + 1) * 100);
            }
        }
        for (i, c) in self.coarse.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros((i as u64 + 1) * 10_000);
            }
        }
        Duration::from_secs(10)
    }
}

/// What a finished check task returns: its slot and whether the sink took the report.
type Done = (u64, Result<(), SinkClosed>);

enum Command {
    Add(Box<ScheduledProbe>),
    Remove(SiteId, ProbeId),
    Shutdown,
}

/// Adds and removes probes while the scheduler runs; cheap to clone.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<SchedulerStats>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add(p) => write!(f, "Add({}/{})", p.site, p.id),
            Command::Remove(s, p) => write!(f, "Remove({s}/{p})"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl SchedulerHandle {
    /// Schedules a probe; one with the same site and id is replaced (its running check is
    /// cancelled).
    pub fn add(&self, probe: ScheduledProbe) -> Result<(), Error> {
        self.send(Command::Add(Box::new(probe)))
    }

    /// Stops running a probe; a check of it in flight is cancelled and not reported. Others
    /// keep their schedule.
    pub fn remove(&self, site: &SiteId, probe: &ProbeId) -> Result<(), Error> {
        self.send(Command::Remove(site.clone(), probe.clone()))
    }

    /// Stops the scheduler; checks in flight are cancelled.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// The counters so far.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn send(&self, c: Command) -> Result<(), Error> {
        self.tx.send(c).map_err(|_| Error::Stopped)
    }
}

/// Runs probes on schedule and sends each report to a sink. See the [module](self) docs.
pub struct Scheduler<S> {
    options: SchedulerOptions,
    sink: Arc<S>,
    rx: mpsc::UnboundedReceiver<Command>,
    stats: Arc<Mutex<SchedulerStats>>,
    slots: HashMap<u64, Slot>,
    index: HashMap<(SiteId, ProbeId), u64>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    tasks: HashMap<tokio::task::Id, u64>,
    next_id: u64,
    rng: u64,
}

impl<S> std::fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .field("probes", &self.slots.len())
            .finish_non_exhaustive()
    }
}

struct Slot {
    probe: ScheduledProbe,
    /// The fixed-rate slot of the next run, without jitter.
    base: Instant,
    /// When the next run is due (base + jitter); the heap entry that matches it is live.
    due: Instant,
    running: Option<AbortHandle>,
}

impl<S: ReportSink> Scheduler<S> {
    /// A scheduler with no probes yet, and the handle that adds them.
    pub fn new(options: SchedulerOptions, sink: S) -> (Scheduler<S>, SchedulerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(SchedulerStats::default()));
        let rng = splitmix(options.seed ^ 0x5eed_0f1d_2500);
        let scheduler = Scheduler {
            options,
            sink: Arc::new(sink),
            rx,
            stats: stats.clone(),
            slots: HashMap::new(),
            index: HashMap::new(),
            heap: BinaryHeap::new(),
            tasks: HashMap::new(),
            next_id: 0,
            rng,
        };
        (scheduler, SchedulerHandle { tx, stats })
    }

    /// Starts a scheduler on the current tokio runtime with `probes` and returns its handle
    /// and task. The task ends when every handle is dropped, on
    /// [`SchedulerHandle::shutdown`], or with [`Error::SinkClosed`].
    pub fn spawn(
        options: SchedulerOptions,
        sink: S,
        probes: impl IntoIterator<Item = ScheduledProbe>,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<Result<(), Error>>) {
        let (scheduler, handle) = Scheduler::new(options, sink);
        for p in probes {
            // Cannot fail: the scheduler (and its receiver) is alive right here.
            let _ = handle.add(p);
        }
        (handle, tokio::spawn(scheduler.run()))
    }

    /// Runs until every handle is dropped, [`SchedulerHandle::shutdown`] is called, or the
    /// sink closes.
    pub async fn run(mut self) -> Result<(), Error> {
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let result = loop {
            self.launch_due(&mut in_flight);
            self.publish(&in_flight);
            let next = self.heap.peek().map(|Reverse((due, _))| *due);
            if let Some(next) = next
                && timer.deadline() != next
            {
                timer.as_mut().reset(next);
            }
            let can_launch = next.is_some() && in_flight.len() < self.options.max_in_flight;
            tokio::select! {
                biased;
                cmd = self.rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break Ok(()),
                    Some(Command::Add(p)) => self.add(*p),
                    Some(Command::Remove(site, probe)) => self.remove(&site, &probe),
                },
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    if let Err(closed) = self.finished(done) {
                        break Err(Error::SinkClosed(closed));
                    }
                }
                () = &mut timer, if can_launch => {}
            }
        };
        in_flight.abort_all();
        self.publish(&in_flight);
        result
    }

    fn add(&mut self, probe: ScheduledProbe) {
        let key = (probe.site.clone(), probe.id.clone());
        if self.index.contains_key(&key) {
            self.remove(&key.0, &key.1);
        }
        let id = self.next_id;
        self.next_id += 1;
        let offset = probe
            .interval
            .mul_f64(unit(splitmix(self.options.seed ^ hash_key(&key))));
        let base = Instant::now() + offset;
        tracing::debug!(
            target: "idns_probe::scheduler",
            probe = %format_args!("{}/{}", key.0, key.1),
            offset = ?offset,
            "probe scheduled"
        );
        self.index.insert(key, id);
        self.slots.insert(
            id,
            Slot {
                probe,
                base,
                due: base,
                running: None,
            },
        );
        self.heap.push(Reverse((base, id)));
    }

    fn remove(&mut self, site: &SiteId, probe: &ProbeId) {
        if let Some(id) = self.index.remove(&(site.clone(), probe.clone()))
            && let Some(slot) = self.slots.remove(&id)
            && let Some(abort) = slot.running
        {
            abort.abort();
        }
        // The slot's heap entry is dropped lazily when it comes up.
    }

    fn launch_due(&mut self, in_flight: &mut JoinSet<Done>) {
        let now = Instant::now();
        while in_flight.len() < self.options.max_in_flight {
            let Some(&Reverse((due, id))) = self.heap.peek() else {
                return;
            };
            if due > now {
                return;
            }
            self.heap.pop();
            let Some(slot) = self.slots.get_mut(&id) else {
                continue; // removed
            };
            if slot.due != due {
                continue; // stale entry
            }
            let late = now.saturating_duration_since(slot.base);
            let mut missed = 0;
            let started = slot.running.is_none();
            if !started {
                missed += 1;
            } else {
                let probe = slot.probe.clone();
                let sink = self.sink.clone();
                let observer = self.options.observer.clone();
                let span = tracing::debug_span!(
                    target: "idns_probe::scheduler",
                    "probe",
                    site = %probe.site,
                    probe = %probe.id
                );
                let handle = in_flight.spawn(
                    async move {
                        let at = SystemTime::now();
                        let outcome =
                            match tokio::time::timeout(probe.timeout, probe.probe.check()).await {
                                Ok(o) => o,
                                Err(_) => ProbeOutcome::timeout(probe.timeout),
                            };
                        let report = ProbeReport {
                            site: probe.site,
                            probe: probe.id,
                            observer,
                            outcome,
                            at,
                        };
                        (id, sink.report(report).await)
                    }
                    .instrument(span),
                );
                self.tasks.insert(handle.id(), id);
                slot.running = Some(handle);
            }
            // Next slot at a fixed rate; skip whole intervals the scheduler fell behind.
            let interval = slot.probe.interval;
            slot.base += interval;
            while slot.base + interval <= now {
                slot.base += interval;
                missed += 1;
            }
            let jitter = if self.options.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.rng = splitmix(self.rng);
                self.options.jitter.mul_f64(unit(self.rng))
            };
            slot.due = slot.base + jitter;
            self.heap.push(Reverse((slot.due, id)));
            if let Ok(mut s) = self.stats.lock() {
                s.missed += missed;
                if started {
                    s.started += 1;
                    s.lateness.record(late);
                }
            }
        }
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) -> Result<(), SinkClosed> {
        let (task, id, sent) = match done {
            Ok((task, (id, sent))) => (task, id, sent),
            Err(e) => {
                let task = e.id();
                let Some(id) = self.tasks.remove(&task) else {
                    return Ok(());
                };
                if e.is_panic()
                    && let Some(slot) = self.slots.get(&id)
                {
                    tracing::error!(
                        target: "idns_probe::scheduler",
                        probe = %format_args!("{}/{}", slot.probe.site, slot.probe.id),
                        "probe check panicked; it stays scheduled"
                    );
                }
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.running = None;
                }
                return Ok(());
            }
        };
        self.tasks.remove(&task);
        if let Some(slot) = self.slots.get_mut(&id)
            && slot.running.as_ref().is_some_and(|h| h.id() == task)
        {
            slot.running = None;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.finished += 1;
        }
        sent
    }

    fn publish(&self, in_flight: &JoinSet<Done>) {
        if let Ok(mut s) = self.stats.lock() {
            s.probes = self.slots.len();
            s.in_flight = in_flight.len();
        }
    }
}

/// SplitMix64: a tiny, good-enough generator for offsets and jitter.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in [0, 1) from 64 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a of `site/probe`: stable across runs and platforms, unlike `DefaultHasher`.
fn hash_key(key: &(SiteId, ProbeId)) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .0
        .as_str()
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(key.1.as_str().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Runs every probe of the controller's service ([`probes_for_service`]) as `observer`,
/// reporting into the controller, on a [`Scheduler`] seeded with the service's seed.
///
/// Returns the scheduler's handle and task, as [`Scheduler::spawn`] does: the scheduler runs
/// while the handle is kept (or until [`SchedulerHandle::shutdown`]) and stops by itself,
/// with [`Error::SinkClosed`], once the controller has stopped.
/// Fails when a probe's check cannot be built.
///
/// [`probes_for_service`]: crate::probes_for_service
#[cfg(feature = "controller")]
pub fn spawn_probes(
    controller: &idns_core::runtime::Controller,
    observer: ObserverId,
) -> Result<(SchedulerHandle, tokio::task::JoinHandle<Result<(), Error>>), idns_core::ConfigError> {
    let cfg = controller.config();
    let probes = crate::probes_for_service(cfg)?;
    let options = SchedulerOptions::new(observer).seed(cfg.seed());
    Ok(Scheduler::spawn(options, controller.clone(), probes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_counts() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Duration::from_micros(50_100));
        assert_eq!(h.quantile(0.99), Duration::from_micros(99_100));
        assert_eq!(h.quantile(1.0), Duration::from_millis(110));
        assert_eq!(h.at_most(Duration::from_millis(50)), 49);
        h.record(Duration::from_secs(20));
        assert_eq!(h.quantile(1.0), Duration::from_secs(10));
    }

    #[test]
    fn offsets_depend_on_seed_and_key_only() {
        let k = |s: &str| {
            (
                SiteId::try_from(s).unwrap(),
                ProbeId::try_from("p").unwrap(),
            )
        };
        assert_eq!(hash_key(&k("a")), hash_key(&k("a")));
        assert_ne!(hash_key(&k("a")), hash_key(&k("b")));
        let u = unit(splitmix(7 ^ hash_key(&k("a"))));
        assert!((0.0..1.0).contains(&u));
    }
}
