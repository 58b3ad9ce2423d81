//! End to end: a real `chat-server` and real `chat-tui` processes in
//! pseudo-terminals, their screens read back through a terminal emulator.
//! Users create their accounts on the sign-in screen; two write to each
//! other, three share a group (made, written in, read, a member removed);
//! all quit with the terminal restored.
//!
//! The server is built and started by `support/server.rs`, which the
//! start-up benches share.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tempfile::TempDir;

#[path = "support/server.rs"]
mod server;

use server::Server;

/// How long any one thing may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(30);

const ROWS: u16 = 30;
const COLS: u16 = 100;

/// A `chat-tui` in a pseudo-terminal; the process is killed when dropped.
struct Tui {
    name: &'static str,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    _master: Box<dyn MasterPty + Send>,
    _config: Option<TempDir>,
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tui {
    /// Starts `chat-tui` for `user` against `server`, with its XDG config
    /// and state in a temporary directory.
    fn start(name: &'static str, server: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut tui = Self::start_in(name, server, home.path());
        tui._config = Some(home);
        tui
    }

    /// Starts `chat-tui` with its XDG config and state (the saved session)
    /// in `home`, which the caller keeps.
    fn start_in(name: &'static str, server: &str, home: &Path) -> Self {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-tui"));
        command.args(["--servers", server, "--user", name, "--no-bell"]);
        command.env("XDG_CONFIG_HOME", home);
        command.env("XDG_STATE_HOME", home);
        command.env("TERM", "xterm-256color");
        let child = pair.slave.spawn_command(command).expect("chat-tui starts");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
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
        Self {
            name,
            child,
            writer,
            screen,
            _master: pair.master,
            _config: None,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Types `keys` (raw bytes, as a terminal sends them).
    fn send(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits until the screen shows what `expected` looks for; fails with
    /// the screen when the deadline passes. The only wait of these tests.
    fn wait_until(&self, what: &str, expected: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let contents = self.contents();
            if expected(&contents) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: no {what} after {DEADLINE:?}; the screen shows:\n{contents}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&self, text: &str) {
        self.wait_until(&format!("{text:?}"), |screen| screen.contains(text));
    }

    /// Creates the account on the sign-in screen and waits for the main
    /// screen.
    fn create_account(&mut self, password: &str) {
        self.wait_for("Password");
        // Ctrl+T switches to "create account"; the username is filled in
        // from --user and the cursor waits in the password field.
        self.send("\x14");
        self.wait_for("(•) Create account");
        // The password, then again.
        self.send(password);
        self.send("\r");
        self.wait_for("Again");
        self.send(password);
        self.send("\r");
        self.wait_for(&format!("{} @ ", self.name));
        self.wait_for("● connected");
    }

    /// Quits with Ctrl+C and checks the process ends well and leaves the
    /// alternate screen.
    fn quit(mut self) {
        self.send("\x03");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "{} did not quit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{} exited with {status:?}", self.name);
        // The reader may still be taking in the last bytes.
        self.wait_until("the main screen back", |_| {
            !self.screen.lock().unwrap().screen().alternate_screen()
        });
    }
}

#[test]
fn two_users_chat_through_a_real_server() {
    let server = Server::start();
    let mut alice = Tui::start("alice", &server.address);
    alice.create_account("alice-password");
    let mut bob = Tui::start("bob", &server.address);
    bob.create_account("bob-password");
    // Alice's directory gets bob as he is created, without a key press.
    alice.wait_for("┃  bob ");

    // Bob's directory has alice (she was created first), with no dot:
    // they share no conversation, so he is not told whether she is online.
    // He moves to her and opens the conversation (Enter), which puts him
    // in the compose pane.
    bob.wait_for("┃  alice ");
    bob.send("j\r");
    bob.wait_for("Message to alice");
    bob.send("hello from bob 👋");
    bob.send("\r");
    // "✓ sent" may last less than a screen poll: alice's client marks the
    // message delivered as soon as it arrives.
    bob.wait_until("the message sent", |screen| {
        ["✓ sent", "✓✓ delivered", "✓✓ read"]
            .iter()
            .any(|receipt| screen.contains(receipt))
    });

    // Alice sees the conversation appear with its unread badge, opens it,
    // and reads the message.
    alice.wait_until("bob with 1 unread", |screen| {
        screen
            .lines()
            .any(|line| line.contains("bob") && line.contains(" 1 "))
    });
    alice.wait_for("Users · 1 unread");
    // Moving onto the row only looks: still unread until Enter opens it.
    alice.send("j");
    alice.wait_for("Users · 1 unread");
    alice.send("\r");
    alice.wait_for("hello from bob 👋");
    alice.wait_for("no unread");
    bob.wait_for("✓✓ read");

    // Now that they share a conversation, each sees the other online.
    bob.wait_for("● alice");
    bob.wait_for("● online");
    alice.wait_for("● bob");

    // Alice answers; bob has the conversation open and sees it live.
    alice.send("hi bob, got it");
    alice.send("\r");
    bob.wait_for("hi bob, got it");
    alice.wait_for("✓✓ read");

    // Alice quits: bob sees her offline, without a key press.
    alice.quit();
    bob.wait_until("alice offline", |screen| {
        !screen.contains("● alice") && !screen.contains("● online")
    });
    bob.quit();
    drop(server);
}

#[test]
fn a_reply_to_a_deleted_account_never_reaches_who_took_the_name() {
    let server = Server::start();
    let mut alice = Tui::start("alice", &server.address);
    alice.create_account("alice-password");
    let mut carol = Tui::start("carol", &server.address);
    carol.create_account("carol-password");
    carol.wait_for("┃  alice ");
    carol.send("j\r");
    carol.wait_for("Message to alice");
    carol.send("hi alice\r");
    alice.wait_until("carol with 1 unread", |screen| {
        screen
            .lines()
            .any(|line| line.contains("carol") && line.contains(" 1 "))
    });
    alice.send("j\r");
    alice.wait_for("hi alice");

    // Carol deletes her account (out of compose first, so D is a key),
    // and someone else registers her name.
    carol.send("\t");
    carol.send("D");
    carol.wait_for("Delete account");
    carol.send("carol-password\r");
    carol.wait_for("The account was deleted.");
    carol.quit();
    let mut stranger = Tui::start("carol", &server.address);
    stranger.create_account("stranger-password");

    // Alice's client was told live: the conversation is marked.
    alice.wait_for("carol (deleted)");
    // She replies in it all the same: refused, said why, the text kept in
    // its draft.
    alice.send("are you still there?\r");
    alice.wait_for("deleted their account");
    alice.wait_for("are you still there?");
    // The stranger got nothing: the send was refused by the server, so
    // nothing can arrive later.
    let screen = stranger.contents();
    assert!(!screen.contains("are you still there?"), "{screen}");
    assert!(screen.contains("no unread"), "{screen}");

    alice.quit();
    stranger.quit();
    drop(server);
}

#[test]
fn three_users_in_one_group() {
    let server = Server::start();
    let mut alice = Tui::start("alice", &server.address);
    alice.create_account("alice-password");
    let mut bob = Tui::start("bob", &server.address);
    bob.create_account("bob-password");
    let mut carol = Tui::start("carol", &server.address);
    carol.create_account("carol-password");

    // Alice makes the group from the users pane: a title, then two members
    // picked by name from the server's completions.
    alice.send("n");
    alice.wait_for("New group");
    alice.send("crew\r");
    alice.send("bo");
    alice.wait_for("› bob");
    alice.send("\t");
    alice.send("ca");
    alice.wait_for("› carol");
    alice.send("\t");
    alice.wait_for("bob, carol");
    alice.send("\r");
    // It opens with the compose pane ready.
    alice.wait_for("Message to # crew");
    alice.wait_for("you made the group “crew”");
    alice.send("hello crew");
    alice.send("\r");

    // Bob and carol see the group in their list with one unread, open it
    // (the first row: it has the unread), and read the message.
    for member in [&mut bob, &mut carol] {
        member.wait_until("the group with 1 unread", |screen| {
            screen
                .lines()
                .any(|line| line.contains("# crew") && line.contains(" 1 "))
        });
        member.send("j\r");
        member.wait_for("hello crew");
        member.wait_for("alice made the group “crew”");
    }
    alice.wait_for("✓✓ read by all");

    // Bob answers; alice and carol see it live, with its sender.
    bob.send("hi from bob");
    bob.send("\r");
    for member in [&alice, &carol] {
        member.wait_for("hi from bob");
        // A message's header starts at the inbox's left border.
        member.wait_for("│bob  ");
    }

    // Alice shows the members (Tab leaves compose so `m` is a key), picks
    // carol (alice, the owner, is first; then bob, carol) and removes her.
    alice.send("\t");
    alice.send("m");
    alice.wait_for("Members (3)");
    alice.send("jj");
    alice.send("d");
    alice.wait_for("Remove carol from crew?");
    alice.send("y");
    alice.wait_for("Members (2)");
    alice.wait_for("you removed carol");
    bob.wait_for("alice removed carol");
    carol.wait_for("alice removed you from the group crew");

    alice.quit();
    bob.quit();
    carol.quit();
    drop(server);
}

#[test]
fn a_session_resumes_after_a_restart_until_logout() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let mut alice = Tui::start_in("alice", &server.address, home.path());
    alice.create_account("alice-password");
    alice.quit();
    let saved = home.path().join("chat-tui").join("session");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only: {mode:o}");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(!text.contains("alice-password"), "never the password");

    // Started again: the main screen, without the password.
    let mut again = Tui::start_in("alice", &server.address, home.path());
    again.wait_for("alice @ ");
    again.wait_for("● connected");
    // Logging out deletes it: the next start asks for the password.
    again.send("L");
    again.wait_for("You signed out.");
    let start = Instant::now();
    while saved.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "the saved session is still there"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    again.quit();
    let third = Tui::start_in("alice", &server.address, home.path());
    third.wait_for("not signed in");
    third.wait_for("Password");
    third.quit();
    drop(server);
}
