//! Real servers: mariadbd
//!
//! The MySQL/MariaDB probe against a real MariaDB started from the Debian binaries in a
//! temporary directory on a free loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use idns_core::ProbeStatus;
use idns_core::test_util::servers::{free_port, require};
use serde_json::json;
use support::{Captured, probe, run};

const PASSWORD: &str = "s3cret-Maria-pw";

/// A MariaDB server of its own; stopped when dropped.
struct Maria {
    daemon: PathBuf,
    client: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Maria {
    fn start() -> Option<Maria> {
        let daemon = require("mariadbd", &[], "the MariaDB probe tests")?;
        let install = require("mariadb-install-db", &[], "the MariaDB probe tests")?;
        let client = require("mariadb", &[], "the MariaDB probe tests")?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A temporary directory of its own: parallel installs sharing /tmp collide on the
        // names of their temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        run(
            install.to_str().unwrap(),
            &[
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                &format!("--tmpdir={}", tmp.display()),
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
        );
        let m = Maria {
            daemon,
            client,
            dir,
            port: free_port().unwrap(),
            child: Mutex::new(None),
        };
        m.up();
        m.sql(&format!(
            "CREATE USER 'probe'@'%' IDENTIFIED BY '{PASSWORD}';
             CREATE DATABASE app;
             CREATE TABLE app.sites (name varchar(20), role varchar(20));
             INSERT INTO app.sites VALUES ('primary', 'leader'), ('recovery', NULL);
             GRANT ALL ON app.* TO 'probe'@'%';"
        ));
        Some(m)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn sql(&self, sql: &str) -> String {
        run(
            self.client.to_str().unwrap(),
            &[
                "--no-defaults",
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "root",
                "-e",
                sql,
            ],
        )
    }

    fn up(&self) {
        let child = Command::new(&self.daemon)
            .args([
                "--no-defaults",
                &format!("--datadir={}", self.path("data")),
                &format!("--tmpdir={}", self.path("tmp")),
                &format!("--port={}", self.port),
                "--bind-address=127.0.0.1",
                &format!("--socket={}", self.path("sock")),
                "--user=root",
                &format!("--pid-file={}", self.path("pid")),
                &format!("--log-error={}", self.path("err.log")),
                "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(&self.client)
                .args([
                    "--no-defaults",
                    "-h",
                    "127.0.0.1",
                    "-P",
                    &self.port.to_string(),
                    "-u",
                    "root",
                    "-e",
                    "select 1",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(Path::new(&self.path("err.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM (a clean shutdown) and waits for it to exit.
    fn down(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            run("kill", &["-TERM", &child.id().to_string()]);
            let _ = child.wait();
        }
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn check(m: &Maria, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"kind": "mysql", "port": m.port, "user": "probe",
                       "password": PASSWORD, "database": "app"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test]
async fn connect_query_and_secrets() {
    let Some(m) = Maria::start() else { return };
    let t = Duration::from_secs(5);
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.clone());

    let p = probe(check(&m, json!({"debug": true})), local(), t);
    let o = p.check().await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    let wrong = probe(check(&m, json!({"password": "not-the-pw-XYZ"})), local(), t);
    let o = wrong.check().await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason
            .starts_with("error 1045 (28000): Access denied for user 'probe'@"),
        "{o:?}"
    );
    for shown in [
        format!("{p:?}"),
        format!("{wrong:?}"),
        format!("{o:?}"),
        logs.text(),
    ] {
        assert!(!shown.contains(PASSWORD), "the password leaked: {shown}");
        assert!(
            !shown.contains("not-the-pw-XYZ"),
            "the password leaked: {shown}"
        );
    }
    assert!(logs.text().contains("mysql check"), "{}", logs.text());

    let q = "SELECT name, role FROM sites ORDER BY name";
    for (extra, up, reason) in [
        (
            json!({"send": q, "expect": "leader", "row": 1, "column": 2}),
            true,
            "",
        ),
        (
            json!({"send": q, "expect": "PRIMARY", "case_insensitive": true}),
            true,
            "",
        ),
        (json!({"send": q, "expect_rows": 2}), true, ""),
        (
            json!({"send": q, "expect": "leader", "row": 2, "column": 1}),
            false,
            "row 2 column 1 is \"recovery\", \"leader\" not found",
        ),
        (
            json!({"send": q, "expect": "leader", "row": 2, "column": 2}),
            false,
            "row 2 column 2 is NULL, \"leader\" not found",
        ),
        (
            json!({"send": q, "expect": "leader", "row": 3}),
            false,
            "row 3 is not in the result (2 rows)",
        ),
        (
            json!({"send": q, "expect": "leader", "column": 3}),
            false,
            "column 3 is not in the result (2 columns)",
        ),
        (
            json!({"send": "SELECT nope FROM sites"}),
            false,
            "error 1054 (42S22): Unknown column 'nope'",
        ),
    ] {
        let o = probe(check(&m, extra.clone()), local(), t).check().await;
        assert_eq!(o.is_up(), up, "{extra}: {o:?}");
        // The server's own message may go on (MariaDB names the clause): compare the start.
        assert!(o.reason.starts_with(reason), "{extra}: {o:?}");
        assert_eq!(o.reason.is_empty(), reason.is_empty(), "{extra}: {o:?}");
    }
}

#[tokio::test]
async fn a_server_stopped_mid_run_is_down_then_up_after_restart() {
    let Some(m) = Maria::start() else { return };
    let t = Duration::from_secs(5);
    for reconnect_after in [0, 1, 3] {
        let p = probe(
            check(
                &m,
                json!({"send": "SELECT 'alive'", "expect": "alive", "reconnect_after": reconnect_after}),
            ),
            local(),
            t,
        );
        for _ in 0..4 {
            let o = p.check().await;
            assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
        }
        m.down();
        let o = p.check().await;
        assert_eq!(
            o.status,
            ProbeStatus::Down,
            "count {reconnect_after}: {o:?}"
        );
        assert!(
            o.reason.starts_with("connection refused by 127.0.0.1:"),
            "{o:?}"
        );
        m.up();
        let o = p.check().await;
        assert_eq!(o.status, ProbeStatus::Up, "count {reconnect_after}: {o:?}");
    }
}

/// Rows of a session-local table after each of five checks (see the PostgreSQL test).
async fn session_rows(m: &Maria, reconnect_after: u32) -> Vec<String> {
    let q = "CREATE TEMPORARY TABLE IF NOT EXISTS seen (n int); INSERT INTO seen VALUES (1); SELECT n FROM seen";
    let p = probe(
        check(
            m,
            json!({"send": q, "expect_rows": 0, "reconnect_after": reconnect_after}),
        ),
        local(),
        Duration::from_secs(5),
    );
    let mut counts = Vec::new();
    for _ in 0..5 {
        let o = p.check().await;
        let n = o
            .reason
            .strip_prefix("the query returned ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or(&o.reason)
            .to_owned();
        counts.push(n);
    }
    counts
}

#[tokio::test]
async fn the_count_knob_reuses_one_connection_for_that_many_checks() {
    let Some(m) = Maria::start() else { return };
    assert_eq!(session_rows(&m, 0).await, ["1", "2", "3", "4", "5"]);
    assert_eq!(session_rows(&m, 1).await, ["1", "1", "1", "1", "1"]);
    assert_eq!(session_rows(&m, 2).await, ["1", "2", "1", "2", "1"]);
}
