//! A conversation's message entries, kept in fixed-size chunks that copies
//! of the state share.
//!
//! A snapshot is encoded from a copy of the state while applying goes on,
//! and applying copies a conversation when it changes one the copy still
//! holds. With the entries in one `Vec`, every send during a build copied
//! its conversation's whole list (1.6 KB at 100 messages), then the build
//! freed the old copies into pages still partly in use. In chunks, a copy
//! takes the list of chunk pointers and the short last chunk; full chunks
//! are never changed in place, only shared.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use log_format::events::{AccountId, MessageId};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::presized::MAX_PRESIZE;

/// Entries in a full chunk: with the `Arc`'s two counts, 1,024 bytes, one
/// of the allocator's size classes.
const CHUNK: usize = 63;

/// Entries the last chunk grows by at least.
const MIN_GROWTH: usize = 4;

/// A message of a conversation: 16 bytes, once per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: MessageId,
    pub sender: AccountId,
}

/// Entries ascending by id, as one list: every chunk but the last holds
/// exactly [`CHUNK`] of them, so entry `i` is in chunk `i / CHUNK`.
#[derive(Debug, Clone, Default)]
pub struct Messages {
    full: Vec<Arc<[Entry; CHUNK]>>,
    /// Fewer than [`CHUNK`] entries.
    tail: Vec<Entry>,
}

impl Messages {
    pub fn len(&self) -> usize {
        self.full.len() * CHUNK + self.tail.len()
    }

    /// Entry `i`; panics past the end, as indexing does.
    pub fn get(&self, i: usize) -> Entry {
        self.chunk(i / CHUNK)[i % CHUNK]
    }

    fn chunk(&self, k: usize) -> &[Entry] {
        match self.full.get(k) {
            Some(c) => &c[..],
            None => &self.tail,
        }
    }

    /// The index of the first entry for which `pred` is false, where it is
    /// true of every entry before that and false of every one after.
    pub fn partition_point(&self, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        let k = self.full.partition_point(|c| pred(&c[CHUNK - 1]));
        k * CHUNK + self.chunk(k).partition_point(pred)
    }

    /// The entries at `start..end` (clamped to the list).
    pub fn range(&self, start: usize, end: usize) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        let end = end.min(self.len());
        let start = start.min(end);
        let chunks = if start == end {
            0..0
        } else {
            start / CHUNK..(end - 1) / CHUNK + 1
        };
        chunks.flat_map(move |k| {
            let chunk = self.chunk(k);
            let base = k * CHUNK;
            chunk[start.saturating_sub(base)..(end - base).min(chunk.len())].iter()
        })
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        self.range(0, usize::MAX)
    }

    pub fn push(&mut self, entry: Entry) {
        if self.tail.len() == self.tail.capacity() {
            // A quarter more, not twice: the entries are most of the
            // state, and a snapshot loads them at their exact length.
            // (A copy's last chunk, or a loaded one, is at its exact
            // length, so this may be 1 to 3 short of a full chunk.)
            let more = (self.tail.len() / 4)
                .max(MIN_GROWTH)
                .min(CHUNK - self.tail.len());
            self.tail.reserve_exact(more);
        }
        self.tail.push(entry);
        if self.tail.len() == CHUNK {
            self.seal_tail();
            self.tail = Vec::new();
        }
    }

    /// Makes the last chunk, full, a shared one; the caller empties it.
    fn seal_tail(&mut self) {
        let chunk: [Entry; CHUNK] = self.tail[..].try_into().expect("a full chunk");
        self.full.push(Arc::new(chunk));
    }

    /// Removes entry `i` and returns it; panics past the end.
    pub fn remove(&mut self, i: usize) -> Entry {
        let removed = self.get(i);
        self.rebuild_from(i, |at, _| at != i);
        removed
    }

    /// Keeps the entries for which `keep` is true; `keep` sees each entry
    /// once, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let len = self.len();
        let mut first = 0;
        while first < len && keep(&self.get(first)) {
            first += 1;
        }
        if first < len {
            self.rebuild_from(first, |at, e| at < first || (at > first && keep(e)));
        }
    }

    /// Lays the entries out again from the chunk holding entry `from` on,
    /// keeping (by index and entry) those `keep` says to; chunks before it
    /// stay as they are, shared.
    fn rebuild_from(&mut self, from: usize, mut keep: impl FnMut(usize, &Entry) -> bool) {
        let k = from / CHUNK;
        let rest: Vec<Entry> = self.range(k * CHUNK, usize::MAX).copied().collect();
        self.full.truncate(k);
        self.tail = Vec::new();
        for (at, e) in (k * CHUNK..).zip(rest) {
            if keep(at, &e) {
                self.push(e);
            }
        }
    }
}

impl Serialize for Messages {
    /// As one sequence of entries: the bytes a `Vec<Entry>` encodes to.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for e in self.iter() {
            seq.serialize_element(e)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(MessagesVisitor(PhantomData))
    }
}

struct MessagesVisitor(PhantomData<Messages>);

impl<'de> Visitor<'de> for MessagesVisitor {
    type Value = Messages;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of message entries")
    }

    /// Full chunks as they come, and the last one at its exact length when
    /// the length is known (a snapshot is this cluster's own CRC-checked
    /// data; the length is still capped).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
        let mut left = seq.size_hint().unwrap_or(0).min(MAX_PRESIZE);
        let mut out = Messages {
            full: Vec::with_capacity(left / CHUNK),
            tail: Vec::with_capacity(left.min(CHUNK)),
        };
        while let Some(e) = seq.next_element()? {
            out.tail.push(e);
            left = left.saturating_sub(1);
            if out.tail.len() == CHUNK {
                out.seal_tail();
                out.tail.clear();
                out.tail.shrink_to(left.min(CHUNK));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
impl Messages {
    /// Asserts the layout: ascending ids, and the last chunk short.
    pub fn check(&self) {
        assert!(self.tail.len() < CHUNK, "a full last chunk");
        let ids: Vec<MessageId> = self.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "messages ascending");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: u64) -> Entry {
        Entry {
            id: MessageId(id),
            sender: AccountId(id % 3),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        Remove(usize),
        /// Drops the entries whose id is a multiple of this.
        Retain(u64),
        /// Goes on with a copy (as applying does while a snapshot holds
        /// the original), or with what the list encodes to.
        Copy,
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1..4u64).prop_map(Op::Push),
            1 => any::<usize>().prop_map(Op::Remove),
            1 => (2..9u64).prop_map(Op::Retain),
            1 => Just(Op::Copy),
            1 => Just(Op::Reload),
        ]
    }

    proptest! {
        /// The chunked list answers every question as a `Vec` does, through
        /// pushes, removals and retains, and encodes to the same bytes.
        #[test]
        fn answers_as_a_vec_does(ops in proptest::collection::vec(op(), 0..400)) {
            let (mut m, mut v) = (Messages::default(), Vec::<Entry>::new());
            let mut next = 1;
            for op in ops {
                match op {
                    Op::Push(step) => {
                        next += step;
                        m.push(entry(next));
                        v.push(entry(next));
                    }
                    Op::Remove(at) if !v.is_empty() => {
                        let at = at % v.len();
                        prop_assert_eq!(m.remove(at), v.remove(at));
                    }
                    Op::Remove(_) => {}
                    Op::Copy => m = m.clone(),
                    Op::Reload => {
                        m = postcard::from_bytes(&postcard::to_allocvec(&m).unwrap()).unwrap();
                    }
                    Op::Retain(by) => {
                        let mut seen = Vec::new();
                        m.retain(|e| { seen.push(e.id); e.id.0 % by != 0 });
                        v.retain(|e| e.id.0 % by != 0);
                        prop_assert_eq!(seen.len(), seen.iter().collect::<std::collections::BTreeSet<_>>().len());
                    }
                }
                m.check();
                prop_assert_eq!(m.len(), v.len());
                prop_assert_eq!(m.iter().copied().collect::<Vec<_>>(), v.clone());
                prop_assert_eq!(m.iter().rev().copied().collect::<Vec<_>>(), v.iter().rev().copied().collect::<Vec<_>>());
            }
            for probe in 0..next + 2 {
                let at = m.partition_point(|e| e.id.0 < probe);
                prop_assert_eq!(at, v.partition_point(|e| e.id.0 < probe));
                let (lo, hi) = (at / 2, at + 70);
                prop_assert_eq!(
                    m.range(lo, hi).rev().copied().collect::<Vec<_>>(),
                    v[lo.min(v.len())..hi.min(v.len())].iter().rev().copied().collect::<Vec<_>>()
                );
            }
            let bytes = postcard::to_allocvec(&m).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&v).unwrap());
            let back: Messages = postcard::from_bytes(&bytes).unwrap();
            back.check();
            prop_assert_eq!(back.iter().copied().collect::<Vec<_>>(), v);
            prop_assert_eq!(back.tail.capacity(), back.tail.len());
        }
    }

    /// A copy shares every full chunk; a push to the original changes only
    /// its own last chunk, and a removal re-lays only the chunks from the
    /// removed entry's on.
    #[test]
    fn copies_share_full_chunks() {
        let mut m = Messages::default();
        for id in 1..=200 {
            m.push(entry(id));
        }
        let copy = m.clone();
        m.push(entry(201));
        let shared = |a: &Messages, b: &Messages| {
            (a.full.iter().zip(&b.full))
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&m, &copy), 3);
        m.remove(70);
        assert_eq!(shared(&m, &copy), 1);
        assert_eq!(copy.len(), 200);
        assert_eq!(m.len(), 200);
        copy.check();
        m.check();
    }
}
