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
use chat_benches::server::process::{self, ACCOUNT_LIMIT_FLAG, ReplayReport, ServerProcess};
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
    /// Sends in flight per sender while filling the log for the restart.
    #[arg(long, default_value_t = 4)]
    fill_in_flight: usize,
    /// Senders (and recipients) made for `--only restart`.
    #[arg(long, default_value_t = 16)]
    fill_users: usize,
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
    /// SIGTERM to exit.
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
    let took = server.stop(STOP_TIMEOUT)?;
    eprintln!("server stopped (SIGTERM) in {} ms", millis(took));

    let messages = already + filled.sent;
    let log_bytes = dir_bytes(dir);
    let mut runs = Vec::new();
    for run in 1..=cli.restart_runs {
        let restart = match restart_once(machine, dir, &senders[0], &recipients[0]).await {
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
        "{filling}; data directory {:.1} MiB; stopped with SIGTERM in {} ms; page cache warm",
        log_bytes as f64 / (1024.0 * 1024.0),
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
    let verdict = if messages < RESTART_TARGET_MESSAGES {
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
    let stopped = server.stop(STOP_TIMEOUT)?;
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
