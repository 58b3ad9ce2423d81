//! openraft's network: its requests go to the peers' `chat.v1.Raft`
//! services through [`Peers`] (the shared clients, the secret in metadata),
//! postcard-encoded into opaque payloads; failures become what openraft
//! should do about them. A [`Faults`] hook drops traffic in partition tests.

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
use crate::peers::{Peers, decode, encode};

/// openraft's factory of peer connections.
#[derive(Debug, Clone)]
pub struct Network {
    peers: Arc<Peers>,
    faults: Arc<Faults>,
    splits: Splits,
}

impl Network {
    pub fn new(peers: Arc<Peers>, faults: Arc<Faults>, splits: Splits) -> Self {
        Network {
            peers,
            faults,
            splits,
        }
    }
}

/// One peer as openraft sees it; the connection is the shared one of
/// [`Peers`].
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
    faults: Arc<Faults>,
    splits: Splits,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            peers: Arc::clone(&self.peers),
            faults: Arc::clone(&self.faults),
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
        self.peers
            .client(&self.addr)
            .map_err(|e| RPCError::Network(NetworkError::new(&Failure(e))))
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
        let call = send(client, self.peers.request(payload));
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
