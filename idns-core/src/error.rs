//! Errors, sorted by who is at fault.
//!
//! - [`ConfigError`]: the person who wrote the configuration (every problem listed, each with
//!   its field path and the bad value).
//! - [`BackendError`]: a DNS server, database, store or disk that did not do what it was asked;
//!   [`BackendError::is_transient`] tells the runbook whether a retry can help.
//! - [`Refused`]: an operator command that the election declined, with the reason.
//! - [`Error`]: the crate-level sum of the above, plus a journal that does not fit the config.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;

/// An identifier or DNS name that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {problem}")]
pub struct InvalidId {
    /// What kind of identifier it was meant to be.
    pub what: &'static str,
    /// The rejected text (cut to 80 characters).
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// One problem in a configuration, with the path of the field that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `sites[1].probes[0].fall`.
    pub path: String,
    /// The offending value as written (empty when the field is missing or secret; at most
    /// [`MAX_QUOTED`] characters of it).
    pub value: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.problem)
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.problem)
        }
    }
}

/// A configuration that was refused, with every problem found (not just the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in the order of the fields.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// A configuration error with a single problem.
    pub fn single(
        path: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            errors: vec![FieldError {
                path: path.into(),
                value: quote(&value.into()),
                problem: cut_quotes(problem.into()),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Longest part of a bad value quoted in a [`FieldError`], in characters.
pub const MAX_QUOTED: usize = 100;

/// Collects every problem of a configuration while it is parsed, so the person who wrote it
/// sees all of them at once, each with its field path and the bad value.
///
/// Every crate that parses configuration uses this one collector: a part that is parsed on its
/// own (a backend's settings, a probe's check) returns a [`ConfigError`], and the caller nests
/// it under the part's path with [`extend`](Self::extend).
///
/// ```
/// use idns_core::Problems;
///
/// let mut p = Problems::new();
/// p.push("listen", "", "needs at least one address");
/// p.push("zones[1].name", "exa mple.com", "is not a valid DNS name");
/// let nested = p.finish().unwrap_err();
/// let mut outer = Problems::new();
/// outer.extend("dns", nested);
/// let err = outer.finish().unwrap_err();
/// assert_eq!(err.errors[1].to_string(), "dns.zones[1].name = exa mple.com: is not a valid DNS name");
/// ```
#[derive(Debug, Default)]
pub struct Problems {
    errors: Vec<FieldError>,
}

impl Problems {
    /// The lower bound "longer than zero" for [`duration`](Self::duration).
    pub const ABOVE_ZERO: Duration = Duration::from_nanos(1);

    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem: `path` names the field (`sites[1].probes[0].fall`), `value` is what
    /// was written (empty when the field is missing; quoted up to [`MAX_QUOTED`] characters).
    /// A quoted part of `problem` (a parser's echo of the value) is cut the same way.
    ///
    /// ```
    /// use idns_core::Problems;
    ///
    /// let mut p = Problems::new();
    /// let echo = format!("invalid value: string \"{}\", expected a duration", "x".repeat(1 << 20));
    /// p.push("ttl", "", echo);
    /// let shown = p.finish().unwrap_err().to_string();
    /// assert!(shown.len() < 300, "{shown}");
    /// assert!(shown.ends_with("…\", expected a duration"), "{shown}");
    /// ```
    pub fn push(
        &mut self,
        path: impl Into<String>,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) {
        self.errors.push(FieldError {
            path: path.into(),
            value: quote(&value.to_string()),
            problem: cut_quotes(problem.into()),
        });
    }

    /// Records a problem when the duration `d` written at `path` is outside `min..=max`.
    ///
    /// Every duration a configuration gives has both bounds: a lower one so that nothing
    /// polls in a tight loop or times out before it starts, an upper one so that no
    /// arithmetic on it (`timeout + 1s`, `now + interval`) can overflow.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idns_core::Problems;
    ///
    /// let mut p = Problems::new();
    /// let (ms, min) = (Duration::from_millis, Duration::from_secs(60));
    /// p.duration("poll_interval", Duration::ZERO, ms(10), min);
    /// p.duration("timeout", Duration::MAX, ms(1), min);
    /// p.duration("query_timeout", ms(500), ms(1), min);
    /// let err = p.finish().unwrap_err();
    /// assert_eq!(err.errors[0].to_string(), "poll_interval = 0s: must be at least 10ms");
    /// assert!(err.errors[1].to_string().ends_with(": must be at most 1m"));
    /// assert_eq!(err.errors.len(), 2);
    /// ```
    pub fn duration(&mut self, path: impl fmt::Display, d: Duration, min: Duration, max: Duration) {
        let fmt = humantime::format_duration;
        if d < min {
            let problem = if min == Self::ABOVE_ZERO {
                "must be more than zero".to_owned()
            } else {
                format!("must be at least {}", fmt(min))
            };
            self.push(path.to_string(), fmt(d), problem);
        } else if d > max {
            self.push(
                path.to_string(),
                fmt(d),
                format!("must be at most {}", fmt(max)),
            );
        }
    }

    /// Records the problems of a part parsed on its own, their paths put under `prefix`
    /// (`dns` + `zones[0].name` → `dns.zones[0].name`; an empty `prefix` keeps them as they are).
    pub fn extend(&mut self, prefix: &str, errors: ConfigError) {
        for mut e in errors.errors {
            e.path = nest(prefix, &e.path);
            self.errors.push(e);
        }
    }

    /// The problems recorded so far.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when no problem was recorded, else every problem, in the order recorded.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                errors: self.errors,
            })
        }
    }

    /// `value` when no problem was recorded, else every problem.
    pub fn finish_with<T>(self, value: T) -> Result<T, ConfigError> {
        self.finish().map(|()| value)
    }
}

/// `prefix.path` (`prefix[0]` when `path` is an index); either alone when the other is empty.
fn nest(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// The first [`MAX_QUOTED`] characters of `value`, with `…` when it was longer.
fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// A problem's text with every quoted part (between `"` or `` ` ``) cut to [`MAX_QUOTED`]
/// characters: a parser's message such as `invalid value: string "…"` echoes what was written,
/// however long.
fn cut_quotes(problem: String) -> String {
    if problem.chars().count() <= 2 * MAX_QUOTED {
        return problem;
    }
    let mut out = String::with_capacity(4 * MAX_QUOTED);
    let mut open: Option<char> = None;
    let mut run = 0;
    for c in problem.chars() {
        match open {
            Some(q) if c == q => {
                open = None;
                out.push(c);
            }
            Some(_) => {
                run += 1;
                if run <= MAX_QUOTED {
                    out.push(c);
                } else if run == MAX_QUOTED + 1 {
                    out.push('…');
                }
            }
            None => {
                if c == '"' || c == '`' {
                    open = Some(c);
                    run = 0;
                }
                out.push(c);
            }
        }
    }
    quote_long(out)
}

/// Cuts what is still too long (an unquoted echo) to a few quotes' worth.
fn quote_long(text: String) -> String {
    match text.char_indices().nth(8 * MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A backend (DNS server, replication, state store) failed to do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendError {
    /// The backend has accepted a newer epoch: this request comes from a stale decision.
    #[error("stale epoch: asked with epoch {attempted}, but epoch {current} was already accepted")]
    StaleEpoch {
        /// The epoch the request carried.
        attempted: Epoch,
        /// The highest epoch the backend has accepted.
        current: Epoch,
    },
    /// Credentials were rejected (bad TSIG key, API key or password).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server understood the request and refused it (policy, not zone, not allowed).
    #[error("refused: {0}")]
    Refused(String),
    /// The name, zone, resource or site is not known to the backend.
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend cannot do this at all (e.g. a CNAME on a backend without aliases).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// An integrity check found data that differs from what was expected.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// Someone else changed the state first (a compare-and-swap lost).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself was wrong (a bug or a bad configuration on our side).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend could not be reached, or failed in a way that may pass.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl BackendError {
    /// Whether trying again later can help (network trouble, a server restarting, a timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }
}

/// An operator command that the election declined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{command} refused: {reason}")]
pub struct Refused {
    /// The command, as a person would name it (`failover to b`).
    pub command: String,
    /// Why it was refused, and what would make it possible.
    pub reason: String,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A persisted journal does not fit the configuration it is restored with.
    #[error("journal does not fit the configuration: {0}")]
    Journal(String),
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A command was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The driver has stopped and takes no more requests.
    #[error("the driver has stopped")]
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_paths_nest() {
        let mut p = Problems::new();
        p.push("url", "x".repeat(500), "is too long");
        let mut outer = Problems::new();
        outer.extend("check", p.finish().unwrap_err());
        outer.extend("", ConfigError::single("[2]", "", "is missing"));
        outer.extend("list", ConfigError::single("[2]", "", "is missing"));
        outer.extend("dns", ConfigError::single("", "", "is wrong"));
        let err = outer.finish().unwrap_err();
        assert_eq!(err.errors[0].path, "check.url");
        assert_eq!(err.errors[0].value.chars().count(), MAX_QUOTED + 1);
        assert!(err.errors[0].value.ends_with('…'));
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["check.url", "[2]", "list[2]", "dns"]);
        assert_eq!(Problems::new().finish_with(7), Ok(7));
    }
}
