//! One server's replica, behind one handle: the log, the Raft instance over
//! it and the chat state machine, started together. Services see only
//! [`Node`]'s typed calls: [`Node::read`] (one state lock per request),
//! [`Node::propose`] (batched through Raft, forwarded to the leader from a
//! follower, answered once committed and applied here), [`Node::open_stream`],
//! [`Node::wait_applied`] (read-your-writes), the cluster's status and
//! membership, and the receiving side of openraft's traffic. Nothing outside
//! this module touches openraft or the state machine.

mod batcher;
pub mod presence;
pub mod search;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use log_format::events::{self, AccountId, ArchivedMessage, Event, MessageId, SessionId};
use log_format::{Log, LogConfig};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};

use self::batcher::{Batcher, WRITE_TIMEOUT, WriteError, leader_elsewhere, no_quorum};
use crate::config::Config;
use crate::error::ChatError;
use crate::hub::{Hub, Subscription};
use crate::peers::{ChangeAnswer, ChangeRequest, ForwardAnswer, Peers, decode, encode};
use crate::raft::elections::{Splits, settle_splits};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Member, MembershipChange, NodeAddr, Raft};
use crate::state::{Applied, ChatState, FeedEntry, FeedKind, MessageRef, MessageView};

/// How long adding a member waits for it to catch up as a learner.
const LEARNER_CATCH_UP: Duration = Duration::from_secs(60);

/// Whether `me` is the only voter of the cluster.
fn lone_voter(raft: &Raft, me: u64) -> bool {
    let voters: Vec<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .voter_ids()
        .collect();
    voters == [me]
}

/// Asks Raft for a snapshot once `every` chat events were applied since the
/// last one. openraft counts entries, and an entry holds up to
/// `MAX_BATCH_EVENTS` events: counting events keeps the log to replay at
/// start-up bounded however busy the server was.
async fn snapshot_by_events(raft: Raft, sm: StateMachine, every: u64) {
    let mut applied = sm.applied();
    while applied.changed().await.is_ok() {
        if sm.events_since_snapshot() < every {
            continue;
        }
        let before = raft.metrics().borrow().snapshot;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        // One request per snapshot: wait for it to be built.
        let built = raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.snapshot != before, "the snapshot is built")
            .await;
        if let Err(e) = built {
            tracing::warn!("a snapshot was asked for but not built: {e}");
        }
    }
}

/// This server's replica; clones share it.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    raft: Raft,
    sm: StateMachine,
    store: LogStore,
    /// Connections to the other servers (openraft's traffic, the leader
    /// writes are forwarded to, members activity is shared with).
    peers: Arc<Peers>,
    /// Turns concurrent proposals into shared entries.
    batcher: Arc<Batcher>,
    /// The tasks that ask for snapshots by event count and settle split
    /// votes.
    tasks: [tokio::task::AbortHandle; 2],
    /// Bounds the reads of the archive that run at once (off the runtime's
    /// workers): a burst of cold history pages queues here instead of
    /// filling the blocking pool.
    disk_reads: tokio::sync::Semaphore,
    /// Who streams on the other servers, and what was told.
    presence: presence::Presence,
    /// Bounds the searches that scan at once (each keeps a core busy for
    /// up to tens of milliseconds): a burst of them queues here instead of
    /// taking every core from applying and the other calls.
    searches: tokio::sync::Semaphore,
}

/// Archive reads at once; more wait for a turn.
const MAX_DISK_READS: usize = 8;

/// Searches scanning at once: half the cores (at least one).
fn max_searches() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// How this server sees the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: u64,
    pub role: ServerState,
    pub term: u64,
    pub leader_id: Option<u64>,
    /// The leader's address, when it is a member this node knows.
    pub leader_address: Option<String>,
    pub members: Vec<Member>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub committed_index: u64,
}

/// The openraft calls other servers make on this one.
#[derive(Debug, Clone, Copy)]
pub enum RaftCall {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.config.node_id)
            .field("data_dir", &self.shared.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the data directory, restores the state from it and starts Raft.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let dir = &config.data_dir;
        let started = Instant::now();
        // The snapshot is read and decoded while the log is opened and
        // checked: the two halves of a restart, on two cores.
        let snapshot = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let began = Instant::now();
                (StateMachine::load_snapshot(&dir), began.elapsed())
            })
        };
        let (log, report) = Log::open(
            dir,
            LogConfig {
                segment_size: config.segment_size,
            },
        )
        .map_err(|e| match e.corruption() {
            Some(c) => anyhow::anyhow!(
                "{c}\nthe log in {} is damaged; run `log-inspect verify {}` for details, and restore it from a backup or rebuild this replica from its cluster",
                dir.display(),
                dir.display()
            ),
            None => anyhow::Error::new(e).context(format!("cannot open the log in {}", dir.display())),
        })?;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                record = torn.index,
                saved_to = ?report.broken_file,
                "cut a torn tail left by a crash: {}",
                torn.reason
            );
        }
        // A log that ends before its committed point lost acknowledged
        // records: refuse, saying which and what to do, before Raft would
        // fail to read them. (An unreadable hint is only a hint: LogStore
        // warns and goes on without it.)
        if let Ok(marks) = log_format::RaftMarks::load(dir) {
            marks.check(dir, report.next_index)?;
        }
        let store = LogStore::open(log.clone(), dir).context("cannot read the Raft state files")?;
        let hub = Arc::new(Hub::default());
        let (loaded, snapshot_took) = snapshot.await.context("the snapshot loader panicked")?;
        let loaded = loaded.context("cannot load the snapshot")?;
        let archive = log_format::Archive::open(
            dir,
            log_format::ArchiveConfig {
                segment_size: config.archive_segment_size,
                ..Default::default()
            },
        )
        .map_err(|e| match e.corruption() {
            Some(c) => anyhow::anyhow!(
                "{c}\nthe message archive in {} is damaged; run `log-inspect verify {}` for details, and restore it from a backup or rebuild this replica from its cluster",
                dir.display(),
                dir.display()
            ),
            None => anyhow::Error::new(e)
                .context(format!("cannot open the message archive in {}", dir.display())),
        })?;
        let replay_began = Instant::now();
        let (sm, replayed) = StateMachine::restore(
            dir,
            &log,
            store.committed_hint(),
            hub,
            loaded,
            archive,
            config.body_cache,
        )
        .context("cannot rebuild the state from the log")?;
        tracing::info!(
            records = report.records,
            replayed = replayed.records,
            last_applied = replayed.last_applied,
            snapshot_ms = snapshot_took.as_millis() as u64,
            replay_ms = replay_began.elapsed().as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the log"
        );

        let raft_config = openraft::Config {
            cluster_name: "chat".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            // The state holds the whole history, so the log behind a
            // snapshot can go: disk use and restart time stay bounded.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_keep,
            ..Default::default()
        }
        .validate()
        .context("invalid Raft configuration")?;
        let (splits, split_reports) = Splits::channel();
        let peers = Arc::new(Peers::new(&config));
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(Arc::clone(&peers), Arc::clone(&config.faults), splits),
            store.clone(),
            sm.clone(),
        )
        .await
        .context("cannot start Raft")?;

        let initialized = raft
            .is_initialized()
            .await
            .context("cannot read Raft state")?;
        if !initialized && config.join.is_none() {
            // Every member of a new static cluster proposes the same initial
            // membership; the entries are identical, so it happens once.
            let members: BTreeMap<u64, NodeAddr> = if config.peers.is_empty() {
                BTreeMap::from([(
                    config.node_id,
                    NodeAddr {
                        addr: config.advertise_addr.clone(),
                    },
                )])
            } else {
                config
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, NodeAddr { addr: addr.clone() }))
                    .collect()
            };
            if let Err(e) = raft.initialize(members).await {
                // Another member's initial entry got here first: fine.
                tracing::debug!("cluster already initialised: {e}");
            }
        }
        if config.join.is_none() {
            raft.wait(Some(Duration::from_secs(10)))
                .metrics(
                    |m| m.membership_config.voter_ids().next().is_some(),
                    "the membership is loaded",
                )
                .await
                .context("the cluster membership did not load")?;
        }
        if lone_voter(&raft, config.node_id) {
            if initialized {
                // A lone voter need not wait out an election timeout.
                raft.trigger()
                    .elect()
                    .await
                    .context("cannot start an election")?;
            }
            // Serve writes from the first request on.
            raft.wait(Some(Duration::from_secs(10)))
                .state(ServerState::Leader, "a single node elects itself")
                .await
                .context("this node did not become leader of its one-node cluster")?;
            // Everything in the log (the new term's blank entry included)
            // is applied before the first read is answered.
            let last = raft.metrics().borrow().last_log_index;
            raft.wait(Some(Duration::from_secs(30)))
                .applied_index_at_least(last, "the log is applied")
                .await
                .context("the log was not applied")?;
        }
        // The body cache starts empty; filling it from the newest end of
        // the archive runs beside serving (see `Bodies::warm`).
        let warming = sm.clone();
        tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            match warming.bodies().warm() {
                Ok(warmed) => tracing::info!(
                    messages = warmed.messages,
                    bytes = warmed.bytes,
                    elapsed_ms = began.elapsed().as_millis() as u64,
                    "filled the body cache with the newest archived messages"
                ),
                Err(e) => tracing::warn!(
                    "cannot fill the body cache from the message archive ({e}); bodies are read from it as they are asked for"
                ),
            }
        });
        let batcher = Batcher::new(raft.clone(), config.node_id, Arc::clone(&peers));
        let tasks = [
            tokio::spawn(snapshot_by_events(
                raft.clone(),
                sm.clone(),
                config.snapshot_every,
            ))
            .abort_handle(),
            tokio::spawn(settle_splits(raft.clone(), split_reports)).abort_handle(),
        ];
        Ok(Node {
            shared: Arc::new(Shared {
                config,
                raft,
                sm,
                store,
                peers,
                batcher,
                tasks,
                disk_reads: tokio::sync::Semaphore::new(MAX_DISK_READS),
                presence: presence::Presence::default(),
                searches: tokio::sync::Semaphore::new(max_searches()),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs `f` on the chat state under one read lock. Never awaits: the
    /// lock is held only for the call.
    pub fn read<T>(&self, f: impl FnOnce(&ChatState) -> T) -> T {
        f(&self.shared.sm.state())
    }

    /// The messages `refs` name, with their bodies, in the same order; a
    /// message erased since the refs were read is left out. Bodies come
    /// from the cache or the archive, read without the state lock.
    pub async fn views(&self, refs: Vec<MessageRef>) -> Result<Vec<MessageView>, ChatError> {
        let ids: Vec<MessageId> = refs.iter().map(|r| r.id).collect();
        let bodies = self.bodies(ids).await?;
        Ok((refs.into_iter().zip(bodies))
            .filter_map(|(meta, stored)| Some(with_body(meta, stored?)))
            .collect())
    }

    /// The messages of `scope` whose body contains `query` ignoring case,
    /// newest first, at most `limit`, within the configured
    /// [`SearchBudget`](crate::config::SearchBudget) (see
    /// [`search::scan`]). Runs on the blocking pool, a bounded number at
    /// once, without the state lock.
    pub async fn search(
        &self,
        scope: search::Scope,
        query: &str,
        limit: usize,
    ) -> Result<search::Found, ChatError> {
        let unreadable = |e: String| {
            tracing::error!("cannot search message bodies: {e}");
            ChatError::Internal(format!(
                "this server cannot read its message archive ({e}); try another server of the cluster"
            ))
        };
        let _turn =
            (self.shared.searches.acquire().await).map_err(|e| unreadable(e.to_string()))?;
        let query = search::Query::new(query);
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let budget = shared.config.search_budget;
            search::scan(shared.sm.bodies(), &scope, &query, limit, budget)
        })
        .await
        .map_err(|e| unreadable(e.to_string()))?
        .map_err(|e| unreadable(e.to_string()))
    }

    /// Backlog entries with their messages' bodies; an entry whose message
    /// was erased since is left out.
    pub async fn feed_views(
        &self,
        entries: Vec<FeedEntry<MessageRef>>,
    ) -> Result<Vec<FeedEntry>, ChatError> {
        let ids: Vec<MessageId> = (entries.iter())
            .filter_map(|e| match &e.kind {
                FeedKind::Message(m) => Some(m.id),
                _ => None,
            })
            .collect();
        let mut bodies = self.bodies(ids).await?.into_iter();
        Ok((entries.into_iter())
            .filter_map(|e| {
                Some(FeedEntry {
                    index: e.index,
                    kind: e
                        .kind
                        .try_map(|meta| Some(Arc::new(with_body(meta, bodies.next()??))))?,
                })
            })
            .collect())
    }

    /// When message `id` was sent (0 if it is gone).
    pub async fn sent_at(&self, id: MessageId) -> Result<u64, ChatError> {
        Ok(self.bodies(vec![id]).await?[0]
            .as_ref()
            .map_or(0, |m| m.at_ms))
    }

    /// Bodies from the cache, or else read from the archive on the blocking
    /// pool: a page that is not in memory never stalls a runtime worker
    /// (and the streams and calls it serves) on the disk.
    async fn bodies(
        &self,
        ids: Vec<MessageId>,
    ) -> Result<Vec<Option<Arc<ArchivedMessage>>>, ChatError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(cached) = self.shared.sm.bodies().all_cached(&ids) {
            return Ok(cached);
        }
        let unreadable = |e: String| {
            tracing::error!("cannot read message bodies: {e}");
            ChatError::Internal(format!(
                "this server cannot read its message archive ({e}); try another server of the cluster"
            ))
        };
        let _turn =
            (self.shared.disk_reads.acquire().await).map_err(|e| unreadable(e.to_string()))?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.sm.bodies().get_many(&ids))
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .map_err(|e| unreadable(e.to_string()))
    }

    /// Registers a live stream of `account`'s events for `session`. Call it
    /// inside [`Node::read`] before reading the backlog: an event applied in
    /// between is then both in the backlog and on the stream (and dropped
    /// by its id), never in neither.
    /// At most `max_streams_per_session` per session.
    pub fn open_stream(
        &self,
        account: AccountId,
        session: SessionId,
    ) -> Result<Subscription, ChatError> {
        let config = &self.shared.config;
        let hub = self.shared.sm.hub();
        (hub.subscribe(
            account,
            session,
            config.stream_buffer,
            config.max_streams_per_session,
        ))
        .ok_or_else(|| {
            ChatError::RateLimited(format!(
                "this session already has {} subscriptions open; close one first",
                config.max_streams_per_session
            ))
        })
    }

    /// Of `among`, the accounts online: with a stream open here or on
    /// another server that reported it lately.
    pub fn online_among(&self, among: &[AccountId]) -> Vec<AccountId> {
        let here = self.shared.sm.hub().streaming_among(among);
        self.shared.presence.online_among(among, &here)
    }

    /// The accounts `account` shares a conversation with that are online.
    pub fn online_contacts(&self, account: AccountId) -> Vec<AccountId> {
        let contacts = self.read(|state| state.contacts(account));
        self.online_among(&contacts)
    }

    /// Takes another server's report of the accounts streaming there.
    pub fn presence_received(&self, report: presence::Report) {
        self.shared
            .presence
            .received(report, self.shared.config.node_id);
    }

    /// Runs presence rounds until `stop`: reports this server's streams to
    /// the other members and tells the streams here who came online or
    /// went offline, and the directory's news (see [`presence`]).
    pub async fn run_presence(self, stop: tokio_util::sync::CancellationToken) {
        let hub = Arc::clone(self.shared.sm.hub());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = hub.wake.notified() => {}
                () = self.shared.presence.wake.notified() => {}
                () = tokio::time::sleep(presence::HEARTBEAT) => {}
            }
            self.presence_round();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(presence::ROUND_GAP) => {}
            }
        }
    }

    fn presence_round(&self) {
        let shared = &self.shared;
        let hub = shared.sm.hub();
        let pending = hub.take_pending();
        let here = hub.accounts_streaming();
        let me = shared.config.node_id;
        let members: Vec<String> = {
            let metrics = shared.raft.metrics();
            let m = metrics.borrow();
            (m.membership_config.nodes())
                .filter(|(id, _)| **id != me)
                .map(|(_, n)| n.addr.clone())
                .collect()
        };
        let (report, new_senders) = shared.presence.report_due(me, &here, &members);
        for (addr, mut rx) in new_senders {
            let peers = Arc::clone(&shared.peers);
            tokio::spawn(async move {
                // Ends when the member leaves (its sender is dropped).
                while rx.changed().await.is_ok() {
                    let report = Arc::clone(&rx.borrow_and_update());
                    if let Err(e) = peers.presence(&addr, &report).await {
                        tracing::debug!("could not report presence to {addr}: {e}");
                    }
                }
            });
        }
        if let Some(report) = report {
            shared.presence.send(report);
        }
        let round = shared.presence.round(
            pending.streams_changed,
            pending.new_contacts,
            pending.directory,
            &here,
        );
        if !round.flipped.is_empty() || !round.new_contacts.is_empty() {
            let news = self.read(|state| {
                presence::news_of(
                    &round,
                    &here,
                    |a| state.contacts(a),
                    |among| shared.presence.online_among(among, &here),
                )
            });
            hub.tell(news);
        }
        for news in presence::directory_chunks(round.directory) {
            hub.tell_everyone(&news);
        }
    }

    /// The sessions that have an open stream here (they count as active).
    pub fn streaming_sessions(&self) -> Vec<SessionId> {
        self.shared.sm.hub().streaming_sessions()
    }

    /// The cursor that covers everything applied here.
    pub fn applied_cursor(&self) -> u64 {
        self.shared.sm.applied_cursor()
    }

    /// Proposes `event` and returns its log position and what applying it
    /// did, once a majority has it on disk and it is applied here. On a
    /// follower the write is forwarded to the leader.
    pub async fn propose(&self, event: Event) -> Result<(u64, Applied), ChatError> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let write = self.shared.batcher.write(event.clone());
            let attempt = tokio::time::timeout_at(deadline, write);
            match attempt.await.map_err(|_| no_quorum())? {
                Ok((position, applied)) => {
                    // Written by the leader: read-your-writes here too.
                    self.wait_applied(position).await?;
                    return Ok((position, applied));
                }
                Err(WriteError::NoLeader { why, .. }) => {
                    tracing::debug!("no leader took the write ({why}); waiting for one");
                    self.leader_change(deadline).await?;
                }
                Err(e) => {
                    return Err(e.into_chat_error(|e| {
                        format!(
                            "this server is shutting down or stopped replicating ({e}); use another server"
                        )
                    }));
                }
            }
        }
    }

    /// Proposes `events`, a batch another server forwarded, only if this
    /// node leads; never forwards again. One answer per event, in order.
    pub async fn propose_forwarded(&self, events: Vec<Event>) -> Vec<ForwardAnswer> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let outcomes = self.shared.batcher.write_forwarded(events, deadline).await;
        (outcomes.into_iter())
            .map(|outcome| outcome.map_err(WriteError::into_refusal))
            .collect()
    }

    /// Tells every other member that `sessions` were active here. Best
    /// effort: a member that misses a report hears of the sessions at the
    /// next one, long before they could look idle.
    pub async fn share_activity(&self, sessions: &[SessionId]) {
        let me = self.shared.config.node_id;
        let members: Vec<String> = {
            let metrics = self.shared.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(_, n)| n.addr.clone())
                .collect()
        };
        let mut reports = tokio::task::JoinSet::new();
        for addr in members {
            let peers = Arc::clone(&self.shared.peers);
            let sessions = sessions.to_vec();
            reports.spawn(async move {
                if let Err(e) = peers.touch(&addr, &sessions).await {
                    tracing::debug!("could not share session activity with {addr}: {e}");
                }
            });
        }
        while reports.join_next().await.is_some() {}
    }

    /// Waits (until `deadline`) for the leader known to this node to change.
    async fn leader_change(&self, deadline: tokio::time::Instant) -> Result<(), ChatError> {
        let mut metrics = self.shared.raft.metrics();
        let before = metrics.borrow().current_leader;
        let changed =
            metrics.wait_for(|m| m.current_leader != before && m.current_leader.is_some());
        // Even without a visible change, try again soon: the leader may have
        // been elected between our call and this wait.
        let soon = tokio::time::Instant::now() + Duration::from_millis(100);
        let _ = tokio::time::timeout_at(soon.min(deadline), changed).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(no_quorum());
        }
        Ok(())
    }

    /// Waits until this replica has applied the log position `cursor` (an
    /// id or cursor the client got from a write), so reads see the client's
    /// own writes.
    pub async fn wait_applied(&self, cursor: u64) -> Result<(), ChatError> {
        let sm = &self.shared.sm;
        let index = events::record_of(cursor);
        if index == 0 || sm.applied_index() >= index {
            return Ok(());
        }
        let mut rx = sm.applied();
        let wait = rx.wait_for(|applied| *applied >= index);
        match tokio::time::timeout(self.shared.config.read_wait, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ChatError::Unavailable("the server is shutting down".into())),
            Err(_) => Err(ChatError::Unavailable(format!(
                "this replica has not caught up with log position {cursor} yet; try again or use another server"
            ))),
        }
    }

    /// The address of the leader, if it is known and is another server.
    pub fn leader_elsewhere(&self) -> Option<String> {
        leader_elsewhere(&self.shared.raft, self.shared.config.node_id)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.shared.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
    }

    /// Whether this node belongs to a cluster yet (a joining node does not
    /// until it is added).
    pub async fn is_initialized(&self) -> bool {
        self.shared.raft.is_initialized().await.unwrap_or(false)
    }

    /// How this server sees the cluster now.
    pub fn status(&self) -> ClusterView {
        let metrics = self.shared.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let member = |(id, n): (&u64, &NodeAddr)| Member {
            node_id: *id,
            address: n.addr.clone(),
            voter: voters.contains(id),
        };
        ClusterView {
            node_id: m.id,
            role: m.state,
            term: m.current_term,
            leader_id: m.current_leader,
            leader_address: (m.current_leader)
                .and_then(|l| membership.get_node(&l))
                .map(|n| n.addr.clone()),
            members: membership.nodes().map(member).collect(),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            committed_index: self.shared.store.committed_hint().map_or(0, |l| l.index),
        }
    }

    /// Makes a membership change: here if this node leads, else through
    /// the leader (once: a change `forwarded` here is never sent on).
    pub async fn change_membership(&self, request: ChangeRequest) -> ChangeAnswer {
        let error = match self.change_here(&request.change).await {
            Ok(index) => return Ok((self.status().members, index)),
            Err(e) => e,
        };
        match error {
            WriteError::NoLeader {
                leader: Some(leader),
                ..
            } if !request.forwarded => {
                let onwards = ChangeRequest {
                    forwarded: true,
                    ..request
                };
                self.shared.peers.change_membership(&leader, &onwards).await
            }
            e => Err(e.into_chat_error(|e| format!("this server stopped replicating: {e}"))),
        }
    }

    /// Makes `change` through this node's Raft; the log index of the
    /// change once it is applied here.
    async fn change_here(&self, change: &MembershipChange) -> Result<u64, WriteError> {
        let raft = &self.shared.raft;
        let resp = match change {
            MembershipChange::Add { id, addr } => {
                let node = NodeAddr { addr: addr.clone() };
                // Waits for the new server to catch up as a learner, but not
                // for ever: a wrong or unreachable address would never do.
                let added = raft.add_learner(*id, node, true);
                tokio::time::timeout(LEARNER_CATCH_UP, added)
                    .await
                    .map_err(|_| {
                        WriteError::Answer(ChatError::Unavailable(format!(
                            "server {id} at {addr} did not catch up within {}s; check that it runs and that this address reaches it, then add it again",
                            LEARNER_CATCH_UP.as_secs()
                        )))
                    })??;
                let voters = ChangeMembers::AddVoterIds(BTreeSet::from([*id]));
                raft.change_membership(voters, false).await?
            }
            MembershipChange::Remove { id } => {
                let voters = ChangeMembers::RemoveVoters(BTreeSet::from([*id]));
                raft.change_membership(voters, false).await?
            }
        };
        let index = resp.log_id.index;
        (self.wait_applied(events::position(index, 0)).await).map_err(WriteError::Answer)?;
        Ok(index)
    }

    /// Asks the member at `seed` to add this node to its cluster.
    pub async fn ask_to_join(&self, seed: &str) -> Result<(), ChatError> {
        let config = &self.shared.config;
        let request = ChangeRequest {
            change: MembershipChange::Add {
                id: config.node_id,
                addr: config.advertise_addr.clone(),
            },
            forwarded: false,
        };
        self.shared.peers.change_membership(seed, &request).await?;
        Ok(())
    }

    /// Hands an openraft request from another server to this node's Raft;
    /// the reply's payload. Both are postcard, opaque to the caller.
    pub async fn raft_call(&self, call: RaftCall, payload: &[u8]) -> Result<Vec<u8>, ChatError> {
        let bad = |e: postcard::Error| {
            ChatError::invalid(format!(
                "undecodable Raft payload ({e}); are both servers the same version?"
            ))
        };
        let raft = &self.shared.raft;
        let reply = match call {
            RaftCall::AppendEntries => {
                encode(&raft.append_entries(decode(payload).map_err(bad)?).await)
            }
            RaftCall::Vote => encode(&raft.vote(decode(payload).map_err(bad)?).await),
            RaftCall::InstallSnapshot => {
                encode(&raft.install_snapshot(decode(payload).map_err(bad)?).await)
            }
        };
        reply.map_err(|e| ChatError::Internal(format!("cannot encode the reply: {e}")))
    }

    /// Resolves, with the reason, if this node's Raft stops by itself (a
    /// storage error it cannot go past): the node can no longer write, and
    /// the process should end so that a supervisor restarts it.
    pub async fn stopped_replicating(&self) -> String {
        let mut metrics = self.shared.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core ended".into();
            }
        }
    }

    /// Stops Raft and writes what is still in memory.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        for task in &self.shared.tasks {
            task.abort();
        }
        self.shared.sm.bodies().stop_warming();
        self.snapshot_before_stopping().await;
        (self.shared.raft.shutdown())
            .await
            .context("Raft did not stop cleanly")?;
        let store = &self.shared.store;
        store.log().flush().context("cannot flush the log")?;
        store
            .persist_committed()
            .context("cannot save the committed index")?;
        Ok(())
    }
}

impl Node {
    /// Takes a snapshot of what changed since the last one, so that the
    /// next start loads it and replays nothing: a planned restart then
    /// costs the snapshot's load, not the replay of up to
    /// `snapshot_every` events. Failing that, the next start replays.
    async fn snapshot_before_stopping(&self) {
        let (raft, sm) = (&self.shared.raft, &self.shared.sm);
        let events = sm.events_since_snapshot();
        if events == 0 {
            return;
        }
        let started = Instant::now();
        let before = raft.metrics().borrow().snapshot;
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::warn!(
                "no snapshot before stopping ({e}); the next start replays the log since the last one"
            );
            return;
        }
        let built = (raft.wait(Some(Duration::from_secs(120))))
            .metrics(|m| m.snapshot != before, "the snapshot is built")
            .await;
        match built {
            Ok(_) => tracing::info!(
                events,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "took a snapshot before stopping, so the next start replays nothing"
            ),
            Err(e) => tracing::warn!(
                "no snapshot before stopping ({e}); the next start replays the log since the last one"
            ),
        }
    }
}

/// Message `meta` with its archived body.
fn with_body(meta: MessageRef, stored: Arc<ArchivedMessage>) -> MessageView {
    MessageView {
        body: stored.body.clone(),
        at_ms: stored.at_ms,
        meta,
    }
}
