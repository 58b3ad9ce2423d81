//! The chat event schema: what every record's payload means.
//!
//! A payload is one [`SCHEMA_VERSION`] byte followed by a postcard-encoded
//! [`LogEntry`]. The enums here only ever grow at the end: a variant is never
//! removed, reordered or given new fields (a changed event is a new variant),
//! so every log written since version 1 stays readable. A payload with an
//! unknown schema version is refused with an error that says so, never
//! misread.
//!
//! # Ids
//!
//! A record can hold several events (the server writes concurrent requests
//! as one record, so they share one fsync and one Raft round). Every id and
//! cursor is a *log position*: `record index * EVENTS_PER_RECORD + slot`,
//! where `slot` is the event's place in its record. Positions are unique,
//! increasing in log order and the same on every replica; the record of a
//! position is `position / EVENTS_PER_RECORD`, so `log-inspect` and people
//! can find an event from its id (message 4217003 is the fourth event of
//! record 4217).
//!
//! Secrets (password and token hashes) are stored but never shown: their
//! `Debug` and every human-readable serialization (JSON) print `<redacted>`.
//!
//! # Archive
//!
//! A record of the message archive (`crate::Archive`) is one
//! [`ARCHIVE_SCHEMA_VERSION`] byte followed by a postcard-encoded
//! [`ArchivedMessage`], under the same rule: it only grows by a new version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version byte that starts every payload written by this build.
pub const SCHEMA_VERSION: u8 = 2;

/// The schema version byte that starts every archive record this build
/// writes.
pub const ARCHIVE_SCHEMA_VERSION: u8 = 1;

/// Version 1 payloads (one event per record, ids were plain record indexes)
/// are still read: their ids are turned into positions as they are decoded.
pub const SCHEMA_VERSION_1: u8 = 1;

/// How many events one record can hold; see "Ids" above.
pub const EVENTS_PER_RECORD: u64 = 1000;

/// The position of the event at `slot` in the record at `index`.
pub const fn position(index: u64, slot: usize) -> u64 {
    index
        .saturating_mul(EVENTS_PER_RECORD)
        .saturating_add(slot as u64)
}

/// The record index a position points into.
pub const fn record_of(position: u64) -> u64 {
    position / EVENTS_PER_RECORD
}

/// The cursor that covers every event of every record up to `index`.
pub const fn cursor_through(index: u64) -> u64 {
    position(index, EVENTS_PER_RECORD as usize - 1)
}

/// What human-readable output shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An account: the log position of its `AccountCreated` event. A name used
    /// again later gets a new id, so it never inherits old messages.
    AccountId
);
id_type!(
    /// A message: the log position of its `MessageSent` event. Unique, increasing
    /// and the same on every replica, so it doubles as a delivery cursor.
    MessageId
);
id_type!(
    /// A session: the log position of its `SessionOpened` event.
    SessionId
);
id_type!(
    /// A conversation: the log position of the event that created it.
    ConversationId
);

/// A message as the archive keeps it, keyed by its [`MessageId`]: what a
/// reader needs to show it, stored once however many members read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedMessage {
    pub conversation: ConversationId,
    pub from: AccountId,
    /// When the sender's server took the message (ms since the Unix epoch).
    pub at_ms: u64,
    pub body: String,
}

/// An [`ArchivedMessage`] decoded in place, its body borrowed from the bytes
/// read: what a scan over many records looks at without an allocation per
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ArchivedMessageRef<'a> {
    pub conversation: ConversationId,
    pub from: AccountId,
    pub at_ms: u64,
    pub body: &'a str,
}

/// The payload of one log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The node that led the term in which this entry was written (Raft's log
    /// id is term + leader node + index; the term and index are in the frame).
    pub leader_node: u64,
    pub body: EntryBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryBody {
    /// Written by a new Raft leader to commit its term.
    Blank,
    /// A change of cluster membership.
    Membership(Membership),
    /// A chat action.
    Event(Event),
    /// Chat actions proposed together (at most [`EVENTS_PER_RECORD`]); the
    /// event in slot `i` has the position `position(index, i)`.
    Events(Vec<Event>),
}

/// The cluster members: the voter sets (two during a joint change) and the
/// address of every node, learners included.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    pub configs: Vec<BTreeSet<u64>>,
    pub nodes: BTreeMap<u64, String>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    Logout,
    Idle,
}

/// One chat action. Every timestamp (`at_ms`, milliseconds since the Unix
/// epoch) was taken before the event was proposed, so applying it is pure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    AccountCreated {
        username: String,
        password_hash: PasswordHash,
        at_ms: u64,
    },
    /// Also ends every session of the account.
    AccountDeleted { account: AccountId, at_ms: u64 },
    SessionOpened {
        account: AccountId,
        token_hash: TokenHash,
        at_ms: u64,
    },
    SessionClosed {
        account: AccountId,
        session: SessionId,
        reason: CloseReason,
        at_ms: u64,
    },
    MessageSent {
        from: AccountId,
        to: AccountId,
        /// The sender's idempotency key: a retried send with the same key
        /// returns this message instead of making a new one.
        client_msg_id: String,
        body: String,
        at_ms: u64,
    },
    /// Every message to `account` up to `up_to` has been delivered.
    DeliveredUpTo {
        account: AccountId,
        up_to: MessageId,
        at_ms: u64,
    },
    /// `account` has read its conversation with `peer` up to `up_to`.
    ReadUpTo {
        account: AccountId,
        peer: AccountId,
        up_to: MessageId,
        at_ms: u64,
    },
    /// `account` removed these messages from its view.
    MessagesDeleted {
        account: AccountId,
        ids: Vec<MessageId>,
        at_ms: u64,
    },
    /// `owner` made a group conversation (its id is this event's position)
    /// titled `title`, with `members` (the owner among them).
    GroupCreated {
        owner: AccountId,
        title: String,
        members: Vec<AccountId>,
        /// The owner's idempotency key: a retry with it makes no second
        /// group (keys of groups and of messages are kept apart).
        client_request_id: String,
        at_ms: u64,
    },
    /// `by`, a member, changed the group `group`.
    GroupChanged {
        by: AccountId,
        group: ConversationId,
        change: GroupChange,
        at_ms: u64,
    },
    /// `from` posted a message to the conversation it is a member of.
    Posted {
        from: AccountId,
        conversation: ConversationId,
        /// The sender's idempotency key, as in `MessageSent`.
        client_msg_id: String,
        body: String,
        at_ms: u64,
    },
    /// `account` has read `conversation` up to `up_to`.
    ConversationRead {
        account: AccountId,
        conversation: ConversationId,
        up_to: MessageId,
        at_ms: u64,
    },
}

/// What a `GroupChanged` event changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupChange {
    /// These accounts became members; they see messages from here on.
    Added(Vec<AccountId>),
    /// This member was removed.
    Removed(AccountId),
    /// `by` left.
    Left,
    /// The group's title is now this.
    Renamed(String),
    /// This member owns the group now; the owner before stays an admin.
    OwnerChanged(AccountId),
    /// This member is an admin (may add, remove and rename) or not.
    AdminSet { account: AccountId, admin: bool },
}

impl GroupChange {
    /// A short snake_case name of the change.
    pub fn kind(&self) -> &'static str {
        match self {
            GroupChange::Added(_) => "added",
            GroupChange::Removed(_) => "removed",
            GroupChange::Left => "left",
            GroupChange::Renamed(_) => "renamed",
            GroupChange::OwnerChanged(_) => "owner_changed",
            GroupChange::AdminSet { .. } => "admin_set",
        }
    }

    /// The accounts the change names.
    pub fn accounts(&self) -> Vec<AccountId> {
        match self {
            GroupChange::Added(accounts) => accounts.clone(),
            GroupChange::Removed(a)
            | GroupChange::OwnerChanged(a)
            | GroupChange::AdminSet { account: a, .. } => vec![*a],
            GroupChange::Left | GroupChange::Renamed(_) => vec![],
        }
    }
}

/// The kinds of entries and events `log-inspect dump` shows, as named by
/// [`LogEntry::kind`] and [`Event::kind`] (a batch record, kind `batch`, is
/// shown event by event).
pub const KINDS: &[&str] = &[
    "blank",
    "membership",
    "account_created",
    "account_deleted",
    "session_opened",
    "session_closed",
    "message_sent",
    "delivered_up_to",
    "read_up_to",
    "messages_deleted",
    "group_created",
    "group_changed",
    "posted",
    "conversation_read",
];

impl LogEntry {
    /// A short snake_case name of what the entry is.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EntryBody::Blank => "blank",
            EntryBody::Membership(_) => "membership",
            EntryBody::Event(e) => e.kind(),
            EntryBody::Events(_) => "batch",
        }
    }

    /// The chat events of the entry, each with its slot in the record.
    pub fn events(&self) -> &[Event] {
        match &self.body {
            EntryBody::Blank | EntryBody::Membership(_) => &[],
            EntryBody::Event(e) => std::slice::from_ref(e),
            EntryBody::Events(events) => events,
        }
    }
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AccountCreated { .. } => "account_created",
            Event::AccountDeleted { .. } => "account_deleted",
            Event::SessionOpened { .. } => "session_opened",
            Event::SessionClosed { .. } => "session_closed",
            Event::MessageSent { .. } => "message_sent",
            Event::DeliveredUpTo { .. } => "delivered_up_to",
            Event::ReadUpTo { .. } => "read_up_to",
            Event::MessagesDeleted { .. } => "messages_deleted",
            Event::GroupCreated { .. } => "group_created",
            Event::GroupChanged { .. } => "group_changed",
            Event::Posted { .. } => "posted",
            Event::ConversationRead { .. } => "conversation_read",
        }
    }

    /// For an event that stores a message: its sender, body and time.
    pub fn message(&self) -> Option<(AccountId, &str, u64)> {
        match self {
            Event::MessageSent {
                from, body, at_ms, ..
            }
            | Event::Posted {
                from, body, at_ms, ..
            } => Some((*from, body, *at_ms)),
            _ => None,
        }
    }

    /// The accounts this event concerns.
    pub fn accounts(&self) -> Vec<AccountId> {
        match self {
            Event::AccountCreated { .. } => vec![],
            Event::AccountDeleted { account, .. }
            | Event::SessionOpened { account, .. }
            | Event::SessionClosed { account, .. }
            | Event::DeliveredUpTo { account, .. }
            | Event::MessagesDeleted { account, .. } => vec![*account],
            Event::MessageSent { from, to, .. } => vec![*from, *to],
            Event::ReadUpTo { account, peer, .. } => vec![*account, *peer],
            Event::GroupCreated { members, .. } => members.clone(),
            Event::GroupChanged { by, change, .. } => {
                let mut accounts = vec![*by];
                accounts.extend(change.accounts());
                accounts
            }
            Event::Posted { from, .. } => vec![*from],
            Event::ConversationRead { account, .. } => vec![*account],
        }
    }

    /// Rewrites every id and cursor the event holds with `f`.
    fn map_ids(&mut self, f: impl Fn(u64) -> u64) {
        match self {
            Event::AccountCreated { .. } => {}
            Event::AccountDeleted { account, .. } | Event::SessionOpened { account, .. } => {
                account.0 = f(account.0);
            }
            Event::SessionClosed {
                account, session, ..
            } => {
                account.0 = f(account.0);
                session.0 = f(session.0);
            }
            Event::MessageSent { from, to, .. } => {
                from.0 = f(from.0);
                to.0 = f(to.0);
            }
            Event::DeliveredUpTo { account, up_to, .. } => {
                account.0 = f(account.0);
                up_to.0 = f(up_to.0);
            }
            Event::ReadUpTo {
                account,
                peer,
                up_to,
                ..
            } => {
                account.0 = f(account.0);
                peer.0 = f(peer.0);
                up_to.0 = f(up_to.0);
            }
            Event::MessagesDeleted { account, ids, .. } => {
                account.0 = f(account.0);
                for id in ids {
                    id.0 = f(id.0);
                }
            }
            // Version 1 had no groups: these never need rewriting.
            Event::GroupCreated { .. }
            | Event::GroupChanged { .. }
            | Event::Posted { .. }
            | Event::ConversationRead { .. } => {}
        }
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error(
        "payload schema version {0} is unknown to this build (it reads versions {SCHEMA_VERSION_1} to {SCHEMA_VERSION}); if a newer build wrote it, use that build"
    )]
    UnknownSchema(u8),
    #[error("a version 1 payload holds a batch of events, which version 1 did not have")]
    BatchInVersion1,
    #[error("a record holds {0} events, more than the {EVENTS_PER_RECORD} a record can hold")]
    TooManyEvents(usize),
    #[error(
        "archive record schema version {0} is unknown to this build (it reads version {ARCHIVE_SCHEMA_VERSION}); if a newer build wrote it, use that build"
    )]
    UnknownArchiveSchema(u8),
    #[error("payload does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Encodes an entry as a record payload.
pub fn encode(entry: &LogEntry) -> Vec<u8> {
    let mut out = vec![SCHEMA_VERSION];
    postcard::to_io(entry, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Decodes a record payload.
pub fn decode(payload: &[u8]) -> Result<LogEntry, DecodeError> {
    match payload.split_first() {
        None => Err(DecodeError::Empty),
        Some((&SCHEMA_VERSION, rest)) => {
            let entry: LogEntry = postcard::from_bytes(rest)?;
            match &entry.body {
                EntryBody::Events(events) if events.len() as u64 > EVENTS_PER_RECORD => {
                    Err(DecodeError::TooManyEvents(events.len()))
                }
                _ => Ok(entry),
            }
        }
        Some((&SCHEMA_VERSION_1, rest)) => {
            let mut entry: LogEntry = postcard::from_bytes(rest)?;
            match &mut entry.body {
                // Version 1 had no batches; its ids were record indexes,
                // which are the positions of slot 0.
                EntryBody::Event(e) => e.map_ids(|index| position(index, 0)),
                EntryBody::Blank | EntryBody::Membership(_) => {}
                EntryBody::Events(_) => return Err(DecodeError::BatchInVersion1),
            }
            Ok(entry)
        }
        Some((&v, _)) => Err(DecodeError::UnknownSchema(v)),
    }
}

/// Encodes a message as an archive record payload.
pub fn encode_archived(message: &ArchivedMessage) -> Vec<u8> {
    let mut out = vec![ARCHIVE_SCHEMA_VERSION];
    postcard::to_io(message, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Decodes an archive record payload.
pub fn decode_archived(payload: &[u8]) -> Result<ArchivedMessage, DecodeError> {
    match payload.split_first() {
        None => Err(DecodeError::Empty),
        Some((&ARCHIVE_SCHEMA_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(DecodeError::UnknownArchiveSchema(v)),
    }
}

/// Decodes an archive record payload in place (see [`ArchivedMessageRef`]).
pub fn decode_archived_ref(payload: &[u8]) -> Result<ArchivedMessageRef<'_>, DecodeError> {
    match payload.split_first() {
        None => Err(DecodeError::Empty),
        Some((&ARCHIVE_SCHEMA_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(DecodeError::UnknownArchiveSchema(v)),
    }
}

/// An argon2id hash in PHC string form.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

/// The SHA-256 of a session token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for PasswordHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(REDACTED)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(PasswordHash)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(REDACTED)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 32]>::deserialize(d).map(TokenHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<LogEntry> {
        let e = |body| LogEntry {
            leader_node: 1,
            body,
        };
        vec![
            e(EntryBody::Blank),
            e(EntryBody::Membership(Membership {
                configs: vec![BTreeSet::from([1, 2, 3])],
                nodes: BTreeMap::from([(1, "127.0.0.1:1".into())]),
            })),
            e(EntryBody::Event(Event::AccountCreated {
                username: "alice".into(),
                password_hash: PasswordHash("$argon2id$secret".into()),
                at_ms: 5,
            })),
            e(EntryBody::Event(Event::SessionOpened {
                account: AccountId(2),
                token_hash: TokenHash([7; 32]),
                at_ms: 6,
            })),
            e(EntryBody::Event(Event::MessageSent {
                from: AccountId(2),
                to: AccountId(9),
                client_msg_id: "k1".into(),
                body: "héllo 👋".into(),
                at_ms: 7,
            })),
        ]
    }

    #[test]
    fn entries_round_trip_with_version_byte() {
        for entry in sample() {
            let bytes = encode(&entry);
            assert_eq!(bytes[0], SCHEMA_VERSION);
            assert_eq!(decode(&bytes).unwrap(), entry);
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut bytes = encode(&sample()[2]);
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(DecodeError::UnknownSchema(9))));
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode(&[SCHEMA_VERSION, 0xff, 0xff]),
            Err(DecodeError::Postcard(_))
        ));
    }

    #[test]
    fn secrets_never_reach_human_readable_output() {
        let all = sample();
        let json = serde_json::to_string(&all).unwrap();
        assert!(!json.contains("secret"), "{json}");
        assert!(!json.contains("[7,7"), "{json}");
        assert!(json.contains(REDACTED));
        let debug = format!("{all:?}");
        assert!(!debug.contains("secret"));
        assert!(!debug.contains("7, 7, 7"));
    }

    #[test]
    fn positions_name_the_record_and_the_slot() {
        assert_eq!(position(4217, 3), 4_217_003);
        assert_eq!(record_of(4_217_003), 4217);
        assert_eq!(cursor_through(4217), 4_217_999);
        assert!(cursor_through(4217) < position(4218, 0));
        assert_eq!(record_of(cursor_through(4217)), 4217);
        // Never wraps, even at absurd indexes.
        assert_eq!(position(u64::MAX, 5), u64::MAX);
    }

    #[test]
    fn batches_round_trip_and_are_bounded() {
        let events: Vec<Event> = sample()
            .into_iter()
            .flat_map(|e| e.events().to_vec())
            .collect();
        assert_eq!(events.len(), 3);
        let batch = LogEntry {
            leader_node: 2,
            body: EntryBody::Events(events.clone()),
        };
        let decoded = decode(&encode(&batch)).unwrap();
        assert_eq!(decoded.events(), &events[..]);
        assert_eq!(decoded.kind(), "batch");

        let too_many = LogEntry {
            leader_node: 2,
            body: EntryBody::Events(vec![events[0].clone(); EVENTS_PER_RECORD as usize + 1]),
        };
        assert!(matches!(
            decode(&encode(&too_many)),
            Err(DecodeError::TooManyEvents(1001))
        ));
    }

    #[test]
    fn version_1_ids_become_positions() {
        let v1 = |event: Event| {
            let mut bytes = vec![SCHEMA_VERSION_1];
            postcard::to_io(
                &LogEntry {
                    leader_node: 1,
                    body: EntryBody::Event(event),
                },
                &mut bytes,
            )
            .unwrap();
            decode(&bytes).unwrap().events()[0].clone()
        };
        assert_eq!(
            v1(Event::ReadUpTo {
                account: AccountId(3),
                peer: AccountId(4),
                up_to: MessageId(9),
                at_ms: 1
            }),
            Event::ReadUpTo {
                account: AccountId(3000),
                peer: AccountId(4000),
                up_to: MessageId(9000),
                at_ms: 1
            }
        );
        assert_eq!(
            v1(Event::MessagesDeleted {
                account: AccountId(3),
                ids: vec![MessageId(7), MessageId(8)],
                at_ms: 1
            }),
            Event::MessagesDeleted {
                account: AccountId(3000),
                ids: vec![MessageId(7000), MessageId(8000)],
                at_ms: 1
            }
        );
        let mut batch_in_v1 = vec![SCHEMA_VERSION_1];
        postcard::to_io(
            &LogEntry {
                leader_node: 1,
                body: EntryBody::Events(vec![]),
            },
            &mut batch_in_v1,
        )
        .unwrap();
        assert!(matches!(
            decode(&batch_in_v1),
            Err(DecodeError::BatchInVersion1)
        ));
    }

    #[test]
    fn archived_messages_round_trip_with_their_own_version_byte() {
        let m = ArchivedMessage {
            conversation: ConversationId(7000),
            from: AccountId(1000),
            at_ms: 1_700_000_000_003,
            body: "héllo\n👋".into(),
        };
        let bytes = encode_archived(&m);
        assert_eq!(bytes[0], ARCHIVE_SCHEMA_VERSION);
        assert_eq!(decode_archived(&bytes).unwrap(), m);
        let borrowed = decode_archived_ref(&bytes).unwrap();
        assert_eq!(
            (borrowed.conversation, borrowed.from, borrowed.at_ms),
            (m.conversation, m.from, m.at_ms)
        );
        assert_eq!(borrowed.body, m.body);
        assert!(matches!(decode_archived_ref(&[]), Err(DecodeError::Empty)));
        assert!(matches!(decode_archived(&[]), Err(DecodeError::Empty)));
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert!(matches!(
            decode_archived(&newer),
            Err(DecodeError::UnknownArchiveSchema(9))
        ));
        assert!(matches!(
            decode_archived(&bytes[..bytes.len() - 2]),
            Err(DecodeError::Postcard(_))
        ));
        // The fields show as plain numbers and text, for log-inspect.
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["conversation"], 7000);
        assert_eq!(json["from"], 1000);
    }

    #[test]
    fn kinds_are_listed() {
        for entry in sample() {
            assert!(KINDS.contains(&entry.kind()));
        }
    }
}
