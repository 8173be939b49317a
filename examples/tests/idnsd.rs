//! `idnsd` and `idnsctl` as a user runs them: the real binaries, a generated configuration on
//! loopback (embedded DNS on a high port, two small web sites on 127.0.0.1 and 127.0.0.2,
//! image or command-hook replication in a temporary directory).
//!
//! Waits have generous deadlines so that a broken daemon fails the test instead of hanging
//! it; nothing asserts on how long anything took.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_examples::daemon::wire::{EventsPage, ServiceList, ServiceStatus};
use idns_examples::loopback::{self, PRIMARY, RECOVERY, Sites, WebSite, resolve};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const TOKEN: &str = "test-token-0123456789abcdef";
const NAME: &str = "www.daemon.test";
/// The longest any wait may take before the test gives up.
const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------------

/// A running `idnsd`; killed (SIGKILL) when dropped.
struct Idnsd {
    child: Option<Child>,
    log: PathBuf,
    api: SocketAddr,
}

impl Idnsd {
    fn start(config: &Path, api: SocketAddr) -> Idnsd {
        let dir = config.parent().unwrap();
        let n = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("idnsd-"))
            })
            .count();
        let log = dir.join(format!("idnsd-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_idnsd"))
            .arg("--config")
            .arg(config)
            .env("IDNS_LOG", "info,idns_probe=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("idnsd-{n}.out"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("idnsd starts");
        Idnsd {
            child: Some(child),
            log,
            api,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }

    /// Waits until the process exits.
    fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "idnsd did not exit; its log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the API answers.
    async fn ready(&mut self) {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("idnsd exited with {status}; its log:\n{}", self.logs());
            }
            // Any answer (a 401 for another token too) means it listens.
            if get(self.api, "/v1/services", Some(TOKEN)).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "idnsd's API did not come up; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self) -> ServiceStatus {
        let (code, body) = get(self.api, &format!("/v1/services/{NAME}"), Some(TOKEN))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls the status until `ok` holds.
    async fn wait_status(&self, what: &str, ok: impl Fn(&ServiceStatus) -> bool) -> ServiceStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            let s = self.status().await;
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}: {s:#?}\nlog:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn idnsctl(&self, args: &[&str], token: Option<&str>) -> Output {
        idnsctl(&format!("http://{}", self.api), args, token).await
    }
}

impl Drop for Idnsd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn idnsctl(url: &str, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idnsctl"));
    cmd.arg("--url")
        .arg(url)
        .args(args)
        .env_remove("IDNS_TOKEN");
    if let Some(t) = token {
        cmd.env("IDNS_TOKEN", t);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `GET path` with an optional bearer token: status and body.
async fn get(api: SocketAddr, path: &str, token: Option<&str>) -> reqwest::Result<(u16, String)> {
    let mut req = reqwest::Client::new().get(format!("http://{api}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.timeout(Duration::from_secs(40)).send().await?;
    let code = resp.status().as_u16();
    Ok((code, resp.text().await?))
}

async fn post(api: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{api}{path}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap())
}

/// A port free on loopback for TCP and UDP (the daemon binds it a moment later).
fn free_port() -> u16 {
    loop {
        let tcp = StdTcpListener::bind((PRIMARY, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((PRIMARY, port)).is_ok() {
            return port;
        }
    }
}

/// Both web sites on one port of 127.0.0.1 and 127.0.0.2 (stopped when dropped).
async fn start_sites() -> (u16, WebSite, WebSite) {
    let sites = Sites::start(None).await.unwrap();
    (sites.port, sites.primary, sites.recovery)
}

fn resolver(server: SocketAddr) -> Resolver<TokioRuntimeProvider> {
    loopback::resolver(server).unwrap()
}

struct Ports {
    api: u16,
    dns: u16,
    web: u16,
}

fn site_toml(id: &str, priority: u32, addr: Ipv4Addr, web: u16) -> String {
    format!(
        r#"
[[services.sites]]
id = "{id}"
priority = {priority}
addresses = ["{addr}"]
[[services.sites.probes]]
id = "http"
interval = "100ms"
timeout = "300ms"
rise = 2
fall = 3
check = {{ kind = "http", url = "http://{NAME}:{web}/health", expect = "OK" }}
"#
    )
}

/// A service on loopback with the embedded DNS server and `replication` (a TOML table body).
fn config(dir: &Path, p: &Ports, replication: &str, extra: &str) -> String {
    format!(
        r#"
[daemon]
listen = "127.0.0.1:{api}"
token = "{TOKEN}"
journal_dir = "{dir}/journal"
observers = ["east", "west"]
replication_poll = "200ms"

[[services]]
name = "{NAME}"
zone = "daemon.test"
ttl = "1s"
resources = ["app-data"]
dns = {{ backend = "embedded", listen = ["127.0.0.1:{dns}"] }}
[services.observers]
ids = ["east", "west"]
[services.policy]
min_dwell = "0s"
{extra}
[services.replication]
{replication}
{primary}{recovery}"#,
        api = p.api,
        dns = p.dns,
        dir = dir.display(),
        primary = site_toml("primary", 1, PRIMARY, p.web),
        recovery = site_toml("recovery", 2, RECOVERY, p.web),
    )
}

fn image_replication(dir: &Path) -> String {
    format!(
        r#"backend = "image"
[[services.replication.resources]]
id = "app-data"
home = "primary"
interval = "300ms"
sites = [{{ site = "primary", root = "{d}/primary" }}, {{ site = "recovery", root = "{d}/recovery" }}]
"#,
        d = dir.display()
    )
}

fn journal(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("journal/{NAME}.json"))).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    stored["journal"].clone()
}

/// Command-hook replication of `app-data`: the hook logs each operation to
/// `<hooks>/hook.log`; `promote` then runs `promote_body` (shell, `$i` starts at 0). Returns
/// the hooks' directory and the replication table.
fn command_replication(dir: &Path, promote_body: &str) -> (PathBuf, String) {
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            r#"#!/bin/sh
log="$HOOK_DIR/hook.log"
case "$IDNS_OPERATION" in
status)
    echo '{{"sites":[{{"site":"primary","role":"primary","lag_ms":0}},{{"site":"recovery","role":"replica","lag_ms":0}}]}}'
    ;;
promote)
    echo "promote $IDNS_SITE epoch=$IDNS_EPOCH" >> "$log"
    i=0
    {promote_body}
    ;;
*)
    echo "$IDNS_OPERATION ${{IDNS_SITE:-$IDNS_PRIMARY}} epoch=$IDNS_EPOCH" >> "$log"
    echo '{{}}'
    ;;
esac
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let replication = format!(
        r#"backend = "command"
[[services.replication.resources]]
id = "app-data"
sites = ["primary", "recovery"]
command = ["{hook}"]
env = {{ HOOK_DIR = "{hooks}" }}
"#,
        hook = hook.display(),
        hooks = hooks.display()
    );
    (hooks, replication)
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (web, _primary, _recovery) = start_sites().await;
    let ports = Ports {
        api: free_port(),
        dns: free_port(),
        web,
    };
    // The application's data at the primary; the recovery site's (empty) volume.
    std::fs::create_dir_all(dir.join("primary/live")).unwrap();
    std::fs::create_dir_all(dir.join("recovery")).unwrap();
    std::fs::write(dir.join("primary/live/orders.txt"), "order 1\n").unwrap();
    let cfg = dir.join("idnsd.toml");
    std::fs::write(
        &cfg,
        config(dir, &ports, &image_replication(dir), "rpo_budget = \"30s\""),
    )
    .unwrap();
    let api = SocketAddr::from((PRIMARY, ports.api));
    let dns = SocketAddr::from((PRIMARY, ports.dns));
    let mut d = Idnsd::start(&cfg, api);
    d.ready().await;

    // Both sites up, the home site published at epoch 1, replication known.
    let s = d
        .wait_status("both sites up and eligible at epoch 1", |s| {
            s.epoch == 1
                && s.runbook.is_none()
                && s.sites.iter().all(|x| x.health == "up" && x.eligible)
        })
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
    let (code, body) = get(api, "/v1/services", Some(TOKEN)).await.unwrap();
    assert_eq!(code, 200);
    let list: ServiceList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.services.len(), 1);
    assert_eq!(list.services[0].name, NAME);
    let out = d.idnsctl(&["status"], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains(NAME), "{table}");
    assert!(table.contains("primary* up, recovery up"), "{table}");
    let out = d.idnsctl(&["status", NAME], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PROBE"), "{}", text(&out.stdout));
    let out = d.idnsctl(&["status", NAME, "--json"], Some(TOKEN)).await;
    let json: ServiceStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.active, "primary");

    // Tokens: none, wrong, and through idnsctl.
    let (code, body) = get(api, "/v1/services", None).await.unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let (code, _) = get(api, "/v1/services", Some("wrong-token-0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(code, 401);
    let out = d.idnsctl(&["status"], Some("not-the-token")).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    // Unknown service, unknown site, bad body, oversized body.
    let out = d
        .idnsctl(&["status", "nope.daemon.test"], Some(TOKEN))
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no service named \"nope.daemon.test\""),
        "{}",
        text(&out.stderr)
    );
    let out = d
        .idnsctl(&["failover", NAME, "--to", "mars"], Some(TOKEN))
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"mars\" is not a site of www.daemon.test"),
        "{}",
        text(&out.stderr)
    );
    let (code, body) = post(api, &format!("/v1/services/{NAME}/failover"), "{\"to\": 3}").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"bad_request\""), "{body}");
    let big = format!("{{\"to\": \"{}\"}}", "x".repeat(64 * 1024));
    let (code, body) = post(api, &format!("/v1/services/{NAME}/failover"), &big).await;
    assert_eq!(code, 413, "{body}");

    // Hostile clients: connections that never finish their headers, and garbage, do not
    // stop others from being served.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(api).unwrap();
        c.write_all(b"GET /v1/serv").unwrap();
        idle.push(c);
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
    let (code, _) = get(api, "/v1/services", Some(TOKEN)).await.unwrap();
    assert_eq!(code, 200);
    drop(idle);

    // A refused command carries the election's reason.
    let out = d.idnsctl(&["failback", NAME], Some(TOKEN)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // A drill, followed to its end; its report is served and written to the journal directory.
    let out = d.idnsctl(&["drill", NAME, "--wait"], Some(TOKEN)).await;
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}\nlog:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        d.logs()
    );
    let drill = text(&out.stdout);
    assert!(drill.contains("drill on recovery"), "{drill}");
    assert!(drill.contains("completed: RTO"), "{drill}");
    let (code, body) = get(api, &format!("/v1/services/{NAME}/report"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["kind"], "drill");
    assert_eq!(report["outcome"], "completed");
    let runbook = report["runbook"].as_u64().unwrap();
    let (code, md) = get(
        api,
        &format!("/v1/services/{NAME}/report?format=md"),
        Some(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{md}");
    assert!(md.contains("drill.www.daemon.test"), "{md}");
    assert!(md.contains("production untouched"), "{md}");
    let (code, page) = get(
        api,
        &format!("/v1/services/{NAME}/report?format=html"),
        Some(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<svg"), "{page}");
    let (code, _) = get(
        api,
        &format!("/v1/services/{NAME}/report?format=pdf"),
        Some(TOKEN),
    )
    .await
    .unwrap();
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
    let out = d
        .idnsctl(
            &["failover", NAME, "--to", "recovery", "--wait"],
            Some(TOKEN),
        )
        .await;
    let shown = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{shown}\nstderr:\n{}\nlog:\n{}",
        text(&out.stderr),
        d.logs()
    );
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
    assert!(last.phases.iter().any(|p| p.phase == "promote"));
    let decision = s.decision.expect("a decision");
    assert_eq!(decision.epoch, 2);
    assert!(!decision.reasons.is_empty());

    // The same again is refused: the election says why.
    let out = d
        .idnsctl(&["failover", NAME, "--to", "recovery"], Some(TOKEN))
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // The events, as a long-poll client sees them.
    let (code, body) = get(
        api,
        &format!("/v1/services/{NAME}/events?after=0&limit=5000"),
        Some(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let page: EventsPage = serde_json::from_str(&body).unwrap();
    assert!(
        page.events.iter().any(|e| e
            .text
            .starts_with("decision: failover primary -> recovery at epoch 2")),
        "{body}"
    );

    // Metrics, without a token (the default).
    let (code, metrics) = get(api, "/metrics", None).await.unwrap();
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
        format!(
            "idns_last_phase_seconds{{service=\"{NAME}\",kind=\"failover\",phase=\"switch_dns\"}} "
        ),
        format!(
            "idns_replication_lag_seconds{{service=\"{NAME}\",resource=\"app-data\",site=\"recovery\"}} "
        ),
        format!(
            "idns_probe_latency_seconds_count{{service=\"{NAME}\",site=\"primary\",probe=\"http\",observer=\"east\"}} "
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&prefix)),
            "{prefix} missing from:\n{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE idns_probe_latency_seconds histogram"));
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
    let out = d.idnsctl(&["freeze", NAME], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.status().await.frozen);
    let (_, metrics) = get(api, "/metrics", None).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("idns_service_frozen{{service=\"{NAME}\"}} 1")),
        "{metrics}"
    );
    let out = d.idnsctl(&["status"], Some(TOKEN)).await;
    assert!(
        text(&out.stdout).contains("steady (frozen)"),
        "{}",
        text(&out.stdout)
    );
    let out = d.idnsctl(&["unfreeze", NAME], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!d.status().await.frozen);

    // SIGTERM: a graceful stop with the journal saved.
    d.signal(Signal::SIGTERM);
    let status = d.wait();
    assert_eq!(status.code(), Some(0), "log:\n{}", d.logs());
    assert!(d.logs().contains("journals saved"), "{}", d.logs());
    let j = journal(dir);
    assert_eq!(j["active"], "recovery");
    assert_eq!(j["epoch"], 2);
    assert!(j["runbook"].is_null(), "{j:#}");
    assert!(
        TcpStream::connect_timeout(&api, Duration::from_secs(1)).is_err(),
        "the API still listens after exit"
    );

    // Started again, it resumes from the journal: same site, same epoch, no new switch, and
    // the embedded DNS server answers what it answered before.
    let mut d = Idnsd::start(&cfg, api);
    d.ready().await;
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (web, _primary, _recovery) = start_sites().await;
    let ports = Ports {
        api: free_port(),
        dns: free_port(),
        web,
    };
    // The hook logs each operation; promote waits until the test releases it.
    let (hooks, replication) = command_replication(
        dir,
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
    let text_cfg = config(dir, &ports, &replication, "") + runbook;
    let cfg = dir.join("idnsd.toml");
    std::fs::write(&cfg, text_cfg).unwrap();
    let api = SocketAddr::from((PRIMARY, ports.api));
    let dns = SocketAddr::from((PRIMARY, ports.dns));
    let log = hooks.join("hook.log");
    let promotes = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("promote"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    let mut d = Idnsd::start(&cfg, api);
    d.ready().await;
    d.wait_status("both sites up at epoch 1", |s| {
        s.epoch == 1 && s.runbook.is_none() && s.sites.iter().all(|x| x.health == "up")
    })
    .await;

    let (code, body) = post(
        api,
        &format!("/v1/services/{NAME}/failover"),
        r#"{"to": "recovery"}"#,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + LIMIT;
    while promotes().is_empty() {
        assert!(Instant::now() < deadline, "no promote; log:\n{}", d.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let j = journal(dir);
    assert_eq!(j["epoch"], 2, "{j:#}");
    assert_eq!(j["runbook"]["kind"], "failover", "{j:#}");
    assert_eq!(j["runbook"]["done"].as_array().unwrap().len(), 1, "{j:#}");

    // Restarted: the promote runs again at the same epoch, nothing before it does.
    let mut d = Idnsd::start(&cfg, api);
    d.ready().await;
    let deadline = Instant::now() + LIMIT;
    while promotes().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "promote not resumed; log:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    assert_eq!(
        promotes(),
        vec!["promote recovery epoch=2", "promote recovery epoch=2"]
    );
    let hook_log = std::fs::read_to_string(&log).unwrap();
    let fences: Vec<&str> = hook_log
        .lines()
        .filter(|l| l.starts_with("fence"))
        .collect();
    assert_eq!(fences, vec!["fence primary epoch=2"], "{hook_log}");
    assert_eq!(
        resolve(&resolver(dns), NAME).await,
        Some(IpAddr::V4(RECOVERY))
    );
    let j = journal(dir);
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
    for f in &files {
        let out = Command::new(env!("CARGO_BIN_EXE_idnsd"))
            .arg("--check")
            .arg(f)
            .env("IDNS_PROBE_PASSWORD", "not-used")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            text(&out.stderr)
        );
        let shown = text(&out.stdout) + &text(&out.stderr);
        assert!(shown.contains("valid"), "{shown}");
        for secret in [
            "change-me-to-a-long-random-token",
            "c2VjcmV0IGtleSBmb3Ig",
            "change-me\"",
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
    let mut d = Idnsd::start(&cfg, api);
    d.ready().await;
    let (code, body) = get(
        api,
        "/v1/services/www.idns.test",
        Some("change-me-to-a-long-random-token"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let s: ServiceStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(s.active, "primary");
    let r = resolver(SocketAddr::from((PRIMARY, dns)));
    let deadline = Instant::now() + LIMIT;
    while resolve(&r, "www.idns.test").await != Some(IpAddr::V4(PRIMARY)) {
        assert!(
            Instant::now() < deadline,
            "not published; log:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (web, _primary, _recovery) = start_sites().await;
    let ports = Ports {
        api: free_port(),
        dns: free_port(),
        web,
    };
    let (_hooks, replication) = command_replication(
        dir,
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
    let cfg = dir.join("idnsd.toml");
    std::fs::write(&cfg, config(dir, &ports, &replication, "") + runbook).unwrap();
    let api = SocketAddr::from((PRIMARY, ports.api));
    let mut d = Idnsd::start(&cfg, api);
    d.ready().await;
    d.wait_status("both sites up at epoch 1", |s| {
        s.epoch == 1 && s.runbook.is_none() && s.sites.iter().all(|x| x.health == "up")
    })
    .await;

    let out = d
        .idnsctl(
            &["failover", NAME, "--to", "recovery", "--wait"],
            Some(TOKEN),
        )
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
    let (_, metrics) = get(api, "/metrics", None).await.unwrap();
    let line = format!(
        "idns_runbooks_total{{service=\"{NAME}\",kind=\"failover\",outcome=\"aborted\"}} 1"
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} missing:\n{metrics}"
    );
}
