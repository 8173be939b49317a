//! RFC 2136 dynamic updates signed with TSIG: a backend for BIND, Knot, PowerDNS or any
//! primary server that takes UPDATE messages.
//!
//! Each change is **one** UPDATE message, so the server applies it all or nothing:
//!
//! 1. prerequisite: the ownership TXT record `_idns.<name>` still holds exactly what was read
//!    just before (or does not exist yet) — a compare-and-swap on the epoch;
//! 2. delete the A, AAAA and CNAME RRsets of the name;
//! 3. add the new A/AAAA records or CNAME;
//! 4. replace the ownership TXT record with the new epoch and site.
//!
//! Before sending, the backend reads the current ownership and refuses a stale epoch itself.
//! A change at the epoch the ownership record already holds is decided by
//! [`DnsChange::at_same_epoch`]: a retry (the same site and records, read back, then required
//! by value-dependent prerequisites in the same UPDATE), a withdrawal or a publication on a
//! withdrawn name (applied), or a conflicting decision, refused as
//! [`BackendError::StaleEpoch`]. When a
//! prerequisite fails (someone wrote in between), it reads again and retries a few times, so
//! a retried or duplicated update is harmless.
//!
//! Errors, as the runbook needs them: a rejected key is [`BackendError::Auth`], saying in our
//! words what the server answered (the TSIG errors BADKEY: it does not know the key's name or
//! algorithm; BADSIG: the secret differs; BADTIME: the clocks differ), and so is an answer
//! that is unsigned or whose signature does not verify, since nothing in it can be trusted;
//! REFUSED and NOTZONE are [`BackendError::Refused`]; a lost
//! compare-and-swap race with a newer epoch is [`BackendError::StaleEpoch`]; timeouts and
//! network errors are transient ([`BackendError::Timeout`], [`BackendError::Unavailable`]).
//!
//! Reads are plain (unsigned) queries to the same server.
//!
//! ```no_run
//! use idns_core::Secret;
//! use idns_dns::rfc2136::{Rfc2136Backend, Rfc2136Config, Rfc2136Spec, TsigAlgorithmName, TsigSpec};
//!
//! let spec = Rfc2136Spec::new(
//!     "192.0.2.53:53".parse()?,
//!     &["example.com".parse()?],
//!     TsigSpec {
//!         name: "idns-key".into(),
//!         algorithm: TsigAlgorithmName::HmacSha256,
//!         secret: Secret::new(std::env::var("IDNS_TSIG_SECRET")?),
//!         fudge: 300,
//!     },
//! );
//! let backend = Rfc2136Backend::new(Rfc2136Config::try_from(spec)?); // an idns_core::DnsBackend
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use hickory_net::NetError;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::DnsHandle;
use hickory_proto::op::DnsResponse;
use hickory_proto::op::update_message::UpdateMessage;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};
use idns_core::{
    BackendError, DnsBackend, DnsCapabilities, DnsChange, DnsName, Ownership, Propagation,
    Published, RecordSet, SameEpoch, ownership_name,
};

pub use config::{Rfc2136Config, Rfc2136Spec, TsigAlgorithmName, TsigSpec};

use crate::propagation::{self, PropagationChecker};

/// Compare-and-swap attempts before giving up with [`BackendError::Conflict`].
const CAS_ATTEMPTS: usize = 4;

/// A [`DnsBackend`] that sends RFC 2136 UPDATEs, signed with TSIG, to one primary server.
#[derive(Clone)]
pub struct Rfc2136Backend {
    server: SocketAddr,
    zones: Vec<DnsName>,
    signer: Option<TSigner>,
    key_name: Option<String>,
    timeout: Duration,
    checker: PropagationChecker,
}

impl fmt::Debug for Rfc2136Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signer holds the key: only its name is shown.
        f.debug_struct("Rfc2136Backend")
            .field("server", &self.server)
            .field("zones", &self.zones)
            .field(
                "tsig_key",
                &self.key_name.as_deref().unwrap_or("NONE (unsigned)"),
            )
            .finish()
    }
}

impl Rfc2136Backend {
    /// A backend from a checked configuration.
    pub fn new(config: Rfc2136Config) -> Self {
        let (signer, key_name) = match config.tsig {
            Some((signer, name)) => (Some(signer), Some(name)),
            None => {
                tracing::warn!(
                    server = %config.server,
                    "RFC 2136 updates will be sent UNSIGNED (insecure_allow_unsigned_updates)"
                );
                (None, None)
            }
        };
        Self {
            server: config.server,
            zones: config.zones,
            signer,
            key_name,
            timeout: config.timeout,
            checker: config.checker,
        }
    }

    fn check_zone(&self, zone: &DnsName, name: &DnsName) -> Result<(), BackendError> {
        if !self.zones.contains(zone) {
            return Err(BackendError::Refused(format!(
                "zone {zone} is not configured for this backend"
            )));
        }
        if !name.is_within(zone) {
            return Err(BackendError::Refused(format!(
                "{name} is not in zone {zone}"
            )));
        }
        Ok(())
    }

    /// The ownership TXT RRset as the server holds it now, and the ownership it records.
    async fn read_ownership(
        &self,
        name: &DnsName,
    ) -> Result<(Vec<Record>, Option<Ownership>), BackendError> {
        let txt_name =
            to_name(&ownership_name(name).map_err(|e| BackendError::Invalid(e.to_string()))?)?;
        let response =
            propagation::query(self.server, &txt_name, RecordType::TXT, self.timeout).await?;
        match response.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            ResponseCode::ServFail => {
                return Err(BackendError::Unavailable(format!(
                    "{} answered SERVFAIL",
                    self.server
                )));
            }
            other => {
                return Err(BackendError::Refused(format!(
                    "{} answered {other} to a TXT query for {txt_name}",
                    self.server
                )));
            }
        }
        let records: Vec<Record> = response
            .answers
            .into_iter()
            .filter(|r| r.name == txt_name && r.record_type() == RecordType::TXT)
            .collect();
        let owner = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Ownership::from_txt(&txt_text(t)),
                _ => None,
            })
            .max_by_key(|o| o.epoch);
        Ok((records, owner))
    }

    /// How a change at the accepted epoch relates to what that epoch published
    /// ([`DnsChange::at_same_epoch`]): `Ok(true)` for a retry, `Ok(false)` for a withdrawal or
    /// a publication on a withdrawn name, and a conflicting decision refused as stale.
    async fn check_same_decision(
        &self,
        change: &DnsChange,
        owner: &Ownership,
    ) -> Result<bool, BackendError> {
        if change.withdraws() {
            // Always allowed to the holder of the epoch, and no retry prerequisites: the
            // records it removes are whatever the name publishes now.
            return Ok(false);
        }
        let published = PropagationChecker::new([self.server])
            .with_query_timeout(self.timeout)
            .observe(self.server, &change.name)
            .await?
            .records;
        match change.at_same_epoch(owner.site.as_ref(), &published) {
            SameEpoch::Retry => Ok(true),
            SameEpoch::Replace => Ok(false),
            SameEpoch::Conflict => {
                tracing::warn!(name = %change.name, epoch = %change.epoch, records = %change.records, published = %published, "refused a conflicting change at the accepted epoch");
                Err(BackendError::StaleEpoch {
                    attempted: change.epoch,
                    current: owner.epoch,
                })
            }
        }
    }

    /// The UPDATE of `change`. With `retry` (the ownership record already holds this epoch
    /// and site), the records must also still be exactly the new ones (RFC 2136
    /// value-dependent prerequisites), so a conflicting write cannot slip in between the
    /// check and the update.
    fn update_message(
        &self,
        change: &DnsChange,
        current_txt: &[Record],
        ttl: u32,
        retry: bool,
    ) -> Result<Message, BackendError> {
        let zone = to_name(&change.zone)?;
        let name = to_name(&change.name)?;
        let txt_name = to_name(
            &ownership_name(&change.name).map_err(|e| BackendError::Invalid(e.to_string()))?,
        )?;
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        message.add_zone(Query::query(zone, RecordType::SOA));
        // 1. Compare: the TXT RRset is exactly what was read, or does not exist.
        if current_txt.is_empty() {
            let mut absent = Record::update0(txt_name.clone(), 0, RecordType::TXT);
            absent.dns_class = DNSClass::NONE;
            message.add_pre_requisite(absent);
        } else {
            for r in current_txt {
                let mut r = r.clone();
                r.ttl = 0;
                r.dns_class = DNSClass::IN;
                message.add_pre_requisite(r);
            }
        }
        let records = new_records(&name, &change.records.normalized(), ttl)?;
        if retry {
            for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
                let mut same = records
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .peekable();
                if same.peek().is_none() {
                    let mut absent = Record::update0(name.clone(), 0, rtype);
                    absent.dns_class = DNSClass::NONE;
                    message.add_pre_requisite(absent);
                }
                for r in same {
                    let mut r = r.clone();
                    r.ttl = 0;
                    message.add_pre_requisite(r);
                }
            }
        }
        // 2. Swap: delete the address and alias RRsets, add the new ones, rewrite the TXT.
        let delete = |owner: &Name, rtype| {
            let mut r = Record::update0(owner.clone(), 0, rtype);
            r.dns_class = DNSClass::ANY;
            r
        };
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            message.add_update(delete(&name, rtype));
        }
        for r in records {
            message.add_update(r);
        }
        message.add_update(delete(&txt_name, RecordType::TXT));
        message.add_update(Record::from_rdata(
            txt_name,
            ttl,
            RData::TXT(TXT::new(vec![change.ownership().to_txt()])),
        ));
        Ok(message)
    }

    /// Sends one signed UPDATE and returns the server's response code.
    ///
    /// The message is signed here rather than by the client: the client drops an answer whose
    /// signature does not verify with an error of its own, which loses what the server said
    /// (a refused key comes back unsigned, with the reason in its TSIG record).
    async fn send(&self, mut message: Message) -> Result<ResponseCode, BackendError> {
        let verifier = match &self.signer {
            Some(signer) => message.finalize(signer, unix_now()).map_err(|e| {
                BackendError::Invalid(format!(
                    "cannot sign the update with TSIG key '{}': {e}",
                    signer.signer_name()
                ))
            })?,
            None => None,
        };
        let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(self.timeout))
            .build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        let background = tokio::spawn(background);
        let mut responses = client.send(DnsRequest::new(message, DnsRequestOptions::default()));
        let outcome = tokio::time::timeout(
            self.timeout.saturating_add(Duration::from_secs(1)),
            responses.next(),
        )
        .await;
        background.abort();
        match outcome {
            Err(_) => Err(BackendError::Timeout(format!(
                "no answer from {} within {:?}",
                self.server, self.timeout
            ))),
            Ok(None) => Err(BackendError::Unavailable(format!(
                "{} closed without an answer",
                self.server
            ))),
            Ok(Some(Err(e))) => Err(net_error(self.server, &e)),
            Ok(Some(Ok(response))) => match (&self.signer, verifier) {
                (Some(signer), Some(verifier)) => {
                    verified_code(self.server, signer, verifier, &response)
                }
                _ => Ok(response.response_code),
            },
        }
    }
}

/// The response code of an answer to an UPDATE signed by `signer`, once its signature
/// verifies; a refusal of the key, in the server's terms but our words, otherwise.
fn verified_code(
    server: SocketAddr,
    signer: &TSigner,
    mut verifier: TSigVerifier,
    response: &DnsResponse,
) -> Result<ResponseCode, BackendError> {
    let key = signer.signer_name().to_string();
    let key = key.trim_end_matches('.');
    let code = response.response_code;
    let Some(tsig) = response.signature() else {
        return Err(BackendError::Auth(format!(
            "{server} answered {code} to the update without a TSIG signature, so the answer \
             cannot be trusted: check that the server has TSIG key '{key}' and signs with it"
        )));
    };
    if let Some(error) = tsig.data.error {
        return Err(tsig_refusal(server, key, signer, error, &tsig.data));
    }
    let expected = mac_len(signer.algorithm());
    if expected.is_some_and(|n| tsig.data.mac.len() < n) {
        return Err(BackendError::Auth(format!(
            "{server} answered {code} with a TSIG signature of {} bytes, shorter than \
             {} needs: a truncated signature is not accepted (TSIG key '{key}')",
            tsig.data.mac.len(),
            signer.algorithm()
        )));
    }
    match verifier.verify(response.as_buffer()) {
        Ok(verified) => Ok(verified.response_code),
        Err(e) => Err(BackendError::Auth(format!(
            "the answer of {server} to the update ({code}) does not verify with TSIG key \
             '{key}' ({e}): check the key's secret on both sides"
        ))),
    }
}

/// An UPDATE refused for its TSIG signature (RFC 8945, section 5.2), said in our words.
fn tsig_refusal(
    server: SocketAddr,
    key: &str,
    signer: &TSigner,
    error: TsigError,
    tsig: &TSIG,
) -> BackendError {
    let algorithm = signer.algorithm();
    BackendError::Auth(match error {
        TsigError::BadKey => format!(
            "{server} does not know TSIG key '{key}' with algorithm {algorithm} (BADKEY); \
             check the key name and algorithm on both sides"
        ),
        TsigError::BadSig => format!(
            "{server} knows TSIG key '{key}' but the signature does not match (BADSIG): the \
             secret differs; check the key's secret on both sides"
        ),
        TsigError::BadTime => {
            // The server puts its own time (48 bits) in the record's other data.
            let skew = match tsig.other.as_slice() {
                [a, b, c, d, e, f] => {
                    let server_time = u64::from_be_bytes([0, 0, *a, *b, *c, *d, *e, *f]) as i128;
                    let ahead = server_time - i128::from(unix_now());
                    format!(
                        "; the server's clock is {} s {} this host's",
                        ahead.unsigned_abs(),
                        if ahead >= 0 { "ahead of" } else { "behind" }
                    )
                }
                _ => String::new(),
            };
            format!(
                "{server} refused the time of the signature with TSIG key '{key}' (BADTIME): \
                 the clocks differ by more than the fudge of {} s{skew}; check the clocks of \
                 both hosts",
                signer.fudge()
            )
        }
        TsigError::BadTrunc => {
            format!("{server} refused the signature with TSIG key '{key}' as truncated (BADTRUNC)")
        }
        TsigError::Unknown(n) => {
            format!("{server} refused TSIG key '{key}' with TSIG error {n}")
        }
    })
}

/// The length of a full signature with `algorithm`, for the algorithms a key may use.
fn mac_len(algorithm: &TsigAlgorithm) -> Option<usize> {
    match algorithm {
        TsigAlgorithm::HmacSha256 => Some(32),
        TsigAlgorithm::HmacSha384 => Some(48),
        TsigAlgorithm::HmacSha512 => Some(64),
        _ => None,
    }
}

/// Seconds since the Unix epoch, the time a TSIG signature carries.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The A/AAAA records or the CNAME of `name` for `records`.
fn new_records(name: &Name, records: &RecordSet, ttl: u32) -> Result<Vec<Record>, BackendError> {
    Ok(match records {
        RecordSet::Addresses(ips) => ips
            .iter()
            .map(|ip| {
                let data = match ip {
                    std::net::IpAddr::V4(v4) => RData::A(A(*v4)),
                    std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(name.clone(), ttl, data)
            })
            .collect(),
        RecordSet::Alias(target) => vec![Record::from_rdata(
            name.clone(),
            ttl,
            RData::CNAME(CNAME(to_name(target)?)),
        )],
        RecordSet::Empty => Vec::new(),
    })
}

/// Maps a client error: network trouble, which may pass.
fn net_error(server: SocketAddr, e: &NetError) -> BackendError {
    match e {
        NetError::Timeout => BackendError::Timeout(format!("no answer from {server}")),
        _ => BackendError::Unavailable(format!("{server}: {e}")),
    }
}

fn rcode_error(server: SocketAddr, change: &DnsChange, code: ResponseCode) -> BackendError {
    let what = format!("{server} answered {code} to the update of {}", change.name);
    match code {
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => BackendError::Auth(what),
        ResponseCode::Refused => BackendError::Refused(what),
        ResponseCode::NotZone => {
            BackendError::Refused(format!("{what} (the name is not in the zone)"))
        }
        ResponseCode::ServFail => BackendError::Unavailable(what),
        ResponseCode::NotImp => BackendError::Unsupported(what),
        _ => BackendError::Invalid(what),
    }
}

fn txt_text(t: &TXT) -> String {
    t.txt_data
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join("")
}

fn to_name(name: &DnsName) -> Result<Name, BackendError> {
    Name::from_ascii(name.to_fqdn()).map_err(|e| BackendError::Invalid(format!("{name}: {e}")))
}

#[async_trait]
impl DnsBackend for Rfc2136Backend {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::new(true, true, true)
    }

    async fn read(&self, zone: &DnsName, name: &DnsName) -> Result<Published, BackendError> {
        self.check_zone(zone, name).map_err(|e| match e {
            BackendError::Refused(m) => BackendError::NotFound(m),
            other => other,
        })?;
        let (_, owner) = self.read_ownership(name).await?;
        let seen = PropagationChecker::new([self.server])
            .with_query_timeout(self.timeout)
            .observe(self.server, name)
            .await?;
        Ok(Published {
            records: seen.records,
            ttl: seen.ttl,
            owner,
        })
    }

    async fn apply(&self, change: &DnsChange) -> Result<(), BackendError> {
        self.check_zone(&change.zone, &change.name)?;
        let ttl = crate::Ttl::try_from(change.ttl)?.as_secs();
        for attempt in 1..=CAS_ATTEMPTS {
            let (txt, owner) = self.read_ownership(&change.name).await?;
            if let Some(o) = &owner
                && change.epoch < o.epoch
            {
                tracing::warn!(name = %change.name, attempted = %change.epoch, current = %o.epoch, "refused a change with a stale epoch");
                return Err(BackendError::StaleEpoch {
                    attempted: change.epoch,
                    current: o.epoch,
                });
            }
            let retry = match &owner {
                Some(o) if change.epoch == o.epoch => self.check_same_decision(change, o).await?,
                _ => false,
            };
            let message = self.update_message(change, &txt, ttl, retry)?;
            match self.send(message).await? {
                ResponseCode::NoError => {
                    tracing::info!(server = %self.server, name = %change.name, records = %change.records, epoch = %change.epoch, "updated");
                    return Ok(());
                }
                ResponseCode::NXRRSet
                | ResponseCode::YXRRSet
                | ResponseCode::NXDomain
                | ResponseCode::YXDomain => {
                    tracing::info!(name = %change.name, attempt, "the ownership record changed while updating; reading it again");
                }
                code => return Err(rcode_error(self.server, change, code)),
            }
        }
        Err(BackendError::Conflict(format!(
            "the ownership record of {} kept changing during {CAS_ATTEMPTS} attempts",
            change.name
        )))
    }

    async fn verify(
        &self,
        change: &DnsChange,
        timeout: Duration,
    ) -> Result<Propagation, BackendError> {
        if self.checker.servers().is_empty() {
            return Err(BackendError::Invalid("no servers to check".into()));
        }
        Ok(self
            .checker
            .check(&change.name, &change.records, timeout)
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TSigner {
        TSigner::new(
            vec![7; 32],
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("idns-key").unwrap(),
            300,
        )
        .unwrap()
    }

    fn refusal(error: TsigError, other: Vec<u8>) -> String {
        let tsig = TSIG::new(
            TsigAlgorithm::HmacSha256,
            unix_now(),
            300,
            Vec::new(),
            1,
            Some(error),
            other,
        );
        let server: SocketAddr = "192.0.2.53:53".parse().unwrap();
        match tsig_refusal(server, "idns-key", &signer(), error, &tsig) {
            BackendError::Auth(m) => m,
            other => panic!("expected Auth, got {other:?}"),
        }
    }

    #[test]
    fn tsig_errors_are_said_in_our_words() {
        let m = refusal(TsigError::BadKey, Vec::new());
        assert!(
            m.contains("192.0.2.53:53 does not know TSIG key 'idns-key' with algorithm hmac-sha256 (BADKEY)"),
            "{m}"
        );
        let m = refusal(TsigError::BadSig, Vec::new());
        assert!(
            m.contains("(BADSIG)") && m.contains("secret differs"),
            "{m}"
        );
        // BADTIME carries the server's clock: 1000 s ahead of ours.
        let server_time = (unix_now() + 1000).to_be_bytes();
        let m = refusal(TsigError::BadTime, server_time[2..].to_vec());
        assert!(
            m.contains("(BADTIME)") && m.contains("fudge of 300 s"),
            "{m}"
        );
        assert!(
            m.contains("clock is 1000 s ahead of") || m.contains("clock is 999 s ahead of"),
            "{m}"
        );
        let m = refusal(TsigError::BadTime, Vec::new());
        assert!(m.contains("(BADTIME)") && !m.contains("ahead"), "{m}");
        let m = refusal(TsigError::Unknown(99), Vec::new());
        assert!(m.contains("TSIG error 99"), "{m}");
    }
}
