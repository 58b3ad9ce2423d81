//! openraft's state machine: the chat indexes, applied entry by entry, plus
//! snapshots of them. Applying pushes the resulting feed events to the
//! [`Hub`] and advances a watch of the applied index, which reads wait on
//! for read-your-writes.
//!
//! A snapshot is built without stopping writes: encoding the live state
//! under its lock would stop applying for as long as the encoding takes
//! (~0.5 s per million messages), so the builder copies the state under
//! the lock and encodes the copy on a blocking thread, off the lock. The
//! copy shares its accounts, conversations and key lists with the live
//! state (`Arc`s, copied on write), so it costs milliseconds and, while
//! it lives, only what the live state changes meanwhile. (It used to
//! decode the previous snapshot and replay the log since: a second whole
//! state in memory during every build, near double the serving memory at
//! ten million messages.)
//!
//! Message bodies are not in the state: applying appends each new message
//! to the archive ([`log_format::Archive`]) before the state shows it, so
//! any id a query finds is readable. The archive is synced before a
//! snapshot is saved, and the messages erased since the last snapshot are
//! erased from it then; at start-up the replay of the log after the
//! snapshot appends what it does not hold yet (what it holds came from
//! committed entries, which never change). A snapshot
//! holds only the indexes; shipped to another replica it carries the
//! archived messages as well ([`super::ship`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use anyhow::Context as _;
use log_format::events::{ArchivedMessage, MessageId, cursor_through, position};
use log_format::{Archive, Log, StateBytes, StateFile};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::bodies::Bodies;
use super::ship::{self, ShipData, ShipSource};
use super::{NodeAddr, NodeId, RaftEntry, StorageError, TypeConfig, record_to_entry};
use crate::hub::{Ended, Hub};
use crate::state::{Applied, ChatState, Fanout};

pub use log_format::SNAPSHOT_FILE;
/// Present while a snapshot from the leader replaces the archive: a crash
/// then leaves an archive that matches neither snapshot.
pub const INSTALLING_FILE: &str = "installing-snapshot";

/// What starts a snapshot's data, before the postcard encoding of the state.
const SNAPSHOT_MAGIC: &[u8; 8] = b"chatsnap";
/// The layout of `ChatState` a snapshot holds. Any change to the state's
/// types (a field, a map's hasher, the meaning of ids) changes it: a
/// snapshot of another version is refused with a clear error instead of
/// being misread.
pub const SNAPSHOT_VERSION: u16 = 6;

/// Why snapshot data cannot be turned back into a state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "the snapshot was written by a build with another state layout (version {found}, this build reads {SNAPSHOT_VERSION})"
    )]
    Version { found: String },
    #[error("the snapshot does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// Writes `state` as snapshot data to `out`: magic, version, postcard.
fn write_state(state: &ChatState, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    out.write_all(SNAPSHOT_MAGIC)?;
    out.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
    postcard::to_io(state, out).map_err(std::io::Error::other)?;
    Ok(())
}

/// How many bytes [`write_state`] writes for `state`.
fn state_len(state: &ChatState) -> Result<usize, postcard::Error> {
    Ok(SNAPSHOT_MAGIC.len() + 2 + postcard::experimental::serialized_size(state)?)
}

/// `state` as snapshot data, as [`write_state`] writes it.
#[cfg(test)]
fn encode_state(state: &ChatState) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::new();
    write_state(state, &mut out).map_err(|_| postcard::Error::SerializeBufferFull)?;
    Ok(out)
}

/// Decodes snapshot data written by [`encode_state`] of this version.
fn decode_state(data: &[u8]) -> Result<ChatState, SnapshotError> {
    let header = SNAPSHOT_MAGIC.len() + 2;
    match data.split_at_checked(header) {
        Some((head, rest)) if head.starts_with(SNAPSHOT_MAGIC) => {
            let version = u16::from_le_bytes([head[8], head[9]]);
            if version != SNAPSHOT_VERSION {
                return Err(SnapshotError::Version {
                    found: version.to_string(),
                });
            }
            Ok(postcard::from_bytes(rest)?)
        }
        // Written before snapshots carried a version.
        _ => Err(SnapshotError::Version {
            found: "1, unmarked".into(),
        }),
    }
}

/// The state machine handle; clones share everything.
#[derive(Debug, Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<ChatState>,
    meta: Mutex<Applying>,
    /// The index of the last applied entry (0 before anything is applied).
    applied: watch::Sender<u64>,
    /// Chat events applied since the state the latest snapshot holds.
    since_snapshot: AtomicU64,
    hub: Arc<Hub>,
    snapshot_file: StateFile,
    /// What the stored snapshot is of; its data stays on disk.
    current_snapshot: Mutex<Option<SnapshotMeta<NodeId, NodeAddr>>>,
    /// The message bodies: appended as messages are applied.
    archive: Mutex<Archive>,
    bodies: Bodies,
    dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
struct Applying {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
}

impl Applying {
    /// Where applying stands once the snapshot described by `meta` is the
    /// state.
    fn at(meta: &SnapshotMeta<NodeId, NodeAddr>) -> Applying {
        Applying {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        }
    }
}

/// A snapshot as stored on disk and sent to other replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    /// The `ChatState`, as [`encode_state`] writes it. Bytes, not a
    /// sequence of u8 (the same encoding in postcard, but read in one copy
    /// instead of byte by byte: a sixth of a restart over 1M messages).
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// What start-up replay did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replayed {
    pub records: u64,
    /// The chat events in those records.
    pub events: u64,
    pub last_applied: u64,
}

/// A stored snapshot read in place: its data borrowed from the file's
/// bytes, not copied (at 10M messages, hundreds of MB held for nothing).
#[derive(Deserialize)]
struct StoredSnapshotRef<'a> {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    #[serde(borrow)]
    data: &'a [u8],
}

/// The stored snapshot as its file holds it: the encoded state is used
/// where it lies in the file's bytes, not copied out of them.
struct SnapshotOnDisk {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    file: StateBytes,
    /// Where the encoded state lies in `file`.
    data: std::ops::Range<usize>,
}

impl SnapshotOnDisk {
    /// Reads the snapshot stored in `file`, if there is one.
    fn read(file: &StateFile) -> anyhow::Result<Option<SnapshotOnDisk>> {
        let Some(bytes) = file.load_bytes()? else {
            return Ok(None);
        };
        let stored: StoredSnapshotRef<'_> = postcard::from_bytes(&bytes)
            .with_context(|| format!("cannot decode the snapshot in {}", file.path().display()))?;
        let start = stored.data.as_ptr().addr() - bytes.as_ptr().addr();
        let data = start..start + stored.data.len();
        Ok(Some(SnapshotOnDisk {
            meta: stored.meta,
            file: bytes,
            data,
        }))
    }

    /// The encoded state, as [`encode_state`] wrote it.
    fn data(&self) -> &[u8] {
        &self.file[self.data.clone()]
    }
}

/// The stored snapshot, read and decoded: the first half of a restore, which
/// needs no log (so it can run while the log is opened). Only the state and
/// what the snapshot is of are kept; its bytes are dropped once decoded.
#[derive(Debug)]
pub struct Loaded {
    meta: Option<SnapshotMeta<NodeId, NodeAddr>>,
    state: ChatState,
    /// Why the stored snapshot was set aside: written with another state
    /// layout, so the state must come from the log alone.
    outdated: Option<anyhow::Error>,
}

impl StateMachine {
    /// Reads and decodes the snapshot stored in `dir`, if there is one.
    pub fn load_snapshot(dir: &Path) -> Result<Loaded, anyhow::Error> {
        let stored = SnapshotOnDisk::read(&StateFile::new(dir, SNAPSHOT_FILE))?;
        let meta = stored.as_ref().map(|s| s.meta.clone());
        let refused = |e: SnapshotError| {
            anyhow::Error::new(e).context(format!(
                "cannot restore the snapshot in {}; if this replica belongs to a cluster, rebuild it from the cluster (README: \"Rebuilding a damaged replica\"), or start it with the build that wrote the snapshot",
                dir.join(SNAPSHOT_FILE).display()
            ))
        };
        match stored.as_ref().map(|s| decode_state(s.data())) {
            None => Ok(Loaded {
                meta,
                state: ChatState::default(),
                outdated: None,
            }),
            Some(Ok(state)) => Ok(Loaded {
                meta,
                state,
                outdated: None,
            }),
            // Another build's layout: the whole log can stand in for it, if
            // it still reaches back to the start (see `restore`).
            Some(Err(e @ SnapshotError::Version { .. })) => Ok(Loaded {
                meta: None,
                state: ChatState::default(),
                outdated: Some(refused(e)),
            }),
            Some(Err(e)) => Err(refused(e)),
        }
    }

    /// Restores the state: the `loaded` snapshot, then every log record up
    /// to `committed` (records after it may not be committed and are left
    /// for Raft to apply). Replayed messages the `archive` does not hold
    /// yet are appended to it; bodies are cached up to `body_cache` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        dir: &Path,
        log: &Log,
        committed: Option<LogId<NodeId>>,
        hub: Arc<Hub>,
        loaded: Loaded,
        mut archive: Archive,
        body_cache: u64,
    ) -> Result<(StateMachine, Replayed), anyhow::Error> {
        let installing = dir.join(INSTALLING_FILE);
        if installing.exists() {
            anyhow::bail!(
                "{} says this server stopped while it installed a snapshot from its leader, so its message archive is incomplete; rebuild this replica from its cluster (README: \"Rebuilding a damaged replica\")",
                installing.display()
            );
        }
        let snapshot_file = StateFile::new(dir, SNAPSHOT_FILE);
        let Loaded {
            meta,
            mut state,
            outdated,
        } = loaded;
        if let Some(refusal) = outdated {
            if log.first_index() > 1 {
                return Err(refusal);
            }
            tracing::warn!(
                "the snapshot in {} has another build's state layout; rebuilding the state from the whole log instead (the next snapshot replaces it)",
                dir.display()
            );
        }
        let mut applying = meta.as_ref().map_or_else(Applying::default, Applying::at);
        let mut replayed = Replayed::default();
        if let Some(committed) = committed {
            let start = applying
                .last_applied
                .map_or(0, |l| l.index + 1)
                .max(log.first_index());
            replayed = replay(
                log,
                start,
                committed.index,
                &mut state,
                &mut applying,
                Some(&mut archive),
            )?;
        }
        replayed.last_applied = applying.last_applied.map_or(0, |l| l.index);
        let (applied, _) = watch::channel(replayed.last_applied);
        let sm = StateMachine {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                meta: Mutex::new(applying),
                applied,
                since_snapshot: AtomicU64::new(replayed.events),
                hub,
                snapshot_file,
                current_snapshot: Mutex::new(meta),
                bodies: Bodies::new(archive.reader(), body_cache),
                archive: Mutex::new(archive),
                dir: dir.to_path_buf(),
            }),
        };
        Ok((sm, replayed))
    }

    /// Read access to the chat state. Never hold it across an `.await`.
    pub fn state(&self) -> RwLockReadGuard<'_, ChatState> {
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// The bodies of stored messages.
    pub fn bodies(&self) -> &Bodies {
        &self.shared.bodies
    }

    /// A receiver of the applied index, for read-your-writes waits.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    pub fn applied_index(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// How many chat events were applied since the state of the latest
    /// snapshot.
    pub fn events_since_snapshot(&self) -> u64 {
        self.shared.since_snapshot.load(Ordering::Relaxed)
    }

    /// The cursor that covers everything applied: every event id up to it
    /// is in the state.
    pub fn applied_cursor(&self) -> u64 {
        cursor_through(self.applied_index())
    }

    /// A copy of the state as applied now, and what it is a snapshot of.
    /// Taken under the state's read lock, so that applying waits only for
    /// the copy, which is cheap and small: it shares every account,
    /// conversation and list of idempotency keys with the live state,
    /// which copies one only when it changes it while the copy lives.
    fn copy_state(&self) -> (SnapshotMeta<NodeId, NodeAddr>, ChatState) {
        // Nothing is applied while the state is read-locked: the applied
        // id, the count of events since the snapshot and the copy are taken
        // at one point.
        let state = self.state();
        self.shared.since_snapshot.store(0, Ordering::Relaxed);
        let applying = self.shared.meta.lock().expect("lock").clone();
        (snapshot_meta(applying), state.clone())
    }

    /// Builds and saves a snapshot of what is applied now, without
    /// stopping writes: the state is copied (see [`Self::copy_state`]),
    /// and the copy is encoded into the snapshot file as it is written,
    /// after the archive is settled.
    fn build_and_keep(&self) -> Result<SnapshotMeta<NodeId, NodeAddr>, StorageError> {
        let started = std::time::Instant::now();
        tracing::info!("building a snapshot");
        let (meta, copy) = self.copy_state();
        let copied = started.elapsed();
        self.settle_archive(&meta)?;
        let len = state_len(&copy)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.shared
            .snapshot_file
            .store_with_written_bytes(&meta, len, |out| write_state(&copy, out))
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        drop(copy);
        self.keep_snapshot(&meta);
        tracing::info!(
            upto = %meta.last_log_id.unwrap_or_default(),
            bytes = len,
            writes_paused_ms = copied.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built a snapshot from a copy of the state; writes went on"
        );
        Ok(meta)
    }

    /// Makes the archive hold what the snapshot `meta` describes before
    /// it is saved: every body up to its point on disk, and no body of a
    /// message erased by then. Erasures are taken from the live state, so
    /// some may come from after the point: erasing them now is as right.
    fn settle_archive(&self, meta: &SnapshotMeta<NodeId, NodeAddr>) -> Result<(), StorageError> {
        let fail =
            |e: &log_format::Error| StorageIOError::write_snapshot(Some(meta.signature()), e);
        let erased = {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            state.take_erased()
        };
        let mut archive = self.shared.archive.lock().expect("lock");
        archive.sync().map_err(|e| fail(&e))?;
        if !erased.is_empty() {
            let started = std::time::Instant::now();
            let ids: Vec<u64> = erased.iter().map(|id| id.0).collect();
            let report = archive.erase(&ids).map_err(|e| fail(&e))?;
            self.shared.bodies.forget(&erased);
            tracing::info!(
                erased = report.records_dropped,
                segments_rewritten = report.segments_rewritten,
                bytes_before = report.bytes_before,
                bytes_after = report.bytes_after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "erased deleted messages from the archive"
            );
        }
        Ok(())
    }

    /// Makes `meta`, just stored in the snapshot file, the current
    /// snapshot.
    fn keep_snapshot(&self, meta: &SnapshotMeta<NodeId, NodeAddr>) {
        *self.shared.current_snapshot.lock().expect("lock") = Some(meta.clone());
        // Files made to ship the previous snapshot (or received) hold
        // bodies that may since have been erased.
        if let Err(e) = ship::remove_files(&self.shared.dir, None) {
            tracing::warn!("cannot remove old snapshot files to ship: {e}");
        }
    }

    /// openraft's view of the snapshot `meta`: its data is built only if
    /// it is read, to ship it.
    fn to_snapshot(&self, meta: SnapshotMeta<NodeId, NodeAddr>) -> Snapshot<TypeConfig> {
        let file = self.shared.snapshot_file.clone();
        let wanted = meta.clone();
        let index = Box::new(move || -> std::io::Result<Vec<u8>> {
            // The file's value is the encoded `StoredSnapshot`, sent as it
            // is rather than decoded and encoded again.
            match SnapshotOnDisk::read(&file).map_err(std::io::Error::other)? {
                Some(s) if s.meta == wanted => Ok(s.file.to_vec()),
                _ => Err(std::io::Error::other(format!(
                    "snapshot {} was replaced before it could be sent",
                    wanted.snapshot_id
                ))),
            }
        });
        let source = ShipSource {
            dir: self.shared.dir.clone(),
            snapshot_id: meta.snapshot_id.clone(),
            index,
            up_to: meta.last_log_id.map_or(0, |l| cursor_through(l.index)),
            archive: self.shared.bodies.reader(),
        };
        Snapshot {
            meta,
            snapshot: Box::new(ShipData::lazy(source)),
        }
    }

    /// Installs a snapshot received from the leader: the index, and the
    /// archive replaced by the messages it carries.
    fn install(
        &self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        file: std::fs::File,
    ) -> anyhow::Result<ChatState> {
        let received = ship::receive(file)?;
        let stored: StoredSnapshot = postcard::from_bytes(&received.index)?;
        anyhow::ensure!(
            stored.meta == *meta,
            "the snapshot received is {}, not the announced {}",
            stored.meta.snapshot_id,
            meta.snapshot_id
        );
        let state = decode_state(&stored.data)?;
        let installing = self.shared.dir.join(INSTALLING_FILE);
        std::fs::write(&installing, meta.snapshot_id.as_bytes())?;
        let mut archive = self.shared.archive.lock().expect("lock");
        archive.clear()?;
        self.shared.bodies.forget_all();
        let messages = received.install_messages(&mut archive)?;
        drop(archive);
        // The same bytes as storing `stored` whole, without a second copy
        // of its data.
        self.shared
            .snapshot_file
            .store_with_bytes(&stored.meta, &stored.data)?;
        self.keep_snapshot(&stored.meta);
        std::fs::remove_file(&installing)?;
        tracing::info!(snapshot = %meta.snapshot_id, messages, "installed a snapshot from the leader");
        Ok(state)
    }
}

/// What a snapshot of the state as `applying` describes it is of.
fn snapshot_meta(applying: Applying) -> SnapshotMeta<NodeId, NodeAddr> {
    let id = applying
        .last_applied
        .map_or_else(|| "empty".to_string(), |l| l.to_string());
    SnapshotMeta {
        last_log_id: applying.last_applied,
        last_membership: applying.membership,
        snapshot_id: id,
    }
}

/// Applies the log's records from index `start` through `upto` to `state`,
/// appending the messages they store to `archive` if there is one.
///
/// Reading and decoding the records runs on a thread of its own, a few
/// batches ahead of applying them: at start-up the other core is otherwise
/// idle once the snapshot has loaded. With the log in the page cache that
/// saves only the decoding (~5% of a 10M crash start's replay, BENCHMARKS
/// "Memory and restart"); with the log on disk, the reads overlap the
/// applying too.
fn replay(
    log: &Log,
    start: u64,
    upto: u64,
    state: &mut ChatState,
    applying: &mut Applying,
    mut archive: Option<&mut Archive>,
) -> anyhow::Result<Replayed> {
    /// Entries decoded per batch handed over, and batches decoded ahead.
    const BATCH: usize = 256;
    const AHEAD: usize = 4;
    let mut replayed = Replayed::default();
    let mut stored = Vec::new();
    // After a restart the archive may already hold the replayed messages.
    let archived = archive.as_ref().and_then(|a| a.last_id()).unwrap_or(0);
    std::thread::scope(|scope| {
        let (batches, decoded) =
            std::sync::mpsc::sync_channel::<anyhow::Result<Vec<RaftEntry>>>(AHEAD);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            for record in log.iter_from(start) {
                let entry = match record {
                    Ok(record) if record.index > upto => break,
                    Ok(record) => record_to_entry(&record).map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                };
                match entry {
                    Ok(entry) => batch.push(entry),
                    Err(e) => {
                        // The applier stops at the error; nothing follows it.
                        let _ = batches.send(Err(e));
                        return;
                    }
                }
                if batch.len() == BATCH
                    && batches
                        .send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))))
                        .is_err()
                {
                    // The applier stopped at an error of its own.
                    return;
                }
            }
            let _ = batches.send(Ok(batch));
        });
        for batch in decoded {
            for entry in batch? {
                let applied = apply_entry(state, applying, &entry, None);
                replayed.events += applied.len() as u64;
                replayed.records += 1;
                if let Some(archive) = archive.as_deref_mut() {
                    to_archive(&entry, &applied, archived, &mut stored);
                    if stored.len() >= 4096 {
                        append(archive, &mut stored)?;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    if let Some(archive) = archive {
        append(archive, &mut stored)?;
    }
    Ok(replayed)
}

/// The messages `entry` stored (not its duplicates) with ids above
/// `archived`, as the archive keeps them, pushed onto `out`.
fn to_archive(
    entry: &RaftEntry,
    applied: &[Applied],
    archived: u64,
    out: &mut Vec<(u64, Arc<ArchivedMessage>)>,
) {
    let EntryPayload::Normal(events) = &entry.payload else {
        return;
    };
    for (event, applied) in events.iter().zip(applied) {
        if let (
            Some((from, body, at_ms)),
            Applied::Message {
                id,
                duplicate: false,
                conversation,
            },
        ) = (event.message(), applied)
            && id.0 > archived
        {
            let message = ArchivedMessage {
                conversation: *conversation,
                from,
                at_ms,
                body: body.to_owned(),
            };
            out.push((id.0, Arc::new(message)));
        }
    }
}

/// Appends `stored` to the archive and empties it. Messages the archive
/// already holds are skipped: after a restart it may hold messages past the
/// snapshot, and every archived message came from a committed entry, which
/// no replica ever changes, so what it holds is what would be written.
fn append(
    archive: &mut Archive,
    stored: &mut Vec<(u64, Arc<ArchivedMessage>)>,
) -> log_format::Result<()> {
    if let Some(last) = archive.last_id() {
        stored.retain(|(id, _)| *id > last);
    }
    if !stored.is_empty() {
        let refs: Vec<(u64, &ArchivedMessage)> = stored.iter().map(|(id, m)| (*id, &**m)).collect();
        archive.append_batch(&refs)?;
        stored.clear();
    }
    Ok(())
}

/// Applies one entry; each event gets the log position of its slot. What
/// live subscribers must hear goes to `notices`; a replay passes `None`.
fn apply_entry(
    state: &mut ChatState,
    applying: &mut Applying,
    entry: &RaftEntry,
    mut notices: Option<&mut Vec<Fanout>>,
) -> Vec<Applied> {
    applying.last_applied = Some(entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => Vec::new(),
        EntryPayload::Normal(events) => events
            .iter()
            .enumerate()
            .map(|(slot, event)| {
                let index = position(entry.log_id.index, slot);
                match notices.as_deref_mut() {
                    Some(notices) => state.apply(index, event, notices),
                    None => state.apply_quietly(index, event),
                }
            })
            .collect(),
        EntryPayload::Membership(m) => {
            applying.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            Vec::new()
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        let meta = tokio::task::spawn_blocking(move || this.build_and_keep())
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))??;
        Ok(self.to_snapshot(meta))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeAddr>), StorageError> {
        let a = self.shared.meta.lock().expect("lock");
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut notices = Vec::new();
        let mut out = Vec::new();
        let mut stored = Vec::new();
        let last = {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            let mut applying = self.shared.meta.lock().expect("lock");
            let mut events = 0;
            for entry in entries {
                let applied = apply_entry(&mut state, &mut applying, &entry, Some(&mut notices));
                events += applied.len() as u64;
                // `append` skips what the archive holds already.
                to_archive(&entry, &applied, 0, &mut stored);
                out.push(applied);
            }
            // In the archive before the state lock is released: any id a
            // query finds has its body readable.
            if !stored.is_empty() {
                let mut archive = self.shared.archive.lock().expect("lock");
                for (id, message) in &stored {
                    self.shared
                        .bodies
                        .remember(MessageId(*id), Arc::clone(message));
                }
                append(&mut archive, &mut stored)
                    .map_err(|e| StorageIOError::write_state_machine(&e))?;
            }
            self.shared
                .since_snapshot
                .fetch_add(events, Ordering::Relaxed);
            applying.last_applied.map_or(0, |l| l.index)
        };
        self.shared.hub.publish(notices);
        self.shared.applied.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<ShipData>, StorageError> {
        let data = ShipData::receiving(&self.shared.dir)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(data))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<ShipData>,
    ) -> Result<(), StorageError> {
        let fail = |e: &dyn std::fmt::Display| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(format!("cannot install the snapshot: {e:#}")),
            )
        };
        let file = snapshot.into_file().await.map_err(|e| fail(&e))?;
        let this = self.clone();
        let owned = meta.clone();
        let new_state = tokio::task::spawn_blocking(move || this.install(&owned, file))
            .await
            .map_err(|e| fail(&e))?
            .map_err(|e| fail(&format!("{e:#}")))?;
        {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            let mut applying = self.shared.meta.lock().expect("lock");
            *state = new_state;
            self.shared.since_snapshot.store(0, Ordering::Relaxed);
            *applying = Applying::at(meta);
        }
        self.shared
            .applied
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        // Streams were fed from the old state; they resume from their
        // cursors against the new one.
        self.shared.hub.end_all(Ended::Resync);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.shared.current_snapshot.lock().expect("lock").clone();
        Ok(current.map(|meta| self.to_snapshot(meta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rejection;
    use log_format::LogConfig;
    use log_format::events::{AccountId, ConversationId, Event, MessageId, PasswordHash};
    use openraft::testing::log_id;

    fn created(name: &str) -> Event {
        Event::AccountCreated {
            username: name.into(),
            password_hash: PasswordHash("h".into()),
            at_ms: 1,
        }
    }

    /// An empty log in `dir` and a state machine restored over it.
    fn empty(dir: &Path) -> (Log, StateMachine) {
        let (log, _) = Log::open(dir, LogConfig::default()).unwrap();
        let (sm, _) = restore(dir, &log, None).unwrap();
        (log, sm)
    }

    /// The state machine restored from what `dir` and `log` hold.
    fn restore(
        dir: &Path,
        log: &Log,
        committed: Option<LogId<NodeId>>,
    ) -> anyhow::Result<(StateMachine, Replayed)> {
        let loaded = StateMachine::load_snapshot(dir)?;
        let archive = Archive::open(dir, log_format::ArchiveConfig::default())?;
        let hub = Arc::new(Hub::default());
        StateMachine::restore(dir, log, committed, hub, loaded, archive, 1 << 20)
    }

    /// Appends `n` entries, each creating account `user{i}`, to `log` and
    /// applies them to `sm`, as a leader does.
    async fn create_users(log: &Log, sm: &mut StateMachine, n: u64) {
        let entries: Vec<RaftEntry> = (0..n)
            .map(|i| RaftEntry {
                log_id: log_id(1, 1, i),
                payload: EntryPayload::Normal(vec![created(&format!("user{i}"))]),
            })
            .collect();
        let records: Vec<_> = entries.iter().map(super::super::entry_to_record).collect();
        log.append(&records).unwrap();
        sm.apply(entries).await.unwrap();
    }

    /// A snapshot holds the state as it was applied when it was built, and
    /// the live state goes on from there.
    #[tokio::test]
    async fn snapshots_hold_the_state_they_were_built_at() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut sm) = empty(dir.path());
        let mut index = 0;
        for round in 0..3 {
            let entries: Vec<RaftEntry> = (0..4)
                .map(|i| {
                    let e = RaftEntry {
                        log_id: log_id(1, 1, index),
                        payload: EntryPayload::Normal(vec![
                            created(&format!("u{round}{i}")),
                            created(&format!("u{round}{i}")),
                            Event::MessageSent {
                                from: AccountId(1000),
                                to: AccountId(1001),
                                client_msg_id: format!("k{index}"),
                                body: format!("m{index}"),
                                at_ms: index,
                            },
                        ]),
                    };
                    index += 1;
                    e
                })
                .collect();
            let records: Vec<_> = entries.iter().map(super::super::entry_to_record).collect();
            log.append(&records).unwrap();
            sm.apply(entries).await.unwrap();

            let built = sm.build_snapshot().await.unwrap();
            assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, index - 1)));
            let stored = StateMachine::load_snapshot(dir.path()).unwrap();
            assert_eq!(stored.state.fingerprint(), sm.state().fingerprint());
            assert_eq!(stored.meta, Some(built.meta));
        }
    }

    /// A replay spanning many of the decoder's batches applies every
    /// entry once, in order, as applying them live did; a record that does
    /// not decode stops the start with an error, after or within a batch.
    #[tokio::test]
    async fn a_replay_applies_every_batch_and_stops_at_a_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut sm) = empty(dir.path());
        create_users(&log, &mut sm, 1000).await;

        let (replayed, counts) = restore(dir.path(), &log, Some(log_id(1, 1, 999))).unwrap();
        assert_eq!(counts.records, 1000);
        assert_eq!(counts.last_applied, 999);
        assert_eq!(replayed.state().fingerprint(), sm.state().fingerprint());
        assert!(replayed.state().account_by_name("user999").is_some());

        log.append(&[log_format::Record {
            index: 1000,
            term: 1,
            payload: vec![0xff; 7],
        }])
        .unwrap();
        let refused = restore(dir.path(), &log, Some(log_id(1, 1, 1000))).unwrap_err();
        assert!(
            format!("{refused:#}").contains("payload schema version 255"),
            "{refused:#}"
        );
    }

    /// A snapshot in another build's layout is set aside and the state
    /// rebuilt from the log while the log still reaches back to its start;
    /// once the log was purged behind it, start-up refuses and says why.
    #[tokio::test]
    async fn an_outdated_snapshot_is_rebuilt_from_a_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_size: 4096 };
        let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
        let (mut sm, _) = restore(dir.path(), &log, None).unwrap();
        create_users(&log, &mut sm, 200).await;
        sm.build_snapshot().await.unwrap();
        let file = StateFile::new(dir.path(), SNAPSHOT_FILE);
        let mut stored: StoredSnapshot = file.load().unwrap().unwrap();
        stored.data[8] = stored.data[8].wrapping_add(1);
        file.store(&stored).unwrap();

        let restore = |log: &Log| restore(dir.path(), log, Some(log_id(1, 1, 199)));
        let (rebuilt, _) = restore(&log).unwrap();
        assert_eq!(rebuilt.state().fingerprint(), sm.state().fingerprint());

        log.purge_before(150).unwrap();
        assert!(log.first_index() > 1);
        let refused = restore(&log).unwrap_err();
        assert!(
            format!("{refused:#}").contains("another state layout"),
            "{refused:#}"
        );
    }

    /// Batched events get consecutive positions of their record, and the
    /// snapshot trigger counts events, not entries.
    #[tokio::test]
    async fn batches_apply_at_positions_and_count_as_events() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = empty(dir.path());
        let entries = vec![
            RaftEntry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Normal(vec![created("a"), created("b"), created("A")]),
            },
            RaftEntry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Blank,
            },
            RaftEntry {
                log_id: log_id(1, 1, 3),
                payload: EntryPayload::Normal(vec![created("c")]),
            },
        ];
        let applied = sm.apply(entries).await.unwrap();
        assert_eq!(
            applied,
            vec![
                vec![
                    Applied::AccountCreated(AccountId(1000)),
                    Applied::AccountCreated(AccountId(1001)),
                    Applied::Rejected(Rejection::NameTaken),
                ],
                vec![],
                vec![Applied::AccountCreated(AccountId(3000))],
            ]
        );
        assert_eq!(sm.applied_index(), 3);
        assert_eq!(sm.applied_cursor(), 3999);
        assert_eq!(sm.events_since_snapshot(), 4);
        sm.build_snapshot().await.unwrap();
        assert_eq!(sm.events_since_snapshot(), 0);
    }

    /// A small deterministic generator, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random accounts, messages, deletions of messages and of accounts,
    /// one event per entry from index `first`.
    fn random_entries(
        rng: &mut Rng,
        first: u64,
        n: u64,
        sent: &mut Vec<MessageId>,
    ) -> Vec<RaftEntry> {
        (first..first + n)
            .map(|index| {
                // Accounts made by the first six entries, and at times again.
                let account = |rng: &mut Rng| AccountId(1000 * rng.below(6));
                let event = match rng.below(10) {
                    _ if index < 6 => created(&format!("u{index}")),
                    0 => created(&format!("u{}", rng.below(8))),
                    1 if !sent.is_empty() => Event::MessagesDeleted {
                        account: account(rng),
                        ids: vec![sent[rng.below(sent.len() as u64) as usize]],
                        at_ms: index,
                    },
                    2 if rng.below(8) == 0 => Event::AccountDeleted {
                        account: account(rng),
                        at_ms: index,
                    },
                    // Groups of three: made by the entries at 6 and (at
                    // times) later; posts to the first.
                    _ if index == 6 => Event::GroupCreated {
                        owner: AccountId(0),
                        title: "first".into(),
                        members: vec![AccountId(1000), AccountId(2000), AccountId(3000)],
                        client_request_id: "first".into(),
                        at_ms: index,
                    },
                    3 if rng.below(4) == 0 => Event::GroupCreated {
                        owner: account(rng),
                        title: format!("group {index}"),
                        members: vec![account(rng), account(rng)],
                        client_request_id: format!("g{index}"),
                        at_ms: index,
                    },
                    4 | 5 => {
                        sent.push(MessageId(position(index, 0)));
                        Event::Posted {
                            from: account(rng),
                            conversation: ConversationId(position(6, 0)),
                            client_msg_id: format!("p{}", rng.below(index + 1)),
                            body: format!("body of {index} in a group"),
                            at_ms: index,
                        }
                    }
                    _ => {
                        sent.push(MessageId(position(index, 0)));
                        Event::MessageSent {
                            from: account(rng),
                            to: account(rng),
                            // Some retries of an earlier key.
                            client_msg_id: format!("k{}", rng.below(index + 1)),
                            body: format!(
                                "body of {index} {}",
                                "x".repeat(rng.below(300) as usize)
                            ),
                            at_ms: index,
                        }
                    }
                };
                RaftEntry {
                    log_id: log_id(1, 1, index),
                    payload: EntryPayload::Normal(vec![event]),
                }
            })
            .collect()
    }

    /// Every answer the state gives, bodies included: each pair's history
    /// and each account's view of the first group, read through the archive.
    fn answers(sm: &StateMachine) -> String {
        let mut out = sm.state().fingerprint();
        let ids: Vec<AccountId> = (0..6).map(|i| AccountId(1000 * i)).collect();
        for a in &ids {
            let refs = (sm
                .state()
                .history_of(*a, ConversationId(position(6, 0)), None, 10_000))
            .map(|h| h.0)
            .unwrap_or_default();
            let msg_ids: Vec<MessageId> = refs.iter().map(|r| r.id).collect();
            let bodies = sm.bodies().get_many(&msg_ids).unwrap();
            for (r, body) in refs.iter().zip(bodies) {
                let body = body.unwrap_or_else(|| panic!("message {} has no body", r.id));
                out += &format!("{a} group {} {} {}\n", r.id, body.at_ms, body.body);
            }
        }
        for a in &ids {
            for b in &ids {
                let refs = sm.state().history(*a, *b, None, 10_000).0;
                let msg_ids: Vec<MessageId> = refs.iter().map(|r| r.id).collect();
                let bodies = sm.bodies().get_many(&msg_ids).unwrap();
                for (r, body) in refs.iter().zip(bodies) {
                    let body = body.unwrap_or_else(|| panic!("message {} has no body", r.id));
                    out += &format!("{a} {b} {} {} {}\n", r.id, body.at_ms, body.body);
                }
            }
        }
        out
    }

    /// Applied live, restored from a snapshot and the log after it, and
    /// replayed from the whole log, the state gives the same answers,
    /// bodies included; erased bodies leave the archive at the snapshot.
    #[tokio::test]
    async fn live_restored_and_replayed_answer_alike_bodies_included() {
        for seed in 1..=6u64 {
            let dir = tempfile::tempdir().unwrap();
            let (log, mut sm) = empty(dir.path());
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut sent = Vec::new();
            let mut index = 0;
            let rounds = 2 + rng.below(4);
            let mut last_round = Vec::new();
            for round in 0..rounds {
                let n = 10 + rng.below(60);
                let entries = random_entries(&mut rng, index, n, &mut sent);
                index += n;
                let records: Vec<_> = entries.iter().map(super::super::entry_to_record).collect();
                log.append(&records).unwrap();
                last_round = entries.clone();
                sm.apply(entries).await.unwrap();
                if round + 1 < rounds && rng.below(2) == 0 {
                    sm.build_snapshot().await.unwrap();
                    assert_eq!(sm.state().erased_pending(), 0);
                }
            }
            let live = answers(&sm);
            assert!(live.matches("body of").count() > 20, "seed {seed}: {live}");
            assert!(
                live.contains("in a group"),
                "seed {seed}: no group message: {live}"
            );
            let committed = Some(log_id(1, 1, index - 1));
            drop(sm);

            let (restored, _) = restore(dir.path(), &log, committed).unwrap();
            assert_eq!(answers(&restored), live, "seed {seed}: snapshot and tail");
            drop(restored);

            // Restored only up to an earlier commit point, with the rest
            // already in the archive, then applied as Raft would.
            let first = last_round[0].log_id.index;
            let earlier = (first > 0).then(|| log_id(1, 1, first - 1));
            let (mut behind, _) = restore(dir.path(), &log, earlier).unwrap();
            assert!(behind.applied_index() < first, "seed {seed}");
            {
                let rest: Vec<RaftEntry> = (last_round.iter())
                    .filter(|e| {
                        Some(e.log_id.index)
                            > behind
                                .shared
                                .meta
                                .lock()
                                .unwrap()
                                .last_applied
                                .map(|l| l.index)
                    })
                    .cloned()
                    .collect();
                behind.apply(rest).await.unwrap();
                assert_eq!(
                    answers(&behind),
                    live,
                    "seed {seed}: archive ahead of the replay"
                );
            }
            drop(behind);

            // Without a snapshot or archive: from the log alone.
            let _ = std::fs::remove_file(dir.path().join(SNAPSHOT_FILE));
            std::fs::remove_dir_all(dir.path().join(log_format::format::ARCHIVE_DIR)).unwrap();
            let (replayed, _) = restore(dir.path(), &log, committed).unwrap();
            assert_eq!(answers(&replayed), live, "seed {seed}: whole log");
        }
    }

    /// A snapshot shipped to an empty replica carries the archived bodies,
    /// but not those erased before it.
    #[tokio::test]
    async fn a_shipped_snapshot_carries_the_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut sm) = empty(dir.path());
        let mut rng = Rng(42);
        let mut sent = Vec::new();
        let mut entries = random_entries(&mut rng, 0, 151, &mut sent);
        let erased = MessageId(position(151, 0));
        entries.extend([
            RaftEntry {
                log_id: log_id(1, 1, 151),
                payload: EntryPayload::Normal(vec![Event::MessageSent {
                    from: AccountId(0),
                    to: AccountId(0),
                    client_msg_id: "secret".into(),
                    body: "SHIPPED-SECRET".into(),
                    at_ms: 1,
                }]),
            },
            RaftEntry {
                log_id: log_id(1, 1, 152),
                payload: EntryPayload::Normal(vec![Event::MessagesDeleted {
                    account: AccountId(0),
                    ids: vec![erased],
                    at_ms: 2,
                }]),
            },
        ]);
        let records: Vec<_> = entries.iter().map(super::super::entry_to_record).collect();
        log.append(&records).unwrap();
        sm.apply(entries).await.unwrap();
        let archived = |dir: &Path| {
            let archive = dir.join(log_format::format::ARCHIVE_DIR);
            (std::fs::read_dir(archive).unwrap().flatten()).any(|f| {
                std::fs::read(f.path())
                    .unwrap()
                    .windows(14)
                    .any(|w| w == b"SHIPPED-SECRET")
            })
        };
        assert!(archived(dir.path()), "stored until the next snapshot");
        let built = sm.build_snapshot().await.unwrap();
        assert!(!archived(dir.path()), "erased at the snapshot");
        let mut shipped = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(shipped.meta, built.meta);
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut *shipped.snapshot, &mut bytes)
            .await
            .unwrap();
        assert!(!bytes.windows(14).any(|w| w == b"SHIPPED-SECRET"));

        let other = tempfile::tempdir().unwrap();
        let (_log2, mut replica) = empty(other.path());
        let mut data = replica.begin_receiving_snapshot().await.unwrap();
        // As openraft writes it: in chunks, then installs.
        for chunk in bytes.chunks(1000) {
            tokio::io::AsyncWriteExt::write_all(&mut *data, chunk)
                .await
                .unwrap();
        }
        replica.install_snapshot(&shipped.meta, data).await.unwrap();
        assert_eq!(answers(&replica), answers(&sm));
        assert!(!other.path().join(INSTALLING_FILE).exists());
        // The files that carried bodies are gone: received, and (once a
        // newer snapshot replaces the one shipped) sent.
        let ship_files =
            |dir: &Path| std::fs::read_dir(dir.join(ship::SHIP_DIR)).map_or(0, |d| d.count());
        assert_eq!(ship_files(other.path()), 0);
        assert_eq!(ship_files(dir.path()), 1);
        sm.build_snapshot().await.unwrap();
        assert_eq!(ship_files(dir.path()), 0);

        // Damage is refused, and the replica keeps what it had.
        let mut data = replica.begin_receiving_snapshot().await.unwrap();
        let mut damaged = bytes.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 1;
        tokio::io::AsyncWriteExt::write_all(&mut *data, &damaged)
            .await
            .unwrap();
        let refused = replica.install_snapshot(&shipped.meta, data).await;
        assert!(format!("{:?}", refused.unwrap_err()).contains("CRC"));
        assert_eq!(answers(&replica), answers(&sm));
    }

    #[test]
    fn snapshots_carry_their_version() {
        let state = ChatState::default();
        let data = encode_state(&state).unwrap();
        assert!(data.starts_with(SNAPSHOT_MAGIC));
        assert_eq!(
            decode_state(&data).unwrap().fingerprint(),
            state.fingerprint()
        );

        let mut other = data.clone();
        other[8] = other[8].wrapping_add(1);
        let e = decode_state(&other).unwrap_err().to_string();
        let expected = format!(
            "version {}, this build reads {SNAPSHOT_VERSION}",
            SNAPSHOT_VERSION + 1
        );
        assert!(e.contains(&expected), "{e}");

        // A snapshot from before versions: the bare postcard of the state.
        let unmarked = postcard::to_stdvec(&state).unwrap();
        let e = decode_state(&unmarked).unwrap_err().to_string();
        assert!(e.contains("version 1, unmarked"), "{e}");

        let mut cut = data;
        cut.truncate(SNAPSHOT_MAGIC.len() + 2);
        cut.push(0xff);
        assert!(matches!(decode_state(&cut), Err(SnapshotError::Decode(_))));
    }
}
