//! The JSON of etcd's v3 gateway, as it is on the wire.
//!
//! The gateway is grpc-gateway's rendering of etcd's protobuf messages: field names as in the
//! `.proto` files (`create_revision`, but `raftTerm`, `TTL`, `ID`), 64-bit integers as JSON
//! strings, bytes in standard base64, and every zero value left out (an empty `kvs`, a false
//! `succeeded`, a dead lease's `TTL`). The types here are strict about what is present
//! (an integer that is not a decimal string, or base64 that does not decode, fails) and
//! default what etcd omits. Unknown fields are ignored, so a newer etcd that adds some still
//! parses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// Encodings

/// Bytes as standard base64 (requests).
pub(super) fn ser_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

/// Bytes from standard base64 (responses).
pub(super) fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD
        .decode(text.as_bytes())
        .map_err(|e| de::Error::custom(format!("bytes that are not base64 ({e})")))
}

/// An int64 or uint64 as the decimal string the gateway writes.
pub(super) fn ser_int<S: Serializer, T: ToString>(n: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&n.to_string())
}

/// A uint64 from its decimal string.
pub(super) fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|_| de::Error::custom(format!("{text:?} is not an unsigned 64-bit integer")))
}

/// An int64 from its decimal string.
pub(super) fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|_| de::Error::custom(format!("{text:?} is not a 64-bit integer")))
}

// ---------------------------------------------------------------------------------------
// Requests

/// `RangeRequest` (also a transaction's `request_range`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct RangeRequest {
    #[serde(serialize_with = "ser_bytes")]
    pub(super) key: Vec<u8>,
    #[serde(
        serialize_with = "ser_opt_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) range_end: Option<Vec<u8>>,
}

fn ser_opt_bytes<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    ser_bytes(bytes.as_deref().unwrap_or_default(), s)
}

/// `PutRequest`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct PutRequest {
    #[serde(serialize_with = "ser_bytes")]
    pub(super) key: Vec<u8>,
    #[serde(serialize_with = "ser_bytes")]
    pub(super) value: Vec<u8>,
    #[serde(serialize_with = "ser_int", skip_serializing_if = "is_zero")]
    pub(super) lease: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `DeleteRangeRequest`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DeleteRequest {
    #[serde(serialize_with = "ser_bytes")]
    pub(super) key: Vec<u8>,
}

/// One operation of a transaction (`RequestOp`, a oneof).
#[derive(Debug, Clone, Serialize)]
pub(super) enum RequestOp {
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_delete_range")]
    Delete(DeleteRequest),
}

/// One comparison of a transaction (`Compare`; the target value is a oneof, flattened).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Compare {
    pub(super) result: &'static str,
    pub(super) target: &'static str,
    #[serde(serialize_with = "ser_bytes")]
    pub(super) key: Vec<u8>,
    #[serde(flatten)]
    pub(super) value: CompareValue,
}

/// The value a comparison compares with.
#[derive(Debug, Clone, Serialize)]
pub(super) enum CompareValue {
    #[serde(rename = "version", serialize_with = "ser_int")]
    Version(i64),
    #[serde(rename = "create_revision", serialize_with = "ser_int")]
    CreateRevision(i64),
    #[serde(rename = "mod_revision", serialize_with = "ser_int")]
    ModRevision(i64),
    #[serde(rename = "value", serialize_with = "ser_bytes")]
    Value(Vec<u8>),
    #[serde(rename = "lease", serialize_with = "ser_int")]
    Lease(i64),
}

/// `TxnRequest`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TxnRequest {
    pub(super) compare: Vec<Compare>,
    pub(super) success: Vec<RequestOp>,
    pub(super) failure: Vec<RequestOp>,
}

/// `LeaseGrantRequest`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LeaseGrantRequest {
    #[serde(rename = "TTL", serialize_with = "ser_int")]
    pub(super) ttl: i64,
}

/// `LeaseKeepAliveRequest` and `LeaseRevokeRequest`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LeaseIdRequest {
    #[serde(rename = "ID", serialize_with = "ser_int")]
    pub(super) id: i64,
}

/// The empty requests (`StatusRequest`, `MemberListRequest`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Empty {}

// ---------------------------------------------------------------------------------------
// Responses

/// `ResponseHeader`; inside a transaction only `revision` is set.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) cluster_id: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) member_id: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) revision: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) raft_term: u64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct KeyValue {
    #[serde(deserialize_with = "de_bytes")]
    pub(super) key: Vec<u8>,
    #[serde(default, deserialize_with = "de_bytes")]
    pub(super) value: Vec<u8>,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) create_revision: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) mod_revision: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) version: u64,
    #[serde(default, deserialize_with = "de_i64")]
    pub(super) lease: i64,
}

/// `RangeResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RangeResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) kvs: Vec<KeyValue>,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) count: u64,
    #[serde(default)]
    pub(super) more: bool,
}

/// `PutResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct PutResponse {
    #[serde(default)]
    pub(super) header: Header,
}

/// `DeleteRangeResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct DeleteResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) deleted: u64,
}

/// One answer of a transaction (`ResponseOp`, a oneof).
#[derive(Debug, Clone, Deserialize)]
pub(super) enum ResponseOp {
    #[serde(rename = "response_range")]
    Range(RangeResponse),
    #[serde(rename = "response_put")]
    Put(PutResponse),
    #[serde(rename = "response_delete_range")]
    Delete(DeleteResponse),
}

/// `TxnResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) succeeded: bool,
    #[serde(default)]
    pub(super) responses: Vec<ResponseOp>,
}

/// `LeaseGrantResponse` and `LeaseKeepAliveResponse`: an ID and a TTL (absent when the lease
/// is gone).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct LeaseResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    pub(super) id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub(super) ttl: i64,
    #[serde(default)]
    pub(super) error: String,
}

/// `LeaseRevokeResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct HeaderOnly {
    #[serde(default)]
    pub(super) header: Header,
}

/// One message of a streaming call (keep-alive): grpc-gateway wraps it in `result`, or
/// reports a failure in `error`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct StreamItem<T> {
    pub(super) result: Option<T>,
    pub(super) error: Option<GatewayError>,
}

/// `StatusResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct StatusResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) version: String,
    #[serde(rename = "dbSize", default, deserialize_with = "de_i64")]
    pub(super) db_size: i64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) leader: u64,
    #[serde(rename = "raftIndex", default, deserialize_with = "de_u64")]
    pub(super) raft_index: u64,
    #[serde(rename = "raftTerm", default, deserialize_with = "de_u64")]
    pub(super) raft_term: u64,
    #[serde(default)]
    pub(super) errors: Vec<String>,
}

/// `etcdserverpb.Member`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Member {
    #[serde(rename = "ID", default, deserialize_with = "de_u64")]
    pub(super) id: u64,
    #[serde(default)]
    pub(super) name: String,
    #[serde(rename = "peerURLs", default)]
    pub(super) peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub(super) client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub(super) is_learner: bool,
}

/// `MemberListResponse`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct MemberListResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) members: Vec<Member>,
}

/// The body of a failed call: `{"error": "...", "code": N, "message": "..."}` for a unary
/// call; a streaming call's `error` has `grpc_code`, `http_code` and `message`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct GatewayError {
    #[serde(default)]
    pub(super) error: String,
    #[serde(default, alias = "grpc_code")]
    pub(super) code: i32,
    #[serde(default)]
    pub(super) message: String,
}

impl GatewayError {
    /// What etcd said, from whichever field holds it.
    pub(super) fn text(&self) -> &str {
        if self.message.is_empty() {
            &self.error
        } else {
            &self.message
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_omitted_zero_values_and_refuse_bad_integers() {
        let txn: TxnResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"15118495548433857066","member_id":"1","revision":"2",
                "raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"2"},
                "kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1"}],
                "count":"1"}}]}"#,
        )
        .unwrap();
        assert!(!txn.succeeded);
        assert_eq!(txn.header.cluster_id, 15_118_495_548_433_857_066);
        let ResponseOp::Range(range) = &txn.responses[0] else {
            panic!("not a range: {txn:?}")
        };
        assert_eq!(range.kvs[0].key, b"foo");
        assert!(range.kvs[0].value.is_empty());
        assert_eq!(range.kvs[0].lease, 0);

        let dead: StreamItem<LeaseResponse> =
            serde_json::from_str(r#"{"result":{"header":{"revision":"4"},"ID":"12345"}}"#).unwrap();
        assert_eq!(dead.result.unwrap().ttl, 0);

        for bad in [
            r#"{"header":{"revision":2}}"#,
            r#"{"header":{"revision":"-2"}}"#,
        ] {
            assert!(serde_json::from_str::<PutResponse>(bad).is_err(), "{bad}");
        }
        let bad_b64 = r#"{"kvs":[{"key":"%%%"}]}"#;
        let err = serde_json::from_str::<RangeResponse>(bad_b64).unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }

    #[test]
    fn requests_use_the_gateway_names() {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: "EQUAL",
                target: "CREATE",
                key: b"k".to_vec(),
                value: CompareValue::CreateRevision(0),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                key: b"k".to_vec(),
                range_end: None,
            })],
        };
        assert_eq!(
            serde_json::to_string(&txn).unwrap(),
            r#"{"compare":[{"result":"EQUAL","target":"CREATE","key":"aw==","create_revision":"0"}],"success":[{"request_put":{"key":"aw==","value":"dg==","lease":"7"}}],"failure":[{"request_range":{"key":"aw=="}}]}"#
        );
        assert_eq!(
            serde_json::to_string(&LeaseGrantRequest { ttl: 5 }).unwrap(),
            r#"{"TTL":"5"}"#
        );
    }
}
