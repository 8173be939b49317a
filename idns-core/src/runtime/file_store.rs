//! [`FileStore`]: the journal in one JSON file, replaced atomically.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::journal::Journal;
use crate::store::{StateStore, Stored};

/// A [`StateStore`] that keeps the journal in one JSON file, `{"revision": n, "journal": …}`.
///
/// Crash safety: [`save`](StateStore::save) writes a temporary file in the same directory,
/// fsyncs it, renames it over the target and fsyncs the directory, so after a crash the file
/// holds either the old journal or the new one, never a mix. A temporary file left behind by
/// a crash is never read.
///
/// Compare-and-swap: `save` refuses with [`BackendError::Conflict`] when the stored revision
/// is not the expected one, so a controller whose file was written by another controller (or
/// restored by hand) stops instead of overwriting it. The store remembers the identity of the
/// file it last wrote or read (device, inode, size, modification time): while the file is still
/// that one, its revision is known without reading it again, so a save costs one write and its
/// fsyncs; any other file there is read and its revision compared. The check and the write are
/// serialised within this process (clones of one `FileStore` share a lock), not across
/// processes: run one controller per file.
///
/// A corrupt file is never overwritten: loading and saving both fail with
/// [`BackendError::Integrity`], naming the file and what is wrong with it, until a person
/// moves it away. The blocking file system calls run on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Serialises the read-compare-write of `save` within this process, and holds what the
    /// store knows of the file.
    lock: Mutex<Known>,
}

/// The file as the store last wrote or read it.
#[derive(Debug, Default)]
struct Known {
    /// Its identity and the revision it held then.
    file: Option<(FileId, u64)>,
}

/// What tells one version of the file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    #[cfg(not(unix))]
    fn of(_: &std::fs::Metadata) -> Option<FileId> {
        None
    }
}

/// What the file holds, as written.
#[derive(Serialize)]
struct FileRef<'a> {
    revision: u64,
    journal: &'a Journal,
}

/// What the file holds, as read.
#[derive(Deserialize)]
struct FileOwned {
    revision: u64,
    journal: Journal,
}

/// Makes the names of temporary files unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileStore {
    /// A store in the file at `path` (created by the first save; its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.into(),
                lock: Mutex::new(Known::default()),
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self) -> Result<Option<Stored>, BackendError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut known = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            let (stored, id) = read_file_with_id(&inner.path)?;
            known.file = id.zip(stored.as_ref().map(|s| s.revision));
            Ok(stored)
        })
        .await
        .map_err(|e| {
            BackendError::Unavailable(format!(
                "reading state file {} did not finish: {e}",
                self.inner.path.display()
            ))
        })?
    }

    async fn save(&self, journal: &Journal, expected: Option<u64>) -> Result<u64, BackendError> {
        let path = &self.inner.path;
        let revision = match expected {
            None => 1,
            Some(r) => r.checked_add(1).ok_or_else(|| {
                BackendError::Invalid(format!("state file {}: revision overflow", path.display()))
            })?,
        };
        let bytes = serde_json::to_vec_pretty(&FileRef { revision, journal }).map_err(|e| {
            BackendError::Invalid(format!(
                "state file {}: cannot encode the journal: {e}",
                path.display()
            ))
        })?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no state behind it; go on.
            let mut known = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            let current = current_revision(&inner.path, &known)?;
            if current != expected {
                return Err(BackendError::Conflict(format!(
                    "state file {} is at {}, but {} was expected: another controller wrote it",
                    inner.path.display(),
                    describe(current),
                    describe(expected),
                )));
            }
            known.file = None;
            let id = write_atomically(&inner.path, &bytes)?;
            known.file = id.map(|id| (id, revision));
            Ok(revision)
        })
        .await
        .map_err(|e| {
            BackendError::Unavailable(format!(
                "writing state file {} did not finish: {e}",
                path.display()
            ))
        })?
    }
}

fn describe(revision: Option<u64>) -> String {
    match revision {
        Some(r) => format!("revision {r}"),
        None => "no revision (no file)".to_owned(),
    }
}

/// The revision the file holds now: the remembered one while the file is the one the store
/// last wrote or read, else read from it.
fn current_revision(path: &Path, known: &Known) -> Result<Option<u64>, BackendError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read state file", path, &e)),
        Ok(meta) => {
            if let (Some(now), Some((then, revision))) = (FileId::of(&meta), known.file)
                && now == then
            {
                return Ok(Some(revision));
            }
        }
    }
    Ok(read_file_with_id(path)?.0.map(|s| s.revision))
}

/// Reads and decodes the file, with its identity as read; `None` when it does not exist.
// The runtime is the one place in idns-core allowed to do I/O (see clippy.toml).
#[allow(clippy::disallowed_methods)]
fn read_file_with_id(path: &Path) -> Result<(Option<Stored>, Option<FileId>), BackendError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) => return Err(io_error("cannot read state file", path, &e)),
    };
    let mut bytes = Vec::new();
    let id = std::io::Read::read_to_end(&mut file, &mut bytes)
        .and_then(|_| file.metadata())
        .map_err(|e| io_error("cannot read state file", path, &e))
        .map(|meta| FileId::of(&meta))?;
    let file: FileOwned = serde_json::from_slice(&bytes).map_err(|e| {
        BackendError::Integrity(format!(
            "state file {} is corrupt ({e}); move it away to start from what the DNS publishes",
            path.display()
        ))
    })?;
    let stored = Stored {
        journal: file.journal,
        revision: file.revision,
    };
    Ok((Some(stored), id))
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory; returns the new file's identity. On failure the temporary file is
/// removed and `path` is untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<Option<FileId>, BackendError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_owned());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // A file of the same name can only be left by a crashed process that had our process id
    // (a container's controller is often process 1 on every start): overwrite it.
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()?;
            f.metadata()
        });
    let id = match written {
        Ok(meta) => FileId::of(&meta),
        Err(e) => {
            discard(&tmp);
            return Err(io_error("cannot write temporary state file", &tmp, &e));
        }
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        discard(&tmp);
        return Err(io_error(
            &format!("cannot rename {} over state file", tmp.display()),
            path,
            &e,
        ));
    }
    // The new journal is in place; only its durability across a power loss is in doubt, and
    // failing the save now would make the next one conflict with our own write.
    if let Err(e) = sync_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the state file's directory");
    }
    Ok(id)
}

fn discard(tmp: &Path) {
    if let Err(e) = std::fs::remove_file(tmp)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(file = %tmp.display(), error = %e, "cannot remove temporary state file");
    }
}

/// Makes a rename in `dir` durable.
// The runtime is the one place in idns-core allowed to do I/O (see clippy.toml).
#[allow(clippy::disallowed_methods)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        // Directories cannot be opened as files elsewhere; the rename is what there is.
        Ok(())
    }
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> BackendError {
    let msg = format!("{what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound => BackendError::NotFound(msg),
        io::ErrorKind::PermissionDenied => BackendError::Refused(msg),
        _ => BackendError::Unavailable(msg),
    }
}
