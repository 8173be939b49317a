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

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::builder::RangedU64ValueParser;
use clap::{ArgAction, Parser};
use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use idns_core::runtime::{Controller, FileStore};
use idns_core::{Health, Phase, RunbookKind, ServiceConfig, StepName, SwitchReport};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
use idns_examples::loopback::{Error, ImagePair, PRIMARY, RECOVERY, ServiceToml, Sites};
use idns_examples::watched::{Call, Returned, Watched, Watcher};
use idns_probe::{Scheduler, SchedulerOptions, probes_for_service};

const NAME: &str = "www.bench.test";
const ZONE: &str = "bench.test";
/// The longest one stage of a run may take.
const LIMIT: Duration = Duration::from_secs(20);

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
            "RPO (measured at the promotion)",
            col(&|s| s.report.rpo.unwrap_or_default()),
        ));
        rows.push((
            "  lag at the decision",
            col(&|s| s.report.rpo_at_decision.unwrap_or_default()),
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
    let sites = Sites::start(None).await?;

    // The DNS server on two addresses: two authoritative endpoints, one zone state.
    let listen = vec![
        SocketAddr::from((PRIMARY, 0)),
        SocketAddr::from((RECOVERY, 0)),
    ];
    let dns = EmbeddedServer::start(EmbeddedConfig::new(listen, &[ZONE.parse()?])?).await?;
    let servers: Vec<SocketAddr> = dns.udp_addrs().to_vec();

    // The controller, every backend timed; replication of a small data set when asked for.
    let mut toml = ServiceToml::new(NAME, ZONE, sites.port);
    (toml.interval, toml.timeout, toml.fall) = (o.interval, o.interval, o.fall);
    let timings = Arc::new(Timings::default());
    let journal = FileStore::new(dir.path().join("journal.json"));
    let mut builder = Controller::builder(ServiceConfig::from_toml(&{
        toml.resource = o.replication.then(|| "app-data".to_owned());
        toml.render()
    })?)
    .dns(Watched::new(dns.backend(), timings.clone()))
    .store(Watched::new(journal, timings.clone()));
    if o.replication {
        let data = ImagePair::new(dir.path(), "app-data", Duration::from_millis(300)).await?;
        tokio::fs::write(data.primary_live.join("orders.txt"), "order 1: 3 widgets\n").await?;
        tokio::fs::write(data.primary_live.join("customers.csv"), "id,name\n1,Ada\n").await?;
        data.sync().await?;
        builder = builder
            .replication(Watched::new(data.replication, timings.clone()))
            .replication_poll(Duration::from_millis(250));
    }
    let controller = builder.start().await?;
    let mut schedulers = Vec::new();
    for (i, observer) in ["east", "west"].into_iter().enumerate() {
        let options =
            SchedulerOptions::new(observer.parse()?).seed(splitmix(seed ^ (i as u64 + 1)));
        let probes = probes_for_service(controller.config())?;
        schedulers.push(Scheduler::spawn(options, controller.clone(), probes));
    }

    // Steady: both sites up, the home site published, both servers answering it.
    let steady = controller.wait_for(|v| {
        v.runbook.is_none()
            && v.epoch.get() >= 1
            && v.sites.iter().all(|s| s.health == Health::Up)
            && (!o.replication || v.sites.iter().all(|s| s.lag.is_some()))
    });
    tokio::time::timeout(LIMIT, steady)
        .await
        .map_err(|_| format!("not steady within {LIMIT:?}: {:?}", controller.view()))??;
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

    let (killed, killed_wall) = (Instant::now(), SystemTime::now());
    sites.primary.kill().await;
    let poll = o.poll;
    let (name2, servers2) = (name.clone(), servers.clone());
    let poller =
        tokio::task::spawn_blocking(move || poll_until_recovery(&servers2, &name2, killed, poll));
    let failover = controller.wait_for_runbook(|r| r.kind == RunbookKind::Failover);
    let report = tokio::time::timeout(LIMIT, failover)
        .await
        .map_err(|_| format!("no failover within {LIMIT:?}"))??;
    // The decision's own time stamp, on the controller's wall clock.
    let decision = report
        .decided_at
        .duration_since(killed_wall)
        .unwrap_or_default();
    let per_server = poller.await??;
    let answer = per_server.iter().max().copied().unwrap_or_default();
    let applied = timings
        .applied(killed)
        .ok_or("the DNS backend applied no change after the kill")?;
    let window = (killed, applied);
    let saves = Timings::within(&timings.saves, window);
    let replication = Timings::within(&timings.replication, window).1;
    let applied = applied.saturating_duration_since(killed);
    if o.verbose && run == 0 {
        let steps: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
        println!(
            "first run: servers {servers:?}; runbook steps: {}",
            steps.join(", ")
        );
    }

    // Tear down: the probes, then the controller (which stops replication).
    for (h, task) in schedulers {
        h.shutdown();
        let _ = task.await;
    }
    controller.shutdown();
    controller.stopped().await?;
    sites.recovery.kill().await;
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

// ------------------------------------------------------------------------------------------
// Where the runbook's time goes
// ------------------------------------------------------------------------------------------

/// When each journal save and each replication call started, and how long it took; when each
/// DNS change returned. Told by the [`Watched`] backends.
#[derive(Debug, Default)]
struct Timings {
    saves: Mutex<Vec<(Instant, Duration)>>,
    replication: Mutex<Vec<(Instant, Duration)>>,
    dns: Mutex<Vec<Instant>>,
}

impl Watcher for Timings {
    fn after(&self, call: Call<'_>, started: Instant, took: Duration, _: Returned<'_>) {
        let lock = |m: &Mutex<Vec<(Instant, Duration)>>| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((started, took));
        };
        match call {
            Call::Save => lock(&self.saves),
            Call::Apply(_) => {
                let mut dns = self.dns.lock().unwrap_or_else(|e| e.into_inner());
                dns.push(started + took);
            }
            _ => lock(&self.replication),
        }
    }
}

impl Timings {
    /// When the first DNS change after `since` returned.
    fn applied(&self, since: Instant) -> Option<Instant> {
        let dns = self.dns.lock().unwrap_or_else(|e| e.into_inner());
        dns.iter().copied().filter(|t| *t >= since).min()
    }

    /// How many entries of `list` started within `window`, and their total time.
    fn within(
        list: &Mutex<Vec<(Instant, Duration)>>,
        (from, to): (Instant, Instant),
    ) -> (usize, Duration) {
        let list = list.lock().unwrap_or_else(|e| e.into_inner());
        let hits = list.iter().filter(|(t, _)| *t >= from && *t <= to);
        hits.fold((0, Duration::ZERO), |(n, sum), (_, d)| (n + 1, sum + *d))
    }
}
