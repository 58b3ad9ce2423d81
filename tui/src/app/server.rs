//! What the client task reports: [`App::on_server_event`] files pages,
//! live events and the fate of sends into the state, and moves between the
//! sign-in form and the main screen as sessions open and end.

use chat_client::{AccountId, ConnectionState, Event, HistoryPage, Message, MessageId};

use super::App;
use crate::action::Effect;
use crate::components::users::Users;
use crate::message::{Command, ServerEvent};
use crate::state::{Conversation, Directory, History, Link, Me, Pane, Screen, effective_pattern};

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
                    if listed.group.is_some() {
                        self.state.groups.insert(listed.conversation_id);
                        continue;
                    }
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
                    conversation_id: 0,
                    in_group: false,
                    read_by: 0,
                    readers: 1,
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
        state.groups.clear();
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

    fn back_to_sign_in(&mut self, notice: String) {
        self.state.screen = Screen::SignIn;
        self.state.link = Link::Offline;
        self.state.live = false;
        self.state.stream_error = None;
        self.dialog = None;
        self.sign_in.back(notice);
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

    fn history(&mut self, peer_id: AccountId, page: Result<HistoryPage, String>) {
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
            // Not shown yet: see `State::groups`.
            Event::Message { message, .. } if message.in_group => {
                self.state.groups.insert(message.conversation_id);
            }
            Event::Group { change, .. } => {
                self.state.groups.insert(change.conversation_id);
            }
            Event::Read {
                conversation_id, ..
            } if self.state.groups.contains(&conversation_id) => {}
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
        let conversation = self.state.conversation_mut(peer_id, &peer);
        // The conversation list counted everything up to its last message;
        // only what comes after is news.
        let news = id > conversation.last_id;
        conversation.last_id = conversation.last_id.max(id);
        let fresh = !conversation.messages.contains_key(&id);
        if on_screen && fresh {
            self.inbox
                .keep_position(&message, &self.state.conversations[&peer_id], &self.state);
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
            self.command(Command::MarkRead {
                peer,
                peer_id,
                up_to: id,
            });
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
            ConnectionState::Failed => Link::Failed,
        };
    }

    fn last_server(&self) -> Option<String> {
        self.state.last_server_seen.clone()
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
