//! Message bodies, read back from the archive through a cache bounded in
//! bytes. Queries take message ids under the state lock; the bodies are read
//! here, after the lock is released, so a disk read never holds up applying.
//! Applying puts each new message in the cache as it archives it: the pages
//! people open first (the newest) are read from memory. A search's scan
//! ([`Bodies::scan`]) reads through the cache but leaves it as it was.
//! A restarted server fills the cache from the newest end of the archive
//! ([`Bodies::warm`]), what reconnecting clients read first.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log_format::events::{ArchivedMessage, MessageId};
use log_format::{ArchiveReader, ScanEnd};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Ids a [`Bodies::scan`] looks up in the cache before it reads the misses
/// from the archive: the first window, and the largest it grows to. A scan
/// that stops early (a search whose page fills at once) looks up few; a
/// long one reads the archive in large spans.
const SCAN_WINDOW: (usize, usize) = (256, 8192);

/// Ids a [`Bodies::warm`] reads at a time, newest first: the smallest
/// window, and the largest it grows to where the archive holds few
/// messages among the ids (most events are not messages, or were erased).
/// It shrinks again where they are dense, so one read holds at most a
/// few MiB of bodies.
const WARM_WINDOW: (u64, u64) = (4096, 1 << 16);

/// A warm-up stops once the cache, or the shard of the cache the next
/// body goes to, holds all but this fraction of its bound: a full shard
/// would evict, and what it evicted first would be the newest bodies the
/// warm-up put in. (Bodies hash evenly over the shards, so the shards
/// fill together: at the default 64 MiB, within a few per cent.)
const WARM_HEADROOM: u64 = 32;

/// What a cached message costs in memory beyond its body's bytes: the
/// `Arc`'d message (64 bytes), the body's allocation rounded up to its size
/// class, and the cache's own share (its slab slot, the ghost slots of
/// recently evicted ids, the hash table, and the slab's doubling), ~200
/// bytes all told. Counted with an allocator that tallies live bytes, 100-byte
/// bodies in a 64 MiB cache: 96 here held 103.5 MiB, 200 holds 63.5 MiB.
/// Too low a figure makes the bound a fiction for the short bodies chat is
/// made of; too high only keeps a few fewer of them.
const ENTRY_OVERHEAD: u64 = 200;

/// Weighs a cached message by its size in memory.
#[derive(Debug, Clone, Copy)]
struct BySize;

impl Weighter<MessageId, Arc<ArchivedMessage>> for BySize {
    fn weight(&self, _: &MessageId, m: &Arc<ArchivedMessage>) -> u64 {
        m.body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// The bodies of stored messages: the archive behind a byte-bounded cache.
pub struct Bodies {
    reader: ArchiveReader,
    /// `None` when the cache is configured to 0 bytes.
    cache: Option<Cache<MessageId, Arc<ArchivedMessage>, BySize>>,
    /// `Some` while [`Bodies::warm`] runs: what was forgotten since it
    /// began, which it must not put back (it may have read those bodies
    /// from the archive before they were forgotten).
    warming: Mutex<Option<HashSet<MessageId>>>,
    /// No warm-up is to run from here on: the archive was replaced
    /// ([`Bodies::forget_all`]) or the server is stopping
    /// ([`Bodies::stop_warming`]). Set under the `warming` lock by the
    /// former, so a warm-up puts nothing in after the cache is cleared.
    warm_stopped: AtomicBool,
}

/// What a [`Bodies::warm`] put in the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    pub messages: u64,
    /// Their weight in the cache: bodies and the cost of each entry.
    pub bytes: u64,
}

impl std::fmt::Debug for Bodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bodies")
            .field("cached", &self.cache.as_ref().map_or(0, |c| c.len()))
            .field(
                "cached_bytes",
                &self.cache.as_ref().map_or(0, |c| c.weight()),
            )
            .finish()
    }
}

impl Bodies {
    /// Bodies read through `reader`, with at most `cache_bytes` of them kept
    /// in memory.
    pub fn new(reader: ArchiveReader, cache_bytes: u64) -> Bodies {
        let cache = (cache_bytes > 0).then(|| {
            // A typical chat message is short: size the table for them.
            let items = (cache_bytes / (ENTRY_OVERHEAD + 64)).clamp(16, 1 << 22) as usize;
            Cache::with_weighter(items, cache_bytes, BySize)
        });
        Bodies {
            reader,
            cache,
            warming: Mutex::new(None),
            warm_stopped: AtomicBool::new(false),
        }
    }

    /// A reader of the archive itself.
    pub fn reader(&self) -> ArchiveReader {
        self.reader.clone()
    }

    /// Keeps a just-archived message hot.
    pub fn remember(&self, id: MessageId, message: Arc<ArchivedMessage>) {
        if let Some(cache) = &self.cache {
            cache.insert(id, message);
        }
    }

    /// Forgets erased messages, so their bodies leave memory with the disk.
    pub fn forget(&self, ids: &[MessageId]) {
        if let Some(cache) = &self.cache {
            let mut warming = self.warming();
            if let Some(forgotten) = warming.as_mut() {
                forgotten.extend(ids);
            }
            for id in ids {
                cache.remove(id);
            }
        }
    }

    /// Forgets everything (a snapshot from the leader replaced the archive).
    pub fn forget_all(&self) {
        if let Some(cache) = &self.cache {
            let _warming = self.warming();
            self.warm_stopped.store(true, Ordering::Relaxed);
            cache.clear();
        }
    }

    /// Ends a warm-up at its next read, and keeps any from starting: the
    /// server is stopping, and its runtime waits for the blocking pool (a
    /// warm-up into a cache of many GiB reads for seconds).
    pub fn stop_warming(&self) {
        self.warm_stopped.store(true, Ordering::Relaxed);
    }

    fn warming(&self) -> MutexGuard<'_, Option<HashSet<MessageId>>> {
        self.warming.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills the cache with the newest archived bodies, newest first,
    /// until the next would not fit: what clients read first when they
    /// come back after a restart (a `Subscribe` backlog since their
    /// cursor, the newest History page of each conversation), and what a
    /// server that had been serving would hold. It runs beside serving
    /// and evicts nothing: a body already cached (just sent or just read)
    /// is left as it is, and one forgotten meanwhile (erased) is not put
    /// back.
    pub fn warm(&self) -> log_format::Result<Warmed> {
        let (Some(cache), Some(last)) = (&self.cache, self.reader.last_id()) else {
            return Ok(Warmed::default());
        };
        let first = self.reader.first_id().unwrap_or(0);
        *self.warming() = Some(HashSet::new());
        let warmed = self.warm_below(cache, first, last);
        *self.warming() = None;
        warmed
    }

    /// [`Bodies::warm`] over the ids from `last` down to `first`.
    fn warm_below(
        &self,
        cache: &Cache<MessageId, Arc<ArchivedMessage>, BySize>,
        first: u64,
        last: u64,
    ) -> log_format::Result<Warmed> {
        let room = cache.capacity() - cache.capacity() / WARM_HEADROOM;
        let shard_room = cache.shard_capacity() - cache.shard_capacity() / WARM_HEADROOM;
        // What each shard holds: what was there (spread evenly) and what
        // the warm-up added.
        let shards = cache.num_shards();
        let mut in_shard = vec![cache.weight() / shards as u64; shards];
        let mut warmed = Warmed::default();
        let mut window = WARM_WINDOW.0;
        // Every id above `up_to` was looked at.
        let mut up_to = last;
        while up_to >= first && up_to > 0 {
            let after = up_to.saturating_sub(window);
            let read = (self.reader.range(after, up_to)).collect::<log_format::Result<Vec<_>>>()?;
            up_to = after;
            if (read.len() as u64) < window / 4 {
                window = (window * 2).min(WARM_WINDOW.1);
            } else if (read.len() as u64) > window / 2 {
                window = (window / 2).max(WARM_WINDOW.0);
            }
            let warming = self.warming();
            let Some(forgotten) = warming.as_ref() else {
                break;
            };
            if self.warm_stopped.load(Ordering::Relaxed) {
                break;
            }
            for (id, message) in read.into_iter().rev() {
                let id = MessageId(id);
                if forgotten.contains(&id) || cache.contains_key(&id) {
                    continue;
                }
                let message = Arc::new(message);
                let weight = BySize.weight(&id, &message);
                let shard = cache.shard_index(&id);
                if in_shard[shard] + weight > shard_room || cache.weight() + weight > room {
                    return Ok(warmed);
                }
                in_shard[shard] += weight;
                cache.insert(id, message);
                warmed.messages += 1;
                warmed.bytes += weight;
            }
        }
        Ok(warmed)
    }

    /// The messages `ids` name if the cache holds every one of them.
    pub fn all_cached(&self, ids: &[MessageId]) -> Option<Vec<Option<Arc<ArchivedMessage>>>> {
        let cache = self.cache.as_ref()?;
        ids.iter().map(|id| cache.get(id).map(Some)).collect()
    }

    /// The messages `ids` name, in the same order; `None` for one that is no
    /// longer archived (erased since its id was read).
    pub fn get_many(
        &self,
        ids: &[MessageId],
    ) -> log_format::Result<Vec<Option<Arc<ArchivedMessage>>>> {
        let mut out: Vec<Option<Arc<ArchivedMessage>>> = match &self.cache {
            Some(cache) => ids.iter().map(|id| cache.get(id)).collect(),
            None => vec![None; ids.len()],
        };
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<u64> = missing.iter().map(|&i| ids[i].0).collect();
        let read = self.reader.get_many(&wanted)?;
        for (i, message) in missing.into_iter().zip(read) {
            if let Some(m) = message {
                let m = Arc::new(m);
                self.remember(ids[i], Arc::clone(&m));
                out[i] = Some(m);
            }
        }
        Ok(out)
    }

    /// Hands `visit` each message `ids` (strictly descending) name, newest
    /// first, until it breaks or the archive reads have taken
    /// `read_budget` bytes; a message no longer archived is skipped.
    ///
    /// Bodies the cache holds are taken from it; the others are read from
    /// the archive in large spans ([`ArchiveReader::scan_back`]) and looked
    /// at in place. The cache is left as it was: nothing is added and what
    /// is found is not marked as used, so a search that passes over a
    /// hundred thousand old messages does not push out the recent ones
    /// people read.
    pub fn scan(
        &self,
        ids: &[MessageId],
        mut read_budget: u64,
        mut visit: impl FnMut(MessageId, &str, u64) -> ControlFlow<()>,
    ) -> log_format::Result<ScanEnd> {
        let mut window = SCAN_WINDOW.0;
        let mut rest = ids;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(window.min(rest.len()));
            rest = later;
            window = (window * 2).min(SCAN_WINDOW.1);
            let mut cached = Vec::new();
            let mut missing = Vec::new();
            for &id in now {
                match self.cache.as_ref().and_then(|c| c.peek(&id)) {
                    Some(m) => cached.push((id, m)),
                    None => missing.push(id.0),
                }
            }
            // Both descending: merge them, so `visit` sees one order.
            let mut cached = cached.into_iter().peekable();
            let end = self.reader.scan_back(&missing, &mut read_budget, |id, m| {
                while let Some((newer, c)) = cached.next_if(|(c, _)| c.0 > id) {
                    visit(newer, &c.body, c.at_ms)?;
                }
                visit(MessageId(id), m.body, m.at_ms)
            })?;
            // The cached messages left: all of them, or those above where
            // the reads stopped.
            let below = match end {
                ScanEnd::Stopped => return Ok(end),
                ScanEnd::Done => 0,
                ScanEnd::OutOfReads { next } => next,
            };
            for (id, c) in cached.take_while(|(id, _)| id.0 > below) {
                if visit(id, &c.body, c.at_ms).is_break() {
                    return Ok(ScanEnd::Stopped);
                }
            }
            if end != ScanEnd::Done {
                return Ok(end);
            }
        }
        Ok(ScanEnd::Done)
    }

    /// Messages in the cache.
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// What the cache weighs, in bytes.
    #[cfg(test)]
    pub fn cached_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }

    /// One message, as [`Bodies::get_many`].
    pub fn get(&self, id: MessageId) -> log_format::Result<Option<Arc<ArchivedMessage>>> {
        Ok(self.get_many(&[id])?.pop().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_format::events::{AccountId, ConversationId};
    use log_format::{Archive, ArchiveConfig};

    fn message(i: u64) -> ArchivedMessage {
        ArchivedMessage {
            conversation: ConversationId(1),
            from: AccountId(2),
            at_ms: i,
            body: format!("body {i} {}", "x".repeat(200)),
        }
    }

    /// Reading far more than the cache holds returns every body right, and
    /// the cache stays within its bound.
    #[test]
    fn reads_past_a_small_cache_return_the_right_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let config = ArchiveConfig {
            segment_size: 16 << 10,
            sparse_every: 512,
        };
        let mut archive = Archive::open(dir.path(), config).unwrap();
        let all: Vec<(u64, ArchivedMessage)> = (1..=2_000).map(|i| (i * 10, message(i))).collect();
        let refs: Vec<_> = all.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
        let bound = 8 << 10;
        let bodies = Bodies::new(archive.reader(), bound);
        for round in 0..2 {
            for chunk in all.chunks(50) {
                let ids: Vec<MessageId> = chunk.iter().map(|(id, _)| MessageId(*id)).collect();
                let got = bodies.get_many(&ids).unwrap();
                for ((_, want), got) in chunk.iter().zip(got) {
                    assert_eq!(got.as_deref(), Some(want), "round {round}");
                }
                let weight = bodies.cache.as_ref().unwrap().weight();
                assert!(weight <= bound, "{weight} cached bytes");
            }
        }
        // Ids never archived, and an uncached reader, answer too.
        assert_eq!(bodies.get(MessageId(15)).unwrap(), None);
        let uncached = Bodies::new(archive.reader(), 0);
        assert_eq!(
            uncached.get(MessageId(20)).unwrap().as_deref(),
            Some(&all[1].1)
        );
    }

    /// An archive of `n` messages with ids 10, 20, ..., and 100,000 ids
    /// with none after the first 100 (a sparse stretch the warm-up's
    /// window grows over).
    fn archive_of(n: u64) -> (tempfile::TempDir, Archive, Vec<(u64, ArchivedMessage)>) {
        let dir = tempfile::tempdir().unwrap();
        let config = ArchiveConfig {
            segment_size: 64 << 10,
            sparse_every: 64,
        };
        let mut archive = Archive::open(dir.path(), config).unwrap();
        let id = |i: u64| if i <= 100 { i * 10 } else { 100_000 + i * 10 };
        let all: Vec<(u64, ArchivedMessage)> = (1..=n).map(|i| (id(i), message(i))).collect();
        let refs: Vec<_> = all.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
        (dir, archive, all)
    }

    /// A warm-up fills the cache with the newest bodies, newest first, up
    /// to its bound and without evicting any of them; the reads after it
    /// are answered from memory.
    #[test]
    fn a_warm_up_caches_the_newest_bodies_up_to_the_bound() {
        let (_dir, archive, all) = archive_of(20_000);
        let bound = 1 << 20;
        let bodies = Bodies::new(archive.reader(), bound);
        // One body already cached (a message just sent) stays as it is.
        let (newest, sent) = all.last().unwrap();
        bodies.remember(MessageId(*newest), Arc::new(sent.clone()));
        let warmed = bodies.warm().unwrap();
        let cache = bodies.cache.as_ref().unwrap();
        assert_eq!(warmed.messages as usize + 1, cache.len(), "evicted nothing");
        assert!(cache.weight() <= bound);
        assert!(
            cache.weight() > bound / 4 * 3,
            "filled to its first full shard: {} of {bound}",
            cache.weight()
        );
        // Exactly the newest ones, with their bodies.
        let (older, newer) = all.split_at(all.len() - cache.len());
        for (id, m) in newer {
            assert_eq!(cache.peek(&MessageId(*id)).as_deref(), Some(m), "id {id}");
        }
        assert!(
            older
                .iter()
                .all(|(id, _)| !cache.contains_key(&MessageId(*id)))
        );

        // A bound larger than the archive takes every body, across the
        // sparse stretch and down to the first.
        let (_dir, archive, all) = archive_of(2_000);
        let bodies = Bodies::new(archive.reader(), 64 << 20);
        let warmed = bodies.warm().unwrap();
        assert_eq!(warmed.messages, 2_000);
        for (id, m) in &all {
            let cached = bodies.cache.as_ref().unwrap().peek(&MessageId(*id));
            assert_eq!(cached.as_deref(), Some(m), "id {id}");
        }
        // Nothing to do without a cache or an archive.
        assert_eq!(
            Bodies::new(archive.reader(), 0).warm().unwrap(),
            Warmed::default()
        );
        let (_empty, archive, _) = archive_of(0);
        assert_eq!(
            Bodies::new(archive.reader(), 1 << 20).warm().unwrap(),
            Warmed::default()
        );
    }

    /// A body forgotten (erased) while a warm-up runs is not put back,
    /// though the warm-up may have read it before it was forgotten; after
    /// `forget_all` (the archive replaced) or `stop_warming` (the server
    /// stopping) the warm-up stops.
    #[test]
    fn a_warm_up_does_not_put_back_what_was_forgotten() {
        let (_dir, archive, all) = archive_of(500);
        let bodies = Bodies::new(archive.reader(), 64 << 20);
        let cache = bodies.cache.as_ref().unwrap();
        let erased = [MessageId(all[499].0), MessageId(all[3].0)];
        // As `warm` begins, then an erasure during its reads.
        *bodies.warming() = Some(HashSet::new());
        bodies.forget(&erased);
        let warmed = bodies.warm_below(cache, 0, all[499].0).unwrap();
        assert_eq!(warmed.messages, 498);
        assert!(erased.iter().all(|id| !cache.contains_key(id)));

        cache.clear();
        bodies.forget_all();
        assert_eq!(
            bodies.warm_below(cache, 0, all[499].0).unwrap(),
            Warmed::default()
        );
        assert!(cache.is_empty());
        *bodies.warming() = None;
        // Outside a warm-up nothing is remembered of what was forgotten.
        bodies.forget(&erased);
        assert!(bodies.warming().is_none());

        // Stopping the server stops it too, and leaves the cache alone.
        let stopping = Bodies::new(archive.reader(), 64 << 20);
        stopping.remember(erased[0], Arc::new(all[499].1.clone()));
        stopping.stop_warming();
        assert_eq!(stopping.warm().unwrap(), Warmed::default());
        assert_eq!(stopping.cache.as_ref().unwrap().len(), 1);
    }
}
