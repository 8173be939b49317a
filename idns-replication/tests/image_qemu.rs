//! Real servers: qemu-img, qemu-io
//!
//! Image replication of real qcow2 images, checked with qemu's own tools: `qemu-img create`
//! makes the image, `qemu-io` writes into it as a VM would, and `qemu-img compare` (an
//! independent implementation) says whether the replica holds the same disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use idns_core::test_util::servers::require;
use idns_core::{Epoch, IntegrityRequest, OpContext, ReplicationBackend, Role};
use idns_replication::image::{ImageConfig, ImageReplication};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_io(img: &Path, command: &str) {
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", command])
        .arg(img));
}

/// `qemu-img compare` exits 0 when the guest-visible disks are identical.
fn identical(a: &Path, b: &Path) -> bool {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "qcow2"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    out.status.success()
}

fn ctx(epoch: u64) -> OpContext {
    OpContext {
        epoch: Epoch::new(epoch),
        drill: false,
        timeout: Duration::from_secs(120),
        force: false,
    }
}

fn tools() -> bool {
    require("qemu-img", &[], "qcow2 image replication tests").is_some()
        && require("qemu-io", &[], "qcow2 image replication tests").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_changes_move_as_changed_chunks_and_qemu_img_compare_agrees() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(a.join("live")).unwrap();
    fs::create_dir_all(&b).unwrap();
    let repl = ImageReplication::new(ImageConfig::two_sites("vm", ("a", &a), ("b", &b)).unwrap());
    let vm: idns_core::ResourceId = "vm".parse().unwrap();
    let site_b: idns_core::SiteId = "b".parse().unwrap();
    let img = a.join("live/vm1.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("256M"));
    qemu_io(&img, "write -P 0x11 0 8M");
    qemu_io(&img, "write -P 0x22 100M 4M");

    let first = repl.sync(&vm).await.unwrap().remove(0);
    let replica = repl.paths(&vm, &site_b).unwrap().base.join("vm1.qcow2");
    assert!(identical(&img, &replica), "the first pass differs");
    assert_eq!(first.bytes_total, fs::metadata(&img).unwrap().len());

    // The change from the task: 64 KiB written at 1 MiB.
    qemu_io(&img, "write -P 0xab 1M 64k");
    let rep = repl.sync(&vm).await.unwrap().remove(0);
    assert!(
        identical(&img, &replica),
        "qemu-img compare says the replica differs"
    );
    // qemu writes the data cluster (overwritten in place: it was allocated) and perhaps
    // its metadata: a handful of 64 KiB chunks out of hundreds.
    assert!(rep.chunks_total > 150, "{rep:?}");
    assert!(
        (1..=4).contains(&rep.chunks_changed),
        "{} of {} chunks moved: {rep:?}",
        rep.chunks_changed,
        rep.chunks_total
    );
    assert!(rep.bytes_transferred <= 4 * 65536, "{rep:?}");

    // A write to unallocated space grows the image: new clusters, L2 and refcount updates.
    qemu_io(&img, "write -P 0xcd 200M 128k");
    let rep = repl.sync(&vm).await.unwrap().remove(0);
    assert!(identical(&img, &replica));
    assert!(rep.chunks_changed <= 8, "{rep:?}");

    // The replica's checkpoint verifies; a corrupted byte is found and named.
    let ok = repl
        .integrity(&vm, &site_b, &IntegrityRequest::Check, &ctx(0))
        .await
        .unwrap();
    assert!(ok.mismatches.is_empty(), "{:?}", ok.mismatches);
    let mtime = fs::metadata(&replica).unwrap().modified().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::options()
            .read(true)
            .write(true)
            .open(&replica)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, 1 << 20).unwrap();
        f.write_all_at(&[byte[0] ^ 0xff], 1 << 20).unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert!(!identical(&img, &replica));
    let bad = repl
        .integrity(&vm, &site_b, &IntegrityRequest::Check, &ctx(0))
        .await
        .unwrap();
    assert_eq!(bad.mismatches.len(), 1, "{:?}", bad.mismatches);
    assert_eq!(bad.mismatches[0].key, "vm1.qcow2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_failover_and_failback_with_markers() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(a.join("live")).unwrap();
    fs::create_dir_all(&b).unwrap();
    let repl = ImageReplication::new(ImageConfig::two_sites("app", ("a", &a), ("b", &b)).unwrap());
    let app: idns_core::ResourceId = "app".parse().unwrap();
    let (site_a, site_b): (idns_core::SiteId, idns_core::SiteId) =
        ("a".parse().unwrap(), "b".parse().unwrap());
    // Two VMs of one application: one consistency group.
    for (name, pattern) in [("web.qcow2", "0x01"), ("db.qcow2", "0x02")] {
        let img = a.join("live").join(name);
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("64M"));
        qemu_io(&img, &format!("write -P {pattern} 0 2M"));
    }
    repl.sync(&app).await.unwrap();

    // Failover to b: fence a, promote b, check, markers; the VMs at b write.
    let e1 = ctx(1);
    repl.fence(&app, &site_a, &e1).await.unwrap();
    repl.promote(&app, &site_b, &e1).await.unwrap();
    let check = repl
        .integrity(&app, &site_b, &IntegrityRequest::Check, &e1)
        .await
        .unwrap();
    assert!(check.mismatches.is_empty(), "{:?}", check.mismatches);
    let markers = repl
        .integrity(
            &app,
            &site_b,
            &IntegrityRequest::Mark {
                label: "epoch-1".into(),
            },
            &e1,
        )
        .await
        .unwrap()
        .manifest;
    let live_b = b.join("live");
    qemu_io(&live_b.join("db.qcow2"), "write -P 0x77 3M 256k");
    qemu_io(&live_b.join("web.qcow2"), "write -P 0x78 40M 64k");

    // Failback, as the election's runbook does it.
    repl.reprotect(&app, &site_b, false, &e1).await.unwrap();
    repl.reprotect(&app, &site_b, true, &e1).await.unwrap();
    for name in ["web.qcow2", "db.qcow2"] {
        assert!(
            identical(&live_b.join(name), &a.join("base").join(name)),
            "{name}"
        );
    }
    let e2 = ctx(2);
    repl.fence(&app, &site_b, &e2).await.unwrap();
    repl.promote(&app, &site_a, &e2).await.unwrap();
    let verified = repl
        .integrity(
            &app,
            &site_a,
            &IntegrityRequest::Verify { expected: markers },
            &e2,
        )
        .await
        .unwrap();
    assert!(verified.mismatches.is_empty(), "{:?}", verified.mismatches);
    repl.reprotect(&app, &site_a, true, &e2).await.unwrap();
    let st = repl.status(&app).await.unwrap();
    assert_eq!(
        st.sites.iter().map(|s| s.role).collect::<Vec<_>>(),
        [Role::Primary, Role::Replica]
    );
    for name in ["web.qcow2", "db.qcow2"] {
        assert!(
            identical(&a.join("live").join(name), &b.join("base").join(name)),
            "{name}"
        );
    }
    // The data b's VMs wrote is at a.
    let out = run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "read -P 0x77 3M 256k"])
        .arg(a.join("live/db.qcow2")));
    assert!(!out.contains("Pattern verification failed"), "{out}");
}
