//! Progress of long operations, for progress bars.

use idns_core::{ResourceId, SiteId};

/// What is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// A replication pass (initial sync, incremental pass, resync after reprotect): bytes of
    /// the source read and compared.
    Pass,
    /// A drill copy being made: bytes copied.
    DrillCopy,
    /// An integrity check: bytes hashed.
    Check,
    /// A database standby catching up with its primary after a reprotect: bytes of WAL
    /// replayed since the wait began.
    CatchUp,
    /// An old primary's rows being compared with the new primary's before a rewind, the
    /// rows only it holds saved aside: bytes of its rows read (`file` names the table; the
    /// total is the table's size on disk, an estimate, until the last event of the table).
    SaveAside,
}

/// One progress event. Events of one operation arrive in order with `bytes_done` growing to
/// `bytes_total`; a receiver that falls behind misses some (it only needs the latest).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The resource.
    pub resource: ResourceId,
    /// The site being written (or checked).
    pub site: SiteId,
    /// The operation.
    pub operation: Operation,
    /// The file being worked on.
    pub file: Option<String>,
    /// Bytes done so far.
    pub bytes_done: u64,
    /// Bytes in all.
    pub bytes_total: u64,
}

impl Progress {
    /// Done as a fraction from 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.bytes_total == 0 {
            1.0
        } else {
            (self.bytes_done as f64 / self.bytes_total as f64).min(1.0)
        }
    }
}
