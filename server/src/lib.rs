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
use tonic::codegen::http;

mod auth;
mod config;
mod error;
mod headers;
mod hub;
mod listener;
mod node;
mod peers;
mod raft;
mod service;
mod state;
mod transport;

pub use config::{Config, Faults, HashingCost, SearchBudget};
pub use transport::Tls;

use crate::auth::{CreationLimit, Hashing, LoginThrottle, SessionActivity, Tarpit};
use crate::listener::ConnectionLimits;
use crate::node::Node;
use crate::service::chat::{ChatService, Guards};
use crate::service::cluster::ClusterService;
use crate::service::raft::{RaftService, SecretCheck};

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
    node: Node,
    listener: TcpListener,
}

impl Server {
    /// Opens the data directory, replays the log and starts the node.
    pub async fn start(mut config: Config, listener: TcpListener) -> anyhow::Result<Server> {
        let local = listener.local_addr().context("listener has no address")?;
        if config.advertise_addr.is_empty() {
            config.advertise_addr = local.to_string();
        }
        let node = Node::start(config).await?;
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
        let config = node.config();
        let throttle = Arc::new(LoginThrottle::new(
            config.login_attempts,
            config.login_lockout,
        ));
        let activity = Arc::new(SessionActivity::new(config.session_idle));
        let stop = CancellationToken::new();

        let mut tasks = JoinSet::new();
        tasks.spawn(sweep_idle_sessions(
            node.clone(),
            Arc::clone(&activity),
            Arc::clone(&throttle),
            stop.clone(),
        ));
        tasks.spawn(node.clone().run_presence(stop.clone()));
        tasks.spawn(share_activity(
            node.clone(),
            Arc::clone(&activity),
            stop.clone(),
        ));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<chat_proto::chat_server::ChatServer<ChatService>>()
            .await;
        // Both versions of reflection: grpcurl speaks v1, while older
        // grpcurl, evans, Postman and Python's grpcio speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = (reflection().build_v1()).context("cannot build reflection v1")?;
        let reflection_v1alpha =
            (reflection().build_v1alpha()).context("cannot build reflection v1alpha")?;
        let guards = Arc::new(Guards {
            throttle: Arc::clone(&throttle),
            hashing: Hashing::new(config.hash_workers, config.hash_queue),
            creations: CreationLimit::new(config.account_creations_per_minute),
            tarpit: Tarpit::default(),
        });
        let chat = ChatService::new(node.clone(), guards, Arc::clone(&activity), stop.clone());
        let cluster = ClusterService::new(node.clone());
        let raft = RaftService::new(node.clone(), Arc::clone(&activity));
        if let Some(seed) = config.join.clone()
            && !node.is_initialized().await
        {
            tasks.spawn(join_cluster(node.clone(), seed, stop.clone()));
        }

        let limits = ConnectionLimits {
            max: config.max_connections.min(listener::connection_budget()),
            handshake: config.handshake_timeout,
            idle: config.keepalive * 2,
        };
        if limits.max < config.max_connections {
            tracing::warn!(
                max_connections = limits.max,
                "fewer connections than asked fit below this process's descriptor limit (ulimit -n)"
            );
        }
        tracing::info!(addr = %local, data = %config.data_dir.display(), max_connections = limits.max, "serving");
        let stop_serving = stop.clone();
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.keepalive))
            .http2_keepalive_timeout(Some(config.keepalive / 3))
            .max_concurrent_streams(config.max_streams_per_connection);
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(tls.server_config())
                .context("the TLS certificate or key is not usable")?;
        }
        let incoming = listener::incoming(listener, limits, stop.clone());
        // Set if Raft stops by itself while serving.
        let failed = Arc::new(std::sync::Mutex::new(None::<String>));
        let stopped_replicating = {
            let (node, failed) = (node.clone(), Arc::clone(&failed));
            async move {
                let why = node.stopped_replicating().await;
                tracing::error!("replication stopped: {why}");
                *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
        };
        let served = builder
            .layer(tower::util::MapResponseLayer::new(
                |response: http::Response<tonic::body::Body>| {
                    headers::date_not_indexed(error::correct_transport_status(response))
                },
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(chat_proto::chat_server::ChatServer::new(chat))
            .add_service(chat_proto::cluster_server::ClusterServer::new(cluster))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                chat_proto::raft_server::RaftServer::new(raft)
                    .max_decoding_message_size(peers::MAX_MESSAGE)
                    .max_encoding_message_size(peers::MAX_MESSAGE),
                SecretCheck::new(config.cluster_secret.as_deref()),
            ))
            .serve_with_incoming_shutdown(incoming, async move {
                tokio::select! {
                    () = shutdown => tracing::info!("shutting down"),
                    () = stopped_replicating => {}
                }
                // Ends the streams, so the server can finish.
                stop_serving.cancel();
            })
            .await;
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        let stopped = node.shutdown().await;
        served.context("the gRPC server failed")?;
        if let Some(why) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            anyhow::bail!(
                "replication stopped ({why}), so this server can no longer write; it exits so that \
                 its supervisor restarts it (nothing acknowledged is lost: the log is replayed at start)"
            );
        }
        stopped
    }
}

/// On every replica, reports the sessions active here (requests, open
/// streams) to the other members, so whichever leads sees activity anywhere.
async fn share_activity(node: Node, activity: Arc<SessionActivity>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(activity.period());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for session in node.streaming_sessions() {
            activity.touch(session);
        }
        let active = activity.take_unreported();
        if !active.is_empty() && node.config().cluster_secret.is_some() {
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
/// Also forgets usernames whose failed logins have expired.
async fn sweep_idle_sessions(
    node: Node,
    activity: Arc<SessionActivity>,
    throttle: Arc<LoginThrottle>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(activity.period());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        throttle.forget_expired();
        if !node.is_leader() {
            continue;
        }
        let idle: Vec<_> = node.read(|state| {
            (state.sessions())
                .filter(|(id, _)| activity.is_idle(*id))
                .map(|(id, s)| (id, s.account))
                .collect()
        });
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
                    activity.forget(session);
                    tracing::debug!(%session, "ended an idle session");
                }
                Err(e) => tracing::debug!(%session, "could not end an idle session: {e}"),
            }
        }
    }
}

/// Asks the member at `seed` to add this node to its cluster, until it does.
async fn join_cluster(node: Node, seed: String, stop: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = node.ask_to_join(&seed) => r,
        };
        match result {
            Ok(()) => {
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

/// The client side of `chat-server cluster ...`: a connection to the
/// `chat.v1.Cluster` service of any member.
pub async fn cluster_admin(
    server: &str,
    ca: Option<&[u8]>,
) -> anyhow::Result<chat_proto::cluster_client::ClusterClient<tonic::transport::Channel>> {
    let channel = transport::endpoint(server, ca)?
        .connect()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    Ok(chat_proto::cluster_client::ClusterClient::new(channel))
}

/// What the tests of this workspace reach below the public API: the Raft
/// storage (openraft's own test suite runs against it) and the wire form of
/// forwarded writes. Not for other users.
#[doc(hidden)]
pub mod testing {
    pub use crate::auth::TARPIT_HOLD;
    pub use crate::error::ChatError;
    pub use crate::hub::Hub;
    pub use crate::peers::{ForwardAnswer, Refusal, decode, encode, with_secret};
    pub use crate::raft::log_store::LogStore;
    pub use crate::raft::state_machine::StateMachine;
    pub use crate::raft::{StorageError, TypeConfig};
    pub use crate::state::Applied;
}
