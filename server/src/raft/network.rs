//! How this node reaches its peers' Raft services. A one-member cluster
//! never sends anything; the replication milestone replaces this with the
//! gRPC transport of the `chat.v1.Raft` service.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{NodeAddr, NodeId, TypeConfig};

/// Connections to peers (none yet: a single node has no peers).
#[derive(Debug, Clone, Default)]
pub struct Network;

/// A peer this build cannot reach.
#[derive(Debug)]
pub struct NoPeer {
    target: NodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("node {0}: this server runs as a single node and has no Raft transport to peers")]
struct NoTransport(NodeId);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &NodeAddr) -> NoPeer {
        NoPeer { target }
    }
}

impl NoPeer {
    fn error<E: std::error::Error>(&self) -> RPCError<NodeId, NodeAddr, E> {
        RPCError::Network(NetworkError::new(&NoTransport(self.target)))
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        Err(self.error())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.error())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        Err(self.error())
    }
}
