//! `drill`: rehearse a failover without touching production, and write the report.
//!
//! The paper asks for RTO and RPO tested by regular drills. This program runs one, with nothing
//! but Rust, on loopback: two sites of `www.shop.test` (a small web app on 127.0.0.1, the
//! primary, and one on 127.0.0.2, the recovery site), their data replicated by the image
//! backend, the embedded DNS server, HTTP probes from two observers and the controller. Then it asks the election for a drill at the recovery site:
//!
//! 1. **promote** an isolated copy of the recovery site's newest checkpoint (a clone; the
//!    production replica keeps its role), **check its integrity** against that checkpoint's
//!    manifest, **publish the drill name** `drill.www.shop.test` (never the production name),
//!    wait until every server answers it, and **write drill markers** into the copy;
//! 2. before the cleanup removes the copy, the markers are read back and verified, and a
//!    client resolves the drill name;
//! 3. **clean up**: the copy is removed and the drill name withdrawn.
//!
//! Throughout, a client keeps resolving the production name (hickory-resolver, no cache,
//! against the embedded server) and must get the primary every time; the replicas' roles, the
//! active site and the epoch must be the same afterwards. The report (Markdown and a
//! self-contained HTML page with an SVG timeline) goes to `--out DIR` (default: a new
//! temporary directory, printed at the end). The exit code is 0 when the drill passed, 1 when
//! it or a check failed, 2 on a usage error.
//!
//! `--inject-corruption` changes one marker in the drill copy before it is verified: a
//! rehearsal of the check itself, which must then fail the drill.
//!
//! Run it with `cargo run --release --bin drill -- --out /tmp/drill-report`.

// A command-line program talks to its user on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_core::runtime::{Controller, FileStore};
use idns_core::{
    Command, DnsBackend, Event, Health, RecordSet, ReplicationBackend, ResourceId, Role,
    RunbookKind, ServiceConfig, SiteId, StepName, SwitchReport,
};
use idns_examples::audit::DrillAudit;
use idns_examples::loopback::{
    Error, ImagePair, Narrator, PRIMARY, RECOVERY, ServiceToml, Sites, dns_server, resolver,
};
use idns_examples::report::{self, Check, ReportContext, SiteNote};
use idns_examples::watched::Watched;
use idns_probe::{Scheduler, SchedulerOptions, probes_for_service};
use idns_replication::image::ImageReplication;
use tokio::sync::{broadcast, watch};

const NAME: &str = "www.shop.test";
const ZONE: &str = "shop.test";
const RESOURCE: &str = "app-data";
/// The longest any single stage of the drill may take before it gives up.
const LIMIT: Duration = Duration::from_secs(30);
/// The default drill, with markers written into the drill copy once it serves the drill name
/// (as a failover writes them once it serves production).
const DRILL_RUNBOOK: &str = r#"
[runbook]
drill = [
  { step = "promote" },
  { step = "verify_integrity" },
  { step = "switch_dns" },
  { step = "verify_dns" },
  { step = "write_markers" },
  { step = "cleanup" },
]
"#;

/// Rehearses a failover of www.shop.test to its recovery site on the isolated name
/// drill.www.shop.test, verifies integrity, cleans up, and writes drill-report.md and
/// drill-report.html.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where the report goes (created if missing; default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Change one drill marker before it is verified (the drill must then fail).
    #[arg(long = "inject-corruption")]
    corrupt: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("drill failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether the drill passed.
async fn run(args: Args) -> Result<bool, Error> {
    let say = Narrator::start();
    let out = match &args.out {
        Some(d) => d.clone(),
        None => tempfile::Builder::new()
            .prefix("idns-drill-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&out)?;
    let work = tempfile::tempdir()?;
    println!(
        "idns drill: {NAME} (primary {PRIMARY}, recovery {RECOVERY}); the drill publishes drill.{NAME}"
    );
    println!("working directory: {}", work.path().display());

    // The application's data at the primary, replicated to the recovery site.
    let data = ImagePair::new(work.path(), RESOURCE, Duration::from_millis(300)).await?;
    let (resource, recovery): (ResourceId, SiteId) = (data.resource.clone(), "recovery".parse()?);
    let recovery_paths = data
        .replication
        .paths(&resource, &recovery)
        .ok_or("the image backend has no recovery site")?;
    write_application_data(&data.primary_live).await?;
    let first = data.sync().await?;
    say.say(format!(
        "replicated {RESOURCE} to the recovery site: {first} bytes in the first pass"
    ));
    let sites = Sites::start(None).await?;
    say.say(format!(
        "web apps up: primary on {}, recovery on {}",
        sites.primary_addr(),
        sites.recovery_addr()
    ));
    let (dns, dns_addr) = dns_server(ZONE).await?;
    say.say(format!(
        "embedded DNS server for {ZONE} on {dns_addr} (UDP and TCP)"
    ));
    let client = resolver(dns_addr)?;

    // The controller, with the replication backend watched by the audit.
    let mut toml = ServiceToml::new(NAME, ZONE, sites.port);
    (toml.resource, toml.extra) = (Some(RESOURCE.to_owned()), DRILL_RUNBOOK.to_owned());
    let cfg = ServiceConfig::from_toml(&toml.render())?;
    let drill_name = cfg.drill_name().clone();
    let audit = Arc::new(DrillAudit::new(
        data.replication.clone(),
        client.clone(),
        drill_name.to_string(),
        args.corrupt,
    ));
    let controller = Controller::builder(cfg.clone())
        .dns(dns.backend())
        .replication(Watched::new(data.replication.clone(), audit.clone()))
        .store(FileStore::new(work.path().join("journal.json")))
        .replication_poll(Duration::from_millis(250))
        .start()
        .await?;
    let mut schedulers = Vec::new();
    for (i, observer) in ["east", "west"].into_iter().enumerate() {
        let options = SchedulerOptions::new(observer.parse()?).seed(i as u64 + 1);
        let probes = probes_for_service(&cfg)?;
        schedulers.push(Scheduler::spawn(options, controller.clone(), probes));
    }
    say.say("probes running: HTTP GET /health every 100 ms from observers east and west");

    // Production, as it is before the drill.
    let steady = controller.wait_for(|v| {
        v.runbook.is_none()
            && v.epoch.get() >= 1
            && v.sites
                .iter()
                .all(|s| s.health == Health::Up && s.lag.is_some())
    });
    tokio::time::timeout(LIMIT, steady)
        .await
        .map_err(|_| format!("not steady within {LIMIT:?}: {:?}", controller.view()))??;
    let dns_backend = dns.backend();
    let before = Production::read(&controller, &data.replication, &dns_backend, &resource).await?;
    say.say(format!(
        "production: {NAME} -> {} (epoch {}, active {}); {RESOURCE}: {}",
        before.records,
        before.epoch,
        before.active,
        before.roles_text()
    ));
    if before.records != RecordSet::Addresses(vec![IpAddr::V4(PRIMARY)]) {
        return Err(format!("{NAME} should publish the primary, not {}", before.records).into());
    }

    // A client keeps resolving the production name from now until after the cleanup.
    let (stop_watch, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_production(client.clone(), stop_rx));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The drill.
    println!();
    say.say(format!(
        "*** drill: rehearsing a failover to {recovery} on {drill_name} ***"
    ));
    let mut events = controller.subscribe();
    let mut ctx = ReportContext::new(NAME, drill_name.to_string());
    let to = recovery.clone();
    controller.command(Command::StartDrill { to }).await?;
    let drill = follow_drill(&mut events, &mut ctx, say).await?;

    // Production, as it is after the drill.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_watch.send_replace(true);
    let watched = watcher.await?;
    let after = Production::read(&controller, &data.replication, &dns_backend, &resource).await?;
    let drill_published = dns_backend.read(cfg.zone(), &drill_name).await?;
    let drill_client = match client.lookup_ip(format!("{drill_name}.")).await {
        Ok(answer) => {
            let list: Vec<String> = answer.iter().map(|a| a.to_string()).collect();
            format!("still answers {}", list.join(", "))
        }
        Err(e) if e.is_nx_domain() => "NXDOMAIN".into(),
        Err(e) if e.is_no_records_found() => "no records".into(),
        Err(e) => format!("query failed: {e}"),
    };
    let copy_left = recovery_paths.drill.exists();
    let primary: SiteId = "primary".parse()?;

    // The report.
    let user = user_name();
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    ctx.started_by = format!(
        "an operator ({user}) through the drill program: command start-drill to site {recovery}"
    );
    ctx.controller = format!("idns drill {} on {host}", env!("CARGO_PKG_VERSION"));
    ctx.sites = vec![
        SiteNote {
            id: primary.to_string(),
            addresses: PRIMARY.to_string(),
            role: "active, production (left alone)".into(),
        },
        SiteNote {
            id: recovery.to_string(),
            addresses: RECOVERY.to_string(),
            role: "drill target: an isolated copy of its replica was promoted".into(),
        },
    ];
    ctx.integrity = audit.integrity_results();
    let calls = std::mem::take(&mut audit.lock().calls);
    let off_drill: Vec<&str> = calls
        .iter()
        .filter(|c| !c.1)
        .map(|c| c.0.as_str())
        .collect();
    let n_queries = watched.len();
    let others: Vec<_> = watched
        .iter()
        .filter(|a| a.as_ref().ok() != Some(&IpAddr::V4(PRIMARY)))
        .collect();
    let n_others = others.len();
    let others = answers_text(others.into_iter());
    ctx.checks.push(Check::new(
        "production untouched",
        others.is_empty() && n_queries > 0 && before.records == after.records,
        format!(
            "{NAME} answered {PRIMARY} in {} of {n_queries} client queries from before the drill until after its cleanup{}; its record stayed {} at epoch {}",
            n_queries - n_others,
            if others.is_empty() { String::new() } else { format!(" (other answers: {others})") },
            after.records,
            after.owner_epoch
        ),
    ));
    ctx.checks.push(Check::new(
        "production replicas' roles unchanged",
        before.roles == after.roles && off_drill.is_empty(),
        format!(
            "{RESOURCE} before: {}; after: {}; {} replication call(s) during the drill, {}",
            before.roles_text(),
            after.roles_text(),
            calls.len(),
            match off_drill.len() {
                0 => "every one on the isolated drill copy".to_owned(),
                n => format!("{n} outside the drill copy: {}", off_drill.join(", ")),
            }
        ),
    ));
    ctx.checks.push(Check::new(
        "active site and epoch unchanged",
        before.active == after.active
            && before.epoch == after.epoch
            && before.switches == after.switches,
        format!(
            "active {} at epoch {} before, {} at epoch {} after; switches {} before, {} after",
            before.active, before.epoch, after.active, after.epoch, before.switches, after.switches
        ),
    ));
    let drill_answers = audit.lock().drill_answers.clone();
    let answered_recovery = drill_answers
        .iter()
        .any(|a| a.as_ref().ok() == Some(&IpAddr::V4(RECOVERY)));
    ctx.checks.push(Check::new(
        "drill name served the recovery site",
        answered_recovery,
        format!(
            "a client resolving {drill_name} before the cleanup got {}",
            if drill_answers.is_empty() {
                "nothing (no cleanup ran)".to_owned()
            } else {
                answers_text(drill_answers.iter())
            }
        ),
    ));
    let cleaned = drill_published.records == RecordSet::Empty
        && !copy_left
        && !drill_client.starts_with("still");
    ctx.checks.push(Check::new(
        "drill cleaned up",
        cleaned,
        format!(
            "{drill_name} publishes {} (a client gets: {drill_client}); the drill copy at {recovery} {}",
            drill_published.records,
            if copy_left { "is still there" } else { "was removed" }
        ),
    ));
    if let Some(step) = drill
        .steps
        .iter()
        .find(|s| s.name == StepName::Promote && !s.detail.is_empty())
    {
        ctx.notes.push(format!(
            "The promote step made an isolated copy ({}); production replication kept running \
             during the drill.",
            step.detail
        ));
    }
    if args.corrupt {
        ctx.notes.push(
            "Run with --inject-corruption: one marker in the drill copy was changed before it \
             was verified, to prove that the verification catches it."
                .into(),
        );
    }
    ctx.generated_at = std::time::SystemTime::now();

    let md = report::markdown(&drill, &ctx);
    let html = report::html(&drill, &ctx);
    let (md_path, html_path) = (out.join("drill-report.md"), out.join("drill-report.html"));
    tokio::fs::write(&md_path, &md).await?;
    tokio::fs::write(&html_path, &html).await?;
    let assessment = report::assess(&drill, &ctx);

    println!();
    print_summary(&drill, &ctx);
    for (i, s) in schedulers.into_iter().enumerate() {
        s.0.shutdown();
        if let Err(e) = s.1.await {
            eprintln!("observer {i}: {e}");
        }
    }
    controller.shutdown();
    controller.stopped().await?;
    dns.shutdown();
    let verdict = if assessment.passed() {
        "passed"
    } else {
        "FAILED"
    };
    println!(
        "\ndrill {verdict}: report written to\n  {}\n  {}",
        md_path.display(),
        html_path.display()
    );
    for f in &assessment.failures {
        println!("  problem: {f}");
    }
    Ok(assessment.passed())
}

/// Some application data: order and customer files, and a small "disk image" of several
/// chunks, so that the integrity check hashes real content.
async fn write_application_data(live: &Path) -> Result<(), Error> {
    tokio::fs::create_dir_all(live.join("db")).await?;
    tokio::fs::write(
        live.join("orders.txt"),
        "order 1: 3 widgets\norder 2: 1 gadget\norder 3: 12 sprockets\n",
    )
    .await?;
    tokio::fs::write(
        live.join("db/customers.csv"),
        "id,name\n1,Ada\n2,Grace\n3,Edsger\n",
    )
    .await?;
    // 1 MiB of deterministic, incompressible-looking bytes.
    let mut x: u64 = 0x1d45_2024;
    let mut image = Vec::with_capacity(1 << 20);
    while image.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        image.extend_from_slice(&x.to_le_bytes());
    }
    tokio::fs::write(live.join("db/disk.img"), image).await?;
    Ok(())
}

/// Follows the drill's events until it finishes; narrates them in the election's words and
/// keeps what the report needs.
async fn follow_drill(
    rx: &mut broadcast::Receiver<Event>,
    ctx: &mut ReportContext,
    say: Narrator,
) -> Result<SwitchReport, Error> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err(format!("the drill did not finish within {LIMIT:?}").into()),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                say.say(format!("({n} events not shown)"));
                continue;
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err("the controller stopped".into());
            }
            Ok(Ok(e)) => e,
        };
        ctx.record(&event);
        match event {
            Event::Decision { .. } | Event::SiteChanged { .. } => say.say(&event),
            Event::StepFinished { .. } | Event::StepRetry { .. } | Event::Held { .. } => {
                say.say(format!("  {event}"));
            }
            Event::Finished(r) if r.kind == RunbookKind::Drill => {
                say.say(Event::Finished(r.clone()));
                return Ok(r);
            }
            Event::Finished(r) => {
                let kind = r.kind;
                return Err(
                    format!("a {kind} ran instead of the drill (production needed it)").into(),
                );
            }
            _ => {}
        }
    }
}

/// The user running the drill: `$USER`, or this process's user id.
fn user_name() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(u) => format!("user {u}"),
        Err(_) => std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    Some(format!(
                        "uid {}",
                        l.strip_prefix("Uid:")?.split_whitespace().next()?
                    ))
                })
            })
            .unwrap_or_else(|| "an unknown user".into()),
    }
}

/// Answers a client got, as text.
fn answers_text<'a>(answers: impl Iterator<Item = &'a Result<IpAddr, String>>) -> String {
    let text = answers.map(|a| a.as_ref().map_or_else(Clone::clone, IpAddr::to_string));
    text.collect::<Vec<_>>().join(", ")
}

/// The drill's outcome on the terminal; the whole story is in the report.
fn print_summary(drill: &SwitchReport, ctx: &ReportContext) {
    let rpo = drill
        .rpo
        .map(|r| format!(", RPO {:.1} ms", r.as_secs_f64() * 1000.0));
    println!(
        "drill RTO {:.1} ms{}",
        drill.rto.as_secs_f64() * 1000.0,
        rpo.unwrap_or_default()
    );
    for r in &ctx.integrity {
        let (res, site, n, unit) = (&r.resource, &r.site, r.checked, &r.unit);
        println!(
            "integrity of {res} at {site}: {n} {unit} checked, {} of {} markers verified, {} difference(s)",
            r.markers_verified,
            r.markers_written,
            r.mismatches.len()
        );
    }
    for c in &ctx.checks {
        let verdict = if c.passed { "PASS" } else { "FAIL" };
        println!("{verdict} {}: {}", c.what, c.detail);
    }
}

// ------------------------------------------------------------------------------------------
// What production looks like
// ------------------------------------------------------------------------------------------

/// Production's state, read before and after the drill.
struct Production {
    records: RecordSet,
    owner_epoch: String,
    active: SiteId,
    epoch: idns_core::Epoch,
    switches: u64,
    roles: Vec<(SiteId, Role)>,
}

impl Production {
    async fn read(
        controller: &Controller,
        repl: &ImageReplication,
        dns: &dyn DnsBackend,
        resource: &ResourceId,
    ) -> Result<Production, Error> {
        let (view, cfg) = (controller.view(), controller.config());
        let published = dns.read(cfg.zone(), cfg.name()).await?;
        let status = repl.status(resource).await?;
        Ok(Production {
            records: published.records,
            owner_epoch: published
                .owner
                .map(|o| o.epoch.to_string())
                .unwrap_or_else(|| "-".into()),
            active: view.active,
            epoch: view.epoch,
            switches: view.switches,
            roles: status
                .sites
                .iter()
                .map(|s| (s.site.clone(), s.role))
                .collect(),
        })
    }

    fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|(s, r)| format!("{s} {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn watch_production(
    resolver: Resolver<TokioRuntimeProvider>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Result<IpAddr, String>> {
    let mut answers = Vec::new();
    loop {
        let answer = match resolver.lookup_ip(format!("{NAME}.")).await {
            Ok(a) => a.iter().next().ok_or_else(|| "an empty answer".to_owned()),
            Err(e) => Err(format!("query failed: {e}")),
        };
        answers.push(answer);
        if *stop.borrow() {
            return answers;
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}
