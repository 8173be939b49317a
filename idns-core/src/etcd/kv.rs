//! What the [`Client`](super::Client) sends and gets back: keys and values, transaction
//! comparisons and operations, leases, cluster status.

use std::fmt;

use super::wire;

/// Every answer's header: which cluster and member answered, at which store revision and
/// raft term.
///
/// Inside a transaction's [`responses`](TxnResult::responses) etcd sets only `revision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// The cluster's id. It changes when a cluster is rebuilt from empty data, and revisions
    /// then restart at 1: keep it beside any revision that is remembered.
    pub cluster_id: u64,
    /// The id of the member that answered.
    pub member_id: u64,
    /// The store's revision when the answer was made (after a write: the write's revision).
    pub revision: u64,
    /// The raft term of the member that answered.
    pub raft_term: u64,
}

impl From<wire::Header> for Header {
    fn from(h: wire::Header) -> Self {
        Self {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

/// The id of a lease (an int64 in etcd; shown in hex, as `etcdctl` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(i64);

impl LeaseId {
    /// A lease id as etcd gave it (e.g. read back from a key's [`KeyValue::lease`]).
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The id as etcd's int64.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty is a value too).
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: u64,
    /// The revision of its last write.
    pub mod_revision: u64,
    /// How many times it was written since it was created (1 after the first put).
    pub version: u64,
    /// The lease it is bound to: it disappears when that lease expires or is revoked.
    pub lease: Option<LeaseId>,
}

impl From<wire::KeyValue> for KeyValue {
    fn from(kv: wire::KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: (kv.lease != 0).then_some(LeaseId(kv.lease)),
        }
    }
}

/// The keys a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The answer's header.
    pub header: Header,
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// How many keys are in the range (may exceed `kvs.len()` when `more`).
    pub count: u64,
    /// Whether there are more keys than returned.
    pub more: bool,
}

impl Range {
    /// The first key found (the only one, for a read of one key).
    pub fn first(&self) -> Option<&KeyValue> {
        self.kvs.first()
    }
}

impl From<wire::RangeResponse> for Range {
    fn from(r: wire::RangeResponse) -> Self {
        Self {
            header: r.header.into(),
            kvs: r.kvs.into_iter().map(KeyValue::from).collect(),
            count: r.count,
            more: r.more,
        }
    }
}

/// What a delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The answer's header.
    pub header: Header,
    /// How many keys were deleted (0 when there was none).
    pub deleted: u64,
}

impl From<wire::DeleteResponse> for Deleted {
    fn from(d: wire::DeleteResponse) -> Self {
        Self {
            header: d.header.into(),
            deleted: d.deleted,
        }
    }
}

/// How a [`Compare`] compares the key's field with the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// The field equals the value.
    Equal,
    /// The field is greater than the value.
    Greater,
    /// The field is less than the value.
    Less,
    /// The field differs from the value.
    NotEqual,
}

impl CompareOp {
    fn wire(self) -> &'static str {
        match self {
            Self::Equal => "EQUAL",
            Self::Greater => "GREATER",
            Self::Less => "LESS",
            Self::NotEqual => "NOT_EQUAL",
        }
    }
}

/// One condition of a transaction: a field of one key compared with a value.
///
/// A key that does not exist has version, create and mod revision 0 and no lease, so
/// `Compare::create_revision(key, Equal, 0)` means "the key does not exist"; a comparison of
/// its value is false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    key: Vec<u8>,
    op: CompareOp,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(Vec<u8>),
    Lease(Option<LeaseId>),
}

impl Compare {
    /// Compares the key's version (writes since creation).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: u64) -> Self {
        Self::new(key, op, Target::Version(version))
    }

    /// Compares the revision that created the key (0: it does not exist).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Self {
        Self::new(key, op, Target::CreateRevision(revision))
    }

    /// Compares the revision of the key's last write.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Self {
        Self::new(key, op, Target::ModRevision(revision))
    }

    /// Compares the key's value, byte for byte.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, op, Target::Value(value.into()))
    }

    /// Compares the lease the key is bound to (`None`: no lease).
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: Option<LeaseId>) -> Self {
        Self::new(key, op, Target::Lease(lease))
    }

    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: Target) -> Self {
        Self {
            key: key.into(),
            op,
            target,
        }
    }

    /// The key it compares.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub(super) fn to_wire(&self) -> Result<wire::Compare, String> {
        let int = |n: u64| {
            i64::try_from(n).map_err(|_| format!("{n} does not fit etcd's 64-bit signed integer"))
        };
        let (target, value) = match &self.target {
            Target::Version(v) => ("VERSION", wire::CompareValue::Version(int(*v)?)),
            Target::CreateRevision(r) => ("CREATE", wire::CompareValue::CreateRevision(int(*r)?)),
            Target::ModRevision(r) => ("MOD", wire::CompareValue::ModRevision(int(*r)?)),
            Target::Value(v) => ("VALUE", wire::CompareValue::Value(v.clone())),
            Target::Lease(l) => (
                "LEASE",
                wire::CompareValue::Lease(l.map_or(0, LeaseId::get)),
            ),
        };
        Ok(wire::Compare {
            result: self.op.wire(),
            target,
            key: self.key.clone(),
            value,
        })
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Read one key, or every key from `key` up to `range_end` (exclusive).
    Get {
        /// The key, or the start of the range.
        key: Vec<u8>,
        /// The end of the range; `None` reads one key.
        range_end: Option<Vec<u8>>,
    },
    /// Write a key, bound to a lease or not.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease to bind it to.
        lease: Option<LeaseId>,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// Reads one key.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Self::Get {
            key: key.into(),
            range_end: None,
        }
    }

    /// Reads every key that starts with `prefix`.
    pub fn get_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = Some(prefix_end(&key));
        Self::Get { key, range_end }
    }

    /// Writes a key.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: Option<LeaseId>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    /// Deletes one key.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::Delete { key: key.into() }
    }

    pub(super) fn to_wire(&self) -> wire::RequestOp {
        match self {
            Self::Get { key, range_end } => wire::RequestOp::Range(wire::RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
            }),
            Self::Put { key, value, lease } => wire::RequestOp::Put(wire::PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease: lease.map_or(0, LeaseId::get),
            }),
            Self::Delete { key } => {
                wire::RequestOp::Delete(wire::DeleteRequest { key: key.clone() })
            }
        }
    }
}

/// The end of the range of keys that start with `prefix`: the prefix with its last byte below
/// 0xff incremented and what follows it dropped; `[0]` (every key) when there is no such byte.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The answer to one [`Op`] of a transaction, in the order of the operations of the branch
/// that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpResponse {
    /// What an [`Op::Get`] read.
    Get(Range),
    /// An [`Op::Put`] was applied.
    Put(Header),
    /// What an [`Op::Delete`] removed.
    Delete(Deleted),
}

impl From<wire::ResponseOp> for OpResponse {
    fn from(r: wire::ResponseOp) -> Self {
        match r {
            wire::ResponseOp::Range(r) => Self::Get(r.into()),
            wire::ResponseOp::Put(p) => Self::Put(p.header.into()),
            wire::ResponseOp::Delete(d) => Self::Delete(d.into()),
        }
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every comparison held, so the success operations ran (else the failure ones).
    pub succeeded: bool,
    /// The answers of the operations that ran.
    pub responses: Vec<OpResponse>,
    /// The answer's header (its revision is the transaction's, when it wrote).
    pub header: Header,
}

impl From<wire::TxnResponse> for TxnResult {
    fn from(t: wire::TxnResponse) -> Self {
        Self {
            succeeded: t.succeeded,
            responses: t.responses.into_iter().map(OpResponse::from).collect(),
            header: t.header.into(),
        }
    }
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id, to bind keys to and keep alive.
    pub id: LeaseId,
    /// The TTL etcd granted, in seconds (it may raise a TTL below its minimum).
    pub ttl: u64,
    /// The answer's header.
    pub header: Header,
}

/// What the member asked says of itself and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The answer's header (its `member_id` is the member that answered).
    pub header: Header,
    /// The member's etcd version, e.g. `3.4.23`.
    pub version: String,
    /// The id of the cluster's leader as this member knows it (0: none).
    pub leader: u64,
    /// The raft term.
    pub raft_term: u64,
    /// The raft index.
    pub raft_index: u64,
    /// The size of the member's database file, in bytes.
    pub db_size: u64,
    /// Alarms and errors the member reports (empty when healthy).
    pub errors: Vec<String>,
}

impl Status {
    /// Whether the member that answered is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.header.member_id
    }
}

impl From<wire::StatusResponse> for Status {
    fn from(s: wire::StatusResponse) -> Self {
        Self {
            header: s.header.into(),
            version: s.version,
            leader: s.leader,
            raft_term: s.raft_term,
            raft_index: s.raft_index,
            db_size: u64::try_from(s.db_size).unwrap_or(0),
            errors: s.errors,
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: u64,
    /// Its name (empty until a member added at runtime has started).
    pub name: String,
    /// The URLs its peers reach it on.
    pub peer_urls: Vec<String>,
    /// The URLs clients reach it on.
    pub client_urls: Vec<String>,
    /// Whether it is a learner (not voting).
    pub is_learner: bool,
}

impl From<wire::Member> for Member {
    fn from(m: wire::Member) -> Self {
        Self {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
        }
    }
}

/// The cluster's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The answer's header.
    pub header: Header,
    /// The members.
    pub members: Vec<Member>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"idns/"), b"idns0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn a_revision_beyond_int64_is_refused() {
        let c = Compare::mod_revision("k", CompareOp::Equal, u64::MAX);
        assert!(c.to_wire().unwrap_err().contains("does not fit"));
        assert_eq!(LeaseId::new(255).to_string(), "ff");
    }
}
