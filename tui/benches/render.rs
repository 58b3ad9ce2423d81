//! How fast chat-tui draws and starts.
//!
//! - `draw/conversation_10k_*`: one frame of a conversation with 10,000
//!   loaded messages, at the bottom and scrolled half-way up (target: under
//!   2 ms), into ratatui's `TestBackend`.
//! - `startup/in_process`: building the app and drawing the first sign-in
//!   frame, in-process.
//! - `startup/pty_to_sign_in`: from spawning the real binary in a
//!   pseudo-terminal to the sign-in form showing on its screen (target:
//!   under 100 ms).
//!
//! Run with `cargo bench -p chat-tui --bench render`.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use chat_client::{HistoryPage, Message};
use chat_tui::action::{Action, Scroll};
use chat_tui::app::{App, AppConfig};
use chat_tui::message::ServerEvent;
use chat_tui::state::{ChatId, Pane};
use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

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
                total += spawn_until_sign_in();
            }
            total
        });
    });
    group.finish();
}

/// Spawns chat-tui in a pseudo-terminal and returns how long until its
/// screen shows the sign-in form.
fn spawn_until_sign_in() -> Duration {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let config = tempfile::tempdir().unwrap();
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-tui"));
    command.env("XDG_CONFIG_HOME", config.path());
    command.env("TERM", "xterm-256color");
    let screen = Arc::new(Mutex::new(vt100::Parser::new(24, 80, 0)));
    let start = Instant::now();
    let mut child = pair.slave.spawn_command(command).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let feed = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            feed.lock().unwrap().process(&buffer[..n]);
        }
    });
    let elapsed = loop {
        if screen
            .lock()
            .unwrap()
            .screen()
            .contents()
            .contains("Password")
        {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no sign-in screen"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

criterion_group!(benches, draw, startup);
criterion_main!(benches);
