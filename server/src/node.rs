//! One server's replica: the log, the Raft instance over it, and the state
//! machine, started together. Services call [`Node::propose`] to write and
//! [`Node::wait_applied`] before reading.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use log_format::events::Event;
use log_format::{Log, LogConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};

use crate::config::Config;
use crate::error::ChatError;
use crate::hub::Hub;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeAddr, Raft};
use crate::state::Applied;

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

/// How long a write may wait for a quorum before it fails with UNAVAILABLE.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Node {
    pub config: Config,
    pub raft: Raft,
    pub sm: StateMachine,
    pub store: LogStore,
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
        let (sm, replayed) = StateMachine::restore(dir, &log, store.committed_hint(), hub)
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
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            // The log is the history users read back: keep all of it.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            ..Default::default()
        }
        .validate()
        .context("invalid Raft configuration")?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network,
            store.clone(),
            sm.clone(),
        )
        .await
        .context("cannot start Raft")?;

        let me = BTreeMap::from([(
            config.node_id,
            NodeAddr {
                addr: config.advertise_addr.clone(),
            },
        )]);
        if raft
            .is_initialized()
            .await
            .context("cannot read Raft state")?
        {
            // A lone voter need not wait out an election timeout.
            if lone_voter(&raft, config.node_id) {
                raft.trigger()
                    .elect()
                    .await
                    .context("cannot start an election")?;
            }
        } else {
            raft.initialize(me)
                .await
                .context("cannot initialise the cluster")?;
        }
        raft.wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.membership_config.voter_ids().next().is_some(),
                "the membership is loaded",
            )
            .await
            .context("the cluster membership did not load")?;
        if lone_voter(&raft, config.node_id) {
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
        Ok(Node {
            config,
            raft,
            sm,
            store,
        })
    }

    /// Proposes `event` and returns its log index and what applying it did,
    /// once a majority has it on disk and it is applied here.
    pub async fn propose(&self, event: Event) -> Result<(u64, Applied), ChatError> {
        let write = self.raft.client_write(event);
        let result = tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| {
                ChatError::Unavailable(
                    "the cluster did not commit the write in time (no quorum?); try again".into(),
                )
            })?;
        match result {
            Ok(resp) => Ok((resp.log_id.index, resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ChatError::Unavailable(match f.leader_node {
                    Some(n) => format!("this server is not the leader; send writes to {}", n.addr),
                    None => "no leader is elected right now; try again shortly".into(),
                }))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ChatError::FailedPrecondition(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(ChatError::Unavailable(format!(
                "this server is shutting down or stopped replicating ({e}); use another server"
            ))),
        }
    }

    /// Waits until this replica has applied `index` (a cursor the client got
    /// from a write), so reads see the client's own writes.
    pub async fn wait_applied(&self, index: u64) -> Result<(), ChatError> {
        if index == 0 || self.sm.applied_index() >= index {
            return Ok(());
        }
        let mut rx = self.sm.applied();
        let wait = rx.wait_for(|applied| *applied >= index);
        match tokio::time::timeout(self.config.read_wait, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ChatError::Unavailable("the server is shutting down".into())),
            Err(_) => Err(ChatError::Unavailable(format!(
                "this replica has not caught up with log index {index} yet; try again or use another server"
            ))),
        }
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
    }

    /// Stops Raft and writes what is still in memory.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
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
