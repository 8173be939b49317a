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
/// Compare-and-swap: `save` reads the stored revision first and refuses with
/// [`BackendError::Conflict`] when it is not the expected one, so a controller whose file was
/// written by another controller (or restored by hand) stops instead of overwriting it. The
/// check and the write are serialised within this process (clones of one `FileStore` share a
/// lock), not across processes: run one controller per file.
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
    /// Serialises the read-compare-write of `save` within this process.
    lock: Mutex<()>,
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
                lock: Mutex::new(()),
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
        tokio::task::spawn_blocking(move || read_file(&inner.path))
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
            let _guard = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            let current = read_file(&inner.path)?.map(|s| s.revision);
            if current != expected {
                return Err(BackendError::Conflict(format!(
                    "state file {} is at {}, but {} was expected: another controller wrote it",
                    inner.path.display(),
                    describe(current),
                    describe(expected),
                )));
            }
            write_atomically(&inner.path, &bytes)?;
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

/// Reads and decodes the file; `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<Stored>, BackendError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read state file", path, &e)),
    };
    let file: FileOwned = serde_json::from_slice(&bytes).map_err(|e| {
        BackendError::Integrity(format!(
            "state file {} is corrupt ({e}); move it away to start from what the DNS publishes",
            path.display()
        ))
    })?;
    Ok(Some(Stored {
        journal: file.journal,
        revision: file.revision,
    }))
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory. On failure the temporary file is removed and `path` is untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
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
            f.sync_all()
        });
    if let Err(e) = written {
        discard(&tmp);
        return Err(io_error("cannot write temporary state file", &tmp, &e));
    }
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
    Ok(())
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
