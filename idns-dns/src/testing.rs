//! Test support (feature `test-util`): a real BIND 9 that takes RFC 2136 updates signed with
//! a TSIG key, and a real PowerDNS with its HTTP API, for this crate's tests and for any other
//! test that needs an authoritative server to fail a name over on.
//!
//! [`Bind::start`] runs `named` in the foreground from a temporary directory, on a free
//! loopback port, serving one or more zones that the key [`Bind::KEY_NAME`] may update; the
//! server is killed when the [`Bind`] is dropped. When `named`, `dig` or `nsupdate` is not
//! installed it prints `skipped: … not installed` and returns `None` (a failure instead under
//! `IDNS_REQUIRE_SERVERS=1`, see [`idns_core::test_util::servers`]).
//!
//! This is test code: it panics when the server cannot be set up or does not answer, with
//! `named`'s log in the message.
//!
//! ```no_run
//! use idns_dns::testing::Bind;
//!
//! let Some(bind) = Bind::start() else { return }; // skipped: named not installed
//! bind.nsupdate("update add app.example.com 30 A 192.0.2.1\n");
//! assert_eq!(bind.short("app.example.com", "A"), ["192.0.2.1"]);
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idns_core::test_util::servers::{free_port, require};

/// A BIND 9 serving some zones from a temporary directory on a loopback port, updatable with
/// the TSIG key [`Bind::KEY_NAME`] / [`Bind::SECRET`]. Killed on drop.
#[derive(Debug)]
pub struct Bind {
    named: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    zones: Vec<String>,
    child: Option<Child>,
}

impl Bind {
    /// The TSIG key's name, as `named.conf` knows it.
    pub const KEY_NAME: &'static str = "idns-key";
    /// The TSIG key (hmac-sha256, base64). A test key: it guards nothing.
    pub const SECRET: &'static str = "aWRucyB0ZXN0IGtleSBmb3IgQklORCwgMzIgYnl0ZXM=";

    /// Starts BIND serving `example.com`; `None` (after printing why) when it is not
    /// installed.
    pub fn start() -> Option<Bind> {
        Bind::start_zones(&["example.com"])
    }

    /// Starts BIND serving `zones` (each with an SOA, an NS `ns1.<zone>` and its address
    /// 127.0.0.1); `None` (after printing why) when it is not installed.
    pub fn start_zones(zones: &[&str]) -> Option<Bind> {
        assert!(!zones.is_empty(), "Bind needs at least one zone");
        let named = require("named", &[], "bind9")?;
        require("dig", &[], "bind9-dnsutils")?;
        require("nsupdate", &[], "bind9-dnsutils")?;
        let dir = tempfile::tempdir().expect("a temporary directory for named");
        let port = free_port().expect("a free loopback port for named");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("key.conf"),
            format!(
                "key \"{}\" {{ algorithm hmac-sha256; secret \"{}\"; }};\n",
                Bind::KEY_NAME,
                Bind::SECRET
            ),
        )
        .unwrap();
        let mut conf = format!(
            "include \"{d}/key.conf\";\n\
             options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; \
             session-keyfile \"{d}/session.key\"; managed-keys-directory \"{d}\"; \
             listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; \
             recursion no; dnssec-validation no; notify no; }};\n\
             controls {{ }};\n"
        );
        for zone in zones {
            let zone = zone.trim_end_matches('.');
            std::fs::write(
                dir.path().join(format!("{zone}.zone")),
                format!(
                    "$TTL 60\n\
                     @ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 604800 30\n\
                     @ IN NS ns1.{zone}.\n\
                     ns1 IN A 127.0.0.1\n"
                ),
            )
            .unwrap();
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type primary; file \"{d}/{zone}.zone\"; \
                 update-policy {{ grant {} zonesub ANY; }}; }};\n",
                Bind::KEY_NAME
            ));
        }
        std::fs::write(dir.path().join("named.conf"), conf).unwrap();
        let mut bind = Bind {
            named,
            dir,
            port,
            zones: zones
                .iter()
                .map(|z| z.trim_end_matches('.').to_owned())
                .collect(),
            child: None,
        };
        bind.restart();
        Some(bind)
    }

    /// Where BIND answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The zones it serves, in the order given, without the final dot.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// Its directory (configuration, zone files, journals, `named.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What `named` logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Whether `named` is running (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// (Re)starts `named` on the same port with the same zones (and the updates it journaled),
    /// stopping it first if it runs; returns once it answers the first zone's SOA. Panics with
    /// its log when it does not within 15 s.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("named.log"))
            .unwrap();
        let child = Command::new(&self.named)
            .arg("-g")
            .arg("-c")
            .arg(self.dir.path().join("named.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("named starts");
        self.child = Some(child);
        let zone = format!("{}.", self.zones[0]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self
                .dig(&[&zone, "SOA", "+short"])
                .contains(&format!("ns1.{zone}"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("named did not start on port {}:\n{}", self.port, self.log());
    }

    /// Kills `named` (SIGKILL: no goodbye, as in a crash); updates it acknowledged are in its
    /// journal and come back with [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `dig @127.0.0.1 -p PORT +norec +time=1 +tries=1 ARGS…` and returns its output.
    pub fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+norec", "+time=1", "+tries=1"])
            .args(args)
            .output()
            .expect("dig runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `+short` answer for `name` and `rtype`, sorted (empty when there is none or BIND
    /// does not answer).
    pub fn short(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig(&[name, rtype, "+short"])
            .lines()
            .filter(|l| !l.starts_with(';'))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// The first zone's SOA serial. Panics when BIND does not answer.
    pub fn serial(&self) -> u64 {
        let soa = self.short(&self.zones[0], "SOA");
        soa.first()
            .and_then(|s| s.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no SOA serial for {} in {soa:?}", self.zones[0]))
    }

    /// Runs an `nsupdate` script (`update …` lines) against the first zone, signed with the
    /// right key, and asserts that it succeeded.
    pub fn nsupdate(&self, commands: &str) {
        let out = self.nsupdate_with(Bind::SECRET, commands);
        assert!(out.status.success(), "nsupdate failed: {out:?}");
    }

    /// Runs an `nsupdate` script against the first zone signed with `secret` (for the key
    /// [`Bind::KEY_NAME`]) and returns its output, successful or not.
    pub fn nsupdate_with(&self, secret: &str, commands: &str) -> std::process::Output {
        let script = format!(
            "server 127.0.0.1 {}\nzone {}\n{commands}send\n",
            self.port, self.zones[0]
        );
        let mut child = Command::new("nsupdate")
            .arg("-y")
            .arg(format!("hmac-sha256:{}:{secret}", Bind::KEY_NAME))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().expect("nsupdate finishes")
    }

    /// The TSIG key BIND accepts updates from.
    #[cfg(feature = "rfc2136")]
    pub fn tsig(&self) -> crate::rfc2136::TsigSpec {
        crate::rfc2136::TsigSpec {
            name: Bind::KEY_NAME.into(),
            algorithm: crate::rfc2136::TsigAlgorithmName::HmacSha256,
            secret: idns_core::Secret::new(Bind::SECRET),
            fudge: 300,
        }
    }

    /// An RFC 2136 backend configuration for this server: all its zones, the right key, a 2 s
    /// timeout.
    #[cfg(feature = "rfc2136")]
    pub fn rfc2136_spec(&self) -> crate::rfc2136::Rfc2136Spec {
        let zones: Vec<idns_core::DnsName> = self
            .zones
            .iter()
            .map(|z| z.parse().expect("a zone name"))
            .collect();
        let mut spec = crate::rfc2136::Rfc2136Spec::new(self.addr(), &zones, self.tsig());
        spec.timeout = Duration::from_secs(2);
        spec
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PowerDNS 4 (`pdns_server` with the sqlite3 backend) serving `example.com` from a
/// temporary directory, on free loopback ports: its HTTP API takes [`PowerDns::API_KEY`], and
/// RFC 2136 updates signed with the key [`Bind::KEY_NAME`] / [`Bind::SECRET`] are allowed.
/// Killed on drop.
#[cfg(feature = "powerdns")]
#[derive(Debug)]
pub struct PowerDns {
    dir: tempfile::TempDir,
    pdnsutil: PathBuf,
    dns_port: u16,
    api_port: u16,
    child: Option<Child>,
}

#[cfg(feature = "powerdns")]
impl PowerDns {
    /// The API key the server takes. A test key: it guards nothing.
    pub const API_KEY: &'static str = "idns-test-api-key";
    /// The zone it serves.
    pub const ZONE: &'static str = "example.com";

    /// Starts PowerDNS and creates its zone; `None` (after printing why) when `pdns_server`,
    /// `pdnsutil`, `sqlite3` or the sqlite3 schema is not installed.
    pub async fn start() -> Option<PowerDns> {
        let server = require("pdns_server", &[], "pdns-server")?;
        let pdnsutil = require("pdnsutil", &[], "pdns-server")?;
        let sqlite3 = require("sqlite3", &[], "sqlite3")?;
        let schema = "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql";
        if !Path::new(schema).exists() {
            require("pdns-backend-sqlite3-schema", &[], "pdns-backend-sqlite3")?;
        }
        let dir = tempfile::tempdir().expect("a temporary directory for PowerDNS");
        let db = dir.path().join("pdns.sqlite3");
        let status = Command::new(&sqlite3)
            .arg(&db)
            .stdin(std::fs::File::open(schema).expect("the sqlite3 schema"))
            .status()
            .expect("sqlite3 runs");
        assert!(
            status.success(),
            "sqlite3 could not create PowerDNS's database"
        );
        // A port can still be taken between choosing it and the server binding it; a server
        // that exits before its API answers is started again on other ports.
        let mut pdns = PowerDns {
            dir,
            pdnsutil,
            dns_port: 0,
            api_port: 0,
            child: None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            pdns.dns_port = free_port().expect("a free port");
            pdns.api_port = free_port().expect("a free port");
            pdns.spawn(&server, &db);
            match pdns.create_zone().await {
                Ok(()) => return Some(pdns),
                Err(exited) if attempt < 3 => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("PowerDNS exited at start ({exited}); trying other ports");
                    }
                }
                Err(exited) => panic!("PowerDNS exited at start ({exited}):\n{}", pdns.log()),
            }
        }
    }

    /// Writes `pdns.conf` for this server's ports and starts `pdns_server`.
    fn spawn(&mut self, server: &Path, db: &Path) {
        let d = self.dir.path().display();
        std::fs::write(
            self.dir.path().join("pdns.conf"),
            format!(
                "launch=gsqlite3\ngsqlite3-database={}\nlocal-address=127.0.0.1\n\
                 local-port={}\nsocket-dir={d}\ndaemon=no\nguardian=no\n\
                 disable-syslog=yes\nwebserver=yes\nwebserver-address=127.0.0.1\n\
                 webserver-port={}\nwebserver-allow-from=127.0.0.0/8\napi=yes\n\
                 api-key={}\nsecurity-poll-suffix=\ndnsupdate=yes\n\
                 allow-dnsupdate-from=127.0.0.0/8\nloglevel=4\n",
                db.display(),
                self.dns_port,
                self.api_port,
                Self::API_KEY,
            ),
        )
        .expect("pdns.conf written");
        let log = std::fs::File::create(self.dir.path().join("pdns.log")).expect("pdns.log");
        self.child = Some(
            Command::new(server)
                .arg(format!("--config-dir={d}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("pdns_server starts"),
        );
    }

    /// The API's base URL.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Where it answers DNS queries (UDP and TCP).
    pub fn dns(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    /// Creates the zone through the API once it answers (the server takes a moment to
    /// start; 15 s at most), then lets the TSIG key update it. `Err` with the exit status when
    /// the server exited before its API answered (a port taken under it, say).
    async fn create_zone(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let body = serde_json::json!({
            "name": format!("{}.", Self::ZONE),
            "kind": "Native",
            "nameservers": [format!("ns1.{}.", Self::ZONE)],
        });
        loop {
            let sent = http
                .post(format!("{}/api/v1/servers/localhost/zones", self.api()))
                .header("X-API-Key", Self::API_KEY)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().as_u16() == 201 => break,
                Ok(r) => panic!(
                    "creating the zone: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(_) if Instant::now() < deadline => {
                    if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                        return Err(status.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "PowerDNS API not up on port {}: {e}\n{}",
                    self.api_port,
                    self.log()
                ),
            }
        }
        let d = format!("--config-dir={}", self.dir.path().display());
        for args in [
            vec![
                d.as_str(),
                "import-tsig-key",
                Bind::KEY_NAME,
                "hmac-sha256",
                Bind::SECRET,
            ],
            vec![
                d.as_str(),
                "set-meta",
                Self::ZONE,
                "TSIG-ALLOW-DNSUPDATE",
                Bind::KEY_NAME,
            ],
        ] {
            let out = Command::new(&self.pdnsutil)
                .args(&args)
                .output()
                .expect("pdnsutil runs");
            assert!(
                out.status.success(),
                "pdnsutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

#[cfg(feature = "powerdns")]
impl Drop for PowerDns {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
