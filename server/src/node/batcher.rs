//! Groups concurrent writes into Raft entries.
//!
//! openraft 0.9 appends and flushes one client write at a time, so one
//! event per Raft entry would cost one fsync per message. With up to
//! [`MAX_IN_FLIGHT`] entries in Raft at once, proposals that find every slot
//! busy queue up, and the next free slot writes everything queued (up to
//! [`MAX_BATCH_EVENTS`] events or [`MAX_BATCH_BYTES`]) as one entry. Under
//! load, each fsync and each replication round carries many messages;
//! alone, a message waits for nothing. Each event's id is its log position
//! (`events::position`).
//!
//! On a follower the same batches go to the leader, one `Raft.Forward` call
//! per batch (through [`Peers`]), and the leader adds them to its own
//! batches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log_format::events::{self, EVENTS_PER_RECORD, Event, GroupChange};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, oneshot};

use crate::error::ChatError;
use crate::peers::{ForwardAnswer, Peers, Refusal};
use crate::raft::{NodeAddr, NodeId, Raft};
use crate::state::Applied;

pub(super) fn no_quorum() -> ChatError {
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
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Why an event (or a membership change) was not written.
#[derive(Debug, Clone)]
pub(super) enum WriteError {
    /// [`MAX_QUEUED`] writes already wait.
    Busy,
    /// No leader to write to: none is known, the one known could not be
    /// reached, or it no longer leads. Wait for one and try again.
    NoLeader {
        /// The leader's address, when the server that refused knows it.
        leader: Option<String>,
        why: String,
    },
    /// The leader's answer to a forwarded write.
    Answer(ChatError),
    Membership(String),
    Fatal(String),
}

const NOT_LEADER: &str = "this server is not the leader";

impl From<RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>> for WriteError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WriteError::NoLeader {
                leader: f.leader_node.map(|n| n.addr),
                why: NOT_LEADER.into(),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                WriteError::Membership(format!(
                    "{e}; fix the request or wait for the change in progress"
                ))
            }
            RaftError::Fatal(e) => WriteError::Fatal(e.to_string()),
        }
    }
}

impl WriteError {
    /// What the client is told; `fatal` words a [`WriteError::Fatal`].
    pub(super) fn into_chat_error(self, fatal: impl FnOnce(String) -> String) -> ChatError {
        match self {
            WriteError::Busy => busy(),
            WriteError::NoLeader { leader, why } => ChatError::Unavailable(match leader {
                Some(leader) => format!("{why}; the leader is at {leader}"),
                None => format!("{why}; no leader is elected right now, try again shortly"),
            }),
            WriteError::Answer(e) => e,
            WriteError::Membership(e) => ChatError::FailedPrecondition(e),
            WriteError::Fatal(e) => ChatError::Unavailable(fatal(e)),
        }
    }

    /// The answer to a server that forwarded this write.
    pub(super) fn into_refusal(self) -> Refusal {
        match self {
            WriteError::NoLeader { leader, .. } => Refusal::NotLeader { leader },
            e => {
                Refusal::Failed(e.into_chat_error(|e| format!("the leader is shutting down ({e})")))
            }
        }
    }
}

pub(super) type WriteResult = Result<(u64, Applied), WriteError>;

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
        }
        | Event::Posted {
            body,
            client_msg_id,
            ..
        } => FIXED + body.len() + client_msg_id.len(),
        Event::GroupCreated {
            title,
            members,
            client_request_id,
            ..
        } => FIXED + title.len() + client_request_id.len() + 10 * members.len(),
        Event::GroupChanged {
            change: GroupChange::Added(ids),
            ..
        } => FIXED + 10 * ids.len(),
        Event::AccountCreated {
            username,
            password_hash,
            ..
        } => FIXED + username.len() + password_hash.0.len(),
        Event::MessagesDeleted { ids, .. } => FIXED + 10 * ids.len(),
        _ => FIXED,
    }
}

/// Groups concurrent proposals into Raft entries. Whoever finds a free slot
/// (one of [`MAX_IN_FLIGHT`]) writes everything queued as one entry; a
/// proposal that finds every slot busy waits in the queue, and the write
/// that frees a slot takes it. Alone, a proposal is written at once. On a
/// follower, a batch is forwarded to the leader in one call instead.
pub(super) struct Batcher {
    raft: Raft,
    me: u64,
    peers: Arc<Peers>,
    queue: Mutex<Queue>,
    slots: Arc<Semaphore>,
    /// Batches sent to the leader and not yet answered.
    forwards: Arc<Semaphore>,
}

/// The address of the leader, if it is known and is not `me`.
pub(super) fn leader_elsewhere(raft: &Raft, me: u64) -> Option<String> {
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
    pub(super) fn new(raft: Raft, me: u64, peers: Arc<Peers>) -> Arc<Batcher> {
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
    pub(super) async fn write(self: &Arc<Self>, event: Event) -> WriteResult {
        let queued = self.enqueue(vec![event], true).pop();
        outcome(queued.expect("one event queued")).await
    }

    /// Writes `events` here, a batch another server forwarded, and waits
    /// (until `deadline`) for the outcome of each, in order.
    pub(super) async fn write_forwarded(
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
            // batch, in `write_batch`.
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
                this.write_batch(batch).await;
                drop(slot);
                this.drain();
            });
        }
    }

    /// Writes `batch`, as one entry here or in one call to the leader, and
    /// answers every proposal in it (once committed and applied, or not).
    async fn write_batch(&self, mut batch: Vec<Proposal>) {
        let leader = leader_elsewhere(&self.raft, self.me);
        if let Some(leader) = &leader {
            // Writes forwarded here go back to their server, which finds
            // the leader itself.
            let (onwards, refused): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.forward);
            for p in refused {
                let _ = p.reply.send(Err(WriteError::NoLeader {
                    leader: Some(leader.clone()),
                    why: NOT_LEADER.into(),
                }));
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
        match self.raft.client_write(events).await {
            Ok(resp) => {
                let index = resp.log_id.index;
                (resp.data.into_iter().enumerate())
                    .map(|(slot, applied)| Ok((events::position(index, slot), applied)))
                    .collect()
            }
            Err(e) => vec![Err(WriteError::from(e)); n],
        }
    }

    /// Sends `events` to the leader at `addr` in one call.
    async fn forward(&self, addr: &str, events: Vec<Event>) -> Vec<WriteResult> {
        match self.peers.forward(addr, &events, WRITE_TIMEOUT).await {
            Ok(answers) => answers.into_iter().map(from_leader).collect(),
            Err(why) => vec![Err(WriteError::NoLeader { leader: None, why }); events.len()],
        }
    }
}

/// A leader's answer to one forwarded write, as this server's outcome.
fn from_leader(answer: ForwardAnswer) -> WriteResult {
    answer.map_err(|refusal| match refusal {
        Refusal::NotLeader { leader } => WriteError::NoLeader {
            leader,
            why: "the server this write was forwarded to no longer leads".into(),
        },
        Refusal::Failed(e) => WriteError::Answer(e),
    })
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
