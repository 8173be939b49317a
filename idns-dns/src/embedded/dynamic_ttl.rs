//! Dynamic TTL: the server's configuration of it, the served TTL, and the adapter that
//! turns the election's events into a mode (see the [module docs](super#dynamic-ttl)).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use idns_core::{Event, Health, Outcome, Problems, RunbookKind, ServiceView, Serving, SiteId};
use serde::{Deserialize, Serialize};

use crate::ttl::Ttl;

/// The dynamic TTL of the embedded server's service names.
///
/// ```
/// use idns_dns::embedded::{EmbeddedConfig, EmbeddedSpec};
///
/// let spec: EmbeddedSpec = toml::from_str(r#"
///     dynamic_ttl = { suspect = "5s", stable = "300s", settle = "60s" }
///     [[zones]]
///     name = "example.com"
/// "#)?;
/// EmbeddedConfig::try_from(spec)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicTtl {
    /// TTL while the active site is not up, a runbook runs, or within `settle` of a switch or
    /// a recovery (whole seconds, 1 s to `stable`).
    #[serde(with = "humantime_serde")]
    pub suspect: Duration,
    /// TTL otherwise (whole seconds, `suspect` to 2^31 - 1 s).
    #[serde(with = "humantime_serde")]
    pub stable: Duration,
    /// How long a name stays suspect after a switch or a recovery (default 60 s, at most a
    /// day).
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Serve `stable` (and `suspect`) even when the change asked for a shorter TTL; by default
    /// a name never answers with more than its change asked for.
    #[serde(default)]
    pub exceed_requested: bool,
}

fn default_settle() -> Duration {
    Duration::from_secs(60)
}

/// Longest `settle` accepted.
const MAX_SETTLE: Duration = Duration::from_secs(86_400);

impl DynamicTtl {
    /// A dynamic TTL with the default `settle` (60 s), capped by what each change asks for.
    pub fn new(suspect: Duration, stable: Duration) -> Self {
        Self {
            suspect,
            stable,
            settle: default_settle(),
            exceed_requested: false,
        }
    }

    /// Checks every field; problems are pushed with their path under `path`.
    pub(crate) fn check(&self, path: &str, p: &mut Problems) -> Option<TtlBounds> {
        let before = p.len();
        let secs = |p: &mut Problems, field: &str, d: Duration| match Ttl::try_from(d) {
            Ok(t) if t.as_secs() >= 1 => t.as_secs(),
            _ => {
                p.push(
                    format!("{path}.{field}"),
                    humantime::format_duration(d),
                    "must be whole seconds, from 1 s to 2^31 - 1 s",
                );
                0
            }
        };
        let suspect = secs(p, "suspect", self.suspect);
        let stable = secs(p, "stable", self.stable);
        if suspect > stable && stable > 0 {
            p.push(
                format!("{path}.suspect"),
                humantime::format_duration(self.suspect),
                format!(
                    "must not be longer than {path}.stable ({})",
                    humantime::format_duration(self.stable)
                ),
            );
        }
        if self.settle > MAX_SETTLE {
            p.push(
                format!("{path}.settle"),
                humantime::format_duration(self.settle),
                "must be at most 1 day",
            );
        }
        (p.len() == before).then_some(TtlBounds {
            suspect,
            stable,
            exceed_requested: self.exceed_requested,
            settle: self.settle,
        })
    }
}

/// The checked TTLs, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TtlBounds {
    suspect: u32,
    stable: u32,
    exceed_requested: bool,
    pub(crate) settle: Duration,
}

impl TtlBounds {
    /// The TTL served for a name whose change asked for `requested`, in `mode`.
    pub(crate) fn served(&self, requested: u32, mode: Option<TtlMode>) -> u32 {
        let ttl = match mode {
            None => return requested,
            Some(TtlMode::Suspect) => self.suspect,
            Some(TtlMode::Stable) => self.stable,
        };
        if self.exceed_requested {
            ttl
        } else {
            ttl.min(requested)
        }
    }
}

/// Which of the two TTLs a name answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlMode {
    /// Something may change soon: the short TTL.
    Suspect,
    /// Nothing is expected to change: the long TTL.
    Stable,
}

/// Turns the election's events about one service into a [`TtlMode`], sans IO: every input
/// carries `now`, and [`poll_timeout`](Self::poll_timeout) says when the mode may change
/// without one (the end of a settle period).
///
/// The mode is [`Suspect`](TtlMode::Suspect) while the active site is not known to be up,
/// while a runbook (other than a drill) runs, and for `settle` after a runbook ends or the
/// active site recovers; [`Stable`](TtlMode::Stable) otherwise.
///
/// ```
/// use std::time::{Duration, Instant};
/// use idns_core::{Event, Health};
/// use idns_dns::embedded::{TtlAdvisor, TtlMode};
///
/// let now = Instant::now();
/// let mut advisor = TtlAdvisor::new(Duration::from_secs(60));
/// advisor.set_active(Some("primary".parse()?));
/// let up = Event::SiteChanged {
///     site: "primary".parse()?, from: Health::Unknown, to: Health::Up, reasons: vec![],
/// };
/// advisor.handle(&up, now);
/// assert_eq!(advisor.mode(now), TtlMode::Suspect); // it just recovered
/// let later = advisor.poll_timeout().unwrap();
/// advisor.handle_timeout(later);
/// assert_eq!(advisor.mode(later), TtlMode::Stable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlAdvisor {
    settle: Duration,
    health: BTreeMap<SiteId, Health>,
    active: Option<SiteId>,
    running: Option<u64>,
    settle_until: Option<Instant>,
}

impl TtlAdvisor {
    /// An advisor that keeps a name suspect for `settle` after a switch or a recovery. It
    /// knows no active site until told ([`set_active`](Self::set_active)) or until a runbook
    /// decides one.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            health: BTreeMap::new(),
            active: None,
            running: None,
            settle_until: None,
        }
    }

    /// The site the name points at (e.g. the ownership record's site when the controller
    /// resumes from a journal); `None` when it points at no single site.
    pub fn set_active(&mut self, site: Option<SiteId>) {
        self.active = site;
    }

    /// Takes the active site, each site's health and the runbook in progress from the
    /// election's view, for an advisor that starts after the election did (the events it
    /// missed are in the view).
    pub fn seed(&mut self, view: &ServiceView) {
        self.active = (view.serving == Serving::Active).then(|| view.active.clone());
        self.health = view
            .sites
            .iter()
            .map(|s| (s.id.clone(), s.health))
            .collect();
        self.running = view
            .runbook
            .as_ref()
            .filter(|r| r.kind != RunbookKind::Drill)
            .map(|r| r.id);
    }

    /// The site the advisor believes the name points at.
    pub fn active(&self) -> Option<&SiteId> {
        self.active.as_ref()
    }

    /// Feeds one event. Events that say nothing about the service's name (probes,
    /// observers, steps, drills) are ignored.
    pub fn handle(&mut self, event: &Event, now: Instant) {
        match event {
            Event::SiteChanged { site, from, to, .. } => {
                self.health.insert(site.clone(), *to);
                if self.active.as_ref() == Some(site) && *to == Health::Up && *from != Health::Up {
                    self.settle_from(now);
                }
            }
            Event::Decision {
                runbook, kind, to, ..
            } if *kind != RunbookKind::Drill => {
                self.running = Some(*runbook);
                self.active = to.clone();
            }
            Event::Finished(report) if report.kind != RunbookKind::Drill => {
                if self.running == Some(report.runbook) {
                    self.running = None;
                }
                if report.outcome == Outcome::Completed {
                    self.active = report.to.clone();
                }
                self.settle_from(now);
            }
            _ => {}
        }
    }

    /// Ends a settle period that is over at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.settle_until.is_some_and(|t| t <= now) {
            self.settle_until = None;
        }
    }

    /// When the mode may change with no new event: the end of the settle period.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.settle_until
    }

    /// The mode at `now`.
    pub fn mode(&self, now: Instant) -> TtlMode {
        let active_up = self
            .active
            .as_ref()
            .is_some_and(|s| self.health.get(s) == Some(&Health::Up));
        if !active_up || self.running.is_some() || self.settle_until.is_some_and(|t| now < t) {
            TtlMode::Suspect
        } else {
            TtlMode::Stable
        }
    }

    fn settle_from(&mut self, now: Instant) {
        // `settle` is bounded by the configuration; an absurd one settles never.
        self.settle_until = now.checked_add(self.settle).or(self.settle_until);
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use idns_core::{Epoch, SwitchReport, Trigger};

    use super::*;

    fn site(s: &str) -> SiteId {
        s.parse().unwrap()
    }

    fn health(s: &str, from: Health, to: Health) -> Event {
        Event::SiteChanged {
            site: site(s),
            from,
            to,
            reasons: vec![],
        }
    }

    fn decision(runbook: u64, kind: RunbookKind, to: &str) -> Event {
        Event::Decision {
            runbook,
            kind,
            from: Some(site("a")),
            to: Some(site(to)),
            epoch: Epoch::new(2),
            forced: false,
            trigger: Trigger::Election,
            reasons: vec![],
        }
    }

    fn finished(runbook: u64, kind: RunbookKind, to: &str, outcome: Outcome) -> Event {
        Event::Finished(SwitchReport {
            runbook,
            kind,
            outcome,
            from: Some(site("a")),
            to: Some(site(to)),
            epoch: Epoch::new(2),
            forced: false,
            decided_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            rto: Duration::ZERO,
            phases: vec![],
            rpo: None,
            rpo_at_decision: None,
            steps: vec![],
            reasons: vec![],
        })
    }

    #[test]
    fn suspect_until_the_active_site_is_up_then_stable() {
        let t0 = Instant::now();
        let mut a = TtlAdvisor::new(Duration::from_secs(60));
        assert_eq!(a.mode(t0), TtlMode::Suspect, "nothing known yet");
        a.handle(&health("a", Health::Unknown, Health::Up), t0);
        assert_eq!(a.mode(t0), TtlMode::Suspect, "no active site yet");
        a.set_active(Some(site("a")));
        assert_eq!(a.mode(t0), TtlMode::Stable);
        assert_eq!(a.poll_timeout(), None);
        a.handle(&health("b", Health::Up, Health::Down), t0);
        assert_eq!(a.mode(t0), TtlMode::Stable, "another site's health");
        a.handle(&health("a", Health::Up, Health::Unknown), t0);
        assert_eq!(a.mode(t0), TtlMode::Suspect);
        a.handle(&health("a", Health::Unknown, Health::Down), t0);
        assert_eq!(a.mode(t0), TtlMode::Suspect);
    }

    #[test]
    fn a_switch_is_suspect_while_it_runs_and_for_settle_after() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(60);
        let mut a = TtlAdvisor::new(settle);
        a.set_active(Some(site("a")));
        a.handle(&health("a", Health::Up, Health::Down), t0);
        a.handle(&health("b", Health::Unknown, Health::Up), t0);
        a.handle(&decision(7, RunbookKind::Failover, "b"), t0);
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(a.mode(t1), TtlMode::Suspect, "the runbook runs");
        a.handle(
            &finished(7, RunbookKind::Failover, "b", Outcome::Completed),
            t1,
        );
        assert_eq!(a.active(), Some(&site("b")));
        assert_eq!(a.poll_timeout(), Some(t1 + settle));
        assert_eq!(
            a.mode(t1 + settle - Duration::from_secs(1)),
            TtlMode::Suspect
        );
        a.handle_timeout(t1 + Duration::from_secs(1));
        assert_eq!(a.poll_timeout(), Some(t1 + settle), "not over yet");
        a.handle_timeout(t1 + settle);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.mode(t1 + settle), TtlMode::Stable);
        // The old site recovering does not matter; the active one recovering does.
        let t2 = t1 + settle * 2;
        a.handle(&health("a", Health::Down, Health::Up), t2);
        assert_eq!(a.mode(t2), TtlMode::Stable);
        a.handle(&health("b", Health::Up, Health::Down), t2);
        a.handle(&health("b", Health::Down, Health::Up), t2);
        assert_eq!(a.mode(t2), TtlMode::Suspect);
        assert_eq!(a.mode(t2 + settle), TtlMode::Stable);
    }

    #[test]
    fn drills_do_not_touch_the_mode_and_all_down_is_suspect() {
        let t0 = Instant::now();
        let mut a = TtlAdvisor::new(Duration::ZERO);
        a.set_active(Some(site("a")));
        a.handle(&health("a", Health::Unknown, Health::Up), t0);
        a.handle(&decision(1, RunbookKind::Drill, "b"), t0);
        assert_eq!(a.mode(t0), TtlMode::Stable);
        a.handle(
            &finished(1, RunbookKind::Drill, "b", Outcome::Completed),
            t0,
        );
        assert_eq!(a.active(), Some(&site("a")));
        a.handle(
            &Event::Decision {
                runbook: 2,
                kind: RunbookKind::AllDown,
                from: Some(site("a")),
                to: None,
                epoch: Epoch::new(3),
                forced: false,
                trigger: Trigger::Election,
                reasons: vec![],
            },
            t0,
        );
        a.handle(
            &finished(2, RunbookKind::AllDown, "a", Outcome::Aborted),
            t0,
        );
        assert_eq!(a.active(), None, "an aborted runbook leaves its decision");
        assert_eq!(a.mode(t0), TtlMode::Suspect);
    }

    #[test]
    fn served_ttl_stays_within_what_was_asked_unless_configured() {
        let b = TtlBounds {
            suspect: 5,
            stable: 300,
            exceed_requested: false,
            settle: Duration::ZERO,
        };
        assert_eq!(b.served(30, None), 30);
        assert_eq!(b.served(30, Some(TtlMode::Suspect)), 5);
        assert_eq!(b.served(30, Some(TtlMode::Stable)), 30);
        assert_eq!(b.served(3, Some(TtlMode::Suspect)), 3);
        assert_eq!(b.served(600, Some(TtlMode::Stable)), 300);
        let b = TtlBounds {
            exceed_requested: true,
            ..b
        };
        assert_eq!(b.served(30, Some(TtlMode::Stable)), 300);
        assert_eq!(b.served(3, Some(TtlMode::Suspect)), 5);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut p = Problems::new();
        let bad = DynamicTtl {
            suspect: Duration::from_millis(1500),
            stable: Duration::ZERO,
            settle: Duration::from_secs(2 * 86_400),
            exceed_requested: false,
        };
        assert_eq!(bad.check("dynamic_ttl", &mut p), None);
        let text: Vec<String> = p
            .finish()
            .unwrap_err()
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "dynamic_ttl.suspect = 1s 500ms: must be whole seconds, from 1 s to 2^31 - 1 s",
                "dynamic_ttl.stable = 0s: must be whole seconds, from 1 s to 2^31 - 1 s",
                "dynamic_ttl.settle = 2days: must be at most 1 day",
            ]
        );
        let mut p = Problems::new();
        let inverted = DynamicTtl::new(Duration::from_secs(600), Duration::from_secs(60));
        assert_eq!(inverted.check("dynamic_ttl", &mut p), None);
        assert_eq!(
            p.finish().unwrap_err().errors[0].to_string(),
            "dynamic_ttl.suspect = 10m: must not be longer than dynamic_ttl.stable (1m)"
        );
        let mut p = Problems::new();
        let good = DynamicTtl::new(Duration::from_secs(5), Duration::from_secs(300));
        assert!(good.check("dynamic_ttl", &mut p).is_some());
        assert!(p.is_empty());
    }
}
