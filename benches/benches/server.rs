//! `cargo bench -p chat-benches --bench server`: the real `chat-server`
//! binary under load from many gRPC clients (sends per second, send and
//! delivery latency), and its restart time over a log of a million
//! messages. Options after `--`, or `BENCH_*` environment variables;
//! `--quick` for a run of well under a minute.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chat_benches::disk::{FlushCounter, load_average};
use chat_benches::machine::{Machine, MachineArgs};
use chat_benches::server::load::{
    self, FillConfig, LoadConfig, LoadResult, Offered, Recipient, STAMP_LEN, User,
};
use chat_benches::server::process::{self, ReplayReport, ServerProcess};
use chat_benches::server::{Probe, Usage};
use chat_benches::{Table, grouped, millis, percent};
use chat_proto::chat_client::ChatClient;
use chat_proto::cluster_client::ClusterClient;
use chat_proto::{HistoryRequest, StatusRequest};
use clap::{Parser, ValueEnum};

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
    let seq = load::sequence();
    if cli.only == Part::Restart {
        let dir = data_dir(machine, "server-restart-")?;
        let server = start_server(machine, dir.path())?;
        let (senders, recipients) = make_users(server.addr, cli.fill_users, cli.fill_users).await?;
        let names = names_of(&recipients);
        let restarted =
            bench_restart(cli, machine, dir.path(), server, &senders, &names, 0, &seq).await;
        return keep_if_asked_or_failed(cli, dir, restarted);
    }

    let dir = data_dir(machine, "server-load-")?;
    let server = start_server(machine, dir.path())?;
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

fn start_server(machine: &Machine, dir: &Path) -> anyhow::Result<ServerProcess> {
    let server = ServerProcess::start(&machine.binary, dir, START_TIMEOUT)?;
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
    if cli.only == Part::Restart {
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
            millis(r.stopped),
        ]);
    }
    println!("{table}");
    if let Some(report) = runs.last().and_then(|r| r.report.as_ref()) {
        println!("server's line: `{}`", report.line);
    }
    println!();

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
    let stopped = server.stop(STOP_TIMEOUT)?;
    Ok(Restart {
        ready,
        answered,
        report,
        last_log_index: status.last_log_index,
        stopped,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}
