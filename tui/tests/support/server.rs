//! A real `chat-server` for the PTY tests and the start-up benches: built
//! (or found up to date) with the cargo that runs them, started on a free
//! port of 127.0.0.1 with a fresh data directory, killed when dropped.
//!
//! The server binary is not a dependency of chat-tui (chat-tui must never
//! depend on chat-server), so cargo does not build it for these targets:
//! the first caller builds it into the same target directory and profile
//! and finds it next to its own executable (`<target>/<profile>/chat-server`).
//! Under `cargo test --workspace` that build finds it up to date.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use tempfile::TempDir;

/// How long the server may take to say where it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `chat-server`, killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens, `127.0.0.1:PORT`.
    pub address: String,
    _data: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts a server with a fresh data directory and waits for its
    /// `listening on ADDR` line.
    pub fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(server_binary())
            .arg("--data")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chat-server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The guard exists before the wait, so a server that never gets
        // ready is killed too.
        let mut server = Self {
            child,
            address: String::new(),
            _data: data,
        };
        let line = rx
            .recv_timeout(READY_TIMEOUT)
            .expect("chat-server prints `listening on ADDR` in time");
        server.address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from chat-server: {line:?}"))
            .to_owned();
        server
    }
}

/// `<target>/<profile>/chat-server`, beside the directory of the running
/// executable (`<target>/<profile>/deps/`), built by the first caller.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the executable knows its own path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("it runs from <target>/<profile>/deps");
        build_server(profile_dir);
        let binary = profile_dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.exists(),
            "{} is missing after building it",
            binary.display()
        );
        binary
    })
}

/// Builds `chat-server` into `profile_dir` (`<target>/<profile>`), so the
/// build shares what is already compiled.
fn build_server(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        // The dev and test profiles build into `debug`.
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory is inside the target directory");
    // The cargo running this, so the toolchain is the same.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--locked", "--package", "chat-server"])
        .args(["--bin", "chat-server", "--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    // Not what cargo set for this run (this package's name and manifest,
    // ...): ring's build script watches such variables, and a changed
    // environment rebuilt half the server on every run, and again at the
    // next `cargo build` from a shell.
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_for_this_run(&name.to_string_lossy()) {
            build.env_remove(name);
        }
    }
    let status = build.status().expect("cargo starts");
    assert!(status.success(), "building chat-server failed: {status}");
}

/// Whether cargo sets `name` for the package or target it runs (as
/// opposed to the user's environment, which the build keeps).
fn set_by_cargo_for_this_run(name: &str) -> bool {
    const EXACT: [&str; 4] = [
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "OUT_DIR",
    ];
    name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_MANIFEST_") || EXACT.contains(&name)
}
