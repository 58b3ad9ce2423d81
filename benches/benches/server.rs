//! `cargo bench -p chat-benches --bench server`: the real `chat-server`
//! binary under load from many gRPC clients (sends per second, send and
//! delivery latency), its restart time over a log of a million messages,
//! (`--only abuse`) what silent connections and a `CreateAccount` flood
//! cost a well-behaved client, and (`--only groups`) group conversations:
//! fan-out to a thousand live members, memory per stored group message,
//! many small groups beside direct messages. Options after `--`, or
//! `BENCH_*` environment variables; `--quick` for a run of well under a
//! minute.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chat_benches::disk::{FlushCounter, load_average};
use chat_benches::machine::{Machine, MachineArgs};
use chat_benches::server::abuse;
use chat_benches::server::groups::{self, Member, PhaseConfig, PhaseResult, Route, StoreResult};
use chat_benches::server::load::{
    self, FillConfig, LoadConfig, LoadResult, Offered, Recipient, STAMP_LEN, User,
};
use chat_benches::server::process::{
    self, ACCOUNT_LIMIT_FLAG, CacheWarmed, ReplayReport, ServerProcess, SnapshotBuild,
};
use chat_benches::server::reads::{self, Ask, Backlog, ReadTally, Reader};
use chat_benches::server::{Probe, Usage};
use chat_benches::{Table, grouped, millis, percent};
use chat_client::Peer;
use chat_proto::chat_client::ChatClient;
use chat_proto::cluster_client::ClusterClient;
use chat_proto::{HistoryRequest, StatusRequest};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Sends per second that 64 closed-loop senders must get acknowledged.
const THROUGHPUT_TARGET: f64 = 40_000.0;
/// The sender count the throughput target is stated for.
const THROUGHPUT_TARGET_SENDERS: usize = 64;
/// p99 from send to delivery, at the target's offered rate.
const DELIVERY_P99_TARGET: Duration = Duration::from_millis(5);
/// The open-loop rate the delivery target is stated for.
const DELIVERY_TARGET_RATE: f64 = 5_000.0;
/// From spawning the server to its `listening on` line.
const RESTART_TARGET: Duration = Duration::from_millis(1500);
/// The log size the restart target is stated for, in messages.
const RESTART_TARGET_MESSAGES: u64 = 1_000_000;
/// With history on disk: from spawn to listening over [`LARGE_TARGET_MESSAGES`].
const LARGE_RESTART_TARGET: Duration = Duration::from_secs(1);
/// With history on disk: the most resident memory over [`LARGE_TARGET_MESSAGES`],
/// while serving and after a restart.
const LARGE_RSS_TARGET: u64 = 1024 * 1024 * 1024;
/// With history on disk: RSS while serving over RSS after a restart.
const LARGE_RSS_RATIO_TARGET: f64 = 1.25;
/// How long a memory reading waits for the server's RSS to settle.
const RSS_SETTLE: Duration = Duration::from_secs(20);
/// How long a restart's readings wait for the server to fill its body
/// cache.
const CACHE_WARM_WAIT: Duration = Duration::from_secs(20);

/// How long the serving reading waits for a snapshot build to end.
const BUILD_WAIT: Duration = Duration::from_secs(60);
/// The stored messages the history-on-disk targets are stated for.
const LARGE_TARGET_MESSAGES: u64 = 10_000_000;
/// TCP connections held open without a byte sent, in the abuse target.
const ABUSE_SILENT_CONNECTIONS: usize = 1_000;
/// Clients calling `CreateAccount` back to back, in the abuse target.
const ABUSE_FLOODERS: usize = 16;
/// How many times its idle p99 the probe's send p99 may reach under abuse.
const ABUSE_P99_RATIO_TARGET: f64 = 2.0;
/// How far the server's resident memory may grow under abuse.
const ABUSE_RSS_TARGET: u64 = 512 * 1024 * 1024;
/// The server's own default per-address limit, stated because the other
/// parts turn it off: the flood must meet what a real deployment has.
const ABUSE_ACCOUNT_CREATIONS_PER_MINUTE: &str = "30";
/// Longer than the abuse phase, so that the silent connections stay open
/// through it (the default, 10 s, would close them mid-window).
const ABUSE_HANDSHAKE_TIMEOUT: &str = "10m";
/// p99 of a 50-message History page outside the body cache, under sends at
/// [`DELIVERY_TARGET_RATE`].
const HISTORY_P99_TARGET: Duration = Duration::from_millis(5);
/// From Subscribe to CaughtUp over a backlog of [`BACKLOG_TARGET_MESSAGES`].
const BACKLOG_TARGET: Duration = Duration::from_millis(250);
/// The backlog size the backlog target is stated for.
const BACKLOG_TARGET_MESSAGES: u64 = 10_000;
/// p99 from a group send to its arrival on the last of
/// [`FANOUT_TARGET_MEMBERS`] members' streams, at [`FANOUT_TARGET_RATE`].
const FANOUT_P99_TARGET: Duration = Duration::from_millis(50);
/// The group size the fan-out target is stated for.
const FANOUT_TARGET_MEMBERS: usize = 1_000;
/// The send rate into that group the fan-out target is stated for.
const FANOUT_TARGET_RATE: f64 = 100.0;
/// The most members a group may have (the server's limit).
const MAX_GROUP_MEMBERS: usize = 1_000;
/// Members with a session that write the stored messages, each over its
/// own connection.
const STORE_WRITERS: usize = 4;
/// `--snapshot-every` for the servers that store messages to be weighed:
/// no snapshot build (a second copy of the state) while they fill.
const STORE_SNAPSHOT_EVERY: &str = "1000000000";
/// `--body-cache` (MiB) for those servers: no bodies kept in memory, so
/// that the growth is what each message costs for good, not the bounded
/// cache (64 MiB by default, most of the growth over 200,000 messages).
const STORE_BODY_CACHE: &str = "0";
/// Before weighing sends, a tenth as many more are made and not weighed.
const STORE_UNWEIGHED_SHARE: u64 = 10;
/// From a start, or the last send, to reading the server's RSS: what the
/// allocator returns late (the argon2 memory took ~10 s) is gone by then.
const STORE_SETTLE: Duration = Duration::from_secs(12);
/// How often the server's resident memory is read under abuse.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Longest body the server accepts (16 KiB).
const MAX_BODY: usize = 16 * 1024;
/// Accounts created (and logged in) at once during setup; each costs the
/// server two argon2 hashes, on 2 cores.
const SETUP_CONCURRENCY: usize = 4;
/// How long a start-up (with its replay) may take before the bench gives up.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a stop (SIGTERM to exit) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "Benchmarks chat-server over gRPC: throughput, latency, restart")]
struct Cli {
    /// Sending users, each logged in on its own connection.
    #[arg(long, env = "BENCH_SENDERS", default_value_t = 64)]
    senders: usize,
    /// Receiving users, each with a live Subscribe stream; sender i writes
    /// to recipient i mod M.
    #[arg(long, env = "BENCH_SUBSCRIBERS", default_value_t = 64)]
    subscribers: usize,
    /// Bytes per message body (at least 32: a sequence number and a
    /// timestamp start every body).
    #[arg(long, env = "BENCH_BODY", default_value_t = 100)]
    body: usize,
    /// Measured seconds per load phase.
    #[arg(long, env = "BENCH_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of load before each window.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Sends in flight per sender in the throughput phase (closed loop).
    #[arg(long, env = "BENCH_IN_FLIGHT", default_value_t = 1)]
    in_flight: usize,
    /// Messages per second offered in the latency phase (open loop); a
    /// comma-separated list runs one phase per rate.
    #[arg(long, env = "BENCH_RATE", value_delimiter = ',', default_values_t = [5_000.0])]
    rate: Vec<f64>,
    /// Seconds to wait for the deliveries after a phase's last send.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Messages in the log for the restart part.
    #[arg(long, env = "BENCH_RESTART_MESSAGES", default_value_t = 1_000_000)]
    restart_messages: u64,
    /// Restarts measured over the same log.
    #[arg(long, env = "BENCH_RESTART_RUNS", default_value_t = 3)]
    restart_runs: usize,
    /// How the restart part stops the server, after the fill and after each
    /// restart: `term` as an operator does (it snapshots first, so a start
    /// replays nothing), `kill` (SIGKILL) as a crash does (a start replays
    /// the log since the last snapshot).
    #[arg(long, value_enum, default_value_t = Stop::Term)]
    stop: Stop,
    /// Sends in flight per sender while filling the log for the restart.
    #[arg(long, default_value_t = 4)]
    fill_in_flight: usize,
    /// Senders (and recipients) made for `--only restart` and `--only reads`.
    #[arg(long, default_value_t = 16)]
    fill_users: usize,
    /// Recipients each sender writes to while filling, in turn, so that
    /// every account is in this many direct conversations (at most
    /// `--fill-users`). `--only restart` makes its recipients without
    /// logging them in, so 5,000 fill users are 10,000 accounts.
    #[arg(long, default_value_t = 1)]
    fill_conversations: usize,
    /// Messages stored before `--only reads` restarts the server and reads:
    /// enough that the body cache holds a small part of them.
    #[arg(long, default_value_t = 3_000_000)]
    read_messages: u64,
    /// Clients paging through History at once in `--only reads`, one call
    /// in flight each.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// History pages per second the readers ask for, together.
    #[arg(long, default_value_t = 200.0)]
    read_rate: f64,
    /// Messages in the Subscribe backlog that `--only reads` times.
    #[arg(long, default_value_t = 10_000)]
    backlog: u64,
    /// Times the backlog is read (the first with the body cache cold).
    #[arg(long, default_value_t = 5)]
    backlog_runs: usize,
    /// `--only groups`: members of the fan-out group, each with a stream of
    /// its own session; also the accounts the small groups are made of, and
    /// the size of the group the stored messages go to.
    #[arg(long, default_value_t = 1_000)]
    group_members: usize,
    /// `--only groups`: members that write into the fan-out group, in turn.
    #[arg(long, default_value_t = 4)]
    group_senders: usize,
    /// `--only groups`: messages per second into the fan-out group.
    #[arg(long, default_value_t = 100.0)]
    group_rate: f64,
    /// `--only groups`: measured seconds of the fan-out phase.
    #[arg(long, default_value_t = 20.0)]
    group_duration: f64,
    /// `--only groups`: small groups, made of the fan-out group's members.
    #[arg(long, default_value_t = 1_000)]
    small_groups: usize,
    /// `--only groups`: members of each small group.
    #[arg(long, default_value_t = 10)]
    small_group_size: usize,
    /// `--only groups`: messages per second spread over the small groups,
    /// then the same over direct conversations (`--duration` each).
    #[arg(long, default_value_t = 5_000.0)]
    small_group_rate: f64,
    /// `--only groups`: messages stored into one group, and in direct
    /// conversations, each on a fresh server, to weigh them in its memory.
    #[arg(long, default_value_t = 200_000)]
    store_messages: u64,
    /// A check that everything runs: 8 senders and subscribers, 2 s phases
    /// (the latency one at 1,000 msg/s), a 10,000-message restart, once;
    /// for `--only groups` 40 members, 20 small groups at 500 msg/s and
    /// 5,000 stored messages. Overrides those options.
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::BoolishValueParser::new())]
    quick: bool,
    /// Which part to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    #[command(flatten)]
    machine: MachineArgs,
    /// Keep the data directory (its path is printed), e.g. to profile a
    /// restart: `perf record -g -- chat-server --data DIR --listen 127.0.0.1:0`.
    #[arg(long)]
    keep_data: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stop {
    Term,
    Kill,
}

impl Stop {
    /// Stops `server` this way; returns how long that took.
    fn stop(self, mut server: ServerProcess) -> anyhow::Result<Duration> {
        match self {
            Stop::Term => server.stop(STOP_TIMEOUT),
            Stop::Kill => Ok(server.kill()?.elapsed()),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Kill => "SIGKILL, as a crash",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Throughput, latency, then the restart on the same data directory.
    All,
    /// Throughput and latency.
    Load,
    Throughput,
    Latency,
    Restart,
    /// The machine's floor: closed-loop calls of a no-op RPC (Cluster.Status)
    /// by as many clients as there are senders, no disk, no delivery.
    Floor,
    /// One probe client's sends on an idle server, then with 1,000 silent
    /// connections open and 16 clients flooding CreateAccount, on a server
    /// with its default account-creation limit. Not part of `all`.
    Abuse,
    /// History pages and a Subscribe backlog read after a restart (body
    /// cache cold), History also under open-loop sends. Not part of `all`.
    Reads,
    /// Group conversations: one large group's fan-out to every member's
    /// stream, memory per stored group and direct message, small groups
    /// beside direct messages at the same rate. Not part of `all`.
    Groups,
    /// The floor under `groups`: its fan-out, small-group and direct phases
    /// against `fanout-floor` (built with this bench), a Chat server that
    /// only hands each message to its members' open streams: no log, no
    /// disk, no password hashing. What tonic, HTTP/2 and the kernel alone
    /// cost on this machine. Not part of `all`.
    GroupsFloor,
}

impl Part {
    fn throughput(self) -> bool {
        matches!(self, Part::All | Part::Load | Part::Throughput)
    }

    fn latency(self) -> bool {
        matches!(self, Part::All | Part::Load | Part::Latency)
    }

    fn restart(self) -> bool {
        matches!(self, Part::All | Part::Restart)
    }

    fn floor(self) -> bool {
        matches!(self, Part::All | Part::Load | Part::Floor)
    }
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.senders = 8;
        cli.subscribers = 8;
        cli.duration = 2.0;
        cli.warmup = 0.5;
        cli.rate = vec![1_000.0];
        cli.drain = 5.0;
        cli.restart_messages = 10_000;
        cli.restart_runs = 1;
        cli.fill_users = 8;
        cli.read_messages = 20_000;
        cli.backlog = 1_000;
        cli.backlog_runs = 2;
        cli.group_members = 40;
        cli.group_duration = 2.0;
        cli.small_groups = 20;
        cli.small_group_rate = 500.0;
        cli.store_messages = 5_000;
    }
    ensure!(
        (STAMP_LEN..=MAX_BODY).contains(&cli.body),
        "--body must be {STAMP_LEN} to {MAX_BODY} bytes"
    );
    ensure!(
        cli.senders > 0 && cli.subscribers > 0 && cli.fill_users > 0,
        "--senders, --subscribers and --fill-users must be at least 1"
    );
    ensure!(
        (1..=cli.fill_users).contains(&cli.fill_conversations),
        "--fill-conversations must be 1 to --fill-users"
    );
    ensure!(
        cli.duration > 0.0 && cli.warmup >= 0.0 && cli.drain >= 0.0,
        "durations must be positive"
    );
    ensure!(
        cli.rate.iter().all(|r| r.is_finite() && *r > 0.0),
        "every --rate must be positive"
    );
    ensure!(cli.restart_runs > 0, "--restart-runs must be at least 1");
    ensure!(
        cli.read_rate.is_finite()
            && cli.read_rate > 0.0
            && cli.readers > 0
            && cli.backlog > 0
            && cli.backlog_runs > 0
            && cli.read_messages > 0,
        "--readers, --backlog, --backlog-runs and --read-messages must be at least 1, --read-rate positive"
    );
    ensure!(
        (STORE_WRITERS + 1..=MAX_GROUP_MEMBERS).contains(&cli.group_members)
            && (1..=cli.group_members).contains(&cli.group_senders)
            && (2..=cli.group_members).contains(&cli.small_group_size)
            && cli.small_groups > 0
            && cli.store_messages > 0,
        "--group-members must be {} to {MAX_GROUP_MEMBERS}, --group-senders 1 to it, \
         --small-group-size 2 to it, --small-groups and --store-messages at least 1",
        STORE_WRITERS + 1
    );
    ensure!(
        [cli.group_rate, cli.small_group_rate, cli.group_duration]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0),
        "--group-rate, --small-group-rate and --group-duration must be positive"
    );

    let mut machine = Machine::find(&cli.machine)?;
    if cli.only == Part::GroupsFloor && cli.machine.server_bin.is_none() {
        machine.binary = PathBuf::from(env!("CARGO_BIN_EXE_fanout-floor"));
    }
    print_machine(&cli, &machine);
    machine.run(run(&cli, &machine))
}

async fn run(cli: &Cli, machine: &Machine) -> anyhow::Result<()> {
    if cli.only == Part::Abuse {
        let dir = data_dir(machine, "server-abuse-")?;
        let outcome = bench_abuse(cli, machine, dir.path()).await;
        return keep_if_asked_or_failed(cli, dir, outcome);
    }
    let seq = load::sequence();
    if cli.only == Part::Groups {
        return bench_groups(cli, machine, &seq).await;
    }
    if cli.only == Part::GroupsFloor {
        let dir = data_dir(machine, "server-groups-floor-")?;
        let outcome = group_load(cli, machine, dir.path(), &seq).await;
        return keep_if_asked_or_failed(cli, dir, outcome);
    }
    if cli.only == Part::Reads {
        let dir = data_dir(machine, "server-reads-")?;
        let outcome = bench_reads(cli, machine, dir.path(), &seq).await;
        return keep_if_asked_or_failed(cli, dir, outcome);
    }
    if cli.only == Part::Restart {
        let dir = data_dir(machine, "server-restart-")?;
        let server = start_server(machine, dir.path(), &[])?;
        let (senders, names) = make_senders_and_recipients(server.addr, cli.fill_users).await?;
        // What the accounts, sessions and connections hold before any
        // message, to set apart from what the messages cost.
        if let Some(rss) = process::settled_rss_of(server.pid(), RSS_SETTLE).await {
            eprintln!(
                "server RSS with the accounts made, before any message: {} MiB",
                mib(rss)
            );
        }
        let restarted =
            bench_restart(cli, machine, dir.path(), server, &senders, &names, 0, &seq).await;
        return keep_if_asked_or_failed(cli, dir, restarted);
    }

    let dir = data_dir(machine, "server-load-")?;
    let server = start_server(machine, dir.path(), &[])?;
    if cli.only.floor() {
        rpc_floor(cli, server.addr).await?;
        if cli.only == Part::Floor {
            let stopped = server.stop(STOP_TIMEOUT).map(|_| ());
            return keep_if_asked_or_failed(cli, dir, stopped);
        }
    }
    let (senders, users) = make_users(server.addr, cli.senders, cli.subscribers).await?;
    let names = names_of(&users);
    let mut recipients: Vec<Recipient> = users.into_iter().map(Recipient::new).collect();
    let mut results = Vec::new();
    let mut phases = Vec::new();
    if cli.only.throughput() {
        phases.push(Offered::ClosedLoop {
            per_sender: cli.in_flight,
        });
    }
    if cli.only.latency() {
        phases.extend(cli.rate.iter().map(|&rate| Offered::OpenLoop { rate }));
    }
    for offered in phases {
        let config = LoadConfig {
            offered,
            warmup: Duration::from_secs_f64(cli.warmup),
            measure: Duration::from_secs_f64(cli.duration),
            body_len: cli.body,
            drain: Duration::from_secs_f64(cli.drain),
        };
        eprintln!(
            "{}: {} s after {} s warm-up (load average {})",
            offered_label(offered),
            cli.duration,
            cli.warmup,
            load_average()
        );
        let probe = prober(server.pid(), machine.flushes.clone());
        let (result, back) = load::run_load(&senders, recipients, &config, &seq, probe).await?;
        recipients = back;
        eprintln!(
            "  {} sends/s, send p99 {} ms, delivery p99 {} ms, {} errors (load average {})",
            grouped(result.sends_per_sec()),
            millis(result.send_latency_at(0.99)),
            millis(result.delivery_latency_at(0.99)),
            result.sends.errors,
            load_average()
        );
        results.push(result);
    }
    print_load(&results);
    // The streams are closed: filling the log for the restart (all mode)
    // delivers to nobody, as if the recipients were offline.
    drop(recipients);

    let outcome = if cli.only.restart() {
        let already: u64 = results.iter().map(|r| r.sends.acked_total).sum();
        bench_restart(
            cli,
            machine,
            dir.path(),
            server,
            &senders,
            &names,
            already,
            &seq,
        )
        .await
    } else {
        server.stop(STOP_TIMEOUT).map(|took| {
            eprintln!("server stopped in {} ms", millis(took));
        })
    };
    keep_if_asked_or_failed(cli, dir, outcome)
}

/// What the machine allows at best: `--senders` clients, each on its own
/// connection, calling a no-op unary RPC in a closed loop. A send costs at
/// least this round trip plus a stream push to its recipient, so this bounds
/// the sends per second any design with one RPC per message could reach here.
async fn rpc_floor(cli: &Cli, addr: SocketAddr) -> anyhow::Result<()> {
    let warmup = Duration::from_secs_f64(cli.warmup);
    let measure = Duration::from_secs_f64(cli.duration);
    eprintln!(
        "rpc floor: {} clients calling Cluster.Status, {} s after {} s warm-up",
        cli.senders, cli.duration, cli.warmup
    );
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cli.senders {
        let mut client = ClusterClient::new(load::connect(addr).await?);
        tasks.spawn(async move {
            let mut latency =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
                    .expect("valid histogram bounds");
            loop {
                let began = Instant::now();
                if began >= end {
                    return Ok::<_, tonic::Status>(latency);
                }
                client.status(StatusRequest {}).await?;
                if began >= start {
                    latency.saturating_record(began.elapsed().as_nanos() as u64);
                }
            }
        });
    }
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
        .expect("valid histogram bounds");
    while let Some(done) = tasks.join_next().await {
        all.add(done??).context("merge the latency histograms")?;
    }
    let at = |q: f64| millis(Duration::from_nanos(all.value_at_quantile(q)));
    println!(
        "rpc floor (no-op unary RPC, {} clients, closed loop): {} calls/s, p50 {} ms, p99 {} ms",
        cli.senders,
        grouped(all.len() as f64 / measure.as_secs_f64()),
        at(0.5),
        at(0.99)
    );
    println!();
    Ok(())
}

/// Keeps the data directory if asked, or if the run failed: a server that
/// cannot start over its own data is worth a look (`log-inspect verify`).
fn keep_if_asked_or_failed(
    cli: &Cli,
    dir: tempfile::TempDir,
    outcome: anyhow::Result<()>,
) -> anyhow::Result<()> {
    if cli.keep_data || outcome.is_err() {
        println!("data directory kept: {}", dir.keep().display());
        println!();
    }
    outcome
}

fn data_dir(machine: &Machine, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&machine.root.path)
        .context("cannot create the data directory")
}

/// Starts the server on `127.0.0.1:0` with `args` besides.
fn start_server(machine: &Machine, dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
    let args: Vec<String> = ["--listen", "127.0.0.1:0"]
        .iter()
        .chain(args)
        .map(|&a| a.to_owned())
        .collect();
    let server = ServerProcess::start_with(
        &machine.binary,
        dir,
        &args,
        process::SERVER_LOG_FILTER,
        START_TIMEOUT,
    )?;
    eprintln!(
        "server pid {} listening on {} after {} ms, data in {}",
        server.pid(),
        server.addr,
        millis(server.ready_after),
        dir.display()
    );
    Ok(server)
}

/// `senders` sending and `recipients` receiving users, made and logged in.
async fn make_users(
    addr: SocketAddr,
    senders: usize,
    recipients: usize,
) -> anyhow::Result<(Vec<User>, Vec<User>)> {
    let started = Instant::now();
    let mut names: Vec<String> = (0..senders).map(|i| format!("sender-{i:03}")).collect();
    names.extend((0..recipients).map(|i| format!("recipient-{i:03}")));
    let mut users = load::create_users(addr, &names, SETUP_CONCURRENCY).await?;
    let recipients = users.split_off(senders);
    eprintln!(
        "created and logged in {} accounts in {:.1} s (argon2, not measured)",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((users, recipients))
}

/// `n` senders, made and logged in over a connection each, and `n`
/// recipients only made (they are written to, never read from), so that
/// thousands of accounts need no more connections than senders.
async fn make_senders_and_recipients(
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<(Vec<User>, Vec<String>)> {
    let started = Instant::now();
    let senders: Vec<String> = (0..n).map(|i| format!("sender-{i:05}")).collect();
    let recipients: Vec<String> = (0..n).map(|i| format!("recipient-{i:05}")).collect();
    let users = load::create_users(addr, &senders, SETUP_CONCURRENCY).await?;
    groups::create_accounts(addr, &recipients, SETUP_CONCURRENCY).await?;
    eprintln!(
        "created {} accounts ({n} logged in) in {:.1} s (argon2, not measured)",
        2 * n,
        started.elapsed().as_secs_f64()
    );
    Ok((users, recipients))
}

fn names_of(users: &[User]) -> Vec<String> {
    users.iter().map(|u| u.name.clone()).collect()
}

/// Reads the server's and this process's CPU time and the disk's flushes.
fn prober(server_pid: u32, flushes: Option<FlushCounter>) -> impl Fn() -> Probe + Send + 'static {
    let server_stat = format!("/proc/{server_pid}/stat");
    move || Probe {
        at: Instant::now(),
        server_cpu: process::cpu_time_of(&server_stat),
        bench_cpu: process::cpu_time_of("/proc/self/stat"),
        disk_flushes: flushes.as_ref().and_then(FlushCounter::read),
    }
}

fn offered_label(offered: Offered) -> String {
    match offered {
        Offered::ClosedLoop { per_sender: 1 } => "throughput (closed loop)".to_owned(),
        Offered::ClosedLoop { per_sender } => {
            format!("throughput (closed loop, {per_sender} in flight per sender)")
        }
        Offered::OpenLoop { rate } => format!("latency (open loop, {} msg/s)", grouped(rate)),
    }
}

fn print_machine(cli: &Cli, machine: &Machine) {
    println!("# Server (chat-server) benchmark");
    println!();
    machine.print();
    if cli.only == Part::Abuse {
        println!(
            "probe: 1 sender, 1 subscriber, closed loop, {}-byte bodies; abuse: \
             {ABUSE_SILENT_CONNECTIONS} silent connections, {ABUSE_FLOODERS} CreateAccount \
             flooders; server: {ACCOUNT_LIMIT_FLAG} {ABUSE_ACCOUNT_CREATIONS_PER_MINUTE} \
             (its default), --handshake-timeout {ABUSE_HANDSHAKE_TIMEOUT}",
            cli.body
        );
    } else if cli.only == Part::Reads {
        println!(
            "users: {n} senders and {n} recipients (the stored conversations), {n} subscribers \
             (the live load), 1 backlog reader, one connection each; {}-byte bodies; every send \
             durable; {} History readers asking for {} pages/s together, {}-message pages",
            cli.body,
            cli.readers,
            grouped(cli.read_rate),
            reads::PAGE,
            n = cli.fill_users
        );
    } else if cli.only == Part::GroupsFloor {
        println!(
            "members: {} accounts, each over its own chat-client connection with a Subscribe \
             stream; {}-byte bodies; the server is the floor: nothing stored, nothing durable",
            cli.group_members, cli.body
        );
    } else if cli.only == Part::Groups {
        println!(
            "members: {} accounts, each logged in over its own chat-client connection with a \
             Subscribe stream of its own session; {}-byte bodies; every send durable",
            cli.group_members, cli.body
        );
    } else if cli.only == Part::Restart {
        println!(
            "users: {n} senders (a connection each), {n} recipients (not logged in, no \
             streams); each sender writes to {} of them in turn; {}-byte bodies; every send \
             durable",
            cli.fill_conversations,
            cli.body,
            n = cli.fill_users
        );
    } else {
        println!(
            "users: {} senders, {} subscribers, one connection each; {}-byte bodies; \
             every send durable",
            cli.senders, cli.subscribers, cli.body
        );
    }
    println!("load average at start: {}", load_average());
    println!();
}

fn print_load(results: &[LoadResult]) {
    if results.is_empty() {
        return;
    }
    let window = results[0].window.as_secs_f64();
    let warmup = results[0].config.warmup.as_secs_f64();
    println!("## Load ({window} s measured after {warmup} s warm-up per phase)");
    println!();
    let mut table = Table::new(&[
        "phase",
        "senders",
        "subscribers",
        "sends/s",
        "send p50 ms",
        "send p99 ms",
        "send p99.9 ms",
        "send max ms",
        "delivery p50 ms",
        "delivery p99 ms",
        "delivery p99.9 ms",
        "delivery max ms",
    ]);
    for r in results {
        table.row(vec![
            offered_label(r.config.offered),
            r.senders.to_string(),
            r.subscribers.to_string(),
            grouped(r.sends_per_sec()),
            millis(r.send_latency_at(0.5)),
            millis(r.send_latency_at(0.99)),
            millis(r.send_latency_at(0.999)),
            millis(Duration::from_nanos(r.sends.latency.max())),
            millis(r.delivery_latency_at(0.5)),
            millis(r.delivery_latency_at(0.99)),
            millis(r.delivery_latency_at(0.999)),
            millis(Duration::from_nanos(r.delivery_latency.max())),
        ]);
    }
    println!("{table}");
    let mut table = Table::new(&[
        "phase",
        "sent in window",
        "delivered",
        "errors",
        "resubscribes",
        "skipped",
        "dispatch lag max ms",
        "server CPU",
        "bench CPU",
        "disk flushes/s",
        "sends/flush",
    ]);
    for r in results {
        let usage = r.usage.as_ref();
        let cores = |cpu: fn(&Usage) -> Option<Duration>| {
            usage
                .and_then(|u| u.cores(cpu(u)))
                .map_or("n/a".to_owned(), |c| format!("{c:.2}"))
        };
        let flushes = usage.and_then(Usage::disk_flushes_per_sec);
        table.row(vec![
            offered_label(r.config.offered),
            grouped(r.sends.acked_started as f64),
            grouped(r.delivered as f64),
            grouped(r.sends.errors as f64),
            grouped(r.resubscribes as f64),
            grouped(r.sends.skipped as f64),
            match r.config.offered {
                Offered::OpenLoop { .. } => millis(r.max_dispatch_lag),
                Offered::ClosedLoop { .. } => "n/a".to_owned(),
            },
            cores(|u| u.server_cpu),
            cores(|u| u.bench_cpu),
            flushes.map_or("n/a".to_owned(), grouped),
            flushes.filter(|f| *f > 0.0).map_or("n/a".to_owned(), |f| {
                format!("{:.1}", r.sends_per_sec() / f)
            }),
        ]);
    }
    println!("{table}");
    println!(
        "sends/s: acknowledged sends that returned in the window. Send latency: from the \
         send's start (open loop: the time it was due) to its reply, for sends started in \
         the window. Delivery: from the same instant to the message's arrival on the \
         recipient's stream. CPU in cores (1.00 = one core busy) over the window. \
         disk flushes: completed cache flushes of the whole device (/proc/diskstats)."
    );
    for r in results {
        if let Some(error) = &r.sends.first_error {
            println!(
                "{}: first send error: {error}",
                offered_label(r.config.offered)
            );
        }
        if r.delivered < r.sends.acked_started {
            println!(
                "{}: {} acknowledged messages were NOT delivered within the drain time",
                offered_label(r.config.offered),
                grouped((r.sends.acked_started - r.delivered) as f64)
            );
        }
    }
    println!();
    print_load_verdicts(results);
}

fn print_load_verdicts(results: &[LoadResult]) {
    for r in results {
        match r.config.offered {
            Offered::ClosedLoop { per_sender } => {
                let rate = r.sends_per_sec();
                let verdict = if r.senders != THROUGHPUT_TARGET_SENDERS || per_sender != 1 {
                    format!(
                        "not the stated configuration ({THROUGHPUT_TARGET_SENDERS} senders, \
                         1 send in flight each); {} of the target",
                        percent(rate / THROUGHPUT_TARGET)
                    )
                } else if rate >= THROUGHPUT_TARGET {
                    "MET".to_owned()
                } else {
                    format!(
                        "MISSED by {} ({} of the target)",
                        percent(1.0 - rate / THROUGHPUT_TARGET),
                        percent(rate / THROUGHPUT_TARGET)
                    )
                };
                println!(
                    "throughput target {} sends/s with {THROUGHPUT_TARGET_SENDERS} senders: {} sends/s, {verdict}",
                    grouped(THROUGHPUT_TARGET),
                    grouped(rate)
                );
            }
            Offered::OpenLoop { rate } => {
                let p99 = r.delivery_latency_at(0.99);
                let achieved = r.sends_per_sec();
                let mut verdict = if p99 < DELIVERY_P99_TARGET {
                    "MET".to_owned()
                } else {
                    format!(
                        "MISSED by {} ms ({:.1}x the target)",
                        millis(p99 - DELIVERY_P99_TARGET),
                        p99.as_secs_f64() / DELIVERY_P99_TARGET.as_secs_f64()
                    )
                };
                if achieved < rate * 0.95 {
                    verdict.push_str(&format!(
                        "; the server took only {} of the {} msg/s offered",
                        grouped(achieved),
                        grouped(rate)
                    ));
                }
                if (rate - DELIVERY_TARGET_RATE).abs() < 0.5 {
                    println!(
                        "delivery target p99 < {} ms at {} msg/s: p99 {} ms, {verdict}",
                        millis(DELIVERY_P99_TARGET),
                        grouped(DELIVERY_TARGET_RATE),
                        millis(p99)
                    );
                } else {
                    println!(
                        "  for reference, at {} msg/s against the same {} ms bound: p99 {} ms, {verdict}",
                        grouped(rate),
                        millis(DELIVERY_P99_TARGET),
                        millis(p99)
                    );
                }
            }
        }
    }
    let at_target_rate = |r: &LoadResult| matches!(r.config.offered, Offered::OpenLoop { rate } if (rate - DELIVERY_TARGET_RATE).abs() < 0.5);
    if results
        .iter()
        .any(|r| matches!(r.config.offered, Offered::OpenLoop { .. }))
        && !results.iter().any(at_target_rate)
    {
        println!(
            "delivery target: not measured (no open-loop phase at {} msg/s)",
            grouped(DELIVERY_TARGET_RATE)
        );
    }
    println!();
}

/// One restart over the filled log.
struct Restart {
    /// Spawn to `listening on`.
    ready: Duration,
    /// Spawn to the first answered Chat call (History of a filled
    /// conversation, with a session from before the restart).
    answered: Duration,
    report: Option<ReplayReport>,
    /// The server's line on filling its body cache after the start.
    warmed: Option<CacheWarmed>,
    last_log_index: u64,
    /// Server RSS once it answered (and filled its body cache).
    rss: Option<u64>,
    /// Server RSS once every sender was connected again and answered.
    rss_connected: Option<u64>,
    /// The stop after it (`--stop`).
    stopped: Duration,
}

/// Tops the log up to `cli.restart_messages` messages (`already` are in
/// it), stops the server with SIGTERM, then restarts it `restart_runs`
/// times, timing each start.
#[allow(clippy::too_many_arguments, reason = "one call site, all distinct")]
async fn bench_restart(
    cli: &Cli,
    machine: &Machine,
    dir: &Path,
    server: ServerProcess,
    senders: &[User],
    recipients: &[String],
    already: u64,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let to_send = cli.restart_messages.saturating_sub(already);
    eprintln!(
        "filling the log: {} messages ({} already in it), {} senders x {} in flight (load average {})",
        grouped(to_send as f64),
        grouped(already as f64),
        senders.len(),
        cli.fill_in_flight,
        load_average()
    );
    let fill_started = Instant::now();
    let config = FillConfig {
        messages: to_send,
        per_sender: cli.fill_in_flight,
        conversations: cli.fill_conversations,
        body_len: cli.body,
        progress_every: Duration::from_secs(10),
    };
    let filled = load::fill(senders, recipients, &config, seq, move |sent| {
        let secs = fill_started.elapsed().as_secs_f64();
        eprintln!(
            "  {} sent in {secs:.0} s ({} sends/s, load average {})",
            grouped(sent as f64),
            grouped(sent as f64 / secs),
            load_average()
        );
    })
    .await?;
    let fill_rate = filled.sent as f64 / filled.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "  filled in {:.1} s: {} sends/s, {} failed sends{}",
        filled.elapsed.as_secs_f64(),
        grouped(fill_rate),
        filled.errors,
        filled
            .first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    // Memory while serving: the server has just taken every message (and
    // freed what it was going to free). A snapshot build the last sends
    // set off holds, while it runs, the parts of the state applying
    // changed since it copied them: that is the peak reading (VmHWM),
    // and the serving reading waits for the build to end.
    if !server.builds_ended(BUILD_WAIT).await {
        eprintln!(
            "  a snapshot build was still running after {} s; reading RSS during it",
            BUILD_WAIT.as_secs()
        );
    }
    let serving_rss = process::settled_rss_of(server.pid(), RSS_SETTLE).await;
    let peak_rss = process::peak_rss_of(server.pid());
    let builds: Vec<SnapshotBuild> = (server.stderr_lines().iter())
        .filter_map(|line| SnapshotBuild::parse(line))
        .collect();
    let took = cli.stop.stop(server)?;
    eprintln!(
        "server stopped ({}) in {} ms",
        cli.stop.label(),
        millis(took)
    );

    let messages = already + filled.sent;
    let log_bytes = dir_bytes(dir);
    let mut runs = Vec::new();
    for run in 1..=cli.restart_runs {
        let restart = match restart_once(machine, dir, senders, recipients, cli.stop).await {
            Ok(restart) => restart,
            Err(e) => {
                println!(
                    "restart target: listening within {} ms over {} messages: MISSED, \
                     restart {run} over {} messages failed: {e:#}",
                    millis(RESTART_TARGET),
                    grouped(RESTART_TARGET_MESSAGES as f64),
                    grouped(messages as f64)
                );
                println!();
                return Err(e);
            }
        };
        eprintln!(
            "restart {run}: listening after {} ms, first answer after {} ms, server's replay {} ms",
            millis(restart.ready),
            millis(restart.answered),
            restart
                .report
                .as_ref()
                .and_then(|r| r.elapsed_ms)
                .map_or("n/a".to_owned(), |ms| ms.to_string())
        );
        runs.push(restart);
    }

    println!("## Restart over {} messages", grouped(messages as f64));
    println!();
    let filling = if filled.sent == 0 {
        format!(
            "the load phases had written {} messages, no fill needed",
            grouped(already as f64)
        )
    } else {
        format!(
            "log filled through the server: {} sends in {:.1} s ({} sends/s, {} senders x {} in \
             flight, {} failed sends)",
            grouped(filled.sent as f64),
            filled.elapsed.as_secs_f64(),
            grouped(fill_rate),
            senders.len(),
            cli.fill_in_flight,
            filled.errors,
        )
    };
    println!(
        "{filling}; data directory {:.1} MiB; stopped with {} in {} ms, and so after each restart; page cache warm",
        log_bytes as f64 / (1024.0 * 1024.0),
        cli.stop.label(),
        millis(took)
    );
    println!();
    let mut table = Table::new(&[
        "run",
        "spawn to listening ms",
        "spawn to first answer ms",
        "server replay elapsed_ms",
        "records",
        "replayed",
        "last log index",
        "body cache filled",
        "RSS after restart MiB",
        "with the senders connected MiB",
        "stop ms",
    ]);
    let field = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| grouped(v as f64));
    for (i, r) in runs.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            millis(r.ready),
            millis(r.answered),
            field(r.report.as_ref().and_then(|x| x.elapsed_ms)),
            field(r.report.as_ref().and_then(|x| x.records)),
            field(r.report.as_ref().and_then(|x| x.replayed)),
            grouped(r.last_log_index as f64),
            r.warmed.map_or("n/a".to_owned(), |w| w.to_string()),
            r.rss.map_or("n/a".to_owned(), mib),
            r.rss_connected.map_or("n/a".to_owned(), mib),
            millis(r.stopped),
        ]);
    }
    println!("{table}");
    if let Some(report) = runs.last().and_then(|r| r.report.as_ref()) {
        println!("server's line: `{}`", report.line);
    }
    println!();

    print_snapshot_builds(&builds);
    let mut rss: Vec<u64> = runs.iter().filter_map(|r| r.rss).collect();
    rss.sort();
    let mut connected: Vec<u64> = runs.iter().filter_map(|r| r.rss_connected).collect();
    connected.sort();
    let connected_median = connected.get(connected.len() / 2).copied();
    if let (Some(serving), Some(&restarted)) = (serving_rss, rss.get(rss.len() / 2)) {
        let per = |bytes: u64| bytes as f64 / messages.max(1) as f64;
        println!(
            "server RSS over {} messages: {} MiB while serving (at the end of the fill, {:.0} B per message), \
             {} MiB after a restart (median, {:.0} B per message); serving / restarted = {:.2}x",
            grouped(messages as f64),
            mib(serving),
            per(serving),
            mib(restarted),
            per(restarted),
            serving as f64 / restarted as f64
        );
        if let Some(connected) = connected_median {
            println!(
                "with the {} senders connected again after the restart: {} MiB (median); \
                 serving / restarted and connected = {:.2}x",
                senders.len(),
                mib(connected),
                serving as f64 / connected as f64
            );
        }
        if let Some(peak) = peak_rss {
            println!(
                "server peak RSS while filling (VmHWM): {} MiB ({:.0} B per message)",
                mib(peak),
                per(peak)
            );
        }
        println!();
    }
    let mut ready: Vec<Duration> = runs.iter().map(|r| r.ready).collect();
    ready.sort();
    let median = ready[ready.len() / 2];
    // From 10M on the history-on-disk target below is the one that applies.
    let verdict = if !(RESTART_TARGET_MESSAGES..LARGE_TARGET_MESSAGES).contains(&messages) {
        format!(
            "not the stated size (the log holds {} messages)",
            grouped(messages as f64)
        )
    } else if median <= RESTART_TARGET {
        "MET".to_owned()
    } else {
        format!(
            "MISSED by {} ms ({:.1}x the target)",
            millis(median - RESTART_TARGET),
            median.as_secs_f64() / RESTART_TARGET.as_secs_f64()
        )
    };
    println!(
        "restart target: listening within {} ms over {} messages: median {} ms, {verdict}",
        millis(RESTART_TARGET),
        grouped(RESTART_TARGET_MESSAGES as f64),
        millis(median)
    );
    if messages >= LARGE_TARGET_MESSAGES {
        let verdict = |met: bool| if met { "MET" } else { "MISSED" };
        println!(
            "restart target at {} messages (stopped with {}): listening within {} ms: median {} ms, {}",
            grouped(LARGE_TARGET_MESSAGES as f64),
            cli.stop.label(),
            millis(LARGE_RESTART_TARGET),
            millis(median),
            verdict(median <= LARGE_RESTART_TARGET)
        );
        // Serving is read with every sender connected; the restarted
        // server is compared with the same connections open when it had
        // them (the connections alone are ~36 KiB each).
        let (compared, against) = match connected_median {
            Some(c) => (c, "restarted with the senders connected again"),
            None => (rss.get(rss.len() / 2).copied().unwrap_or(0), "restarted"),
        };
        let most = rss.iter().chain(&connected).max();
        if let (Some(serving), Some(&most)) = (serving_rss, most) {
            println!(
                "memory target at {} messages: RSS at most {} MiB while serving and after a restart: {} and {} MiB (largest), {}; serving at most {:.2}x {against}: {:.2}x, {}",
                grouped(LARGE_TARGET_MESSAGES as f64),
                mib(LARGE_RSS_TARGET),
                mib(serving),
                mib(most),
                verdict(serving <= LARGE_RSS_TARGET && most <= LARGE_RSS_TARGET),
                LARGE_RSS_RATIO_TARGET,
                serving as f64 / compared as f64,
                verdict(compared > 0 && serving as f64 <= LARGE_RSS_RATIO_TARGET * compared as f64)
            );
        }
    }
    println!();
    Ok(())
}

/// Starts the server over `dir`, times it to `listening on` and to its
/// first answer, reads its RSS (once it answered a History call of the
/// first sender, and, with more than one sender, again once every sender
/// is connected again and has made a call, so that serving and restarted
/// hold the same connections), and stops it again.
async fn restart_once(
    machine: &Machine,
    dir: &Path,
    senders: &[User],
    recipients: &[String],
    stop: Stop,
) -> anyhow::Result<Restart> {
    let (user, peer) = (&senders[0], recipients[0].as_str());
    let server = ServerProcess::start(&machine.binary, dir, START_TIMEOUT)?;
    let channel = load::connect(server.addr).await?;
    let history = ChatClient::new(channel.clone())
        .history(HistoryRequest {
            token: user.token.clone(),
            peer: peer.to_owned(),
            before: 0,
            limit: 1,
            ..Default::default()
        })
        .await
        .context("History after the restart (with a session from before it)")?
        .into_inner();
    let answered = server.spawned_at.elapsed();
    ensure!(
        !history.messages.is_empty(),
        "the restarted server has no messages between {} and {peer}",
        user.name
    );
    let status = ClusterClient::new(channel)
        .status(StatusRequest {})
        .await
        .context("Cluster.Status after the restart")?
        .into_inner();
    let report = server.replay_report(Duration::from_secs(2)).await;
    let ready = server.ready_after;
    // The restarted server fills its body cache beside serving: the
    // readings are of the server with its cache as full as it gets.
    let warmed = server.cache_warmed(CACHE_WARM_WAIT).await;
    let rss = process::settled_rss_of(server.pid(), RSS_SETTLE).await;
    let mut rss_connected = None;
    if senders.len() > 1 {
        // Each sender on a connection of its own, as in the fill, asks for
        // the newest message of its first conversation (the fill's order).
        let addr = server.addr;
        let asks = senders.iter().enumerate().map(|(i, sender)| {
            let token = sender.token.clone();
            let peer = recipients[i % recipients.len()].clone();
            async move {
                let channel = load::connect(addr).await?;
                ChatClient::new(channel.clone())
                    .history(HistoryRequest {
                        token,
                        peer,
                        before: 0,
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                    .context("History of a sender connected again after the restart")?;
                anyhow::Ok(channel)
            }
        });
        let connected = load::in_order(asks, 64, |ask| ask).await?;
        rss_connected = process::settled_rss_of(server.pid(), RSS_SETTLE).await;
        drop(connected);
    }
    let stopped = stop.stop(server)?;
    Ok(Restart {
        ready,
        answered,
        report,
        warmed,
        last_log_index: status.last_log_index,
        rss,
        rss_connected,
        stopped,
    })
}

/// Bytes of every file under `dir`, at any depth (the log, the state
/// files and the message archive).
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some(if meta.is_dir() {
                    dir_bytes(&e.path())
                } else {
                    meta.len()
                })
            })
            .sum()
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// The probe's sends, closed loop, on the idle server and then under abuse:
/// silent connections held open and `CreateAccount` flooded. The flood
/// starts as the abuse window opens, so the window holds the burst of
/// argon2 hashes the per-address allowance still pays for.
async fn bench_abuse(cli: &Cli, machine: &Machine, dir: &Path) -> anyhow::Result<()> {
    let server = start_server(
        machine,
        dir,
        &[
            ACCOUNT_LIMIT_FLAG,
            ABUSE_ACCOUNT_CREATIONS_PER_MINUTE,
            "--handshake-timeout",
            ABUSE_HANDSHAKE_TIMEOUT,
        ],
    )?;
    let (probe, peer) = make_users(server.addr, 1, 1).await?;
    let seq = load::sequence();
    let phase = |warmup: f64| LoadConfig {
        offered: Offered::ClosedLoop { per_sender: 1 },
        warmup: Duration::from_secs_f64(warmup),
        measure: Duration::from_secs_f64(cli.duration),
        body_len: cli.body,
        drain: Duration::from_secs_f64(cli.drain),
    };
    let probes = || prober(server.pid(), machine.flushes.clone());

    eprintln!(
        "idle: the probe's sends for {} s after {} s warm-up (load average {})",
        cli.duration,
        cli.warmup,
        load_average()
    );
    let recipients = peer.into_iter().map(Recipient::new).collect();
    let (idle, recipients) =
        load::run_load(&probe, recipients, &phase(cli.warmup), &seq, probes()).await?;
    let rss_idle = process::rss_of(server.pid()).context("read the server's VmRSS")?;

    let stop = CancellationToken::new();
    let peak_rss = abuse::sample_peak_rss(server.pid(), RSS_SAMPLE_EVERY, stop.clone());
    let silent = abuse::open_silent(server.addr, ABUSE_SILENT_CONNECTIONS)?;
    let flood = abuse::flood_create_account(server.addr, ABUSE_FLOODERS, stop.clone()).await?;
    eprintln!(
        "abuse: {ABUSE_SILENT_CONNECTIONS} silent connections, {ABUSE_FLOODERS} flooders; \
         the probe's sends for {} s (load average {})",
        cli.duration,
        load_average()
    );
    let abused = load::run_load(&probe, recipients, &phase(0.0), &seq, probes()).await;
    let open_at_end = abuse::still_open(&silent);
    stop.cancel();
    let answers = abuse::flood_answers(flood).await?;
    let rss_peak = peak_rss.await?.max(rss_idle);
    drop(silent);
    let (abused, _) = abused?;

    print_abuse(&idle, &abused, rss_idle, rss_peak, &answers, open_at_end);
    let took = server.stop(STOP_TIMEOUT)?;
    eprintln!("server stopped in {} ms", millis(took));
    Ok(())
}

fn print_abuse(
    idle: &LoadResult,
    abused: &LoadResult,
    rss_idle: u64,
    rss_peak: u64,
    answers: &abuse::FloodAnswers,
    open_at_end: usize,
) {
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    println!(
        "## Abuse ({} s per phase, one probe sending closed loop)",
        idle.window.as_secs_f64()
    );
    println!();
    let mut table = Table::new(&[
        "phase",
        "sends",
        "errors",
        "send p50 ms",
        "send p99 ms",
        "send max ms",
        "server CPU",
        "server RSS MiB",
    ]);
    for (label, r, rss) in [
        ("idle", idle, mib(rss_idle)),
        ("abuse", abused, format!("{} (peak)", mib(rss_peak))),
    ] {
        table.row(vec![
            label.to_owned(),
            grouped(r.sends.acked_started as f64),
            grouped(r.sends.errors as f64),
            millis(r.send_latency_at(0.5)),
            millis(r.send_latency_at(0.99)),
            millis(Duration::from_nanos(r.sends.latency.max())),
            r.usage
                .as_ref()
                .and_then(|u| u.cores(u.server_cpu))
                .map_or("n/a".to_owned(), |c| format!("{c:.2}")),
            rss,
        ]);
    }
    println!("{table}");
    let mut table = Table::new(&[
        "CreateAccount calls",
        "calls/s",
        "OK",
        "RESOURCE_EXHAUSTED",
        "other",
        "silent connections open at end",
    ]);
    table.row(vec![
        grouped(answers.calls() as f64),
        grouped(answers.calls() as f64 / answers.elapsed.as_secs_f64().max(1e-9)),
        grouped(answers.ok as f64),
        grouped(answers.resource_exhausted as f64),
        grouped(answers.other as f64),
        format!("{open_at_end} of {ABUSE_SILENT_CONNECTIONS}"),
    ]);
    println!("{table}");
    for (label, r) in [("idle", idle), ("abuse", abused)] {
        if let Some(error) = &r.sends.first_error {
            println!("{label}: first send error: {error}");
        }
    }
    if let Some(error) = &answers.first_other {
        println!("flood: first answer other than OK or RESOURCE_EXHAUSTED: {error}");
    }
    println!();

    let (p99_idle, p99_abused) = (idle.send_latency_at(0.99), abused.send_latency_at(0.99));
    let ratio = p99_abused.as_secs_f64() / p99_idle.as_secs_f64().max(1e-9);
    let met = |ok: bool| if ok { "MET" } else { "MISSED" };
    println!(
        "abuse target send p99 within {ABUSE_P99_RATIO_TARGET:.1}x of idle: {} ms against {} ms, \
         {ratio:.2}x, {}",
        millis(p99_abused),
        millis(p99_idle),
        met(ratio <= ABUSE_P99_RATIO_TARGET)
    );
    let delta = rss_peak.saturating_sub(rss_idle);
    println!(
        "abuse target RSS under {} MiB above idle: {} MiB idle, {} MiB peak, +{} MiB, {}",
        mib(ABUSE_RSS_TARGET),
        mib(rss_idle),
        mib(rss_peak),
        mib(delta),
        met(delta < ABUSE_RSS_TARGET)
    );
    println!();
}

/// `--only reads`: stores a `backlog`-message backlog for one user, then
/// `read_messages` messages in `fill_users` conversations, restarts the
/// server (the page cache warm; the server fills its body cache with the
/// newest bodies, so the backlog's are not in it), then times the backlog
/// read from the start, and History pages at random places, first alone
/// and then beside open-loop sends at the target rate.
async fn bench_reads(
    cli: &Cli,
    machine: &Machine,
    dir: &Path,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let n = cli.fill_users;
    let server = start_server(machine, dir, &[])?;
    let mut names: Vec<String> = Vec::with_capacity(3 * n + 1);
    for role in ["sender", "recipient", "live"] {
        names.extend((0..n).map(|i| format!("{role}-{i:03}")));
    }
    names.push("backlog-000".to_owned());
    let started = Instant::now();
    let mut users = load::create_users(server.addr, &names, SETUP_CONCURRENCY).await?;
    eprintln!(
        "created and logged in {} accounts in {:.1} s (argon2, not measured)",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    let progress = |what: &'static str| {
        let began = Instant::now();
        move |sent: u64| {
            eprintln!(
                "  {what}: {} sent in {:.0} s (load average {})",
                grouped(sent as f64),
                began.elapsed().as_secs_f64(),
                load_average()
            );
        }
    };
    let fill = |messages| FillConfig {
        messages,
        per_sender: cli.fill_in_flight,
        conversations: cli.fill_conversations,
        body_len: cli.body,
        progress_every: Duration::from_secs(10),
    };
    eprintln!(
        "storing {} messages for the backlog reader, then {} in {n} conversations",
        grouped(cli.backlog as f64),
        grouped(cli.read_messages as f64)
    );
    // The backlog first: older than the bodies the restarted server's
    // cache takes, it is read from the archive.
    let backlogged = load::fill(
        &users[..n],
        &names[3 * n..],
        &fill(cli.backlog),
        seq,
        progress("backlog"),
    )
    .await?;
    let recipients = names_of(&users[n..2 * n]);
    let filled = load::fill(
        &users[..n],
        &recipients,
        &fill(cli.read_messages),
        seq,
        progress("history"),
    )
    .await?;
    ensure!(
        filled.errors == 0 && backlogged.errors == 0,
        "sends failed while storing: {:?}",
        filled.first_error.or(backlogged.first_error)
    );
    let took = server.stop(STOP_TIMEOUT)?;
    eprintln!("server stopped (SIGTERM) in {} ms", millis(took));

    let server = start_server(machine, dir, &[])?;
    // Read once the cache is filled, as it is for the server's life.
    let warmed = server.cache_warmed(CACHE_WARM_WAIT).await;
    eprintln!(
        "restarted; body cache filled: {}",
        warmed.map_or("no line within the wait".to_owned(), |w| w.to_string())
    );
    for user in &mut users {
        user.channel = load::connect(server.addr).await?;
    }
    let newest = ChatClient::new(users[0].channel.clone())
        .history(HistoryRequest {
            token: users[0].token.clone(),
            peer: recipients[0].clone(),
            limit: 1,
            ..Default::default()
        })
        .await
        .context("History after the restart")?
        .into_inner()
        .messages
        .first()
        .map(|m| m.id)
        .context("the restarted server has no history")?;

    let backlog_user = &users[3 * n];
    let mut backlogs = Vec::new();
    for run in 1..=cli.backlog_runs {
        let backlog = reads::read_backlog(backlog_user).await?;
        ensure!(
            backlog.messages == cli.backlog,
            "backlog read {run} held {} messages, not {}",
            backlog.messages,
            cli.backlog
        );
        eprintln!(
            "backlog read {run}: {} messages, CaughtUp after {} ms",
            grouped(backlog.messages as f64),
            millis(backlog.caught_up)
        );
        backlogs.push(backlog);
    }

    let readers: Vec<Reader> = (0..cli.readers)
        .map(|i| Reader {
            user: users[i % n].clone(),
            peer: recipients[i % n].clone(),
        })
        .collect();
    let warmup = Duration::from_secs_f64(cli.warmup);
    let measure = Duration::from_secs_f64(cli.duration);
    let window = || {
        let start = Instant::now() + warmup;
        load::Window {
            start,
            end: start + measure,
        }
    };
    eprintln!(
        "History alone: {} readers, {} s after {} s warm-up",
        cli.readers, cli.duration, cli.warmup
    );
    let alone = reads::read_pages(&readers, Ask::Page, newest, cli.read_rate, window()).await?;
    let floor_alone =
        reads::read_pages(&readers, Ask::NoOp, newest, cli.read_rate, window()).await?;
    eprintln!(
        "History beside {} msg/s of sends: {} s after {} s warm-up (load average {})",
        grouped(DELIVERY_TARGET_RATE),
        cli.duration,
        cli.warmup,
        load_average()
    );
    let live: Vec<Recipient> = users[2 * n..3 * n]
        .iter()
        .cloned()
        .map(Recipient::new)
        .collect();
    let config = LoadConfig {
        offered: Offered::OpenLoop {
            rate: DELIVERY_TARGET_RATE,
        },
        warmup,
        measure,
        body_len: cli.body,
        drain: Duration::from_secs_f64(cli.drain),
    };
    let probe = prober(server.pid(), machine.flushes.clone());
    // Half the window each: pages, then no-op calls at the same pace.
    let half = || {
        let w = window();
        let mid = w.start + (w.end - w.start) / 2;
        (
            load::Window {
                start: w.start,
                end: mid,
            },
            load::Window {
                start: mid,
                end: w.end,
            },
        )
    };
    let (pages_window, floor_window) = half();
    let beside = async {
        let pages =
            reads::read_pages(&readers, Ask::Page, newest, cli.read_rate, pages_window).await?;
        let floor =
            reads::read_pages(&readers, Ask::NoOp, newest, cli.read_rate, floor_window).await?;
        anyhow::Ok((pages, floor))
    };
    let (loaded, sends) = tokio::join!(
        beside,
        load::run_load(&users[..n], live, &config, seq, probe)
    );
    let ((loaded, floor_loaded), sends) = (loaded?, sends?.0);
    let rss = process::rss_of(server.pid());
    let took = server.stop(STOP_TIMEOUT)?;
    eprintln!("server stopped (SIGTERM) in {} ms", millis(took));
    print_reads(
        cli,
        filled.sent + backlogged.sent,
        &backlogs,
        [&alone, &floor_alone, &loaded, &floor_loaded],
        &sends,
        rss,
    );
    Ok(())
}

fn print_reads(
    cli: &Cli,
    stored: u64,
    backlogs: &[Backlog],
    [alone, floor_alone, loaded, floor_loaded]: [&ReadTally; 4],
    sends: &LoadResult,
    rss: Option<u64>,
) {
    println!(
        "## Reads over {} stored messages, after a restart",
        grouped(stored as f64)
    );
    println!();
    println!(
        "{} conversations of ~{} messages each, stored after the backlog; the server restarted \
         before reading and filled its body cache (default size) with the newest bodies, none \
         of the backlog's; the page cache was warm.",
        cli.fill_users,
        grouped((stored - cli.backlog) as f64 / cli.fill_users as f64)
    );
    println!();
    let mut table = Table::new(&["backlog read", "messages", "first event ms", "CaughtUp ms"]);
    for (i, b) in backlogs.iter().enumerate() {
        table.row(vec![
            if i == 0 {
                "1 (first after the restart)".to_owned()
            } else {
                (i + 1).to_string()
            },
            grouped(b.messages as f64),
            millis(b.first_event),
            millis(b.caught_up),
        ]);
    }
    println!("{table}");
    let mut table = Table::new(&[
        "paced calls",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "short pages",
        "errors",
    ]);
    let window = Duration::from_secs_f64(cli.duration).as_secs_f64();
    let beside = format!(
        "beside {} sends/s ({} offered)",
        grouped(sends.sends_per_sec()),
        grouped(DELIVERY_TARGET_RATE)
    );
    for (label, t, secs) in [
        ("History pages, alone".to_owned(), alone, window),
        ("no-op calls, alone".to_owned(), floor_alone, window),
        (format!("History pages, {beside}"), loaded, window / 2.0),
        (format!("no-op calls, {beside}"), floor_loaded, window / 2.0),
    ] {
        table.row(vec![
            label,
            grouped(t.pages() as f64 / secs),
            millis(t.at(0.5)),
            millis(t.at(0.99)),
            millis(t.at(0.999)),
            millis(Duration::from_nanos(t.latency.max())),
            grouped(t.short_pages as f64),
            grouped(t.errors as f64),
        ]);
    }
    println!("{table}");
    println!(
        "each page: the {} messages before a random id of the whole history, in one of the \
         stored conversations; sends in the loaded window: p99 {} ms, delivery p99 {} ms, {} \
         errors; server RSS at the end {} MiB",
        reads::PAGE,
        millis(sends.send_latency_at(0.99)),
        millis(sends.delivery_latency_at(0.99)),
        sends.sends.errors,
        rss.map_or("n/a".to_owned(), mib)
    );
    for t in [alone, floor_alone, loaded, floor_loaded] {
        if let Some(error) = &t.first_error {
            println!("first error of a paced call: {error}");
        }
    }
    println!(
        "no-op calls: Cluster.Status from the same readers at the same pace, which reads \
         nothing: what the network stack and scheduling alone cost at that pace."
    );
    println!();
    let verdict = |met: bool, what: String| {
        if met {
            "MET".to_owned()
        } else {
            format!("MISSED ({what})")
        }
    };
    let p99 = loaded.at(0.99);
    println!(
        "history target: p99 of a {}-message page at most {} ms beside {} msg/s of sends: p99 {} ms (no-op call p99 {} ms), {}",
        reads::PAGE,
        millis(HISTORY_P99_TARGET),
        grouped(DELIVERY_TARGET_RATE),
        millis(p99),
        millis(floor_loaded.at(0.99)),
        verdict(
            p99 <= HISTORY_P99_TARGET && loaded.errors == 0,
            format!(
                "{:.1}x the target, {} errors",
                p99.as_secs_f64() / HISTORY_P99_TARGET.as_secs_f64(),
                loaded.errors
            )
        )
    );
    let cold = backlogs[0].caught_up;
    let sized = if cli.backlog == BACKLOG_TARGET_MESSAGES {
        String::new()
    } else {
        format!(
            " (not the stated size: {} messages)",
            grouped(cli.backlog as f64)
        )
    };
    println!(
        "backlog target: CaughtUp within {} ms over {} messages: {} ms on the first read after the restart{sized}, {}",
        millis(BACKLOG_TARGET),
        grouped(BACKLOG_TARGET_MESSAGES as f64),
        millis(cold),
        verdict(
            cold <= BACKLOG_TARGET,
            format!(
                "{:.1}x the target",
                cold.as_secs_f64() / BACKLOG_TARGET.as_secs_f64()
            )
        )
    );
    println!();
}

/// The snapshots built while the log filled: how their size and build time
/// grew with it.
fn print_snapshot_builds(builds: &[SnapshotBuild]) {
    if builds.is_empty() {
        println!("no snapshot was built while the log filled");
        println!();
        return;
    }
    println!("snapshots built while the log filled, in order:");
    println!();
    let mut table = Table::new(&["snapshot", "size MiB", "build ms", "writes paused ms"]);
    for (i, b) in builds.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            mib(b.bytes),
            grouped(b.took_ms as f64),
            grouped(b.writes_paused_ms as f64),
        ]);
    }
    println!("{table}");
}

/// `--only groups`: the fan-out to one large group and the small groups
/// beside direct messages, on one server; then the memory of stored group
/// and direct messages, each on a fresh server.
async fn bench_groups(cli: &Cli, machine: &Machine, seq: &Arc<AtomicU64>) -> anyhow::Result<()> {
    let dir = data_dir(machine, "server-groups-")?;
    let outcome = group_load(cli, machine, dir.path(), seq).await;
    keep_if_asked_or_failed(cli, dir, outcome)?;
    let mut stored = Vec::new();
    for kind in [StoreKind::Group, StoreKind::Direct] {
        let dir = data_dir(machine, "server-groups-memory-")?;
        let outcome = store_and_weigh(cli, machine, dir.path(), kind, seq).await;
        let weighed = match outcome {
            Ok(weighed) => weighed,
            Err(e) => return keep_if_asked_or_failed(cli, dir, Err(e)),
        };
        keep_if_asked_or_failed(cli, dir, Ok(()))?;
        stored.push(weighed);
    }
    print_group_memory(cli, &stored);
    Ok(())
}

/// The fan-out phase, then small groups and direct messages at the same
/// offered rate, over the same members.
async fn group_load(
    cli: &Cli,
    machine: &Machine,
    dir: &Path,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let server = start_server(machine, dir, &[])?;
    let n = cli.group_members;
    let names: Vec<String> = (0..n).map(|i| format!("member-{i:04}")).collect();
    let started = Instant::now();
    let members = groups::create_members(server.addr, &names, SETUP_CONCURRENCY).await?;
    eprintln!(
        "created and logged in {n} accounts in {:.1} s (argon2, not measured)",
        started.elapsed().as_secs_f64()
    );
    let large = groups::create_groups(&members, 1, n).await?.remove(0);
    let routes: Vec<Route> = (0..cli.group_senders)
        .map(|from| Route {
            from,
            to: Peer::Conversation(large.id),
        })
        .collect();
    let phase = |rate: f64, measure: f64, streams_per_message: usize| PhaseConfig {
        rate,
        warmup: Duration::from_secs_f64(cli.warmup),
        measure: Duration::from_secs_f64(measure),
        drain: Duration::from_secs_f64(cli.drain),
        body_len: cli.body,
        streams_per_message: u32::try_from(streams_per_message).unwrap_or(u32::MAX),
    };
    eprintln!(
        "fan-out: {} senders, {} msg/s into a group of {n}, {} s after {} s warm-up (load average {})",
        cli.group_senders,
        grouped(cli.group_rate),
        cli.group_duration,
        cli.warmup,
        load_average()
    );
    let probe = || prober(server.pid(), machine.flushes.clone());
    let (fanout, members) = groups::run_phase(
        members,
        &routes,
        &phase(cli.group_rate, cli.group_duration, n),
        seq,
        probe(),
    )
    .await?;
    report_phase("fan-out", &fanout);
    let fanout_rss = process::rss_of(server.pid());

    let size = cli.small_group_size;
    let small = groups::create_groups(&members, cli.small_groups, size).await?;
    // Message k goes to group k mod G, from its member (k / G) mod size.
    let group_routes: Vec<Route> = (0..size)
        .flat_map(|j| {
            small.iter().map(move |g| Route {
                from: g.members[j],
                to: Peer::Conversation(g.id),
            })
        })
        .collect();
    let direct_routes: Vec<Route> = (0..n)
        .map(|from| Route {
            from,
            to: Peer::Account(members[(from + 1) % n].account_id),
        })
        .collect();
    let mut compared = Vec::new();
    let mut members = members;
    for (kind, routes, streams) in [
        ("groups", &group_routes, size),
        ("direct", &direct_routes, 2),
    ] {
        eprintln!(
            "{kind}: {} msg/s, {} s after {} s warm-up (load average {})",
            grouped(cli.small_group_rate),
            cli.duration,
            cli.warmup,
            load_average()
        );
        let (result, back) = groups::run_phase(
            members,
            routes,
            &phase(cli.small_group_rate, cli.duration, streams),
            seq,
            probe(),
        )
        .await?;
        members = back;
        report_phase(kind, &result);
        compared.push(result);
    }
    let rss = process::rss_of(server.pid());
    drop(members);
    let took = server.stop(STOP_TIMEOUT)?;
    eprintln!("server stopped (SIGTERM) in {} ms", millis(took));
    print_fanout(cli, &fanout, fanout_rss);
    print_small_groups(cli, &compared, rss);
    Ok(())
}

/// One line on standard error as a phase ends.
fn report_phase(label: &str, r: &PhaseResult) {
    eprintln!(
        "  {label}: {} sends/s, send p99 {} ms, last member p99 {} ms, {} arrivals/s, \
         {} errors, {} incomplete, {} resubscribes (load average {})",
        grouped(r.sends_per_sec()),
        millis(r.send_at(0.99)),
        millis(r.last_member_at(0.99)),
        grouped(r.arrivals_per_sec()),
        r.sends.errors,
        r.incomplete,
        r.resubscribes,
        load_average()
    );
}

fn cores(r: &PhaseResult, cpu: fn(&Usage) -> Option<Duration>) -> String {
    r.usage
        .as_ref()
        .and_then(|u| u.cores(cpu(u)))
        .map_or("n/a".to_owned(), |c| format!("{c:.2}"))
}

/// Failures and undelivered messages of a phase, if any.
fn print_phase_faults(label: &str, r: &PhaseResult) {
    if let Some(error) = &r.sends.first_error {
        println!("{label}: first send error: {error}");
    }
    if r.incomplete > 0 {
        println!(
            "{label}: {} acknowledged messages had NOT reached every member's stream within the \
             drain time",
            grouped(r.incomplete as f64)
        );
    }
}

fn print_fanout(cli: &Cli, r: &PhaseResult, rss: Option<u64>) {
    let members = r.config.streams_per_message;
    println!(
        "## Group fan-out: {} members, each with a stream ({} s after {} s warm-up)",
        grouped(f64::from(members)),
        r.window.as_secs_f64(),
        r.config.warmup.as_secs_f64()
    );
    println!();
    let mut table = Table::new(&[
        "offered msg/s",
        "senders",
        "sends/s",
        "send p99 ms",
        "last member p50 ms",
        "last member p99 ms",
        "last member max ms",
        "member p99 ms",
        "arrivals/s",
        "errors",
        "incomplete",
        "resubscribes",
        "server CPU",
        "bench CPU",
    ]);
    table.row(vec![
        grouped(r.config.rate),
        cli.group_senders.to_string(),
        grouped(r.sends_per_sec()),
        millis(r.send_at(0.99)),
        millis(r.last_member_at(0.5)),
        millis(r.last_member_at(0.99)),
        millis(r.last_member_max()),
        millis(r.delivery_at(0.99)),
        grouped(r.arrivals_per_sec()),
        grouped(r.sends.errors as f64),
        grouped(r.incomplete as f64),
        grouped(r.resubscribes as f64),
        cores(r, |u| u.server_cpu),
        cores(r, |u| u.bench_cpu),
    ]);
    println!("{table}");
    println!(
        "last member: from a send's due time to its arrival on the last of the {} streams \
         (the sender's own included), per message sent in the window; member: the same to \
         each arrival on another member's stream; arrivals/s: on all streams, in the window. \
         {} messages taken in the window, {} skipped; server RSS at the end {} MiB.",
        grouped(f64::from(members)),
        grouped(r.sends.acked_started as f64),
        grouped(r.sends.skipped as f64),
        rss.map_or("n/a".to_owned(), mib)
    );
    print_phase_faults("fan-out", r);
    println!();
    let p99 = r.last_member_at(0.99);
    let stated = members as usize == FANOUT_TARGET_MEMBERS
        && (r.config.rate - FANOUT_TARGET_RATE).abs() < 0.5;
    let verdict = if !stated {
        "not the stated configuration".to_owned()
    } else if p99 <= FANOUT_P99_TARGET && r.incomplete == 0 {
        "MET".to_owned()
    } else {
        format!(
            "MISSED ({:.1}x the target, {} incomplete)",
            p99.as_secs_f64() / FANOUT_P99_TARGET.as_secs_f64(),
            r.incomplete
        )
    };
    println!(
        "fan-out target: last member p99 at most {} ms, {} members at {} msg/s: {} ms, {verdict}",
        millis(FANOUT_P99_TARGET),
        grouped(FANOUT_TARGET_MEMBERS as f64),
        grouped(FANOUT_TARGET_RATE),
        millis(p99)
    );
    println!();
}

fn print_small_groups(cli: &Cli, results: &[PhaseResult], rss: Option<u64>) {
    let [groups, direct] = results else {
        return;
    };
    println!(
        "## {} groups of {} beside direct messages, {} msg/s offered ({} s after {} s warm-up)",
        grouped(cli.small_groups as f64),
        cli.small_group_size,
        grouped(cli.small_group_rate),
        groups.window.as_secs_f64(),
        groups.config.warmup.as_secs_f64()
    );
    println!();
    let mut table = Table::new(&[
        "conversations",
        "sends/s",
        "send p50 ms",
        "send p99 ms",
        "delivery p50 ms",
        "delivery p99 ms",
        "delivery max ms",
        "last member p99 ms",
        "arrivals/s",
        "errors",
        "incomplete",
        "resubscribes",
        "server CPU",
        "bench CPU",
    ]);
    let labels = [
        format!(
            "{} groups of {}",
            grouped(cli.small_groups as f64),
            cli.small_group_size
        ),
        format!("{} direct", grouped(cli.group_members as f64)),
    ];
    for (label, r) in labels.iter().zip([groups, direct]) {
        table.row(vec![
            label.clone(),
            grouped(r.sends_per_sec()),
            millis(r.send_at(0.5)),
            millis(r.send_at(0.99)),
            millis(r.delivery_at(0.5)),
            millis(r.delivery_at(0.99)),
            millis(Duration::from_nanos(r.delivery.max())),
            millis(r.last_member_at(0.99)),
            grouped(r.arrivals_per_sec()),
            grouped(r.sends.errors as f64),
            grouped(r.incomplete as f64),
            grouped(r.resubscribes as f64),
            cores(r, |u| u.server_cpu),
            cores(r, |u| u.bench_cpu),
        ]);
    }
    println!("{table}");
    println!(
        "open loop, from the {} members' chat-client connections, every member's stream open. \
         groups: message k to group k mod {}, from its member (k / {}) mod {}; direct: member \
         i to member i + 1. delivery: from the send's due time to each arrival on a recipient's \
         stream (not the sender's own); last member: to the last stream of the conversation, \
         the sender's own included; arrivals/s: on all streams. Server RSS at the end {} MiB.",
        grouped(cli.group_members as f64),
        grouped(cli.small_groups as f64),
        grouped(cli.small_groups as f64),
        cli.small_group_size,
        rss.map_or("n/a".to_owned(), mib)
    );
    print_phase_faults("groups", groups);
    print_phase_faults("direct", direct);
    println!();
}

/// Where the weighed messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    /// One group of `--group-members`, all offline.
    Group,
    /// Each writer to the same offline account.
    Direct,
}

/// What a server's memory and disk grew by as it stored messages.
#[derive(Debug)]
struct Weighed {
    kind: StoreKind,
    /// The sends weighed while serving.
    stored: StoreResult,
    /// Sends made before them, so that what the first sends leave for good
    /// (connection and batching buffers) is in the serving baseline.
    unweighed: u64,
    /// RSS of the server restarted over the setup, before any send.
    rss_fresh: u64,
    /// RSS of the same server after the unweighed sends.
    rss_before: u64,
    /// RSS of the same server after the weighed ones.
    rss_serving: u64,
    /// RSS of the server restarted over all of them.
    rss_restarted: u64,
    disk_before: u64,
    disk_after: u64,
}

impl Weighed {
    /// RSS growth per weighed message while serving.
    fn serving_per_message(&self) -> f64 {
        per_message(self.rss_before, self.rss_serving, self.stored.sent)
    }

    /// RSS growth per stored message from restart to restart.
    fn restarted_per_message(&self) -> f64 {
        per_message(
            self.rss_fresh,
            self.rss_restarted,
            self.stored.sent + self.unweighed,
        )
    }

    fn disk_per_message(&self) -> f64 {
        per_message(self.disk_before, self.disk_after, self.stored.sent)
    }
}

/// Growth per message; negative if the server gave memory back.
fn per_message(before: u64, after: u64, messages: u64) -> f64 {
    (after as f64 - before as f64) / messages.max(1) as f64
}

/// On a fresh server: the same `--group-members` accounts whatever the
/// kind, and a group of them all for [`StoreKind::Group`]. Then the server
/// is restarted (SIGTERM, which snapshots), so that the baseline holds no
/// memory of the setup's password hashes, and `--store-messages` sends by
/// [`STORE_WRITERS`] writers are weighed (after a tenth as many unweighed
/// ones): the server's RSS before and after them, and from its fresh start
/// to a second restart, which leaves out what the allocator kept from the
/// sends.
async fn store_and_weigh(
    cli: &Cli,
    machine: &Machine,
    dir: &Path,
    kind: StoreKind,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<Weighed> {
    let args = [
        "--snapshot-every",
        STORE_SNAPSHOT_EVERY,
        "--body-cache",
        STORE_BODY_CACHE,
    ];
    let server = start_server(machine, dir, &args)?;
    let started = Instant::now();
    let writer_names: Vec<String> = (0..STORE_WRITERS).map(|i| format!("writer-{i}")).collect();
    let mut writers: Vec<Member> =
        groups::create_members(server.addr, &writer_names, SETUP_CONCURRENCY).await?;
    let other_names: Vec<String> = (STORE_WRITERS..cli.group_members)
        .map(|i| format!("member-{i:04}"))
        .collect();
    let others = groups::create_accounts(server.addr, &other_names, SETUP_CONCURRENCY).await?;
    eprintln!(
        "{kind:?} store: created {} accounts in {:.1} s (argon2, not measured)",
        cli.group_members,
        started.elapsed().as_secs_f64()
    );
    let to = match kind {
        StoreKind::Group => {
            let mut added: Vec<_> = writers[1..].iter().map(|w| w.account_id).collect();
            added.extend(&others);
            let id = writers[0]
                .client
                .create_group(&writers[0].token, "bench store", &added)
                .await
                .context("create the group to store into")?;
            Peer::Conversation(id)
        }
        StoreKind::Direct => Peer::Account(others[0]),
    };
    let routes: Vec<Route> = (0..STORE_WRITERS).map(|from| Route { from, to }).collect();

    server.stop(STOP_TIMEOUT)?;
    let server = start_server(machine, dir, &args)?;
    // Sessions survive a restart; connections do not.
    for writer in &mut writers {
        writer.client = groups::connect(server.addr).await?;
    }
    tokio::time::sleep(STORE_SETTLE).await;
    let rss_fresh = process::rss_of(server.pid()).context("read the server's VmRSS")?;
    let store = |messages| {
        groups::store(
            &writers,
            &routes,
            messages,
            cli.fill_in_flight,
            cli.body,
            seq,
        )
    };
    let unweighed = cli.store_messages / STORE_UNWEIGHED_SHARE;
    eprintln!(
        "{kind:?} store: {} + {} messages, {STORE_WRITERS} writers x {} in flight (load average {})",
        grouped(unweighed as f64),
        grouped(cli.store_messages as f64),
        cli.fill_in_flight,
        load_average()
    );
    let unweighed = store(unweighed).await?.sent;
    tokio::time::sleep(STORE_SETTLE).await;
    let rss_before = process::rss_of(server.pid()).context("read the server's VmRSS")?;
    let disk_before = dir_bytes(dir);
    let stored = store(cli.store_messages).await?;
    tokio::time::sleep(STORE_SETTLE).await;
    let rss_serving = process::rss_of(server.pid()).context("read the server's VmRSS")?;
    drop(writers);
    let took = server.stop(STOP_TIMEOUT)?;
    let disk_after = dir_bytes(dir);
    let server = start_server(machine, dir, &args)?;
    tokio::time::sleep(STORE_SETTLE).await;
    let rss_restarted = process::rss_of(server.pid()).context("read the server's VmRSS")?;
    server.stop(STOP_TIMEOUT)?;
    eprintln!(
        "  stored {} in {:.1} s ({} sends/s, {} failed), RSS {} -> {} MiB, {} MiB after a \
         restart; the stop after the store took {} ms",
        grouped(stored.sent as f64),
        stored.elapsed.as_secs_f64(),
        grouped(stored.sends_per_sec()),
        stored.errors,
        mib(rss_before),
        mib(rss_serving),
        mib(rss_restarted),
        millis(took)
    );
    Ok(Weighed {
        kind,
        stored,
        unweighed,
        rss_fresh,
        rss_before,
        rss_serving,
        rss_restarted,
        disk_before,
        disk_after,
    })
}

fn print_group_memory(cli: &Cli, weighed: &[Weighed]) {
    println!(
        "## Memory per stored message: one group of {} against direct messages",
        grouped(cli.group_members as f64)
    );
    println!();
    let mut table = Table::new(&[
        "stored into",
        "messages",
        "sends/s",
        "serving: RSS before MiB",
        "RSS after MiB",
        "B per message",
        "restarted: RSS before MiB",
        "RSS after MiB",
        "B per message",
        "disk B per message",
        "failed sends",
    ]);
    for w in weighed {
        table.row(vec![
            match w.kind {
                StoreKind::Group => {
                    format!("1 group of {} (offline)", grouped(cli.group_members as f64))
                }
                StoreKind::Direct => format!("{STORE_WRITERS} direct conversations"),
            },
            grouped(w.stored.sent as f64),
            grouped(w.stored.sends_per_sec()),
            mib(w.rss_before),
            mib(w.rss_serving),
            format!("{:.0}", w.serving_per_message()),
            mib(w.rss_fresh),
            mib(w.rss_restarted),
            format!("{:.0}", w.restarted_per_message()),
            format!("{:.0}", w.disk_per_message()),
            grouped(w.stored.errors as f64),
        ]);
    }
    println!("{table}");
    println!(
        "each on a fresh server holding the same {} accounts (the group's members; the \
         direct messages go to one of them), nobody subscribed, {STORE_WRITERS} writers x {} \
         sends in flight, {}-byte bodies; --snapshot-every {STORE_SNAPSHOT_EVERY} (no snapshot \
         build while storing) and --body-cache {STORE_BODY_CACHE} (no bodies in memory: the \
         default 64 MiB cache would be most of the growth). Every RSS read {} s after a start \
         or the last send. serving: the server restarted over the setup (no argon2 memory \
         left), after {} unweighed sends, then after the weighed ones. restarted: that server \
         before any send, and the server restarted over all of them (without what the \
         allocator kept from the sends).",
        grouped(cli.group_members as f64),
        cli.fill_in_flight,
        cli.body,
        STORE_SETTLE.as_secs(),
        grouped((cli.store_messages / STORE_UNWEIGHED_SHARE) as f64)
    );
    for w in weighed {
        if let Some(error) = &w.stored.first_error {
            println!("{:?}: first send error: {error}", w.kind);
        }
    }
    println!();
}
