//! The TCP port probe against real listeners on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use idns_core::ProbeStatus;
use serde_json::json;
use support::probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A listener that answers each connection with `reply(request)`, or stays silent on `None`.
async fn peer(reply: fn(&[u8]) -> Option<Vec<u8>>) -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind((local(), 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                match reply(&buf[..n]) {
                    Some(out) => {
                        let _ = s.write_all(&out).await;
                        let _ = s.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    (port, task)
}

fn free_port() -> u16 {
    idns_core::test_util::servers::free_port().unwrap()
}

#[tokio::test]
async fn a_refused_port_is_down_and_an_open_port_is_up() {
    let port = free_port();
    let t = Duration::from_secs(2);
    let o = probe(json!({"kind": "tcp", "port": port}), local(), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(o.reason, format!("connection refused by 127.0.0.1:{port}"));

    let (port, _task) = peer(|_| None).await;
    let o = probe(json!({"kind": "tcp", "port": port}), local(), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn send_and_expect_match_and_mismatch() {
    let (port, _task) = peer(|req| {
        Some(if req == b"PING\r\n" {
            b"+PONG\r\n".to_vec()
        } else {
            b"-ERR unknown\r\n".to_vec()
        })
    })
    .await;
    let t = Duration::from_secs(2);
    let o = probe(
        json!({"kind": "tcp", "port": port, "send": "PING\r\n", "expect": "+PONG"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    let o = probe(
        json!({"kind": "tcp", "port": port, "send": "HELLO\r\n", "expect": "+PONG"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(
        o.reason,
        "\"+PONG\" not found in the reply (14 bytes, then the peer closed)"
    );

    let o = probe(
        json!({"kind": "tcp", "port": port, "send": "HELLO\r\n", "expect_regex": "^-err", "case_insensitive": true}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn a_peer_that_never_replies_times_out() {
    let (port, _task) = peer(|_| None).await;
    let t = Duration::from_millis(300);
    let o = probe(
        json!({"kind": "tcp", "port": port, "send": "PING\r\n", "expect": "PONG"}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Timeout, "{o:?}");
    assert_eq!(
        o.reason,
        format!("no reply from 127.0.0.1:{port} within 300ms")
    );
    assert!(o.latency >= t, "{o:?}");
}

#[tokio::test]
async fn alias_address_and_port_replace_the_sites() {
    let l = TcpListener::bind(("127.0.0.4", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accept = tokio::spawn(async move { l.accept().await.map(|(s, _)| s.local_addr()) });
    // The site's address (127.0.0.1) and port (1) are not what is probed.
    let o = probe(
        json!({"kind": "tcp", "port": 1, "alias": {"address": "127.0.0.4", "port": port}}),
        local(),
        Duration::from_secs(2),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
    let reached = accept.await.unwrap().unwrap().unwrap();
    assert_eq!(reached.to_string(), format!("127.0.0.4:{port}"));
}
