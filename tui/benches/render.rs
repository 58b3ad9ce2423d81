//! How fast chat-tui draws and starts, and what it costs when idle.
//!
//! - `draw/conversation_10k_*`: one frame of a conversation with 10,000
//!   loaded messages, at the bottom and scrolled half-way up (target: under
//!   2 ms), into ratatui's `TestBackend`.
//! - `startup/in_process`: building the app and drawing the first sign-in
//!   frame, in-process.
//! - `startup/pty_to_sign_in`: from spawning the real binary in a
//!   pseudo-terminal to the sign-in form showing on its screen (target:
//!   under 100 ms).
//! - `startup/pty_resumed_to_conversations`: the same with a saved session
//!   on a real `chat-server`, until the main screen shows the conversation
//!   list, no key pressed (target: at most 150 ms).
//! - `idle/cpu_10s`: not a criterion bench but one printed measurement:
//!   the CPU time chat-tui takes (user + system, from `/proc/PID/stat`)
//!   over 10 s of sitting resumed on its main screen (target: 0%, no busy
//!   loop). It runs with no filter or `-- idle`, only under `cargo bench`.
//!
//! The server is built and started by `tests/support/server.rs`, as for
//! the PTY tests.
//!
//! Run with `cargo bench -p chat-tui --bench render`.

use std::io::Read;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use chat_client::{Client, ClientConfig, HistoryPage, Message};
use chat_tui::action::{Action, Scroll};
use chat_tui::app::{App, AppConfig};
use chat_tui::message::ServerEvent;
use chat_tui::session_file::Saved;
use chat_tui::state::{ChatId, Pane};
use criterion::{Criterion, criterion_group};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tempfile::TempDir;

#[path = "../tests/support/server.rs"]
mod server;

use server::Server;

const MESSAGES: u64 = 10_000;

/// An app with a conversation of `MESSAGES` messages open.
fn big_conversation() -> App {
    let mut app = App::new(AppConfig::default());
    app.on_server_event(ServerEvent::SignedIn {
        username: "alice".to_owned(),
        account_id: 1,
        server: "127.0.0.1:50051".to_owned(),
    });
    app.open(ChatId::Direct(2), "bob");
    let messages = (1..=MESSAGES)
        .rev()
        .map(|i| {
            let (from, to) = if i % 3 == 0 { (1, 2) } else { (2, 1) };
            let name = |id| if id == 1 { "alice" } else { "bob" };
            Message {
                id: i + 10,
                from: name(from).to_owned(),
                from_account_id: from,
                to: name(to).to_owned(),
                to_account_id: to,
                body: format!(
                    "message {i}: some text long enough to wrap over a couple of lines in a \
                     pane of ordinary width, with an emoji 👍 and 日本語 for good measure"
                ),
                sent_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i * 37),
                delivered: true,
                read: i % 2 == 0,
                conversation_id: 0,
                in_group: false,
                read_by: 0,
                readers: 1,
            }
        })
        .collect();
    app.on_server_event(ServerEvent::History {
        chat: ChatId::Direct(2),
        page: Ok(HistoryPage {
            messages,
            next_before: None,
            group_changes: Vec::new(),
        }),
    });
    app.update(Action::Focus(Pane::Inbox));
    app.take_effects();
    app
}

fn draw(c: &mut Criterion) {
    let mut group = c.benchmark_group("draw");
    for (width, height) in [(80, 24), (120, 40)] {
        let app = big_conversation();
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        group.bench_function(format!("conversation_10k_bottom_{width}x{height}"), |b| {
            b.iter(|| {
                terminal.draw(|frame| app.draw(frame)).unwrap();
            });
        });
        let mut app = big_conversation();
        // Scrolled 15,000 lines up (which stops following the selection).
        app.update(Action::Scroll(Scroll::Up(15_000)));
        group.bench_function(format!("conversation_10k_middle_{width}x{height}"), |b| {
            b.iter(|| {
                terminal.draw(|frame| app.draw(frame)).unwrap();
            });
        });
    }
    group.finish();
}

fn startup(c: &mut Criterion) {
    let mut group = c.benchmark_group("startup");
    group.bench_function("in_process", |b| {
        b.iter(|| {
            let app = chat_tui::initial_app(
                &chat_tui::cli::Cli::default(),
                &chat_tui::settings::Settings::default(),
            );
            let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
            terminal.draw(|frame| app.draw(frame)).unwrap();
        });
    });
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("pty_to_sign_in", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let config = tempfile::tempdir().unwrap();
                let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-tui"));
                command.env("XDG_CONFIG_HOME", config.path());
                // No saved session of whoever runs the bench.
                command.env("XDG_STATE_HOME", config.path());
                let (tui, start) = PtyTui::spawn(command);
                total += tui.wait_for(start, "the sign-in form", |screen| {
                    screen.contains("Password")
                });
            }
            total
        });
    });
    // Set up on first use, so a filter that skips the bench skips the
    // server too; killed when the group ends (or a panic unwinds).
    let mut resumed: Option<ResumedSession> = None;
    group.bench_function("pty_resumed_to_conversations", |b| {
        let resumed = resumed.get_or_insert_with(ResumedSession::set_up);
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let (tui, start) = resumed.spawn();
                total += tui.wait_for(start, "the conversations", shows_conversations);
            }
            total
        });
    });
    group.finish();
}

/// How long to wait for any one thing before giving up.
const DEADLINE: Duration = Duration::from_secs(10);

const ROWS: u16 = 24;
const COLS: u16 = 80;

/// chat-tui in a pseudo-terminal, its screen read back through a terminal
/// emulator; the process is killed when dropped.
struct PtyTui {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Bytes written to the terminal so far: while idle, anything here is
    /// a redraw.
    output: Arc<AtomicU64>,
    /// Kept open so the child keeps its terminal until it is killed.
    _master: Box<dyn MasterPty + Send>,
}

impl Drop for PtyTui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PtyTui {
    /// Spawns `command` in a fresh 80x24 pseudo-terminal; returns it with
    /// the instant just before the spawn.
    fn spawn(mut command: CommandBuilder) -> (Self, Instant) {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        command.env("TERM", "xterm-256color");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let output = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let child = pair.slave.spawn_command(command).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let (feed, count) = (Arc::clone(&screen), Arc::clone(&output));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                feed.lock().unwrap().process(&buffer[..n]);
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        let tui = Self {
            child,
            screen,
            output,
            _master: pair.master,
        };
        (tui, start)
    }

    /// Waits until the screen shows what `expected` looks for and returns
    /// the time since `start`; fails with the screen after [`DEADLINE`].
    fn wait_for(&self, start: Instant, what: &str, expected: impl Fn(&str) -> bool) -> Duration {
        loop {
            let contents = self.screen.lock().unwrap().screen().contents();
            if expected(&contents) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what} after {DEADLINE:?}; the screen shows:\n{contents}"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// The main screen of the resumed session with its conversation list: the
/// status bar names alice, and the users pane has bob's conversation with
/// its unread badge (which only the loaded conversations can give).
fn shows_conversations(screen: &str) -> bool {
    screen.contains("alice @ ")
        && screen
            .lines()
            .any(|line| line.contains("bob") && line.contains(&format!(" {UNREAD} ")))
}

/// How many messages bob sends alice before she resumes.
const UNREAD: usize = 3;

/// A server where bob has written to alice, and alice's saved session for
/// it, as chat-tui writes it after a sign-in.
struct ResumedSession {
    server: Server,
    /// `XDG_STATE_HOME` and `XDG_CONFIG_HOME` of every chat-tui started:
    /// the session is `chat-tui/session` in it.
    home: TempDir,
}

impl ResumedSession {
    fn set_up() -> Self {
        let server = Server::start();
        let home = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let token = runtime.block_on(async {
            let client = Client::connect(ClientConfig {
                servers: vec![server.address.clone()],
                ..ClientConfig::default()
            })
            .await
            .expect("the server accepts a connection");
            for name in ["alice", "bob"] {
                let password = format!("{name}-password");
                client.create_account(name, &password).await.unwrap();
            }
            let bob = client.login("bob", "bob-password").await.unwrap();
            for i in 1..=UNREAD {
                let body = format!("message {i} from bob, waiting for alice");
                client.send(&bob.token, "alice", &body).await.unwrap();
            }
            // Never logged out: a resume needs the session open, and
            // resuming does not close it.
            client.login("alice", "alice-password").await.unwrap().token
        });
        let saved = Saved {
            servers: vec![server.address.clone()],
            username: "alice".to_owned(),
            token,
        };
        saved
            .save(&home.path().join("chat-tui").join("session"))
            .unwrap();
        Self { server, home }
    }

    /// Starts chat-tui on the saved session (it resumes it at once).
    fn spawn(&self) -> (PtyTui, Instant) {
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-tui"));
        command.args(["--servers", &self.server.address]);
        command.env("XDG_STATE_HOME", self.home.path());
        command.env("XDG_CONFIG_HOME", self.home.path());
        PtyTui::spawn(command)
    }
}

/// How long chat-tui is watched once idle.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Starts chat-tui resumed, waits until its conversations show and it is
/// connected, lets it settle for a second, then prints the CPU time it
/// takes over [`IDLE_WINDOW`] with nothing happening, and the bytes it
/// writes to its terminal meanwhile.
fn idle_cpu() {
    let resumed = ResumedSession::set_up();
    let (tui, start) = resumed.spawn();
    tui.wait_for(start, "the conversations, connected", |screen| {
        shows_conversations(screen) && screen.contains("● connected")
    });
    // What start-up set going (the directory page, the subscription)
    // finishes first, so the window holds idleness, not start-up's tail.
    std::thread::sleep(Duration::from_secs(1));
    let pid = tui.child.process_id().expect("chat-tui has a pid");
    let ticks_per_second = clock_ticks_per_second();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (ticks_before, bytes_before) = (cpu_ticks(pid), tui.output.load(Ordering::Relaxed));
    let window = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let (ticks_after, bytes_after) = (cpu_ticks(pid), tui.output.load(Ordering::Relaxed));
    let elapsed = window.elapsed();
    let ticks = ticks_after - ticks_before;
    let seconds = ticks as f64 / ticks_per_second as f64;
    println!(
        "idle/cpu_10s: {ticks} ticks of CPU (1/{ticks_per_second} s) in {:.2} s = {:.2}% CPU; \
         {} bytes written to the terminal; load average {}",
        elapsed.as_secs_f64(),
        100.0 * seconds / elapsed.as_secs_f64(),
        bytes_after - bytes_before,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
}

/// User plus system CPU time of process `pid` (all its threads), in clock
/// ticks: fields 14 and 15 of `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces;
    // after it come field 3 (the state) onwards.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a `)` after the command name")
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("a number of ticks") };
    field(14) + field(15)
}

/// `getconf CLK_TCK`: the unit of the times in `/proc/PID/stat`.
fn clock_ticks_per_second() -> u64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("getconf CLK_TCK prints a number")
}

/// Whether this run asks for the idle measurement: a real `cargo bench`
/// run (not the single pass of `cargo test --benches`) with no filter, or a
/// filter that `idle/cpu_10s` contains (`-- idle`).
fn wants_idle(args: &[String]) -> bool {
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    args.iter().any(|arg| arg == "--bench")
        && (filters.is_empty() || filters.iter().any(|f| "idle/cpu_10s".contains(f.as_str())))
}

criterion_group!(benches, draw, startup);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if wants_idle(&args) {
        idle_cpu();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
