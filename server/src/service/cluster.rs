//! The `chat.v1.Cluster` service: how this server sees the cluster, and
//! membership changes asked for by an operator (`chat-server cluster`).

use chat_proto as pb;
use tonic::{Request, Response, Status};

use super::convert;
use super::raft::check_secret;
use crate::error::ChatError;
use crate::node::Node;
use crate::peers::ChangeRequest;
use crate::raft::MembershipChange;

#[derive(Debug, Clone)]
pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    pub fn new(node: Node) -> Self {
        ClusterService { node }
    }

    /// Makes `change` (through the leader if this server does not lead),
    /// once the operator's secret checks out.
    async fn change(
        &self,
        secret: &str,
        change: MembershipChange,
    ) -> Result<(Vec<pb::Member>, u64), ChatError> {
        check_secret(Some(secret), self.node.config().cluster_secret.as_deref())?;
        let request = ChangeRequest {
            change,
            forwarded: false,
        };
        let (members, index) = self.node.change_membership(request).await?;
        Ok((members.into_iter().map(convert::member).collect(), index))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(convert::status(self.node.status())))
    }

    async fn add_member(
        &self,
        r: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let r = r.into_inner();
        if r.node_id == 0 || r.address.is_empty() {
            return Err(ChatError::invalid(
                "give the new server's node id (1 or more) and the address it listens on",
            )
            .into());
        }
        let change = MembershipChange::Add {
            id: r.node_id,
            addr: r.address,
        };
        let (members, log_index) = self.change(&r.cluster_secret, change).await?;
        Ok(Response::new(pb::AddMemberResponse { members, log_index }))
    }

    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let r = r.into_inner();
        let change = MembershipChange::Remove { id: r.node_id };
        let (members, log_index) = self.change(&r.cluster_secret, change).await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            members,
            log_index,
        }))
    }
}
