//! Replication backends for idns: promote the recovery copy, reverse replication for
//! failback, and prove with checksums that nothing was lost.
//!
//! Each backend implements idns-core's [`ReplicationBackend`](idns_core::ReplicationBackend):
//!
//! - [`image`]: disk images (raw, qcow2) and directory trees between per-site locations (local
//!   paths or mounted volumes): block-level deltas with blake3 chunk hashes, sparse files kept
//!   sparse, crash-safe point-in-time checkpoints of the whole consistency group (the last N
//!   kept), manifests verified file by file, drill markers, drills on isolated copies,
//!   continuous mode with the checkpoint age as lag, progress events.
//! - [`command`]: every operation as a user command (a hook) with a small JSON contract on
//!   standard input and output, for replication that lives elsewhere: VMware SRM,
//!   RecoverPoint, DRBD, ZFS, Ceph RBD.
//! - [`postgres`]: PostgreSQL streaming replication: status with lag in seconds and bytes,
//!   fence, promote, zero-loss planned switchover, reprotect with `pg_rewind` after saving
//!   aside the rows only the old primary held, table checksums and drill marker rows.
//!
//! A configuration file names a backend with one table, `{ backend = "image" | "postgres" |
//! "command", … }`: a [`ReplicationSpec`], checked into a [`ReplicationConfig`] whose
//! [`build`](ReplicationConfig::build) makes the backend.
//!
//! What it does not do: decide when to fail over (the election in `idns-core` does), run
//! probes, or talk DNS.
//!
//! # Example
//! Replicate a directory from site `a` to site `b`, fail over to `b`, write drill markers,
//! reverse replication, and fail back with the markers verified at `a`.
//!
//! ```
//! use std::time::Duration;
//! use idns_core::{Epoch, IntegrityRequest, OpContext, ReplicationBackend, Role};
//! use idns_replication::image::{ImageConfig, ImageReplication};
//!
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let (a, b) = (dir.path().join("a"), dir.path().join("b"));
//! std::fs::create_dir_all(&a)?;
//! std::fs::create_dir_all(&b)?;
//! let cfg = ImageConfig::two_sites("vms", ("a", &a), ("b", &b))?;
//! let repl = ImageReplication::new(cfg);
//! let (vms, site_a, site_b) = ("vms".parse()?, "a".parse()?, "b".parse()?);
//!
//! // The application's files live in a's live copy; a pass makes a checkpoint at b.
//! let live_a = repl.paths(&vms, &site_a).ok_or("no such site")?.live;
//! std::fs::create_dir_all(&live_a)?;
//! std::fs::write(live_a.join("disk.img"), vec![7u8; 1 << 20])?;
//! let reports = repl.sync(&vms).await?;
//! assert_eq!(reports[0].bytes_transferred, 1 << 20);
//!
//! // Failover to b (epoch 1): fence a, promote b, write markers there.
//! let ctx = OpContext {
//!     epoch: Epoch::new(1),
//!     drill: false,
//!     timeout: Duration::from_secs(60),
//!     force: false,
//! };
//! repl.fence(&vms, &site_a, &ctx).await?;
//! repl.promote(&vms, &site_b, &ctx).await?;
//! let markers = repl
//!     .integrity(&vms, &site_b, &IntegrityRequest::Mark { label: "epoch-1".into() }, &ctx)
//!     .await?
//!     .manifest;
//!
//! // Failback (epoch 2): a follows b and catches up, then a is promoted again.
//! repl.reprotect(&vms, &site_b, true, &ctx).await?;
//! let ctx = OpContext { epoch: Epoch::new(2), ..ctx };
//! repl.fence(&vms, &site_b, &ctx).await?;
//! repl.promote(&vms, &site_a, &ctx).await?;
//! let check = repl
//!     .integrity(&vms, &site_a, &IntegrityRequest::Verify { expected: markers }, &ctx)
//!     .await?;
//! assert!(check.mismatches.is_empty());
//! repl.reprotect(&vms, &site_a, true, &ctx).await?;
//! let status = repl.status(&vms).await?;
//! assert_eq!(status.sites[0].role, Role::Primary);
//! assert_eq!(status.sites[1].role, Role::Replica);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod command;
mod config;
mod fsutil;
pub mod image;
pub mod postgres;
mod progress;
#[cfg(feature = "test-util")]
pub mod testing;

pub use command::CommandReplication;
pub use config::{Placement, Replication, ReplicationConfig, ReplicationSpec};
pub use image::ImageReplication;
pub use postgres::PostgresReplication;
pub use progress::{Operation, Progress};
