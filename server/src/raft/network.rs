//! How this node reaches its peers' Raft services: openraft requests are
//! postcard-encoded into the opaque payloads of `chat.v1.Raft`, with the
//! cluster secret in the metadata.
//!
//! The encoding must not be human-readable: the password hashes inside
//! entries are redacted by every human-readable serializer.

use std::sync::Arc;

use chat_proto::raft_client::RaftClient;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::elections::{self, Splits};
use super::{NodeAddr, NodeId, TypeConfig};
use crate::config::Faults;

/// Connections to peers.
#[derive(Debug, Clone)]
pub struct Network {
    secret: Arc<str>,
    faults: Arc<Faults>,
    /// The CA peers are checked against, when TLS is on.
    ca: Option<Arc<[u8]>>,
    splits: Splits,
}

impl Network {
    pub fn new(
        secret: Option<&str>,
        faults: Arc<Faults>,
        ca: Option<&[u8]>,
        splits: Splits,
    ) -> Self {
        Network {
            secret: secret.unwrap_or_default().into(),
            faults,
            ca: ca.map(Arc::from),
            splits,
        }
    }
}

/// One peer; the connection is made lazily and re-made by tonic as needed.
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
    secret: Arc<str>,
    faults: Arc<Faults>,
    ca: Option<Arc<[u8]>>,
    splits: Splits,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// Adds the cluster secret to a request's metadata.
pub fn with_secret<T>(message: T, secret: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = secret.parse() {
        request
            .metadata_mut()
            .insert(chat_proto::CLUSTER_SECRET_METADATA_KEY, value);
    }
    request
}

/// A client of the Raft service of the server at `addr`, connected on first
/// use (and again by tonic as needed), taking messages as large as a batch
/// of entries or a snapshot chunk.
pub fn raft_client(
    addr: &str,
    ca: Option<&[u8]>,
) -> Result<RaftClient<Channel>, tonic::transport::Error> {
    let endpoint = crate::transport::endpoint(addr, ca)?;
    Ok(RaftClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            client: None,
            secret: Arc::clone(&self.secret),
            faults: Arc::clone(&self.faults),
            ca: self.ca.clone(),
            splits: self.splits.clone(),
        }
    }
}

type RpcErr<E> = RPCError<NodeId, NodeAddr, E>;

impl Peer {
    fn client<E: std::error::Error>(&mut self) -> Result<RaftClient<Channel>, RpcErr<E>> {
        if self.faults.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Failure(format!(
                "traffic to node {} is blocked (fault injection)",
                self.target
            )))));
        }
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let client = raft_client(&self.addr, self.ca.as_deref())
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Sends one call and decodes the reply, mapping each failure to what
    /// openraft should do about it.
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        request: &Req,
        option: &RPCOption,
        send: F,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<Vec<u8>>) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, tonic::Status>>,
    {
        let client = self.client()?;
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let call = send(client, with_secret(payload, &self.secret));
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Failure(format!(
                    "node {} did not answer within {:?}",
                    self.target,
                    option.hard_ttl()
                )))));
            }
            Ok(Err(status)) => {
                let failure = Failure(format!("node {} at {}: {status}", self.target, self.addr));
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                        RPCError::Unreachable(Unreachable::new(&failure))
                    }
                    _ => RPCError::Network(NetworkError::new(&failure)),
                });
            }
            Ok(Ok(bytes)) => bytes,
        };
        if self.faults.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Failure(
                "reply dropped (fault injection)".into(),
            ))));
        }
        let result: Result<Resp, E> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, req| async move {
            let req = req.map(|payload| chat_proto::AppendEntriesRequest { payload });
            Ok(c.append_entries(req).await?.into_inner().payload)
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(&rpc, &option, |mut c, req| async move {
            let req = req.map(|payload| chat_proto::InstallSnapshotRequest { payload });
            Ok(c.install_snapshot(req).await?.into_inner().payload)
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let reply = self
            .call(&rpc, &option, |mut c, req| async move {
                let req = req.map(|payload| chat_proto::VoteRequest { payload });
                Ok(c.vote(req).await?.into_inner().payload)
            })
            .await?;
        let review = elections::review(&rpc, reply);
        if review.campaign {
            self.splits.report(&rpc, &review.reply);
        }
        Ok(review.reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_format::events::{Event, PasswordHash};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload, Vote};

    /// Every message crosses the wire intact in postcard, secrets included.
    #[test]
    fn raft_messages_round_trip_in_postcard() {
        let entry = Entry::<TypeConfig> {
            log_id: log_id(2, 1, 7),
            payload: EntryPayload::Normal(vec![Event::AccountCreated {
                username: "ann".into(),
                password_hash: PasswordHash("$argon2id$secret".into()),
                at_ms: 1,
            }]),
        };
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 6)),
            entries: vec![entry],
            leader_commit: Some(log_id(1, 1, 5)),
        };
        let back: AppendEntriesRequest<TypeConfig> = decode(&encode(&req).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));
        match &back.entries[0].payload {
            EntryPayload::Normal(events) => {
                let [Event::AccountCreated { password_hash, .. }] = &events[..] else {
                    panic!("{events:?}");
                };
                assert_eq!(password_hash.0, "$argon2id$secret");
            }
            other => panic!("{other:?}"),
        }
        let resp: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            Ok(AppendEntriesResponse::Conflict);
        let back: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            decode(&encode(&resp).unwrap()).unwrap();
        assert!(matches!(back, Ok(AppendEntriesResponse::Conflict)));
        let vote = VoteRequest::<NodeId>::new(Vote::new(3, 2), Some(log_id(2, 1, 9)));
        let back: VoteRequest<NodeId> = decode(&encode(&vote).unwrap()).unwrap();
        assert_eq!(back, vote);
    }
}
