//! [`EtcdCluster`]: a real etcd of one or three members on loopback high ports, for tests.
//!
//! Each member runs from the installed `etcd` binary (Debian's `etcd-server`) in a directory
//! of its own under the system's temporary directory, with `--heartbeat-interval 50
//! --election-timeout 500` (so leases of 1 s are allowed and a lost leader is noticed within a
//! second) and its log in `m<N>.log` there. Members are stopped by their process id, never
//! by name; dropping the cluster stops them all and removes the directory (kept, and named on
//! stderr, when the test is panicking).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::servers::{free_port, require};

/// How long a member may take to report itself healthy.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long a member may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// A running etcd cluster of real members, each on its own loopback client and peer port.
///
/// Setup failures (a port taken, a member that exits or is not healthy within 10 s) panic
/// with the member's log: they are the test environment's, and the test must not pass.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: PathBuf,
    dir: PathBuf,
    token: String,
    members: Vec<Node>,
    http: reqwest::Client,
}

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `size` members (1 or 3, say) and waits until each is healthy; `None` when
    /// etcd is not installed (see [`require`]: a failure under `IDNS_REQUIRE_SERVERS=1`).
    pub async fn start(size: usize) -> Option<EtcdCluster> {
        assert!(size >= 1, "an etcd cluster needs at least one member");
        let binary = require(
            "etcd",
            &[],
            "Debian package etcd-server; needed for the etcd client and store tests",
        )?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("idns-etcd-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let port = || free_port().unwrap_or_else(|e| panic!("no free port for etcd: {e}"));
        let members = (1..=size)
            .map(|i| Node {
                name: format!("m{i}"),
                client_port: port(),
                peer_port: port(),
                child: None,
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"));
        let mut cluster = EtcdCluster {
            binary,
            dir,
            token: format!("idns-test-{id}"),
            members,
            http,
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        for i in 0..size {
            cluster.wait_healthy(i).await;
        }
        Some(cluster)
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client URL of member `i` (from 0), `http://127.0.0.1:PORT`.
    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops member `i`: SIGTERM, then SIGKILL when it has not exited within 5 s; waits for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if !exits_within(&mut child, STOP_WITHIN) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Kills member `i` with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory (`--initial-cluster-state existing`)
    /// and waits until it is healthy, which needs a quorum of members running.
    pub async fn restart(&mut self, i: usize) {
        self.stop(i);
        self.spawn(i, "existing");
        self.wait_healthy(i).await;
    }

    /// The end of member `i`'s log, for a failure message.
    pub fn log_tail(&self, i: usize) -> String {
        let path = self.dir.join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    // Starting a server is what a test harness is for.
    #[allow(clippy::disallowed_methods)]
    fn spawn(&mut self, i: usize, state: &str) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.members[i];
        let client = format!("http://127.0.0.1:{}", node.client_port);
        let peer = format!("http://127.0.0.1:{}", node.peer_port);
        let out = File::create(self.dir.join(format!("{}.out", node.name)))
            .unwrap_or_else(|e| panic!("cannot create etcd's output file: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share etcd's output file: {e}"));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name")
            .arg(&node.name)
            .arg("--data-dir")
            .arg(self.dir.join(&node.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs"])
            .arg(self.dir.join(format!("{}.log", node.name)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The environment configures etcd too (ETCD_NAME, ETCD_DATA_DIR…): only the flags count.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` says it is healthy, checking all along that our process is
    /// still running (another etcd on the same port would answer too).
    async fn wait_healthy(&mut self, i: usize) {
        let url = format!("{}/health", self.client_url(i));
        let rounds = READY_WITHIN.as_millis() / 50;
        let mut last = String::from("no answer yet");
        for _ in 0..rounds {
            let exited = match self.members[i].child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => panic!("etcd member {i} is not running"),
            };
            if let Some(status) = exited {
                self.members[i].child = None;
                panic!(
                    "etcd member {i} exited ({status}) before it was healthy; its log in {}:\n{}",
                    self.dir.display(),
                    self.log_tail(i)
                );
            }
            match self.http.get(&url).send().await {
                Ok(r) => {
                    let body = r.text().await.unwrap_or_default();
                    if body.contains(r#""health":"true""#) {
                        return;
                    }
                    last = body;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "etcd member {i} was not healthy within {READY_WITHIN:?} (last: {last}); its log in \
             {}:\n{}",
            self.dir.display(),
            self.log_tail(i)
        );
    }
}

/// Whether `child` exits within `limit` (polled every 20 ms).
// A test harness stopping a server may block for it.
#[allow(clippy::disallowed_methods)]
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let rounds = limit.as_millis() / 20;
    for _ in 0..rounds {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
        if std::thread::panicking() {
            // Test output, not library logging: the person debugging needs the logs.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("etcd data and logs kept in {}", self.dir.display());
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
