//! Workloads for `log-format`: durable appends from many threads, and the
//! replay a server does at start-up (open, which checks every CRC, then read
//! everything back in order).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use log_format::{Log, LogConfig, Result};

/// Payload bytes per record: about one short chat message with its envelope.
pub const PAYLOAD_LEN: usize = 100;

/// Bytes one record takes in a segment file.
pub const RECORD_LEN: usize = log_format::format::RECORD_HEADER_LEN + PAYLOAD_LEN;

/// Term written on every benchmark record; the log does not interpret it.
const TERM: u64 = 1;

/// One cell of the append matrix.
#[derive(Debug, Clone)]
pub struct AppendConfig {
    /// Threads calling `append_payloads` in a loop at the same time.
    pub appenders: usize,
    /// Records per `append_payloads` call.
    pub batch: usize,
    /// Run before measuring, so that the first segment and the threads'
    /// first fsyncs do not count.
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one append cell did in its measured window.
#[derive(Debug, Clone)]
pub struct AppendResult {
    pub config: AppendConfig,
    /// Records whose append call returned inside the window.
    pub records: u64,
    /// Calls that returned inside the window.
    pub appends: u64,
    pub window: Duration,
    /// Nanoseconds per call, for calls that started and returned in the window.
    pub latency: Histogram<u64>,
    /// Cache flushes the disk completed in the window (system-wide).
    pub device_flushes: Option<u64>,
    /// Records appended in all, warm-up and tail included.
    pub total_records: u64,
}

impl AppendResult {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.window.as_secs_f64()
    }

    pub fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.window.as_secs_f64()
    }

    pub fn flushes_per_sec(&self) -> Option<f64> {
        self.device_flushes
            .map(|f| f as f64 / self.window.as_secs_f64())
    }

    /// A latency quantile (0.5, 0.99, ...) of one append call.
    pub fn latency_at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(quantile))
    }
}

/// What one appender thread saw.
#[derive(Debug)]
struct AppenderTally {
    records: u64,
    appends: u64,
    latency: Histogram<u64>,
    total_records: u64,
}

fn latency_histogram() -> Histogram<u64> {
    // 1 ns to 10 min at three significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Payloads for one batch; the bytes vary so that nothing downstream can
/// take a shortcut on constant data.
fn batch_payloads(batch: usize, seed: usize) -> Vec<Vec<u8>> {
    (0..batch)
        .map(|i| {
            (0..PAYLOAD_LEN)
                .map(|j| (seed.wrapping_mul(31) ^ i.wrapping_mul(7) ^ j) as u8)
                .collect()
        })
        .collect()
}

/// Runs `config.appenders` threads appending `config.batch` records per call
/// to a new log in `dir` (which must be empty), each call waiting for its
/// fdatasync. `flushes` reads the disk's flush counter at the window's ends.
pub fn run_append(
    dir: &Path,
    config: &AppendConfig,
    flushes: impl Fn() -> Option<u64>,
) -> Result<AppendResult> {
    let (log, _) = Log::open(dir, LogConfig::default())?;
    // One window for every thread; spawning them eats into the warm-up.
    let window_start = Instant::now() + config.warmup;
    let window_end = window_start + config.measure;
    let (tallies, device_flushes) = thread::scope(|s| {
        let workers: Vec<_> = (0..config.appenders)
            .map(|seed| {
                let log = log.clone();
                s.spawn(move || -> Result<AppenderTally> {
                    let payloads = batch_payloads(config.batch, seed);
                    let mut tally = AppenderTally {
                        records: 0,
                        appends: 0,
                        latency: latency_histogram(),
                        total_records: 0,
                    };
                    loop {
                        let started = Instant::now();
                        if started >= window_end {
                            break;
                        }
                        log.append_payloads(TERM, &payloads)?;
                        let done = Instant::now();
                        tally.total_records += config.batch as u64;
                        if done >= window_start && done < window_end {
                            tally.records += config.batch as u64;
                            tally.appends += 1;
                            if started >= window_start {
                                let nanos = (done - started).as_nanos();
                                tally
                                    .latency
                                    .saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
                            }
                        }
                    }
                    Ok(tally)
                })
            })
            .collect();
        thread::sleep(window_start.saturating_duration_since(Instant::now()));
        let before = flushes();
        thread::sleep(window_end.saturating_duration_since(Instant::now()));
        let after = flushes();
        let device_flushes = before.zip(after).map(|(b, a)| a.saturating_sub(b));
        let tallies: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("appender thread panicked"))
            .collect();
        (tallies, device_flushes)
    });

    let mut result = AppendResult {
        config: config.clone(),
        records: 0,
        appends: 0,
        window: window_end - window_start,
        latency: latency_histogram(),
        device_flushes,
        total_records: 0,
    };
    for tally in tallies {
        let tally = tally?;
        result.records += tally.records;
        result.appends += tally.appends;
        result.total_records += tally.total_records;
        result
            .latency
            .add(&tally.latency)
            .expect("histograms with equal bounds");
    }
    Ok(result)
}

/// How a log was filled before replaying it.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub records: u64,
    pub elapsed: Duration,
    pub segments: usize,
    /// Bytes of segment files on disk.
    pub bytes: u64,
}

/// Fills a new log in `dir` with `records` records, `batch` per durable
/// append, from one thread.
pub fn build_log(dir: &Path, records: u64, batch: usize) -> Result<BuildResult> {
    let started = Instant::now();
    let (log, _) = Log::open(dir, LogConfig::default())?;
    let mut written = 0u64;
    let mut seed = 0;
    while written < records {
        let n = batch.min((records - written) as usize);
        log.append_payloads(TERM, &batch_payloads(n, seed))?;
        written += n as u64;
        seed += 1;
    }
    drop(log);
    let elapsed = started.elapsed();
    let (segments, bytes) = segment_files(dir);
    Ok(BuildResult {
        records: written,
        elapsed,
        segments,
        bytes,
    })
}

fn segment_files(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.path().extension().and_then(|x| x.to_str())
                == Some(log_format::format::SEGMENT_EXTENSION)
        })
        .fold((0, 0), |(n, b), e| {
            (n + 1, b + e.metadata().map_or(0, |m| m.len()))
        })
}

/// One replay of an existing log.
#[derive(Debug, Clone)]
pub struct ReplayResult {
    /// Records `Log::open` reported.
    pub opened_records: u64,
    /// `Log::open`: lock, scan and CRC-check every segment.
    pub open: Duration,
    /// Records the iterator returned.
    pub iterated_records: u64,
    /// Payload bytes the iterator returned.
    pub payload_bytes: u64,
    /// Whether the iterator's indexes ran from the first index without a gap.
    pub contiguous: bool,
    /// `iter_from(first_index)` to the end.
    pub iterate: Duration,
}

impl ReplayResult {
    pub fn total(&self) -> Duration {
        self.open + self.iterate
    }
}

/// Opens the log in `dir` and reads every record in order, as a server
/// rebuilding its state at start-up would.
pub fn replay(dir: &Path) -> Result<ReplayResult> {
    let started = Instant::now();
    let (log, report) = Log::open(dir, LogConfig::default())?;
    let open = started.elapsed();

    let started = Instant::now();
    let first = log.first_index();
    let mut expected = first;
    let mut contiguous = true;
    let mut iterated_records = 0u64;
    let mut payload_bytes = 0u64;
    for record in log.iter_from(first) {
        let record = record?;
        contiguous &= record.index == expected;
        expected = record.index + 1;
        iterated_records += 1;
        payload_bytes += record.payload.len() as u64;
    }
    let iterate = started.elapsed();
    Ok(ReplayResult {
        opened_records: report.records,
        open,
        iterated_records,
        payload_bytes,
        contiguous,
        iterate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_append_is_counted_and_lands_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = AppendConfig {
            appenders: 3,
            batch: 4,
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(100),
        };
        let result = run_append(dir.path(), &config, || Some(7)).unwrap();
        assert!(result.appends > 0);
        assert_eq!(result.records, result.appends * 4);
        assert!(result.latency.len() <= result.appends);
        assert!(result.total_records >= result.records);
        assert_eq!(result.device_flushes, Some(0));
        assert_eq!(result.window, config.measure);

        let replayed = replay(dir.path()).unwrap();
        assert_eq!(replayed.iterated_records, result.total_records);
        assert_eq!(replayed.opened_records, result.total_records);
        assert!(replayed.contiguous);
    }

    #[test]
    fn a_built_log_replays_every_record_and_byte() {
        let dir = tempfile::tempdir().unwrap();
        let built = build_log(dir.path(), 1000, 300).unwrap();
        assert_eq!(built.records, 1000);
        assert_eq!(built.segments, 1);

        let replayed = replay(dir.path()).unwrap();
        assert_eq!(replayed.opened_records, 1000);
        assert_eq!(replayed.iterated_records, 1000);
        assert_eq!(replayed.payload_bytes, 1000 * PAYLOAD_LEN as u64);
        assert!(replayed.contiguous);
    }
}
