//! One sender's idempotency index: the 64-bit hash of each client message
//! id it used, with the message that id made.
//!
//! A hash table of every key ever sent was the largest part of the state
//! (at power-of-two capacity, ~28 bytes per message) and, while a snapshot
//! loaded, the slowest to rebuild (every key hashed and inserted again).
//! Here most keys sit in one vector sorted by hash, 16 bytes each, looked
//! up by binary search; keys sent since the last merge sit in a small
//! table that is sorted into the vector once it holds an eighth as many.
//! A snapshot writes the keys in hash order as differences from the one
//! before (shorter varints), and reading it back is a sequential push.
//! The sorted vector is shared: a copy of the state (what a snapshot is
//! encoded from) shares it until a merge replaces it.

use std::fmt;
use std::sync::Arc;

use log_format::events::MessageId;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::HashMap;

/// The table of recent keys is merged into the sorted vector once it holds
/// this many, or an eighth of the vector if that is more: each key is
/// moved about eight times on average, and lookups stay two probes. Kept
/// small because every sender has such a table: at 1,024 each of 5,000
/// senders held ~35 KB of buckets while serving that a restart (which
/// loads every key into the vector) does not have; 112 keys fit a table of
/// 128 buckets (~2 KB).
const MERGE_AT_LEAST: usize = 112;

/// More than this many keys is not a list this server wrote.
const MAX_PRESIZE: usize = 1 << 28;

#[derive(Debug, Clone, Default)]
pub struct SentKeys {
    /// Ascending by hash, each hash once.
    sorted: Arc<Vec<(u64, MessageId)>>,
    /// Keys added since the last merge; none of them is in `sorted`.
    recent: HashMap<u64, MessageId>,
}

impl SentKeys {
    pub fn get(&self, key: u64) -> Option<MessageId> {
        if let Some(&id) = self.recent.get(&key) {
            return Some(id);
        }
        let at = find(&self.sorted, key).ok()?;
        Some(self.sorted[at].1)
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
        if self.sorted.iter().any(|(_, id)| !keep(*id)) {
            Arc::make_mut(&mut self.sorted).retain(|(_, id)| keep(*id));
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
            a: self.sorted.iter().copied().peekable(),
            b: recent.into_iter().peekable(),
        }
    }

    /// Sorts the recent keys into the vector, which grows to exactly the
    /// length it needs.
    fn merge(&mut self) {
        let mut merged = Vec::with_capacity(self.len());
        merged.extend(self.iter());
        self.sorted = Arc::new(merged);
        self.recent = HashMap::default();
    }
}

/// Where `key` is in `sorted` (or would go). The keys are hashes, spread
/// evenly over the `u64` range, so a key's place is close to
/// `key / 2^64 * len` (within about the square root of `len`): the search
/// starts there and widens until it brackets the key, then halves. That
/// touches a few neighbouring cache lines where a binary search over
/// millions of keys misses the cache at nearly every one of its ~20 steps.
/// Keys spread unevenly are still found, only in more steps.
fn find(sorted: &[(u64, MessageId)], key: u64) -> Result<usize, usize> {
    let n = sorted.len();
    if n == 0 {
        return Err(0);
    }
    let guess = ((u128::from(key) * n as u128) >> 64) as usize;
    let (mut lo, mut hi) = (guess, guess + 1);
    let mut step = 1;
    // Widen downwards until sorted[lo] <= key (or lo is 0) ...
    while lo > 0 && sorted[lo].0 > key {
        hi = lo;
        lo = lo.saturating_sub(step);
        step *= 2;
    }
    // ... and upwards until key < sorted[hi] (or hi is n).
    step = 1;
    while hi < n && sorted[hi].0 <= key {
        lo = hi;
        hi = (hi + step).min(n);
        step *= 2;
    }
    match sorted[lo..hi].binary_search_by_key(&key, |e| e.0) {
        Ok(i) => Ok(lo + i),
        Err(i) => Err(lo + i),
    }
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
            sorted: Arc::new(sorted),
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
        /// The search finds every key and the place of every absent one,
        /// for keys spread evenly or bunched together.
        #[test]
        fn find_agrees_with_a_binary_search(
            mut keys in prop::collection::vec(any::<u64>(), 0..3000),
            bunched in any::<bool>(),
            probes in prop::collection::vec(any::<u64>(), 50),
        ) {
            if bunched {
                for k in &mut keys {
                    *k >>= 40;
                }
            }
            keys.sort_unstable();
            keys.dedup();
            let sorted: Vec<(u64, MessageId)> = keys.iter().map(|k| (*k, MessageId(*k))).collect();
            for probe in keys.iter().copied().chain(probes.iter().map(|p| if bunched { p >> 40 } else { *p })) {
                prop_assert_eq!(find(&sorted, probe), sorted.binary_search_by_key(&probe, |e| e.0));
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
