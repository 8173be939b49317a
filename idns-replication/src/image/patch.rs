//! The patch format: the changed chunks of one file, to apply in place.
//!
//! ```text
//! data of every data chunk, one after another
//! index: per chunk  u64 index | u8 kind (0 hole, 1 data) | u32 len | 32-byte chaining value
//! trailer:          u64 count | u64 size after applying | u64 chunk size | b"IDNSPAT1"
//! ```
//!
//! Integers are little-endian. Every data chunk carries its blake3 chaining value, checked
//! before it is written, so a damaged patch is refused instead of applied. A hole chunk is
//! applied by punching a hole, so sparse files stay sparse.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::hash::{Cv, chunk_cv};
use crate::fsutil::{is_zero, punch_hole};

const MAGIC: &[u8; 8] = b"IDNSPAT1";
const ENTRY_LEN: usize = 8 + 1 + 4 + 32;
const TRAILER_LEN: usize = 8 + 8 + 8 + 8;

struct Entry {
    index: u64,
    hole: bool,
    len: u32,
    cv: Cv,
    data_at: u64,
}

/// Writes a patch.
pub(crate) struct PatchWriter {
    out: BufWriter<File>,
    entries: Vec<Entry>,
    data_len: u64,
}

impl PatchWriter {
    /// A new, empty patch at `path`.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            entries: Vec::new(),
            data_len: 0,
        })
    }

    /// Adds a chunk: a hole when `data` is all zeros, else its bytes. Returns the bytes of
    /// data written (0 for a hole).
    pub(crate) fn add(&mut self, index: u64, data: &[u8], cv: Cv) -> io::Result<u64> {
        let hole = is_zero(data);
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
        self.entries.push(Entry {
            index,
            hole,
            len,
            cv,
            data_at: self.data_len,
        });
        if hole {
            return Ok(0);
        }
        self.out.write_all(data)?;
        self.data_len += data.len() as u64;
        Ok(data.len() as u64)
    }

    /// Chunks added so far.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Writes the index and trailer, and fsyncs.
    pub(crate) fn finish(mut self, size_after: u64, chunk: u64) -> io::Result<()> {
        for e in &self.entries {
            self.out.write_all(&e.index.to_le_bytes())?;
            self.out.write_all(&[u8::from(!e.hole)])?;
            self.out.write_all(&e.len.to_le_bytes())?;
            self.out.write_all(&e.cv)?;
        }
        self.out
            .write_all(&(self.entries.len() as u64).to_le_bytes())?;
        self.out.write_all(&size_after.to_le_bytes())?;
        self.out.write_all(&chunk.to_le_bytes())?;
        self.out.write_all(MAGIC)?;
        let f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    }
}

/// A patch read back.
pub(crate) struct Patch {
    file: File,
    entries: Vec<Entry>,
    /// The file's size after applying.
    pub(crate) size_after: u64,
    chunk: u64,
}

fn bad(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("patch {}: {what}", path.display()),
    )
}

impl Patch {
    /// Opens and checks a patch.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < TRAILER_LEN as u64 {
            return Err(bad(path, "too short"));
        }
        let mut t = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut t, len - TRAILER_LEN as u64)?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&t[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        if &t[24..32] != MAGIC {
            return Err(bad(path, "no trailer (an incomplete write?)"));
        }
        let (count, size_after, chunk) = (word(0), word(1), word(2));
        let index_len = count
            .checked_mul(ENTRY_LEN as u64)
            .filter(|n| *n + TRAILER_LEN as u64 <= len)
            .ok_or_else(|| bad(path, "index larger than the file"))?;
        let data_len = len - TRAILER_LEN as u64 - index_len;
        let mut raw = vec![0u8; index_len as usize];
        file.read_exact_at(&mut raw, data_len)?;
        let mut entries = Vec::with_capacity(count as usize);
        let mut data_at = 0u64;
        for e in raw.chunks_exact(ENTRY_LEN) {
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&e[..8]);
            let mut l = [0u8; 4];
            l.copy_from_slice(&e[9..13]);
            let mut cv = [0u8; 32];
            cv.copy_from_slice(&e[13..45]);
            let hole = e[8] == 0;
            let len = u32::from_le_bytes(l);
            entries.push(Entry {
                index: u64::from_le_bytes(idx),
                hole,
                len,
                cv,
                data_at,
            });
            if !hole {
                data_at += u64::from(len);
            }
        }
        if data_at != data_len {
            return Err(bad(path, "index and data disagree"));
        }
        Ok(Self {
            file,
            entries,
            size_after,
            chunk,
        })
    }

    /// Applies the patch to `target` (written in place; its size set at the end). Every data
    /// chunk is checked against its chaining value first. Returns the data bytes written.
    pub(crate) fn apply(&self, target: &File) -> io::Result<u64> {
        let mut buf = Vec::new();
        let mut written = 0;
        for e in &self.entries {
            let off = e.index * self.chunk;
            if e.hole {
                punch_hole(target, off, u64::from(e.len))?;
                continue;
            }
            buf.resize(e.len as usize, 0);
            self.file.read_exact_at(&mut buf, e.data_at)?;
            if chunk_cv(off, &buf) != e.cv {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunk {} of the patch does not match its checksum", e.index),
                ));
            }
            target.write_all_at(&buf, off)?;
            written += buf.len() as u64;
        }
        target.set_len(self.size_after)?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    #[test]
    fn patch_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = 4096u64;
        let old: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
        let mut new = old.clone();
        new[4096..8192].fill(0);
        new[9000] = 42;
        new.extend_from_slice(&[7; 3000]);
        let p = dir.path().join("p");
        let mut w = PatchWriter::create(&p).unwrap();
        for idx in [1u64, 2, 4, 5] {
            let s = (idx * chunk) as usize;
            let e = (s + chunk as usize).min(new.len());
            w.add(idx, &new[s..e], chunk_cv(idx * chunk, &new[s..e]))
                .unwrap();
        }
        w.finish(new.len() as u64, chunk).unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, &old).unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .open(&target)
            .unwrap();
        Patch::open(&p).unwrap().apply(&f).unwrap();
        let mut got = Vec::new();
        File::open(&target).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, new);

        // Flip a data byte: the apply refuses.
        let mut raw = std::fs::read(&p).unwrap();
        raw[10] ^= 0xff;
        std::fs::write(&p, &raw).unwrap();
        let err = Patch::open(&p).unwrap().apply(&f).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Cut the trailer: the open refuses.
        std::fs::write(&p, &raw[..raw.len() - 3]).unwrap();
        assert!(Patch::open(&p).is_err());
    }
}
