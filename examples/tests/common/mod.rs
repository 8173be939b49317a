//! What the real-server tests of `idnsd` share: a BIND 9 taking TSIG-signed RFC 2136 updates
//! and a PostgreSQL primary/standby pair (from `idns_dns::testing` and
//! `idns_replication::testing`), two small web sites on 127.0.0.1 and 127.0.0.2, the daemon's
//! configuration for them, the real `idnsd` process and its API, and a DNS client without a
//! cache.
//!
//! Every wait has a generous deadline, so a broken daemon fails the test instead of hanging
//! it; nothing asserts on how long anything took.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

pub mod daemon;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_dns::testing::Bind;
use idns_examples::daemon::wire::{EventRecord, EventsPage, ServiceStatus};
use idns_examples::loopback::{self, Sites, WebSite};
#[allow(unused_imports)] // Not every test file resolves by itself.
pub use idns_examples::loopback::{PRIMARY, RECOVERY, resolve};
use idns_replication::testing::{PgNode, PgPair};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The API token of every daemon these tests start.
pub const TOKEN: &str = "paper-token-0123456789abcdef";
/// The database password the paper scenario's configuration gives (the test servers trust
/// loopback, so it is never asked for; it must never be shown either).
pub const PG_PASSWORD: &str = "pg-password-never-shown-4242";
/// The longest any single wait may take before the test gives up.
pub const LIMIT: Duration = Duration::from_secs(120);
/// The longest one long-poll of [`Idnsd::wait_status`] waits for an event, in seconds.
pub const STATUS_WAIT: u64 = 1;

/// Seconds since `t0`, for narration.
pub fn stamp(t0: Instant) -> String {
    format!("[{:8.3}s]", t0.elapsed().as_secs_f64())
}

/// Prints a line of the narration (the test's output, shown with `--nocapture`).
#[macro_export]
macro_rules! say {
    ($t0:expr, $($arg:tt)*) => {
        eprintln!("{} {}", $crate::common::stamp($t0), format!($($arg)*))
    };
}

// ---------------------------------------------------------------------------------------------
// The stage: BIND, PostgreSQL, two web sites
// ---------------------------------------------------------------------------------------------

/// Everything a scenario runs against, stopped on drop.
pub struct Stage {
    /// The zone BIND serves.
    pub zone: String,
    /// The service's name.
    pub name: String,
    /// BIND, updatable with [`Bind::KEY_NAME`].
    pub bind: Bind,
    /// `a` is the primary site's database, `b` the recovery site's standby.
    pub pg: PgPair,
    /// The web sites' port (the same on both addresses).
    pub web_port: u16,
    /// The primary site's web app, while it runs.
    pub web_primary: Option<WebSite>,
    /// The recovery site's web app, while it runs.
    pub web_recovery: Option<WebSite>,
    /// Scratch space: configurations, journals, logs.
    pub dir: tempfile::TempDir,
}

impl Stage {
    /// Starts BIND serving `zone`, the PostgreSQL pair (with an `orders` table at the primary)
    /// and both web sites; `None` (after printing why) when a server is not installed.
    pub async fn start(zone: &str) -> Option<Stage> {
        let bind = Bind::start_zones(&[zone])?;
        let pg = PgPair::start()?;
        pg.a.client()
            .await
            .batch_execute(
                "CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL, \
                 written_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .unwrap();
        let sites = Sites::start(None).await.unwrap();
        let (web_port, a, b) = (sites.port, sites.primary, sites.recovery);
        Some(Stage {
            zone: zone.to_owned(),
            name: format!("www.{zone}"),
            bind,
            pg,
            web_port,
            web_primary: Some(a),
            web_recovery: Some(b),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// A directory for one daemon's files.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Stops the primary site's web app (connections are refused from now on).
    pub async fn stop_primary_web(&mut self) {
        if let Some(w) = self.web_primary.take() {
            w.kill().await;
        }
    }

    /// Starts the primary site's web app again on its address and port.
    pub async fn start_primary_web(&mut self) {
        assert!(self.web_primary.is_none(), "the primary's web app runs");
        self.web_primary = Some(
            WebSite::restart(
                "primary",
                SocketAddr::from((PRIMARY, self.web_port)),
                None,
                LIMIT,
            )
            .await
            .unwrap(),
        );
    }

    /// The configuration of a daemon whose API listens on `api` and keeps its journal in
    /// `journal_dir`: the service `www.<zone>` with sites `primary` (127.0.0.1) and
    /// `recovery` (127.0.0.2), each probed over HTTP every 100 ms from two observers (quorum
    /// 2, fall 3), DNS through BIND with RFC 2136 + TSIG, the `orders` database replicated by
    /// the PostgreSQL backend. `extra` is appended inside the service (e.g. a
    /// `[services.runbook]` table).
    pub fn config(&self, api: SocketAddr, journal_dir: &Path, extra: &str) -> String {
        let site = |id: &str, priority: u32, addr: Ipv4Addr| {
            site_toml(&self.name, id, priority, addr, self.web_port)
        };
        let text = format!(
            r#"
[daemon]
listen = "{api}"
token = "{TOKEN}"
journal_dir = "{journal}"
observers = ["east", "west"]
replication_poll = "250ms"

[[services]]
name = "{name}"
zone = "{zone}"
ttl = "1s"
resources = ["orders"]

[services.dns]
backend = "rfc2136"
server = "{bind}"
zones = ["{zone}"]
timeout = "1s"
tsig = {{ name = "{key}", algorithm = "hmac-sha256", secret = "{secret}" }}

[services.observers]
ids = ["east", "west"]
quorum = 2

[services.policy]
failover = "automatic"
failback = "manual"
min_dwell = "0s"
rpo_budget = "30s"
{primary}{recovery}
{extra}
"#,
            journal = journal_dir.display(),
            name = self.name,
            zone = self.zone,
            bind = self.bind.addr(),
            key = Bind::KEY_NAME,
            secret = Bind::SECRET,
            primary = site("primary", 1, PRIMARY),
            recovery = site("recovery", 2, RECOVERY),
        );
        let mut doc: toml::Table = toml::from_str(&text).unwrap();
        // The PostgreSQL backend's settings, as idns-replication's test pair describes itself.
        let spec = self.pg.spec(
            "orders",
            ["primary", "recovery"],
            &["public.orders"],
            "stop",
        );
        let mut replication = toml::Table::try_from(spec).unwrap();
        replication.insert("backend".into(), "postgres".into());
        for r in replication["resources"].as_array_mut().unwrap() {
            for site in r["sites"].as_array_mut().unwrap() {
                site.as_table_mut().unwrap().insert(
                    "conninfo".into(),
                    format!("password={PG_PASSWORD} connect_timeout=5").into(),
                );
            }
        }
        let service = doc["services"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap();
        service.insert("replication".into(), toml::Value::Table(replication));
        toml::to_string(&doc).unwrap()
    }

    /// Writes [`config`](Self::config) to `<dir>/<tag>/idnsd.toml` and returns its path.
    pub fn write_config(&self, tag: &str, api: SocketAddr, extra: &str) -> PathBuf {
        let dir = self.path(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("idnsd.toml");
        std::fs::write(&cfg, self.config(api, &dir.join("journal"), extra)).unwrap();
        cfg
    }

    /// Writes the configuration of a daemon `tag` (see [`write_config`](Self::write_config)),
    /// starts it and waits until it publishes the primary at epoch 1 with both sites up and the
    /// standby replicating; checks BIND says so too.
    pub async fn steady(&self, tag: &str, extra: &str) -> Idnsd {
        let api = api_addr();
        let cfg = self.write_config(tag, api, extra);
        let d = Idnsd::started(&cfg, api, &self.name).await;
        let s = d
            .wait_status("both sites up and the primary published at epoch 1", |s| {
                s.epoch == 1
                    && s.runbook.is_none()
                    && s.sites.iter().all(|x| x.health == "up")
                    && s.replication
                        .iter()
                        .any(|r| r.site == "recovery" && r.role == "replica")
            })
            .await;
        assert_eq!((s.active.as_str(), s.switches), ("primary", 0), "{s:#?}");
        assert_eq!(self.dig_a(), ["127.0.0.1"]);
        assert_eq!(self.dig_owner(), ["\"epoch=1 site=primary\""]);
        d
    }

    /// The `A` records BIND answers for the service (dig, no recursion, no cache).
    pub fn dig_a(&self) -> Vec<String> {
        self.bind.short(&self.name, "A")
    }

    /// The ownership record `_idns.<name>` BIND answers, e.g. `"epoch=2 site=recovery"`.
    pub fn dig_owner(&self) -> Vec<String> {
        self.bind.short(&format!("_idns.{}", self.name), "TXT")
    }
}

/// A `[[services.sites]]` table of the service `name`: site `id` at `addr`, probed over HTTP
/// every 100 ms (`http://<name>:<port>/health` answering `OK <id>`, rise 2, fall 3) by the probe
/// `web`.
pub fn site_toml(name: &str, id: &str, priority: u32, addr: Ipv4Addr, port: u16) -> String {
    format!(
        r#"
[[services.sites]]
id = "{id}"
priority = {priority}
addresses = ["{addr}"]
[[services.sites.probes]]
id = "web"
interval = "100ms"
timeout = "300ms"
allow_timeout_over_interval = true
rise = 2
fall = 3
check = {{ kind = "http", url = "http://{name}:{port}/health", expect = "OK {id}" }}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Inserts orders `ids` with `note`.
pub async fn insert(node: &PgNode, ids: std::ops::RangeInclusive<i32>, note: &str) {
    let c = node.client().await;
    for i in ids {
        c.execute(
            "INSERT INTO orders (id, note) VALUES ($1, $2)",
            &[&i, &note],
        )
        .await
        .unwrap();
    }
}

/// The ids of every order.
pub async fn order_ids(node: &PgNode) -> Vec<i32> {
    node.client()
        .await
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether the server is a standby (`pg_is_in_recovery()`).
pub async fn in_recovery(node: &PgNode) -> bool {
    node.client()
        .await
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The drill markers in `public.idns_markers`: (label, n, epoch, site).
pub async fn markers(node: &PgNode) -> Vec<(String, i32, i64, String)> {
    node.client()
        .await
        .query(
            "SELECT label, n, epoch, site FROM idns_markers ORDER BY label, n",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Waits until `node` holds at least the orders `want` (replication catching up).
pub async fn wait_orders(node: &PgNode, want: &[i32]) -> Vec<i32> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let have = match node.try_client().await {
            Ok(c) => c
                .query("SELECT id FROM orders ORDER BY id", &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect::<Vec<i32>>())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if want.iter().all(|w| have.contains(w)) {
            return have;
        }
        assert!(
            Instant::now() < deadline,
            "port {} never got orders {want:?}; it has {have:?}",
            node.port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// DNS clients (the web sites are `idns_examples::loopback`'s)
// ---------------------------------------------------------------------------------------------

/// A stub resolver that asks only `server`, without a cache ([`loopback::resolver`]).
pub fn resolver(server: SocketAddr) -> Resolver<TokioRuntimeProvider> {
    loopback::resolver(server).unwrap()
}

/// Resolves `name` until it answers `want`; returns when it did.
pub async fn wait_resolves(r: &Resolver<TokioRuntimeProvider>, name: &str, want: Ipv4Addr) {
    let want = IpAddr::V4(want);
    loopback::wait_resolves(r, name, want, Instant::now(), LIMIT)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------------

/// A running `idnsd` (the real binary); killed (SIGKILL) when dropped.
pub struct Idnsd {
    child: Option<Child>,
    log: PathBuf,
    /// Its API.
    pub api: SocketAddr,
    /// The service it runs.
    pub name: String,
    /// The API token its configuration sets ([`TOKEN`] unless [`with_token`](Self::with_token)).
    pub token: String,
    http: reqwest::Client,
}

impl Idnsd {
    /// Starts `idnsd --config <config>`; its log goes beside the configuration. The daemon's
    /// API token is taken to be [`TOKEN`].
    pub fn start(config: &Path, api: SocketAddr, name: &str) -> Idnsd {
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
            name: name.to_owned(),
            token: TOKEN.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The same daemon, whose configuration sets the API token `token`.
    pub fn with_token(mut self, token: &str) -> Idnsd {
        token.clone_into(&mut self.token);
        self
    }

    /// Starts it as [`start`](Self::start) does and waits until its API answers.
    pub async fn started(config: &Path, api: SocketAddr, name: &str) -> Idnsd {
        let mut d = Idnsd::start(config, api, name);
        d.ready().await;
        d
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("idnsd runs");
        Pid::from_raw(i32::try_from(child.id()).unwrap())
    }

    /// Sends it `signal` (to its own process id, nothing else).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Waits for it to exit (a thread blocks in `waitpid` for it); SIGKILLs it and fails the
    /// test if it has not exited within [`LIMIT`].
    pub fn wait(&mut self) -> ExitStatus {
        let pid = self.pid();
        let mut child = self.child.take().expect("idnsd runs");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(LIMIT) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // The waiting thread reaps it.
                let _ = kill(pid, Signal::SIGKILL);
                panic!("idnsd did not exit; its log:\n{}", self.logs());
            }
        }
    }

    /// Sends SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait()
    }

    /// Waits until the API answers (the one retry loop: before the process listens there is
    /// nothing to wait on but a refused connection).
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().expect("idnsd runs").try_wait().unwrap() {
                self.child = None;
                panic!("idnsd exited with {status}; its log:\n{}", self.logs());
            }
            if let Ok((200, _)) = self.try_get("/v1/services", Some(&self.token)).await {
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

    async fn try_get(&self, path: &str, token: Option<&str>) -> reqwest::Result<(u16, String)> {
        let mut req = self.http.get(format!("http://{}{path}", self.api));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.timeout(Duration::from_secs(40)).send().await?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().await?))
    }

    /// `GET path` with the daemon's token: status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_as(path, Some(&self.token)).await
    }

    /// `GET path` with `token` (none: no `Authorization` header): status code and body.
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.try_get(path, token)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.logs()))
    }

    /// `POST path` with a JSON body and the token: status code and body.
    pub async fn post(&self, path: &str, body: &str) -> (u16, String) {
        let resp = self
            .http
            .post(format!("http://{}{path}", self.api))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .timeout(Duration::from_secs(40))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}; log:\n{}", self.logs()));
        let code = resp.status().as_u16();
        (code, resp.text().await.unwrap())
    }

    /// `POST /v1/services/<name>/<command>` (`failover`, `failback`, …) with a JSON body:
    /// status code and body.
    pub async fn command(&self, command: &str, body: &str) -> (u16, String) {
        self.post(&format!("/v1/services/{}/{command}", self.name), body)
            .await
    }

    /// The service's status.
    pub async fn status(&self) -> ServiceStatus {
        let (code, body) = self.get(&format!("/v1/services/{}", self.name)).await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the status satisfies `ok`: reads the status and, while `ok` does not hold,
    /// long-polls the events after the one it saw for the next, then reads it again. Some of
    /// the status changes without an event (replication polls, probe counters), so one
    /// long-poll waits at most [`STATUS_WAIT`] seconds.
    pub async fn wait_status(
        &self,
        what: &str,
        ok: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
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
            self.events(s.last_event, STATUS_WAIT).await;
        }
    }

    /// The events after `after`, waiting up to `wait` seconds for one.
    pub async fn events(&self, after: u64, wait: u64) -> EventsPage {
        let (code, body) = self
            .get(&format!(
                "/v1/services/{}/events?after={after}&wait={wait}&limit=10000",
                self.name
            ))
            .await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Every event the daemon still keeps.
    pub async fn all_events(&self) -> Vec<EventRecord> {
        self.events(0, 0).await.events
    }

    /// Follows the events after `*after` until one satisfies `ok`; moves `*after` past it.
    pub async fn wait_event(
        &self,
        after: &mut u64,
        what: &str,
        ok: impl Fn(&EventRecord) -> bool,
    ) -> EventRecord {
        let deadline = Instant::now() + LIMIT;
        loop {
            let page = self.events(*after, 2).await;
            for e in page.events {
                *after = e.seq;
                if ok(&e) {
                    return e;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for the event {what}; log:\n{}",
                self.logs()
            );
        }
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Runs `idnsctl --url <api> ARGS…` with the daemon's token.
    pub async fn idnsctl(&self, args: &[&str]) -> Output {
        self.idnsctl_as(args, Some(&self.token)).await
    }

    /// Runs `idnsctl --url <api> ARGS…` with `token` in `IDNS_TOKEN` (none: unset).
    pub async fn idnsctl_as(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_idnsctl"));
        cmd.arg("--url")
            .arg(format!("http://{}", self.api))
            .args(args)
            .env_remove("IDNS_TOKEN")
            .env_remove("IDNS_URL");
        if let Some(t) = token {
            cmd.env("IDNS_TOKEN", t);
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// Runs `idnsctl` as [`idnsctl`](Self::idnsctl) does, requires it to succeed (else fails
    /// with its output and the daemon's log) and returns what it printed.
    pub async fn idnsctl_ok(&self, args: &[&str]) -> String {
        let out = self.idnsctl(args).await;
        let shown = text(&out.stdout);
        assert!(
            out.status.success(),
            "idnsctl {args:?}: {}\nstdout:\n{shown}\nstderr:\n{}\nlog:\n{}",
            out.status,
            text(&out.stderr),
            self.logs()
        );
        shown
    }
}

/// A daemon whose API speaks HTTPS (`daemon.tls`).
impl Idnsd {
    /// The API's `https://` URL.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.api)
    }

    /// Waits until the HTTPS API answers, trusting only the certificates in the PEM file `ca`
    /// (the daemon's own when it is self-signed).
    pub async fn ready_https(&mut self, ca: &Path) {
        let pem = std::fs::read(ca).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("{}/v1/services", self.https_url());
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().expect("idnsd runs").try_wait().unwrap() {
                self.child = None;
                panic!("idnsd exited with {status}; its log:\n{}", self.logs());
            }
            let answer = http.get(&url).bearer_auth(&self.token).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "idnsd's HTTPS API did not come up; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `idnsctl --url <url> ARGS…` with the daemon's token.
    pub async fn idnsctl_at(&self, url: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_idnsctl"));
        cmd.arg("--url")
            .arg(url)
            .args(args)
            .env_remove("IDNS_URL")
            .env_remove("IDNS_CA_FILE")
            .env("IDNS_TOKEN", &self.token);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
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

/// A port free on loopback ([`PRIMARY`]) for both TCP and UDP (an API, an embedded DNS
/// server), bound a moment later by whoever gets it.
pub fn free_port() -> u16 {
    idns_core::test_util::servers::free_port().expect("a free loopback port")
}

/// A free loopback port for an API.
pub fn api_addr() -> SocketAddr {
    SocketAddr::from((PRIMARY, free_port()))
}

/// The value of the sample whose line starts with `prefix` (name and labels, then a space).
pub fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The text of a process's output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
