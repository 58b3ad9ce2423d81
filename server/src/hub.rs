//! Live subscriptions: where applied events are pushed to the streams of
//! online users.
//!
//! Each stream has a bounded buffer. Publishing never waits: a stream whose
//! buffer is full is dropped from the hub and marked as overflowed, and its
//! stream then ends with a status telling the client to resubscribe from its
//! cursor. So a slow subscriber never slows the server or anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log_format::events::{AccountId, SessionId};
use tokio::sync::mpsc;

use crate::state::{Fanout, FeedEntry};

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
    /// The stream ends, for this reason.
    Ended(Ended),
}

#[derive(Debug, Default)]
pub struct Hub {
    streams: Mutex<HashMap<AccountId, Vec<Stream>>>,
    next_id: AtomicU64,
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
        for s in streams.drain().flat_map(|(_, list)| list) {
            let _ = s.tx.try_send(StreamItem::Ended(why));
        }
    }

    /// Delivers what applying a batch of events produced.
    pub fn publish(&self, notices: Vec<Fanout>) {
        if notices.is_empty() {
            return;
        }
        let mut streams = self.streams.lock().expect("hub lock");
        if streams.is_empty() {
            return;
        }
        // Accounts whose last stream left here: removed once, at the end,
        // so a batch costs what it delivers, not the number of streams
        // times the number of notices.
        let mut emptied = false;
        for notice in notices {
            match notice {
                Fanout::Feed(account, event) => {
                    if let Some(list) = streams.get_mut(&account) {
                        list.retain(|s| match s.tx.try_send(StreamItem::Entry(event.clone())) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                s.overflowed.store(true, Ordering::Release);
                                false
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        });
                        emptied |= list.is_empty();
                    }
                }
                Fanout::SessionEnded(session) => {
                    for list in streams.values_mut() {
                        list.retain(|s| {
                            if s.session == session {
                                let _ = s.tx.try_send(StreamItem::Ended(Ended::SessionClosed));
                                false
                            } else {
                                true
                            }
                        });
                        emptied |= list.is_empty();
                    }
                }
                Fanout::AccountDeleted(account) => {
                    for s in streams.remove(&account).unwrap_or_default() {
                        let _ = s.tx.try_send(StreamItem::Ended(Ended::SessionClosed));
                    }
                }
            }
        }
        if emptied {
            streams.retain(|_, list| !list.is_empty());
        }
    }
}
