//! The geometry of a runbook in time, for the phase table and the SVG timeline: the axis
//! runs from the first failed probe (or the command) to the end of the last step.

use std::time::Duration;

use idns_core::{Phase, StepRecord, SwitchReport};

/// One step on the time axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlacedStep {
    /// Its position in the runbook, from 0.
    pub(super) index: usize,
    /// When it started, from the start of the axis.
    pub(super) start: Duration,
    pub(super) record: StepRecord,
}

/// One phase entry on the time axis, with its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) phase: Phase,
    pub(super) start: Duration,
    pub(super) duration: Duration,
    /// The steps of this entry; empty for detect and decide, and for every entry when the
    /// steps do not follow the phases (then the phases are drawn without their steps).
    pub(super) steps: Vec<PlacedStep>,
}

impl Segment {
    pub(super) fn end(&self) -> Duration {
        self.start + self.duration
    }
}

/// The geometry of the runbook in time: the axis runs from the first failed probe (or the
/// command) to the end of the last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Timeline {
    pub(super) segments: Vec<Segment>,
    /// When the runbook was decided; zero when a command started it.
    pub(super) decision: Duration,
    pub(super) rto: Duration,
    pub(super) rpo: Option<Duration>,
}

/// The phase entries on the time axis, without their steps.
fn segments(report: &SwitchReport) -> Vec<Segment> {
    let mut at = Duration::ZERO;
    report
        .phases
        .iter()
        .map(|p| {
            let s = Segment {
                phase: p.phase,
                start: at,
                duration: p.duration,
                steps: Vec::new(),
            };
            at += p.duration;
            s
        })
        .collect()
}

/// When the runbook was decided, on the time axis.
fn decision_at(report: &SwitchReport) -> Duration {
    report.phase(Phase::Detect) + report.phase(Phase::Decide)
}

pub(super) fn placed_steps(report: &SwitchReport) -> Vec<PlacedStep> {
    let mut at = decision_at(report);
    report
        .steps
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let p = PlacedStep {
                index,
                start: at,
                record: record.clone(),
            };
            at += record.duration;
            p
        })
        .collect()
}

impl Timeline {
    /// The phase entries of `report` with their steps: the election sums consecutive steps
    /// of one phase into one entry, after the detect and decide entries.
    pub(super) fn new(report: &SwitchReport) -> Timeline {
        let plain = segments(report);
        let mut segs = plain.clone();
        let mut seg = segs
            .iter()
            .position(|s| !matches!(s.phase, Phase::Detect | Phase::Decide))
            .unwrap_or(segs.len());
        let mut last: Option<Phase> = None;
        for p in placed_steps(report) {
            let phase = p.record.name.phase();
            if last.is_some_and(|l| l != phase) {
                seg += 1;
            }
            last = Some(phase);
            match segs.get_mut(seg) {
                Some(s) if s.phase == phase => s.steps.push(p),
                // Not the shape the election builds: draw the phases without their steps.
                _ => {
                    segs = plain;
                    break;
                }
            }
        }
        Timeline {
            segments: segs,
            decision: decision_at(report),
            rto: report.rto,
            rpo: report.rpo,
        }
    }
}
