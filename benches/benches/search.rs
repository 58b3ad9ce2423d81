//! `cargo bench -p chat-benches --bench search`: searching one long
//! conversation on the server (`History` with a `query`) through the real
//! `chat-server` binary. One conversation of 100,000 messages (100-byte
//! bodies of everyday words, three in four with an accented word); then, with
//! the server's body cache warm (right after the fill) and cold (restarted
//! with `--body-cache 0`: a restart fills the cache with the newest bodies,
//! here all of them), the latency of a search from the
//! newest message for a word found only in the first message (each call
//! examines its whole budget and finds nothing) and for a word in most
//! messages (the first page fills at once), and the time to page the rare
//! word through the whole conversation. Options after `--`, or `BENCH_*`
//! environment variables; `--quick` for a short smoke run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chat_benches::machine::{Machine, MachineArgs};
use chat_benches::server::load::{self, User};
use chat_benches::server::process::{self, ServerProcess};
use chat_benches::server::reads::{self, RARE_WORD, SearchTally, SearchedThrough};
use chat_benches::{Table, grouped, millis};
use clap::Parser;
use tokio::task::JoinSet;

/// p99 of one search call over [`TARGET_MESSAGES`], whatever it matches.
const SEARCH_P99_TARGET: Duration = Duration::from_millis(50);
/// The conversation length the target is stated for.
const TARGET_MESSAGES: u64 = 100_000;
/// The body length the target is stated for.
const TARGET_BODY: usize = 100;
/// Found in most generated bodies ("the", "there", "other", ...), asked in
/// capitals so that case is ignored on every message.
const FREQUENT_QUERY: &str = "THE";
/// Senders of the other conversations' messages (`--others`).
const OTHER_SENDERS: usize = 4;
/// How long a start-up (with its replay) may take before the bench gives up.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a stop (SIGTERM to exit) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "Benchmarks searching one conversation's history on chat-server")]
struct Cli {
    /// Messages in the searched conversation.
    #[arg(long, env = "BENCH_SEARCH_MESSAGES", default_value_t = TARGET_MESSAGES)]
    messages: u64,
    /// Bytes per message body.
    #[arg(long, env = "BENCH_BODY", default_value_t = TARGET_BODY)]
    body: usize,
    /// Timed calls per case, one after the other.
    #[arg(long, env = "BENCH_SEARCH_CALLS", default_value_t = 200)]
    calls: usize,
    /// Untimed calls before each case's timed ones.
    #[arg(long, default_value_t = 5)]
    warmup_calls: usize,
    /// Times the rare word is paged through the whole conversation.
    #[arg(long, default_value_t = 5)]
    through_runs: usize,
    /// Sends in flight while filling the conversation.
    #[arg(long, default_value_t = 256)]
    fill_in_flight: usize,
    /// Messages to other conversations per message of the searched one,
    /// sent at the same time, so that the searched conversation's
    /// messages lie apart in the archive, as on a server with many
    /// conversations (0: it is alone).
    #[arg(long, env = "BENCH_SEARCH_OTHERS", default_value_t = 0)]
    others: u64,
    /// A check that everything runs: 20,000 messages, 20 calls per case.
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::BoolishValueParser::new())]
    quick: bool,
    #[command(flatten)]
    machine: MachineArgs,
    /// Keep the data directory (its path is printed).
    #[arg(long)]
    keep_data: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.messages = 20_000;
        cli.calls = 20;
        cli.warmup_calls = 2;
        cli.through_runs = 2;
    }
    ensure!(
        cli.messages > 0 && cli.calls > 0 && cli.through_runs > 0,
        "--messages, --calls and --through-runs must be at least 1"
    );
    ensure!(
        (RARE_WORD.len() + 8..=16 * 1024).contains(&cli.body),
        "--body must be {} to 16384 bytes",
        RARE_WORD.len() + 8
    );
    let machine = Machine::find(&cli.machine)?;
    println!("# chat-server search");
    println!();
    machine.print();
    println!(
        "one conversation of {} messages, {}-byte bodies, {} timed calls per case{}",
        grouped(cli.messages as f64),
        cli.body,
        cli.calls,
        if cli.others == 0 {
            String::new()
        } else {
            format!(
                "; {} messages of other conversations between each two of its own",
                cli.others
            )
        }
    );
    machine.run(run(&cli, &machine))
}

async fn run(cli: &Cli, machine: &Machine) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("search-")
        .tempdir_in(&machine.root.path)
        .context("cannot create the data directory")?;
    let outcome = bench_search(cli, machine, dir.path()).await;
    if cli.keep_data || outcome.is_err() {
        println!("data directory kept: {}", dir.keep().display());
    }
    outcome
}

/// What one case measured.
struct Case {
    what: String,
    cache: &'static str,
    tally: SearchTally,
}

async fn bench_search(cli: &Cli, machine: &Machine, dir: &Path) -> anyhow::Result<()> {
    let server = start_server(machine, dir, &[])?;
    let mut names = vec!["searcher".to_owned(), "peer".to_owned()];
    if cli.others > 0 {
        names.push("sink".to_owned());
        names.extend((0..OTHER_SENDERS).map(|i| format!("other-{i}")));
    }
    let mut users = load::create_users(server.addr, &names, 2).await?;
    let peer = names[1].clone();

    // The rare word is in the first message only: a search for it from
    // the newest examines a whole budget per call and finds nothing until
    // the last call.
    let len = cli.body;
    let first = move |_| {
        format!(
            "{RARE_WORD} {}",
            reads::chat_text(0, len - RARE_WORD.len() - 1)
        )
    };
    reads::fill_conversation(&users[0], &peer, 1, 1, "first", first).await?;
    eprintln!(
        "filling: {} messages, and {} to other conversations at the same time, {} in flight",
        grouped(cli.messages as f64),
        grouped((cli.messages * cli.others) as f64),
        cli.fill_in_flight
    );
    // In flight in proportion to the messages, so both end together and
    // the searched conversation's messages are spread over the archive.
    let share = |n: u64| (cli.fill_in_flight as u64 * n / (cli.others + 1)).max(1) as usize;
    let began = Instant::now();
    let searched = reads::fill_conversation(
        &users[0],
        &peer,
        cli.messages - 1,
        share(1),
        "fill",
        move |i| reads::chat_text(i + 1, len),
    );
    let others = async {
        let mut fills = JoinSet::new();
        for (i, other) in users.iter().skip(3).enumerate() {
            let count = cli.messages * cli.others / OTHER_SENDERS as u64;
            let in_flight = (share(cli.others) / OTHER_SENDERS).max(1);
            let other = other.clone();
            // Bodies unlike the searched conversation's, none with the
            // rare word.
            let seed = (i as u64 + 1) << 40;
            fills.spawn(async move {
                let key = format!("other-{i}");
                let body = move |n| reads::chat_text(seed + n, len);
                reads::fill_conversation(&other, "sink", count, in_flight, &key, body).await
            });
        }
        while let Some(done) = fills.join_next().await {
            done.context("a fill panicked")??;
        }
        anyhow::Ok(())
    };
    let (searched, others) = tokio::join!(searched, others);
    let searched_took = searched?;
    others?;
    let took = began.elapsed();
    let sent = cli.messages * (cli.others + 1);
    eprintln!(
        "filled in {:.1} s ({} sends/s; the searched conversation in {:.1} s)",
        took.as_secs_f64(),
        grouped(sent as f64 / took.as_secs_f64()),
        searched_took.as_secs_f64()
    );

    let mut cases = Vec::new();
    let mut throughs = Vec::new();
    // Warm: applying put every body in the cache (64 MiB holds them all).
    cases.extend(measure(cli, &server, &users[0], &peer, "warm").await?);
    throughs.push(("warm", through(cli, &users[0], &peer).await?));

    let took = server.stop(STOP_TIMEOUT)?;
    eprintln!("server stopped (SIGTERM) in {} ms", millis(took));
    let server = start_server(machine, dir, &["--body-cache", "0"])?;
    for user in &mut users {
        user.channel = load::connect(server.addr).await?;
    }
    // Cold: no cache, so every call reads the archive (from the page
    // cache). A restarted server with a cache fills it with the newest
    // bodies (here every one), and a search leaves it as it found it.
    cases.extend(measure(cli, &server, &users[0], &peer, "cold").await?);
    throughs.push(("cold", through(cli, &users[0], &peer).await?));
    server.stop(STOP_TIMEOUT)?;

    report(cli, &cases, &throughs)
}

/// The rare word paged through the whole conversation, `cli.through_runs`
/// times.
async fn through(cli: &Cli, user: &User, peer: &str) -> anyhow::Result<Vec<SearchedThrough>> {
    let mut runs = Vec::with_capacity(cli.through_runs);
    for _ in 0..cli.through_runs {
        runs.push(reads::search_through(user, peer, RARE_WORD).await?);
    }
    runs.sort_by_key(|r| r.elapsed);
    Ok(runs)
}

/// The rare and the frequent search, `cli.calls` times each.
async fn measure(
    cli: &Cli,
    server: &ServerProcess,
    user: &User,
    peer: &str,
    cache: &'static str,
) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (what, query) in [
        (
            format!("rare ({RARE_WORD:?}, first message only)"),
            RARE_WORD,
        ),
        (format!("frequent ({FREQUENT_QUERY:?})"), FREQUENT_QUERY),
    ] {
        let began = Instant::now();
        let tally = reads::time_searches(user, peer, query, cli.warmup_calls, cli.calls, || {
            server.cpu_time()
        })
        .await?;
        eprintln!(
            "{cache} cache, {what}: {} calls in {:.1} s",
            cli.calls,
            began.elapsed().as_secs_f64()
        );
        cases.push(Case { what, cache, tally });
    }
    Ok(cases)
}

fn report(
    cli: &Cli,
    cases: &[Case],
    throughs: &[(&str, Vec<SearchedThrough>)],
) -> anyhow::Result<()> {
    println!();
    println!(
        "One search call from the newest message (default page of 50), {} calls one after the other:",
        cli.calls
    );
    println!();
    let mut table = Table::new(&[
        "query",
        "body cache",
        "matches (next_before)",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU ms/call",
    ]);
    for case in cases {
        let t = &case.tally;
        table.row(vec![
            case.what.clone(),
            case.cache.to_owned(),
            format!("{} ({})", t.found, if t.more { "set" } else { "0" }),
            millis(t.at(0.5)),
            millis(t.at(0.99)),
            millis(Duration::from_nanos(t.latency.max())),
            t.server_cpu.map_or("-".to_owned(), |cpu| {
                millis(cpu / u32::try_from(cli.calls).unwrap_or(u32::MAX))
            }),
        ]);
    }
    print!("{table}");
    println!();
    println!(
        "Paging {RARE_WORD:?} from the newest message to the first, as a client asking for older \
         results, {} times:",
        cli.through_runs
    );
    println!();
    let mut table = Table::new(&[
        "body cache",
        "calls",
        "matches",
        "total ms (median)",
        "total ms (max)",
        "slowest call ms",
    ]);
    for (cache, runs) in throughs {
        let median = &runs[runs.len() / 2];
        let slowest = runs.iter().map(|r| r.slowest).max().unwrap_or_default();
        table.row(vec![
            (*cache).to_owned(),
            median.calls.to_string(),
            median.matches.to_string(),
            millis(median.elapsed),
            millis(runs.last().map_or(Duration::ZERO, |r| r.elapsed)),
            millis(slowest),
        ]);
    }
    print!("{table}");
    println!();
    let worst = cases
        .iter()
        .map(|c| c.tally.at(0.99))
        .max()
        .unwrap_or_default();
    let stated = cli.messages == TARGET_MESSAGES && cli.body == TARGET_BODY;
    println!(
        "target: p99 of a search call <= {} ms over {} messages of {} bytes: {} (worst p99 {} ms{})",
        SEARCH_P99_TARGET.as_millis(),
        grouped(TARGET_MESSAGES as f64),
        TARGET_BODY,
        if worst <= SEARCH_P99_TARGET {
            "met"
        } else {
            "NOT met"
        },
        millis(worst),
        if stated { "" } else { "; not the stated size" }
    );
    let found: Vec<usize> = (throughs.iter())
        .flat_map(|(_, runs)| runs.iter().map(|r| r.matches))
        .collect();
    ensure!(
        found.iter().all(|&n| n == 1),
        "paging the rare word found {found:?} matches, not 1 each time"
    );
    Ok(())
}

fn start_server(machine: &Machine, dir: &Path, flags: &[&str]) -> anyhow::Result<ServerProcess> {
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(flags.iter().map(|f| f.to_string()));
    let server = ServerProcess::start_with(
        &machine.binary,
        dir,
        &args,
        process::SERVER_LOG_FILTER,
        START_TIMEOUT,
    )?;
    eprintln!(
        "server pid {} listening on {} after {} ms",
        server.pid(),
        server.addr,
        millis(server.ready_after)
    );
    Ok(server)
}
