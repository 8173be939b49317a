//! `drill`: rehearse a failover without touching production, and write the report.
//!
//! The paper asks for RTO and RPO tested by regular drills. This program runs one, with nothing
//! but Rust, on loopback: two sites of `www.shop.test` (a small web app on 127.0.0.1, the
//! primary, and one on 127.0.0.2, the recovery site), their data replicated by the image
//! backend, the embedded DNS server, HTTP probes from two observers, the election and the
//! driver. Then it asks the election for a drill at the recovery site:
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_core::runtime::{Backends, Driver, DriverOptions, FileStore, Handle};
use idns_core::{
    BackendError, Command, DnsBackend, Event, Health, IntegrityReport, IntegrityRequest, Manifest,
    OpContext, Outcome, Promoted, RecordSet, ReplicationBackend, ReplicationStatus, ResourceId,
    Role, RunbookKind, ServiceConfig, SiteId, StepName, SwitchReport, explain,
};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
use idns_examples::report::{self, Check, IntegrityResult, ReportContext, SiteNote};
use idns_probe::{Scheduler, SchedulerOptions, probes_for_service, sink_fn};
use idns_replication::image::{ImageConfig, ImageReplication};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

const NAME: &str = "www.shop.test";
const ZONE: &str = "shop.test";
const RESOURCE: &str = "app-data";
const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RECOVERY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The longest any single stage of the drill may take before it gives up.
const LIMIT: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error + Send + Sync>;

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

/// Prints lines stamped with the time since the start.
#[derive(Clone, Copy)]
struct Narrator {
    start: Instant,
}

impl Narrator {
    fn say(&self, line: impl std::fmt::Display) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {line}");
    }
}

/// Returns whether the drill passed.
async fn run(args: Args) -> Result<bool, Error> {
    let say = Narrator {
        start: Instant::now(),
    };
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
    let resource: ResourceId = RESOURCE.parse()?;
    let (primary, recovery): (SiteId, SiteId) = ("primary".parse()?, "recovery".parse()?);
    let stores = (
        work.path().join("primary-store"),
        work.path().join("recovery-store"),
    );
    tokio::fs::create_dir_all(&stores.0).await?;
    tokio::fs::create_dir_all(&stores.1).await?;
    let mut image =
        ImageConfig::two_sites(RESOURCE, ("primary", &stores.0), ("recovery", &stores.1))?;
    image.resources[0].interval = Duration::from_millis(300);
    let repl = ImageReplication::new(image);
    let paths = |site| {
        repl.paths(&resource, site)
            .ok_or("the image backend has no such site")
    };
    let primary_live = paths(&primary)?.live;
    let recovery_paths = paths(&recovery)?;
    write_application_data(&primary_live).await?;
    let first = repl.sync(&resource).await?;
    say.say(format!(
        "replicated {RESOURCE} to the recovery site: {} files, {} bytes in the first pass",
        first.iter().map(|r| r.files_changed).sum::<u64>(),
        first.iter().map(|r| r.bytes_transferred).sum::<u64>()
    ));
    let continuous = {
        let repl = repl.clone();
        let resource = resource.clone();
        tokio::spawn(async move { repl.run_continuous(&resource).await })
    };

    let (port, primary_web, recovery_web) = start_both_sites().await?;
    say.say(format!(
        "web apps up: primary on {PRIMARY}:{port}, recovery on {RECOVERY}:{port}"
    ));
    let dns = EmbeddedServer::start(EmbeddedConfig::new(
        vec![SocketAddr::from((PRIMARY, 0))],
        &[ZONE.parse()?],
    )?)
    .await?;
    let dns_addr = *dns
        .udp_addrs()
        .first()
        .ok_or("the DNS server has no UDP socket")?;
    let dns_backend = dns.backend();
    say.say(format!(
        "embedded DNS server for {ZONE} on {dns_addr} (UDP and TCP)"
    ));
    let resolver = client_resolver(dns_addr)?;

    // The controller, with the replication backend behind an auditing wrapper.
    let cfg = ServiceConfig::from_toml(&config_toml(port))?;
    let drill_name = cfg.drill_name().clone();
    let audit = Arc::new(Audited {
        inner: repl.clone(),
        calls: Mutex::new(Vec::new()),
        marks: Mutex::new(BTreeMap::new()),
        checks: Mutex::new(Vec::new()),
        verified: Mutex::new(Vec::new()),
        drill_answers: Mutex::new(Vec::new()),
        client: DrillClient {
            resolver: resolver.clone(),
            name: drill_name.to_string(),
        },
        corrupt: args.corrupt,
    });
    let (driver, handle) = Driver::new(
        cfg.clone(),
        Backends {
            dns: Arc::new(dns_backend.clone()),
            replication: Some(audit.clone()),
            store: Arc::new(FileStore::new(work.path().join("journal.json"))),
        },
        DriverOptions {
            replication_poll: Some(Duration::from_millis(250)),
            ..DriverOptions::default()
        },
    )
    .await?;
    let driver_task = tokio::spawn(driver.run());
    let mut schedulers = Vec::new();
    for (i, observer) in ["east", "west"].into_iter().enumerate() {
        let h = handle.clone();
        let sink = sink_fn(move |report| {
            let h = h.clone();
            async move { h.report(report).await }
        });
        let options = SchedulerOptions::new(observer.parse()?).seed(i as u64 + 1);
        schedulers.push(Scheduler::spawn(options, sink, probes_for_service(&cfg)?));
    }
    say.say("probes running: HTTP GET /health every 100 ms from observers east and west");

    // Production, as it is before the drill.
    wait_until(&handle, "both sites up and the home site published", |v| {
        v.runbook.is_none()
            && v.epoch.get() >= 1
            && v.sites.iter().all(|s| s.health == Health::Up)
            && v.sites.iter().all(|s| s.lag.is_some())
    })
    .await?;
    let before = Production::read(&handle, audit.as_ref(), &dns_backend, &cfg, &resource).await?;
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
    let watcher = tokio::spawn(watch_production(resolver.clone(), stop_rx));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The drill.
    println!();
    say.say(format!(
        "*** drill: rehearsing a failover to {recovery} on {drill_name} ***"
    ));
    let mut events = handle.subscribe();
    let mut ctx = ReportContext::new(NAME, drill_name.to_string());
    handle
        .command(Command::StartDrill {
            to: recovery.clone(),
        })
        .await?;
    let drill = follow_drill(&mut events, &mut ctx, say).await?;

    // Production, as it is after the drill.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_watch.send_replace(true);
    let watched = watcher.await?;
    let after = Production::read(&handle, audit.as_ref(), &dns_backend, &cfg, &resource).await?;
    let drill_published = dns_backend.read(cfg.zone(), &drill_name).await?;
    let drill_client = match resolver.lookup_ip(format!("{drill_name}.")).await {
        Ok(answer) => {
            let list: Vec<String> = answer.iter().map(|a| a.to_string()).collect();
            format!("still answers {}", list.join(", "))
        }
        Err(e) if e.is_nx_domain() => "NXDOMAIN".into(),
        Err(e) if e.is_no_records_found() => "no records".into(),
        Err(e) => format!("query failed: {e}"),
    };
    let copy_left = recovery_paths.drill.exists();

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
    let calls = audit.calls();
    let off_drill: Vec<&String> = calls.iter().filter(|c| !c.drill).map(|c| &c.what).collect();
    let n_queries = watched.answers.len();
    let others: Vec<String> = watched
        .answers
        .iter()
        .filter(|a| a.as_ref().ok() != Some(&IpAddr::V4(PRIMARY)))
        .map(|a| match a {
            Ok(ip) => ip.to_string(),
            Err(e) => e.clone(),
        })
        .collect();
    ctx.checks.push(Check::new(
        "production untouched",
        others.is_empty() && n_queries > 0 && before.records == after.records,
        format!(
            "{NAME} answered {PRIMARY} in {} of {n_queries} client queries from before the drill until after its cleanup{}; its record stayed {} at epoch {}",
            n_queries - others.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!(" (other answers: {})", others.join(", "))
            },
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
            if off_drill.is_empty() {
                "every one on the isolated drill copy".to_owned()
            } else {
                format!(
                    "{} outside the drill copy: {}",
                    off_drill.len(),
                    off_drill
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
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
    let drill_answers = audit.drill_answers();
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
                drill_answers
                    .iter()
                    .map(|a| match a {
                        Ok(ip) => ip.to_string(),
                        Err(e) => e.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
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
            if copy_left {
                "is still there"
            } else {
                "was removed"
            }
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
    handle.shutdown();
    driver_task.await??;
    continuous.abort();
    primary_web.abort();
    recovery_web.abort();
    dns.shutdown();
    println!(
        "\ndrill {}: report written to\n  {}\n  {}",
        if assessment.passed() {
            "passed"
        } else {
            "FAILED"
        },
        md_path.display(),
        html_path.display()
    );
    for f in &assessment.failures {
        println!("  problem: {f}");
    }
    Ok(assessment.passed())
}

fn config_toml(port: u16) -> String {
    let site = |id: &str, priority: u32, addr: Ipv4Addr| {
        format!(
            r#"
[[sites]]
id = "{id}"
priority = {priority}
addresses = ["{addr}"]
[[sites.probes]]
id = "http"
interval = "100ms"
timeout = "300ms"
rise = 2
fall = 3
check = {{ kind = "http", url = "http://{NAME}:{port}/health", expect = "OK" }}
"#
        )
    };
    format!(
        r#"
name = "{NAME}"
zone = "{ZONE}"
ttl = "1s"
resources = ["{RESOURCE}"]

[observers]
ids = ["east", "west"]

[policy]
min_dwell = "2s"
rpo_budget = "5s"

# The default drill, with markers written into the drill copy once it serves the drill name
# (as a failover writes them once it serves production).
[runbook]
drill = [
  {{ step = "promote" }},
  {{ step = "verify_integrity" }},
  {{ step = "switch_dns" }},
  {{ step = "verify_dns" }},
  {{ step = "write_markers" }},
  {{ step = "cleanup" }},
]
{}{}"#,
        site("primary", 1, PRIMARY),
        site("recovery", 2, RECOVERY)
    )
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

/// Follows the drill's events until it finishes; narrates them and keeps what the report
/// needs.
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
                return Err("the driver stopped".into());
            }
            Ok(Ok(e)) => e,
        };
        ctx.record(&event);
        match event {
            Event::Decision {
                kind, to, reasons, ..
            } => say.say(format!(
                "decision: {kind} at {}: {}",
                to.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                explain(&reasons)
            )),
            Event::StepFinished { record, .. } => {
                let mut line = format!(
                    "  {:<8} {} ({:.1} ms)",
                    format!("{:?}", record.status).to_lowercase(),
                    record.description,
                    record.duration.as_secs_f64() * 1000.0
                );
                if !record.detail.is_empty() {
                    let _ = write!(line, ": {}", record.detail);
                }
                say.say(line);
            }
            Event::StepRetry {
                name, delay, error, ..
            } => say.say(format!("  retry {name} in {delay:?}: {error}")),
            Event::Held { name, reason, .. } => {
                say.say(format!("  HELD at {name}: {reason}"));
            }
            Event::SiteChanged {
                site, to, reasons, ..
            } => say.say(format!("site {site} is {to}: {}", explain(&reasons))),
            Event::Finished(r) if r.kind == RunbookKind::Drill => {
                say.say(format!(
                    "drill {}: RTO {:.1} ms{}",
                    if r.outcome == Outcome::Completed {
                        "finished"
                    } else {
                        "ABORTED"
                    },
                    r.rto.as_secs_f64() * 1000.0,
                    r.rpo
                        .map(|p| format!(", RPO {:.0} ms", p.as_secs_f64() * 1000.0))
                        .unwrap_or_default()
                ));
                return Ok(r);
            }
            Event::Finished(r) => {
                return Err(format!(
                    "a {} ran instead of the drill (production needed it)",
                    r.kind
                )
                .into());
            }
            _ => {}
        }
    }
}

/// The user running the drill: `$USER`, or the name of this process's user id.
fn user_name() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return format!("user {u}");
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    let Some(uid) = uid else {
        return "an unknown user".into();
    };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
        })
    });
    match name {
        Some(n) => format!("user {n}"),
        None => format!("uid {uid}"),
    }
}

fn print_summary(drill: &SwitchReport, ctx: &ReportContext) {
    let ms = |d: Duration| format!("{:>9.1} ms", d.as_secs_f64() * 1000.0);
    println!("drill timeline");
    for p in &drill.phases {
        println!("  {:<28}{}", p.phase.to_string(), ms(p.duration));
    }
    println!("  {:<28}{}", "RTO", ms(drill.rto));
    if let Some(rpo) = drill.rpo {
        println!("  {:<28}{}", "RPO (recovery site's lag)", ms(rpo));
    }
    for r in &ctx.integrity {
        println!(
            "integrity of {} at {}: {} {} checked, {} of {} markers verified, {} difference(s)",
            r.resource,
            r.site,
            r.checked,
            r.unit,
            r.markers_verified,
            r.markers_written,
            r.mismatches.len()
        );
    }
    for c in &ctx.checks {
        println!(
            "{} {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.what,
            c.detail
        );
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
        handle: &Handle,
        repl: &Audited,
        dns: &dyn DnsBackend,
        cfg: &ServiceConfig,
        resource: &ResourceId,
    ) -> Result<Production, Error> {
        let view = handle.view();
        let published = dns.read(cfg.zone(), cfg.name()).await?;
        let status = repl.inner.status(resource).await?;
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

/// What a client got for the production name, query by query.
struct Watched {
    answers: Vec<Result<IpAddr, String>>,
}

async fn watch_production(
    resolver: Resolver<TokioRuntimeProvider>,
    mut stop: watch::Receiver<bool>,
) -> Watched {
    let mut answers = Vec::new();
    loop {
        let answer = match resolver.lookup_ip(format!("{NAME}.")).await {
            Ok(a) => a.iter().next().ok_or_else(|| "an empty answer".to_owned()),
            Err(e) => Err(format!("query failed: {e}")),
        };
        answers.push(answer);
        if *stop.borrow() {
            return Watched { answers };
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}

// ------------------------------------------------------------------------------------------
// The auditing replication backend
// ------------------------------------------------------------------------------------------

/// One mutating call the driver made on the replication backend.
struct Call {
    what: String,
    drill: bool,
}

/// Markers read back from a drill copy: where, what was expected, what the backend found.
type MarkerCheck = (
    ResourceId,
    SiteId,
    Manifest,
    Result<IntegrityReport, String>,
);

/// How a client resolves the drill name.
struct DrillClient {
    resolver: Resolver<TokioRuntimeProvider>,
    name: String,
}

/// The image backend, wrapped (tower-style: same trait) to keep evidence for the report:
/// every mutating call and whether it was on the drill copy, the integrity check's result,
/// the markers written into the drill copy. Before the cleanup removes a drill copy that holds
/// markers, it reads them back and verifies them through the backend, and a client resolves
/// the drill name: the last moment the rehearsal is whole.
struct Audited {
    inner: ImageReplication,
    calls: Mutex<Vec<Call>>,
    marks: Mutex<BTreeMap<(ResourceId, SiteId), Manifest>>,
    checks: Mutex<Vec<(ResourceId, SiteId, IntegrityReport)>>,
    verified: Mutex<Vec<MarkerCheck>>,
    drill_answers: Mutex<Vec<Result<IpAddr, String>>>,
    client: DrillClient,
    corrupt: bool,
}

impl std::fmt::Debug for Audited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audited")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Audited {
    fn log(&self, what: String, ctx: &OpContext) {
        lock(&self.calls).push(Call {
            what,
            drill: ctx.drill,
        });
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *lock(&self.calls))
    }

    fn drill_answers(&self) -> Vec<Result<IpAddr, String>> {
        lock(&self.drill_answers).clone()
    }

    /// Reads back the markers written into the drill copy of `resource` at `site`.
    async fn verify_markers(&self, resource: &ResourceId, site: &SiteId, ctx: &OpContext) {
        let Some(expected) = lock(&self.marks).remove(&(resource.clone(), site.clone())) else {
            return;
        };
        if self.corrupt
            && let Err(e) = self.corrupt_one(resource, site, &expected)
        {
            eprintln!("could not inject the corruption: {e}");
        }
        let request = IntegrityRequest::Verify {
            expected: expected.clone(),
        };
        self.log(format!("verify markers in {resource} at {site}"), ctx);
        let result = self
            .inner
            .integrity(resource, site, &request, ctx)
            .await
            .map_err(|e| e.to_string());
        lock(&self.verified).push((resource.clone(), site.clone(), expected, result));
    }

    /// Appends a byte to the first marker file of the drill copy.
    fn corrupt_one(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        markers: &Manifest,
    ) -> std::io::Result<()> {
        let root = self
            .inner
            .paths(resource, site)
            .map(|p| p.drill)
            .ok_or_else(|| std::io::Error::other("no such site"))?;
        let key = markers
            .entries
            .keys()
            .next()
            .ok_or_else(|| std::io::Error::other("no markers"))?;
        let path = root.join(key);
        let mut data = std::fs::read(&path)?;
        data.push(b'!');
        std::fs::write(&path, data)
    }

    async fn resolve_drill_name(&self) {
        let answer = match self
            .client
            .resolver
            .lookup_ip(format!("{}.", self.client.name))
            .await
        {
            Ok(a) => a.iter().next().ok_or_else(|| "an empty answer".to_owned()),
            Err(e) => Err(format!("query failed: {e}")),
        };
        lock(&self.drill_answers).push(answer);
    }

    /// The integrity results, per resource and site, for the report.
    fn integrity_results(&self) -> Vec<IntegrityResult> {
        let checks = lock(&self.checks);
        let verified = lock(&self.verified);
        let mut out = Vec::new();
        for (resource, site, report) in checks.iter() {
            let mut r = IntegrityResult {
                resource: resource.to_string(),
                site: site.to_string(),
                scope: "drill copy checked file by file against its checkpoint's manifest; \
                        markers written into it and read back before it was removed"
                    .into(),
                checked: report.manifest.entries.len() as u64,
                unit: "files".into(),
                markers_written: 0,
                markers_verified: 0,
                mismatches: report.mismatches.iter().map(|m| m.to_string()).collect(),
            };
            for (_, _, expected, result) in verified
                .iter()
                .filter(|(r2, s2, ..)| r2 == resource && s2 == site)
            {
                r.markers_written += expected.entries.len() as u64;
                match result {
                    Ok(v) => {
                        let bad: Vec<&str> = v.mismatches.iter().map(|m| m.key.as_str()).collect();
                        r.markers_verified += expected
                            .entries
                            .keys()
                            .filter(|k| !bad.contains(&k.as_str()))
                            .count() as u64;
                        r.mismatches
                            .extend(v.mismatches.iter().map(|m| format!("marker {m}")));
                    }
                    Err(e) => r
                        .mismatches
                        .push(format!("markers could not be verified: {e}")),
                }
            }
            out.push(r);
        }
        // Markers written but never read back (no cleanup ran) count as unverified.
        for ((resource, site), m) in lock(&self.marks).iter() {
            out.push(IntegrityResult {
                resource: resource.to_string(),
                site: site.to_string(),
                scope: "markers written into the drill copy, never read back".into(),
                checked: 0,
                unit: "files".into(),
                markers_written: m.entries.len() as u64,
                markers_verified: 0,
                mismatches: Vec::new(),
            });
        }
        out
    }
}

#[async_trait]
impl ReplicationBackend for Audited {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        self.inner.status(resource).await
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.log(format!("fence {resource} at {site}"), ctx);
        if ctx.drill {
            // The cleanup is about to remove the drill copy.
            self.verify_markers(resource, site, ctx).await;
            self.resolve_drill_name().await;
        }
        self.inner.fence(resource, site, ctx).await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        self.log(format!("promote {resource} at {site}"), ctx);
        self.inner.promote(resource, site, ctx).await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.log(format!("reprotect {resource} to follow {primary}"), ctx);
        self.inner.reprotect(resource, primary, wait, ctx).await
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        let what = match request {
            IntegrityRequest::Check => "check",
            IntegrityRequest::Mark { .. } => "write markers into",
            IntegrityRequest::Verify { .. } => "verify markers in",
        };
        self.log(format!("{what} {resource} at {site}"), ctx);
        let report = self.inner.integrity(resource, site, request, ctx).await?;
        if ctx.drill {
            let key = (resource.clone(), site.clone());
            match request {
                IntegrityRequest::Check => {
                    lock(&self.checks).push((key.0, key.1, report.clone()));
                }
                IntegrityRequest::Mark { .. } => {
                    lock(&self.marks)
                        .entry(key)
                        .or_default()
                        .entries
                        .extend(report.manifest.entries.clone());
                }
                IntegrityRequest::Verify { .. } => {}
            }
        }
        Ok(report)
    }
}

// ------------------------------------------------------------------------------------------
// Plumbing: waiting, the client resolver, the two web apps
// ------------------------------------------------------------------------------------------

async fn wait_until(
    handle: &Handle,
    what: &str,
    ok: impl Fn(&idns_core::ServiceView) -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let view = handle.view();
        if ok(&view) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what}: {view:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A resolver that asks only the embedded server, with no cache: what a client would see.
fn client_resolver(server: SocketAddr) -> Result<Resolver<TokioRuntimeProvider>, Error> {
    let mut ns = NameServerConfig::udp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 2;
    opts.timeout = Duration::from_millis(500);
    opts.use_hosts_file = ResolveHosts::Never;
    Ok(builder.build()?)
}

/// Starts both web apps on one port of their two addresses; tries other ports when the
/// second address has the first's taken.
async fn start_both_sites() -> Result<(u16, JoinHandle<()>, JoinHandle<()>), Error> {
    let mut last = None;
    for _ in 0..10 {
        let port = TcpListener::bind((PRIMARY, 0)).await?.local_addr()?.port();
        let p = start_web("primary", SocketAddr::from((PRIMARY, port))).await;
        let r = start_web("recovery", SocketAddr::from((RECOVERY, port))).await;
        match (p, r) {
            (Ok(p), Ok(r)) => return Ok((port, p, r)),
            (p, r) => {
                for t in [p.as_ref().ok(), r.as_ref().ok()].into_iter().flatten() {
                    t.abort();
                }
                last = p.err().or(r.err());
            }
        }
    }
    Err(last.unwrap_or_else(|| "no free port on both loopback addresses".into()))
}

/// A tiny web app for one site: `/health` answers `OK <site>`.
async fn start_web(site: &'static str, addr: SocketAddr) -> Result<JoinHandle<()>, Error> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, site));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            while conns.try_join_next().is_some() {}
        }
    }))
}

async fn serve(mut stream: TcpStream, site: &str) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while n < buf.len() {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let body = format!("OK {site}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
