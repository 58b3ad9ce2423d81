//! The values the client hands to its callers: accounts, sessions, messages,
//! conversations, subscription events and cluster status, as plain Rust
//! types. This is the one place where protobuf messages become domain values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_proto as proto;

/// An account's identity: the log position of its creation. A username is only
/// a label, so a name registered again is a different `AccountId`.
pub type AccountId = u64;

/// A message's id: the log position of its send. Unique, increasing, and the
/// same on every replica.
pub type MessageId = u64;

/// A subscription event's id, and so the cursor to resume from: the log
/// position of the chat event that caused it.
pub type EventId = u64;

/// A conversation's id (a direct one or a group): a log position.
pub type ConversationId = u64;

/// Whom a call is about: the other person of a direct conversation, by
/// name or (safer: a name registered again after a deletion is someone
/// else) by account id, or a conversation by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer<'a> {
    /// A username.
    Name(&'a str),
    /// An account id.
    Account(AccountId),
    /// A conversation id (a group, or a direct conversation).
    Conversation(ConversationId),
}

impl Peer<'_> {
    /// The request fields it sets: name, account id, conversation id.
    pub(crate) fn fields(self) -> (String, AccountId, ConversationId) {
        match self {
            Peer::Name(name) => (name.to_owned(), 0, 0),
            Peer::Account(id) => (String::new(), id, 0),
            Peer::Conversation(id) => (String::new(), 0, id),
        }
    }
}

impl<'a> From<&'a str> for Peer<'a> {
    fn from(name: &'a str) -> Self {
        Peer::Name(name)
    }
}

impl<'a> From<&'a String> for Peer<'a> {
    fn from(name: &'a String) -> Self {
        Peer::Name(name)
    }
}

/// Where a chat event sits in the replicated log: `record index * 1000 +
/// its place in the record` (a record holds up to 1000 events). Every id and
/// read-your-writes cursor of the chat API is one.
pub type LogPosition = u64;

/// A record index of the replicated log (cluster status).
pub type LogIndex = u64;

/// Converts the API's milliseconds since the Unix epoch.
fn time_from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Turns the API's "0 means none" into an `Option`.
fn nonzero(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

/// A freshly created account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedAccount {
    /// The new account's id.
    pub account_id: AccountId,
    /// The username as registered.
    pub username: String,
}

/// An open session, as returned by [`Client::login`](crate::Client::login).
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The token every session call needs. Secret: it is left out of `Debug`.
    pub token: String,
    /// The account logged in to.
    pub account_id: AccountId,
    /// The account's username.
    pub username: String,
    /// The highest message id the account has acknowledged as delivered
    /// (0 if none): a natural cursor for the first subscription.
    pub delivered_cursor: MessageId,
    /// Messages addressed to the account and not yet read, over all
    /// conversations.
    pub unread: u64,
    /// Inactivity after which the server closes the session; every call that
    /// presents the token resets the timer.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("username", &self.username)
            .field("delivered_cursor", &self.delivered_cursor)
            .field("unread", &self.unread)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl From<proto::LoginResponse> for Session {
    fn from(response: proto::LoginResponse) -> Self {
        Self {
            token: response.token,
            account_id: response.account_id,
            username: response.username,
            delivered_cursor: response.delivered_cursor,
            unread: response.unread_count,
            idle_timeout: Duration::from_secs(response.session_idle_timeout_secs.into()),
        }
    }
}

/// An account as other users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's username.
    pub username: String,
    /// The account's id.
    pub account_id: AccountId,
    /// When the account was created.
    pub created_at: SystemTime,
    /// True while the account has an event stream open on any server, and
    /// only for accounts the caller shares a conversation with (when the
    /// listing was made with a session); false otherwise.
    pub online: bool,
}

impl From<proto::Account> for Account {
    fn from(account: proto::Account) -> Self {
        Self {
            username: account.username,
            account_id: account.account_id,
            created_at: time_from_ms(account.created_at_ms),
            online: account.online,
        }
    }
}

/// One page of [`Client::list_accounts`](crate::Client::list_accounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    /// The matching accounts of this page, ordered by username.
    pub accounts: Vec<Account>,
    /// Pass to the next call to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl From<proto::ListAccountsResponse> for AccountPage {
    fn from(response: proto::ListAccountsResponse) -> Self {
        Self {
            accounts: response.accounts.into_iter().map(Account::from).collect(),
            next_page_token: Some(response.next_page_token).filter(|token| !token.is_empty()),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message's id; orders the messages of a conversation.
    pub id: MessageId,
    /// The sender's username.
    pub from: String,
    /// The sender's account id.
    pub from_account_id: AccountId,
    /// The recipient's username.
    pub to: String,
    /// The recipient's account id.
    pub to_account_id: AccountId,
    /// The text.
    pub body: String,
    /// When the leader accepted the message.
    pub sent_at: SystemTime,
    /// For a message the caller sent: the recipient has acknowledged it.
    /// Always false in subscription events (follow [`Event::Delivered`]).
    pub delivered: bool,
    /// For a message the caller sent: the recipient has read it. Always
    /// false in subscription events (follow [`Event::Read`]).
    pub read: bool,
    /// The conversation it belongs to (direct or group); 0 if not known.
    pub conversation_id: ConversationId,
    /// Posted to a group: `to` and `to_account_id` are then empty, and
    /// `delivered`/`read` mean every other member.
    pub in_group: bool,
    /// For a message the caller sent (from History): how many of `readers`
    /// (the other members when it was sent) have read it.
    pub read_by: u32,
    /// The other members when it was sent (1 in a direct conversation).
    pub readers: u32,
}

impl From<proto::Message> for Message {
    fn from(message: proto::Message) -> Self {
        Self {
            id: message.id,
            from: message.from,
            from_account_id: message.from_account_id,
            to: message.to,
            to_account_id: message.to_account_id,
            body: message.body,
            sent_at: time_from_ms(message.sent_at_ms),
            delivered: message.delivered,
            read: message.read,
            conversation_id: message.conversation_id,
            in_group: message.in_group,
            read_by: message.read_by,
            readers: message.readers,
        }
    }
}

/// The outcome of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The message's id. A send repeated with the same key gets the first
    /// send's id.
    pub id: MessageId,
    /// When the leader accepted the message.
    pub sent_at: SystemTime,
    /// The idempotency key the send went with.
    pub client_msg_id: String,
}

/// One page of a conversation, from [`Client::history`](crate::Client::history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, newest first, without those the caller deleted.
    pub messages: Vec<Message>,
    /// Pass as `before` to get the next, older page; `None` when there is none.
    pub next_before: Option<MessageId>,
    /// In a group: its changes the caller can see between the page's oldest
    /// message (or, on the last page, the caller's joining) and its newest,
    /// newest first; place them among the messages by [`GroupChange::id`].
    pub group_changes: Vec<GroupChange>,
}

impl From<proto::HistoryResponse> for HistoryPage {
    fn from(response: proto::HistoryResponse) -> Self {
        Self {
            messages: response.messages.into_iter().map(Message::from).collect(),
            next_before: nonzero(response.next_before),
            group_changes: (response.group_events.into_iter())
                .map(GroupChange::from)
                .collect(),
        }
    }
}

/// The caller's conversation with one other account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The other party's username; empty for a group.
    pub peer: String,
    /// The other party's account id; 0 for a group.
    pub peer_account_id: AccountId,
    /// The conversation's id.
    pub conversation_id: ConversationId,
    /// A group's title, owner and member count; `None` for a direct one.
    pub group: Option<GroupSummary>,
    /// The newest message the caller has not deleted, if any.
    pub last_message: Option<Message>,
    /// Messages from the peer that the caller has not marked read.
    pub unread: u64,
}

impl From<proto::Conversation> for Conversation {
    fn from(conversation: proto::Conversation) -> Self {
        Self {
            peer: conversation.peer,
            peer_account_id: conversation.peer_account_id,
            conversation_id: conversation.conversation_id,
            group: conversation.is_group.then_some(GroupSummary {
                title: conversation.title,
                owner_account_id: conversation.owner_account_id,
                member_count: conversation.member_count,
            }),
            last_message: conversation.last_message.map(Message::from),
            unread: conversation.unread_count,
        }
    }
}

/// A change to make to a group, for
/// [`Client::change_group`](crate::Client::change_group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEdit {
    /// Add these accounts (owner and admins).
    Add(Vec<AccountId>),
    /// Remove this member (owner; admins for plain members).
    Remove(AccountId),
    /// The caller leaves.
    Leave,
    /// A new title (owner and admins).
    Rename(String),
    /// Hand ownership to this member (owner).
    NewOwner(AccountId),
    /// Make this member an admin (owner).
    AddAdmin(AccountId),
    /// Make this admin a plain member (owner).
    RemoveAdmin(AccountId),
}

impl From<GroupEdit> for proto::change_group_request::Change {
    fn from(edit: GroupEdit) -> Self {
        use proto::change_group_request::Change;
        match edit {
            GroupEdit::Add(ids) => Change::Add(proto::AccountIds { ids }),
            GroupEdit::Remove(id) => Change::Remove(id),
            GroupEdit::Leave => Change::Leave(true),
            GroupEdit::Rename(title) => Change::Rename(title),
            GroupEdit::NewOwner(id) => Change::NewOwner(id),
            GroupEdit::AddAdmin(id) => Change::AddAdmin(id),
            GroupEdit::RemoveAdmin(id) => Change::RemoveAdmin(id),
        }
    }
}

/// A member of a conversation, from
/// [`Client::members`](crate::Client::members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMember {
    /// Its account id.
    pub account_id: AccountId,
    /// Its username.
    pub username: String,
    /// It owns the group.
    pub owner: bool,
    /// An admin the owner named.
    pub admin: bool,
    /// It sees messages from this id on (0: from the start).
    pub joined_at: MessageId,
    /// It has read every message up to here: who has read a message.
    pub read_up_to: MessageId,
    /// Every message to it up to here has been delivered.
    pub delivered_up_to: MessageId,
    /// It has an open session.
    pub online: bool,
}

/// The members of a conversation and, for a group, its title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMembers {
    /// In the order they joined.
    pub members: Vec<ConversationMember>,
    /// A group's title; empty for a direct conversation.
    pub title: String,
}

impl From<proto::MembersResponse> for ConversationMembers {
    fn from(r: proto::MembersResponse) -> Self {
        Self {
            members: (r.members.into_iter())
                .map(|m| ConversationMember {
                    account_id: m.account_id,
                    username: m.username,
                    owner: m.owner,
                    admin: m.admin,
                    joined_at: m.joined_at,
                    read_up_to: m.read_up_to,
                    delivered_up_to: m.delivered_up_to,
                    online: m.online,
                })
                .collect(),
            title: r.title,
        }
    }
}

/// What a group is, as the conversation list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group's title.
    pub title: String,
    /// Its owner.
    pub owner_account_id: AccountId,
    /// How many members it has, the caller included.
    pub member_count: u32,
}

/// What changed in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupChangeKind {
    /// The group was made; `accounts` are its first members.
    Created,
    /// `accounts` were added.
    Added,
    /// `accounts[0]` was removed.
    Removed,
    /// `by` left.
    Left,
    /// The group was renamed to `title`.
    Renamed,
    /// `accounts[0]` owns the group now.
    OwnerChanged,
    /// `accounts[0]` is an admin now.
    AdminAdded,
    /// `accounts[0]` is no longer an admin.
    AdminRemoved,
    /// `by` deleted its account (and left).
    AccountDeleted,
    /// A change this client does not know (a newer server's).
    Unknown,
}

/// A change to a group the caller is (or was, until this) in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    /// The change's id, in the space of message ids: where it sits among the
    /// group's messages.
    pub id: MessageId,
    /// What changed.
    pub kind: GroupChangeKind,
    /// The group.
    pub conversation_id: ConversationId,
    /// The group's title: for [`Created`](GroupChangeKind::Created) and
    /// [`Renamed`](GroupChangeKind::Renamed) the one it was given then,
    /// otherwise its title now.
    pub title: String,
    /// Who made the change (empty name: deleted since).
    pub by: String,
    /// Its account id.
    pub by_account_id: AccountId,
    /// The accounts the change names: id and name (empty if deleted since).
    pub accounts: Vec<(AccountId, String)>,
    /// When an owner left: who owns the group now.
    pub new_owner: Option<AccountId>,
}

impl From<proto::GroupEvent> for GroupChange {
    fn from(g: proto::GroupEvent) -> Self {
        use proto::group_event::Kind;
        let kind = match Kind::try_from(g.kind) {
            Ok(Kind::Created) => GroupChangeKind::Created,
            Ok(Kind::Added) => GroupChangeKind::Added,
            Ok(Kind::Removed) => GroupChangeKind::Removed,
            Ok(Kind::Left) => GroupChangeKind::Left,
            Ok(Kind::Renamed) => GroupChangeKind::Renamed,
            Ok(Kind::OwnerChanged) => GroupChangeKind::OwnerChanged,
            Ok(Kind::AdminAdded) => GroupChangeKind::AdminAdded,
            Ok(Kind::AdminRemoved) => GroupChangeKind::AdminRemoved,
            Ok(Kind::AccountDeleted) => GroupChangeKind::AccountDeleted,
            Ok(Kind::Unspecified) | Err(_) => GroupChangeKind::Unknown,
        };
        Self {
            id: g.id,
            kind,
            conversation_id: g.conversation_id,
            title: g.title,
            by: g.by,
            by_account_id: g.by_account_id,
            accounts: (g.accounts.into_iter())
                .map(|a| (a.account_id, a.username))
                .collect(),
            new_owner: (g.new_owner_account_id != 0).then_some(g.new_owner_account_id),
        }
    }
}

/// The caller's conversations, from
/// [`Client::conversations`](crate::Client::conversations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversations {
    /// One per peer, the most recently active first.
    pub conversations: Vec<Conversation>,
    /// Messages addressed to the caller and not yet read, over all of them.
    pub total_unread: u64,
}

impl From<proto::ConversationsResponse> for Conversations {
    fn from(response: proto::ConversationsResponse) -> Self {
        Self {
            conversations: response
                .conversations
                .into_iter()
                .map(Conversation::from)
                .collect(),
            total_unread: response.total_unread,
        }
    }
}

/// One event of a [`Subscription`](crate::Subscription), in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message to the caller, or one the caller sent from any session.
    Message {
        /// The event's id (the message's id).
        id: EventId,
        /// The message.
        message: Message,
    },
    /// A peer acknowledged delivery of messages the caller sent it.
    Delivered {
        /// The event's id.
        id: EventId,
        /// The peer's username.
        peer: String,
        /// The peer's account id.
        peer_account_id: AccountId,
        /// Every message the caller sent the peer up to this id is delivered.
        up_to: MessageId,
    },
    /// A peer read messages the caller sent it.
    Read {
        /// The event's id.
        id: EventId,
        /// The peer's username.
        peer: String,
        /// The peer's account id.
        peer_account_id: AccountId,
        /// Every message the caller sent the peer up to this id is read.
        up_to: MessageId,
        /// In this conversation (the direct one with the peer, or a group).
        conversation_id: ConversationId,
    },
    /// A group the caller is in changed (or the caller was removed).
    Group {
        /// The event's id.
        id: EventId,
        /// The change.
        change: GroupChange,
    },
    /// The other party of a direct conversation deleted their account:
    /// the conversation is erased on both sides and takes no new message.
    /// Live only (a subscription resumed from before it does not get it).
    PeerGone {
        /// The event's id.
        id: EventId,
        /// The deleted account's id (a new account with its name is
        /// someone else).
        peer_account_id: AccountId,
        /// Its username, as it was.
        peer: String,
        /// The erased conversation.
        conversation_id: ConversationId,
    },
    /// Another session of the caller deleted messages from its view.
    Deleted {
        /// The event's id.
        id: EventId,
        /// The deleted messages.
        ids: Vec<MessageId>,
    },
    /// Who came online or went offline among the accounts the caller
    /// shares a conversation with (online: an event stream open on any
    /// server). One with `full` set follows each [`Event::CaughtUp`]. Not in
    /// the log: [`Event::id`] is 0.
    Presence {
        /// `online` lists every one of them online now; the rest are
        /// offline.
        full: bool,
        /// Accounts online now.
        online: Vec<AccountId>,
        /// Accounts offline now.
        offline: Vec<AccountId>,
    },
    /// Accounts created or deleted (for a live directory). Not in the log
    /// ([`Event::id`] is 0), and live only: list the accounts again after
    /// a [`Event::CaughtUp`] to see what happened while away.
    Directory {
        /// New accounts, oldest first.
        created: Vec<Account>,
        /// Deleted accounts.
        deleted: Vec<AccountId>,
    },
    /// The backlog has been sent; what follows is live. Comes once per
    /// stream, so again each time the subscription resumes after a failure.
    CaughtUp {
        /// The subscription's cursor after the backlog: never below the id
        /// of an event handed out before.
        id: EventId,
    },
}

impl Event {
    /// The event's id: the cursor to resume from after it (0 for presence
    /// and directory news, which are not in the log).
    pub fn id(&self) -> EventId {
        match self {
            Self::Presence { .. } | Self::Directory { .. } => 0,
            Self::Message { id, .. }
            | Self::Delivered { id, .. }
            | Self::Read { id, .. }
            | Self::Deleted { id, .. }
            | Self::Group { id, .. }
            | Self::PeerGone { id, .. }
            | Self::CaughtUp { id } => *id,
        }
    }

    /// Converts a wire event. `None` for an event of a kind this client does
    /// not know (a newer server's): the caller skips it but still moves its
    /// cursor past it.
    pub(crate) fn from_proto(event: proto::Event) -> Option<Self> {
        use proto::event::Kind;
        let id = event.id;
        Some(match event.kind? {
            Kind::Message(message) => Self::Message {
                id,
                message: message.into(),
            },
            Kind::Delivered(delivered) => Self::Delivered {
                id,
                peer: delivered.peer,
                peer_account_id: delivered.peer_account_id,
                up_to: delivered.up_to,
            },
            Kind::Read(read) => Self::Read {
                id,
                peer: read.peer,
                peer_account_id: read.peer_account_id,
                up_to: read.up_to,
                conversation_id: read.conversation_id,
            },
            Kind::Deleted(deleted) => Self::Deleted {
                id,
                ids: deleted.ids,
            },
            Kind::CaughtUp(_) => Self::CaughtUp { id },
            Kind::Group(group) => Self::Group {
                id,
                change: group.into(),
            },
            Kind::PeerGone(gone) => Self::PeerGone {
                id,
                peer_account_id: gone.account_id,
                peer: gone.username,
                conversation_id: gone.conversation_id,
            },
            Kind::Presence(p) => Self::Presence {
                full: p.full,
                online: p.online,
                offline: p.offline,
            },
            Kind::Directory(d) => Self::Directory {
                created: d.created.into_iter().map(Account::from).collect(),
                deleted: d.deleted,
            },
        })
    }
}

/// The Raft role of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes and replicates them.
    Leader,
    /// A voter following a leader.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Stopping, or stopped because its log failed verification.
    Shutdown,
    /// Not reported, or a role this client does not know.
    Unknown,
}

impl From<proto::Role> for Role {
    fn from(role: proto::Role) -> Self {
        match role {
            proto::Role::Leader => Self::Leader,
            proto::Role::Follower => Self::Follower,
            proto::Role::Candidate => Self::Candidate,
            proto::Role::Learner => Self::Learner,
            proto::Role::Shutdown => Self::Shutdown,
            proto::Role::Unspecified => Self::Unknown,
        }
    }
}

/// A server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The server's node id.
    pub node_id: u64,
    /// Where its gRPC services listen, as `host:port`.
    pub address: String,
    /// True for a voter, false for a learner.
    pub voter: bool,
}

/// The cluster as one server sees it, from
/// [`Client::cluster_status`](crate::Client::cluster_status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node id of the server that answered.
    pub node_id: u64,
    /// The current leader's node id, if known.
    pub leader_id: Option<u64>,
    /// The current leader's address, if known.
    pub leader_address: Option<String>,
    /// The membership, voters and learners.
    pub members: Vec<Member>,
    /// The last index in the answering server's log.
    pub last_log_index: LogIndex,
    /// The last index applied to its state.
    pub applied_index: LogIndex,
    /// The last index it knows to be committed.
    pub committed_index: LogIndex,
    /// Its current Raft term.
    pub term: u64,
    /// Its Raft role.
    pub role: Role,
}

impl From<proto::StatusResponse> for ClusterStatus {
    fn from(response: proto::StatusResponse) -> Self {
        let role = response.role().into();
        Self {
            node_id: response.node_id,
            leader_id: nonzero(response.leader_id),
            leader_address: Some(response.leader_address).filter(|address| !address.is_empty()),
            members: response
                .members
                .into_iter()
                .map(|member| Member {
                    node_id: member.node_id,
                    address: member.address,
                    voter: member.voter,
                })
                .collect(),
            last_log_index: response.last_log_index,
            applied_index: response.applied_index,
            committed_index: response.committed_index,
            term: response.term,
            role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_convert_with_their_cursor() {
        let wire = |id, kind| proto::Event {
            id,
            kind: Some(kind),
        };
        let delivered = Event::from_proto(wire(
            7,
            proto::event::Kind::Delivered(proto::Delivered {
                peer: "bob".into(),
                peer_account_id: 2,
                up_to: 5,
            }),
        ));
        assert_eq!(
            delivered,
            Some(Event::Delivered {
                id: 7,
                peer: "bob".into(),
                peer_account_id: 2,
                up_to: 5
            })
        );
        let caught_up = Event::from_proto(wire(
            9,
            proto::event::Kind::CaughtUp(proto::CaughtUp { cursor: 9 }),
        ))
        .unwrap();
        assert_eq!(caught_up.id(), 9);
        let group = Event::from_proto(wire(
            11,
            proto::event::Kind::Group(proto::GroupEvent {
                kind: proto::group_event::Kind::Removed as i32,
                conversation_id: 3,
                title: "team".into(),
                by: "ann".into(),
                by_account_id: 1,
                accounts: vec![proto::AccountRef {
                    account_id: 2,
                    username: String::new(),
                }],
                new_owner_account_id: 0,
                id: 11,
            }),
        ));
        assert_eq!(
            group,
            Some(Event::Group {
                id: 11,
                change: GroupChange {
                    id: 11,
                    kind: GroupChangeKind::Removed,
                    conversation_id: 3,
                    title: "team".into(),
                    by: "ann".into(),
                    by_account_id: 1,
                    accounts: vec![(2, String::new())],
                    new_owner: None,
                },
            })
        );
        let newer = Event::from_proto(wire(
            12,
            proto::event::Kind::Group(proto::GroupEvent {
                kind: 99,
                ..Default::default()
            }),
        ))
        .unwrap();
        assert!(
            matches!(newer, Event::Group { change, .. } if change.kind == GroupChangeKind::Unknown)
        );
    }

    #[test]
    fn an_event_of_an_unknown_kind_is_skipped() {
        let from_newer_server = proto::Event { id: 4, kind: None };
        assert_eq!(Event::from_proto(from_newer_server), None);
    }

    #[test]
    fn zero_means_none() {
        let page = HistoryPage::from(proto::HistoryResponse {
            messages: vec![],
            next_before: 0,
            ..Default::default()
        });
        assert_eq!(page.next_before, None);
        let accounts = AccountPage::from(proto::ListAccountsResponse {
            accounts: vec![],
            next_page_token: String::new(),
        });
        assert_eq!(accounts.next_page_token, None);
        let status = ClusterStatus::from(proto::StatusResponse::default());
        assert_eq!(status.leader_id, None);
        assert_eq!(status.leader_address, None);
        assert_eq!(status.role, Role::Unknown);
    }

    #[test]
    fn a_session_does_not_print_its_token() {
        let session = Session::from(proto::LoginResponse {
            token: "secret-token".into(),
            session_idle_timeout_secs: 600,
            ..Default::default()
        });
        assert_eq!(session.idle_timeout, Duration::from_secs(600));
        assert!(!format!("{session:?}").contains("secret-token"));
    }
}
