//! Image and file-tree replication on local paths: deltas, sparse files, checkpoints, crash
//! safety, integrity, epochs, drills, failover and failback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use idns_core::test_util::conformance::ReplicationSuite;
use idns_core::{
    BackendError, Epoch, IntegrityRequest, OpContext, ReplicationBackend, ResourceId, Role, SiteId,
};
use idns_replication::image::{ImageConfig, ImageReplication, ImageSpec, Operation};

mod common;

const CHUNK: u64 = 64 << 10;

fn ids() -> (ResourceId, SiteId, SiteId) {
    (
        "vms".parse().unwrap(),
        "a".parse().unwrap(),
        "b".parse().unwrap(),
    )
}

fn spec(dir: &Path, keep: usize, rate: Option<u64>) -> ImageSpec {
    let mut spec = common::image_spec(dir);
    spec.resources[0].keep = keep;
    spec.resources[0].max_bytes_per_sec = rate;
    assert_eq!(spec.resources[0].chunk_size, CHUNK);
    spec
}

fn backend(dir: &Path) -> ImageReplication {
    backend_with(dir, 3, None)
}

fn backend_with(dir: &Path, keep: usize, rate: Option<u64>) -> ImageReplication {
    // The application's files go into the home site's live copy before the first pass.
    fs::create_dir_all(dir.join("a/live")).unwrap();
    fs::create_dir_all(dir.join("b")).unwrap();
    ImageReplication::new(ImageConfig::try_from(spec(dir, keep, rate)).unwrap())
}

fn ctx(epoch: u64) -> OpContext {
    OpContext {
        epoch: Epoch::new(epoch),
        drill: false,
        timeout: Duration::from_secs(120),
        force: false,
    }
}

fn drill(epoch: u64) -> OpContext {
    OpContext {
        drill: true,
        ..ctx(epoch)
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn live(r: &ImageReplication, site: &SiteId) -> PathBuf {
    let (res, _, _) = ids();
    r.paths(&res, site).unwrap().live
}

fn base(r: &ImageReplication, site: &SiteId) -> PathBuf {
    let (res, _, _) = ids();
    r.paths(&res, site).unwrap().base
}

async fn roles(r: &ImageReplication) -> Vec<Role> {
    let (res, _, _) = ids();
    r.status(&res)
        .await
        .unwrap()
        .sites
        .iter()
        .map(|s| s.role)
        .collect()
}

/// Checks that two trees hold the same files with the same content.
fn same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = fs::symlink_metadata(e.path()).unwrap();
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                if m.is_dir() {
                    stack.push(e.path());
                    out.push((rel, None));
                } else if m.file_type().is_symlink() {
                    out.push((
                        rel,
                        Some(
                            fs::read_link(e.path())
                                .unwrap()
                                .into_os_string()
                                .into_encoded_bytes(),
                        ),
                    ));
                } else {
                    out.push((rel, Some(fs::read(e.path()).unwrap())));
                }
            }
        }
        out.sort();
        out
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la.iter().map(|x| &x.0).collect::<Vec<_>>(),
        lb.iter().map(|x| &x.0).collect::<Vec<_>>(),
        "the trees list different paths"
    );
    for ((p, x), (_, y)) in la.iter().zip(&lb) {
        assert!(x == y, "{} differs", p.display());
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_tree_replicates_and_only_changed_chunks_move() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, a, b) = ids();
        assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
        let la = live(&r, &a);
        fs::create_dir_all(la.join("vm1/conf")).unwrap();
        fs::write(
            la.join("vm1/disk.raw"),
            noise("disk", 40 * CHUNK as usize + 123),
        )
        .unwrap();
        fs::write(la.join("vm1/conf/vm.xml"), "<domain/>").unwrap();
        fs::write(la.join("empty"), "").unwrap();
        std::os::unix::fs::symlink("vm1/disk.raw", la.join("current")).unwrap();

        let first = r.sync(&res).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].checkpoint, 1);
        assert_eq!(first[0].files, 3);
        assert_eq!(first[0].chunks_changed, 42);
        same_tree(&la, &base(&r, &b));

        // A pass with no change reads nothing (quick check) and moves nothing.
        let idle = r.sync(&res).await.unwrap();
        assert_eq!(idle[0].bytes_hashed, 0);
        assert_eq!(idle[0].bytes_transferred, 0);

        // Change two chunks in place, append a little, remove a file, add one.
        let f = File::options()
            .write(true)
            .open(la.join("vm1/disk.raw"))
            .unwrap();
        f.write_all_at(b"changed", 3 * CHUNK + 10).unwrap();
        f.write_all_at(b"changed too", 17 * CHUNK).unwrap();
        drop(f);
        fs::remove_file(la.join("vm1/conf/vm.xml")).unwrap();
        fs::write(la.join("vm1/new.txt"), "new").unwrap();
        let second = r.sync(&res).await.unwrap();
        let rep = &second[0];
        assert_eq!(rep.checkpoint, 3);
        assert_eq!(
            rep.chunks_changed, 3,
            "two chunks of the disk and the new file: {rep:?}"
        );
        assert_eq!(rep.bytes_transferred, 2 * CHUNK + 3);
        assert_eq!(rep.files_removed, 1);
        assert_eq!(rep.chunks_total, 41 + 1, "the disk and the new file");
        same_tree(&la, &base(&r, &b));

        // The replica's checkpoint verifies, and it is the one the manifest describes.
        let check = r
            .integrity(&res, &b, &IntegrityRequest::Check, &ctx(0))
            .await
            .unwrap();
        assert!(check.mismatches.is_empty(), "{:?}", check.mismatches);
        let disk = &check.manifest.entries["vm1/disk.raw"];
        assert_eq!(
            disk.checksum,
            blake3::hash(&fs::read(la.join("vm1/disk.raw")).unwrap())
                .to_hex()
                .to_string()
        );
        // Keep = 3 checkpoints.
        let kept: Vec<u64> = r
            .checkpoints(&res, &b)
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(kept, [1, 2, 3]);
        r.sync(&res).await.unwrap();
        let kept: Vec<u64> = r
            .checkpoints(&res, &b)
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(kept, [2, 3, 4]);
    });
}

#[test]
fn sparse_files_stay_sparse_and_zeroed_chunks_become_holes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, a, b) = ids();
        let la = live(&r, &a);
        let img = la.join("sparse.raw");
        let f = File::create(&img).unwrap();
        f.set_len(256 << 20).unwrap();
        for i in [0u64, 100, 2000, 4000] {
            f.write_all_at(&noise(&i.to_string(), CHUNK as usize), i * CHUNK)
                .unwrap();
        }
        drop(f);
        let src_blocks = fs::metadata(&img).unwrap().blocks();
        let rep = r.sync(&res).await.unwrap().remove(0);
        assert_eq!(rep.bytes_transferred, 4 * CHUNK, "{rep:?}");
        let dst = base(&r, &b).join("sparse.raw");
        let dst_blocks = fs::metadata(&dst).unwrap().blocks();
        assert_eq!(fs::metadata(&dst).unwrap().len(), 256 << 20);
        assert!(
            dst_blocks <= src_blocks + 16,
            "replica allocates {dst_blocks} blocks, source {src_blocks}"
        );
        assert!(
            dst_blocks * 512 < 1 << 20,
            "{dst_blocks} blocks: not sparse"
        );

        // Zero a data chunk at the source: it becomes a hole at the replica.
        let f = File::options().write(true).open(&img).unwrap();
        f.write_all_at(&vec![0u8; CHUNK as usize], 100 * CHUNK)
            .unwrap();
        drop(f);
        let rep = r.sync(&res).await.unwrap().remove(0);
        assert_eq!(
            (rep.chunks_changed, rep.chunks_zero, rep.bytes_transferred),
            (1, 1, 0)
        );
        let after = fs::metadata(&dst).unwrap().blocks();
        assert!(
            after < dst_blocks,
            "the zeroed chunk was not punched: {after} >= {dst_blocks}"
        );
        assert!(fs::read(&img).unwrap() == fs::read(&dst).unwrap());
    });
}

#[test]
fn a_corrupted_file_at_the_destination_is_named_by_check() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, a, b) = ids();
        let la = live(&r, &a);
        for n in ["one", "two", "three"] {
            fs::write(la.join(format!("{n}.img")), noise(n, 3 * CHUNK as usize)).unwrap();
        }
        r.sync(&res).await.unwrap();
        let victim = base(&r, &b).join("two.img");
        let mtime = fs::metadata(&victim).unwrap().modified().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .open(&victim)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, CHUNK + 5).unwrap_or_default();
        f.write_all_at(&[byte[0] ^ 0x55], CHUNK + 5).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        fs::write(base(&r, &b).join("stray"), "not replicated").unwrap();
        let rep = r
            .integrity(&res, &b, &IntegrityRequest::Check, &ctx(0))
            .await
            .unwrap();
        let keys: Vec<&str> = rep.mismatches.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["two.img", "stray"], "{:?}", rep.mismatches);
        assert!(rep.mismatches[0].problem.contains("checksum"));
        assert!(rep.mismatches[1].problem.contains("not in checkpoint"));
    });
}

#[test]
fn failover_markers_reprotect_failback_with_markers_verified() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, a, b) = ids();
        let la = live(&r, &a);
        fs::write(la.join("disk.img"), noise("v1", 20 * CHUNK as usize)).unwrap();
        r.sync(&res).await.unwrap();
        // Written at a after the last pass, before the disaster: lost in an unplanned failover.
        fs::write(la.join("late.txt"), "after the last pass").unwrap();

        // Failover at epoch 1 with a unreachable (its volume gone, so its fence was
        // skipped): promote b from its newest checkpoint. a comes back and is fenced.
        let root_a = r.paths(&res, &a).unwrap().root;
        let away = dir.path().join("a-away");
        fs::rename(&root_a, &away).unwrap();
        let p = r.promote(&res, &b, &ctx(1)).await.unwrap();
        assert!(p.rpo.is_some());
        assert_eq!(p.position.as_deref(), Some("checkpoint 1"));
        fs::rename(&away, &root_a).unwrap();
        r.fence(&res, &a, &ctx(1)).await.unwrap();
        assert_eq!(roles(&r).await, [Role::Fenced, Role::Primary]);
        let check = r
            .integrity(&res, &b, &IntegrityRequest::Check, &ctx(1))
            .await
            .unwrap();
        assert!(check.mismatches.is_empty(), "{:?}", check.mismatches);
        let lb = live(&r, &b);
        assert!(!lb.join("late.txt").exists());
        let markers = r
            .integrity(
                &res,
                &b,
                &IntegrityRequest::Mark {
                    label: "epoch-1".into(),
                },
                &ctx(1),
            )
            .await
            .unwrap()
            .manifest;
        assert_eq!(markers.entries.len(), 2);
        // b's application writes.
        let f = File::options()
            .write(true)
            .open(lb.join("disk.img"))
            .unwrap();
        f.write_all_at(b"written at b", 7 * CHUNK).unwrap();
        drop(f);

        // Failback: reprotect towards a (both sides compared), catch up, fence b, promote a.
        r.reprotect(&res, &b, false, &ctx(1)).await.unwrap();
        r.reprotect(&res, &b, true, &ctx(1)).await.unwrap();
        assert_eq!(roles(&r).await, [Role::Replica, Role::Primary]);
        // Writes at b after the catch-up still arrive: a's promotion makes a final pass.
        fs::write(lb.join("after-catch-up.txt"), "late write at b").unwrap();
        r.fence(&res, &b, &ctx(2)).await.unwrap();
        let p = r.promote(&res, &a, &ctx(2)).await.unwrap();
        assert_eq!(
            p.rpo,
            Some(Duration::ZERO),
            "a planned failback loses nothing"
        );
        let v = r
            .integrity(
                &res,
                &a,
                &IntegrityRequest::Verify {
                    expected: markers.clone(),
                },
                &ctx(2),
            )
            .await
            .unwrap();
        assert!(v.mismatches.is_empty(), "{:?}", v.mismatches);
        assert_eq!(
            fs::read_to_string(la.join("after-catch-up.txt")).unwrap(),
            "late write at b"
        );
        r.reprotect(&res, &a, true, &ctx(2)).await.unwrap();
        assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
        same_tree(&la, &base(&r, &b));

        // The write a took after the last pass before the failover was not silently
        // dropped: the first pass after the reprotect kept it aside in its reverse delta.
        let first_after_adoption = r.paths(&res, &a).unwrap().root.join(format!(
            "checkpoints/{:020}/rev/removed/late.txt",
            r.checkpoints(&res, &a).await.unwrap()[0].seq
        ));
        assert_eq!(
            fs::read_to_string(first_after_adoption).unwrap(),
            "after the last pass"
        );
    });
}

#[test]
fn stale_epochs_are_refused_even_after_a_restart() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (res, a, b) = ids();
        {
            let r = backend(dir.path());
            fs::write(live(&r, &a).join("f"), "x").unwrap();
            r.sync(&res).await.unwrap();
            r.fence(&res, &a, &ctx(5)).await.unwrap();
            r.promote(&res, &b, &ctx(5)).await.unwrap();
            // The same epoch again is a retried step.
            r.promote(&res, &b, &ctx(5)).await.unwrap();
        }
        let r = backend(dir.path());
        match r.fence(&res, &b, &ctx(4)).await {
            Err(BackendError::StaleEpoch { attempted, current }) => {
                assert_eq!((attempted, current), (Epoch::new(4), Epoch::new(5)));
            }
            other => panic!("expected StaleEpoch, got {other:?}"),
        }
        assert_eq!(roles(&r).await[1], Role::Primary);
        r.fence(&res, &a, &ctx(6)).await.unwrap();
        assert_eq!(roles(&r).await, [Role::Fenced, Role::Primary]);
    });
}

#[test]
fn drills_work_on_an_isolated_copy() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, a, b) = ids();
        fs::write(
            live(&r, &a).join("disk.img"),
            noise("d", 5 * CHUNK as usize),
        )
        .unwrap();
        r.sync(&res).await.unwrap();
        let p = r.promote(&res, &b, &drill(1)).await.unwrap();
        assert_eq!(p.position.as_deref(), Some("drill copy of checkpoint 1"));
        assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
        let drill_dir = r.paths(&res, &b).unwrap().drill;
        assert!(drill_dir.join("disk.img").is_file());
        let check = r
            .integrity(&res, &b, &IntegrityRequest::Check, &drill(1))
            .await
            .unwrap();
        assert!(check.mismatches.is_empty());
        let m = r
            .integrity(
                &res,
                &b,
                &IntegrityRequest::Mark {
                    label: "drill-1".into(),
                },
                &drill(1),
            )
            .await
            .unwrap();
        assert!(drill_dir.join(".idns-markers/drill-1/0.txt").is_file());
        assert!(
            !base(&r, &b).join(".idns-markers").exists(),
            "production untouched"
        );
        assert!(!m.manifest.entries.is_empty());
        r.fence(&res, &b, &drill(1)).await.unwrap();
        assert!(!drill_dir.exists());
        assert_eq!(roles(&r).await, [Role::Primary, Role::Replica]);
    });
}

#[test]
fn older_checkpoints_are_restorable_from_reverse_deltas() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend_with(dir.path(), 4, None);
        let (res, a, b) = ids();
        let la = live(&r, &a);
        let mut versions = Vec::new();
        fs::write(la.join("disk.img"), noise("v1", 10 * CHUNK as usize)).unwrap();
        fs::write(la.join("gone.txt"), "removed later").unwrap();
        for v in 0..3u64 {
            r.sync(&res).await.unwrap();
            let snap = dir.path().join(format!("snap{v}"));
            fs::create_dir_all(&snap).unwrap();
            for e in fs::read_dir(&la).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), snap.join(e.file_name())).unwrap();
            }
            versions.push(snap);
            let f = File::options()
                .write(true)
                .open(la.join("disk.img"))
                .unwrap();
            f.write_all_at(&noise(&v.to_string(), 100), v * 3 * CHUNK + 1)
                .unwrap();
            f.set_len((10 - v) * CHUNK - 7).unwrap();
            drop(f);
            let _ = fs::remove_file(la.join("gone.txt"));
            fs::write(la.join(format!("new{v}.txt")), "added").unwrap();
        }
        for (i, snap) in versions.iter().enumerate() {
            let out = dir.path().join(format!("restored{i}"));
            r.restore(&res, &b, i as u64 + 1, &out).await.unwrap();
            same_tree(snap, &out);
        }
        // The newest checkpoint is untouched by restores.
        same_tree(&versions[2], &base(&r, &b));
        assert!(matches!(
            r.restore(&res, &b, 9, &dir.path().join("x")).await,
            Err(BackendError::NotFound(_))
        ));
    });
}

#[test]
fn progress_events_and_continuous_lag() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, a, b) = ids();
        fs::write(
            live(&r, &a).join("disk.img"),
            noise("p", 200 * CHUNK as usize),
        )
        .unwrap();
        let mut rx = r.subscribe();
        r.sync(&res).await.unwrap();
        let mut last = None;
        while let Ok(p) = rx.try_recv() {
            if p.operation == Operation::Pass {
                last = Some(p);
            }
        }
        let last = last.expect("pass progress");
        assert_eq!(last.bytes_done, last.bytes_total);
        assert_eq!(last.bytes_total, 200 * CHUNK);

        let task = tokio::spawn({
            let r = r.clone();
            let res = res.clone();
            async move { r.run_continuous(&res).await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let st = r.status(&res).await.unwrap();
        let lag = st.sites.iter().find(|s| s.site == b).unwrap().lag.unwrap();
        assert!(lag < Duration::from_secs(2), "lag {lag:?}");
        task.abort();
        let newest = r.checkpoints(&res, &b).await.unwrap().last().unwrap().seq;
        assert!(newest >= 3, "continuous mode made {newest} checkpoints");
    });
}

/// idns-core's conformance suite, twice in a row on the same backend.
#[test]
fn replication_suite_passes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = backend(dir.path());
        let (res, p, q) = ids();
        fs::write(
            live(&r, &p).join("disk.img"),
            noise("s", 3 * CHUNK as usize),
        )
        .unwrap();
        r.sync(&res).await.unwrap();
        let suite = ReplicationSuite::new(res.clone(), p.clone(), q.clone(), None)
            .expecting_refusal_beside_writable_primary();
        suite.run(&r).await;
        suite.run(&r).await;
        let st = r.status(&res).await.unwrap();
        assert_eq!(st.sites[0].role, Role::Primary);
    });
}

/// The child half of [`a_crash_in_the_middle_of_a_pass_leaves_the_previous_checkpoint`]: runs
/// a slow pass and is killed by the parent. Does nothing unless the parent started it.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("IDNS_TEST_CRASH_DIR") else {
        return;
    };
    rt().block_on(async {
        let r = backend_with(Path::new(&dir), 3, Some(2 << 20));
        let (res, _, _) = ids();
        let _ = r.sync(&res).await;
    });
    panic!("the parent should have killed this pass");
}

#[test]
fn a_crash_in_the_middle_of_a_pass_leaves_the_previous_checkpoint() {
    if std::env::var("IDNS_TEST_CRASH_DIR").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (res, a, b) = ids();
    let r = backend(dir.path());
    let la = live(&r, &a);
    let v1 = noise("v1", 256 * CHUNK as usize);
    rt.block_on(async {
        fs::write(la.join("disk.img"), &v1).unwrap();
        fs::write(la.join("other.img"), noise("o", 2 * CHUNK as usize)).unwrap();
        r.sync(&res).await.unwrap();
    });
    // Every chunk changes; the child copies at 2 MiB/s, so the pass takes about 8 s; the parent kills it after 1 MiB.
    fs::write(la.join("disk.img"), noise("v2", 256 * CHUNK as usize)).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("IDNS_TEST_CRASH_DIR", dir.path())
        .spawn()
        .unwrap();
    let checkpoints = r.paths(&res, &b).unwrap().root.join("checkpoints");
    let started = Instant::now();
    let staged = loop {
        let staged = fs::read_dir(&checkpoints).unwrap().flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let fwd = e.path().join("fwd");
            let big = fs::read_dir(&fwd)
                .ok()?
                .flatten()
                .any(|p| p.metadata().is_ok_and(|m| m.len() > (1 << 20)));
            (name.starts_with(".staging-") && big).then(|| e.path())
        });
        if let Some(s) = staged {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child never staged anything"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    // Before any recovery: the previous checkpoint is intact, byte for byte.
    assert!(staged.exists());
    let base_b = base(&r, &b);
    assert!(fs::read(base_b.join("disk.img")).unwrap() == v1);
    rt.block_on(async {
        let r = backend(dir.path());
        let check = r
            .integrity(&res, &b, &IntegrityRequest::Check, &ctx(0))
            .await
            .unwrap();
        assert!(check.mismatches.is_empty(), "{:?}", check.mismatches);
        assert!(!staged.exists(), "recovery removed the staging directory");
        // Usable: a drill promotes it, and a new pass completes.
        r.promote(&res, &b, &drill(1)).await.unwrap();
        assert!(fs::read(r.paths(&res, &b).unwrap().drill.join("disk.img")).unwrap() == v1);
        r.fence(&res, &b, &drill(1)).await.unwrap();
        let rep = r.sync(&res).await.unwrap().remove(0);
        assert_eq!(rep.checkpoint, 2);
        assert!(
            fs::read(base_b.join("disk.img")).unwrap() == fs::read(la.join("disk.img")).unwrap()
        );
    });
}
