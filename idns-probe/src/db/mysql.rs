//! The MySQL/MariaDB probe (mysql_async, no TLS).

use async_trait::async_trait;
use idns_core::{ConfigError, Probe, ProbeOutcome};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{DbSpec, DbTarget, judge, must_reopen};
use crate::spec::target::{BuildContext, Target};

/// A built MySQL/MariaDB probe (`kind = "mysql"`).
pub struct MysqlProbe {
    t: DbTarget,
    conn: Mutex<Option<(Conn, u32)>>,
}

impl std::fmt::Debug for MysqlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlProbe")
            .field("target", &self.t)
            .finish_non_exhaustive()
    }
}

impl MysqlProbe {
    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &DbSpec,
        target: &Target,
    ) -> Result<MysqlProbe, ConfigError> {
        if spec.sslmode.is_some() || spec.sslrootcert.is_some() {
            let mut p = idns_core::Problems::default();
            p.push(
                format!("{}.sslmode", ctx.path),
                "",
                "sslmode and sslrootcert are for PostgreSQL probes only",
            );
            p.finish()?;
        }
        Ok(MysqlProbe {
            t: DbTarget::new(ctx, spec, target, 3306)?,
            conn: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, String> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(self.t.host())
            .tcp_port(self.t.port)
            .user(Some(self.t.user.clone()))
            .pass(self.t.password.as_ref().map(|p| p.expose().to_owned()))
            .db_name(self.t.database.clone())
            // Stay on TCP to the address probed, even when the server is local.
            .prefer_socket(false)
            .stmt_cache_size(0);
        Conn::new(opts).await.map_err(|e| self.describe(&e))
    }

    async fn run(
        &self,
        conn: &mut Conn,
        fresh: bool,
    ) -> Result<Vec<Vec<Option<String>>>, mysql_async::Error> {
        let Some((query, _)) = &self.t.query else {
            if !fresh {
                conn.ping().await?;
            }
            return Ok(Vec::new());
        };
        // Rows of every result set, in order (a query may hold several statements).
        let mut result = conn.query_iter(query.as_str()).await?;
        let mut rows = Vec::new();
        while !result.is_empty() {
            let batch: Vec<Row> = result.collect().await?;
            rows.extend(
                batch
                    .iter()
                    .map(|r| (0..r.len()).map(|i| r.as_ref(i).and_then(text)).collect()),
            );
        }
        Ok(rows)
    }

    async fn attempt(&self) -> Result<(), String> {
        let mut guard = self.conn.lock().await;
        for _ in 0..2 {
            let reuse = guard
                .as_ref()
                .is_some_and(|(_, uses)| !must_reopen(self.t.reconnect_after, *uses));
            if !reuse {
                if let Some((old, _)) = guard.take() {
                    // Say goodbye politely, but never wait long for a dying server.
                    let _ = tokio::time::timeout(self.t.timeout / 4, old.disconnect()).await;
                }
                *guard = Some((self.connect().await?, 0));
            }
            let Some((conn, uses)) = guard.as_mut() else {
                return Err("no connection".to_owned());
            };
            *uses += 1;
            match self.run(conn, !reuse).await {
                Ok(rows) => {
                    return match &self.t.query {
                        Some((_, expect)) => judge(expect, &rows),
                        None => Ok(()),
                    };
                }
                Err(e) => {
                    *guard = None;
                    let server_said = matches!(e, mysql_async::Error::Server(_));
                    // A reused connection that broke says nothing about the server: try once
                    // more on a fresh one.
                    if reuse && !server_said {
                        continue;
                    }
                    return Err(self.describe(&e));
                }
            }
        }
        Err("the connection broke twice in a row".to_owned())
    }

    fn describe(&self, e: &mysql_async::Error) -> String {
        match e {
            mysql_async::Error::Server(s) => {
                format!("error {} ({}): {}", s.code, s.state, s.message)
            }
            mysql_async::Error::Io(io) => {
                let text = io.to_string();
                if text.contains("Connection refused") {
                    format!("connection refused by {}", self.t.shown())
                } else {
                    format!("{} : {text}", self.t.shown())
                }
            }
            other => format!("{other} ({})", self.t.shown()),
        }
    }
}

/// A cell as text; `None` for NULL.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(false).trim_matches('\'').to_owned()),
    }
}

#[async_trait]
impl Probe for MysqlProbe {
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
            "idns_probe::mysql",
            probe = %self.t.label,
            server = %self.t.shown(),
            status = ?outcome.status,
            latency = ?outcome.latency,
            reason = %outcome.reason,
            "mysql check"
        );
        outcome
    }
}
