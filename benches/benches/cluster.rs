//! `cargo bench -p chat-benches --bench cluster`: three `chat-server`
//! processes as one Raft cluster on loopback. Durable sends per second from
//! 64 senders spread over the servers (and, for comparison, all at the
//! leader), then the time from SIGKILLing the leader under load to the next
//! message the cluster acknowledges, kill after kill, and how soon a
//! contact on another server hears that someone came online or went
//! offline. Options after `--`,
//! or `BENCH_*` environment variables; `--quick` for a short smoke run.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chat_benches::cluster::Cluster;
use chat_benches::cluster::load::{self as cluster_load, RoamingSender, SteadyLoad};
use chat_benches::disk::{FlushCounter, load_average};
use chat_benches::machine::{Machine, MachineArgs};
use chat_benches::server::load::{
    self, LoadConfig, LoadResult, Offered, Recipient, STAMP_LEN, User,
};
use chat_benches::server::process;
use chat_benches::server::{Probe, Usage};
use chat_benches::{Table, grouped, millis, percent};
use chat_proto::Role;
use clap::{Parser, ValueEnum};
use tokio::task::JoinSet;

/// Durable sends per second that 64 closed-loop senders must get
/// acknowledged from the cluster.
const THROUGHPUT_TARGET: f64 = 20_000.0;
/// The sender count the throughput target is stated for.
const THROUGHPUT_TARGET_SENDERS: usize = 64;
/// From SIGKILLing the leader to the first acknowledged message, p99.
const FAILOVER_P99_TARGET: Duration = Duration::from_secs(1);

/// Servers in the cluster.
const CLUSTER_SIZE: usize = 3;
/// Longest body the server accepts (16 KiB).
const MAX_BODY: usize = 16 * 1024;
/// Accounts created at once per server during set-up (argon2, 2 cores).
const SETUP_CONCURRENCY: usize = 2;
/// How long a member's start-up (with its replay) may take.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a stop (SIGTERM to exit) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the cluster may take to agree on a leader between kills.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A kill with no fresh acknowledgement within this is a failed run.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted member may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Between two rounds of Status calls while waiting for the new leader.
const ELECTION_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Parser)]
#[command(about = "Benchmarks a 3-server chat-server cluster: throughput, failover")]
struct Cli {
    /// Sending users in the throughput phases, each logged in on its own
    /// connection.
    #[arg(long, env = "BENCH_SENDERS", default_value_t = 64)]
    senders: usize,
    /// Receiving users with a live Subscribe stream, spread over the
    /// servers like the senders; sender i writes to recipient i mod M.
    /// 0: no streams (the senders write to one recipient that is offline).
    #[arg(long, env = "BENCH_SUBSCRIBERS", default_value_t = 64)]
    subscribers: usize,
    /// Bytes per message body (at least 32: a sequence number and a
    /// timestamp start every body).
    #[arg(long, env = "BENCH_BODY", default_value_t = 100)]
    body: usize,
    /// Measured seconds per throughput phase.
    #[arg(long, env = "BENCH_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of load before each window, and before the
    /// first kill.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Sends in flight per sender in the throughput phases.
    #[arg(long, env = "BENCH_IN_FLIGHT", default_value_t = 1)]
    in_flight: usize,
    /// Where the throughput senders send: `spread` (round robin over the
    /// servers; followers forward to the leader) or `leader` (all to the
    /// leader). A comma-separated list runs one phase each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Spread, Target::Leader])]
    to: Vec<Target>,
    /// Seconds to wait for the deliveries after a phase's last send.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Leaders SIGKILLed, one after the other, each restarted and caught
    /// up before the next.
    #[arg(long, env = "BENCH_KILLS", default_value_t = 20)]
    kills: usize,
    /// Senders of the steady load during the kills, spread over the
    /// servers, each moving to the next server when a send fails.
    #[arg(long, default_value_t = 8)]
    failover_senders: usize,
    /// Seconds of steady load after a restarted member caught up, before
    /// the next kill.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Times a user opens a stream on one server and closes it while a
    /// contact on another server waits to hear each.
    #[arg(long, default_value_t = 20)]
    presence_rounds: usize,
    /// A check that everything runs: 3 s throughput windows after 0.5 s
    /// warm-up, 3 kills, 0.5 s settling. Overrides those options.
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::BoolishValueParser::new())]
    quick: bool,
    /// Which part to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    #[command(flatten)]
    machine: MachineArgs,
    /// Keep the data directories (their path is printed) and each
    /// member's standard error beside them; both are also kept when the
    /// run fails.
    #[arg(long)]
    keep_data: bool,
    /// `RUST_LOG` of the servers, e.g. `info,openraft=info` with
    /// `--keep-data` to see how each election went. It must keep the
    /// server's own info lines.
    #[arg(long, env = "BENCH_SERVER_LOG", default_value = process::SERVER_LOG_FILTER)]
    server_log: String,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Sender i talks to server i mod 3.
    Spread,
    /// Every sender talks to the leader.
    Leader,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Spread => "spread over the 3 servers",
            Target::Leader => "all at the leader",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Throughput, then failover on the same cluster.
    All,
    Throughput,
    Failover,
    /// Only the presence rounds.
    Presence,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.duration = 3.0;
        cli.warmup = 0.5;
        cli.drain = 5.0;
        cli.kills = 3;
        cli.settle = 0.5;
        cli.presence_rounds = 3;
    }
    ensure!(
        (STAMP_LEN..=MAX_BODY).contains(&cli.body),
        "--body must be {STAMP_LEN} to {MAX_BODY} bytes"
    );
    ensure!(
        cli.senders > 0 && cli.failover_senders > 0 && cli.in_flight > 0,
        "--senders, --failover-senders and --in-flight must be at least 1"
    );
    ensure!(
        cli.duration > 0.0 && cli.warmup >= 0.0 && cli.drain >= 0.0 && cli.settle >= 0.0,
        "durations must be positive"
    );
    ensure!(cli.kills > 0, "--kills must be at least 1");
    ensure!(!cli.to.is_empty(), "--to needs spread, leader or both");

    let machine = Machine::find(&cli.machine)?;
    print_machine(&cli, &machine);
    machine.run(run(&cli, &machine))
}

async fn run(cli: &Cli, machine: &Machine) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("cluster-")
        .tempdir_in(&machine.root.path)
        .context("cannot create the data directory")?;
    // The cluster is gone (its processes killed) when this returns, before
    // the directory is removed.
    let outcome = bench_cluster(cli, machine, dir.path()).await;
    if cli.keep_data || outcome.is_err() {
        println!("data directories kept: {}", dir.keep().display());
        println!();
    }
    outcome
}

/// The users of a run, each logged in through the server it talks to.
struct Accounts {
    /// The throughput senders; sender i on server i mod 3.
    senders: Vec<User>,
    /// Their recipients, spread the same way.
    recipients: Vec<User>,
    /// The failover senders, spread the same way (their home server).
    roamers: Vec<User>,
}

async fn bench_cluster(cli: &Cli, machine: &Machine, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(
        &machine.binary,
        dir,
        CLUSTER_SIZE,
        &cli.server_log,
        START_TIMEOUT,
    )
    .await?;
    let leader = cluster.leader(LEADER_TIMEOUT).await?;
    for m in &cluster.members {
        eprintln!(
            "member {} pid {} listening on {} after {} ms, data in {}",
            m.id,
            m.pid().unwrap_or(0),
            m.addr,
            millis(m.ready_after().unwrap_or_default()),
            m.dir.display()
        );
    }
    eprintln!(
        "cluster formed in {} ms, leader: member {leader}",
        millis(started.elapsed())
    );

    let outcome = measure(cli, machine, &mut cluster).await;
    if cli.keep_data || outcome.is_err() {
        match cluster.save_stderr(dir) {
            Ok(()) => println!(
                "the members' standard error is in {}/node<ID>.stderr",
                dir.display()
            ),
            Err(e) => println!("cannot save the members' standard error: {e:#}"),
        }
    }
    outcome?;
    let stopped = tokio::task::block_in_place(|| cluster.stop(STOP_TIMEOUT))?;
    eprintln!(
        "members stopped (SIGTERM) in {} ms",
        stopped
            .iter()
            .map(|(id, took)| format!("{id}: {}", millis(*took)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Both parts, as asked, on the running cluster.
async fn measure(cli: &Cli, machine: &Machine, cluster: &mut Cluster) -> anyhow::Result<()> {
    let accounts = make_accounts(cli, cluster).await?;
    let seq = load::sequence();
    if matches!(cli.only, Part::All | Part::Throughput) {
        let phases = bench_throughput(cli, machine, cluster, &accounts, &seq).await?;
        print_throughput(cli, &phases);
    }
    if matches!(cli.only, Part::All | Part::Presence) {
        let rounds = bench_presence(cli, &accounts).await?;
        print_presence(&rounds);
    }
    if matches!(cli.only, Part::All | Part::Failover) {
        let kills = bench_failover(cli, cluster, &accounts, &seq).await?;
        print_failover(cli, &kills);
    }
    Ok(())
}

async fn make_accounts(cli: &Cli, cluster: &Cluster) -> anyhow::Result<Accounts> {
    let started = Instant::now();
    let names = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
    };
    let throughput_senders = if matches!(cli.only, Part::All | Part::Throughput) {
        cli.senders
    } else {
        0
    };
    let senders = create_spread(cluster, names("sender", throughput_senders)).await?;
    let recipients = create_spread(cluster, names("recipient", cli.subscribers.max(1))).await?;
    let roamers = create_spread(cluster, names("failover", cli.failover_senders)).await?;
    // A session opened through one member must be known on every member
    // before it is used on another.
    cluster.wait_all_applied(LEADER_TIMEOUT).await?;
    eprintln!(
        "created and logged in {} accounts in {:.1} s (argon2, not measured)",
        senders.len() + recipients.len() + roamers.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Accounts {
        senders,
        recipients,
        roamers,
    })
}

/// Creates and logs in `names`, user i through (and connected to) server
/// i mod 3; the servers hash passwords in parallel.
async fn create_spread(cluster: &Cluster, names: Vec<String>) -> anyhow::Result<Vec<User>> {
    let addrs = cluster.addrs();
    let mut tasks = JoinSet::new();
    for (k, addr) in addrs.iter().copied().enumerate() {
        let group: Vec<String> = names.iter().skip(k).step_by(addrs.len()).cloned().collect();
        tasks.spawn(async move {
            let users = load::create_users(addr, &group, SETUP_CONCURRENCY).await?;
            anyhow::Ok((k, users))
        });
    }
    let mut groups = vec![Vec::new(); addrs.len()];
    while let Some(done) = tasks.join_next().await {
        let (k, users) = done??;
        groups[k] = users;
    }
    let mut groups: Vec<_> = groups.into_iter().map(Vec::into_iter).collect();
    let users = (0..names.len())
        .map(|i| groups[i % addrs.len()].next().expect("one user per name"))
        .collect();
    Ok(users)
}

/// One throughput phase.
struct Phase {
    target: Target,
    leader: u64,
    /// The leader's term before the phase and (leader, term) after it: a
    /// change means an election during the phase.
    term: u64,
    after: Option<(u64, u64)>,
    result: LoadResult,
    /// Each member's CPU over the window, in cores.
    member_cores: Vec<(u64, Option<f64>)>,
    /// The whole machine's busy CPU over the window, in cores: the bench
    /// and the servers, and whatever else runs on it.
    machine_cores: Option<f64>,
}

/// CPU times read at one instant by the prober, beside its `Probe`.
#[derive(Debug, Clone)]
struct CpuSample {
    /// Each member's, in the order of `Cluster::members`.
    members: Vec<Option<Duration>>,
    /// Every CPU's busy time (`/proc/stat`), summed.
    machine_busy: Option<Duration>,
}

async fn bench_throughput(
    cli: &Cli,
    machine: &Machine,
    cluster: &Cluster,
    accounts: &Accounts,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<Phase>> {
    let mut recipients: Vec<Recipient> = accounts
        .recipients
        .iter()
        .cloned()
        .map(Recipient::new)
        .collect();
    let recipient_names: Vec<String> = accounts.recipients.iter().map(|u| u.name.clone()).collect();
    let mut phases = Vec::new();
    for &target in &cli.to {
        let leader = cluster.leader(LEADER_TIMEOUT).await?;
        let term = term_of(cluster, leader).await;
        let senders = match target {
            Target::Spread => accounts.senders.clone(),
            Target::Leader => {
                let addr = cluster.member(leader)?.addr;
                let mut at_leader = Vec::with_capacity(accounts.senders.len());
                for user in &accounts.senders {
                    at_leader.push(User {
                        channel: load::connect(addr).await?,
                        ..user.clone()
                    });
                }
                at_leader
            }
        };
        let config = LoadConfig {
            offered: Offered::ClosedLoop {
                per_sender: cli.in_flight,
            },
            warmup: Duration::from_secs_f64(cli.warmup),
            measure: Duration::from_secs_f64(cli.duration),
            body_len: cli.body,
            drain: Duration::from_secs_f64(cli.drain),
        };
        eprintln!(
            "throughput, {} senders {} (leader: member {leader}): {} s after {} s warm-up \
             (load average {})",
            senders.len(),
            target.label(),
            cli.duration,
            cli.warmup,
            load_average()
        );
        let members: Vec<(u64, u32)> = cluster
            .members
            .iter()
            .filter_map(|m| m.pid().map(|pid| (m.id, pid)))
            .collect();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let probe = prober(&members, machine.flushes.clone(), Arc::clone(&samples));
        let result = if cli.subscribers > 0 {
            let (result, back) = load::run_load(&senders, recipients, &config, seq, probe).await?;
            recipients = back;
            result
        } else {
            cluster_load::closed_loop(&senders, &recipient_names, &config, seq, probe).await?
        };
        let (member_cores, machine_cores) =
            window_cores(&samples.lock().expect("samples"), &result);
        let member_cores = members
            .iter()
            .map(|(id, _)| *id)
            .zip(member_cores)
            .collect();
        let after = match cluster.leader(LEADER_TIMEOUT).await {
            Ok(now) => Some((now, term_of(cluster, now).await)),
            Err(_) => None,
        };
        eprintln!(
            "  {} sends/s, send p99 {} ms, {} errors (load average {})",
            grouped(result.sends_per_sec()),
            millis(result.send_latency_at(0.99)),
            result.sends.errors,
            load_average()
        );
        phases.push(Phase {
            target,
            leader,
            term,
            after,
            result,
            member_cores,
            machine_cores,
        });
    }
    Ok(phases)
}

/// The term member `id` is in, 0 if it does not answer.
async fn term_of(cluster: &Cluster, id: u64) -> u64 {
    match cluster.member(id) {
        Ok(member) => member.status().await.map_or(0, |s| s.term),
        Err(_) => 0,
    }
}

/// Reads the members' CPU time (summed as the server's in the `Probe`),
/// the bench's and the disk's flushes; keeps each member's own time and
/// the machine's in `samples` too.
fn prober(
    members: &[(u64, u32)],
    flushes: Option<FlushCounter>,
    samples: Arc<Mutex<Vec<CpuSample>>>,
) -> impl Fn() -> Probe + Send + 'static {
    let stats: Vec<String> = members
        .iter()
        .map(|(_, pid)| format!("/proc/{pid}/stat"))
        .collect();
    move || {
        let each: Vec<Option<Duration>> = stats.iter().map(|s| process::cpu_time_of(s)).collect();
        let total = each.iter().copied().sum::<Option<Duration>>();
        samples.lock().expect("samples").push(CpuSample {
            members: each,
            machine_busy: machine_busy(),
        });
        Probe {
            at: Instant::now(),
            server_cpu: total,
            bench_cpu: process::cpu_time_of("/proc/self/stat"),
            disk_flushes: flushes.as_ref().and_then(FlushCounter::read),
        }
    }
}

/// Busy time of all CPUs together so far: the first line of `/proc/stat`
/// less idle and iowait, in clock ticks of 1/100 s (Linux's `USER_HZ`).
fn machine_busy() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(Duration::from_millis(busy * 10))
}

/// Cores each member and the whole machine used over the window, from
/// the prober's two samples (at the window's start and end).
fn window_cores(samples: &[CpuSample], result: &LoadResult) -> (Vec<Option<f64>>, Option<f64>) {
    let secs = result.usage.map_or(0.0, |u| u.elapsed.as_secs_f64());
    let (Some(before), Some(after)) = (samples.first(), samples.get(1)) else {
        return (Vec::new(), None);
    };
    if secs <= 0.0 {
        return (vec![None; before.members.len()], None);
    }
    let cores = |a: Option<Duration>, b: Option<Duration>| {
        a.zip(b)
            .map(|(a, b)| a.saturating_sub(b).as_secs_f64() / secs)
    };
    let members = after
        .members
        .iter()
        .zip(&before.members)
        .map(|(a, b)| cores(*a, *b))
        .collect();
    (members, cores(after.machine_busy, before.machine_busy))
}

fn print_throughput(cli: &Cli, phases: &[Phase]) {
    let Some(first) = phases.first() else { return };
    println!(
        "## Throughput ({} s measured after {} s warm-up per phase)",
        first.result.window.as_secs_f64(),
        first.result.config.warmup.as_secs_f64()
    );
    println!();
    let mut table = Table::new(&[
        "senders at",
        "senders",
        "subscribers",
        "sends/s",
        "send p50 ms",
        "send p99 ms",
        "send p99.9 ms",
        "send max ms",
        "delivery p50 ms",
        "delivery p99 ms",
        "errors",
    ]);
    for p in phases {
        let r = &p.result;
        let delivery = |q: f64| {
            if r.subscribers == 0 {
                "n/a".to_owned()
            } else {
                millis(r.delivery_latency_at(q))
            }
        };
        table.row(vec![
            p.target.label().to_owned(),
            r.senders.to_string(),
            r.subscribers.to_string(),
            grouped(r.sends_per_sec()),
            millis(r.send_latency_at(0.5)),
            millis(r.send_latency_at(0.99)),
            millis(r.send_latency_at(0.999)),
            millis(Duration::from_nanos(r.sends.latency.max())),
            delivery(0.5),
            delivery(0.99),
            grouped(r.sends.errors as f64),
        ]);
    }
    println!("{table}");
    let mut table = Table::new(&[
        "senders at",
        "leader CPU",
        "follower CPU",
        "all servers CPU",
        "bench CPU",
        "other processes CPU",
        "disk flushes/s",
        "sends/flush",
        "delivered",
        "resubscribes",
    ]);
    for p in phases {
        let r = &p.result;
        let usage = r.usage.as_ref();
        let cores = |c: Option<f64>| c.map_or("n/a".to_owned(), |c| format!("{c:.2}"));
        let of = |cpu: fn(&Usage) -> Option<Duration>| usage.and_then(|u| u.cores(cpu(u)));
        let leader = p
            .member_cores
            .iter()
            .find(|(id, _)| *id == p.leader)
            .and_then(|(_, c)| *c);
        let followers = p
            .member_cores
            .iter()
            .filter(|(id, _)| *id != p.leader)
            .map(|(_, c)| cores(*c))
            .collect::<Vec<_>>()
            .join(" + ");
        let flushes = usage.and_then(Usage::disk_flushes_per_sec);
        let others = p
            .machine_cores
            .zip(of(|u| u.server_cpu))
            .zip(of(|u| u.bench_cpu))
            .map(|((machine, servers), bench)| (machine - servers - bench).max(0.0));
        table.row(vec![
            p.target.label().to_owned(),
            cores(leader),
            followers,
            cores(of(|u| u.server_cpu)),
            cores(of(|u| u.bench_cpu)),
            cores(others),
            flushes.map_or("n/a".to_owned(), grouped),
            flushes.filter(|f| *f > 0.0).map_or("n/a".to_owned(), |f| {
                format!("{:.1}", r.sends_per_sec() / f)
            }),
            if r.subscribers == 0 {
                "n/a".to_owned()
            } else {
                format!(
                    "{} of {}",
                    grouped(r.delivered as f64),
                    grouped(r.sends.acked_started as f64)
                )
            },
            grouped(r.resubscribes as f64),
        ]);
    }
    println!("{table}");
    println!(
        "sends/s: acknowledged sends that returned in the window (each durable on a majority, \
         applied on the server that answered). Send latency: from the send's start to its \
         reply, for sends started in the window; delivery: from the same instant to the \
         message's arrival on the recipient's stream. CPU in cores (1.00 = one core busy) over \
         the window; the machine has {} in all, and other processes' CPU is its busy time \
         (/proc/stat) less the servers' and the bench's. Disk flushes: completed cache flushes of the \
         whole device, all three servers' fdatasyncs together (/proc/diskstats).",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for p in phases {
        if let Some(error) = &p.result.sends.first_error {
            println!("{}: first send error: {error}", p.target.label());
        }
        match p.after {
            Some((leader, term)) if leader == p.leader && term == p.term => {}
            Some((leader, term)) => println!(
                "{}: the leadership changed during the phase: member {} in term {} before, \
                 member {leader} in term {term} after",
                p.target.label(),
                p.leader,
                p.term
            ),
            None => println!(
                "{}: the members did not agree on a leader after the phase",
                p.target.label()
            ),
        }
    }
    println!();
    for p in phases {
        let rate = p.result.sends_per_sec();
        let stated = p.result.senders == THROUGHPUT_TARGET_SENDERS
            && cli.in_flight == 1
            && p.target == Target::Spread;
        let verdict = if !stated {
            format!(
                "for reference, not the stated configuration ({THROUGHPUT_TARGET_SENDERS} senders \
                 spread over the servers, 1 send in flight each); {} of the target",
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
            "throughput target {} durable sends/s with {THROUGHPUT_TARGET_SENDERS} senders, \
             senders {}: {} sends/s, {verdict}",
            grouped(THROUGHPUT_TARGET),
            p.target.label(),
            grouped(rate)
        );
    }
    println!();
}

/// One kill of the leader, and the member's return.
struct Kill {
    killed: u64,
    term_before: u64,
    new_leader: u64,
    new_term: u64,
    /// From the kill to a survivor saying it leads (Status polled every
    /// 5 ms, so up to that much late).
    elected: Duration,
    /// From the kill to the first acknowledged message first tried after
    /// it: the failover time.
    failover: Duration,
    /// Failed send attempts from the kill to that acknowledgement, by kind.
    errors: BTreeMap<String, u64>,
    /// Spawn of the restarted member to its `listening on`.
    restart: Duration,
    /// `listening on` to having applied what the leader had committed then.
    catch_up: Duration,
    /// The leader once the killed member was back; another than
    /// `new_leader` means its return caused an election.
    leader_after: u64,
}

async fn bench_failover(
    cli: &Cli,
    cluster: &mut Cluster,
    accounts: &Accounts,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<Kill>> {
    let addrs = cluster.addrs();
    let recipients: Vec<String> = accounts.recipients.iter().map(|u| u.name.clone()).collect();
    let mut roamers = Vec::with_capacity(accounts.roamers.len());
    for (i, user) in accounts.roamers.iter().enumerate() {
        let mut servers = vec![user.channel.clone()];
        for k in 1..addrs.len() {
            servers.push(load::connect(addrs[(i + k) % addrs.len()]).await?);
        }
        roamers.push(RoamingSender {
            token: user.token.clone(),
            to: recipients[i % recipients.len()].clone(),
            servers,
        });
    }
    eprintln!(
        "failover: {} senders spread over the servers, {} kills of the leader (load average {})",
        roamers.len(),
        cli.kills,
        load_average()
    );
    let steady = SteadyLoad::start(roamers, cli.body, seq);
    let outcome = kill_leaders(cli, cluster, &steady).await;
    let (acks, errors) = (steady.watch.acks(), steady.watch.errors());
    steady.stop().await?;
    let (kills, elapsed) = outcome?;
    eprintln!(
        "  steady load: {} messages acknowledged in {:.1} s ({} per s), {} failed attempts",
        grouped(acks as f64),
        elapsed.as_secs_f64(),
        grouped(acks as f64 / elapsed.as_secs_f64()),
        grouped(errors as f64)
    );
    Ok(kills)
}

/// Kills the leader `cli.kills` times under `steady`'s load; returns each
/// kill and how long the whole took.
async fn kill_leaders(
    cli: &Cli,
    cluster: &mut Cluster,
    steady: &SteadyLoad,
) -> anyhow::Result<(Vec<Kill>, Duration)> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(cli.warmup)).await;
    ensure!(
        steady.watch.acks() > 0,
        "the steady load has no message acknowledged after {} s of warm-up",
        cli.warmup
    );
    let mut kills = Vec::with_capacity(cli.kills);
    for n in 1..=cli.kills {
        let leader = cluster.leader(LEADER_TIMEOUT).await?;
        let term_before = cluster.member(leader)?.status().await.map_or(0, |s| s.term);
        let survivors: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let acks_before = steady.watch.acks();

        steady.watch.arm();
        let killed_at = cluster.kill(leader)?;
        steady.watch.killed(killed_at);
        let (elected, seen) = tokio::join!(
            new_leader(cluster, &survivors, killed_at),
            steady.watch.first_fresh_ack(FAILOVER_TIMEOUT)
        );
        let seen = seen.with_context(|| format!("kill {n} (member {leader})"))?;
        let (elected, new_leader, new_term) =
            elected.with_context(|| format!("kill {n} (member {leader})"))?;

        let restart = tokio::task::block_in_place(|| cluster.start_member(leader))?;
        let listening = Instant::now();
        cluster.wait_caught_up(leader, CATCH_UP_TIMEOUT).await?;
        let catch_up = listening.elapsed();
        let leader_after = cluster.leader(LEADER_TIMEOUT).await?;
        let kill = Kill {
            killed: leader,
            term_before,
            new_leader,
            new_term,
            elected,
            failover: seen.first_fresh_ack,
            errors: seen.errors,
            restart,
            catch_up,
            leader_after,
        };
        eprintln!(
            "  kill {n}: member {leader} (term {term_before}); member {new_leader} leads \
             (term {new_term}) after {} ms; first acknowledgement after {} ms, {} failed \
             attempts; restarted in {} ms, caught up {} ms later; {} acknowledged since the \
             previous kill",
            millis(kill.elected),
            millis(kill.failover),
            kill.errors.values().sum::<u64>(),
            millis(kill.restart),
            millis(kill.catch_up),
            grouped(steady.watch.acks().saturating_sub(acks_before) as f64)
        );
        kills.push(kill);
        tokio::time::sleep(Duration::from_secs_f64(cli.settle)).await;
    }
    Ok((kills, started.elapsed()))
}

/// Polls the survivors until one says it leads; returns how long after
/// `killed_at`, which member, and its term.
async fn new_leader(
    cluster: &Cluster,
    survivors: &[u64],
    killed_at: Instant,
) -> anyhow::Result<(Duration, u64, u64)> {
    loop {
        for &id in survivors {
            if let Some(status) = cluster.member(id)?.status().await
                && status.role == Role::Leader as i32
            {
                return Ok((killed_at.elapsed(), id, status.term));
            }
        }
        if killed_at.elapsed() > FAILOVER_TIMEOUT {
            bail!("no survivor became leader within {FAILOVER_TIMEOUT:?}");
        }
        tokio::time::sleep(ELECTION_POLL).await;
    }
}

fn print_failover(cli: &Cli, kills: &[Kill]) {
    if kills.is_empty() {
        return;
    }
    println!(
        "## Failover ({} kills of the leader, {} senders of steady load)",
        kills.len(),
        cli.failover_senders
    );
    println!();
    let mut table = Table::new(&[
        "kill",
        "killed (term)",
        "new leader (term)",
        "elected ms",
        "failover ms",
        "failed attempts",
        "restart ms",
        "catch-up ms",
        "leader after return",
    ]);
    for (i, k) in kills.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            format!("{} ({})", k.killed, k.term_before),
            format!("{} ({})", k.new_leader, k.new_term),
            millis(k.elected),
            millis(k.failover),
            grouped(k.errors.values().sum::<u64>() as f64),
            millis(k.restart),
            millis(k.catch_up),
            k.leader_after.to_string(),
        ]);
    }
    println!("{table}");

    let mut table = Table::new(&["over the kills", "p50 ms", "p99 ms", "max ms"]);
    let row = |table: &mut Table, name: &str, of: fn(&Kill) -> Duration| {
        let mut values: Vec<Duration> = kills.iter().map(of).collect();
        values.sort();
        table.row(vec![
            name.to_owned(),
            millis(nearest_rank(&values, 0.5)),
            millis(nearest_rank(&values, 0.99)),
            millis(*values.last().expect("at least one kill")),
        ]);
    };
    row(
        &mut table,
        "failover (kill to first acknowledgement)",
        |k| k.failover,
    );
    row(&mut table, "election (kill to a survivor leading)", |k| {
        k.elected
    });
    row(&mut table, "restart (spawn to listening)", |k| k.restart);
    row(&mut table, "catch-up (listening to caught up)", |k| {
        k.catch_up
    });
    println!("{table}");

    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for k in kills {
        for (kind, n) in &k.errors {
            *kinds.entry(kind).or_default() += n;
        }
    }
    if !kinds.is_empty() {
        println!("failed attempts between a kill and the first acknowledgement, by kind:");
        for (kind, n) in &kinds {
            println!("- {n} x `{kind}`");
        }
        println!();
    }
    let disruptive = kills
        .iter()
        .filter(|k| k.leader_after != k.new_leader)
        .count();
    println!(
        "failover: from the SIGKILL of the leader to the first acknowledgement of a message \
         whose first attempt started after the kill (a retry of an older message does not \
         count: a server answers a repeated client_msg_id from its own state). Each sender \
         moves to the next server when a send fails. elected: a survivor's Cluster.Status \
         says it leads (polled every {} ms). The killed member is restarted over its own \
         data and must have applied what the leader had committed before the next kill. \
         Percentiles by nearest rank; with fewer than 100 kills p99 is the largest. Returns \
         that caused a new election: {disruptive} of {}.",
        ELECTION_POLL.as_millis(),
        kills.len()
    );
    println!();
    let mut failovers: Vec<Duration> = kills.iter().map(|k| k.failover).collect();
    failovers.sort();
    let p99 = nearest_rank(&failovers, 0.99);
    let verdict = if p99 < FAILOVER_P99_TARGET {
        "MET".to_owned()
    } else {
        format!(
            "MISSED by {} ms ({:.1}x the target)",
            millis(p99 - FAILOVER_P99_TARGET),
            p99.as_secs_f64() / FAILOVER_P99_TARGET.as_secs_f64()
        )
    };
    println!(
        "failover target p99 < {} ms over {} kills: p99 {} ms, {verdict}",
        millis(FAILOVER_P99_TARGET),
        kills.len(),
        millis(p99)
    );
    println!();
}

/// The value at quantile `q` of sorted `values`, by nearest rank.
/// How long one presence change took to reach the contact: from opening
/// the stream to hearing "online", from dropping it to hearing "offline".
struct PresenceRound {
    online: Duration,
    offline: Duration,
}

/// Recipients 0 and 1 (on servers 0 and 1) become contacts; then, round
/// after round, 0 opens a stream and drops it while 1's stream waits to
/// hear each change.
async fn bench_presence(cli: &Cli, accounts: &Accounts) -> anyhow::Result<Vec<PresenceRound>> {
    use chat_proto::chat_client::ChatClient;
    use chat_proto::{ListAccountsRequest, SendRequest, SubscribeRequest, event};

    let [a, b] = [&accounts.recipients[0], &accounts.recipients[1]];
    let mut ca = ChatClient::new(a.channel.clone());
    let mut cb = ChatClient::new(b.channel.clone());
    let sent = (ca.send(SendRequest {
        token: a.token.clone(),
        to: b.name.clone(),
        body: "presence".into(),
        client_msg_id: "presence-bench".into(),
        ..Default::default()
    }))
    .await
    .context("the presence sender's message failed")?
    .into_inner();
    let listed = (cb.list_accounts(ListAccountsRequest {
        pattern: a.name.clone(),
        ..Default::default()
    }))
    .await?
    .into_inner();
    let a_id = listed
        .accounts
        .first()
        .context("no such account")?
        .account_id;
    // From now on: the backlog of what came before is not waited for.
    let from_now = |token: &str| SubscribeRequest {
        token: token.to_owned(),
        after: sent.log_position,
        min_applied: sent.log_position,
    };
    let mut watch = cb.subscribe(from_now(&b.token)).await?.into_inner();
    // Whether `a` is online, as the last presence news said; waits up to
    // 10 s for news that says `online`.
    let mut heard = async |online: bool| -> anyhow::Result<()> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
            let event = next
                .context("no presence news within 10 s")??
                .context("the watching stream ended")?;
            if let Some(event::Kind::Presence(p)) = event.kind {
                let now = if p.online.contains(&a_id) {
                    true
                } else if p.offline.contains(&a_id) || p.full {
                    false
                } else {
                    continue;
                };
                if now == online {
                    return Ok(());
                }
            }
        }
    };
    heard(false).await?;
    let mut rounds = Vec::new();
    for _ in 0..cli.presence_rounds {
        let opened = Instant::now();
        let stream = ca.subscribe(from_now(&a.token)).await?.into_inner();
        heard(true).await?;
        let online = opened.elapsed();
        let closed = Instant::now();
        drop(stream);
        heard(false).await?;
        rounds.push(PresenceRound {
            online,
            offline: closed.elapsed(),
        });
    }
    Ok(rounds)
}

fn print_presence(rounds: &[PresenceRound]) {
    let sorted = |f: fn(&PresenceRound) -> Duration| {
        let mut v: Vec<Duration> = rounds.iter().map(f).collect();
        v.sort();
        v
    };
    let (online, offline) = (sorted(|r| r.online), sorted(|r| r.offline));
    let row = |what: &str, v: &[Duration]| {
        vec![
            what.to_owned(),
            millis(nearest_rank(v, 0.5)),
            millis(v.last().copied().unwrap_or_default()),
        ]
    };
    println!(
        "## Presence across servers ({} rounds, a user on server 1, its contact on server 2)",
        rounds.len()
    );
    println!();
    let mut table = Table::new(&["heard", "p50 ms", "max ms"]);
    table.row(row("online: from opening the stream", &online));
    table.row(row("offline: from dropping it", &offline));
    println!("{table}");
    println!();
    println!(
        "presence target: within 2 s (issue: shown within 2 s to those who share a conversation)"
    );
    println!();
}

fn nearest_rank(values: &[Duration], q: f64) -> Duration {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn print_machine(cli: &Cli, machine: &Machine) {
    println!("# Cluster ({CLUSTER_SIZE} x chat-server) benchmark");
    println!();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!(
        "command: cargo bench -p chat-benches --bench cluster{}",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    machine.print();
    println!(
        "cluster: {CLUSTER_SIZE} members on 127.0.0.1, static --peers, one data directory each \
         on the same disk; every send durable on a majority"
    );
    if cli.only != Part::Failover {
        println!(
            "throughput: {} senders x {} in flight ({}), {} subscribers, one connection each; \
             {}-byte bodies",
            cli.senders,
            cli.in_flight,
            cli.to
                .iter()
                .map(|t| t.label())
                .collect::<Vec<_>>()
                .join("; then "),
            cli.subscribers,
            cli.body
        );
    }
    if cli.only != Part::Throughput {
        println!(
            "failover: {} senders, {} kills of the leader, {} s of steady load between a \
             member's return and the next kill; {}-byte bodies",
            cli.failover_senders, cli.kills, cli.settle, cli.body
        );
    }
    println!("load average at start: {}", load_average());
    println!();
}
