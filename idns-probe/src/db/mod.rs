//! Database probes: the paper's option 1 (connect and authenticate) and option 2 (run a query
//! and check a cell or the row count), with F5's connection-reuse count.

// Without either database feature the shared parts have no user.
#![cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

use serde::{Deserialize, Serialize};

#[cfg(feature = "mysql")]
pub use mysql::MysqlProbe;
#[cfg(feature = "postgres")]
pub use postgres::PostgresProbe;

use crate::matcher::Matcher;
use crate::spec::target::{AliasSpec, BuildContext, Endpoint, Target};
use idns_core::Problems;

/// Passwords are [`idns_core::Secret`]s: never in `Debug`, logs or errors.
pub use idns_core::Secret;

/// A database check, as written (`kind = "postgres"` or `kind = "mysql"`).
///
/// Without `send` the probe connects and authenticates only (the paper's option 1). With
/// `send` it runs that query (option 2) and, when asked, checks the text of one cell
/// (`expect` / `expect_regex` at `row`, `column`, counted from 1) or the number of rows
/// (`expect_rows`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSpec {
    /// The server's port (default 5432 for PostgreSQL, 3306 for MySQL; `alias.port` wins).
    #[serde(default)]
    pub port: Option<u16>,
    /// The user to log in as.
    pub user: String,
    /// Its password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Or the name of an environment variable holding the password, read when the probe is
    /// built (keeps the secret out of the configuration file).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The database to connect to (default: the server's default for the user).
    #[serde(default)]
    pub database: Option<String>,
    /// The query to run (the F5 "send string"); leave it out to only connect.
    #[serde(default)]
    pub send: Option<String>,
    /// Text the cell at `row`/`column` must contain (the F5 "receive string").
    #[serde(default)]
    pub expect: Option<String>,
    /// A regex the cell must match (instead of `expect`).
    #[serde(default)]
    pub expect_regex: Option<String>,
    /// Compare ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Row of the cell, from 1 (the F5 "receive row").
    #[serde(default = "one")]
    pub row: usize,
    /// Column of the cell, from 1 (the F5 "receive column").
    #[serde(default = "one")]
    pub column: usize,
    /// The number of rows the query must return (instead of a cell).
    #[serde(default)]
    pub expect_rows: Option<usize>,
    /// Checks that reuse one connection before it is reopened (the F5 "count"); 0 keeps it
    /// open for good, 1 opens a new connection every time.
    #[serde(default)]
    pub reconnect_after: u32,
    /// PostgreSQL only: TLS as libpq's `sslmode` (default `disable`: no TLS).
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// PostgreSQL only: a PEM file of the CAs that sign the server's certificate, needed by
    /// `verify-ca` and `verify-full` (and making `require` check the certificate's CA, as in
    /// libpq).
    #[serde(default)]
    pub sslrootcert: Option<std::path::PathBuf>,
    /// Probe another address and/or port on the site's behalf.
    #[serde(default)]
    pub alias: Option<AliasSpec>,
    /// Log this probe's details at `info` instead of `debug`.
    #[serde(default)]
    pub debug: bool,
}

/// TLS of a PostgreSQL probe, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, its certificate unchecked.
    Prefer,
    /// TLS or no connection, its certificate unchecked (unless `sslrootcert` is given).
    Require,
    /// TLS with a certificate signed by a CA of `sslrootcert`.
    VerifyCa,
    /// That, and the certificate names the probed host.
    VerifyFull,
}

fn one() -> usize {
    1
}

/// What the query's result must show.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// Only that the query ran.
    Ran,
    /// A cell (0-based here) matching.
    Cell {
        row: usize,
        column: usize,
        matcher: Matcher,
    },
    /// A row count.
    Rows(usize),
}

/// The validated, kind-independent part of a database probe.
#[derive(Debug, Clone)]
pub(crate) struct DbTarget {
    pub(crate) label: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) database: Option<String>,
    pub(crate) query: Option<(String, Expect)>,
    pub(crate) reconnect_after: u32,
    pub(crate) timeout: std::time::Duration,
    pub(crate) debug: bool,
}

impl DbTarget {
    /// The outcome of one attempt bounded by the probe's timeout; `Err(())` is a timeout
    /// (the caller drops its connection: it may be stuck mid-query).
    pub(crate) fn outcome(
        &self,
        result: Result<Result<(), String>, ()>,
        latency: std::time::Duration,
    ) -> idns_core::ProbeOutcome {
        match result {
            Ok(Ok(())) => idns_core::ProbeOutcome::up(latency),
            Ok(Err(reason)) => idns_core::ProbeOutcome::down(latency, reason),
            Err(()) => {
                let mut o = idns_core::ProbeOutcome::timeout(latency);
                o.reason = format!(
                    "no answer from {} within {}",
                    self.shown(),
                    humantime::format_duration(self.timeout)
                );
                o
            }
        }
    }

    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &DbSpec,
        target: &Target,
        default_port: u16,
    ) -> Result<DbTarget, idns_core::ConfigError> {
        let path = ctx.path.as_str();
        let mut p = Problems::default();
        if spec.user.is_empty() {
            p.push(format!("{path}.user"), "\"\"", "must name a user");
        }
        let password = match (&spec.password, &spec.password_env) {
            (Some(_), Some(var)) => {
                p.push(
                    format!("{path}.password_env"),
                    var,
                    "set either password or password_env, not both",
                );
                None
            }
            (Some(pw), None) => Some(pw.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) => Some(Secret::new(v)),
                Err(_) => {
                    p.push(
                        format!("{path}.password_env"),
                        var,
                        "is not set in the environment",
                    );
                    None
                }
            },
            (None, None) => None,
        };
        let port = spec
            .alias
            .as_ref()
            .and_then(|a| a.port)
            .or(spec.port)
            .unwrap_or(default_port);
        if port == 0 {
            p.push(format!("{path}.port"), 0, "must be 1-65535");
        }
        let matcher = Matcher::from_fields(
            &mut p,
            path,
            spec.expect.as_deref(),
            spec.expect_regex.as_deref(),
            spec.case_insensitive,
        );
        if spec.row == 0 {
            p.push(format!("{path}.row"), 0, "counts from 1");
        }
        if spec.column == 0 {
            p.push(format!("{path}.column"), 0, "counts from 1");
        }
        let checks_cell = spec.expect.is_some() || spec.expect_regex.is_some();
        if checks_cell && spec.expect_rows.is_some() {
            p.push(
                format!("{path}.expect_rows"),
                spec.expect_rows.unwrap_or_default(),
                "check either a cell (expect) or the row count, not both",
            );
        }
        match &spec.send {
            Some(q) if q.trim().is_empty() => {
                p.push(format!("{path}.send"), "\"\"", "must be a query")
            }
            None if checks_cell || spec.expect_rows.is_some() => p.push(
                format!("{path}.send"),
                "",
                "is missing: expect and expect_rows check the result of this query",
            ),
            _ => {}
        }
        let endpoint = Endpoint::choose(&mut p, path, spec.alias.as_ref(), target);
        p.finish()?;
        let Some(endpoint) = endpoint else {
            return Err(idns_core::ConfigError::single(path, "", "is invalid"));
        };
        let expect = match (matcher, spec.expect_rows) {
            (Some(matcher), _) => Expect::Cell {
                row: spec.row - 1,
                column: spec.column - 1,
                matcher,
            },
            (None, Some(n)) => Expect::Rows(n),
            (None, None) => Expect::Ran,
        };
        Ok(DbTarget {
            label: ctx.label.clone(),
            endpoint,
            port,
            user: spec.user.clone(),
            password,
            database: spec.database.clone(),
            query: spec.send.clone().map(|q| (q, expect)),
            reconnect_after: spec.reconnect_after,
            timeout: ctx.timeout,
            debug: spec.debug,
        })
    }

    /// The host to connect to, as text.
    pub(crate) fn host(&self) -> String {
        match &self.endpoint {
            Endpoint::Addr(ip) => ip.to_string(),
            Endpoint::Host(h) => h.to_string(),
        }
    }

    /// `host:port`, for reasons.
    pub(crate) fn shown(&self) -> String {
        match &self.endpoint {
            Endpoint::Addr(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host(), self.port),
        }
    }
}

/// Judges a result set (rows of cells as text, `None` for NULL) against the expectation.
pub(crate) fn judge(expect: &Expect, rows: &[Vec<Option<String>>]) -> Result<(), String> {
    match expect {
        Expect::Ran => Ok(()),
        Expect::Rows(n) if rows.len() == *n => Ok(()),
        Expect::Rows(n) => Err(format!(
            "the query returned {} rows (expected {n})",
            rows.len()
        )),
        Expect::Cell {
            row,
            column,
            matcher,
        } => {
            let Some(r) = rows.get(*row) else {
                return Err(format!(
                    "row {} is not in the result ({} rows)",
                    row + 1,
                    rows.len()
                ));
            };
            let Some(cell) = r.get(*column) else {
                return Err(format!(
                    "column {} is not in the result ({} columns)",
                    column + 1,
                    r.len()
                ));
            };
            match cell {
                Some(text) if matcher.is_match(text.as_bytes()) => Ok(()),
                Some(text) => Err(format!(
                    "row {} column {} is {:?}, {} not found",
                    row + 1,
                    column + 1,
                    text.chars().take(200).collect::<String>(),
                    matcher.shown()
                )),
                None => Err(format!(
                    "row {} column {} is NULL, {} not found",
                    row + 1,
                    column + 1,
                    matcher.shown()
                )),
            }
        }
    }
}

/// Whether to open a new connection before this use, given how often the current one served.
pub(crate) fn must_reopen(reconnect_after: u32, uses: u32) -> bool {
    reconnect_after != 0 && uses >= reconnect_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(expect: &str, row: usize, column: usize) -> Expect {
        let mut p = Problems::default();
        let matcher = Matcher::from_fields(&mut p, "check", Some(expect), None, false).unwrap();
        Expect::Cell {
            row,
            column,
            matcher,
        }
    }

    #[test]
    fn cells_rows_and_counts_are_judged() {
        let rows = vec![
            vec![Some("a".to_owned()), Some("primary".to_owned())],
            vec![Some("b".to_owned()), None],
        ];
        assert!(judge(&cell("prim", 0, 1), &rows).is_ok());
        assert_eq!(
            judge(&cell("x", 0, 1), &rows).unwrap_err(),
            "row 1 column 2 is \"primary\", \"x\" not found"
        );
        assert_eq!(
            judge(&cell("x", 1, 1), &rows).unwrap_err(),
            "row 2 column 2 is NULL, \"x\" not found"
        );
        assert_eq!(
            judge(&cell("x", 2, 0), &rows).unwrap_err(),
            "row 3 is not in the result (2 rows)"
        );
        assert_eq!(
            judge(&cell("x", 0, 5), &rows).unwrap_err(),
            "column 6 is not in the result (2 columns)"
        );
        assert!(judge(&Expect::Rows(2), &rows).is_ok());
        assert_eq!(
            judge(&Expect::Rows(1), &rows).unwrap_err(),
            "the query returned 2 rows (expected 1)"
        );
    }

    #[test]
    fn the_count_knob_reopens_after_n_uses_or_never() {
        assert!(!must_reopen(0, 1_000_000));
        assert!(must_reopen(1, 1));
        assert!(!must_reopen(3, 2));
        assert!(must_reopen(3, 3));
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
