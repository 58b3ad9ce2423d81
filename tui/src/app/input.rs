//! What the user does: keys, pastes and the mouse become [`Action`]s (most
//! of them by the focused pane), and [`App::update`] carries each out.

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent,
    MouseEventKind,
};
use ratatui::layout::Position;

use chat_client::{AccountId, GroupEdit, MessageId};

use super::App;
use crate::action::{Action, Effect, Move, Scroll};
use crate::components::Component;
use crate::components::dialog::{Dialog, GroupForm};
use crate::components::search::Search;
use crate::components::switcher::{self, CommandLine, Switcher};
use crate::message::Command;
use crate::state::{ChatId, History, Pane, Pending, Receipt, Screen, effective_pattern};

/// Lines one turn of the mouse wheel scrolls.
const WHEEL_LINES: usize = 3;

impl App {
    /// Handles one terminal event.
    pub fn handle_event(&mut self, event: TermEvent) {
        match event {
            TermEvent::Key(key) => self.handle_key(key),
            TermEvent::Paste(text) => self.paste(&text),
            TermEvent::Mouse(mouse) => self.mouse(mouse),
            TermEvent::FocusGained => {
                self.state.terminal_focused = true;
                self.read_what_shows();
            }
            TermEvent::FocusLost => self.state.terminal_focused = false,
            // A resize needs only the redraw that follows every event.
            TermEvent::Resize(..) => {}
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
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let global = match key.code {
            KeyCode::Char('k') if ctrl => Some(Action::OpenSwitcher),
            KeyCode::Char('f') if ctrl => Some(Action::OpenSearch(String::new())),
            KeyCode::Char(digit @ '1'..='9') if alt => {
                Some(Action::OpenNth(usize::from(digit as u8 - b'1')))
            }
            KeyCode::Tab => Some(Action::FocusNext),
            KeyCode::BackTab => Some(Action::FocusPrev),
            KeyCode::F(1) => Some(Action::ShowHelp),
            _ if typing || ctrl || key.modifiers.contains(KeyModifiers::ALT) => None,
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') => Some(Action::ShowHelp),
            KeyCode::Char('L') => Some(Action::SignOut),
            KeyCode::Char('D') => Some(Action::AskDeleteAccount),
            KeyCode::Char('m') => Some(Action::ToggleMembers),
            KeyCode::Char(':') => Some(Action::OpenCommandLine),
            KeyCode::Esc if self.state.last_error.is_some() => Some(Action::DismissError),
            _ => None,
        };
        let action = global.or_else(|| match self.state.focus {
            Pane::Users => self.users.handle_key_event(key, &self.state),
            Pane::Inbox => self.inbox.handle_key_event(key, &self.state),
            Pane::Members => self.members.handle_key_event(key, &self.state),
            Pane::Compose => self.compose.handle_key_event(key, &self.state),
        });
        if let Some(action) = action {
            // The user moved on: an error about what came before is stale.
            if !matches!(action, Action::Error(_)) {
                self.state.last_error = None;
            }
            self.update(action);
        }
    }

    /// Pasted text (bracketed paste) goes, whole, into the field that has
    /// the keys; a paste with the users pane focused goes to the draft.
    fn paste(&mut self, text: &str) {
        if let Some(dialog) = self.dialog.as_mut() {
            if let Some(action) = dialog.paste(text) {
                self.update(action);
            }
            return;
        }
        match self.state.screen {
            Screen::SignIn => self.sign_in.paste(text),
            Screen::Main => {
                if let Some(action) = self.users.paste(text) {
                    self.update(action);
                } else {
                    self.state.focus = Pane::Compose;
                    self.compose.paste(text);
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
                    (areas.members, Pane::Members),
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

    /// Carries out an action: every pane first changes its own state, then
    /// the app applies the rules that span panes and the shared state.
    pub fn update(&mut self, action: Action) {
        self.sign_in.update(&action, &self.state);
        self.users.update(&action, &self.state);
        self.inbox.update(&action, &self.state);
        self.compose.update(&action, &self.state);
        self.members.update(&action, &self.state);
        if let Some(dialog) = self.dialog.as_mut() {
            dialog.update(&action, &self.state);
        }
        match action {
            Action::Quit => self.effects.push(Effect::Quit),
            Action::FocusNext => self.focus(self.state.focus.next(self.state.members_shown())),
            Action::FocusPrev => self.focus(self.state.focus.prev(self.state.members_shown())),
            Action::Focus(pane) => self.focus(pane),
            Action::WriteToSelected => {
                // The row under the cursor; with none, the open conversation,
                // else the first row.
                let rows = self.state.user_rows();
                let row = (self.state.highlight.or(self.state.selected))
                    .and_then(|chat| rows.iter().find(|r| r.chat == chat))
                    .or_else(|| rows.first());
                if let Some(row) = row {
                    let (chat, name) = (row.chat, row.name.clone());
                    self.open(chat, &name);
                }
                self.focus(Pane::Compose);
            }
            Action::ShowHelp => self.dialog = Some(Dialog::help()),
            Action::CloseDialog => self.dialog = None,
            Action::DismissError => self.state.last_error = None,
            Action::SignIn(request) => {
                self.state.servers.clone_from(&request.servers);
                self.command(Command::SignIn(request));
            }
            Action::MoveSelection(step) => self.move_selection(step),
            Action::StartFilter => {
                if !self.state.directory.pattern.is_empty() {
                    self.set_filter(String::new());
                }
            }
            // Only the pane's own state changes.
            Action::EndFilter => {}
            // Scrolled down to the newest: what shows now is read.
            Action::Scroll(_) => self.read_what_shows(),
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
                .push(Effect::EditDraft(self.compose.draft().to_owned())),
            Action::DraftEdited(_) => self.state.focus = Pane::Compose,
            Action::AskDeleteAccount => self.dialog = Some(Dialog::delete_account()),
            Action::DeleteAccount(password) => {
                self.command(Command::DeleteAccount { password });
            }
            Action::SignOut => self.command(Command::SignOut),
            Action::Error(message) => self.state.last_error = Some(message),
            Action::ToggleMembers => self.toggle_members(),
            Action::MoveMember(_) => {}
            Action::AskNewGroup => self.dialog = Some(Dialog::Group(GroupForm::new_group())),
            Action::CreateGroup { title, members } => {
                self.command(Command::CreateGroup { title, members });
            }
            Action::AskAddMembers => self.ask_group(GroupForm::add_members),
            Action::AskRename => {
                let title = self.open_group().map(|(title, _)| title).unwrap_or_default();
                self.ask_group(|group| GroupForm::rename(group, &title));
            }
            Action::AskRemoveMember(member) => self.ask_member(member, |name, title| {
                (
                    "Remove member",
                    format!("Remove {name} from {title}? They keep nothing of it from now on; you can add them again."),
                    GroupEdit::Remove(member),
                )
            }),
            Action::AskNewOwner(member) => self.ask_member(member, |name, title| {
                (
                    "Hand the group on",
                    format!("Make {name} the owner of {title}? You stay an admin."),
                    GroupEdit::NewOwner(member),
                )
            }),
            Action::ToggleAdmin(member) => {
                let admin = self
                    .open_group()
                    .and_then(|(_, g)| g.member(member))
                    .is_some_and(|m| m.admin);
                let edit = if admin {
                    GroupEdit::RemoveAdmin(member)
                } else {
                    GroupEdit::AddAdmin(member)
                };
                self.change_group(edit);
            }
            Action::AskLeave => {
                if let Some((title, _)) = self.open_group() {
                    let text = format!(
                        "Leave {title}? You keep nothing of it, and only a member who manages it can add you again."
                    );
                    self.dialog = Some(Dialog::confirm("Leave group", text, GroupEdit::Leave));
                }
            }
            Action::ChangeGroup(edit) => {
                self.dialog = None;
                self.change_group(edit);
            }
            Action::ShowReaders => self.show_readers(),
            Action::Complete(prefix) => self.command(Command::Complete { prefix }),
            Action::OpenSwitcher => {
                self.dialog = Some(Dialog::Switcher(Switcher::default()));
            }
            Action::OpenCommandLine => {
                self.dialog = Some(Dialog::CommandLine(CommandLine::default()));
            }
            Action::OpenChat(chat, name) => {
                self.dialog = None;
                self.open(chat, &name);
                self.focus(Pane::Compose);
            }
            Action::OpenNth(n) => {
                let rows = self.state.user_rows();
                let conversations = rows.iter().filter(|r| {
                    (self.state.conversations.get(&r.chat))
                        .is_some_and(|c| c.is_group() || c.last_id > 0 || c.unread > 0)
                });
                if let Some(row) = conversations.clone().nth(n) {
                    let (chat, name) = (row.chat, row.name.clone());
                    self.open(chat, &name);
                    self.focus(Pane::Compose);
                }
            }
            Action::RunCommand(line) => {
                self.dialog = None;
                self.run_command(&line);
            }
            Action::OpenSearch(query) => {
                let Some(chat) = self.state.selected else {
                    self.state.last_error =
                        Some("open a conversation first, then search it".to_owned());
                    return;
                };
                let name = (self.state.conversations.get(&chat))
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let mut search = Search::new(chat, &name, &query);
                let start = search.start();
                self.dialog = Some(Dialog::Search(search));
                if let Some(action) = start {
                    self.update(action);
                }
            }
            Action::Search {
                chat,
                query,
                before,
            } => self.command(Command::Search {
                chat,
                query,
                before,
            }),
            Action::JumpTo(chat, id) => {
                self.dialog = None;
                let name = (self.state.conversations.get(&chat))
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                self.open(chat, &name);
                if let Some(conversation) = self.state.conversations.get_mut(&chat) {
                    conversation.jump_to = Some(id);
                }
                self.focus(Pane::Inbox);
                self.jump(chat);
            }
            Action::ToggleMute => {
                let Some(chat) = self.state.highlight.or(self.state.selected) else {
                    return;
                };
                if !self.state.muted.remove(&chat) {
                    self.state.muted.insert(chat);
                }
                let mut muted: Vec<ChatId> = self.state.muted.iter().copied().collect();
                muted.sort();
                self.effects.push(Effect::SaveMuted(muted));
            }
        }
    }

    /// Carries out a command typed after `:`.
    fn run_command(&mut self, line: &str) {
        use switcher::Command as C;
        let command = match switcher::parse(line) {
            Ok(command) => command,
            Err(error) => {
                self.state.last_error = Some(error);
                return;
            }
        };
        match command {
            C::Dm(name) => match switcher::known_account(&self.state, &name) {
                Some((id, name)) => self.update(Action::OpenChat(ChatId::Direct(id), name)),
                None => {
                    // Not loaded here: ask the server, and open it if it
                    // answers with exactly that name.
                    self.pending_dm = Some(name.clone());
                    self.command(Command::Complete { prefix: name });
                }
            },
            C::Group(title) => {
                let mut form = GroupForm::new_group();
                if !title.is_empty() {
                    form.title.set_text(&title);
                    form.field = crate::components::group_form::Field::Members;
                }
                self.dialog = Some(Dialog::Group(form));
            }
            C::Members => self.update(Action::ToggleMembers),
            C::Add => self.update(Action::AskAddMembers),
            C::Rename(title) => match self.state.selected {
                Some(ChatId::Group(_)) => self.change_group(GroupEdit::Rename(title)),
                _ => self.state.last_error = Some("open a group first".to_owned()),
            },
            C::Leave => self.update(Action::AskLeave),
            C::Mute => {
                self.state.highlight = self.state.selected;
                self.update(Action::ToggleMute);
            }
            C::Logout => self.update(Action::SignOut),
            C::Quit => self.update(Action::Quit),
            C::Help => self.update(Action::ShowHelp),
            C::Search(query) => self.update(Action::OpenSearch(query)),
        }
    }

    /// Shows the message `chat` should jump to once it is loaded, loading
    /// older pages until it is.
    pub(crate) fn jump(&mut self, chat: ChatId) {
        let Some(conversation) = self.state.conversations.get_mut(&chat) else {
            return;
        };
        let Some(id) = conversation.jump_to else {
            return;
        };
        if conversation.messages.contains_key(&id) {
            conversation.jump_to = None;
            self.inbox.select(id);
            return;
        }
        match conversation.history {
            History::More(_) => self.load_older(),
            History::Complete => {
                conversation.jump_to = None;
                self.state.last_error =
                    Some("that message is no longer in the conversation".to_owned());
            }
            // Its first page is on the way; this runs again when it comes.
            History::NotLoaded | History::Loading => {}
        }
    }

    /// The open group's title and what is known of it.
    fn open_group(&self) -> Option<(String, &crate::state::Group)> {
        let conversation = self.state.open_conversation()?;
        Some((conversation.name.clone(), conversation.group.as_ref()?))
    }

    fn toggle_members(&mut self) {
        if self.open_group().is_none() {
            self.state.last_error = Some("members: open a group first".to_owned());
            return;
        }
        self.state.show_members = !self.state.show_members;
        if self.state.show_members {
            self.state.focus = Pane::Members;
        } else if self.state.focus == Pane::Members {
            self.state.focus = Pane::Inbox;
        }
    }

    /// Opens a group dialog for the open group, if one is open.
    fn ask_group(&mut self, make: impl FnOnce(chat_client::ConversationId) -> GroupForm) {
        match self.state.selected {
            Some(ChatId::Group(group)) => self.dialog = Some(Dialog::Group(make(group))),
            _ => self.state.last_error = Some("open a group first".to_owned()),
        }
    }

    /// Asks to confirm a change about `member` of the open group.
    fn ask_member(
        &mut self,
        member: AccountId,
        ask: impl FnOnce(&str, &str) -> (&'static str, String, GroupEdit),
    ) {
        let Some((title, group)) = self.open_group() else {
            return;
        };
        let Some(name) = group.member(member).map(|m| m.username.clone()) else {
            return;
        };
        let (heading, text, edit) = ask(&name, &title);
        self.dialog = Some(Dialog::confirm(heading, text, edit));
    }

    /// Changes the open group; what changed comes back on the stream.
    fn change_group(&mut self, edit: GroupEdit) {
        if let Some(ChatId::Group(group)) = self.state.selected {
            self.command(Command::ChangeGroup { group, edit });
        }
    }

    /// Who read the selected message of the open group, in a dialog.
    fn show_readers(&mut self) {
        let me = self.state.my_id();
        if !(self.state.open_conversation()).is_some_and(|c| c.is_group()) {
            self.state.last_error =
                Some("who read a message: in a group (here the mark says it)".to_owned());
            return;
        }
        let Some(id) = self.selected_message() else {
            return;
        };
        let Some(conversation) = self.state.open_conversation() else {
            return;
        };
        let Some(group) = conversation.group.as_ref() else {
            return;
        };
        let message = &conversation.messages[&id];
        let Some((read, unread)) = group.readers(message.from_account_id, message.id) else {
            self.state.last_error = Some("the members are still loading".to_owned());
            return;
        };
        let names = |list: Vec<&chat_client::ConversationMember>| {
            let mut names: Vec<String> = list.iter().map(|m| m.username.clone()).collect();
            names.sort();
            names
        };
        let receipt = (message.from_account_id == me).then(|| conversation.receipt(message));
        let heading = match receipt {
            Some(Receipt::ReadByAll) => "Read by everyone".to_owned(),
            _ => format!("Read by {} of {}", read.len(), read.len() + unread.len()),
        };
        self.dialog = Some(Dialog::Readers {
            heading,
            read: names(read),
            unread: names(unread),
        });
    }

    fn focus(&mut self, pane: Pane) {
        self.state.focus = pane;
        if pane != Pane::Users {
            // Back in its natural order once the user stops moving in it.
            self.state.frozen_order = None;
        }
        if pane == Pane::Inbox {
            self.inbox.focused(self.state.open_conversation());
        }
    }

    /// Marks the open conversation read if its newest messages are on
    /// screen: the terminal has the focus and the inbox shows its bottom.
    pub(super) fn read_what_shows(&mut self) {
        if self.state.screen != Screen::Main
            || !self.state.terminal_focused
            || self.inbox.scroll() > 0
        {
            return;
        }
        let Some(chat) = self.state.selected else {
            return;
        };
        let loaded = (self.state.conversations.get(&chat))
            .is_some_and(|c| matches!(c.history, History::More(_) | History::Complete));
        if loaded {
            self.mark_read(chat);
        }
    }

    fn move_selection(&mut self, step: Move) {
        let rows = self.state.user_rows();
        if rows.is_empty() {
            return;
        }
        let last = rows.len() - 1;
        let page = self.users.page();
        let current = (self.state.highlight.or(self.state.selected))
            .and_then(|id| rows.iter().position(|r| r.chat == id));
        if self.state.frozen_order.is_none() {
            self.state.frozen_order = Some(rows.iter().map(|r| r.chat).collect());
        }
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
        self.state.highlight = Some(rows[target].chat);
        // The last row asked for is the last account, not the last loaded.
        if step == Move::Last && self.state.directory.next_page.is_some() {
            self.state.directory.to_last = true;
        }
        // Near the end of what is loaded: fetch the next page of accounts.
        if target + page >= last {
            self.load_more_accounts();
        }
    }

    pub(super) fn load_more_accounts(&mut self) {
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
        self.state.frozen_order = None;
        self.state.directory.to_last = false;
        self.state.directory.pattern = pattern;
        self.state.directory.loading = true;
        self.state.directory.next_page = None;
        let pattern = effective_pattern(&self.state.directory.pattern);
        self.command(Command::ListAccounts {
            pattern,
            page_token: None,
        });
    }

    /// The selected message of the open conversation; `None`, saying what
    /// to do, when there is none.
    fn selected_message(&mut self) -> Option<MessageId> {
        let found = (self.inbox.selected()).filter(|id| {
            (self.state.open_conversation()).is_some_and(|c| c.messages.contains_key(id))
        });
        if found.is_none() {
            self.state.last_error = Some("select a message first (↑↓ in the inbox)".to_owned());
        }
        found
    }

    fn ask_delete_message(&mut self) {
        let Some(id) = self.selected_message() else {
            return;
        };
        if let Some(conversation) = self.state.open_conversation() {
            let message = &conversation.messages[&id];
            self.dialog = Some(Dialog::confirm_delete(message, conversation));
        }
    }

    fn send(&mut self, body: String) {
        let (Some(chat), Some(me)) = (self.state.selected, self.state.me.as_ref()) else {
            self.state.last_error = Some("pick someone in Users to write to first".to_owned());
            return;
        };
        let Some(conversation) = self.state.conversations.get(&chat) else {
            return;
        };
        if conversation.deleted {
            self.state.last_error = Some(format!(
                "{} deleted their account: this conversation takes no new messages",
                conversation.name
            ));
            return;
        }
        self.sends += 1;
        let pending = Pending {
            client_msg_id: format!("{}-{}", self.id_prefix, self.sends),
            author: me.username.clone(),
            to: chat,
            name: conversation.name.clone(),
            body,
            retrying: None,
        };
        self.command(Command::Send(pending.outgoing()));
        self.state.outbox.push(pending);
        self.compose.clear_draft();
        self.inbox.follow_newest();
    }
}
