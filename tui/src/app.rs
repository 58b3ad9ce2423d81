//! The application: the [`State`], the panes and dialogs, and the rules
//! that tie them together.
//!
//! [`App`] takes terminal events ([`App::handle_event`]) and the client
//! task's events ([`App::on_server_event`]), changes its state, and queues
//! [`Effect`]s for the UI loop to carry out ([`App::take_effects`]). It does
//! no I/O and reads no clock, so every rule here is tested by feeding it
//! events and looking at the state and the effects.

use std::cell::Cell;

use chat_client::{AccountId, ConnectionState, Event, Message, MessageId};
use chrono::FixedOffset;
use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};

use crate::action::{Action, Effect, Move, Scroll};
use crate::components::Component;
use crate::components::compose::Compose;
use crate::components::dialog::Dialog;
use crate::components::inbox::{Inbox, message_height};
use crate::components::sign_in::SignIn;
use crate::components::status_bar::StatusBar;
use crate::components::users::Users;
use crate::editor::Editor;
use crate::message::{Command, ServerEvent};
use crate::state::{
    Conversation, Directory, History, Link, Me, Pane, Pending, Screen, State, effective_pattern,
};
use crate::theme::Theme;

/// Lines one turn of the mouse wheel scrolls.
const WHEEL_LINES: usize = 3;

/// The smallest terminal the panes are drawn in.
const MIN_SIZE: (u16, u16) = (40, 10);

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

/// Where the panes were drawn, for the mouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaneAreas {
    /// The users pane.
    pub users: Rect,
    /// The inbox pane.
    pub inbox: Rect,
    /// The compose pane.
    pub compose: Rect,
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

    /// Handles one terminal event.
    pub fn handle_event(&mut self, event: TermEvent) {
        match event {
            TermEvent::Key(key) => self.handle_key(key),
            TermEvent::Paste(text) => self.paste(&text),
            TermEvent::Mouse(mouse) => self.mouse(mouse),
            // A resize needs only the redraw that follows every event.
            _ => {}
        }
    }

    /// Handles one key.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return self.update(Action::Quit);
        }
        if let Some(dialog) = self.dialog.as_mut() {
            if let Some(action) = dialog.handle_key_event(key, &self.state) {
                self.update(action);
            }
            return;
        }
        if self.state.screen == Screen::SignIn {
            if let Some(action) = self.sign_in.handle_key_event(key, &self.state) {
                self.update(action);
            }
            return;
        }
        let typing = self.is_typing();
        let global = match key.code {
            KeyCode::Tab => Some(Action::FocusNext),
            KeyCode::BackTab => Some(Action::FocusPrev),
            KeyCode::F(1) => Some(Action::ShowHelp),
            _ if typing || ctrl || key.modifiers.contains(KeyModifiers::ALT) => None,
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') => Some(Action::ShowHelp),
            KeyCode::Char('L') => Some(Action::SignOut),
            KeyCode::Char('D') => Some(Action::AskDeleteAccount),
            KeyCode::Esc if self.state.last_error.is_some() => Some(Action::DismissError),
            _ => None,
        };
        let action = global.or_else(|| match self.state.focus {
            Pane::Users => self.users.handle_key_event(key, &self.state),
            Pane::Inbox => self.inbox.handle_key_event(key, &self.state),
            Pane::Compose => self.compose.handle_key_event(key, &self.state),
        });
        if let Some(action) = action {
            self.update(action);
        }
    }

    /// Pasted text (bracketed paste) goes, whole, into the field that has
    /// the keys; a paste with the users pane focused goes to the draft.
    fn paste(&mut self, text: &str) {
        if let Some(dialog) = self.dialog.as_mut() {
            if let Dialog::DeleteAccount { password, .. } = dialog {
                password.insert_str(text.trim_end_matches(['\r', '\n']));
            }
            return;
        }
        match self.state.screen {
            Screen::SignIn => self.sign_in.paste(text),
            Screen::Main => {
                if let Some(filter) = self.users.filter.as_mut() {
                    filter.insert_str(&text.replace(['\r', '\n'], ""));
                    let pattern = filter.text().to_owned();
                    self.update(Action::SetFilter(pattern));
                } else {
                    self.state.focus = Pane::Compose;
                    self.compose.editor.insert_str(text);
                }
            }
        }
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        if self.state.screen != Screen::Main || self.dialog.is_some() {
            return;
        }
        let areas = self.areas.get();
        let at = Position::new(mouse.column, mouse.row);
        match mouse.kind {
            MouseEventKind::ScrollUp if areas.users.contains(at) => {
                self.update(Action::MoveSelection(Move::Up));
            }
            MouseEventKind::ScrollDown if areas.users.contains(at) => {
                self.update(Action::MoveSelection(Move::Down));
            }
            MouseEventKind::ScrollUp => self.update(Action::Scroll(Scroll::Up(WHEEL_LINES))),
            MouseEventKind::ScrollDown => self.update(Action::Scroll(Scroll::Down(WHEEL_LINES))),
            MouseEventKind::Down(MouseButton::Left) => {
                for (area, pane) in [
                    (areas.users, Pane::Users),
                    (areas.inbox, Pane::Inbox),
                    (areas.compose, Pane::Compose),
                ] {
                    if area.contains(at) {
                        self.update(Action::Focus(pane));
                    }
                }
            }
            _ => {}
        }
    }

    /// Carries out an action.
    pub fn update(&mut self, action: Action) {
        self.users.update(&action, &self.state);
        match action {
            Action::Quit => self.effects.push(Effect::Quit),
            Action::FocusNext => self.focus(self.state.focus.next()),
            Action::FocusPrev => self.focus(self.state.focus.prev()),
            Action::Focus(pane) => self.focus(pane),
            Action::WriteToSelected => {
                // Writing needs a conversation: open the first one if none is.
                if self.state.selected.is_none() {
                    self.move_selection(Move::First);
                }
                self.focus(Pane::Compose);
            }
            Action::ShowHelp => self.dialog = Some(Dialog::Help { scroll: 0 }),
            Action::CloseDialog => self.dialog = None,
            Action::DismissError => self.state.last_error = None,
            Action::SignIn(request) => {
                self.state.servers.clone_from(&request.servers);
                self.sign_in.busy = true;
                self.sign_in.notice = None;
                self.command(Command::SignIn(request));
            }
            Action::MoveSelection(step) => self.move_selection(step),
            Action::StartFilter | Action::EndFilter => {}
            Action::SetFilter(pattern) => self.set_filter(pattern),
            Action::RefreshDirectory => {
                let pattern = self.state.directory.pattern.clone();
                self.set_filter(pattern);
            }
            Action::ClearFilter => {
                if !self.state.directory.pattern.is_empty() {
                    self.set_filter(String::new());
                }
            }
            Action::Scroll(scroll) => self.inbox.scroll(scroll),
            Action::MoveMessage(step) => {
                let Some(conversation) = self.state.open_conversation() else {
                    return;
                };
                if self.inbox.move_selection(step, conversation) {
                    self.load_older();
                }
            }
            Action::AskDeleteMessage => self.ask_delete_message(),
            Action::DeleteMessage(id) => {
                self.dialog = None;
                self.command(Command::DeleteMessages { ids: vec![id] });
            }
            Action::Send(body) => self.send(body),
            Action::EditDraft => self
                .effects
                .push(Effect::EditDraft(self.compose.editor.text().to_owned())),
            Action::DraftEdited(text) => {
                self.compose.editor.set_text(&text);
                self.state.focus = Pane::Compose;
            }
            Action::AskDeleteAccount => {
                self.dialog = Some(Dialog::DeleteAccount {
                    password: Editor::default(),
                    error: None,
                    busy: false,
                });
            }
            Action::DeleteAccount(password) => {
                if let Some(Dialog::DeleteAccount { busy, .. }) = self.dialog.as_mut() {
                    *busy = true;
                }
                self.command(Command::DeleteAccount { password });
            }
            Action::SignOut => self.command(Command::SignOut),
            Action::Error(message) => self.state.last_error = Some(message),
        }
    }

    fn focus(&mut self, pane: Pane) {
        self.state.focus = pane;
        if pane == Pane::Inbox {
            self.inbox.select_newest(self.state.open_conversation());
            self.inbox.reveal.set(self.inbox.scroll.get() == 0);
        }
    }

    fn move_selection(&mut self, step: Move) {
        let rows = self.state.user_rows();
        if rows.is_empty() {
            return;
        }
        let last = rows.len() - 1;
        let page = self.users.page.get().max(1);
        let current = self
            .state
            .selected
            .and_then(|id| rows.iter().position(|r| r.account_id == id));
        let target = match (current, step) {
            (None, Move::Last) => last,
            (None, _) => 0,
            (Some(at), Move::Up) => at.saturating_sub(1),
            (Some(at), Move::Down) => (at + 1).min(last),
            (Some(at), Move::PageUp) => at.saturating_sub(page),
            (Some(at), Move::PageDown) => (at + page).min(last),
            (Some(_), Move::First) => 0,
            (Some(_), Move::Last) => last,
        };
        let row = &rows[target];
        self.open(row.account_id, &row.name.clone());
        // Near the end of what is loaded: fetch the next page of accounts.
        if target + page >= last {
            self.load_more_accounts();
        }
    }

    fn load_more_accounts(&mut self) {
        let directory = &mut self.state.directory;
        if directory.loading {
            return;
        }
        let Some(token) = directory.next_page.clone() else {
            return;
        };
        directory.loading = true;
        let pattern = effective_pattern(&directory.pattern);
        self.command(Command::ListAccounts {
            pattern,
            page_token: Some(token),
        });
    }

    fn set_filter(&mut self, pattern: String) {
        self.state.directory.pattern = pattern;
        self.state.directory.loading = true;
        self.state.directory.next_page = None;
        let pattern = effective_pattern(&self.state.directory.pattern);
        self.command(Command::ListAccounts {
            pattern,
            page_token: None,
        });
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
        let peer = conversation.peer.clone();
        self.command(Command::MarkRead { peer, up_to });
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

    /// Called after each frame: if the frame reached the oldest loaded
    /// message, older history is fetched.
    pub fn after_draw(&mut self) {
        if self.state.screen == Screen::Main && self.inbox.viewport.get().near_top {
            self.load_older();
        }
    }

    fn ask_delete_message(&mut self) {
        let Some(conversation) = self.state.open_conversation() else {
            return;
        };
        let Some(message) = self
            .inbox
            .selected
            .and_then(|id| conversation.messages.get(&id))
        else {
            self.state.last_error = Some("select a message first (↑↓ in the inbox)".to_owned());
            return;
        };
        self.dialog = Some(Dialog::ConfirmDelete {
            id: message.id,
            preview: message.body.lines().next().unwrap_or_default().to_owned(),
            peer: conversation.peer.clone(),
        });
    }

    fn send(&mut self, body: String) {
        let (Some(peer_id), Some(me)) = (self.state.selected, self.state.me.as_ref()) else {
            self.state.last_error = Some("pick someone in Users to write to first".to_owned());
            return;
        };
        let Some(conversation) = self.state.conversations.get(&peer_id) else {
            return;
        };
        self.sends += 1;
        let pending = Pending {
            client_msg_id: format!("{}-{}", self.id_prefix, self.sends),
            author: me.username.clone(),
            peer_id,
            peer: conversation.peer.clone(),
            body,
            retrying: None,
        };
        self.command(Command::Send(pending.outgoing()));
        self.state.outbox.push(pending);
        self.compose.editor.take();
        self.inbox.scroll(Scroll::Bottom);
    }

    /// Applies an event from the client task.
    pub fn on_server_event(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::SignedIn {
                username,
                account_id,
                server,
            } => self.signed_in(username, account_id, server),
            ServerEvent::SignInFailed { field, message } => {
                self.sign_in.busy = false;
                self.sign_in.show_error(field, message);
            }
            ServerEvent::Conversations(list) => {
                let me = self.state.my_id();
                for listed in list.conversations {
                    let conversation = self
                        .state
                        .conversation_mut(listed.peer_account_id, &listed.peer);
                    conversation.unread = listed.unread;
                    if let Some(last) = listed.last_message {
                        conversation.last_id = conversation.last_id.max(last.id);
                        if last.from_account_id == me {
                            note_receipts(conversation, &last);
                        }
                    }
                }
                if let Some(open) = self.state.selected {
                    self.refresh_open(open);
                }
            }
            ServerEvent::Accounts {
                pattern,
                appended,
                page,
            } => {
                let directory = &mut self.state.directory;
                if pattern != effective_pattern(&directory.pattern) {
                    return;
                }
                if !appended {
                    directory.accounts.clear();
                }
                directory.accounts.extend(page.accounts);
                directory.next_page = page.next_page_token;
                directory.loading = false;
            }
            ServerEvent::History { peer_id, page } => self.history(peer_id, page),
            ServerEvent::Live(event) => self.live(event),
            ServerEvent::Sent(sent) => {
                let Some(at) = self
                    .state
                    .outbox
                    .iter()
                    .position(|p| p.client_msg_id == sent.client_msg_id)
                else {
                    return;
                };
                let pending = self.state.outbox.remove(at);
                let me = self.state.my_id();
                let message = Message {
                    id: sent.id,
                    from: pending.author,
                    from_account_id: me,
                    to: pending.peer.clone(),
                    to_account_id: pending.peer_id,
                    body: pending.body,
                    sent_at: sent.sent_at,
                    delivered: false,
                    read: false,
                };
                let conversation = self.state.conversation_mut(pending.peer_id, &pending.peer);
                conversation.last_id = conversation.last_id.max(sent.id);
                conversation.messages.entry(sent.id).or_insert(message);
            }
            ServerEvent::SendRetrying {
                client_msg_id,
                error,
                retry_in,
            } => {
                if let Some(pending) = self
                    .state
                    .outbox
                    .iter_mut()
                    .find(|p| p.client_msg_id == client_msg_id)
                {
                    pending.retrying = Some(format!(
                        "{error}; retrying in {}s",
                        retry_in.as_secs().max(1)
                    ));
                }
            }
            ServerEvent::SendFailed {
                client_msg_id,
                error,
            } => {
                let Some(at) = self
                    .state
                    .outbox
                    .iter()
                    .position(|p| p.client_msg_id == client_msg_id)
                else {
                    return;
                };
                let pending = self.state.outbox.remove(at);
                self.compose.restore(pending.peer_id, &pending.body);
                self.state.last_error = Some(format!(
                    "not sent to {}: {error} (the text is back in its draft)",
                    pending.peer
                ));
            }
            ServerEvent::Deleted { ids } => self.remove_messages(&ids),
            ServerEvent::Connection(connection) => self.connection(connection),
            ServerEvent::StreamInterrupted { error } => self.state.stream_error = Some(error),
            ServerEvent::AccountDeleted => {
                self.state.outbox.clear();
                self.compose.forget_all();
                self.back_to_sign_in("The account was deleted.".to_owned());
                self.state.me = None;
                self.sign_in.username.take();
                self.sign_in.focus = crate::components::sign_in::Focus::Username;
            }
            ServerEvent::DeleteAccountFailed { error: message } => {
                if let Some(Dialog::DeleteAccount { error, busy, .. }) = self.dialog.as_mut() {
                    *error = Some(message);
                    *busy = false;
                } else {
                    self.state.last_error = Some(message);
                }
            }
            ServerEvent::SessionEnded { reason } => {
                if self.state.screen == Screen::Main || self.sign_in.busy {
                    let kept = if self.state.outbox.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " {} unsent message(s) will be sent when you are back.",
                            self.state.outbox.len()
                        )
                    };
                    self.back_to_sign_in(format!(
                        "Your session ended: {reason}. Your drafts are kept.{kept}"
                    ));
                }
            }
            ServerEvent::SignedOut => self.back_to_sign_in("You signed out.".to_owned()),
            ServerEvent::Error { action, error } => {
                self.state.last_error = Some(format!("{action} failed: {error}"));
            }
        }
    }

    fn signed_in(&mut self, username: String, account_id: AccountId, server: String) {
        let same_user = self
            .state
            .me
            .as_ref()
            .is_some_and(|me| me.account_id == account_id);
        if !same_user {
            self.state.outbox.clear();
            self.compose.forget_all();
        }
        self.compose.switch_to(None);
        let state = &mut self.state;
        state.me = Some(Me {
            username: username.clone(),
            account_id,
        });
        state.screen = Screen::Main;
        state.focus = Pane::Users;
        state.last_server_seen = Some(server.clone());
        state.link = Link::Connected {
            server,
            switched_from: None,
        };
        state.stream_error = None;
        state.conversations.clear();
        state.selected = None;
        state.live = false;
        state.unacked = 0;
        state.last_error = None;
        state.directory = Directory {
            loading: true,
            ..Directory::default()
        };
        self.dialog = None;
        self.users = Users::default();
        self.inbox.reset();
        self.sign_in.busy = false;
        self.sign_in.password.take();
        self.sign_in.notice = None;
        self.sign_in.username.set_text(&username);
        self.effects.push(Effect::Remember {
            servers: self.state.servers.clone(),
            username,
        });
        self.command(Command::ListAccounts {
            pattern: effective_pattern(""),
            page_token: None,
        });
        // What did not get through before is sent again, with the same keys.
        let resend: Vec<Command> = self
            .state
            .outbox
            .iter()
            .map(|p| Command::Send(p.outgoing()))
            .collect();
        for command in resend {
            self.command(command);
        }
    }

    fn back_to_sign_in(&mut self, notice: String) {
        self.state.screen = Screen::SignIn;
        self.state.link = Link::Offline;
        self.state.live = false;
        self.state.stream_error = None;
        self.dialog = None;
        self.sign_in.busy = false;
        self.sign_in.notice = Some(notice);
        self.sign_in.password.take();
        self.sign_in.focus = crate::components::sign_in::Focus::Password;
    }

    /// After the conversation list changed, the open conversation is read.
    fn refresh_open(&mut self, peer_id: AccountId) {
        let Some(conversation) = self.state.conversations.get_mut(&peer_id) else {
            return;
        };
        match conversation.history {
            History::Loading | History::NotLoaded => {
                conversation.unread_when_opened = Some(conversation.unread);
            }
            History::More(_) | History::Complete => self.mark_read(peer_id),
        }
    }

    fn history(&mut self, peer_id: AccountId, page: Result<chat_client::HistoryPage, String>) {
        let me = self.state.my_id();
        let Some(conversation) = self.state.conversations.get_mut(&peer_id) else {
            return;
        };
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                // Back to where it was, so the next scroll tries again.
                conversation.history = match conversation.messages.keys().next() {
                    Some(&oldest) => History::More(oldest),
                    None => History::NotLoaded,
                };
                self.state.last_error = Some(format!("could not load the conversation: {error}"));
                return;
            }
        };
        for message in page.messages {
            conversation.last_id = conversation.last_id.max(message.id);
            if message.from_account_id == me {
                note_receipts(conversation, &message);
            }
            conversation.messages.entry(message.id).or_insert(message);
        }
        conversation.history = match page.next_before {
            Some(before) => History::More(before),
            None => History::Complete,
        };
        if self.state.selected == Some(peer_id)
            && self.state.screen == Screen::Main
            && let Some(unread) = conversation.unread_when_opened.take()
        {
            conversation.new_marker = conversation.first_of_last_from_peer(unread);
            self.mark_read(peer_id);
        }
    }

    fn live(&mut self, event: Event) {
        self.state.stream_error = None;
        match event {
            Event::Message { id, message } => self.live_message(id, message),
            Event::Delivered {
                peer,
                peer_account_id,
                up_to,
                ..
            } => {
                let conversation = self.state.conversation_mut(peer_account_id, &peer);
                conversation.delivered_up_to = conversation.delivered_up_to.max(up_to);
            }
            Event::Read {
                peer,
                peer_account_id,
                up_to,
                ..
            } => {
                let conversation = self.state.conversation_mut(peer_account_id, &peer);
                conversation.read_up_to = conversation.read_up_to.max(up_to);
                conversation.delivered_up_to = conversation.delivered_up_to.max(up_to);
            }
            Event::Deleted { ids, .. } => self.remove_messages(&ids),
            Event::CaughtUp { .. } => {
                self.state.live = true;
                if self.state.unacked > 0 {
                    let up_to = self.state.unacked;
                    self.command(Command::Ack { up_to });
                }
            }
        }
    }

    fn live_message(&mut self, id: MessageId, message: Message) {
        let me = self.state.my_id();
        let mine = message.from_account_id == me;
        let (peer_id, peer) = if mine {
            (message.to_account_id, message.to.clone())
        } else {
            (message.from_account_id, message.from.clone())
        };
        let on_screen = self.state.screen == Screen::Main && self.state.selected == Some(peer_id);
        let width = usize::from(self.inbox.viewport.get().width);
        let conversation = self.state.conversation_mut(peer_id, &peer);
        // The conversation list counted everything up to its last message;
        // only what comes after is news.
        let news = id > conversation.last_id;
        conversation.last_id = conversation.last_id.max(id);
        let fresh = !conversation.messages.contains_key(&id);
        if on_screen && fresh && self.inbox.scroll.get() > 0 {
            let conversation = &self.state.conversations[&peer_id];
            let older = conversation
                .messages
                .range(..id)
                .next_back()
                .map(|(_, m)| m);
            let lines = message_height(&message, older, conversation, &self.state, width);
            self.inbox.keep_position(lines);
        }
        self.state
            .conversation_mut(peer_id, &peer)
            .messages
            .insert(id, message);
        if mine {
            return;
        }
        self.state.unacked = self.state.unacked.max(id);
        if self.state.live {
            self.command(Command::Ack { up_to: id });
        }
        if !news {
            return;
        }
        if on_screen {
            self.command(Command::MarkRead { peer, up_to: id });
        } else {
            self.state.conversation_mut(peer_id, &peer).unread += 1;
            if self.state.live && self.state.bell {
                self.effects.push(Effect::Bell);
            }
        }
    }

    fn remove_messages(&mut self, ids: &[MessageId]) {
        for conversation in self.state.conversations.values_mut() {
            for id in ids {
                conversation.messages.remove(id);
            }
        }
        if let Some(selected) = self.inbox.selected
            && ids.contains(&selected)
        {
            self.inbox.selected = None;
            let conversation = self.state.open_conversation();
            let next = conversation.and_then(|c| {
                c.messages
                    .range(selected..)
                    .next()
                    .or_else(|| c.messages.range(..selected).next_back())
                    .map(|(&id, _)| id)
            });
            self.inbox.selected = next;
        }
    }

    fn connection(&mut self, connection: ConnectionState) {
        if self.state.screen == Screen::SignIn && !self.sign_in.busy {
            return;
        }
        self.state.link = match connection {
            ConnectionState::Connected { server } => {
                let switched_from = match &self.state.link {
                    Link::Connected {
                        server: previous,
                        switched_from,
                    } => {
                        if *previous == server {
                            switched_from.clone()
                        } else {
                            Some(previous.clone())
                        }
                    }
                    _ => self.last_server().filter(|previous| *previous != server),
                };
                self.state.last_server_seen = Some(server.clone());
                Link::Connected {
                    server,
                    switched_from,
                }
            }
            ConnectionState::Reconnecting {
                server, next_in, ..
            } => Link::Reconnecting { server, next_in },
            ConnectionState::Failed => Link::Failed,
        };
    }

    fn last_server(&self) -> Option<String> {
        self.state.last_server_seen.clone()
    }

    /// Draws the whole screen.
    pub fn draw(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
            frame.render_widget(
                ratatui::widgets::Paragraph::new(format!(
                    "Make the terminal at least {}×{}",
                    MIN_SIZE.0, MIN_SIZE.1
                ))
                .wrap(ratatui::widgets::Wrap { trim: true }),
                area,
            );
            return;
        }
        let [body, status] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
        match self.state.screen {
            Screen::SignIn => self.sign_in.draw(frame, body, &self.state),
            Screen::Main => self.draw_main(frame, body),
        }
        self.status_bar.draw(frame, status, &self.state);
        if let Some(dialog) = &self.dialog {
            dialog.draw(frame, area, &self.state);
        }
    }

    fn draw_main(&self, frame: &mut Frame, area: Rect) {
        let users_width = (area.width / 4).clamp(18, 32);
        let [users, right] =
            Layout::horizontal([Constraint::Length(users_width), Constraint::Min(1)]).areas(area);
        let most = (right.height / 3).max(3);
        let wanted = u16::try_from(self.compose.rows(right.width.saturating_sub(2)))
            .unwrap_or(u16::MAX)
            .saturating_add(2);
        let compose_height = wanted.clamp(3, most);
        let [inbox, compose] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(compose_height)]).areas(right);
        self.areas.set(PaneAreas {
            users,
            inbox,
            compose,
        });
        self.users.draw(frame, users, &self.state);
        self.inbox.draw(frame, inbox, &self.state);
        self.compose.draw(frame, compose, &self.state);
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;

/// Moves the receipt cursors up to what a message of the user's says.
fn note_receipts(conversation: &mut Conversation, message: &Message) {
    if message.read {
        conversation.read_up_to = conversation.read_up_to.max(message.id);
    }
    if message.delivered || message.read {
        conversation.delivered_up_to = conversation.delivered_up_to.max(message.id);
    }
}
