//! Safety of the image backend on the failover path: special mode bits, the site lock, status
//! polls that write nothing, a home site rebuilt empty, and promotion beside a primary that
//! is not fenced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use idns_core::{BackendError, OpContext, ReplicationBackend, ResourceId, Role, SiteId};
use idns_replication::image::{ImageConfig, ImageReplication};

mod common;

fn ids() -> (ResourceId, SiteId, SiteId) {
    (
        "vms".parse().unwrap(),
        "a".parse().unwrap(),
        "b".parse().unwrap(),
    )
}

/// Sites `a` (home) and `b` under `dir` (see `common::image_spec`); `a`'s live copy and
/// `b`'s root exist.
fn backend(dir: &Path, preserve_special_bits: bool) -> ImageReplication {
    fs::create_dir_all(dir.join("a/live")).unwrap();
    fs::create_dir_all(dir.join("b")).unwrap();
    let mut spec = common::image_spec(dir);
    spec.resources[0].preserve_special_bits = preserve_special_bits;
    ImageReplication::new(ImageConfig::try_from(spec).unwrap())
}

/// A backend whose two sites hold one file after a pass.
async fn synced(dir: &Path) -> ImageReplication {
    let r = backend(dir, false);
    let (res, a, _) = ids();
    fs::write(r.paths(&res, &a).unwrap().live.join("disk"), b"data").unwrap();
    r.sync(&res).await.unwrap();
    r
}

/// Replaces `a`'s root with an empty directory, as a rebuilt volume would be.
fn rebuild_empty(dir: &Path) -> PathBuf {
    let root_a = dir.join("a");
    fs::remove_dir_all(&root_a).unwrap();
    fs::create_dir(&root_a).unwrap();
    root_a
}

fn forced(epoch: u64) -> OpContext {
    OpContext {
        force: true,
        ..common::ctx(epoch)
    }
}

async fn roles(r: &ImageReplication) -> Vec<Role> {
    let (res, a, b) = ids();
    common::roles(r, &res, &[&a, &b]).await
}

/// Every path under `root`, sorted, with its size (directories: 0).
fn listing(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
                out.push((e.path(), 0));
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A file with setuid, and a setgid directory, at `a`'s live copy.
fn special_files(r: &ImageReplication) -> PathBuf {
    let (res, a, _) = ids();
    let live = r.paths(&res, &a).unwrap().live;
    fs::create_dir_all(live.join("shared")).unwrap();
    fs::write(live.join("shared/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(live.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::set_permissions(live.join("shared/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(mode(&live.join("shared/tool")), 0o4755);
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_mode_bits_are_not_replicated_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let r = backend(dir.path(), false);
    let (res, _, b) = ids();
    special_files(&r);
    r.sync(&res).await.unwrap();
    let base = r.paths(&res, &b).unwrap().base;
    assert_eq!(mode(&base.join("shared/tool")), 0o755);
    assert_eq!(mode(&base.join("shared")), 0o775);
    // The manifest still records what the source had.
    let cp = r.checkpoints(&res, &b).await.unwrap().pop().unwrap();
    assert_eq!(cp.entries["shared/tool"].mode, 0o4755);
    // A drill copy and a restored checkpoint get no special bits either.
    r.promote(&res, &b, &common::drill(1)).await.unwrap();
    let drill = r.paths(&res, &b).unwrap().drill;
    assert_eq!(mode(&drill.join("shared/tool")), 0o755);
    assert_eq!(mode(&drill.join("shared")), 0o775);
    let out = dir.path().join("restored");
    r.restore(&res, &b, cp.seq, &out).await.unwrap();
    assert_eq!(mode(&out.join("shared/tool")), 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_mode_bits_are_replicated_with_ownership_when_asked() {
    if !is_root() {
        eprintln!("skipped: setting another owner needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = backend(dir.path(), true);
    let (res, _, b) = ids();
    let live = special_files(&r);
    std::os::unix::fs::chown(live.join("shared/tool"), Some(1234), Some(2345)).unwrap();
    std::os::unix::fs::chown(live.join("shared"), Some(1234), Some(2345)).unwrap();
    // chown cleared the bits: set them again.
    fs::set_permissions(live.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::set_permissions(live.join("shared/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    r.sync(&res).await.unwrap();
    let base = r.paths(&res, &b).unwrap().base;
    let tool = fs::metadata(base.join("shared/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1234, 2345));
    let shared = fs::metadata(base.join("shared")).unwrap();
    assert_eq!(shared.mode() & 0o7777, 0o2775);
    assert_eq!((shared.uid(), shared.gid()), (1234, 2345));
    r.promote(&res, &b, &common::drill(1)).await.unwrap();
    let drill = r.paths(&res, &b).unwrap().drill;
    let copy = fs::metadata(drill.join("shared/tool")).unwrap();
    assert_eq!(copy.mode() & 0o7777, 0o4755);
    assert_eq!((copy.uid(), copy.gid()), (1234, 2345));
}

/// `flock(1)` holding a lock file in a process group of its own; the command it runs does
/// not hold the lock (`--close`), so killing the `flock` process alone frees it.
struct Holder {
    child: Child,
}

impl Holder {
    fn hold(path: &Path) -> Holder {
        let mut child = Command::new("flock")
            .args(["--exclusive", "--close"])
            .arg(path)
            .args(["sh", "-c", "echo held; exec sleep 600"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "held",
            "flock(1) did not take {}",
            path.display()
        );
        Holder { child }
    }

    /// SIGKILL to the process that holds the lock.
    fn kill(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.wait();
    }
}

/// Whether another process could take the lock now (`flock -n`).
fn free_for_others(path: &Path) -> bool {
    Command::new("flock")
        .args(["--exclusive", "--nonblock"])
        .arg(path)
        .arg("true")
        .status()
        .unwrap()
        .success()
}

/// A synced backend whose site `b` is locked by another process: the backend, the lock
/// file, the holder.
async fn held_by_another(dir: &Path) -> (ImageReplication, PathBuf, Holder) {
    let r = synced(dir).await;
    let (res, _, b) = ids();
    let lock = r.paths(&res, &b).unwrap().root.join("lock");
    let holder = Holder::hold(&lock);
    (r, lock, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_lock_held_by_a_killed_process_is_free_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (r, lock, mut holder) = held_by_another(dir.path()).await;
    let (res, _, _) = ids();
    match r.sync(&res).await {
        Err(BackendError::Unavailable(m)) => {
            assert!(m.contains(&lock.display().to_string()), "{m}")
        }
        other => panic!("a pass ran while another process held {lock:?}: {other:?}"),
    }
    holder.kill();
    r.sync(&res).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_lock_attempt_leaves_the_holders_lock_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (r, lock, _holder) = held_by_another(dir.path()).await;
    let (res, _, _) = ids();
    let inode = fs::metadata(&lock).unwrap().ino();
    for _ in 0..2 {
        assert!(r.sync(&res).await.is_err());
        // The failed attempts are gone; the holder's lock is the same file, still held.
        assert_eq!(fs::metadata(&lock).unwrap().ino(), inode);
        assert!(!free_for_others(&lock));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_polls_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = backend(dir.path(), false);
    let before = listing(dir.path());
    // A fresh configuration: the roles first use will give, and no state file.
    assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
    assert_eq!(listing(dir.path()), before);
    // One root missing: nothing created, a missing state reads as unknown.
    fs::remove_dir(dir.path().join("b")).unwrap();
    let before = listing(dir.path());
    assert_eq!(roles(&r).await, [Role::Unknown, Role::Unknown]);
    assert_eq!(listing(dir.path()), before);
}

/// Checks that promoting `site` without force is refused for want of replicated data, in
/// words that name force.
async fn refused_without_force(r: &ImageReplication, site: &SiteId) {
    let (res, _, _) = ids();
    let err = r.promote(&res, site, &common::ctx(1)).await.unwrap_err();
    assert!(matches!(err, BackendError::Refused(_)), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("no replicated data") && err.contains("force"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_site_rebuilt_empty_is_made_primary_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let r = synced(dir.path()).await;
    let (res, a, _) = ids();
    // a's volume is rebuilt empty while b cannot be reached.
    let root_a = rebuild_empty(dir.path());
    fs::rename(dir.path().join("b"), dir.path().join("b-away")).unwrap();

    assert_eq!(roles(&r).await, [Role::Unknown, Role::Unknown]);
    let err = r.sync(&res).await.unwrap_err().to_string();
    assert!(
        err.contains("rebuilt empty") && err.contains("force"),
        "{err}"
    );
    refused_without_force(&r, &a).await;
    assert_eq!(listing(&root_a), []);

    let p = r.promote(&res, &a, &forced(1)).await.unwrap();
    assert_eq!(p.rpo, None);
    assert!(p.position.unwrap().contains("forced"));
    assert_eq!(roles(&r).await[0], Role::Primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_no_data_is_promoted_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let r = synced(dir.path()).await;
    let (res, a, b) = ids();
    // a's volume is rebuilt empty; b, which follows a, vouches that a was replicated: a is a
    // replica with nothing, and no site is primary.
    rebuild_empty(dir.path());
    assert_eq!(roles(&r).await, [Role::Replica, Role::Replica]);
    assert!(r.sync(&res).await.is_err());
    refused_without_force(&r, &a).await;
    // b holds the data: failing over to it needs no force.
    r.promote(&res, &b, &common::ctx(1)).await.unwrap();
    let live_b = r.paths(&res, &b).unwrap().live;
    assert_eq!(fs::read(live_b.join("disk")).unwrap(), b"data");
    // Forced, a is made primary with its empty live copy.
    let p = r.promote(&res, &a, &forced(2)).await.unwrap();
    assert!(p.position.unwrap().contains("forced"));
    assert_eq!(roles(&r).await[0], Role::Primary);
}

/// Checks that an unforced promotion of `b` is refused because `a` is primary and not
/// fenced, in words that name `a`, fencing and force, and that the roles did not change.
async fn refused_beside_a_writable_primary(r: &ImageReplication, epoch: u64) {
    let (res, a, b) = ids();
    let err = r.promote(&res, &b, &common::ctx(epoch)).await.unwrap_err();
    assert!(matches!(err, BackendError::Refused(_)), "{err}");
    let err = err.to_string();
    assert!(
        err.contains(&format!("at {a} is reachable and primary"))
            && err.contains("fence it")
            && err.contains("force"),
        "{err}"
    );
    assert_eq!(roles(r).await, [Role::Primary, Role::Replica]);
    assert!(!r.paths(&res, &b).unwrap().live.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_beside_an_unfenced_primary_is_refused_until_it_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let r = synced(dir.path()).await;
    let (res, a, b) = ids();
    refused_beside_a_writable_primary(&r, 1).await;
    // The failover runbook's order: fence the old primary, then promote.
    r.fence(&res, &a, &common::ctx(1)).await.unwrap();
    let p = r.promote(&res, &b, &common::ctx(1)).await.unwrap();
    assert_eq!(p.rpo, Some(std::time::Duration::ZERO), "a final pass ran");
    assert_eq!(roles(&r).await, [Role::Fenced, Role::Primary]);
    let live_b = r.paths(&res, &b).unwrap().live;
    assert_eq!(fs::read(live_b.join("disk")).unwrap(), b"data");
    // Taking the fenced copy back while b is primary is refused the same way.
    let err = r.promote(&res, &a, &common::ctx(2)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Refused(m) if m.contains(&format!("at {b} is reachable and primary"))),
        "{err}"
    );
    assert_eq!(roles(&r).await, [Role::Fenced, Role::Primary]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_promote_beside_an_unfenced_primary_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let r = synced(dir.path()).await;
    let (res, _, b) = ids();
    refused_beside_a_writable_primary(&r, 1).await;
    r.promote(&res, &b, &forced(1)).await.unwrap();
    // The operator asked for it: both are primary until the old one is fenced.
    assert_eq!(roles(&r).await, [Role::Primary, Role::Primary]);
    let live_b = r.paths(&res, &b).unwrap().live;
    assert_eq!(fs::read(live_b.join("disk")).unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_goes_through_when_the_primary_cannot_be_reached() {
    // The primary's root is gone (an unmounted volume), or its state cannot be read: the
    // site is unreachable, as when the runbook skipped its fence, and does not stop a
    // failover.
    for break_a in [
        (|dir: &Path| fs::rename(dir.join("a"), dir.join("a-away")).unwrap()) as fn(&Path),
        |dir: &Path| {
            let state = dir.join("a/state.json");
            assert!(state.is_file(), "{} missing", state.display());
            fs::remove_file(&state).unwrap();
            fs::create_dir(&state).unwrap();
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = synced(dir.path()).await;
        let (res, _, b) = ids();
        break_a(dir.path());
        let p = r.promote(&res, &b, &common::ctx(1)).await.unwrap();
        assert!(p.rpo.is_some(), "{p:?}");
        assert_eq!(roles(&r).await, [Role::Unknown, Role::Primary]);
        let live_b = r.paths(&res, &b).unwrap().live;
        assert_eq!(fs::read(live_b.join("disk")).unwrap(), b"data");
    }
}
