//! The server's configuration: what `chat-server`'s flags decide.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How one server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the log and the state files live.
    pub data_dir: PathBuf,
    /// A session with no request and no open stream for this long ends.
    pub session_idle: Duration,
    /// This node's id in the cluster.
    pub node_id: u64,
    /// The address other nodes and clients reach this server at (as stored
    /// in the cluster membership).
    pub advertise_addr: String,
    /// Size of each subscription's buffer, in events.
    pub stream_buffer: usize,
    /// The longest a read waits for this replica to apply a client's cursor.
    pub read_wait: Duration,
    /// Failed logins allowed per username before it is rate-limited.
    pub login_attempts: u32,
    /// How long a rate-limited username must wait.
    pub login_lockout: Duration,
    /// argon2 cost; tests lower it to stay fast.
    pub password_hashing: HashingCost,
    /// Password hashes and checks running at once (each takes a core and
    /// `password_hashing.memory_kib` of memory).
    pub hash_workers: usize,
    /// Password hashes and checks that may wait for a worker; past that a
    /// request is refused with RESOURCE_EXHAUSTED.
    pub hash_queue: usize,
    /// Accounts one client address may create per minute (0: no limit).
    pub account_creations_per_minute: u32,
    /// Client and server connections open at once (lowered at start to fit
    /// the descriptor limit, with descriptors kept for the log).
    pub max_connections: usize,
    /// How long a new connection may stay silent before its first byte.
    pub handshake_timeout: Duration,
    /// How often the server pings each connection over HTTP/2; a client
    /// that does not answer within a third of it is dropped, and a
    /// connection that sends nothing for two of it is closed.
    pub keepalive: Duration,
    /// Calls (streams) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Subscriptions open at once for one session.
    pub max_streams_per_session: usize,
    /// Segment size of the log.
    pub segment_size: u64,
    /// Segment size of the message archive.
    pub archive_segment_size: u64,
    /// Bytes of message bodies kept in memory (0: every read goes to disk).
    pub body_cache: u64,
    /// How much of a conversation one History call with a query looks at:
    /// what keeps a search's latency bounded however long the history.
    pub search_budget: SearchBudget,
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// The range a follower's election timeout is drawn from. openraft 0.9
    /// starts an election only after the leader lease (the maximum) plus
    /// such a timeout without a heartbeat: with 150-300 ms, a dead leader
    /// is replaced 450-600 ms after its last heartbeat.
    pub election_timeout: (Duration, Duration),
    /// A snapshot of the state is taken after this many new chat events (or
    /// log entries, which hold one or more events each), so the log to
    /// replay at start-up stays bounded however events are batched.
    pub snapshot_every: u64,
    /// Log entries kept behind the latest snapshot (the rest is purged, so
    /// disk use and restart time stay bounded).
    pub snapshot_keep: u64,
    /// The cluster's members by node id (static membership), this node
    /// included. Empty for a single node or a node that joins.
    pub peers: BTreeMap<u64, String>,
    /// A member to ask to add this node to its cluster.
    pub join: Option<String>,
    /// Required on every Raft call and membership change between servers.
    pub cluster_secret: Option<String>,
    /// Traffic this node's Raft network drops or delays (fault tests).
    pub faults: Arc<Faults>,
    /// TLS for clients and other servers; plain TCP when unset.
    pub tls: Option<crate::transport::Tls>,
}

impl Config {
    /// The CA other servers are checked against, when TLS is on.
    pub fn peer_ca(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|t| t.ca_pem.as_slice())
    }
}

/// Faults injected into this node's outgoing Raft traffic, for partition
/// tests. Empty in production.
#[derive(Debug, Default)]
pub struct Faults {
    /// Peers whose traffic is dropped (reported as unreachable).
    blocked: Mutex<BTreeSet<u64>>,
}

impl Faults {
    /// Drops all traffic to `peers` until `heal`.
    pub fn block(&self, peers: impl IntoIterator<Item = u64>) {
        self.blocked.lock().expect("faults lock").extend(peers);
    }

    pub fn heal(&self) {
        self.blocked.lock().expect("faults lock").clear();
    }

    pub fn is_blocked(&self, peer: u64) -> bool {
        self.blocked.lock().expect("faults lock").contains(&peer)
    }
}

/// The most one History call with a query examines, newest first: it stops
/// at whichever bound it reaches first and tells the client where to go on.
/// Counted in messages and bytes, not time, so the same call stops at the
/// same message however busy the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchBudget {
    /// Messages examined (at least 1).
    pub messages: usize,
    /// Bytes of their bodies: long bodies take longer to match.
    pub bytes: u64,
    /// Bytes read from the message archive (bodies not in the cache). A
    /// conversation that is a small share of the server's traffic has
    /// its messages far apart on disk, a 4 KiB block read for each; this
    /// bounds what reaching them costs.
    pub archive_bytes: u64,
}

impl Default for SearchBudget {
    /// 5 to 15 ms of one core on the benchmark machine, whichever bound
    /// stops it (BENCHMARKS.md, "Search").
    fn default() -> Self {
        SearchBudget {
            messages: 20_000,
            bytes: 4 << 20,
            archive_bytes: 16 << 20,
        }
    }
}

/// argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl HashingCost {
    /// OWASP's recommended argon2id minimum (19 MiB, 2 passes).
    pub const DEFAULT: HashingCost = HashingCost {
        memory_kib: 19 * 1024,
        iterations: 2,
    };
    /// Cheap hashing for tests; never for real passwords.
    pub const TESTING: HashingCost = HashingCost {
        memory_kib: 256,
        iterations: 1,
    };
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            session_idle: Duration::from_secs(30 * 60),
            node_id: 1,
            advertise_addr: String::new(),
            stream_buffer: 1024,
            read_wait: Duration::from_secs(5),
            hash_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue: 64,
            account_creations_per_minute: 30,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            max_streams_per_connection: 128,
            max_streams_per_session: 16,
            login_attempts: 5,
            login_lockout: Duration::from_secs(60),
            password_hashing: HashingCost::DEFAULT,
            segment_size: log_format::format::DEFAULT_SEGMENT_SIZE,
            archive_segment_size: log_format::format::DEFAULT_ARCHIVE_SEGMENT_SIZE,
            body_cache: 64 << 20,
            search_budget: SearchBudget::default(),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            snapshot_every: 500_000,
            snapshot_keep: 10_000,
            peers: BTreeMap::new(),
            join: None,
            cluster_secret: None,
            faults: Arc::default(),
            tls: None,
        }
    }
}
