//! Shared test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::time::Duration;

use idns_core::{
    BackendError, Epoch, IntegrityRequest, OpContext, ReplicationBackend, ResourceId, Role, SiteId,
};
use idns_replication::image::{ImageResourceSpec, ImageSiteSpec, ImageSpec};

pub(crate) fn ctx(epoch: u64) -> OpContext {
    OpContext {
        epoch: Epoch::new(epoch),
        drill: false,
        timeout: Duration::from_secs(120),
        force: false,
    }
}

/// Image resource `vms` at sites `a` (home) and `b`, rooted in `dir/a` and `dir/b`, with
/// 64 KiB chunks, 3 checkpoints, passes every 100 ms and 2 threads.
pub(crate) fn image_spec(dir: &Path) -> ImageSpec {
    ImageSpec {
        resources: vec![ImageResourceSpec {
            id: "vms".into(),
            home: "a".into(),
            sites: ["a", "b"]
                .iter()
                .map(|s| ImageSiteSpec {
                    site: (*s).into(),
                    root: dir.join(s),
                    live: None,
                })
                .collect(),
            chunk_size: 64 << 10,
            keep: 3,
            interval: Duration::from_millis(100),
            trust_mtime: true,
            max_bytes_per_sec: None,
            threads: 2,
            preserve_special_bits: false,
        }],
    }
}

pub(crate) fn drill(epoch: u64) -> OpContext {
    OpContext {
        drill: true,
        ..ctx(epoch)
    }
}

/// The roles `b` reports for `sites`, in that order.
pub(crate) async fn roles(
    b: &dyn ReplicationBackend,
    res: &ResourceId,
    sites: &[&SiteId],
) -> Vec<Role> {
    let st = b.status(res).await.unwrap();
    assert_eq!(&st.resource, res);
    sites
        .iter()
        .map(|s| {
            st.sites
                .iter()
                .find(|x| &x.site == *s)
                .expect("site in status")
                .role
        })
        .collect()
}

/// The steps of idns-core's `ReplicationSuite` (which is not in idns-core yet): fail over
/// from `p` to `q` and back, checking roles, stale epochs, markers, tampered manifests and
/// drills. Returns the epoch used last. Runs again on the state it leaves.
pub(crate) async fn conformance(
    b: &dyn ReplicationBackend,
    res: &ResourceId,
    p: &SiteId,
    q: &SiteId,
) -> Epoch {
    assert_eq!(
        roles(b, res, &[p, q]).await,
        [Role::Primary, Role::Replica],
        "roles at the start"
    );
    // The starting epoch: promoting the primary at 0 is a no-op, or stale on a backend with
    // history.
    let e = match b.promote(res, p, &ctx(0)).await {
        Ok(_) => Epoch::new(1),
        Err(BackendError::StaleEpoch { current, .. }) => current.next(),
        Err(other) => panic!("promoting the primary at epoch 0: {other:?}"),
    };
    let op = ctx(e.get());
    // The failover runbook's order: fence the old primary, then promote.
    b.fence(res, p, &op).await.unwrap();
    assert_ne!(
        roles(b, res, &[p]).await,
        [Role::Primary],
        "after fencing the old primary"
    );
    b.promote(res, q, &op).await.unwrap();
    assert_eq!(
        roles(b, res, &[q]).await,
        [Role::Primary],
        "after promoting the replica"
    );
    match b.fence(res, q, &ctx(e.get() - 1)).await {
        Err(BackendError::StaleEpoch { attempted, current }) => {
            assert_eq!((attempted.get(), current), (e.get() - 1, e));
        }
        other => panic!("a stale fence must be refused, got {other:?}"),
    }
    assert_eq!(
        roles(b, res, &[q]).await,
        [Role::Primary],
        "after a refused stale fence"
    );
    let markers = b
        .integrity(
            res,
            q,
            &IntegrityRequest::Mark {
                label: format!("conformance-{e}"),
            },
            &op,
        )
        .await
        .unwrap()
        .manifest;
    assert!(
        !markers.entries.is_empty(),
        "Mark returned an empty manifest"
    );
    b.reprotect(res, q, true, &op).await.unwrap();
    assert_eq!(
        roles(b, res, &[q, p]).await,
        [Role::Primary, Role::Replica],
        "after reprotect"
    );
    let verify = |expected| IntegrityRequest::Verify { expected };
    let v = b
        .integrity(res, p, &verify(markers.clone()), &op)
        .await
        .unwrap();
    assert!(
        v.mismatches.is_empty(),
        "markers at the old primary: {:?}",
        v.mismatches
    );
    let mut tampered = markers.clone();
    let (key, entry) = tampered.entries.iter_mut().next().unwrap();
    entry.checksum.push_str("-tampered");
    let key = key.clone();
    let v = b.integrity(res, p, &verify(tampered), &op).await.unwrap();
    assert!(
        v.mismatches.iter().any(|m| m.key == key),
        "tampered manifest: {:?}",
        v.mismatches
    );
    match b.promote(res, p, &drill(e.get())).await {
        Ok(_) | Err(BackendError::Unsupported(_)) => {}
        Err(other) => panic!("drill promote: {other:?}"),
    }
    assert_eq!(
        roles(b, res, &[q, p]).await,
        [Role::Primary, Role::Replica],
        "after a drill promote"
    );
    match b.fence(res, p, &drill(e.get())).await {
        Ok(()) | Err(BackendError::Unsupported(_)) => {}
        Err(other) => panic!("drill cleanup: {other:?}"),
    }
    assert_eq!(
        roles(b, res, &[q, p]).await,
        [Role::Primary, Role::Replica],
        "after a drill cleanup"
    );
    let back = ctx(e.get() + 1);
    b.fence(res, q, &back).await.unwrap();
    b.promote(res, p, &back).await.unwrap();
    b.reprotect(res, p, true, &back).await.unwrap();
    let v = b.integrity(res, p, &verify(markers), &back).await.unwrap();
    assert!(
        v.mismatches.is_empty(),
        "markers after failback: {:?}",
        v.mismatches
    );
    assert_eq!(
        roles(b, res, &[p, q]).await,
        [Role::Primary, Role::Replica],
        "roles at the end"
    );
    back.epoch
}
