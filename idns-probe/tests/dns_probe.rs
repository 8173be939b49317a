//! The DNS probe against a small authoritative responder on loopback (UDP and TCP).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use idns_core::ProbeStatus;
use serde_json::json;
use support::{probe, refused};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// The answer to a query, or `None` to stay silent. Over UDP, `big.` comes back truncated.
fn answer(query: &Message, tcp: bool) -> Option<Message> {
    let q = query.queries.first()?;
    let name = q.name().to_ascii();
    let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.add_query(q.clone());
    let a = |ip: [u8; 4]| Record::from_rdata(q.name().clone(), 60, RData::A(A(Ipv4Addr::from(ip))));
    match name.as_str() {
        "app.example.com." => {
            m.add_answer(a([192, 0, 2, 1]));
        }
        "big.example.com." if !tcp => m.metadata.truncation = true,
        "big.example.com." => {
            for i in 1..=40 {
                m.add_answer(a([198, 51, 100, i]));
            }
        }
        "silent.example.com." => return None,
        _ => m.metadata.response_code = ResponseCode::NXDomain,
    }
    Some(m)
}

/// A responder on UDP and TCP of the same port.
async fn responder() -> (u16, Vec<tokio::task::JoinHandle<()>>) {
    let udp = UdpSocket::bind((local(), 0)).await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = TcpListener::bind((local(), port)).await.unwrap();
    let u = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if let Ok(q) = Message::from_vec(&buf[..n])
                && let Some(r) = answer(&q, false)
            {
                let _ = udp.send_to(&r.to_vec().unwrap(), from).await;
            }
        }
    });
    let t = tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let Ok(n) = s.read_u16().await else { return };
                let mut buf = vec![0u8; usize::from(n)];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                if let Ok(q) = Message::from_vec(&buf)
                    && let Some(r) = answer(&q, true)
                {
                    let wire = r.to_vec().unwrap();
                    let mut out = u16::try_from(wire.len()).unwrap().to_be_bytes().to_vec();
                    out.extend_from_slice(&wire);
                    let _ = s.write_all(&out).await;
                }
            });
        }
    });
    (port, vec![u, t])
}

#[tokio::test]
async fn the_expected_answer_and_rcode_are_up_others_down() {
    let (port, _tasks) = responder().await;
    let t = Duration::from_secs(2);
    // The name defaults to the service's.
    let o = probe(
        json!({"kind": "dns", "port": port, "expect": "192.0.2.1"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    let o = probe(
        json!({"kind": "dns", "port": port, "expect": "192.0.2.9"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(
        o.reason,
        "app.example.com. A: A answer is 192.0.2.1 (expected 192.0.2.9)"
    );

    let o = probe(
        json!({"kind": "dns", "port": port, "name": "gone.example.com"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(
        o.reason,
        "gone.example.com. A: rcode NXDOMAIN (expected NOERROR)"
    );

    let o = probe(
        json!({"kind": "dns", "port": port, "name": "gone.example.com", "rcode": "nxdomain"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let (port, _tasks) = responder().await;
    let o = probe(
        json!({"kind": "dns", "port": port, "name": "big.example.com", "expect": "198.51.100.40"}),
        local(),
        Duration::from_secs(2),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (port, _tasks) = responder().await;
    let o = probe(
        json!({"kind": "dns", "port": port, "name": "silent.example.com"}),
        local(),
        Duration::from_millis(300),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Timeout, "{o:?}");
    assert_eq!(
        o.reason,
        format!("no answer from 127.0.0.1:{port} within 300ms")
    );
}

#[test]
fn bad_dns_checks_are_refused() {
    let e = refused(json!({"kind": "dns", "record_type": "BOGUS"}));
    assert!(e.contains("check.record_type = BOGUS"), "{e}");
    let e = refused(json!({"kind": "dns", "rcode": "NOPE"}));
    assert!(e.contains("check.rcode = NOPE"), "{e}");
    let e = refused(json!({"kind": "dns", "name": "a..b"}));
    assert!(e.contains("check.name = a..b"), "{e}");
}
