//! openraft's log storage on our log: entries are records, and the vote,
//! the committed id and the last purged id are state files beside the
//! segments. An append returns as soon as its records are queued (they are
//! readable at once); the flush callback fires when they are on disk.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log_format::{COMMITTED_FILE, Log, PURGED_FILE, StateFile, VOTE_FILE};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageIOError, Vote};

use super::{
    NodeId, RaftEntry, StorageError, TypeConfig, entry_to_record, log_id_of, record_to_entry,
};

/// The committed id is only a hint for a faster restart (Raft re-learns it
/// from a quorum), so it is written at most this often.
const COMMITTED_PERSIST_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    vote: StateFile,
    committed_file: StateFile,
    purged_file: StateFile,
    /// The last purged id, in memory (the file is the durable copy).
    purged: Mutex<Option<LogId<NodeId>>>,
    committed: Mutex<CommittedHint>,
}

#[derive(Debug)]
struct CommittedHint {
    value: Option<LogId<NodeId>>,
    persisted: Option<LogId<NodeId>>,
    last_write: Option<Instant>,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: &log_format::Error) -> StorageError {
    StorageIOError::new(subject, verb, e).into()
}

fn decode_err(index: u64, e: &log_format::events::DecodeError) -> StorageError {
    StorageIOError::read_log_at_index(index, e).into()
}

impl LogStore {
    /// The store over `log`, with its state files in `dir`.
    pub fn open(log: Log, dir: &Path) -> Result<LogStore, log_format::Error> {
        let purged_file = StateFile::new(dir, PURGED_FILE);
        let purged = purged_file.load::<Option<LogId<NodeId>>>()?.flatten();
        let committed_file = StateFile::new(dir, COMMITTED_FILE);
        // A damaged hint is not worth refusing to start over: Raft re-learns it.
        let committed = committed_file
            .load::<Option<LogId<NodeId>>>()
            .unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable committed-index hint: {e}");
                None
            })
            .flatten();
        Ok(LogStore {
            inner: Arc::new(Inner {
                log,
                vote: StateFile::new(dir, VOTE_FILE),
                committed_file,
                purged_file,
                purged: Mutex::new(purged),
                committed: Mutex::new(CommittedHint {
                    value: committed,
                    persisted: committed,
                    last_write: None,
                }),
            }),
        })
    }

    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The committed id saved by the last run (a lower bound of the truth).
    pub fn committed_hint(&self) -> Option<LogId<NodeId>> {
        self.inner.committed.lock().expect("lock").value
    }

    pub fn last_purged(&self) -> Option<LogId<NodeId>> {
        *self.inner.purged.lock().expect("lock")
    }

    /// Writes the latest committed id if it has not been written yet
    /// (called at shutdown).
    ///
    /// Never a record this replica has not synced: openraft 0.9 may tell a
    /// follower an index is committed before its own copy is on disk, and
    /// the hint must not claim what a crash could take (start-up refuses a
    /// log that ends before it). Such a hint waits for a later call.
    pub fn persist_committed(&self) -> Result<(), log_format::Error> {
        let mut c = self.inner.committed.lock().expect("lock");
        let durable = c
            .value
            .is_none_or(|id| id.index < self.inner.log.durable_next_index());
        if c.value != c.persisted && durable {
            self.inner.committed_file.store(&c.value)?;
            c.persisted = c.value;
            c.last_write = Some(Instant::now());
        }
        Ok(())
    }

    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<RaftEntry>, StorageError> {
        let first = self.inner.log.first_index();
        let purged_next = self.last_purged().map_or(0, |p| p.index + 1);
        let start = start.max(first).max(purged_next);
        if start >= end {
            return Ok(Vec::new());
        }
        let records = self
            .inner
            .log
            .read(start..end)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        records
            .iter()
            .map(|r| record_to_entry(r).map_err(|e| decode_err(r.index, &e)))
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e + 1,
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        self.read_entries(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged = self.last_purged();
        let log = &self.inner.log;
        let next = log.next_index();
        let has_entries_after_purge =
            next > log.first_index() && purged.is_none_or(|p| next - 1 > p.index);
        let last = if has_entries_after_purge {
            let rec = log
                .get(next - 1)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?
                .expect("the last record exists");
            Some(log_id_of(&rec).map_err(|e| decode_err(rec.index, &e))?)
        } else {
            purged
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.inner
            .vote
            .store(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.inner
            .vote
            .load()
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        let due = {
            let mut c = self.inner.committed.lock().expect("lock");
            c.value = committed;
            c.last_write
                .is_none_or(|t| t.elapsed() >= COMMITTED_PERSIST_INTERVAL)
        };
        if due {
            self.persist_committed()
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.committed_hint())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<_> = entries.into_iter().map(|e| entry_to_record(&e)).collect();
        let Some(first) = records.first() else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let log = &self.inner.log;
        // An empty log may start anywhere (after a snapshot, or in
        // openraft's test suite); a log with entries must continue.
        if log.first_index() == log.next_index() && first.index > log.next_index() {
            log.purge_before(first.index)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        }
        let ticket = log
            .submit(&records)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        let log = log.clone();
        tokio::task::spawn_blocking(move || {
            let result = log.wait(ticket).map_err(std::io::Error::other);
            callback.log_io_completed(result);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.inner
            .log
            .truncate_from(log_id.index)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Durable first: a crash after this leaves extra records, never a
        // log that claims less was purged than is missing.
        self.inner
            .purged_file
            .store(&Some(log_id))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        *self.inner.purged.lock().expect("lock") = Some(log_id);
        self.inner
            .log
            .purge_before(log_id.index + 1)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
