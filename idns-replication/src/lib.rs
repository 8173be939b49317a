//! Replication backends for idns: promote the recovery copy, reverse replication for
//! failback, and prove with checksums that nothing was lost.
//!
//! This crate will hold the [`ReplicationBackend`](idns_core::ReplicationBackend)
//! implementations: PostgreSQL streaming replication (promote, `pg_rewind`, reprotect),
//! block-level image and file-tree replication with blake3 integrity manifests, and command
//! hooks for replication that lives elsewhere (SRM, RecoverPoint, DRBD, ZFS, Ceph RBD).
//!
//! It does not decide when to fail over; the election in `idns-core` does.
