//! What the client task reports: [`App::on_server_event`] files pages,
//! live events and the fate of sends into the state, and moves between the
//! sign-in form and the main screen as sessions open and end.

use chat_client::{
    Account, AccountId, ConnectionState, ConversationMember, Event, GroupChange, GroupChangeKind,
    HistoryPage, Message, MessageId,
};

use super::App;
use crate::action::{Action, Effect};
use crate::components::dialog::Dialog;
use crate::components::users::Users;
use crate::message::{Command, ServerEvent};
use crate::state::{
    ChatId, Conversation, Directory, Group, History, Link, Me, Notify, Pane, Screen,
    effective_pattern, wildcard_match,
};

impl App {
    /// Applies an event from the client task.
    pub fn on_server_event(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::SignedIn {
                username,
                account_id,
                server,
            } => self.signed_in(username, account_id, server),
            ServerEvent::SignInFailed { field, message } => self.sign_in.refused(field, message),
            ServerEvent::Conversations(list) => {
                let me = self.state.my_id();
                for listed in list.conversations {
                    let conversation = match &listed.group {
                        Some(summary) => {
                            let chat = ChatId::Group(listed.conversation_id);
                            let conversation = self.state.conversation_mut(chat, &summary.title);
                            conversation.name.clone_from(&summary.title);
                            let group = conversation.group.get_or_insert_with(Group::default);
                            group.owner = summary.owner_account_id;
                            group.member_count = summary.member_count;
                            conversation
                        }
                        None => self
                            .state
                            .conversation_mut(ChatId::Direct(listed.peer_account_id), &listed.peer),
                    };
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
                if self.state.directory.to_last {
                    if self.state.directory.next_page.is_some() {
                        self.load_more_accounts();
                    } else {
                        self.state.directory.to_last = false;
                        self.state.highlight = self.state.user_rows().last().map(|r| r.chat);
                    }
                }
            }
            ServerEvent::History { chat, page } => self.history(chat, page),
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
                let group = pending.to.group();
                let message = Message {
                    id: sent.id,
                    from: pending.author,
                    from_account_id: me,
                    to: if group.is_some() {
                        String::new()
                    } else {
                        pending.name.clone()
                    },
                    to_account_id: pending.to.peer().unwrap_or(0),
                    body: pending.body,
                    sent_at: sent.sent_at,
                    delivered: false,
                    read: false,
                    conversation_id: group.unwrap_or(0),
                    in_group: group.is_some(),
                    read_by: 0,
                    readers: 0,
                };
                let conversation = self.state.conversation_mut(pending.to, &pending.name);
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
                gone,
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
                self.compose.restore(pending.to, &pending.body);
                if gone && let Some(conversation) = self.state.conversations.get_mut(&pending.to) {
                    conversation.deleted = true;
                    self.state.last_error = Some(format!(
                        "not sent: {} deleted their account, and this conversation takes no new \
                         messages (the text is back in its draft)",
                        pending.name
                    ));
                    return;
                }
                self.state.last_error = Some(format!(
                    "not sent to {}: {error} (the text is back in its draft)",
                    pending.name
                ));
            }
            ServerEvent::GroupCreated { group, title } => {
                if matches!(&self.dialog, Some(Dialog::Group(form)) if form.busy) {
                    self.dialog = None;
                }
                let chat = ChatId::Group(group);
                self.state.conversation_mut(chat, &title);
                self.open(chat, &title);
                self.state.focus = Pane::Compose;
            }
            ServerEvent::GroupNotCreated { error } => {
                let shown = self
                    .dialog
                    .as_mut()
                    .is_some_and(|dialog| dialog.show_refusal(&error));
                if !shown {
                    self.state.last_error = Some(format!("the group was not made: {error}"));
                }
            }
            ServerEvent::Members { group, members } => {
                let chat = ChatId::Group(group);
                match members {
                    Ok(loaded) => {
                        let Some(conversation) = self.state.conversations.get_mut(&chat) else {
                            return;
                        };
                        conversation.name = loaded.title;
                        let group = conversation.group.get_or_insert_with(Group::default);
                        group.member_count =
                            u32::try_from(loaded.members.len()).unwrap_or(u32::MAX);
                        if let Some(owner) = loaded.members.iter().find(|m| m.owner) {
                            group.owner = owner.account_id;
                        }
                        group.members = Some(loaded.members);
                    }
                    Err(error) => {
                        self.state.last_error =
                            Some(format!("could not load the members: {error}"));
                    }
                }
            }
            ServerEvent::Found { chat, query, page } => {
                if let Some(Dialog::Search(search)) = self.dialog.as_mut()
                    && let Some(action) = search.answer(chat, &query, page)
                {
                    self.update(action);
                }
            }
            ServerEvent::Completions { prefix, accounts } => {
                if self.pending_dm.as_ref() == Some(&prefix) {
                    self.pending_dm = None;
                    let me = self.state.my_id();
                    let found = (accounts.iter())
                        .find(|a| a.account_id != me && a.username.eq_ignore_ascii_case(&prefix));
                    match found {
                        Some(a) => {
                            let open =
                                Action::OpenChat(ChatId::Direct(a.account_id), a.username.clone());
                            self.update(open);
                        }
                        None => {
                            self.state.last_error = Some(format!("no account is named {prefix}"));
                        }
                    }
                    return;
                }
                if let Some(dialog) = self.dialog.as_mut() {
                    let me = self.state.my_id();
                    dialog.completions(&prefix, accounts, me);
                }
            }
            ServerEvent::Deleted { ids } => self.remove_messages(&ids),
            ServerEvent::Connection(connection) => self.connection(connection),
            ServerEvent::StreamInterrupted { error } => self.state.stream_error = Some(error),
            ServerEvent::AccountDeleted => {
                self.effects.push(Effect::ForgetSession);
                self.state.outbox.clear();
                self.compose.forget_all();
                self.back_to_sign_in("The account was deleted.".to_owned());
                self.state.me = None;
                self.sign_in.forget_username();
            }
            ServerEvent::DeleteAccountFailed { error } => {
                let shown = self
                    .dialog
                    .as_mut()
                    .is_some_and(|dialog| dialog.show_refusal(&error));
                if !shown {
                    self.state.last_error = Some(error);
                }
            }
            ServerEvent::SessionEnded { reason } => {
                self.effects.push(Effect::ForgetSession);
                if self.state.screen == Screen::Main || self.sign_in.is_busy() {
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
            ServerEvent::SignedOut => {
                self.effects.push(Effect::ForgetSession);
                self.back_to_sign_in("You signed out.".to_owned());
            }
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
        self.members.reset();
        self.sign_in.signed_in(&username);
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

    /// Files accounts created and deleted into the directory: a new one
    /// where it sorts, if it matches the filter and falls within what is
    /// loaded (a later page brings it otherwise).
    fn directory_news(&mut self, created: Vec<Account>, deleted: &[AccountId]) {
        let directory = &mut self.state.directory;
        directory
            .accounts
            .retain(|a| !deleted.contains(&a.account_id));
        let pattern = effective_pattern(&directory.pattern);
        let key = |a: &Account| a.username.to_lowercase();
        for account in created {
            if !wildcard_match(&pattern, &account.username)
                || directory
                    .accounts
                    .iter()
                    .any(|a| a.account_id == account.account_id)
            {
                continue;
            }
            let at = directory
                .accounts
                .partition_point(|a| key(a) < key(&account));
            if at == directory.accounts.len() && directory.next_page.is_some() {
                continue;
            }
            directory.accounts.insert(at, account);
        }
    }

    fn back_to_sign_in(&mut self, notice: String) {
        self.state.online.clear();
        self.state.screen = Screen::SignIn;
        self.state.link = Link::Offline;
        self.state.live = false;
        self.state.stream_error = None;
        self.dialog = None;
        self.sign_in.back(notice);
    }

    /// After the conversation list changed, the open conversation is read.
    fn refresh_open(&mut self, chat: ChatId) {
        let Some(conversation) = self.state.conversations.get_mut(&chat) else {
            return;
        };
        match conversation.history {
            History::Loading | History::NotLoaded => {
                conversation.unread_when_opened = Some(conversation.unread);
            }
            History::More(_) | History::Complete => self.mark_read(chat),
        }
    }

    fn history(&mut self, chat: ChatId, page: Result<HistoryPage, String>) {
        let me = self.state.my_id();
        let Some(conversation) = self.state.conversations.get_mut(&chat) else {
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
        if let Some(group) = conversation.group.as_mut() {
            for change in page.group_changes {
                group.changes.entry(change.id).or_insert(change);
            }
        }
        conversation.history = match page.next_before {
            Some(before) => History::More(before),
            None => History::Complete,
        };
        if self.state.selected == Some(chat) && conversation.jump_to.is_some() {
            // Going to a search result: that decides where the window is.
            conversation.unread_when_opened = None;
            self.jump(chat);
            return;
        }
        if self.state.selected == Some(chat)
            && self.state.screen == Screen::Main
            && let Some(unread) = conversation.unread_when_opened
        {
            // The first unread may be on an older page: load down to it, so
            // the conversation opens there.
            let loaded = (conversation.messages.values())
                .filter(|m| m.from_account_id != me)
                .count();
            if (loaded as u64) < unread && matches!(conversation.history, History::More(_)) {
                self.load_older();
                return;
            }
            conversation.unread_when_opened = None;
            conversation.new_marker = conversation.first_of_last_from_others(me, unread);
            if let Some(marker) = conversation.new_marker {
                self.inbox.show_from(marker);
            }
            self.mark_read(chat);
        }
    }

    fn live(&mut self, event: Event) {
        self.state.stream_error = None;
        match event {
            Event::Message { id, message } => self.live_message(id, message),
            Event::Group { change, .. } => self.group_change(change),
            Event::PeerGone {
                peer_account_id, ..
            } => {
                // Only a conversation this client shows; the directory
                // drops the account on its next load.
                if let Some(conversation) =
                    (self.state.conversations).get_mut(&ChatId::Direct(peer_account_id))
                {
                    conversation.deleted = true;
                }
                (self.state.directory.accounts).retain(|a| a.account_id != peer_account_id);
            }
            Event::Delivered {
                peer,
                peer_account_id,
                up_to,
                ..
            } => {
                // Delivery covers every conversation with the peer; only a
                // direct one shows it as such.
                let conversation = self
                    .state
                    .conversation_mut(ChatId::Direct(peer_account_id), &peer);
                conversation.delivered_up_to = conversation.delivered_up_to.max(up_to);
            }
            Event::Read {
                peer_account_id,
                up_to,
                conversation_id,
                ..
            } if self
                .state
                .conversations
                .contains_key(&ChatId::Group(conversation_id)) =>
            {
                let chat = ChatId::Group(conversation_id);
                let members = (self.state.conversations.get_mut(&chat))
                    .and_then(|c| c.group.as_mut()?.members.as_mut());
                if let Some(member) =
                    members.and_then(|m| m.iter_mut().find(|m| m.account_id == peer_account_id))
                {
                    member.read_up_to = member.read_up_to.max(up_to);
                }
            }
            Event::Read {
                peer,
                peer_account_id,
                up_to,
                ..
            } => {
                let conversation = self
                    .state
                    .conversation_mut(ChatId::Direct(peer_account_id), &peer);
                conversation.read_up_to = conversation.read_up_to.max(up_to);
                conversation.delivered_up_to = conversation.delivered_up_to.max(up_to);
            }
            Event::Deleted { ids, .. } => self.remove_messages(&ids),
            Event::Presence {
                full,
                online,
                offline,
            } => {
                if full {
                    self.state.online.clear();
                }
                self.state.online.extend(online);
                for id in offline {
                    self.state.online.remove(&id);
                }
            }
            Event::Directory { created, deleted } => self.directory_news(created, &deleted),
            Event::CaughtUp { .. } => {
                let resumed = std::mem::replace(&mut self.state.live, true);
                // Accounts made while the stream was away are not news on
                // it: after a resume the directory is listed again.
                if resumed && !self.state.directory.loading {
                    self.state.directory.loading = true;
                    self.command(Command::ListAccounts {
                        pattern: effective_pattern(&self.state.directory.pattern),
                        page_token: None,
                    });
                }
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
        let (chat, name) = if message.in_group {
            (ChatId::Group(message.conversation_id), String::new())
        } else if mine {
            (ChatId::Direct(message.to_account_id), message.to.clone())
        } else {
            (
                ChatId::Direct(message.from_account_id),
                message.from.clone(),
            )
        };
        let open = self.state.screen == Screen::Main && self.state.selected == Some(chat);
        // Read only if it shows: the terminal has the focus and the inbox
        // is at its newest.
        let on_screen = open && self.state.terminal_focused && self.inbox.scroll() == 0;
        let username = self.state.me.as_ref().map_or("", |me| me.username.as_str());
        let mention = !mine && mentions(&message.body, username);
        // What a desktop notification says: who, where, and the start.
        let alert = (message.from.clone(), message.body.clone());
        let conversation = self.state.conversation_mut(chat, &name);
        // The conversation list counted everything up to its last message;
        // only what comes after is news.
        let news = id > conversation.last_id;
        conversation.last_id = conversation.last_id.max(id);
        let fresh = !conversation.messages.contains_key(&id);
        if on_screen && fresh {
            self.inbox
                .keep_position(&message, &self.state.conversations[&chat], &self.state);
        }
        self.state
            .conversation_mut(chat, &name)
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
            self.command(Command::MarkRead { chat, up_to: id });
        } else {
            let conversation = self.state.conversation_mut(chat, &name);
            conversation.unread += 1;
            conversation.mentioned |= mention;
            if open && conversation.new_marker.is_none() {
                conversation.new_marker = Some(id);
            }
            let title = match conversation.group {
                Some(_) => format!("{} in {}", alert.0, conversation.name),
                None => alert.0,
            };
            // A muted conversation stays quiet, unless it names the user.
            let quiet = self.state.muted.contains(&chat) && !mention;
            if self.state.live && !quiet {
                match self.state.notify {
                    Notify::Off => {}
                    Notify::Bell => self.effects.push(Effect::Bell),
                    Notify::Desktop => self.effects.push(Effect::Notify {
                        title,
                        body: alert.1,
                    }),
                }
            }
        }
    }

    /// A change to a group the user is in (or was in, until this change).
    fn group_change(&mut self, change: GroupChange) {
        let me = self.state.my_id();
        let chat = ChatId::Group(change.conversation_id);
        let first = change.accounts.first().map(|(id, _)| *id);
        let user_is_out = match change.kind {
            GroupChangeKind::Removed => first == Some(me),
            GroupChangeKind::Left | GroupChangeKind::AccountDeleted => change.by_account_id == me,
            _ => false,
        };
        if user_is_out {
            self.leave_group(chat, &change);
            return;
        }
        let conversation = self.state.conversation_mut(chat, &change.title);
        if !change.title.is_empty() {
            conversation.name.clone_from(&change.title);
        }
        conversation.last_id = conversation.last_id.max(change.id);
        let by = change.by_account_id;
        if change.kind == GroupChangeKind::AccountDeleted {
            // Its messages are erased, as in a direct conversation.
            conversation.messages.retain(|_, m| m.from_account_id != by);
        }
        let Some(group) = conversation.group.as_mut() else {
            return;
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match change.kind {
            GroupChangeKind::Created => {
                group.owner = by;
                let others = change.accounts.iter().filter(|(id, _)| *id != by);
                group.member_count = count(others.count() + 1);
            }
            GroupChangeKind::Added => {
                group.member_count = group
                    .member_count
                    .saturating_add(count(change.accounts.len()));
                if let Some(members) = group.members.as_mut() {
                    for (id, name) in &change.accounts {
                        if members.iter().all(|m| m.account_id != *id) {
                            members.push(ConversationMember {
                                account_id: *id,
                                username: name.clone(),
                                owner: false,
                                admin: false,
                                joined_at: change.id,
                                read_up_to: 0,
                                delivered_up_to: 0,
                                online: false,
                            });
                        }
                    }
                }
            }
            GroupChangeKind::Removed | GroupChangeKind::Left | GroupChangeKind::AccountDeleted => {
                let gone = if change.kind == GroupChangeKind::Removed {
                    first
                } else {
                    Some(by)
                };
                group.member_count = group.member_count.saturating_sub(1);
                if let (Some(members), Some(gone)) = (group.members.as_mut(), gone) {
                    members.retain(|m| m.account_id != gone);
                }
                if let Some(owner) = change.new_owner {
                    set_owner(group, owner, None);
                }
            }
            GroupChangeKind::OwnerChanged => {
                if let Some(owner) = first {
                    set_owner(group, owner, Some(by));
                }
            }
            GroupChangeKind::AdminAdded | GroupChangeKind::AdminRemoved => {
                let admin = change.kind == GroupChangeKind::AdminAdded;
                if let Some(member) = (group.members.as_mut())
                    .and_then(|m| m.iter_mut().find(|m| Some(m.account_id) == first))
                {
                    member.admin = admin;
                }
            }
            GroupChangeKind::Renamed | GroupChangeKind::Unknown => {}
        }
        group.changes.insert(change.id, change);
        self.members.clamp(self.state.open_conversation());
    }

    /// The user left `chat`, was removed from it, or deleted the account:
    /// the group goes from the list (a member that left keeps nothing).
    fn leave_group(&mut self, chat: ChatId, change: &GroupChange) {
        let title = (self.state.conversations.remove(&chat))
            .map_or_else(|| change.title.clone(), |c| c.name);
        if self.state.selected == Some(chat) {
            self.state.selected = None;
            self.compose.switch_to(None);
            self.inbox.reset();
            self.members.reset();
            self.state.focus = Pane::Users;
        }
        if change.kind == GroupChangeKind::Removed {
            let by = if change.by.is_empty() {
                "someone"
            } else {
                change.by.as_str()
            };
            self.state.last_error = Some(format!("{by} removed you from the group {title}"));
        }
    }

    fn remove_messages(&mut self, ids: &[MessageId]) {
        for conversation in self.state.conversations.values_mut() {
            for id in ids {
                conversation.messages.remove(id);
            }
        }
        self.inbox.removed(ids, self.state.open_conversation());
    }

    fn connection(&mut self, connection: ConnectionState) {
        if self.state.screen == Screen::SignIn && !self.sign_in.is_busy() {
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
            ConnectionState::NoMajority { server } => {
                self.state.last_server_seen = Some(server.clone());
                Link::NoMajority { server }
            }
            ConnectionState::Failed => Link::Failed,
        };
    }

    fn last_server(&self) -> Option<String> {
        self.state.last_server_seen.clone()
    }
}

/// Whether `body` mentions `username` as `@username` (ignoring case, not
/// inside a longer name; a full stop after it ends a sentence).
pub fn mentions(body: &str, username: &str) -> bool {
    if username.is_empty() {
        return false;
    }
    let lower = body.to_lowercase();
    let wanted = format!("@{}", username.to_lowercase());
    lower.match_indices(&wanted).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let rest = lower[at + wanted.len()..].trim_start_matches('.');
        let after = rest.chars().next();
        before.is_none_or(|c| !is_name_char(c)) && after.is_none_or(|c| !is_name_char(c))
    })
}

/// A character a username can hold.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Makes `owner` the group's owner; `previous`, who handed it on, stays an
/// admin.
fn set_owner(group: &mut Group, owner: AccountId, previous: Option<AccountId>) {
    group.owner = owner;
    for member in group.members.iter_mut().flatten() {
        if member.account_id == owner {
            member.owner = true;
        } else if member.owner {
            member.owner = false;
            member.admin |= Some(member.account_id) == previous;
        }
    }
}

/// Moves the receipt cursors up to what a message of the user's says.
fn note_receipts(conversation: &mut Conversation, message: &Message) {
    if message.read {
        conversation.read_up_to = conversation.read_up_to.max(message.id);
    }
    if message.delivered || message.read {
        conversation.delivered_up_to = conversation.delivered_up_to.max(message.id);
    }
}
