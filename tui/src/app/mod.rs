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

use chrono::FixedOffset;

use crate::action::Effect;
use crate::components::compose::Compose;
use crate::components::dialog::Dialog;
use crate::components::inbox::Inbox;
use crate::components::members::Members;
use crate::components::sign_in::SignIn;
use crate::components::status_bar::StatusBar;
use crate::components::users::Users;
use crate::message::Command;
use crate::state::{ChatId, History, Notify, Pane, Screen, State};
use crate::theme::Theme;

mod input;
mod server;
mod view;

pub use server::{is_name_char, mentions};
pub use view::PaneAreas;

/// How the app starts.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The servers to offer on the sign-in form.
    pub servers: Vec<String>,
    /// The username to offer.
    pub username: Option<String>,
    /// How messages not on screen make themselves known.
    pub notify: Notify,
    /// Conversations that do not notify.
    pub muted: Vec<ChatId>,
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
            notify: Notify::Bell,
            muted: Vec::new(),
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
    /// The members pane.
    pub members: Members,
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
    /// A `:dm NAME` waiting for the server to say who NAME is.
    pending_dm: Option<String>,
}

impl App {
    /// The app on its sign-in screen.
    pub fn new(config: AppConfig) -> Self {
        let state = State {
            servers: config.servers.clone(),
            theme: config.theme,
            time_zone: config.time_zone,
            notify: config.notify,
            muted: config.muted.into_iter().collect(),
            ..State::default()
        };
        Self {
            sign_in: SignIn::new(&config.servers, config.username.as_deref()),
            state,
            users: Users::default(),
            inbox: Inbox::default(),
            compose: Compose::default(),
            members: Members::default(),
            status_bar: StatusBar,
            dialog: None,
            areas: Cell::new(PaneAreas::default()),
            effects: Vec::new(),
            id_prefix: config.id_prefix,
            sends: 0,
            pending_dm: None,
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

    /// Resumes the session saved at the last sign-in on `servers`, instead
    /// of asking for the password; the form shows it is on its way and is
    /// back with the reason if it cannot be.
    pub fn resume(&mut self, servers: Vec<String>) {
        self.sign_in.resuming(&servers);
        self.state.servers = servers;
        self.command(Command::Resume);
    }

    /// Opens conversation `chat` (named `name` if it is new): loads its
    /// history (and a group's members) if needed, places the "new" marker
    /// and marks it read.
    pub fn open(&mut self, chat: ChatId, name: &str) {
        if self.state.selected == Some(chat) {
            return;
        }
        if let Some(previous) = self.state.selected
            && let Some(conversation) = self.state.conversations.get_mut(&previous)
        {
            conversation.new_marker = None;
        }
        self.compose.switch_to(Some(chat));
        self.inbox.reset();
        self.members.reset();
        self.state.selected = Some(chat);
        self.state.highlight = Some(chat);
        self.state.frozen_order = None;
        if self.state.focus == Pane::Members && !self.state.members_shown() {
            self.state.focus = Pane::Inbox;
        }
        let me = self.state.my_id();
        let conversation = self.state.conversation_mut(chat, name);
        conversation.new_marker = None;
        conversation.mentioned = false;
        if let (Some(group), ChatId::Group(id)) = (&conversation.group, chat)
            && group.members.is_none()
        {
            self.effects
                .push(Effect::Command(Command::LoadMembers { group: id }));
        }
        let conversation = self.state.conversation_mut(chat, name);
        if conversation.history == History::NotLoaded {
            conversation.history = History::Loading;
            conversation.unread_when_opened = Some(conversation.unread);
            self.command(Command::LoadHistory { chat, before: None });
        } else {
            let unread = conversation.unread;
            conversation.new_marker = conversation.first_of_last_from_others(me, unread);
            if let Some(marker) = conversation.new_marker {
                self.inbox.show_from(marker);
            }
            self.mark_read(chat);
        }
    }

    /// Marks the conversation read up to its newest message, if anything in
    /// it is unread.
    pub(crate) fn mark_read(&mut self, chat: ChatId) {
        let me = self.state.my_id();
        let Some(conversation) = self.state.conversations.get_mut(&chat) else {
            return;
        };
        conversation.mentioned = false;
        if conversation.unread == 0 {
            return;
        }
        if conversation.deleted {
            // Nobody to tell: the badge just clears.
            conversation.unread = 0;
            return;
        }
        let up_to = conversation
            .newest_from_others(me)
            .unwrap_or(0)
            .max(conversation.last_id);
        conversation.unread = 0;
        if up_to == 0 {
            return;
        }
        self.command(Command::MarkRead { chat, up_to });
    }

    /// Asks for the page of history above what is loaded, if there is one
    /// and none is on its way.
    pub(crate) fn load_older(&mut self) {
        let Some(chat) = self.state.selected else {
            return;
        };
        let Some(conversation) = self.state.conversations.get_mut(&chat) else {
            return;
        };
        let History::More(before) = conversation.history else {
            return;
        };
        conversation.history = History::Loading;
        self.command(Command::LoadHistory {
            chat,
            before: Some(before),
        });
    }
}

#[cfg(test)]
mod tests;
