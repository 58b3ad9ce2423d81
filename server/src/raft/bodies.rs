//! Message bodies, read back from the archive through a cache bounded in
//! bytes. Queries take message ids under the state lock; the bodies are read
//! here, after the lock is released, so a disk read never holds up applying.
//! Applying puts each new message in the cache as it archives it: the pages
//! people open first (the newest) are read from memory. A search's scan
//! ([`Bodies::scan`]) reads through the cache but leaves it as it was.

use std::ops::ControlFlow;
use std::sync::Arc;

use log_format::events::{ArchivedMessage, MessageId};
use log_format::{ArchiveReader, ScanEnd};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Ids a [`Bodies::scan`] looks up in the cache before it reads the misses
/// from the archive: the first window, and the largest it grows to. A scan
/// that stops early (a search whose page fills at once) looks up few; a
/// long one reads the archive in large spans.
const SCAN_WINDOW: (usize, usize) = (256, 8192);

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
        Bodies { reader, cache }
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
            for id in ids {
                cache.remove(id);
            }
        }
    }

    /// Forgets everything (a snapshot from the leader replaced the archive).
    pub fn forget_all(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
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
}
