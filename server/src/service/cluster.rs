//! The `chat.v1.Cluster` service: how this server sees the cluster.

use std::sync::Arc;

use chat_proto as pb;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::node::Node;

#[derive(Debug, Clone)]
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

    pub fn status(&self) -> pb::StatusResponse {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| pb::Member {
                node_id: *id,
                address: n.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let leader = m.current_leader;
        let role = match m.state {
            ServerState::Leader => pb::Role::Leader,
            ServerState::Follower => pb::Role::Follower,
            ServerState::Candidate => pb::Role::Candidate,
            ServerState::Learner => pb::Role::Learner,
            ServerState::Shutdown => pb::Role::Shutdown,
        };
        pb::StatusResponse {
            node_id: m.id,
            leader_id: leader.unwrap_or(0),
            leader_address: leader
                .and_then(|l| membership.get_node(&l))
                .map(|n| n.addr.clone())
                .unwrap_or_default(),
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            committed_index: self.node.store.committed_hint().map_or(0, |l| l.index),
            term: m.current_term,
            role: role as i32,
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(ClusterService::status(self)))
    }

    async fn add_member(
        &self,
        _r: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        Err(Status::unimplemented(
            "this server runs as a single node: adding members needs the replication transport, which this build does not have",
        ))
    }

    async fn remove_member(
        &self,
        _r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        Err(Status::unimplemented(
            "this server runs as a single node: removing members needs the replication transport, which this build does not have",
        ))
    }
}
