//! Real servers: postgres
//!
//! The PostgreSQL probe against a real PostgreSQL 15 started from the Debian binaries in a
//! temporary directory on a free loopback port (as the `postgres` user, via `runuser`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use idns_core::ProbeStatus;
use idns_core::test_util::servers::{free_port, require};
use serde_json::json;
use support::{Captured, probe, run};

const PASSWORD: &str = "s3cret-Pr0be-pw";

/// A PostgreSQL server of its own; stopped when dropped.
struct Pg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Pg {
    fn start() -> Option<Pg> {
        let postgres = require(
            "postgres",
            &["/usr/lib/postgresql/15/bin"],
            "the PostgreSQL probe tests",
        )?;
        // Follow a symlink (e.g. /usr/local/bin/postgres) to the directory with all the tools.
        let bin = std::fs::canonicalize(&postgres)
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        run(
            "chown",
            &["-R", "postgres:postgres", dir.path().to_str().unwrap()],
        );
        let pg = Pg {
            bin,
            port: free_port().unwrap(),
            dir,
        };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ],
        );
        pg.up();
        let sql = format!(
            "CREATE ROLE probe LOGIN PASSWORD '{PASSWORD}';
             CREATE TABLE sites (name text, role text);
             INSERT INTO sites VALUES ('primary', 'leader'), ('recovery', NULL);
             GRANT SELECT ON sites TO probe;"
        );
        run(
            &pg.bin.join("psql").to_string_lossy(),
            &[
                "-h",
                pg.dir.path().to_str().unwrap(),
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                &sql,
            ],
        );
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> String {
        let tool = self.bin.join(tool).to_string_lossy().into_owned();
        let mut all = vec!["-u", "postgres", "--", tool.as_str()];
        all.extend_from_slice(args);
        run("runuser", &all)
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").to_string_lossy().into_owned();
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    fn down(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn check(pg: &Pg, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"kind": "postgres", "port": pg.port, "user": "probe",
                       "password": PASSWORD, "database": "postgres"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test]
async fn connect_query_and_secrets() {
    let Some(pg) = Pg::start() else { return };
    let t = Duration::from_secs(5);
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.clone());

    // Option 1: connect and authenticate only.
    let p = probe(check(&pg, json!({"debug": true})), local(), t);
    let o = p.check().await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    // A wrong password: down, with the server's reason and no secret anywhere.
    let wrong = probe(
        check(&pg, json!({"password": "not-the-pw-XYZ"})),
        local(),
        t,
    );
    let o = wrong.check().await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(
        o.reason,
        "FATAL 28P01: password authentication failed for user \"probe\""
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
    assert!(logs.text().contains("postgres check"), "{}", logs.text());

    // Option 2: a query, its cell, its row count.
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
            json!({"send": q, "expect_rows": 1}),
            false,
            "the query returned 2 rows (expected 1)",
        ),
        (
            json!({"send": "SELECT nope FROM sites"}),
            false,
            "ERROR 42703: column \"nope\" does not exist",
        ),
    ] {
        let o = probe(check(&pg, extra.clone()), local(), t).check().await;
        assert_eq!(o.is_up(), up, "{extra}: {o:?}");
        assert_eq!(o.reason, reason, "{extra}");
    }

    // A port nobody listens on.
    let o = probe(
        check(&pg, json!({"port": free_port().unwrap()})),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.starts_with("connection refused by 127.0.0.1:"),
        "{o:?}"
    );
}

#[tokio::test]
async fn a_server_stopped_mid_run_is_down_then_up_after_restart() {
    let Some(pg) = Pg::start() else { return };
    let t = Duration::from_secs(5);
    for reconnect_after in [0, 1, 3] {
        let p = probe(
            check(
                &pg,
                json!({"send": "SELECT 'alive'", "expect": "alive", "reconnect_after": reconnect_after}),
            ),
            local(),
            t,
        );
        for _ in 0..4 {
            let o = p.check().await;
            assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
        }
        pg.down();
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
        pg.up();
        let o = p.check().await;
        assert_eq!(o.status, ProbeStatus::Up, "count {reconnect_after}: {o:?}");
    }
}

/// The rows a session-local table holds after each of five checks: it grows while one
/// connection is reused, and starts again on a new one. The probe expects zero rows, so its
/// reason tells the count ("the query returned 2 rows (expected 0)").
async fn session_rows(pg: &Pg, reconnect_after: u32) -> Vec<String> {
    let q = "CREATE TEMP TABLE IF NOT EXISTS seen (n int); INSERT INTO seen VALUES (1); SELECT n FROM seen";
    let p = probe(
        check(
            pg,
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
    let Some(pg) = Pg::start() else { return };
    assert_eq!(session_rows(&pg, 0).await, ["1", "2", "3", "4", "5"]);
    assert_eq!(session_rows(&pg, 1).await, ["1", "1", "1", "1", "1"]);
    assert_eq!(session_rows(&pg, 2).await, ["1", "2", "1", "2", "1"]);
}

/// A CA's PEM, and a certificate and key for 127.0.0.1 and localhost signed by it.
fn pg_pki() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "idns test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn sslmode_require_and_verify_full() {
    use std::os::unix::fs::PermissionsExt;
    let Some(pg) = Pg::start() else { return };
    let t = Duration::from_secs(5);
    let dir = pg.dir.path();

    // `require` against a server without TLS: down, saying so.
    let o = probe(check(&pg, json!({"sslmode": "require"})), local(), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.contains("does not speak TLS") && o.reason.contains("sslmode require"),
        "{o:?}"
    );

    let (ca, cert, key) = pg_pki();
    let (other_ca, _, _) = pg_pki();
    let (cf, kf) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cf, cert).unwrap();
    std::fs::write(&kf, key).unwrap();
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    for f in [&cf, &kf] {
        run("chown", &["postgres:postgres", f.to_str().unwrap()]);
    }
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_ca).unwrap();
    let conf = std::path::Path::new(&pg.data()).join("postgresql.conf");
    let mut c = std::fs::read_to_string(&conf).unwrap();
    c.push_str(&format!(
        "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        cf.display(),
        kf.display()
    ));
    std::fs::write(&conf, c).unwrap();
    pg.down();
    pg.up();

    let verify = |ca: &str| json!({"sslmode": "verify-full", "sslrootcert": dir.join(ca), "send": "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", "expect": "t"});
    let o = probe(check(&pg, verify("ca.pem")), local(), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
    let o = probe(check(&pg, verify("other-ca.pem")), local(), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.contains("not trusted") && o.reason.contains("sslmode verify-full"),
        "{o:?}"
    );
}
