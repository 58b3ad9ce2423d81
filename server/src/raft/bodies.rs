//! Message bodies, read back from the archive through a cache bounded in
//! bytes. Queries take message ids under the state lock; the bodies are read
//! here, after the lock is released, so a disk read never holds up applying.
//! Applying puts each new message in the cache as it archives it: the pages
//! people open first (the newest) are read from memory.

use std::sync::Arc;

use log_format::ArchiveReader;
use log_format::events::{ArchivedMessage, MessageId};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// What a cached body costs beyond its bytes: the entry, the `Arc` and the
/// message's other fields. A rough figure; it only has to keep the bound
/// honest for short bodies.
const ENTRY_OVERHEAD: u64 = 96;

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
