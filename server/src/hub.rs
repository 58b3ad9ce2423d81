//! Live subscriptions: where applied events are pushed to the streams of
//! online users. It also notes what presence and the directory need (who
//! opened a first or closed a last stream here, whose contacts grew, which
//! accounts came and went) for the node's presence rounds to take.
//!
//! Each stream has a bounded buffer. Publishing never waits: a stream whose
//! buffer is full is dropped from the hub and marked as overflowed, and its
//! stream then ends with a status telling the client to resubscribe from its
//! cursor. So a slow subscriber never slows the server or anyone else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log_format::events::{AccountId, SessionId};
use tokio::sync::mpsc;

use crate::state::{Fanout, FeedEntry, FeedKind};

/// Why a live stream was ended by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The session ended (logout, idle timeout or account deletion).
    SessionClosed,
    /// The state was replaced by a snapshot from the leader: the stream
    /// must resume from its cursor against the new state.
    Resync,
}

/// What a stream receives.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// The next entry of the user's feed.
    Entry(FeedEntry),
    /// News that is not in the log (it has no cursor).
    News(News),
    /// The stream ends, for this reason.
    Ended(Ended),
}

/// What a stream is told outside the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// Accounts the subscriber shares a conversation with came online or
    /// went offline; `full`: `online` is all of them that are online.
    Presence {
        full: bool,
        online: Vec<AccountId>,
        offline: Vec<AccountId>,
    },
    /// Accounts created and deleted (shared by every stream).
    Directory(Arc<DirectoryNews>),
}

/// Accounts created and deleted since the last presence round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryNews {
    /// Id, username and creation time of each new account, oldest first.
    pub created: Vec<(AccountId, String, u64)>,
    pub deleted: Vec<AccountId>,
}

/// What happened since the last presence round.
#[derive(Debug, Default)]
pub struct Pending {
    /// Accounts whose first stream opened or last stream closed here.
    pub streams_changed: HashSet<AccountId>,
    /// Accounts that now share a conversation with someone new.
    pub new_contacts: HashSet<AccountId>,
    pub directory: DirectoryNews,
}

#[derive(Debug, Default)]
pub struct Hub {
    streams: Mutex<HashMap<AccountId, Vec<Stream>>>,
    next_id: AtomicU64,
    /// Locked after `streams` when both are.
    pending: Mutex<Pending>,
    /// Woken when something is pending.
    pub wake: tokio::sync::Notify,
}

#[derive(Debug)]
struct Stream {
    id: u64,
    session: SessionId,
    tx: mpsc::Sender<StreamItem>,
    overflowed: Arc<AtomicBool>,
}

/// The receiving end of a stream; leaves the hub when dropped.
#[derive(Debug)]
pub struct Subscription {
    pub rx: mpsc::Receiver<StreamItem>,
    overflowed: Arc<AtomicBool>,
    hub: Arc<Hub>,
    account: AccountId,
    id: u64,
}

impl Subscription {
    /// True once the hub dropped this stream because its buffer was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut streams = self.hub.streams.lock().expect("hub lock");
        if let Some(list) = streams.get_mut(&self.account) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                streams.remove(&self.account);
                self.hub.note(|p| {
                    p.streams_changed.insert(self.account);
                });
            }
        }
    }
}

impl Hub {
    /// Registers a stream for `account`'s session with a buffer of
    /// `capacity`, unless the session already has `max_per_session` open.
    pub fn subscribe(
        self: &Arc<Self>,
        account: AccountId,
        session: SessionId,
        capacity: usize,
        max_per_session: usize,
    ) -> Option<Subscription> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut streams = self.streams.lock().expect("hub lock");
        let list = streams.entry(account).or_default();
        if list.iter().filter(|s| s.session == session).count() >= max_per_session {
            return None;
        }
        if list.is_empty() {
            self.note(|p| {
                p.streams_changed.insert(account);
            });
        }
        list.push(Stream {
            id,
            session,
            tx,
            overflowed: Arc::clone(&overflowed),
        });
        Some(Subscription {
            rx,
            overflowed,
            hub: Arc::clone(self),
            account,
            id,
        })
    }

    /// Records something for the next presence round, and wakes it.
    fn note(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().expect("hub lock"));
        self.wake.notify_one();
    }

    /// What happened since the last call.
    pub fn take_pending(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().expect("hub lock"))
    }

    /// The accounts with a stream open here.
    pub fn accounts_streaming(&self) -> HashSet<AccountId> {
        self.streams
            .lock()
            .expect("hub lock")
            .keys()
            .copied()
            .collect()
    }

    /// The accounts of `among` with a stream open here.
    pub fn streaming_among(&self, among: &[AccountId]) -> HashSet<AccountId> {
        let streams = self.streams.lock().expect("hub lock");
        (among.iter().copied())
            .filter(|a| streams.contains_key(a))
            .collect()
    }

    /// Gives each account's streams its news; a stream whose buffer is
    /// full is dropped, as in [`Hub::publish`].
    pub fn tell(&self, news: impl IntoIterator<Item = (AccountId, News)>) {
        let mut streams = self.streams.lock().expect("hub lock");
        let mut emptied = Vec::new();
        for (account, news) in news {
            if let Some(list) = streams.get_mut(&account) {
                list.retain(|s| offer(s, StreamItem::News(news.clone())));
                if list.is_empty() {
                    emptied.push(account);
                }
            }
        }
        self.drop_emptied(&mut streams, emptied);
    }

    /// Gives every stream the same news.
    pub fn tell_everyone(&self, news: &News) {
        let mut streams = self.streams.lock().expect("hub lock");
        let mut emptied = Vec::new();
        for (account, list) in streams.iter_mut() {
            list.retain(|s| offer(s, StreamItem::News(news.clone())));
            if list.is_empty() {
                emptied.push(*account);
            }
        }
        self.drop_emptied(&mut streams, emptied);
    }

    /// Forgets the accounts whose last stream was dropped.
    fn drop_emptied(&self, streams: &mut HashMap<AccountId, Vec<Stream>>, emptied: Vec<AccountId>) {
        if emptied.is_empty() {
            return;
        }
        self.note(|p| {
            for account in emptied {
                streams.remove(&account);
                p.streams_changed.insert(account);
            }
        });
    }

    /// The sessions that have an open stream (they count as active).
    pub fn streaming_sessions(&self) -> Vec<SessionId> {
        self.streams
            .lock()
            .expect("hub lock")
            .values()
            .flatten()
            .map(|s| s.session)
            .collect()
    }

    /// Ends every stream (after the state was replaced wholesale).
    pub fn end_all(&self, why: Ended) {
        let mut streams = self.streams.lock().expect("hub lock");
        let accounts: Vec<AccountId> = streams.keys().copied().collect();
        for s in streams.drain().flat_map(|(_, list)| list) {
            let _ = s.tx.try_send(StreamItem::Ended(why));
        }
        self.note(|p| p.streams_changed.extend(accounts));
    }

    /// Delivers what applying a batch of events produced.
    pub fn publish(&self, notices: Vec<Fanout>) {
        if notices.is_empty() {
            return;
        }
        let mut streams = self.streams.lock().expect("hub lock");
        // Accounts whose last stream left here: removed once, at the end,
        // so a batch costs what it delivers, not the number of streams
        // times the number of notices.
        let mut emptied = Vec::new();
        for notice in notices {
            match notice {
                Fanout::Feed(account, event) => {
                    deliver(&mut streams, account, &event, &mut emptied);
                }
                Fanout::Posted { index, to, view } => {
                    let entry = FeedEntry {
                        index,
                        kind: FeedKind::Message(view),
                    };
                    for account in to {
                        deliver(&mut streams, account, &entry, &mut emptied);
                    }
                }
                Fanout::SessionEnded(session) => {
                    for (account, list) in streams.iter_mut() {
                        let before = list.len();
                        list.retain(|s| {
                            if s.session == session {
                                let _ = s.tx.try_send(StreamItem::Ended(Ended::SessionClosed));
                                false
                            } else {
                                true
                            }
                        });
                        if list.is_empty() && list.len() != before {
                            emptied.push(*account);
                        }
                    }
                }
                Fanout::AccountCreated(account, username, created_at_ms) => self.note(|p| {
                    (p.directory.created).push((account, username, created_at_ms));
                }),
                Fanout::NewContacts(accounts) => self.note(|p| {
                    p.new_contacts.extend(accounts);
                }),
                Fanout::AccountDeleted(account) => {
                    for s in streams.remove(&account).unwrap_or_default() {
                        let _ = s.tx.try_send(StreamItem::Ended(Ended::SessionClosed));
                    }
                    self.note(|p| {
                        p.streams_changed.insert(account);
                        p.directory.deleted.push(account);
                    });
                }
            }
        }
        self.drop_emptied(&mut streams, emptied);
    }
}

/// Offers `entry` to each of `account`'s streams, dropping those that
/// cannot take it; notes the account in `emptied` if none is left.
fn deliver(
    streams: &mut HashMap<AccountId, Vec<Stream>>,
    account: AccountId,
    entry: &FeedEntry,
    emptied: &mut Vec<AccountId>,
) {
    if let Some(list) = streams.get_mut(&account) {
        list.retain(|s| offer(s, StreamItem::Entry(entry.clone())));
        if list.is_empty() {
            emptied.push(account);
        }
    }
}

/// Offers `item` to stream `s` without waiting: false if the stream is to
/// be dropped (its buffer is full, so it is marked overflowed, or its
/// receiver is gone).
fn offer(s: &Stream, item: StreamItem) -> bool {
    match s.tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            s.overflowed.store(true, Ordering::Release);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
