//! The chat state: every index the server answers from, derived from the log.
//!
//! [`ChatState::apply`] is the only way to change it and is pure: no clock, no
//! randomness, no I/O. Everything non-deterministic travels inside the event,
//! so replaying the same log gives the same state on every replica, every
//! time. Validation that depends on the state (a name already taken, an
//! idempotency key already used) happens here, at apply time, so that two
//! racing proposals resolve the same way everywhere.
//!
//! The indexes are conversation-centric ([`conversation`]): a conversation
//! has members and the ids of its messages, each stored once however many
//! members read it. A message's body is not an index: queries answer with
//! [`MessageRef`]s, and the caller turns them into [`MessageView`]s with the
//! bodies from the message archive, which the state machine appends to as
//! it applies (the state only says which messages it erased, so that the
//! archive can drop them: [`ChatState::take_erased`]).
//!
//! Deleting an account erases it from every answer: its sessions, its
//! conversations, and the messages it sent or received, on both sides. The
//! name becomes free for a new account, which starts empty.

mod conversation;
mod keys;
mod messages;
mod presized;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use log_format::events::{AccountId, Event, MessageId, PasswordHash, SessionId, TokenHash};
use serde::{Deserialize, Serialize};

pub use self::conversation::{Change, Group, MAX_MEMBERS};
use self::conversation::{Conversation, Notice};
use self::keys::SentKeys;
pub use log_format::events::ConversationId;
pub use log_format::events::GroupChange;

/// The maps of the state: aHash is several times faster than SipHash on
/// replay and, keyed per process, still resists flooding with crafted keys.
/// Iteration order never reaches an answer unsorted, so the random keys do
/// not break determinism.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// What applying one event did, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry, or an event with nothing to report.
    Done,
    AccountCreated(AccountId),
    SessionOpened(SessionId),
    /// A message, or the earlier message with the same idempotency key.
    Message {
        id: MessageId,
        duplicate: bool,
        /// Where a new message was stored (for a duplicate: the direct
        /// conversation of its sender and recipient, when there is one).
        conversation: ConversationId,
    },
    /// A group was made: its id.
    GroupCreated(ConversationId),
    /// How many messages left the caller's view.
    Deleted(u64),
    /// The conversation's unread count after a read receipt.
    Unread(u64),
    /// The event changed nothing because the state did not allow it.
    Rejected(Rejection),
}

/// Why an event was a no-op. Services turn these into precise statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NameTaken,
    NoSuchAccount,
    NoSuchSession,
    /// No such conversation, or the caller is not in it: the same answer.
    NoSuchConversation,
    /// A direct conversation asked for something only groups do.
    NotAGroup,
    /// The caller is a member without the right to do this.
    NotAllowed,
    /// Every account named is a member already.
    AlreadyMember,
    /// The account named is not a member.
    NotAMember,
    /// The group would have more than [`MAX_MEMBERS`] members.
    TooManyMembers,
}

/// An account as the indexes keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub password_hash: PasswordHash,
    pub created_at_ms: u64,
    /// Every message addressed to this account up to here was delivered.
    pub delivered_up_to: MessageId,
    /// Sum of the unread counts of its conversations.
    pub unread: u64,
    /// The conversations it is a member of, ascending.
    conversations: Vec<ConversationId>,
    /// Messages it deleted, with the log position of each deletion: what
    /// its other sessions' subscriptions replay.
    deletions: Vec<(u64, Vec<MessageId>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub account: AccountId,
    pub opened_at_ms: u64,
    token_hash: TokenHash,
}

/// What applying an event tells live subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanout {
    /// A new event for the account's feed.
    Feed(AccountId, FeedEntry),
    /// A new message for each of `to` (every member but its sender, who
    /// gets its own view in a `Feed`): one view, shared.
    Posted {
        index: u64,
        to: Vec<AccountId>,
        view: Arc<MessageView>,
    },
    /// The session ended (logout or idle): its streams end.
    SessionEnded(SessionId),
    /// The account was deleted: all its streams end.
    AccountDeleted(AccountId),
    /// A new account: its id, username and creation time (for live
    /// directories).
    AccountCreated(AccountId, String, u64),
    /// These accounts now share a conversation with someone they did not
    /// share one with before (for presence).
    NewContacts(Vec<AccountId>),
}

/// An event of a user's subscription, with everything needed to show it:
/// `M` is a [`MessageView`] on a live stream (the body comes with the
/// event; shared by every member who sees the message alike), a
/// [`MessageRef`] in a backlog read from the indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry<M = Arc<MessageView>> {
    /// The log position of the event it came from: the subscription cursor.
    pub index: u64,
    pub kind: FeedKind<M>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedKind<M = Arc<MessageView>> {
    Message(M),
    /// `peer` acknowledged delivery of the subscriber's messages up to `up_to`.
    Delivered {
        peer: AccountId,
        peer_name: String,
        up_to: MessageId,
    },
    /// `peer` read the subscriber's messages in `conversation` up to `up_to`.
    Read {
        peer: AccountId,
        peer_name: String,
        up_to: MessageId,
        conversation: ConversationId,
    },
    /// The subscriber deleted these messages (from another session).
    Deleted(Vec<MessageId>),
    /// A group the subscriber is (or was, until this) a member of changed.
    Group(GroupNoticeView),
    /// The other party of a direct conversation deleted their account (live
    /// only: the backlog holds nothing of an erased conversation).
    PeerGone {
        peer: AccountId,
        peer_name: String,
        conversation: ConversationId,
    },
}

/// A change to a group, with the names a client shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNoticeView {
    /// The log position of the change: where it sits among the messages.
    pub index: u64,
    pub conversation: ConversationId,
    /// The group's title after the change.
    pub title: String,
    pub by: AccountId,
    pub by_name: String,
    pub change: Change,
    /// The accounts the change names, with their names (empty for an
    /// account deleted since).
    pub accounts: Vec<(AccountId, String)>,
    /// Who owns the group now, when the change passed ownership on.
    pub new_owner: Option<AccountId>,
}

impl<M> FeedKind<M> {
    /// The same entry with its message (if any) turned into another form;
    /// `None` when `f` finds no such message any more.
    pub fn try_map<N>(self, f: impl FnOnce(M) -> Option<N>) -> Option<FeedKind<N>> {
        Some(match self {
            FeedKind::Message(m) => FeedKind::Message(f(m)?),
            FeedKind::Delivered {
                peer,
                peer_name,
                up_to,
            } => FeedKind::Delivered {
                peer,
                peer_name,
                up_to,
            },
            FeedKind::Read {
                peer,
                peer_name,
                up_to,
                conversation,
            } => FeedKind::Read {
                peer,
                peer_name,
                up_to,
                conversation,
            },
            FeedKind::Deleted(ids) => FeedKind::Deleted(ids),
            FeedKind::Group(notice) => FeedKind::Group(notice),
            FeedKind::PeerGone {
                peer,
                peer_name,
                conversation,
            } => FeedKind::PeerGone {
                peer,
                peer_name,
                conversation,
            },
        })
    }
}

/// A message as one member sees it, from the indexes alone: everything but
/// its body and time, which live with the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub id: MessageId,
    pub conversation: ConversationId,
    /// Posted to a group (`to` is then none).
    pub in_group: bool,
    pub from: AccountId,
    pub from_name: String,
    pub to: AccountId,
    pub to_name: String,
    /// For the viewer's own messages: the recipient (every other member
    /// of a group) acknowledged delivery.
    pub delivered: bool,
    /// For the viewer's own messages: the recipient (every other member
    /// of a group) read it.
    pub read: bool,
    /// For the viewer's own messages: how many of the `readers` (the other
    /// members who were there when it was sent) have read it.
    pub read_by: u32,
    pub readers: u32,
}

/// A message as one member sees it, body included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub meta: MessageRef,
    pub body: String,
    pub at_ms: u64,
}

/// One row of `Conversations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary<M = MessageView> {
    pub conversation: ConversationId,
    /// The other member of a direct conversation; none for a group.
    pub peer: AccountId,
    pub peer_name: String,
    /// A group's title, owner and member count.
    pub group: Option<(String, AccountId, usize)>,
    pub last: Option<M>,
    pub unread: u64,
}

/// A member of a conversation, as `Members` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub account: AccountId,
    pub name: String,
    /// It sees messages from here on.
    pub joined: MessageId,
    pub read_up_to: MessageId,
    pub delivered_up_to: MessageId,
}

/// Where a `ListAccounts` page stops and the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    /// Id, username and creation time.
    pub accounts: Vec<(AccountId, String, u64)>,
    /// The lower-cased name to continue after, if there may be more.
    pub next_after: Option<String>,
}

/// Where applying an event puts what live subscribers must hear; `None`
/// while replaying, when nobody listens.
struct Notify<'a>(Option<&'a mut Vec<Fanout>>);

impl Notify<'_> {
    fn wanted(&self) -> bool {
        self.0.is_some()
    }

    fn push(&mut self, fanout: Fanout) {
        if let Some(out) = self.0.as_deref_mut() {
            out.push(fanout);
        }
    }
}

/// Everything the server knows, derived from the log.
///
/// Cloning it is cheap: accounts, conversations and each sender's keys
/// are shared (`Arc`), and applying copies one only when it changes it
/// while a clone (a snapshot being encoded) still holds it
/// (`Arc::make_mut`). An `Arc` encodes as what it holds, so snapshots are
/// the same bytes as before these were shared.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatState {
    #[serde(deserialize_with = "presized::map")]
    accounts: HashMap<AccountId, Arc<Account>>,
    /// Lower-cased name to account: uniqueness ignoring case, and the sorted
    /// order of `ListAccounts`.
    by_name: BTreeMap<String, AccountId>,
    #[serde(deserialize_with = "presized::map")]
    conversations: HashMap<ConversationId, Arc<Conversation>>,
    /// Direct conversations by their members, the lower id first.
    #[serde(deserialize_with = "presized::map")]
    direct: HashMap<(AccountId, AccountId), ConversationId>,
    /// Sender -> 64-bit hash of its client message id -> the message it
    /// made (see [`key_hash`]).
    #[serde(deserialize_with = "presized::map")]
    idempotency: HashMap<AccountId, Arc<SentKeys>>,
    /// Messages erased since the last [`ChatState::take_erased`], whose
    /// bodies the archive still holds. Not part of the state proper: not in
    /// snapshots, not compared between replicas (see `take_erased`).
    #[serde(skip)]
    erased: Vec<MessageId>,
    sessions: HashMap<SessionId, Session>,
    by_token: HashMap<TokenHash, SessionId>,
    sessions_of: HashMap<AccountId, BTreeSet<SessionId>>,
}

/// A client message id as the idempotency index keeps it: 64 bits of its
/// SHA-256, the same on every replica, build and restart. Two
/// ids of one sender that hash alike would be taken for one message; with
/// 64 bits that takes about four billion ids from a single account.
fn key_hash(client_msg_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(client_msg_id.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// A client request id of a `CreateGroup` as the idempotency index keeps
/// it: hashed apart from message ids, so the two never meet.
fn group_key_hash(client_request_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"group\0")
        .chain_update(client_request_id.as_bytes())
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The key of a direct conversation: its members, the lower id first.
fn direct_key(a: AccountId, b: AccountId) -> (AccountId, AccountId) {
    (a.min(b), a.max(b))
}

impl ChatState {
    /// Applies the event at log position `index` (see `events::position`:
    /// the ids it creates are that position); feed events for live
    /// subscribers are pushed to `notify`.
    pub fn apply(&mut self, index: u64, event: &Event, notify: &mut Vec<Fanout>) -> Applied {
        self.apply_to(index, event, &mut Notify(Some(notify)))
    }

    /// [`ChatState::apply`] for a replay, which has no subscribers to tell:
    /// the feed events are not even built.
    pub fn apply_quietly(&mut self, index: u64, event: &Event) -> Applied {
        self.apply_to(index, event, &mut Notify(None))
    }

    fn apply_to(&mut self, index: u64, event: &Event, notify: &mut Notify<'_>) -> Applied {
        match event {
            Event::AccountCreated {
                username,
                password_hash,
                at_ms,
            } => {
                let key = username.to_lowercase();
                if self.by_name.contains_key(&key) {
                    return Applied::Rejected(Rejection::NameTaken);
                }
                let id = AccountId(index);
                self.by_name.insert(key, id);
                self.accounts.insert(
                    id,
                    Arc::new(Account {
                        username: username.clone(),
                        password_hash: password_hash.clone(),
                        created_at_ms: *at_ms,
                        delivered_up_to: MessageId(0),
                        unread: 0,
                        conversations: Vec::new(),
                        deletions: Vec::new(),
                    }),
                );
                notify.push(Fanout::AccountCreated(id, username.clone(), *at_ms));
                Applied::AccountCreated(id)
            }
            Event::AccountDeleted { account, .. } => {
                let applied = self.delete_account(index, *account, notify);
                if applied == Applied::Done {
                    notify.push(Fanout::AccountDeleted(*account));
                }
                applied
            }
            Event::SessionOpened {
                account,
                token_hash,
                at_ms,
            } => {
                if !self.accounts.contains_key(account) {
                    return Applied::Rejected(Rejection::NoSuchAccount);
                }
                let id = SessionId(index);
                self.sessions.insert(
                    id,
                    Session {
                        account: *account,
                        opened_at_ms: *at_ms,
                        token_hash: *token_hash,
                    },
                );
                self.by_token.insert(*token_hash, id);
                self.sessions_of.entry(*account).or_default().insert(id);
                Applied::SessionOpened(id)
            }
            Event::SessionClosed {
                account, session, ..
            } => {
                if self
                    .sessions
                    .get(session)
                    .is_none_or(|s| s.account != *account)
                {
                    return Applied::Rejected(Rejection::NoSuchSession);
                }
                self.close_session(*session);
                notify.push(Fanout::SessionEnded(*session));
                Applied::Done
            }
            Event::MessageSent {
                from,
                to,
                client_msg_id,
                body,
                at_ms,
            } => self.send(index, *from, *to, client_msg_id, body, *at_ms, notify),
            Event::DeliveredUpTo { account, up_to, .. } => {
                self.delivered(index, *account, *up_to, notify)
            }
            Event::ReadUpTo {
                account,
                peer,
                up_to,
                ..
            } => self.read(index, *account, *peer, *up_to, notify),
            Event::MessagesDeleted { account, ids, .. } => {
                self.delete_messages(index, *account, ids, notify)
            }
            Event::GroupCreated {
                owner,
                title,
                members,
                client_request_id,
                ..
            } => {
                let key = group_key_hash(client_request_id);
                if let Some(id) = self.keyed(*owner, key) {
                    return Applied::GroupCreated(ConversationId(id.0));
                }
                let applied = self.create_group(index, *owner, title, members, notify);
                if let Applied::GroupCreated(_) = applied {
                    Arc::make_mut(self.idempotency.entry(*owner).or_default())
                        .insert(key, MessageId(index));
                }
                applied
            }
            Event::GroupChanged {
                by, group, change, ..
            } => self.change_group(index, *by, *group, change, notify),
            Event::Posted {
                from,
                conversation,
                client_msg_id,
                body,
                at_ms,
            } => {
                let key = key_hash(client_msg_id);
                if let Some(id) = self.keyed(*from, key) {
                    return Applied::Message {
                        id,
                        duplicate: true,
                        conversation: *conversation,
                    };
                }
                if !self.is_member(*from, *conversation) {
                    return Applied::Rejected(Rejection::NoSuchConversation);
                }
                self.store(index, *from, *conversation, key, body, *at_ms, notify)
            }
            Event::ConversationRead {
                account,
                conversation,
                up_to,
                ..
            } => self.read_conversation(index, *account, *conversation, *up_to, notify),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        index: u64,
        from: AccountId,
        to: AccountId,
        client_msg_id: &str,
        body: &str,
        at_ms: u64,
        notify: &mut Notify<'_>,
    ) -> Applied {
        let key = key_hash(client_msg_id);
        if let Some(id) = self.keyed(from, key) {
            let conversation =
                (self.direct.get(&direct_key(from, to)).copied()).unwrap_or_default();
            return Applied::Message {
                id,
                duplicate: true,
                conversation,
            };
        }
        if !self.accounts.contains_key(&from) || !self.accounts.contains_key(&to) {
            return Applied::Rejected(Rejection::NoSuchAccount);
        }
        let known = self.direct.contains_key(&direct_key(from, to));
        let conversation = self.direct_conversation(index, from, to);
        if !known && from != to {
            notify.push(Fanout::NewContacts(vec![from, to]));
        }
        self.store(index, from, conversation, key, body, at_ms, notify)
    }

    /// Stores message `index` from `from`, a member, in `conversation`,
    /// under idempotency key `key`, and tells every member.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        index: u64,
        from: AccountId,
        conversation: ConversationId,
        key: u64,
        body: &str,
        at_ms: u64,
        notify: &mut Notify<'_>,
    ) -> Applied {
        let id = MessageId(index);
        let conv = self
            .conversations
            .get_mut(&conversation)
            .map(Arc::make_mut)
            .expect("checked");
        let unread_for = conv.post(id, from);
        for member in unread_for {
            if let Some(acc) = self.accounts.get_mut(&member).map(Arc::make_mut) {
                acc.unread += 1;
            }
        }
        Arc::make_mut(self.idempotency.entry(from).or_default()).insert(key, id);
        if notify.wanted() {
            // Every member but the sender sees a new message alike: one
            // view for them all, and the sender's own (with its receipts).
            let view = |meta| {
                Arc::new(MessageView {
                    meta,
                    body: body.to_owned(),
                    at_ms,
                })
            };
            let to: Vec<AccountId> = (self.conversations[&conversation].member_ids())
                .filter(|a| *a != from)
                .collect();
            if let Some(meta) = (to.first()).and_then(|a| self.message_ref(*a, conversation, id)) {
                notify.push(Fanout::Posted {
                    index,
                    to,
                    view: view(meta),
                });
            }
            if let Some(meta) = self.message_ref(from, conversation, id) {
                notify.push(Fanout::Feed(
                    from,
                    FeedEntry {
                        index,
                        kind: FeedKind::Message(view(meta)),
                    },
                ));
            }
        }
        Applied::Message {
            id,
            duplicate: false,
            conversation,
        }
    }

    /// Makes group `index` of `owner` with `members`.
    fn create_group(
        &mut self,
        index: u64,
        owner: AccountId,
        title: &str,
        members: &[AccountId],
        notify: &mut Notify<'_>,
    ) -> Applied {
        let mut all = vec![owner];
        for m in members {
            if !all.contains(m) {
                all.push(*m);
            }
        }
        if all.iter().any(|a| !self.accounts.contains_key(a)) {
            return Applied::Rejected(Rejection::NoSuchAccount);
        }
        if all.len() > MAX_MEMBERS {
            return Applied::Rejected(Rejection::TooManyMembers);
        }
        let id = ConversationId(index);
        let conv = Conversation::group(index, owner, title.to_owned(), all.clone());
        self.conversations.insert(id, Arc::new(conv));
        for a in &all {
            let acc = self
                .accounts
                .get_mut(a)
                .map(Arc::make_mut)
                .expect("checked");
            // Conversation ids grow with the log: pushing keeps the order.
            acc.conversations.push(id);
        }
        self.notify_group(id, all.iter().copied(), notify);
        notify.push(Fanout::NewContacts(all));
        Applied::GroupCreated(id)
    }

    /// Applies `change` by `by` to group `group`, checking `by`'s rights.
    fn change_group(
        &mut self,
        index: u64,
        by: AccountId,
        group: ConversationId,
        change: &GroupChange,
        notify: &mut Notify<'_>,
    ) -> Applied {
        let Some(conv) = self.conversations.get(&group).filter(|c| c.is_member(by)) else {
            return Applied::Rejected(Rejection::NoSuchConversation);
        };
        let Some(g) = conv.group_info() else {
            return Applied::Rejected(Rejection::NotAGroup);
        };
        let owner = g.owner == by;
        let admin = owner || g.admins.contains(&by);
        let rejected = match change {
            GroupChange::Added(accounts) => {
                let new: Vec<AccountId> = (accounts.iter())
                    .filter(|a| !conv.is_member(**a))
                    .copied()
                    .collect();
                if !admin {
                    Some(Rejection::NotAllowed)
                } else if accounts.iter().any(|a| !self.accounts.contains_key(a)) {
                    Some(Rejection::NoSuchAccount)
                } else if new.is_empty() {
                    Some(Rejection::AlreadyMember)
                } else if conv.member_count() + new.len() > MAX_MEMBERS {
                    Some(Rejection::TooManyMembers)
                } else {
                    None
                }
            }
            GroupChange::Removed(account) => {
                if !conv.is_member(*account) {
                    Some(Rejection::NotAMember)
                } else if !admin
                    || *account == g.owner
                    || (!owner && g.admins.contains(account))
                    || *account == by
                {
                    Some(Rejection::NotAllowed)
                } else {
                    None
                }
            }
            GroupChange::Left => None,
            GroupChange::Renamed(_) => (!admin).then_some(Rejection::NotAllowed),
            GroupChange::OwnerChanged(account) | GroupChange::AdminSet { account, .. } => {
                if !owner || *account == by {
                    Some(Rejection::NotAllowed)
                } else if !conv.is_member(*account) {
                    Some(Rejection::NotAMember)
                } else {
                    None
                }
            }
        };
        if let Some(r) = rejected {
            return Applied::Rejected(r);
        }
        // Those who hear of the change: the members before it and after.
        let mut told = conv.members();
        let mut new_owner = None;
        match change {
            GroupChange::Added(accounts) => {
                let conv = self
                    .conversations
                    .get_mut(&group)
                    .map(Arc::make_mut)
                    .expect("checked");
                let mut added = Vec::new();
                for a in accounts {
                    if !conv.is_member(*a) {
                        conv.add_member(*a, MessageId(index));
                        told.push(*a);
                        added.push(*a);
                        let acc = self
                            .accounts
                            .get_mut(a)
                            .map(Arc::make_mut)
                            .expect("checked");
                        let at = acc.conversations.partition_point(|c| *c < group);
                        acc.conversations.insert(at, group);
                    }
                }
                if !added.is_empty() {
                    notify.push(Fanout::NewContacts(added));
                }
            }
            GroupChange::Removed(account) => {
                self.leave_group(group, *account);
            }
            GroupChange::Left => new_owner = self.leave_group(group, by),
            GroupChange::Renamed(title) => {
                let g = self.group_mut(group);
                g.title = title.clone();
            }
            GroupChange::OwnerChanged(account) => {
                let g = self.group_mut(group);
                g.owner = *account;
                g.admins.retain(|a| a != account);
                let at = g.admins.partition_point(|a| *a < by);
                g.admins.insert(at, by);
            }
            GroupChange::AdminSet { account, admin } => {
                let g = self.group_mut(group);
                g.admins.retain(|a| a != account);
                if *admin {
                    let at = g.admins.partition_point(|a| a < account);
                    g.admins.insert(at, *account);
                }
            }
        }
        let notice = Notice {
            index,
            by,
            change: Change::Changed(change.clone()),
            new_owner,
        };
        if let Some(g) = self
            .conversations
            .get_mut(&group)
            .and_then(|c| Arc::make_mut(c).group_info_mut())
        {
            g.notices.push(notice.clone());
        }
        self.notify_notice(group, &notice, told, notify);
        Applied::Done
    }

    fn group_mut(&mut self, group: ConversationId) -> &mut Group {
        (self.conversations.get_mut(&group).map(Arc::make_mut))
            .and_then(|c| c.group_info_mut())
            .expect("a group")
    }

    /// Takes `account` out of group `group`: its unread messages there stop
    /// counting, messages nobody left can see are erased, and a group left
    /// empty is gone. An owner leaving passes ownership to the first admin,
    /// or else the longest-standing member: who owns it now is returned.
    fn leave_group(&mut self, group: ConversationId, account: AccountId) -> Option<AccountId> {
        let conv = self.conversations.get_mut(&group).map(Arc::make_mut)?;
        let removed = conv.remove_member(account)?;
        if let Some(acc) = self.accounts.get_mut(&account).map(Arc::make_mut) {
            acc.unread -= removed.unread;
            acc.conversations.retain(|c| *c != group);
        }
        self.erased.extend(removed.erased);
        if conv.member_count() == 0 {
            let conv = self.conversations.remove(&group).expect("there");
            self.erased.extend(conv.message_ids());
            return None;
        }
        let members = conv.members();
        let g = conv.group_info_mut()?;
        if g.owner != account {
            return None;
        }
        let next = g.admins.first().copied().unwrap_or(members[0]);
        g.owner = next;
        g.admins.retain(|a| *a != next);
        Some(next)
    }

    /// Tells the members of a group just made that it exists.
    fn notify_group(
        &self,
        group: ConversationId,
        members: impl Iterator<Item = AccountId>,
        notify: &mut Notify<'_>,
    ) {
        if !notify.wanted() {
            return;
        }
        let Some(notice) = (self.conversations.get(&group))
            .and_then(|c| c.group_info())
            .and_then(|g| g.notices.first())
        else {
            return;
        };
        self.notify_notice(group, notice, members.collect(), notify);
    }

    fn notify_notice(
        &self,
        group: ConversationId,
        notice: &Notice,
        told: Vec<AccountId>,
        notify: &mut Notify<'_>,
    ) {
        if !notify.wanted() {
            return;
        }
        let Some(view) = self.notice_view(group, notice) else {
            return;
        };
        for account in told {
            notify.push(Fanout::Feed(
                account,
                FeedEntry {
                    index: notice.index,
                    kind: FeedKind::Group(view.clone()),
                },
            ));
        }
    }

    /// A notice of group `group` with the names a client shows; the title
    /// is the one the group was created or renamed with, else its current
    /// one (none when the group is gone).
    fn notice_view(&self, group: ConversationId, notice: &Notice) -> Option<GroupNoticeView> {
        let name = |a: &AccountId| {
            self.accounts
                .get(a)
                .map_or(String::new(), |x| x.username.clone())
        };
        let accounts: Vec<AccountId> = match &notice.change {
            Change::Created { members, .. } => members.clone(),
            Change::Changed(c) => c.accounts(),
            Change::AccountDeleted => Vec::new(),
        };
        let title = match (&notice.change, self.conversations.get(&group)) {
            (Change::Changed(GroupChange::Renamed(title)) | Change::Created { title, .. }, _) => {
                title.clone()
            }
            (_, Some(conv)) => conv.group_info().map_or(String::new(), |g| g.title.clone()),
            (_, None) => String::new(),
        };
        Some(GroupNoticeView {
            index: notice.index,
            conversation: group,
            title,
            by: notice.by,
            by_name: name(&notice.by),
            change: notice.change.clone(),
            accounts: accounts.iter().map(|a| (*a, name(a))).collect(),
            new_owner: notice.new_owner,
        })
    }

    fn read_conversation(
        &mut self,
        index: u64,
        account: AccountId,
        conversation: ConversationId,
        up_to: MessageId,
        notify: &mut Notify<'_>,
    ) -> Applied {
        let Some(conv) = self.conversations.get(&conversation) else {
            return Applied::Rejected(Rejection::NoSuchConversation);
        };
        if conv.is_member(account) && up_to <= conv.read_up_to(account) {
            // Nothing newly read: the conversation is left as it is, not
            // copied from under a snapshot being built.
            return Applied::Unread(conv.unread_of(account));
        }
        let conv = Arc::make_mut(self.conversations.get_mut(&conversation).expect("found"));
        let Some(read) = conv.read(index, account, up_to) else {
            return Applied::Rejected(Rejection::NoSuchConversation);
        };
        if let Some(acc) = self.accounts.get_mut(&account).map(Arc::make_mut) {
            acc.unread -= read.no_longer_unread;
        }
        for (sender, newest) in read.receipts {
            self.notify_read(index, sender, account, newest, conversation, notify);
        }
        Applied::Unread(read.unread)
    }

    /// The direct conversation of `a` and `b`, made (with id `index`) if
    /// they have none yet.
    fn direct_conversation(&mut self, index: u64, a: AccountId, b: AccountId) -> ConversationId {
        let key = direct_key(a, b);
        if let Some(id) = self.direct.get(&key) {
            return *id;
        }
        let id = ConversationId(index);
        let members: &[AccountId] = if a == b { &[a] } else { &[key.0, key.1] };
        self.conversations
            .insert(id, Arc::new(Conversation::new(members.iter().copied())));
        self.direct.insert(key, id);
        for member in members {
            if let Some(acc) = self.accounts.get_mut(member).map(Arc::make_mut) {
                // Conversation ids grow with the log: pushing keeps the order.
                acc.conversations.push(id);
            }
        }
        id
    }

    fn delivered(
        &mut self,
        index: u64,
        account: AccountId,
        up_to: MessageId,
        notify: &mut Notify<'_>,
    ) -> Applied {
        let Some(acc) = self.accounts.get_mut(&account).map(Arc::make_mut) else {
            return Applied::Rejected(Rejection::NoSuchAccount);
        };
        let old = acc.delivered_up_to;
        if up_to <= old {
            return Applied::Done;
        }
        acc.delivered_up_to = up_to;
        // The newest newly delivered message, for each sender it came from
        // (over every conversation they share: one receipt each).
        let mut receipts: BTreeMap<AccountId, MessageId> = BTreeMap::new();
        for c in &acc.conversations {
            // Looked at first and changed only if something was delivered
            // in it: a conversation a snapshot being built still shares is
            // copied when changed, and an account's receipt spans them all.
            let Some(delivered) = (self.conversations.get(c))
                .map(|conv| conv.newly_delivered(account, old, up_to))
                .filter(|d| !d.is_empty())
            else {
                continue;
            };
            let mut last = MessageId(0);
            for (sender, newest) in delivered {
                let at = receipts.entry(sender).or_default();
                *at = (*at).max(newest);
                last = last.max(newest);
            }
            if let Some(conv) = self.conversations.get_mut(c).map(Arc::make_mut) {
                conv.set_delivered(index, account, last);
            }
        }
        if let Some(acc) = self.accounts.get(&account)
            && notify.wanted()
        {
            for (sender, up_to) in receipts {
                let kind = FeedKind::Delivered {
                    peer: account,
                    peer_name: acc.username.clone(),
                    up_to,
                };
                notify.push(Fanout::Feed(sender, FeedEntry { index, kind }));
            }
        }
        Applied::Done
    }

    fn read(
        &mut self,
        index: u64,
        account: AccountId,
        peer: AccountId,
        up_to: MessageId,
        notify: &mut Notify<'_>,
    ) -> Applied {
        if !self.accounts.contains_key(&account) {
            return Applied::Rejected(Rejection::NoSuchAccount);
        }
        match self.direct.get(&direct_key(account, peer)) {
            Some(c) => match self.read_conversation(index, account, *c, up_to, notify) {
                Applied::Rejected(_) => Applied::Unread(0),
                applied => applied,
            },
            None => Applied::Unread(0),
        }
    }

    /// Tells `to` that `peer` read its messages in `conversation` up to
    /// `up_to`.
    fn notify_read(
        &self,
        index: u64,
        to: AccountId,
        peer: AccountId,
        up_to: MessageId,
        conversation: ConversationId,
        notify: &mut Notify<'_>,
    ) {
        if !notify.wanted() {
            return;
        }
        let (Some(_), Some(p)) = (self.accounts.get(&to), self.accounts.get(&peer)) else {
            return;
        };
        let kind = FeedKind::Read {
            peer,
            peer_name: p.username.clone(),
            up_to,
            conversation,
        };
        notify.push(Fanout::Feed(to, FeedEntry { index, kind }));
    }

    fn delete_messages(
        &mut self,
        index: u64,
        account: AccountId,
        ids: &[MessageId],
        notify: &mut Notify<'_>,
    ) -> Applied {
        let Some(acc) = self.accounts.get(&account) else {
            return Applied::Rejected(Rejection::NoSuchAccount);
        };
        let mine = acc.conversations.clone();
        let mut deleted = Vec::new();
        let mut no_longer_unread = 0;
        for id in ids {
            let Some(c) = (mine.iter()).find(|c| {
                self.conversations
                    .get(c)
                    .is_some_and(|conv| conv.holds(*id))
            }) else {
                continue;
            };
            let conv = self
                .conversations
                .get_mut(c)
                .map(Arc::make_mut)
                .expect("found");
            let Some(hidden) = conv.hide(account, *id) else {
                continue;
            };
            if hidden.was_unread {
                no_longer_unread += 1;
            }
            if hidden.erased {
                self.erased.push(*id);
            }
            deleted.push(*id);
        }
        if deleted.is_empty() {
            return Applied::Deleted(0);
        }
        let acc = self
            .accounts
            .get_mut(&account)
            .map(Arc::make_mut)
            .expect("checked");
        acc.unread -= no_longer_unread;
        acc.deletions.push((index, deleted.clone()));
        let n = deleted.len() as u64;
        notify.push(Fanout::Feed(
            account,
            FeedEntry {
                index,
                kind: FeedKind::Deleted(deleted),
            },
        ));
        Applied::Deleted(n)
    }

    fn delete_account(
        &mut self,
        index: u64,
        account: AccountId,
        notify: &mut Notify<'_>,
    ) -> Applied {
        let Some(acc) = self.accounts.remove(&account) else {
            return Applied::Rejected(Rejection::NoSuchAccount);
        };
        self.by_name.remove(&acc.username.to_lowercase());
        for session in self.sessions_of.remove(&account).unwrap_or_default() {
            if let Some(s) = self.sessions.remove(&session) {
                self.by_token.remove(&s.token_hash);
            }
        }
        // Erase every direct conversation it was in: the messages it sent
        // or received, on both sides, and the keys that named them. In a
        // group, the messages it sent are erased and it leaves.
        let mut erased = HashSet::new();
        let mut touched = Vec::new();
        for c in &acc.conversations {
            if (self.conversations.get(c)).is_some_and(|conv| conv.group_info().is_some()) {
                let before = self.erased.len();
                let conv = self
                    .conversations
                    .get_mut(c)
                    .map(Arc::make_mut)
                    .expect("there");
                for id in conv.sent_by(account) {
                    for member in conv.erase(id) {
                        if let Some(p) = self.accounts.get_mut(&member).map(Arc::make_mut) {
                            p.unread -= 1;
                        }
                    }
                    self.erased.push(id);
                }
                let members = conv.members();
                let new_owner = self.leave_group(*c, account);
                erased.extend(self.erased[before..].iter().copied());
                touched.extend(members.iter().copied().filter(|m| *m != account));
                let notice = Notice {
                    index,
                    by: account,
                    change: Change::AccountDeleted,
                    new_owner,
                };
                if let Some(g) = self
                    .conversations
                    .get_mut(c)
                    .and_then(|c| Arc::make_mut(c).group_info_mut())
                {
                    g.notices.push(notice.clone());
                    let told = members.into_iter().filter(|m| *m != account).collect();
                    self.notify_notice(*c, &notice, told, notify);
                }
                continue;
            }
            let Some(conv) = self.conversations.remove(c) else {
                continue;
            };
            let members = conv.members();
            if let [a, b] = members[..] {
                self.direct.remove(&direct_key(a, b));
            } else if let [a] = members[..] {
                self.direct.remove(&(a, a));
            }
            for id in conv.message_ids() {
                self.erased.push(id);
                erased.insert(id);
            }
            for member in members.into_iter().filter(|m| *m != account) {
                if notify.wanted() {
                    notify.push(Fanout::Feed(
                        member,
                        FeedEntry {
                            index,
                            kind: FeedKind::PeerGone {
                                peer: account,
                                peer_name: acc.username.clone(),
                                conversation: *c,
                            },
                        },
                    ));
                }
                let unread = conv.unread_of(member);
                if let Some(p) = self.accounts.get_mut(&member).map(Arc::make_mut) {
                    p.unread -= unread;
                    p.conversations.retain(|x| x != c);
                    p.deletions.retain_mut(|(_, ids)| {
                        ids.retain(|id| !erased.contains(id));
                        !ids.is_empty()
                    });
                }
                if let Some(keys) = self.idempotency.get_mut(&member).map(Arc::make_mut) {
                    keys.retain(|id| !erased.contains(&id));
                }
            }
        }
        for member in touched {
            if let Some(p) = self.accounts.get_mut(&member).map(Arc::make_mut) {
                p.deletions.retain_mut(|(_, ids)| {
                    ids.retain(|id| !erased.contains(id));
                    !ids.is_empty()
                });
            }
            if let Some(keys) = self.idempotency.get_mut(&member).map(Arc::make_mut) {
                keys.retain(|id| !erased.contains(&id));
            }
        }
        self.idempotency.remove(&account);
        Applied::Done
    }

    fn close_session(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            self.by_token.remove(&s.token_hash);
            if let Some(set) = self.sessions_of.get_mut(&s.account) {
                set.remove(&session);
                if set.is_empty() {
                    self.sessions_of.remove(&s.account);
                }
            }
        }
    }

    // ---- queries ---------------------------------------------------------

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id).map(|a| &**a)
    }

    /// The account with this name, ignoring case.
    pub fn account_by_name(&self, name: &str) -> Option<(AccountId, &Account)> {
        let id = *self.by_name.get(&name.to_lowercase())?;
        Some((id, &**self.accounts.get(&id)?))
    }

    pub fn session_by_token(&self, token_hash: &TokenHash) -> Option<(SessionId, &Session)> {
        let id = *self.by_token.get(token_hash)?;
        Some((id, self.sessions.get(&id)?))
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Every open session, for the idle sweeper.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// Whether the account has a session open (not whether it is online:
    /// that is an open stream, which the node's presence knows).
    pub fn has_session(&self, id: AccountId) -> bool {
        self.sessions_of.contains_key(&id)
    }

    /// The accounts `account` shares a conversation with (not itself), in
    /// no particular order, each once.
    pub fn contacts(&self, account: AccountId) -> Vec<AccountId> {
        let Some(acc) = self.accounts.get(&account) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        for id in &acc.conversations {
            if let Some(conv) = self.conversations.get(id) {
                seen.extend(conv.member_ids());
            }
        }
        seen.remove(&account);
        seen.into_iter().collect()
    }

    /// Whether `a` and `b` share a conversation.
    pub fn share_a_conversation(&self, a: AccountId, b: AccountId) -> bool {
        if a == b {
            return false;
        }
        let (Some(x), Some(y)) = (self.accounts.get(&a), self.accounts.get(&b)) else {
            return false;
        };
        // Both lists are ascending: a merge finds a common one.
        let (mut i, mut j) = (0, 0);
        while let (Some(p), Some(q)) = (x.conversations.get(i), y.conversations.get(j)) {
            match p.cmp(q) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The message an earlier send of `from` with this client message id
    /// made, if any.
    pub fn message_by_key(&self, from: AccountId, client_msg_id: &str) -> Option<MessageId> {
        self.keyed(from, key_hash(client_msg_id))
    }

    /// The group an earlier `CreateGroup` of `owner` with this request id
    /// made, if any.
    pub fn group_by_key(
        &self,
        owner: AccountId,
        client_request_id: &str,
    ) -> Option<ConversationId> {
        let id = self.keyed(owner, group_key_hash(client_request_id))?;
        Some(ConversationId(id.0))
    }

    /// What `account`'s idempotency key `key` (hashed) made, if it was used.
    fn keyed(&self, account: AccountId, key: u64) -> Option<MessageId> {
        self.idempotency.get(&account)?.get(key)
    }

    /// Whether `account` is a member of conversation `c`.
    pub fn is_member(&self, account: AccountId, c: ConversationId) -> bool {
        self.conversations
            .get(&c)
            .is_some_and(|conv| conv.is_member(account))
    }

    /// The messages erased since the last call, in the order they were
    /// erased: their bodies are to leave the archive. Whoever applies
    /// events to the live state takes them when it compacts the archive; a
    /// crash before that loses nothing, since the replay of the log after
    /// the snapshot erases them again.
    pub fn take_erased(&mut self) -> Vec<MessageId> {
        std::mem::take(&mut self.erased)
    }

    /// How many erased messages wait for [`ChatState::take_erased`].
    pub fn erased_pending(&self) -> usize {
        self.erased.len()
    }

    /// Accounts whose lower-cased name matches `pattern` (already lower-cased),
    /// in name order, after `after`.
    pub fn list_accounts(&self, pattern: &str, after: Option<&str>, limit: usize) -> AccountPage {
        let prefix: String = pattern
            .chars()
            .take_while(|c| *c != '*' && *c != '?')
            .collect();
        let start = match after {
            Some(a) if a >= prefix.as_str() => std::ops::Bound::Excluded(a.to_string()),
            _ => std::ops::Bound::Included(prefix.clone()),
        };
        let mut accounts = Vec::new();
        let mut next_after = None;
        for (name, id) in self.by_name.range((start, std::ops::Bound::Unbounded)) {
            if !name.starts_with(&prefix) {
                break;
            }
            if !wildcard_match(pattern, name) {
                continue;
            }
            if accounts.len() == limit {
                next_after = accounts
                    .last()
                    .map(|(_, n, _): &(AccountId, String, u64)| n.to_lowercase());
                break;
            }
            let acc = &self.accounts[id];
            accounts.push((*id, acc.username.clone(), acc.created_at_ms));
        }
        AccountPage {
            accounts,
            next_after,
        }
    }

    /// The conversation of `account` with `peer`, newest first: messages with
    /// an id below `before` (all when `None`), at most `limit`, and where
    /// the next page starts if there is one.
    pub fn history(
        &self,
        account: AccountId,
        peer: AccountId,
        before: Option<MessageId>,
        limit: usize,
    ) -> (Vec<MessageRef>, Option<MessageId>) {
        let Some((c, _)) = self.direct_of(account, peer) else {
            return (Vec::new(), None);
        };
        self.history_of(account, c, before, limit)
            .unwrap_or_default()
    }

    /// [`ChatState::history`] of a conversation by its id; `None` when
    /// there is no such conversation or `account` is not a member.
    pub fn history_of(
        &self,
        account: AccountId,
        c: ConversationId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Option<(Vec<MessageRef>, Option<MessageId>)> {
        let conv = self
            .conversations
            .get(&c)
            .filter(|c| c.is_member(account))?;
        let (ids, next) = conv.page(account, before, limit);
        let page = (ids.into_iter())
            .filter_map(|id| self.message_ref(account, c, id))
            .collect();
        Some((page, next))
    }

    /// The direct conversation of `account` with `peer`, if they have one.
    pub fn direct_with(&self, account: AccountId, peer: AccountId) -> Option<ConversationId> {
        self.direct_of(account, peer).map(|(c, _)| c)
    }

    /// The ids of the messages `account` sees in conversation `c` below
    /// `before` (all when `None`), newest first, at most `limit`, and
    /// whether older ones remain; `None` when there is no such conversation
    /// or `account` is not a member. What a search examines: ids only, so
    /// thousands cost the state lock little.
    pub fn visible_ids(
        &self,
        account: AccountId,
        c: ConversationId,
        before: Option<MessageId>,
        limit: usize,
    ) -> Option<(Vec<MessageId>, bool)> {
        let conv = self
            .conversations
            .get(&c)
            .filter(|c| c.is_member(account))?;
        let (ids, next) = conv.page(account, before, limit);
        Some((ids, next.is_some()))
    }

    /// Messages `ids` of conversation `c` as `account` sees them, in the
    /// same order; `None` for one it no longer sees.
    pub fn message_refs(
        &self,
        account: AccountId,
        c: ConversationId,
        ids: impl IntoIterator<Item = MessageId>,
    ) -> Vec<Option<MessageRef>> {
        (ids.into_iter())
            .map(|id| self.message_ref(account, c, id))
            .collect()
    }

    /// The group `c` as member `account` sees it: `None` when there is no
    /// such group or `account` is not in it.
    pub fn group(&self, account: AccountId, c: ConversationId) -> Option<&Group> {
        let conv = self
            .conversations
            .get(&c)
            .filter(|c| c.is_member(account))?;
        conv.group_info()
    }

    /// The members of conversation `c` with their names, join points and
    /// read cursors, if `account` is one of them.
    pub fn members_of(&self, account: AccountId, c: ConversationId) -> Option<Vec<MemberView>> {
        let conv = self
            .conversations
            .get(&c)
            .filter(|c| c.is_member(account))?;
        Some(
            conv.member_cursors()
                .filter_map(|(a, joined, read)| {
                    let acc = self.accounts.get(&a)?;
                    Some(MemberView {
                        account: a,
                        name: acc.username.clone(),
                        joined,
                        read_up_to: read,
                        delivered_up_to: acc.delivered_up_to,
                    })
                })
                .collect(),
        )
    }

    /// The changes of group `c` that member `account` can see, with an id
    /// in `after..up_to` (both exclusive of `after`), oldest first.
    pub fn notices_of(
        &self,
        account: AccountId,
        c: ConversationId,
        after: u64,
        up_to: u64,
    ) -> Vec<GroupNoticeView> {
        let Some(conv) = self.conversations.get(&c) else {
            return Vec::new();
        };
        (conv.notices_for(account, after, up_to))
            .filter_map(|n| self.notice_view(c, n))
            .collect()
    }

    /// Every conversation of `account`, most recent first.
    pub fn conversations(&self, account: AccountId) -> Vec<ConversationSummary<MessageRef>> {
        let Some(acc) = self.accounts.get(&account) else {
            return Vec::new();
        };
        let mut out: Vec<ConversationSummary<MessageRef>> = (acc.conversations.iter())
            .filter_map(|c| {
                let conv = self.conversations.get(c)?;
                let (peer, peer_name, group) = match conv.group_info() {
                    Some(g) => (
                        AccountId(0),
                        String::new(),
                        Some((g.title.clone(), g.owner, conv.member_count())),
                    ),
                    None => {
                        let peer = conv.peer_of(account);
                        (peer, self.accounts.get(&peer)?.username.clone(), None)
                    }
                };
                Some(ConversationSummary {
                    conversation: *c,
                    peer,
                    peer_name,
                    group,
                    last: (conv.last_visible(account))
                        .and_then(|id| self.message_ref(account, *c, id)),
                    unread: conv.unread_of(account),
                })
            })
            .collect();
        // Most recent first: a group with no message yet by when it was made.
        out.sort_by(|a, b| {
            let key = |c: &ConversationSummary<MessageRef>| {
                c.last.as_ref().map_or(c.conversation.0, |m| m.id.0)
            };
            key(b)
                .cmp(&key(a))
                .then(a.conversation.cmp(&b.conversation))
        });
        out
    }

    /// Unread messages from `peer` in `account`'s view.
    pub fn unread_with(&self, account: AccountId, peer: AccountId) -> u64 {
        self.direct_of(account, peer)
            .map_or(0, |(_, conv)| conv.unread_of(account))
    }

    /// The feed of `account` after log position `after` and up to
    /// `up_to`, in log order, at most `limit` entries: the messages of its
    /// conversations it can see, the newest receipt of each of its peers
    /// that moved since (not every receipt in between: they are cursors),
    /// and its own deletions.
    pub fn feed_after(
        &self,
        account: AccountId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Vec<FeedEntry<MessageRef>> {
        let Some(acc) = self.accounts.get(&account) else {
            return Vec::new();
        };
        let within = |index: u64| index > after && index <= up_to;
        let mut out: Vec<FeedEntry<MessageRef>> = Vec::new();
        for c in &acc.conversations {
            let Some(conv) = self.conversations.get(c) else {
                continue;
            };
            for id in conv.visible_after(account, MessageId(after), MessageId(up_to), limit) {
                if let Some(m) = self.message_ref(account, *c, id) {
                    out.push(FeedEntry {
                        index: id.0,
                        kind: FeedKind::Message(m),
                    });
                }
            }
            for notice in conv.notices_for(account, after, up_to) {
                if let Some(view) = self.notice_view(*c, notice) {
                    out.push(FeedEntry {
                        index: notice.index,
                        kind: FeedKind::Group(view),
                    });
                }
            }
            for receipt in conv.receipts_for(account) {
                if !within(receipt.index) {
                    continue;
                }
                let Some(p) = self.accounts.get(&receipt.peer) else {
                    continue;
                };
                let (peer, peer_name, up_to) = (receipt.peer, p.username.clone(), receipt.up_to);
                let kind = if receipt.read {
                    FeedKind::Read {
                        peer,
                        peer_name,
                        up_to,
                        conversation: *c,
                    }
                } else {
                    FeedKind::Delivered {
                        peer,
                        peer_name,
                        up_to,
                    }
                };
                out.push(FeedEntry {
                    index: receipt.index,
                    kind,
                });
            }
        }
        let start = acc.deletions.partition_point(|(i, _)| *i <= after);
        for (index, ids) in acc.deletions[start..].iter().take(limit) {
            if within(*index) {
                out.push(FeedEntry {
                    index: *index,
                    kind: FeedKind::Deleted(ids.clone()),
                });
            }
        }
        out.sort_by_key(|e| e.index);
        out.truncate(limit);
        out
    }

    /// The direct conversation of `account` with `peer`.
    fn direct_of(
        &self,
        account: AccountId,
        peer: AccountId,
    ) -> Option<(ConversationId, &Conversation)> {
        let c = *self.direct.get(&direct_key(account, peer))?;
        Some((c, self.conversations.get(&c)?))
    }

    /// Message `id` of conversation `c` as `viewer` sees it, if it is in
    /// the viewer's view.
    fn message_ref(
        &self,
        viewer: AccountId,
        c: ConversationId,
        id: MessageId,
    ) -> Option<MessageRef> {
        let conv = self.conversations.get(&c)?;
        let from = conv.visible_sender(viewer, id)?;
        let from_name = self.accounts.get(&from)?.username.clone();
        if conv.group_info().is_some() {
            let (mut read_by, mut readers, mut delivered) = (0, 0, true);
            if from == viewer {
                (read_by, readers) = conv.read_by(from, id);
                delivered = (conv.member_cursors())
                    .filter(|(a, joined, _)| *a != from && *joined <= id)
                    .all(|(a, _, read)| {
                        read >= id
                            || self
                                .accounts
                                .get(&a)
                                .is_some_and(|x| x.delivered_up_to >= id)
                    });
            }
            return Some(MessageRef {
                id,
                conversation: c,
                in_group: true,
                from,
                from_name,
                to: AccountId(0),
                to_name: String::new(),
                delivered: from == viewer && readers > 0 && delivered,
                read: from == viewer && readers > 0 && read_by == readers,
                read_by: read_by as u32,
                readers: readers as u32,
            });
        }
        let to = if from == viewer {
            conv.peer_of(viewer)
        } else {
            viewer
        };
        let (delivered, read) = if from == viewer && to != viewer {
            let read = conv.read_up_to(to) >= id;
            let delivered = read || self.accounts.get(&to)?.delivered_up_to >= id;
            (delivered, read)
        } else {
            (false, false)
        };
        Some(MessageRef {
            id,
            conversation: c,
            in_group: false,
            from,
            from_name,
            to,
            to_name: self.accounts.get(&to)?.username.clone(),
            delivered,
            read,
            read_by: read as u32,
            readers: u32::from(from == viewer && to != viewer),
        })
    }
}

/// Matches `name` against `pattern` where `*` is any run of characters and
/// `?` exactly one.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl ChatState {
    /// A canonical rendering of the whole state (every map sorted), for
    /// comparing replicas and replays.
    pub fn fingerprint(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut accounts: Vec<_> = self.accounts.iter().collect();
        accounts.sort_by_key(|(id, _)| **id);
        for (id, a) in accounts {
            let _ = writeln!(
                out,
                "account {id} {} {} created={} delivered={} unread={} hash={} conversations={:?} deletions={:?}",
                a.username,
                self.has_session(*id),
                a.created_at_ms,
                a.delivered_up_to,
                a.unread,
                a.password_hash.0,
                a.conversations,
                a.deletions,
            );
        }
        let _ = writeln!(out, "names {:?}", self.by_name);
        let mut conversations: Vec<_> = self.conversations.iter().collect();
        conversations.sort_by_key(|(id, _)| **id);
        for (id, c) in conversations {
            let _ = writeln!(out, "conversation {} {c:?}", id.0);
        }
        let mut direct: Vec<_> = self.direct.iter().collect();
        direct.sort();
        let _ = writeln!(out, "direct {direct:?}");
        let mut keys: Vec<_> = self
            .idempotency
            .iter()
            .flat_map(|(from, keys)| keys.iter().map(move |(k, id)| (*from, k, id)))
            .collect();
        keys.sort();
        let _ = writeln!(out, "keys {keys:?}");
        let mut sessions: Vec<_> = self
            .sessions
            .iter()
            .map(|(id, s)| (id, s.account, s.opened_at_ms, s.token_hash.0))
            .collect();
        sessions.sort();
        let _ = writeln!(out, "sessions {sessions:?}");
        out
    }
}

#[cfg(test)]
impl ChatState {
    /// Every stored message id, ascending.
    fn all_message_ids(&self) -> Vec<MessageId> {
        let mut ids: Vec<MessageId> = (self.conversations.values())
            .flat_map(|c| c.message_ids())
            .collect();
        ids.sort();
        ids
    }
}
