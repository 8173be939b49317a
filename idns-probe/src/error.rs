//! The errors of this crate.

use idns_core::ConfigError;

use crate::sink::SinkClosed;

/// Everything that can go wrong in this crate (a failed check is an outcome, not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A check's configuration is invalid (the person who wrote it is at fault).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The scheduler has stopped and takes no more requests.
    #[error("the scheduler has stopped")]
    Stopped,
    /// The sink the scheduler reports to has closed; the scheduler stopped.
    #[error(transparent)]
    SinkClosed(#[from] SinkClosed),
}
