//! Two changes to how openraft 0.9 campaigns, both about the node with the
//! longest log becoming leader soon after a leader dies.
//!
//! **A split with a shorter log is settled at once.** openraft 0.9 does not
//! adopt a candidate's term when it refuses it for having the shorter log.
//! So when the survivor with the shorter log times out first (it asks for
//! term T+1 and is refused), the survivor with the longer log later asks for
//! the same term T+1, and is refused in turn because the first has voted for
//! itself in T+1. Nobody wins T+1, and the one that can win waits a whole
//! election timeout to try T+2. When a vote reply shows exactly that (the
//! voter follows no leader, voted in our term or a later one for someone
//! else, and has a strictly shorter log than ours, so it would grant us a
//! later term), this node campaigns again at once. Only the longer log ever
//! does this, so two nodes cannot provoke each other.
//!
//! **No stale back-off.** A candidate that sees a longer log in a reply adds
//! twice the maximum election timeout to its next timeout, to let the longer
//! log campaign first, and openraft 0.9 clears that flag only at the node's
//! *next* election, however much later. A node that once lost a campaign to
//! a longer log thus carries the penalty into the next failover, when its own
//! log may be the longest: measured, that took failovers from ~0.6 s to
//! 1.1-1.8 s. The back-off is not needed once splits settle as above, so
//! vote replies reach openraft without the hint (their `last_log_id` is
//! capped at the candidate's own); nothing else in openraft reads it.

use openraft::ServerState;
use openraft::raft::{VoteRequest, VoteResponse};
use tokio::sync::mpsc;

use super::{NodeId, Raft};

/// What [`review`] makes of a vote reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Review {
    /// The reply as openraft is to see it.
    pub reply: VoteResponse<NodeId>,
    /// Campaign again now: this node lost a split to a voter with a shorter
    /// log, which would grant it the next term.
    pub campaign: bool,
}

/// Looks at the reply to one of this node's vote requests.
pub fn review(request: &VoteRequest<NodeId>, mut reply: VoteResponse<NodeId>) -> Review {
    let mine = request.last_log_id.as_ref();
    let theirs = reply.last_log_id.as_ref();
    let campaign = !reply.vote_granted
        && !reply.vote.is_committed()
        && reply.vote != request.vote
        && reply.vote.leader_id().term >= request.vote.leader_id().term
        && theirs < mine;
    if theirs > mine {
        reply.last_log_id = request.last_log_id;
    }
    Review { reply, campaign }
}

/// A campaign of this node that a voter with a shorter log did not grant.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    /// The term this node asked for.
    pub asked: u64,
    /// The term the voter had voted in.
    pub voted: u64,
}

/// Where the network reports splits to [`settle_splits`].
#[derive(Debug, Clone)]
pub struct Splits(mpsc::Sender<Split>);

impl Splits {
    pub fn channel() -> (Splits, mpsc::Receiver<Split>) {
        let (tx, rx) = mpsc::channel(16);
        (Splits(tx), rx)
    }

    /// Reports a split. A full queue drops the report: one is enough.
    pub fn report(&self, request: &VoteRequest<NodeId>, reply: &VoteResponse<NodeId>) {
        let _ = self.0.try_send(Split {
            asked: request.vote.leader_id().term,
            voted: reply.vote.leader_id().term,
        });
    }
}

/// Campaigns again after a split, at most once per term this node asked
/// for, if it is still a voter without a leader and has not already moved
/// to a later term than the split's (a newer campaign is under way).
pub async fn settle_splits(raft: Raft, mut splits: mpsc::Receiver<Split>) {
    let mut settled = 0;
    while let Some(split) = splits.recv().await {
        if split.asked <= settled {
            continue;
        }
        let open = {
            let m = raft.metrics();
            let m = m.borrow();
            matches!(m.state, ServerState::Candidate | ServerState::Follower)
                && !m.vote.is_committed()
                && m.vote.leader_id().term <= split.asked.max(split.voted)
        };
        if !open {
            continue;
        }
        settled = split.asked;
        tracing::info!(
            asked = split.asked,
            voted = split.voted,
            "a voter with a shorter log split the vote; campaigning again"
        );
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;
    use openraft::testing::log_id;

    use super::*;

    fn request(term: u64, last: u64) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, 1), Some(log_id(2, 3, last)))
    }

    fn reply(vote: Vote<NodeId>, granted: bool, last: u64) -> VoteResponse<NodeId> {
        VoteResponse::new(vote, Some(log_id(2, 3, last)), granted)
    }

    #[test]
    fn a_split_against_a_shorter_log_campaigns_again() {
        // The voter voted for itself in our term and has less log.
        let r = review(&request(5, 10), reply(Vote::new(5, 2), false, 9));
        assert!(r.campaign);
        // ... or already moved to a later term.
        assert!(review(&request(5, 10), reply(Vote::new(7, 2), false, 9)).campaign);
    }

    #[test]
    fn other_refusals_do_not() {
        // Equal logs: the random timeouts settle it, as in plain Raft.
        assert!(!review(&request(5, 10), reply(Vote::new(5, 2), false, 10)).campaign);
        // A longer log: that voter is the one to lead.
        assert!(!review(&request(5, 10), reply(Vote::new(5, 2), false, 11)).campaign);
        // The voter follows a live leader.
        assert!(!review(&request(5, 10), reply(Vote::new_committed(4, 3), false, 9)).campaign);
        // An answer about an older term (a delayed reply).
        assert!(!review(&request(5, 10), reply(Vote::new(4, 2), false, 9)).campaign);
        // Granted.
        assert!(!review(&request(5, 10), reply(Vote::new(5, 1), true, 9)).campaign);
    }

    #[test]
    fn a_longer_log_in_a_reply_is_capped_at_ours() {
        let r = review(&request(5, 10), reply(Vote::new_committed(4, 3), false, 12));
        assert_eq!(r.reply.last_log_id, Some(log_id(2, 3, 10)));
        assert_eq!(r.reply.vote, Vote::new_committed(4, 3));
        assert!(!r.reply.vote_granted);
        // Shorter or equal logs pass unchanged.
        let r = review(&request(5, 10), reply(Vote::new(5, 2), false, 9));
        assert_eq!(r.reply.last_log_id, Some(log_id(2, 3, 9)));
    }
}
