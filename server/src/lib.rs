//! The chat server: the chat state machine on the replicated event log, and
//! the gRPC services in front of it.
//!
//! [`run`] starts a server on a listener and returns when `shutdown`
//! resolves and every task has finished, so tests run servers in-process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use log_format::events::{CloseReason, Event};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod node;
pub mod raft;
pub mod service;
pub mod state;
pub mod transport;

pub use config::{Config, HashingCost};

use crate::auth::Guard;
use crate::node::Node;
use crate::service::chat::ChatService;
use crate::service::cluster::ClusterService;
use crate::service::raft::RaftService;

/// Serves `config` on `listener` until `shutdown` resolves; then stops
/// accepting, ends every stream, flushes the log and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::start(config, listener).await?.serve(shutdown).await
}

/// A server whose state is restored and whose node leads or follows, ready
/// to serve its listener.
#[derive(Debug)]
pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
}

impl Server {
    /// Opens the data directory, replays the log and starts the node.
    pub async fn start(mut config: Config, listener: TcpListener) -> anyhow::Result<Server> {
        let local = listener.local_addr().context("listener has no address")?;
        if config.advertise_addr.is_empty() {
            config.advertise_addr = local.to_string();
        }
        let node = Arc::new(Node::start(config).await?);
        Ok(Server { node, listener })
    }

    /// The address clients reach this server at.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then ends every stream, stops
    /// Raft, flushes the log and returns once every task has finished.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server { node, listener } = self;
        let local = listener.local_addr().context("listener has no address")?;
        let cfg = &node.config;
        let guard = Arc::new(Guard::new(
            cfg.login_attempts,
            cfg.login_lockout,
            cfg.session_idle,
        ));
        let stop = CancellationToken::new();

        let mut tasks = JoinSet::new();
        tasks.spawn(sweep_idle_sessions(
            Arc::clone(&node),
            Arc::clone(&guard),
            stop.clone(),
        ));
        tasks.spawn(share_activity(
            Arc::clone(&node),
            Arc::clone(&guard),
            stop.clone(),
        ));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<chat_proto::chat_server::ChatServer<ChatService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        let chat = ChatService::new(Arc::clone(&node), Arc::clone(&guard), stop.clone());
        let cluster = ClusterService::new(Arc::clone(&node));
        let raft = RaftService::new(Arc::clone(&node), Arc::clone(&guard));
        if let Some(seed) = node.config.join.clone()
            && !node.raft.is_initialized().await.unwrap_or(false)
        {
            tasks.spawn(join_cluster(Arc::clone(&node), seed, stop.clone()));
        }

        tracing::info!(addr = %local, data = %node.config.data_dir.display(), "serving");
        let stop_serving = stop.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &node.config.tls {
            builder = builder
                .tls_config(tls.server_config())
                .context("the TLS certificate or key is not usable")?;
        }
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(chat_proto::chat_server::ChatServer::new(chat))
            .add_service(chat_proto::cluster_server::ClusterServer::new(cluster))
            .add_service(
                chat_proto::raft_server::RaftServer::new(raft)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            // Replies are small: without TCP_NODELAY, Nagle's algorithm holds
            // them back up to 40 ms behind a delayed ACK. The builder's
            // `tcp_nodelay` does not apply to an incoming stream we pass in,
            // so it is set on the incoming side.
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                tracing::info!("shutting down");
                // Ends the streams, so the server can finish.
                stop_serving.cancel();
            })
            .await;
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        let stopped = node.shutdown().await;
        served.context("the gRPC server failed")?;
        stopped
    }
}

/// On every replica, reports the sessions active here (requests, open
/// streams) to the other members, so whichever leads sees activity anywhere.
async fn share_activity(node: Arc<Node>, guard: Arc<Guard>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(guard.period());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for session in node.sm.hub().streaming_sessions() {
            guard.touch(session);
        }
        let active = guard.take_unreported();
        if !active.is_empty() && node.config.cluster_secret.is_some() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = node.share_activity(&active) => {}
            }
        }
    }
}

/// On the leader, ends sessions that have been idle too long, judged by
/// activity here and reported by the other replicas. A session with an open
/// stream is not idle: [`share_activity`] touches those every period.
async fn sweep_idle_sessions(node: Arc<Node>, guard: Arc<Guard>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(guard.period());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !node.is_leader() {
            continue;
        }
        let idle: Vec<_> = node
            .sm
            .state()
            .sessions()
            .filter(|(id, _)| guard.is_idle(*id))
            .map(|(id, s)| (id, s.account))
            .collect();
        for (session, account) in idle {
            let event = Event::SessionClosed {
                account,
                session,
                reason: CloseReason::Idle,
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            match node.propose(event).await {
                Ok(_) => {
                    guard.forget(session);
                    tracing::debug!(%session, "ended an idle session");
                }
                Err(e) => tracing::debug!(%session, "could not end an idle session: {e}"),
            }
        }
    }
}

/// Asks the member at `seed` to add this node to its cluster, until it does.
async fn join_cluster(node: Arc<Node>, seed: String, stop: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            let channel = transport::endpoint(&seed, node.config.peer_ca())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            chat_proto::cluster_client::ClusterClient::new(channel)
                .add_member(chat_proto::AddMemberRequest {
                    node_id: node.config.node_id,
                    address: node.config.advertise_addr.clone(),
                    cluster_secret: node.config.cluster_secret.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| s.message().to_string())
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(_) => {
                tracing::info!(via = %seed, "joined the cluster");
                return;
            }
            Err(e) => tracing::warn!(via = %seed, "could not join the cluster yet: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
