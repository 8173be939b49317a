//! What a site keeps on disk for one resource, and its crash-safe state file.
//!
//! ```text
//! <root>/state.json                 role, highest epoch, what `base` holds (atomic writes)
//! <root>/lock                       flock'ed by the process working on the site (kept)
//! <root>/base/                      replica: the newest checkpoint, materialized
//! <root>/checkpoints/<seq>/         checkpoint.json (manifest), chunks/*.cv (chunk hashes),
//!                                   fwd/*.patch (until applied), rev/ (the way back to <seq-1>)
//! <root>/checkpoints/.staging-<seq> a pass in progress (deleted on recovery)
//! <root>/drill/                     an isolated drill copy
//! <root>/displaced/                 copies moved aside instead of deleted
//! <live>                            primary: the live copy (default <root>/live)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use idns_core::{BackendError, Epoch, ResourceId, SiteId};
use serde::{Deserialize, Serialize};

use super::config::SiteConfig;
use super::hash::Cv;
use crate::fsutil::{IoContext, SpecialBits, atomic_write, set_mode, sync_dir};

/// The version of the state file format.
const STATE_VERSION: u32 = 1;

/// A site's role for a resource, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoredRole {
    /// Its live copy takes writes and is replicated to the others.
    Primary,
    /// It keeps checkpoints of another site's live copy.
    Replica,
    /// It has a live copy that the library no longer replicates from or writes to.
    Fenced,
}

/// What `<root>/base` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(crate) enum Base {
    /// Nothing yet.
    Empty,
    /// Exactly this checkpoint.
    Checkpoint {
        /// Its sequence number.
        seq: u64,
    },
    /// A former live copy, adopted on reprotect; its chunk hashes are unknown, so the next
    /// pass compares both sides.
    Adopted,
}

/// The checkpoint a live copy came from (the evidence `Check` compares it with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Evidence {
    /// The checkpoint.
    pub seq: u64,
    /// When it became the live copy.
    pub since: SystemTime,
}

/// The state file of one site for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SiteState {
    pub version: u32,
    pub resource: ResourceId,
    pub site: SiteId,
    /// The highest epoch accepted for the resource, as far as this site knows.
    pub epoch: Epoch,
    pub role: StoredRole,
    /// The site a replica follows.
    pub upstream: Option<SiteId>,
    pub base: Base,
    /// Where the live copy came from, when it came from a checkpoint.
    pub evidence: Option<Evidence>,
    /// The checkpoint the drill copy was made from (0: the live copy), when one exists.
    pub drill: Option<u64>,
    /// When the site was fenced.
    pub fenced_at: Option<SystemTime>,
    /// The point in time of the newest checkpoint in `base`.
    #[serde(default)]
    pub checkpoint_at: Option<SystemTime>,
}

impl SiteState {
    pub(crate) fn new(resource: ResourceId, site: SiteId, role: StoredRole) -> Self {
        Self {
            version: STATE_VERSION,
            resource,
            site,
            epoch: Epoch::ZERO,
            role,
            upstream: None,
            base: Base::Empty,
            evidence: None,
            drill: None,
            fenced_at: None,
            checkpoint_at: None,
        }
    }
}

/// The kind of a manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One entry of a checkpoint's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Hex blake3 of the content (files), as `b3sum` prints it.
    pub blake3: Option<String>,
    /// The link target (symbolic links).
    pub target: Option<String>,
    /// Permission bits at the source, setuid, setgid and sticky included (copies get those
    /// only with `preserve_special_bits`).
    pub mode: u32,
    /// Modification time at the source.
    pub mtime: SystemTime,
    /// The owner's user id at the source (absent in checkpoints that did not record it).
    #[serde(default)]
    pub uid: Option<u32>,
    /// The group id at the source (absent in checkpoints that did not record it).
    #[serde(default)]
    pub gid: Option<u32>,
}

/// The manifest of one checkpoint: the whole consistency group at one point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number at this site.
    pub seq: u64,
    /// When the pass that made it started reading the source (the point in time it holds).
    pub taken_at: SystemTime,
    /// The site it was copied from.
    pub source: SiteId,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// The checkpoint its reverse deltas lead back to, where one exists.
    pub previous: Option<u64>,
    /// Every file, directory and link, by path relative to the copy's root.
    pub entries: BTreeMap<String, Entry>,
}

impl Checkpoint {
    /// The files' entries as an idns manifest (path → size, blake3, mtime).
    pub fn manifest(&self) -> idns_core::Manifest {
        idns_core::Manifest {
            entries: self
                .entries
                .iter()
                .filter(|(_, e)| e.kind == EntryKind::File)
                .map(|(k, e)| {
                    (
                        k.clone(),
                        idns_core::ManifestEntry {
                            size: e.size,
                            checksum: e.blake3.clone().unwrap_or_default(),
                            modified: Some(e.mtime),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A stable file name for a path's chunk list and patches.
pub(crate) fn key_id(key: &str) -> String {
    let h = blake3::hash(key.as_bytes());
    h.to_hex()[..32].to_owned()
}

/// One site's directories for one resource.
#[derive(Debug, Clone)]
pub(crate) struct SiteStore {
    pub site: SiteId,
    pub root: PathBuf,
    pub live: PathBuf,
}

impl SiteStore {
    pub(crate) fn new(cfg: &SiteConfig) -> Self {
        Self {
            site: cfg.site.clone(),
            root: cfg.root.clone(),
            live: cfg.live.clone(),
        }
    }

    pub(crate) fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub(crate) fn base(&self) -> PathBuf {
        self.root.join("base")
    }
    pub(crate) fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub(crate) fn checkpoint_dir(&self, seq: u64) -> PathBuf {
        self.checkpoints().join(format!("{seq:020}"))
    }
    pub(crate) fn staging_dir(&self, seq: u64) -> PathBuf {
        self.checkpoints().join(format!(".staging-{seq:020}"))
    }
    pub(crate) fn drill(&self) -> PathBuf {
        self.root.join("drill")
    }
    pub(crate) fn displaced(&self) -> PathBuf {
        self.root.join("displaced")
    }

    /// Whether the site's root can be reached (the volume is there).
    pub(crate) fn reachable(&self) -> Result<(), BackendError> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BackendError::Invalid(format!(
                "site {}: {} is not a directory",
                self.site,
                self.root.display()
            ))),
            Err(e) => Err(BackendError::Unavailable(format!(
                "site {} cannot be reached: {}: {e}",
                self.site,
                self.root.display()
            ))),
        }
    }

    /// The state, or `None` when the site has none yet.
    pub(crate) fn load_state(&self) -> Result<Option<SiteState>, BackendError> {
        self.reachable()?;
        let path = self.state_path();
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(crate::fsutil::io_err(path.display(), &e)),
        };
        let state: SiteState = serde_json::from_slice(&raw).map_err(|e| {
            BackendError::Integrity(format!(
                "state file {} is damaged: {e}; repair or remove it",
                path.display()
            ))
        })?;
        if state.version != STATE_VERSION {
            return Err(BackendError::Invalid(format!(
                "state file {} has version {}, this library reads {STATE_VERSION}",
                path.display(),
                state.version
            )));
        }
        Ok(Some(state))
    }

    pub(crate) fn save_state(&self, state: &SiteState) -> Result<(), BackendError> {
        let data = serde_json::to_vec_pretty(state)
            .map_err(|e| BackendError::Invalid(format!("state does not serialize: {e}")))?;
        atomic_write(&self.state_path(), &data).ctx(self.state_path().display())
    }

    /// Committed checkpoints, oldest first.
    pub(crate) fn committed(&self) -> Result<Vec<u64>, BackendError> {
        let dir = self.checkpoints();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(crate::fsutil::io_err(dir.display(), &e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.ctx(dir.display())?;
            if let Some(seq) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                out.push(seq);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Staging directories left by interrupted passes.
    pub(crate) fn stale_staging(&self) -> Result<Vec<PathBuf>, BackendError> {
        let dir = self.checkpoints();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(crate::fsutil::io_err(dir.display(), &e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.ctx(dir.display())?;
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    pub(crate) fn load_checkpoint(&self, seq: u64) -> Result<Checkpoint, BackendError> {
        let path = self.checkpoint_dir(seq).join("checkpoint.json");
        let raw = fs::read(&path).ctx(path.display())?;
        serde_json::from_slice(&raw).map_err(|e| {
            BackendError::Integrity(format!(
                "checkpoint manifest {} is damaged: {e}",
                path.display()
            ))
        })
    }

    pub(crate) fn load_cvs(&self, seq: u64, key: &str) -> Result<Vec<Cv>, BackendError> {
        let path = self
            .checkpoint_dir(seq)
            .join("chunks")
            .join(format!("{}.cv", key_id(key)));
        let raw = fs::read(&path).ctx(path.display())?;
        if raw.len() % 32 != 0 {
            return Err(BackendError::Integrity(format!(
                "chunk list {} is damaged (length {})",
                path.display(),
                raw.len()
            )));
        }
        Ok(raw
            .chunks_exact(32)
            .map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            })
            .collect())
    }

    /// The site's lock file. It is never deleted: the lock is an `flock` on it, which the
    /// system releases when its holder closes it or ends (however it ends).
    pub(crate) fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Takes the site's lock (a pass, promotion or fence in progress), or fails at once when
    /// another holds it, in this process or another. The lock is an exclusive `flock` on
    /// `<root>/lock`: it dies with its holder, and dropping the [`SiteLock`] releases it.
    pub(crate) fn lock(&self) -> Result<SiteLock, BackendError> {
        use rustix::fs::{FlockOperation, flock};
        let path = self.lock_path();
        let file = crate::fsutil::open_or_create(&path).ctx(path.display())?;
        let meta = file.metadata().ctx(path.display())?;
        // The path as well: an inode freed by a deleted site root (a test's temporary
        // directory, a rebuilt site) is soon given to another file.
        let key = (meta.dev(), meta.ino(), path.clone());
        let busy = || {
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|pid| format!(" (it names process {pid})"))
                .unwrap_or_default();
            BackendError::Unavailable(format!(
                "site {} is busy: another operation holds the lock {}{holder}",
                self.site,
                path.display()
            ))
        };
        // Where `flock` is emulated with per-process locks (NFS), a second open in this
        // process would be granted: this process's own holders are kept in a set as well.
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&key) {
            return Err(busy());
        }
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(busy()),
            Err(e) => return Err(crate::fsutil::io_err(path.display(), &e.into())),
        }
        held.insert(key.clone());
        drop(held);
        // For people looking at the file; the lock itself is the flock.
        let note = file
            .set_len(0)
            .and_then(|()| file.write_all_at(std::process::id().to_string().as_bytes(), 0));
        if let Err(e) = note {
            tracing::debug!(lock = %path.display(), error = %e, "cannot write the pid into the lock file");
        }
        Ok(SiteLock { key, file })
    }
}

/// A held site lock (an exclusive `flock` on the site's lock file); released when dropped,
/// or by the system when the process ends.
#[derive(Debug)]
pub(crate) struct SiteLock {
    /// Device, inode and path of the lock file, as kept in [`HELD`].
    key: (u64, u64, PathBuf),
    /// Unlocked explicitly when dropped: a child process forked by another thread holds a
    /// copy of the descriptor until it runs its program, and closing ours alone would leave
    /// the lock held through that copy.
    file: File,
}

/// The lock files (device, inode) this process holds.
static HELD: std::sync::Mutex<BTreeSet<(u64, u64, PathBuf)>> =
    std::sync::Mutex::new(BTreeSet::new());

impl Drop for SiteLock {
    fn drop(&mut self) {
        if let Err(e) = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock) {
            tracing::warn!(lock = %self.key.2.display(), error = %e, "cannot unlock the site lock; it is released when its file closes");
        }
        HELD.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// One entry found by [`walk`].
pub(crate) struct Found {
    pub key: String,
    pub path: PathBuf,
    pub meta: fs::Metadata,
}

/// Lists a tree (without following links), sorted by path, parents before children.
/// Sockets, FIFOs and devices are skipped with a warning.
pub(crate) fn walk(root: &Path) -> Result<Vec<Found>, BackendError> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    walk_into(root, "", &mut out)?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn walk_into(dir: &Path, prefix: &str, out: &mut Vec<Found>) -> Result<(), BackendError> {
    for e in fs::read_dir(dir).ctx(dir.display())? {
        let e = e.ctx(dir.display())?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(BackendError::Invalid(format!(
                "{}: file names must be UTF-8",
                e.path().display()
            )));
        };
        let key = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        let meta = fs::symlink_metadata(&path).ctx(path.display())?;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(Found {
                key: key.clone(),
                path: path.clone(),
                meta,
            });
            walk_into(&path, &key, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(Found { key, path, meta });
        } else {
            tracing::warn!(path = %path.display(), "not a file, directory or link: not replicated");
        }
    }
    Ok(())
}

/// The permission bits of a file.
pub(crate) fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.mode() & 0o7777
}

/// Sets a copy's permission bits (special bits and ownership as `special` says) and
/// modification time, from its manifest entry.
pub(crate) fn set_meta(path: &Path, entry: &Entry, special: SpecialBits) -> io::Result<()> {
    let owner = match (special, entry.uid, entry.gid) {
        (SpecialBits::WithOwnership, Some(uid), Some(gid)) => Some((uid, gid)),
        _ => None,
    };
    set_mode(path, entry.mode, owner)?;
    File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))?
        .set_modified(entry.mtime)
}

/// Fsyncs the directories of `dirs` (deduplicated).
pub(crate) fn sync_dirs<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> io::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for d in dirs {
        if seen.insert(d.to_owned()) {
            sync_dir(d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store(root: &Path) -> SiteStore {
        SiteStore {
            site: "a".parse().unwrap(),
            root: root.to_owned(),
            live: root.join("live"),
        }
    }

    #[test]
    fn a_second_lock_on_a_site_in_one_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (store(dir.path()), store(dir.path()));
        let held = one.lock().unwrap();
        for s in [&one, &two] {
            match s.lock() {
                Err(BackendError::Unavailable(m)) => {
                    assert!(m.contains(&one.lock_path().display().to_string()), "{m}");
                }
                other => panic!("a second lock was granted: {other:?}"),
            }
        }
        // The refused attempts left the lock held, in its file.
        assert!(one.lock().is_err());
        drop(held);
        let again = two.lock().unwrap();
        assert!(one.lock().is_err());
        drop(again);
        assert!(one.lock_path().exists(), "the lock file is kept");
    }

    #[test]
    fn a_released_lock_is_free_while_a_copy_of_its_descriptor_lives_on() {
        // A child forked by another thread holds such a copy until it runs its program.
        let dir = tempfile::tempdir().unwrap();
        let site = store(dir.path());
        let held = site.lock().unwrap();
        let copy = held.file.try_clone().unwrap();
        drop(held);
        let again = site.lock();
        assert!(again.is_ok(), "the lock outlived its holder: {again:?}");
        drop(copy);
    }
}
