//! `quickstart`: the whole of idns on loopback, with nothing but Rust.
//!
//! Two sites of `www.quickstart.test` — a small web app on 127.0.0.1 (primary) and one on
//! 127.0.0.2 (recovery), each serving its own copy of the application's data, replicated by
//! the image backend — the embedded DNS server, HTTP probes from two observers, and the
//! controller. The primary is killed; the name fails over; data is written at the recovery
//! site; the primary comes back; the failback reverses replication and verifies what was
//! written meanwhile. Every step is narrated, and the timeline is printed with the RTO of each
//! phase and the RPO.
//!
//! Run it with `cargo run --release --bin quickstart`.

// A command-line program talks to its user on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use idns_core::runtime::{Controller, FileStore};
use idns_core::{Command, Event, Health, Outcome, Phase, RunbookKind, ServiceConfig, SwitchReport};
use idns_core::{StepName, StepStatus};
use idns_examples::loopback::{
    Error, ImagePair, Narrator, PRIMARY, RECOVERY, ServiceToml, Sites, WebSite, dns_server,
    resolve, resolver, wait_resolves,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

const NAME: &str = "www.quickstart.test";
const ZONE: &str = "quickstart.test";
/// The longest any single phase of the demonstration may take before it gives up.
const LIMIT: Duration = Duration::from_secs(20);

/// A real failover and failback of two loopback sites, narrated, with measured RTO and RPO.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> ExitCode {
    let Args {} = Args::parse();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let say = Narrator::start();
    let dir = tempfile::tempdir()?;
    println!(
        "idns quickstart: {NAME} with a primary site on {PRIMARY} and a recovery site on {RECOVERY}"
    );
    println!("working directory: {}", dir.path().display());

    // The application's data, replicated from the primary's store to the recovery's.
    let data = ImagePair::new(dir.path(), "app-data", Duration::from_millis(300)).await?;
    tokio::fs::write(
        data.primary_live.join("orders.txt"),
        "order 1: 3 widgets\norder 2: 1 gadget\n",
    )
    .await?;
    let first = data.sync().await?;
    say.say(format!(
        "replicated app-data to the recovery site: {first} bytes in the first pass"
    ));

    // The two web apps, on the same port of two loopback addresses.
    let lives = (data.primary_live.clone(), data.recovery_live.clone());
    let sites = Sites::start(Some(lives)).await?;
    let (port, primary_addr, recovery_addr) =
        (sites.port, sites.primary_addr(), sites.recovery_addr());
    say.say(format!(
        "web apps up: primary on {PRIMARY}:{port}, recovery on {RECOVERY}:{port}"
    ));

    // The embedded authoritative DNS server.
    let (dns, dns_addr) = dns_server(ZONE).await?;
    say.say(format!(
        "embedded DNS server for {ZONE} on {dns_addr} (UDP and TCP)"
    ));

    // The controller, its probes from two observers, and the narration of its events.
    let mut toml = ServiceToml::new(NAME, ZONE, port);
    toml.resource = Some("app-data".to_owned());
    let mut builder = Controller::builder(ServiceConfig::from_toml(&toml.render())?)
        .dns(dns.backend())
        .replication(data.replication.clone())
        .store(FileStore::new(dir.path().join("journal.json")))
        .replication_poll(Duration::from_millis(250));
    let narration = tokio::spawn(narrate(builder.subscribe(), say));
    let controller = builder.start().await?;
    let mut probes = Vec::new();
    for observer in ["east", "west"] {
        probes.push(idns_probe::spawn_probes(&controller, observer.parse()?)?);
    }
    say.say("probes running: HTTP GET /health every 100 ms from observers east and west");
    let client = resolver(dns_addr)?;

    // 1. Both sites up, the name on the primary.
    wait(&controller, |v| {
        v.runbook.is_none() && v.epoch.get() >= 1 && v.sites.iter().all(|s| s.health == Health::Up)
    })
    .await?;
    let addr = resolve(&client, NAME)
        .await
        .ok_or("the name does not resolve")?;
    say.say(format!("a client resolves {NAME} -> {addr}"));
    let page = http_get(SocketAddr::new(addr, port)).await?;
    say.say(format!("and gets: {}", first_line(&page)));
    if addr != IpAddr::V4(PRIMARY) {
        return Err(format!("{NAME} should point at the primary, not {addr}").into());
    }

    // 2. The primary dies.
    println!();
    say.say(format!(
        "*** killing the primary's web app on {PRIMARY}:{port} ***"
    ));
    sites.primary.kill().await;
    let killed = Instant::now();
    let to_recovery = wait_resolves(&client, NAME, IpAddr::V4(RECOVERY), killed, LIMIT).await?;
    say.say(format!(
        "a client resolves {NAME} -> {RECOVERY} ({:.0} ms after the kill)",
        to_recovery.as_secs_f64() * 1000.0
    ));
    let failover = finished(&controller, RunbookKind::Failover).await?;
    let page = http_get(recovery_addr).await?;
    say.say(format!("the same URL now serves: {}", first_line(&page)));

    // 3. The recovery site takes writes.
    let written = "order 3: 7 sprockets (taken during the outage)\n";
    tokio::fs::write(data.recovery_live.join("orders-during-outage.txt"), written).await?;
    let sum = blake3::hash(written.as_bytes());
    say.say(format!(
        "the recovery site takes an order: orders-during-outage.txt ({} bytes, blake3 {})",
        written.len(),
        &sum.to_hex()[..16]
    ));

    // 4. The primary comes back; an operator fails back once the minimum dwell has passed.
    println!();
    say.say("*** the primary's web app is restored ***");
    let live = Some(data.primary_live.clone());
    let _primary = WebSite::restart("primary", primary_addr, live, LIMIT).await?;
    let view = wait(&controller, |v| {
        v.sites.iter().all(|s| s.health == Health::Up)
    })
    .await?;
    say.say("failback is manual (as with SRM): the operator asks for it");
    let dwell = view.dwell_left(SystemTime::now());
    if !dwell.is_zero() {
        say.say(format!(
            "the minimum dwell after the failover has {} left: the operator waits it out",
            humantime::format_duration(Duration::from_millis(dwell.as_millis() as u64))
        ));
        // The controller's wall clock and this one may differ by a hair.
        tokio::time::sleep(dwell + Duration::from_millis(50)).await;
    }
    controller
        .command(Command::Failback { force: false })
        .await?;
    let failback = finished(&controller, RunbookKind::Failback).await?;
    wait_resolves(&client, NAME, IpAddr::V4(PRIMARY), Instant::now(), LIMIT).await?;
    say.say(format!("a client resolves {NAME} -> {PRIMARY} again"));

    // 5. Nothing written during the outage was lost.
    let back = tokio::fs::read(data.primary_live.join("orders-during-outage.txt")).await?;
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
    print_timeline(&failover, &failback, to_recovery);

    // Shut everything down: the probes, then the controller (which stops replication).
    for (handle, task) in probes {
        handle.shutdown();
        let _ = task.await;
    }
    controller.shutdown();
    controller.stopped().await?;
    // The controller has stopped: the narrator prints what is left and ends.
    let _ = narration.await;
    dns.shutdown();
    println!("\nquickstart finished: failover and failback completed, nothing lost.");
    Ok(())
}

/// Waits (at most [`LIMIT`]) until the controller's view satisfies `ok`.
async fn wait(
    controller: &Controller,
    ok: impl FnMut(&idns_core::ServiceView) -> bool,
) -> Result<idns_core::ServiceView, Error> {
    match tokio::time::timeout(LIMIT, controller.wait_for(ok)).await {
        Ok(view) => Ok(view?),
        Err(_) => Err(format!("gave up after {LIMIT:?}: {:?}", controller.view()).into()),
    }
}

/// Waits (at most [`LIMIT`]) for the runbook of `kind` to complete.
async fn finished(controller: &Controller, kind: RunbookKind) -> Result<SwitchReport, Error> {
    // One runbook of each kind runs here: the first of `kind` is the one.
    let report = tokio::time::timeout(LIMIT, controller.wait_for_runbook(|r| r.kind == kind))
        .await
        .map_err(|_| format!("no {kind} finished within {LIMIT:?}"))??;
    if report.outcome != Outcome::Completed {
        return Err(format!("the {kind} was aborted: {:?}", report.steps).into());
    }
    Ok(report)
}

/// Narrates the controller's events, in the election's own words, as they happen.
async fn narrate(mut rx: broadcast::Receiver<Event>, say: Narrator) {
    loop {
        match rx.recv().await {
            Ok(
                event @ (Event::SiteChanged { .. }
                | Event::Decision { .. }
                | Event::Recommendation { .. }
                | Event::Blocked { .. }
                | Event::Finished(_)),
            ) => say.say(event),
            Ok(
                event @ (Event::StepFinished { .. } | Event::StepRetry { .. } | Event::Held { .. }),
            ) => {
                say.say(format!("  {event}"));
            }
            // Probe changes and step starts are too fine for the story; refused commands are
            // the caller's to report.
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                say.say(format!("({n} events not shown)"))
            }
            Err(broadcast::error::RecvError::Closed) => return,
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
        let (a, b) = (failover.phase(phase), failback.phase(phase));
        println!("{label:<42}{}  {}", ms(a), ms(b));
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

/// `GET /` from `addr` with the service's name as Host; returns the body.
async fn http_get(addr: SocketAddr) -> Result<String, Error> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await??;
    let req = format!("GET / HTTP/1.1\r\nhost: {NAME}\r\nconnection: close\r\n\r\n");
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
