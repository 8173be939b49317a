//! `failover_bench`: end-to-end failover time, from killing the primary's web server to every
//! authoritative DNS server answering the recovery site.
//!
//! Each run sets up, on loopback, from scratch: two web sites of `www.bench.test` (127.0.0.1
//! primary, 127.0.0.2 recovery), the embedded DNS server listening on two addresses
//! (127.0.0.1 and 127.0.0.2, each its own UDP/TCP port: two authoritative endpoints, one
//! in-process zone state), HTTP probes from two observers (quorum 2) every `--interval-ms`
//! with fall `--fall`, the election and the driver, and (unless `--no-replication`) the image
//! replication of a small data set. Once steady (both sites up, both servers answering the
//! primary), it waits a random part of a probe interval, kills the primary's web server (its
//! listener and every connection: new connections are refused at once) and polls both DNS
//! servers directly, with a non-caching UDP client, every `--poll-ms`, until both answer the
//! recovery site. The driver's own report gives the phases of the RTO.
//!
//! It prints a table — median, p95, min and max of kill → answer, and of each phase — and
//! whether the goal (median and p95 ≤ interval × fall + 50 ms) was met.
//!
//! Run it with `bash examples/bench/failover.sh` (release build), or
//! `cargo run --release -p idns-examples --bin failover_bench -- --runs 20`.

// A benchmark prints its table on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use clap::builder::RangedU64ValueParser;
use clap::{ArgAction, Parser};
use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use idns_core::runtime::{Backends, Driver, DriverOptions, FileStore, Handle};
use idns_core::{
    BackendError, DnsBackend, DnsCapabilities, DnsChange, DnsName, Event, Health, IntegrityReport,
    IntegrityRequest, Journal, OpContext, Phase, Promoted, Propagation, Published,
    ReplicationBackend, ReplicationStatus, ResourceId, RunbookKind, ServiceConfig, SiteId,
    StateStore, StepName, Stored, SwitchReport,
};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
use idns_probe::{Scheduler, SchedulerOptions, probes_for_service, sink_fn};
use idns_replication::image::{ImageConfig, ImageReplication};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};
use tokio::task::{JoinHandle, JoinSet};

const NAME: &str = "www.bench.test";
const ZONE: &str = "bench.test";
const RESOURCE: &str = "app-data";
const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RECOVERY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The longest one stage of a run may take.
const LIMIT: Duration = Duration::from_secs(20);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// End-to-end failover time: kill the primary's web server, then measure until every
/// authoritative server answers the recovery site.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Options {
    /// Runs, each with a fresh setup.
    #[arg(long, value_name = "N", default_value = "20",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    runs: usize,
    /// Probe interval, milliseconds.
    #[arg(long = "interval-ms", value_name = "MS", default_value = "100", value_parser = millis)]
    interval: Duration,
    /// Consecutive failures that mark a site down.
    #[arg(long, value_name = "N", default_value = "3",
          value_parser = RangedU64ValueParser::<u32>::new().range(1..=1000))]
    fall: u32,
    /// How often each DNS server is asked during a failover, milliseconds.
    #[arg(long = "poll-ms", value_name = "MS", default_value = "1", value_parser = millis)]
    poll: Duration,
    /// No replicated resource: the runbook is switch DNS and propagate only.
    #[arg(long = "no-replication", action = ArgAction::SetFalse)]
    replication: bool,
    /// Where the journal and the replicas live (default: the system's temporary directory;
    /// /dev/shm shows the runbook without the disk's fsync latency).
    #[arg(long, value_name = "PATH")]
    dir: Option<std::path::PathBuf>,
    /// One line per run.
    #[arg(long)]
    verbose: bool,
}

/// A positive number of milliseconds.
fn millis(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{s:?} is not a positive number of milliseconds")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match bench(Options::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover_bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Sample {
    /// Kill → every authoritative server answers the recovery site.
    answer: Duration,
    /// Kill → each server answered the recovery site, by server.
    per_server: Vec<Duration>,
    /// Kill → the driver's decision.
    decision: Duration,
    /// Kill → the DNS backend's change returned (the new records are served from then on).
    applied: Duration,
    /// The driver's report.
    report: SwitchReport,
    /// Journal saves between the kill and the DNS change: how many, how long in all.
    saves: (usize, Duration),
    /// Replication calls between the kill and the DNS change, how long in all.
    replication: Duration,
}

impl Sample {
    /// Kill → the first failed probe: the part of the detection the election cannot see.
    fn first_failure(&self) -> Duration {
        self.decision
            .saturating_sub(self.report.phase(Phase::Detect) + self.report.phase(Phase::Decide))
    }

    /// Time of the steps named `name` before the DNS switch.
    fn before_switch(&self, name: StepName) -> Duration {
        self.report
            .steps
            .iter()
            .take_while(|s| s.name != StepName::SwitchDns)
            .filter(|s| s.name == name)
            .map(|s| s.duration)
            .sum()
    }

    /// The runbook's time until the DNS step ended: from the decision.
    fn to_dns(&self) -> Duration {
        let mut t = Duration::ZERO;
        for s in &self.report.steps {
            t += s.duration;
            if s.name == StepName::SwitchDns {
                break;
            }
        }
        t
    }
}

async fn bench(o: Options) -> Result<(), Error> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let goal = o.interval * o.fall + Duration::from_millis(50);
    println!("$ {command}");
    println!(
        "failover_bench: {} runs; HTTP probes every {} ms from 2 observers (quorum 2), fall {}; image replication {}",
        o.runs,
        o.interval.as_millis(),
        o.fall,
        if o.replication { "on" } else { "off" }
    );
    println!(
        "DNS: one embedded server listening on {PRIMARY} and {RECOVERY} (two authoritative endpoints), each polled over UDP every {} ms without a cache",
        o.poll.as_millis()
    );
    println!(
        "journal and replicas in {}",
        o.dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| std::env::temp_dir().display().to_string())
    );
    println!("load average before: {}", load_average());
    let mut samples = Vec::with_capacity(o.runs);
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    for run in 0..o.runs {
        seed = splitmix(seed);
        let s = one_run(&o, run, seed).await?;
        if o.verbose {
            println!(
                "run {:>2}: kill -> answer {:>6.1} ms (servers {}), first failure {:>5.1}, detect {:>5.1}, decide {:>4.1}, to DNS {:>5.1} (saves {:.1}, replication {:.1}), RTO {:>6.1} ms",
                run + 1,
                ms(s.answer),
                s.per_server
                    .iter()
                    .map(|d| format!("{:.1}", ms(*d)))
                    .collect::<Vec<_>>()
                    .join("/"),
                ms(s.first_failure()),
                ms(s.report.phase(Phase::Detect)),
                ms(s.report.phase(Phase::Decide)),
                ms(s.to_dns()),
                ms(s.saves.1),
                ms(s.replication),
                ms(s.report.rto)
            );
        }
        samples.push(s);
    }
    println!("load average after:  {}", load_average());
    println!();
    print_table(&samples, &o);
    let answers: Vec<Duration> = samples.iter().map(|s| s.answer).collect();
    let (median, p95) = (quantile(&answers, 0.5), quantile(&answers, 0.95));
    println!();
    println!(
        "goal: median and p95 of kill -> every server answers <= interval x fall + 50 ms = {} ms: {} (median {:.1} ms, p95 {:.1} ms)",
        goal.as_millis(),
        if median <= goal && p95 <= goal {
            "met"
        } else {
            "MISSED"
        },
        ms(median),
        ms(p95)
    );
    Ok(())
}

fn print_table(samples: &[Sample], o: &Options) {
    let col =
        |f: &dyn Fn(&Sample) -> Duration| -> Vec<Duration> { samples.iter().map(f).collect() };
    let phase = |p: Phase| move |s: &Sample| s.report.phase(p);
    let mut rows: Vec<(&str, Vec<Duration>)> = vec![
        (
            "kill -> every DNS server answers recovery",
            col(&|s| s.answer),
        ),
        ("  kill -> first failed probe", col(&|s| s.first_failure())),
        (
            "  detect (first failure -> site down)",
            col(&phase(Phase::Detect)),
        ),
        ("  decide", col(&phase(Phase::Decide))),
    ];
    if o.replication {
        rows.push(("  fence", col(&|s| s.before_switch(StepName::Fence))));
        rows.push(("  promote", col(&|s| s.before_switch(StepName::Promote))));
        rows.push((
            "  verify integrity",
            col(&|s| s.before_switch(StepName::VerifyIntegrity)),
        ));
    }
    rows.extend([
        ("  switch DNS", col(&phase(Phase::SwitchDns))),
        (
            "  = decision -> DNS switched (runbook)",
            col(&|s| s.to_dns()),
        ),
        (
            "    journal saves in it (before each step)",
            col(&|s| s.saves.1),
        ),
        (
            "    replication backend calls in it",
            col(&|s| s.replication),
        ),
        (
            "  DNS changed -> all servers answer (client)",
            col(&|s| s.answer.saturating_sub(s.applied)),
        ),
        (
            "propagate (driver's check, after the switch)",
            col(&phase(Phase::Propagate)),
        ),
        ("RTO (driver, whole runbook)", col(&|s| s.report.rto)),
    ]);
    if o.replication {
        rows.push((
            "RPO (as reported: lag at the decision)",
            col(&|s| s.report.rpo.unwrap_or_default()),
        ));
    }
    println!(
        "{:<46}{:>10}{:>10}{:>10}{:>10}",
        "milliseconds", "median", "p95", "min", "max"
    );
    let saves: Vec<usize> = samples.iter().map(|s| s.saves.0).collect();
    for (label, v) in rows {
        println!(
            "{label:<46}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
            ms(quantile(&v, 0.5)),
            ms(quantile(&v, 0.95)),
            ms(quantile(&v, 0.0)),
            ms(quantile(&v, 1.0))
        );
    }
    println!(
        "journal saves between the kill and the DNS change: {} per run",
        saves
            .iter()
            .map(|n| n.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" or ")
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank quantile (`q` = 0 gives the minimum, 1 the maximum).
fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// SplitMix64, for the seeds of the observers and the kill's place in the probe cycle.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One run, from a fresh setup to the measured failover.
async fn one_run(o: &Options, run: usize, seed: u64) -> Result<Sample, Error> {
    let dir = match &o.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let (port, primary_web, recovery_web) = start_both_sites().await?;

    // Replication of a small data set, when asked for.
    let mut continuous = None;
    let repl = if o.replication {
        let (p, r) = (dir.path().join("primary"), dir.path().join("recovery"));
        tokio::fs::create_dir_all(&p).await?;
        tokio::fs::create_dir_all(&r).await?;
        let mut image = ImageConfig::two_sites(RESOURCE, ("primary", &p), ("recovery", &r))?;
        image.resources[0].interval = Duration::from_millis(300);
        let repl = ImageReplication::new(image);
        let resource = RESOURCE.parse()?;
        let live = repl
            .paths(&resource, &"primary".parse()?)
            .ok_or("no primary site")?
            .live;
        write_data(&live).await?;
        repl.sync(&resource).await?;
        let r2 = repl.clone();
        continuous = Some(tokio::spawn(
            async move { r2.run_continuous(&resource).await },
        ));
        Some(repl)
    } else {
        None
    };

    // The DNS server on two addresses, and a client for each.
    let dns = EmbeddedServer::start(EmbeddedConfig::new(
        vec![
            SocketAddr::from((PRIMARY, 0)),
            SocketAddr::from((RECOVERY, 0)),
        ],
        &[ZONE.parse()?],
    )?)
    .await?;
    let servers: Vec<SocketAddr> = dns.udp_addrs().to_vec();

    let cfg = ServiceConfig::from_toml(&config_toml(o, port))?;
    let timings = Arc::new(Timings::default());
    let (driver, handle) = Driver::new(
        cfg.clone(),
        Backends {
            dns: Arc::new(TimedDns {
                inner: dns.backend(),
                timings: timings.clone(),
            }),
            replication: repl.clone().map(|inner| {
                Arc::new(TimedReplication {
                    inner,
                    timings: timings.clone(),
                }) as Arc<dyn ReplicationBackend>
            }),
            store: Arc::new(TimedStore {
                inner: FileStore::new(dir.path().join("journal.json")),
                timings: timings.clone(),
            }),
        },
        DriverOptions {
            replication_poll: o.replication.then_some(Duration::from_millis(250)),
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
        let options =
            SchedulerOptions::new(observer.parse()?).seed(splitmix(seed ^ (i as u64 + 1)));
        schedulers.push(Scheduler::spawn(options, sink, probes_for_service(&cfg)?));
    }

    // Steady: both sites up, the home site published, both servers answering it.
    wait_until(&handle, "both sites up and the home site published", |v| {
        v.runbook.is_none()
            && v.epoch.get() >= 1
            && v.sites.iter().all(|s| s.health == Health::Up)
            && (!o.replication || v.sites.iter().all(|s| s.lag.is_some()))
    })
    .await?;
    let name = Name::from_ascii(format!("{NAME}."))?;
    for s in &servers {
        let a = ask(&UdpSocket::bind((PRIMARY, 0))?, *s, &name, 1)?;
        if a != Some(IpAddr::V4(PRIMARY)) {
            return Err(
                format!("server {s} answers {a:?} before the kill, not the primary").into(),
            );
        }
    }
    // Kill at a random point of the probe cycle.
    let offset = o
        .interval
        .mul_f64((splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64);
    tokio::time::sleep(offset).await;

    let mut events = handle.subscribe();
    let (killed, killed_wall) = (Instant::now(), SystemTime::now());
    primary_web.kill().await;
    let poll = o.poll;
    let (name2, servers2) = (name.clone(), servers.clone());
    let poller =
        tokio::task::spawn_blocking(move || poll_until_recovery(&servers2, &name2, killed, poll));
    let (received, report) = follow(&mut events, killed).await?;
    // The decision's own time stamp (the driver's wall clock); the event arrives a little
    // later, after the journal save that precedes the first step.
    let decision = report
        .decided_at
        .duration_since(killed_wall)
        .unwrap_or(received);
    let per_server = poller.await??;
    let answer = per_server.iter().max().copied().unwrap_or_default();
    let applied = timings
        .applied(killed)
        .ok_or("the DNS backend applied no change after the kill")?;
    let window = (killed, applied);
    let saves = timings.within(&timings.saves, window);
    let replication = timings.within(&timings.replication, window).1;
    let applied = applied.saturating_duration_since(killed);
    if o.verbose && run == 0 {
        println!(
            "first run: servers {}; runbook steps: {}",
            servers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            report
                .steps
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Tear down.
    for (h, task) in schedulers {
        h.shutdown();
        let _ = task.await;
    }
    handle.shutdown();
    driver_task.await??;
    if let Some(c) = continuous {
        c.abort();
    }
    recovery_web.kill().await;
    dns.shutdown();
    Ok(Sample {
        answer,
        per_server,
        decision,
        applied,
        report,
        saves,
        replication,
    })
}

/// Follows the driver's events after the kill: when the decision arrived, and the failover's
/// report.
async fn follow(
    rx: &mut broadcast::Receiver<Event>,
    killed: Instant,
) -> Result<(Duration, SwitchReport), Error> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut decision = None;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err(format!("no failover within {LIMIT:?}").into()),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err("the driver stopped".into());
            }
            Ok(Ok(Event::Decision {
                kind: RunbookKind::Failover,
                ..
            })) => {
                decision.get_or_insert(killed.elapsed());
            }
            Ok(Ok(Event::Finished(r))) if r.kind == RunbookKind::Failover => {
                return Ok((decision.unwrap_or_default(), r));
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Asks every server for the name every `poll` until each answers the recovery site; returns,
/// per server, the time from the kill to its first such answer.
fn poll_until_recovery(
    servers: &[SocketAddr],
    name: &Name,
    killed: Instant,
    poll: Duration,
) -> Result<Vec<Duration>, String> {
    let socket = UdpSocket::bind((PRIMARY, 0)).map_err(|e| e.to_string())?;
    let mut done: Vec<Option<Duration>> = vec![None; servers.len()];
    let mut id: u16 = 1;
    while done.iter().any(Option::is_none) {
        for (i, s) in servers.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            id = id.wrapping_add(1);
            if let Ok(Some(IpAddr::V4(a))) = ask(&socket, *s, name, id)
                && a == RECOVERY
            {
                done[i] = Some(killed.elapsed());
            }
        }
        if killed.elapsed() > LIMIT {
            return Err(format!(
                "not every server answered {RECOVERY} within {LIMIT:?}"
            ));
        }
        std::thread::sleep(poll);
    }
    Ok(done.into_iter().flatten().collect())
}

/// One A query over UDP, no cache, no retry: the first address answered, if any.
fn ask(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &Name,
    id: u16,
) -> Result<Option<IpAddr>, Error> {
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(name.clone(), RecordType::A));
    socket.send_to(&q.to_vec()?, server)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        if from != server {
            continue;
        }
        let m = Message::from_vec(&buf[..n])?;
        if m.metadata.id != id {
            continue; // a late answer to an earlier query
        }
        return Ok(m.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        }));
    }
}

fn config_toml(o: &Options, port: u16) -> String {
    let interval = o.interval.as_millis();
    let site = |id: &str, priority: u32, addr: Ipv4Addr| {
        format!(
            r#"
[[sites]]
id = "{id}"
priority = {priority}
addresses = ["{addr}"]
[[sites.probes]]
id = "http"
interval = "{interval}ms"
timeout = "{interval}ms"
rise = 2
fall = {fall}
check = {{ kind = "http", url = "http://{NAME}:{port}/health", expect = "OK" }}
"#,
            fall = o.fall
        )
    };
    format!(
        r#"
name = "{NAME}"
zone = "{ZONE}"
ttl = "1s"
{resources}

[observers]
ids = ["east", "west"]

[policy]
min_dwell = "2s"
rpo_budget = "5s"
{}{}"#,
        site("primary", 1, PRIMARY),
        site("recovery", 2, RECOVERY),
        resources = if o.replication {
            format!("resources = [\"{RESOURCE}\"]")
        } else {
            String::new()
        }
    )
}

async fn write_data(live: &Path) -> Result<(), Error> {
    tokio::fs::create_dir_all(live).await?;
    tokio::fs::write(
        live.join("orders.txt"),
        "order 1: 3 widgets\norder 2: 1 gadget\n",
    )
    .await?;
    tokio::fs::write(live.join("customers.csv"), "id,name\n1,Ada\n2,Grace\n").await?;
    Ok(())
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Timing wrappers: where the runbook's time goes
// ------------------------------------------------------------------------------------------

/// When each journal save and each replication call started, and how long it took.
#[derive(Debug, Default)]
struct Timings {
    saves: Mutex<Vec<(Instant, Duration)>>,
    replication: Mutex<Vec<(Instant, Duration)>>,
    /// When each DNS change returned.
    dns: Mutex<Vec<Instant>>,
}

impl Timings {
    fn record(list: &Mutex<Vec<(Instant, Duration)>>, started: Instant) {
        list.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((started, started.elapsed()));
    }

    /// When the first DNS change after `since` returned.
    fn applied(&self, since: Instant) -> Option<Instant> {
        let dns = self.dns.lock().unwrap_or_else(|e| e.into_inner());
        dns.iter().copied().filter(|t| *t >= since).min()
    }

    /// How many entries of `list` started within `window`, and their total time.
    fn within(
        &self,
        list: &Mutex<Vec<(Instant, Duration)>>,
        (from, to): (Instant, Instant),
    ) -> (usize, Duration) {
        let list = list.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<Duration> = list
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, d)| *d)
            .collect();
        (hits.len(), hits.iter().sum())
    }
}

/// The crash-safe file store, timed.
#[derive(Debug)]
struct TimedStore {
    inner: FileStore,
    timings: Arc<Timings>,
}

#[async_trait]
impl StateStore for TimedStore {
    async fn load(&self) -> Result<Option<Stored>, BackendError> {
        self.inner.load().await
    }

    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError> {
        let started = Instant::now();
        let r = self.inner.save(journal, expected).await;
        Timings::record(&self.timings.saves, started);
        r
    }
}

/// The embedded server's backend, noting when each change returned.
#[derive(Debug)]
struct TimedDns {
    inner: idns_dns::embedded::EmbeddedBackend,
    timings: Arc<Timings>,
}

#[async_trait]
impl DnsBackend for TimedDns {
    fn capabilities(&self) -> DnsCapabilities {
        self.inner.capabilities()
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.inner.read(zone, name).await
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        let r = self.inner.apply(change).await;
        self.timings
            .dns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Instant::now());
        r
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        self.inner.verify(change, timeout).await
    }
}

/// The image replication backend, timed.
#[derive(Debug)]
struct TimedReplication {
    inner: ImageReplication,
    timings: Arc<Timings>,
}

impl TimedReplication {
    async fn timed<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let r = f.await;
        Timings::record(&self.timings.replication, started);
        r
    }
}

#[async_trait]
impl ReplicationBackend for TimedReplication {
    async fn status(&self, resource: &ResourceId) -> Result<ReplicationStatus, BackendError> {
        // Polled in the background, not a step: not timed.
        self.inner.status(resource).await
    }

    async fn fence(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.timed(self.inner.fence(resource, site, ctx)).await
    }

    async fn promote(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        ctx: &OpContext,
    ) -> Result<Promoted, BackendError> {
        self.timed(self.inner.promote(resource, site, ctx)).await
    }

    async fn reprotect(
        &self,
        resource: &ResourceId,
        primary: &SiteId,
        wait: bool,
        ctx: &OpContext,
    ) -> Result<(), BackendError> {
        self.timed(self.inner.reprotect(resource, primary, wait, ctx))
            .await
    }

    async fn integrity(
        &self,
        resource: &ResourceId,
        site: &SiteId,
        request: &IntegrityRequest,
        ctx: &OpContext,
    ) -> Result<IntegrityReport, BackendError> {
        self.timed(self.inner.integrity(resource, site, request, ctx))
            .await
    }
}

// ------------------------------------------------------------------------------------------
// The web sites, which can be killed
// ------------------------------------------------------------------------------------------

/// A running web site.
struct Site {
    kill: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Site {
    /// Closes the listener and every connection, and waits until they are closed: from then
    /// on a connection is refused at once.
    async fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts both web sites on one port of their two addresses; tries other ports when the
/// second address has the first's taken.
async fn start_both_sites() -> Result<(u16, Site, Site), Error> {
    let mut last = None;
    for _ in 0..10 {
        let port = TcpListener::bind((PRIMARY, 0)).await?.local_addr()?.port();
        let p = start_web("primary", SocketAddr::from((PRIMARY, port))).await;
        let r = start_web("recovery", SocketAddr::from((RECOVERY, port))).await;
        match (p, r) {
            (Ok(p), Ok(r)) => return Ok((port, p, r)),
            (p, r) => last = p.err().or(r.err()),
        }
    }
    Err(last.unwrap_or_else(|| "no free port on both loopback addresses".into()))
}

/// A tiny web site: `/health` answers `OK <site>`.
async fn start_web(site: &'static str, addr: SocketAddr) -> Result<Site, Error> {
    let listener = TcpListener::bind(addr).await?;
    let (kill, mut killed) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut killed => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        conns.spawn(serve(stream, site));
                    }
                }
            }
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    });
    Ok(Site {
        kill: Some(kill),
        task,
    })
}

async fn serve(mut stream: TcpStream, site: &str) {
    let mut buf = [0u8; 2048];
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
