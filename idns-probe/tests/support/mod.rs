//! Test support: a small HTTP/1.1 server (plain or TLS) whose routes misbehave on purpose, and
//! that records what each request carried (Host header, TLS SNI, the address it arrived at).

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idns_core::{ProbeId, SiteId};
use idns_probe::{CheckSpec, Target};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The name every test's service carries.
pub const SERVICE: &str = "app.example.com";

/// Size of the `/big` body.
pub const BIG: u64 = 50 * 1024 * 1024;

/// What one request carried.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub host: Option<String>,
    pub sni: Option<String>,
    pub local: SocketAddr,
}

/// A server on one loopback address; stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of the `/big` body written so far.
    pub big_sent: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A CA and a leaf certificate for `SERVICE` signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "idns test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![SERVICE.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// Starts the test server on `ip` (any 127.x address), with TLS when `tls` is given.
pub async fn serve(ip: IpAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    serve_on(TcpListener::bind((ip, 0)).await.unwrap(), tls)
}

/// Starts the test server on a bound listener.
pub fn serve_on(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let big_sent = Arc::new(AtomicU64::new(0));
    let (s, b) = (seen.clone(), big_sent.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let local = stream.local_addr().unwrap();
            let (s, b, tls) = (s.clone(), b.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => handle(stream, None, local, s, b).await,
                    Some(cfg) => {
                        let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().map(str::to_owned);
                        handle(tls, sni, local, s, b).await
                    }
                }
            });
        }
    });
    Server {
        addr,
        seen,
        big_sent,
        task,
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    sni: Option<String>,
    local: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    big_sent: Arc<AtomicU64>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let host = text.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.trim().to_owned())
    });
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        host,
        sni,
        local,
    });
    let reply = |status: &str, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let out = match path.as_str() {
        "/ok" => reply("200 OK", b"hello OK world"),
        "/absent" => reply("200 OK", b"hello world"),
        "/far" => {
            let mut body = vec![b'x'; 70_000];
            body.extend_from_slice(b"OK");
            reply("200 OK", &body)
        }
        "/404" => reply("404 Not Found", b"OK"),
        "/500" => reply("500 Internal Server Error", b"OK"),
        "/redirect" => {
            b"HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec()
        }
        "/silent" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        "/stall" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello")
                .await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        "/big" => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", BIG + 2);
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0u64;
            while sent < BIG {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len() as u64;
                big_sent.store(sent, Ordering::SeqCst);
            }
            let _ = stream.write_all(b"OK").await;
            return;
        }
        _ => reply("404 Not Found", b"no such route"),
    };
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// A target for `SERVICE` at `ip`.
pub fn target(ip: IpAddr) -> Target {
    Target::at(
        SERVICE.parse().unwrap(),
        SiteId::try_from("site").unwrap(),
        ip,
    )
}

/// Builds a probe from a JSON check for `SERVICE` at `ip`.
pub fn probe(
    check: serde_json::Value,
    ip: IpAddr,
    timeout: Duration,
) -> std::sync::Arc<dyn idns_core::Probe> {
    CheckSpec::from_value(&check, "check")
        .unwrap()
        .build(&target(ip), &ProbeId::try_from("p").unwrap(), timeout)
        .unwrap()
}

/// The error a bad check is refused with, as text.
pub fn refused(check: serde_json::Value) -> String {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    match CheckSpec::from_value(&check, "check").and_then(|c| {
        c.build(
            &target(ip),
            &ProbeId::try_from("p").unwrap(),
            Duration::from_secs(1),
        )
    }) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// A tracing subscriber that keeps every event's fields as text, to prove what logs hold.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<String>>>);

impl Captured {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = format!("span {}", span.metadata().name());
        span.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = String::from("record");
        values.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{} {}", event.metadata().level(), event.metadata().target());
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
