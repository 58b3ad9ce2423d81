//! One server's replica: the log, the Raft instance over it, and the state
//! machine, started together. Services call [`Node::propose`] to write and
//! [`Node::wait_applied`] before reading.
//!
//! Writes are batched: openraft 0.9 appends and flushes one client write at
//! a time, so one event per Raft entry would cost one fsync per message.
//! With up to [`MAX_IN_FLIGHT`] entries in Raft at once, proposals that find
//! every slot busy queue up, and the next free slot writes everything queued
//! (up to [`MAX_BATCH_EVENTS`] events or [`MAX_BATCH_BYTES`]) as one entry.
//! Under load, each fsync and each replication round carries many messages;
//! alone, a message waits for nothing. Each event's id is its log position
//! (`events::position`).
//!
//! On a follower the same batches go to the leader, one `Raft.Forward` call
//! per batch, and the leader adds them to its own batches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use log_format::events::{self, EVENTS_PER_RECORD, Event, SessionId};
use log_format::{Log, LogConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use tokio::sync::{Semaphore, oneshot};

use crate::config::Config;
use crate::error::ChatError;
use crate::hub::Hub;
use crate::raft::elections::{Splits, settle_splits};
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, decode, encode, raft_client, with_secret};
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeAddr, Raft};
use crate::state::Applied;
use chat_proto::raft_client::RaftClient;
use tonic::transport::Channel;

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

/// What a node that does not lead answers a forwarded write.
const NOT_LEADER: &str = "this server is not the leader";

fn no_quorum() -> ChatError {
    ChatError::Unavailable(
        "the cluster did not commit the write in time (no leader or no majority); try again".into(),
    )
}

fn busy() -> ChatError {
    ChatError::Unavailable(
        "too many writes are waiting for the cluster to commit (no leader or no majority); try again shortly".into(),
    )
}

/// How long a write may wait for a quorum before it fails with UNAVAILABLE.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most events in one Raft entry: every slot of a log record.
pub const MAX_BATCH_EVENTS: usize = EVENTS_PER_RECORD as usize;
/// A batch stops growing once its events weigh this much, which bounds
/// records and AppendEntries messages (openraft sends up to
/// `max_payload_entries` entries per message).
pub const MAX_BATCH_BYTES: usize = 256 << 10;
/// Entries handed to Raft and not yet answered. Two let a batch form and be
/// appended while the previous one is replicated and applied; more only
/// make batches smaller (measured: 1 or 2 give ~16,000 sends/s with 64
/// senders on one node, 8 gives 11,500).
pub const MAX_IN_FLIGHT: usize = 2;

/// Batches a follower has sent to the leader and not yet had answered.
/// Nothing on the follower serializes them (the leader adds them to its
/// own batches), so more may be in flight than entries; with 64 senders on
/// three replicas, 2 and 8 measured the same.
pub const MAX_FORWARDS_IN_FLIGHT: usize = 8;

/// Proposals that may wait for a slot. While the cluster cannot commit
/// (no majority), the entries in flight hold both slots and requests queue
/// up; past this many, a write is refused at once (UNAVAILABLE) rather than
/// growing memory for as long as the outage lasts.
const MAX_QUEUED: usize = 65_536;

/// Why an event was not written.
#[derive(Debug, Clone)]
enum WriteError {
    /// [`MAX_QUEUED`] writes already wait.
    Busy,
    /// No leader to write to: none is known, the one known could not be
    /// reached, or it no longer leads. Wait for one and try again.
    NoLeader(String),
    /// The leader's answer to a forwarded write.
    Answer(ChatError),
    Membership(String),
    Fatal(String),
}

impl WriteError {
    /// What the client is told; `fatal` words a [`WriteError::Fatal`].
    fn into_chat_error(self, fatal: impl FnOnce(String) -> String) -> ChatError {
        match self {
            WriteError::Busy => busy(),
            WriteError::NoLeader(why) => ChatError::Unavailable(why),
            WriteError::Answer(e) => e,
            WriteError::Membership(e) => ChatError::FailedPrecondition(e),
            WriteError::Fatal(e) => ChatError::Unavailable(fatal(e)),
        }
    }
}

type WriteResult = Result<(u64, Applied), WriteError>;

/// An event waiting to be written, and where its outcome goes.
struct Proposal {
    event: Event,
    reply: oneshot::Sender<WriteResult>,
    /// May go to the leader if this node does not lead. Not for writes
    /// another server forwarded here: they are never sent on.
    forward: bool,
}

/// Roughly how many bytes `event` adds to an entry.
fn weight(event: &Event) -> usize {
    const FIXED: usize = 64;
    match event {
        Event::MessageSent {
            body,
            client_msg_id,
            ..
        } => FIXED + body.len() + client_msg_id.len(),
        Event::AccountCreated {
            username,
            password_hash,
            ..
        } => FIXED + username.len() + password_hash.0.len(),
        Event::MessagesDeleted { ids, .. } => FIXED + 10 * ids.len(),
        _ => FIXED,
    }
}

/// Asks Raft for a snapshot once `every` chat events were applied since the
/// last one. openraft counts entries, and an entry holds up to
/// [`MAX_BATCH_EVENTS`] events: counting events keeps the log to replay at
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

/// Groups concurrent proposals into Raft entries. Whoever finds a free slot
/// (one of [`MAX_IN_FLIGHT`]) writes everything queued as one entry; a
/// proposal that finds every slot busy waits in the queue, and the write
/// that frees a slot takes it. Alone, a proposal is written at once. On a
/// follower, a batch is forwarded to the leader in one call instead.
struct Batcher {
    raft: Raft,
    me: u64,
    peers: Arc<Peers>,
    queue: Mutex<Queue>,
    slots: Arc<Semaphore>,
    /// Batches sent to the leader and not yet answered.
    forwards: Arc<Semaphore>,
}

/// Clients of the other servers' Raft services, by address, and the secret
/// every call carries.
struct Peers {
    secret: String,
    ca: Option<Vec<u8>>,
    clients: Mutex<HashMap<String, RaftClient<Channel>>>,
}

impl Peers {
    fn new(config: &Config) -> Peers {
        Peers {
            secret: config.cluster_secret.clone().unwrap_or_default(),
            ca: config.peer_ca().map(<[u8]>::to_vec),
            clients: Mutex::default(),
        }
    }

    /// A (lazily connected, shared) client of the server at `addr`.
    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = raft_client(addr, self.ca.as_deref()).map_err(|e| e.to_string())?;
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_secret(message, &self.secret)
    }
}

/// The address of the leader, if it is known and is not `me`.
fn leader_elsewhere(raft: &Raft, me: u64) -> Option<String> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let leader = m.current_leader.filter(|l| *l != me)?;
    m.membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())
}

/// Proposals waiting for a slot, oldest first.
#[derive(Default)]
struct Queue(VecDeque<Proposal>);

impl Queue {
    /// Adds `p`, unless [`MAX_QUEUED`] proposals already wait (counting only
    /// those whose requester still waits for an answer).
    fn push(&mut self, p: Proposal) -> Result<(), Proposal> {
        if self.0.len() >= MAX_QUEUED {
            self.0.retain(|p| !p.reply.is_closed());
        }
        if self.0.len() >= MAX_QUEUED {
            return Err(p);
        }
        self.0.push_back(p);
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next batch: the oldest proposals up to an entry's limits. A
    /// proposal whose requester gave up (its request timed out or was
    /// cancelled, so it was told nothing was sure) is dropped, not written.
    fn take(&mut self) -> Vec<Proposal> {
        let mut bytes = 0;
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
            let Some(p) = self.0.pop_front() else { break };
            if p.reply.is_closed() {
                continue;
            }
            bytes += weight(&p.event);
            batch.push(p);
        }
        batch
    }
}

/// Waits for the outcome of one queued proposal.
async fn outcome(queued: Result<oneshot::Receiver<WriteResult>, WriteError>) -> WriteResult {
    queued?
        .await
        .unwrap_or_else(|_| Err(WriteError::Fatal("the write was dropped".into())))
}

impl Batcher {
    fn new(raft: Raft, me: u64, peers: Arc<Peers>) -> Arc<Batcher> {
        Arc::new(Batcher {
            raft,
            me,
            peers,
            queue: Mutex::default(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
        })
    }

    /// Queues `events`, in order, and starts writing.
    fn enqueue(
        self: &Arc<Self>,
        events: Vec<Event>,
        forward: bool,
    ) -> Vec<Result<oneshot::Receiver<WriteResult>, WriteError>> {
        let queued = {
            let mut queue = self.lock();
            events
                .into_iter()
                .map(|event| {
                    let (reply, outcome) = oneshot::channel();
                    queue
                        .push(Proposal {
                            event,
                            reply,
                            forward,
                        })
                        .map(|()| outcome)
                        .map_err(|_| WriteError::Busy)
                })
                .collect()
        };
        Arc::clone(self).drain();
        queued
    }

    /// Writes `event` (with whatever else is queued), through the leader if
    /// this node does not lead, and waits for its outcome. Dropping the
    /// future leaves the write going.
    async fn write(self: &Arc<Self>, event: Event) -> WriteResult {
        let queued = self.enqueue(vec![event], true).pop();
        outcome(queued.expect("one event queued")).await
    }

    /// Writes `events` here, a batch another server forwarded, and waits
    /// (until `deadline`) for the outcome of each, in order.
    async fn write_forwarded(
        self: &Arc<Self>,
        events: Vec<Event>,
        deadline: tokio::time::Instant,
    ) -> Vec<WriteResult> {
        let mut outcomes = Vec::with_capacity(events.len());
        for queued in self.enqueue(events, false) {
            let done = tokio::time::timeout_at(deadline, outcome(queued)).await;
            outcomes.push(done.unwrap_or_else(|_| Err(WriteError::Answer(no_quorum()))));
        }
        outcomes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Plain pushes and pops: a panic cannot leave the queue torn.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While proposals wait and a slot is free, writes them in a task of
    /// its own (so a cancelled request cannot cancel others' writes). A
    /// finished write frees its slot first and drains again, so nothing is
    /// left queued with a slot free.
    fn drain(self: Arc<Self>) {
        loop {
            if self.lock().is_empty() {
                return;
            }
            // Only which kind of slot: the address is looked up once per
            // batch, in `commit`.
            let forwarding = self
                .raft
                .metrics()
                .borrow()
                .current_leader
                .is_some_and(|l| l != self.me);
            let slots = if forwarding {
                &self.forwards
            } else {
                &self.slots
            };
            let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
                return;
            };
            let batch = self.lock().take();
            if batch.is_empty() {
                return;
            }
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                this.commit(batch).await;
                drop(slot);
                this.drain();
            });
        }
    }

    /// Writes `batch`, as one entry here or in one call to the leader, and
    /// answers every proposal in it.
    async fn commit(&self, mut batch: Vec<Proposal>) {
        let leader = leader_elsewhere(&self.raft, self.me);
        if let Some(leader) = &leader {
            // Writes forwarded here go back to their server, which finds
            // the leader itself.
            let (onwards, refused): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.forward);
            for p in refused {
                let why = format!("{NOT_LEADER}; the leader is at {leader}");
                let _ = p.reply.send(Err(WriteError::NoLeader(why)));
            }
            if onwards.is_empty() {
                return;
            }
            batch = onwards;
        }
        let (events, replies): (Vec<Event>, Vec<_>) =
            batch.into_iter().map(|p| (p.event, p.reply)).unzip();
        let outcomes = match leader {
            Some(leader) => self.forward(&leader, events).await,
            None => self.append(events).await,
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    /// Writes `events` as one entry of this node's log.
    async fn append(&self, events: Vec<Event>) -> Vec<WriteResult> {
        let n = events.len();
        let e = match self.raft.client_write(events).await {
            Ok(resp) => {
                let index = resp.log_id.index;
                return (resp.data.into_iter().enumerate())
                    .map(|(slot, applied)| Ok((events::position(index, slot), applied)))
                    .collect();
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                WriteError::NoLeader(NOT_LEADER.into())
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                WriteError::Membership(e.to_string())
            }
            Err(RaftError::Fatal(e)) => WriteError::Fatal(e.to_string()),
        };
        vec![Err(e); n]
    }

    /// Sends `events` to the leader at `addr` in one call.
    async fn forward(&self, addr: &str, events: Vec<Event>) -> Vec<WriteResult> {
        let n = events.len();
        let answers = async {
            let mut client = self.peers.client(addr)?;
            let payload = encode(&events).map_err(|e| e.to_string())?;
            let call = client.forward(self.peers.request(chat_proto::ForwardRequest { payload }));
            let reply = tokio::time::timeout(WRITE_TIMEOUT, call)
                .await
                .map_err(|_| format!("the leader at {addr} did not answer in time"))?
                .map_err(|status| format!("the leader at {addr}: {status}"))?;
            let answers: Vec<Result<(u64, Applied), ChatError>> =
                decode(&reply.into_inner().payload).map_err(|e| e.to_string())?;
            if answers.len() != n {
                return Err(format!(
                    "the leader at {addr} answered {} of {n} writes",
                    answers.len()
                ));
            }
            Ok(answers)
        };
        match answers.await {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| {
                    answer.map_err(|e| match e {
                        ChatError::Unavailable(why) if why.starts_with(NOT_LEADER) => {
                            WriteError::NoLeader(why)
                        }
                        e => WriteError::Answer(e),
                    })
                })
                .collect(),
            Err(why) => vec![Err(WriteError::NoLeader(why)); n],
        }
    }
}

pub struct Node {
    pub config: Config,
    pub raft: Raft,
    pub sm: StateMachine,
    pub store: LogStore,
    /// Connections to other servers (leaders writes are forwarded to,
    /// members activity is shared with).
    peers: Arc<Peers>,
    /// Turns concurrent proposals into shared entries.
    batcher: Arc<Batcher>,
    /// The tasks that ask for snapshots by event count and settle split
    /// votes.
    tasks: [tokio::task::AbortHandle; 2],
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.config.node_id)
            .field("data_dir", &self.config.data_dir)
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
            tokio::task::spawn_blocking(move || StateMachine::load_snapshot(&dir))
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
        let store = LogStore::open(log.clone(), dir).context("cannot read the Raft state files")?;
        let hub = Arc::new(Hub::default());
        let loaded = snapshot
            .await
            .context("the snapshot loader panicked")?
            .context("cannot load the snapshot")?;
        let (sm, replayed) = StateMachine::restore(dir, &log, store.committed_hint(), hub, loaded)
            .context("cannot rebuild the state from the log")?;
        tracing::info!(
            records = report.records,
            replayed = replayed.records,
            last_applied = replayed.last_applied,
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
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(
                config.cluster_secret.as_deref(),
                Arc::clone(&config.faults),
                config.peer_ca(),
                splits,
            ),
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
        let peers = Arc::new(Peers::new(&config));
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
            config,
            raft,
            sm,
            store,
            peers,
            batcher,
            tasks,
        })
    }

    /// Proposes `event` and returns its log position and what applying it
    /// did, once a majority has it on disk and it is applied here. On a
    /// follower the write is forwarded to the leader.
    pub async fn propose(&self, event: Event) -> Result<(u64, Applied), ChatError> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.batcher.write(event.clone()));
            match attempt.await.map_err(|_| no_quorum())? {
                Ok((position, applied)) => {
                    // Written by the leader: read-your-writes here too.
                    self.wait_applied(position).await?;
                    return Ok((position, applied));
                }
                Err(WriteError::NoLeader(why)) => {
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
    pub async fn propose_forwarded(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<(u64, Applied), ChatError>> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let outcomes = self.batcher.write_forwarded(events, deadline).await;
        (outcomes.into_iter())
            .map(|outcome| {
                outcome.map_err(|e| {
                    e.into_chat_error(|e| format!("the leader is shutting down ({e})"))
                })
            })
            .collect()
    }

    /// Tells every other member that `sessions` were active here. Best
    /// effort: a member that misses a report hears of the sessions at the
    /// next one, long before they could look idle.
    pub async fn share_activity(&self, sessions: &[SessionId]) {
        let me = self.config.node_id;
        let members: Vec<String> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(_, n)| n.addr.clone())
                .collect()
        };
        let Ok(payload) = encode(&sessions) else {
            return;
        };
        let mut reports = tokio::task::JoinSet::new();
        for addr in members {
            let request = self.peers.request(chat_proto::TouchRequest {
                payload: payload.clone(),
            });
            let client = self.peers.client(&addr);
            reports.spawn(async move {
                let result = async {
                    let mut client = client?;
                    tokio::time::timeout(Duration::from_secs(2), client.touch(request))
                        .await
                        .map_err(|_| "timed out".to_string())?
                        .map_err(|e| e.to_string())
                }
                .await;
                if let Err(e) = result {
                    tracing::debug!("could not share session activity with {addr}: {e}");
                }
            });
        }
        while reports.join_next().await.is_some() {}
    }

    /// Waits (until `deadline`) for the leader known to this node to change.
    async fn leader_change(&self, deadline: tokio::time::Instant) -> Result<(), ChatError> {
        let mut metrics = self.raft.metrics();
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
        let index = events::record_of(cursor);
        if index == 0 || self.sm.applied_index() >= index {
            return Ok(());
        }
        let mut rx = self.sm.applied();
        let wait = rx.wait_for(|applied| *applied >= index);
        match tokio::time::timeout(self.config.read_wait, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ChatError::Unavailable("the server is shutting down".into())),
            Err(_) => Err(ChatError::Unavailable(format!(
                "this replica has not caught up with log position {cursor} yet; try again or use another server"
            ))),
        }
    }

    /// The address of the leader, if it is known and is another server.
    pub fn leader_elsewhere(&self) -> Option<String> {
        leader_elsewhere(&self.raft, self.config.node_id)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
    }

    /// Stops Raft and writes what is still in memory.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        self.raft
            .shutdown()
            .await
            .context("Raft did not stop cleanly")?;
        self.store.log().flush().context("cannot flush the log")?;
        self.store
            .persist_committed()
            .context("cannot save the committed index")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_format::events::AccountId;

    fn proposal(body_len: usize) -> (Proposal, oneshot::Receiver<WriteResult>) {
        let (reply, outcome) = oneshot::channel();
        let event = Event::MessageSent {
            from: AccountId(1000),
            to: AccountId(2000),
            client_msg_id: "k".into(),
            body: "x".repeat(body_len),
            at_ms: 1,
        };
        let forward = true;
        (
            Proposal {
                event,
                reply,
                forward,
            },
            outcome,
        )
    }

    #[test]
    fn batches_skip_abandoned_proposals_and_respect_the_limits() {
        let mut queue = Queue::default();
        let (a, _a) = proposal(10);
        let (b, b_outcome) = proposal(10);
        let (c, _c) = proposal(10);
        for p in [a, b, c] {
            assert!(queue.push(p).is_ok());
        }
        // b's requester gave up: it is not written.
        drop(b_outcome);
        assert_eq!(queue.take().len(), 2);
        assert!(queue.is_empty());

        // Big events: a batch stops once it weighs MAX_BATCH_BYTES.
        let mut waiting = Vec::new();
        for _ in 0..40 {
            let (p, o) = proposal(16 << 10);
            waiting.push(o);
            assert!(queue.push(p).is_ok());
        }
        let mut sizes = Vec::new();
        while !queue.is_empty() {
            sizes.push(queue.take().len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.len() > 1, "{sizes:?}");
        assert!(sizes[0] * (16 << 10) >= MAX_BATCH_BYTES, "{sizes:?}");
    }

    #[test]
    fn a_full_queue_refuses_until_requesters_give_up() {
        let mut queue = Queue::default();
        let mut waiting = Vec::new();
        for _ in 0..MAX_QUEUED {
            let (p, o) = proposal(1);
            waiting.push(o);
            assert!(queue.push(p).is_ok());
        }
        let (extra, _extra) = proposal(1);
        let extra = queue.push(extra).expect_err("the queue is full");
        // Once requesters give up, their proposals make room.
        waiting.truncate(10);
        assert!(queue.push(extra).is_ok());
    }
}
