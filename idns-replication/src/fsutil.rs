//! Small file-system helpers shared by the backends: crash-safe writes, fsync of directories,
//! hole punching, sparse copies, and mapping I/O errors to [`BackendError`]s.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use idns_core::BackendError;
use rustix::fs::{FallocateFlags, SeekFrom};

/// Maps an I/O error on `what` to a backend error: missing things are `NotFound`, a refused
/// permission is `Refused`, everything else (a volume that went away, a full disk) may pass
/// and is `Unavailable`.
pub(crate) fn io_err(what: impl std::fmt::Display, e: &io::Error) -> BackendError {
    match e.kind() {
        io::ErrorKind::NotFound => BackendError::NotFound(format!("{what}: {e}")),
        io::ErrorKind::PermissionDenied => BackendError::Refused(format!("{what}: {e}")),
        _ => BackendError::Unavailable(format!("{what}: {e}")),
    }
}

/// Extension to attach a description to an I/O result.
pub(crate) trait IoContext<T> {
    /// Maps the error with [`io_err`].
    fn ctx(self, what: impl std::fmt::Display) -> Result<T, BackendError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T, BackendError> {
        self.map_err(|e| io_err(what, &e))
    }
}

/// Fsyncs a directory, so that renames and creations inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `data` to `path` crash-safely: a temporary file beside it, fsync, rename, fsync of
/// the directory. Readers see the old content or the new one, never a mix.
pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Frees the blocks of `len` bytes at `offset` (the range reads as zeros afterwards). Falls
/// back to writing zeros where the file system cannot punch holes.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(file, flags, offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The data ranges of a file (everything that is not a hole), as `(offset, len)`, found with
/// `SEEK_DATA`/`SEEK_HOLE`. A file system without hole support reports one range.
pub(crate) fn data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(e) if e == rustix::io::Errno::NXIO => break,
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::OPNOTSUPP => {
                return Ok(vec![(pos, size - pos)]);
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(e) => return Err(e.into()),
        };
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

/// Whether every byte is zero.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    let body = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0);
    body && chunks.remainder().iter().all(|b| *b == 0)
}

/// Copies `src` to `dst` (created or truncated), keeping holes: only data ranges are read, and
/// all-zero blocks inside them are skipped. Returns the bytes written.
pub(crate) fn sparse_copy(src: &Path, dst: &Path, cancel: &dyn Fn() -> bool) -> io::Result<u64> {
    let from = File::open(src)?;
    let size = from.metadata()?.len();
    let to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)?;
    to.set_len(size)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for (start, len) in data_ranges(&from, size)? {
        let mut off = start;
        while off < start + len {
            if cancel() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let n = (start + len - off).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], off)?;
            // Skip zero blocks in 64 KiB steps so that a preallocated source stays sparse.
            for (i, block) in buf[..n].chunks(64 << 10).enumerate() {
                if !is_zero(block) {
                    to.write_all_at(block, off + (i as u64) * (64 << 10))?;
                    written += block.len() as u64;
                }
            }
            off += n as u64;
        }
    }
    to.sync_all()?;
    Ok(written)
}

/// Copies a whole tree (regular files sparsely, directories, symbolic links), keeping
/// permission bits and modification times. Special bits (setuid, setgid, sticky) and ownership
/// follow `special` (see [`set_mode`]). `dst` must not exist.
pub(crate) fn copy_tree(
    src: &Path,
    dst: &Path,
    special: SpecialBits,
    cancel: &dyn Fn() -> bool,
) -> io::Result<u64> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir_all(dst)?;
    let mut written = 0;
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = dst.join(e.file_name());
        let m = fs::symlink_metadata(&from)?;
        if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if m.is_dir() {
            written += copy_tree(&from, &to, special, cancel)?;
        } else if m.is_file() {
            written += sparse_copy(&from, &to, cancel)?;
            set_mode(&to, m.mode(), special.owner(&m))?;
            File::options()
                .write(true)
                .open(&to)?
                .set_modified(m.modified()?)?;
        }
    }
    set_mode(dst, meta.mode(), special.owner(&meta))?;
    sync_dir(dst)?;
    Ok(written)
}

/// The setuid, setgid and sticky bits.
pub(crate) const SPECIAL_MODE_BITS: u32 = 0o7000;

/// Whether copies keep setuid, setgid and sticky bits (and so the ownership they need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpecialBits {
    /// Dropped: copies get only the read, write and execute bits, and the copying process's
    /// ownership.
    Drop,
    /// Kept, with the source's owner and group set first; where those cannot be set the
    /// special bits are dropped.
    WithOwnership,
}

impl SpecialBits {
    /// From the resource's `preserve_special_bits` setting.
    pub(crate) fn from_setting(preserve: bool) -> Self {
        if preserve {
            SpecialBits::WithOwnership
        } else {
            SpecialBits::Drop
        }
    }

    /// The owner and group to give a copy of a file with this metadata, when ownership is kept.
    pub(crate) fn owner(self, meta: &fs::Metadata) -> Option<(u32, u32)> {
        (self == SpecialBits::WithOwnership).then(|| (meta.uid(), meta.gid()))
    }
}

/// Sets `path`'s permission bits from `mode`. Setuid, setgid and sticky bits are kept only
/// with an `owner` (user and group ids), which is set first (a change of owner clears those
/// bits); when it cannot be set, the special bits are dropped with a warning. Without an
/// owner, only the read, write and execute bits are set.
pub(crate) fn set_mode(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut mode = mode & 0o7777;
    if let Some((uid, gid)) = owner
        && let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid))
    {
        if mode & SPECIAL_MODE_BITS != 0 {
            tracing::warn!(path = %path.display(), uid, gid, error = %e, mode = format_args!("{mode:o}"), "cannot set the owner: setuid, setgid and sticky bits dropped");
        } else {
            tracing::debug!(path = %path.display(), uid, gid, error = %e, "cannot set the owner");
        }
        mode &= !SPECIAL_MODE_BITS;
    }
    if owner.is_none() {
        mode &= !SPECIAL_MODE_BITS;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Opens `path` for reading and writing, creating it empty if it does not exist (never
/// truncating it).
pub(crate) fn open_or_create(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Removes a directory tree if it exists.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Joins a manifest key (a relative path with `/` separators) to `root`, refusing keys that
/// are absolute or climb out of it.
pub(crate) fn safe_join(root: &Path, key: &str) -> Option<PathBuf> {
    let rel = Path::new(key);
    if key.is_empty() || rel.is_absolute() {
        return None;
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/r");
        assert_eq!(safe_join(root, "a/b"), Some(PathBuf::from("/r/a/b")));
        assert_eq!(safe_join(root, "../x"), None);
        assert_eq!(safe_join(root, "/etc/passwd"), None);
        assert_eq!(safe_join(root, "a/./b"), Some(PathBuf::from("/r/a/b")));
        assert_eq!(safe_join(root, ""), None);
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        v[999] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn sparse_copy_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"hello", 10 << 20).unwrap();
        f.sync_all().unwrap();
        let ranges = data_ranges(&f, 64 << 20).unwrap();
        assert!(!ranges.is_empty());
        assert!(ranges.iter().map(|r| r.1).sum::<u64>() < (64 << 20));
        let dst = dir.path().join("dst");
        sparse_copy(&src, &dst, &|| false).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(&dst).unwrap().blocks() * 512 < (1 << 20));
    }
}
