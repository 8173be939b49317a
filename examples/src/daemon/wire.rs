//! The JSON bodies of the HTTP API, shared by the daemon and `idnsctl`.
//!
//! Times are RFC 3339 strings (UTC), durations are seconds as floating-point numbers.

use serde::{Deserialize, Serialize};

/// `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    /// Every service the daemon runs.
    pub services: Vec<ServiceStatus>,
}

/// The status of one service: `GET /v1/services/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's DNS name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The active site.
    pub active: String,
    /// The fencing epoch.
    pub epoch: u64,
    /// `steady`, or the kind of the runbook in progress (`failover`, `failback`, `drill`, …).
    pub phase: String,
    /// What the name publishes: `active`, `all_sites` or `withdrawn`.
    pub serving: String,
    /// Whether automatic decisions are frozen.
    pub frozen: bool,
    /// Switches made so far (kept in the journal).
    pub switches: u64,
    /// Whether the service's controller is running.
    pub running: bool,
    /// Each site, in configuration order.
    pub sites: Vec<SiteStatus>,
    /// Replication of each resource at each site, from the last status poll.
    pub replication: Vec<ReplicationInfo>,
    /// The last decision and its reason chain.
    pub decision: Option<DecisionInfo>,
    /// The runbook in progress.
    pub runbook: Option<RunbookStatus>,
    /// The last finished production switch (failover, failback, …).
    pub last_switch: Option<ReportSummary>,
    /// The last finished drill.
    pub last_drill: Option<ReportSummary>,
    /// Sequence number of the newest event (for `/events?after=`).
    pub last_event: u64,
    /// What the DNS backend publishes for the name now, read when the status was asked for:
    /// while a DNS step is held or failing, the elected site (`active`) and what DNS answers
    /// differ.
    #[serde(default)]
    pub dns: Option<DnsAnswer>,
}

/// What the DNS backend publishes for a service's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// The records (addresses, or the alias target), as text.
    pub records: Vec<String>,
    /// The site its ownership record names (`-` when it names none).
    pub site: Option<String>,
    /// The epoch of its ownership record.
    pub epoch: Option<u64>,
    /// Why it could not be read, when it could not.
    pub error: Option<String>,
}

impl DnsAnswer {
    /// Whether DNS answers as the election decided: the elected `active` site at `epoch`.
    pub fn agrees(&self, active: &str, epoch: u64) -> bool {
        self.error.is_none()
            && self.epoch == Some(epoch)
            && self.site.as_deref().is_none_or(|s| s == active || s == "-")
    }

    /// What DNS answers, in a few words: `primary at epoch 1 (127.0.0.1)`.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("unknown ({e})");
        }
        let records = if self.records.is_empty() {
            "no records".to_owned()
        } else {
            self.records.join(", ")
        };
        match (&self.site, self.epoch) {
            (Some(site), Some(epoch)) => format!("{site} at epoch {epoch} ({records})"),
            (None, Some(epoch)) => format!("epoch {epoch} ({records})"),
            _ => records,
        }
    }
}

/// One site in a status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// The site.
    pub id: String,
    /// Its priority (lowest is home).
    pub priority: u32,
    /// Whether it is the active site.
    pub active: bool,
    /// `up`, `down` or `unknown` (by observer quorum).
    pub health: String,
    /// Whether a failover could go there now.
    pub eligible: bool,
    /// Its largest replication lag, seconds.
    pub lag_seconds: Option<f64>,
    /// Why it has this health and eligibility.
    pub reasons: Vec<String>,
    /// The last result of each probe at each observer.
    pub probes: Vec<ProbeDetail>,
}

/// The last result of one probe at one observer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDetail {
    /// The probe.
    pub probe: String,
    /// The observer.
    pub observer: String,
    /// `up`, `down` or `timeout`.
    pub status: String,
    /// The probe's health after rise/fall counting, when it has crossed a threshold.
    pub health: Option<String>,
    /// Latency of the last attempt, seconds.
    pub latency_seconds: f64,
    /// The reason of the last attempt (empty when up).
    pub reason: String,
    /// When the last attempt started.
    pub at: String,
    /// Attempts reported since the daemon started.
    pub checks: u64,
}

/// Replication of one resource at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationInfo {
    /// The resource.
    pub resource: String,
    /// The site.
    pub site: String,
    /// `primary`, `replica`, `fenced` or `unknown`.
    pub role: String,
    /// Lag behind the primary, seconds.
    pub lag_seconds: Option<f64>,
    /// Lag in bytes, where the backend knows.
    pub lag_bytes: Option<u64>,
    /// When it was read.
    pub at: String,
}

/// A decision of the election.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInfo {
    /// The runbook it started.
    pub runbook: u64,
    /// Its kind.
    pub kind: String,
    /// Switching away from.
    pub from: Option<String>,
    /// Switching to.
    pub to: Option<String>,
    /// The new epoch.
    pub epoch: u64,
    /// Whether an operator forced it.
    pub forced: bool,
    /// The reason chain, one link per entry.
    pub reasons: Vec<String>,
    /// When it was made.
    pub at: String,
}

/// The runbook in progress, from the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookStatus {
    /// Its id.
    pub id: u64,
    /// Its kind.
    pub kind: String,
    /// Switching away from.
    pub from: Option<String>,
    /// Switching to.
    pub to: Option<String>,
    /// Its epoch.
    pub epoch: u64,
    /// Whether an operator forced it.
    pub forced: bool,
    /// When it was decided.
    pub decided_at: String,
    /// Set while it waits for an operator (`idnsctl resume`).
    pub held: Option<String>,
    /// Every planned step with its state.
    pub steps: Vec<StepInfo>,
}

/// One step of a runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// The configured step (`fence`, `promote`, …).
    pub name: String,
    /// What it does, in words.
    pub description: String,
    /// `done`, `skipped`, `failed`, `running` or `pending`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Time it took, seconds (for finished steps).
    pub seconds: Option<f64>,
    /// What it found, or its last error.
    pub detail: String,
}

/// A finished runbook with its measured RTO and RPO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// The runbook.
    pub runbook: u64,
    /// Its kind.
    pub kind: String,
    /// `completed` or `aborted`.
    pub outcome: String,
    /// Switched away from.
    pub from: Option<String>,
    /// Switched to.
    pub to: Option<String>,
    /// Its epoch.
    pub epoch: u64,
    /// Whether it was forced.
    pub forced: bool,
    /// When it was decided.
    pub decided_at: String,
    /// When it ended.
    pub finished_at: String,
    /// Recovery time, seconds.
    pub rto_seconds: f64,
    /// Data lost, seconds: measured by the catch-up or the promotion (the position promoted
    /// versus the primary's last known one); the lag at the decision where no step measured it.
    pub rpo_seconds: Option<f64>,
    /// Replication lag of the target at the decision, seconds, before any step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_at_decision_seconds: Option<f64>,
    /// The recovery time split into phases, in order.
    pub phases: Vec<PhaseInfo>,
    /// Every step.
    pub steps: Vec<StepInfo>,
    /// The reason chain of the decision.
    pub reasons: Vec<String>,
}

/// Time spent in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseInfo {
    /// The phase (`detect`, `decide`, `fence`, `promote`, …).
    pub phase: String,
    /// Seconds.
    pub seconds: f64,
}

/// Body of `POST /v1/services/{name}/failover`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// The target site; none picks the best eligible one.
    #[serde(default)]
    pub to: Option<String>,
    /// Go past the health, RPO and dwell guards.
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST /v1/services/{name}/failback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailbackRequest {
    /// Go past the health and dwell guards.
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST /v1/services/{name}/drill`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// The site to rehearse on; none picks the preferred site other than the active one.
    #[serde(default)]
    pub to: Option<String>,
}

/// Body of `POST /v1/services/{name}/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// `retry`, `skip` or `abort` the held step.
    pub action: String,
}

/// The answer to an accepted command (HTTP 202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAccepted {
    /// The service.
    pub service: String,
    /// The command, in words.
    pub command: String,
    /// The runbook it started (or that is in progress), to follow with `/events`.
    pub runbook: Option<u64>,
    /// The epoch after the command.
    pub epoch: u64,
    /// Events after this sequence number belong to this command or later.
    pub after: u64,
}

/// An error answer: `{"error": "unknown_service", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable code: `unauthorized`, `unknown_service`, `unknown_site`, `bad_request`,
    /// `refused`, `unavailable`, `not_found`, `too_large`.
    pub error: String,
    /// What happened, for a person.
    pub message: String,
}

/// `GET /v1/services/{name}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// Events after the requested sequence number, oldest first.
    pub events: Vec<EventRecord>,
    /// Ask next with `after` = this.
    pub next: u64,
    /// Whether events between `after` and the first returned one were dropped from the log.
    pub missed: bool,
}

/// One event of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Its sequence number (from 1, per daemon run).
    pub seq: u64,
    /// When the daemon saw it.
    pub at: String,
    /// The event in words.
    pub text: String,
    /// The election's event, as idns-core serialises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<idns_core::Event>,
    /// Progress of a long replication operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressInfo>,
}

/// Progress of a long replication operation (a pass, a catch-up, a check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressInfo {
    /// The resource.
    pub resource: String,
    /// The site written or checked.
    pub site: String,
    /// `pass`, `drill_copy`, `check` or `catch_up`.
    pub operation: String,
    /// The file being worked on.
    pub file: Option<String>,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes in all.
    pub bytes_total: u64,
}

/// `GET /v1/services/{name}/history`: the reports kept on disk, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The service.
    pub service: String,
    /// One entry per kept report, newest first.
    pub reports: Vec<HistoryEntry>,
}

/// One finished runbook in a [`History`]; its full report is
/// `GET /v1/services/{name}/reports/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The report's id: its runbook's id.
    pub id: u64,
    /// The runbook's kind (`failover`, `failback`, `drill`, …).
    pub kind: String,
    /// `completed` or `aborted`.
    pub outcome: String,
    /// Switched away from.
    pub from: Option<String>,
    /// Switched to.
    pub to: Option<String>,
    /// Its epoch.
    pub epoch: u64,
    /// When it was decided.
    pub decided_at: String,
    /// When it ended.
    pub finished_at: String,
    /// Recovery time, seconds.
    pub rto_seconds: f64,
    /// Data lost, seconds (see [`ReportSummary::rpo_seconds`]).
    pub rpo_seconds: Option<f64>,
    /// Replication lag of the target at the decision, seconds.
    pub rpo_at_decision_seconds: Option<f64>,
    /// Whether it was forced.
    pub forced: bool,
}

impl From<&ReportSummary> for HistoryEntry {
    fn from(r: &ReportSummary) -> Self {
        HistoryEntry {
            id: r.runbook,
            kind: r.kind.clone(),
            outcome: r.outcome.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
            epoch: r.epoch,
            decided_at: r.decided_at.clone(),
            finished_at: r.finished_at.clone(),
            rto_seconds: r.rto_seconds,
            rpo_seconds: r.rpo_seconds,
            rpo_at_decision_seconds: r.rpo_at_decision_seconds,
            forced: r.forced,
        }
    }
}

/// A report as written to `<journal_dir>/reports/<service>-<kind>-<id>.json` and served by
/// `GET /v1/services/{name}/reports/{id}?format=json`: the summary's fields at the top (so it
/// reads as a [`ReportSummary`] too), the election's own report and the context the daemon
/// added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    /// The service.
    pub service: String,
    /// The summary, as the API's other answers carry it.
    #[serde(flatten)]
    pub summary: ReportSummary,
    /// The election's report, as idns-core serialises it.
    pub report: idns_core::SwitchReport,
    /// What the daemon knew around it.
    pub context: ContextInfo,
}

/// What a report's context holds (`crate::report::ReportContext`), and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextInfo {
    /// The name the runbook published (the drill name for a drill).
    pub published_name: String,
    /// Who or what started it.
    pub started_by: String,
    /// The program that ran it.
    pub controller: String,
    /// When the report was made.
    pub generated_at: String,
    /// The sites and their part in the runbook.
    pub sites: Vec<SiteNoteInfo>,
    /// What integrity verification found.
    pub integrity: Vec<IntegrityInfo>,
    /// The checks an auditor asks for.
    pub checks: Vec<CheckInfo>,
    /// Failed attempts that were retried, and holds for an operator.
    pub retries: Vec<RetryInfo>,
    /// Free remarks.
    pub notes: Vec<String>,
    /// Whether the report passed; failures and warnings when not plainly.
    pub passed: bool,
    /// Why it failed.
    pub failures: Vec<String>,
    /// What to look at although it passed.
    pub warnings: Vec<String>,
}

/// A site as a report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteNoteInfo {
    /// The site.
    pub id: String,
    /// Its addresses (or alias).
    pub addresses: String,
    /// Its part in the runbook.
    pub role: String,
}

/// What integrity verification found for one resource at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrityInfo {
    /// The resource.
    pub resource: String,
    /// The site whose copy was checked.
    pub site: String,
    /// What was checked against what.
    pub scope: String,
    /// Entries checked.
    pub checked: u64,
    /// What an entry is.
    pub unit: String,
    /// Markers written.
    pub markers_written: u64,
    /// Markers read back identical.
    pub markers_verified: u64,
    /// Every difference found.
    pub mismatches: Vec<String>,
}

/// A check and what was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckInfo {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

/// A retried attempt or a hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryInfo {
    /// The step.
    pub step: String,
    /// Its position in the runbook, where known.
    pub index: Option<u32>,
    /// The attempt that failed, where known.
    pub attempt: Option<u32>,
    /// The error, or the reason of the hold.
    pub error: String,
    /// Seconds before the next attempt; none for a hold.
    pub delay_seconds: Option<f64>,
}

/// The data of the `missed` event of a `text/event-stream`: events the client asked for that
/// the log no longer holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissedEvents {
    /// How many events were lost.
    pub missed: u64,
    /// The sequence number the client resumed after.
    pub after: u64,
    /// The oldest event the log still holds, sent next.
    pub first: u64,
}

/// The data of the `reset` event of a `text/event-stream`: the client resumed after an event
/// this run of the daemon has not numbered yet (it restarted, and numbers from 1 again), so
/// every event it still keeps follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsReset {
    /// The sequence number the client resumed after.
    pub after: u64,
    /// The newest event of this run.
    pub last: u64,
}
