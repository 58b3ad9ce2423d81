//! `cargo bench -p chat-benches --bench log`: durable append throughput of
//! the event log from many threads, and the replay a server does at start-up,
//! with real fdatasyncs on a real disk. Options after `--`, or `BENCH_*`
//! environment variables; `--quick` for a run of a few seconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use chat_benches::disk::{BenchRoot, FlushCounter, SyncBaseline, load_average};
use chat_benches::log::{
    AppendConfig, AppendResult, PAYLOAD_LEN, RECORD_LEN, ReplayResult, build_log, replay,
    run_append,
};
use chat_benches::{Table, grouped, millis};
use clap::{Parser, ValueEnum};

/// Durable records per second that 64 concurrent appenders must reach.
const APPEND_TARGET: f64 = 200_000.0;
/// The appender count the append target is stated for.
const APPEND_TARGET_APPENDERS: usize = 64;
/// Records per second that replay (open + iterate) must reach.
const REPLAY_TARGET: f64 = 1_000_000.0;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks the event log: durable appends and start-up replay")]
struct Cli {
    /// Measured seconds per append cell.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Unmeasured seconds before each append cell.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 0.5)]
    warmup: f64,
    /// A check that everything runs: 0.5 s cells, 100,000-record replay, one
    /// replay run. Overrides the three options it sets.
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::BoolishValueParser::new())]
    quick: bool,
    /// Concurrent appender threads, one append cell per count and batch size.
    #[arg(long, env = "BENCH_APPENDERS", value_delimiter = ',', default_values_t = [1, 4, 16, 64])]
    appenders: Vec<usize>,
    /// Records per append call.
    #[arg(long, env = "BENCH_BATCHES", value_delimiter = ',', default_values_t = [1, 16, 256])]
    batches: Vec<usize>,
    /// Records in the log that is replayed.
    #[arg(long, env = "BENCH_REPLAY_RECORDS", default_value_t = 1_000_000)]
    replay_records: u64,
    /// Times the replay is repeated; the median is reported.
    #[arg(long, env = "BENCH_REPLAY_RUNS", default_value_t = 3)]
    replay_runs: usize,
    /// Records per append while building the log to replay.
    #[arg(long, default_value_t = 4096)]
    build_batch: usize,
    /// Where to create the logs (must not be tmpfs). Default: the system
    /// temporary directory, else target/bench-tmp.
    #[arg(long, env = "BENCH_DIR")]
    dir: Option<PathBuf>,
    /// Which part to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    All,
    Append,
    Replay,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.seconds = 0.5;
        cli.warmup = 0.1;
        cli.replay_records = 100_000;
        cli.replay_runs = 1;
    }
    ensure!(
        cli.seconds > 0.0 && cli.warmup >= 0.0,
        "durations must be positive"
    );
    ensure!(cli.replay_runs > 0, "--replay-runs must be at least 1");
    ensure!(cli.build_batch > 0, "--build-batch must be at least 1");

    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp");
    let root = BenchRoot::choose(cli.dir.as_deref(), &[std::env::temp_dir(), fallback])
        .context("choose a directory for the benchmark logs")?;
    let flushes = FlushCounter::for_path(&root.path);
    print_machine(&root, flushes.as_ref());
    if cli.only != Part::Replay {
        let b = SyncBaseline::measure(
            &root.path,
            RECORD_LEN,
            Duration::from_secs_f64(cli.seconds.min(1.0)),
        )
        .context("measure the fdatasync baseline")?;
        println!(
            "disk baseline, one thread, pwrite of one record + fdatasync: {} per s, p50 {} ms, p99 {} ms",
            grouped(b.syncs_per_sec()),
            millis(b.p50),
            millis(b.p99)
        );
        println!();
    }

    if cli.only != Part::Replay {
        bench_append(&cli, &root, flushes.as_ref())?;
    }
    if cli.only != Part::Append {
        bench_replay(&cli, &root)?;
    }
    println!("load average at end: {}", load_average());
    Ok(())
}

fn print_machine(root: &BenchRoot, flushes: Option<&FlushCounter>) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("# Log (log-format) benchmark");
    println!();
    println!("cpus (available parallelism): {cpus}");
    println!("kernel: {}", kernel.trim());
    println!(
        "bench dir: {} on {} (device: {})",
        root.path.display(),
        root.fs_type,
        flushes.map_or("unknown, no flush counts", |f| f.device.as_str())
    );
    println!(
        "record: {PAYLOAD_LEN}-byte payload, {RECORD_LEN} bytes on disk; every append waits for its fdatasync"
    );
    println!("load average at start: {}", load_average());
    println!();
}

fn bench_append(cli: &Cli, root: &BenchRoot, flushes: Option<&FlushCounter>) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &appenders in &cli.appenders {
        for &batch in &cli.batches {
            let config = AppendConfig {
                appenders,
                batch,
                warmup: Duration::from_secs_f64(cli.warmup),
                measure: Duration::from_secs_f64(cli.seconds),
            };
            let dir = tempfile::Builder::new()
                .prefix("log-append-")
                .tempdir_in(&root.path)?;
            let result = run_append(dir.path(), &config, || flushes.and_then(|f| f.read()))
                .with_context(|| format!("append: {appenders} appenders, batch {batch}"))?;
            eprintln!(
                "append: {appenders:>3} appenders x batch {batch:>3}: {} records/s",
                grouped(result.records_per_sec())
            );
            results.push(result);
        }
    }

    println!(
        "## Durable appends ({} s measured after {} s warm-up per cell)",
        cli.seconds, cli.warmup
    );
    println!();
    let mut table = Table::new(&[
        "appenders",
        "batch",
        "records/s",
        "appends/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "disk flushes/s",
        "records/flush",
    ]);
    for r in &results {
        let flushes_per_sec = r.flushes_per_sec();
        table.row(vec![
            r.config.appenders.to_string(),
            r.config.batch.to_string(),
            grouped(r.records_per_sec()),
            grouped(r.appends_per_sec()),
            millis(r.latency_at(0.5)),
            millis(r.latency_at(0.99)),
            millis(Duration::from_nanos(r.latency.max())),
            flushes_per_sec.map_or("n/a".to_owned(), grouped),
            flushes_per_sec
                .filter(|f| *f > 0.0)
                .map_or("n/a".to_owned(), |f| {
                    format!("{:.1}", r.records_per_sec() / f)
                }),
        ]);
    }
    println!("{table}");
    println!(
        "disk flushes: cache flushes the device completed in the window (/proc/diskstats; \
         whole machine, so other processes' syncs count too). Where each fdatasync ends in \
         one flush (records/flush = batch with one appender), records/flush is the mean \
         size of a group commit."
    );
    println!();
    print_append_verdict(&results);
    Ok(())
}

fn print_append_verdict(results: &[AppendResult]) {
    let at_target: Vec<&AppendResult> = results
        .iter()
        .filter(|r| r.config.appenders == APPEND_TARGET_APPENDERS)
        .collect();
    if at_target.is_empty() {
        println!("append target: not measured (no run with {APPEND_TARGET_APPENDERS} appenders)");
        println!();
        return;
    }
    let mut reached = Vec::new();
    for r in &at_target {
        let rate = r.records_per_sec();
        let verdict = if rate >= APPEND_TARGET {
            reached.push(r.config.batch.to_string());
            "reaches it".to_owned()
        } else {
            format!("short by {:.0}%", 100.0 * (1.0 - rate / APPEND_TARGET))
        };
        println!(
            "  {APPEND_TARGET_APPENDERS} appenders x batch {:>3}: {:>11} records/s, {verdict}",
            r.config.batch,
            grouped(rate),
        );
    }
    if reached.is_empty() {
        println!(
            "append target {} records/s with {APPEND_TARGET_APPENDERS} appenders: MISSED at every batch size",
            grouped(APPEND_TARGET)
        );
    } else {
        println!(
            "append target {} records/s with {APPEND_TARGET_APPENDERS} appenders: MET with batch {}",
            grouped(APPEND_TARGET),
            reached.join(", ")
        );
    }
    println!();
}

fn bench_replay(cli: &Cli, root: &BenchRoot) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("log-replay-")
        .tempdir_in(&root.path)?;
    let built =
        build_log(dir.path(), cli.replay_records, cli.build_batch).context("build the log")?;
    println!(
        "## Replay of {} records (warm page cache)",
        grouped(built.records as f64)
    );
    println!();
    println!(
        "built in {:.2} s with batches of {} from one thread ({} records/s durable), \
         {} segment files, {:.1} MiB",
        built.elapsed.as_secs_f64(),
        cli.build_batch,
        grouped(built.records as f64 / built.elapsed.as_secs_f64()),
        built.segments,
        built.bytes as f64 / (1024.0 * 1024.0),
    );
    println!();

    let mut runs = Vec::new();
    for run in 1..=cli.replay_runs {
        let r = replay(dir.path()).context("replay the log")?;
        ensure!(
            r.opened_records == built.records
                && r.iterated_records == built.records
                && r.contiguous
                && r.payload_bytes == built.records * PAYLOAD_LEN as u64,
            "replay {run} read back the wrong records: {r:?}"
        );
        eprintln!(
            "replay {run}: {} records/s",
            grouped(built.records as f64 / r.total().as_secs_f64())
        );
        runs.push(r);
    }

    let mut table = Table::new(&[
        "run",
        "open s",
        "open records/s",
        "iterate s",
        "iterate records/s",
        "total s",
        "total records/s",
    ]);
    let row = |label: String, r: &ReplayResult| {
        let rate = |d: Duration| grouped(built.records as f64 / d.as_secs_f64());
        vec![
            label,
            format!("{:.3}", r.open.as_secs_f64()),
            rate(r.open),
            format!("{:.3}", r.iterate.as_secs_f64()),
            rate(r.iterate),
            format!("{:.3}", r.total().as_secs_f64()),
            rate(r.total()),
        ]
    };
    for (i, r) in runs.iter().enumerate() {
        table.row(row((i + 1).to_string(), r));
    }
    runs.sort_by_key(ReplayResult::total);
    let median = &runs[runs.len() / 2];
    table.row(row("median run".to_owned(), median));
    println!("{table}");

    let rate = built.records as f64 / median.total().as_secs_f64();
    let verdict = if rate >= REPLAY_TARGET {
        "MET".to_owned()
    } else {
        format!("MISSED by {:.0}%", 100.0 * (1.0 - rate / REPLAY_TARGET))
    };
    println!(
        "replay target {} records/s (open + iterate, median): {} records/s, {verdict}",
        grouped(REPLAY_TARGET),
        grouped(rate),
    );
    println!();
    Ok(())
}
