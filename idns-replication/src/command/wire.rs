//! The JSON that hooks read and write (version 1).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use idns_core::{BackendError, Epoch, IntegrityRequest, Manifest, ManifestEntry, Mismatch};
use serde::{Deserialize, Serialize};

/// The request a hook reads on standard input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRequest {
    /// Always 1 for this contract.
    pub version: u32,
    /// `status`, `fence`, `promote`, `reprotect` or `integrity`.
    pub operation: String,
    /// The resource.
    pub resource: String,
    /// Every configured site of the resource.
    pub sites: Vec<String>,
    /// The site acted on (fence, promote, integrity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The site every other site must follow (reprotect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Return only once the others caught up (reprotect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// The fencing epoch (every operation but status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
    /// A rehearsal on an isolated copy.
    pub drill: bool,
    /// An operator forced the step past its safety checks (the backend's refusal to promote
    /// beside a writable site among them): a hook that checks for itself may go ahead too.
    #[serde(default)]
    pub force: bool,
    /// The time the hook has, in milliseconds.
    pub timeout_ms: u64,
    /// What to check, write or verify (integrity): `{"check": {}}`,
    /// `{"mark": {"label": "epoch-7"}}` or `{"verify": {"expected": {"entries": {...}}}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<WireIntegrity>,
}

/// An integrity request on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireIntegrity {
    /// Check the copy against its own evidence.
    Check {},
    /// Write drill markers.
    Mark {
        /// Their label.
        label: String,
    },
    /// Verify that the entries exist with this size and checksum.
    Verify {
        /// The entries.
        expected: WireManifest,
    },
}

impl From<&IntegrityRequest> for WireIntegrity {
    fn from(r: &IntegrityRequest) -> Self {
        match r {
            IntegrityRequest::Check => WireIntegrity::Check {},
            IntegrityRequest::Mark { label } => WireIntegrity::Mark {
                label: label.clone(),
            },
            IntegrityRequest::Verify { expected } => WireIntegrity::Verify {
                expected: WireManifest::from(expected),
            },
        }
    }
}

/// A manifest on the wire: `{"entries": {"key": {"size": 1, "checksum": "…",
/// "modified_ms": 1700000000000}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireManifest {
    /// Entries by key.
    #[serde(default)]
    pub entries: BTreeMap<String, WireEntry>,
}

/// One manifest entry on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Size in bytes (or rows).
    pub size: u64,
    /// Checksum as text.
    pub checksum: String,
    /// Modification time in milliseconds since 1970, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ms: Option<u64>,
}

impl From<&Manifest> for WireManifest {
    fn from(m: &Manifest) -> Self {
        WireManifest {
            entries: m
                .entries
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        WireEntry {
                            size: e.size,
                            checksum: e.checksum.clone(),
                            modified_ms: e.modified.and_then(|t| {
                                t.duration_since(SystemTime::UNIX_EPOCH)
                                    .ok()
                                    .map(|d| d.as_millis() as u64)
                            }),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl From<WireManifest> for Manifest {
    fn from(m: WireManifest) -> Self {
        Manifest {
            entries: m
                .entries
                .into_iter()
                .map(|(k, e)| {
                    (
                        k,
                        ManifestEntry {
                            size: e.size,
                            checksum: e.checksum,
                            modified: e
                                .modified_ms
                                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// `status` output: `{"sites": [{"site": "a", "role": "primary", "lag_ms": 0,
/// "lag_bytes": 0}]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StatusOut {
    #[serde(default)]
    pub sites: Vec<SiteOut>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SiteOut {
    pub site: String,
    pub role: String,
    #[serde(default)]
    pub lag_ms: Option<u64>,
    #[serde(default)]
    pub lag_bytes: Option<u64>,
}

/// `promote` output (optional): `{"rpo_ms": 1200, "position": "snapshot 42"}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PromoteOut {
    #[serde(default)]
    pub rpo_ms: Option<u64>,
    #[serde(default)]
    pub position: Option<String>,
}

/// `integrity` output: `{"manifest": {...}, "mismatches": [{"key": "...", "problem": "..."}]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct IntegrityOut {
    #[serde(default)]
    pub manifest: WireManifest,
    #[serde(default)]
    pub mismatches: Vec<Mismatch>,
}

/// What a failing hook may print: `{"error": "why", "transient": true, "kind": "refused",
/// "current_epoch": 9}`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorOut {
    pub error: String,
    #[serde(default)]
    pub transient: Option<bool>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub current_epoch: Option<u64>,
}

impl ErrorOut {
    /// The backend error this describes; `attempted` is the request's epoch.
    pub(crate) fn into_error(self, attempted: Option<Epoch>) -> BackendError {
        let msg = self.error;
        match (self.kind.as_deref(), self.current_epoch, attempted) {
            (Some("stale_epoch"), Some(current), Some(attempted)) => BackendError::StaleEpoch {
                attempted,
                current: Epoch::new(current),
            },
            (Some("auth"), ..) => BackendError::Auth(msg),
            (Some("refused"), ..) => BackendError::Refused(msg),
            (Some("not_found"), ..) => BackendError::NotFound(msg),
            (Some("unsupported"), ..) => BackendError::Unsupported(msg),
            (Some("integrity"), ..) => BackendError::Integrity(msg),
            (Some("conflict"), ..) => BackendError::Conflict(msg),
            (Some("invalid"), ..) => BackendError::Invalid(msg),
            (Some("timeout"), ..) => BackendError::Timeout(msg),
            (Some("unavailable"), ..) => BackendError::Unavailable(msg),
            _ if self.transient == Some(true) => BackendError::Unavailable(msg),
            _ => BackendError::Refused(msg),
        }
    }
}
