//! What the client knows, as plain data: who is signed in, the directory of
//! accounts, each conversation's loaded messages, unread counts and receipt
//! cursors, the outbox of sends not yet confirmed, and the connection.
//!
//! Nothing here does I/O or reads a clock; [`App`](crate::app::App) changes
//! it in answer to keys and to the client task's events, and the panes draw
//! from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chat_client::{Account, AccountId, Message, MessageId};
use chrono::FixedOffset;

use crate::message::Outgoing;
use crate::theme::Theme;

/// The most a message body may hold, in bytes (the server's limit).
pub const MAX_BODY: usize = 16 * 1024;

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// The sign-in form.
    SignIn,
    /// The three panes.
    Main,
}

/// The panes of the main screen, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The directory and conversations.
    Users,
    /// The open conversation.
    Inbox,
    /// The message being written.
    Compose,
}

impl Pane {
    /// The pane Tab goes to.
    pub fn next(self) -> Self {
        match self {
            Self::Users => Self::Inbox,
            Self::Inbox => Self::Compose,
            Self::Compose => Self::Users,
        }
    }

    /// The pane Shift+Tab goes to.
    pub fn prev(self) -> Self {
        match self {
            Self::Users => Self::Compose,
            Self::Inbox => Self::Users,
            Self::Compose => Self::Inbox,
        }
    }
}

/// The signed-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// The username as registered.
    pub username: String,
    /// The account id, to tell own messages from received ones.
    pub account_id: AccountId,
}

/// The connection as the status bar tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet (before sign-in).
    Offline,
    /// Calls go to `server`.
    Connected {
        /// The server in use.
        server: String,
        /// The server used before, when the client moved: the user should
        /// know it switched.
        switched_from: Option<String>,
    },
    /// The client lost its server and is about to try `server`.
    Reconnecting {
        /// The next server to try.
        server: String,
        /// How long until it tries.
        next_in: Duration,
    },
    /// No server could be reached; the next call tries again.
    Failed,
}

/// How much of a conversation's history is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Nothing asked yet.
    NotLoaded,
    /// A page is on its way.
    Loading,
    /// Older messages exist below this id.
    More(MessageId),
    /// Everything is loaded.
    Complete,
}

/// One conversation: the messages loaded so far and what the user has not
/// seen yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The other party's username.
    pub peer: String,
    /// The other party's account id.
    pub peer_id: AccountId,
    /// Loaded messages by id: cursor order, and a message seen twice (from
    /// history and from the stream) is kept once.
    pub messages: BTreeMap<MessageId, Message>,
    /// Messages from the peer the user has not read.
    pub unread: u64,
    /// The newest message id known in this conversation (0 if none): the
    /// recency for sorting, and the line between messages the unread count
    /// already includes and new ones.
    pub last_id: MessageId,
    /// The peer has acknowledged the user's messages up to here.
    pub delivered_up_to: MessageId,
    /// The peer has read the user's messages up to here.
    pub read_up_to: MessageId,
    /// How much history is loaded.
    pub history: History,
    /// The first message that was unread when the conversation was opened:
    /// the "new" marker goes above it.
    pub new_marker: Option<MessageId>,
    /// The unread count when the conversation was opened before its history
    /// arrived, to place the marker once it does.
    pub unread_when_opened: Option<u64>,
}

impl Conversation {
    /// An empty conversation with `peer`.
    pub fn new(peer_id: AccountId, peer: &str) -> Self {
        Self {
            peer: peer.to_owned(),
            peer_id,
            messages: BTreeMap::new(),
            unread: 0,
            last_id: 0,
            delivered_up_to: 0,
            read_up_to: 0,
            history: History::NotLoaded,
            new_marker: None,
            unread_when_opened: None,
        }
    }

    /// The newest loaded message the peer sent.
    pub fn newest_from_peer(&self) -> Option<MessageId> {
        self.messages
            .values()
            .rev()
            .find(|m| m.from_account_id == self.peer_id)
            .map(|m| m.id)
    }

    /// The oldest of the `count` newest loaded messages from the peer: where
    /// the "new" marker goes when `count` are unread.
    pub fn first_of_last_from_peer(&self, count: u64) -> Option<MessageId> {
        if count == 0 {
            return None;
        }
        self.messages
            .values()
            .rev()
            .filter(|m| m.from_account_id == self.peer_id)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .last()
            .map(|m| m.id)
    }

    /// What the peer has done with one of the user's messages.
    pub fn receipt(&self, id: MessageId) -> Receipt {
        if id <= self.read_up_to {
            Receipt::Read
        } else if id <= self.delivered_up_to {
            Receipt::Delivered
        } else {
            Receipt::Sent
        }
    }
}

/// How far one of the user's own messages has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The server stored it.
    Sent,
    /// A client of the peer received it.
    Delivered,
    /// The peer read it.
    Read,
}

/// A send the server has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The idempotency key every retry reuses.
    pub client_msg_id: String,
    /// Who signed in when it was written: it is only ever sent as them.
    pub author: String,
    /// The recipient's account id, to show it in the right conversation.
    pub peer_id: AccountId,
    /// The recipient's username, which the API takes.
    pub peer: String,
    /// The text.
    pub body: String,
    /// The last failure, while it is being retried.
    pub retrying: Option<String>,
}

impl Pending {
    /// What the client task is given to send (again, after a new sign-in):
    /// always with the same key.
    pub fn outgoing(&self) -> Outgoing {
        Outgoing {
            to: self.peer.clone(),
            to_id: self.peer_id,
            body: self.body.clone(),
            client_msg_id: self.client_msg_id.clone(),
        }
    }
}

/// The accounts of the server, a page at a time, matching the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// The wildcard pattern the pages answer ("" for all).
    pub pattern: String,
    /// The accounts loaded, in username order.
    pub accounts: Vec<Account>,
    /// Where the next page starts; `None` when all are loaded.
    pub next_page: Option<String>,
    /// A page is on its way.
    pub loading: bool,
}

/// One row of the users pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The account.
    pub account_id: AccountId,
    /// Its username.
    pub name: String,
    /// Unread messages from it.
    pub unread: u64,
    /// Whether it has a session open, when the directory says.
    pub online: Option<bool>,
}

/// Everything the panes draw from.
#[derive(Debug, Clone)]
pub struct State {
    /// Which screen is up.
    pub screen: Screen,
    /// The focused pane of the main screen.
    pub focus: Pane,
    /// The signed-in account (also kept after the session ends, so a new
    /// sign-in as the same user keeps the outbox and drafts).
    pub me: Option<Me>,
    /// The servers to connect to, as the user gave them.
    pub servers: Vec<String>,
    /// The connection.
    pub link: Link,
    /// The last server the client was connected to, to tell the user when
    /// it moves to another.
    pub last_server_seen: Option<String>,
    /// The event stream broke and has not delivered since: why.
    pub stream_error: Option<String>,
    /// Conversations by peer.
    pub conversations: HashMap<AccountId, Conversation>,
    /// The directory of accounts.
    pub directory: Directory,
    /// The open conversation.
    pub selected: Option<AccountId>,
    /// Sends waiting for the server, oldest first.
    pub outbox: Vec<Pending>,
    /// The last error, until the next one or Esc.
    pub last_error: Option<String>,
    /// The stream has caught up with the backlog: events from now on are
    /// live (they ring the bell and are acknowledged one by one).
    pub live: bool,
    /// The highest message id received from others and not yet
    /// acknowledged while the backlog streams in.
    pub unacked: MessageId,
    /// The colours.
    pub theme: Theme,
    /// The local time zone, for message times.
    pub time_zone: FixedOffset,
    /// Ring the bell for a message in a conversation that is not on screen.
    pub bell: bool,
    /// The group conversations the account is in, by id. This client shows
    /// direct conversations only (groups are in the API, not yet here): it
    /// leaves out their rows, messages and receipts rather than show them
    /// as if they were direct ones.
    pub groups: HashSet<u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            screen: Screen::SignIn,
            focus: Pane::Users,
            me: None,
            servers: Vec::new(),
            link: Link::Offline,
            last_server_seen: None,
            stream_error: None,
            conversations: HashMap::new(),
            directory: Directory::default(),
            selected: None,
            outbox: Vec::new(),
            last_error: None,
            live: false,
            unacked: 0,
            theme: Theme::default(),
            time_zone: FixedOffset::east_opt(0).expect("UTC is a valid offset"),
            bell: true,
            groups: HashSet::new(),
        }
    }
}

impl State {
    /// Unread messages over all conversations.
    pub fn total_unread(&self) -> u64 {
        self.conversations.values().map(|c| c.unread).sum()
    }

    /// The open conversation.
    pub fn open_conversation(&self) -> Option<&Conversation> {
        self.selected.and_then(|id| self.conversations.get(&id))
    }

    /// The signed-in account's id (0 before sign-in).
    pub fn my_id(&self) -> AccountId {
        self.me.as_ref().map_or(0, |me| me.account_id)
    }

    /// The rows of the users pane: conversations first (those with unread
    /// messages, then by most recent activity), then the other accounts of
    /// the directory in username order. The signed-in user is left out.
    /// With a filter, conversations are filtered by the same pattern.
    pub fn user_rows(&self) -> Vec<UserRow> {
        let pattern = effective_pattern(&self.directory.pattern);
        let online: HashMap<AccountId, bool> = self
            .directory
            .accounts
            .iter()
            .map(|a| (a.account_id, a.online))
            .collect();
        let mut conversations: Vec<&Conversation> = self
            .conversations
            .values()
            .filter(|c| c.peer_id != self.my_id())
            .filter(|c| c.last_id > 0 || c.unread > 0 || Some(c.peer_id) == self.selected)
            .filter(|c| wildcard_match(&pattern, &c.peer))
            .collect();
        conversations.sort_by(|a, b| {
            (b.unread > 0)
                .cmp(&(a.unread > 0))
                .then(b.last_id.cmp(&a.last_id))
                .then(a.peer.cmp(&b.peer))
        });
        let mut rows: Vec<UserRow> = conversations
            .iter()
            .map(|c| UserRow {
                account_id: c.peer_id,
                name: c.peer.clone(),
                unread: c.unread,
                online: online.get(&c.peer_id).copied(),
            })
            .collect();
        let listed: HashSet<AccountId> = rows.iter().map(|r| r.account_id).collect();
        rows.extend(
            self.directory
                .accounts
                .iter()
                .filter(|a| a.account_id != self.my_id() && !listed.contains(&a.account_id))
                .filter(|a| wildcard_match(&pattern, &a.username))
                .map(|a| UserRow {
                    account_id: a.account_id,
                    name: a.username.clone(),
                    unread: 0,
                    online: Some(a.online),
                }),
        );
        rows
    }

    /// The sends to `peer_id` still waiting for the server.
    pub fn pending_for(&self, peer_id: AccountId) -> impl Iterator<Item = &Pending> {
        self.outbox.iter().filter(move |p| p.peer_id == peer_id)
    }

    /// The conversation with `peer_id`, created if new.
    pub fn conversation_mut(&mut self, peer_id: AccountId, peer: &str) -> &mut Conversation {
        self.conversations
            .entry(peer_id)
            .or_insert_with(|| Conversation::new(peer_id, peer))
    }
}

/// The pattern sent to the server for what the user typed after `/`: their
/// wildcard as is, or, without any wildcard, "contains".
pub fn effective_pattern(typed: &str) -> String {
    let typed = typed.trim();
    if typed.is_empty() {
        "*".to_owned()
    } else if typed.contains(['*', '?']) {
        typed.to_owned()
    } else {
        format!("*{typed}*")
    }
}

/// Whether `name` matches the wildcard `pattern` the way the server matches
/// it: the whole name, ignoring ASCII case, `*` any run, `?` one character.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let name: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was and the name position it has matched up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_the_server() {
        let check = |pattern: &str, name: &str, expected: bool| {
            assert_eq!(wildcard_match(pattern, name), expected, "{pattern} {name}");
        };
        check("*", "alice", true);
        check("*", "", true);
        check("al*", "Alice", true);
        check("a?ice", "alice", true);
        check("a?ice", "alce", false);
        check("*li*", "alice", true);
        check("*z*", "alice", false);
        check("bob", "bob", true);
        check("bob", "bobby", false);
        check("*b", "bob", true);
        check("a*c*e", "abcde", true);
    }

    #[test]
    fn a_filter_without_wildcards_means_contains() {
        assert_eq!(effective_pattern(""), "*");
        assert_eq!(effective_pattern("bo"), "*bo*");
        assert_eq!(effective_pattern("b?b"), "b?b");
        assert_eq!(effective_pattern(" al* "), "al*");
    }
}
