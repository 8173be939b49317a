//! The embedded server's state file under trouble: a write that stalls or fails, and many
//! publishes at once, on a runtime with one thread. A change is on disk before it is served,
//! a failed write leaves the previous records served, and the disk work never holds up the
//! runtime the server answers TCP on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use idns_core::{BackendError, DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer, EmbeddedSpec};

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}

fn name() -> DnsName {
    "app.example.com".parse().unwrap()
}

fn config(state_file: &Path) -> EmbeddedConfig {
    let mut spec = EmbeddedSpec::new(vec!["127.0.0.1:0".parse().unwrap()], &[zone()]);
    spec.udp_threads = 1;
    spec.state_file = Some(state_file.to_path_buf());
    EmbeddedConfig::try_from(spec).unwrap()
}

/// `app.example.com` at `192.0.2.<epoch>`, at `epoch`.
fn change(epoch: u8) -> DnsChange {
    DnsChange {
        zone: zone(),
        name: name(),
        records: address(epoch),
        ttl: Duration::from_secs(20),
        epoch: Epoch::new(u64::from(epoch)),
        site: Some("primary".parse().unwrap()),
    }
}

fn address(epoch: u8) -> RecordSet {
    RecordSet::Addresses(vec![format!("192.0.2.{epoch}").parse().unwrap()])
}

/// The A records of `app.example.com` in `answer`.
fn a_records(answer: &Message) -> Vec<String> {
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn framed_query() -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("app.example.com.").unwrap(),
        RecordType::A,
    ));
    let q = m.to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// Asks for `app.example.com` over TCP from a plain thread (so it does not depend on the
/// runtime under test); `None` when no answer comes within `within`.
fn ask_blocking(server: SocketAddr, within: Duration) -> Option<Message> {
    let mut stream = std::net::TcpStream::connect_timeout(&server, within).ok()?;
    stream.set_read_timeout(Some(within)).ok()?;
    stream.write_all(&framed_query()).ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok()
}

async fn ask(server: SocketAddr) -> Message {
    tokio::task::spawn_blocking(move || ask_blocking(server, Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the server answers")
}

async fn epoch_read(backend: &impl DnsBackend) -> Epoch {
    let published = backend.read(&zone(), &name()).await.unwrap();
    published.owner.expect("an owner is published").epoch
}

/// Checks that `err` says the state file `state` could not be written (a trouble that can
/// pass), and that epoch 1 is still what `server` serves and reads.
async fn epoch_1_kept_after(err: &BackendError, state: &Path, server: &EmbeddedServer) {
    match err {
        BackendError::Unavailable(message) => {
            assert!(message.contains(&state.display().to_string()), "{message}");
            assert!(err.is_transient(), "a disk that comes back can take it");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a_records(&ask(server.tcp_addrs()[0]).await), ["192.0.2.1"]);
    assert_eq!(epoch_read(&server.backend()).await, Epoch::new(1));
}

/// Checks that epoch 2, refused by a failed write, goes through now: it was never accepted,
/// so publishing it again is no conflict.
async fn epoch_2_goes_through(server: &EmbeddedServer) {
    server.backend().apply(&change(2)).await.unwrap();
    assert_eq!(a_records(&ask(server.tcp_addrs()[0]).await), ["192.0.2.2"]);
}

/// The state file's write hangs (its temporary file is a named pipe nobody reads yet). The
/// server's TCP side runs on the same one-thread runtime as the publish: it still answers,
/// with the records of before, until the write ends, and the write's failure is reported.
#[tokio::test(flavor = "current_thread")]
async fn a_hanging_state_file_write_neither_stops_the_runtime_nor_serves_early() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let server = EmbeddedServer::start(config(&state)).await.unwrap();
    let backend = server.backend();
    backend.apply(&change(1)).await.unwrap();
    let tcp = server.tcp_addrs()[0];

    let pipe = dir.path().join("state.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let publish = tokio::spawn({
        let backend = backend.clone();
        async move { backend.apply(&change(2)).await }
    });
    // A client on a thread of its own asks while the write hangs; then (once the test has
    // looked, or at once if nothing was answered) it reads the pipe, so the write goes on.
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn({
        let pipe = pipe.clone();
        move || {
            let answer = ask_blocking(tcp, Duration::from_secs(3));
            let answered = answer.is_some();
            let _ = answered_tx.send(answer);
            if answered {
                let _ = go_rx.recv_timeout(Duration::from_secs(10));
            }
            let mut written = Vec::new();
            std::fs::File::open(&pipe)
                .and_then(|mut f| f.read_to_end(&mut written))
                .map(|_| written)
        }
    });
    let answer = answered_rx.await.unwrap();
    let answer = answer
        .expect("no TCP answer while the state file was being written: the write held the runtime");
    assert_eq!(
        a_records(&answer),
        ["192.0.2.1"],
        "served before it was on disk"
    );
    assert_eq!(epoch_read(&backend).await, Epoch::new(1));
    assert!(!publish.is_finished(), "the publish ended before its write");
    go_tx.send(()).unwrap();

    let err = tokio::time::timeout(Duration::from_secs(10), publish)
        .await
        .expect("the publish ends once its write does")
        .unwrap()
        .expect_err("a named pipe cannot be synced: the write fails");
    let written = client.join().unwrap().unwrap();
    assert!(!written.is_empty(), "the write reached the pipe");
    epoch_1_kept_after(&err, &state, &server).await;
    std::fs::remove_file(&pipe).unwrap();
    epoch_2_goes_through(&server).await;
    server.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_state_file_write_names_the_file_and_keeps_the_previous_records() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("dns.json");
    let server = EmbeddedServer::start(config(&state)).await.unwrap();
    let backend = server.backend();
    backend.apply(&change(1)).await.unwrap();
    std::fs::remove_dir_all(&state_dir).unwrap();
    let err = backend.apply(&change(2)).await.unwrap_err();
    epoch_1_kept_after(&err, &state, &server).await;
    std::fs::create_dir(&state_dir).unwrap();
    epoch_2_goes_through(&server).await;
    server.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_publishes_on_one_thread_all_end_with_the_highest_epoch_served() {
    const PUBLISHES: u8 = 40;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let server = EmbeddedServer::start(config(&state)).await.unwrap();
    let backend = Arc::new(server.backend());
    let mut tasks = tokio::task::JoinSet::new();
    for epoch in 1..=PUBLISHES {
        let backend = Arc::clone(&backend);
        tasks.spawn(async move { (epoch, backend.apply(&change(epoch)).await) });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next().await {
            results.push(done.unwrap());
        }
        results
    })
    .await
    .expect("every publish ends");
    for (epoch, result) in all {
        match result {
            Ok(()) => {}
            // Overtaken by a higher epoch: the only refusal allowed.
            Err(BackendError::StaleEpoch { attempted, current }) => {
                assert_eq!(attempted, Epoch::new(u64::from(epoch)));
                assert!(current > attempted);
            }
            Err(other) => panic!("epoch {epoch}: {other:?}"),
        }
    }
    let highest = format!("192.0.2.{PUBLISHES}");
    assert_eq!(
        a_records(&ask(server.tcp_addrs()[0]).await),
        [highest.as_str()]
    );
    assert_eq!(
        epoch_read(backend.as_ref()).await,
        Epoch::new(u64::from(PUBLISHES))
    );
    server.shutdown();
    // What is on disk is what was served last.
    let server = EmbeddedServer::start(config(&state)).await.unwrap();
    assert_eq!(
        epoch_read(&server.backend()).await,
        Epoch::new(u64::from(PUBLISHES))
    );
    server.shutdown();
}
