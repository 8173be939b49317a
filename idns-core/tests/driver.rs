//! The controller with the in-memory backends and the file store, in paused virtual time:
//! failover and failback, backend faults and timeouts, crash and restart, shutdown, commands,
//! the replication backend's background work, the published replication status and the
//! waits.

use std::error::Error as StdError;
use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use idns_core::runtime::{Controller, ControllerBuilder, FileStore};
use idns_core::test_util::{
    DnsCall, DnsFaults, MemoryDns, MemoryReplication, ReplCall, ReplFaults,
};
use idns_core::{
    BackendError, Command, DnsBackend, DnsCapabilities, DnsChange, DnsName, Epoch, Error, Event,
    Health, IntegrityReport, IntegrityRequest, Journal, OpContext, Outcome, Ownership, Phase,
    ProbeOutcome, ProbeReport, Promoted, Propagation, Published, RecordSet, ReplicationBackend,
    ReplicationStatus, ResourceId, Resume, Role, RunbookKind, ServiceConfig, SiteId, StateStore,
    StepName, StepStatus, Stored, SwitchReport,
};
use tempfile::TempDir;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::watch;

type TestResult<T = ()> = Result<T, Box<dyn StdError>>;

const CONFIG: &str = r#"
    name = "app.example.com"
    zone = "example.com"
    resources = ["db"]
    [policy]
    min_dwell = "0s"
    [[sites]]
    id = "primary"
    priority = 1
    addresses = ["192.0.2.1"]
    probes = [{ id = "web", interval = "100ms", rise = 1, fall = 3 }]
    [[sites]]
    id = "recovery"
    priority = 2
    addresses = ["198.51.100.1"]
    probes = [{ id = "web", interval = "100ms", rise = 1, fall = 3 }]
"#;

const PRIMARY: &str = "192.0.2.1";
const RECOVERY: &str = "198.51.100.1";

/// How long (in virtual time) a test waits for something before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A two-site service with in-memory DNS and replication and a file store in a temporary
/// directory.
struct Rig {
    cfg: ServiceConfig,
    dns: MemoryDns,
    repl: MemoryReplication,
    store: FileStore,
    _dir: TempDir,
}

impl Rig {
    fn new() -> TestResult<Rig> {
        Rig::with_config(CONFIG)
    }

    /// The rig of another configuration of the same two sites.
    fn with_config(toml: &str) -> TestResult<Rig> {
        let cfg = ServiceConfig::from_toml(toml)?;
        let dns = MemoryDns::new(&[cfg.zone().clone()]);
        let sites: Vec<_> = cfg.sites().iter().map(|s| s.id.clone()).collect();
        let repl = MemoryReplication::new(cfg.resources(), &sites, &cfg.home().id);
        let dir = tempfile::tempdir()?;
        let store = FileStore::new(dir.path().join("app.json"));
        Ok(Rig {
            cfg,
            dns,
            repl,
            store,
            _dir: dir,
        })
    }

    /// A builder with the rig's backends; a test replaces one by handing in another.
    fn builder(&self) -> ControllerBuilder {
        Controller::builder(self.cfg.clone())
            .dns(self.dns.clone())
            .replication(self.repl.clone())
            .store(self.store.clone())
    }

    /// Subscribes before the start (so no event is missed) and starts the controller.
    async fn start_with(&self, mut builder: ControllerBuilder) -> TestResult<Running> {
        let events = builder.subscribe();
        let controller = builder.start().await?;
        Ok(Running {
            controller,
            events,
            seen: Vec::new(),
        })
    }

    async fn start(&self) -> TestResult<Running> {
        self.start_with(self.builder()).await
    }

    fn name(&self) -> &DnsName {
        self.cfg.name()
    }

    fn published(&self) -> RecordSet {
        self.dns.records(self.name())
    }

    async fn stored(&self) -> TestResult<Stored> {
        Ok(self.store.load().await?.ok_or("a journal was saved")?)
    }
}

/// A running controller, its events and every event seen so far.
struct Running {
    controller: Controller,
    events: broadcast::Receiver<Event>,
    seen: Vec<Event>,
}

/// Feeds one round of probe reports.
async fn report_round(controller: &Controller, primary_up: bool, recovery_up: bool) -> TestResult {
    for (site, up) in [("primary", primary_up), ("recovery", recovery_up)] {
        controller
            .report(ProbeReport {
                site: site.parse()?,
                probe: "web".parse()?,
                observer: "local".parse()?,
                outcome: if up {
                    ProbeOutcome::up(Duration::from_millis(2))
                } else {
                    ProbeOutcome::down(Duration::from_millis(1), "connection refused")
                },
                at: SystemTime::UNIX_EPOCH,
            })
            .await?;
    }
    Ok(())
}

/// Runs `wait` while probe rounds are fed every 100 ms of virtual time, as a probe scheduler
/// would; fails when `wait` has not finished within [`PATIENCE`].
async fn probing<T>(
    controller: &Controller,
    primary_up: bool,
    recovery_up: bool,
    what: &str,
    wait: impl Future<Output = TestResult<T>>,
) -> TestResult<T> {
    let feed = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            report_round(controller, primary_up, recovery_up).await?;
        }
    };
    let both = async {
        tokio::select! {
            biased;
            done = wait => done,
            failed = feed => failed,
        }
    };
    tokio::time::timeout(PATIENCE, both)
        .await
        .map_err(|_| format!("no {what} within {PATIENCE:?} of probing"))?
}

/// Waits for `what`, failing instead of hanging when it does not come within [`PATIENCE`].
async fn within<T, E: Into<Box<dyn StdError>>>(
    what: &str,
    wait: impl Future<Output = Result<T, E>>,
) -> TestResult<T> {
    match tokio::time::timeout(PATIENCE, wait).await {
        Ok(done) => done.map_err(Into::into),
        Err(_) => Err(format!("no {what} within {PATIENCE:?}").into()),
    }
}

/// Receives events into `seen` until one matches; returns it.
async fn next_event(
    events: &mut broadcast::Receiver<Event>,
    seen: &mut Vec<Event>,
    pred: impl Fn(&Event) -> bool,
) -> TestResult<Event> {
    loop {
        let e = events.recv().await?;
        seen.push(e.clone());
        if pred(&e) {
            return Ok(e);
        }
    }
}

impl Running {
    /// Feeds one round of probe reports and lets 100 ms of virtual time pass.
    async fn round(&self, primary_up: bool, recovery_up: bool) -> TestResult {
        report_round(&self.controller, primary_up, recovery_up).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    /// Moves the events received so far into `seen`; returns the index of the first new one.
    fn collect(&mut self) -> TestResult<usize> {
        let start = self.seen.len();
        loop {
            match self.events.try_recv() {
                Ok(e) => self.seen.push(e),
                // A stopped controller's events stay readable until the end.
                Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(start),
                Err(e) => return Err(format!("event stream broke: {e}").into()),
            }
        }
    }

    /// Feeds probe rounds until an event matches; returns it.
    async fn until(
        &mut self,
        primary_up: bool,
        recovery_up: bool,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> TestResult<Event> {
        let wait = next_event(&mut self.events, &mut self.seen, pred);
        probing(&self.controller, primary_up, recovery_up, what, wait).await
    }

    /// Feeds probe rounds until a runbook of `kind` has finished; returns its report (and
    /// collects the events up to it).
    async fn until_finished(
        &mut self,
        primary_up: bool,
        recovery_up: bool,
        kind: RunbookKind,
    ) -> TestResult<SwitchReport> {
        let wait = async { Ok(self.controller.wait_for_runbook(|r| r.kind == kind).await?) };
        let report = probing(&self.controller, primary_up, recovery_up, "runbook", wait).await?;
        self.collect()?;
        Ok(report)
    }

    /// Waits (without probe rounds) for an event.
    async fn next(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> TestResult<Event> {
        let wait = next_event(&mut self.events, &mut self.seen, pred);
        tokio::time::timeout(Duration::from_secs(3600), wait)
            .await
            .map_err(|_| format!("no {what} within an hour"))?
    }

    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.seen.iter().filter(|e| pred(e)).count()
    }
}

fn addresses(ip: &str) -> TestResult<RecordSet> {
    Ok(RecordSet::Addresses(vec![ip.parse()?]))
}

fn is_decision(e: &Event) -> bool {
    matches!(e, Event::Decision { .. })
}

fn step_status(report: &SwitchReport, name: StepName) -> Vec<StepStatus> {
    report
        .steps
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.status)
        .collect()
}

/// A DNS backend whose `apply` is slow, or hangs for its first calls.
#[derive(Debug)]
struct SlowDns {
    inner: MemoryDns,
    delay: Duration,
    hang: AtomicU32,
}

#[async_trait]
impl DnsBackend for SlowDns {
    fn capabilities(&self) -> DnsCapabilities {
        self.inner.capabilities()
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.inner.read(zone, name).await
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        if self
            .hang
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        self.inner.apply(change).await
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        self.inner.verify(change, timeout).await
    }
}

/// A DNS backend with a bug: `apply` panics.
#[derive(Debug)]
struct PanickingDns(MemoryDns);

#[async_trait]
impl DnsBackend for PanickingDns {
    fn capabilities(&self) -> DnsCapabilities {
        self.0.capabilities()
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.0.read(zone, name).await
    }

    async fn apply(&self, _change: &DnsChange) -> Result<(), BackendError> {
        panic!("a bug in the DNS backend (injected)")
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        self.0.verify(change, timeout).await
    }
}

/// A store whose next saves fail.
#[derive(Debug)]
struct FlakyStore {
    inner: FileStore,
    fail_saves: AtomicU32,
}

#[async_trait]
impl StateStore for FlakyStore {
    async fn load(&self) -> Result<Option<Stored>, BackendError> {
        self.inner.load().await
    }

    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError> {
        if self
            .fail_saves
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError::Unavailable("disk full (injected)".into()));
        }
        self.inner.save(journal, expected).await
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_failed_primary_fails_over_to_recovery_and_fails_back_on_command() -> TestResult {
    let rig = Rig::new()?;
    let mut d = rig.start().await?;

    let boot = d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    assert_eq!(
        (boot.outcome, boot.epoch),
        (Outcome::Completed, Epoch::new(1))
    );
    assert_eq!(rig.published(), addresses(PRIMARY)?);

    let failover = d.until_finished(false, true, RunbookKind::Failover).await?;
    assert_eq!(failover.outcome, Outcome::Completed);
    assert_eq!(failover.to, Some("recovery".parse()?));
    assert_eq!(failover.epoch, Epoch::new(2));
    assert!(!failover.phases.is_empty());
    assert!(
        failover.phase(Phase::Detect) > Duration::ZERO,
        "{:?}",
        failover.phases
    );
    assert!(failover.phases.iter().any(|p| p.phase == Phase::SwitchDns));
    assert_eq!(failover.problems().count(), 0, "{:?}", failover.steps);
    assert_eq!(rig.published(), addresses(RECOVERY)?);
    assert_eq!(rig.dns.epoch(rig.name()), Epoch::new(2));
    assert_eq!(
        rig.repl.primaries(&"db".parse()?),
        vec!["recovery".parse()?]
    );

    // The journal on disk says so, both as the store reads it and as plain JSON.
    let stored = rig.stored().await?;
    assert_eq!(stored.journal.epoch(), Epoch::new(2));
    assert_eq!(stored.journal.active().as_str(), "recovery");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(rig.store.path())?)?;
    assert_eq!(file["journal"]["epoch"], 2);
    assert_eq!(file["revision"], stored.revision);
    assert_eq!(d.controller.view().epoch, Epoch::new(2));

    // The home site is healthy again; failback is manual (the default), so the election only
    // recommends it until an operator asks.
    d.until(true, true, "failback recommendation", |e| {
        matches!(
            e,
            Event::Recommendation {
                kind: RunbookKind::Failback,
                ..
            }
        )
    })
    .await?;
    assert_eq!(d.controller.view().active.as_str(), "recovery");
    // A dry run first: allowed, at the next epoch, and nothing changes until the command.
    let plan = d
        .controller
        .plan(Command::Failback { force: false })
        .await?;
    assert!(plan.allowed, "{plan:#?}");
    assert_eq!(
        (plan.kind, plan.epoch),
        (Some(RunbookKind::Failback), Some(Epoch::new(3)))
    );
    assert!(
        plan.steps.iter().any(|s| s.name == StepName::CatchUp),
        "{plan:#?}"
    );
    let refused = d
        .controller
        .plan(Command::Failover {
            to: Some("recovery".parse()?),
            force: false,
        })
        .await?;
    assert!(!refused.allowed, "{refused:#?}");
    assert!(
        refused
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("already active")),
        "{refused:#?}"
    );
    assert_eq!(d.controller.view().epoch, Epoch::new(2));
    d.controller
        .command(Command::Failback { force: false })
        .await?;
    let failback = d.until_finished(true, true, RunbookKind::Failback).await?;
    assert_eq!(failback.outcome, Outcome::Completed);
    assert_eq!(failback.to, Some("primary".parse()?));
    assert_eq!(failback.epoch, Epoch::new(3));
    assert_eq!(failback.problems().count(), 0, "{:?}", failback.steps);
    // The home site was measured caught up before its promotion: the report carries that RPO.
    let caught_up: Vec<&str> = failback
        .steps
        .iter()
        .filter(|s| s.name == StepName::CatchUp)
        .map(|s| s.detail.as_str())
        .collect();
    assert_eq!(caught_up, ["caught up: lag 0s"], "{:?}", failback.steps);
    assert_eq!(failback.rpo, Some(Duration::ZERO));
    // The markers written at recovery after the failover were found at home.
    assert_eq!(
        step_status(&failback, StepName::VerifyMarkers),
        vec![StepStatus::Done]
    );
    assert_eq!(rig.published(), addresses(PRIMARY)?);
    assert_eq!(rig.repl.primaries(&"db".parse()?), vec!["primary".parse()?]);
    let view = d.controller.view();
    assert_eq!(
        (view.active.as_str(), view.epoch),
        ("primary", Epoch::new(3))
    );
    assert_eq!(rig.stored().await?.journal.epoch(), Epoch::new(3));
    assert!(rig.dns.stale_attempts().is_empty());
    assert!(rig.repl.stale_attempts().is_empty());

    d.controller.shutdown();
    d.controller.stopped().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn dns_failures_during_a_failover_are_retried_until_it_completes() -> TestResult {
    let rig = Rig::new()?;
    let mut d = rig.start().await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;

    rig.dns.set_faults(DnsFaults {
        fail_applies: 3,
        ..DnsFaults::default()
    });
    let failover = d.until_finished(false, true, RunbookKind::Failover).await?;
    assert_eq!(failover.outcome, Outcome::Completed);
    assert_eq!(
        d.count(|e| matches!(
            e,
            Event::StepRetry {
                name: StepName::SwitchDns,
                ..
            }
        )),
        3
    );
    let switch = failover
        .steps
        .iter()
        .find(|s| s.name == StepName::SwitchDns)
        .ok_or("switch_dns ran")?;
    assert_eq!((switch.status, switch.attempts), (StepStatus::Done, 4));
    let applies: Vec<bool> = rig
        .dns
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            DnsCall::Apply(change, ok) if change.epoch == Epoch::new(2) => Some(ok),
            _ => None,
        })
        .collect();
    assert_eq!(applies, vec![false, false, false, true]);
    assert_eq!(rig.published(), addresses(RECOVERY)?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_restarted_driver_resumes_the_runbook_without_repeating_finished_steps() -> TestResult {
    let rig = Rig::new()?;
    let mut first = rig.start().await?;
    first
        .until_finished(true, true, RunbookKind::Bootstrap)
        .await?;

    // The DNS goes down just as the primary fails: the failover stops at switch_dns.
    rig.dns.set_faults(DnsFaults {
        down: true,
        ..DnsFaults::default()
    });
    first
        .until(false, true, "switch_dns retry", |e| {
            matches!(
                e,
                Event::StepRetry {
                    name: StepName::SwitchDns,
                    ..
                }
            )
        })
        .await?;
    assert_eq!(first.count(is_decision), 2, "bootstrap and failover");

    // The controller crashes.
    first.controller.abort();
    assert!(matches!(
        first.controller.stopped().await,
        Err(Error::Stopped)
    ));
    assert!(first.controller.is_stopped());
    assert!(matches!(
        first.controller.command(Command::Freeze).await,
        Err(Error::Stopped)
    ));

    let stored = rig.stored().await?;
    let runbook = stored.journal.runbook().ok_or("mid-way")?;
    assert_eq!(
        (runbook.kind, runbook.epoch),
        (RunbookKind::Failover, Epoch::new(2))
    );
    let done: Vec<StepName> = runbook.done.iter().map(|s| s.name).collect();
    assert_eq!(
        done,
        vec![
            StepName::Fence,
            StepName::Promote,
            StepName::VerifyIntegrity
        ]
    );
    let repl_calls_before = rig.repl.calls();

    // A new controller on the same store and backends; the DNS is still down for a while.
    let mut second = rig.start().await?;
    second
        .until(false, true, "switch_dns retry", |e| {
            matches!(
                e,
                Event::StepRetry {
                    name: StepName::SwitchDns,
                    ..
                }
            )
        })
        .await?;
    rig.dns.set_faults(DnsFaults::default());
    let failover = second
        .until_finished(false, true, RunbookKind::Failover)
        .await?;

    assert_eq!(second.count(is_decision), 0, "no second decision");
    assert_eq!(failover.outcome, Outcome::Completed);
    assert_eq!(failover.epoch, Epoch::new(2));
    assert_eq!(failover.to, Some("recovery".parse()?));
    let names: Vec<StepName> = failover.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        vec![
            StepName::Fence,
            StepName::Promote,
            StepName::VerifyIntegrity,
            StepName::SwitchDns,
            StepName::VerifyDns,
            StepName::WriteMarkers,
        ]
    );

    // Fence, promote and the integrity check ran once, before the crash; the restarted
    // driver only wrote the markers.
    let calls = rig.repl.calls();
    let count = |pred: &dyn Fn(&ReplCall) -> bool| calls.iter().filter(|c| pred(c)).count();
    assert_eq!(count(&|c| matches!(c, ReplCall::Fence(..))), 1);
    assert_eq!(count(&|c| matches!(c, ReplCall::Promote(..))), 1);
    assert_eq!(
        count(&|c| matches!(c, ReplCall::Integrity(_, _, IntegrityRequest::Check))),
        1
    );
    let after_restart: Vec<&ReplCall> = calls[repl_calls_before.len()..]
        .iter()
        .filter(|c| !matches!(c, ReplCall::Status(_)))
        .collect();
    assert!(
        matches!(
            after_restart.as_slice(),
            [ReplCall::Integrity(_, _, IntegrityRequest::Mark { .. })]
        ),
        "{after_restart:?}"
    );
    let accepted: Vec<Epoch> = rig
        .dns
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            DnsCall::Apply(change, true) => Some(change.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, vec![Epoch::new(1), Epoch::new(2)]);
    assert_eq!(rig.published(), addresses(RECOVERY)?);
    assert!(rig.stored().await?.journal.runbook().is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_the_step_in_flight_starts_nothing_and_saves() -> TestResult {
    let rig = Rig::new()?;
    let slow = Arc::new(SlowDns {
        inner: rig.dns.clone(),
        delay: Duration::from_secs(2),
        hang: AtomicU32::new(0),
    });
    let mut d = rig.start_with(rig.builder().dns(slow)).await?;
    d.next("switch_dns started", |e| {
        matches!(
            e,
            Event::StepStarted {
                name: StepName::SwitchDns,
                ..
            }
        )
    })
    .await?;

    d.controller.shutdown();
    d.controller.stopped().await?;

    // The step in flight finished and was recorded; verify_dns never ran.
    d.collect()?;
    assert_eq!(
        d.count(|e| matches!(e, Event::StepFinished { record, .. } if record.name == StepName::SwitchDns)),
        1
    );
    assert_eq!(
        d.count(|e| matches!(
            e,
            Event::StepStarted {
                name: StepName::VerifyDns,
                ..
            }
        )),
        1
    );
    assert!(
        rig.dns
            .calls()
            .iter()
            .all(|c| !matches!(c, DnsCall::Verify(_)))
    );
    assert_eq!(rig.published(), addresses(PRIMARY)?);
    let stored = rig.stored().await?;
    let runbook = stored.journal.runbook().ok_or("bootstrap mid-way")?;
    let done: Vec<StepName> = runbook.done.iter().map(|s| s.name).collect();
    assert_eq!(done, vec![StepName::SwitchDns]);

    // The handle knows.
    assert!(d.controller.is_stopped());
    d.controller.stopped().await?;
    // Waits end at once, with what was published last.
    let boot = d
        .controller
        .wait_for_runbook(|r| r.kind == RunbookKind::Bootstrap);
    assert!(matches!(boot.await, Err(Error::Stopped)));
    assert!(matches!(
        d.controller
            .wait_for(|v| v.epoch == Epoch::new(1) && v.runbook.is_none())
            .await,
        Err(Error::Stopped)
    ));
    assert_eq!(
        d.controller
            .wait_for(|v| v.epoch == Epoch::new(1))
            .await?
            .epoch,
        Epoch::new(1)
    );
    assert!(matches!(
        d.controller.command(Command::Freeze).await,
        Err(Error::Stopped)
    ));
    assert!(matches!(
        d.controller
            .report(ProbeReport {
                site: "primary".parse()?,
                probe: "web".parse()?,
                observer: "local".parse()?,
                outcome: ProbeOutcome::up(Duration::ZERO),
                at: SystemTime::UNIX_EPOCH,
            })
            .await,
        Err(Error::Stopped)
    ));
    assert!(matches!(
        d.controller.subscribe().recv().await,
        Err(broadcast::error::RecvError::Closed)
    ));

    // The journal it left is loadable: a new driver finishes the bootstrap, deciding nothing.
    let mut next = rig.start().await?;
    let boot = next
        .until_finished(true, true, RunbookKind::Bootstrap)
        .await?;
    assert_eq!(next.count(is_decision), 0);
    assert_eq!(
        step_status(&boot, StepName::VerifyDns),
        vec![StepStatus::Done]
    );
    let applies = rig
        .dns
        .calls()
        .iter()
        .filter(|c| matches!(c, DnsCall::Apply(..)))
        .count();
    assert_eq!(applies, 1, "switch_dns is not repeated");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_hanging_backend_is_cut_off_at_the_step_timeout_and_retried() -> TestResult {
    let rig = Rig::new()?;
    let hanging = Arc::new(SlowDns {
        inner: rig.dns.clone(),
        delay: Duration::ZERO,
        hang: AtomicU32::new(1),
    });
    let mut d = rig.start_with(rig.builder().dns(hanging)).await?;
    let retry = d
        .next("switch_dns retry", |e| {
            matches!(
                e,
                Event::StepRetry {
                    name: StepName::SwitchDns,
                    ..
                }
            )
        })
        .await?;
    match retry {
        Event::StepRetry { error, .. } => assert!(error.contains("timed out"), "{error}"),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    let boot = d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    assert_eq!(boot.outcome, Outcome::Completed);
    assert_eq!(rig.published(), addresses(PRIMARY)?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_panicking_backend_holds_the_runbook_and_the_driver_goes_on() -> TestResult {
    let rig = Rig::new()?;
    let buggy = Arc::new(PanickingDns(rig.dns.clone()));
    let mut d = rig.start_with(rig.builder().dns(buggy)).await?;
    let held = d
        .next("held runbook", |e| matches!(e, Event::Held { .. }))
        .await?;
    match held {
        Event::Held { name, reason, .. } => {
            assert_eq!(name, StepName::SwitchDns);
            assert!(reason.contains("panicked"), "{reason}");
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }
    // Still running: it answers commands and shows the held runbook.
    d.controller.command(Command::Freeze).await?;
    let view = d.controller.view();
    assert!(view.frozen);
    assert!(view.runbook.and_then(|r| r.held).is_some());

    // An operator aborts it; the wait returns the aborted runbook's report.
    d.controller.command(Command::Resume(Resume::Abort)).await?;
    let boot = d
        .controller
        .wait_for_runbook(|r| r.kind == RunbookKind::Bootstrap)
        .await?;
    assert_eq!(boot.outcome, Outcome::Aborted);
    assert_eq!(
        step_status(&boot, StepName::SwitchDns),
        vec![StepStatus::Failed]
    );
    d.controller.shutdown();
    d.controller.stopped().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_action_does_not_run_until_its_journal_is_saved() -> TestResult {
    let rig = Rig::new()?;
    let flaky = Arc::new(FlakyStore {
        inner: rig.store.clone(),
        fail_saves: AtomicU32::new(2),
    });
    let mut d = rig.start_with(rig.builder().store(flaky)).await?;
    let boot = d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    assert_eq!(boot.outcome, Outcome::Completed);

    let retries: Vec<&str> = d
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::StepRetry { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    assert!(!retries.is_empty());
    assert!(
        retries
            .iter()
            .all(|e| e.contains("journal could not be saved")),
        "{retries:?}"
    );
    // The attempts whose journal was not saved never reached the DNS.
    let switch = boot
        .steps
        .iter()
        .find(|s| s.name == StepName::SwitchDns)
        .ok_or("switch_dns ran")?;
    assert_eq!(switch.attempts as usize, retries.len() + 1);
    let applies = rig
        .dns
        .calls()
        .iter()
        .filter(|c| matches!(c, DnsCall::Apply(..)))
        .count();
    assert_eq!(applies, 1);
    assert!(rig.stored().await?.journal.runbook().is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_driver_stops_when_another_controller_writes_the_store() -> TestResult {
    let rig = Rig::new()?;
    let mut d = rig.start().await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;

    // Someone else saves the file.
    let other = FileStore::new(rig.store.path());
    let stored = other.load().await?.ok_or("saved")?;
    other.save(&stored.journal, Some(stored.revision)).await?;

    // The next change of the journal cannot be saved over it.
    d.controller.command(Command::Freeze).await?;
    match d.controller.stopped().await {
        Err(Error::Backend(BackendError::Conflict(msg))) => {
            assert!(msg.contains("another controller"), "{msg}");
        }
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }
    assert!(d.controller.is_stopped());
    let kept = rig.stored().await?;
    assert_eq!(kept.revision, stored.revision + 1);
    assert!(
        !kept.journal.frozen(),
        "the other controller's journal stands"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_refused_command_returns_the_reason() -> TestResult {
    let rig = Rig::new()?;
    let mut d = rig.start().await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;

    match d
        .controller
        .command(Command::Failback { force: false })
        .await
    {
        Err(Error::Refused(r)) => assert!(r.reason.contains("already active"), "{r}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    match d
        .controller
        .command(Command::Failover {
            to: Some("nowhere".parse()?),
            force: false,
        })
        .await
    {
        Err(Error::Refused(r)) => assert!(r.reason.contains("no site nowhere"), "{r}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    d.round(true, true).await?;
    d.collect()?;
    assert_eq!(d.count(|e| matches!(e, Event::Refused(_))), 2);
    assert_eq!(d.controller.view().epoch, Epoch::new(1));

    // An accepted command answers Ok.
    d.controller.command(Command::Freeze).await?;
    assert!(d.controller.view().frozen);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_controller_without_a_journal_adopts_what_the_dns_publishes() -> TestResult {
    let rig = Rig::new()?;
    rig.dns.apply_now(&DnsChange {
        zone: rig.cfg.zone().clone(),
        name: rig.name().clone(),
        records: addresses(RECOVERY)?,
        ttl: Duration::from_secs(30),
        epoch: Epoch::new(5),
        site: Some("recovery".parse()?),
    })?;
    let mut d = rig.start().await?;
    d.round(true, true).await?;
    d.collect()?;

    assert_eq!(d.count(is_decision), 0, "{:?}", d.seen);
    let view = d.controller.view();
    assert_eq!(
        (view.active.as_str(), view.epoch),
        ("recovery", Epoch::new(5))
    );
    assert!(view.runbook.is_none());
    let stored = rig.stored().await?;
    assert_eq!(stored.journal.epoch(), Epoch::new(5));
    assert_eq!(stored.journal.active().as_str(), "recovery");
    assert_eq!(rig.published(), addresses(RECOVERY)?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn replication_status_is_polled_into_the_view_and_published() -> TestResult {
    let rig = Rig::new()?;
    let db: ResourceId = "db".parse()?;
    let recovery: SiteId = "recovery".parse()?;
    rig.repl
        .set_lag(&db, &recovery, Some(Duration::from_secs(3)));
    let mut d = rig
        .start_with(rig.builder().replication_poll(Duration::from_secs(1)))
        .await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    let lag_of = |v: &idns_core::ServiceView| {
        v.sites
            .iter()
            .find(|s| s.id == recovery)
            .map(|s| (s.lag, s.health))
    };
    let wait = async {
        Ok(d.controller
            .wait_for(|v| lag_of(v) == Some((Some(Duration::from_secs(3)), Health::Up)))
            .await?)
    };
    probing(&d.controller, true, true, "lag in the view", wait).await?;

    // What the election was fed is what the controller publishes: no second poller needed.
    let published = d.controller.replication_status();
    let read = published.get(&db).ok_or("db's status is published")?;
    let site = read
        .status
        .sites
        .iter()
        .find(|s| s.site == recovery)
        .ok_or("recovery in the status")?;
    assert_eq!(site.lag, Some(Duration::from_secs(3)));
    assert!(read.at > SystemTime::UNIX_EPOCH);

    // One poller: every second, one read per resource.
    let polls = |rig: &Rig| {
        rig.repl
            .calls()
            .iter()
            .filter(|c| matches!(c, ReplCall::Status(_)))
            .count()
    };
    let before = polls(&rig);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let read = polls(&rig) - before;
    assert!((4..=6).contains(&read), "{read} reads in 5 s");

    // A new lag shows in the next read.
    rig.repl
        .set_lag(&db, &recovery, Some(Duration::from_secs(1)));
    let wait = async {
        Ok(d.controller
            .wait_for(|v| lag_of(v) == Some((Some(Duration::from_secs(1)), Health::Up)))
            .await?)
    };
    probing(&d.controller, true, true, "the new lag", wait).await?;
    let read = d.controller.replication_status();
    let lag = read[&db]
        .status
        .sites
        .iter()
        .find(|s| s.site == recovery)
        .and_then(|s| s.lag);
    assert_eq!(lag, Some(Duration::from_secs(1)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn without_polling_no_status_is_read_or_published() -> TestResult {
    let rig = Rig::new()?;
    let mut d = rig.start().await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(d.controller.replication_status().is_empty());
    assert!(
        !rig.repl
            .calls()
            .iter()
            .any(|c| matches!(c, ReplCall::Status(_)))
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_controller_needs_its_backends_and_sane_knobs() -> TestResult {
    let rig = Rig::new()?;
    let path_of = |result: Result<Controller, Error>| match result {
        Err(Error::Config(e)) => Ok(e.errors[0].path.clone()),
        Err(other) => Err(format!("expected a config error, got {other}")),
        Ok(_) => Err("started".to_owned()),
    };
    let no_replication = Controller::builder(rig.cfg.clone())
        .dns(rig.dns.clone())
        .store(rig.store.clone());
    assert_eq!(path_of(no_replication.start().await)?, "resources");
    let no_dns = Controller::builder(rig.cfg.clone())
        .replication(rig.repl.clone())
        .store(rig.store.clone());
    assert_eq!(path_of(no_dns.start().await)?, "dns");
    let no_store = Controller::builder(rig.cfg.clone())
        .dns(rig.dns.clone())
        .replication(rig.repl.clone());
    assert_eq!(path_of(no_store.start().await)?, "store");
    assert_eq!(path_of(rig.builder().inbox(0).start().await)?, "inbox");
    assert_eq!(
        path_of(rig.builder().event_capacity(0).start().await)?,
        "events"
    );
    assert_eq!(
        path_of(rig.builder().replication_poll(Duration::ZERO).start().await)?,
        "replication_poll"
    );
    assert_eq!(
        path_of(rig.builder().save_retry(Duration::ZERO).start().await)?,
        "save_retry"
    );
    // Nothing was started or saved.
    assert!(rig.store.load().await?.is_none());
    assert!(
        rig.dns
            .calls()
            .iter()
            .all(|c| !matches!(c, DnsCall::Apply(..)))
    );
    Ok(())
}

/// A replication backend whose background work counts how many run at a time.
#[derive(Debug)]
struct Background {
    inner: MemoryReplication,
    running: watch::Sender<usize>,
    started: AtomicU32,
}

/// Counts a background run down when it is dropped.
struct CountDown(watch::Sender<usize>);

impl Drop for CountDown {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[async_trait]
impl ReplicationBackend for Background {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        self.inner.status(resource).await
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.inner.fence(resource, site, ctx).await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        self.inner.promote(resource, site, ctx).await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.inner.reprotect(resource, primary, wait, ctx).await
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        self.inner.integrity(resource, site, request, ctx).await
    }

    async fn run(&self, resource: &ResourceId) -> Result<(), BackendError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.running.send_modify(|n| *n += 1);
        let _running = CountDown(self.running.clone());
        // Like continuous replication: a pass now and then, until the controller stops.
        loop {
            self.inner.sync(resource);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_backends_background_work_runs_while_the_controller_runs() -> TestResult {
    let rig = Rig::new()?;
    let (running, mut watching) = watch::channel(0);
    let backend = Arc::new(Background {
        inner: rig.repl.clone(),
        running,
        started: AtomicU32::new(0),
    });

    // Started once per resource with the controller, stopped with its graceful shutdown.
    let mut d = rig
        .start_with(rig.builder().replication(backend.clone()))
        .await?;
    within("background work", watching.wait_for(|n| *n == 1)).await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    d.controller.shutdown();
    d.controller.stopped().await?;
    assert_eq!(
        *watching.borrow(),
        0,
        "stopped before the controller says it has"
    );
    assert_eq!(backend.started.load(Ordering::SeqCst), 1);

    // And when the controller is aborted, as a crash would.
    let d = rig
        .start_with(rig.builder().replication(backend.clone()))
        .await?;
    within("background work", watching.wait_for(|n| *n == 1)).await?;
    d.controller.abort();
    within(
        "the end of the background work",
        watching.wait_for(|n| *n == 0),
    )
    .await?;
    assert!(matches!(d.controller.stopped().await, Err(Error::Stopped)));
    assert_eq!(backend.started.load(Ordering::SeqCst), 2);

    // The paths of old do not start it: whoever calls them runs it by hand.
    let (old, task) = idns_core::runtime::Driver::start(
        rig.cfg.clone(),
        idns_core::runtime::Backends {
            dns: Arc::new(rig.dns.clone()),
            replication: Some(backend.clone()),
            store: Arc::new(rig.store.clone()),
        },
        idns_core::runtime::DriverOptions::default(),
    )
    .await?;
    old.wait_for(|v| v.runbook.is_none()).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backend.started.load(Ordering::SeqCst), 2);
    old.shutdown();
    task.await??;
    Ok(())
}

// ----- resuming: the published records and the replication status --------------------------

/// Stores a journal that says `recovery` is active at epoch 3, as a controller that failed
/// over twice and then stopped would have left it.
async fn journal_recovery_at_3(rig: &Rig) -> TestResult {
    let owner = Ownership {
        epoch: Epoch::new(3),
        site: Some("recovery".parse()?),
    };
    let journal = Journal::adopt(rig.name().clone(), &owner, "primary".parse()?);
    rig.store.save(&journal, None).await?;
    Ok(())
}

/// Publishes `ip` for `site` at `epoch`, behind the controller's back.
fn publish(rig: &Rig, ip: &str, site: &str, epoch: u64) -> TestResult {
    rig.dns.apply_now(&DnsChange {
        zone: rig.cfg.zone().clone(),
        name: rig.name().clone(),
        records: addresses(ip)?,
        ttl: Duration::from_secs(30),
        epoch: Epoch::new(epoch),
        site: Some(site.parse()?),
    })?;
    Ok(())
}

fn applies(rig: &Rig) -> usize {
    rig.dns
        .calls()
        .iter()
        .filter(|c| matches!(c, DnsCall::Apply(..)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_resumed_driver_publishes_the_journals_records_again_when_the_dns_holds_others()
-> TestResult {
    // (what the DNS holds behind the controller's back, what the event says it held)
    let cases = [
        (
            Some((PRIMARY, "primary", 2)),
            "the DNS held 192.0.2.1 for primary at epoch 2",
        ),
        (
            Some((RECOVERY, "recovery", 2)),
            "the DNS held 198.51.100.1 for recovery at epoch 2",
        ),
        (None, "the DNS held (no records) and no ownership record"),
    ];
    for (held, why) in cases {
        let rig = Rig::new()?;
        journal_recovery_at_3(&rig).await?;
        if let Some((ip, site, epoch)) = held {
            publish(&rig, ip, site, epoch)?;
        }
        let mut d = rig.start().await?;
        let event = d
            .next("republication", |e| matches!(e, Event::Republished { .. }))
            .await?;
        let Event::Republished {
            epoch,
            site,
            records,
            reason,
        } = &event
        else {
            unreachable!("matched above");
        };
        assert_eq!(*epoch, Epoch::new(3), "{event}");
        assert_eq!(site.as_ref().map(SiteId::as_str), Some("recovery"));
        assert_eq!(*records, addresses(RECOVERY)?);
        assert_eq!(reason, why);
        assert_eq!(rig.published(), addresses(RECOVERY)?);
        assert_eq!(rig.dns.epoch(rig.name()), Epoch::new(3));
        assert!(rig.dns.stale_attempts().is_empty());
        // The journal itself did not move: no decision, the same epoch.
        assert_eq!(d.count(is_decision), 0, "{:?}", d.seen);
        assert_eq!(rig.stored().await?.journal.epoch(), Epoch::new(3));
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_resumed_driver_reads_the_published_records_and_leaves_them_when_they_match() -> TestResult
{
    let rig = Rig::new()?;
    journal_recovery_at_3(&rig).await?;
    publish(&rig, RECOVERY, "recovery", 3)?;
    let before = applies(&rig);
    let mut d = rig.start().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    d.collect()?;
    assert!(
        rig.dns
            .calls()
            .iter()
            .any(|c| matches!(c, DnsCall::Read(n) if n == rig.name())),
        "the published records were read: {:?}",
        rig.dns.calls()
    );
    assert_eq!(applies(&rig), before, "nothing published again");
    assert_eq!(
        d.count(|e| matches!(e, Event::Republished { .. })),
        0,
        "{:?}",
        d.seen
    );

    // A DNS with a higher epoch than the journal is another controller's: left alone too.
    d.controller.shutdown();
    d.controller.stopped().await?;
    publish(&rig, PRIMARY, "primary", 4)?;
    let before = applies(&rig);
    let mut d = rig.start().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    d.collect()?;
    assert_eq!(applies(&rig), before, "never a lower epoch");
    assert_eq!(rig.published(), addresses(PRIMARY)?);
    assert_eq!(d.count(|e| matches!(e, Event::Republished { .. })), 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_resumed_driver_that_cannot_read_the_dns_starts_and_republishes_once_it_can() -> TestResult
{
    let rig = Rig::new()?;
    journal_recovery_at_3(&rig).await?;
    publish(&rig, PRIMARY, "primary", 2)?;
    rig.dns.set_faults(DnsFaults {
        down: true,
        ..DnsFaults::default()
    });
    let mut d = rig.start().await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !d.controller.is_stopped(),
        "an unreadable DNS stops nothing"
    );
    let reads = rig
        .dns
        .calls()
        .iter()
        .filter(|c| matches!(c, DnsCall::Read(_)))
        .count();
    assert!(reads >= 2, "read again after a failure: {reads} read(s)");
    assert_eq!(rig.published(), addresses(PRIMARY)?);

    rig.dns.set_faults(DnsFaults::default());
    d.next("republication", |e| matches!(e, Event::Republished { .. }))
        .await?;
    assert_eq!(rig.published(), addresses(RECOVERY)?);
    assert_eq!(rig.dns.epoch(rig.name()), Epoch::new(3));
    assert!(rig.dns.stale_attempts().is_empty());
    Ok(())
}

/// [`CONFIG`] with an RPO budget, so that a failover needs every lag known.
fn rpo_config() -> String {
    CONFIG.replace(
        "min_dwell = \"0s\"",
        "min_dwell = \"0s\"\n    rpo_budget = \"10s\"",
    )
}

/// Starts a controller that reads the replication status once an hour, whose first read
/// could not reach `recovery` (its lag unknown); `recovery` is reachable again on return.
async fn started_with_recovery_unknown(rig: &Rig) -> TestResult<Running> {
    let db: ResourceId = "db".parse()?;
    let recovery: SiteId = "recovery".parse()?;
    rig.repl.set_faults(ReplFaults {
        unreachable: vec![recovery.clone()],
        ..ReplFaults::default()
    });
    let mut d = rig
        .start_with(rig.builder().replication_poll(Duration::from_secs(3600)))
        .await?;
    d.until_finished(true, true, RunbookKind::Bootstrap).await?;
    let unknown = |m: &std::collections::BTreeMap<ResourceId, idns_core::runtime::PolledStatus>| {
        m.get(&db).is_some_and(|read| {
            read.status
                .sites
                .iter()
                .any(|s| s.site == recovery && s.role == Role::Unknown)
        })
    };
    within(
        "a read of recovery",
        d.controller.wait_for_replication(unknown),
    )
    .await?;
    // Every read the start made is done.
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.repl.set_faults(ReplFaults::default());
    Ok(d)
}

#[tokio::test(start_paused = true)]
async fn a_failover_right_after_a_failback_is_judged_on_a_status_read_after_it() -> TestResult {
    let rig = Rig::with_config(&rpo_config())?;
    let mut d = started_with_recovery_unknown(&rig).await?;
    let refused = d
        .controller
        .command(Command::Failover {
            to: None,
            force: false,
        })
        .await;
    assert!(
        matches!(&refused, Err(Error::Refused(r)) if r.reason.contains("lag unknown")),
        "{refused:?}"
    );

    d.controller
        .command(Command::Failover {
            to: Some("recovery".parse()?),
            force: true,
        })
        .await?;
    let failover = d.until_finished(true, true, RunbookKind::Failover).await?;
    assert_eq!(failover.outcome, Outcome::Completed);
    // Forced: this test is about the failover after the failback.
    d.controller
        .command(Command::Failback { force: true })
        .await?;
    let failback = d.until_finished(true, true, RunbookKind::Failback).await?;
    assert_eq!(failback.outcome, Outcome::Completed);

    // At once, with the next periodic read an hour away.
    d.controller
        .command(Command::Failover {
            to: None,
            force: false,
        })
        .await?;
    let second = within(
        "the second failover",
        d.controller
            .wait_for_runbook(|r| r.kind == RunbookKind::Failover && r.runbook > failback.runbook),
    )
    .await?;
    assert_eq!(second.outcome, Outcome::Completed);
    assert_eq!(second.to, Some("recovery".parse()?));
    assert_eq!(second.epoch, Epoch::new(4));
    assert_eq!(rig.published(), addresses(RECOVERY)?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failover_blocked_for_an_unknown_lag_reads_the_status_at_once() -> TestResult {
    let rig = Rig::with_config(&rpo_config())?;
    let mut d = started_with_recovery_unknown(&rig).await?;
    // The primary fails: the RPO guard blocks until the lag is known, which a read at once
    // tells, not the periodic one an hour later.
    let failover = d.until_finished(false, true, RunbookKind::Failover).await?;
    assert_eq!(failover.outcome, Outcome::Completed);
    assert_eq!(failover.to, Some("recovery".parse()?));
    assert!(
        d.seen.iter().any(|e| matches!(
            e,
            Event::Blocked { reasons } if reasons.iter().any(|r| r.to_string().contains("lag unknown"))
        )),
        "{:?}",
        d.seen
    );
    Ok(())
}
