//! Replication: openraft over our log. The log is openraft's log storage
//! ([`log_store`]), the chat indexes its state machine ([`state_machine`]).
//! This module declares the type configuration and converts openraft's
//! entries to and from log records, the only place the two meet.

use std::collections::{BTreeMap, BTreeSet};

use log_format::Record;
use log_format::events::{self, EntryBody, Event, LogEntry};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use serde::{Deserialize, Serialize};

use crate::state::Applied;

// openraft's StorageError is large and fixed by its traits; boxing it here
// would only add a conversion at every call.
pub mod bodies;
#[allow(clippy::result_large_err)]
pub mod elections;
#[allow(clippy::result_large_err)]
pub mod log_store;
#[allow(clippy::result_large_err)]
pub mod network;
pub mod ship;
#[allow(clippy::result_large_err)]
pub mod state_machine;

pub type NodeId = u64;

/// A cluster member as Raft knows it: where its gRPC server listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub addr: String,
}

/// A member of the cluster, as status and membership answers list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: NodeId,
    pub address: String,
    /// A voter counts towards majorities; a learner only receives the log.
    pub voter: bool,
}

/// A change of the cluster's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a server: it catches up as a learner, then becomes a voter.
    Add { id: NodeId, addr: String },
    /// Removes a voter.
    Remove { id: NodeId },
}

openraft::declare_raft_types!(
    /// The Raft types of the chat server: a proposal is a batch of chat
    /// events (concurrent requests share one entry, so one fsync and one
    /// round trip), and applying it answers with what each event did.
    pub TypeConfig:
        D = Vec<Event>,
        R = Vec<Applied>,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = Entry<TypeConfig>,
        SnapshotData = ship::ShipData,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftEntry = Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// The record that stores `entry`.
pub fn entry_to_record(entry: &RaftEntry) -> Record {
    let body = match &entry.payload {
        EntryPayload::Blank => EntryBody::Blank,
        EntryPayload::Normal(events) => match &events[..] {
            [event] => EntryBody::Event(event.clone()),
            _ => EntryBody::Events(events.clone()),
        },
        EntryPayload::Membership(m) => EntryBody::Membership(events::Membership {
            configs: m.get_joint_config().clone(),
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }),
    };
    Record {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        payload: events::encode(&LogEntry {
            leader_node: entry.log_id.leader_id.node_id,
            body,
        }),
    }
}

/// The entry stored in `record`.
pub fn record_to_entry(record: &Record) -> Result<RaftEntry, events::DecodeError> {
    let entry = events::decode(&record.payload)?;
    let log_id = LogId::new(
        CommittedLeaderId::new(record.term, entry.leader_node),
        record.index,
    );
    let payload = match entry.body {
        EntryBody::Blank => EntryPayload::Blank,
        EntryBody::Event(e) => EntryPayload::Normal(vec![e]),
        EntryBody::Events(events) => EntryPayload::Normal(events),
        EntryBody::Membership(m) => EntryPayload::Membership(membership_from_log(m)),
    };
    Ok(Entry { log_id, payload })
}

pub fn membership_from_log(m: events::Membership) -> Membership<NodeId, NodeAddr> {
    let configs: Vec<BTreeSet<NodeId>> = m.configs;
    let nodes: BTreeMap<NodeId, NodeAddr> = m
        .nodes
        .into_iter()
        .map(|(id, addr)| (id, NodeAddr { addr }))
        .collect();
    Membership::new(configs, nodes)
}

/// The log id of the record at `index`, decoding only what it needs.
pub fn log_id_of(record: &Record) -> Result<LogId<NodeId>, events::DecodeError> {
    let entry = events::decode(&record.payload)?;
    Ok(LogId::new(
        CommittedLeaderId::new(record.term, entry.leader_node),
        record.index,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_format::events::{AccountId, PasswordHash};

    #[test]
    fn entries_round_trip_through_records() {
        let id = LogId::new(CommittedLeaderId::new(3, 2), 17);
        let entries = vec![
            Entry {
                log_id: id,
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: id,
                payload: EntryPayload::Normal(vec![Event::AccountCreated {
                    username: "a".into(),
                    password_hash: PasswordHash("h".into()),
                    at_ms: 1,
                }]),
            },
            Entry {
                log_id: id,
                payload: EntryPayload::Normal(vec![Event::AccountDeleted {
                    account: AccountId(4),
                    at_ms: 2,
                }]),
            },
            // A batch: one record holds every event.
            Entry {
                log_id: id,
                payload: EntryPayload::Normal(vec![
                    Event::AccountDeleted {
                        account: AccountId(4),
                        at_ms: 2,
                    },
                    Event::AccountDeleted {
                        account: AccountId(5),
                        at_ms: 3,
                    },
                ]),
            },
            Entry {
                log_id: id,
                payload: EntryPayload::Membership(Membership::new(
                    vec![BTreeSet::from([1, 2])],
                    BTreeMap::from([
                        (1, NodeAddr { addr: "a:1".into() }),
                        (2, NodeAddr { addr: "b:2".into() }),
                        (3, NodeAddr { addr: "c:3".into() }),
                    ]),
                )),
            },
        ];
        for e in entries {
            let rec = entry_to_record(&e);
            assert_eq!((rec.index, rec.term), (17, 3));
            let back = record_to_entry(&rec).unwrap();
            assert_eq!(back.log_id, e.log_id);
            match (&back.payload, &e.payload) {
                (EntryPayload::Blank, EntryPayload::Blank) => {}
                (EntryPayload::Normal(a), EntryPayload::Normal(b)) => assert_eq!(a, b),
                (EntryPayload::Membership(a), EntryPayload::Membership(b)) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} != {b:?}"),
            }
            assert_eq!(log_id_of(&rec).unwrap(), id);
        }
    }
}
