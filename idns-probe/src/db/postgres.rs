//! The PostgreSQL probe (tokio-postgres; TLS by `sslmode`, with rustls through
//! `tokio-postgres-rustls` on the workspace's aws-lc-rs provider).

use std::error::Error as StdError;

use async_trait::async_trait;
use idns_core::{ConfigError, Probe, ProbeOutcome};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use std::sync::Arc;

use idns_core::tls::AnyName;
use rustls::CertificateError;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::SslMode as TpMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DbSpec, DbTarget, SslMode, judge, must_reopen};
use crate::spec::target::{BuildContext, Target};

/// A built PostgreSQL probe (`kind = "postgres"`).
pub struct PostgresProbe {
    t: DbTarget,
    /// The TLS connector and tokio-postgres' mode (`None`: no TLS).
    tls: Option<(MakeRustlsConnect, TpMode, SslMode)>,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    client: tokio_postgres::Client,
    uses: u32,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for PostgresProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProbe")
            .field("target", &self.t)
            .finish_non_exhaustive()
    }
}

impl PostgresProbe {
    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &DbSpec,
        target: &Target,
    ) -> Result<PostgresProbe, ConfigError> {
        let t = DbTarget::new(ctx, spec, target, 5432)?;
        let tls = match tls(spec) {
            Ok(tls) => tls,
            Err((field, value, problem)) => {
                let mut p = idns_core::Problems::default();
                p.push(format!("{}.{field}", ctx.path), value, problem);
                p.finish()?;
                None
            }
        };
        Ok(PostgresProbe {
            t,
            tls,
            conn: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(self.t.host())
            .port(self.t.port)
            .user(&self.t.user)
            .application_name("idns-probe")
            .connect_timeout(self.t.timeout);
        if let Some(pw) = &self.t.password {
            cfg.password(pw.expose());
        }
        if let Some(db) = &self.t.database {
            cfg.dbname(db);
        }
        let task = match &self.tls {
            None => {
                let (client, connection) =
                    cfg.connect(NoTls).await.map_err(|e| self.describe(&e))?;
                (client, tokio::spawn(async move { drop(connection.await) }))
            }
            Some((rustls, mode, _)) => {
                cfg.ssl_mode(*mode);
                let (client, connection) = cfg
                    .connect(rustls.clone())
                    .await
                    .map_err(|e| self.describe(&e))?;
                (client, tokio::spawn(async move { drop(connection.await) }))
            }
        };
        let (client, task) = task;
        Ok(Conn {
            client,
            uses: 0,
            task,
        })
    }

    /// Runs the query on `conn` (or an empty query on a reused connection of a connect-only
    /// probe, to prove it still works) and returns the rows as text.
    async fn run(
        &self,
        conn: &Conn,
        fresh: bool,
    ) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
        let query = match &self.t.query {
            Some((q, _)) => q.as_str(),
            None if fresh => return Ok(Vec::new()),
            None => "",
        };
        let messages = conn.client.simple_query(query).await?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect())
    }

    async fn attempt(&self) -> Result<(), String> {
        let mut guard = self.conn.lock().await;
        for _ in 0..2 {
            let reuse = guard.as_ref().is_some_and(|c| {
                !c.client.is_closed() && !must_reopen(self.t.reconnect_after, c.uses)
            });
            if !reuse {
                *guard = None;
                *guard = Some(self.connect().await?);
            }
            let Some(conn) = guard.as_mut() else {
                return Err("no connection".to_owned());
            };
            conn.uses += 1;
            match self.run(conn, !reuse).await {
                Ok(rows) => {
                    return match &self.t.query {
                        Some((_, expect)) => judge(expect, &rows),
                        None => Ok(()),
                    };
                }
                Err(e) => {
                    *guard = None;
                    // A reused connection that broke or was ended by the server (restart,
                    // idle timeout, administrator) says nothing about the server as it is
                    // now: try once more on a fresh one.
                    let session_ended = e
                        .as_db_error()
                        .is_none_or(|d| matches!(d.severity(), "FATAL" | "PANIC"));
                    if reuse && session_ended {
                        continue;
                    }
                    return Err(self.describe(&e));
                }
            }
        }
        Err("the connection broke twice in a row".to_owned())
    }

    fn describe(&self, e: &tokio_postgres::Error) -> String {
        if let Some(db) = e.as_db_error() {
            return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        }
        let mut src: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(s) = src {
            let inner = s
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map_or(s, |i| i as &(dyn StdError + 'static));
            if let Some(rustls::Error::InvalidCertificate(c)) = inner.downcast_ref() {
                let why = match c {
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => "does not name the host",
                    _ => "is not trusted (not signed by a CA of sslrootcert, or expired)",
                };
                return format!(
                    "the server's certificate {why} ({}, sslmode {}): {inner}",
                    self.t.shown(),
                    self.tls.as_ref().map_or("", |t| mode_name(t.2))
                );
            }
            if s.to_string().contains("server does not support TLS") {
                return format!(
                    "the server does not speak TLS ({}, sslmode {})",
                    self.t.shown(),
                    self.tls.as_ref().map_or("", |t| mode_name(t.2))
                );
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return format!("connection refused by {}", self.t.shown());
                }
                return format!("{} ({}): {io}", e, self.t.shown());
            }
            src = s.source();
        }
        format!("{e} ({})", self.t.shown())
    }
}

#[async_trait]
impl Probe for PostgresProbe {
    async fn check(&self) -> ProbeOutcome {
        let start = Instant::now();
        let result = tokio::time::timeout(self.t.timeout, self.attempt()).await;
        let latency = start.elapsed();
        if result.is_err() {
            // The connection may be stuck mid-query: start afresh next time.
            *self.conn.lock().await = None;
        }
        let outcome = self.t.outcome(result.map_err(|_| ()), latency);
        crate::probe_log!(
            self.t.debug,
            "idns_probe::postgres",
            probe = %self.t.label,
            server = %self.t.shown(),
            status = ?outcome.status,
            latency = ?outcome.latency,
            reason = %outcome.reason,
            "postgres check"
        );
        outcome
    }
}

fn mode_name(m: SslMode) -> &'static str {
    match m {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

type Bad = (&'static str, String, String);

/// The probe's TLS from `sslmode` and `sslrootcert`; an error names the field, its value and
/// the problem.
fn tls(spec: &DbSpec) -> Result<Option<(MakeRustlsConnect, TpMode, SslMode)>, Bad> {
    let mode = spec.sslmode.unwrap_or(SslMode::Disable);
    let (check_ca, check_name, tp) = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer => (false, false, TpMode::Prefer),
        SslMode::Require => (spec.sslrootcert.is_some(), false, TpMode::Require),
        SslMode::VerifyCa => (true, false, TpMode::Require),
        SslMode::VerifyFull => (true, true, TpMode::Require),
    };
    let mut cfg = match (&spec.sslrootcert, check_ca) {
        (None, true) => {
            return Err((
                "sslrootcert",
                String::new(),
                format!("is needed by sslmode {}", mode_name(mode)),
            ));
        }
        (Some(file), true) => {
            let bad = |e: String| ("sslrootcert", file.display().to_string(), e);
            let mut cfg = crate::tls::with_ca_file(file).map_err(bad)?;
            if !check_name {
                // verify-ca: the chain as checked by the CA file's own verifier, any name.
                let webpki = ca_verifier(file).map_err(bad)?;
                cfg.dangerous()
                    .set_certificate_verifier(Arc::new(AnyName(webpki)));
            }
            cfg
        }
        (_, false) => crate::tls::insecure().map_err(|e| ("sslmode", String::new(), e))?,
    };
    // PostgreSQL negotiates TLS itself; an HTTP ALPN would be refused by newer servers.
    cfg.alpn_protocols.clear();
    Ok(Some((MakeRustlsConnect::new(cfg), tp, mode)))
}

fn ca_verifier(file: &std::path::Path) -> Result<Arc<WebPkiServerVerifier>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(file).map_err(|e| format!("cannot be read: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| format!("is not a PEM bundle: {e}"))?)
            .map_err(|e| format!("holds a bad certificate: {e}"))?;
    }
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())
}
