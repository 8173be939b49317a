//! The command backend against small shell-script hooks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ctx, drill};
use idns_core::test_util::conformance::ReplicationSuite;
use idns_core::{
    BackendError, Epoch, IntegrityRequest, OpContext, ReplicationBackend, ResourceId, Role, SiteId,
};
use idns_replication::command::{CommandConfig, CommandReplication, CommandSpec, HookRequest};
use idns_replication::testing::HookArray;

struct Setup {
    _dir: tempfile::TempDir,
    state: PathBuf,
    root: PathBuf,
}

fn ids() -> (ResourceId, SiteId, SiteId) {
    (
        "array".parse().unwrap(),
        "a".parse().unwrap(),
        "b".parse().unwrap(),
    )
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let state = HookArray::new(&root, &["a", "b"]).state;
    Setup {
        _dir: dir,
        state,
        root,
    }
}

fn backend(s: &Setup, extra: &str) -> CommandReplication {
    let json = format!(
        r#"{{"state_file": "{}", "resources": [{{"id": "array", "sites": ["a", "b"],
            "command": ["{}"], "env": {{"HOOK_STATE": "{}"{extra}}}}}]}}"#,
        s.root.join("epochs.json").display(),
        s.root.join("hook.sh").display(),
        s.state.display()
    );
    let spec: CommandSpec = serde_json::from_str(&json).unwrap();
    CommandReplication::new(CommandConfig::try_from(spec).unwrap())
}

fn requests(s: &Setup) -> Vec<HookRequest> {
    fs::read_to_string(s.state.join("requests.log"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Without drill support, a drill is reported as unsupported, in the hook's words.
#[tokio::test]
async fn a_hook_without_drills_reports_them_unsupported() {
    let s = setup();
    let (res, _, q) = ids();
    let nodrill = backend(&s, r#", "HOOK_NO_DRILL": "1""#);
    assert!(matches!(
        nodrill.promote(&res, &q, &drill(6)).await,
        Err(BackendError::Unsupported(m)) if m.contains("cannot clone")
    ));
}

#[tokio::test]
async fn the_request_json_carries_what_the_contract_says() {
    let s = setup();
    let b = backend(&s, "");
    let (res, a, bb) = ids();
    let st = b.status(&res).await.unwrap();
    assert_eq!(st.sites[0].role, Role::Primary);
    assert_eq!(st.sites[1].lag, Some(Duration::from_millis(250)));
    assert_eq!(st.sites[1].lag_bytes, Some(4096));
    // Forced: no status check before it, and the hook is told.
    let forced = OpContext {
        force: true,
        ..ctx(3)
    };
    let p = b.promote(&res, &bb, &forced).await.unwrap();
    assert_eq!(p.rpo, Some(Duration::from_millis(1500)));
    assert_eq!(p.position.as_deref(), Some("snapshot-3"));
    b.reprotect(&res, &bb, false, &ctx(3)).await.unwrap();
    let m = b
        .integrity(
            &res,
            &bb,
            &IntegrityRequest::Mark {
                label: "epoch-3".into(),
            },
            &ctx(3),
        )
        .await
        .unwrap();
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].operation, "status");
    assert_eq!(reqs[0].epoch, None);
    assert_eq!(reqs[0].sites, ["a", "b"]);
    assert_eq!(reqs[1].operation, "promote");
    assert_eq!(reqs[1].site.as_deref(), Some("b"));
    assert_eq!(reqs[1].epoch, Some(Epoch::new(3)));
    assert!(!reqs[1].drill);
    assert!(reqs[1].force);
    assert!(!reqs[0].force);
    assert_eq!(reqs[1].timeout_ms, 120_000);
    assert_eq!(reqs[2].primary.as_deref(), Some("b"));
    assert_eq!(reqs[2].wait, Some(false));
    assert_eq!(reqs[3].version, 1);
    assert!(
        serde_json::to_string(&reqs[3].request)
            .unwrap()
            .contains("epoch-3")
    );
    // Verify sends the expected manifest; a missing entry is reported by key.
    let mut expected = m.manifest.clone();
    expected.entries.insert(
        "markers/epoch-3/gone.txt".into(),
        expected.entries.values().next().unwrap().clone(),
    );
    let v = b
        .integrity(&res, &bb, &IntegrityRequest::Verify { expected }, &ctx(3))
        .await
        .unwrap();
    assert_eq!(v.mismatches.len(), 1);
    assert_eq!(v.mismatches[0].key, "markers/epoch-3/gone.txt");
    assert_eq!(v.mismatches[0].problem, "missing");
    let last = requests(&s).pop().unwrap();
    assert!(
        serde_json::to_string(&last.request)
            .unwrap()
            .contains("gone.txt"),
        "the expected manifest reaches the hook"
    );
    let _ = a;
}

#[tokio::test]
async fn promotion_beside_a_site_the_status_hook_calls_primary_is_refused_unless_forced() {
    let s = setup();
    let b = backend(&s, "");
    let (res, a, bb) = ids();
    let err = b.promote(&res, &bb, &ctx(3)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Refused(m) if m.contains("array at a is reported primary")
            && m.contains("fence it before promoting b")),
        "{err}"
    );
    // Refused before the promote hook ran: the status hook alone was asked.
    let ops: Vec<_> = requests(&s).into_iter().map(|r| r.operation).collect();
    assert_eq!(ops, ["status"]);
    assert_eq!(
        common::roles(&b, &res, &[&a, &bb]).await,
        [Role::Primary, Role::Replica]
    );
    // Once a is fenced, the same promotion goes through.
    b.fence(&res, &a, &ctx(3)).await.unwrap();
    b.promote(&res, &bb, &ctx(3)).await.unwrap();
    assert_eq!(
        common::roles(&b, &res, &[&a, &bb]).await,
        [Role::Fenced, Role::Primary]
    );
}

#[tokio::test]
async fn a_failing_status_hook_does_not_block_a_promotion() {
    let s = setup();
    // The array's status hook cannot reach its storage; its promote still works.
    let b = backend(&s, r#", "HOOK_STATUS_FAILS": "1""#);
    let (res, _, bb) = ids();
    let p = b.promote(&res, &bb, &ctx(3)).await.unwrap();
    assert_eq!(p.position.as_deref(), Some("snapshot-3"));
}

#[tokio::test]
async fn stale_epochs_are_refused_before_any_hook_runs_even_after_a_restart() {
    let s = setup();
    let (res, a, b) = ids();
    let forced = OpContext {
        force: true,
        ..ctx(7)
    };
    backend(&s, "").promote(&res, &b, &forced).await.unwrap();
    let again = backend(&s, "");
    match again.fence(&res, &a, &ctx(6)).await {
        Err(BackendError::StaleEpoch { attempted, current }) => {
            assert_eq!((attempted, current), (Epoch::new(6), Epoch::new(7)));
        }
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    assert_eq!(requests(&s).len(), 1, "the hook never saw the stale fence");
    again.fence(&res, &a, &ctx(7)).await.unwrap();
}

fn failing(s: &Setup, body: &str) -> CommandReplication {
    write_script(&s.root.join("hook.sh"), body);
    backend(s, "")
}

#[tokio::test]
async fn hook_failures_map_to_errors_with_the_right_transient_flag() {
    let s = setup();
    let (res, _, b) = ids();
    type Case = (&'static str, fn(&BackendError) -> bool, bool);
    let cases: [Case; 5] = [
        (
            "#!/bin/sh\necho '{\"error\": \"SRM is unreachable\", \"transient\": true}'\nexit 1\n",
            |e| matches!(e, BackendError::Unavailable(m) if m == "SRM is unreachable"),
            true,
        ),
        (
            "#!/bin/sh\necho '{\"error\": \"protection group locked\", \"kind\": \"conflict\"}'\nexit 2\n",
            |e| matches!(e, BackendError::Conflict(_)),
            false,
        ),
        (
            "#!/bin/sh\necho 'rbd: mirror image is not primary' >&2\nexit 3\n",
            |e| matches!(e, BackendError::Refused(m) if m.contains("exit code 3") && m.contains("not primary")),
            false,
        ),
        (
            "#!/bin/sh\necho 'try again later' >&2\nexit 75\n",
            |e| matches!(e, BackendError::Unavailable(m) if m.contains("try again")),
            true,
        ),
        (
            "#!/bin/sh\necho '{\"error\": \"array has epoch 9\", \"kind\": \"stale_epoch\", \"current_epoch\": 9}'\nexit 1\n",
            |e| matches!(e, BackendError::StaleEpoch { attempted, current } if attempted.get() == 1 && current.get() == 9),
            false,
        ),
    ];
    for (body, check, transient) in cases {
        let backend = failing(&s, body);
        let err = backend.promote(&res, &b, &ctx(1)).await.unwrap_err();
        assert!(check(&err), "{body}: got {err:?}");
        assert_eq!(err.is_transient(), transient, "{body}: {err:?}");
    }
    // Output that is not the documented JSON is an invalid answer, not a silent success.
    let backend = failing(&s, "#!/bin/sh\necho 'promoted!'\n");
    assert!(matches!(
        backend.promote(&res, &b, &ctx(1)).await,
        Err(BackendError::Invalid(m)) if m.contains("promoted!")
    ));
    let backend = failing(
        &s,
        "#!/bin/sh\necho '{\"sites\":[{\"site\":\"a\",\"role\":\"boss\"}]}'\n",
    );
    assert!(
        matches!(backend.status(&res).await, Err(BackendError::Invalid(m)) if m.contains("boss"))
    );
    // A missing program is a configuration problem.
    fs::remove_file(s.root.join("hook.sh")).unwrap();
    assert!(matches!(
        backend.fence(&res, &b, &ctx(1)).await,
        Err(BackendError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_hook_that_overruns_its_timeout_is_killed_with_its_children() {
    let s = setup();
    let (res, _, b) = ids();
    let pidfile = s.root.join("child.pid");
    let body = format!(
        "#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n",
        pidfile.display()
    );
    let backend = failing(&s, &body);
    let mut op = ctx(1);
    op.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = backend.fence(&res, &b, &op).await.unwrap_err();
    assert!(matches!(err, BackendError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid = fs::read_to_string(&pidfile).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_dir.exists() && Instant::now() < deadline {
        // A killed child may linger as a zombie until its parent is reaped.
        let stat = fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stat = fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
    assert!(
        !proc_dir.exists() || stat.contains(") Z "),
        "the hook's child (sleep, pid {}) still runs: {stat}",
        pid.trim()
    );
}

#[test]
fn configuration_errors_name_their_fields() {
    let spec: CommandSpec = serde_json::from_str(
        r#"{"state_file": "relative.json", "resources": [
            {"id": "x", "sites": ["a", "a"], "commands": {"promote": ["/bin/true"], "explode": ["/bin/true"]}}
        ]}"#,
    )
    .unwrap();
    let err = CommandConfig::try_from(spec).unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "resources[0].sites[1]",
        "resources[0].commands.explode",
        "resources[0].commands.status",
        "resources[0].commands.fence",
        "state_file",
    ] {
        assert!(paths.contains(&want), "{want} missing from {err}");
    }
    assert!(!paths.contains(&"resources[0].commands.promote"), "{err}");
}

#[tokio::test]
async fn a_conforming_hook_passes_the_replication_suite() {
    let s = setup();
    let b = backend(&s, "");
    let (res, p, q) = ids();
    let suite = ReplicationSuite::new(res.clone(), p.clone(), q.clone(), None)
        .expecting_refusal_beside_writable_primary();
    suite.run(&b).await;
    suite.run(&b).await;
    let nodrill = backend(&s, r#", "HOOK_NO_DRILL": "1""#);
    suite.run(&nodrill).await;
}
