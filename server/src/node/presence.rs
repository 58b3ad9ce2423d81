//! Who is online anywhere in the cluster, and telling those who should know.
//!
//! Online means a Subscribe stream open on some server. Each server knows
//! its own streams (the hub) and sends the other members the whole set of
//! accounts streaming there when it changes and at least every
//! [`HEARTBEAT`]; a server whose reports stop for [`FORGET_AFTER`] is taken
//! to have none. Nothing of this is in the log: it is not state that a
//! replay could rebuild, and it must not outlive a crashed server.
//!
//! A presence round (at most every [`ROUND_GAP`]) takes what changed since
//! the last one: accounts whose first stream opened or last closed here,
//! reports from other servers that changed, servers forgotten, accounts
//! with new contacts, and accounts created or deleted. It tells each
//! account whose online state flipped to the streams here of those who
//! share a conversation with it (and nobody else), gives an account that
//! has new contacts the full list of its online ones, and gives every
//! stream the directory's news. Each server tells its own streams, so the
//! work is spread like the streams.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log_format::events::AccountId;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::hub::{DirectoryNews, News};

/// The least time between two presence rounds: changes within it are told
/// together (an account that flaps is told its latest state).
pub const ROUND_GAP: Duration = Duration::from_millis(200);

/// Each server reports its streams at least this often.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A server not heard from for this long is taken to have no streams.
pub const FORGET_AFTER: Duration = Duration::from_secs(4);

/// The most accounts in one directory event.
const DIRECTORY_CHUNK: usize = 500;

/// What one server tells the others: the accounts with a stream open there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node_id: u64,
    pub accounts: Vec<AccountId>,
}

#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
    /// Woken when another server's report changed something.
    pub wake: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// The other servers' last reports, and when each came.
    remote: HashMap<u64, (HashSet<AccountId>, Instant)>,
    /// Accounts whose state in a report changed since the last round.
    changed: HashSet<AccountId>,
    /// The accounts online, as last told.
    told_online: HashSet<AccountId>,
    /// Where this server's reports go, one sender task per address.
    outbox: HashMap<String, watch::Sender<Arc<Report>>>,
    /// What this server last reported, and when.
    last_report: Option<(HashSet<AccountId>, Instant)>,
}

impl Inner {
    fn streaming_elsewhere(&self, account: AccountId) -> bool {
        self.remote.values().any(|(set, _)| set.contains(&account))
    }
}

/// A member's address and the receiving end its sender task is to read
/// reports from.
pub type NewSender = (String, watch::Receiver<Arc<Report>>);

/// What a round decided to tell.
#[derive(Debug, Default)]
pub struct Round {
    /// Accounts whose state is to be told to their contacts: flipped, or
    /// with new contacts.
    pub flipped: Vec<(AccountId, bool)>,
    /// Accounts with new contacts (they get the full list).
    pub new_contacts: Vec<AccountId>,
    pub directory: DirectoryNews,
}

impl Presence {
    /// Takes another server's report.
    pub fn received(&self, report: Report, me: u64) {
        if report.node_id == me {
            return;
        }
        let now: HashSet<AccountId> = report.accounts.into_iter().collect();
        let mut inner = self.inner.lock().expect("presence lock");
        let before = inner
            .remote
            .insert(report.node_id, (now.clone(), Instant::now()));
        let before = before.map(|(set, _)| set).unwrap_or_default();
        let changed: Vec<AccountId> = now.symmetric_difference(&before).copied().collect();
        if !changed.is_empty() {
            inner.changed.extend(changed);
            self.wake.notify_one();
        }
    }

    /// Whether `account` streams here (`here`) or on a server that
    /// reported it lately.
    #[cfg(test)]
    fn online(&self, account: AccountId, here: &HashSet<AccountId>) -> bool {
        here.contains(&account)
            || (self.inner.lock().expect("presence lock")).streaming_elsewhere(account)
    }

    /// The accounts of `among` that are online.
    pub fn online_among(&self, among: &[AccountId], here: &HashSet<AccountId>) -> Vec<AccountId> {
        let inner = self.inner.lock().expect("presence lock");
        (among.iter().copied())
            .filter(|a| here.contains(a) || inner.streaming_elsewhere(*a))
            .collect()
    }

    /// The report this server is to send now, if its streams changed or
    /// the heartbeat is due, addressed to `members`; senders to servers no
    /// longer members are dropped (their tasks end).
    pub fn report_due(
        &self,
        me: u64,
        here: &HashSet<AccountId>,
        members: &[String],
    ) -> (Option<Arc<Report>>, Vec<NewSender>) {
        let mut inner = self.inner.lock().expect("presence lock");
        inner.outbox.retain(|addr, _| members.contains(addr));
        let mut new_senders = Vec::new();
        for addr in members {
            if !inner.outbox.contains_key(addr) {
                let (tx, rx) = watch::channel(Arc::new(Report::default()));
                inner.outbox.insert(addr.clone(), tx);
                new_senders.push((addr.clone(), rx));
            }
        }
        let due = match &inner.last_report {
            Some((sent, at)) => {
                sent != here || at.elapsed() >= HEARTBEAT || !new_senders.is_empty()
            }
            None => true,
        };
        if !due || members.is_empty() {
            return (None, new_senders);
        }
        inner.last_report = Some((here.clone(), Instant::now()));
        (
            Some(Arc::new(Report {
                node_id: me,
                accounts: here.iter().copied().collect(),
            })),
            new_senders,
        )
    }

    /// Hands `report` to every member's sender task.
    pub fn send(&self, report: Arc<Report>) {
        let inner = self.inner.lock().expect("presence lock");
        for tx in inner.outbox.values() {
            tx.send_replace(Arc::clone(&report));
        }
    }

    /// Decides what to tell, given what the hub noted (`streams_changed`,
    /// `new_contacts`) and the streams here now.
    pub fn round(
        &self,
        streams_changed: HashSet<AccountId>,
        new_contacts: HashSet<AccountId>,
        directory: DirectoryNews,
        here: &HashSet<AccountId>,
    ) -> Round {
        let mut inner = self.inner.lock().expect("presence lock");
        let mut dirty = std::mem::take(&mut inner.changed);
        dirty.extend(streams_changed);
        dirty.extend(new_contacts.iter().copied());
        let forgotten: Vec<u64> = (inner.remote.iter())
            .filter(|(_, (_, at))| at.elapsed() >= FORGET_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in forgotten {
            if let Some((set, _)) = inner.remote.remove(&id) {
                tracing::debug!(
                    node = id,
                    accounts = set.len(),
                    "no presence report lately: forgotten"
                );
                dirty.extend(set);
            }
        }
        let mut flipped = Vec::new();
        for account in dirty {
            let online = here.contains(&account) || inner.streaming_elsewhere(account);
            let flip = if online {
                inner.told_online.insert(account)
            } else {
                inner.told_online.remove(&account)
            };
            if flip || new_contacts.contains(&account) {
                flipped.push((account, online));
            }
        }
        if inner.told_online.capacity() > 4 * inner.told_online.len().max(1024) {
            inner.told_online.shrink_to_fit();
        }
        Round {
            flipped,
            new_contacts: new_contacts.into_iter().collect(),
            directory,
        }
    }
}

/// What each stream here is to be told of `round`: `contacts` gives whom
/// an account shares a conversation with, `online` whether an account is
/// online.
pub fn news_of(
    round: &Round,
    here: &HashSet<AccountId>,
    contacts: impl Fn(AccountId) -> Vec<AccountId>,
    online_among: impl Fn(&[AccountId]) -> Vec<AccountId>,
) -> Vec<(AccountId, News)> {
    let mut changes: HashMap<AccountId, (Vec<AccountId>, Vec<AccountId>)> = HashMap::new();
    for (account, online) in &round.flipped {
        for contact in contacts(*account) {
            if here.contains(&contact) {
                let entry = changes.entry(contact).or_default();
                if *online {
                    entry.0.push(*account);
                } else {
                    entry.1.push(*account);
                }
            }
        }
    }
    let mut news = Vec::new();
    for account in &round.new_contacts {
        if here.contains(account) {
            // The full list says all the rest: it replaces the changes.
            changes.remove(account);
            news.push((
                *account,
                News::Presence {
                    full: true,
                    online: online_among(&contacts(*account)),
                    offline: Vec::new(),
                },
            ));
        }
    }
    news.extend(changes.into_iter().map(|(account, (online, offline))| {
        (
            account,
            News::Presence {
                full: false,
                online,
                offline,
            },
        )
    }));
    news
}

/// The directory's news in events of at most [`DIRECTORY_CHUNK`] accounts.
pub fn directory_chunks(news: DirectoryNews) -> Vec<News> {
    let mut out = Vec::new();
    let DirectoryNews {
        mut created,
        mut deleted,
    } = news;
    while !created.is_empty() || !deleted.is_empty() {
        let c = created.len().min(DIRECTORY_CHUNK);
        let d = deleted.len().min(DIRECTORY_CHUNK - c);
        out.push(News::Directory(Arc::new(DirectoryNews {
            created: created.drain(..c).collect(),
            deleted: deleted.drain(..d).collect(),
        })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> HashSet<AccountId> {
        v.iter().map(|i| AccountId(*i)).collect()
    }

    #[test]
    fn a_flip_is_told_once_and_a_second_stream_elsewhere_is_no_flip() {
        let p = Presence::default();
        let here = ids(&[1]);
        let r = p.round(ids(&[1]), HashSet::new(), DirectoryNews::default(), &here);
        assert_eq!(r.flipped, vec![(AccountId(1), true)]);
        // Account 1 opens a stream on server 2 too: no change to tell.
        p.received(
            Report {
                node_id: 2,
                accounts: vec![AccountId(1)],
            },
            1,
        );
        let r = p.round(
            HashSet::new(),
            HashSet::new(),
            DirectoryNews::default(),
            &here,
        );
        assert!(r.flipped.is_empty());
        // Its stream here closes: still online there.
        let r = p.round(
            ids(&[1]),
            HashSet::new(),
            DirectoryNews::default(),
            &ids(&[]),
        );
        assert!(r.flipped.is_empty());
        // And there: offline.
        p.received(
            Report {
                node_id: 2,
                accounts: vec![],
            },
            1,
        );
        let r = p.round(
            HashSet::new(),
            HashSet::new(),
            DirectoryNews::default(),
            &ids(&[]),
        );
        assert_eq!(r.flipped, vec![(AccountId(1), false)]);
    }

    #[test]
    fn a_report_from_this_server_is_ignored() {
        let p = Presence::default();
        p.received(
            Report {
                node_id: 1,
                accounts: vec![AccountId(5)],
            },
            1,
        );
        assert!(!p.online(AccountId(5), &ids(&[])));
    }

    #[test]
    fn only_contacts_with_a_stream_here_are_told_and_new_contacts_get_the_full_list() {
        let p = Presence::default();
        // 1, 2 and 4 stream here, 3 elsewhere, 5 nowhere. 1 opened its
        // stream; 4 just got contacts (1 and 3).
        let here = ids(&[1, 2, 4]);
        p.received(
            Report {
                node_id: 9,
                accounts: vec![AccountId(3)],
            },
            1,
        );
        let round = p.round(ids(&[1, 4]), ids(&[4]), DirectoryNews::default(), &here);
        let contacts = |a: AccountId| match a.0 {
            1 => vec![AccountId(2), AccountId(3), AccountId(4), AccountId(5)],
            4 => vec![AccountId(1), AccountId(3)],
            _ => vec![AccountId(1)],
        };
        let online = |among: &[AccountId]| {
            (among.iter().copied())
                .filter(|a| p.online(*a, &here))
                .collect()
        };
        let mut news = news_of(&round, &here, contacts, online);
        news.sort_by_key(|(a, _)| *a);
        for (_, n) in &mut news {
            if let News::Presence { online, .. } = n {
                online.sort();
            }
        }
        let told = |online: &[u64]| News::Presence {
            full: false,
            online: online.iter().map(|i| AccountId(*i)).collect(),
            offline: vec![],
        };
        // 1 hears of 4 and of 3 (whose report came), 2 of 1; 3 streams
        // elsewhere (its server tells it), 5 has no stream; 4 gets the
        // full list instead of the changes.
        assert_eq!(
            news,
            vec![
                (AccountId(1), told(&[3, 4])),
                (AccountId(2), told(&[1])),
                (
                    AccountId(4),
                    News::Presence {
                        full: true,
                        online: vec![AccountId(1), AccountId(3)],
                        offline: vec![],
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_silent_server_is_forgotten() {
        let p = Presence::default();
        p.received(
            Report {
                node_id: 2,
                accounts: vec![AccountId(7)],
            },
            1,
        );
        let r = p.round(
            HashSet::new(),
            HashSet::new(),
            DirectoryNews::default(),
            &ids(&[]),
        );
        assert_eq!(r.flipped, vec![(AccountId(7), true)]);
        p.inner.lock().unwrap().remote.get_mut(&2).unwrap().1 -= FORGET_AFTER;
        let r = p.round(
            HashSet::new(),
            HashSet::new(),
            DirectoryNews::default(),
            &ids(&[]),
        );
        assert_eq!(r.flipped, vec![(AccountId(7), false)]);
        assert!(!p.online(AccountId(7), &ids(&[])));
    }

    #[test]
    fn directory_news_comes_in_bounded_chunks() {
        let news = DirectoryNews {
            created: (0..700)
                .map(|i| (AccountId(i), format!("u{i}"), 0))
                .collect(),
            deleted: (0..400).map(AccountId).collect(),
        };
        let chunks = directory_chunks(news);
        let sizes: Vec<(usize, usize)> = (chunks.iter())
            .map(|n| match n {
                News::Directory(d) => (d.created.len(), d.deleted.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![(500, 0), (200, 300), (0, 100)]);
        assert!(directory_chunks(DirectoryNews::default()).is_empty());
    }
}
