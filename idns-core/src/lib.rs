//! The core of idns: decide, safely and explainably, which site of a service is active, and
//! carry out the failover or failback.
//!
//! What it does:
//! - **Model and configuration** ([`ServiceConfig`]): a service's DNS name, its sites, their
//!   probes' health knobs, observers and quorum, failover and failback policy, the RPO budget,
//!   the consistency group and the runbooks; validated once, every problem named by its path.
//! - **The election** ([`Election`]): a sans-IO state machine, fed probe and replication
//!   reports, operator commands and step results together with the current time, that emits
//!   runbook [`Action`]s carrying a fencing [`Epoch`], [`Event`]s with reason chains, and
//!   measured RTO/RPO ([`SwitchReport`]).
//! - **Traits** for the parts that do I/O: [`Probe`], [`DnsBackend`], [`ReplicationBackend`],
//!   [`StateStore`].
//! - **The journal** ([`Journal`]): what survives a crash, so a restarted controller resumes the
//!   runbook in progress and never switches twice.
//! - With feature `runtime`: the controller (`runtime::Controller`, assembled with
//!   `Controller::builder`), which runs the election on tokio, and a crash-safe file store
//!   (`runtime::FileStore`).
//! - With feature `etcd`: an etcd v3 client over etcd's JSON gateway and a state store on
//!   it (`etcd::EtcdStore`), for controllers at several sites.
//! - With feature `test-util`: a deterministic simulator, in-memory backends and the
//!   conformance suites that every backend crate runs.
//!
//! What it does not do: run probes (`idns-probe`), talk DNS (`idns-dns`) or replicate data
//! (`idns-replication`). Without the `runtime` feature it does no I/O at all and pulls no
//! tokio: it never reads a clock, sleeps, spawns or opens a socket.
//!
//! # Example
//! Drive the election by hand: the primary fails three probes in a row, and the election
//! fails over to the recovery site with a new epoch.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use idns_core::*;
//!
//! let cfg = ServiceConfig::from_toml(r#"
//!     name = "app.example.com"
//!     zone = "example.com"
//!     [policy]
//!     min_dwell = "0s"
//!     [[sites]]
//!     id = "primary"
//!     priority = 1
//!     addresses = ["192.0.2.1"]
//!     probes = [{ id = "web", interval = "1s", rise = 1, fall = 3 }]
//!     [[sites]]
//!     id = "recovery"
//!     priority = 2
//!     addresses = ["198.51.100.1"]
//!     probes = [{ id = "web", interval = "1s", rise = 1, fall = 3 }]
//! "#)?;
//! let t0 = Instant::now();
//! let mut election = Election::new(cfg, None, t0, SystemTime::now())?;
//!
//! let mut published = Vec::new();
//! let mut step = |e: &mut Election, now: Instant| {
//!     while let Some(action) = e.poll_action() {
//!         if let Step::SwitchDns { change } = &action.step {
//!             published.push((change.epoch, change.records.to_string()));
//!         }
//!         let done = StepDone { id: action.id, result: Ok(StepOutput::Done) };
//!         e.handle(Input::StepDone(done), now);
//!     }
//! };
//! step(&mut election, t0);
//!
//! for second in 1..=3 {
//!     let now = t0 + Duration::from_secs(second);
//!     for (site, up) in [("primary", false), ("recovery", true)] {
//!         let report = ProbeReport {
//!             site: site.parse()?,
//!             probe: "web".parse()?,
//!             observer: "local".parse()?,
//!             outcome: if up {
//!                 ProbeOutcome::up(Duration::from_millis(3))
//!             } else {
//!                 ProbeOutcome::down(Duration::from_millis(1), "connection refused")
//!             },
//!             at: SystemTime::now(),
//!         };
//!         election.handle(Input::Probe(report), now);
//!     }
//!     step(&mut election, now);
//! }
//!
//! assert_eq!(election.view().active.as_str(), "recovery");
//! assert_eq!(
//!     published,
//!     vec![(Epoch::new(1), "192.0.2.1".to_owned()), (Epoch::new(2), "198.51.100.1".to_owned())]
//! );
//! let report = std::iter::from_fn(|| election.poll_event())
//!     .find_map(|e| match e { Event::Finished(r) if r.kind == RunbookKind::Failover => Some(r), _ => None })
//!     .expect("the failover finished");
//! assert_eq!(report.phase(Phase::Detect), Duration::from_secs(2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend_spec;
mod config;
mod dns;
mod election;
mod epoch;
mod error;
mod event;
mod health;
mod id;
mod journal;
mod probe;
mod reason;
mod replication;
mod runbook;
mod secret;
mod store;
mod timer;
mod view;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "test-util")]
pub mod test_util;
#[cfg(feature = "tls")]
pub mod tls;

pub use backend_spec::BackendSpec;
pub use config::{
    AllDownPolicy, Counting, FailbackMode, FailoverMode, HealthRule, Observers, ObserversSpec,
    Policy, PolicySpec, ProbeSettings, ProbeSpec, RecordMode, RunbookSpec, ServiceConfig,
    ServiceSpec, Site, SiteSpec, StepSpec, default_drill_steps, default_failback_steps,
    default_failover_steps, redacted,
};
pub use dns::{
    DnsBackend, DnsCapabilities, DnsChange, Ownership, Propagation, Published, RecordSet,
    SameEpoch, ServerAnswer, ownership_name,
};
pub use election::{
    Command, Election, Feed, Guard, Input, Plan, PlanStep, Resume, StepDone, StepOutput,
};
pub use epoch::Epoch;
pub use error::{
    BackendError, ConfigError, Error, FieldError, InvalidId, MAX_QUOTED, Problems, Refused,
};
pub use event::{Event, Outcome, PhaseTime, SwitchReport, Trigger};
pub use id::{DnsName, ObserverId, ProbeId, ResourceId, SiteId};
pub use journal::{JOURNAL_VERSION, Journal, Serving};
pub use probe::Health;
pub use probe::{Probe, ProbeOutcome, ProbeReport, ProbeStatus};
pub use reason::{Reason, explain};
pub use replication::{
    IntegrityReport, IntegrityRequest, Manifest, ManifestEntry, Mismatch, OpContext, Promoted,
    ReplicationBackend, ReplicationReport, ReplicationStatus, Role, SiteReplication,
};
pub use runbook::{
    Action, OnFailure, Phase, PlannedStep, Runbook, RunbookKind, Step, StepId, StepName,
    StepPolicy, StepRecord, StepStatus,
};
pub use secret::{RedactedMap, Secret, is_secret_name};
pub use store::{StateStore, Stored};
pub use view::{ObserverView, ProbeView, RunbookView, ServiceView, SiteView};
