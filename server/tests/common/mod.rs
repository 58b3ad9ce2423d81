//! A real `chat-server` process for tests, killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use chat_proto::chat_client::ChatClient;
use tonic::transport::Channel;

/// A `chat-server` child process, killed when dropped (also when a test fails).
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    /// The last of what it wrote to stderr, when the test does not read
    /// stderr itself: drained all along (a pipe nobody reads would stop
    /// the server once full), and shown if the test fails.
    stderr_tail: Option<Arc<Mutex<Vec<u8>>>>,
    /// The thread that drains stderr.
    drainer: Option<std::thread::JoinHandle<()>>,
}

/// How much of a server's stderr is kept for a failing test.
const STDERR_TAIL: usize = 16 << 10;

/// Reads `from` to its end on a thread, keeping the last
/// [`STDERR_TAIL`] bytes.
fn drain(
    mut from: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&tail);
    let drainer = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut tail = keep.lock().unwrap_or_else(|e| e.into_inner());
            tail.extend_from_slice(&chunk[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    });
    (tail, drainer)
}

impl ServerProcess {
    pub fn start(dir: &Path) -> ServerProcess {
        Self::try_start(dir).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts the server and waits for its "listening on" line; on failure
    /// returns what it printed to stderr.
    pub fn try_start(dir: &Path) -> Result<ServerProcess, String> {
        Self::try_start_with(dir, &["--listen", "127.0.0.1:0"])
    }

    /// Starts the server with extra arguments.
    pub fn try_start_with(dir: &Path, args: &[&str]) -> Result<ServerProcess, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command.args(["--data", dir.to_str().unwrap()]).args(args);
        Self::spawn(command, true)
    }

    /// Starts the server with at most `descriptors` open files (`ulimit -n`).
    /// The shell execs the server, so the child's pid is the server's.
    pub fn try_start_limited(
        dir: &Path,
        descriptors: u32,
        args: &[&str],
    ) -> Result<ServerProcess, String> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {descriptors} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--data", dir.to_str().unwrap()])
            .args(args);
        Self::spawn(command, true)
    }

    /// Starts the server with `RUST_LOG=filter`; the caller reads (and
    /// must keep reading) `child.stderr`. Nothing reads it until the server
    /// is listening, so the filter must not log a pipe's worth (64 KiB)
    /// before that.
    pub fn try_start_logging(
        dir: &Path,
        filter: &str,
        args: &[&str],
    ) -> Result<ServerProcess, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command
            .args(["--data", dir.to_str().unwrap()])
            .args(args)
            .env("RUST_LOG", filter);
        Self::spawn(command, false)
    }

    /// Spawns `command` and waits for its "listening on" line; `drain`:
    /// its stderr is read (and kept for a failing test) from then on.
    fn spawn(mut command: Command, drain_stderr: bool) -> Result<ServerProcess, String> {
        if command.get_envs().all(|(k, _)| k != "RUST_LOG") {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chat-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read stdout");
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => {
                let (stderr_tail, drainer) = match child.stderr.take() {
                    Some(stderr) if drain_stderr => {
                        let (tail, drainer) = drain(stderr);
                        (Some(tail), Some(drainer))
                    }
                    stderr => {
                        child.stderr = stderr;
                        (None, None)
                    }
                };
                Ok(ServerProcess {
                    addr: addr.to_string(),
                    child,
                    stderr_tail,
                    drainer,
                })
            }
            None => {
                let out = child.wait_with_output().expect("wait");
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        }
    }

    pub async fn client(&self) -> ChatClient<Channel> {
        let ch = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        ChatClient::new(ch)
    }

    /// Sends SIGTERM and waits up to `within` for the exit (a test whose
    /// server does not stop fails, and the guard kills it).
    pub fn terminate(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        use wait_timeout::ChildExt;
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "cannot send SIGTERM to {pid}"
        );
        // Blocks this runtime thread only; the tests run multi-threaded.
        tokio::task::block_in_place(|| self.child.wait_timeout(within))
            .expect("wait for the server")
            .unwrap_or_else(|| panic!("the server did not stop within {within:?} of SIGTERM"))
    }

    /// The end of what the server wrote to stderr (the last 16 KiB), once
    /// it has exited.
    pub fn stderr_after_exit(&mut self) -> String {
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
        let tail = self.stderr_tail.as_ref().expect("stderr is drained");
        String::from_utf8_lossy(&tail.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(tail) = &self.stderr_tail
        {
            let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "--- the end of stderr of the server at {} ---\n{}",
                self.addr,
                String::from_utf8_lossy(&tail)
            );
        }
    }
}
