//! One replication pass: scan the source's live copy, stage the changed chunks as a new
//! checkpoint, commit it with one rename, then apply it to the destination's base copy.
//!
//! Crash safety: nothing at the destination changes before the commit (the rename of the
//! staging directory), so a crash before it leaves the previous checkpoint untouched, and
//! recovery only deletes the staging directory. After the commit, the checkpoint holds every
//! changed chunk (`fwd/`), so a crash while applying it is finished by applying it again
//! (redo); the patches are deleted only once the base copy and the state file say it is done.
//! The old content of every changed chunk is kept in `rev/`, which is how the last
//! `keep` checkpoints stay restorable while only the newest is materialized.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use idns_core::{BackendError, ResourceId, SiteId};

use super::config::ResourceConfig;
use super::hash::{Cv, Old, chunk_cv, hash_file, scan};
use super::patch::{Patch, PatchWriter};
use super::store::{
    Base, Checkpoint, Entry, EntryKind, SiteState, SiteStore, key_id, mode_of, set_meta, sync_dirs,
    walk,
};
use crate::fsutil::{IoContext, SpecialBits, copy_tree, remove_tree, sync_dir};
use crate::progress::{Operation, Progress};

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassReport {
    /// The resource.
    pub resource: ResourceId,
    /// The site read.
    pub source: SiteId,
    /// The site written.
    pub destination: SiteId,
    /// The checkpoint made at the destination.
    pub checkpoint: u64,
    /// The point in time it holds (when the pass started reading).
    pub taken_at: SystemTime,
    /// Regular files in the consistency group.
    pub files: u64,
    /// Files read and hashed (the others were unchanged by size and modification time).
    pub files_hashed: u64,
    /// Files with at least one changed chunk, or new.
    pub files_changed: u64,
    /// Files removed at the source since the previous checkpoint.
    pub files_removed: u64,
    /// Bytes of all files.
    pub bytes_total: u64,
    /// Bytes read and hashed at the source.
    pub bytes_hashed: u64,
    /// Chunks of all files.
    pub chunks_total: u64,
    /// Chunks that differed from the destination's copy.
    pub chunks_changed: u64,
    /// Changed chunks that are all zeros (written as holes, no data moved).
    pub chunks_zero: u64,
    /// Bytes of changed chunks written to the destination.
    pub bytes_transferred: u64,
    /// The destination's copy was read and hashed too (the first pass after a reprotect).
    pub compared_both_sides: bool,
    /// How long the pass took.
    pub duration: Duration,
}

/// What a pass needs from its caller.
pub(crate) struct Env<'a> {
    pub cfg: &'a ResourceConfig,
    pub cancel: &'a (dyn Fn() -> bool + Sync),
    pub progress: &'a dyn Fn(Progress),
}

impl Env<'_> {
    fn check_cancel(&self) -> Result<(), BackendError> {
        if (self.cancel)() {
            Err(BackendError::Timeout("the operation was cancelled".into()))
        } else {
            Ok(())
        }
    }
}

/// Removes staging directories of interrupted passes and finishes committed checkpoints that
/// were not fully applied.
pub(crate) fn recover(
    dst: &SiteStore,
    state: &mut SiteState,
    env: &Env<'_>,
) -> Result<(), BackendError> {
    for s in dst.stale_staging()? {
        tracing::warn!(site = %dst.site, staging = %s.display(), "removing the staging directory of an interrupted pass");
        remove_tree(&s).ctx(s.display())?;
    }
    if state.role != super::store::StoredRole::Replica {
        return Ok(());
    }
    let applied = match state.base {
        Base::Checkpoint { seq } => seq,
        _ => 0,
    };
    for seq in dst.committed()? {
        if seq > applied && dst.checkpoint_dir(seq).join("fwd").exists() {
            tracing::warn!(site = %dst.site, checkpoint = seq, "finishing a committed checkpoint that was not fully applied");
            apply(dst, state, seq, env)?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    files: u64,
    hashed: u64,
    changed: u64,
    bytes_total: u64,
    bytes_hashed: u64,
    chunks_total: u64,
    chunks_changed: u64,
    chunks_zero: u64,
    transferred: u64,
}

/// Runs one pass from `src`'s live copy to `dst`.
pub(crate) fn pass(
    src: &SiteStore,
    dst: &SiteStore,
    dst_state: &mut SiteState,
    env: &Env<'_>,
) -> Result<PassReport, BackendError> {
    let started = Instant::now();
    recover(dst, dst_state, env)?;
    let seq = dst.committed()?.last().map_or(1, |s| s + 1);
    let prev = match dst_state.base {
        Base::Checkpoint { seq } => Some((seq, dst.load_checkpoint(seq)?)),
        _ => None,
    };
    let adopted = dst_state.base == Base::Adopted;
    let staging = dst.staging_dir(seq);
    for sub in ["chunks", "fwd", "rev", "new"] {
        fs::create_dir_all(staging.join(sub)).ctx(staging.display())?;
    }
    let taken_at = SystemTime::now();
    let found = walk(&src.live)?;
    let bytes_total: u64 = found
        .iter()
        .filter(|f| f.meta.is_file())
        .map(|f| f.meta.len())
        .sum();
    let mut counts = Counts {
        bytes_total,
        ..Counts::default()
    };
    let mut entries = BTreeMap::new();
    let mut writer = Throttle::new(env.cfg.max_bytes_per_sec);
    tracing::info!(resource = %env.cfg.id, from = %src.site, to = %dst.site, checkpoint = seq, files = found.len(), bytes = bytes_total, "pass started");
    for f in &found {
        env.check_cancel()?;
        let mtime = f.meta.modified().ctx(f.path.display())?;
        let ft = f.meta.file_type();
        let entry = if ft.is_dir() {
            Entry {
                kind: EntryKind::Dir,
                size: 0,
                blake3: None,
                target: None,
                mode: mode_of(&f.meta),
                mtime,
                uid: Some(f.meta.uid()),
                gid: Some(f.meta.gid()),
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&f.path).ctx(f.path.display())?;
            Entry {
                kind: EntryKind::Symlink,
                size: 0,
                blake3: None,
                target: Some(target.to_string_lossy().into_owned()),
                mode: 0o777,
                mtime,
                uid: Some(f.meta.uid()),
                gid: Some(f.meta.gid()),
            }
        } else {
            counts.files += 1;
            let prev_file = prev.as_ref().and_then(|(pseq, cp)| {
                cp.entries
                    .get(&f.key)
                    .filter(|e| e.kind == EntryKind::File)
                    .map(|e| (*pseq, e))
            });
            stage_file(
                &f.key,
                &f.path,
                dst,
                &staging,
                prev_file,
                adopted,
                env,
                &mut counts,
                &mut writer,
            )?
        };
        entries.insert(f.key.clone(), entry);
    }
    let files_removed = prev.as_ref().map_or(0, |(_, cp)| {
        cp.entries
            .iter()
            .filter(|(k, e)| e.kind == EntryKind::File && !entries.contains_key(*k))
            .count() as u64
    });
    let checkpoint = Checkpoint {
        seq,
        taken_at,
        source: src.site.clone(),
        chunk_size: env.cfg.chunk_size,
        previous: prev.as_ref().map(|(p, _)| *p).filter(|_| env.cfg.keep > 1),
        entries,
    };
    let json = serde_json::to_vec_pretty(&checkpoint)
        .map_err(|e| BackendError::Invalid(format!("checkpoint does not serialize: {e}")))?;
    write_synced(&staging.join("checkpoint.json"), &json)?;
    sync_dirs(
        ["chunks", "fwd", "rev", "new"]
            .iter()
            .map(|s| staging.join(s))
            .collect::<Vec<_>>()
            .iter()
            .map(PathBuf::as_path)
            .chain([staging.as_path()]),
    )
    .ctx(staging.display())?;
    env.check_cancel()?;
    // The commit: one rename makes the checkpoint complete.
    let dir = dst.checkpoint_dir(seq);
    fs::rename(&staging, &dir).ctx(dir.display())?;
    sync_dir(&dst.checkpoints()).ctx(dst.checkpoints().display())?;
    tracing::info!(resource = %env.cfg.id, site = %dst.site, checkpoint = seq, "checkpoint committed");
    #[cfg(test)]
    if STOP_AFTER_COMMIT.with(std::cell::Cell::get) {
        return Err(BackendError::Unavailable(
            "stopped after the commit (test)".into(),
        ));
    }
    apply(dst, dst_state, seq, env)?;
    prune(dst, env.cfg.keep)?;
    let report = PassReport {
        resource: env.cfg.id.clone(),
        source: src.site.clone(),
        destination: dst.site.clone(),
        checkpoint: seq,
        taken_at,
        files: counts.files,
        files_hashed: counts.hashed,
        files_changed: counts.changed,
        files_removed,
        bytes_total: counts.bytes_total,
        bytes_hashed: counts.bytes_hashed,
        chunks_total: counts.chunks_total,
        chunks_changed: counts.chunks_changed,
        chunks_zero: counts.chunks_zero,
        bytes_transferred: counts.transferred,
        compared_both_sides: adopted,
        duration: started.elapsed(),
    };
    tracing::info!(
        resource = %report.resource, from = %report.source, to = %report.destination,
        checkpoint = seq, changed_chunks = report.chunks_changed, of = report.chunks_total,
        bytes = report.bytes_transferred, took = ?report.duration, "pass finished"
    );
    Ok(report)
}

#[cfg(test)]
thread_local! {
    /// Makes [`pass`] stop between the commit and the apply, as a crash there would.
    pub(crate) static STOP_AFTER_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct Throttle {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Self {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn wrote(&mut self, n: u64, cancel: &dyn Fn() -> bool) {
        let Some(rate) = self.rate else { return };
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        while self.start.elapsed() < due && !cancel() {
            std::thread::sleep((due - self.start.elapsed()).min(Duration::from_millis(50)));
        }
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), BackendError> {
    let mut f = File::create(path).ctx(path.display())?;
    f.write_all(data).ctx(path.display())?;
    f.sync_all().ctx(path.display())
}

/// Stages one regular file: its chunk list, and the patches to and from the base copy.
#[allow(clippy::too_many_arguments)]
fn stage_file(
    key: &str,
    path: &Path,
    dst: &SiteStore,
    staging: &Path,
    prev: Option<(u64, &Entry)>,
    adopted: bool,
    env: &Env<'_>,
    counts: &mut Counts,
    throttle: &mut Throttle,
) -> Result<Entry, BackendError> {
    let cfg = env.cfg;
    let chunk = cfg.chunk_size;
    let id = key_id(key);
    let cv_path = staging.join("chunks").join(format!("{id}.cv"));
    let fwd_path = staging.join("fwd").join(format!("{id}.patch"));
    let rev_path = staging.join("rev").join(format!("{id}.patch"));
    let base_path = dst.base().join(key);

    for attempt in 1..=3 {
        let file = File::open(path).ctx(path.display())?;
        let before = file.metadata().ctx(path.display())?;
        let size = before.len();
        let mtime = before.modified().ctx(path.display())?;
        counts.chunks_total += size.div_ceil(chunk);

        // Quick check: same size and modification time as the previous checkpoint.
        if let Some((pseq, pe)) = prev
            && cfg.trust_mtime
            && pe.size == size
            && pe.mtime == mtime
            && base_path.is_file()
        {
            let old = dst
                .checkpoint_dir(pseq)
                .join("chunks")
                .join(format!("{id}.cv"));
            if fs::hard_link(&old, &cv_path).is_err() {
                fs::copy(&old, &cv_path).ctx(old.display())?;
            }
            return Ok(Entry {
                kind: EntryKind::File,
                size,
                blake3: pe.blake3.clone(),
                target: None,
                mode: mode_of(&before),
                mtime,
                uid: Some(before.uid()),
                gid: Some(before.gid()),
            });
        }

        // The old side: the previous checkpoint's chunk hashes, or (after a reprotect) the
        // base file itself, hashed alongside.
        let base_file = File::open(&base_path).ok().filter(|_| base_path.is_file());
        let old_size = base_file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        let old_cvs;
        let old = match (&base_file, prev, adopted) {
            (Some(bf), _, true) => Old::File(bf, old_size),
            (Some(_), Some((pseq, pe)), false) if pe.size == old_size => {
                old_cvs = dst.load_cvs(pseq, key)?;
                Old::Cvs(&old_cvs)
            }
            _ => Old::None,
        };
        let has_old = !matches!(old, Old::None);
        if !has_old {
            // A new file: written straight into the staging directory (holes kept) and
            // renamed into place by the apply, so its bytes are written once.
            let new_path = staging.join("new").join(&id);
            let out = File::create(&new_path).ctx(new_path.display())?;
            out.set_len(size).ctx(new_path.display())?;
            let mut changed = 0u64;
            let mut zero = 0u64;
            let mut moved = 0u64;
            let mut last_report = 0u64;
            let total_before = counts.bytes_hashed;
            let scanned = scan(
                &file,
                size,
                chunk,
                cfg.threads,
                &old,
                env.cancel,
                &mut |c| {
                    let done = (c.index + 1) * chunk;
                    if done - last_report >= (64 << 20) || done >= size {
                        last_report = done;
                        (env.progress)(Progress {
                            resource: cfg.id.clone(),
                            site: dst.site.clone(),
                            operation: Operation::Pass,
                            file: Some(key.to_owned()),
                            bytes_done: total_before + done.min(size),
                            bytes_total: counts.bytes_total,
                        });
                    }
                    changed += 1;
                    if crate::fsutil::is_zero(c.data) {
                        zero += 1;
                    } else {
                        out.write_all_at(c.data, c.index * chunk)?;
                        moved += c.data.len() as u64;
                        throttle.wrote(c.data.len() as u64, env.cancel);
                    }
                    Ok(())
                },
            )
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    BackendError::Timeout("the pass was cancelled".into())
                } else {
                    crate::fsutil::io_err(path.display(), &e)
                }
            })?;
            let after = fs::metadata(path).ctx(path.display())?;
            if after.len() != size || after.modified().ok() != Some(mtime) {
                tracing::warn!(file = %path.display(), attempt, "file changed while it was read; reading it again");
                counts.chunks_total -= size.div_ceil(chunk);
                continue;
            }
            out.sync_all().ctx(new_path.display())?;
            counts.hashed += 1;
            counts.bytes_hashed += size;
            counts.chunks_changed += changed;
            counts.chunks_zero += zero;
            counts.transferred += moved;
            counts.changed += 1;
            let cvs: Vec<u8> = scanned
                .cvs
                .iter()
                .flat_map(|c: &Cv| c.iter().copied())
                .collect();
            write_synced(&cv_path, &cvs)?;
            return Ok(Entry {
                kind: EntryKind::File,
                size,
                blake3: Some(scanned.root.to_hex().to_string()),
                target: None,
                mode: mode_of(&before),
                mtime,
                uid: Some(before.uid()),
                gid: Some(before.gid()),
            });
        }
        let keep_history = cfg.keep > 1 && has_old;
        let mut fwd = PatchWriter::create(&fwd_path).ctx(fwd_path.display())?;
        let mut rev = if keep_history {
            Some(PatchWriter::create(&rev_path).ctx(rev_path.display())?)
        } else {
            None
        };
        let mut changed = 0u64;
        let mut zero = 0u64;
        let mut moved = 0u64;
        let mut old_buf = Vec::new();
        let mut last_report = 0u64;
        let total_before = counts.bytes_hashed;
        let scanned = scan(
            &file,
            size,
            chunk,
            cfg.threads,
            &old,
            env.cancel,
            &mut |c| {
                let done = (c.index + 1) * chunk;
                if done - last_report >= (64 << 20) || done >= size {
                    last_report = done;
                    (env.progress)(Progress {
                        resource: cfg.id.clone(),
                        site: dst.site.clone(),
                        operation: Operation::Pass,
                        file: Some(key.to_owned()),
                        bytes_done: total_before + done.min(size),
                        bytes_total: counts.bytes_total,
                    });
                }
                if c.old_cv == Some(c.cv) {
                    return Ok(());
                }
                changed += 1;
                let n = fwd.add(c.index, c.data, c.cv)?;
                if n == 0 {
                    zero += 1;
                }
                moved += n;
                throttle.wrote(n, env.cancel);
                if let Some(rev) = rev.as_mut() {
                    let off = c.index * chunk;
                    if off < old_size {
                        let data = match c.old_data {
                            Some(d) => d,
                            None => {
                                old_buf.resize((old_size - off).min(chunk) as usize, 0);
                                if let Some(bf) = &base_file {
                                    bf.read_exact_at(&mut old_buf, off)?;
                                }
                                old_buf.as_slice()
                            }
                        };
                        rev.add(c.index, data, chunk_cv(off, data))?;
                    }
                }
                Ok(())
            },
        )
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::Interrupted {
                BackendError::Timeout("the pass was cancelled".into())
            } else {
                crate::fsutil::io_err(path.display(), &e)
            }
        })?;
        // Chunks past the new end: their old content goes to the reverse patch.
        if let (Some(rev), Some(bf)) = (rev.as_mut(), &base_file) {
            let first_gone = size.div_ceil(chunk);
            for idx in first_gone..old_size.div_ceil(chunk) {
                let off = idx * chunk;
                old_buf.resize((old_size - off).min(chunk) as usize, 0);
                bf.read_exact_at(&mut old_buf, off)
                    .ctx(base_path.display())?;
                rev.add(idx, &old_buf, chunk_cv(off, &old_buf))
                    .ctx(rev_path.display())?;
            }
        }
        let after = fs::metadata(path).ctx(path.display())?;
        if after.len() != size || after.modified().ok() != Some(mtime) {
            tracing::warn!(file = %path.display(), attempt, "file changed while it was read; reading it again");
            counts.chunks_total -= size.div_ceil(chunk);
            continue;
        }
        counts.hashed += 1;
        counts.bytes_hashed += size;
        counts.chunks_changed += changed;
        counts.chunks_zero += zero;
        counts.transferred += moved;
        if changed > 0 || !has_old || old_size != size {
            counts.changed += 1;
            fwd.finish(size, chunk).ctx(fwd_path.display())?;
        } else {
            drop(fwd);
            fs::remove_file(&fwd_path).ctx(fwd_path.display())?;
        }
        match rev {
            Some(rev) if rev.len() > 0 || old_size != size => {
                rev.finish(old_size, chunk).ctx(rev_path.display())?
            }
            Some(rev) => {
                drop(rev);
                fs::remove_file(&rev_path).ctx(rev_path.display())?;
            }
            None => {}
        }
        let cvs: Vec<u8> = scanned
            .cvs
            .iter()
            .flat_map(|c: &Cv| c.iter().copied())
            .collect();
        write_synced(&cv_path, &cvs)?;
        return Ok(Entry {
            kind: EntryKind::File,
            size,
            blake3: Some(scanned.root.to_hex().to_string()),
            target: None,
            mode: mode_of(&before),
            mtime,
            uid: Some(before.uid()),
            gid: Some(before.gid()),
        });
    }
    Err(BackendError::Unavailable(format!(
        "{} kept changing while it was read (3 attempts); quiesce the application or retry",
        path.display()
    )))
}

/// Applies committed checkpoint `seq` to the destination's base copy (idempotent: a crash
/// in the middle is finished by running it again).
pub(crate) fn apply(
    dst: &SiteStore,
    state: &mut SiteState,
    seq: u64,
    env: &Env<'_>,
) -> Result<(), BackendError> {
    let cp = dst.load_checkpoint(seq)?;
    let dir = dst.checkpoint_dir(seq);
    let base = dst.base();
    fs::create_dir_all(&base).ctx(base.display())?;
    let keep_removed = env.cfg.keep > 1;
    let special = SpecialBits::from_setting(env.cfg.preserve_special_bits);

    // What the checkpoint no longer has moves to rev/removed (or goes, with keep = 1).
    let mut gone: Vec<String> = Vec::new();
    for f in walk(&base)? {
        if gone.iter().any(|g| f.key.starts_with(&format!("{g}/"))) {
            continue;
        }
        let kind = if f.meta.is_dir() {
            EntryKind::Dir
        } else if f.meta.file_type().is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::File
        };
        if cp.entries.get(&f.key).is_some_and(|e| e.kind == kind) {
            continue;
        }
        if keep_removed {
            let to = dir.join("rev").join("removed").join(&f.key);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).ctx(parent.display())?;
            }
            fs::rename(&f.path, &to).ctx(f.path.display())?;
        } else if kind == EntryKind::Dir {
            remove_tree(&f.path).ctx(f.path.display())?;
        } else {
            fs::remove_file(&f.path).ctx(f.path.display())?;
        }
        gone.push(f.key.clone());
    }

    let mut dirs: Vec<(PathBuf, &Entry)> = Vec::new();
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    touched.insert(base.clone());
    for (key, e) in &cp.entries {
        let path = base.join(key);
        if let Some(parent) = path.parent() {
            touched.insert(parent.to_owned());
        }
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&path).ctx(path.display())?;
                dirs.push((path, e));
            }
            EntryKind::Symlink => {
                let target = e.target.clone().unwrap_or_default();
                if fs::symlink_metadata(&path).is_ok() {
                    fs::remove_file(&path).ctx(path.display())?;
                }
                std::os::unix::fs::symlink(&target, &path).ctx(path.display())?;
            }
            EntryKind::File => {
                let patch = dir.join("fwd").join(format!("{}.patch", key_id(key)));
                let whole = dir.join("new").join(key_id(key));
                if whole.exists() {
                    fs::rename(&whole, &path).ctx(path.display())?;
                } else if patch.exists() {
                    let target = crate::fsutil::open_or_create(&path).ctx(path.display())?;
                    Patch::open(&patch)
                        .and_then(|p| p.apply(&target))
                        .map_err(|err| {
                            BackendError::Integrity(format!(
                                "applying checkpoint {seq} to {}: {err}",
                                path.display()
                            ))
                        })?;
                    target.sync_all().ctx(path.display())?;
                } else if !path.is_file() {
                    if e.size != 0 {
                        return Err(BackendError::Integrity(format!(
                            "{} is missing from the base copy and checkpoint {seq} has no patch for it; run a Check",
                            path.display()
                        )));
                    }
                    File::create(&path).ctx(path.display())?;
                }
                set_meta(&path, e, special).ctx(path.display())?;
            }
        }
    }
    for (path, e) in dirs.iter().rev() {
        set_meta(path, e, special).ctx(path.display())?;
        touched.insert(path.clone());
    }
    sync_dirs(touched.iter().map(PathBuf::as_path)).ctx(base.display())?;
    state.base = Base::Checkpoint { seq };
    state.checkpoint_at = Some(cp.taken_at);
    dst.save_state(state)?;
    remove_tree(&dir.join("new")).ctx(dir.display())?;
    remove_tree(&dir.join("fwd")).ctx(dir.display())?;
    Ok(())
}

/// Keeps the newest `keep` checkpoints.
pub(crate) fn prune(dst: &SiteStore, keep: usize) -> Result<(), BackendError> {
    let committed = dst.committed()?;
    if committed.len() <= keep {
        return Ok(());
    }
    let cut = committed.len() - keep;
    for seq in &committed[..cut] {
        let d = dst.checkpoint_dir(*seq);
        tracing::debug!(site = %dst.site, checkpoint = seq, "pruning an old checkpoint");
        remove_tree(&d).ctx(d.display())?;
    }
    // The oldest kept checkpoint's way back leads to a pruned one.
    let oldest = dst.checkpoint_dir(committed[cut]);
    remove_tree(&oldest.join("rev")).ctx(oldest.display())
}

/// Materializes checkpoint `seq` into `out` (which must not exist): a copy of the base copy,
/// walked back through the reverse deltas of every newer checkpoint.
pub(crate) fn materialize(
    dst: &SiteStore,
    state: &SiteState,
    seq: u64,
    out: &Path,
    env: &Env<'_>,
) -> Result<(), BackendError> {
    let Base::Checkpoint { seq: newest } = state.base else {
        return Err(BackendError::Refused(format!(
            "site {} holds no materialized checkpoint",
            dst.site
        )));
    };
    if seq > newest {
        return Err(BackendError::NotFound(format!(
            "checkpoint {seq} at {}",
            dst.site
        )));
    }
    if out.exists() {
        return Err(BackendError::Invalid(format!(
            "{} already exists",
            out.display()
        )));
    }
    // Check the chain first, so nothing is copied for a checkpoint that cannot be reached.
    let mut chain = Vec::new();
    let mut cur = newest;
    while cur > seq {
        let cp = dst.load_checkpoint(cur)?;
        let Some(prev) = cp
            .previous
            .filter(|_| dst.checkpoint_dir(cur).join("rev").exists())
        else {
            return Err(BackendError::NotFound(format!(
                "checkpoint {seq} at {} is no longer kept (history reaches back to {cur})",
                dst.site
            )));
        };
        chain.push((cur, cp));
        cur = prev;
    }
    if cur != seq {
        return Err(BackendError::NotFound(format!(
            "checkpoint {seq} at {}",
            dst.site
        )));
    }
    let special = SpecialBits::from_setting(env.cfg.preserve_special_bits);
    copy_tree(&dst.base(), out, special, env.cancel).ctx(out.display())?;
    for (cur, cp) in chain {
        let prev = dst.load_checkpoint(cp.previous.unwrap_or(0))?;
        let rev = dst.checkpoint_dir(cur).join("rev");
        // Remove what the older checkpoint did not have (children first).
        for (key, e) in cp.entries.iter().rev() {
            if prev.entries.get(key).is_some_and(|p| p.kind == e.kind) {
                continue;
            }
            let p = out.join(key);
            if e.kind == EntryKind::Dir {
                remove_tree(&p).ctx(p.display())?;
            } else if fs::symlink_metadata(&p).is_ok() {
                fs::remove_file(&p).ctx(p.display())?;
            }
        }
        for (key, e) in &prev.entries {
            let p = out.join(key);
            match e.kind {
                EntryKind::Dir => fs::create_dir_all(&p).ctx(p.display())?,
                EntryKind::Symlink => {
                    if fs::symlink_metadata(&p).is_err() {
                        std::os::unix::fs::symlink(e.target.clone().unwrap_or_default(), &p)
                            .ctx(p.display())?;
                    }
                }
                EntryKind::File => {
                    let removed = rev.join("removed").join(key);
                    let patch = rev.join(format!("{}.patch", key_id(key)));
                    if removed.is_file() {
                        crate::fsutil::sparse_copy(&removed, &p, env.cancel).ctx(p.display())?;
                    } else if patch.exists() {
                        let f = crate::fsutil::open_or_create(&p).ctx(p.display())?;
                        Patch::open(&patch)
                            .and_then(|x| x.apply(&f))
                            .map_err(|err| {
                                BackendError::Integrity(format!("{}: {err}", patch.display()))
                            })?;
                    }
                    set_meta(&p, e, special).ctx(p.display())?;
                }
            }
        }
        for (key, e) in prev.entries.iter().rev() {
            if e.kind == EntryKind::Dir {
                let p = out.join(key);
                set_meta(&p, e, special).ctx(p.display())?;
            }
        }
    }
    Ok(())
}

/// Hashes every regular file under `root` into an idns manifest.
pub(crate) fn manifest_of_tree(
    root: &Path,
    cfg: &ResourceConfig,
    site: &SiteId,
    env: &Env<'_>,
    filter: &dyn Fn(&str, &fs::Metadata) -> bool,
) -> Result<idns_core::Manifest, BackendError> {
    let mut m = idns_core::Manifest::default();
    let found = walk(root)?;
    let total: u64 = found
        .iter()
        .filter(|f| f.meta.is_file())
        .map(|f| f.meta.len())
        .sum();
    let mut done = 0;
    for f in found {
        if !f.meta.is_file() || !filter(&f.key, &f.meta) {
            continue;
        }
        env.check_cancel()?;
        m.entries
            .insert(f.key.clone(), manifest_entry(&f.path, cfg)?);
        done += f.meta.len();
        (env.progress)(Progress {
            resource: cfg.id.clone(),
            site: site.clone(),
            operation: Operation::Check,
            file: Some(f.key),
            bytes_done: done,
            bytes_total: total,
        });
    }
    Ok(m)
}

/// One file's manifest entry (size, blake3, modification time).
pub(crate) fn manifest_entry(
    path: &Path,
    cfg: &ResourceConfig,
) -> Result<idns_core::ManifestEntry, BackendError> {
    let file = File::open(path).ctx(path.display())?;
    let meta = file.metadata().ctx(path.display())?;
    let hash =
        hash_file(&file, meta.len(), cfg.chunk_size, cfg.threads, &|| false).ctx(path.display())?;
    Ok(idns_core::ManifestEntry {
        size: meta.len(),
        checksum: hash.to_hex().to_string(),
        modified: meta.modified().ok(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::config::ImageConfig;
    use crate::image::store::StoredRole;

    #[test]
    fn a_crash_between_commit_and_apply_is_finished_by_redo() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let cfg = ImageConfig::two_sites("r", ("a", &a), ("b", &b)).unwrap();
        let rc = &cfg.resources[0];
        let src = SiteStore::new(&rc.sites[0]);
        let dst = SiteStore::new(&rc.sites[1]);
        fs::create_dir_all(&src.live).unwrap();
        fs::create_dir_all(&dst.root).unwrap();
        let mut state = SiteState::new(rc.id.clone(), dst.site.clone(), StoredRole::Replica);
        let env = Env {
            cfg: rc,
            cancel: &|| false,
            progress: &|_| {},
        };
        let v1: Vec<u8> = (0..(300u32 << 10)).map(|i| (i % 251) as u8).collect();
        fs::write(src.live.join("disk"), &v1).unwrap();
        fs::write(src.live.join("old"), "goes away").unwrap();
        pass(&src, &dst, &mut state, &env).unwrap();
        let mut v2 = v1.clone();
        v2[70_000] ^= 0xff;
        v2.truncate(200 << 10);
        fs::write(src.live.join("disk"), &v2).unwrap();
        fs::remove_file(src.live.join("old")).unwrap();
        fs::write(src.live.join("new"), "arrives").unwrap();

        STOP_AFTER_COMMIT.with(|c| c.set(true));
        assert!(pass(&src, &dst, &mut state, &env).is_err());
        STOP_AFTER_COMMIT.with(|c| c.set(false));
        // Committed but not applied: the base still holds checkpoint 1.
        assert_eq!(dst.committed().unwrap(), [1, 2]);
        assert!(dst.checkpoint_dir(2).join("fwd").exists());
        assert!(fs::read(dst.base().join("disk")).unwrap() == v1);
        // A torn write from the interrupted apply, inside the chunk the patch rewrites.
        let f = File::options()
            .write(true)
            .open(dst.base().join("disk"))
            .unwrap();
        f.write_all_at(b"torn", 70_000).unwrap();
        drop(f);

        let mut state = dst.load_state().unwrap().unwrap();
        assert_eq!(state.base, Base::Checkpoint { seq: 1 });
        recover(&dst, &mut state, &env).unwrap();
        assert_eq!(state.base, Base::Checkpoint { seq: 2 });
        assert!(fs::read(dst.base().join("disk")).unwrap() == v2);
        assert_eq!(fs::read(dst.base().join("new")).unwrap(), b"arrives");
        assert!(!dst.base().join("old").exists());
        assert!(!dst.checkpoint_dir(2).join("fwd").exists());
        // Checkpoint 1 is still restorable, including the removed file.
        let out = dir.path().join("cp1");
        materialize(&dst, &state, 1, &out, &env).unwrap();
        assert_eq!(fs::read(out.join("old")).unwrap(), b"goes away");
        assert!(!out.join("new").exists());
    }
}
