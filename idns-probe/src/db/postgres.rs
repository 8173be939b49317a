//! The PostgreSQL probe (tokio-postgres, no TLS).

use std::error::Error as StdError;

use async_trait::async_trait;
use idns_core::{ConfigError, Probe, ProbeOutcome};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::{DbSpec, DbTarget, judge, must_reopen};
use crate::spec::target::{BuildContext, Target};

/// A built PostgreSQL probe (`kind = "postgres"`).
pub struct PostgresProbe {
    t: DbTarget,
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
        Ok(PostgresProbe {
            t: DbTarget::new(ctx, spec, target, 5432)?,
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
        let (client, connection) = cfg.connect(NoTls).await.map_err(|e| self.describe(&e))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
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
