//! `chat-server`: parses the command line, sets up logging and runs the
//! server until SIGINT or SIGTERM, or runs one `cluster` admin command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto as pb;
use clap::{Args, Parser, Subcommand};

/// mimalloc rather than glibc's malloc: glibc keeps memory freed by one
/// thread in per-thread arenas and rarely returns it, which held 4.5x the
/// state's own size while serving (BENCHMARKS.md, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The chat server: keeps all state in an append-only, CRC-checked event log,
/// replicated with Raft when it runs as a cluster.
#[derive(Debug, Parser)]
#[command(name = "chat-server", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Directory of the event log and state files (created if missing)
    #[arg(long, value_name = "DIR", default_value = "./chat-data")]
    data: PathBuf,
    /// Address to listen on for clients and other servers
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Address other servers and clients reach this one at (default: --listen)
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,
    /// End a session after this long without a request or an open stream
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    session_idle: Duration,
    /// This server's node id in the cluster
    #[arg(long, value_name = "N", default_value_t = 1)]
    id: u64,
    /// All members of a static cluster, this one included: 1=ADDR,2=ADDR,3=ADDR
    #[arg(long, value_name = "LIST", value_parser = parse_peers, conflicts_with = "join")]
    peers: Option<BTreeMap<u64, String>>,
    /// Join the live cluster that the server at ADDR belongs to
    #[arg(long, value_name = "ADDR")]
    join: Option<String>,
    /// File holding the secret every server of the cluster shares
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Serve clients and other servers over TLS with this certificate (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The authority that signed every server's certificate (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Take a snapshot of the state after this many new events (bounds the
    /// log replayed at start-up)
    #[arg(long, value_name = "N", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: u64,
    /// Log entries kept behind the latest snapshot before the rest is purged
    /// (lets a briefly lagging replica catch up from the log, not a snapshot)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    snapshot_keep: u64,
    /// Mebibytes of memory for recent message bodies, counted with what it
    /// takes to keep them; older ones are read from the archive on disk (0:
    /// every read goes to disk)
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    body_cache: u64,
    /// Password hashes and checks run at once (default: one per core)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    hash_workers: Option<u64>,
    /// Password hashes and checks that may wait; past that RESOURCE_EXHAUSTED
    #[arg(long, value_name = "N", default_value_t = 64)]
    hash_queue: usize,
    /// Accounts one client address may create per minute (0: no limit)
    #[arg(long, value_name = "N", default_value_t = 30)]
    account_creations_per_minute: u32,
    /// Connections open at once (lowered to fit `ulimit -n`, keeping 256
    /// descriptors for the log)
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Close a new connection that sends nothing for this long
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// Ping every connection this often; drop one that does not answer
    /// within a third of it or sends nothing for twice it
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    keepalive: Duration,
    /// Calls open at once on one connection
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_streams_per_connection: u32,
    /// Subscriptions open at once for one session
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_streams_per_session: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show or change the members of a running cluster
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Print how the server sees the cluster
    Status {
        /// Any server of the cluster
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
        server: String,
        /// Connect over TLS, checking the server against this authority (PEM)
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
    },
    /// Add a server: it catches up as a learner, then becomes a voter
    Add {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
        server: String,
        /// The new server's node id
        #[arg(long, value_name = "N")]
        id: u64,
        /// The address the new server listens on
        #[arg(long, value_name = "ADDR")]
        addr: String,
        #[arg(long, value_name = "FILE")]
        cluster_secret_file: PathBuf,
        /// Connect over TLS, checking the server against this authority (PEM)
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
    },
    /// Remove a server from the cluster
    Remove {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
        server: String,
        /// The node id to remove
        #[arg(long, value_name = "N")]
        id: u64,
        #[arg(long, value_name = "FILE")]
        cluster_secret_file: PathBuf,
        /// Connect over TLS, checking the server against this authority (PEM)
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
    },
}

fn parse_peers(list: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not ID=ADDR (e.g. 1=10.0.0.1:50051)"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("'{id}' is not a node id (a number from 1)"))?;
        if id == 0 || addr.trim().is_empty() {
            return Err(format!("'{item}' needs a node id from 1 and an address"));
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(peers)
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the cluster secret from {}", path.display()))?;
    let secret = secret.trim().to_string();
    if secret.len() < 16 {
        bail!(
            "the cluster secret in {} is too short; use at least 16 characters (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(secret)
}

/// mimalloc's `mi_option_purge_delay` (its enum's 16th entry, in v2 and
/// v3; the crate names no constant for it; checked by a test).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has the allocator return freed memory to the system at once, and
/// checks once a second for any it still holds.
///
/// mimalloc v3 waits 1 s before it returns a freed page, and checks only
/// when some thread next allocates; a burst of batch and connection
/// buffers right after each snapshot build left ~100 MiB of freed pages
/// held through the next second, then the next build's burst reused few
/// of them: at 1M messages, 500 MiB serving over 316 MiB in use, and
/// 400 MiB with no delay (BENCHMARKS.md, "Memory and restart"). No
/// delay cost no send throughput there (three runs each way, within 1%).
/// An idle server still kept what its last burst freed until this asked
/// it to check. `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)] // the workspace's one place for it: see ARCHITECTURE.md
fn return_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; callable from any thread at any
        // time, and read by the allocator on each purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            // SAFETY: `mi_collect` takes no arguments that point anywhere
            // and may be called from any thread at any time; it only gives
            // back memory the allocator holds unused.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        // On a failed write (a closed stderr) tracing-subscriber would say
        // so with eprintln!, which panics: the server must outlive its log.
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.run).await,
        Some(Command::Cluster { action }) => cluster(action).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    return_freed_memory();
    let mut config = chat_server::Config::new(&args.data);
    config.session_idle = args.session_idle;
    config.snapshot_every = args.snapshot_every;
    config.snapshot_keep = args.snapshot_keep;
    config.body_cache = args.body_cache.saturating_mul(1 << 20);
    if let Some(n) = args.hash_workers {
        config.hash_workers = n as usize;
    }
    config.hash_queue = args.hash_queue;
    config.account_creations_per_minute = args.account_creations_per_minute;
    config.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    config.handshake_timeout = args.handshake_timeout;
    if args.keepalive < Duration::from_millis(300) {
        bail!("--keepalive must be at least 300ms");
    }
    config.keepalive = args.keepalive;
    config.max_streams_per_connection = args.max_streams_per_connection;
    config.max_streams_per_session = args.max_streams_per_session;
    config.node_id = args.id;
    if args.id == 0 {
        bail!("--id must be 1 or more");
    }
    if let Some(file) = &args.cluster_secret_file {
        config.cluster_secret = Some(read_secret(file)?);
    }
    if let Some(peers) = args.peers {
        let Some(me) = peers.get(&args.id) else {
            bail!("--peers does not list this server's --id {}", args.id);
        };
        if config.cluster_secret.is_none() && peers.len() > 1 {
            bail!("a cluster needs --cluster-secret-file (the same file on every server)");
        }
        config.advertise_addr = args.advertise.clone().unwrap_or_else(|| me.clone());
        config.peers = peers;
    }
    if let Some(join) = args.join {
        if config.cluster_secret.is_none() {
            bail!("--join needs --cluster-secret-file (the cluster's secret)");
        }
        config.join = Some(join);
    }
    if let Some(advertise) = args.advertise {
        config.advertise_addr = advertise;
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p)
                .with_context(|| format!("cannot read the TLS {what} from {}", p.display()))
        };
        config.tls = Some(chat_server::Tls {
            cert_pem: read(cert, "certificate")?,
            key_pem: read(key, "key")?,
            ca_pem: read(ca, "CA certificate")?,
        });
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = chat_server::Server::start(config, listener).await?;
    // Scripts and tests wait for this line (and read the port of
    // `--listen 127.0.0.1:0` from it): the server answers from here on.
    println!("listening on {}", server.local_addr()?);
    server.serve(shutdown_signal()).await
}

async fn cluster(action: ClusterAction) -> anyhow::Result<()> {
    let (server, tls_ca) = match &action {
        ClusterAction::Status { server, tls_ca }
        | ClusterAction::Add { server, tls_ca, .. }
        | ClusterAction::Remove { server, tls_ca, .. } => (server.clone(), tls_ca.clone()),
    };
    let ca = match &tls_ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let mut client = chat_server::cluster_admin(&server, ca.as_deref()).await?;
    let members = match action {
        ClusterAction::Status { .. } => {
            let s = client.status(pb::StatusRequest {}).await?.into_inner();
            let role = pb::Role::try_from(s.role).unwrap_or(pb::Role::Unspecified);
            println!(
                "node {} ({}), term {}",
                s.node_id,
                role.as_str_name(),
                s.term
            );
            println!(
                "leader {} {}",
                if s.leader_id == 0 {
                    "unknown".to_string()
                } else {
                    s.leader_id.to_string()
                },
                s.leader_address
            );
            println!(
                "log: last index {}, committed {}, applied {}",
                s.last_log_index, s.committed_index, s.applied_index
            );
            s.members
        }
        ClusterAction::Add {
            id,
            addr,
            cluster_secret_file,
            ..
        } => {
            client
                .add_member(pb::AddMemberRequest {
                    node_id: id,
                    address: addr,
                    cluster_secret: read_secret(&cluster_secret_file)?,
                })
                .await?
                .into_inner()
                .members
        }
        ClusterAction::Remove {
            id,
            cluster_secret_file,
            ..
        } => {
            client
                .remove_member(pb::RemoveMemberRequest {
                    node_id: id,
                    cluster_secret: read_secret(&cluster_secret_file)?,
                })
                .await?
                .into_inner()
                .members
        }
    };
    for m in members {
        println!(
            "member {} {} {}",
            m.node_id,
            m.address,
            if m.voter { "voter" } else { "learner" }
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index set at start-up is the purge delay: mimalloc v3's
    /// default for it is 1,000 ms, and the environment's value wins.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads an integer option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, expected);
    }

    #[test]
    fn peer_lists() {
        let p = parse_peers("1=a:1,2=b:2, 3 = c:3").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&3], "c:3");
        assert!(parse_peers("1=a,1=b").unwrap_err().contains("twice"));
        assert!(parse_peers("x=a").unwrap_err().contains("not a node id"));
        assert!(parse_peers("1").unwrap_err().contains("ID=ADDR"));
        assert!(parse_peers("0=a").is_err());
        assert!(parse_peers("").is_err());
    }
}
