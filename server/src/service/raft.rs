//! The `chat.v1.Raft` service: Raft traffic from the other servers, and
//! writes they forward to this node while it leads. Every call must carry
//! the cluster secret; without it nothing is decoded.

use std::sync::Arc;

use chat_proto as pb;
use log_format::events::{Event, SessionId};
use tonic::{Request, Response, Status};

use crate::auth::Guard;
use crate::node::Node;
use crate::raft::network::{decode, encode};

#[derive(Debug, Clone)]
pub struct RaftService {
    node: Arc<Node>,
    guard: Arc<Guard>,
}

/// Checks the cluster secret of a request from another server.
pub fn check_secret<T>(request: &Request<T>, secret: Option<&str>) -> Result<(), Status> {
    let Some(secret) = secret else {
        return Err(Status::permission_denied(
            "this server has no cluster secret, so it takes no cluster traffic; start it with --cluster-secret-file",
        ));
    };
    let given = request
        .metadata()
        .get(chat_proto::CLUSTER_SECRET_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), secret.as_bytes()) {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "wrong or missing cluster secret; pass the cluster's --cluster-secret-file",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bad_payload(e: postcard::Error) -> Status {
    Status::invalid_argument(format!("undecodable Raft payload: {e}"))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    encode(value).map_err(|e| Status::internal(format!("cannot encode the reply: {e}")))
}

impl RaftService {
    pub fn new(node: Arc<Node>, guard: Arc<Guard>) -> Self {
        RaftService { node, guard }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        check_secret(request, self.node.config.cluster_secret.as_deref())
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.authorize(&request)?;
        let rpc = decode(&request.into_inner().payload).map_err(bad_payload)?;
        let result = self.node.raft.append_entries(rpc).await;
        Ok(Response::new(pb::AppendEntriesResponse {
            payload: encoded(&result)?,
        }))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.authorize(&request)?;
        let rpc = decode(&request.into_inner().payload).map_err(bad_payload)?;
        let result = self.node.raft.vote(rpc).await;
        Ok(Response::new(pb::VoteResponse {
            payload: encoded(&result)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.authorize(&request)?;
        let rpc = decode(&request.into_inner().payload).map_err(bad_payload)?;
        let result = self.node.raft.install_snapshot(rpc).await;
        Ok(Response::new(pb::InstallSnapshotResponse {
            payload: encoded(&result)?,
        }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        self.authorize(&request)?;
        let events: Vec<Event> = decode(&request.into_inner().payload).map_err(bad_payload)?;
        let result = self.node.propose_forwarded(events).await;
        Ok(Response::new(pb::ForwardResponse {
            payload: encoded(&result)?,
        }))
    }

    async fn touch(
        &self,
        request: Request<pb::TouchRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        self.authorize(&request)?;
        let sessions: Vec<SessionId> =
            decode(&request.into_inner().payload).map_err(bad_payload)?;
        self.guard.touched_elsewhere(&sessions);
        Ok(Response::new(pb::TouchResponse {}))
    }
}
