//! The connection to the cluster and the typed calls over it.
//!
//! A [`Client`] holds one HTTP/2 channel to one server of its list at a time.
//! When a call fails because that server or the connection failed, the client
//! moves to the next server (round robin, waiting by [`Backoff`] first) and
//! makes the call again if repeating it is harmless (see `retry`). Every
//! write's log position is remembered and sent with later reads, so a replica
//! that has not yet applied this client's writes waits before answering
//! (read-your-writes, on any server).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_proto as proto;
use chat_proto::chat_client::ChatClient;
use chat_proto::cluster_client::ClusterClient;
use tokio::sync::watch;
use tokio::time;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::config::{ClientConfig, endpoint_uri};
use crate::error::{ClientError, Result};
use crate::model::{
    AccountPage, ClusterStatus, Conversations, CreatedAccount, EventId, HistoryPage, LogPosition,
    MessageId, SentMessage, Session,
};
use crate::retry::{Backoff, Failure, Fault, Rpc};
use crate::subscription::Subscription;

/// How often an open connection is pinged, so a server that vanished without
/// closing its sockets (power loss, partition) is noticed by a subscription
/// that is otherwise only waiting.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How long a ping may go unanswered before the connection counts as dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the client stands with the cluster, for a front end to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Calls go to this server, which answered the last one.
    Connected {
        /// The server, as configured.
        server: String,
    },
    /// The last server failed; the client is about to try `server`.
    Reconnecting {
        /// The server to be tried next, as configured.
        server: String,
        /// The number of this attempt in the current run of failures (1 for
        /// the first); it sets the wait.
        attempt: u32,
        /// How long the client waits before trying.
        next_in: Duration,
    },
    /// A call used up its failover budget without reaching a server. The
    /// next call starts trying again.
    Failed,
}

/// A typed client of the chat cluster. Cheap to clone: clones share the
/// connection, the failover state and the read-your-writes cursor.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// What all clones of a [`Client`] share.
#[derive(Debug)]
struct Shared {
    config: ClientConfig,
    /// The configured servers with their transport endpoints, in list order.
    servers: Vec<Server>,
    /// The configured addresses alone, so [`Client::servers`] can lend them.
    addresses: Vec<String>,
    /// The server calls go to now. Never held across an `.await`.
    route: Mutex<Route>,
    /// Held while one task moves to another server, so that calls failing
    /// together move once, not once each.
    failover: tokio::sync::Mutex<()>,
    /// Published on every change of server or of reachability.
    state: watch::Sender<ConnectionState>,
    /// The highest log position this client wrote or saw in a subscription:
    /// the `min_applied` of every read.
    read_cursor: AtomicU64,
}

/// One configured server.
#[derive(Debug)]
struct Server {
    /// As configured, for messages and [`Client::current_server`].
    address: String,
    endpoint: Endpoint,
}

/// The server calls go to, and which move brought it there.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Index into the server list.
    index: usize,
    /// Incremented on every move; a task that saw a failure on an older
    /// generation does not move again, since someone already did.
    generation: u64,
    channel: Channel,
    /// Reconnection attempts since a call last succeeded here: the next
    /// attempt's backoff.
    failures: u32,
}

impl Route {
    /// Which move brought the client to this server.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

/// What one call has used of its failover budget, and what it has seen.
#[derive(Debug, Default)]
struct Attempts {
    used: u32,
    /// Servers that refused a connection, in order, each once.
    unreachable: Vec<String>,
    /// The last error from a server that did accept the call.
    last_error: Option<ClientError>,
}

impl Attempts {
    fn unreachable(&mut self, server: &str) {
        if !self.unreachable.iter().any(|seen| seen == server) {
            self.unreachable.push(server.to_owned());
        }
    }

    /// The error a call gives up with: what a server said last, or, if none
    /// ever answered, that none could be reached.
    fn into_error(self) -> ClientError {
        self.last_error.unwrap_or(ClientError::NoServerReachable {
            tried: self.unreachable,
        })
    }
}

impl Client {
    /// Connects to the first server of `config.servers` that accepts a
    /// connection, trying them in order, each once.
    ///
    /// Fails with [`ClientError::InvalidAddress`] if an address cannot be
    /// parsed (or the list is empty), and with
    /// [`ClientError::NoServerReachable`] if none accepts.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        if config.servers.is_empty() {
            return Err(ClientError::InvalidAddress {
                address: String::new(),
                reason: "the server list is empty",
            });
        }
        let servers = config
            .servers
            .iter()
            .map(|address| Server::new(address, &config))
            .collect::<Result<Vec<_>>>()?;
        let mut tried = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            match server.endpoint.connect().await {
                Ok(channel) => {
                    let state = ConnectionState::Connected {
                        server: server.address.clone(),
                    };
                    let route = Route {
                        index,
                        generation: 0,
                        channel,
                        failures: 0,
                    };
                    tracing::debug!(server = %server.address, "connected");
                    let addresses = servers.iter().map(|s| s.address.clone()).collect();
                    return Ok(Self {
                        shared: Arc::new(Shared {
                            config,
                            servers,
                            addresses,
                            route: Mutex::new(route),
                            failover: tokio::sync::Mutex::new(()),
                            state: watch::Sender::new(state),
                            read_cursor: AtomicU64::new(0),
                        }),
                    });
                }
                Err(error) => {
                    tracing::debug!(server = %server.address, %error, "cannot connect");
                    tried.push(server.address.clone());
                }
            }
        }
        Err(ClientError::NoServerReachable { tried })
    }

    /// The server calls go to now, as configured.
    pub fn current_server(&self) -> String {
        let index = self.route().index;
        self.shared.addresses[index].clone()
    }

    /// The configured servers, in list order.
    pub fn servers(&self) -> &[String] {
        &self.shared.addresses
    }

    /// Follows the connection state: which server is in use, reconnection
    /// attempts, giving up. The receiver sees the latest state, not every
    /// intermediate one.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// The highest log position this client has written, or seen in a
    /// subscription. Reads and subscriptions ask the server to have applied
    /// at least this much, so they never show anything older than what this
    /// client already knows, whichever replica answers.
    pub fn read_cursor(&self) -> LogPosition {
        self.shared.read_cursor.load(Ordering::Acquire)
    }

    /// A fresh idempotency key for [`send_with_id`](Self::send_with_id): a
    /// random (v4) UUID.
    pub fn new_client_msg_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Registers a new account. Does not log in.
    ///
    /// Retried on another server after a failure whose outcome is unknown;
    /// if the first attempt did create the account, the retry fails with
    /// ALREADY_EXISTS, which then cannot be told apart from the name being
    /// someone else's. A front end can settle it by logging in with the
    /// password just chosen.
    pub async fn create_account(&self, username: &str, password: &str) -> Result<CreatedAccount> {
        let request = proto::CreateAccountRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        let response = self
            .call(Rpc::CreateAccount, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).create_account(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(CreatedAccount {
            account_id: response.account_id,
            username: response.username,
        })
    }

    /// Opens a session. A wrong username or password fails with
    /// UNAUTHENTICATED.
    ///
    /// Retried after a failure whose outcome is unknown: at worst the first
    /// attempt leaves an unused session, which the server closes when its
    /// idle timeout runs out.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session> {
        let request = proto::LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            min_applied: self.read_cursor(),
        };
        let response = self
            .call(Rpc::Login, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).login(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(response.into())
    }

    /// Closes the session of `token`.
    ///
    /// When a retry (after a failure whose outcome was unknown) is answered
    /// UNAUTHENTICATED, the first attempt closed the session, or it had
    /// expired: either way it is closed, and this returns `Ok`. On the first
    /// attempt, UNAUTHENTICATED is returned as an error.
    pub async fn logout(&self, token: &str) -> Result<()> {
        let request = proto::LogoutRequest {
            token: token.to_owned(),
            min_applied: self.read_cursor(),
        };
        let log_position = self
            .call(Rpc::Logout, |channel, attempt| {
                let request = request.clone();
                async move {
                    match ChatClient::new(channel).logout(request).await {
                        Ok(response) => Ok(response.map(|r| r.log_position)),
                        Err(status) if attempt > 1 && status.code() == Code::Unauthenticated => {
                            Ok(tonic::Response::new(0))
                        }
                        Err(status) => Err(status),
                    }
                }
            })
            .await?;
        self.wrote(log_position);
        Ok(())
    }

    /// Deletes the account of the session `token`, after the server checks
    /// `password` again; closes all its sessions.
    ///
    /// Not retried after a failure whose outcome is unknown (the error is
    /// returned, and the client moves to the next server for later calls):
    /// the account may or may not be gone. Trying again then fails with
    /// UNAUTHENTICATED if it is.
    pub async fn delete_account(&self, token: &str, password: &str) -> Result<()> {
        let request = proto::DeleteAccountRequest {
            token: token.to_owned(),
            password: password.to_owned(),
            min_applied: self.read_cursor(),
        };
        let response = self
            .call(Rpc::DeleteAccount, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).delete_account(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(())
    }

    /// Lists accounts whose username matches `pattern` (`*` any run of
    /// characters, `?` one; case is ignored; empty means all), a page at a
    /// time. `page_token` is the previous page's
    /// [`next_page_token`](AccountPage::next_page_token), `None` for the first
    /// page; `limit` is 1 to 1000, or 0 for the server's default. Needs no
    /// session.
    pub async fn list_accounts(
        &self,
        pattern: &str,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<AccountPage> {
        let pattern = pattern.to_owned();
        let page_token = page_token.unwrap_or_default().to_owned();
        let response = self
            .call(Rpc::ListAccounts, |channel, _| {
                let request = proto::ListAccountsRequest {
                    pattern: pattern.clone(),
                    page_token: page_token.clone(),
                    limit,
                    min_applied: self.read_cursor(),
                };
                async move { ChatClient::new(channel).list_accounts(request).await }
            })
            .await?;
        Ok(response.into())
    }

    /// Sends `body` to the user `to`, under a fresh idempotency key that
    /// every retry of this call reuses, so a failover never sends twice.
    pub async fn send(&self, token: &str, to: &str, body: &str) -> Result<SentMessage> {
        self.send_with_id(token, to, body, &Self::new_client_msg_id())
            .await
    }

    /// Sends `body` to the user `to` under the idempotency key
    /// `client_msg_id` (1 to 64 bytes; see
    /// [`new_client_msg_id`](Self::new_client_msg_id)). Calling it again with
    /// the same key, even much later, sends nothing new and returns the first
    /// send's message: an outbox can keep a message with its key and retry
    /// until it gets an answer.
    pub async fn send_with_id(
        &self,
        token: &str,
        to: &str,
        body: &str,
        client_msg_id: &str,
    ) -> Result<SentMessage> {
        let request = proto::SendRequest {
            token: token.to_owned(),
            to: to.to_owned(),
            body: body.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            min_applied: self.read_cursor(),
        };
        let response = self
            .call(Rpc::Send, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).send(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(SentMessage {
            id: response.message_id,
            sent_at: std::time::UNIX_EPOCH + Duration::from_millis(response.sent_at_ms),
            client_msg_id: client_msg_id.to_owned(),
        })
    }

    /// Reads the conversation with `peer`, newest first: messages with an id
    /// below `before` (`None` for the newest), at most `limit` (1 to 1000, or
    /// 0 for the server's default).
    pub async fn history(
        &self,
        token: &str,
        peer: &str,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage> {
        let token = token.to_owned();
        let peer = peer.to_owned();
        let response = self
            .call(Rpc::History, |channel, _| {
                let request = proto::HistoryRequest {
                    token: token.clone(),
                    peer: peer.clone(),
                    before: before.unwrap_or(0),
                    limit,
                    min_applied: self.read_cursor(),
                };
                async move { ChatClient::new(channel).history(request).await }
            })
            .await?;
        Ok(response.into())
    }

    /// Lists the caller's conversations with their last message and unread
    /// counts, the most recently active first.
    pub async fn conversations(&self, token: &str) -> Result<Conversations> {
        let token = token.to_owned();
        let response = self
            .call(Rpc::Conversations, |channel, _| {
                let request = proto::ConversationsRequest {
                    token: token.clone(),
                    min_applied: self.read_cursor(),
                };
                async move { ChatClient::new(channel).conversations(request).await }
            })
            .await?;
        Ok(response.into())
    }

    /// Acknowledges delivery of every message to the caller with an id up to
    /// `up_to`. The cursor only moves forward, so repeating this is harmless.
    pub async fn ack(&self, token: &str, up_to: MessageId) -> Result<()> {
        let request = proto::AckRequest {
            token: token.to_owned(),
            up_to,
            min_applied: self.read_cursor(),
        };
        let response = self
            .call(Rpc::Ack, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).ack(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(())
    }

    /// Marks the messages from `peer` up to `up_to` as read. Returns how many
    /// messages from `peer` are still unread.
    pub async fn mark_read(&self, token: &str, peer: &str, up_to: MessageId) -> Result<u64> {
        let request = proto::MarkReadRequest {
            token: token.to_owned(),
            peer: peer.to_owned(),
            up_to,
            min_applied: self.read_cursor(),
        };
        let response = self
            .call(Rpc::MarkRead, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).mark_read(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(response.unread_count)
    }

    /// Deletes messages (1 to 1000 ids) from the caller's own view. Returns
    /// how many were deleted; ids unknown, not the caller's or already
    /// deleted are skipped, so after a retry the count may miss those the
    /// first attempt deleted.
    pub async fn delete_messages(&self, token: &str, ids: &[MessageId]) -> Result<u64> {
        let request = proto::DeleteMessagesRequest {
            token: token.to_owned(),
            ids: ids.to_vec(),
            min_applied: self.read_cursor(),
        };
        let response = self
            .call(Rpc::DeleteMessages, |channel, _| {
                let request = request.clone();
                async move { ChatClient::new(channel).delete_messages(request).await }
            })
            .await?;
        self.wrote(response.log_position);
        Ok(response.deleted)
    }

    /// Describes the cluster as the current server sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let response = self
            .call(Rpc::ClusterStatus, |channel, _| async move {
                ClusterClient::new(channel)
                    .status(proto::StatusRequest {})
                    .await
            })
            .await?;
        Ok(response.into())
    }

    /// Subscribes to the events of the session `token` with an id above
    /// `after` (0 for everything the server holds; usually the session's
    /// [`delivered_cursor`](Session::delivered_cursor) or the last event id
    /// seen). Returns once a server has accepted the stream, so a bad token
    /// fails here.
    pub async fn subscribe(&self, token: &str, after: EventId) -> Result<Subscription> {
        Subscription::open(self.clone(), token, after).await
    }

    /// Opens the event stream after `after`, with the same failover and
    /// retries as any read. Returns the stream and the route it runs on.
    pub(crate) async fn open_events(
        &self,
        token: &str,
        after: EventId,
    ) -> Result<(tonic::Streaming<proto::Event>, Route)> {
        let token = token.to_owned();
        self.call_routed(Rpc::Subscribe, |channel, _| {
            let request = proto::SubscribeRequest {
                token: token.clone(),
                after,
                // A replica that has not applied `after` yet would announce
                // CaughtUp before it has what the cursor says was seen. A
                // cursor saved by an earlier run is not in `read_cursor`.
                min_applied: self.read_cursor().max(after),
            };
            async move { ChatClient::new(channel).subscribe(request).await }
        })
        .await
    }

    /// The configured address of a server of the list.
    pub(crate) fn address(&self, index: usize) -> &str {
        &self.shared.addresses[index]
    }

    /// The address a route leads to.
    pub(crate) fn route_address(&self, route: &Route) -> &str {
        self.address(route.index)
    }

    /// The backoff between attempts, for a subscription's own resubscribes.
    pub(crate) fn backoff(&self) -> Backoff {
        self.shared.config.backoff
    }

    /// Remembers a write's log position for read-your-writes.
    fn wrote(&self, log_position: LogPosition) {
        self.observed(log_position);
    }

    /// Remembers a log position seen in a subscription: later reads are no
    /// older than what the user has already been shown.
    pub(crate) fn observed(&self, log_position: LogPosition) {
        self.shared
            .read_cursor
            .fetch_max(log_position, Ordering::AcqRel);
    }

    fn lock_route(&self) -> MutexGuard<'_, Route> {
        // The lock guards plain assignments; a panic cannot leave it torn.
        self.shared
            .route
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn route(&self) -> Route {
        self.lock_route().clone()
    }

    /// Makes one call with failover and retries: `attempt` is given the
    /// channel of the current server and the attempt number (1 for the
    /// first), and is called again on the next server while the failure
    /// allows it (see [`Rpc::retries`]) and the budget lasts.
    async fn call<T, F, Fut>(&self, rpc: Rpc, attempt: F) -> Result<T>
    where
        F: FnMut(Channel, u32) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        Ok(self.call_routed(rpc, attempt).await?.0)
    }

    /// [`call`](Self::call), also returning the route of the attempt that
    /// succeeded.
    async fn call_routed<T, F, Fut>(&self, rpc: Rpc, mut attempt: F) -> Result<(T, Route)>
    where
        F: FnMut(Channel, u32) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let timeout = self.shared.config.request_timeout;
        let mut attempts = Attempts::default();
        let mut number = 0u32;
        loop {
            number = number.saturating_add(1);
            let route = self.route();
            let outcome = time::timeout(timeout, attempt(route.channel.clone(), number)).await;
            let failure = match outcome {
                Ok(Ok(response)) => {
                    self.confirm(&route);
                    if rpc.writes() {
                        self.follow_leader(&route, response.metadata());
                    }
                    return Ok((response.into_inner(), route));
                }
                Ok(Err(status)) => Failure::Status(status),
                Err(_elapsed) => Failure::TimedOut(timeout),
            };
            let fault = failure.fault();
            let server = self.route_address(&route).to_owned();
            tracing::debug!(?rpc, %server, ?fault, ?failure, "call failed");
            let error = failure.into_error(&server);
            match fault {
                Fault::Answered => {
                    self.confirm(&route);
                    return Err(error);
                }
                Fault::NotSent => attempts.unreachable(&server),
                Fault::Unsure => attempts.last_error = Some(error.clone()),
            }
            if !rpc.retries(fault) {
                // Not repeated, but the next call should not meet the same
                // failure: move on now.
                let _moved = self.fail_over(route.generation).await;
                return Err(error);
            }
            self.move_on(route.generation, &mut attempts).await?;
        }
    }

    /// Moves away from the server of generation `failed`, spending attempts
    /// until one connects. Returns the error to give up with when the budget
    /// runs out first.
    async fn move_on(&self, mut failed: u64, attempts: &mut Attempts) -> Result<()> {
        loop {
            if attempts.used >= self.shared.config.failover_attempts {
                self.shared.state.send_replace(ConnectionState::Failed);
                let error = std::mem::take(attempts).into_error();
                tracing::warn!(%error, "giving up");
                return Err(error);
            }
            attempts.used += 1;
            match self.fail_over(failed).await {
                Ok(()) => return Ok(()),
                Err(unreachable) => {
                    attempts.unreachable(&unreachable);
                    failed = self.route().generation;
                }
            }
        }
    }

    /// After a failure on the route of generation `failed`: if nobody has
    /// moved since, waits the backoff, connects to the next server of the
    /// list and makes it current. Returns the address of that server if it
    /// could not be reached (it is current all the same, connecting lazily,
    /// so the round robin goes on from there).
    pub(crate) async fn fail_over(&self, failed: u64) -> Result<(), String> {
        let _turn = self.shared.failover.lock().await;
        let (next, attempt) = {
            let route = self.lock_route();
            if route.generation != failed {
                return Ok(());
            }
            (
                (route.index + 1) % self.shared.servers.len(),
                route.failures + 1,
            )
        };
        let server = &self.shared.servers[next];
        let delay = self.shared.config.backoff.delay(attempt);
        self.shared
            .state
            .send_replace(ConnectionState::Reconnecting {
                server: server.address.clone(),
                attempt,
                next_in: delay,
            });
        tracing::info!(server = %server.address, attempt, ?delay, "failing over");
        time::sleep(delay).await;
        let connected = server.endpoint.connect().await;
        let reachable = connected.is_ok();
        let channel = connected.unwrap_or_else(|error| {
            tracing::debug!(server = %server.address, %error, "cannot connect");
            server.endpoint.connect_lazy()
        });
        {
            let mut route = self.lock_route();
            *route = Route {
                index: next,
                generation: route.generation + 1,
                channel,
                failures: attempt,
            };
        }
        if reachable {
            self.shared.state.send_replace(ConnectionState::Connected {
                server: server.address.clone(),
            });
            Ok(())
        } else {
            Err(server.address.clone())
        }
    }

    /// After a write answered by a server that names another as the leader
    /// (see [`proto::LEADER_METADATA_KEY`]): if that server is in the list,
    /// moves there, so later writes skip the forward. A leader outside the
    /// list (the cluster may know it by another address) is not followed.
    fn follow_leader(&self, route: &Route, metadata: &tonic::metadata::MetadataMap) {
        let Some(leader) = metadata
            .get(proto::LEADER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        // Compared as the endpoints they make: `host:port` and
        // `http://host:port/` are one server.
        let tls = self.shared.config.tls_ca.is_some();
        let Ok(leader) = endpoint_uri(leader, tls) else {
            return;
        };
        let Some(next) = (self.shared.servers.iter())
            .position(|s| endpoint_uri(&s.address, tls).is_ok_and(|uri| uri == leader))
        else {
            return;
        };
        let server = &self.shared.servers[next];
        {
            let mut current = self.lock_route();
            if current.generation != route.generation || current.index == next {
                return;
            }
            *current = Route {
                index: next,
                generation: current.generation + 1,
                channel: server.endpoint.connect_lazy(),
                failures: 0,
            };
        }
        tracing::debug!(server = %server.address, "following the leader");
        self.shared.state.send_replace(ConnectionState::Connected {
            server: server.address.clone(),
        });
    }

    /// Records that the server of `route` answered: the backoff starts over
    /// and the state says connected.
    fn confirm(&self, route: &Route) {
        {
            let mut current = self.lock_route();
            if current.generation != route.generation {
                // An answer from a server the client has already left.
                return;
            }
            current.failures = 0;
        }
        let address = self.route_address(route);
        self.shared.state.send_if_modified(|state| {
            let up_to_date =
                matches!(state, ConnectionState::Connected { server } if server == address);
            if !up_to_date {
                *state = ConnectionState::Connected {
                    server: address.to_owned(),
                };
            }
            !up_to_date
        });
    }
}

impl Server {
    fn new(address: &str, config: &ClientConfig) -> Result<Self> {
        let invalid = |reason| ClientError::InvalidAddress {
            address: address.to_owned(),
            reason,
        };
        let uri = endpoint_uri(address, config.tls_ca.is_some()).map_err(invalid)?;
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|_| invalid("expected host:port or http://host:port"))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        if let Some(ca) = &config.tls_ca {
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|_| invalid("the TLS CA certificate is not usable PEM"))?;
        }
        Ok(Self {
            address: address.trim().to_owned(),
            endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_never_reached_a_server_gives_up_as_unreachable() {
        let mut attempts = Attempts::default();
        attempts.unreachable("a:1");
        attempts.unreachable("b:2");
        attempts.unreachable("a:1");
        assert_eq!(
            attempts.into_error(),
            ClientError::NoServerReachable {
                tried: vec!["a:1".to_owned(), "b:2".to_owned()]
            }
        );
    }

    #[test]
    fn a_call_some_server_answered_gives_up_with_that_answer() {
        let no_quorum = ClientError::Status {
            code: Code::Unavailable,
            message: "no quorum".to_owned(),
            server: "b:2".to_owned(),
        };
        let attempts = Attempts {
            used: 3,
            unreachable: vec!["a:1".to_owned()],
            last_error: Some(no_quorum.clone()),
        };
        assert_eq!(attempts.into_error(), no_quorum);
    }

    #[tokio::test]
    async fn bad_addresses_fail_before_any_connection() {
        let config = ClientConfig {
            servers: vec!["127.0.0.1:1".to_owned(), "nowhere".to_owned()],
            ..ClientConfig::default()
        };
        let error = Client::connect(config).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::InvalidAddress { address, .. } if address == "nowhere"),
            "{error:?}"
        );
        let empty = ClientConfig {
            servers: vec![],
            ..ClientConfig::default()
        };
        assert!(matches!(
            Client::connect(empty).await,
            Err(ClientError::InvalidAddress { .. })
        ));
    }
}
