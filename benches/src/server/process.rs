//! The `chat-server` binary as a child process: found next to the bench,
//! started on `127.0.0.1:0`, ready once it prints `listening on ADDR`, and
//! killed when its guard drops, whatever happened in between.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The binary's file name, as cargo builds it into `target/<profile>/`.
pub const SERVER_BINARY: &str = "chat-server";

/// What the server prints on standard output once it answers requests.
pub const LISTENING_PREFIX: &str = "listening on ";

/// The log filter given to the server: its own default, made explicit so
/// that a `RUST_LOG` in the bench's environment cannot hide the
/// "replayed the log" line.
pub const SERVER_LOG_FILTER: &str = "info,openraft=warn";

/// The server's per-address limit on account creations.
pub const ACCOUNT_LIMIT_FLAG: &str = "--account-creations-per-minute";

/// Where `cargo build --release -p chat-server` puts the binary, seen from a
/// bench executable in `target/release/deps/`.
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench executable is not in target/<profile>/deps")?;
    Ok(profile_dir.join(SERVER_BINARY))
}

/// A running `chat-server`. Dropping it kills the process (SIGKILL) if
/// [`stop`](Self::stop) did not end it first.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The address from its `listening on` line.
    pub addr: SocketAddr,
    /// Just before the process was spawned.
    pub spawned_at: Instant,
    /// From spawning the process to reading its `listening on` line: the
    /// start-up time a client sees, log replay included.
    pub ready_after: Duration,
    /// Every line it wrote to standard error so far (tracing output).
    stderr: Arc<Mutex<Vec<String>>>,
    /// How many lines `stderr` holds: changes with each line, so a wait
    /// for one wakes when it comes (closed when standard error is).
    stderr_written: tokio::sync::watch::Receiver<usize>,
    exited: bool,
}

impl ServerProcess {
    /// Starts `binary --data data_dir --listen 127.0.0.1:0` and waits up to
    /// `timeout` for it to say where it listens.
    pub fn start(binary: &Path, data_dir: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let listen = ["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        Self::start_with(binary, data_dir, &listen, SERVER_LOG_FILTER, timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `binary --data data_dir ARGS...`, e.g. a cluster member with
    /// its `--id`, `--listen`, `--peers` and `--cluster-secret-file`, with
    /// `RUST_LOG=log_filter` (it must keep the server's info lines, e.g.
    /// [`SERVER_LOG_FILTER`]), and waits up to `timeout` for it to say
    /// where it listens.
    pub fn start_with(
        binary: &Path,
        data_dir: &Path,
        args: &[String],
        log_filter: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "{} not found: build the server first with `cargo build --release -p chat-server` \
                 (or pass --server-bin PATH)",
                binary.display()
            );
        }
        let mut command = Command::new(binary);
        command.arg("--data").arg(data_dir);
        // The load generator creates all its accounts from one address,
        // faster than the per-address limit allows real clients; a caller
        // that states a limit (the abuse bench) gets that one.
        if !args.iter().any(|a| a == ACCOUNT_LIMIT_FLAG) {
            command.args([ACCOUNT_LIMIT_FLAG, "0"]);
        }
        let spawned_at = Instant::now();
        let child = command
            .args(args)
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Self::wait_listening(child, spawned_at, timeout)
    }

    /// Drains a spawned server's pipes (for its whole life: a full pipe
    /// would block the server's writes, and with them its threads) and
    /// waits up to `timeout` for its `listening on` line. The process is
    /// killed if that fails.
    fn wait_listening(
        mut child: Child,
        spawned_at: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || read_stdout(stdout, &ready_tx));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr_lines);
        let (written, stderr_written) = tokio::sync::watch::channel(0);
        thread::spawn(move || read_stderr(stderr, &sink, &written));
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned_at,
            ready_after: Duration::ZERO,
            stderr: stderr_lines,
            stderr_written,
            exited: false,
        };
        match ready_rx.recv_timeout(timeout) {
            Ok((at, line)) => match parse_listening(&line) {
                Some(addr) => {
                    server.addr = addr;
                    server.ready_after = at - spawned_at;
                    Ok(server)
                }
                None => bail!(
                    "chat-server printed {line:?} before `listening on ADDR`{}",
                    server.stderr_tail()
                ),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "chat-server did not print `listening on` within {timeout:?}{}",
                server.stderr_tail()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Standard output closed: it exited. Give stderr a moment to
                // be read to its end for the message.
                let status = server.wait_for_exit(Duration::from_secs(5));
                thread::sleep(Duration::from_millis(50));
                bail!(
                    "chat-server exited ({}) before it was ready{}",
                    status.map_or("still running".to_owned(), |s| s.to_string()),
                    server.stderr_tail()
                )
            }
        }
    }

    /// Kills the server with SIGKILL, as a crash would (nothing is flushed,
    /// no stream is ended), and reaps it. Returns the instant the signal
    /// had been sent: from then on the process runs no more of its code.
    /// What it wrote to standard error stays readable.
    pub fn kill(&mut self) -> anyhow::Result<Instant> {
        // Once reaped, the pid may already be another process's.
        if self.exited {
            bail!("chat-server {} has already exited", self.pid());
        }
        let pid = Pid::from_raw(i32::try_from(self.pid()).context("pid out of range")?);
        kill(pid, Signal::SIGKILL).context("cannot send SIGKILL to chat-server")?;
        let killed_at = Instant::now();
        self.child
            .wait()
            .context("cannot reap the killed chat-server")?;
        self.exited = true;
        Ok(killed_at)
    }

    /// Asks the server to stop (SIGTERM: stop accepting, end the streams,
    /// flush) and waits up to `timeout` for it to exit. Returns how long
    /// that took; fails if it did not exit cleanly.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let pid = Pid::from_raw(i32::try_from(self.pid()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("cannot send SIGTERM to chat-server")?;
        let Some(status) = self.wait_for_exit(timeout) else {
            bail!(
                "chat-server did not exit within {timeout:?} of SIGTERM{}",
                self.stderr_tail()
            );
        };
        let took = started.elapsed();
        if !status.success() {
            bail!(
                "chat-server exited with {status} after SIGTERM{}",
                self.stderr_tail()
            );
        }
        Ok(took)
    }

    /// Polls for the exit; `None` if it is still running after `timeout`.
    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exited = true;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Waits up to `within` until `found` finds what it looks for in the
    /// lines written to standard error, looking again as each new line
    /// comes; `None` if it did not by then.
    pub async fn wait_for_stderr<T>(
        &self,
        within: Duration,
        found: impl Fn(&[String]) -> Option<T>,
    ) -> Option<T> {
        let mut written = self.stderr_written.clone();
        let look = async {
            loop {
                // Marked seen before the look: a line after it wakes the wait.
                written.borrow_and_update();
                if let Some(t) = found(&self.stderr.lock().expect("stderr lock")) {
                    return Some(t);
                }
                if written.changed().await.is_err() {
                    // Standard error closed: no line is coming.
                    return None;
                }
            }
        };
        tokio::time::timeout(within, look).await.ok().flatten()
    }

    /// Waits up to `within` until every snapshot build the server has
    /// logged beginning has logged its end; `false` if one still runs.
    pub async fn builds_ended(&self, within: Duration) -> bool {
        let ended = |lines: &[String]| {
            let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
            (count("built a snapshot") >= count("building a snapshot")).then_some(())
        };
        self.wait_for_stderr(within, ended).await.is_some()
    }

    /// The lines written to standard error so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The server's report of filling its body cache after a start, once
    /// it is logged, waiting for it up to `within`.
    pub async fn cache_warmed(&self, within: Duration) -> Option<CacheWarmed> {
        let warmed = |lines: &[String]| lines.iter().find_map(|l| CacheWarmed::parse(l));
        self.wait_for_stderr(within, warmed).await
    }

    /// The server's own report of its start-up replay, waiting for it up
    /// to `within` (it is logged before `listening on`, but its reader
    /// thread may trail the standard output one).
    pub async fn replay_report(&self, within: Duration) -> Option<ReplayReport> {
        let report = |lines: &[String]| lines.iter().find_map(|l| ReplayReport::parse(l));
        self.wait_for_stderr(within, report).await
    }

    /// User plus system CPU time the server has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// The last lines of standard error, for an error message.
    fn stderr_tail(&self) -> String {
        let lines = self.stderr_lines();
        if lines.is_empty() {
            return String::new();
        }
        let tail = &lines[lines.len().saturating_sub(20)..];
        format!("; its last standard error lines:\n{}", tail.join("\n"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !self.exited {
            // Already gone is fine; anything else cannot be helped here.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_stdout(stdout: impl Read, ready: &mpsc::Sender<(Instant, String)>) {
    let mut lines = BufReader::new(stdout).lines();
    if let Some(Ok(first)) = lines.next() {
        let _ = ready.send((Instant::now(), first));
    }
    for _ in lines {}
}

fn read_stderr(
    stderr: impl Read,
    sink: &Mutex<Vec<String>>,
    written: &tokio::sync::watch::Sender<usize>,
) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        let mut lines = sink.lock().expect("stderr lock");
        lines.push(strip_ansi(&line));
        written.send_replace(lines.len());
    }
}

/// The address of a `listening on ADDR` line.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(LISTENING_PREFIX)?.parse().ok()
}

/// Removes terminal colour codes (`ESC [ ... m`), should the server's
/// tracing output carry them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The "replayed the log" line the server logs at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// The whole line, colour codes removed.
    pub line: String,
    /// Records `Log::open` found.
    pub records: Option<u64>,
    /// Records applied to the state machine before Raft started.
    pub replayed: Option<u64>,
    /// From opening the log to the end of the replay, by the server's clock.
    pub elapsed_ms: Option<u64>,
}

impl ReplayReport {
    pub const MESSAGE: &str = "replayed the log";

    pub fn parse(line: &str) -> Option<ReplayReport> {
        if !line.contains(Self::MESSAGE) {
            return None;
        }
        Some(ReplayReport {
            line: line.to_owned(),
            records: field(line, "records"),
            replayed: field(line, "replayed"),
            elapsed_ms: field(line, "elapsed_ms"),
        })
    }
}

/// The number after `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace().find_map(|word| {
        word.strip_prefix(name)?
            .strip_prefix('=')?
            .trim_end_matches(',')
            .parse()
            .ok()
    })
}

/// The server's line on filling its body cache from the archive after a
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheWarmed {
    pub messages: u64,
    /// What they weigh in the cache.
    pub bytes: u64,
    pub elapsed_ms: u64,
}

impl std::fmt::Display for CacheWarmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages, {:.1} MiB, in {} ms",
            self.messages,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.elapsed_ms
        )
    }
}

impl CacheWarmed {
    pub fn parse(line: &str) -> Option<CacheWarmed> {
        if !line.contains("filled the body cache") {
            return None;
        }
        Some(CacheWarmed {
            messages: field(line, "messages")?,
            bytes: field(line, "bytes")?,
            elapsed_ms: field(line, "elapsed_ms")?,
        })
    }
}

/// A snapshot the server built while running, from its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBuild {
    /// The encoded state.
    pub bytes: u64,
    /// How long it took.
    pub took_ms: u64,
    /// How long applying waited for it (while the state was copied).
    pub writes_paused_ms: u64,
}

impl SnapshotBuild {
    pub fn parse(line: &str) -> Option<SnapshotBuild> {
        if !line.contains("built a snapshot from a copy of the state") {
            return None;
        }
        Some(SnapshotBuild {
            bytes: field(line, "bytes")?,
            took_ms: field(line, "elapsed_ms")?,
            writes_paused_ms: field(line, "writes_paused_ms")?,
        })
    }
}

/// Clock ticks per second in `/proc/<pid>/stat`: `USER_HZ`, which Linux
/// fixes at 100 for user space whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// User plus system time from a `/proc/<pid>/stat` file.
pub fn cpu_time_of(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Resident memory of process `pid` (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss(&status)
}

/// Resident memory of process `pid` once it has settled: sampled every
/// half second until it moves by less than 1% between two samples, or
/// `within` has passed. The allocator returns memory freed in bulk (a
/// snapshot's read buffer, a snapshot build's copy of the state) to the
/// system only after a delay; what a user sees a few seconds later is the
/// settled figure.
pub async fn settled_rss_of(pid: u32, within: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = rss_of(pid)?;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_of(pid)?;
        let moved = now.abs_diff(last) as f64 / last.max(1) as f64;
        last = now;
        if moved < 0.01 {
            break;
        }
    }
    Some(last)
}

/// The `VmRSS:   1234 kB` line of a `status` file, in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

/// The most resident memory process `pid` has had since it started
/// (`VmHWM`), e.g. at the height of a snapshot build.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(status.as_str(), "VmHWM:")
}

/// The value of the `/proc/PID/status` line `key`, given in kB, in bytes.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Fields 14 and 15 (utime, stime) of a `stat` line, counted after the
/// command name, which is in parentheses and may itself hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is at 0, so field 14 is at 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            parse_listening("listening on 127.0.0.1:40123\n"),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(parse_listening("starting"), None);
        assert_eq!(parse_listening("listening on nowhere"), None);
    }

    #[test]
    fn the_replay_line_gives_its_fields() {
        let line = "\u{1b}[2m2025-01-01T00:00:00.000001Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    chat_server::node: replayed the log records=1000130 replayed=1000129 \
                    last_applied=1000129 elapsed_ms=812";
        let report = ReplayReport::parse(&strip_ansi(line)).unwrap();
        assert_eq!(report.records, Some(1_000_130));
        assert_eq!(report.replayed, Some(1_000_129));
        assert_eq!(report.elapsed_ms, Some(812));
        assert!(
            report
                .line
                .starts_with("2025-01-01T00:00:00.000001Z  INFO chat_server")
        );
        assert_eq!(ReplayReport::parse("INFO serving addr=127.0.0.1:1"), None);
    }

    #[test]
    fn snapshot_lines_give_size_and_time() {
        let line = "2025-01-01T00:00:00Z  INFO chat_server::raft::state_machine: built a \
                    snapshot from a copy of the state; writes went on upto=T1-N1.500000 \
                    bytes=10485760 writes_paused_ms=3 elapsed_ms=1300";
        assert_eq!(
            SnapshotBuild::parse(line),
            Some(SnapshotBuild {
                bytes: 10_485_760,
                took_ms: 1300,
                writes_paused_ms: 3,
            })
        );
        assert_eq!(SnapshotBuild::parse("building a snapshot"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (chat server) S 1 4242 4242 0 -1 4194560 2718 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert!(cpu_time_of("/proc/self/stat").is_some());
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tchat-server\nVmPeak:\t  9000 kB\nVmRSS:\t  5120 kB\nThreads:\t9\n";
        assert_eq!(parse_rss(status), Some(5120 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        assert!(rss_of(std::process::id()).is_some());
        let status = "VmHWM:\t  7168 kB\nVmRSS:\t  5120 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(7168 * 1024));
        // Read after the RSS, the peak is at least that.
        let rss = rss_of(std::process::id()).unwrap();
        assert!(peak_rss_of(std::process::id()).unwrap() >= rss);
    }

    #[test]
    fn a_missing_binary_names_the_build_command() {
        let dir = tempfile::tempdir().unwrap();
        let error = ServerProcess::start(
            &dir.path().join("chat-server"),
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cargo build --release -p chat-server"),
            "{error}"
        );
    }
}
