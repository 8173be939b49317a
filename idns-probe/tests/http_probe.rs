//! The HTTP(S) page probe against a real HTTP/1.1 server on loopback, plain and TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use idns_core::ProbeStatus;
use serde_json::json;
use support::{SERVICE, probe, refused, serve};

const LOCAL: &str = "127.0.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn url(port: u16, path: &str) -> String {
    format!("http://{SERVICE}:{port}{path}")
}

#[tokio::test]
async fn string_present_absent_and_beyond_the_window() {
    let srv = serve(ip(LOCAL), None).await;
    let port = srv.addr.port();
    let t = Duration::from_secs(5);

    let o = probe(
        json!({"kind": "http", "url": url(port, "/ok"), "expect": "OK"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    let o = probe(
        json!({"kind": "http", "url": url(port, "/absent"), "expect": "OK"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.contains("\"OK\" not found in the body (11 bytes)"),
        "{o:?}"
    );

    // 70,000 bytes of filler then "OK": beyond the default 64 KiB window, inside a larger one.
    let o = probe(
        json!({"kind": "http", "url": url(port, "/far"), "expect": "OK"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.contains("not found in the first 65536 bytes"),
        "{o:?}"
    );
    let o = probe(
        json!({"kind": "http", "url": url(port, "/far"), "expect": "OK", "body_window": 80_000}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    // Case and regex options.
    let o = probe(
        json!({"kind": "http", "url": url(port, "/ok"), "expect": "ok WORLD", "case_insensitive": true}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
    let o = probe(
        json!({"kind": "http", "url": url(port, "/ok"), "expect_regex": "^hello [A-Z]+ world$"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn status_codes_404_and_500_are_down_unless_expected() {
    let srv = serve(ip(LOCAL), None).await;
    let port = srv.addr.port();
    let t = Duration::from_secs(5);
    for (path, code) in [
        ("/404", "404 Not Found"),
        ("/500", "500 Internal Server Error"),
    ] {
        let o = probe(
            json!({"kind": "http", "url": url(port, path)}),
            ip(LOCAL),
            t,
        )
        .check()
        .await;
        assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
        assert_eq!(o.reason, format!("HTTP {code} (expected 200-399)"));
    }
    let o = probe(
        json!({"kind": "http", "url": url(port, "/404"), "status": [200, "4xx"], "expect": "OK"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn redirects_are_judged_by_status_or_followed() {
    let srv = serve(ip(LOCAL), None).await;
    let port = srv.addr.port();
    let t = Duration::from_secs(5);
    let o = probe(
        json!({"kind": "http", "url": url(port, "/redirect"), "status": [200]}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(o.reason.starts_with("HTTP 302"), "{o:?}");
    let o = probe(
        json!({"kind": "http", "url": url(port, "/redirect"), "status": [200], "redirects": 2, "expect": "OK"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
    let paths: Vec<String> = srv
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/redirect", "/redirect", "/ok"]);
}

#[tokio::test]
async fn host_and_sni_carry_the_service_name_while_the_connection_goes_to_the_site() {
    // The service name does not resolve here: only the pinned address can have been used.
    let pki = support::pki();
    let site = ip("127.0.0.2");
    let srv = serve(site, Some(pki.server.clone())).await;
    let port = srv.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let o = probe(
        json!({"kind": "http", "url": format!("https://{SERVICE}:{port}/ok"), "expect": "OK",
               "ca_file": ca}),
        site,
        Duration::from_secs(5),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].host.as_deref(),
        Some(format!("{SERVICE}:{port}").as_str())
    );
    assert_eq!(seen[0].sni.as_deref(), Some(SERVICE));
    assert_eq!(seen[0].local.ip(), site);

    // The plain-HTTP case, through alias.address instead of the site's address.
    let plain = serve(ip("127.0.0.3"), None).await;
    let o = probe(
        json!({"kind": "http", "url": url(plain.addr.port(), "/ok"), "alias": {"address": "127.0.0.3"}}),
        site,
        Duration::from_secs(5),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
    let seen = plain.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].host.as_deref(),
        Some(format!("{SERVICE}:{}", plain.addr.port()).as_str())
    );
    assert_eq!(seen[0].local.ip(), ip("127.0.0.3"));
}

#[tokio::test]
async fn an_untrusted_certificate_is_down_unless_its_ca_is_given_or_checks_are_off() {
    let pki = support::pki();
    let srv = serve(ip(LOCAL), Some(pki.server.clone())).await;
    let u = format!("https://{SERVICE}:{}/ok", srv.addr.port());
    let t = Duration::from_secs(5);

    let o = probe(json!({"kind": "http", "url": u}), ip(LOCAL), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(o.reason.starts_with("TLS error:"), "{o:?}");
    assert!(o.reason.contains("certificate"), "{o:?}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let o = probe(
        json!({"kind": "http", "url": u, "ca_file": ca}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    // The right CA but the wrong name: still down.
    let other = format!("https://other.example.com:{}/ok", srv.addr.port());
    let o = probe(
        json!({"kind": "http", "url": other, "ca_file": ca}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(o.reason.starts_with("TLS error:"), "{o:?}");

    let o = probe(
        json!({"kind": "http", "url": other, "danger_accept_invalid_certs": true}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn a_silent_server_and_a_stalled_body_time_out() {
    let srv = serve(ip(LOCAL), None).await;
    let port = srv.addr.port();
    let t = Duration::from_millis(300);

    let o = probe(
        json!({"kind": "http", "url": url(port, "/silent")}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Timeout, "{o:?}");
    assert!(
        o.reason.contains("no response from 127.0.0.1 within 300ms"),
        "{o:?}"
    );
    assert!(
        o.latency >= t && o.latency < Duration::from_secs(2),
        "{o:?}"
    );

    let o = probe(
        json!({"kind": "http", "url": url(port, "/stall"), "expect": "OK"}),
        ip(LOCAL),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Timeout, "{o:?}");
    assert!(o.reason.contains("body stalled: 5 bytes read"), "{o:?}");
}

#[tokio::test]
async fn refused_connections_are_down_at_once() {
    let port = {
        let l = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let o = probe(
        json!({"kind": "http", "url": url(port, "/")}),
        ip(LOCAL),
        Duration::from_secs(5),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(o.reason, "connection refused by 127.0.0.1");
}

#[tokio::test]
async fn a_50_mb_body_is_read_only_up_to_the_window() {
    let srv = serve(ip(LOCAL), None).await;
    let o = probe(
        json!({"kind": "http", "url": url(srv.addr.port(), "/big"), "expect": "OK"}),
        ip(LOCAL),
        Duration::from_secs(10),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.contains("not found in the first 65536 bytes"),
        "{o:?}"
    );
    // The probe hung up after the window: the server could write no more than what the socket
    // buffers hold, far from the 50 MB it wanted to send.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = srv.big_sent.load(Ordering::SeqCst);
    assert!(sent < 16 * 1024 * 1024, "the server wrote {sent} bytes");
}

#[test]
fn bad_checks_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"kind": "http", "url": "ftp://x/"}),
            "check.url = ftp://x/",
        ),
        (json!({"kind": "http", "url": "http://"}), "check.url"),
        (
            json!({"kind": "http", "url": "http://127.0.0.1/"}),
            "must name a host",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "expect_regex": "(("}),
            "check.expect_regex = ((",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "status": ["600-700"]}),
            "check.status[0] = 600-700",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "method": "GE T"}),
            "check.method = GE T",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "headers": {"a b": "x"}}),
            "check.headers.a b",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "ca_file": "/nonexistent.pem"}),
            "check.ca_file = /nonexistent.pem: cannot be read",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "body_window": 0}),
            "check.body_window = 0",
        ),
        (
            json!({"kind": "http", "url": "http://a.b/", "bogus": 1}),
            "unknown field `bogus`",
        ),
        (json!({"kind": "http"}), "missing field `url`"),
        (json!({"kind": "smoke"}), "unknown variant `smoke`"),
        (json!(null), "check: is missing"),
        (json!({"kind": "tcp"}), "check.port: is missing"),
        (json!({"kind": "tcp", "port": 0}), "check.port = 0"),
        (json!({"kind": "tcp", "port": 70000}), "check"),
        (
            json!({"kind": "tcp", "port": 80, "expect_regex": "[", "alias": {"port": 0}}),
            "check.alias.port = 0",
        ),
    ];
    for (check, needle) in cases {
        let e = refused(check.clone());
        assert!(e.contains(needle), "{check}: missing {needle:?} in {e}");
    }
}

#[tokio::test]
async fn a_site_known_by_host_name_is_probed_at_that_name_with_the_service_name() {
    // A site in alias mode has no address: its own host name is resolved at each check.
    let srv = serve(ip(LOCAL), None).await;
    let target = idns_probe::Target {
        service: SERVICE.parse().unwrap(),
        site: "site".parse().unwrap(),
        address: None,
        host: Some("localhost".parse().unwrap()),
    };
    let id = "p".parse().unwrap();
    for check in [
        json!({"kind": "http", "url": url(srv.addr.port(), "/ok"), "expect": "OK"}),
        json!({"kind": "tcp", "port": srv.addr.port()}),
    ] {
        let p = idns_probe::CheckSpec::from_value(&check, "check")
            .unwrap()
            .build(&target, &id, Duration::from_secs(5))
            .unwrap();
        let o = p.check().await;
        assert_eq!(o.status, ProbeStatus::Up, "{check}: {o:?}");
    }
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].host.as_deref(),
        Some(format!("{SERVICE}:{}", srv.addr.port()).as_str())
    );
}

#[test]
fn secret_headers_never_reach_debug_output() {
    let check = json!({"kind": "http", "url": "http://a.b/", "headers": {
        "Authorization": "Bearer s3cr3t-bearer",
        "cookie": "session=s3cr3t-cookie",
        "X-Api-Key": "s3cr3t-key",
        "Accept": "text/plain",
    }});
    let spec = idns_probe::CheckSpec::from_value(&check, "check").unwrap();
    let built = probe(check.clone(), ip(LOCAL), Duration::from_secs(1));
    let logged = idns_core::redacted(&check);
    for shown in [
        format!("{spec:?}"),
        format!("{built:?}"),
        format!("{logged:?}"),
    ] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("text/plain"), "{shown}");
    }
}

/// What an encoded-body server sends after its head.
enum Encoded {
    /// These bytes, then the connection closes.
    Bytes(Vec<u8>),
    /// `n` zero bytes gzip-compressed as they are written, for as long as the client reads.
    GzipZeros(u64),
}

/// A server on loopback that answers every request `200 OK` with `Content-Encoding: encoding`
/// and `body`, no length (the body ends when the connection closes). It records each request's
/// `Accept-Encoding` and counts the body bytes it wrote.
struct EncodedServer {
    addr: std::net::SocketAddr,
    accept_encoding: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EncodedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_encoded(encoding: &'static str, body: Encoded) -> EncodedServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept_encoding = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let body = std::sync::Arc::new(body);
    let (seen, count) = (accept_encoding.clone(), sent.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (seen, count, body) = (seen.clone(), count.clone(), body.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(text.lines().find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("accept-encoding"))
                        .map(|(_, v)| v.trim().to_owned())
                }));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-encoding: {encoding}\r\nconnection: close\r\n\r\n"
                );
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                match &*body {
                    Encoded::Bytes(b) => {
                        if stream.write_all(b).await.is_ok() {
                            count.fetch_add(b.len() as u64, Ordering::SeqCst);
                        }
                    }
                    Encoded::GzipZeros(n) => {
                        let zeros = tokio::io::BufReader::new(tokio::io::repeat(0).take(*n));
                        let mut gz = async_compression::tokio::bufread::GzipEncoder::new(zeros);
                        let mut chunk = vec![0u8; 64 * 1024];
                        loop {
                            match gz.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(k) => {
                                    if stream.write_all(&chunk[..k]).await.is_err() {
                                        return;
                                    }
                                    count.fetch_add(k as u64, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    EncodedServer {
        addr,
        accept_encoding,
        sent,
        task,
    }
}

/// `data` compressed with the coding named as in `Content-Encoding`.
async fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder};
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match coding {
        "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
        "deflate" => ZlibEncoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
        other => panic!("no encoder for {other}"),
    }
    .unwrap();
    out
}

/// The outcome of a probe of `srv` looking for `expect`.
async fn search(srv: &EncodedServer, expect: &str) -> idns_core::ProbeOutcome {
    probe(
        json!({"kind": "http", "url": url(srv.addr.port(), "/"), "expect": expect}),
        ip(LOCAL),
        Duration::from_secs(20),
    )
    .check()
    .await
}

/// Asserts that `o` is down with a reason containing `needle`.
fn assert_down(o: &idns_core::ProbeOutcome, needle: &str) {
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(o.reason.contains(needle), "{needle:?} missing: {o:?}");
}

#[tokio::test]
async fn compressed_bodies_are_searched_decoded() {
    let text = b"<html><body>status: ALL SYSTEMS OK</body></html>".repeat(20);
    for coding in ["gzip", "br", "deflate"] {
        let srv = serve_encoded(coding, Encoded::Bytes(compress(coding, &text).await)).await;
        let o = search(&srv, "ALL SYSTEMS OK").await;
        assert_eq!(o.status, ProbeStatus::Up, "{coding}: {o:?}");
        // The probe asks for the codings it can undo, as a browser does.
        let asked = srv.accept_encoding.lock().unwrap().clone();
        assert_eq!(asked, [Some("gzip, deflate, br".to_owned())], "{coding}");
        // Absent from the decoded text: "not found", counted in decoded bytes, and saying so.
        let o = search(&srv, "MAINTENANCE").await;
        let needle = format!(
            "\"MAINTENANCE\" not found in the body ({} bytes (decoded from {coding}))",
            text.len()
        );
        assert_down(&o, &needle);
    }
}

#[tokio::test]
async fn a_corrupt_or_unknown_compression_is_reported_as_such() {
    let mut gz = compress("gzip", &b"hello OK world ".repeat(400)).await;
    // Keep the gzip header (10 bytes), garble the compressed data after it.
    for b in gz.iter_mut().skip(10) {
        *b = 0xff;
    }
    let srv = serve_encoded("gzip", Encoded::Bytes(gz)).await;
    assert_down(
        &search(&srv, "OK").await,
        "the body is compressed (gzip) and could not be decoded",
    );
    // A coding the probe does not know is named, not searched as if it were text.
    let srv = serve_encoded("zstd", Encoded::Bytes(b"(zstd bytes) OK".to_vec())).await;
    assert_down(
        &search(&srv, "OK").await,
        "the body is compressed with \"zstd\"",
    );
}

#[tokio::test]
async fn a_compression_bomb_is_decoded_only_up_to_the_window() {
    // 64 GiB of zeros, compressed on the fly (about 64 MB of gzip): far beyond the window.
    let srv = serve_encoded("gzip", Encoded::GzipZeros(64 << 30)).await;
    assert_down(
        &search(&srv, "OK").await,
        "not found in the first 65536 bytes (decoded from gzip)",
    );
    // The probe hung up once the window was decoded: the server could write no more than the
    // socket buffers hold, a small part of the compressed stream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = srv.sent.load(Ordering::SeqCst);
    assert!(sent < 16 * 1024 * 1024, "the server wrote {sent} bytes");
}
