//! `cargo bench -p chat-benches --bench server`: the real `chat-server`
//! binary under load from many gRPC clients (sends per second, send and
//! delivery latency), its restart time over a log of a million messages,
//! and (`--only abuse`) what silent connections and a `CreateAccount`
//! flood cost a well-behaved client. Options after `--`, or `BENCH_*`
//! environment variables; `--quick` for a run of well under a minute.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chat_benches::disk::{FlushCounter, load_average};
use chat_benches::machine::{Machine, MachineArgs};
use chat_benches::server::abuse;
use chat_benches::server::load::{
    self, FillConfig, LoadConfig, LoadResult, Offered, Recipient, STAMP_LEN, User,
};
use chat_benches::server::process::{
    self, ACCOUNT_LIMIT_FLAG, ReplayReport, ServerProcess, SnapshotBuild,
};
use chat_benches::server::reads::{self, Ask, Backlog, ReadTally, Reader};
use chat_benches::server::{Probe, Usage};
use chat_benches::{Table, grouped, millis, percent};
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
    /// A check that everything runs: 8 senders and subscribers, 2 s phases
    /// (the latency one at 1,000 msg/s), a 10,000-message restart, once.
    /// Overrides those options.
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

    let machine = Machine::find(&cli.machine)?;
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
    if cli.only == Part::Reads {
        let dir = data_dir(machine, "server-reads-")?;
        let outcome = bench_reads(cli, machine, dir.path(), &seq).await;
        return keep_if_asked_or_failed(cli, dir, outcome);
    }
    if cli.only == Part::Restart {
        let dir = data_dir(machine, "server-restart-")?;
        let server = start_server(machine, dir.path(), &[])?;
        let (senders, recipients) = make_users(server.addr, cli.fill_users, cli.fill_users).await?;
        let names = names_of(&recipients);
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
    } else if cli.only == Part::Restart {
        println!(
            "users: {n} senders, {n} recipients (no streams), one connection each; \
             {}-byte bodies; every send durable",
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
    last_log_index: u64,
    /// Server RSS once it answered.
    rss: Option<u64>,
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
    // Memory while serving: the server has just taken every message.
    let serving_rss = process::rss_of(server.pid());
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
        let restart = match restart_once(machine, dir, &senders[0], &recipients[0], cli.stop).await
        {
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
        "RSS after restart MiB",
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
            r.rss.map_or("n/a".to_owned(), mib),
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
        if let (Some(serving), Some(&most)) = (serving_rss, rss.last()) {
            let median = rss[rss.len() / 2];
            println!(
                "memory target at {} messages: RSS at most {} MiB while serving and after a restart: {} and {} MiB (largest), {}; serving at most {:.2}x restarted: {:.2}x, {}",
                grouped(LARGE_TARGET_MESSAGES as f64),
                mib(LARGE_RSS_TARGET),
                mib(serving),
                mib(most),
                verdict(serving <= LARGE_RSS_TARGET && most <= LARGE_RSS_TARGET),
                LARGE_RSS_RATIO_TARGET,
                serving as f64 / median as f64,
                verdict(serving as f64 <= LARGE_RSS_RATIO_TARGET * median as f64)
            );
        }
    }
    println!();
    Ok(())
}

/// Starts the server over `dir`, times it to `listening on` and to its
/// first answer, and stops it again.
async fn restart_once(
    machine: &Machine,
    dir: &Path,
    user: &User,
    peer: &str,
    stop: Stop,
) -> anyhow::Result<Restart> {
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
    // The line is logged before `listening on`; its reader thread may
    // trail the stdout one by a moment.
    let mut report = server.replay_report();
    let deadline = Instant::now() + Duration::from_secs(2);
    while report.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        report = server.replay_report();
    }
    let ready = server.ready_after;
    let rss = process::rss_of(server.pid());
    let stopped = stop.stop(server)?;
    Ok(Restart {
        ready,
        answered,
        report,
        last_log_index: status.last_log_index,
        rss,
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

/// `--only reads`: stores `read_messages` messages in `fill_users`
/// conversations and a `backlog`-message backlog for one more user,
/// restarts the server (its body cache cold, the page cache warm), then
/// times the backlog read from the start, and History pages at random
/// places, first alone and then beside open-loop sends at the target rate.
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
        body_len: cli.body,
        progress_every: Duration::from_secs(10),
    };
    eprintln!(
        "storing {} messages in {n} conversations, then {} for the backlog reader",
        grouped(cli.read_messages as f64),
        grouped(cli.backlog as f64)
    );
    let recipients = names_of(&users[n..2 * n]);
    let filled = load::fill(
        &users[..n],
        &recipients,
        &fill(cli.read_messages),
        seq,
        progress("history"),
    )
    .await?;
    let backlogged = load::fill(
        &users[..n],
        &names[3 * n..],
        &fill(cli.backlog),
        seq,
        progress("backlog"),
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
        "{} conversations of ~{} messages each; the server restarted before reading, so its \
         body cache (default size) started cold; the page cache was warm.",
        cli.fill_users,
        grouped((stored - cli.backlog) as f64 / cli.fill_users as f64)
    );
    println!();
    let mut table = Table::new(&["backlog read", "messages", "first event ms", "CaughtUp ms"]);
    for (i, b) in backlogs.iter().enumerate() {
        table.row(vec![
            if i == 0 {
                "1 (cold cache)".to_owned()
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
        "backlog target: CaughtUp within {} ms over {} messages: {} ms with the cache cold{sized}, {}",
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
    let mut table = Table::new(&["snapshot", "size MiB", "build ms", "how"]);
    for (i, b) in builds.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            mib(b.bytes),
            grouped(b.took_ms as f64),
            if b.by_replay {
                "by replay, writes went on".to_owned()
            } else {
                "from the live state, writes paused".to_owned()
            },
        ]);
    }
    println!("{table}");
}
