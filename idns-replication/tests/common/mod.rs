//! Shared test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::time::Duration;

use idns_core::{Epoch, OpContext, ReplicationBackend, ResourceId, Role, SiteId};
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
