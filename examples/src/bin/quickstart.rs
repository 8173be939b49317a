//! `quickstart`: the whole of idns on loopback, with nothing but Rust.
//!
//! Two sites of `www.quickstart.test` — a small web app on 127.0.0.1 (primary) and one on
//! 127.0.0.2 (recovery), each serving its own copy of the application's data, replicated by
//! the image backend — the embedded DNS server, HTTP probes from two observers, the election
//! and the driver. The primary is killed; the name fails over; data is written at the recovery
//! site; the primary comes back; the failback reverses replication and verifies what was
//! written meanwhile. Every step is narrated, and the timeline is printed with the RTO of each
//! phase and the RPO.
//!
//! Run it with `cargo run --release --bin quickstart`.

// A command-line program talks to its user on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_core::runtime::{Backends, Driver, DriverOptions, FileStore, Handle};
use idns_core::{
    Command, Event, Health, Outcome, Phase, RunbookKind, ServiceConfig, StepName, StepStatus,
    SwitchReport,
};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
use idns_probe::{Scheduler, SchedulerOptions, probes_for_service, sink_fn};
use idns_replication::image::{ImageConfig, ImageReplication};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};

const NAME: &str = "www.quickstart.test";
const ZONE: &str = "quickstart.test";
const RESOURCE: &str = "app-data";
const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RECOVERY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The longest any single phase of the demonstration may take before it gives up.
const LIMIT: Duration = Duration::from_secs(20);

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
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

async fn run() -> Result<(), Error> {
    let say = Narrator {
        start: Instant::now(),
    };
    let dir = tempfile::tempdir()?;
    println!(
        "idns quickstart: {NAME} with a primary site on {PRIMARY} and a recovery site on {RECOVERY}"
    );
    println!("working directory: {}", dir.path().display());

    // The application's data, replicated from the primary's store to the recovery's.
    let resource = RESOURCE.parse()?;
    let (primary, recovery) = ("primary".parse()?, "recovery".parse()?);
    let (primary_store, recovery_store) = (
        dir.path().join("primary-store"),
        dir.path().join("recovery-store"),
    );
    tokio::fs::create_dir_all(&primary_store).await?;
    tokio::fs::create_dir_all(&recovery_store).await?;
    let mut image = ImageConfig::two_sites(
        RESOURCE,
        ("primary", &primary_store),
        ("recovery", &recovery_store),
    )?;
    image.resources[0].interval = Duration::from_millis(300);
    let repl = ImageReplication::new(image);
    let live = |site| {
        repl.paths(&resource, site)
            .map(|p| p.live)
            .ok_or("the image backend has no such site")
    };
    let (primary_live, recovery_live) = (live(&primary)?, live(&recovery)?);
    tokio::fs::create_dir_all(&primary_live).await?;
    tokio::fs::write(
        primary_live.join("orders.txt"),
        "order 1: 3 widgets\norder 2: 1 gadget\n",
    )
    .await?;
    let first = repl.sync(&resource).await?;
    say.say(format!(
        "replicated {} to the recovery site: {} bytes in the first pass",
        RESOURCE,
        first.iter().map(|r| r.bytes_transferred).sum::<u64>()
    ));
    let continuous = {
        let repl = repl.clone();
        let resource = resource.clone();
        tokio::spawn(async move { repl.run_continuous(&resource).await })
    };

    // The two web apps, on the same port of two loopback addresses.
    let (port, mut primary_web, recovery_web) =
        start_both_sites(&primary_live, &recovery_live).await?;
    say.say(format!(
        "web apps up: primary on {PRIMARY}:{port}, recovery on {RECOVERY}:{port}"
    ));

    // The embedded authoritative DNS server.
    let dns = EmbeddedServer::start(EmbeddedConfig::new(
        vec![SocketAddr::from((PRIMARY, 0))],
        &[ZONE.parse()?],
    )?)
    .await?;
    let dns_addr = *dns
        .udp_addrs()
        .first()
        .ok_or("the DNS server has no UDP socket")?;
    say.say(format!(
        "embedded DNS server for {ZONE} on {dns_addr} (UDP and TCP)"
    ));

    // The controller: configuration, driver, probes from two observers.
    let cfg = ServiceConfig::from_toml(&config_toml(port))?;
    let (driver, handle) = Driver::new(
        cfg.clone(),
        Backends {
            dns: Arc::new(dns.backend()),
            replication: Some(Arc::new(repl.clone())),
            store: Arc::new(FileStore::new(dir.path().join("journal.json"))),
        },
        DriverOptions {
            replication_poll: Some(Duration::from_millis(250)),
            ..DriverOptions::default()
        },
    )
    .await?;
    let mut events = handle.subscribe();
    let narration = tokio::spawn(narrate(handle.subscribe(), say));
    let driver_task = tokio::spawn(driver.run());
    let mut schedulers = Vec::new();
    for observer in ["east", "west"] {
        let h = handle.clone();
        let sink = sink_fn(move |report| {
            let h = h.clone();
            async move { h.report(report).await }
        });
        let options = SchedulerOptions::new(observer.parse()?);
        schedulers.push(Scheduler::spawn(options, sink, probes_for_service(&cfg)?));
    }
    say.say("probes running: HTTP GET /health every 100 ms from observers east and west");

    let resolver = client_resolver(dns_addr)?;

    // 1. Both sites up, the name on the primary.
    wait_until(&handle, "both sites up and the home site published", |v| {
        v.runbook.is_none() && v.epoch.get() >= 1 && v.sites.iter().all(|s| s.health == Health::Up)
    })
    .await?;
    let addr = resolve(&resolver).await?;
    say.say(format!("a client resolves {NAME} -> {addr}"));
    let page = http_get(SocketAddr::new(addr, port), "/").await?;
    say.say(format!("and gets: {}", first_line(&page)));
    if addr != IpAddr::V4(PRIMARY) {
        return Err(format!("{NAME} should point at the primary, not {addr}").into());
    }

    // 2. The primary dies.
    println!();
    say.say(format!(
        "*** killing the primary's web app on {PRIMARY}:{port} ***"
    ));
    primary_web.abort();
    let killed = Instant::now();
    let client_failover = wait_for_address(&resolver, IpAddr::V4(RECOVERY), killed).await?;
    say.say(format!(
        "a client resolves {NAME} -> {RECOVERY} ({:.0} ms after the kill)",
        client_failover.as_secs_f64() * 1000.0
    ));
    let failover = wait_finished(&mut events, RunbookKind::Failover).await?;
    let page = http_get(SocketAddr::new(IpAddr::V4(RECOVERY), port), "/").await?;
    say.say(format!("the same URL now serves: {}", first_line(&page)));

    // 3. The recovery site takes writes.
    let written = "order 3: 7 sprockets (taken during the outage)\n";
    let file = recovery_live.join("orders-during-outage.txt");
    tokio::fs::write(&file, written).await?;
    let sum = blake3::hash(written.as_bytes());
    say.say(format!(
        "the recovery site takes an order: {} ({} bytes, blake3 {})",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        written.len(),
        &sum.to_hex()[..16]
    ));

    // 4. The primary comes back; an operator fails back.
    println!();
    say.say("*** the primary's web app is restored ***");
    primary_web = start_web(
        "primary",
        SocketAddr::from((PRIMARY, port)),
        primary_live.clone(),
    )
    .await?;
    wait_until(&handle, "the primary up again", |v| {
        v.sites.iter().all(|s| s.health == Health::Up)
    })
    .await?;
    say.say("failback is manual (as with SRM): the operator asks for it");
    command_failback(&handle, say).await?;
    let failback = wait_finished(&mut events, RunbookKind::Failback).await?;
    wait_for_address(&resolver, IpAddr::V4(PRIMARY), Instant::now()).await?;
    say.say(format!("a client resolves {NAME} -> {PRIMARY} again"));

    // 5. Nothing written during the outage was lost.
    let back = tokio::fs::read(primary_live.join("orders-during-outage.txt")).await?;
    let back_sum = blake3::hash(&back);
    if back_sum != sum {
        return Err("the order taken at the recovery site is not at the primary".into());
    }
    say.say(format!(
        "integrity: the order taken during the outage is at the primary, blake3 {} identical",
        &back_sum.to_hex()[..16]
    ));
    let markers = failback
        .steps
        .iter()
        .any(|s| s.name == StepName::VerifyMarkers && s.status == StepStatus::Done);
    if !markers {
        return Err("the failback did not verify the drill markers".into());
    }

    println!();
    print_timeline(&failover, &failback, client_failover);

    // Shut everything down.
    for (h, task) in schedulers {
        h.shutdown();
        let _ = task.await;
    }
    handle.shutdown();
    driver_task.await??;
    // The driver has stopped: the narrator prints what is left and ends.
    let _ = narration.await;
    continuous.abort();
    primary_web.abort();
    recovery_web.abort();
    dns.shutdown();
    println!("\nquickstart finished: failover and failback completed, nothing lost.");
    Ok(())
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
{}{}"#,
        site("primary", 1, PRIMARY),
        site("recovery", 2, RECOVERY)
    )
}

/// Narrates the driver's events as they happen.
async fn narrate(mut rx: broadcast::Receiver<Event>, say: Narrator) {
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                say.say(format!("({n} events not shown)"));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match &event {
            Event::SiteChanged { .. }
            | Event::Decision { .. }
            | Event::Recommendation { .. }
            | Event::Blocked { .. }
            | Event::Finished(_) => say.say(event.to_string()),
            Event::StepFinished { .. } | Event::StepRetry { .. } | Event::Held { .. } => {
                say.say(format!("  {event}"))
            }
            // Probe changes and step starts are too fine for the story; refused commands are
            // the caller's to report.
            _ => {}
        }
    }
}

fn print_timeline(failover: &SwitchReport, failback: &SwitchReport, client: Duration) {
    let ms = |d: Duration| format!("{:>9.1} ms", d.as_secs_f64() * 1000.0);
    println!("timeline                                  failover      failback");
    let rows = [
        (Phase::Detect, "detect (first failed probe -> site down)"),
        (Phase::Decide, "decide"),
        (
            Phase::Reprotect,
            "reprotect (reverse replication, catch up)",
        ),
        (Phase::Fence, "fence the old site"),
        (Phase::Promote, "promote the new site"),
        (Phase::Verify, "verify integrity / markers"),
        (Phase::SwitchDns, "switch DNS"),
        (Phase::Propagate, "verify propagation"),
    ];
    for (phase, label) in rows {
        println!(
            "{label:<42}{}  {}",
            ms(failover.phase(phase)),
            ms(failback.phase(phase))
        );
    }
    println!(
        "{:<42}{}  {}",
        "RTO (election's measure)",
        ms(failover.rto),
        ms(failback.rto)
    );
    let rpo = |r: &SwitchReport| r.rpo.map(ms).unwrap_or_else(|| format!("{:>12}", "-"));
    println!(
        "{:<42}{}  {}",
        "RPO (replica lag at the decision)",
        rpo(failover),
        rpo(failback)
    );
    println!(
        "{:<42}{}",
        "kill -> a client resolves the recovery",
        ms(client)
    );
}

/// Asks for a failback, waiting out the minimum dwell if the election says so.
async fn command_failback(handle: &Handle, say: Narrator) -> Result<(), Error> {
    let deadline = Instant::now() + LIMIT;
    let mut told = false;
    loop {
        match handle.command(Command::Failback { force: false }).await {
            Ok(()) => return Ok(()),
            // Refused while the minimum dwell runs: say so once, ask again shortly.
            Err(idns_core::Error::Refused(r)) if Instant::now() < deadline => {
                if !told {
                    say.say(format!("{r}: asking again until it is allowed"));
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

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

async fn wait_finished(
    rx: &mut broadcast::Receiver<Event>,
    kind: RunbookKind,
) -> Result<SwitchReport, Error> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err(format!("no {kind} finished within {LIMIT:?}").into()),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err("the driver stopped".into());
            }
            Ok(Ok(Event::Finished(r))) if r.kind == kind => {
                if r.outcome != Outcome::Completed {
                    return Err(format!("the {kind} was aborted: {:?}", r.steps).into());
                }
                return Ok(r);
            }
            Ok(Ok(_)) => {}
        }
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
    opts.attempts = 1;
    opts.timeout = Duration::from_millis(500);
    opts.use_hosts_file = ResolveHosts::Never;
    Ok(builder.build()?)
}

async fn resolve(resolver: &Resolver<TokioRuntimeProvider>) -> Result<IpAddr, Error> {
    let answer = resolver.lookup_ip(format!("{NAME}.")).await?;
    answer
        .iter()
        .next()
        .ok_or_else(|| format!("{NAME} has no address").into())
}

/// Polls the name every 20 ms until it answers `want`; returns the time since `since`.
async fn wait_for_address(
    resolver: &Resolver<TokioRuntimeProvider>,
    want: IpAddr,
    since: Instant,
) -> Result<Duration, Error> {
    loop {
        if let Ok(addr) = resolve(resolver).await
            && addr == want
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > LIMIT {
            return Err(format!("{NAME} did not answer {want} within {LIMIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts both web apps on one port; retries with another port if the second address has it
/// taken.
async fn start_both_sites(
    primary_live: &Path,
    recovery_live: &Path,
) -> Result<(u16, JoinHandle<()>, JoinHandle<()>), Error> {
    let mut last = None;
    for _ in 0..10 {
        let port = TcpListener::bind((PRIMARY, 0)).await?.local_addr()?.port();
        let p = start_web(
            "primary",
            SocketAddr::from((PRIMARY, port)),
            primary_live.to_owned(),
        )
        .await;
        let r = start_web(
            "recovery",
            SocketAddr::from((RECOVERY, port)),
            recovery_live.to_owned(),
        )
        .await;
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

/// A tiny web app for one site: `/health` answers `OK <site>`, `/` lists the site's data.
/// Every response closes its connection, so aborting the returned task kills the site at once
/// (new connections are refused, none linger).
async fn start_web(
    site: &'static str,
    addr: SocketAddr,
    data: PathBuf,
) -> Result<JoinHandle<()>, Error> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, site, data.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            while conns.try_join_next().is_some() {}
        }
    }))
}

async fn serve(mut stream: TcpStream, site: &str, data: PathBuf) {
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
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let body = if path.starts_with("/health") {
        format!("OK {site}\n")
    } else {
        let mut page = format!("site {site} of {NAME}\n");
        if let Ok(mut entries) = tokio::fs::read_dir(&data).await {
            while let Ok(Some(e)) = entries.next_entry().await {
                let _ = writeln!(page, "{}", e.file_name().to_string_lossy());
            }
        }
        page
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `GET path` from `addr` with the service's name as Host.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String, Error> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await??;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {NAME}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(text))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
