//! The fast path: answers already rendered in wire form, replayed with only the ID, the RD
//! and CD flags, the question's spelling and the OPT record patched in.
//!
//! Each worker keeps its own cache (no lock, no shared counter on the hot path) keyed by the
//! question in lower case. A miss, or any request that is not a plain one-question query,
//! goes through the complete path ([`super::answer::respond`]); a plain query's answer is
//! rendered there once, for a canonical copy of the question, and kept. A new snapshot (a
//! change of records) empties the cache.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::answer::{Transport, respond, size_limit};
use super::zone::Snapshot;

/// Entries a worker caches before it starts over (bounds memory under random-name floods).
const CACHE_ENTRIES: usize = 4096;

/// The current snapshot, swapped as a whole.
#[derive(Debug)]
pub(crate) struct SnapshotCell {
    current: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
}

impl SnapshotCell {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        Self {
            generation: AtomicU64::new(snapshot.generation),
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub(crate) fn load(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn store(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        let snapshot = Arc::new(snapshot);
        match self.current.write() {
            Ok(mut g) => *g = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.generation.store(generation, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// FNV-1a: the keys are short byte strings.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Cache = HashMap<Box<[u8]>, Box<[u8]>, BuildHasherDefault<Fnv>>;

/// One worker's view: a snapshot, its cache of rendered answers, and scratch buffers.
#[derive(Debug)]
pub(crate) struct Worker {
    cell: Arc<SnapshotCell>,
    snapshot: Arc<Snapshot>,
    cache: Cache,
    max_udp: u16,
    key: Vec<u8>,
    scratch: Vec<u8>,
}

/// What the fast path needs from a plain query.
struct Plain {
    /// Where the question ends (header + name + type + class).
    question_end: usize,
    /// The EDNS payload size and DO bit, when the query has an OPT record.
    edns: Option<(u16, bool)>,
}

impl Worker {
    pub(crate) fn new(cell: Arc<SnapshotCell>, max_udp: u16) -> Self {
        Self {
            snapshot: cell.load(),
            cell,
            cache: Cache::default(),
            max_udp,
            key: Vec::with_capacity(272),
            scratch: Vec::with_capacity(512),
        }
    }

    /// Answers `query` into `out`; `false` when nothing must be sent.
    pub(crate) fn handle(&mut self, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        if self.cell.generation() != self.snapshot.generation {
            self.snapshot = self.cell.load();
            self.cache.clear();
        }
        if let Some(plain) = parse_plain(query, &mut self.key)
            && self.replay(query, &plain, transport, out)
        {
            return true;
        }
        respond(&self.snapshot, query, transport, self.max_udp, out)
    }

    fn replay(
        &mut self,
        query: &[u8],
        plain: &Plain,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let template = match self.cache.get(self.key.as_slice()) {
            Some(t) => t,
            None => {
                // Render the answer to a canonical copy of the question: ID 0, no flags, no EDNS.
                self.scratch.clear();
                self.scratch
                    .extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
                self.scratch.extend_from_slice(&self.key);
                let mut rendered = Vec::new();
                if !respond(
                    &self.snapshot,
                    &self.scratch,
                    Transport::Tcp,
                    self.max_udp,
                    &mut rendered,
                ) || rendered.len() < plain.question_end
                    || rendered[10..12] != [0, 0]
                    || rendered[12..plain.question_end] != self.scratch[12..]
                {
                    return false;
                }
                if self.cache.len() >= CACHE_ENTRIES {
                    self.cache.clear();
                }
                self.cache
                    .entry(self.key.clone().into_boxed_slice())
                    .or_insert(rendered.into_boxed_slice())
            }
        };
        let limit = size_limit(transport, plain.edns.map(|(p, _)| p), self.max_udp);
        let opt_len = if plain.edns.is_some() { 11 } else { 0 };
        if template.len() + opt_len > limit {
            // Needs truncation: the complete path does it.
            return false;
        }
        out.clear();
        out.extend_from_slice(template);
        out[..2].copy_from_slice(&query[..2]);
        out[2] |= query[2] & 0x01;
        out[3] |= query[3] & 0x10;
        out[12..plain.question_end].copy_from_slice(&query[12..plain.question_end]);
        if let Some((_, dnssec_ok)) = plain.edns {
            out[11] = 1;
            let [hi, lo] = self.max_udp.to_be_bytes();
            let flags = if dnssec_ok { 0x80 } else { 0 };
            out.extend_from_slice(&[0, 0, 41, hi, lo, 0, 0, flags, 0, 0, 0]);
        }
        true
    }
}

/// Recognises a plain query — QUERY opcode, no flags but RD/CD/AD, one question with an
/// uncompressed name, no records except one well-formed EDNS version 0 OPT record — and puts
/// its question in lower case into `key`.
fn parse_plain(q: &[u8], key: &mut Vec<u8>) -> Option<Plain> {
    let header = q.get(..12)?;
    // QR, opcode, AA and TC clear; Z and RCODE clear.
    if header[2] & 0xfe != 0 || header[3] & 0x4f != 0 {
        return None;
    }
    if header[4..10] != [0, 1, 0, 0, 0, 0] || header[10] != 0 || header[11] > 1 {
        return None;
    }
    key.clear();
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            key.push(0);
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        key.push(len as u8);
        key.extend(
            q.get(i + 1..i + 1 + len)?
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        i += 1 + len;
        if key.len() > 255 {
            return None;
        }
    }
    key.extend_from_slice(q.get(i..i + 4)?);
    let question_end = i + 4;
    let edns = match header[11] {
        0 if q.len() == question_end => None,
        1 => {
            let opt = q.get(question_end..question_end + 11)?;
            // Root owner, type OPT, extended RCODE 0, version 0.
            if opt[..3] != [0, 0, 41] || opt[5] != 0 || opt[6] != 0 {
                return None;
            }
            let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
            if q.len() != question_end + 11 + rdlen {
                return None;
            }
            Some((u16::from_be_bytes([opt[3], opt[4]]), opt[7] & 0x80 != 0))
        }
        _ => return None,
    };
    Some(Plain { question_end, edns })
}
