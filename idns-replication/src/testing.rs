//! Test support (feature `test-util`): a real PostgreSQL primary with a streaming standby, for
//! this crate's tests and for any other test that needs a database to fail over.
//!
//! [`PgPair::start`] makes a primary (`a`) with `initdb` in a temporary directory and a
//! standby (`b`) from it with `pg_basebackup`, each on a free loopback port; both are stopped
//! (immediate mode) when the [`PgPair`] is dropped, and so are drill copies the backend left
//! beside them. When the PostgreSQL binaries are not installed it prints `skipped: … not
//! installed` and returns `None` (a failure instead under `IDNS_REQUIRE_SERVERS=1`, see
//! [`idns_core::test_util::servers`]). As root the servers run as the `postgres` user.
//!
//! This is test code: it panics when a server cannot be set up, with the program's output in
//! the message.
//!
//! ```no_run
//! use idns_replication::testing::PgPair;
//!
//! # async fn f() {
//! let Some(pair) = PgPair::start() else { return }; // skipped: postgres not installed
//! pair.a.client().await.batch_execute("CREATE TABLE items (id int)").await.unwrap();
//! let spec = pair.spec("db", ["primary", "recovery"], &["public.items"], "stop");
//! # }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use idns_core::test_util::servers::{free_port, require};

use crate::postgres::PgSpec;

/// Where the Debian packages put the PostgreSQL 15 programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether this process runs as root (then PostgreSQL's programs run as `postgres`).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs a PostgreSQL program from [`BIN`] (as the `postgres` user when root) and returns its
/// output, successful or not.
pub fn pg(program: &str, args: &[&str]) -> Output {
    try_pg(program, args).unwrap_or_else(|e| panic!("{program} does not run: {e}"))
}

fn try_pg(program: &str, args: &[&str]) -> std::io::Result<Output> {
    let bin = Path::new(BIN).join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).output()
}

/// Runs a PostgreSQL program like [`pg`] and panics with its output when it fails.
pub fn pg_ok(program: &str, args: &[&str]) {
    let out = pg(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One server of a [`PgPair`]: its data directory and ports.
#[derive(Debug, Clone)]
pub struct PgNode {
    /// The data directory (owned by `postgres` when root).
    pub data: PathBuf,
    /// The port it listens on, on 127.0.0.1 (given on the command line, so a `pg_rewind`
    /// that copies the other side's configuration keeps it).
    pub port: u16,
    /// A free port for drill copies made at this node's site.
    pub drill_port: u16,
}

impl PgNode {
    /// Starts the server on its port and waits until it accepts connections; its log goes to
    /// `<data>.log`.
    pub fn start(&self) {
        let d = self.data.display().to_string();
        pg_ok(
            "pg_ctl",
            &[
                "start",
                "-D",
                &d,
                "-w",
                "-l",
                &format!("{d}.log"),
                "-o",
                &format!("-p {}", self.port),
            ],
        );
    }

    /// Stops the server with `pg_ctl stop -m MODE` (`immediate`: as in a crash; `fast`: a clean
    /// shutdown) and waits; panics when it was not running.
    pub fn stop(&self, mode: &str) {
        pg_ok(
            "pg_ctl",
            &[
                "stop",
                "-D",
                &self.data.display().to_string(),
                "-m",
                mode,
                "-w",
            ],
        );
    }

    /// Whether a server runs on this data directory (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        pg(
            "pg_ctl",
            &["status", "-D", &self.data.display().to_string()],
        )
        .status
        .success()
    }

    /// Turns TLS on (`ssl = on` with the given PEM certificate chain and key, through
    /// `ALTER SYSTEM` and a reload) or off (`None`). The files go beside the data directory,
    /// the key with mode 0600 and, as root, owned by `postgres`, as the server requires.
    pub async fn set_ssl(&self, cert_and_key: Option<(&str, &str)>) {
        let c = self.client().await;
        let statements = match cert_and_key {
            Some((cert, key)) => {
                let base = self.data.display().to_string();
                let (cf, kf) = (format!("{base}.server.crt"), format!("{base}.server.key"));
                fs::write(&cf, cert).unwrap();
                fs::write(&kf, key).unwrap();
                fs::set_permissions(&kf, fs::Permissions::from_mode(0o600)).unwrap();
                if is_root() {
                    for f in [&cf, &kf] {
                        let out = Command::new("chown")
                            .args(["postgres:", f])
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "chown {f}: {out:?}");
                    }
                }
                vec![
                    format!("ALTER SYSTEM SET ssl_cert_file = '{cf}'"),
                    format!("ALTER SYSTEM SET ssl_key_file = '{kf}'"),
                    "ALTER SYSTEM SET ssl = on".to_owned(),
                ]
            }
            None => vec!["ALTER SYSTEM SET ssl = off".to_owned()],
        };
        for sql in statements {
            c.batch_execute(&sql).await.unwrap();
        }
        let reloaded: bool = c
            .query_one("SELECT pg_reload_conf()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(reloaded, "the configuration of port {} reloaded", self.port);
        // The reload is asynchronous: wait until a new session sees the setting.
        let want = if cert_and_key.is_some() { "on" } else { "off" };
        for _ in 0..100 {
            let now: String = self
                .client()
                .await
                .query_one("SHOW ssl", &[])
                .await
                .unwrap()
                .get(0);
            if now == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("ssl = {want} not applied on port {}", self.port);
    }

    /// Its connection string, as the `postgres` user to the `postgres` database.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A connection to it (its connection task runs on the current tokio runtime). Panics when
    /// it does not accept one.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.try_client()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to port {}: {e}", self.port))
    }

    /// A connection to it, or why there is none (e.g. it is stopped).
    pub async fn try_client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (c, conn) = tokio_postgres::connect(&self.conninfo(), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(c)
    }
}

/// A PostgreSQL 15 primary (`a`) and its streaming standby (`b`) on loopback, in a temporary
/// directory. Both (and any drill copies beside them) are stopped on drop.
#[derive(Debug)]
pub struct PgPair {
    dir: tempfile::TempDir,
    /// The first primary.
    pub a: PgNode,
    /// The standby, streaming from `a` (`pg_basebackup -R`).
    pub b: PgNode,
}

impl PgPair {
    /// Makes and starts the pair: `initdb` (checksums, trust authentication on 127.0.0.1,
    /// `wal_log_hints` for `pg_rewind`, `fsync = off`), then the standby from a base backup.
    /// `None` (after printing why) when PostgreSQL is not installed.
    pub fn start() -> Option<PgPair> {
        for b in ["postgres", "pg_basebackup", "pg_rewind"] {
            require(b, &[BIN], "PostgreSQL streaming replication tests")?;
        }
        let dir = tempfile::tempdir().expect("a temporary directory for PostgreSQL");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let node = |name: &str| PgNode {
            data: dir.path().join(name),
            port: free_port().expect("a free loopback port"),
            drill_port: free_port().expect("a free loopback port"),
        };
        let (a, b) = (node("a"), node("b"));
        pg_ok(
            "initdb",
            &[
                "-D",
                &a.data.display().to_string(),
                "--data-checksums",
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = '256MB'\n\
             hot_standby = on\nwal_log_hints = on\nfsync = off\nshared_buffers = '32MB'\n",
            dir.path().display()
        );
        let mut c = fs::read_to_string(a.data.join("postgresql.conf")).unwrap();
        c.push_str(&conf);
        fs::write(a.data.join("postgresql.conf"), c).unwrap();
        let mut hba = fs::read_to_string(a.data.join("pg_hba.conf")).unwrap();
        hba.push_str(
            "\nhost replication all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n",
        );
        fs::write(a.data.join("pg_hba.conf"), hba).unwrap();
        // From here on, drop stops whatever was started.
        let pair = PgPair { dir, a, b };
        pair.a.start();
        pg_ok(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pair.a.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &pair.b.data.display().to_string(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        pair.b.start();
        Some(pair)
    }

    /// The temporary directory holding both data directories (writable by anyone, so the
    /// backend's state and saved rows can go there too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A configuration for idns-replication's PostgreSQL backend: one resource `resource`
    /// whose sites `sites[0]` and `sites[1]` are `a` and `b` (with their drill ports),
    /// checksumming `tables`, fencing with `fence` (`stop`, the only mode the backend offers;
    /// any other value is refused when the specification is validated), its state file and
    /// save directory in [`dir`](Self::dir).
    pub fn spec(&self, resource: &str, sites: [&str; 2], tables: &[&str], fence: &str) -> PgSpec {
        let site = |name: &str, node: &PgNode| {
            serde_json::json!({
                "site": name, "host": "127.0.0.1", "port": node.port, "data_dir": node.data,
                "bin_dir": BIN, "drill_port": node.drill_port
            })
        };
        serde_json::from_value(serde_json::json!({
            "state_file": self.dir().join("idns-state.json"),
            "save_dir": self.dir().join("saved"),
            "resources": [{
                "id": resource,
                "tables": tables,
                "fence": fence,
                "sites": [site(sites[0], &self.a), site(sites[1], &self.b)]
            }]
        }))
        .expect("a valid PostgreSQL backend specification")
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for node in [&self.a, &self.b] {
            for data in [
                node.data.clone(),
                PathBuf::from(format!("{}.idns-drill", node.data.display())),
            ] {
                if data.exists() {
                    let _ = try_pg(
                        "pg_ctl",
                        &["stop", "-D", &data.display().to_string(), "-m", "immediate"],
                    );
                }
            }
        }
    }
}

/// A hook for the command backend that keeps each site's role and data in a state directory,
/// as a storage array would (`$HOOK_STATE/<site>.role`, `$HOOK_STATE/<site>.data/`): enough to
/// pass the conformance steps and to switch a service over, without parsing JSON. Every request
/// is appended to `$HOOK_STATE/requests.log`; with `HOOK_STATUS_FAILS=1` its status fails as an
/// unreachable array's would. [`HookArray`] sets it up.
pub const ARRAY_HOOK: &str = r#"#!/bin/sh
set -eu
S="$HOOK_STATE"
cat >> "$S/requests.log"
echo >> "$S/requests.log"
manifest() { # root, subdirectory
  printf '{"manifest":{"entries":{'
  first=1
  if [ -d "$1/$2" ]; then
    for f in $(cd "$1" && find "./$2" -type f | sort); do
      k=${f#./}
      k=${k#/}
      sum=$(sha256sum "$1/$k" | cut -d' ' -f1)
      size=$(stat -c %s "$1/$k")
      [ $first = 1 ] || printf ','
      first=0
      printf '"%s":{"size":%s,"checksum":"%s"}' "$k" "$size" "$sum"
    done
  fi
  printf '}}}\n'
}
case "$IDNS_OPERATION" in
status)
  if [ "${HOOK_STATUS_FAILS:-0}" = 1 ]; then
    echo '{"error":"the array is unreachable","transient":true}'
    exit 1
  fi
  printf '{"sites":['
  first=1
  for s in $IDNS_SITES; do
    [ $first = 1 ] || printf ','
    first=0
    printf '{"site":"%s","role":"%s","lag_ms":250,"lag_bytes":4096}' "$s" "$(cat "$S/$s.role")"
  done
  printf ']}\n' ;;
promote)
  if [ "$IDNS_DRILL" = 1 ]; then
    if [ "${HOOK_NO_DRILL:-0}" = 1 ]; then
      echo '{"error":"this array cannot clone","kind":"unsupported"}'
      exit 1
    fi
    rm -rf "$S/$IDNS_SITE.drill"
    cp -r "$S/$IDNS_SITE.data" "$S/$IDNS_SITE.drill"
    echo '{"position":"clone"}'
    exit 0
  fi
  echo primary > "$S/$IDNS_SITE.role"
  echo '{"rpo_ms":1500,"position":"snapshot-'"$IDNS_EPOCH"'"}' ;;
fence)
  if [ "$IDNS_DRILL" = 1 ]; then rm -rf "$S/$IDNS_SITE.drill"; exit 0; fi
  if [ "$(cat "$S/$IDNS_SITE.role")" = primary ]; then echo fenced > "$S/$IDNS_SITE.role"; fi ;;
reprotect)
  for s in $IDNS_SITES; do
    [ "$s" = "$IDNS_PRIMARY" ] && continue
    echo replica > "$S/$s.role"
    rm -rf "$S/$s.data"
    cp -r "$S/$IDNS_PRIMARY.data" "$S/$s.data"
  done ;;
integrity)
  dir="$S/$IDNS_SITE.data"
  [ "$IDNS_DRILL" = 1 ] && dir="$S/$IDNS_SITE.drill"
  if [ "$IDNS_INTEGRITY" = mark ]; then
    mkdir -p "$dir/markers/$IDNS_LABEL"
    echo "marker $IDNS_LABEL epoch $IDNS_EPOCH" > "$dir/markers/$IDNS_LABEL/0.txt"
    manifest "$dir" "markers/$IDNS_LABEL"
  else
    manifest "$dir" ""
  fi ;;
esac
"#;

/// A storage array behind the command backend's [`ARRAY_HOOK`], in a directory of its own:
/// the first site primary, the others replicas, each with a `disk` file.
#[derive(Debug)]
pub struct HookArray {
    /// The hook script (`hook.sh`).
    pub hook: PathBuf,
    /// The state directory the hook keeps (its `HOOK_STATE`).
    pub state: PathBuf,
}

impl HookArray {
    /// Writes the hook and the sites' state into `root` (which must exist).
    pub fn new(root: &Path, sites: &[&str]) -> HookArray {
        let state = root.join("state");
        for (i, site) in sites.iter().enumerate() {
            fs::create_dir_all(state.join(format!("{site}.data"))).unwrap();
            let role = if i == 0 { "primary" } else { "replica" };
            fs::write(state.join(format!("{site}.role")), format!("{role}\n")).unwrap();
        }
        if let Some(first) = sites.first() {
            fs::write(state.join(format!("{first}.data/disk")), "vm disk").unwrap();
        }
        let hook = root.join("hook.sh");
        fs::write(&hook, ARRAY_HOOK).unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        HookArray { hook, state }
    }
}
