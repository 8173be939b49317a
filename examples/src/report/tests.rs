use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idns_core::{
    Action, BackendError, Command, Election, IntegrityReport, IntegrityRequest, Manifest,
    ManifestEntry, ProbeOutcome, ProbeReport, Promoted, Propagation, ReplicationReport, Role,
    ServerAnswer, ServiceConfig, Step, StepDone, StepOutput,
};
use idns_core::{Event, Outcome, RunbookKind, SwitchReport};

use super::model::{fmt_ms, time};
use super::svg::{esc, fmt_tick, tick_step};
use super::*;

const SERVICE: &str = "www.example.test";

fn config(extra: &str) -> ServiceConfig {
    let text = format!(
        r#"
name = "{SERVICE}"
zone = "example.test"
resources = ["app-data"]
[observers]
ids = ["east", "west"]
[policy]
min_dwell = "0s"
rpo_budget = "5s"
[[sites]]
id = "primary"
priority = 1
addresses = ["192.0.2.1"]
probes = [{{ id = "http", interval = "100ms", rise = 1, fall = 3 }}]
[[sites]]
id = "recovery"
priority = 2
addresses = ["198.51.100.1"]
probes = [{{ id = "http", interval = "100ms", rise = 1, fall = 3 }}]
{extra}"#
    );
    match ServiceConfig::from_toml(&text) {
        Ok(c) => c,
        Err(e) => panic!("test configuration: {e}"),
    }
}

/// How long a backend takes for an action, and what it answers.
type Backend<'a> = dyn FnMut(&Action) -> (Duration, Result<StepOutput, BackendError>) + 'a;

/// An election fed by hand in virtual time, as the driver would feed it.
struct Run {
    e: Election,
    t0: Instant,
    now: Instant,
    wall: SystemTime,
    ctx_events: Vec<Event>,
    reports: Vec<SwitchReport>,
}

impl Run {
    fn new(cfg: ServiceConfig) -> Self {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = match Election::new(cfg, None, t0, wall) {
            Ok(e) => e,
            Err(e) => panic!("election: {e}"),
        };
        let mut run = Run {
            e,
            t0,
            now: t0,
            wall,
            ctx_events: Vec::new(),
            reports: Vec::new(),
        };
        // The bootstrap publishes the home site.
        run.drive(&mut |_| (Duration::from_millis(1), Ok(StepOutput::Done)));
        run
    }

    fn at(&mut self, ms: u64) {
        self.now = self.now.max(self.t0 + Duration::from_millis(ms));
    }

    fn wall_now(&self) -> SystemTime {
        self.wall + self.now.saturating_duration_since(self.t0)
    }

    fn probe(&mut self, site: &str, observer: &str, up: bool) {
        let outcome = if up {
            ProbeOutcome::up(Duration::from_millis(2))
        } else {
            ProbeOutcome::down(
                Duration::from_millis(1),
                "connection refused by 192.0.2.1:80",
            )
        };
        let input = idns_core::Input::Probe(ProbeReport {
            site: parse(site),
            probe: parse("http"),
            observer: parse(observer),
            outcome,
            at: self.wall_now(),
        });
        self.e.handle(input, self.now);
    }

    fn lag(&mut self, site: &str, role: Role, lag: Duration) {
        let input = idns_core::Input::Replication(ReplicationReport {
            resource: parse("app-data"),
            site: parse(site),
            role,
            lag: Some(lag),
            at: self.wall_now(),
        });
        self.e.handle(input, self.now);
    }

    fn command(&mut self, c: Command) {
        if let Err(e) = self.e.command(c, self.now) {
            panic!("command refused: {e}");
        }
    }

    /// Runs actions on `backend` and fires timers until no runbook is in progress.
    fn drive(&mut self, backend: &mut Backend<'_>) {
        for _ in 0..1000 {
            while let Some(a) = self.e.poll_action() {
                let (cost, result) = backend(&a);
                self.now += cost;
                let done = StepDone { id: a.id, result };
                self.e.handle(idns_core::Input::StepDone(done), self.now);
            }
            while let Some(ev) = self.e.poll_event() {
                if let Event::Finished(r) = &ev {
                    self.reports.push(r.clone());
                }
                self.ctx_events.push(ev);
            }
            if self.e.view().runbook.is_none() {
                return;
            }
            match self.e.poll_timeout() {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.e.handle_timeout(self.now);
                }
                None => return,
            }
        }
        panic!("the runbook did not end");
    }

    fn last(&self, kind: RunbookKind) -> SwitchReport {
        match self.reports.iter().rev().find(|r| r.kind == kind) {
            Some(r) => r.clone(),
            None => panic!("no {kind} report among {:?}", self.reports),
        }
    }

    fn context(&self, published: &str) -> ReportContext {
        let mut ctx = ReportContext::new(SERVICE, published);
        ctx.generated_at = self.wall_now();
        for ev in &self.ctx_events {
            ctx.record(ev);
        }
        ctx
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    match s.parse() {
        Ok(v) => v,
        Err(e) => panic!("{s}: {e:?}"),
    }
}

fn manifest(n: usize) -> Manifest {
    let mut m = Manifest::default();
    for i in 0..n {
        m.entries.insert(
            format!("file-{i}"),
            ManifestEntry {
                size: 100 + i as u64,
                checksum: format!("{i:064x}"),
                modified: None,
            },
        );
    }
    m
}

fn propagation() -> StepOutput {
    StepOutput::Propagation(Propagation {
        servers: vec![ServerAnswer {
            server: "127.0.0.1:53".into(),
            current: true,
            latency: Duration::from_millis(1),
            detail: "198.51.100.1".into(),
        }],
    })
}

/// A backend that answers like a healthy one, after a few milliseconds per step.
fn healthy(a: &Action) -> (Duration, Result<StepOutput, BackendError>) {
    let ms = Duration::from_millis;
    match &a.step {
        Step::Fence { .. } => (ms(4), Ok(StepOutput::Done)),
        Step::Promote { .. } => (
            ms(20),
            Ok(StepOutput::Promoted(Promoted {
                rpo: if a.drill { None } else { Some(ms(160)) },
                position: Some("checkpoint 4".into()),
            })),
        ),
        Step::Integrity { request, .. } => {
            let n = match request {
                IntegrityRequest::Mark { .. } => 2,
                _ => 3,
            };
            (
                ms(8),
                Ok(StepOutput::Integrity(IntegrityReport {
                    manifest: manifest(n),
                    mismatches: Vec::new(),
                })),
            )
        }
        Step::SwitchDns { .. } => (ms(3), Ok(StepOutput::Done)),
        Step::VerifyDns { .. } => (ms(2), Ok(propagation())),
        Step::Reprotect { .. } => (ms(30), Ok(StepOutput::Done)),
        _ => (ms(1), Ok(StepOutput::Done)),
    }
}

/// Fails the primary: three refused probes from both observers, 100 ms apart.
fn fail_primary(run: &mut Run) {
    run.at(1000);
    run.lag("recovery", Role::Replica, Duration::from_millis(150));
    for i in 0..3 {
        run.at(1000 + i * 100);
        for obs in ["east", "west"] {
            run.probe("primary", obs, false);
            run.probe("recovery", obs, true);
        }
    }
}

/// A failover whose fence is refused (skipped) and whose DNS switch fails once with a
/// hostile error text before it succeeds.
fn failover_with_trouble(error: &str) -> (SwitchReport, ReportContext) {
    let mut run = Run::new(config(""));
    for obs in ["east", "west"] {
        run.probe("primary", obs, true);
        run.probe("recovery", obs, true);
    }
    fail_primary(&mut run);
    let mut dns_attempts = 0;
    let error = error.to_owned();
    run.drive(&mut |a| match &a.step {
        Step::Fence { .. } => (
            Duration::from_millis(2),
            Err(BackendError::Refused("site primary is unreachable".into())),
        ),
        Step::SwitchDns { .. } => {
            dns_attempts += 1;
            if dns_attempts == 1 {
                (
                    Duration::from_millis(5),
                    Err(BackendError::Unavailable(error.clone())),
                )
            } else {
                healthy(a)
            }
        }
        _ => healthy(a),
    });
    let report = run.last(RunbookKind::Failover);
    let ctx = run.context(SERVICE);
    (report, ctx)
}

fn drill(extra: &str) -> (SwitchReport, ReportContext) {
    let mut run = Run::new(config(extra));
    for obs in ["east", "west"] {
        run.probe("primary", obs, true);
        run.probe("recovery", obs, true);
    }
    run.at(500);
    run.lag("recovery", Role::Replica, Duration::from_millis(120));
    run.command(Command::StartDrill {
        to: parse("recovery"),
    });
    run.drive(&mut healthy);
    let report = run.last(RunbookKind::Drill);
    let mut ctx = run.context("drill.www.example.test");
    ctx.started_by = "an operator, through the drill program".into();
    ctx.integrity.push(IntegrityResult {
        resource: "app-data".into(),
        site: "recovery".into(),
        scope: "drill copy against checkpoint 4".into(),
        checked: 3,
        unit: "files".into(),
        markers_written: 2,
        markers_verified: 2,
        mismatches: Vec::new(),
    });
    ctx.checks.push(Check::new(
        "production untouched",
        true,
        "www.example.test answered 192.0.2.1 in all 40 queries",
    ));
    (report, ctx)
}

/// Checks that every element opened is closed in order (void elements aside) and that
/// no text contains a raw `<`: what a hostile string that escaped escaping would break.
fn assert_well_formed(page: &str) {
    const VOID: [&str; 6] = ["meta", "br", "hr", "img", "input", "link"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = page;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('>') else {
            panic!("unclosed tag near {:?}", &rest[..rest.len().min(60)]);
        };
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        assert!(!tag.contains('<'), "a '<' inside a tag: {tag:?}");
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop();
            assert_eq!(
                top.as_deref(),
                Some(name.trim()),
                "closing {name} in {stack:?}"
            );
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "not a tag: <{tag}>");
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        if name == "style" {
            let Some(end) = rest.find("</style>") else {
                panic!("style not closed");
            };
            assert!(!rest[..end].contains('<'), "markup inside the style sheet");
            rest = &rest[end + "</style>".len()..];
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "left open: {stack:?}");
}

#[test]
fn failover_markdown_lists_phases_steps_retries_and_errors() {
    let (report, ctx) = failover_with_trouble("server 127.0.0.1:53 did not answer");
    assert_eq!(report.outcome, Outcome::Completed);
    let md = markdown(&report, &ctx);

    assert!(
        md.starts_with("# Failover report: www.example.test\n"),
        "{md}"
    );
    assert!(md.contains("**PASSED WITH WARNINGS**"), "{md}");
    // Three failures 100 ms apart: the site is down 200 ms after the first.
    assert!(md.contains("| detect | 0.0 ms | 200.0 ms |"), "{md}");
    for phase in [
        "decide",
        "fence",
        "promote",
        "verify",
        "switch DNS",
        "propagate",
    ] {
        assert!(
            md.contains(&format!("\n| {phase} | ")),
            "no {phase} row:\n{md}"
        );
    }
    assert!(md.contains(&format!(
        "| **RTO** | | **{}** | 100 % |",
        fmt_ms(report.rto)
    )));
    assert!(md.contains("| RPO | **160.0 ms**"), "{md}");
    // The promotion measured 160 ms; the lag at the decision (150 ms) is shown apart.
    assert!(
        md.contains("measured at the promotion; replication lag at the decision 150.0 ms"),
        "{md}"
    );
    assert!(
        md.contains("Not part of this runbook: reprotect, cleanup."),
        "{md}"
    );
    // The fence was skipped, with its error.
    let fence = md
        .lines()
        .find(|l| l.contains("| `fence` |"))
        .unwrap_or_else(|| panic!("no fence row:\n{md}"));
    assert!(
        fence.contains("**skipped**") && fence.contains("unreachable"),
        "{fence}"
    );
    // The DNS switch needed a second attempt, and the first attempt's error is listed.
    let switch = md
        .lines()
        .find(|l| l.contains("| `switch_dns` |"))
        .unwrap_or_else(|| panic!("no switch_dns row:\n{md}"));
    assert!(switch.contains("| done | 2 | 1 |"), "{switch}");
    assert!(
        md.contains("server 127.0.0.1:53 did not answer — retried after"),
        "{md}"
    );
    assert!(md.contains("step switch\\_dns"), "{md}");
    assert!(md.contains("site primary down"), "the reason chain: {md}");
}

#[test]
fn drill_markdown_shows_integrity_checks_and_a_pass() {
    let (report, ctx) = drill("");
    assert_eq!(report.kind, RunbookKind::Drill);
    let md = markdown(&report, &ctx);
    assert!(md.starts_with("# Drill report: www.example.test\n"), "{md}");
    assert!(md.contains("**PASSED**: The drill of www.example.test at site recovery on drill.www.example.test completed"), "{md}");
    assert!(
        md.contains("| Name published | `drill.www.example.test` |"),
        "{md}"
    );
    assert!(md.contains("| RPO | **120.0 ms**"), "{md}");
    assert!(
        md.contains("Not part of this runbook: reprotect, fence."),
        "{md}"
    );
    assert!(md.contains("| cleanup | "), "{md}");
    assert!(
        md.contains("| `app-data` | `recovery` | drill copy against checkpoint 4 | 3 files | 2 | 2 | verified |"),
        "{md}"
    );
    assert!(
        md.contains("- **PASS** production untouched: www.example.test answered 192.0.2.1"),
        "{md}"
    );
    assert!(
        md.contains("| Started by | an operator, through the drill program |"),
        "{md}"
    );
    assert!(assess(&report, &ctx).passed());
}

#[test]
fn a_failed_marker_or_check_fails_the_verdict() {
    let (report, mut ctx) = drill("");
    ctx.integrity[0].markers_verified = 1;
    ctx.integrity[0]
        .mismatches
        .push(".idns-markers/drill-2/marker.txt: checksum 00 where 11 was expected".into());
    let a = assess(&report, &ctx);
    assert_eq!(a.verdict, Verdict::Failed);
    assert_eq!(a.failures.len(), 2, "{a:?}");
    let md = markdown(&report, &ctx);
    assert!(md.contains("**FAILED**"), "{md}");
    assert!(md.contains("1 of 2 marker(s) verified"), "{md}");
    assert!(md.contains("integrity verification FAILED"), "{md}");
    let page = html(&report, &ctx);
    assert!(page.contains("<header class=\"verdict fail\">"), "{page}");

    let (report, mut ctx) = drill("");
    ctx.checks
        .push(Check::new("drill name removed", false, "still answers"));
    assert_eq!(assess(&report, &ctx).verdict, Verdict::Failed);
    assert!(markdown(&report, &ctx).contains("- **FAIL** drill name removed: still answers"));
}

#[test]
fn an_aborted_runbook_is_a_failure_marked_on_the_timeline() {
    let mut run = Run::new(config(
        r#"
[runbook]
failover = [{ step = "promote" }, { step = "switch_dns", retries = 0, on_failure = "abort" }]
"#,
    ));
    for obs in ["east", "west"] {
        run.probe("primary", obs, true);
        run.probe("recovery", obs, true);
    }
    fail_primary(&mut run);
    run.drive(&mut |a| match &a.step {
        Step::SwitchDns { .. } => (
            Duration::from_millis(3),
            Err(BackendError::Refused(
                "zone example.test is not served here".into(),
            )),
        ),
        _ => healthy(a),
    });
    let report = run.last(RunbookKind::Failover);
    assert_eq!(report.outcome, Outcome::Aborted);
    let ctx = run.context(SERVICE);
    let a = assess(&report, &ctx);
    assert_eq!(a.verdict, Verdict::Failed);
    let md = markdown(&report, &ctx);
    assert!(md.contains("| Outcome | **aborted** |"), "{md}");
    assert!(md.contains("**failed**"), "{md}");
    let page = html(&report, &ctx);
    assert_well_formed(&page);
    assert!(page.contains("✕ failed"), "the failed step is marked");
    assert!(page.contains("<td class=\"st-failed\">failed</td>"));
}

#[test]
fn html_is_self_contained_with_a_timeline() {
    let (report, ctx) = failover_with_trouble("server did not answer");
    let page = html(&report, &ctx);
    assert_well_formed(&page);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("Content-Security-Policy"));
    // Nothing to fetch or run.
    for needle in [
        "<script", "src=", "href=", "@import", "url(http", "<link", "<iframe",
    ] {
        assert!(!page.contains(needle), "{needle} in the page");
    }
    let outside_svg_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!outside_svg_ns.contains("http://") && !outside_svg_ns.contains("https://"));
    // One bar per phase, each with its label, and the RPO window.
    assert_eq!(page.matches("<svg").count(), 1);
    for p in &report.phases {
        assert!(
            page.contains(&format!(">{}</text>", esc(&p.phase.to_string()))),
            "no label for {}",
            p.phase
        );
        assert!(
            page.contains(&format!(
                "<title>{}: {}",
                esc(&p.phase.to_string()),
                fmt_ms(p.duration)
            )),
            "no bar for {}",
            p.phase
        );
    }
    assert!(page.contains(">RPO window</text>"));
    assert!(page.contains("RPO 160.0 ms"));
    assert!(page.contains(&format!("recovered: RTO {}", fmt_ms(report.rto))));
    // The retried and the skipped step are marked on their bars.
    assert!(page.contains("↻2"), "retried step marked");
    assert!(page.contains("skipped</text>"), "skipped step marked");
    assert!(page.contains("<td class=\"st-skipped\">skipped</td>"));
}

#[test]
fn hostile_names_and_errors_cannot_inject_markup() {
    let evil =
        "<script>alert(1)</script><img src=x onerror=alert(2)> | ` ** \"quoted\" 'single' & </svg>";
    let (report, mut ctx) = failover_with_trouble(evil);
    ctx.service = format!("www.{evil}");
    ctx.published_name = evil.into();
    ctx.started_by = evil.into();
    ctx.controller = evil.into();
    ctx.checks.push(Check::new(evil, true, evil));
    ctx.notes.push(evil.into());
    ctx.sites.push(SiteNote {
        id: evil.into(),
        addresses: evil.into(),
        role: evil.into(),
    });
    ctx.integrity.push(IntegrityResult {
        resource: evil.into(),
        site: evil.into(),
        scope: evil.into(),
        checked: 1,
        unit: evil.into(),
        markers_written: 1,
        markers_verified: 1,
        mismatches: vec![evil.into()],
    });

    let page = html(&report, &ctx);
    assert_well_formed(&page);
    for raw in ["<script", "<img", "onerror=alert(2)>", "</svg><"] {
        assert!(!page.contains(raw), "{raw} got through");
    }
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;")
    );
    assert!(page.contains("&quot;quoted&quot; &#39;single&#39; &amp; &lt;/svg&gt;"));
    assert_eq!(page.matches("<svg").count(), 1);
    assert_eq!(page.matches("</svg>").count(), 1);

    let md = markdown(&report, &ctx);
    for raw in ["<script", "<img", "</svg>"] {
        assert!(!md.contains(raw), "{raw} got through the Markdown");
    }
    // A pipe in a name or an error does not add table cells.
    let header_cells =
        "| # | Step | What | Phase | Status | Attempts | Retries | Duration | Detail |"
            .matches(" | ")
            .count();
    for line in md
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
    {
        let cells = line.replace("\\|", "").matches(" | ").count();
        assert_eq!(cells, header_cells, "{line}");
    }
    // The integrity row (seven cells) and the site row (three) keep their shape.
    let rows: Vec<usize> = md
        .lines()
        .filter(|l| l.starts_with("| &lt;script"))
        .map(|l| l.replace("\\|", "").matches(" | ").count())
        .collect();
    assert_eq!(rows, vec![6, 2], "{md}");
}

#[test]
fn times_are_rfc3339_utc() {
    let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(time(t), "2023-11-14T22:13:20.123Z");
    assert_eq!(
        time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00.000Z"
    );
    assert_eq!(time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
}

#[test]
fn ticks_are_round_numbers() {
    assert_eq!(tick_step(350.0, 8.0), 50.0);
    assert_eq!(tick_step(48.0, 8.0), 10.0);
    assert_eq!(tick_step(2_500.0, 8.0), 500.0);
    assert_eq!(fmt_tick(1500.0, 500.0), "1500 ms");
    assert_eq!(fmt_tick(4000.0, 1000.0), "4 s");
}

#[test]
fn one_model_renders_the_page_the_summary_and_the_timeline() {
    let (report, ctx) = failover_with_trouble("server did not answer");
    let r = Report::new(&report, &ctx);
    let svg = r.svg();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    // The page embeds that very timeline, and the free functions render the same model.
    let page = r.html();
    assert_eq!(page.matches(svg.as_str()).count(), 1);
    assert_eq!(page, html(&report, &ctx));
    assert_eq!(r.markdown(), markdown(&report, &ctx));
    assert_eq!(r.assessment(), &assess(&report, &ctx));
    // A `#` inside a line is left alone; one that would open a heading is escaped.
    assert!(r.markdown().contains("| Runbook | failover #2, epoch 2 |"));
    let mut ctx = ctx;
    ctx.notes.push("# not a heading".into());
    assert!(markdown(&report, &ctx).contains("\n- \\# not a heading\n"));
}
