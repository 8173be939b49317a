//! The embedded server over real sockets on loopback: garbage over UDP, TCP, the propagation
//! check, and the state file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use idns_core::{BackendError, DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer, EmbeddedSpec};
use idns_dns::propagation::PropagationChecker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn config() -> EmbeddedSpec {
    let mut c = EmbeddedSpec::new(vec!["127.0.0.1:0".parse().unwrap()], &[zone()]);
    c.udp_threads = 2;
    c
}

fn checked(spec: EmbeddedSpec) -> EmbeddedConfig {
    EmbeddedConfig::try_from(spec).unwrap()
}

fn change(records: RecordSet, epoch: u64) -> DnsChange {
    DnsChange {
        zone: zone(),
        name: "app.example.com".parse().unwrap(),
        records,
        ttl: Duration::from_secs(20),
        epoch: Epoch::new(epoch),
        site: Some("primary".parse().unwrap()),
    }
}

fn addrs(list: &[&str]) -> RecordSet {
    RecordSet::Addresses(list.iter().map(|a| a.parse().unwrap()).collect())
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

async fn udp_ask(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_millis(150), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_garbage_gets_no_crash_and_no_oversized_answer() {
    let server = EmbeddedServer::start(checked(config())).await.unwrap();
    let addr = server.udp_addrs()[0];
    server
        .backend()
        .apply(&change(addrs(&["192.0.2.1"]), 1))
        .await
        .unwrap();
    let valid = query("app.example.com.", RecordType::A);
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 11],
        valid[..12].to_vec(),
        valid[..valid.len() - 1].to_vec(),
        vec![0xff; 600],
        vec![0u8; 512],
    ];
    // A name made of compression pointers that point at each other.
    let mut looped = valid[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    packets.push(looped);
    // Every prefix of a valid query, and every single-byte flip of it.
    for cut in 0..valid.len() {
        packets.push(valid[..cut].to_vec());
    }
    for i in 0..valid.len() {
        let mut p = valid.clone();
        p[i] ^= 0xa5;
        packets.push(p);
    }
    for p in &packets {
        if let Some(answer) = udp_ask(addr, p).await {
            assert!(
                answer.len() <= 512,
                "{} bytes answered to {p:?}",
                answer.len()
            );
            assert!(answer.len() >= 12, "answer shorter than a header to {p:?}");
        }
    }
    // Still serving.
    let answer = udp_ask(addr, &valid)
        .await
        .expect("the server still answers");
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_serves_several_queries_on_one_connection() {
    let server = EmbeddedServer::start(checked(config())).await.unwrap();
    let many = eighty_addresses(&server).await;
    // Over UDP without EDNS it is truncated...
    let q = query("app.example.com.", RecordType::A);
    let m = Message::from_vec(&udp_ask(server.udp_addrs()[0], &q).await.unwrap()).unwrap();
    assert!(m.metadata.truncation);
    // ...over TCP it comes whole, twice on the same connection.
    let mut stream = TcpStream::connect(server.tcp_addrs()[0]).await.unwrap();
    for _ in 0..2 {
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        stream.write_all(&framed).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert!(!m.metadata.truncation);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 80);
    }
    // The propagation check falls back to TCP by itself.
    let p = PropagationChecker::new(server.udp_addrs().iter().copied())
        .check(
            &"app.example.com".parse().unwrap(),
            &many,
            Duration::from_secs(2),
        )
        .await;
    assert!(p.complete(), "{p:?}");
    server.shutdown();
}

/// Publishes 80 addresses for `app.example.com` (an answer too big for UDP without EDNS);
/// returns them.
async fn eighty_addresses(server: &EmbeddedServer) -> RecordSet {
    let many: Vec<String> = (1..=80).map(|i| format!("192.0.2.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let records = addrs(&many);
    server
        .backend()
        .apply(&change(records.clone(), 1))
        .await
        .unwrap();
    records
}

/// Sends `q` framed for TCP.
async fn tcp_send(stream: &mut TcpStream, q: &[u8]) -> std::io::Result<()> {
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    stream.write_all(&framed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_loses_its_tcp_slot() {
    let mut spec = config();
    spec.max_tcp_connections = 1;
    spec.tcp_idle_timeout = Duration::from_millis(500);
    let server = EmbeddedServer::start(checked(spec)).await.unwrap();
    eighty_addresses(&server).await;
    let q = query("app.example.com.", RecordType::A);
    let tcp = server.tcp_addrs()[0];
    // The only slot: a client that asks for 20,000 answers of about 1.3 kB and reads none,
    // far more than the socket buffers between them hold.
    let mut greedy = TcpStream::connect(tcp).await.unwrap();
    let flood = q.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..20_000 {
            if tcp_send(&mut greedy, &flood).await.is_err() {
                break;
            }
        }
        greedy
    });
    // Another client still gets its answer once the server gives up writing to the first.
    let mut polite = TcpStream::connect(tcp).await.unwrap();
    tcp_send(&mut polite, &q).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let len = polite.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        polite.read_exact(&mut buf).await?;
        std::io::Result::Ok(buf)
    })
    .await
    .expect("answered within 10 s: the slot was freed")
    .unwrap();
    assert_eq!(Message::from_vec(&answer).unwrap().answers.len(), 80);
    writer.abort();
    server.shutdown();
}

/// Whether the server closes `stream` within `within` (a read returns end of file or a
/// reset), rather than keeping it open.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Asks `q` on `stream`; the answer, or `None` when none comes within `within`.
async fn tcp_ask(stream: &mut TcpStream, q: &[u8], within: Duration) -> Option<Message> {
    tcp_send(stream, q).await.ok()?;
    let answer = tokio::time::timeout(within, async {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        std::io::Result::Ok(buf)
    })
    .await;
    Message::from_vec(&answer.ok()?.ok()?).ok()
}

/// A server of `spec` publishing one address for `app.example.com`; its TCP address, and a
/// query for that name.
async fn serving_one_address(spec: EmbeddedSpec) -> (EmbeddedServer, SocketAddr, Vec<u8>) {
    let server = EmbeddedServer::start(checked(spec)).await.unwrap();
    server
        .backend()
        .apply(&change(addrs(&["192.0.2.1"]), 1))
        .await
        .unwrap();
    let tcp = server.tcp_addrs()[0];
    (server, tcp, query("app.example.com.", RecordType::A))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_tcp_limit_is_closed_while_other_clients_are_answered() {
    const LIMIT: usize = 16;
    const EXTRA: usize = 4;
    let mut spec = config();
    // The server as a whole could take every connection of the greedy client: only its own
    // limit leaves room for the others.
    spec.max_tcp_connections = LIMIT + EXTRA;
    spec.max_tcp_connections_per_client = LIMIT;
    spec.tcp_idle_timeout = Duration::from_secs(60);
    let (server, tcp, q) = serving_one_address(spec).await;
    // 127.0.0.1 opens more idle connections than it may hold.
    let mut greedy = Vec::new();
    for _ in 0..LIMIT + EXTRA {
        greedy.push(TcpStream::connect(tcp).await.unwrap());
    }
    // Another client, from another loopback address, is answered on a new connection.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(tcp).await.unwrap();
    let answer = tcp_ask(&mut other, &q, Duration::from_secs(5))
        .await
        .expect("another client is answered while the first holds its limit");
    assert_eq!(answer.answers.len(), 1);
    // The server closed the greedy client's connections beyond its limit (long before the
    // 60 s idle timeout) and kept the others.
    let mut checks = tokio::task::JoinSet::new();
    for mut stream in greedy {
        checks.spawn(async move {
            let closed = closed_by_server(&mut stream, Duration::from_secs(2)).await;
            (closed, stream)
        });
    }
    let mut open = Vec::new();
    while let Some(checked) = checks.join_next().await {
        let (closed, stream) = checked.unwrap();
        if !closed {
            open.push(stream);
        }
    }
    assert_eq!(open.len(), LIMIT, "connections of 127.0.0.1 still open");
    // Those it kept still answer.
    for stream in &mut open {
        let answer = tcp_ask(stream, &q, Duration::from_secs(5)).await;
        assert_eq!(answer.expect("a kept connection answers").answers.len(), 1);
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closed_its_tcp_connections_may_open_as_many_again() {
    const LIMIT: usize = 3;
    let mut spec = config();
    spec.max_tcp_connections_per_client = LIMIT;
    let (server, tcp, q) = serving_one_address(spec).await;
    for round in 0..3 {
        let mut held = Vec::new();
        // The server counts a closed connection out once its task has seen the close: a
        // connection opened just before may still be refused, one a little later is not.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while held.len() < LIMIT {
            let mut stream = TcpStream::connect(tcp).await.unwrap();
            if tcp_ask(&mut stream, &q, Duration::from_secs(2))
                .await
                .is_some()
            {
                held.push(stream);
            } else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: connections closed earlier still count against the client"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drop(held);
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_inside_a_query_is_dropped_at_the_read_deadline() {
    let mut spec = config();
    spec.tcp_idle_timeout = Duration::from_millis(300);
    let server = EmbeddedServer::start(checked(spec)).await.unwrap();
    let tcp = server.tcp_addrs()[0];
    let q = query("app.example.com.", RecordType::A);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    // Half a length prefix, then nothing.
    let mut half_prefix = TcpStream::connect(tcp).await.unwrap();
    half_prefix.write_all(&framed[..1]).await.unwrap();
    // A whole prefix and part of the message, then nothing.
    let mut half_message = TcpStream::connect(tcp).await.unwrap();
    half_message.write_all(&framed[..7]).await.unwrap();
    for (what, stream) in [
        ("half a length prefix", &mut half_prefix),
        ("part of a message", &mut half_message),
    ] {
        assert!(
            closed_by_server(stream, Duration::from_secs(3)).await,
            "a client that sent {what} and stalled was not dropped"
        );
    }
    // A message trickled a byte at a time, each in time for an idle deadline: the whole
    // message still has to arrive within one read deadline.
    let mut trickle = TcpStream::connect(tcp).await.unwrap();
    let mut dropped_at = None;
    for (i, byte) in framed.iter().enumerate() {
        if trickle.write_all(&[*byte]).await.is_err()
            || closed_by_server(&mut trickle, Duration::from_millis(100)).await
        {
            dropped_at = Some(i);
            break;
        }
    }
    assert!(
        dropped_at.is_some_and(|i| i + 1 < framed.len()),
        "a query trickled over {} bytes was read to its end",
        framed.len()
    );
    // The server still answers a client that sends whole queries.
    let mut prompt = TcpStream::connect(tcp).await.unwrap();
    assert!(
        tcp_ask(&mut prompt, &q, Duration::from_secs(5))
            .await
            .is_some()
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_closes_the_open_tcp_connections() {
    let server = EmbeddedServer::start(checked(config())).await.unwrap();
    let q = query("app.example.com.", RecordType::A);
    let mut stream = TcpStream::connect(server.tcp_addrs()[0]).await.unwrap();
    tcp_send(&mut stream, &q).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    server.shutdown();
    // The connection's task ended with the server: the client sees the close at once, not
    // after the idle timeout (10 s by default).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_stopped_server_as_not_current() {
    let server = EmbeddedServer::start(checked(config())).await.unwrap();
    let backend = server.backend();
    let c = change(addrs(&["192.0.2.1"]), 1);
    backend.apply(&c).await.unwrap();
    server.shutdown();
    let p = backend
        .verify(&c, Duration::from_millis(400))
        .await
        .unwrap();
    assert!(!p.complete());
    assert_eq!(p.servers.len(), 1);
    assert!(!p.servers[0].detail.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_keeps_records_epochs_and_serials_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.state_file = Some(dir.path().join("state.json"));
    cfg.zones[0].serial = Some(1000);
    let server = EmbeddedServer::start(checked(cfg.clone())).await.unwrap();
    server
        .backend()
        .apply(&change(addrs(&["192.0.2.5"]), 7))
        .await
        .unwrap();
    server.shutdown();

    let server = EmbeddedServer::start(checked(cfg)).await.unwrap();
    let backend = server.backend();
    let p = backend
        .read(&zone(), &"app.example.com".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(p.records, addrs(&["192.0.2.5"]));
    assert_eq!(p.owner.unwrap().epoch, Epoch::new(7));
    let err = backend
        .apply(&change(addrs(&["192.0.2.6"]), 6))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BackendError::StaleEpoch {
            attempted: Epoch::new(6),
            current: Epoch::new(7)
        }
    );
    // Served from the first packet on, with the serial where it was.
    let m = Message::from_vec(
        &udp_ask(
            server.udp_addrs()[0],
            &query("example.com.", RecordType::SOA),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    match &m.answers[0].data {
        RData::SOA(soa) => assert_eq!(soa.serial, 1001),
        other => panic!("{other:?}"),
    }
    server.shutdown();
}

#[test]
fn invalid_configuration_names_the_field() {
    let mut cfg = config();
    cfg.zones[0].name = "bad name".into();
    let err = EmbeddedConfig::try_from(cfg).unwrap_err().to_string();
    assert!(err.contains("zones[0].name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_from_many_clients_get_each_their_own_answers() {
    let mut cfg = config();
    cfg.udp_threads = 1;
    let server = EmbeddedServer::start(checked(cfg)).await.unwrap();
    let addr = server.udp_addrs()[0];
    server
        .backend()
        .apply(&change(addrs(&["192.0.2.1"]), 1))
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    // Every client fires 40 queries at once (so the server reads them in batches), with IDs
    // and names of its own.
    for (c, socket) in clients.iter().enumerate() {
        for i in 0..40u16 {
            let mut m = Message::query();
            m.metadata.id = (c as u16) * 1000 + i;
            let name = if i.is_multiple_of(2) {
                "app.example.com."
            } else {
                "nope.example.com."
            };
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            socket.send_to(&m.to_vec().unwrap(), addr).await.unwrap();
        }
    }
    for (c, socket) in clients.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; 4096];
        while seen.len() < 40 {
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
                .await
                .expect("every query is answered")
                .unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            let i = m.metadata.id - (c as u16) * 1000;
            assert!(i < 40, "client {c} got an answer meant for someone else");
            let want = if i.is_multiple_of(2) {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            assert_eq!(m.metadata.response_code, want);
            seen.insert(i);
        }
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_the_name_servers_of_a_zone() {
    let mut cfg = config();
    cfg.zones[0].nameservers = vec![
        idns_dns::embedded::NameServerSpec {
            name: "ns1.example.com".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        },
        idns_dns::embedded::NameServerSpec {
            name: "ns2.example.com".into(),
            addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        },
    ];
    let server = EmbeddedServer::start(checked(cfg)).await.unwrap();
    let addr = server.udp_addrs()[0];
    let c = change(addrs(&["192.0.2.1"]), 1);
    server.backend().apply(&c).await.unwrap();
    let checker =
        PropagationChecker::from_nameservers(&zone(), addr, addr.port(), Duration::from_secs(1))
            .await
            .unwrap();
    let mut servers = checker.servers().to_vec();
    servers.sort();
    let v6: SocketAddr = format!("[::1]:{}", addr.port()).parse().unwrap();
    assert_eq!(servers, [addr, v6]);
    // The embedded server listens on 127.0.0.1 only: ::1 is not current.
    let p = checker
        .check(&c.name, &c.records, Duration::from_millis(300))
        .await;
    assert!(!p.complete());
    assert!(p.servers.iter().any(|s| s.current));
    server.shutdown();
}
