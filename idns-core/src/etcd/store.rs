//! [`EtcdStore`]: the journal in one etcd key, saved by compare-and-swap on its revision.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::client::{Client, show_key};
use super::kv::{Compare, CompareOp, Header, KeyValue, Op, OpResponse, TxnResult};
use crate::error::{BackendError, ConfigError, Problems};
use crate::journal::Journal;
use crate::store::{StateStore, Stored};

/// The format of the stored value this version writes, and the newest it reads.
const FORMAT: u64 = 1;

/// A [`StateStore`] that keeps the journal in the etcd key `<prefix>/journal`, as JSON
/// `{"format": 1, "deployment": "<name>", "journal": {…}}`.
///
/// Revisions: the store's revision is the key's `mod_revision`, so every write by anyone
/// changes it. [`save`](StateStore::save) is one transaction that writes only if the key's
/// `mod_revision` is still the expected one (for `None`: the key does not exist), else fails
/// with [`BackendError::Conflict`] naming the key, the revision found and the one expected;
/// the failure branch reads the key, so one round trip tells both.
///
/// Leadership: with [`guarded_by`](Self::guarded_by) the transaction also requires a leader
/// key to still have the `create_revision` it had when this controller created it, so a
/// controller whose leader key expired (and was perhaps created again by another) cannot save;
/// that failure is a `Conflict` saying leadership was lost.
///
/// Deployments: the value names the deployment that wrote it; loading a value of another
/// deployment (two deployments configured with one prefix) is [`BackendError::Integrity`], as
/// is a value of a newer format or one that does not decode. Such a value is never
/// overwritten by a save made without loading it first (its revision is not known).
///
/// Cluster identity: revisions restart at 1 when a cluster is rebuilt from empty data, so a
/// revision means something only together with the cluster id it came from;
/// [`cluster_id`](Self::cluster_id) gives the id of the last answer. A save expecting a
/// revision of the old cluster fails with a conflict, because the key is missing or at another
/// revision.
///
/// A save whose request timed out may have been applied; retried on another endpoint (or by
/// the caller) it then fails with a conflict naming the revision it made itself: reload.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    client: Client,
    key: String,
    deployment: String,
    guard: Option<Guard>,
    /// The cluster id of the last answer (0: none yet).
    cluster_id: Arc<AtomicU64>,
}

/// The leader key a save requires, and the `create_revision` it must still have.
#[derive(Debug, Clone)]
struct Guard {
    key: String,
    create_revision: u64,
}

/// The stored value, as written.
#[derive(Serialize)]
struct ValueRef<'a> {
    format: u64,
    deployment: &'a str,
    journal: &'a Journal,
}

/// The stored value's envelope, read before the journal itself so that a newer format or
/// another deployment is reported as such rather than as undecodable.
#[derive(Deserialize)]
struct Envelope {
    format: u64,
    deployment: String,
    journal: serde_json::Value,
}

impl EtcdStore {
    /// A store of deployment `deployment`'s journal under `prefix` (the key is
    /// `<prefix>/journal`; a trailing `/` of the prefix is dropped).
    ///
    /// Fails when the prefix or the deployment name is empty.
    pub fn new(client: Client, prefix: &str, deployment: &str) -> Result<Self, ConfigError> {
        let prefix = prefix.trim_end_matches('/');
        let mut problems = Problems::new();
        super::require_non_empty(
            &mut problems,
            "prefix",
            prefix,
            "e.g. /idns/app.example.com",
        );
        super::require_non_empty(&mut problems, "deployment", deployment, "e.g. app");
        problems.finish()?;
        Ok(Self {
            client,
            key: format!("{prefix}/journal"),
            deployment: deployment.to_owned(),
            guard: None,
            cluster_id: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Makes every save also require that `leader_key` still exists with the given
    /// `create_revision` (the one this controller's leader key got when it was created).
    pub fn guarded_by(mut self, leader_key: impl Into<String>, create_revision: u64) -> Self {
        self.guard = Some(Guard {
            key: leader_key.into(),
            create_revision,
        });
        self
    }

    /// The key holding the journal.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The deployment name written with the journal and required when loading.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The id of the cluster that gave the last answer (`None` before the first). It changes
    /// when the cluster is rebuilt, and revisions restart then.
    pub fn cluster_id(&self) -> Option<u64> {
        Some(self.cluster_id.load(Ordering::Relaxed)).filter(|id| *id != 0)
    }

    fn seen(&self, header: &Header) {
        if header.cluster_id == 0 {
            return;
        }
        let before = self.cluster_id.swap(header.cluster_id, Ordering::Relaxed);
        if before != 0 && before != header.cluster_id {
            tracing::warn!(
                key = %self.key,
                before = format_args!("{before:x}"),
                now = format_args!("{:x}", header.cluster_id),
                "the etcd cluster id changed: the cluster was rebuilt and its revisions restarted"
            );
        }
    }

    /// Decodes a stored value, checking its format and deployment.
    fn decode(&self, kv: &KeyValue) -> Result<Stored, BackendError> {
        let at = format!(
            "etcd key {} (revision {})",
            show_key(kv.key.as_slice()),
            kv.mod_revision
        );
        let envelope: Envelope = serde_json::from_slice(&kv.value).map_err(|e| {
            BackendError::Integrity(format!("{at} does not hold an idns journal ({e})"))
        })?;
        if envelope.format > FORMAT {
            return Err(BackendError::Integrity(format!(
                "{at} was written by a newer version of idns (format {}; this one reads up to \
                 {FORMAT})",
                envelope.format
            )));
        }
        if envelope.format == 0 {
            return Err(BackendError::Integrity(format!(
                "{at} has format 0, which no version of idns writes"
            )));
        }
        if envelope.deployment != self.deployment {
            return Err(BackendError::Integrity(format!(
                "{at} holds the journal of deployment {:?}, not of {:?}: two deployments share \
                 one prefix",
                envelope.deployment, self.deployment
            )));
        }
        let journal = serde_json::from_value(envelope.journal).map_err(|e| {
            BackendError::Integrity(format!("{at}: the journal does not decode ({e})"))
        })?;
        Ok(Stored {
            journal,
            revision: kv.mod_revision,
        })
    }

    /// Why a save's transaction failed, from what its failure branch read.
    fn conflict(&self, txn: &TxnResult, expected: Option<u64>) -> BackendError {
        let found = |i: usize| match txn.responses.get(i) {
            Some(OpResponse::Get(range)) => range.first().cloned(),
            _ => None,
        };
        let mut why = Vec::new();
        let journal = found(0);
        let at = journal.as_ref().map(|kv| kv.mod_revision);
        if at != expected {
            why.push(format!(
                "etcd key {} is at {}, but {} was expected: another controller wrote it",
                show_key(self.key.as_bytes()),
                describe(at),
                describe(expected)
            ));
        }
        if let Some(guard) = &self.guard {
            let leader = found(1).map(|kv| kv.create_revision);
            if leader != Some(guard.create_revision) {
                let now = match leader {
                    Some(r) => format!("was created again at revision {r}"),
                    None => "no longer exists".to_owned(),
                };
                why.push(format!(
                    "leadership was lost: leader key {} {now}, but this controller's was created \
                     at revision {}",
                    show_key(guard.key.as_bytes()),
                    guard.create_revision
                ));
            }
        }
        if why.is_empty() {
            why.push(format!(
                "etcd key {}: the save's comparison failed, yet the key is at the expected {}",
                show_key(self.key.as_bytes()),
                describe(expected)
            ));
        }
        BackendError::Conflict(format!("{}; the journal was not saved", why.join("; ")))
    }
}

fn describe(revision: Option<u64>) -> String {
    match revision {
        Some(r) => format!("revision {r}"),
        None => "no revision (no key)".to_owned(),
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn load(&self) -> Result<Option<Stored>, BackendError> {
        let range = self.client.get(&self.key).await?;
        self.seen(&range.header);
        range.first().map(|kv| self.decode(kv)).transpose()
    }

    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError> {
        let value = serde_json::to_vec(&ValueRef {
            format: FORMAT,
            deployment: &self.deployment,
            journal,
        })
        .map_err(|e| {
            BackendError::Invalid(format!(
                "etcd key {}: cannot encode the journal: {e}",
                show_key(self.key.as_bytes())
            ))
        })?;
        let key = self.key.as_bytes();
        let mut compares = vec![match expected {
            Some(r) => Compare::mod_revision(key, CompareOp::Equal, r),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        }];
        let mut failure = vec![Op::get(key)];
        if let Some(guard) = &self.guard {
            compares.push(Compare::create_revision(
                guard.key.as_bytes(),
                CompareOp::Equal,
                guard.create_revision,
            ));
            failure.push(Op::get(guard.key.as_bytes()));
        }
        let txn = self
            .client
            .txn(&compares, &[Op::put(key, value, None)], &failure)
            .await?;
        self.seen(&txn.header);
        if !txn.succeeded {
            return Err(self.conflict(&txn, expected));
        }
        Ok(txn.header.revision)
    }
}
