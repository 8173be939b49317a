//! The command probe: exit codes, output as the reason, and a timeout that kills the program
//! and what it started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use idns_core::ProbeStatus;
use serde_json::json;
use support::{probe, refused};

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[tokio::test]
async fn exit_zero_is_up_and_anything_else_is_down_with_the_first_line() {
    let t = Duration::from_secs(5);
    let o = probe(json!({"kind": "command", "argv": ["true"]}), local(), t)
        .check()
        .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");

    let o = probe(
        json!({"kind": "command", "argv": ["sh", "-c", "echo; echo '  disk full  '; echo more; exit 3"]}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert_eq!(o.reason, "exit status 3: disk full");

    let o = probe(
        json!({"kind": "command", "argv": ["sh", "-c", "echo oops >&2; exit 1"]}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.reason, "exit status 1: oops");

    let o = probe(json!({"kind": "command", "argv": ["false"]}), local(), t)
        .check()
        .await;
    assert_eq!(o.reason, "exit status 1 (no output)");

    let o = probe(
        json!({"kind": "command", "argv": ["/nonexistent/check"]}),
        local(),
        t,
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Down, "{o:?}");
    assert!(
        o.reason.starts_with("cannot start /nonexistent/check:"),
        "{o:?}"
    );
}

#[tokio::test]
async fn the_target_and_extra_variables_are_in_the_environment() {
    let o = probe(
        json!({"kind": "command",
               "argv": ["sh", "-c", "test \"$IDNS_SITE/$IDNS_SERVICE/$IDNS_ADDRESS/$X\" = site/app.example.com/127.0.0.1/y"],
               "env": {"X": "y"}}),
        local(),
        Duration::from_secs(5),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Up, "{o:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_program_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The shell starts a background sleep, writes both PIDs, then waits forever.
    let script = format!(
        "sleep 30 & echo $! > {0}; echo $$ >> {0}; wait",
        pids.display()
    );
    let o = probe(
        json!({"kind": "command", "argv": ["sh", "-c", script]}),
        local(),
        Duration::from_millis(500),
    )
    .check()
    .await;
    assert_eq!(o.status, ProbeStatus::Timeout, "{o:?}");
    assert_eq!(o.reason, "sh still running after 500ms: killed");
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<u32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    // Give the kernel a moment to deliver the group kill to the orphaned sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the timeout");
    }
}

/// Whether a process exists and is not a zombie waiting for its reaper.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
    }
}

#[test]
fn bad_commands_are_refused() {
    let e = refused(json!({"kind": "command", "argv": []}));
    assert!(e.contains("check.argv = []"), "{e}");
    let e = refused(json!({"kind": "command", "argv": ["x"], "dir": "/nonexistent"}));
    assert!(e.contains("check.dir = /nonexistent"), "{e}");
    let e = refused(json!({"kind": "command", "argv": ["x"], "env": {"A=B": "c"}}));
    assert!(e.contains("check.env = A=B"), "{e}");
}
