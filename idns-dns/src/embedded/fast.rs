//! The fast path: answers already rendered in wire form, replayed with only the ID, the RD
//! and CD flags, the question's spelling and the OPT record patched in.
//!
//! Each worker keeps its own cache (no lock, no shared counter, no allocation on the hot
//! path) keyed by the question in lower case, hashed with a per-worker random seed. A miss,
//! or any request that is not a plain one-question query, goes through the complete path
//! ([`super::answer::respond`]); a plain query's answer is rendered there once, for a
//! canonical copy of the question, and kept. The complete path compresses names
//! case-sensitively, so an answer is replayed for a question in mixed case (0x20) only when
//! its layout does not depend on the spelling (checked once, by rendering the question in
//! upper case too); otherwise such a question takes the complete path. Every replayed answer
//! is byte for byte what the complete path would send. A new snapshot (a change of records,
//! checked by its generation on every request) empties the cache, so no answer mixes records
//! of two snapshots.

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

/// Longest cache key: a wire name (255 bytes) and the type and class.
const MAX_KEY: usize = 255 + 4;

/// Slots of a worker's answer table: a power of two, at least twice [`CACHE_ENTRIES`], so
/// probes stay short.
const SLOTS: usize = 2 * CACHE_ENTRIES;

/// A question in lower case, and its hash.
struct Key {
    bytes: [u8; MAX_KEY],
    len: usize,
    hash: u64,
    seed: u64,
}

impl Key {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A rendered answer and the question it answers.
struct Rendered {
    hash: u64,
    key: Box<[u8]>,
    answer: Box<[u8]>,
    /// Whether the answer is laid out the same whatever the spelling of the question: no
    /// other name in it was compressed against the lower-case question (the complete path
    /// compares names case-sensitively when it compresses).
    any_case: bool,
}

/// The answers one worker has rendered: open addressing with linear probing over
/// [`SLOTS`] slots holding indexes into `entries` (0 = empty), emptied as a whole.
struct Table {
    slots: Box<[u32]>,
    entries: Vec<Rendered>,
}

impl Table {
    fn new() -> Self {
        Self {
            slots: vec![0; SLOTS].into_boxed_slice(),
            entries: Vec::new(),
        }
    }

    fn clear(&mut self) {
        if !self.entries.is_empty() {
            self.slots.fill(0);
            self.entries.clear();
        }
    }

    /// The answer to `key`, if rendered; else the slot where it belongs.
    fn find(&self, key: &Key) -> Result<usize, usize> {
        let mask = SLOTS - 1;
        // The low bits of the multiplicative hash are its weakest: use the high ones.
        let mut i = (key.hash >> 40) as usize & mask;
        loop {
            match self.slots[i] {
                0 => return Err(i),
                n => {
                    let e = &self.entries[n as usize - 1];
                    if e.hash == key.hash && *e.key == *key.as_slice() {
                        return Ok(n as usize - 1);
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Keeps `answer` for `key` in `slot` (from [`find`](Self::find)).
    fn insert(&mut self, slot: usize, key: &Key, answer: Box<[u8]>, any_case: bool) -> usize {
        self.entries.push(Rendered {
            hash: key.hash,
            key: key.as_slice().into(),
            answer,
            any_case,
        });
        // At most CACHE_ENTRIES entries, so the index fits and the table never fills.
        self.slots[slot] = self.entries.len() as u32;
        self.entries.len() - 1
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// One worker's view: a snapshot, its cache of rendered answers, and scratch buffers.
#[derive(Debug)]
pub(crate) struct Worker {
    cell: Arc<SnapshotCell>,
    snapshot: Arc<Snapshot>,
    cache: Table,
    max_udp: u16,
    key: Box<Key>,
    scratch: Vec<u8>,
    /// Answers replayed from the cache (for tests that must know the fast path ran).
    #[cfg(test)]
    pub(crate) replayed: u64,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("len", &self.len).finish()
    }
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
            cache: Table::new(),
            max_udp,
            key: Box::new(Key {
                bytes: [0; MAX_KEY],
                len: 0,
                hash: 0,
                seed: std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    0u64,
                ),
            }),
            scratch: Vec::with_capacity(512),
            #[cfg(test)]
            replayed: 0,
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

    /// The complete path's answer to this question asked canonically (ID 0, no flags, no
    /// EDNS, the name in lower case, or in upper case with `upper`), when the fast path can
    /// replay it.
    fn render(&mut self, question_end: usize, upper: bool) -> Option<Vec<u8>> {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        self.scratch.extend_from_slice(self.key.as_slice());
        if upper {
            // Length bytes (at most 63) are never ASCII letters.
            self.scratch[12..question_end - 4].make_ascii_uppercase();
        }
        let mut rendered = Vec::new();
        let usable = respond(
            &self.snapshot,
            &self.scratch,
            Transport::Tcp,
            self.max_udp,
            &mut rendered,
        ) && rendered.len() >= question_end
            && rendered[10..12] == [0, 0]
            && rendered[12..question_end] == self.scratch[12..];
        usable.then_some(rendered)
    }

    /// Renders the answer to the question in `key` and keeps it; its index in the table, or
    /// `None` when the fast path cannot replay it.
    fn fill(&mut self, question_end: usize) -> Option<usize> {
        let mut lower = self.render(question_end, false)?;
        // The same layout for an upper-case question means the same for any spelling.
        let any_case = self.render(question_end, true).is_some_and(|mut upper| {
            upper[12..question_end].copy_from_slice(&lower[12..question_end]);
            upper == lower
        });
        lower.shrink_to_fit();
        if self.cache.entries.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        Some(match self.cache.find(&self.key) {
            Err(slot) => self
                .cache
                .insert(slot, &self.key, lower.into_boxed_slice(), any_case),
            Ok(index) => index,
        })
    }

    fn replay(
        &mut self,
        query: &[u8],
        plain: &Plain,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let index = match self.cache.find(&self.key) {
            Ok(index) => index,
            Err(_) => match self.fill(plain.question_end) {
                Some(index) => index,
                None => return false,
            },
        };
        let rendered = &self.cache.entries[index];
        if !rendered.any_case && query[12..plain.question_end] != *self.key.as_slice() {
            // A spelling of its own (0x20): the complete path lays it out.
            return false;
        }
        let template = &rendered.answer;
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
        #[cfg(test)]
        {
            self.replayed += 1;
        }
        true
    }
}

/// Recognises a plain query — QUERY opcode, no flags but RD/CD/AD, one question with an
/// uncompressed name, no records except one well-formed EDNS version 0 OPT record — and puts
/// its question in lower case, and its hash, into `key`.
fn parse_plain(q: &[u8], key: &mut Key) -> Option<Plain> {
    let header = q.get(..12)?;
    // QR, opcode, AA and TC clear; Z and RCODE clear.
    if header[2] & 0xfe != 0 || header[3] & 0x4f != 0 {
        return None;
    }
    if header[4..10] != [0, 1, 0, 0, 0, 0] || header[10] != 0 || header[11] > 1 {
        return None;
    }
    // Walk the labels to find where the name ends.
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
        // A name is at most 255 bytes, root label included.
        if i - 12 > 254 {
            return None;
        }
    }
    let question_end = i + 4;
    let question = q.get(12..question_end)?;
    // Lower case: length bytes (at most 63) are never ASCII letters.
    let bytes = &mut key.bytes[..question.len()];
    bytes.copy_from_slice(question);
    bytes.make_ascii_lowercase();
    key.len = question.len();
    key.hash = hash(key.seed, bytes);
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

/// A multiplicative hash of `bytes`, eight at a time, from a random `seed` per worker, so
/// nobody can choose names that all land in the same slots.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = seed ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h
}
