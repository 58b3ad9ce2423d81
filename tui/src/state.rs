//! What the client knows, as plain data: who is signed in, the directory of
//! accounts, each conversation's loaded messages, unread counts and receipt
//! cursors, the outbox of sends not yet confirmed, and the connection.
//!
//! Nothing here does I/O or reads a clock; [`App`](crate::app::App) changes
//! it in answer to keys and to the client task's events, and the panes draw
//! from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chat_client::{
    Account, AccountId, ConversationId, ConversationMember, GroupChange, Message, MessageId,
};
use chrono::FixedOffset;

use crate::message::Outgoing;
use crate::theme::Theme;

/// The most a message body may hold, in bytes (the server's limit).
pub const MAX_BODY: usize = 16 * 1024;

/// How a message that is not on screen makes itself known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Notify {
    /// Only the unread counts.
    Off,
    /// The terminal bell.
    #[default]
    Bell,
    /// A desktop notification through the terminal (OSC 777 and OSC 9).
    Desktop,
}

impl Notify {
    /// The setting as the config file spells it.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Some(Self::Off),
            "bell" => Some(Self::Bell),
            "desktop" => Some(Self::Desktop),
            _ => None,
        }
    }

    /// The config file's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Bell => "bell",
            Self::Desktop => "desktop",
        }
    }
}

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
    /// The members of the open group, when shown.
    Members,
    /// The message being written.
    Compose,
}

impl Pane {
    /// The pane Tab goes to; the members pane only when it is shown.
    pub fn next(self, members_shown: bool) -> Self {
        match self {
            Self::Users => Self::Inbox,
            Self::Inbox if members_shown => Self::Members,
            Self::Inbox | Self::Members => Self::Compose,
            Self::Compose => Self::Users,
        }
    }

    /// The pane Shift+Tab goes to.
    pub fn prev(self, members_shown: bool) -> Self {
        match self {
            Self::Users => Self::Compose,
            Self::Inbox => Self::Users,
            Self::Members => Self::Inbox,
            Self::Compose if members_shown => Self::Members,
            Self::Compose => Self::Inbox,
        }
    }
}

/// A conversation as the client names it: the direct one with an account,
/// or a group. Both are by id, never by name: a name registered again after
/// a deletion is someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatId {
    /// The direct conversation with this account.
    Direct(AccountId),
    /// This group.
    Group(ConversationId),
}

impl ChatId {
    /// How the config file names it: `d` and the account id, or `g` and the
    /// group's id.
    pub fn key(self) -> String {
        match self {
            Self::Direct(id) => format!("d{id}"),
            Self::Group(id) => format!("g{id}"),
        }
    }

    /// The conversation a config file key names.
    pub fn from_key(key: &str) -> Option<Self> {
        let key = key.trim();
        let (kind, id) = key.split_at_checked(1)?;
        let id = id.parse().ok()?;
        match kind {
            "d" => Some(Self::Direct(id)),
            "g" => Some(Self::Group(id)),
            _ => None,
        }
    }

    /// The other account of a direct conversation.
    pub fn peer(self) -> Option<AccountId> {
        match self {
            Self::Direct(id) => Some(id),
            Self::Group(_) => None,
        }
    }

    /// The group's id.
    pub fn group(self) -> Option<ConversationId> {
        match self {
            Self::Group(id) => Some(id),
            Self::Direct(_) => None,
        }
    }
}

/// What the client knows of a group besides its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Its owner.
    pub owner: AccountId,
    /// How many members it has, the user included.
    pub member_count: u32,
    /// The members with their cursors, once asked for (opening the group
    /// asks); kept current by the group's events.
    pub members: Option<Vec<ConversationMember>>,
    /// The changes to the group the user can see, by id: shown in the
    /// timeline among the messages.
    pub changes: BTreeMap<MessageId, GroupChange>,
}

impl Group {
    /// The member with `id`, once the members are loaded.
    pub fn member(&self, id: AccountId) -> Option<&ConversationMember> {
        self.members.as_ref()?.iter().find(|m| m.account_id == id)
    }

    /// Whether `id` may add, remove and rename (the owner and admins), as far
    /// as the client knows.
    pub fn may_manage(&self, id: AccountId) -> bool {
        self.owner == id || self.member(id).is_some_and(|m| m.admin || m.owner)
    }

    /// Who of the others that were there when `id` was sent by `sender` has
    /// read it, and who has not yet; `None` until the members are loaded.
    pub fn readers(
        &self,
        sender: AccountId,
        id: MessageId,
    ) -> Option<(Vec<&ConversationMember>, Vec<&ConversationMember>)> {
        let members = self.members.as_ref()?;
        Some(
            members
                .iter()
                .filter(|m| m.account_id != sender && m.joined_at <= id)
                .partition(|m| m.read_up_to >= id),
        )
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
    /// Servers answer (`server` is in use) but the cluster has no majority
    /// behind a leader: reads work, writes wait (the outbox keeps them).
    NoMajority {
        /// The server in use.
        server: String,
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
    /// Which conversation.
    pub id: ChatId,
    /// What it is called: the other party's username, or the group's title.
    pub name: String,
    /// A group's owner, members and changes; `None` for a direct one.
    pub group: Option<Group>,
    /// Loaded messages by id: cursor order, and a message seen twice (from
    /// history and from the stream) is kept once.
    pub messages: BTreeMap<MessageId, Message>,
    /// Messages from others the user has not read.
    pub unread: u64,
    /// One of them mentions the user (`@name`).
    pub mentioned: bool,
    /// The newest message id known in this conversation (0 if none): the
    /// recency for sorting, and the line between messages the unread count
    /// already includes and new ones.
    pub last_id: MessageId,
    /// The peer has acknowledged the user's messages up to here (direct).
    pub delivered_up_to: MessageId,
    /// The peer has read the user's messages up to here (direct).
    pub read_up_to: MessageId,
    /// How much history is loaded.
    pub history: History,
    /// The first message that was unread when the conversation was opened:
    /// the "new" marker goes above it.
    pub new_marker: Option<MessageId>,
    /// The unread count when the conversation was opened before its history
    /// arrived, to place the marker once it does.
    pub unread_when_opened: Option<u64>,
    /// A message to select and show once its page is loaded (a search
    /// result); older pages load until it is.
    pub jump_to: Option<MessageId>,
    /// The other party deleted their account: the conversation takes no
    /// new message.
    pub deleted: bool,
}

impl Conversation {
    /// An empty conversation, `name` being the peer's name or the group's
    /// title.
    pub fn new(id: ChatId, name: &str) -> Self {
        Self {
            id,
            name: name.to_owned(),
            group: match id {
                ChatId::Direct(_) => None,
                ChatId::Group(_) => Some(Group::default()),
            },
            messages: BTreeMap::new(),
            unread: 0,
            mentioned: false,
            last_id: 0,
            delivered_up_to: 0,
            read_up_to: 0,
            history: History::NotLoaded,
            new_marker: None,
            jump_to: None,
            deleted: false,
            unread_when_opened: None,
        }
    }

    /// The other party of a direct conversation.
    pub fn peer_id(&self) -> Option<AccountId> {
        self.id.peer()
    }

    /// Whether this is a group.
    pub fn is_group(&self) -> bool {
        self.group.is_some()
    }

    /// The newest loaded message someone other than `me` sent.
    pub fn newest_from_others(&self, me: AccountId) -> Option<MessageId> {
        self.messages
            .values()
            .rev()
            .find(|m| m.from_account_id != me)
            .map(|m| m.id)
    }

    /// The oldest of the `count` newest loaded messages from others: where
    /// the "new" marker goes when `count` are unread.
    pub fn first_of_last_from_others(&self, me: AccountId, count: u64) -> Option<MessageId> {
        if count == 0 {
            return None;
        }
        self.messages
            .values()
            .rev()
            .filter(|m| m.from_account_id != me)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .last()
            .map(|m| m.id)
    }

    /// What the others have done with `message`, one of the user's.
    pub fn receipt(&self, message: &Message) -> Receipt {
        let id = message.id;
        let Some(group) = &self.group else {
            return if id <= self.read_up_to {
                Receipt::Read
            } else if id <= self.delivered_up_to {
                Receipt::Delivered
            } else {
                Receipt::Sent
            };
        };
        let (read_by, of) = match group.readers(message.from_account_id, id) {
            Some((read, unread)) => (read.len(), read.len() + unread.len()),
            None => (message.read_by as usize, message.readers as usize),
        };
        match (read_by, of) {
            (_, 0) => Receipt::Sent,
            (read, of) if read == of => Receipt::ReadByAll,
            (0, _) if message.delivered => Receipt::Delivered,
            (0, _) => Receipt::Sent,
            (read, of) => Receipt::ReadBy { read, of },
        }
    }
}

/// How far one of the user's own messages has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The server stored it.
    Sent,
    /// A client of the peer (of every other member) received it.
    Delivered,
    /// The peer read it.
    Read,
    /// In a group: `read` of the `of` others who were there have read it.
    ReadBy {
        /// How many read it.
        read: usize,
        /// How many could.
        of: usize,
    },
    /// In a group: every other member who was there read it.
    ReadByAll,
}

/// A send the server has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The idempotency key every retry reuses.
    pub client_msg_id: String,
    /// Who signed in when it was written: it is only ever sent as them.
    pub author: String,
    /// The conversation it goes to.
    pub to: ChatId,
    /// The conversation's name, for the screen.
    pub name: String,
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
            to: self.to,
            name: self.name.clone(),
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
    /// The user asked for the last row: pages are loaded until the end,
    /// then it is selected.
    pub to_last: bool,
}

/// One row of the users pane: a conversation, or an account of the
/// directory to start one with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The conversation it opens.
    pub chat: ChatId,
    /// The username, or the group's title.
    pub name: String,
    /// Unread messages in it.
    pub unread: u64,
    /// An unread message mentions the user.
    pub mentioned: bool,
    /// Its messages do not notify (a mention still does).
    pub muted: bool,
    /// Whether the account has an event stream open, for accounts the user
    /// shares a conversation with (the server tells no one else).
    pub online: Option<bool>,
    /// A group's member count.
    pub members: Option<u32>,
    /// The other party deleted their account.
    pub deleted: bool,
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
    /// Conversations, direct and group.
    pub conversations: HashMap<ChatId, Conversation>,
    /// The directory of accounts.
    pub directory: Directory,
    /// The accounts sharing a conversation with the user that have an
    /// event stream open, as the server's presence news says.
    pub online: HashSet<AccountId>,
    /// The open conversation.
    pub selected: Option<ChatId>,
    /// The row the Users cursor is on: looking at a row does not open it
    /// (Enter does), so it marks nothing read.
    pub highlight: Option<ChatId>,
    /// The order of the conversation rows while the user moves through
    /// them, so the list does not reorder under the cursor; `None` when
    /// the list is in its natural order.
    pub frozen_order: Option<Vec<ChatId>>,
    /// The terminal has the focus (as far as it reports; assumed without
    /// reports): only then is what shows on screen read.
    pub terminal_focused: bool,
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
    /// How a message that is not on screen makes itself known.
    pub notify: Notify,
    /// Conversations whose messages do not notify (a mention still does).
    pub muted: HashSet<ChatId>,
    /// The members pane is shown beside the inbox (when a group is open).
    pub show_members: bool,
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
            online: HashSet::new(),
            selected: None,
            highlight: None,
            frozen_order: None,
            terminal_focused: true,
            outbox: Vec::new(),
            last_error: None,
            live: false,
            unacked: 0,
            theme: Theme::default(),
            time_zone: FixedOffset::east_opt(0).expect("UTC is a valid offset"),
            notify: Notify::Bell,
            muted: HashSet::new(),
            show_members: false,
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

    /// Whether account `id` is online, as far as the user may know.
    pub fn is_online(&self, id: AccountId) -> bool {
        self.online.contains(&id)
    }

    /// The signed-in account's id (0 before sign-in).
    pub fn my_id(&self) -> AccountId {
        self.me.as_ref().map_or(0, |me| me.account_id)
    }

    /// The members pane is on screen: shown, with a group open.
    pub fn members_shown(&self) -> bool {
        self.show_members && self.open_conversation().is_some_and(Conversation::is_group)
    }

    /// The rows of the users pane: conversations first (those with unread
    /// messages, then by most recent activity; every group, direct ones
    /// with something in them), then the other accounts of the directory
    /// in username order. The signed-in user is left out. With a filter,
    /// conversations are filtered by the same pattern.
    pub fn user_rows(&self) -> Vec<UserRow> {
        let pattern = effective_pattern(&self.directory.pattern);
        let me = ChatId::Direct(self.my_id());
        let mut conversations: Vec<&Conversation> = self
            .conversations
            .values()
            .filter(|c| c.id != me)
            .filter(|c| {
                c.is_group() || c.last_id > 0 || c.unread > 0 || Some(c.id) == self.selected
            })
            .filter(|c| wildcard_match(&pattern, &c.name))
            .collect();
        conversations.sort_by(|a, b| {
            (b.unread > 0)
                .cmp(&(a.unread > 0))
                .then(b.last_id.cmp(&a.last_id))
                .then(a.name.cmp(&b.name))
                .then(a.id.cmp(&b.id))
        });
        if let Some(frozen) = &self.frozen_order {
            // Rows keep their places; rows new since go after them.
            let place = |c: &Conversation| frozen.iter().position(|id| *id == c.id);
            conversations.sort_by_key(|c| place(c).unwrap_or(usize::MAX));
        }
        let mut rows: Vec<UserRow> = conversations
            .iter()
            .map(|c| UserRow {
                chat: c.id,
                name: c.name.clone(),
                unread: c.unread,
                mentioned: c.mentioned,
                muted: self.muted.contains(&c.id),
                online: c.peer_id().map(|id| self.online.contains(&id)),
                members: c.group.as_ref().map(|g| g.member_count),
                deleted: c.deleted,
            })
            .collect();
        let listed: HashSet<ChatId> = rows.iter().map(|r| r.chat).collect();
        rows.extend(
            self.directory
                .accounts
                .iter()
                .filter(|a| a.account_id != self.my_id())
                .filter(|a| !listed.contains(&ChatId::Direct(a.account_id)))
                .filter(|a| wildcard_match(&pattern, &a.username))
                .map(|a| UserRow {
                    chat: ChatId::Direct(a.account_id),
                    name: a.username.clone(),
                    unread: 0,
                    mentioned: false,
                    muted: self.muted.contains(&ChatId::Direct(a.account_id)),
                    online: Some(self.online.contains(&a.account_id)),
                    members: None,
                    deleted: false,
                }),
        );
        rows
    }

    /// The sends to `chat` still waiting for the server.
    pub fn pending_for(&self, chat: ChatId) -> impl Iterator<Item = &Pending> {
        self.outbox.iter().filter(move |p| p.to == chat)
    }

    /// The conversation `chat`, created (named `name`) if new.
    pub fn conversation_mut(&mut self, chat: ChatId, name: &str) -> &mut Conversation {
        self.conversations
            .entry(chat)
            .or_insert_with(|| Conversation::new(chat, name))
    }

    /// The name of account `id` as the client knows it: from the directory,
    /// a conversation or a loaded member list.
    pub fn name_of(&self, id: AccountId) -> Option<&str> {
        if let Some(me) = self.me.as_ref().filter(|me| me.account_id == id) {
            return Some(&me.username);
        }
        if let Some(c) = self.conversations.get(&ChatId::Direct(id)) {
            return Some(&c.name);
        }
        if let Some(a) = self.directory.accounts.iter().find(|a| a.account_id == id) {
            return Some(&a.username);
        }
        self.conversations
            .values()
            .filter_map(|c| c.group.as_ref()?.member(id))
            .map(|m| m.username.as_str())
            .next()
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
