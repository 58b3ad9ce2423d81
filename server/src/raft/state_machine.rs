//! openraft's state machine: the chat indexes, applied entry by entry, plus
//! snapshots of them. Applying pushes the resulting feed events to the
//! [`Hub`] and advances a watch of the applied index, which reads wait on
//! for read-your-writes.
//!
//! A snapshot is built without stopping writes: encoding the live state
//! needs its lock for as long as the encoding takes (~0.5 s per million
//! messages, during which nothing is applied), so the builder instead takes
//! the previous snapshot and replays the log up to what is applied now, on
//! a blocking thread, off the lock. The state is a function of the log, so
//! the result is the live state at that point. Should the log not cover the
//! range (a snapshot was installed meanwhile), it encodes the live state.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use log_format::events::{cursor_through, position};
use log_format::{Log, StateFile};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{NodeAddr, NodeId, RaftEntry, StorageError, TypeConfig, record_to_entry};
use crate::hub::{Ended, Hub};
use crate::state::{Applied, ChatState, Fanout};

/// The state file holding the latest snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// What starts a snapshot's data, before the postcard encoding of the state.
const SNAPSHOT_MAGIC: &[u8; 8] = b"chatsnap";
/// The layout of `ChatState` a snapshot holds. Any change to the state's
/// types (a field, a map's hasher, the meaning of ids) changes it: a
/// snapshot of another version is refused with a clear error instead of
/// being misread.
pub const SNAPSHOT_VERSION: u16 = 3;

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

/// Encodes `state` as snapshot data: magic, version, postcard.
fn encode_state(state: &ChatState) -> Result<Vec<u8>, postcard::Error> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    postcard::to_io(state, out)
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
    current_snapshot: Mutex<Option<Arc<StoredSnapshot>>>,
    /// The log the applied entries come from, for building snapshots.
    log: Log,
}

#[derive(Debug, Clone, Default)]
struct Applying {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
}

impl Applying {
    /// Where applying stands once `snapshot` (if any) is the state.
    fn of(snapshot: Option<&StoredSnapshot>) -> Applying {
        snapshot.map_or_else(Applying::default, |s| Applying::at(&s.meta))
    }

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

/// The stored snapshot, read and decoded: the first half of a restore, which
/// needs no log (so it can run while the log is opened).
#[derive(Debug)]
pub struct Loaded {
    stored: Option<StoredSnapshot>,
    state: ChatState,
    /// Why the stored snapshot was set aside: written with another state
    /// layout, so the state must come from the log alone.
    outdated: Option<anyhow::Error>,
}

impl StateMachine {
    /// Reads and decodes the snapshot stored in `dir`, if there is one.
    pub fn load_snapshot(dir: &Path) -> Result<Loaded, anyhow::Error> {
        let stored: Option<StoredSnapshot> = StateFile::new(dir, SNAPSHOT_FILE).load()?;
        let refused = |e: SnapshotError| {
            anyhow::Error::new(e).context(format!(
                "cannot restore the snapshot in {}; if this replica belongs to a cluster, rebuild it from the cluster (README: \"Rebuilding a damaged replica\"), or start it with the build that wrote the snapshot",
                dir.join(SNAPSHOT_FILE).display()
            ))
        };
        match stored.as_ref().map(|s| decode_state(&s.data)) {
            None => Ok(Loaded {
                stored,
                state: ChatState::default(),
                outdated: None,
            }),
            Some(Ok(state)) => Ok(Loaded {
                stored,
                state,
                outdated: None,
            }),
            // Another build's layout: the whole log can stand in for it, if
            // it still reaches back to the start (see `restore`).
            Some(Err(e @ SnapshotError::Version { .. })) => Ok(Loaded {
                stored: None,
                state: ChatState::default(),
                outdated: Some(refused(e)),
            }),
            Some(Err(e)) => Err(refused(e)),
        }
    }

    /// Restores the state: the `loaded` snapshot, then every log record up
    /// to `committed` (records after it may not be committed and are left
    /// for Raft to apply).
    pub fn restore(
        dir: &Path,
        log: &Log,
        committed: Option<LogId<NodeId>>,
        hub: Arc<Hub>,
        loaded: Loaded,
    ) -> Result<(StateMachine, Replayed), anyhow::Error> {
        let snapshot_file = StateFile::new(dir, SNAPSHOT_FILE);
        let Loaded {
            stored,
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
        let mut applying = Applying::of(stored.as_ref());
        let mut replayed = Replayed::default();
        if let Some(committed) = committed {
            let start = applying
                .last_applied
                .map_or(0, |l| l.index + 1)
                .max(log.first_index());
            replayed = replay(log, start, committed.index, &mut state, &mut applying)?;
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
                current_snapshot: Mutex::new(stored.map(Arc::new)),
                log: log.clone(),
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

    /// A snapshot of what is applied now: by replay if the log allows,
    /// else by encoding the live state under its lock.
    fn snapshot_now(&self) -> Result<StoredSnapshot, StorageError> {
        let started = std::time::Instant::now();
        tracing::info!("building a snapshot");
        let (target, base) = {
            // Nothing is applied while the state is read-locked: the
            // applied id, the count of events since the snapshot and the
            // base are read at one point.
            let _state = self.state();
            self.shared.since_snapshot.store(0, Ordering::Relaxed);
            let target = self.shared.meta.lock().expect("lock").clone();
            let base = self.shared.current_snapshot.lock().expect("lock").clone();
            (target, base)
        };
        let from = base.as_ref().and_then(|b| b.meta.last_log_id);
        match replay_snapshot(&self.shared.log, base.as_deref(), &target) {
            Ok(Some(snap)) => {
                tracing::info!(
                    upto = %target.last_applied.unwrap_or_default(),
                    from = %from.unwrap_or_default(),
                    bytes = snap.data.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "built a snapshot by replaying the log; writes went on"
                );
                return Ok(snap);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "building the snapshot by replay failed ({e:#}); encoding the live state instead"
            ),
        }
        let started = std::time::Instant::now();
        let snap = self.snapshot_of_current()?;
        tracing::info!(
            upto = %snap.meta.last_log_id.unwrap_or_default(),
            bytes = snap.data.len(),
            writes_paused_ms = started.elapsed().as_millis() as u64,
            "built a snapshot from the live state"
        );
        Ok(snap)
    }

    fn snapshot_of_current(&self) -> Result<StoredSnapshot, StorageError> {
        // Hold the state lock while reading the applied id, so the two match.
        let state = self.state();
        let applying = self.shared.meta.lock().expect("lock").clone();
        // Nothing is applied while the state is read-locked, so the count
        // restarts exactly at this snapshot.
        self.shared.since_snapshot.store(0, Ordering::Relaxed);
        let data = encode_state(&state).map_err(|e| StorageIOError::write_state_machine(&e))?;
        drop(state);
        Ok(stored_snapshot(applying, data))
    }

    fn keep_snapshot(&self, snap: StoredSnapshot) -> Result<Arc<StoredSnapshot>, StorageError> {
        self.shared
            .snapshot_file
            .store(&snap)
            .map_err(|e| StorageIOError::write_snapshot(Some(snap.meta.signature()), &e))?;
        let snap = Arc::new(snap);
        *self.shared.current_snapshot.lock().expect("lock") = Some(Arc::clone(&snap));
        Ok(snap)
    }
}

fn stored_snapshot(applying: Applying, data: Vec<u8>) -> StoredSnapshot {
    let id = applying
        .last_applied
        .map_or_else(|| "empty".to_string(), |l| l.to_string());
    StoredSnapshot {
        meta: SnapshotMeta {
            last_log_id: applying.last_applied,
            last_membership: applying.membership,
            snapshot_id: id,
        },
        data,
    }
}

/// The snapshot of the state at `target`, made from the `base` snapshot and
/// the log records after it. `None` when that is not possible or not worth
/// it: nothing applied yet, a base already at or past the target, or a log
/// that does not hold every record between them.
fn replay_snapshot(
    log: &Log,
    base: Option<&StoredSnapshot>,
    target: &Applying,
) -> anyhow::Result<Option<StoredSnapshot>> {
    let Some(upto) = target.last_applied else {
        return Ok(None);
    };
    let mut state = match base {
        Some(b) => decode_state(&b.data)?,
        None => ChatState::default(),
    };
    let mut applying = Applying::of(base);
    let start = applying.last_applied.map_or(0, |l| l.index + 1);
    if start > upto.index || log.first_index() > start {
        return Ok(None);
    }
    replay(log, start, upto.index, &mut state, &mut applying)?;
    if applying.last_applied != Some(upto) || applying.membership != target.membership {
        anyhow::bail!(
            "the log replayed to {:?}, not to the applied {upto}",
            applying.last_applied
        );
    }
    let data = encode_state(&state)?;
    Ok(Some(stored_snapshot(applying, data)))
}

/// Applies the log's records from index `start` through `upto` to `state`.
fn replay(
    log: &Log,
    start: u64,
    upto: u64,
    state: &mut ChatState,
    applying: &mut Applying,
) -> anyhow::Result<Replayed> {
    let mut replayed = Replayed::default();
    let mut ignored = Vec::new();
    for record in log.iter_from(start) {
        let record = record?;
        if record.index > upto {
            break;
        }
        let entry = record_to_entry(&record)?;
        replayed.events += apply_entry(state, applying, &entry, &mut ignored).len() as u64;
        ignored.clear();
        replayed.records += 1;
    }
    Ok(replayed)
}

/// Applies one entry; each event gets the log position of its slot.
fn apply_entry(
    state: &mut ChatState,
    applying: &mut Applying,
    entry: &RaftEntry,
    notices: &mut Vec<Fanout>,
) -> Vec<Applied> {
    applying.last_applied = Some(entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => Vec::new(),
        EntryPayload::Normal(events) => events
            .iter()
            .enumerate()
            .map(|(slot, event)| state.apply(position(entry.log_id.index, slot), event, notices))
            .collect(),
        EntryPayload::Membership(m) => {
            applying.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            Vec::new()
        }
    }
}

fn to_snapshot(s: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: s.meta.clone(),
        snapshot: Box::new(Cursor::new(s.data.clone())),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        let snap = tokio::task::spawn_blocking(move || this.keep_snapshot(this.snapshot_now()?))
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))??;
        Ok(to_snapshot(&snap))
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
        let last = {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            let mut applying = self.shared.meta.lock().expect("lock");
            let mut events = 0;
            for entry in entries {
                let applied = apply_entry(&mut state, &mut applying, &entry, &mut notices);
                events += applied.len() as u64;
                out.push(applied);
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let new_state = decode_state(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.keep_snapshot(stored)?;
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
        Ok(current.as_deref().map(to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rejection;
    use log_format::LogConfig;
    use log_format::events::{AccountId, Event, PasswordHash};
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
        let loaded = StateMachine::load_snapshot(dir).unwrap();
        let (sm, _) =
            StateMachine::restore(dir, &log, None, Arc::new(Hub::default()), loaded).unwrap();
        (log, sm)
    }

    /// A snapshot built by replaying the log from the previous snapshot is
    /// the live state; without the records it needs, nothing is replayed.
    #[tokio::test]
    async fn snapshots_by_replay_equal_the_live_state() {
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

            let target = sm.shared.meta.lock().unwrap().clone();
            let base = sm.shared.current_snapshot.lock().unwrap().clone();
            assert_eq!(base.is_some(), round > 0);
            let snap = replay_snapshot(&log, base.as_deref(), &target)
                .unwrap()
                .expect("the log covers everything since the last snapshot");
            assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, index - 1)));
            let replayed = decode_state(&snap.data).unwrap();
            assert_eq!(replayed.fingerprint(), sm.state().fingerprint());

            let built = sm.build_snapshot().await.unwrap();
            assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, index - 1)));
            let stored = StateMachine::load_snapshot(dir.path()).unwrap();
            assert_eq!(stored.state.fingerprint(), sm.state().fingerprint());
        }

        // Entries applied but missing from the log: no replay, so the
        // builder encodes the live state instead.
        let entry = RaftEntry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(vec![created("late")]),
        };
        sm.apply(vec![entry]).await.unwrap();
        let target = sm.shared.meta.lock().unwrap().clone();
        let base = sm.shared.current_snapshot.lock().unwrap().clone();
        assert!(replay_snapshot(&log, base.as_deref(), &target).is_err());
        sm.build_snapshot().await.unwrap();
        let stored = StateMachine::load_snapshot(dir.path()).unwrap();
        assert_eq!(stored.state.fingerprint(), sm.state().fingerprint());
        assert!(stored.state.fingerprint().contains("late"));
    }

    /// A snapshot in another build's layout is set aside and the state
    /// rebuilt from the log while the log still reaches back to its start;
    /// once the log was purged behind it, start-up refuses and says why.
    #[tokio::test]
    async fn an_outdated_snapshot_is_rebuilt_from_a_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_size: 4096 };
        let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
        let loaded = StateMachine::load_snapshot(dir.path()).unwrap();
        let (mut sm, _) =
            StateMachine::restore(dir.path(), &log, None, Arc::new(Hub::default()), loaded)
                .unwrap();
        let entries: Vec<RaftEntry> = (0..200)
            .map(|i| RaftEntry {
                log_id: log_id(1, 1, i),
                payload: EntryPayload::Normal(vec![created(&format!("user{i}"))]),
            })
            .collect();
        let records: Vec<_> = entries.iter().map(super::super::entry_to_record).collect();
        log.append(&records).unwrap();
        sm.apply(entries).await.unwrap();
        sm.build_snapshot().await.unwrap();
        let file = StateFile::new(dir.path(), SNAPSHOT_FILE);
        let mut stored: StoredSnapshot = file.load().unwrap().unwrap();
        stored.data[8] = stored.data[8].wrapping_add(1);
        file.store(&stored).unwrap();

        let restore = |log: &Log| {
            let loaded = StateMachine::load_snapshot(dir.path()).unwrap();
            let committed = Some(log_id(1, 1, 199));
            StateMachine::restore(dir.path(), log, committed, Arc::new(Hub::default()), loaded)
        };
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
