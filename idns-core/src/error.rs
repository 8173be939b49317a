//! Errors, sorted by who is at fault.
//!
//! - [`ConfigError`]: the person who wrote the configuration (every problem listed, each with
//!   its field path and the bad value).
//! - [`BackendError`]: a DNS server, database, store or disk that did not do what it was asked;
//!   [`BackendError::is_transient`] tells the runbook whether a retry can help.
//! - [`Refused`]: an operator command that the election declined, with the reason.
//! - [`Error`]: the crate-level sum of the above, plus a journal that does not fit the config.

use std::fmt;

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
    /// The offending value as written (empty when the field is missing).
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
                value: value.into(),
                problem: problem.into(),
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

/// Collects field errors while a configuration is validated.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    errors: Vec<FieldError>,
}

impl Problems {
    pub(crate) fn push(
        &mut self,
        path: impl Into<String>,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) {
        self.errors.push(FieldError {
            path: path.into(),
            value: value.to_string(),
            problem: problem.into(),
        });
    }

    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                errors: self.errors,
            })
        }
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
