//! The connection to the cluster, and moving it when a server fails.
//!
//! A [`Connection`] holds one HTTP/2 channel to one server of its list at a
//! time. When a call fails because that server or the connection failed, it
//! moves to the next server (round robin, waiting by [`Backoff`] first) and
//! makes the call again if repeating it is harmless (see `retry`). After a
//! write answered by a server that names another as the leader, it moves
//! there. It also keeps the read-your-writes cursor: the highest log position
//! this client wrote or was shown, sent as `min_applied` with later reads, so
//! a replica that has not yet applied it waits before answering.
//!
//! Both the typed calls (`client`) and the subscription (`subscription`) go
//! through it; neither knows the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chat_proto as proto;
use tokio::sync::watch;
use tokio::time;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::{ClientConfig, endpoint_uri};
use crate::error::{ClientError, Result};
use crate::model::{ClusterStatus, LogPosition};
use crate::retry::{Backoff, Failure, Fault, Retry, Rpc};

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
    /// Servers answer, but writes fail with UNAVAILABLE on every one: the
    /// cluster has no leader a majority follows (most of its servers are
    /// down or cut off). Reads still work; writes wait. Left when a write
    /// succeeds, or when [`Client::probe_writes`](crate::Client::probe_writes)
    /// sees the cluster commit again.
    NoMajority {
        /// The server calls go to now, as configured.
        server: String,
    },
    /// A call used up its failover budget without reaching a server. The
    /// next call starts trying again.
    Failed,
}

/// The server list, the server in use, and what this client has written:
/// what all clones of a [`Client`](crate::Client) and its subscriptions
/// share.
#[derive(Debug)]
pub(crate) struct Connection {
    config: ClientConfig,
    /// The configured servers with their transport endpoints, in list order.
    servers: Vec<Server>,
    /// The configured addresses alone, so [`Client::servers`](crate::Client::servers)
    /// can lend them.
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
    /// While writes wait ([`ConnectionState::NoMajority`]): the term and
    /// commit index the first probe saw, to tell when the cluster commits
    /// again.
    stalled_at: Mutex<Option<(u64, u64)>>,
}

/// One configured server.
#[derive(Debug)]
struct Server {
    /// As configured, for messages and [`Client::current_server`](crate::Client::current_server).
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
    /// The reconnection attempts since a call last succeeded here: the next
    /// attempt's backoff.
    reconnects: Retry,
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
    /// Whether some server answered UNAVAILABLE itself (no leader, or no
    /// quorum in time), as opposed to the connection failing.
    refused_by_server: bool,
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

impl Connection {
    /// Connects to the first server of `config.servers` that accepts a
    /// connection, trying them in order, each once.
    pub(crate) async fn connect(config: ClientConfig) -> Result<Self> {
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
                        reconnects: Retry::new(config.backoff),
                    };
                    tracing::debug!(server = %server.address, "connected");
                    let addresses = servers.iter().map(|s| s.address.clone()).collect();
                    return Ok(Self {
                        config,
                        servers,
                        addresses,
                        route: Mutex::new(route),
                        failover: tokio::sync::Mutex::new(()),
                        state: watch::Sender::new(state),
                        read_cursor: AtomicU64::new(0),
                        stalled_at: Mutex::new(None),
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

    /// The configured servers, in list order.
    pub(crate) fn servers(&self) -> &[String] {
        &self.addresses
    }

    /// The configured address of the server `route` leads to.
    pub(crate) fn address(&self, route: &Route) -> &str {
        &self.addresses[route.index]
    }

    /// The server calls go to now.
    pub(crate) fn route(&self) -> Route {
        self.lock_route().clone()
    }

    /// The backoff between attempts, for a subscription's own resubscribes.
    pub(crate) fn backoff(&self) -> Backoff {
        self.config.backoff
    }

    /// Follows the connection state (see [`ConnectionState`]).
    pub(crate) fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// The highest log position this client has written, or seen in a
    /// subscription: the `min_applied` of its reads.
    pub(crate) fn read_cursor(&self) -> LogPosition {
        self.read_cursor.load(Ordering::Acquire)
    }

    /// Remembers a log position this client wrote, or showed from a
    /// subscription: later reads are no older than that.
    pub(crate) fn observed(&self, log_position: LogPosition) {
        self.read_cursor.fetch_max(log_position, Ordering::AcqRel);
    }

    fn lock_route(&self) -> MutexGuard<'_, Route> {
        // The lock guards plain assignments; a panic cannot leave it torn.
        self.route
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes one call with failover and retries. Each attempt sends what
    /// `request` builds with `send`, which is given the channel of the
    /// current server and the attempt number (1 for the first); it is made
    /// again on the next server while the failure allows it (see
    /// [`Rpc::retries`]) and the budget lasts. Returns the reply and the
    /// route of the attempt that got it.
    pub(crate) async fn call<Req, T, Fut>(
        &self,
        rpc: Rpc,
        mut request: impl FnMut() -> Req,
        mut send: impl FnMut(Channel, Req, u32) -> Fut,
    ) -> Result<(T, Route)>
    where
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let timeout = self.config.request_timeout;
        let mut attempts = Attempts::default();
        let mut number = 0u32;
        loop {
            number = number.saturating_add(1);
            let route = self.route();
            let attempt = send(route.channel.clone(), request(), number);
            let outcome = time::timeout(timeout, attempt).await;
            let failure = match outcome {
                Ok(Ok(response)) => {
                    self.confirm(&route, rpc.writes());
                    if rpc.writes() {
                        self.follow_leader(&route, response.metadata());
                    }
                    return Ok((response.into_inner(), route));
                }
                Ok(Err(status)) => Failure::Status(status),
                Err(_elapsed) => Failure::TimedOut(timeout),
            };
            let fault = failure.fault();
            let refused_by_server = failure.refused_by_server();
            let server = self.address(&route).to_owned();
            tracing::debug!(?rpc, %server, ?fault, ?failure, "call failed");
            let error = failure.into_error(&server);
            match fault {
                Fault::Answered => {
                    self.confirm(&route, false);
                    return Err(error);
                }
                Fault::NotSent => attempts.unreachable(&server),
                Fault::Unsure => attempts.last_error = Some(error.clone()),
            }
            attempts.refused_by_server |= refused_by_server;
            if !rpc.retries(fault) {
                if refused_by_server {
                    self.writes_wait();
                }
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
            if attempts.used >= self.config.failover_attempts {
                if attempts.refused_by_server {
                    self.writes_wait();
                } else {
                    self.state.send_replace(ConnectionState::Failed);
                }
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
        let _turn = self.failover.lock().await;
        let (next, mut reconnects) = {
            let route = self.lock_route();
            if route.generation != failed {
                return Ok(());
            }
            (
                (route.index + 1) % self.servers.len(),
                route.reconnects.clone(),
            )
        };
        let server = &self.servers[next];
        let delay = reconnects.next_delay();
        let attempt = reconnects.attempt();
        self.announce_move(
            &server.address,
            ConnectionState::Reconnecting {
                server: server.address.clone(),
                attempt,
                next_in: delay,
            },
        );
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
                reconnects,
            };
        }
        if reachable {
            self.announce_move(
                &server.address,
                ConnectionState::Connected {
                    server: server.address.clone(),
                },
            );
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
        let tls = self.config.tls_ca.is_some();
        let Ok(leader) = endpoint_uri(leader, tls) else {
            return;
        };
        let Some(next) = (self.servers.iter())
            .position(|s| endpoint_uri(&s.address, tls).is_ok_and(|uri| uri == leader))
        else {
            return;
        };
        let server = &self.servers[next];
        {
            let mut current = self.lock_route();
            if current.generation != route.generation || current.index == next {
                return;
            }
            *current = Route {
                index: next,
                generation: current.generation + 1,
                channel: server.endpoint.connect_lazy(),
                reconnects: Retry::new(self.config.backoff),
            };
        }
        tracing::debug!(server = %server.address, "following the leader");
        self.state.send_replace(ConnectionState::Connected {
            server: server.address.clone(),
        });
    }

    /// Records that the server of `route` answered: the backoff starts over
    /// and the state says connected, unless writes wait and this answer was
    /// not a write's success (a follower answers reads without a leader).
    fn confirm(&self, route: &Route, wrote: bool) {
        {
            let mut current = self.lock_route();
            if current.generation != route.generation {
                // An answer from a server the client has already left.
                return;
            }
            current.reconnects.reset();
        }
        let server = self.address(route).to_owned();
        let still_waiting =
            !wrote && matches!(*self.state.borrow(), ConnectionState::NoMajority { .. });
        if still_waiting {
            self.announce(ConnectionState::NoMajority { server });
        } else {
            *self.lock_stalled() = None;
            self.announce(ConnectionState::Connected { server });
        }
    }

    /// Publishes `next` unless it is the state already.
    fn announce(&self, next: ConnectionState) {
        self.state.send_if_modified(|state| {
            let changed = *state != next;
            if changed {
                *state = next;
            }
            changed
        });
    }

    /// Publishes a move to another server: while writes wait, the state
    /// keeps saying so (with the new server) instead of flickering through
    /// reconnecting and connected; `moving` is the state otherwise.
    fn announce_move(&self, server: &str, moving: ConnectionState) {
        if matches!(*self.state.borrow(), ConnectionState::NoMajority { .. }) {
            self.announce(ConnectionState::NoMajority {
                server: server.to_owned(),
            });
        } else {
            self.announce(moving);
        }
    }

    /// Servers answer but refuse writes for want of a leader: say so.
    fn writes_wait(&self) {
        let server = self.address(&self.route()).to_owned();
        tracing::warn!(%server, "writes wait: the cluster has no majority");
        self.state
            .send_replace(ConnectionState::NoMajority { server });
    }

    /// While writes wait: whether `status` (from any server) shows the
    /// cluster committing again since the first status seen while waiting,
    /// a new term with a leader or a higher commit index. If so, the state
    /// says connected again.
    pub(crate) fn commits_again(&self, status: &ClusterStatus) -> bool {
        if !matches!(*self.state.borrow(), ConnectionState::NoMajority { .. }) {
            return true;
        }
        let now = (status.term, status.committed_index);
        let resumed = {
            let mut stalled = self.lock_stalled();
            let (term, committed) = *stalled.get_or_insert(now);
            (now.0 > term && status.leader_id.is_some()) || now.1 > committed
        };
        if resumed {
            let server = self.address(&self.route()).to_owned();
            *self.lock_stalled() = None;
            self.state.send_if_modified(|state| {
                let waiting = matches!(state, ConnectionState::NoMajority { .. });
                if waiting {
                    *state = ConnectionState::Connected { server };
                }
                waiting
            });
        }
        resumed
    }

    fn lock_stalled(&self) -> MutexGuard<'_, Option<(u64, u64)>> {
        self.stalled_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            .tcp_nodelay(true);
        if let Some(keep_alive) = config.keep_alive {
            // Idle too: a connection with no call in flight is the one whose
            // death nobody would otherwise notice until the next call times
            // out.
            endpoint = endpoint
                .http2_keep_alive_interval(keep_alive.interval)
                .keep_alive_timeout(keep_alive.timeout)
                .keep_alive_while_idle(true);
        }
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
    use tonic::Code;

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
            refused_by_server: true,
        };
        assert_eq!(attempts.into_error(), no_quorum);
    }

    /// A connection to two servers that nothing listens on; channels
    /// connect lazily, so nothing is dialled.
    fn unconnected() -> Connection {
        let config = ClientConfig {
            servers: vec!["127.0.0.1:9".to_owned(), "127.0.0.1:10".to_owned()],
            ..ClientConfig::default()
        };
        let servers: Vec<Server> = (config.servers.iter())
            .map(|a| Server::new(a, &config).unwrap())
            .collect();
        let route = Route {
            index: 0,
            generation: 0,
            channel: servers[0].endpoint.connect_lazy(),
            reconnects: Retry::new(config.backoff),
        };
        Connection {
            addresses: config.servers.clone(),
            state: watch::Sender::new(ConnectionState::Connected {
                server: config.servers[0].clone(),
            }),
            config,
            servers,
            route: Mutex::new(route),
            failover: tokio::sync::Mutex::new(()),
            read_cursor: AtomicU64::new(0),
            stalled_at: Mutex::new(None),
        }
    }

    fn status(term: u64, leader: Option<u64>, committed: u64) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            leader_id: leader,
            leader_address: None,
            members: Vec::new(),
            last_log_index: committed + 5,
            applied_index: committed,
            committed_index: committed,
            term,
            role: crate::model::Role::Follower,
        }
    }

    fn state(connection: &Connection) -> ConnectionState {
        connection.state.borrow().clone()
    }

    #[tokio::test]
    async fn writes_wait_until_a_write_succeeds_not_a_read() {
        let connection = unconnected();
        let route = connection.route();
        connection.writes_wait();
        let waiting = ConnectionState::NoMajority {
            server: "127.0.0.1:9".to_owned(),
        };
        assert_eq!(state(&connection), waiting);
        // A follower answers reads without a leader.
        connection.confirm(&route, false);
        assert_eq!(state(&connection), waiting);
        // Moving to another server keeps saying so, with that server.
        connection.announce_move(
            "127.0.0.1:10",
            ConnectionState::Reconnecting {
                server: "127.0.0.1:10".to_owned(),
                attempt: 1,
                next_in: Duration::ZERO,
            },
        );
        assert_eq!(
            state(&connection),
            ConnectionState::NoMajority {
                server: "127.0.0.1:10".to_owned()
            }
        );
        connection.confirm(&route, true);
        assert_eq!(
            state(&connection),
            ConnectionState::Connected {
                server: "127.0.0.1:9".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn writes_wait_until_the_cluster_commits_again() {
        let connection = unconnected();
        assert!(
            connection.commits_again(&status(3, Some(1), 40)),
            "not waiting"
        );
        connection.writes_wait();
        // The first probe is the baseline; a stale leader of the same term
        // that commits nothing changes nothing.
        assert!(!connection.commits_again(&status(3, Some(1), 40)));
        assert!(!connection.commits_again(&status(3, Some(1), 40)));
        // Candidates raising the term without a leader: still waiting.
        assert!(!connection.commits_again(&status(5, None, 40)));
        assert!(matches!(
            state(&connection),
            ConnectionState::NoMajority { .. }
        ));
        assert!(connection.commits_again(&status(5, None, 41)));
        assert!(matches!(
            state(&connection),
            ConnectionState::Connected { .. }
        ));

        // A new term with a leader means a majority elected it.
        connection.writes_wait();
        assert!(!connection.commits_again(&status(6, None, 41)));
        assert!(connection.commits_again(&status(7, Some(2), 41)));
        assert!(matches!(
            state(&connection),
            ConnectionState::Connected { .. }
        ));
    }
}
