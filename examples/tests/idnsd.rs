//! `idnsd` and `idnsctl` as a user runs them: the real binaries, a generated configuration on
//! loopback (embedded DNS on a high port, two small web sites on 127.0.0.1 and 127.0.0.2,
//! image or command-hook replication in a temporary directory), driven through the harness in
//! `common` (the same as the tests on BIND and PostgreSQL).
//!
//! Waits have generous deadlines so that a broken daemon fails the test instead of hanging
//! it; nothing asserts on how long anything took.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{NAME, READ_TOKEN, Setup, command_replication, image_replication};
use common::{Idnsd, LIMIT, PRIMARY, RECOVERY, TOKEN, free_port, resolve, resolver, text};
use idns_examples::daemon::wire::{EventsPage, ServiceList, ServiceStatus};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------------

/// The address hostile clients connect from.
const HOSTILE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 3);

/// A connection to `to` from `from`, with a receive buffer of `recv_buffer` bytes if given.
async fn connect_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
    recv_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(to).await.unwrap()
}

/// Every `idns_*` metric named by `examples/monitoring/` (alert rules, their unit tests'
/// series aside, and the Grafana dashboard's queries) is a family in `metrics` (a histogram's
/// `_bucket`, `_sum` and `_count` count as the histogram).
fn assert_monitoring_kit_names_exported_metrics(metrics: &str) {
    let families: Vec<(&str, &str)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    // Exported only where a backend measures it (PostgreSQL gives bytes, the image backend
    // does not); the metrics module's table must still list it.
    let documented = include_str!("../src/daemon/metrics.rs");
    let measured_by_some_backends = |name: &str| {
        name == "idns_replication_lag_bytes" && documented.contains(&format!("| `{name}` |"))
    };
    let exported = |name: &str| {
        measured_by_some_backends(name)
            || families.iter().any(|(n, _)| *n == name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| families.contains(&(base, "histogram")))
            })
    };
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    let rules = std::fs::read_to_string(kit.join("idns-alerts.yml")).unwrap();
    let exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:#?}");
    assert!(
        exprs.iter().all(|e| !e.is_empty() && e != "|" && e != ">"),
        "every rule's expr on its line: {exprs:#?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kit.join("idns-dashboard.json")).unwrap())
            .unwrap();
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{queries:#?}");
    let mut named = 0;
    for q in exprs.iter().chain(&queries) {
        for name in metric_names(q) {
            named += 1;
            assert!(
                exported(&name),
                "{name} (in `{q}`) is not exported by idnsd:\n{metrics}"
            );
        }
    }
    assert!(named >= 30, "only {named} metric names found");
}

/// The `expr` and `definition` strings anywhere in a dashboard.
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The `idns_…` identifiers in a PromQL query.
fn metric_names(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = q.as_bytes();
    let mut i = 0;
    while let Some(at) = q[i..].find("idns_") {
        let start = i + at;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if start > 0 && ident(bytes[start - 1]) {
            i = start + 5;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        out.push(q[start..end].to_owned());
        i = end;
    }
    out
}

/// The named pipe `<hooks>/promotes`, read as the promote hooks write their lines to it.
struct Promotes {
    pipe: tokio::net::unix::pipe::Receiver,
    lines: String,
}

impl Promotes {
    /// Makes the pipe in `hooks` and opens it (for reading and writing, so that it never
    /// reads as closed and a hook's write never waits for a reader).
    fn open(hooks: &Path) -> Promotes {
        let path = hooks.join("promotes");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let pipe = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .unwrap();
        Promotes {
            pipe,
            lines: String::new(),
        }
    }

    /// Waits until `n` promotes have started in all; returns their lines.
    async fn wait(&mut self, n: usize, log: impl Fn() -> String) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut buf = [0u8; 512];
        while self.lines.lines().count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(read) = tokio::time::timeout(left, self.pipe.read(&mut buf)).await else {
                panic!(
                    "{} of {n} promotes started; log:\n{}",
                    self.lines.lines().count(),
                    log()
                );
            };
            self.lines.push_str(&text(&buf[..read.unwrap()]));
        }
        self.lines.lines().map(str::to_owned).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The whole life of a daemon: status through the API and idnsctl, refused tokens and
/// commands, a drill with its report, a failover followed with `idnsctl --wait`, the name
/// answering the recovery site, metrics, SIGTERM with the journal saved, and a restart that
/// picks up where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsd_runs_a_service_fails_it_over_and_stops_cleanly() {
    let setup = Setup::new().await;
    let dir = setup.dir();
    let (api, dns) = (setup.api, setup.dns);
    // The application's data at the primary; the recovery site's (empty) volume.
    std::fs::create_dir_all(dir.join("primary/live")).unwrap();
    std::fs::create_dir_all(dir.join("recovery")).unwrap();
    std::fs::write(dir.join("primary/live/orders.txt"), "order 1\n").unwrap();

    // Both sites up, the home site published at epoch 1, replication known.
    let (mut d, s) = setup
        .steady(&image_replication(dir), "rpo_budget = \"30s\"", "")
        .await;
    assert_eq!(s.active, "primary");
    assert_eq!(s.phase, "steady");
    assert!(s.running);
    let probes = &s.sites[0].probes;
    assert!(
        probes.iter().any(|p| p.observer == "east") && probes.iter().any(|p| p.observer == "west"),
        "{probes:#?}"
    );
    assert!(probes.iter().all(|p| p.status == "up" && p.checks > 0));
    assert!(
        s.replication
            .iter()
            .any(|r| r.resource == "app-data" && r.site == "primary" && r.role == "primary"),
        "{:#?}",
        s.replication
    );
    let r = resolver(dns);
    assert_eq!(resolve(&r, NAME).await, Some(IpAddr::V4(PRIMARY)));

    // The list, through the API and idnsctl.
    let (code, body) = d.get("/v1/services").await;
    assert_eq!(code, 200);
    let list: ServiceList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.services.len(), 1);
    assert_eq!(list.services[0].name, NAME);
    let out = d.idnsctl(&["status"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains(NAME), "{table}");
    assert!(table.contains("primary* up, recovery up"), "{table}");
    let out = d.idnsctl(&["status", NAME]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PROBE"), "{}", text(&out.stdout));
    let out = d.idnsctl(&["status", NAME, "--json"]).await;
    let json: ServiceStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.active, "primary");

    // Tokens: none, wrong, and through idnsctl.
    let (code, body) = d.get_as("/v1/services", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let (code, _) = d
        .get_as("/v1/services", Some("wrong-token-0123456789abcdef"))
        .await;
    assert_eq!(code, 401);
    let out = d.idnsctl_as(&["status"], Some("not-the-token")).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    // The read-only role reads, and may not command.
    let (code, body) = d.get_as("/v1/services", Some(READ_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let out = d.idnsctl_as(&["status", NAME], Some(READ_TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for command in ["failover", "freeze", "drill"] {
        let out = d.idnsctl_as(&[command, NAME], Some(READ_TOKEN)).await;
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(
                "idnsd refused the command (HTTP 403): this token may only read: commands need \
                 the operator's token (daemon.token)"
            ),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        d.status().await.phase,
        "steady",
        "a read-only token changed something"
    );

    // Unknown service, unknown site, bad body, oversized body.
    let out = d.idnsctl(&["status", "nope.daemon.test"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no service named \"nope.daemon.test\""),
        "{}",
        text(&out.stderr)
    );
    let out = d.idnsctl(&["failover", NAME, "--to", "mars"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"mars\" is not a site of www.daemon.test"),
        "{}",
        text(&out.stderr)
    );
    let (code, body) = d.command("failover", "{\"to\": 3}").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"bad_request\""), "{body}");
    let big = format!("{{\"to\": \"{}\"}}", "x".repeat(64 * 1024));
    let (code, body) = d.command("failover", &big).await;
    assert_eq!(code, 413, "{body}");

    // Hostile clients: one address opening connections that never finish their headers holds
    // at most daemon.max_connections_per_client (16) of them, the rest are closed at once, and
    // neither they nor garbage stop others from being served.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = connect_from(HOSTILE, api, None).await;
        c.write_all(b"GET /v1/serv").await.unwrap();
        idle.push(c);
    }
    for (i, c) in idle.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let wait = if i < 16 { 300 } else { 5000 };
        let read = tokio::time::timeout(Duration::from_millis(wait), c.read(&mut buf)).await;
        match read {
            Err(_) => assert!(i < 16, "connection {i} from one client was left open"),
            Ok(Ok(0) | Err(_)) => assert!(i >= 16, "connection {i} was closed under the limit"),
            Ok(Ok(n)) => panic!("connection {i} answered: {}", text(&buf[..n])),
        }
    }
    let mut junk = TcpStream::connect(api).unwrap();
    junk.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = junk.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || text(&answer).starts_with("HTTP/1.1 400"),
        "{}",
        text(&answer)
    );
    let (code, _) = d.get("/v1/services").await;
    assert_eq!(code, 200);
    drop(idle);

    // A refused command carries the election's reason.
    let out = d.idnsctl(&["failback", NAME]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // A drill, followed to its end; its report is served and written to the journal directory.
    let drill = d.idnsctl_ok(&["drill", NAME, "--wait"]).await;
    assert!(drill.contains("drill on recovery"), "{drill}");
    assert!(drill.contains("completed: RTO"), "{drill}");
    let (code, body) = d.get(&format!("/v1/services/{NAME}/report")).await;
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["kind"], "drill");
    assert_eq!(report["outcome"], "completed");
    let runbook = report["runbook"].as_u64().unwrap();
    let (code, md) = d
        .get(&format!("/v1/services/{NAME}/report?format=md"))
        .await;
    assert_eq!(code, 200, "{md}");
    assert!(md.contains("drill.www.daemon.test"), "{md}");
    assert!(md.contains("production untouched"), "{md}");
    let (code, page) = d
        .get(&format!("/v1/services/{NAME}/report?format=html"))
        .await;
    assert_eq!(code, 200);
    assert!(page.contains("<svg"), "{page}");
    let (code, _) = d
        .get(&format!("/v1/services/{NAME}/report?format=pdf"))
        .await;
    assert_eq!(code, 400);
    for ext in ["json", "md", "html"] {
        let f = dir.join(format!("journal/reports/{NAME}-drill-{runbook}.{ext}"));
        assert!(f.is_file(), "{} was not written", f.display());
    }
    let written_md =
        std::fs::read_to_string(dir.join(format!("journal/reports/{NAME}-drill-{runbook}.md")))
            .unwrap();
    assert_eq!(written_md.lines().next(), md.lines().next());
    // Production was not touched.
    let s = d.status().await;
    assert_eq!((s.active.as_str(), s.epoch), ("primary", 1));
    assert_eq!(resolve(&r, NAME).await, Some(IpAddr::V4(PRIMARY)));

    // A failover, followed step by step.
    let shown = d
        .idnsctl_ok(&["failover", NAME, "--to", "recovery", "--wait"])
        .await;
    assert!(shown.contains("accepted: failover to recovery"), "{shown}");
    assert!(
        shown.contains("started  promote app-data at recovery"),
        "{shown}"
    );
    assert!(
        shown.contains("done     promote app-data at recovery"),
        "{shown}"
    );
    assert!(
        shown.contains("done     point www.daemon.test at 127.0.0.2 (epoch 2)"),
        "{shown}"
    );
    assert!(
        shown.contains("failover primary -> recovery completed: RTO"),
        "{shown}"
    );
    assert_eq!(resolve(&r, NAME).await, Some(IpAddr::V4(RECOVERY)));
    let s = d.status().await;
    assert_eq!((s.active.as_str(), s.epoch, s.switches), ("recovery", 2, 1));
    let last = s.last_switch.expect("a last switch");
    assert_eq!(
        (last.kind.as_str(), last.outcome.as_str()),
        ("failover", "completed")
    );
    assert!(last.rto_seconds > 0.0);
    // The RPO measured at the promotion and the lag at the decision are both in the status.
    assert!(
        last.rpo_seconds.is_some() && last.rpo_at_decision_seconds.is_some(),
        "{last:?}"
    );
    assert!(last.phases.iter().any(|p| p.phase == "promote"));
    let decision = s.decision.expect("a decision");
    assert_eq!(decision.epoch, 2);
    assert!(!decision.reasons.is_empty());

    // The same again is refused: the election says why.
    let out = d.idnsctl(&["failover", NAME, "--to", "recovery"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // The events, as a long-poll client sees them.
    let (code, body) = d
        .get(&format!("/v1/services/{NAME}/events?after=0&limit=5000"))
        .await;
    assert_eq!(code, 200);
    let page: EventsPage = serde_json::from_str(&body).unwrap();
    assert!(
        page.events.iter().any(|e| e
            .text
            .starts_with("decision: failover primary -> recovery at epoch 2")),
        "{body}"
    );

    // Metrics need a token (either role) unless daemon.metrics_public is set.
    let (code, body) = d.get_as("/metrics", None).await;
    assert_eq!(code, 401, "{body}");
    let (code, metrics) = d.get_as("/metrics", Some(READ_TOKEN)).await;
    assert_eq!(code, 200);
    for line in [
        format!("idns_service_epoch{{service=\"{NAME}\"}} 2"),
        format!("idns_service_active_site{{service=\"{NAME}\",site=\"recovery\"}} 1"),
        format!("idns_site_up{{service=\"{NAME}\",site=\"primary\"}} 1"),
        format!("idns_site_up{{service=\"{NAME}\",site=\"recovery\"}} 1"),
        format!("idns_failovers_total{{service=\"{NAME}\"}} 1"),
        format!("idns_drills_total{{service=\"{NAME}\"}} 1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
    for prefix in [
        format!("idns_last_rto_seconds{{service=\"{NAME}\",kind=\"failover\"}} "),
        format!("idns_last_rpo_seconds{{service=\"{NAME}\",kind=\"failover\"}} "),
        format!("idns_last_rpo_at_decision_seconds{{service=\"{NAME}\",kind=\"failover\"}} "),
        format!(
            "idns_last_phase_seconds{{service=\"{NAME}\",kind=\"failover\",phase=\"switch_dns\"}} "
        ),
        format!(
            "idns_replication_lag_seconds{{service=\"{NAME}\",resource=\"app-data\",site=\"recovery\"}} "
        ),
        format!(
            "idns_probe_latency_seconds_count{{service=\"{NAME}\",site=\"primary\",probe=\"web\",observer=\"east\"}} "
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&prefix)),
            "{prefix} missing from:\n{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE idns_probe_latency_seconds histogram"));
    // The monitoring kit's alert rules and dashboard name only metrics the daemon exports.
    assert_monitoring_kit_names_exported_metrics(&metrics);
    let mut series: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let all = series.len();
    series.sort_unstable();
    series.dedup();
    assert_eq!(series.len(), all, "a series is written twice:\n{metrics}");

    // Freeze and unfreeze: automatic decisions stop and resume, and say so.
    let out = d.idnsctl(&["freeze", NAME]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.status().await.frozen);
    let (_, metrics) = d.get_as("/metrics", Some(READ_TOKEN)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("idns_service_frozen{{service=\"{NAME}\"}} 1")),
        "{metrics}"
    );
    let out = d.idnsctl(&["status"]).await;
    assert!(
        text(&out.stdout).contains("steady (frozen)"),
        "{}",
        text(&out.stdout)
    );
    let out = d.idnsctl(&["unfreeze", NAME]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!d.status().await.frozen);

    // SIGTERM: a graceful stop with the journal saved.
    d.signal(Signal::SIGTERM);
    let status = d.wait();
    assert_eq!(status.code(), Some(0), "log:\n{}", d.logs());
    assert!(d.logs().contains("journals saved"), "{}", d.logs());
    let j = setup.journal();
    assert_eq!(j["active"], "recovery");
    assert_eq!(j["epoch"], 2);
    assert!(j["runbook"].is_null(), "{j:#}");
    assert!(
        TcpStream::connect_timeout(&api, Duration::from_secs(1)).is_err(),
        "the API still listens after exit"
    );

    // Started again, it resumes from the journal: same site, same epoch, no new switch, and
    // the embedded DNS server answers what it answered before.
    let mut d = Idnsd::started(&setup.cfg(), api, NAME).await;
    let s = d
        .wait_status("the restarted daemon sees both sites", |s| {
            s.sites.iter().all(|x| x.health == "up")
        })
        .await;
    assert_eq!((s.active.as_str(), s.epoch, s.switches), ("recovery", 2, 1));
    assert!(s.runbook.is_none());
    assert_eq!(resolve(&r, NAME).await, Some(IpAddr::V4(RECOVERY)));
    d.signal(Signal::SIGINT);
    assert_eq!(d.wait().code(), Some(0), "log:\n{}", d.logs());
}

/// SIGKILL in the middle of a runbook (a promote hook that waits), then a restart: the
/// runbook resumes at the step that had not finished, the epoch went up exactly once, and the
/// DNS is switched once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsd_killed_mid_runbook_resumes_it_after_a_restart() {
    let setup = Setup::new().await;
    // The hook logs each operation; promote waits until the test releases it.
    let (hooks, replication) = command_replication(
        setup.dir(),
        r#"while [ ! -e "$HOOK_DIR/release" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
    echo '{}'"#,
    );
    /// Lets every waiting hook finish, whatever happens to the test.
    struct Release(PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, "");
        }
    }
    let release = Release(hooks.join("release"));
    let runbook = r#"
[services.runbook]
failover = [
    { step = "fence" },
    { step = "promote", timeout = "120s" },
    { step = "switch_dns" },
    { step = "verify_dns" },
]
"#;
    let log = hooks.join("hook.log");
    let mut promotes = Promotes::open(&hooks);
    let (mut d, _) = setup.steady(&replication, "", runbook).await;

    let (code, body) = d.command("failover", r#"{"to": "recovery"}"#).await;
    assert_eq!(code, 202, "{body}");
    promotes.wait(1, || d.logs()).await;
    let s = d.status().await;
    let rb = s.runbook.expect("the failover runs");
    assert_eq!(rb.steps[0].status, "done", "{rb:#?}");
    assert_eq!(rb.steps[1].status, "running", "{rb:#?}");

    // Killed while the promote hook waits.
    d.signal(Signal::SIGKILL);
    let status = d.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let j = setup.journal();
    assert_eq!(j["epoch"], 2, "{j:#}");
    assert_eq!(j["runbook"]["kind"], "failover", "{j:#}");
    assert_eq!(j["runbook"]["done"].as_array().unwrap().len(), 1, "{j:#}");

    // Restarted: the promote runs again at the same epoch, nothing before it does.
    let mut d = Idnsd::started(&setup.cfg(), setup.api, NAME).await;
    let started = promotes.wait(2, || d.logs()).await;
    assert_eq!(
        started,
        ["promote recovery epoch=2", "promote recovery epoch=2"]
    );
    let s = d.status().await;
    assert_eq!(s.epoch, 2);
    assert_eq!(s.phase, "failover");
    drop(release);

    let s = d
        .wait_status("the resumed failover to finish", |s| {
            s.runbook.is_none() && s.active == "recovery"
        })
        .await;
    assert_eq!((s.epoch, s.switches), (2, 1));
    assert_eq!(s.last_switch.as_ref().map(|r| r.epoch), Some(2));
    assert_eq!(
        s.last_switch.as_ref().map(|r| r.outcome.as_str()),
        Some("completed")
    );
    let hook_log = std::fs::read_to_string(&log).unwrap();
    let promoted: Vec<&str> = hook_log
        .lines()
        .filter(|l| l.starts_with("promote"))
        .collect();
    assert_eq!(
        promoted,
        ["promote recovery epoch=2", "promote recovery epoch=2"],
        "{hook_log}"
    );
    let fences: Vec<&str> = hook_log
        .lines()
        .filter(|l| l.starts_with("fence"))
        .collect();
    assert_eq!(fences, vec!["fence primary epoch=2"], "{hook_log}");
    assert_eq!(
        resolve(&resolver(setup.dns), NAME).await,
        Some(IpAddr::V4(RECOVERY))
    );
    let j = setup.journal();
    assert_eq!(
        (j["epoch"].as_u64(), j["switches"].as_u64()),
        (Some(2), Some(1))
    );

    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait().code(), Some(0), "log:\n{}", d.logs());
}

/// A file with wrong types, unknown keys and a service without sites: every problem is
/// listed by its field path, the exit code is 2, and nothing was started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsd_refuses_a_bad_config_listing_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let api = free_port();
    let dns = free_port();
    let bad = format!(
        r#"
[daemon]
listen = "127.0.0.1:{api}"
token = "short"
journal_dir = "{dir}/journal"
bogus = 1

[[services]]
name = "www.bad.test"
zone = "bad.test"
ttl = 5
colour = "blue"
dns = {{ backend = "embedded", listen = ["127.0.0.1:{dns}"], typo = true }}
replication = {{ backend = "image", resources = [{{ id = "data", home = "primary", sites = [{{ site = "primary", root = "a" }}, {{ site = "elsewhere", root = "b" }}] }}] }}
resources = ["data"]

[[services.sites]]
id = "primary"
priority = "one"
addresses = ["127.0.0.1"]
[[services.sites.probes]]
id = "http"
interval = "soon"
check = {{ kind = "http", url = "http://www.bad.test/" }}

[[services.sites]]
id = "recovery"
priority = 2
addresses = ["127.0.0.2"]
[[services.sites.probes]]
id = "http"
fall = "three"
check = {{ kind = "http", url = "http://www.bad.test/" }}

[[services]]
name = "www.nosites.test"
zone = "nosites.test"
dns = {{ backend = "carrier-pigeon" }}
"#,
        dir = dir.display()
    );
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, &bad).unwrap();
    let expected = [
        "daemon.bogus: unknown key",
        "daemon.token: the token must be at least 16 characters",
        "services[0].ttl: invalid type",
        "services[0].colour: unknown key",
        "services[0].dns.typo: unknown key",
        "services[0].sites[0].priority: invalid type",
        "services[0].sites[0].probes[0].interval:",
        "services[0].sites[1].probes[0].fall: invalid type",
        "services[0].replication.resources[0].sites[1] = elsewhere: is not a site",
        "services[1].sites: is missing",
        "services[1].dns.backend = carrier-pigeon: is not a DNS backend",
    ];
    for mode in ["--config", "--check"] {
        let out = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || {
                Command::new(env!("CARGO_BIN_EXE_idnsd"))
                    .arg(mode)
                    .arg(&cfg)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode}: {err}");
        for e in expected {
            assert!(err.contains(e), "{mode}: {e:?} missing from:\n{err}");
        }
        assert!(err.contains("(line "), "{err}");
        assert!(!err.contains("short\""), "the token was shown: {err}");
        // Nothing was started.
        assert!(
            TcpStream::connect_timeout(&SocketAddr::from((PRIMARY, api)), Duration::from_secs(1))
                .is_err()
        );
        assert!(!dir.join("journal").exists());
    }
}

/// A client that stops reading cannot hold a connection: a response that makes no progress
/// for 10 s is dropped, and its slot under the per-client limit is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsd_drops_a_client_that_stops_reading() {
    let setup = Setup::new().await;
    std::fs::create_dir_all(setup.dir().join("primary/live")).unwrap();
    std::fs::create_dir_all(setup.dir().join("recovery")).unwrap();
    // One connection per client address: every request below comes from an address of its own,
    // so that only the stalled one can hold the slot the last one needs.
    std::fs::write(
        setup.cfg(),
        setup
            .config(&image_replication(setup.dir()), "", "")
            .replace(
                "replication_poll",
                "max_connections_per_client = 1\nreplication_poll",
            ),
    )
    .unwrap();
    let mut d = Idnsd::start(&setup.cfg(), setup.api, NAME);
    let status = format!("/v1/services/{NAME}");
    let mut one = String::new();
    for k in 0..200u8 {
        let from = std::net::Ipv4Addr::new(127, 0, 1, k);
        if let Ok(answer) = raw_get(from, setup.api, &status).await
            && answer.starts_with("HTTP/1.1 200")
        {
            one = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!one.is_empty(), "idnsd did not answer; log:\n{}", d.logs());
    // Enough pipelined requests that their answers fill every buffer (32 MiB, bounded).
    let n = ((32 << 20) / one.len().max(1000) + 1).min(50_000);
    let request =
        format!("GET {status} HTTP/1.1\r\nhost: idnsd\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    let stalled = connect_from(HOSTILE, setup.api, Some(4096)).await;
    let (mut rx, mut tx) = stalled.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..n {
            if tx.write_all(request.as_bytes()).await.is_err() {
                break;
            }
        }
        tx
    });
    // Not reading: the daemon's write stalls, and after 10 s it gives the connection up.
    tokio::time::sleep(Duration::from_secs(14)).await;
    // The client's one slot is free again: a second connection from it is served.
    let answer = raw_get(HOSTILE, setup.api, "/v1/services").await;
    assert!(
        answer.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "{answer:?}; log:\n{}",
        d.logs()
    );
    // What the stalled connection got ends before all its answers.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection was never closed");
    let answered = text(&got).matches("HTTP/1.1 200").count();
    assert!(
        answered < n,
        "all {n} answers were written to a client that did not read"
    );
    writer.abort();
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait().code(), Some(0), "log:\n{}", d.logs());
}

/// `GET path` with the operator's token over a connection of its own from `from`, closed
/// after the answer: the whole answer, status line first.
async fn raw_get(from: std::net::Ipv4Addr, api: SocketAddr, path: &str) -> std::io::Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let mut c = socket.connect(api).await?;
    c.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nhost: idnsd\r\nauthorization: Bearer {TOKEN}\r\n\
             connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    Ok(text(&answer))
}

/// The example configurations parse, and the embedded one runs on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configs_check_and_the_embedded_one_runs() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    // The token files, as a checkout leaves them (readable by all), are refused; the configs
    // are checked from a copy where only their owner may read them.
    let private = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&examples).unwrap() {
        let p = e.unwrap().path();
        let copy = private.path().join(p.file_name().unwrap());
        std::fs::copy(&p, &copy).unwrap();
        let mode = if p.extension().is_some_and(|x| x == "example") {
            0o600
        } else {
            0o644
        };
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let open_copy = private.path().join("open");
    std::fs::create_dir(&open_copy).unwrap();
    for name in [
        "powerdns-command.toml",
        "api-token.example",
        "read-token.example",
    ] {
        let to = open_copy.join(name);
        std::fs::copy(examples.join(name), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_idnsd"))
        .arg("--check")
        .arg(open_copy.join("powerdns-command.toml"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for key in ["daemon.token_file", "daemon.read_token_file"] {
        assert!(
            err.lines().any(|l| l.contains(key)
                && l.contains("is open to other users (mode 0644)")
                && l.contains("chmod 600")),
            "{key} not refused: {err}"
        );
    }
    assert!(!err.contains("example-token-0123456789abcdef"), "{err}");
    for f in &files {
        let f = private.path().join(f.file_name().unwrap());
        let out = Command::new(env!("CARGO_BIN_EXE_idnsd"))
            .arg("--check")
            .arg(&f)
            .env("IDNS_PROBE_PASSWORD", "not-used")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            text(&out.stderr)
        );
        // Beyond loopback in plain HTTP: said, loudly.
        if f.ends_with("powerdns-command.toml") {
            assert!(
                text(&out.stderr).contains(
                    "warning: daemon.listen = 0.0.0.0:9480: the API listens beyond loopback in plain HTTP"
                ),
                "{}",
                text(&out.stderr)
            );
        }
        let shown = text(&out.stdout) + &text(&out.stderr);
        assert!(shown.contains("valid"), "{shown}");
        for secret in [
            "change-me-to-a-long-random-token",
            "c2VjcmV0IGtleSBmb3Ig",
            "change-me\"",
            "example-token-0123456789abcdef",
            "example-read-only-token-0123456789",
        ] {
            assert!(
                !shown.contains(secret),
                "{}: shows a secret: {shown}",
                f.display()
            );
        }
    }

    // Run the embedded example from a copy (its relative paths land in the copy's directory),
    // on free ports.
    let tmp = tempfile::tempdir().unwrap();
    let (api, dns) = (free_port(), free_port());
    let original = std::fs::read_to_string(examples.join("embedded-image.toml")).unwrap();
    assert!(original.contains("127.0.0.1:9480") && original.contains("127.0.0.1:5354"));
    let copy = original
        .replace("127.0.0.1:9480", &format!("127.0.0.1:{api}"))
        .replace("127.0.0.1:5354", &format!("127.0.0.1:{dns}"));
    let cfg = tmp.path().join("embedded-image.toml");
    std::fs::write(&cfg, copy).unwrap();
    let api = SocketAddr::from((PRIMARY, api));
    let mut d =
        Idnsd::start(&cfg, api, "www.idns.test").with_token("change-me-to-a-long-random-token");
    d.ready().await;
    let s = d.status().await;
    assert_eq!(s.active, "primary");
    d.wait_status("the home site published at epoch 1", |s| {
        s.epoch == 1 && s.runbook.is_none()
    })
    .await;
    let r = resolver(SocketAddr::from((PRIMARY, dns)));
    assert_eq!(
        resolve(&r, "www.idns.test").await,
        Some(IpAddr::V4(PRIMARY))
    );
    assert!(tmp.path().join("idnsd-state/journal").is_dir());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait().code(), Some(0), "log:\n{}", d.logs());
    assert!(
        tmp.path()
            .join("idnsd-state/journal/www.idns.test.json")
            .is_file()
    );
}

/// `idnsctl --wait` follows a runbook that aborts (a promote that fails for good, with
/// `on_failure = "abort"`) and exits non-zero, naming the failed step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsctl_wait_exits_non_zero_when_the_runbook_aborts() {
    let setup = Setup::new().await;
    let (_hooks, replication) = command_replication(
        setup.dir(),
        r#"echo '{"error": "the storage array refuses to promote", "kind": "refused"}'
    exit 1"#,
    );
    let runbook = r#"
[services.runbook]
failover = [
    { step = "fence" },
    { step = "promote", retries = 0, on_failure = "abort" },
    { step = "switch_dns" },
]
"#;
    let (d, _) = setup.steady(&replication, "", runbook).await;

    let out = d
        .idnsctl(&["failover", NAME, "--to", "recovery", "--wait"])
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("failed   promote app-data at recovery"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failover primary -> recovery aborted"),
        "{stdout}"
    );
    assert!(
        stderr.contains("the failover was aborted")
            && stderr.contains("the storage array refuses to promote"),
        "{stderr}"
    );
    let s = d.status().await;
    assert!(s.runbook.is_none(), "{s:#?}");
    assert_eq!(
        s.last_switch.as_ref().map(|r| r.outcome.as_str()),
        Some("aborted")
    );
    let (_, metrics) = d.get_as("/metrics", Some(READ_TOKEN)).await;
    let line = format!(
        "idns_runbooks_total{{service=\"{NAME}\",kind=\"failover\",outcome=\"aborted\"}} 1"
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} missing:\n{metrics}"
    );
}

/// `--json` on any command: the acceptance, every event of the runbook and its report come
/// as one JSON document per line; the status as one document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsctl_json_prints_one_document_per_line_while_following_a_runbook() {
    let setup = Setup::new().await;
    let (_hooks, replication) = command_replication(setup.dir(), "echo '{}'");
    let (d, _) = setup.steady(&replication, "", "").await;

    let out = d
        .idnsctl(&["--json", "failover", NAME, "--to", "recovery", "--wait"])
        .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(docs.len() >= 4, "{stdout}");
    assert_eq!(docs[0]["command"], "failover to recovery", "{stdout}");
    let report = docs.last().unwrap();
    assert_eq!(
        (report["kind"].as_str(), report["outcome"].as_str()),
        (Some("failover"), Some("completed")),
        "{stdout}"
    );
    // The events between carry the daemon's text, the promotion's among them.
    assert!(
        docs[1..docs.len() - 1]
            .iter()
            .all(|e| e["text"].is_string()),
        "{stdout}"
    );
    assert!(stdout.contains("promote app-data at recovery"), "{stdout}");

    // The flag may follow the command, and the status is one document.
    let out = d.idnsctl(&["status", NAME, "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["active"], "recovery");
    let out = d.idnsctl(&["freeze", NAME, "--json"]).await;
    let accepted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        accepted["command"].as_str().unwrap().starts_with("freeze"),
        "{accepted}"
    );
}

/// With `daemon.tls` the API speaks HTTPS only: `idnsctl --ca-file` trusts the daemon's
/// self-signed certificate, without it the certificate is refused with a hint, a plain-HTTP
/// request gets no HTTP answer and the daemon keeps serving, and a key file other users may
/// read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsd_serves_its_api_over_tls() {
    let setup = Setup::new().await;
    std::fs::create_dir_all(setup.dir().join("primary/live")).unwrap();
    std::fs::create_dir_all(setup.dir().join("recovery")).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (crt, key) = (setup.dir().join("api.crt"), setup.dir().join("api.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        setup.cfg(),
        setup
            .config(&image_replication(setup.dir()), "", "")
            // Relative paths, taken from the configuration's directory.
            .replacen(
                "replication_poll",
                "tls = { cert_file = \"api.crt\", key_file = \"api.key\" }\nreplication_poll",
                1,
            ),
    )
    .unwrap();
    let check = || {
        let cfg = setup.cfg();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_idnsd"))
                    .arg("--check")
                    .arg(&cfg)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = check().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("API and metrics on https://{}", setup.api)),
        "{}",
        text(&out.stdout)
    );

    let mut d = Idnsd::start(&setup.cfg(), setup.api, NAME);
    d.ready_https(&crt).await;
    let url = d.https_url();
    let ca = crt.to_str().unwrap();
    let status = d.idnsctl_at(&url, &["--ca-file", ca, "status"]).await;
    assert!(
        status.status.success() && text(&status.stdout).contains(NAME),
        "{status:?}; log:\n{}",
        d.logs()
    );

    // The system's CAs do not know the self-signed certificate.
    let untrusted = d.idnsctl_at(&url, &["status"]).await;
    let err = text(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(3), "{err}");
    assert!(err.contains("was not trusted"), "{err}");
    assert!(err.contains("--ca-file"), "{err}");

    // Plain HTTP to the TLS port: a TLS alert and a closed connection, no HTTP answer.
    let plain = raw_get(HOSTILE, setup.api, "/v1/services").await;
    assert!(
        plain
            .as_ref()
            .is_ok_and(|a| a.starts_with('\u{15}') && !a.contains("HTTP/")),
        "{plain:?}"
    );
    let again = d.idnsctl_at(&url, &["--ca-file", ca, "status", NAME]).await;
    assert!(again.status.success(), "{again:?}; log:\n{}", d.logs());

    // A key other users may read is refused before anything starts.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check().await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("daemon.tls.key_file") && err.contains("is open to other users"),
        "{err}"
    );

    assert_eq!(d.terminate().code(), Some(0), "log:\n{}", d.logs());
}
