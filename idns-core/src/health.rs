//! Health bookkeeping: per-probe rise/fall counters at each observer, each observer's verdict
//! on each site, and the site's health by observer quorum. The rules are documented on
//! [`Health`].

use std::time::{Duration, Instant};

use crate::config::{Counting, HealthRule, ProbeSettings, ServiceConfig, Site};
use crate::probe::{Health, ProbeOutcome};
use crate::reason::Reason;

#[derive(Debug, Clone)]
struct Cell {
    health: Health,
    ok_run: u32,
    fails: u32,
    /// Last success, or the first report while there has been none (for `down_after`).
    last_ok: Option<Instant>,
    first_fail: Option<Instant>,
    last_reason: String,
}

impl Cell {
    fn new() -> Self {
        Self {
            health: Health::Unknown,
            ok_run: 0,
            fails: 0,
            last_ok: None,
            first_fail: None,
            last_reason: String::new(),
        }
    }

    /// Applies one outcome; returns the new health when it changed.
    fn record(
        &mut self,
        s: &ProbeSettings,
        outcome: &ProbeOutcome,
        now: Instant,
    ) -> Option<Health> {
        let before = self.health;
        if outcome.is_up() {
            self.last_ok = Some(now);
            self.first_fail = None;
            self.fails = match s.counting {
                Counting::Consecutive => 0,
                Counting::Leaky => self.fails.saturating_sub(1),
            };
            self.ok_run = self.ok_run.saturating_add(1);
            let leak_ok = s.counting == Counting::Consecutive || self.fails < s.fall;
            if self.health != Health::Up && self.ok_run >= s.rise && leak_ok {
                self.health = Health::Up;
                self.fails = 0;
            }
        } else {
            self.ok_run = 0;
            let since = *self.last_ok.get_or_insert(now);
            self.first_fail.get_or_insert(now);
            if !s.ignore_down_response {
                self.fails = self.fails.saturating_add(1).min(s.fall);
            }
            let timed_out = s
                .down_after
                .is_some_and(|d| now.saturating_duration_since(since) >= d);
            if self.health != Health::Down && (self.fails >= s.fall || timed_out) {
                self.health = Health::Down;
            }
            // In place: a probe failing again and again reuses the reason's allocation.
            self.last_reason.clone_from(&outcome.reason);
        }
        (self.health != before).then_some(self.health)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SiteHealth {
    rule: HealthRule,
    n_probes: usize,
    /// `cells[probe * n_obs + observer]`.
    cells: Vec<Cell>,
    /// Each observer's verdict.
    verdicts: Vec<Health>,
    pub(crate) health: Health,
    /// When the site was last judged down.
    pub(crate) down_at: Option<Instant>,
    /// When the failures that made it down began.
    pub(crate) failing_since: Option<Instant>,
    /// Since when it has been up without a break.
    pub(crate) up_since: Option<Instant>,
}

/// What one report changed.
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub(crate) probe: Option<Health>,
    /// Sites whose health changed: (site index, before, after).
    pub(crate) sites: Vec<(usize, Health, Health)>,
    pub(crate) observer_back: bool,
    /// Whether the observer's last report time moved (so [`HealthBook::next_stale`] may
    /// have).
    pub(crate) seen_moved: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct HealthBook {
    n_obs: usize,
    quorum: usize,
    stale_after: Duration,
    seen: Vec<Option<Instant>>,
    live: Vec<bool>,
    pub(crate) sites: Vec<SiteHealth>,
}

impl HealthBook {
    pub(crate) fn new(cfg: &ServiceConfig) -> Self {
        let n_obs = cfg.observers().ids.len();
        Self {
            n_obs,
            quorum: cfg.observers().quorum,
            stale_after: cfg.observers().stale_after,
            seen: vec![None; n_obs],
            live: vec![false; n_obs],
            sites: cfg
                .sites()
                .iter()
                .map(|s| SiteHealth {
                    rule: s.health,
                    n_probes: s.probes.len(),
                    cells: vec![Cell::new(); s.probes.len() * n_obs],
                    verdicts: vec![Health::Unknown; n_obs],
                    health: Health::Unknown,
                    down_at: None,
                    failing_since: None,
                    up_since: None,
                })
                .collect(),
        }
    }

    /// Records one probe outcome.
    pub(crate) fn record(
        &mut self,
        site: &Site,
        si: usize,
        pi: usize,
        oi: usize,
        outcome: &ProbeOutcome,
        now: Instant,
    ) -> Change {
        let mut change = Change {
            seen_moved: self.seen[oi] != Some(now),
            ..Change::default()
        };
        self.seen[oi] = Some(now);
        if !self.live[oi] {
            self.live[oi] = true;
            change.observer_back = true;
        }
        let n_obs = self.n_obs;
        let sh = &mut self.sites[si];
        change.probe = sh.cells[pi * n_obs + oi].record(&site.probes[pi], outcome, now);
        if change.observer_back {
            // Every site's verdict from this observer counts again.
            for si2 in 0..self.sites.len() {
                if let Some((from, to)) = self.refresh(si2, now) {
                    change.sites.push((si2, from, to));
                }
            }
        } else if change.probe.is_some()
            && let Some((from, to)) = self.refresh(si, now)
        {
            change.sites.push((si, from, to));
        }
        change
    }

    /// The reason of the last failure of a probe at an observer.
    pub(crate) fn last_reason(&self, si: usize, pi: usize, oi: usize) -> &str {
        &self.sites[si].cells[pi * self.n_obs + oi].last_reason
    }

    /// Whether an observer's reports count.
    pub(crate) fn live(&self, oi: usize) -> bool {
        self.live[oi]
    }

    /// Whether every live observer calls the site down (and at least one is live): the only
    /// case in which a failed fence of the site may be skipped.
    pub(crate) fn unreachable(&self, si: usize) -> bool {
        let sh = &self.sites[si];
        let mut live = (0..self.n_obs).filter(|&oi| self.live[oi]).peekable();
        live.peek().is_some() && live.all(|oi| sh.verdicts[oi] == Health::Down)
    }

    /// A probe's health at an observer.
    pub(crate) fn probe(&self, si: usize, pi: usize, oi: usize) -> Health {
        self.sites[si].cells[pi * self.n_obs + oi].health
    }

    /// Marks observers silent for `stale_after` as not live; returns those that changed.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for oi in 0..self.n_obs {
            if self.live[oi]
                && self.seen[oi]
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.stale_after)
            {
                self.live[oi] = false;
                out.push(oi);
            }
        }
        out
    }

    /// When the next live observer goes stale.
    pub(crate) fn next_stale(&self) -> Option<Instant> {
        (0..self.n_obs)
            .filter(|&o| self.live[o])
            .filter_map(|o| self.seen[o])
            .min()
            .map(|t| t + self.stale_after)
    }

    /// Recomputes the site's verdicts; returns (before, after) when its health changed.
    pub(crate) fn refresh(&mut self, si: usize, now: Instant) -> Option<(Health, Health)> {
        let n_obs = self.n_obs;
        let quorum = self.quorum;
        let live = &self.live;
        let sh = &mut self.sites[si];
        let (mut up, mut down) = (0, 0);
        for (oi, &live) in live.iter().enumerate() {
            let v = if live {
                verdict(
                    sh.rule,
                    (0..sh.n_probes).map(|pi| sh.cells[pi * n_obs + oi].health),
                )
            } else {
                Health::Unknown
            };
            sh.verdicts[oi] = v;
            match v {
                Health::Up => up += 1,
                Health::Down => down += 1,
                Health::Unknown => {}
            }
        }
        let health = if down >= quorum && up < quorum {
            Health::Down
        } else if up >= quorum && down < quorum {
            Health::Up
        } else {
            Health::Unknown
        };
        let before = sh.health;
        if health == before {
            return None;
        }
        sh.health = health;
        match health {
            Health::Down => {
                sh.down_at = Some(now);
                sh.up_since = None;
                // The outage began with the earliest failure among the observers saying down.
                sh.failing_since = (0..n_obs)
                    .filter(|&oi| sh.verdicts[oi] == Health::Down)
                    .flat_map(|oi| (0..sh.n_probes).map(move |pi| pi * n_obs + oi))
                    .filter_map(|c| sh.cells[c].first_fail)
                    .min()
                    .or(Some(now));
            }
            Health::Up => {
                sh.up_since = Some(now);
                sh.down_at = None;
                sh.failing_since = None;
            }
            Health::Unknown => sh.up_since = None,
        }
        Some((before, health))
    }

    /// The reason chain behind a site's health.
    pub(crate) fn reasons(&self, cfg: &ServiceConfig, si: usize) -> Vec<Reason> {
        let site = &cfg.sites()[si];
        let sh = &self.sites[si];
        let count = |h: Health| sh.verdicts.iter().filter(|v| **v == h).count();
        let mut out = vec![Reason::SiteHealth {
            site: site.id.clone(),
            health: sh.health,
            up: count(Health::Up),
            down: count(Health::Down),
            observers: self.n_obs,
            quorum: self.quorum,
        }];
        if sh.health != Health::Up {
            for (oi, obs) in cfg.observers().ids.iter().enumerate() {
                if sh.verdicts[oi] != Health::Down {
                    continue;
                }
                for (pi, p) in site.probes.iter().enumerate() {
                    let c = &sh.cells[pi * self.n_obs + oi];
                    if c.health == Health::Down {
                        out.push(Reason::ProbeFailed {
                            site: site.id.clone(),
                            probe: p.id.clone(),
                            observer: obs.clone(),
                            failures: c.fails,
                            fall: p.fall,
                            last: c.last_reason.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

fn verdict(rule: HealthRule, probes: impl Iterator<Item = Health>) -> Health {
    let (mut up, mut down, mut n) = (0usize, 0usize, 0usize);
    for h in probes {
        n += 1;
        match h {
            Health::Up => up += 1,
            Health::Down => down += 1,
            Health::Unknown => {}
        }
    }
    let k = match rule {
        HealthRule::All => n,
        HealthRule::Any => 1,
        HealthRule::AtLeast(k) => k,
    };
    if up >= k {
        Health::Up
    } else if n - down < k {
        Health::Down
    } else {
        Health::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rise: u32, fall: u32) -> ProbeSettings {
        let spec: crate::config::ProbeSpec =
            serde_json::from_value(serde_json::json!({ "id": "p", "rise": rise, "fall": fall }))
                .unwrap();
        ProbeSettings {
            id: crate::id::ProbeId::try_from("p").unwrap(),
            interval: spec.interval,
            timeout: spec.effective_timeout(),
            rise,
            fall,
            counting: Counting::Consecutive,
            down_after: None,
            ignore_down_response: false,
            check: serde_json::Value::Null,
        }
    }

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        // Only an origin: every time in these tests is an offset from it.
        Instant::now()
    }

    fn ok() -> ProbeOutcome {
        ProbeOutcome::up(Duration::from_millis(1))
    }
    fn bad() -> ProbeOutcome {
        ProbeOutcome::down(Duration::from_millis(1), "refused")
    }

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let s = settings(2, 3);
        let t = origin();
        let mut c = Cell::new();
        assert_eq!(c.record(&s, &ok(), t), None);
        assert_eq!(c.record(&s, &ok(), t), Some(Health::Up));
        assert_eq!(c.record(&s, &bad(), t), None);
        assert_eq!(c.record(&s, &bad(), t), None);
        assert_eq!(c.record(&s, &ok(), t), None, "one success resets the count");
        for _ in 0..2 {
            assert_eq!(c.record(&s, &bad(), t), None);
        }
        assert_eq!(c.record(&s, &bad(), t), Some(Health::Down));
    }

    #[test]
    fn leaky_counting_catches_a_probe_failing_every_other_time() {
        let mut s = settings(1, 3);
        s.counting = Counting::Leaky;
        let t = origin();
        let mut c = Cell::new();
        c.record(&s, &ok(), t);
        assert_eq!(c.health, Health::Up);
        let mut went_down = false;
        for _ in 0..10 {
            went_down |= c.record(&s, &bad(), t) == Some(Health::Down);
            went_down |= c.record(&s, &bad(), t) == Some(Health::Down);
            c.record(&s, &ok(), t);
        }
        assert!(went_down);
        // Consecutive counting never fires on the same pattern.
        let s = settings(1, 3);
        let mut c = Cell::new();
        c.record(&s, &ok(), t);
        for _ in 0..10 {
            assert_ne!(c.record(&s, &bad(), t), Some(Health::Down));
            assert_ne!(c.record(&s, &bad(), t), Some(Health::Down));
            c.record(&s, &ok(), t);
        }
    }

    #[test]
    fn ignore_down_response_waits_for_the_timeout() {
        let mut s = settings(1, 1);
        s.ignore_down_response = true;
        s.down_after = Some(Duration::from_secs(60));
        let t = origin();
        let mut c = Cell::new();
        c.record(&s, &ok(), t);
        assert_eq!(c.record(&s, &bad(), t + Duration::from_secs(30)), None);
        assert_eq!(c.record(&s, &bad(), t + Duration::from_secs(59)), None);
        assert_eq!(
            c.record(&s, &bad(), t + Duration::from_secs(60)),
            Some(Health::Down)
        );
    }

    #[test]
    fn rules_combine_probes() {
        use Health::*;
        assert_eq!(verdict(HealthRule::All, [Up, Up].into_iter()), Up);
        assert_eq!(verdict(HealthRule::All, [Up, Down].into_iter()), Down);
        assert_eq!(verdict(HealthRule::All, [Up, Unknown].into_iter()), Unknown);
        assert_eq!(verdict(HealthRule::Any, [Down, Up].into_iter()), Up);
        assert_eq!(verdict(HealthRule::Any, [Down, Down].into_iter()), Down);
        assert_eq!(
            verdict(HealthRule::AtLeast(2), [Up, Down, Up].into_iter()),
            Up
        );
        assert_eq!(
            verdict(HealthRule::AtLeast(2), [Up, Down, Down].into_iter()),
            Down
        );
        assert_eq!(
            verdict(HealthRule::AtLeast(2), [Up, Down, Unknown].into_iter()),
            Unknown
        );
    }
}
