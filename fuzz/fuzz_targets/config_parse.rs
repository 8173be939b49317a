//! Arbitrary text as a service configuration: parsing never panics; a configuration that
//! parses survives a serde_json round trip unchanged, and an election runs on it without
//! panicking (its bootstrap, a round of failed probes, a round of good ones, its timers).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use idns_core::{Election, Input, ProbeOutcome, ProbeReport, ServiceConfig, StepDone, StepOutput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = ServiceConfig::from_toml(text) else {
        return;
    };
    let json = match serde_json::to_string(&cfg) {
        Ok(j) => j,
        Err(e) => panic!("a valid configuration does not serialise: {e}\n{text}"),
    };
    let back: ServiceConfig = match serde_json::from_str(&json) {
        Ok(c) => c,
        Err(e) => panic!("a serialised configuration is refused: {e}\n{json}"),
    };
    assert_eq!(
        cfg, back,
        "the configuration changed in a round trip through\n{json}"
    );
    run_election(cfg);
});

fn run_election(cfg: ServiceConfig) {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let t0 = *ORIGIN.get_or_init(Instant::now);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut e = match Election::new(cfg.clone(), None, t0, wall) {
        Ok(e) => e,
        Err(err) => panic!("a valid configuration does not start an election: {err}"),
    };
    let drive = |e: &mut Election, now: Instant| {
        for _ in 0..64 {
            let Some(action) = e.poll_action() else {
                break;
            };
            let done = StepDone {
                id: action.id,
                result: Ok(StepOutput::Done),
            };
            e.handle(Input::StepDone(done), now);
        }
        while e.poll_event().is_some() {}
    };
    drive(&mut e, t0);
    let mut now = t0;
    for up in [false, true] {
        now += Duration::from_secs(1);
        for site in cfg.sites() {
            for probe in &site.probes {
                for observer in &cfg.observers().ids {
                    let report = ProbeReport {
                        site: site.id.clone(),
                        probe: probe.id.clone(),
                        observer: observer.clone(),
                        outcome: if up {
                            ProbeOutcome::up(Duration::from_millis(1))
                        } else {
                            ProbeOutcome::down(Duration::from_millis(1), "refused")
                        },
                        at: wall,
                    };
                    e.handle(Input::Probe(report), now);
                    drive(&mut e, now);
                }
            }
        }
    }
    for _ in 0..8 {
        let Some(t) = e.poll_timeout() else {
            break;
        };
        now = now.max(t);
        e.handle_timeout(now);
        drive(&mut e, now);
    }
}
