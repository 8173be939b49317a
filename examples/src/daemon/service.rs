//! One running service: its controller, journal, recent events and what the daemon has seen
//! of it (probe results, finished runbooks), for the API and metrics. The replication status
//! is the controller's: the one poller of the program reads it, the daemon only shows it.
//!
//! Every finished runbook but a bootstrap leaves its report in [`ReportFiles`]: Markdown, HTML
//! and JSON, the last `daemon.reports_keep` per service, read back for the history.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use idns_core::runtime::{Controller, FileStore};
use idns_core::{
    DnsBackend, Epoch, Event, Health, Journal, ObserverId, ProbeId, ProbeOutcome, ProbeReport,
    RecordSet, ResourceId, Role, Runbook, RunbookKind, ServiceConfig, SiteId, StateStore, StepName,
    StepRecord, StepStatus, SwitchReport,
};
use idns_replication::{Operation, Progress};
use tokio::sync::broadcast;

use super::events::EventLog;
use super::wire::{
    CheckInfo, ContextInfo, DecisionInfo, DnsAnswer, HistoryEntry, IntegrityInfo, PhaseInfo,
    ProbeDetail, ProgressInfo, ReplicationInfo, ReportSummary, RetryInfo, RunbookStatus,
    ServiceStatus, SiteNoteInfo, SiteStatus, StepInfo, StoredReport,
};
use crate::report::{self, Check, Report, ReportContext, SiteNote};

/// Longest a status waits for the DNS backend to say what it publishes.
pub const DNS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bounds of the probe latency histogram's buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A Prometheus-style cumulative histogram of probe latencies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Count of observations at most each bound of [`LATENCY_BUCKETS`].
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    /// Sum of all observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if s <= bound {
                *b += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }
}

/// The last result of one probe at one observer, and its latency history.
#[derive(Debug, Clone)]
pub struct ProbeSample {
    /// The last attempt.
    pub outcome: ProbeOutcome,
    /// When it started.
    pub at: SystemTime,
    /// The probe's health after rise/fall counting, once it has crossed a threshold.
    pub health: Option<Health>,
    /// Latencies of every attempt.
    pub latency: LatencyHistogram,
}

/// Replication of one resource at one site, as the controller's poller last read it.
#[derive(Debug, Clone)]
pub struct ReplicaSample {
    /// Its role.
    pub role: Role,
    /// Its lag.
    pub lag: Option<Duration>,
    /// Its lag in bytes.
    pub lag_bytes: Option<u64>,
    /// When it was read.
    pub at: SystemTime,
}

/// What the daemon has seen of a service.
#[derive(Debug, Default)]
pub struct Observed {
    /// Last probe results, by site, probe and observer.
    pub probes: BTreeMap<(SiteId, ProbeId, ObserverId), ProbeSample>,
    /// The last decision.
    pub decision: Option<DecisionInfo>,
    /// The last finished runbook of each kind, with what its report needs.
    pub last: BTreeMap<String, (SwitchReport, ReportContext)>,
    /// The last finished production switch.
    pub last_switch: Option<SwitchReport>,
    /// Finished runbooks by kind and outcome, since the daemon started.
    pub finished: BTreeMap<(String, String), u64>,
    /// Step retries by step name, since the daemon started.
    pub retries: BTreeMap<String, u64>,
    /// The runbook in progress, as the report will need it.
    running: Option<Running>,
    /// When the last progress event of each operation went to the log.
    progress_logged: BTreeMap<(ResourceId, SiteId, &'static str), (std::time::Instant, u64)>,
}

/// What the daemon notes while a runbook runs, for its report.
#[derive(Debug)]
struct Running {
    runbook: u64,
    /// The production active site and epoch when it was decided.
    production: (SiteId, Epoch),
    /// Its retries and holds.
    events: Vec<Event>,
}

/// A service the daemon runs.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// Its checked configuration.
    pub config: ServiceConfig,
    /// Its controller: feeds, reads and stops its election.
    pub controller: Controller,
    /// Its journal.
    pub store: FileStore,
    /// Where the reports of its finished runbooks are kept.
    pub reports: ReportFiles,
    /// Its recent events.
    pub log: EventLog,
    /// What the daemon has seen of it.
    pub observed: Mutex<Observed>,
    /// Its DNS backend, read for the status (what DNS answers beside what was elected).
    dns: Option<Arc<dyn DnsBackend>>,
}

/// Called for each finished runbook but a bootstrap, with its report and context, before the
/// event that ends it is logged (the daemon writes the report's files).
pub type ReportHook = Arc<dyn Fn(&ServiceRuntime, &SwitchReport, &ReportContext) + Send + Sync>;

impl ServiceRuntime {
    /// A service run by `controller`.
    pub fn new(
        config: ServiceConfig,
        controller: Controller,
        store: FileStore,
        reports: ReportFiles,
        events: usize,
    ) -> Self {
        Self {
            config,
            controller,
            store,
            reports,
            log: EventLog::new(events),
            observed: Mutex::new(Observed::default()),
            dns: None,
        }
    }

    /// The same service, whose status also says what `dns` publishes for its name.
    #[must_use]
    pub fn with_dns(mut self, dns: Arc<dyn DnsBackend>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// What the DNS backend publishes for the name now (within [`DNS_READ_TIMEOUT`]).
    async fn dns_answer(&self) -> Option<DnsAnswer> {
        let dns = self.dns.as_ref()?;
        let read = dns.read(self.config.zone(), self.name());
        let answer = match tokio::time::timeout(DNS_READ_TIMEOUT, read).await {
            Ok(Ok(p)) => DnsAnswer {
                records: match &p.records {
                    RecordSet::Addresses(a) => a.iter().map(ToString::to_string).collect(),
                    RecordSet::Alias(n) => vec![n.to_string()],
                    RecordSet::Empty => Vec::new(),
                },
                site: p.owner.as_ref().map(|o| {
                    o.site
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), ToString::to_string)
                }),
                epoch: p.owner.as_ref().map(|o| o.epoch.get()),
                error: None,
            },
            Ok(Err(e)) => DnsAnswer {
                records: Vec::new(),
                site: None,
                epoch: None,
                error: Some(e.to_string()),
            },
            Err(_) => DnsAnswer {
                records: Vec::new(),
                site: None,
                epoch: None,
                error: Some(format!(
                    "the DNS backend did not answer within {}",
                    humantime::format_duration(DNS_READ_TIMEOUT)
                )),
            },
        };
        Some(answer)
    }

    /// The service's name.
    pub fn name(&self) -> &idns_core::DnsName {
        self.config.name()
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a probe's report (before it goes to the controller).
    pub fn record_probe(&self, r: &ProbeReport) {
        let mut o = self.observed();
        let key = (r.site.clone(), r.probe.clone(), r.observer.clone());
        let sample = o.probes.entry(key).or_insert_with(|| ProbeSample {
            outcome: r.outcome.clone(),
            at: r.at,
            health: None,
            latency: LatencyHistogram::default(),
        });
        sample.outcome = r.outcome.clone();
        sample.at = r.at;
        sample.latency.observe(r.outcome.latency);
    }

    /// Replication by resource and site, as the controller's poller last read it
    /// ([`Controller::replication_status`]); empty before the first read and for a service
    /// without resources.
    pub fn replication(&self) -> BTreeMap<(ResourceId, SiteId), ReplicaSample> {
        let mut out = BTreeMap::new();
        for (resource, polled) in self.controller.replication_status() {
            for s in &polled.status.sites {
                out.insert(
                    (resource.clone(), s.site.clone()),
                    ReplicaSample {
                        role: s.role,
                        lag: s.lag,
                        lag_bytes: s.lag_bytes,
                        at: polled.at,
                    },
                );
            }
        }
        out
    }

    /// Notes a replication progress report; logs it as an event now and then (every 200 ms
    /// per operation, and at its end), so that `idnsctl --wait` can draw a bar.
    pub fn record_progress(&self, p: &Progress) {
        let op = match p.operation {
            Operation::Pass => "pass",
            Operation::DrillCopy => "drill_copy",
            Operation::Check => "check",
            Operation::CatchUp => "catch_up",
            _ => "other",
        };
        let now = std::time::Instant::now();
        {
            let mut o = self.observed();
            let key = (p.resource.clone(), p.site.clone(), op);
            let due = match o.progress_logged.get(&key) {
                Some((last, done)) => {
                    p.bytes_done >= p.bytes_total && *done < p.bytes_total
                        || now.duration_since(*last) >= Duration::from_millis(200)
                }
                None => true,
            };
            if !due {
                return;
            }
            o.progress_logged.insert(key, (now, p.bytes_done));
        }
        let text = format!(
            "{op} of {} at {}: {} of {} ({:.0}%)",
            p.resource,
            p.site,
            bytes(p.bytes_done),
            bytes(p.bytes_total),
            p.fraction() * 100.0
        );
        self.log.push(
            text,
            None,
            Some(ProgressInfo {
                resource: p.resource.to_string(),
                site: p.site.to_string(),
                operation: op.to_owned(),
                file: p.file.clone(),
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
            }),
        );
    }

    /// Notes an event of the election and logs it. When the event ends a runbook (a
    /// bootstrap aside), `on_report` gets its report and context first, so that whoever sees
    /// the end in the log finds the report written. Returns the report and its context when
    /// the event ends a runbook.
    pub fn record_event(
        &self,
        event: Event,
        on_report: &ReportHook,
    ) -> Option<(SwitchReport, ReportContext)> {
        let mut ended = None;
        {
            let mut o = self.observed();
            match &event {
                Event::ProbeChanged {
                    site,
                    probe,
                    observer,
                    health,
                    ..
                } => {
                    if let Some(s) =
                        o.probes
                            .get_mut(&(site.clone(), probe.clone(), observer.clone()))
                    {
                        s.health = Some(*health);
                    }
                }
                Event::Decision {
                    runbook,
                    kind,
                    from,
                    to,
                    epoch,
                    forced,
                    reasons,
                    ..
                } => {
                    // A drill leaves production alone: note where it is, to check afterwards.
                    let view = self.controller.view();
                    let production = (view.active.clone(), view.epoch);
                    o.running = Some(Running {
                        runbook: *runbook,
                        production,
                        events: Vec::new(),
                    });
                    o.decision = Some(DecisionInfo {
                        runbook: *runbook,
                        kind: kind.to_string(),
                        from: from.as_ref().map(ToString::to_string),
                        to: to.as_ref().map(ToString::to_string),
                        epoch: epoch.get(),
                        forced: *forced,
                        reasons: reasons.iter().map(ToString::to_string).collect(),
                        at: rfc3339(SystemTime::now()),
                    });
                }
                Event::StepRetry { name, id, .. } => {
                    *o.retries.entry(name.to_string()).or_default() += 1;
                    if let Some(run) = o.running.as_mut().filter(|r| r.runbook == id.runbook) {
                        run.events.push(event.clone());
                    }
                }
                Event::Held { runbook, .. } => {
                    if let Some(run) = o.running.as_mut().filter(|r| r.runbook == *runbook) {
                        run.events.push(event.clone());
                    }
                }
                Event::Finished(r) => {
                    *o.finished
                        .entry((r.kind.to_string(), r.outcome.as_str().to_owned()))
                        .or_default() += 1;
                    let running = o.running.take().filter(|x| x.runbook == r.runbook);
                    let ctx = self.report_context(r, running);
                    o.last.insert(r.kind.to_string(), (r.clone(), ctx.clone()));
                    if r.kind != RunbookKind::Drill {
                        o.last_switch = Some(r.clone());
                    }
                    ended = Some((r.clone(), ctx));
                }
                _ => {}
            }
        }
        if let Some((r, ctx)) = &ended
            && r.kind != RunbookKind::Bootstrap
        {
            on_report(self, r, ctx);
        }
        let text = describe(&event);
        self.log.push(text, Some(event), None);
        ended
    }

    /// What a report of `r` needs beyond the report itself: the names, who started it, the
    /// sites, its retries and holds, and for a drill whether production was left alone and
    /// the drill cleaned up.
    fn report_context(&self, r: &SwitchReport, running: Option<Running>) -> ReportContext {
        let drill = r.kind == RunbookKind::Drill;
        let published = if drill {
            self.config.drill_name()
        } else {
            self.config.name()
        };
        let mut ctx = ReportContext::new(self.name().as_str(), published.as_str());
        ctx.controller = format!("idnsd {}", env!("CARGO_PKG_VERSION"));
        ctx.started_by = if r.reasons.iter().any(|x| x.contains("operator")) {
            "an operator, through idnsd's API".to_owned()
        } else {
            "the election, automatically".to_owned()
        };
        let view = self.controller.view();
        ctx.sites = self
            .config
            .sites()
            .iter()
            .map(|s| {
                let addresses = match &s.alias {
                    Some(a) if s.addresses.is_empty() => a.to_string(),
                    _ => s
                        .addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let to = r.to.as_ref() == Some(&s.id);
                let from = r.from.as_ref() == Some(&s.id);
                let role = match (drill, to, from) {
                    (true, true, _) => "drill target",
                    (true, false, _) if s.id == view.active => "active, production (left alone)",
                    (false, true, _) => "switched to",
                    (false, _, true) => "switched away from",
                    _ => "standby",
                };
                SiteNote {
                    id: s.id.to_string(),
                    addresses,
                    role: role.to_owned(),
                }
            })
            .collect();
        if let Some(run) = &running {
            for e in &run.events {
                ctx.record(e);
            }
        }
        if drill {
            if let Some(run) = &running {
                let (site, epoch) = &run.production;
                let untouched = &view.active == site && view.epoch == *epoch;
                ctx.checks.push(Check::new(
                    "production untouched",
                    untouched,
                    if untouched {
                        format!(
                            "{} stayed on {site} at epoch {epoch} throughout the drill",
                            self.name()
                        )
                    } else {
                        format!(
                            "{} was on {site} at epoch {epoch} when the drill began, and is on {} \
                             at epoch {} now",
                            self.name(),
                            view.active,
                            view.epoch
                        )
                    },
                ));
            }
            let cleanup = r.steps.iter().find(|s| s.name == StepName::Cleanup);
            ctx.checks.push(match cleanup {
                Some(s) => Check::new(
                    "drill cleaned up",
                    s.status == StepStatus::Done,
                    format!(
                        "{}: {}{}",
                        s.description,
                        s.status.as_str(),
                        if s.detail.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", s.detail)
                        }
                    ),
                ),
                None => Check::new(
                    "drill cleaned up",
                    false,
                    "the drill runbook has no cleanup step",
                ),
            });
        }
        ctx
    }

    /// Follows the controller's events until it stops; `on_report` is called for each finished
    /// runbook but a bootstrap.
    pub async fn track(self: Arc<Self>, mut rx: broadcast::Receiver<Event>, on_report: ReportHook) {
        loop {
            match rx.recv().await {
                // The end of a runbook writes its report's files (fsynced): off the async
                // workers' way where the runtime allows it.
                Ok(event @ Event::Finished(_))
                    if tokio::runtime::Handle::current().runtime_flavor()
                        == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(|| self.record_event(event, &on_report));
                }
                Ok(event) => {
                    self.record_event(event, &on_report);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.log
                        .push(format!("({n} events of the election missed)"), None, None);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The last finished runbook of `kind`, with its report's context.
    pub fn last_report(&self, kind: RunbookKind) -> Option<(SwitchReport, ReportContext)> {
        self.observed().last.get(&kind.to_string()).cloned()
    }

    /// The service's status: the election's view, the runbook in progress from the journal,
    /// and what the daemon has seen.
    pub async fn status(&self) -> ServiceStatus {
        let dns = self.dns_answer().await;
        let view = self.controller.view();
        let journal: Option<Journal> = match self.store.load().await {
            Ok(stored) => stored.map(|s| s.journal),
            Err(e) => {
                tracing::warn!(service = %self.name(), error = %e, "journal not readable for the status");
                None
            }
        };
        let runbook = view.runbook.as_ref().map(|v| {
            let from_journal = journal
                .as_ref()
                .and_then(|j| j.runbook())
                .filter(|r| r.id == v.id);
            match from_journal {
                Some(r) => runbook_status(r, v.held.clone()),
                None => RunbookStatus {
                    id: v.id,
                    kind: v.kind.to_string(),
                    from: None,
                    to: v.to.as_ref().map(ToString::to_string),
                    epoch: view.epoch.get(),
                    forced: false,
                    decided_at: String::new(),
                    held: v.held.clone(),
                    steps: Vec::new(),
                },
            }
        });
        let o = self.observed();
        let sites = view
            .sites
            .iter()
            .map(|s| SiteStatus {
                id: s.id.to_string(),
                priority: s.priority,
                active: s.id == view.active,
                health: s.health.to_string(),
                eligible: s.eligible,
                lag_seconds: s.lag.map(|d| d.as_secs_f64()),
                reasons: s.reasons.iter().map(ToString::to_string).collect(),
                probes: o
                    .probes
                    .iter()
                    .filter(|((site, _, _), _)| site == &s.id)
                    .map(|((_, probe, observer), p)| ProbeDetail {
                        probe: probe.to_string(),
                        observer: observer.to_string(),
                        status: p.outcome.status.as_str().to_owned(),
                        health: p.health.map(|h| h.to_string()),
                        latency_seconds: p.outcome.latency.as_secs_f64(),
                        reason: p.outcome.reason.clone(),
                        at: rfc3339(p.at),
                        checks: p.latency.count,
                    })
                    .collect(),
            })
            .collect();
        let replication = self
            .replication()
            .iter()
            .map(|((resource, site), r)| ReplicationInfo {
                resource: resource.to_string(),
                site: site.to_string(),
                role: r.role.to_string(),
                lag_seconds: r.lag.map(|d| d.as_secs_f64()),
                lag_bytes: r.lag_bytes,
                at: rfc3339(r.at),
            })
            .collect();
        ServiceStatus {
            name: self.name().to_string(),
            zone: self.config.zone().to_string(),
            active: view.active.to_string(),
            epoch: view.epoch.get(),
            phase: view
                .runbook
                .as_ref()
                .map_or_else(|| "steady".to_owned(), |r| r.kind.to_string()),
            serving: serde_json::to_value(view.serving)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            frozen: view.frozen,
            switches: view.switches,
            running: !self.controller.is_stopped(),
            sites,
            replication,
            decision: o.decision.clone(),
            runbook,
            last_switch: o.last_switch.as_ref().map(summary),
            last_drill: o
                .last
                .get(&RunbookKind::Drill.to_string())
                .map(|(r, _)| summary(r)),
            last_event: self.log.last(),
            dns,
        }
    }
}

fn runbook_status(r: &Runbook, held: Option<String>) -> RunbookStatus {
    let next = r.next_index();
    let steps = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, planned)| match r.done.get(i) {
            Some(rec) => step_info(rec),
            None => StepInfo {
                name: planned.name.to_string(),
                description: planned.step.to_string(),
                status: if i == next {
                    if held.is_some() { "held" } else { "running" }
                } else {
                    "pending"
                }
                .to_owned(),
                attempts: if i == next { r.attempt } else { 0 },
                seconds: None,
                detail: String::new(),
            },
        })
        .collect();
    RunbookStatus {
        id: r.id,
        kind: r.kind.to_string(),
        from: r.from.as_ref().map(ToString::to_string),
        to: r.to.as_ref().map(ToString::to_string),
        epoch: r.epoch.get(),
        forced: r.forced,
        decided_at: rfc3339(r.decided_at),
        held: held.or_else(|| r.held.clone()),
        steps,
    }
}

fn step_info(rec: &StepRecord) -> StepInfo {
    StepInfo {
        name: rec.name.to_string(),
        description: rec.description.clone(),
        status: rec.status.as_str().to_owned(),
        attempts: rec.attempts,
        seconds: Some(rec.duration.as_secs_f64()),
        detail: rec.detail.clone(),
    }
}

/// A finished runbook in the API's terms.
pub fn summary(r: &SwitchReport) -> ReportSummary {
    ReportSummary {
        runbook: r.runbook,
        kind: r.kind.to_string(),
        outcome: r.outcome.as_str().to_owned(),
        from: r.from.as_ref().map(ToString::to_string),
        to: r.to.as_ref().map(ToString::to_string),
        epoch: r.epoch.get(),
        forced: r.forced,
        decided_at: rfc3339(r.decided_at),
        finished_at: rfc3339(r.finished_at),
        rto_seconds: r.rto.as_secs_f64(),
        rpo_seconds: r.rpo.map(|d| d.as_secs_f64()),
        rpo_at_decision_seconds: r.rpo_at_decision.map(|d| d.as_secs_f64()),
        phases: r
            .phases
            .iter()
            .map(|p| PhaseInfo {
                phase: p.phase.as_str().to_owned(),
                seconds: p.duration.as_secs_f64(),
            })
            .collect(),
        steps: r.steps.iter().map(step_info).collect(),
        reasons: r.reasons.clone(),
    }
}

/// A wall-clock time as RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An event in words, as a log line: the election's own wording.
pub fn describe(event: &Event) -> String {
    event.to_string()
}

/// The reports of finished runbooks, as files in one directory (`<journal_dir>/reports/`):
/// `<service>-<kind>-<id>.md`, `.html` and `.json` (a [`StoredReport`]), the service's name
/// escaped for a file name and the id the runbook's. Each file is written whole or not at all
/// (a temporary file renamed), the JSON last: a report listed has its pages. The newest `keep`
/// of each service are kept.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    dir: PathBuf,
    keep: usize,
}

/// One report's files: the runbook's id and the file name without its extension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ReportName {
    id: u64,
    base: String,
}

/// The extensions of a report's files, JSON (the one that lists it) last.
const REPORT_FILES: [&str; 3] = ["md", "html", "json"];

impl ReportFiles {
    /// Reports in `dir`, the newest `keep` of each service kept.
    pub fn new(dir: PathBuf, keep: usize) -> Self {
        Self {
            dir,
            keep: keep.max(1),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the report of `r` for `service` (Markdown, HTML, then JSON), then deletes the
    /// service's reports beyond the newest `keep`. Returns the JSON file.
    pub fn write(
        &self,
        service: &str,
        r: &SwitchReport,
        ctx: &ReportContext,
    ) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let base = format!("{}-{}-{}", file_stem(service), r.kind.as_str(), r.runbook);
        let page = Report::new(r, ctx);
        let json = serde_json::to_vec_pretty(&stored_report(service, r, ctx))
            .map_err(std::io::Error::other)?;
        let contents = [page.markdown().into_bytes(), page.html().into_bytes(), json];
        for (ext, bytes) in REPORT_FILES.iter().zip(contents) {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(self.dir.join(format!("{base}.{ext}")))
                .map_err(|e| e.error)?;
        }
        // The renames themselves, on disk.
        std::fs::File::open(&self.dir)?.sync_all()?;
        for old in self.names(service)?.into_iter().rev().skip(self.keep) {
            for ext in REPORT_FILES {
                match std::fs::remove_file(self.dir.join(format!("{}.{ext}", old.base))) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(self.dir.join(format!("{base}.json")))
    }

    /// The reports of `service`, oldest first (by id).
    fn names(&self, service: &str) -> std::io::Result<Vec<ReportName>> {
        let prefix = format!("{}-", file_stem(service));
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let file = entry?.file_name();
            let Some((base, ext)) = file.to_str().and_then(|f| f.rsplit_once('.')) else {
                continue;
            };
            let Some((kind, id)) = base
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('-'))
            else {
                continue;
            };
            // A kind has no '-': another service whose name starts with this one's is not it.
            let kind_ok =
                !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if let (true, true, Ok(id)) = (REPORT_FILES.contains(&ext), kind_ok, id.parse()) {
                names.push(ReportName {
                    id,
                    base: base.to_owned(),
                });
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The reports of `service` kept on disk, newest first. A JSON file that cannot be read
    /// is left out (and logged).
    pub fn history(&self, service: &str) -> std::io::Result<Vec<HistoryEntry>> {
        let mut out = Vec::new();
        for name in self.names(service)?.into_iter().rev() {
            let path = self.dir.join(format!("{}.json", name.base));
            let read = std::fs::read(&path).and_then(|b| {
                serde_json::from_slice::<ReportSummary>(&b).map_err(std::io::Error::other)
            });
            match read {
                Ok(r) => out.push(HistoryEntry::from(&r)),
                // Written first, listed once their JSON is: not a report yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "report not readable");
                }
            }
        }
        Ok(out)
    }

    /// The file of report `id` of `service` with extension `ext` (`md`, `html`, `json`);
    /// `None` when there is no such report.
    pub fn read(&self, service: &str, id: u64, ext: &str) -> std::io::Result<Option<String>> {
        let Some(name) = self.names(service)?.into_iter().find(|n| n.id == id) else {
            return Ok(None);
        };
        match std::fs::read_to_string(self.dir.join(format!("{}.{ext}", name.base))) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A service's DNS name as the start of a file name: letters, digits, `.`, `-` and `_` as
/// they are, every other byte as `%XX`.
fn file_stem(service: &str) -> String {
    let mut out = String::with_capacity(service.len());
    for b in service.trim_end_matches('.').bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A report as its JSON file holds it.
fn stored_report(service: &str, r: &SwitchReport, ctx: &ReportContext) -> StoredReport {
    let verdict = report::assess(r, ctx);
    StoredReport {
        service: service.to_owned(),
        summary: summary(r),
        report: r.clone(),
        context: ContextInfo {
            published_name: ctx.published_name.clone(),
            started_by: ctx.started_by.clone(),
            controller: ctx.controller.clone(),
            generated_at: rfc3339(ctx.generated_at),
            sites: ctx
                .sites
                .iter()
                .map(|s| SiteNoteInfo {
                    id: s.id.clone(),
                    addresses: s.addresses.clone(),
                    role: s.role.clone(),
                })
                .collect(),
            integrity: ctx
                .integrity
                .iter()
                .map(|i| IntegrityInfo {
                    resource: i.resource.clone(),
                    site: i.site.clone(),
                    scope: i.scope.clone(),
                    checked: i.checked,
                    unit: i.unit.clone(),
                    markers_written: i.markers_written,
                    markers_verified: i.markers_verified,
                    mismatches: i.mismatches.clone(),
                })
                .collect(),
            checks: ctx
                .checks
                .iter()
                .map(|c| CheckInfo {
                    what: c.what.clone(),
                    passed: c.passed,
                    detail: c.detail.clone(),
                })
                .collect(),
            retries: ctx
                .retries
                .iter()
                .map(|x| RetryInfo {
                    step: x.step.to_string(),
                    index: x.index,
                    attempt: x.attempt,
                    error: x.error.clone(),
                    delay_seconds: x.delay.map(|d| d.as_secs_f64()),
                })
                .collect(),
            notes: ctx.notes.clone(),
            passed: verdict.passed(),
            failures: verdict.failures,
            warnings: verdict.warnings,
        },
    }
}

#[cfg(test)]
mod report_file_tests {
    use super::*;

    #[test]
    fn a_service_name_becomes_a_file_name() {
        assert_eq!(file_stem("www.example.test."), "www.example.test");
        assert_eq!(file_stem("a/b c"), "a%2Fb%20c");
        assert_eq!(file_stem("x_y-z"), "x_y-z");
    }

    #[test]
    fn names_of_another_service_or_other_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "www.a-failover-3.json",
            "www.a-all_down-4.md",
            "www.a-b-failover-5.json",
            "www.a-drill-x.json",
            "www.a-drill-6.txt",
            ".tmp123",
        ] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        let files = ReportFiles::new(dir.path().to_owned(), 10);
        let ids: Vec<u64> = files.names("www.a").unwrap().iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![3, 4]);
        assert_eq!(files.read("www.a", 4, "md").unwrap().as_deref(), Some("{}"));
        assert_eq!(files.read("www.a", 4, "json").unwrap(), None);
        assert_eq!(files.read("www.a", 9, "md").unwrap(), None);
    }
}
