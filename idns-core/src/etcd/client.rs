//! [`Client`]: etcd's v3 calls over its JSON gateway, tried on several endpoints in turn.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::kv::{
    Compare, Deleted, Header, Lease, LeaseId, Members, Op, Range, Status, TxnResult, prefix_end,
};
use super::wire;
use crate::error::{BackendError, ConfigError, MAX_QUOTED, Problems};

/// The header that makes etcd refuse a request at once ("etcdserver: no leader") when the
/// member it reaches has no leader, instead of holding it until its own timeout.
const REQUIRE_LEADER: &str = "Grpc-Metadata-hasleader";

/// How much of an answer that is not etcd's JSON an error quotes.
const SNIPPET: usize = 200;

/// The shortest and longest per-request timeout.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// An etcd v3 client over the JSON gateway of one cluster's members.
///
/// Cheap to clone (clones share the connection pool and the endpoint last found working).
///
/// Endpoints: each call is sent to the endpoint that answered last, and on a connection error
/// or a timeout to the next one, in the order given, until one answers. An answer from etcd,
/// even an error, ends the call: it is etcd's word, and another member would say the same.
/// When no endpoint answers, the error is [`BackendError::Timeout`] if every one timed out,
/// else [`BackendError::Unavailable`], listing what happened at each.
///
/// A write that timed out may still have been applied; the next endpoint then gets the same
/// write again. A transaction guarded by a revision (as [`EtcdStore`](super::EtcdStore)'s
/// saves are) cannot apply twice: the second attempt fails its comparison, and the caller
/// sees a conflict naming the revision its own first attempt made.
///
/// Every request carries `Grpc-Metadata-hasleader: true`, so a member that has lost its
/// leader (quorum lost) refuses at once with [`BackendError::Unavailable`] instead of holding
/// the request for seconds. Redirects are never followed. Credentials (etcd's user
/// authentication, client certificates) are not supported yet; `https` endpoints are verified
/// against the system's certificate roots.
///
/// Errors name the endpoint, the call and the key; etcd's own error codes are mapped to
/// [`BackendError`] kinds: "no leader" and other unavailability are `Unavailable` (transient),
/// a missing lease is `NotFound`, 401/403 and etcd's authentication codes are `Auth`, and an
/// answer that is not the gateway's JSON is `Invalid`, quoting its start.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `scheme://host:port`, in the order given.
    endpoints: Vec<String>,
    /// The index of the endpoint that answered last.
    preferred: AtomicUsize,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl Client {
    /// A client of the members at `endpoints` (their client URLs, `http://127.0.0.1:2379` or
    /// `https://…`, without path or credentials), each request allowed `timeout` (connecting
    /// included) before the next endpoint is tried.
    ///
    /// Fails with every problem found: no endpoint, an endpoint that is not such a URL, a
    /// timeout outside 10ms..=1h.
    pub fn new<I, S>(endpoints: I, timeout: Duration) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut problems = Problems::new();
        let mut parsed = Vec::new();
        for (i, text) in endpoints.into_iter().enumerate() {
            match parse_endpoint(text.as_ref()) {
                Ok(url) => parsed.push(url),
                Err((shown, problem)) => problems.push(format!("endpoints[{i}]"), shown, problem),
            }
        }
        if parsed.is_empty() && problems.is_empty() {
            problems.push("endpoints", "", "needs at least one etcd client URL");
        }
        problems.duration("timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT);
        problems.finish()?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ConfigError::single(
                    "endpoints",
                    "",
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: parsed,
                preferred: AtomicUsize::new(0),
                timeout,
            }),
        })
    }

    /// The endpoints, as `scheme://host:port`, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The time each request is allowed on one endpoint.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Reads one key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Range, BackendError> {
        let key = key.as_ref();
        let req = wire::RangeRequest {
            key: key.to_vec(),
            range_end: None,
        };
        let what = format!("get of key {}", show_key(key));
        self.call::<_, wire::RangeResponse>("kv/range", &what, &req)
            .await
            .map(Range::from)
    }

    /// Reads every key that starts with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Range, BackendError> {
        let prefix = prefix.as_ref();
        let req = wire::RangeRequest {
            key: prefix.to_vec(),
            range_end: Some(prefix_end(prefix)),
        };
        let what = format!("get of prefix {}", show_key(prefix));
        self.call::<_, wire::RangeResponse>("kv/range", &what, &req)
            .await
            .map(Range::from)
    }

    /// Writes a key, bound to `lease` (it disappears with the lease) or not.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: Option<LeaseId>,
    ) -> Result<Header, BackendError> {
        let key = key.as_ref();
        let req = wire::PutRequest {
            key: key.to_vec(),
            value: value.as_ref().to_vec(),
            lease: lease.map_or(0, LeaseId::get),
        };
        let what = format!("put of key {}", show_key(key));
        self.call::<_, wire::PutResponse>("kv/put", &what, &req)
            .await
            .map(|r| r.header.into())
    }

    /// Deletes one key (deleting a key that does not exist is not an error: `deleted` is 0).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Deleted, BackendError> {
        let key = key.as_ref();
        let req = wire::DeleteRequest { key: key.to_vec() };
        let what = format!("delete of key {}", show_key(key));
        self.call::<_, wire::DeleteResponse>("kv/deleterange", &what, &req)
            .await
            .map(Deleted::from)
    }

    /// Runs a transaction: if every comparison holds, the `success` operations, else the
    /// `failure` ones, atomically. Reading the keys in `failure` tells in the same round trip
    /// why the comparisons failed.
    pub async fn txn(
        &self,
        compares: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResult, BackendError> {
        let keys: Vec<String> = compares.iter().map(|c| show_key(c.key())).collect();
        let what = format!("transaction on {}", keys.join(", "));
        let compare = compares
            .iter()
            .map(Compare::to_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::Invalid(format!("etcd {what}: {e}")))?;
        let req = wire::TxnRequest {
            compare,
            success: success.iter().map(Op::to_wire).collect(),
            failure: failure.iter().map(Op::to_wire).collect(),
        };
        self.call::<_, wire::TxnResponse>("kv/txn", &what, &req)
            .await
            .map(TxnResult::from)
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up; at least 1 s). etcd may grant more
    /// than asked (its minimum TTL follows its election timeout): the grant says what it gave.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, BackendError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let what = format!("lease grant of {}", humantime::format_duration(ttl));
        let secs = i64::try_from(secs)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| {
                BackendError::Invalid(format!("etcd {what}: the TTL must be 1s or more"))
            })?;
        let r = self
            .call::<_, wire::LeaseResponse>(
                "lease/grant",
                &what,
                &wire::LeaseGrantRequest { ttl: secs },
            )
            .await?;
        if !r.error.is_empty() {
            return Err(BackendError::Refused(format!("etcd {what}: {}", r.error)));
        }
        Ok(Lease {
            id: LeaseId::new(r.id),
            ttl: u64::try_from(r.ttl).unwrap_or(0),
            header: r.header.into(),
        })
    }

    /// Renews a lease to its full TTL, and returns that TTL.
    ///
    /// A lease that has expired or was revoked is [`BackendError::NotFound`] (etcd answers
    /// with no TTL): whoever held something by it has lost it. While the cluster has no
    /// quorum, keep-alives fail with `Unavailable` but leases do not expire either; a leader
    /// change renews every lease to its full TTL.
    pub async fn lease_keepalive(&self, id: LeaseId) -> Result<Lease, BackendError> {
        let what = format!("lease keep-alive of lease {id}");
        let (endpoint, item) = self
            .call_at::<_, wire::StreamItem<wire::LeaseResponse>>(
                "lease/keepalive",
                &what,
                &wire::LeaseIdRequest { id: id.get() },
            )
            .await?;
        let r = match (item.result, item.error) {
            (_, Some(e)) => return Err(etcd_error(endpoint, &what, e.code, e.text(), 200)),
            (Some(r), None) => r,
            (None, None) => {
                return Err(BackendError::Invalid(format!(
                    "etcd {endpoint} {what}: the answer holds neither a result nor an error"
                )));
            }
        };
        if r.ttl <= 0 {
            return Err(BackendError::NotFound(format!(
                "etcd {endpoint} {what}: the lease has expired or was revoked"
            )));
        }
        Ok(Lease {
            id,
            ttl: u64::try_from(r.ttl).unwrap_or(0),
            header: r.header.into(),
        })
    }

    /// Revokes a lease, deleting every key bound to it. An unknown lease is
    /// [`BackendError::NotFound`].
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Header, BackendError> {
        let what = format!("lease revoke of lease {id}");
        self.call::<_, wire::HeaderOnly>(
            "lease/revoke",
            &what,
            &wire::LeaseIdRequest { id: id.get() },
        )
        .await
        .map(|r| r.header.into())
    }

    /// The status of the member that answers: its version, the leader it knows, the raft
    /// term.
    pub async fn status(&self) -> Result<Status, BackendError> {
        self.call::<_, wire::StatusResponse>("maintenance/status", "status", &wire::Empty {})
            .await
            .map(Status::from)
    }

    /// The cluster's members.
    pub async fn members(&self) -> Result<Members, BackendError> {
        let r = self
            .call::<_, wire::MemberListResponse>(
                "cluster/member/list",
                "member list",
                &wire::Empty {},
            )
            .await?;
        Ok(Members {
            header: r.header.into(),
            members: r.members.into_iter().map(Into::into).collect(),
        })
    }

    /// Sends one call to the endpoints in turn, from the one that answered last, until one
    /// answers; decodes the answer.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        what: &str,
        req: &Req,
    ) -> Result<Resp, BackendError> {
        self.call_at(path, what, req).await.map(|(_, r)| r)
    }

    /// [`call`](Self::call), also naming the endpoint that answered.
    async fn call_at<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        what: &str,
        req: &Req,
    ) -> Result<(&str, Resp), BackendError> {
        let body = serde_json::to_vec(req).map_err(|e| {
            BackendError::Invalid(format!("etcd {what} ({path}): cannot encode it: {e}"))
        })?;
        let endpoints = &self.inner.endpoints;
        let start = self.inner.preferred.load(Ordering::Relaxed) % endpoints.len();
        let mut failures = Vec::with_capacity(endpoints.len());
        let mut all_timed_out = true;
        for i in 0..endpoints.len() {
            let index = (start + i) % endpoints.len();
            let endpoint = &endpoints[index];
            match self.send(endpoint, path, body.clone()).await {
                Ok((status, location, bytes)) => {
                    if index != start {
                        tracing::debug!(endpoint, call = path, "etcd endpoint now in use");
                    }
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return decode(endpoint, path, what, status, location, &bytes)
                        .map(|r| (endpoint.as_str(), r));
                }
                Err(e) => {
                    let why = if e.is_timeout() {
                        format!(
                            "no answer within {}",
                            humantime::format_duration(self.timeout())
                        )
                    } else {
                        all_timed_out = false;
                        error_chain(&e.without_url())
                    };
                    tracing::debug!(endpoint, call = path, error = %why, "etcd endpoint failed");
                    failures.push(format!("{endpoint}: {why}"));
                }
            }
        }
        let msg = format!(
            "etcd {what} ({path}): no endpoint answered: {}",
            failures.join("; ")
        );
        Err(if all_timed_out {
            BackendError::Timeout(msg)
        } else {
            BackendError::Unavailable(msg)
        })
    }

    /// One request to one endpoint: the status, the `Location` and the whole body.
    async fn send(
        &self,
        endpoint: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, Option<String>, Vec<u8>), reqwest::Error> {
        let response = self
            .inner
            .http
            .post(format!("{endpoint}/v3/{path}"))
            .header(REQUIRE_LEADER, "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| snippet(l.as_bytes()));
        let bytes = response.bytes().await?;
        Ok((status, location, bytes.to_vec()))
    }
}

/// Decodes an answer: the documented JSON on success, etcd's error JSON otherwise.
fn decode<Resp: DeserializeOwned>(
    endpoint: &str,
    path: &str,
    what: &str,
    status: reqwest::StatusCode,
    location: Option<String>,
    bytes: &[u8],
) -> Result<Resp, BackendError> {
    let at = format!("etcd {endpoint} {what} ({path})");
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(|e| {
            BackendError::Invalid(format!(
                "{at}: the answer is not etcd's JSON ({e}): {}",
                snippet(bytes)
            ))
        });
    }
    if status.is_redirection() {
        return Err(BackendError::Invalid(format!(
            "{at}: answered {status} to {}; redirects are not followed: give the member's own \
             client URL",
            location.as_deref().unwrap_or("nowhere"),
        )));
    }
    let error = error_body(bytes);
    if matches!(status.as_u16(), 401 | 403) {
        let said = error.map_or_else(|| snippet(bytes), |(_, text)| cut(&text));
        return Err(BackendError::Auth(format!(
            "{at}: answered {status}: {said}"
        )));
    }
    if let Some((code, text)) = error {
        return Err(etcd_error(endpoint, what, code, &text, status.as_u16()));
    }
    let msg = format!("{at}: answered {status}: {}", snippet(bytes));
    Err(match status.as_u16() {
        500.. => BackendError::Unavailable(msg),
        _ => BackendError::Invalid(format!("{msg} (is this an etcd v3 client URL?)")),
    })
}

/// The gRPC code and text of etcd's error JSON (a unary call's `{"error", "code",
/// "message"}`, or a streaming call's `{"error": {"grpc_code", "message"}}`).
fn error_body(bytes: &[u8]) -> Option<(i32, String)> {
    if let Ok(e) = serde_json::from_slice::<wire::GatewayError>(bytes)
        && !e.text().is_empty()
    {
        return Some((e.code, e.text().to_owned()));
    }
    let item = serde_json::from_slice::<wire::StreamItem<serde::de::IgnoredAny>>(bytes).ok()?;
    item.error.map(|e| (e.code, e.text().to_owned()))
}

/// etcd's error, by its gRPC code, as a [`BackendError`] naming the endpoint and call.
fn etcd_error(endpoint: &str, what: &str, code: i32, text: &str, http: u16) -> BackendError {
    let at = format!("etcd {endpoint} {what}");
    let text = cut(text);
    if text.contains("no leader") {
        return BackendError::Unavailable(format!(
            "{at}: {text}: the member has no leader, quorum may be lost"
        ));
    }
    let msg = format!("{at}: {text}");
    match code {
        // UNAVAILABLE (request timed out, leader changed), RESOURCE_EXHAUSTED (too many
        // requests), ABORTED, CANCELLED: another try may pass.
        14 | 8 | 10 | 1 => BackendError::Unavailable(msg),
        4 => BackendError::Timeout(msg),
        16 | 7 => BackendError::Auth(msg),
        5 => BackendError::NotFound(msg),
        3 | 11 => BackendError::Invalid(msg),
        _ if http >= 500 => BackendError::Unavailable(msg),
        _ => BackendError::Refused(msg),
    }
}

/// Checks one endpoint; `Err` holds what may be shown of it and the problem.
fn parse_endpoint(text: &str) -> Result<String, (String, String)> {
    let shown = || text.to_owned();
    let url = reqwest::Url::parse(text).map_err(|e| {
        (
            shown(),
            format!("is not a URL ({e}); write e.g. http://127.0.0.1:2379"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo what may be a password.
        return Err((
            String::new(),
            "carries credentials, which are not supported: give the URL without them".into(),
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err((shown(), "must be an http:// or https:// URL".into()));
    }
    if url.host().is_none() {
        return Err((shown(), "has no host".into()));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err((
            shown(),
            "must have no path, query or fragment (the member's client URL, e.g. \
             http://127.0.0.1:2379)"
                .into(),
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// A key as errors show it: quoted, invalid UTF-8 replaced, cut to [`MAX_QUOTED`] characters.
pub(super) fn show_key(key: &[u8]) -> String {
    format!("{:?}", cut(&String::from_utf8_lossy(key)))
}

fn cut(text: &str) -> String {
    cut_to(text, MAX_QUOTED)
}

/// The first [`SNIPPET`] characters of an answer, for an error.
fn snippet(bytes: &[u8]) -> String {
    format!("{:?}", cut_to(&String::from_utf8_lossy(bytes), SNIPPET))
}

fn cut_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// An error with its causes, `a: b: c` (reqwest's own text hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_credentials_never_echoed() {
        let err = Client::new(
            [
                "http://127.0.0.1:2379/",
                "unix:///run/etcd.sock",
                "http://root:hunter2@127.0.0.1:2379",
                "http://127.0.0.1:2379/v3",
                "127.0.0.1:2379",
            ],
            Duration::ZERO,
        )
        .unwrap_err();
        let shown = err.to_string();
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "endpoints[1]",
                "endpoints[2]",
                "endpoints[3]",
                "endpoints[4]",
                "timeout"
            ],
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("unix:///run/etcd.sock"), "{shown}");
        assert!(
            Client::new(Vec::<String>::new(), Duration::from_secs(1))
                .unwrap_err()
                .to_string()
                .contains("needs at least one")
        );
        let ok = Client::new(
            ["https://etcd.example:2379/", "http://[::1]:2379"],
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            ok.endpoints(),
            ["https://etcd.example:2379", "http://[::1]:2379"]
        );
    }

    #[test]
    fn etcd_codes_map_to_error_kinds() {
        let e = |code, text: &str| etcd_error("http://e:1", "put of key \"k\"", code, text, 400);
        let no_leader = e(14, "etcdserver: no leader");
        assert!(
            matches!(&no_leader, BackendError::Unavailable(m) if m.contains("quorum may be lost") && m.contains("http://e:1"))
        );
        assert!(no_leader.is_transient());
        assert!(matches!(
            e(16, "etcdserver: invalid auth token"),
            BackendError::Auth(_)
        ));
        assert!(matches!(
            e(5, "etcdserver: requested lease not found"),
            BackendError::NotFound(_)
        ));
        assert!(matches!(
            e(4, "context deadline exceeded"),
            BackendError::Timeout(_)
        ));
        assert!(matches!(
            e(9, "etcdserver: not capable"),
            BackendError::Refused(_)
        ));
        let unknown = etcd_error("http://e:1", "put", 2, "etcdserver: unknown", 500);
        assert!(matches!(unknown, BackendError::Unavailable(_)));

        let garbage = decode::<wire::PutResponse>(
            "http://e:1",
            "kv/put",
            "put",
            reqwest::StatusCode::NOT_FOUND,
            None,
            b"Not Found",
        )
        .unwrap_err();
        assert!(
            matches!(&garbage, BackendError::Invalid(m) if m.contains("Not Found")),
            "{garbage}"
        );
        let stream_error = br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;
        assert_eq!(
            error_body(stream_error),
            Some((14, "etcdserver: no leader".into()))
        );
        let denied = decode::<wire::PutResponse>(
            "http://e:1",
            "kv/put",
            "put",
            reqwest::StatusCode::FORBIDDEN,
            None,
            b"<html>",
        )
        .unwrap_err();
        assert!(matches!(denied, BackendError::Auth(_)));
        let unauthorized = decode::<wire::PutResponse>(
            "http://e:1",
            "kv/put",
            "put",
            reqwest::StatusCode::UNAUTHORIZED,
            None,
            br#"{"error":"etcdserver: user name is empty","code":2}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&unauthorized, BackendError::Auth(m) if m.contains("user name is empty")),
            "{unauthorized}"
        );
    }
}
