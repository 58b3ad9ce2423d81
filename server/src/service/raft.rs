//! The `chat.v1.Raft` service: calls from the other servers of the cluster
//! (openraft's traffic, writes and membership changes they hand to this
//! node, session activity). Every call must carry the cluster secret in its
//! metadata; [`SecretCheck`] refuses a call without it before its body is
//! decoded.

use std::sync::Arc;

use chat_proto as pb;
use log_format::events::{Event, SessionId};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::auth::SessionActivity;
use crate::error::ChatError;
use crate::node::{Node, RaftCall};
use crate::peers::{ChangeRequest, decode, encode};

#[derive(Debug, Clone)]
pub struct RaftService {
    node: Node,
    activity: Arc<SessionActivity>,
}

/// Checks a cluster secret `given` by another server or an operator
/// against this server's own, in constant time.
pub fn check_secret(given: Option<&str>, secret: Option<&str>) -> Result<(), ChatError> {
    let Some(secret) = secret else {
        return Err(ChatError::PermissionDenied(
            "this server has no cluster secret, so it takes no cluster traffic; start it with --cluster-secret-file".into(),
        ));
    };
    let given = given.unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(ChatError::PermissionDenied(
            "wrong or missing cluster secret; pass the cluster's --cluster-secret-file".into(),
        ))
    }
}

fn undecodable(e: postcard::Error) -> ChatError {
    ChatError::invalid(format!(
        "undecodable payload ({e}); are both servers the same version?"
    ))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ChatError> {
    encode(value).map_err(|e| ChatError::Internal(format!("cannot encode the reply: {e}")))
}

impl RaftService {
    pub fn new(node: Node, activity: Arc<SessionActivity>) -> Self {
        RaftService { node, activity }
    }

    async fn raft_call(&self, call: RaftCall, payload: &[u8]) -> Result<Vec<u8>, Status> {
        Ok(self.node.raft_call(call, payload).await?)
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let request = request.into_inner();
        let payload = self
            .raft_call(RaftCall::AppendEntries, &request.payload)
            .await?;
        Ok(Response::new(pb::AppendEntriesResponse { payload }))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let request = request.into_inner();
        let payload = self.raft_call(RaftCall::Vote, &request.payload).await?;
        Ok(Response::new(pb::VoteResponse { payload }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let request = request.into_inner();
        let payload = self
            .raft_call(RaftCall::InstallSnapshot, &request.payload)
            .await?;
        Ok(Response::new(pb::InstallSnapshotResponse { payload }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let request = request.into_inner();
        let events: Vec<Event> = decode(&request.payload).map_err(undecodable)?;
        let answers = self.node.propose_forwarded(events).await;
        Ok(Response::new(pb::ForwardResponse {
            payload: encoded(&answers)?,
        }))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        let request = request.into_inner();
        let change: ChangeRequest = decode(&request.payload).map_err(undecodable)?;
        let answer = self.node.change_membership(change).await;
        Ok(Response::new(pb::ChangeMembershipResponse {
            payload: encoded(&answer)?,
        }))
    }

    async fn touch(
        &self,
        request: Request<pb::TouchRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        let request = request.into_inner();
        let sessions: Vec<SessionId> = decode(&request.payload).map_err(undecodable)?;
        self.activity.touched_elsewhere(&sessions);
        Ok(Response::new(pb::TouchResponse {}))
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        let request = request.into_inner();
        let report = decode(&request.payload).map_err(undecodable)?;
        self.node.presence_received(report);
        Ok(Response::new(pb::PresenceResponse {}))
    }
}

/// Refuses a call to the Raft service whose metadata lacks the cluster
/// secret, before its body is decoded (a stranger learns nothing from how
/// the server parses what it sent).
#[derive(Debug, Clone)]
pub struct SecretCheck {
    secret: Option<Arc<str>>,
}

impl SecretCheck {
    pub fn new(secret: Option<&str>) -> Self {
        SecretCheck {
            secret: secret.map(Arc::from),
        }
    }
}

impl tonic::service::Interceptor for SecretCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = (request.metadata())
            .get(chat_proto::CLUSTER_SECRET_METADATA_KEY)
            .and_then(|v| v.to_str().ok());
        check_secret(given, self.secret.as_deref())?;
        Ok(request)
    }
}
