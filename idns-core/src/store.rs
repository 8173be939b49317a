//! The [`StateStore`] trait: where the journal survives a crash.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::BackendError;
use crate::journal::Journal;

/// Loads and saves the election's [`Journal`].
///
/// Saving is a compare-and-swap on a revision, so a store shared by several controllers (an
/// etcd key, say) can refuse a controller that is no longer the one acting: `save` with an
/// `expected` revision that is not the stored one fails with [`BackendError::Conflict`]. The
/// crash-safe file store (feature `runtime`) writes a temporary file, fsyncs it and renames
/// it over the old one.
#[async_trait]
pub trait StateStore: Send + Sync + Debug {
    /// The stored journal and its revision; `None` when nothing was ever saved.
    async fn load(&self) -> Result<Option<Stored>, BackendError>;

    /// Stores `journal` if the stored revision is still `expected` (`None`: nothing stored
    /// yet) and returns the new revision.
    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError>;
}

/// A shared store is a store: `Arc<dyn StateStore>` can be handed wherever one is expected.
#[async_trait]
impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    async fn load(&self) -> Result<Option<Stored>, BackendError> {
        (**self).load().await
    }

    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError> {
        (**self).save(journal, expected).await
    }
}

/// A journal as loaded, with the revision to pass to the next save.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The journal.
    pub journal: Journal,
    /// Its revision.
    pub revision: u64,
}
