//! `chat-tui`, the full-screen terminal client of the chat system.
//!
//! Two loops run side by side. The **UI loop** ([`run`]) waits for a
//! terminal event or an event from the client task, applies it to the
//! [`App`], carries out the effects that asks for and draws a frame; it
//! never awaits the network, and with nothing happening it sleeps (no
//! timer, no polling). The **client task** ([`net`]) owns the
//! connection and the session: it turns [`Command`](message::Command)s into
//! calls and the subscription into [`ServerEvent`]s.
//!
//! - [`app`]: the state machine tying state, panes and effects together.
//! - [`state`]: what the client knows, as plain data.
//! - [`components`]: the panes and dialogs, each drawing itself.
//! - [`action`], [`message`]: what keys ask of the app, and what the app
//!   and the client task tell each other.
//! - [`net`]: the client task.
//! - [`terminal`]: entering and always restoring the terminal.
//! - [`editor`], [`text`]: text editing, measuring and wrapping.
//! - [`settings`]: the remembered server and username.

pub mod action;
pub mod app;
pub mod cli;
pub mod components;
pub mod editor;
pub mod message;
pub mod net;
pub mod session_file;
pub mod settings;
pub mod state;
pub mod terminal;
pub mod text;
pub mod theme;

use anyhow::Context;
use crossterm::event::EventStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::StreamExt;

use crate::action::{Action, Effect};
use crate::app::{App, AppConfig};
use crate::cli::Cli;
use crate::message::ServerEvent;
use crate::settings::Settings;
use crate::state::Notify;
use crate::terminal::Tui;
use crate::theme::Theme;

/// The app as the command line and the remembered settings start it.
pub fn initial_app(cli: &Cli, remembered: &Settings) -> App {
    let servers = if !cli.servers.is_empty() {
        cli.servers.clone()
    } else if !remembered.servers.is_empty() {
        remembered.servers.clone()
    } else {
        vec![chat_client::DEFAULT_SERVER.to_owned()]
    };
    let time_zone = *chrono::Local::now().offset();
    App::new(AppConfig {
        servers,
        username: cli.user.clone().or_else(|| remembered.username.clone()),
        notify: if cli.no_bell {
            Notify::Off
        } else {
            cli.notify.or(remembered.notify).unwrap_or_default()
        },
        muted: remembered.muted.clone(),
        theme: Theme::configured(remembered.theme.as_deref(), &remembered.colors),
        time_zone,
        id_prefix: chat_client::Client::new_client_msg_id(),
    })
}

/// Writes the settings, off the UI loop: failing to remember is not worth
/// interrupting anyone for.
fn save(path: Option<std::path::PathBuf>, settings: &Settings) {
    if let Some(path) = path {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || settings.save(&path));
    }
}

/// Runs the program until the user quits. The terminal is restored on every
/// way out.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings_path = settings::path();
    let mut remembered = settings_path
        .as_deref()
        .map(Settings::load)
        .unwrap_or_default();
    let mut app = initial_app(&cli, &remembered);
    let tls_ca =
        match &cli.tls_ca {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("cannot read the TLS CA certificate {}", path.display())
            })?),
            None => None,
        };
    // The saved session: resumed unless --forget, or another user or server
    // list is asked for.
    let session_path = session_file::path();
    if cli.forget
        && let Some(path) = session_path.as_deref()
    {
        session_file::forget(path)
            .with_context(|| format!("cannot delete the saved session {}", path.display()))?;
    }
    let session_path = session_path.filter(|_| !cli.forget);
    let saved = session_path.as_deref().and_then(session_file::Saved::load);
    if let Some(saved) = saved
        && (cli.servers.is_empty() || cli.servers == saved.servers)
        && (cli.user.as_ref()).is_none_or(|user| user.eq_ignore_ascii_case(&saved.username))
    {
        app.resume(saved.servers);
    }
    let (commands, mut events) = net::spawn(tls_ca, session_path.clone());
    // What the app asked for before the loop (resuming the session).
    for effect in app.take_effects() {
        if let Effect::Command(command) = effect {
            let _ = commands.send(command);
        }
    }
    let mut tui = Tui::enter().context("cannot set up the terminal")?;
    let mut input = Some(EventStream::new());
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    draw(&mut tui, &mut app)?;
    loop {
        let Some(stream) = input.as_mut() else {
            input = Some(EventStream::new());
            continue;
        };
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => app.handle_event(event),
                Some(Err(error)) => return Err(error).context("cannot read the terminal"),
                None => break,
            },
            event = events.recv() => match event {
                Some(event) => {
                    app.on_server_event(event);
                    drain(&mut app, &mut events);
                }
                None => anyhow::bail!("the client task stopped"),
            },
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
        }
        let mut quit = false;
        for effect in app.take_effects() {
            match effect {
                Effect::Command(command) => {
                    commands
                        .send(command)
                        .map_err(|_| anyhow::anyhow!("the client task stopped"))?;
                }
                Effect::Bell => tui.bell()?,
                Effect::Notify { title, body } => tui.notify(&title, &body)?,
                Effect::EditDraft(draft) => {
                    // The editor reads the terminal itself: the event stream
                    // must stop reading it first.
                    input = None;
                    tui.suspend();
                    let edited = edit_externally(&draft);
                    tui.resume()?;
                    match edited {
                        Ok(text) => app.update(Action::DraftEdited(text)),
                        Err(error) => app.update(Action::Error(format!("$EDITOR: {error:#}"))),
                    }
                }
                Effect::Remember { servers, username } => {
                    remembered.servers = servers;
                    remembered.username = Some(username);
                    save(settings_path.clone(), &remembered);
                }
                Effect::ForgetSession => {
                    if let Some(path) = session_path.as_deref() {
                        // A session the server has ended cannot be resumed
                        // anyway; failing to delete it is not worth stopping.
                        let _ = session_file::forget(path);
                    }
                }
                Effect::SaveMuted(muted) => {
                    remembered.muted = muted;
                    save(settings_path.clone(), &remembered);
                }
                Effect::Quit => quit = true,
            }
        }
        if quit {
            break;
        }
        draw(&mut tui, &mut app)?;
    }
    Ok(())
}

/// Applies the events already waiting, so a burst (a backlog after
/// reconnecting) costs one frame, not one per event.
fn drain(app: &mut App, events: &mut UnboundedReceiver<ServerEvent>) {
    for _ in 0..1024 {
        match events.try_recv() {
            Ok(event) => app.on_server_event(event),
            Err(_) => return,
        }
    }
}

/// Draws a frame, then lets the app react to what it showed.
fn draw(tui: &mut Tui, app: &mut App) -> anyhow::Result<()> {
    tui.terminal
        .draw(|frame| app.draw(frame))
        .context("cannot draw")?;
    app.after_draw();
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("cannot listen for signals")
}

/// Opens `$VISUAL` or `$EDITOR` (else `vi`) on the draft and returns what
/// was saved. One trailing newline, which editors add, is dropped.
fn edit_externally(draft: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".to_owned());
    let mut file = tempfile::Builder::new()
        .prefix("chat-tui-draft-")
        .suffix(".txt")
        .tempfile()?;
    file.write_all(draft.as_bytes())?;
    file.flush()?;
    // `$EDITOR` may carry arguments ("code --wait"): let the shell split it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot start {editor}"))?;
    if !status.success() {
        anyhow::bail!("{editor} exited with {status}; the draft is unchanged");
    }
    let text = std::fs::read_to_string(file.path())?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}
