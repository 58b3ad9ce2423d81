//! A conversation: its members, each with its cursors, and the ids of its
//! messages, each stored once however many members read it.

use std::collections::BTreeMap;

use log_format::events::{AccountId, GroupChange, MessageId};
use serde::{Deserialize, Serialize};

use super::messages::{Entry, Messages};

/// The most members a group can have.
pub const MAX_MEMBERS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    members: Vec<Member>,
    /// Every message some member can still see, ascending by id.
    messages: Messages,
    /// What makes it a group; `None` for a direct conversation.
    group: Option<Box<Group>>,
}

/// A group's title, its owner and admins, and the membership changes its
/// members see in their timelines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub title: String,
    pub owner: AccountId,
    /// Members the owner made admins (they add, remove and rename), ascending.
    pub admins: Vec<AccountId>,
    /// Every change since the group was made, in log order: few, next to
    /// its messages.
    pub notices: Vec<Notice>,
}

/// A change to a group, as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The log position of the event that made it.
    pub index: u64,
    pub by: AccountId,
    pub change: Change,
    /// Who owns the group after the change, when it passed ownership on
    /// (an owner who left).
    pub new_owner: Option<AccountId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `by` made the group with this title and these members.
    Created {
        title: String,
        members: Vec<AccountId>,
    },
    Changed(GroupChange),
    /// `by` left because its account was deleted.
    AccountDeleted,
}

/// What removing a member changed.
#[derive(Debug)]
pub struct Removed {
    /// Its unread count in the conversation, no longer counted.
    pub unread: u64,
    /// Messages no member can see any more, gone from the conversation.
    pub erased: Vec<MessageId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    account: AccountId,
    /// The member sees messages from here on.
    joined: MessageId,
    /// Messages from others up to here have been read.
    read_up_to: MessageId,
    /// Messages from others after `read_up_to` that it can still see.
    unread: u64,
    /// The newest message from others its latest receipts covered, with
    /// the log position of that receipt: what a backlog replays.
    delivered_receipt: Option<(MessageId, u64)>,
    read_receipt: Option<(MessageId, u64)>,
    /// Messages it deleted from its view, ascending (until every member
    /// has, and the message is erased).
    hidden: Vec<MessageId>,
}

/// What a read receipt changed.
#[derive(Debug)]
pub struct Read {
    /// How many messages stopped being unread.
    pub no_longer_unread: u64,
    /// The member's unread count now.
    pub unread: u64,
    /// For each sender of newly read messages, the newest of them.
    pub receipts: Vec<(AccountId, MessageId)>,
}

/// What deleting a message from one member's view changed.
#[derive(Debug)]
pub struct Hidden {
    /// It was unread for that member.
    pub was_unread: bool,
    /// No member can see it any more: it is gone from the conversation.
    pub erased: bool,
}

/// A receipt of another member, as a subscriber's backlog shows it.
#[derive(Debug)]
pub struct Receipt {
    pub peer: AccountId,
    pub up_to: MessageId,
    pub index: u64,
    pub read: bool,
}

impl Conversation {
    pub fn new(members: impl IntoIterator<Item = AccountId>) -> Self {
        Conversation {
            members: members
                .into_iter()
                .map(|account| Member {
                    account,
                    joined: MessageId(0),
                    read_up_to: MessageId(0),
                    unread: 0,
                    delivered_receipt: None,
                    read_receipt: None,
                    hidden: Vec::new(),
                })
                .collect(),
            messages: Messages::default(),
            group: None,
        }
    }

    /// A group made at log position `index` by `owner` with `members`
    /// (the owner among them, each once).
    pub fn group(index: u64, owner: AccountId, title: String, members: Vec<AccountId>) -> Self {
        let mut conv = Conversation::new(members.iter().copied());
        for m in &mut conv.members {
            m.joined = MessageId(index);
            m.read_up_to = MessageId(index);
        }
        conv.group = Some(Box::new(Group {
            title: title.clone(),
            owner,
            admins: Vec::new(),
            notices: vec![Notice {
                index,
                by: owner,
                change: Change::Created { title, members },
                new_owner: None,
            }],
        }));
        conv
    }

    pub fn group_info(&self) -> Option<&Group> {
        self.group.as_deref()
    }

    pub fn group_info_mut(&mut self) -> Option<&mut Group> {
        self.group.as_deref_mut()
    }

    pub fn is_member(&self, account: AccountId) -> bool {
        self.member(account).is_some()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Makes `account` a member that sees messages from `joined` on.
    pub fn add_member(&mut self, account: AccountId, joined: MessageId) {
        if self.is_member(account) {
            return;
        }
        self.members.push(Member {
            account,
            joined,
            read_up_to: joined,
            unread: 0,
            delivered_receipt: None,
            read_receipt: None,
            hidden: Vec::new(),
        });
    }

    /// Removes member `account`, and the messages no member left can see.
    pub fn remove_member(&mut self, account: AccountId) -> Option<Removed> {
        let at = self.members.iter().position(|m| m.account == account)?;
        let gone = self.members.remove(at);
        let members = &self.members;
        let mut erased = Vec::new();
        self.messages.retain(|e| {
            let seen = members.iter().any(|m| m.sees(e.id));
            if !seen {
                erased.push(e.id);
            }
            seen
        });
        if !erased.is_empty() {
            for m in &mut self.members {
                m.hidden.retain(|id| erased.binary_search(id).is_err());
            }
        }
        if let Some(g) = self.group.as_deref_mut() {
            g.admins.retain(|a| *a != account);
        }
        Some(Removed {
            unread: gone.unread,
            erased,
        })
    }

    /// The messages `account` sent, ascending.
    pub fn sent_by(&self, account: AccountId) -> Vec<MessageId> {
        (self.messages.iter())
            .filter(|e| e.sender == account)
            .map(|e| e.id)
            .collect()
    }

    /// Erases message `id` from every member's view; returns the members
    /// for whom it was unread.
    pub fn erase(&mut self, id: MessageId) -> Vec<AccountId> {
        let Some(pos) = self.position(id) else {
            return Vec::new();
        };
        let sender = self.messages.remove(pos).sender;
        let mut was_unread = Vec::new();
        for m in &mut self.members {
            if let Ok(at) = m.hidden.binary_search(&id) {
                m.hidden.remove(at);
            } else if m.account != sender && id > m.read_up_to && id >= m.joined {
                m.unread -= 1;
                was_unread.push(m.account);
            }
        }
        was_unread
    }

    /// How many of the other members who were there when `sender` sent
    /// `id` have read it, and how many there were: "read by N of M".
    pub fn read_by(&self, sender: AccountId, id: MessageId) -> (usize, usize) {
        let others = self.members.iter().filter(|m| m.account != sender);
        let (mut read, mut all) = (0, 0);
        for m in others {
            if m.joined <= id {
                all += 1;
                if m.read_up_to >= id {
                    read += 1;
                }
            }
        }
        (read, all)
    }

    /// Each member with its join point and read cursor.
    pub fn member_cursors(&self) -> impl Iterator<Item = (AccountId, MessageId, MessageId)> + '_ {
        (self.members.iter()).map(|m| (m.account, m.joined, m.read_up_to))
    }

    /// The changes `account` can see after position `after`, up to
    /// `up_to`: those since it joined.
    pub fn notices_for(
        &self,
        account: AccountId,
        after: u64,
        up_to: u64,
    ) -> impl Iterator<Item = &Notice> + '_ {
        let joined = self.member(account).map_or(u64::MAX, |m| m.joined.0);
        let notices = self.group.as_deref().map_or(&[][..], |g| &g.notices[..]);
        notices
            .iter()
            .filter(move |n| n.index >= joined && n.index > after && n.index <= up_to)
    }

    fn member(&self, account: AccountId) -> Option<&Member> {
        self.members.iter().find(|m| m.account == account)
    }

    fn member_mut(&mut self, account: AccountId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.account == account)
    }

    pub fn member_ids(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.members.iter().map(|m| m.account)
    }

    pub fn members(&self) -> Vec<AccountId> {
        self.members.iter().map(|m| m.account).collect()
    }

    /// The other member of a direct conversation (itself when it has one).
    pub fn peer_of(&self, account: AccountId) -> AccountId {
        (self.members.iter())
            .map(|m| m.account)
            .find(|a| *a != account)
            .unwrap_or(account)
    }

    pub fn message_ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.messages.iter().map(|e| e.id)
    }

    pub fn holds(&self, id: MessageId) -> bool {
        self.position(id).is_some()
    }

    fn position(&self, id: MessageId) -> Option<usize> {
        let at = self.messages.partition_point(|e| e.id < id);
        (at < self.messages.len() && self.messages.get(at).id == id).then_some(at)
    }

    pub fn unread_of(&self, account: AccountId) -> u64 {
        self.member(account).map_or(0, |m| m.unread)
    }

    pub fn read_up_to(&self, account: AccountId) -> MessageId {
        self.member(account).map_or(MessageId(0), |m| m.read_up_to)
    }

    /// Adds message `id` (ids grow with the log); returns the members for
    /// whom it is a new unread message.
    pub fn post(&mut self, id: MessageId, sender: AccountId) -> Vec<AccountId> {
        self.messages.push(Entry { id, sender });
        let mut unread_for = Vec::new();
        for m in &mut self.members {
            if m.account != sender {
                m.unread += 1;
                unread_for.push(m.account);
            }
        }
        unread_for
    }

    /// The sender of message `id` if `viewer` can see it.
    pub fn visible_sender(&self, viewer: AccountId, id: MessageId) -> Option<AccountId> {
        let m = self.member(viewer)?;
        let e = self.messages.get(self.position(id)?);
        m.sees(id).then_some(e.sender)
    }

    /// For each sender of messages to `account` in `old < id <= up_to`
    /// (those it can see since it joined), the newest of them: what
    /// acknowledging delivery up to `up_to` newly delivers. Empty when
    /// `account` is not a member.
    pub fn newly_delivered(
        &self,
        account: AccountId,
        old: MessageId,
        up_to: MessageId,
    ) -> Vec<(AccountId, MessageId)> {
        let Some(joined) = self.member(account).map(|m| m.joined) else {
            return Vec::new();
        };
        let start = (self.messages.partition_point(|e| e.id <= old))
            .max(self.messages.partition_point(|e| e.id < joined));
        let end = self.messages.partition_point(|e| e.id <= up_to);
        let mut newest: BTreeMap<AccountId, MessageId> = BTreeMap::new();
        for e in self.messages.range(start, end) {
            if e.sender != account {
                newest.insert(e.sender, e.id);
            }
        }
        newest.into_iter().collect()
    }

    /// Records that the receipt at log position `index` delivered to
    /// `account` up to `newest` (from [`Conversation::newly_delivered`]).
    pub fn set_delivered(&mut self, index: u64, account: AccountId, newest: MessageId) {
        if let Some(m) = self.member_mut(account) {
            m.delivered_receipt = Some((newest, index));
        }
    }

    /// `account` read up to `up_to`; `None` when it is not a member.
    pub fn read(&mut self, index: u64, account: AccountId, up_to: MessageId) -> Option<Read> {
        let (old, was_unread) = {
            let m = self.member(account)?;
            (m.read_up_to, m.unread)
        };
        if up_to <= old {
            return Some(Read {
                no_longer_unread: 0,
                unread: was_unread,
                receipts: Vec::new(),
            });
        }
        let m = self.member(account).expect("checked");
        let start = self.messages.partition_point(|e| e.id <= old);
        let mut newest: BTreeMap<AccountId, MessageId> = BTreeMap::new();
        let mut still_unread = 0;
        for e in self.messages.range(start, usize::MAX) {
            if e.sender == account || !m.sees(e.id) {
                continue;
            }
            if e.id <= up_to {
                newest.insert(e.sender, e.id);
            } else {
                still_unread += 1;
            }
        }
        let m = self.member_mut(account).expect("checked");
        m.read_up_to = up_to;
        m.unread = still_unread;
        if let Some(last) = newest.values().max().copied() {
            m.read_receipt = Some((last, index));
        }
        Some(Read {
            no_longer_unread: was_unread - still_unread,
            unread: still_unread,
            receipts: newest.into_iter().collect(),
        })
    }

    /// Deletes message `id` from `account`'s view; `None` when it was not
    /// in that view. A message no member can see is erased.
    pub fn hide(&mut self, account: AccountId, id: MessageId) -> Option<Hidden> {
        let pos = self.position(id)?;
        let sender = self.messages.get(pos).sender;
        let m = self.member_mut(account)?;
        if !m.sees(id) {
            return None;
        }
        let at = m.hidden.partition_point(|h| *h < id);
        m.hidden.insert(at, id);
        let was_unread = sender != account && id > m.read_up_to;
        if was_unread {
            m.unread -= 1;
        }
        let erased = self.members.iter().all(|m| !m.sees(id));
        if erased {
            // Nobody sees it: nobody counts it unread either.
            self.erase(id);
        }
        Some(Hidden { was_unread, erased })
    }

    /// `account`'s view, newest first: at most `limit` ids below `before`
    /// (all when `None`), and the id the next page starts below if older
    /// ones remain.
    pub fn page(
        &self,
        account: AccountId,
        before: Option<MessageId>,
        limit: usize,
    ) -> (Vec<MessageId>, Option<MessageId>) {
        let Some(m) = self.member(account) else {
            return (Vec::new(), None);
        };
        let end = before.map_or(self.messages.len(), |b| {
            self.messages.partition_point(|e| e.id < b)
        });
        let mut visible = (self.messages.range(0, end))
            .rev()
            .map(|e| e.id)
            .filter(|id| m.sees(*id));
        let page: Vec<MessageId> = visible.by_ref().take(limit).collect();
        let next = match (page.last(), visible.next()) {
            (Some(oldest), Some(_)) => Some(*oldest),
            _ => None,
        };
        (page, next)
    }

    /// The newest message `account` can see.
    pub fn last_visible(&self, account: AccountId) -> Option<MessageId> {
        let m = self.member(account)?;
        (self.messages.iter().rev())
            .map(|e| e.id)
            .find(|id| m.sees(*id))
    }

    /// Up to `limit` messages `account` can see with `after < id <= up_to`,
    /// ascending.
    pub fn visible_after(
        &self,
        account: AccountId,
        after: MessageId,
        up_to: MessageId,
        limit: usize,
    ) -> Vec<MessageId> {
        let Some(m) = self.member(account) else {
            return Vec::new();
        };
        let start = self.messages.partition_point(|e| e.id <= after);
        (self.messages.range(start, usize::MAX))
            .map(|e| e.id)
            .take_while(|id| *id <= up_to)
            .filter(|id| m.sees(*id))
            .take(limit)
            .collect()
    }

    /// The newest receipts of the other members, which tell `account` how
    /// far its messages got.
    pub fn receipts_for(&self, account: AccountId) -> impl Iterator<Item = Receipt> + '_ {
        (self.members.iter())
            .filter(move |m| m.account != account)
            .flat_map(|m| {
                let delivered = m.delivered_receipt.map(|(up_to, index)| Receipt {
                    peer: m.account,
                    up_to,
                    index,
                    read: false,
                });
                let read = m.read_receipt.map(|(up_to, index)| Receipt {
                    peer: m.account,
                    up_to,
                    index,
                    read: true,
                });
                delivered.into_iter().chain(read)
            })
    }
}

impl Member {
    /// Whether message `id` (of its conversation) is in this member's view.
    fn sees(&self, id: MessageId) -> bool {
        id >= self.joined && self.hidden.binary_search(&id).is_err()
    }
}

#[cfg(test)]
impl Conversation {
    /// Asserts what must hold after any sequence of events.
    pub fn check(&self) {
        self.messages.check();
        for m in &self.members {
            assert!(m.hidden.windows(2).all(|w| w[0] < w[1]), "hidden ascending");
            for h in &m.hidden {
                assert!(self.holds(*h), "hidden {h} is a message");
            }
            let unread = (self.messages.iter())
                .filter(|e| e.sender != m.account && e.id > m.read_up_to && m.sees(e.id))
                .count() as u64;
            assert_eq!(m.unread, unread, "unread of {}", m.account);
        }
        for e in self.messages.iter() {
            assert!(
                self.members.iter().any(|m| m.sees(e.id)),
                "message {} is seen by some member",
                e.id
            );
        }
    }
}
