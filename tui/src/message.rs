//! The messages between the UI loop and the client task: [`Command`]s go
//! to the task, [`ServerEvent`]s come back. Plain data, like
//! [`Action`](crate::action::Action), so the app and its tests use them
//! without the task; [`net`](crate::net) is the task that answers them.

use std::time::Duration;

use chat_client::{
    Account, AccountId, AccountPage, ConnectionState, ConversationId, ConversationMembers,
    Conversations, Event, GroupEdit, HistoryPage, MessageId, SentMessage,
};

use crate::state::ChatId;

/// What the sign-in form asks for, and what the client task is asked to do
/// with it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInRequest {
    /// The servers, in order.
    pub servers: Vec<String>,
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
    /// Create the account first.
    pub create: bool,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest")
            .field("servers", &self.servers)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("create", &self.create)
            .finish()
    }
}

/// A message on its way out: what the outbox sender sends, in order.
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The conversation, by id: a name registered again after a deletion
    /// is someone else.
    pub to: ChatId,
    /// Its name, for the screen.
    pub name: String,
    /// The text.
    pub body: String,
    /// The idempotency key: every retry reuses it, so a send repeated after
    /// an unknown outcome never makes a second message.
    pub client_msg_id: String,
}

/// Without the body: what people write does not belong in logs.
impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("to", &self.to)
            .field("client_msg_id", &self.client_msg_id)
            .finish_non_exhaustive()
    }
}

/// What the UI asks the client task to do.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// Connect to the request's servers (reusing the connection if the list
    /// is the same), create the account first if asked, then log in and
    /// start the session.
    SignIn(SignInRequest),
    /// Resume the saved session (the client task reads it, so its token
    /// never passes through the UI).
    Resume,
    /// Fetch a page of the accounts matching `pattern`.
    ListAccounts {
        /// The wildcard pattern (`*`, `?`).
        pattern: String,
        /// The page to continue from; `None` for the first.
        page_token: Option<String>,
    },
    /// Fetch a page of a conversation, older than `before`.
    LoadHistory {
        /// The conversation.
        chat: ChatId,
        /// Only messages below this id; `None` for the newest.
        before: Option<MessageId>,
    },
    /// Send a message (queued behind earlier sends, retried until answered).
    Send(Outgoing),
    /// Acknowledge delivery of every message up to this id.
    Ack {
        /// The highest message id received.
        up_to: MessageId,
    },
    /// Mark a conversation read up to this id.
    MarkRead {
        /// The conversation.
        chat: ChatId,
        /// The highest message id shown.
        up_to: MessageId,
    },
    /// Make a group (retried under one key until the server answers).
    CreateGroup {
        /// Its title.
        title: String,
        /// The other members.
        members: Vec<AccountId>,
    },
    /// Change a group (not retried when the outcome is unknown).
    ChangeGroup {
        /// The group.
        group: ConversationId,
        /// The change.
        edit: GroupEdit,
    },
    /// Fetch the members of a group with their cursors.
    LoadMembers {
        /// The group.
        group: ConversationId,
    },
    /// Search `chat` on the server for `query`, below `before`.
    Search {
        /// The conversation.
        chat: ChatId,
        /// What to look for.
        query: String,
        /// Where the last call stopped; `None` from the newest.
        before: Option<MessageId>,
    },
    /// Fetch accounts whose name starts with `prefix`, to complete a name.
    Complete {
        /// What was typed.
        prefix: String,
    },
    /// Delete messages from the user's own view.
    DeleteMessages {
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Delete the signed-in account, checking its password again.
    DeleteAccount {
        /// The password.
        password: String,
    },
    /// Close the session.
    SignOut,
}

/// Passwords are never shown (nor bodies, through [`Outgoing`]).
impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn(request) => f.debug_tuple("SignIn").field(request).finish(),
            Self::DeleteAccount { .. } => f
                .debug_struct("DeleteAccount")
                .field("password", &"<redacted>")
                .finish(),
            Self::ListAccounts {
                pattern,
                page_token,
            } => f
                .debug_struct("ListAccounts")
                .field("pattern", pattern)
                .field("page_token", page_token)
                .finish(),
            Self::Search {
                chat,
                query,
                before,
            } => f
                .debug_struct("Search")
                .field("chat", chat)
                .field("query_bytes", &query.len())
                .field("before", before)
                .finish(),
            Self::LoadHistory { chat, before } => f
                .debug_struct("LoadHistory")
                .field("chat", chat)
                .field("before", before)
                .finish(),
            Self::Send(outgoing) => f.debug_tuple("Send").field(outgoing).finish(),
            Self::Ack { up_to } => f.debug_struct("Ack").field("up_to", up_to).finish(),
            Self::MarkRead { chat, up_to } => f
                .debug_struct("MarkRead")
                .field("chat", chat)
                .field("up_to", up_to)
                .finish(),
            Self::CreateGroup { title, members } => f
                .debug_struct("CreateGroup")
                .field("title", title)
                .field("members", members)
                .finish(),
            Self::ChangeGroup { group, edit } => f
                .debug_struct("ChangeGroup")
                .field("group", group)
                .field("edit", edit)
                .finish(),
            Self::LoadMembers { group } => {
                f.debug_struct("LoadMembers").field("group", group).finish()
            }
            Self::Complete { prefix } => {
                f.debug_struct("Complete").field("prefix", prefix).finish()
            }
            Self::DeleteMessages { ids } => {
                f.debug_struct("DeleteMessages").field("ids", ids).finish()
            }
            Self::SignOut => f.write_str("SignOut"),
            Self::Resume => f.write_str("Resume"),
        }
    }
}

/// Which sign-in field an error concerns, so the form can show it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The server list.
    Servers,
    /// The username.
    Username,
    /// The password.
    Password,
}

/// What the client task tells the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The session is open.
    SignedIn {
        /// The account's username as registered.
        username: String,
        /// The account's id.
        account_id: AccountId,
        /// The server that answered.
        server: String,
    },
    /// Signing in failed; `field` says which input it concerns, if any.
    SignInFailed {
        /// The field to show the error next to; `None` for the form.
        field: Option<Field>,
        /// What went wrong and what to do.
        message: String,
    },
    /// The conversation list, sent before the first event of the stream.
    Conversations(Conversations),
    /// A page of the directory.
    Accounts {
        /// The pattern it answers.
        pattern: String,
        /// True when it continues earlier pages, false for a first page.
        appended: bool,
        /// The accounts.
        page: AccountPage,
    },
    /// A page of a conversation.
    History {
        /// The conversation.
        chat: ChatId,
        /// The page, or what went wrong loading it.
        page: Result<HistoryPage, String>,
    },
    /// An event of the subscription, in log order.
    Live(Event),
    /// A send was stored by the server.
    Sent(SentMessage),
    /// A send failed for a reason that may pass; it is retried in `retry_in`
    /// with the same key.
    SendRetrying {
        /// The send's idempotency key.
        client_msg_id: String,
        /// What went wrong.
        error: String,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// A send was refused (unknown recipient, bad body): it will not be
    /// retried.
    SendFailed {
        /// The send's idempotency key.
        client_msg_id: String,
        /// The server's reason.
        error: String,
        /// The recipient's account is gone (deleted): nothing more can be
        /// sent to it.
        gone: bool,
    },
    /// A group was made at the user's request.
    GroupCreated {
        /// Its id.
        group: ConversationId,
        /// Its title.
        title: String,
    },
    /// Making a group was refused or failed.
    GroupNotCreated {
        /// Why.
        error: String,
    },
    /// The members of a group.
    Members {
        /// The group.
        group: ConversationId,
        /// Them, or what went wrong loading them.
        members: Result<ConversationMembers, String>,
    },
    /// The server's answer to [`Command::Search`].
    Found {
        /// The conversation.
        chat: ChatId,
        /// What was looked for.
        query: String,
        /// The matches and where to go on, or what went wrong.
        page: Result<HistoryPage, String>,
    },
    /// Accounts whose name starts with `prefix`.
    Completions {
        /// What was typed.
        prefix: String,
        /// The first few matching accounts, in name order.
        accounts: Vec<Account>,
    },
    /// Messages were deleted by this session's request.
    Deleted {
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Where the client stands with the cluster.
    Connection(ConnectionState),
    /// The event stream broke and is being resumed.
    StreamInterrupted {
        /// What broke it.
        error: String,
    },
    /// The account was deleted; the session is over.
    AccountDeleted,
    /// Deleting the account failed (e.g. a wrong password).
    DeleteAccountFailed {
        /// The server's reason.
        error: String,
    },
    /// The session is over: it expired, was closed elsewhere, or the account
    /// is gone. The user has to sign in again.
    SessionEnded {
        /// Why, for the sign-in screen.
        reason: String,
    },
    /// The session was closed at the user's request.
    SignedOut,
    /// A call failed; shown in the status bar.
    Error {
        /// What was being done ("mark read", ...).
        action: &'static str,
        /// The error.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_never_show_passwords() {
        let command = Command::SignIn(SignInRequest {
            servers: vec!["a:1".to_owned()],
            username: "alice".to_owned(),
            password: "hunter22".to_owned(),
            create: false,
        });
        assert!(!format!("{command:?}").contains("hunter22"));
        let delete = Command::DeleteAccount {
            password: "hunter22".to_owned(),
        };
        assert!(!format!("{delete:?}").contains("hunter22"));
    }
}
