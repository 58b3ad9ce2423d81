//! The application: the [`State`], the panes and dialogs, and the rules
//! that tie them together.
//!
//! [`App`] takes terminal events ([`App::handle_event`], in `input`) and
//! the client task's events ([`App::on_server_event`], in `server`),
//! changes the shared state, and queues [`Effect`]s for the UI loop to carry
//! out ([`App::take_effects`]); `view` lays the panes out and draws them.
//! The app never writes into a pane: it hands each pane every
//! [`Action`](crate::action::Action) (`update`) or tells it what happened
//! through the pane's own methods, and the pane changes itself. The app does
//! no I/O and reads no clock, so every rule is tested by feeding it events
//! and looking at the state and the effects.

use std::cell::Cell;

use chat_client::AccountId;
use chrono::FixedOffset;

use crate::action::Effect;
use crate::components::compose::Compose;
use crate::components::dialog::Dialog;
use crate::components::inbox::Inbox;
use crate::components::sign_in::SignIn;
use crate::components::status_bar::StatusBar;
use crate::components::users::Users;
use crate::message::Command;
use crate::state::{History, Pane, Screen, State};
use crate::theme::Theme;

mod input;
mod server;
mod view;

pub use view::PaneAreas;

/// How the app starts.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The servers to offer on the sign-in form.
    pub servers: Vec<String>,
    /// The username to offer.
    pub username: Option<String>,
    /// Ring the bell for messages not on screen.
    pub bell: bool,
    /// Colours or not.
    pub theme: Theme,
    /// The local time zone.
    pub time_zone: FixedOffset,
    /// A prefix unique to this run, for idempotency keys (a random UUID in
    /// the program, fixed in tests).
    pub id_prefix: String,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            servers: vec![chat_client::DEFAULT_SERVER.to_owned()],
            username: None,
            bell: true,
            theme: Theme::default(),
            time_zone: FixedOffset::east_opt(0).expect("UTC is a valid offset"),
            id_prefix: "tui".to_owned(),
        }
    }
}

/// The whole application state.
#[derive(Debug)]
pub struct App {
    /// What the client knows.
    pub state: State,
    /// The sign-in form.
    pub sign_in: SignIn,
    /// The users pane.
    pub users: Users,
    /// The inbox pane.
    pub inbox: Inbox,
    /// The compose pane.
    pub compose: Compose,
    /// The status bar.
    pub status_bar: StatusBar,
    /// The open dialog, which gets every key.
    pub dialog: Option<Dialog>,
    /// Where the last frame put the panes.
    pub areas: Cell<PaneAreas>,
    /// What the outside world has to do, in order.
    effects: Vec<Effect>,
    /// The prefix of this run's idempotency keys.
    id_prefix: String,
    /// Sends made so far in this run: the rest of the key.
    sends: u64,
}

impl App {
    /// The app on its sign-in screen.
    pub fn new(config: AppConfig) -> Self {
        let state = State {
            servers: config.servers.clone(),
            theme: config.theme,
            time_zone: config.time_zone,
            bell: config.bell,
            ..State::default()
        };
        Self {
            sign_in: SignIn::new(&config.servers, config.username.as_deref()),
            state,
            users: Users::default(),
            inbox: Inbox::default(),
            compose: Compose::default(),
            status_bar: StatusBar,
            dialog: None,
            areas: Cell::new(PaneAreas::default()),
            effects: Vec::new(),
            id_prefix: config.id_prefix,
            sends: 0,
        }
    }

    /// The effects queued since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    fn command(&mut self, command: Command) {
        self.effects.push(Effect::Command(command));
    }

    /// True when keys go into a text field, so `q`, `?` and the like are
    /// letters, not commands.
    pub fn is_typing(&self) -> bool {
        match self.state.screen {
            Screen::SignIn => true,
            Screen::Main => {
                self.dialog.as_ref().is_some_and(Dialog::is_typing)
                    || self.state.focus == Pane::Compose
                    || self.users.is_typing()
            }
        }
    }

    /// Opens the conversation with `peer_id`: loads its history if needed,
    /// places the "new" marker and marks it read.
    pub fn open(&mut self, peer_id: AccountId, peer: &str) {
        if self.state.selected == Some(peer_id) {
            return;
        }
        if let Some(previous) = self.state.open_conversation().map(|c| c.peer_id)
            && let Some(conversation) = self.state.conversations.get_mut(&previous)
        {
            conversation.new_marker = None;
        }
        self.compose.switch_to(Some(peer_id));
        self.inbox.reset();
        self.state.selected = Some(peer_id);
        let conversation = self.state.conversation_mut(peer_id, peer);
        conversation.new_marker = None;
        if conversation.history == History::NotLoaded {
            conversation.history = History::Loading;
            conversation.unread_when_opened = Some(conversation.unread);
            let peer = conversation.peer.clone();
            self.command(Command::LoadHistory {
                peer_id,
                peer,
                before: None,
            });
        } else {
            let unread = conversation.unread;
            conversation.new_marker = conversation.first_of_last_from_peer(unread);
            self.mark_read(peer_id);
        }
    }

    /// Marks the conversation read up to its newest message, if anything in
    /// it is unread.
    fn mark_read(&mut self, peer_id: AccountId) {
        let Some(conversation) = self.state.conversations.get_mut(&peer_id) else {
            return;
        };
        if conversation.unread == 0 {
            return;
        }
        let up_to = conversation
            .newest_from_peer()
            .unwrap_or(0)
            .max(conversation.last_id);
        conversation.unread = 0;
        if up_to == 0 {
            return;
        }
        let (peer, peer_id) = (conversation.peer.clone(), conversation.peer_id);
        self.command(Command::MarkRead {
            peer,
            peer_id,
            up_to,
        });
    }

    /// Asks for the page of history above what is loaded, if there is one
    /// and none is on its way.
    fn load_older(&mut self) {
        let Some(peer_id) = self.state.selected else {
            return;
        };
        let Some(conversation) = self.state.conversations.get_mut(&peer_id) else {
            return;
        };
        let History::More(before) = conversation.history else {
            return;
        };
        conversation.history = History::Loading;
        let peer = conversation.peer.clone();
        self.command(Command::LoadHistory {
            peer_id,
            peer,
            before: Some(before),
        });
    }
}

#[cfg(test)]
mod tests;
