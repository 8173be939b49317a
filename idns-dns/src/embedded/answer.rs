//! The complete answer path: any request, parsed by hickory-proto, answered from a
//! [`Snapshot`] and encoded within the size the transport allows.
//!
//! This path decides every answer; the fast path ([`super::fast`]) only replays answers this
//! path has already rendered.

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

use super::zone::{ServedZone, Snapshot};

/// How a request arrived, which decides how large the answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP: 512 bytes, or the EDNS size the client announces (at most the server's own).
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// The rcode of a malformed request.
const FORMERR: u8 = 1;
/// The rcode of an opcode this server does not implement.
const NOTIMP: u8 = 4;

/// Most CNAMEs followed inside one zone while answering.
const MAX_CHAIN: usize = 8;

/// The largest answer allowed for a request, given its EDNS payload size (if any).
pub(crate) fn size_limit(transport: Transport, edns_payload: Option<u16>, max_udp: u16) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match edns_payload {
            Some(p) => usize::from(p.clamp(512, max_udp.max(512))),
            None => 512,
        },
    }
}

/// Answers `query` into `out`. Returns `false` when nothing must be sent: the request is
/// shorter than a DNS header or is itself a response (answering those would let anyone
/// start a packet loop between two servers).
pub(crate) fn respond(
    snapshot: &Snapshot,
    query: &[u8],
    transport: Transport,
    max_udp: u16,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let Some(header) = query.get(..12) else {
        return false;
    };
    if header[2] & 0x80 != 0 {
        return false;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(e) => {
            tracing::trace!(error = %e, "malformed request");
            header_only(header, FORMERR, out);
            return true;
        }
    };
    if request.metadata.op_code != OpCode::Query {
        header_only(header, NOTIMP, out);
        return true;
    }
    let [question] = request.queries.as_slice() else {
        header_only(header, FORMERR, out);
        return true;
    };

    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.add_query(question.clone());
    let limit = size_limit(
        transport,
        request.edns.as_ref().map(Edns::max_payload),
        max_udp,
    );
    if let Some(theirs) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(max_udp);
        ours.set_dnssec_ok(theirs.flags().dnssec_ok);
        response.set_edns(ours);
        if theirs.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return encode(&response, limit, out);
        }
    }
    resolve(snapshot, question, &mut response);
    encode(&response, limit, out)
}

/// A reply made of the request's header alone: ID, opcode and RD kept, QR set, no records.
fn header_only(header: &[u8], rcode: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&header[..2]);
    out.push(0x80 | (header[2] & 0x79));
    out.push(rcode);
    out.extend_from_slice(&[0; 8]);
}

/// Encodes `response`; when it is larger than `limit`, sends it empty with TC set instead.
fn encode(response: &Message, limit: usize, out: &mut Vec<u8>) -> bool {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => {
            *out = bytes;
            true
        }
        Ok(_) => {
            let truncated = response.truncate();
            match truncated.to_vec() {
                Ok(bytes) if bytes.len() <= limit => {
                    *out = bytes;
                    true
                }
                _ => false,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an answer");
            false
        }
    }
}

/// Fills in the answer to `question` from `snapshot`.
fn resolve(snapshot: &Snapshot, question: &Query, response: &mut Message) {
    let qtype = question.query_type();
    let mut name = LowerName::new(question.name());
    let Some(zone) = snapshot.zone_of(&name) else {
        response.metadata.response_code = ResponseCode::Refused;
        return;
    };
    if question.query_class() != DNSClass::IN
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
    {
        response.metadata.response_code = ResponseCode::Refused;
        return;
    }
    response.metadata.authoritative = true;
    // Records owned by the name asked for carry its spelling (0x20 case randomisation).
    let mut owner = question.name().clone();
    for _ in 0..MAX_CHAIN {
        let Some(node) = zone.nodes.get(&name) else {
            if !zone.ents.contains(&name) {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            negative(zone, response);
            return;
        };
        if !matches!(qtype, RecordType::CNAME | RecordType::ANY)
            && let Some([cname]) = node.get(RecordType::CNAME)
        {
            let mut record = cname.clone();
            record.name = owner;
            let target = match &record.data {
                RData::CNAME(t) => t.0.clone(),
                _ => return,
            };
            response.add_answer(record);
            let lower = LowerName::new(&target);
            if !zone.origin.zone_of(&lower) {
                return;
            }
            name = lower;
            owner = target;
            continue;
        }
        let rrset = if qtype == RecordType::ANY {
            // RFC 8482: one RRset is enough.
            [
                RecordType::CNAME,
                RecordType::SOA,
                RecordType::A,
                RecordType::AAAA,
                RecordType::TXT,
                RecordType::NS,
            ]
            .iter()
            .find_map(|t| node.get(*t))
        } else {
            node.get(qtype)
        };
        match rrset {
            Some(records) => {
                response.add_answers(records.iter().map(|r| with_owner(r, &owner)));
            }
            None => negative(zone, response),
        }
        return;
    }
}

fn with_owner(record: &Record, owner: &hickory_proto::rr::Name) -> Record {
    let mut r = record.clone();
    r.name = owner.clone();
    r
}

fn negative(zone: &ServedZone, response: &mut Message) {
    response.add_authority(zone.negative_soa.clone());
}
