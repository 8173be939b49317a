//! Feeds the election an arbitrary sequence of reports, commands, step results, restarts and
//! clock jumps, as a driver would, and checks its invariants after every operation.
//!
//! The configuration is one of a fixed set of small valid ones (three sites, three observers,
//! two resources; the policies and runbooks vary), picked by the first byte.
//!
//! Invariants:
//! - the epoch never decreases, and the view and the journal agree on it;
//! - every action carries an epoch <= the view's epoch;
//! - the active site is a configured one;
//! - at most one action is outstanding: a new one is handed out only after the previous one
//!   completed (even when its runbook ended meanwhile), its watchdog fired, or the controller
//!   restarted; one input never yields two actions;
//! - a result for an action that is not outstanding is ignored (nothing changes), and so is a
//!   refused command;
//! - each `Decision` has an epoch strictly above the previous decision's (drills excepted:
//!   they do not bump the epoch, and carry the current one);
//! - `handle_timeout(now)` leaves no timer due at `now`;
//! - the journal survives a serde_json round trip, and an election restarts from it with the
//!   same active site, epoch and freeze.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use arbitrary::Arbitrary;
use idns_core::{
    Action, BackendError, Command, Election, Epoch, Event, Input, IntegrityReport,
    IntegrityRequest, Journal, Manifest, ManifestEntry, Mismatch, ProbeOutcome, ProbeReport,
    Promoted, Propagation, ReplicationReport, Resume, Role, RunbookKind, ServerAnswer,
    ServiceConfig, Step, StepDone, StepId, StepOutput,
};
use libfuzzer_sys::fuzz_target;

const SITES: [&str; 3] = ["a", "b", "c"];
const PROBES: [&[&str]; 3] = [&["http", "db"], &["http"], &["http", "tcp"]];
const OBSERVERS: [&str; 3] = ["o1", "o2", "o3"];
const RESOURCES: [&str; 2] = ["db", "files"];
const MAX_OPS: usize = 400;

#[derive(Debug, Arbitrary)]
struct Scenario {
    config: u8,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Status {
    Up,
    Down,
    Timeout,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum ReplRole {
    Primary,
    Replica,
    Fenced,
    Unknown,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum ResumeHow {
    Retry,
    Skip,
    Abort,
}

/// How a step ends.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Completion {
    /// Success, with what the backend would return.
    Ok,
    /// Success of an integrity step, with a mismatch.
    Mismatch,
    /// Success of a propagation check, with one server behind.
    Behind,
    /// Success of a propagation check that asked no server.
    NoServer,
    Unavailable,
    Timeout,
    StaleEpoch,
    Refused,
    Unsupported,
    Integrity,
    Auth,
    Conflict,
    NotFound,
    Invalid,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Op {
    /// A probe report; indices past the configured ones name unknown sites, probes, observers.
    Probe {
        site: u8,
        probe: u8,
        observer: u8,
        status: Status,
    },
    /// Every observer reports every probe of a site with the same status.
    Round {
        site: u8,
        status: Status,
    },
    /// A replication report; lag in units of 10 ms.
    Lag {
        site: u8,
        resource: u8,
        role: ReplRole,
        lag: Option<u16>,
    },
    Failover {
        to: Option<u8>,
        force: bool,
    },
    Failback {
        force: bool,
    },
    Freeze,
    Unfreeze,
    StartDrill {
        to: u8,
    },
    StopDrill,
    Resume(ResumeHow),
    /// Completes the outstanding action (or, with none, feeds a result nobody waits for).
    Complete(Completion),
    /// Completes actions successfully until none is outstanding (at most 64).
    Drive,
    /// Advances the clock by up to 65 s, then calls `handle_timeout`.
    Advance(u16),
    /// Advances the clock by up to 255 × 30 s, then calls `handle_timeout`.
    Jump(u8),
    /// The controller crashes and restarts from its journal.
    Restart,
}

fn configs() -> &'static [ServiceConfig] {
    static CONFIGS: OnceLock<Vec<ServiceConfig>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let mut out = Vec::new();
        for record in ["address", "alias"] {
            for failover in ["automatic", "manual"] {
                for failback in ["manual", "automatic"] {
                    for dwell in ["0s", "30s"] {
                        for rpo in ["", "rpo_budget = \"5s\""] {
                            for all_down in ["keep_last", "fail_open", "fail_closed"] {
                                for custom in [false, true] {
                                    let text = config_text(
                                        record, failover, failback, dwell, rpo, all_down, custom,
                                    );
                                    if let Ok(c) = ServiceConfig::from_toml(&text) {
                                        out.push(c);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(out.len() >= 100, "the fuzz configurations are valid");
        out
    })
}

fn config_text(
    record: &str,
    failover: &str,
    failback: &str,
    dwell: &str,
    rpo: &str,
    all_down: &str,
    custom: bool,
) -> String {
    let runbooks = if custom {
        r#"
        [runbook]
        failover = [
            { step = "fence", retries = 0, on_failure = "abort" },
            { step = "promote", retries = 1, backoff = "1s", on_failure = "hold" },
            { step = "verify_integrity", on_failure = "skip" },
            { step = "switch_dns", backoff = "1s", max_backoff = "4s", on_failure = "retry" },
            { step = "verify_dns", retries = 0, on_failure = "skip" },
            { step = "write_markers", timeout = "5s" },
        ]
        failback = [
            { step = "catch_up", timeout = "20s", retries = 1, on_failure = "abort" },
            { step = "fence" },
            { step = "promote" },
            { step = "verify_markers", on_failure = "hold" },
            { step = "switch_dns", timeout = "2s" },
            { step = "reprotect", on_failure = "skip" },
        ]
        drill = [
            { step = "promote", on_failure = "abort" },
            { step = "write_markers" },
            { step = "switch_dns", on_failure = "hold" },
            { step = "verify_dns" },
            { step = "cleanup", on_failure = "hold" },
        ]
        "#
    } else {
        ""
    };
    format!(
        r#"
        name = "www.example.com"
        zone = "example.com"
        record = "{record}"
        resources = ["db", "files"]
        seed = 7
        [observers]
        ids = ["o1", "o2", "o3"]
        [policy]
        failover = "{failover}"
        failback = "{failback}"
        failback_hold_down = "20s"
        min_dwell = "{dwell}"
        all_down = "{all_down}"
        {rpo}
        [[sites]]
        id = "a"
        priority = 1
        addresses = ["192.0.2.1", "2001:db8::1"]
        alias = "a.hosts.example.net"
        probes = [
            {{ id = "http", interval = "1s", rise = 2, fall = 3 }},
            {{ id = "db", interval = "1s", rise = 1, fall = 2, counting = "leaky" }},
        ]
        [[sites]]
        id = "b"
        priority = 2
        addresses = ["198.51.100.2"]
        alias = "b.hosts.example.net"
        probes = [{{ id = "http", interval = "1s", rise = 1, fall = 2, down_after = "5s" }}]
        [[sites]]
        id = "c"
        priority = 3
        addresses = ["203.0.113.3"]
        alias = "c.hosts.example.net"
        probes = [
            {{ id = "http", interval = "1s", rise = 1, fall = 1 }},
            {{ id = "tcp", interval = "2s", rise = 1, down_after = "3s", ignore_down_response = true }},
        ]
        {runbooks}
        "#
    )
}

fn id<T: TryFrom<String>>(text: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    match T::try_from(text.to_owned()) {
        Ok(v) => v,
        Err(e) => panic!("bad identifier {text:?} in the harness: {e:?}"),
    }
}

/// A name from `names`, or an unknown one past the end.
fn pick(names: &[&'static str], i: u8, unknown: &'static str) -> &'static str {
    names
        .get(usize::from(i) % (names.len() + 1))
        .copied()
        .unwrap_or(unknown)
}

fn result_for(action: &Action, how: Completion) -> Result<StepOutput, BackendError> {
    let msg = || "injected".to_owned();
    Ok(match how {
        Completion::Ok => match &action.step {
            Step::Promote { .. } => StepOutput::Promoted(Promoted {
                rpo: Some(Duration::from_millis(150)),
                position: Some("0/3000060".into()),
            }),
            Step::Integrity {
                request: IntegrityRequest::Mark { label },
                ..
            } => {
                let mut manifest = Manifest::default();
                manifest.entries.insert(
                    format!("marker/{label}/0"),
                    ManifestEntry {
                        size: 7,
                        checksum: "0123456789abcdef".into(),
                        modified: None,
                    },
                );
                StepOutput::Integrity(IntegrityReport {
                    manifest,
                    mismatches: Vec::new(),
                })
            }
            Step::Integrity { .. } => StepOutput::Integrity(IntegrityReport::default()),
            Step::VerifyDns { .. } => StepOutput::Propagation(Propagation {
                servers: vec![server(true)],
            }),
            _ => StepOutput::Done,
        },
        Completion::Mismatch => StepOutput::Integrity(IntegrityReport {
            manifest: Manifest::default(),
            mismatches: vec![Mismatch {
                key: "marker/x/0".into(),
                problem: "missing".into(),
            }],
        }),
        Completion::Behind => StepOutput::Propagation(Propagation {
            servers: vec![server(true), server(false)],
        }),
        Completion::NoServer => StepOutput::Propagation(Propagation {
            servers: Vec::new(),
        }),
        Completion::Unavailable => return Err(BackendError::Unavailable(msg())),
        Completion::Timeout => return Err(BackendError::Timeout(msg())),
        Completion::StaleEpoch => {
            return Err(BackendError::StaleEpoch {
                attempted: action.epoch,
                current: action.epoch.next(),
            });
        }
        Completion::Refused => return Err(BackendError::Refused(msg())),
        Completion::Unsupported => return Err(BackendError::Unsupported(msg())),
        Completion::Integrity => return Err(BackendError::Integrity(msg())),
        Completion::Auth => return Err(BackendError::Auth(msg())),
        Completion::Conflict => return Err(BackendError::Conflict(msg())),
        Completion::NotFound => return Err(BackendError::NotFound(msg())),
        Completion::Invalid => return Err(BackendError::Invalid(msg())),
    })
}

fn server(current: bool) -> ServerAnswer {
    ServerAnswer {
        server: "127.0.0.1:5300".into(),
        current,
        latency: Duration::from_millis(3),
        detail: String::new(),
    }
}

/// The driver: the election, the clock, and what it has handed out.
struct Harness {
    cfg: ServiceConfig,
    e: Election,
    origin: Instant,
    wall: SystemTime,
    now: Instant,
    /// The action being executed, and when it was handed out.
    outstanding: Option<(Action, Instant)>,
    /// Actions the election gave up on; their results must be ignored.
    superseded: Vec<StepId>,
    epoch: Epoch,
    last_decision: Epoch,
    /// The journal version last checked for a round trip and a restart.
    checked: Option<u64>,
}

impl Harness {
    fn new(cfg: ServiceConfig) -> Self {
        let origin = base_instant();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = match Election::new(cfg.clone(), None, origin, wall) {
            Ok(e) => e,
            Err(err) => panic!("a fresh election did not start: {err}"),
        };
        let mut h = Harness {
            cfg,
            e,
            origin,
            wall,
            now: origin,
            outstanding: None,
            superseded: Vec::new(),
            epoch: Epoch::ZERO,
            last_decision: Epoch::ZERO,
            checked: None,
        };
        h.after("start", false);
        h
    }

    fn wall_now(&self) -> SystemTime {
        self.wall + self.now.saturating_duration_since(self.origin)
    }

    fn run(&mut self, op: Op) {
        let now = self.now;
        let mut restarted = false;
        let mut advanced = false;
        match op {
            Op::Probe {
                site,
                probe,
                observer,
                status,
            } => {
                let si = usize::from(site) % (SITES.len() + 1);
                let site = SITES.get(si).copied().unwrap_or("zz");
                let probes = PROBES.get(si).copied().unwrap_or(&["http"]);
                let outcome = match status {
                    Status::Up => ProbeOutcome::up(Duration::from_millis(2)),
                    Status::Down => ProbeOutcome::down(Duration::from_millis(1), "HTTP 503"),
                    Status::Timeout => ProbeOutcome::timeout(Duration::from_secs(1)),
                };
                let report = ProbeReport {
                    site: id(site),
                    probe: id(pick(probes, probe, "nope")),
                    observer: id(pick(&OBSERVERS, observer, "o9")),
                    outcome,
                    at: self.wall_now(),
                };
                self.feed_report(Input::Probe(report));
            }
            Op::Round { site, status } => {
                let si = usize::from(site) % SITES.len();
                for (p, _) in PROBES[si].iter().enumerate() {
                    for (o, _) in OBSERVERS.iter().enumerate() {
                        self.run(Op::Probe {
                            site: si as u8,
                            probe: p as u8,
                            observer: o as u8,
                            status,
                        });
                    }
                }
                return;
            }
            Op::Drive => {
                for _ in 0..64 {
                    if self.outstanding.is_none() {
                        break;
                    }
                    self.run(Op::Complete(Completion::Ok));
                }
                return;
            }
            Op::Lag {
                site,
                resource,
                role,
                lag,
            } => {
                let report = ReplicationReport {
                    resource: id(pick(&RESOURCES, resource, "ghost")),
                    site: id(pick(&SITES, site, "zz")),
                    role: match role {
                        ReplRole::Primary => Role::Primary,
                        ReplRole::Replica => Role::Replica,
                        ReplRole::Fenced => Role::Fenced,
                        ReplRole::Unknown => Role::Unknown,
                    },
                    lag: lag.map(|l| Duration::from_millis(u64::from(l) * 10)),
                    at: self.wall_now(),
                };
                self.feed_report(Input::Replication(report));
            }
            Op::Failover { to, force } => self.command(Command::Failover {
                to: to.map(|t| id(pick(&SITES, t, "zz"))),
                force,
            }),
            Op::Failback { force } => self.command(Command::Failback { force }),
            Op::Freeze => self.command(Command::Freeze),
            Op::Unfreeze => self.command(Command::Unfreeze),
            Op::StartDrill { to } => self.command(Command::StartDrill {
                to: id(pick(&SITES, to, "zz")),
            }),
            Op::StopDrill => self.command(Command::StopDrill),
            Op::Resume(how) => self.command(Command::Resume(match how {
                ResumeHow::Retry => Resume::Retry,
                ResumeHow::Skip => Resume::Skip,
                ResumeHow::Abort => Resume::Abort,
            })),
            Op::Complete(how) => match self.outstanding.take() {
                Some((action, _)) => {
                    let done = StepDone {
                        id: action.id,
                        result: result_for(&action, how),
                    };
                    self.e.handle(Input::StepDone(done), now);
                }
                None => self.feed_stale(how),
            },
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                advanced = true;
            }
            Op::Jump(n) => {
                self.now += Duration::from_secs(30 * u64::from(n));
                advanced = true;
            }
            Op::Restart => {
                let journal = self.e.journal().clone();
                let before = self.e.view().clone();
                self.e = match Election::new(self.cfg.clone(), Some(journal), now, self.wall_now())
                {
                    Ok(e) => e,
                    Err(err) => panic!("restart from the journal failed: {err}"),
                };
                let after = self.e.view();
                assert_eq!(after.epoch, before.epoch, "a restart keeps the epoch");
                assert_eq!(
                    after.active, before.active,
                    "a restart keeps the active site"
                );
                assert_eq!(after.frozen, before.frozen, "a restart keeps the freeze");
                if let Some((old, _)) = self.outstanding.take() {
                    self.superseded.push(old.id);
                }
                restarted = true;
            }
        }
        if advanced {
            let now = self.now;
            self.e.handle_timeout(now);
            if let Some(t) = self.e.poll_timeout() {
                assert!(
                    t > now,
                    "handle_timeout({now:?}) left a timer due at {t:?}: a driver would spin"
                );
            }
            // The watchdog gives up on a step whose result is overdue.
            if let Some((old, issued)) = &self.outstanding {
                let grace = (old.timeout / 10).max(Duration::from_secs(1));
                if now >= *issued + old.timeout + grace {
                    self.superseded.push(old.id);
                    self.outstanding = None;
                }
            }
        }
        self.after(&format!("{op:?}"), restarted);
    }

    fn feed_report(&mut self, input: Input) {
        self.e.handle(input, self.now);
    }

    fn command(&mut self, c: Command) {
        // Commands may be refused; a refused command changes nothing.
        let version = self.e.journal_version();
        let journal = self.e.journal().clone();
        if let Err(refused) = self.e.command(c.clone(), self.now) {
            assert!(
                self.e.journal_version() == version && *self.e.journal() == journal,
                "{c:?} was refused ({refused}) but changed the journal: {journal:?} became {:?}",
                self.e.journal()
            );
        }
    }

    /// Feeds a result nobody waits for: it must change nothing.
    fn feed_stale(&mut self, how: Completion) {
        let step = self.superseded.last().copied().unwrap_or(StepId {
            runbook: u64::MAX,
            index: 0,
            attempt: 1,
        });
        let version = self.e.journal_version();
        let view = self.e.view().clone();
        let fake = Action {
            id: step,
            epoch: view.epoch,
            kind: RunbookKind::Failover,
            name: idns_core::StepName::SwitchDns,
            step: Step::Fence {
                resource: id("db"),
                site: id("a"),
            },
            drill: false,
            timeout: Duration::from_secs(1),
        };
        let done = StepDone {
            id: step,
            result: result_for(&fake, how),
        };
        self.e.handle(Input::StepDone(done), self.now);
        assert_eq!(
            self.e.journal_version(),
            version,
            "a result for {step}, which is not outstanding, changed the journal"
        );
        assert_eq!(*self.e.view(), view, "a result for {step} changed the view");
        assert!(
            self.e.poll_action().is_none(),
            "a result for {step}, which is not outstanding, started an action"
        );
        assert!(
            self.e.poll_event().is_none(),
            "a result for {step}, which is not outstanding, made an event"
        );
    }

    /// Drains the outputs and checks the invariants.
    fn after(&mut self, op: &str, restarted: bool) {
        let view = self.e.view().clone();
        assert!(
            view.epoch >= self.epoch,
            "after {op}: the epoch went back from {} to {}",
            self.epoch,
            view.epoch
        );
        self.epoch = view.epoch;
        assert_eq!(
            self.e.journal().epoch(),
            view.epoch,
            "after {op}: journal and view disagree on the epoch"
        );
        assert!(
            self.cfg.site(&view.active).is_some(),
            "after {op}: the active site {} is not configured",
            view.active
        );

        let mut handed_out = 0;
        while let Some(action) = self.e.poll_action() {
            handed_out += 1;
            assert!(
                handed_out <= 1,
                "after {op}: one input handed out two actions (the second: {action:?})"
            );
            assert!(
                action.epoch <= view.epoch,
                "after {op}: action {} carries epoch {} above the view's {}",
                action.id,
                action.epoch,
                view.epoch
            );
            if let Some((old, issued)) = self.outstanding.take() {
                // Only a restarted controller forgets the action it had handed out.
                assert!(
                    restarted,
                    "after {op}: {} handed out while {} (handed out at +{:?}) is still \
                     outstanding: {action:?}",
                    action.id,
                    old.id,
                    issued.saturating_duration_since(self.origin)
                );
                self.superseded.push(old.id);
            }
            self.outstanding = Some((action, self.now));
        }

        while let Some(event) = self.e.poll_event() {
            match &event {
                Event::Decision { kind, epoch, .. } => {
                    if *kind == RunbookKind::Drill {
                        assert!(
                            *epoch <= view.epoch,
                            "after {op}: a drill decision carries epoch {epoch} above the \
                             view's {}",
                            view.epoch
                        );
                    } else {
                        assert!(
                            *epoch > self.last_decision,
                            "after {op}: a {kind} decision carries epoch {epoch}, not above the \
                             previous decision's {}",
                            self.last_decision
                        );
                        self.last_decision = *epoch;
                    }
                }
                Event::Finished(report) => assert!(
                    report.epoch <= view.epoch,
                    "after {op}: runbook {} finished with epoch {} above the view's {}",
                    report.runbook,
                    report.epoch,
                    view.epoch
                ),
                _ => {}
            }
        }

        // The journal survives serialisation, and a controller restarts from it (checked
        // whenever it changed).
        if restarted || self.checked != Some(self.e.journal_version()) {
            self.checked = Some(self.e.journal_version());
            self.check_journal(op);
        }
    }

    fn check_journal(&self, op: &str) {
        let journal = self.e.journal();
        let json = match serde_json::to_string(journal) {
            Ok(j) => j,
            Err(err) => panic!("after {op}: the journal does not serialise: {err}"),
        };
        let back: Journal = match serde_json::from_str(&json) {
            Ok(j) => j,
            Err(err) => panic!("after {op}: the journal does not deserialise: {err}\n{json}"),
        };
        assert_eq!(
            &back, journal,
            "after {op}: the journal changed in a round trip"
        );
        if let Err(err) = Election::new(self.cfg.clone(), Some(back), self.now, self.wall_now()) {
            panic!("after {op}: an election does not restart from its journal: {err}\n{json}");
        }
    }
}

fn base_instant() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fuzz_target!(|scenario: Scenario| {
    let configs = configs();
    let cfg = configs[usize::from(scenario.config) % configs.len()].clone();
    let mut h = Harness::new(cfg);
    for op in scenario.ops.into_iter().take(MAX_OPS) {
        h.run(op);
    }
});
