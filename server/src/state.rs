//! The chat state: every index the server answers from, derived from the log.
//!
//! [`ChatState::apply`] is the only way to change it and is pure: no clock, no
//! randomness, no I/O. Everything non-deterministic travels inside the event,
//! so replaying the same log gives the same state on every replica, every
//! time. Validation that depends on the state (a name already taken, an
//! idempotency key already used) happens here, at apply time, so that two
//! racing proposals resolve the same way everywhere.
//!
//! Deleting an account erases it from every answer: its sessions, its
//! conversations, and the messages it sent or received, on both sides. The
//! name becomes free for a new account, which starts empty.

use std::collections::{BTreeMap, BTreeSet};

use log_format::events::{AccountId, Event, MessageId, PasswordHash, SessionId, TokenHash};
use serde::{Deserialize, Serialize};

/// The maps of the state: aHash is several times faster than SipHash on
/// replay and, keyed per process, still resists flooding with crafted keys
/// (idempotency keys are chosen by clients). Iteration order never reaches
/// an answer unsorted, so the random keys do not break determinism.
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
        at_ms: u64,
        duplicate: bool,
    },
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
}

/// An account as the indexes keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub password_hash: PasswordHash,
    pub created_at_ms: u64,
    /// Every message addressed to this account up to here was delivered.
    pub delivered_up_to: MessageId,
    /// Sum of the unread counts of the conversations.
    pub unread: u64,
    /// Conversations by peer.
    conversations: HashMap<AccountId, Conversation>,
    /// What a subscription replays: this account's events in log order.
    feed: Vec<(u64, FeedItem)>,
    /// Messages received, ascending (for delivery receipts).
    received: Vec<MessageId>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Conversation {
    /// Visible messages of both directions, ascending.
    ids: Vec<MessageId>,
    /// Messages from the peer up to here have been read.
    read_up_to: MessageId,
    /// Messages from the peer after `read_up_to` that are still visible.
    unread: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub from: AccountId,
    pub to: AccountId,
    pub body: String,
    pub at_ms: u64,
    /// Hidden from the sender's view (it deleted the message).
    hidden_by_sender: bool,
    hidden_by_recipient: bool,
}

/// An entry of an account's feed; materialised into a [`FeedEntry`] when sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum FeedItem {
    Message(MessageId),
    Delivered { peer: AccountId, up_to: MessageId },
    Read { peer: AccountId, up_to: MessageId },
    Deleted(Vec<MessageId>),
}

/// What applying an event tells live subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanout {
    /// A new event for the account's feed.
    Feed(AccountId, FeedEntry),
    /// The session ended (logout or idle): its streams end.
    SessionEnded(SessionId),
    /// The account was deleted: all its streams end.
    AccountDeleted(AccountId),
}

/// An event of a user's subscription, with everything needed to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The log position of the event it came from: the subscription cursor.
    pub index: u64,
    pub kind: FeedKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedKind {
    Message(MessageView),
    /// `peer` acknowledged delivery of the subscriber's messages up to `up_to`.
    Delivered {
        peer: AccountId,
        peer_name: String,
        up_to: MessageId,
    },
    /// `peer` read the subscriber's messages up to `up_to`.
    Read {
        peer: AccountId,
        peer_name: String,
        up_to: MessageId,
    },
    /// The subscriber deleted these messages (from another session).
    Deleted(Vec<MessageId>),
}

/// A message as one participant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub id: MessageId,
    pub from: AccountId,
    pub from_name: String,
    pub to: AccountId,
    pub to_name: String,
    pub body: String,
    pub at_ms: u64,
    /// For the viewer's own messages: the recipient acknowledged delivery.
    pub delivered: bool,
    /// For the viewer's own messages: the recipient read it.
    pub read: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub account: AccountId,
    pub opened_at_ms: u64,
    token_hash: TokenHash,
}

/// One row of `Conversations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub peer: AccountId,
    pub peer_name: String,
    pub last: Option<MessageView>,
    pub unread: u64,
}

/// Everything the server knows, derived from the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatState {
    accounts: HashMap<AccountId, Account>,
    /// Lower-cased name to account: uniqueness ignoring case, and the sorted
    /// order of `ListAccounts`.
    by_name: BTreeMap<String, AccountId>,
    #[serde(deserialize_with = "presized::map")]
    messages: HashMap<MessageId, StoredMessage>,
    /// Sender -> client message id -> the message it made.
    #[serde(deserialize_with = "presized::map_of_maps")]
    idempotency: HashMap<AccountId, HashMap<String, MessageId>>,
    sessions: HashMap<SessionId, Session>,
    by_token: HashMap<TokenHash, SessionId>,
    sessions_of: HashMap<AccountId, BTreeSet<SessionId>>,
}

/// Reads the state's big maps at their full size at once. serde's own
/// `HashMap` impl caps the first allocation (a guard against hostile
/// lengths), so a map of a million messages was rehashed a dozen times while
/// a snapshot loaded; a snapshot is this cluster's own CRC-checked data.
mod presized {
    use std::fmt;
    use std::hash::Hash;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

    use super::HashMap;

    /// More than this many entries is not a map this server wrote.
    const MAX_PRESIZE: usize = 1 << 28;

    struct MapVisitor<K, V>(PhantomData<(K, V)>);

    impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        type Value = HashMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let len = access.size_hint().unwrap_or(0).min(MAX_PRESIZE);
            let mut map = HashMap::with_capacity_and_hasher(len, Default::default());
            while let Some((k, v)) = access.next_entry()? {
                map.insert(k, v);
            }
            Ok(map)
        }
    }

    /// A map of the given length, allocated once.
    #[derive(Debug)]
    pub struct Presized<K, V>(pub HashMap<K, V>);

    impl<'de, K, V> Deserialize<'de> for Presized<K, V>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(MapVisitor(PhantomData)).map(Presized)
        }
    }

    pub fn map<'de, D, K, V>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        Presized::deserialize(d).map(|p| p.0)
    }

    /// A map whose values are maps, every one presized.
    pub fn map_of_maps<'de, D, K, K2, V>(d: D) -> Result<HashMap<K, HashMap<K2, V>>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
        K2: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        let outer: Presized<K, Presized<K2, V>> = Presized::deserialize(d)?;
        Ok(outer.0.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

/// Where a `ListAccounts` page stops and the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    pub accounts: Vec<(AccountId, String, u64, bool)>,
    /// The lower-cased name to continue after, if there may be more.
    pub next_after: Option<String>,
}

impl ChatState {
    /// Applies the event at log position `index` (see `events::position`:
    /// the ids it creates are that position); feed events for live
    /// subscribers are pushed to `notify`.
    pub fn apply(&mut self, index: u64, event: &Event, notify: &mut Vec<Fanout>) -> Applied {
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
                    Account {
                        username: username.clone(),
                        password_hash: password_hash.clone(),
                        created_at_ms: *at_ms,
                        delivered_up_to: MessageId(0),
                        unread: 0,
                        conversations: HashMap::default(),
                        feed: Vec::new(),
                        received: Vec::new(),
                    },
                );
                Applied::AccountCreated(id)
            }
            Event::AccountDeleted { account, .. } => {
                let applied = self.delete_account(*account);
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
        notify: &mut Vec<Fanout>,
    ) -> Applied {
        if let Some(&id) = self
            .idempotency
            .get(&from)
            .and_then(|keys| keys.get(client_msg_id))
        {
            let at_ms = self.messages.get(&id).map_or(0, |m| m.at_ms);
            return Applied::Message {
                id,
                at_ms,
                duplicate: true,
            };
        }
        if !self.accounts.contains_key(&from) || !self.accounts.contains_key(&to) {
            return Applied::Rejected(Rejection::NoSuchAccount);
        }
        let id = MessageId(index);
        self.messages.insert(
            id,
            StoredMessage {
                from,
                to,
                body: body.to_string(),
                at_ms,
                hidden_by_sender: false,
                hidden_by_recipient: false,
            },
        );
        self.idempotency
            .entry(from)
            .or_default()
            .insert(client_msg_id.to_string(), id);
        let sender = self.accounts.get_mut(&from).expect("checked");
        sender.conversations.entry(to).or_default().ids.push(id);
        sender.feed.push((index, FeedItem::Message(id)));
        let recipient = self.accounts.get_mut(&to).expect("checked");
        let conv = recipient.conversations.entry(from).or_default();
        if from != to {
            conv.ids.push(id);
        }
        conv.unread += 1;
        recipient.unread += 1;
        recipient.received.push(id);
        if from != to {
            recipient.feed.push((index, FeedItem::Message(id)));
        }
        for account in [from, to] {
            if let Some(kind) = self.materialize(account, &FeedItem::Message(id)) {
                notify.push(Fanout::Feed(account, FeedEntry { index, kind }));
            }
            if from == to {
                break;
            }
        }
        Applied::Message {
            id,
            at_ms,
            duplicate: false,
        }
    }

    fn delivered(
        &mut self,
        index: u64,
        account: AccountId,
        up_to: MessageId,
        notify: &mut Vec<Fanout>,
    ) -> Applied {
        let Some(acc) = self.accounts.get_mut(&account) else {
            return Applied::Rejected(Rejection::NoSuchAccount);
        };
        let old = acc.delivered_up_to;
        if up_to <= old {
            return Applied::Done;
        }
        acc.delivered_up_to = up_to;
        // The newest newly delivered message of each sender.
        let from = acc.received.partition_point(|id| *id <= old);
        let to = acc.received.partition_point(|id| *id <= up_to);
        let mut per_sender: BTreeMap<AccountId, MessageId> = BTreeMap::new();
        for id in &acc.received[from..to] {
            if let Some(m) = self.messages.get(id) {
                per_sender.insert(m.from, *id);
            }
        }
        for (sender, newest) in per_sender {
            self.push_receipt(
                index,
                sender,
                FeedItem::Delivered {
                    peer: account,
                    up_to: newest,
                },
                notify,
            );
        }
        Applied::Done
    }

    fn read(
        &mut self,
        index: u64,
        account: AccountId,
        peer: AccountId,
        up_to: MessageId,
        notify: &mut Vec<Fanout>,
    ) -> Applied {
        let messages = &self.messages;
        let Some(acc) = self.accounts.get_mut(&account) else {
            return Applied::Rejected(Rejection::NoSuchAccount);
        };
        let Some(conv) = acc.conversations.get_mut(&peer) else {
            return Applied::Unread(0);
        };
        let old = conv.read_up_to;
        if up_to <= old {
            return Applied::Unread(conv.unread);
        }
        conv.read_up_to = up_to;
        let start = conv.ids.partition_point(|id| *id <= old);
        let mut newest_read = None;
        let mut still_unread = 0;
        for id in &conv.ids[start..] {
            if messages.get(id).is_some_and(|m| m.from == peer) {
                if *id <= up_to {
                    newest_read = Some(*id);
                } else {
                    still_unread += 1;
                }
            }
        }
        acc.unread -= conv.unread - still_unread;
        conv.unread = still_unread;
        if let Some(newest) = newest_read
            && peer != account
        {
            self.push_receipt(
                index,
                peer,
                FeedItem::Read {
                    peer: account,
                    up_to: newest,
                },
                notify,
            );
        }
        Applied::Unread(still_unread)
    }

    fn push_receipt(
        &mut self,
        index: u64,
        to: AccountId,
        item: FeedItem,
        notify: &mut Vec<Fanout>,
    ) {
        if let Some(kind) = self.materialize(to, &item) {
            notify.push(Fanout::Feed(to, FeedEntry { index, kind }));
        }
        if let Some(acc) = self.accounts.get_mut(&to) {
            acc.feed.push((index, item));
        }
    }

    fn delete_messages(
        &mut self,
        index: u64,
        account: AccountId,
        ids: &[MessageId],
        notify: &mut Vec<Fanout>,
    ) -> Applied {
        if !self.accounts.contains_key(&account) {
            return Applied::Rejected(Rejection::NoSuchAccount);
        }
        let mut deleted = Vec::new();
        for id in ids {
            let Some(m) = self.messages.get_mut(id) else {
                continue;
            };
            let (peer, already) = if m.from == account && !m.hidden_by_sender {
                m.hidden_by_sender = true;
                if m.to == account {
                    m.hidden_by_recipient = true;
                }
                (m.to, false)
            } else if m.to == account && !m.hidden_by_recipient {
                m.hidden_by_recipient = true;
                (m.from, false)
            } else {
                (m.from, true)
            };
            if already {
                continue;
            }
            let from_peer = m.from == peer && m.to == account;
            let gone = m.hidden_by_sender && m.hidden_by_recipient;
            if gone {
                self.messages.remove(id);
            }
            let acc = self.accounts.get_mut(&account).expect("checked");
            if let Some(conv) = acc.conversations.get_mut(&peer)
                && let Ok(pos) = conv.ids.binary_search(id)
            {
                conv.ids.remove(pos);
                if from_peer && *id > conv.read_up_to {
                    conv.unread -= 1;
                    acc.unread -= 1;
                }
            }
            deleted.push(*id);
        }
        if deleted.is_empty() {
            return Applied::Deleted(0);
        }
        let n = deleted.len() as u64;
        let item = FeedItem::Deleted(deleted);
        if let Some(kind) = self.materialize(account, &item) {
            notify.push(Fanout::Feed(account, FeedEntry { index, kind }));
        }
        self.accounts
            .get_mut(&account)
            .expect("checked")
            .feed
            .push((index, item));
        Applied::Deleted(n)
    }

    fn delete_account(&mut self, account: AccountId) -> Applied {
        let Some(acc) = self.accounts.remove(&account) else {
            return Applied::Rejected(Rejection::NoSuchAccount);
        };
        self.by_name.remove(&acc.username.to_lowercase());
        for session in self.sessions_of.remove(&account).unwrap_or_default() {
            if let Some(s) = self.sessions.remove(&session) {
                self.by_token.remove(&s.token_hash);
            }
        }
        // Erase every message it sent or received, on both sides, and the
        // keys that named them.
        let mut erased = std::collections::HashSet::new();
        for (peer, conv) in &acc.conversations {
            erased.extend(conv.ids.iter().copied());
            if let Some(p) = self.accounts.get_mut(peer)
                && let Some(their) = p.conversations.remove(&account)
            {
                erased.extend(their.ids.iter().copied());
                p.unread -= their.unread;
            }
        }
        for id in &erased {
            self.messages.remove(id);
        }
        self.idempotency.remove(&account);
        for keys in self.idempotency.values_mut() {
            keys.retain(|_, id| !erased.contains(id));
        }
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
        self.accounts.get(&id)
    }

    /// The account with this name, ignoring case.
    pub fn account_by_name(&self, name: &str) -> Option<(AccountId, &Account)> {
        let id = *self.by_name.get(&name.to_lowercase())?;
        Some((id, self.accounts.get(&id)?))
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

    pub fn is_online(&self, id: AccountId) -> bool {
        self.sessions_of.contains_key(&id)
    }

    pub fn message_by_key(&self, from: AccountId, client_msg_id: &str) -> Option<(MessageId, u64)> {
        let id = *self.idempotency.get(&from)?.get(client_msg_id)?;
        Some((id, self.messages.get(&id).map_or(0, |m| m.at_ms)))
    }

    pub fn messages_len(&self) -> usize {
        self.messages.len()
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
                    .map(|(_, n, _, _): &(AccountId, String, u64, bool)| n.to_lowercase());
                break;
            }
            let acc = &self.accounts[id];
            accounts.push((
                *id,
                acc.username.clone(),
                acc.created_at_ms,
                self.is_online(*id),
            ));
        }
        AccountPage {
            accounts,
            next_after,
        }
    }

    /// The conversation of `account` with `peer`, newest first: messages with
    /// an id below `before` (all when `None`), at most `limit`.
    pub fn history(
        &self,
        account: AccountId,
        peer: AccountId,
        before: Option<MessageId>,
        limit: usize,
    ) -> (Vec<MessageView>, Option<MessageId>) {
        let Some(conv) = self
            .accounts
            .get(&account)
            .and_then(|a| a.conversations.get(&peer))
        else {
            return (Vec::new(), None);
        };
        let end = before.map_or(conv.ids.len(), |b| conv.ids.partition_point(|id| *id < b));
        let start = end.saturating_sub(limit);
        let page: Vec<MessageView> = conv.ids[start..end]
            .iter()
            .rev()
            .filter_map(|id| self.view(account, *id))
            .collect();
        let next = (start > 0).then(|| conv.ids[start]);
        (page, next)
    }

    /// Every conversation of `account`, most recent first.
    pub fn conversations(&self, account: AccountId) -> Vec<ConversationSummary> {
        let Some(acc) = self.accounts.get(&account) else {
            return Vec::new();
        };
        let mut out: Vec<ConversationSummary> = acc
            .conversations
            .iter()
            .filter_map(|(peer, conv)| {
                let peer_name = self.accounts.get(peer)?.username.clone();
                Some(ConversationSummary {
                    peer: *peer,
                    peer_name,
                    last: conv.ids.last().and_then(|id| self.view(account, *id)),
                    unread: conv.unread,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |c: &ConversationSummary| c.last.as_ref().map(|m| m.id);
            key(b).cmp(&key(a)).then(a.peer.cmp(&b.peer))
        });
        out
    }

    /// Unread messages from `peer` in `account`'s view.
    pub fn unread_with(&self, account: AccountId, peer: AccountId) -> u64 {
        self.accounts
            .get(&account)
            .and_then(|a| a.conversations.get(&peer))
            .map_or(0, |c| c.unread)
    }

    /// The feed of `account` after log position `after`, materialised.
    pub fn feed_after(&self, account: AccountId, after: u64) -> Vec<FeedEntry> {
        let Some(acc) = self.accounts.get(&account) else {
            return Vec::new();
        };
        let start = acc.feed.partition_point(|(i, _)| *i <= after);
        acc.feed[start..]
            .iter()
            .filter_map(|(index, item)| {
                Some(FeedEntry {
                    index: *index,
                    kind: self.materialize(account, item)?,
                })
            })
            .collect()
    }

    fn materialize(&self, account: AccountId, item: &FeedItem) -> Option<FeedKind> {
        let name = |id: &AccountId| self.accounts.get(id).map(|a| a.username.clone());
        Some(match item {
            FeedItem::Message(id) => FeedKind::Message(self.view(account, *id)?),
            FeedItem::Delivered { peer, up_to } => FeedKind::Delivered {
                peer: *peer,
                peer_name: name(peer)?,
                up_to: *up_to,
            },
            FeedItem::Read { peer, up_to } => FeedKind::Read {
                peer: *peer,
                peer_name: name(peer)?,
                up_to: *up_to,
            },
            FeedItem::Deleted(ids) => FeedKind::Deleted(ids.clone()),
        })
    }

    /// Message `id` as `viewer` sees it, if it is in the viewer's view.
    fn view(&self, viewer: AccountId, id: MessageId) -> Option<MessageView> {
        let m = self.messages.get(&id)?;
        let visible =
            (m.from == viewer && !m.hidden_by_sender) || (m.to == viewer && !m.hidden_by_recipient);
        if !visible {
            return None;
        }
        let from = self.accounts.get(&m.from)?;
        let to = self.accounts.get(&m.to)?;
        let (delivered, read) = if m.from == viewer {
            let read = to
                .conversations
                .get(&m.from)
                .is_some_and(|c| c.read_up_to >= id);
            (read || to.delivered_up_to >= id, read)
        } else {
            (false, false)
        };
        Some(MessageView {
            id,
            from: m.from,
            from_name: from.username.clone(),
            to: m.to,
            to_name: to.username.clone(),
            body: m.body.clone(),
            at_ms: m.at_ms,
            delivered,
            read,
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
                "account {id} {} {} created={} delivered={} unread={} hash={}",
                a.username,
                self.is_online(*id),
                a.created_at_ms,
                a.delivered_up_to,
                a.unread,
                a.password_hash.0
            );
            let mut convs: Vec<_> = a.conversations.iter().collect();
            convs.sort_by_key(|(p, _)| **p);
            for (peer, c) in convs {
                let _ = writeln!(
                    out,
                    "  conv {peer} ids={:?} read={} unread={}",
                    c.ids, c.read_up_to, c.unread
                );
            }
            let _ = writeln!(out, "  received={:?}", a.received);
            for (index, item) in &a.feed {
                let _ = writeln!(out, "  feed {index} {item:?}");
            }
        }
        let _ = writeln!(out, "names {:?}", self.by_name);
        let mut messages: Vec<_> = self.messages.iter().collect();
        messages.sort_by_key(|(id, _)| **id);
        for (id, m) in messages {
            let _ = writeln!(out, "message {id} {m:?}");
        }
        let mut keys: Vec<_> = self
            .idempotency
            .iter()
            .flat_map(|(from, keys)| keys.iter().map(move |(k, id)| (*from, k, *id)))
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
mod tests {
    use super::*;
    use log_format::events::{self, CloseReason, EntryBody, LogEntry};
    use log_format::{Log, LogConfig, Record};
    use proptest::prelude::*;

    fn hash(s: &str) -> PasswordHash {
        PasswordHash(format!("$argon2id$fake${s}"))
    }

    /// A small world: actions name accounts and messages by small numbers
    /// that the generator maps onto whatever exists.
    #[derive(Debug, Clone)]
    enum Action {
        Create(u8),
        Delete(u8),
        Open(u8),
        Close(u8),
        Send { from: u8, to: u8, key: u8, body: u8 },
        Ack { who: u8, back: u8 },
        Read { who: u8, peer: u8, back: u8 },
        DeleteMsgs { who: u8, pick: Vec<u8> },
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            2 => (0u8..6).prop_map(Action::Create),
            1 => (0u8..6).prop_map(Action::Delete),
            2 => (0u8..6).prop_map(Action::Open),
            1 => (0u8..8).prop_map(Action::Close),
            6 => (0u8..6, 0u8..6, 0u8..4, any::<u8>()).prop_map(|(from, to, key, body)| Action::Send { from, to, key, body }),
            2 => (0u8..6, 0u8..4).prop_map(|(who, back)| Action::Ack { who, back }),
            2 => (0u8..6, 0u8..6, 0u8..4).prop_map(|(who, peer, back)| Action::Read { who, peer, back }),
            1 => (0u8..6, proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(who, pick)| Action::DeleteMsgs { who, pick }),
        ]
    }

    /// Turns an action into an event against the current state (some events
    /// are deliberately invalid: the state must reject them the same way on
    /// every replay).
    fn event_for(state: &ChatState, index: u64, a: &Action) -> Event {
        let names = ["ann", "Bob", "cy", "dee", "ed", "ANN"];
        let ids: Vec<AccountId> = {
            let mut v: Vec<_> = state.accounts.keys().copied().collect();
            v.sort();
            v
        };
        let pick = |n: u8| {
            ids.get(n as usize % ids.len().max(1))
                .copied()
                .unwrap_or(AccountId(999))
        };
        let msgs: Vec<MessageId> = {
            let mut v: Vec<_> = state.messages.keys().copied().collect();
            v.sort();
            v
        };
        let at_ms = index * 10;
        match a {
            Action::Create(n) => Event::AccountCreated {
                username: names[*n as usize].into(),
                password_hash: hash(names[*n as usize]),
                at_ms,
            },
            Action::Delete(n) => Event::AccountDeleted {
                account: pick(*n),
                at_ms,
            },
            Action::Open(n) => Event::SessionOpened {
                account: pick(*n),
                token_hash: TokenHash([index as u8; 32]),
                at_ms,
            },
            Action::Close(n) => {
                let mut sessions: Vec<_> = state
                    .sessions
                    .iter()
                    .map(|(id, s)| (*id, s.account))
                    .collect();
                sessions.sort();
                let (session, account) = sessions
                    .get(*n as usize % sessions.len().max(1))
                    .copied()
                    .unwrap_or((SessionId(12345), AccountId(1)));
                Event::SessionClosed {
                    account,
                    session,
                    reason: CloseReason::Logout,
                    at_ms,
                }
            }
            Action::Send {
                from,
                to,
                key,
                body,
            } => Event::MessageSent {
                from: pick(*from),
                to: pick(*to),
                client_msg_id: format!("k{key}"),
                body: format!("body {body}"),
                at_ms,
            },
            Action::Ack { who, back } => Event::DeliveredUpTo {
                account: pick(*who),
                up_to: MessageId(index.saturating_sub(*back as u64 * 1500)),
                at_ms,
            },
            Action::Read { who, peer, back } => Event::ReadUpTo {
                account: pick(*who),
                peer: pick(*peer),
                up_to: MessageId(index.saturating_sub(*back as u64 * 1500)),
                at_ms,
            },
            Action::DeleteMsgs { who, pick: p } => Event::MessagesDeleted {
                account: pick(*who),
                ids: p
                    .iter()
                    .map(|n| {
                        msgs.get(*n as usize % msgs.len().max(1))
                            .copied()
                            .unwrap_or(MessageId(7))
                    })
                    .collect(),
                at_ms,
            },
        }
    }

    /// Checks invariants that must hold after any sequence of events.
    fn check_invariants(s: &ChatState) {
        for (id, a) in &s.accounts {
            let sum: u64 = a.conversations.values().map(|c| c.unread).sum();
            assert_eq!(a.unread, sum, "account {id}: total unread");
            assert_eq!(s.by_name.get(&a.username.to_lowercase()), Some(id));
            for (peer, c) in &a.conversations {
                assert!(c.ids.windows(2).all(|w| w[0] < w[1]), "sorted ids");
                let unread = c
                    .ids
                    .iter()
                    .filter(|m| {
                        *m > &c.read_up_to && s.messages.get(m).is_some_and(|m| m.from == *peer)
                    })
                    .count() as u64;
                assert_eq!(c.unread, unread, "account {id} with {peer}: unread");
                for m in &c.ids {
                    assert!(s.view(*id, *m).is_some(), "visible message {m} exists");
                }
            }
        }
        assert_eq!(s.by_name.len(), s.accounts.len());
        for (token, sid) in &s.by_token {
            assert_eq!(s.sessions[sid].token_hash, *token);
            assert!(s.accounts.contains_key(&s.sessions[sid].account));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random actions applied live, then replayed from the log they were
        /// written to (grouped into records of 1 to 4 events, as the server
        /// batches them), and restored from a snapshot, give identical state.
        #[test]
        fn replay_gives_the_same_state(
            actions in proptest::collection::vec(action(), 1..60),
            sizes in proptest::collection::vec(1usize..5, 60),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), LogConfig::default()).unwrap().0;
            let blank = events::encode(&LogEntry { leader_node: 1, body: EntryBody::Blank });
            log.append(&[Record { index: 0, term: 1, payload: blank }]).unwrap();
            let mut live = ChatState::default();
            let mut notices = Vec::new();
            let mut rest = &actions[..];
            for (index, size) in (1..).zip(&sizes) {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*size).min(rest.len()));
                rest = later;
                let mut batch = Vec::new();
                for (slot, a) in now.iter().enumerate() {
                    let id = events::position(index, slot);
                    let event = event_for(&live, id, a);
                    live.apply(id, &event, &mut notices);
                    check_invariants(&live);
                    batch.push(event);
                }
                let body = match batch.len() {
                    1 => EntryBody::Event(batch.remove(0)),
                    _ => EntryBody::Events(batch),
                };
                let payload = events::encode(&LogEntry { leader_node: 1, body });
                log.append(&[Record { index, term: 1, payload }]).unwrap();
            }
            drop(log);

            let log = Log::open(dir.path(), LogConfig::default()).unwrap().0;
            let mut replayed = ChatState::default();
            for record in log.iter_from(0) {
                let record = record.unwrap();
                let entry = events::decode(&record.payload).unwrap();
                for (slot, e) in entry.events().iter().enumerate() {
                    replayed.apply(events::position(record.index, slot), e, &mut notices);
                }
            }
            prop_assert_eq!(live.fingerprint(), replayed.fingerprint());

            let bytes = postcard::to_stdvec(&live).unwrap();
            let restored: ChatState = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(live.fingerprint(), restored.fingerprint());
        }
    }

    fn created(s: &mut ChatState, index: u64, name: &str) -> AccountId {
        match s.apply(
            index,
            &Event::AccountCreated {
                username: name.into(),
                password_hash: hash(name),
                at_ms: 0,
            },
            &mut Vec::new(),
        ) {
            Applied::AccountCreated(id) => id,
            other => panic!("{other:?}"),
        }
    }

    fn send(s: &mut ChatState, index: u64, from: AccountId, to: AccountId, key: &str) -> Applied {
        s.apply(
            index,
            &Event::MessageSent {
                from,
                to,
                client_msg_id: key.into(),
                body: format!("m{index}"),
                at_ms: index,
            },
            &mut Vec::new(),
        )
    }

    #[test]
    fn names_are_unique_ignoring_case_and_reusable_after_deletion() {
        let mut s = ChatState::default();
        let ann = created(&mut s, 2, "Ann");
        assert_eq!(
            s.apply(
                3,
                &Event::AccountCreated {
                    username: "ANN".into(),
                    password_hash: hash("x"),
                    at_ms: 0
                },
                &mut Vec::new()
            ),
            Applied::Rejected(Rejection::NameTaken)
        );
        let bob = created(&mut s, 4, "bob");
        send(&mut s, 5, bob, ann, "k");
        s.apply(
            6,
            &Event::AccountDeleted {
                account: ann,
                at_ms: 0,
            },
            &mut Vec::new(),
        );
        // Everything Ann had is gone from every answer, and the name is free.
        assert!(s.conversations(bob).is_empty());
        assert_eq!(s.messages_len(), 0);
        let ann2 = created(&mut s, 7, "ann");
        assert_ne!(ann, ann2);
        assert!(s.conversations(ann2).is_empty());
        assert_eq!(s.account(ann2).unwrap().unread, 0);
    }

    #[test]
    fn a_repeated_key_returns_the_first_message() {
        let mut s = ChatState::default();
        let a = created(&mut s, 2, "a");
        let b = created(&mut s, 3, "b");
        let first = send(&mut s, 4, a, b, "same");
        assert_eq!(
            first,
            Applied::Message {
                id: MessageId(4),
                at_ms: 4,
                duplicate: false
            }
        );
        assert_eq!(
            send(&mut s, 5, a, b, "same"),
            Applied::Message {
                id: MessageId(4),
                at_ms: 4,
                duplicate: true
            }
        );
        assert_eq!(s.messages_len(), 1);
        assert_eq!(s.account(b).unwrap().unread, 1);
        // Another sender may use the same key.
        assert!(matches!(
            send(&mut s, 6, b, a, "same"),
            Applied::Message {
                duplicate: false,
                ..
            }
        ));
    }

    #[test]
    fn receipts_reach_the_sender_and_unread_counts_follow() {
        let mut s = ChatState::default();
        let a = created(&mut s, 2, "a");
        let b = created(&mut s, 3, "b");
        for i in 4..8 {
            send(&mut s, i, a, b, &format!("k{i}"));
        }
        assert_eq!(s.unread_with(b, a), 4);
        let mut notices = Vec::new();
        s.apply(
            8,
            &Event::DeliveredUpTo {
                account: b,
                up_to: MessageId(5),
                at_ms: 0,
            },
            &mut notices,
        );
        assert!(
            matches!(&notices[..], [Fanout::Feed(to, FeedEntry { index: 8, kind: FeedKind::Delivered { up_to: MessageId(5), .. } })] if *to == a)
        );
        notices.clear();
        let applied = s.apply(
            9,
            &Event::ReadUpTo {
                account: b,
                peer: a,
                up_to: MessageId(6),
                at_ms: 0,
            },
            &mut notices,
        );
        assert_eq!(applied, Applied::Unread(1));
        assert!(
            matches!(&notices[..], [Fanout::Feed(to, FeedEntry { kind: FeedKind::Read { up_to: MessageId(6), .. }, .. })] if *to == a)
        );
        let (page, _) = s.history(a, b, None, 10);
        let flags: Vec<(u64, bool, bool)> =
            page.iter().map(|m| (m.id.0, m.delivered, m.read)).collect();
        assert_eq!(
            flags,
            vec![
                (7, false, false),
                (6, true, true),
                (5, true, true),
                (4, true, true)
            ]
        );
        // Deleting the unread message clears the count; the sender still sees it.
        s.apply(
            10,
            &Event::MessagesDeleted {
                account: b,
                ids: vec![MessageId(7)],
                at_ms: 0,
            },
            &mut Vec::new(),
        );
        assert_eq!(s.unread_with(b, a), 0);
        assert_eq!(s.history(a, b, None, 10).0.len(), 4);
        assert_eq!(s.history(b, a, None, 10).0.len(), 3);
        // Once both sides deleted it, its content is gone.
        s.apply(
            11,
            &Event::MessagesDeleted {
                account: a,
                ids: vec![MessageId(7)],
                at_ms: 0,
            },
            &mut Vec::new(),
        );
        assert_eq!(s.messages_len(), 3);
    }

    #[test]
    fn history_pages_newest_first() {
        let mut s = ChatState::default();
        let a = created(&mut s, 2, "a");
        let b = created(&mut s, 3, "b");
        for i in 4..14 {
            send(
                &mut s,
                i,
                if i % 2 == 0 { a } else { b },
                if i % 2 == 0 { b } else { a },
                &format!("k{i}"),
            );
        }
        let (p1, next) = s.history(a, b, None, 4);
        assert_eq!(
            p1.iter().map(|m| m.id.0).collect::<Vec<_>>(),
            vec![13, 12, 11, 10]
        );
        let (p2, next) = s.history(a, b, next, 4);
        assert_eq!(
            p2.iter().map(|m| m.id.0).collect::<Vec<_>>(),
            vec![9, 8, 7, 6]
        );
        let (p3, next) = s.history(a, b, next, 4);
        assert_eq!(p3.iter().map(|m| m.id.0).collect::<Vec<_>>(), vec![5, 4]);
        assert_eq!(next, None);
    }

    #[test]
    fn wildcards_and_listing() {
        for (p, n, ok) in [
            ("*", "anything", true),
            ("a*", "ann", true),
            ("a*", "bob", false),
            ("?ob", "bob", true),
            ("?ob", "bbob", false),
            ("*o*", "bob", true),
            ("a*n", "ann", true),
            ("a*n", "anna", false),
            ("", "", true),
            ("**", "x", true),
        ] {
            assert_eq!(wildcard_match(p, n), ok, "{p} ~ {n}");
        }
        let mut s = ChatState::default();
        for (i, n) in ["carl", "Alice", "alan", "bob", "al"].iter().enumerate() {
            created(&mut s, i as u64 + 2, n);
        }
        let names = |page: &AccountPage| {
            page.accounts
                .iter()
                .map(|a| a.1.clone())
                .collect::<Vec<_>>()
        };
        let page = s.list_accounts("al*", None, 2);
        assert_eq!(names(&page), vec!["al", "alan"]);
        let page = s.list_accounts("al*", page.next_after.as_deref(), 2);
        assert_eq!(names(&page), vec!["Alice"]);
        assert_eq!(page.next_after, None);
        assert_eq!(
            names(&s.list_accounts("*", None, 10)),
            vec!["al", "alan", "Alice", "bob", "carl"]
        );
    }
}
