//! The `chat.v1.Cluster` service: how this server sees the cluster.

use std::sync::Arc;

use std::collections::BTreeSet;

use chat_proto as pb;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft::NodeAddr;
use crate::service::raft::check_secret;

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
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
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

impl ClusterService {
    fn check_secret(&self, given: &str) -> Result<(), Status> {
        let mut probe = Request::new(());
        if let Ok(v) = given.parse() {
            probe
                .metadata_mut()
                .insert(chat_proto::CLUSTER_SECRET_METADATA_KEY, v);
        }
        check_secret(&probe, self.node.config.cluster_secret.as_deref())
    }

    fn members(&self) -> Vec<pb::Member> {
        self.status().members
    }

    /// Runs a membership change here if this node leads, or hands the
    /// request to the leader.
    async fn change(&self, change: Change) -> Result<(Vec<pb::Member>, u64), Status> {
        let result = match &change {
            Change::Add { id, addr } => {
                let node = NodeAddr { addr: addr.clone() };
                match self.node.raft.add_learner(*id, node, true).await {
                    Ok(_) => {
                        self.node
                            .raft
                            .change_membership(
                                ChangeMembers::AddVoterIds(BTreeSet::from([*id])),
                                false,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Change::Remove { id } => {
                self.node
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await
            }
        };
        match result {
            Ok(resp) => {
                self.node
                    .wait_applied(log_format::events::position(resp.log_id.index, 0))
                    .await
                    .map_err(Status::from)?;
                Ok((self.members(), resp.log_id.index))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
                Some(leader) => self.forward(&leader.addr, change).await,
                None => Err(Status::unavailable(
                    "no leader is elected right now; try again shortly",
                )),
            },
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Status::failed_precondition(format!(
                    "{e}; fix the request or wait for the change in progress"
                )))
            }
            Err(RaftError::Fatal(e)) => Err(Status::unavailable(format!(
                "this server stopped replicating: {e}"
            ))),
        }
    }

    async fn forward(
        &self,
        leader: &str,
        change: Change,
    ) -> Result<(Vec<pb::Member>, u64), Status> {
        let channel = crate::transport::endpoint(leader, self.node.config.peer_ca())
            .map_err(|e| Status::internal(e.to_string()))?
            .connect()
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot reach the leader at {leader}: {e}"))
            })?;
        let mut client = pb::cluster_client::ClusterClient::new(channel);
        let secret = self.node.config.cluster_secret.clone().unwrap_or_default();
        match change {
            Change::Add { id, addr } => {
                let r = client
                    .add_member(pb::AddMemberRequest {
                        node_id: id,
                        address: addr,
                        cluster_secret: secret,
                    })
                    .await?
                    .into_inner();
                Ok((r.members, r.log_index))
            }
            Change::Remove { id } => {
                let r = client
                    .remove_member(pb::RemoveMemberRequest {
                        node_id: id,
                        cluster_secret: secret,
                    })
                    .await?
                    .into_inner();
                Ok((r.members, r.log_index))
            }
        }
    }
}

/// A membership change.
#[derive(Debug, Clone)]
enum Change {
    Add { id: u64, addr: String },
    Remove { id: u64 },
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
        r: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let r = r.into_inner();
        self.check_secret(&r.cluster_secret)?;
        if r.node_id == 0 || r.address.is_empty() {
            return Err(Status::invalid_argument(
                "give the new server's node id (1 or more) and the address it listens on",
            ));
        }
        let (members, log_index) = self
            .change(Change::Add {
                id: r.node_id,
                addr: r.address,
            })
            .await?;
        Ok(Response::new(pb::AddMemberResponse { members, log_index }))
    }

    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let r = r.into_inner();
        self.check_secret(&r.cluster_secret)?;
        let (members, log_index) = self.change(Change::Remove { id: r.node_id }).await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            members,
            log_index,
        }))
    }
}
