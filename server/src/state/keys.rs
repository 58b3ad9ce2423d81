//! One sender's idempotency index: the 64-bit hash of each client message
//! id it used, with the message that id made.
//!
//! A hash table of every key ever sent was the largest part of the state
//! (at power-of-two capacity, ~28 bytes per message) and, while a snapshot
//! loaded, the slowest to rebuild (every key hashed and inserted again).
//! Here most keys sit in one vector sorted by hash, 16 bytes each, with a
//! directory of where each run of keys sharing their top bits starts (see
//! [`Sorted`]); keys sent since the last merge sit in a small table that is
//! sorted into the vector once it holds an eighth as many.
//! A snapshot writes the keys in hash order as differences from the one
//! before (shorter varints), and reading it back is a sequential push.
//! A copy of the state (what a snapshot is encoded from) shares each
//! sender's keys whole; a sender that sends while the copy lives copies
//! its table of recent keys, and still shares the sorted vector until a
//! merge replaces it.

use std::fmt;
use std::sync::Arc;

use log_format::events::MessageId;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::HashMap;
use super::presized::MAX_PRESIZE;

/// The table of recent keys is merged into the sorted vector once it holds
/// this many, or an eighth of the vector if that is more: each key is
/// moved about eight times on average, and lookups stay two probes. Kept
/// small because every sender has such a table: at 1,024 each of 5,000
/// senders held ~35 KB of buckets while serving that a restart (which
/// loads every key into the vector) does not have; 112 keys fit a table of
/// 128 buckets (~2 KB).
const MERGE_AT_LEAST: usize = 112;

#[derive(Debug, Clone, Default)]
pub struct SentKeys {
    /// Merged keys, ascending by hash, each hash once.
    sorted: Arc<Sorted>,
    /// Keys added since the last merge; none of them is in `sorted`.
    recent: HashMap<u64, MessageId>,
}

impl SentKeys {
    pub fn get(&self, key: u64) -> Option<MessageId> {
        if let Some(&id) = self.recent.get(&key) {
            return Some(id);
        }
        self.sorted.get(key)
    }

    /// Records that `key` made `id`. The caller has looked `key` up and
    /// not found it (a key already present would be listed twice).
    pub fn insert(&mut self, key: u64, id: MessageId) {
        debug_assert!(self.get(key).is_none(), "key {key} inserted twice");
        self.recent.insert(key, id);
        if self.recent.len() >= (self.sorted.len() / 8).max(MERGE_AT_LEAST) {
            self.merge();
        }
    }

    /// Keeps the keys whose message `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(MessageId) -> bool) {
        self.recent.retain(|_, id| keep(*id));
        if self.sorted.entries.iter().any(|(_, id)| !keep(*id)) {
            let kept = self.sorted.entries.iter().filter(|(_, id)| keep(*id));
            self.sorted = Arc::new(Sorted::new(kept.copied().collect()));
        }
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Every key with its message, ascending by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, MessageId)> + '_ {
        let mut recent: Vec<(u64, MessageId)> = self.recent.iter().map(|(k, v)| (*k, *v)).collect();
        recent.sort_unstable_by_key(|e| e.0);
        Merged {
            a: self.sorted.entries.iter().copied().peekable(),
            b: recent.into_iter().peekable(),
        }
    }

    /// Sorts the recent keys into the vector, which grows to exactly the
    /// length it needs.
    fn merge(&mut self) {
        let mut merged = Vec::with_capacity(self.len());
        merged.extend(self.iter());
        self.sorted = Arc::new(Sorted::new(merged));
        self.recent = HashMap::default();
    }
}

/// Keys sorted by hash, and a directory of where the keys whose top
/// `bits` bits are each value start, about eight keys to a slot. The keys
/// are hashes, spread evenly, so a lookup reads one slot pair of the
/// directory (a few bytes per eight keys: small enough to stay in the
/// cache) and one short run of keys (one or two cache lines), where a
/// binary search over millions of keys misses the cache at nearly every
/// one of its ~20 steps; interpolating towards the key, as this did
/// before, still missed three times and was half of a crash start's replay
/// at 10M messages. Keys spread unevenly are still found, in longer runs.
#[derive(Debug, Default)]
struct Sorted {
    entries: Vec<(u64, MessageId)>,
    /// `starts[b]` is the first entry whose key's top `bits` bits are at
    /// least `b`; one more at the end holds `entries.len()`. Empty when
    /// `entries` is. (`u32`: a sender would need 2^32 keys, 64 GiB of
    /// them, to outgrow it.)
    starts: Vec<u32>,
    bits: u32,
}

impl Sorted {
    /// Indexes `entries`, which are ascending by key, each key once.
    fn new(entries: Vec<(u64, MessageId)>) -> Sorted {
        if entries.is_empty() {
            return Sorted::default();
        }
        // 2^bits slots for len / 16 to len / 8 of them: 8 to 16 keys a
        // slot, a quarter to half a byte per key.
        let bits = (entries.len() / 8).max(1).ilog2();
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for slot in 0..1u64 << bits {
            while at < entries.len() && slot_of(entries[at].0, bits) < slot {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(entries.len() as u32);
        Sorted {
            entries,
            starts,
            bits,
        }
    }

    fn get(&self, key: u64) -> Option<MessageId> {
        let slot = slot_of(key, self.bits) as usize;
        let (lo, hi) = (*self.starts.get(slot)?, self.starts[slot + 1]);
        let run = &self.entries[lo as usize..hi as usize];
        let at = run.binary_search_by_key(&key, |e| e.0).ok()?;
        Some(run[at].1)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The directory slot of `key`: its top `bits` bits.
fn slot_of(key: u64, bits: u32) -> u64 {
    key.checked_shr(64 - bits).unwrap_or(0)
}

/// Two ascending runs of distinct keys, merged.
struct Merged<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for Merged<A, B>
where
    A: ExactSizeIterator<Item = (u64, MessageId)>,
    B: ExactSizeIterator<Item = (u64, MessageId)>,
{
    type Item = (u64, MessageId);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.a.len() + self.b.len();
        (n, Some(n))
    }
}

impl<A, B> ExactSizeIterator for Merged<A, B>
where
    A: ExactSizeIterator<Item = (u64, MessageId)>,
    B: ExactSizeIterator<Item = (u64, MessageId)>,
{
}

impl Serialize for SentKeys {
    /// A sequence of (key minus the key before it, message), ascending:
    /// one encoding for one set of keys, however it was built.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        let mut before = 0u64;
        for (key, id) in self.iter() {
            seq.serialize_element(&(key - before, id))?;
            before = key;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for SentKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = SentKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of ascending idempotency keys")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SentKeys, A::Error> {
        let len = seq.size_hint().unwrap_or(0).min(MAX_PRESIZE);
        let mut sorted = Vec::with_capacity(len);
        let mut key = 0u64;
        while let Some((step, id)) = seq.next_element::<(u64, MessageId)>()? {
            let first = sorted.is_empty();
            key = match key.checked_add(step) {
                Some(k) if first || step > 0 => k,
                _ => return Err(de::Error::custom("idempotency keys out of order")),
            };
            sorted.push((key, id));
        }
        Ok(SentKeys {
            sorted: Arc::new(Sorted::new(sorted)),
            recent: HashMap::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Whatever the order of inserts and removals, the index answers
        /// as a plain map does, and a round trip through postcard keeps it.
        #[test]
        fn answers_as_a_map_does(
            ops in prop::collection::vec((any::<bool>(), 0u64..4000, any::<u64>()), 0..6000),
        ) {
            let mut keys = SentKeys::default();
            let mut model = BTreeMap::new();
            for (n, (insert, key, salt)) in ops.into_iter().enumerate() {
                // Spread keys over the whole range, with repeats.
                let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                if insert || n % 7 != 0 {
                    if keys.get(key).is_none() {
                        keys.insert(key, MessageId(n as u64));
                    }
                    model.entry(key).or_insert(MessageId(n as u64));
                } else {
                    keys.retain(|id| id.0 % 5 != salt % 5);
                    model.retain(|_, id| id.0 % 5 != salt % 5);
                }
                prop_assert_eq!(keys.get(key), model.get(&key).copied());
            }
            prop_assert_eq!(keys.len(), model.len());
            let all: Vec<_> = keys.iter().collect();
            let expected: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&all, &expected);
            let bytes = postcard::to_allocvec(&keys).expect("encodes");
            let back: SentKeys = postcard::from_bytes(&bytes).expect("decodes");
            prop_assert_eq!(back.iter().collect::<Vec<_>>(), expected);
            for (k, v) in &model {
                prop_assert_eq!(back.get(*k), Some(*v));
            }
        }
    }

    proptest! {
        /// The directory finds every key and no absent one, for keys
        /// spread evenly, bunched together, or skewed (shifted right by
        /// varying amounts, so most sit in the first slots and a few far
        /// out), and at every length around the slot counts' steps.
        #[test]
        fn sorted_finds_what_it_holds(
            keys in prop::collection::vec(any::<u64>(), 0..3000),
            shape in 0..3u8,
            probes in prop::collection::vec(any::<u64>(), 50),
        ) {
            let spread = |k: u64| match shape {
                0 => k,
                1 => k >> 40,
                _ => k >> (k % 64),
            };
            let mut keys: Vec<u64> = keys.into_iter().map(spread).collect();
            keys.sort_unstable();
            keys.dedup();
            let held: BTreeMap<u64, MessageId> =
                keys.iter().map(|k| (*k, MessageId(k.wrapping_mul(3)))).collect();
            let sorted = Sorted::new(held.iter().map(|(k, v)| (*k, *v)).collect());
            prop_assert_eq!(sorted.len(), held.len());
            for probe in keys.iter().copied().chain(probes.into_iter().map(spread)) {
                prop_assert_eq!(sorted.get(probe), held.get(&probe).copied());
            }
        }
    }

    #[test]
    fn a_list_out_of_order_is_refused() {
        let bytes = postcard::to_allocvec(&vec![(5u64, MessageId(1)), (0u64, MessageId(2))])
            .expect("encodes");
        assert!(postcard::from_bytes::<SentKeys>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&vec![(u64::MAX, MessageId(1)), (1u64, MessageId(2))])
            .expect("encodes");
        assert!(postcard::from_bytes::<SentKeys>(&bytes).is_err());
    }
}
