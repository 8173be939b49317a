//! Chunk hashing: every chunk's blake3 chaining value and the file's blake3 hash from one read.
//!
//! A chunk is an aligned blake3 subtree (its size is a power of two of at least 1 KiB), so its
//! chaining value is computed on its own and the chaining values merge into the whole file's
//! ordinary blake3 hash (the one `b3sum` prints). One pass over the data therefore yields both
//! the per-chunk hashes that the delta needs and the file checksum that the manifest holds.
//! Chunks are read and hashed on several threads; the caller sees them in order.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// A chunk's chaining value.
pub(crate) type Cv = [u8; 32];

/// The chaining value of the chunk starting at `offset` (a multiple of the chunk size).
/// With `offset == 0` and a single-chunk file, also the file's root hash.
pub(crate) fn chunk_cv(offset: u64, data: &[u8]) -> Cv {
    if data.is_empty() {
        return [0; 32];
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// The blake3 hash of a file of `size` bytes from its chunks' chaining values. `single` is
/// the root hash when the file is one chunk (a lone chunk has no parent to merge into).
pub(crate) fn root_hash(
    cvs: &[Cv],
    size: u64,
    chunk: u64,
    single: Option<blake3::Hash>,
) -> blake3::Hash {
    match cvs.len() {
        0 => blake3::hash(b""),
        1 => single.unwrap_or_else(|| blake3::hash(b"")),
        _ => {
            let left = left_subtree_len(size);
            let k = (left / chunk) as usize;
            let l = merge(&cvs[..k], left, chunk);
            let r = merge(&cvs[k..], size - left, chunk);
            merge_subtrees_root(&l, &r, Mode::Hash)
        }
    }
}

fn merge(cvs: &[Cv], len: u64, chunk: u64) -> Cv {
    if cvs.len() <= 1 {
        return cvs.first().copied().unwrap_or([0; 32]);
    }
    let left = left_subtree_len(len);
    let k = (left / chunk) as usize;
    let l = merge(&cvs[..k], left, chunk);
    let r = merge(&cvs[k..], len - left, chunk);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// What is known about the old version of a file while the new one is scanned.
pub(crate) enum Old<'a> {
    /// No old version.
    None,
    /// The old chunks' chaining values (from the previous checkpoint).
    Cvs(&'a [Cv]),
    /// The old file itself, of this size: read and hashed alongside (both sides compared).
    File(&'a File, u64),
}

/// One chunk as the scan hands it to the caller.
pub(crate) struct ChunkSeen<'a> {
    /// Index of the chunk.
    pub index: u64,
    /// Its data in the new file.
    pub data: &'a [u8],
    /// Its chaining value in the new file.
    pub cv: Cv,
    /// Its chaining value in the old file, where the old file has this chunk.
    pub old_cv: Option<Cv>,
    /// Its data in the old file, when the old file is read ([`Old::File`]).
    pub old_data: Option<&'a [u8]>,
}

/// The result of scanning a file.
pub(crate) struct Scanned {
    /// Chaining value of every chunk.
    pub cvs: Vec<Cv>,
    /// The file's blake3 hash.
    pub root: blake3::Hash,
}

/// Chunks per segment that one thread reads and hashes at a time (the segment is at least
/// 8 MiB).
fn chunks_per_segment(chunk: u64) -> u64 {
    ((8u64 << 20) / chunk).max(1)
}

struct Segment {
    first: u64,
    data: Vec<u8>,
    old: Vec<u8>,
    cvs: Vec<Cv>,
    old_cvs: Vec<Option<Cv>>,
    single: Option<blake3::Hash>,
}

/// Reads `file` (`size` bytes) chunk by chunk on `threads` threads and calls `visit` for
/// every chunk in order. `cancel` is polled between segments.
pub(crate) fn scan(
    file: &File,
    size: u64,
    chunk: u64,
    threads: usize,
    old: &Old<'_>,
    cancel: &dyn Fn() -> bool,
    visit: &mut dyn FnMut(ChunkSeen<'_>) -> io::Result<()>,
) -> io::Result<Scanned> {
    let n_chunks = size.div_ceil(chunk);
    let per_seg = chunks_per_segment(chunk);
    let seg_bytes = per_seg * chunk;
    let threads = threads.max(1);
    let mut cvs = Vec::with_capacity(n_chunks as usize);
    let mut single = None;
    let mut segs: Vec<Segment> = (0..threads)
        .map(|_| Segment {
            first: 0,
            data: Vec::new(),
            old: Vec::new(),
            cvs: Vec::new(),
            old_cvs: Vec::new(),
            single: None,
        })
        .collect();
    let mut next_chunk = 0u64;
    while next_chunk < n_chunks {
        if cancel() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let mut active = 0;
        for seg in segs.iter_mut() {
            if next_chunk >= n_chunks {
                break;
            }
            seg.first = next_chunk;
            next_chunk = (next_chunk + per_seg).min(n_chunks);
            active += 1;
        }
        let results: Vec<io::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = segs[..active]
                .iter_mut()
                .map(|seg| s.spawn(|| fill(seg, file, size, chunk, seg_bytes, old)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a hashing thread panicked")))
                })
                .collect()
        });
        for r in results {
            r?;
        }
        for seg in &segs[..active] {
            if seg.first == 0 {
                single = seg.single;
            }
            for (i, cv) in seg.cvs.iter().enumerate() {
                let index = seg.first + i as u64;
                let start = i * chunk as usize;
                let end = (start + chunk as usize).min(seg.data.len());
                let old_data = match old {
                    Old::File(_, old_size) => {
                        let off = index * chunk;
                        if off < *old_size {
                            let oend = (start + chunk as usize).min(seg.old.len());
                            Some(&seg.old[start.min(oend)..oend])
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                visit(ChunkSeen {
                    index,
                    data: &seg.data[start..end],
                    cv: *cv,
                    old_cv: seg.old_cvs[i],
                    old_data,
                })?;
                cvs.push(*cv);
            }
        }
    }
    let root = root_hash(&cvs, size, chunk, single);
    Ok(Scanned { cvs, root })
}

fn fill(
    seg: &mut Segment,
    file: &File,
    size: u64,
    chunk: u64,
    seg_bytes: u64,
    old: &Old<'_>,
) -> io::Result<()> {
    let start = seg.first * chunk;
    let len = seg_bytes.min(size - start) as usize;
    seg.data.resize(len, 0);
    file.read_exact_at(&mut seg.data, start)?;
    seg.cvs.clear();
    seg.old_cvs.clear();
    seg.single = None;
    for (i, data) in seg.data.chunks(chunk as usize).enumerate() {
        let off = start + (i as u64) * chunk;
        let mut h = blake3::Hasher::new();
        h.set_input_offset(off);
        h.update(data);
        seg.cvs.push(h.finalize_non_root());
        if off == 0 && size <= chunk {
            seg.single = Some(h.finalize());
        }
    }
    match old {
        Old::None => seg.old_cvs.extend(std::iter::repeat_n(None, seg.cvs.len())),
        Old::Cvs(list) => {
            for i in 0..seg.cvs.len() {
                seg.old_cvs.push(list.get(seg.first as usize + i).copied());
            }
        }
        Old::File(f, old_size) => {
            let olen = if start < *old_size {
                (*old_size - start).min(seg_bytes) as usize
            } else {
                0
            };
            seg.old.resize(olen, 0);
            f.read_exact_at(&mut seg.old, start)?;
            for i in 0..seg.cvs.len() {
                let s = i * chunk as usize;
                if s < olen {
                    let e = (s + chunk as usize).min(olen);
                    seg.old_cvs
                        .push(Some(chunk_cv(start + s as u64, &seg.old[s..e])));
                } else {
                    seg.old_cvs.push(None);
                }
            }
        }
    }
    Ok(())
}

/// Hashes a whole file (its blake3 hash), on `threads` threads.
pub(crate) fn hash_file(
    file: &File,
    size: u64,
    chunk: u64,
    threads: usize,
    cancel: &dyn Fn() -> bool,
) -> io::Result<blake3::Hash> {
    Ok(
        scan(file, size, chunk, threads, &Old::None, cancel, &mut |_| {
            Ok(())
        })?
        .root,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn root_matches_plain_blake3_for_many_sizes() {
        let chunk = 4096u64;
        for len in [
            0usize, 1, 1023, 1024, 4095, 4096, 4097, 8192, 12288, 12289, 40000, 65536, 100_000,
        ] {
            let d = data(len);
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&d).unwrap();
            for threads in [1, 3] {
                let h = hash_file(&f, len as u64, chunk, threads, &|| false).unwrap();
                assert_eq!(h, blake3::hash(&d), "len {len}, threads {threads}");
            }
        }
    }

    #[test]
    fn scan_reports_old_cvs_and_data() {
        let chunk = 4096u64;
        let old = data(20000);
        let mut new = old.clone();
        new[5000] ^= 1;
        new.truncate(15000);
        let mut fo = tempfile::tempfile().unwrap();
        fo.write_all(&old).unwrap();
        let mut fnew = tempfile::tempfile().unwrap();
        fnew.write_all(&new).unwrap();
        let mut changed = Vec::new();
        let s = scan(
            &fnew,
            new.len() as u64,
            chunk,
            2,
            &Old::File(&fo, old.len() as u64),
            &|| false,
            &mut |c| {
                if c.old_cv != Some(c.cv) {
                    changed.push((c.index, c.old_data.map(<[u8]>::len)));
                }
                Ok(())
            },
        )
        .unwrap();
        // Chunk 1 changed; chunk 3 is shorter now (15000 - 12288 bytes instead of 4096).
        assert_eq!(changed, vec![(1, Some(4096)), (3, Some(4096))]);
        assert_eq!(s.root, blake3::hash(&new));
        assert_eq!(s.cvs.len(), 4);
    }
}
