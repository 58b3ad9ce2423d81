//! Every call this server makes to another server of its cluster: openraft's
//! traffic, writes forwarded to the leader, membership changes handed to the
//! leader, and session activity shared with every member. One client cache
//! by address, and the cluster secret always in the request metadata.
//!
//! Payloads are postcard, opaque to protobuf. The encoding must not be
//! human-readable: the password hashes inside entries are redacted by every
//! human-readable serializer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chat_proto::raft_client::RaftClient;
use log_format::events::{Event, SessionId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::config::Config;
use crate::error::ChatError;
use crate::raft::{Member, MembershipChange};
use crate::state::Applied;

/// The largest message between servers: a batch of entries or a snapshot
/// chunk.
pub const MAX_MESSAGE: usize = 64 << 20;

/// A leader's answer to one forwarded write.
pub type ForwardAnswer = Result<(u64, Applied), Refusal>;

/// Why a forwarded write was not written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The server asked does not lead (any more): ask the leader it names,
    /// or wait for one. Never forwarded again by that server.
    NotLeader { leader: Option<String> },
    /// The leader's answer, for the client.
    Failed(ChatError),
}

/// A membership change as one server hands it to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRequest {
    pub change: MembershipChange,
    /// Sent on by a server that did not lead: the receiver makes the change
    /// itself or refuses, and never forwards it again.
    pub forwarded: bool,
}

/// The members and the log index after a membership change.
pub type ChangeAnswer = Result<(Vec<Member>, u64), ChatError>;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

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

/// Clients of the other servers' `chat.v1.Raft` services, by address.
#[derive(Debug)]
pub struct Peers {
    secret: String,
    /// The CA peers are checked against, when TLS is on.
    ca: Option<Vec<u8>>,
    clients: Mutex<HashMap<String, RaftClient<Channel>>>,
}

/// Why a call to another server failed, in words for a log line or a
/// client's error message.
pub type CallError = String;

impl Peers {
    pub fn new(config: &Config) -> Peers {
        Peers {
            secret: config.cluster_secret.clone().unwrap_or_default(),
            ca: config.peer_ca().map(<[u8]>::to_vec),
            clients: Mutex::default(),
        }
    }

    /// A (lazily connected, shared) client of the server at `addr`; tonic
    /// reconnects it as needed.
    pub fn client(&self, addr: &str) -> Result<RaftClient<Channel>, CallError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint =
            crate::transport::endpoint(addr, self.ca.as_deref()).map_err(|e| e.to_string())?;
        let c = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// `message` with the cluster secret in its metadata.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_secret(message, &self.secret)
    }

    /// Sends `events` to the leader at `addr` in one call; one answer per
    /// event, in order, or why the call itself failed.
    pub async fn forward(
        &self,
        addr: &str,
        events: &[Event],
        timeout: Duration,
    ) -> Result<Vec<ForwardAnswer>, CallError> {
        let mut client = self.client(addr)?;
        let payload = encode(&events).map_err(|e| e.to_string())?;
        let call = client.forward(self.request(chat_proto::ForwardRequest { payload }));
        let reply = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("the leader at {addr} did not answer in time"))?
            .map_err(|status| format!("the leader at {addr}: {status}"))?;
        let answers: Vec<ForwardAnswer> =
            decode(&reply.into_inner().payload).map_err(|e| e.to_string())?;
        if answers.len() != events.len() {
            return Err(format!(
                "the leader at {addr} answered {} of {} writes",
                answers.len(),
                events.len()
            ));
        }
        Ok(answers)
    }

    /// Asks the server at `addr` to make a membership change.
    pub async fn change_membership(&self, addr: &str, request: &ChangeRequest) -> ChangeAnswer {
        let unreachable = |e: String| {
            ChatError::Unavailable(format!("cannot reach the server at {addr}: {e}; try again"))
        };
        let mut client = self.client(addr).map_err(unreachable)?;
        let payload = encode(request).map_err(|e| ChatError::Internal(e.to_string()))?;
        let reply = client
            .change_membership(self.request(chat_proto::ChangeMembershipRequest { payload }))
            .await
            .map_err(|status| unreachable(status.to_string()))?;
        decode(&reply.into_inner().payload).map_err(|e| {
            ChatError::Unavailable(format!(
                "the server at {addr} answered in a form this server cannot read ({e}); are both the same version?"
            ))
        })?
    }

    /// Tells the server at `addr` which accounts stream here.
    pub async fn presence(
        &self,
        addr: &str,
        report: &crate::node::presence::Report,
    ) -> Result<(), CallError> {
        let mut client = self.client(addr)?;
        let payload = encode(report).map_err(|e| e.to_string())?;
        let call = client.presence(self.request(chat_proto::PresenceRequest { payload }));
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Tells the server at `addr` that `sessions` were active here.
    pub async fn touch(&self, addr: &str, sessions: &[SessionId]) -> Result<(), CallError> {
        let mut client = self.client(addr)?;
        let payload = encode(&sessions).map_err(|e| e.to_string())?;
        let call = client.touch(self.request(chat_proto::TouchRequest { payload }));
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
