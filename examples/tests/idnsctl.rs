//! `idnsctl` on its own: usage errors, an idnsd that is not there, and something that is not
//! idnsd. (`tests/idnsd.rs` runs it against a real daemon.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

fn idnsctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idnsctl"))
        .args(args)
        .env_remove("IDNS_TOKEN")
        .env_remove("IDNS_URL")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["failover"][..],
        &["resume", "www.example.test", "maybe"],
        &["drill", "www.example.test", "--to", "b", "--stop"],
        &["teleport", "www.example.test"],
    ] {
        let out = idnsctl(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn an_unreachable_daemon_is_named_and_exits_3() {
    // A port nothing listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = idnsctl(&["--url", &url, "--token", "x", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach idnsd at {url}/v1/services")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_server_that_is_not_idnsd_is_reported_and_exits_3() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let body = "<html>hello</html>";
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let out = idnsctl(&["--url", &url, "--token", "x", "status"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unexpected answer from idnsd"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_token_file_is_named() {
    let out = idnsctl(&[
        "--url",
        "http://127.0.0.1:9",
        "--token-file",
        "/nonexistent/idns-token",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot read the token file /nonexistent/idns-token"),
        "{}",
        text(&out.stderr)
    );
}
