//! Unit tests of the answer paths, without sockets.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use idns_core::{BackendError, DnsChange, DnsName, Epoch, RecordSet};

use super::answer::{Transport, respond};
use super::backend::{Shared, State};
use super::config::{EmbeddedConfig, EmbeddedSpec, NameServerSpec};
use super::fast::Worker;

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn shared() -> Arc<Shared> {
    let mut config = EmbeddedSpec::new(
        vec!["127.0.0.1:0".parse().unwrap()],
        &[zone(), "example.org".parse().unwrap()],
    );
    config.zones[0].nameservers = vec![NameServerSpec {
        name: "ns1.example.com".into(),
        addresses: vec!["192.0.2.53".parse().unwrap()],
    }];
    config.zones[0].serial = Some(100);
    let config = EmbeddedConfig::try_from(config).unwrap();
    let (state, snapshot) = State::load(config.zones, None).unwrap();
    Arc::new(Shared::new(state, snapshot, None))
}

fn change(name: &str, records: RecordSet, epoch: u64) -> DnsChange {
    DnsChange {
        zone: zone(),
        name: name.parse().unwrap(),
        records,
        ttl: Duration::from_secs(30),
        epoch: Epoch::new(epoch),
        site: Some("a".parse().unwrap()),
    }
}

fn addrs(list: &[&str]) -> RecordSet {
    RecordSet::Addresses(list.iter().map(|a| a.parse().unwrap()).collect())
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(true);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Answers through the slow path and through a worker (twice: miss, then hit), checks that
/// all three are the same bytes, and parses the answer.
fn ask(shared: &Arc<Shared>, q: &[u8], transport: Transport) -> Option<Message> {
    let mut slow = Vec::new();
    let sent = respond(&shared.cell.load(), q, transport, 1232, &mut slow);
    let mut worker = Worker::new(Arc::clone(&shared.cell), 1232);
    for _ in 0..2 {
        let mut fast = Vec::new();
        assert_eq!(worker.handle(q, transport, &mut fast), sent);
        assert_eq!(fast, slow, "fast and complete paths differ");
    }
    sent.then(|| Message::from_vec(&slow).unwrap())
}

/// The SOA serial of example.com as served.
fn serial(s: &Arc<Shared>) -> u32 {
    let r = ask(
        s,
        &query("example.com.", RecordType::SOA, None),
        Transport::Udp,
    )
    .unwrap();
    match &r.answers[0].data {
        RData::SOA(soa) => soa.serial,
        other => panic!("{other:?}"),
    }
}

#[test]
fn service_names_answer_with_aa_and_ownership_txt() {
    let s = shared();
    s.apply(&change(
        "app.example.com",
        addrs(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
        3,
    ))
    .unwrap();
    let r = ask(
        &s,
        &query("App.Example.COM.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.metadata.id, 0x4242);
    assert!(r.metadata.authoritative);
    assert!(r.metadata.recursion_desired);
    assert!(!r.metadata.recursion_available);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.queries[0].name().to_ascii(), "App.Example.COM.");
    let r = ask(
        &s,
        &query("app.example.com.", RecordType::AAAA, Some(4096)),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.edns.as_ref().unwrap().max_payload(), 1232);
    assert!(r.edns.as_ref().unwrap().flags().dnssec_ok);
    let r = ask(
        &s,
        &query("_idns.app.example.com.", RecordType::TXT, None),
        Transport::Udp,
    )
    .unwrap();
    match &r.answers[0].data {
        RData::TXT(t) => assert_eq!(t.to_string(), "epoch=3 site=a"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn negative_answers_carry_the_soa() {
    let s = shared();
    s.apply(&change("a.b.example.com", addrs(&["192.0.2.1"]), 1))
        .unwrap();
    let nx = ask(
        &s,
        &query("nope.example.com.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(nx.authorities[0].ttl, 30);
    // b.example.com owns nothing but has a name below it: NODATA, not NXDOMAIN.
    let ent = ask(
        &s,
        &query("b.example.com.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
    assert!(ent.answers.is_empty());
    let nodata = ask(
        &s,
        &query("a.b.example.com.", RecordType::MX, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert_eq!(nodata.authorities.len(), 1);
}

#[test]
fn out_of_zone_and_other_classes_are_refused() {
    let s = shared();
    let r = ask(
        &s,
        &query("www.example.net.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
    assert!(r.answers.is_empty());
    let mut m = Message::query();
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    m.add_query(q);
    let r = ask(&s, &m.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let r = ask(
        &s,
        &query("example.com.", RecordType::AXFR, None),
        Transport::Tcp,
    )
    .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn cname_mode_and_chains() {
    let s = shared();
    s.apply(&change(
        "app.example.com",
        RecordSet::Alias("site-b.example.com".parse().unwrap()),
        1,
    ))
    .unwrap();
    s.apply(&change("site-b.example.com", addrs(&["198.51.100.9"]), 1))
        .unwrap();
    s.apply(&change(
        "ext.example.com",
        RecordSet::Alias("host.example.net".parse().unwrap()),
        1,
    ))
    .unwrap();
    let r = ask(
        &s,
        &query("app.example.com.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(r.answers[1].record_type(), RecordType::A);
    let r = ask(
        &s,
        &query("ext.example.com.", RecordType::AAAA, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    let r = ask(
        &s,
        &query("app.example.com.", RecordType::CNAME, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    // A CNAME loop ends without looping forever.
    s.apply(&change(
        "l1.example.com",
        RecordSet::Alias("l2.example.com".parse().unwrap()),
        1,
    ))
    .unwrap();
    s.apply(&change(
        "l2.example.com",
        RecordSet::Alias("l1.example.com".parse().unwrap()),
        1,
    ))
    .unwrap();
    let r = ask(
        &s,
        &query("l1.example.com.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert!(r.answers.len() <= 8);
}

#[test]
fn any_gets_one_rrset() {
    let s = shared();
    s.apply(&change(
        "app.example.com",
        addrs(&["192.0.2.1", "2001:db8::1"]),
        1,
    ))
    .unwrap();
    let r = ask(
        &s,
        &query("app.example.com.", RecordType::ANY, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    let r = ask(
        &s,
        &query("example.com.", RecordType::ANY, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].record_type(), RecordType::SOA);
}

#[test]
fn large_answers_are_truncated_over_udp_only() {
    let s = shared();
    let many: Vec<String> = (1..=60).map(|i| format!("192.0.2.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    s.apply(&change("big.example.com", addrs(&many), 1))
        .unwrap();
    let q = query("big.example.com.", RecordType::A, None);
    let mut out = Vec::new();
    let mut worker = Worker::new(Arc::clone(&s.cell), 1232);
    assert!(worker.handle(&q, Transport::Udp, &mut out));
    assert!(out.len() <= 512, "{} bytes", out.len());
    let r = Message::from_vec(&out).unwrap();
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    // With EDNS 4096 the client may take 1232 bytes (the server's limit): it fits.
    let q = query("big.example.com.", RecordType::A, Some(4096));
    assert!(worker.handle(&q, Transport::Udp, &mut out));
    let r = Message::from_vec(&out).unwrap();
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
    let q = query("big.example.com.", RecordType::A, None);
    assert!(worker.handle(&q, Transport::Tcp, &mut out));
    assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 60);
}

#[test]
fn serial_increases_with_each_change_only() {
    let s = shared();
    assert_eq!(serial(&s), 100);
    let c = change("app.example.com", addrs(&["192.0.2.1"]), 1);
    s.apply(&c).unwrap();
    assert_eq!(serial(&s), 101);
    s.apply(&c).unwrap();
    assert_eq!(
        serial(&s),
        101,
        "re-applying the same change changes nothing"
    );
    s.apply(&change("app.example.com", addrs(&["192.0.2.2"]), 2))
        .unwrap();
    assert_eq!(serial(&s), 102);
}

#[test]
fn stale_epochs_are_refused_and_change_nothing() {
    let s = shared();
    s.apply(&change("app.example.com", addrs(&["192.0.2.1"]), 5))
        .unwrap();
    let err = s
        .apply(&change("app.example.com", addrs(&["192.0.2.9"]), 4))
        .unwrap_err();
    assert_eq!(
        err,
        BackendError::StaleEpoch {
            attempted: Epoch::new(4),
            current: Epoch::new(5)
        }
    );
    let p = s
        .read(&zone(), &"app.example.com".parse().unwrap())
        .unwrap();
    assert_eq!(p.records, addrs(&["192.0.2.1"]));
    // Same epoch, other records or another site: a conflicting decision, refused as stale.
    let serial_before = serial(&s);
    let mut other_site = change("app.example.com", addrs(&["192.0.2.1"]), 5);
    other_site.site = Some("b".parse().unwrap());
    for conflicting in [
        change("app.example.com", addrs(&["192.0.2.3"]), 5),
        other_site,
    ] {
        assert_eq!(
            s.apply(&conflicting),
            Err(BackendError::StaleEpoch {
                attempted: Epoch::new(5),
                current: Epoch::new(5)
            })
        );
    }
    let p = s
        .read(&zone(), &"app.example.com".parse().unwrap())
        .unwrap();
    assert_eq!(p.records, addrs(&["192.0.2.1"]));
    assert_eq!(serial(&s), serial_before);
    // Same epoch, same records and site: a retry, accepted; a new TTL is applied.
    let mut retry = change("app.example.com", addrs(&["192.0.2.1"]), 5);
    s.apply(&retry).unwrap();
    assert_eq!(serial(&s), serial_before);
    retry.ttl = Duration::from_secs(60);
    s.apply(&retry).unwrap();
    let p = s
        .read(&zone(), &"app.example.com".parse().unwrap())
        .unwrap();
    assert_eq!(p.ttl, Duration::from_secs(60));
}

#[test]
fn reserved_and_foreign_names_are_refused() {
    let s = shared();
    for (name, what) in [
        ("example.com", "apex"),
        ("ns1.example.com", "name server"),
        ("_idns.x.example.com", "ownership"),
    ] {
        match s.apply(&change(name, addrs(&["192.0.2.1"]), 1)) {
            Err(BackendError::Invalid(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let mut c = change("www.example.net", addrs(&["192.0.2.1"]), 1);
    assert!(matches!(s.apply(&c), Err(BackendError::Refused(_))));
    c.zone = "example.net".parse().unwrap();
    assert!(matches!(s.apply(&c), Err(BackendError::Refused(_))));
}

#[test]
fn name_server_glue_is_served() {
    let s = shared();
    let r = ask(
        &s,
        &query("ns1.example.com.", RecordType::A, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
    let r = ask(
        &s,
        &query("example.com.", RecordType::NS, None),
        Transport::Udp,
    )
    .unwrap();
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn odd_requests_get_small_error_answers_or_none() {
    let s = shared();
    let mut worker = Worker::new(Arc::clone(&s.cell), 1232);
    let mut out = Vec::new();
    // Shorter than a header: nothing.
    assert!(!worker.handle(&[1, 2, 3], Transport::Udp, &mut out));
    // A response: nothing.
    let mut resp = query("app.example.com.", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(!worker.handle(&resp, Transport::Udp, &mut out));
    // Header only, claiming a question: FORMERR, header only.
    let header = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    assert!(worker.handle(&header, Transport::Udp, &mut out));
    assert_eq!(out, [0xab, 0xcd, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    // An UPDATE: NOTIMP.
    let mut m = Message::query();
    m.metadata.op_code = OpCode::Update;
    m.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::SOA,
    ));
    assert!(worker.handle(&m.to_vec().unwrap(), Transport::Udp, &mut out));
    assert_eq!(out[3] & 0x0f, 4);
    // Two questions: FORMERR.
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::SOA,
    ));
    m.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::NS,
    ));
    assert!(worker.handle(&m.to_vec().unwrap(), Transport::Udp, &mut out));
    assert_eq!(out[3] & 0x0f, 1);
    // EDNS version 1: BADVERS.
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::SOA,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    assert!(worker.handle(&m.to_vec().unwrap(), Transport::Udp, &mut out));
    // BADVERS and BADSIG share the code 16.
    assert_eq!(
        u16::from(Message::from_vec(&out).unwrap().metadata.response_code),
        16
    );
}

#[test]
fn garbage_never_crashes_nor_gets_an_oversized_answer() {
    let s = shared();
    s.apply(&change("app.example.com", addrs(&["192.0.2.1"]), 1))
        .unwrap();
    let mut worker = Worker::new(Arc::clone(&s.cell), 1232);
    let mut out = Vec::new();
    let seeds = [
        query("app.example.com.", RecordType::A, None),
        query("app.example.com.", RecordType::TXT, Some(512)),
        query("nope.example.com.", RecordType::ANY, Some(1400)),
    ];
    // xorshift: deterministic mutations of valid queries, plus truncations and random bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..20_000 {
        let mut packet = seeds[round % seeds.len()].clone();
        match next() % 4 {
            0 => {
                let cut = (next() as usize) % (packet.len() + 1);
                packet.truncate(cut);
            }
            1 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % packet.len();
                    packet[i] = next() as u8;
                }
            }
            2 => {
                let len = (next() % 600) as usize;
                packet = (0..len).map(|_| next() as u8).collect();
            }
            _ => packet.extend((0..next() % 40).map(|_| next() as u8)),
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            if worker.handle(&packet, transport, &mut out) && transport == Transport::Udp {
                assert!(out.len() <= 1232, "{} bytes for {packet:?}", out.len());
                assert!(out.len() >= 12);
                assert_eq!(out[..2], packet[..2], "the ID is echoed");
                // Without an OPT record in the answer, the client did not announce EDNS
                // (as far as we understood): 512 bytes at most.
                if let Ok(m) = Message::from_vec(&out)
                    && m.edns.is_none()
                {
                    assert!(out.len() <= 512);
                }
            }
        }
    }
}

/// A request built byte by byte, so that every field can be odd.
struct Shape {
    id: u16,
    flags: [u8; 2],
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    /// EDNS: payload size, DO, version, option bytes.
    edns: Option<(u16, bool, u8, Vec<u8>)>,
}

impl Shape {
    fn bytes(&self) -> Vec<u8> {
        let mut q = self.id.to_be_bytes().to_vec();
        q.extend_from_slice(&self.flags);
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(self.edns.is_some())]);
        q.extend_from_slice(&self.name);
        q.extend_from_slice(&self.qtype.to_be_bytes());
        q.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some((size, dnssec_ok, version, options)) = &self.edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, *version, if *dnssec_ok { 0x80 } else { 0 }, 0]);
            q.extend_from_slice(&(options.len() as u16).to_be_bytes());
            q.extend_from_slice(options);
        }
        q
    }
}

fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

/// A zone with every kind of answer: addresses, CNAME chains in and out of the zone, a CNAME
/// loop, an RRset too large for UDP, a withdrawn name, an empty non-terminal, glue.
fn rich() -> Arc<Shared> {
    let s = shared();
    let alias = |t: &str| RecordSet::Alias(t.parse().unwrap());
    let many: Vec<String> = (1..=80).map(|i| format!("192.0.2.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for (name, records) in [
        ("app.example.com", addrs(&["192.0.2.1", "2001:db8::1"])),
        ("alias.example.com", alias("app.example.com")),
        ("ext.example.com", alias("host.example.net")),
        ("l1.example.com", alias("l2.example.com")),
        ("l2.example.com", alias("l1.example.com")),
        ("big.example.com", addrs(&many)),
        ("gone.example.com", RecordSet::Empty),
        ("a.b.example.com", addrs(&["192.0.2.9"])),
    ] {
        s.apply(&change(name, records, 1)).unwrap();
    }
    s
}

/// Asks `worker` and the complete path; both must send the same bytes, or both nothing.
fn same_answer(s: &Shared, worker: &mut Worker, packet: &[u8], transport: Transport) {
    let mut slow = Vec::new();
    let sent = respond(&s.cell.load(), packet, transport, 1232, &mut slow);
    let mut fast = Vec::new();
    for attempt in ["first", "second"] {
        let fast_sent = worker.handle(packet, transport, &mut fast);
        assert_eq!(
            (fast_sent, &fast[..fast.len() * usize::from(fast_sent)]),
            (sent, &slow[..slow.len() * usize::from(sent)]),
            "{attempt} answer over {transport:?} differs for {packet:02x?}"
        );
    }
}

#[test]
fn cached_answers_are_the_complete_paths_byte_for_byte() {
    let s = rich();
    let mut worker = Worker::new(Arc::clone(&s.cell), 1232);
    let names = [
        "app.example.com",
        "APP.Example.COM",
        "aPp.eXaMpLe.CoM",
        "alias.example.com",
        "ext.example.com",
        "l1.example.com",
        "big.example.com",
        "gone.example.com",
        "b.example.com",
        "nope.example.com",
        "example.com",
        "ns1.example.com",
        "_idns.app.example.com",
        "deep.a.b.example.org",
        "www.example.net",
        "",
    ];
    let types = [1u16, 28, 5, 16, 6, 2, 255, 15, 252, 251, 0, 65535];
    let edns = [
        None,
        Some((0, false, 0, vec![])),
        Some((512, true, 0, vec![])),
        Some((1232, false, 0, vec![])),
        Some((4096, true, 0, vec![])),
        Some((65535, false, 0, vec![])),
        // A cookie option, and EDNS version 1 (BADVERS).
        Some((1232, true, 0, vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
        Some((1232, false, 1, vec![])),
    ];
    // RD; RD+CD+AD; nothing; Z set; TC and AA set (not a plain query).
    let flags = [
        [0x01, 0x00],
        [0x01, 0x30],
        [0x00, 0x00],
        [0x01, 0x40],
        [0x06, 0x00],
    ];
    let mut cases = 0;
    let mut id = 0u16;
    for name in names {
        for qtype in types {
            for qclass in [1u16, 3, 255] {
                for e in &edns {
                    for f in flags {
                        id = id.wrapping_add(0x1f3d);
                        let shape = Shape {
                            id,
                            flags: f,
                            name: wire(name),
                            qtype,
                            qclass,
                            edns: e.clone(),
                        };
                        let packet = shape.bytes();
                        for transport in [Transport::Udp, Transport::Tcp] {
                            same_answer(&s, &mut worker, &packet, transport);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    // Malformed: cut at every length, a trailing byte, a compressed question name, two
    // questions, an answer record, two OPT records, an OPT record with a wrong length.
    let base = Shape {
        id: 0xbeef,
        flags: [0x01, 0x00],
        name: wire("App.example.com"),
        qtype: 1,
        qclass: 1,
        edns: Some((1232, true, 0, vec![])),
    }
    .bytes();
    let mut odd: Vec<Vec<u8>> = (0..base.len()).map(|n| base[..n].to_vec()).collect();
    odd.push([base.as_slice(), &[0]].concat());
    let mut pointer = base[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    pointer[11] = 0;
    odd.push(pointer);
    for (at, value) in [(5, 2), (7, 1), (11, 2)] {
        let mut p = base.clone();
        p[at] = value;
        odd.push(p);
    }
    let mut long_opt = base.clone();
    let n = long_opt.len();
    long_opt[n - 1] = 4;
    odd.push(long_opt);
    // A name of 255 bytes, and one of 257.
    for labels in [4, 5] {
        let mut name = Vec::new();
        for _ in 0..labels - 1 {
            name.push(63);
            name.extend_from_slice(&[b'A'; 63]);
        }
        let last = if labels == 4 { 62 } else { 63 };
        name.push(last);
        name.extend_from_slice(&vec![b'b'; usize::from(last)]);
        name.push(0);
        odd.push(
            Shape {
                id: 7,
                flags: [1, 0],
                name,
                qtype: 1,
                qclass: 1,
                edns: None,
            }
            .bytes(),
        );
    }
    for packet in &odd {
        for transport in [Transport::Udp, Transport::Tcp] {
            same_answer(&s, &mut worker, packet, transport);
            cases += 1;
        }
    }
    assert!(cases > 20_000, "{cases}");
    assert!(
        worker.replayed > 10_000,
        "the fast path answered only {} of {cases}",
        worker.replayed
    );
}

#[test]
fn answers_never_go_back_to_older_records_after_a_swap() {
    // Each change at epoch e publishes 10.0.x.y (e = 256 x + y), the ownership TXT `epoch=e`
    // and SOA serial 100 + e. A worker asking all three in turn while the changes are
    // swapped in must never see an older epoch after a newer one.
    let s = shared();
    let at = |e: u64| {
        change(
            "app.example.com",
            addrs(&[&format!("10.0.{}.{}", e / 256, e % 256)]),
            e,
        )
    };
    s.apply(&at(1)).unwrap();
    const LAST: u64 = 300;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let s = Arc::clone(&s);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut worker = Worker::new(Arc::clone(&s.cell), 1232);
                let questions = [
                    query("app.example.com.", RecordType::A, None),
                    query("_idns.app.example.com.", RecordType::TXT, Some(1232)),
                    query("example.com.", RecordType::SOA, None),
                ];
                let (mut seen, mut answers) = (1u64, 0u64);
                let mut out = Vec::new();
                while seen < LAST || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for q in &questions {
                        assert!(worker.handle(q, Transport::Udp, &mut out));
                        let m = Message::from_vec(&out).unwrap();
                        let epoch = match &m.answers[0].data {
                            RData::A(a) => {
                                let [_, _, x, y] = a.0.octets();
                                u64::from(x) * 256 + u64::from(y)
                            }
                            RData::TXT(t) => t.to_string()["epoch=".len()..]
                                .split(' ')
                                .next()
                                .unwrap()
                                .parse()
                                .unwrap(),
                            RData::SOA(soa) => u64::from(soa.serial) - 100,
                            other => panic!("{other:?}"),
                        };
                        assert!(epoch >= seen, "epoch {epoch} answered after epoch {seen}");
                        seen = epoch;
                        answers += 1;
                    }
                }
                answers
            })
        })
        .collect();
    for e in 2..=LAST {
        s.apply(&at(e)).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 3);
    }
}
