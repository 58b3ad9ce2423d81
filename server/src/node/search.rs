//! Searching one conversation's history: which of the messages a member
//! sees contain a text, ignoring case, newest first, within a
//! [`SearchBudget`]. The ids come from the indexes (under the state lock);
//! the bodies are scanned here, off it, through [`Bodies::scan`].

use std::ops::ControlFlow;

use log_format::ScanEnd;
use log_format::events::MessageId;

use crate::config::SearchBudget;
use crate::raft::bodies::Bodies;

/// A search text, lowercased once.
///
/// Case is ignored by lowercasing both sides one character at a time
/// (Unicode's lowercase mapping of each character, `char::to_lowercase`),
/// with the final sigma `ς` taken as `σ`. Unlike `str::to_lowercase`, which
/// lowercases a capital sigma by where it stands in a word, that maps a
/// text the same way wherever it stands: whatever a body contains, its
/// lowercase contains in lowercase. And "ΟΔΟΣ", "οδος" and "οδοσ" all find
/// each other.
#[derive(Debug, Clone)]
pub struct Query {
    needle: String,
}

impl Query {
    pub fn new(text: &str) -> Query {
        let mut needle = String::with_capacity(text.len());
        lowercase_into(text, &mut needle);
        Query { needle }
    }

    /// Whether `body` contains the text, ignoring case. `scratch` holds the
    /// lowercased body: one buffer for a whole scan, not one per message.
    pub fn matches(&self, body: &str, scratch: &mut String) -> bool {
        scratch.clear();
        lowercase_into(body, scratch);
        scratch.contains(self.needle.as_str())
    }
}

/// Appends `text` lowercased, a character at a time (see [`Query`]). Runs
/// of ASCII, most of any text, are copied and lowercased whole; only the
/// other characters go through Unicode's mapping one by one.
fn lowercase_into(text: &str, out: &mut String) {
    let mut rest = text;
    while !rest.is_empty() {
        let ascii = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        let start = out.len();
        out.push_str(&rest[..ascii]);
        out[start..].make_ascii_lowercase();
        rest = &rest[ascii..];
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l }));
            rest = chars.as_str();
        }
    }
}

/// What one search call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The matching messages, newest first: id, body and send time.
    pub matches: Vec<(MessageId, String, u64)>,
    /// Where the next call goes on (its `before`): the oldest message this
    /// one examined, when older ones remain; `None` once the scope's
    /// oldest message was examined and nothing older is visible.
    pub next_before: Option<MessageId>,
}

/// The messages a search looks at: ids a member sees, newest first, at
/// most the budget's count, and whether older ones remain beyond them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub ids: Vec<MessageId>,
    pub more: bool,
}

/// Examines the messages of `scope` newest first until `limit` match or a
/// bound of the budget is reached (its message count bounded the scope).
pub fn scan(
    bodies: &Bodies,
    scope: &Scope,
    query: &Query,
    limit: usize,
    budget: SearchBudget,
) -> log_format::Result<Found> {
    let mut matches = Vec::new();
    let mut scratch = String::new();
    let mut bytes = 0u64;
    let mut last = None;
    let reads = budget.archive_bytes.max(1);
    let end = bodies.scan(&scope.ids, reads, |id, body, at_ms| {
        last = Some(id);
        if query.matches(body, &mut scratch) {
            matches.push((id, body.to_owned(), at_ms));
        }
        bytes += body.len() as u64;
        if matches.len() >= limit || bytes >= budget.bytes {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    let oldest = scope.ids.last().copied();
    let next_before = match end {
        ScanEnd::Stopped => last.filter(|at| Some(*at) != oldest || scope.more),
        ScanEnd::Done => oldest.filter(|_| scope.more),
        // Every message above `next` was examined (the first read always
        // happens, so there is one).
        ScanEnd::OutOfReads { next } => {
            let examined = scope.ids.partition_point(|id| id.0 > next);
            let at = examined.checked_sub(1).map(|i| scope.ids[i]);
            debug_assert!(at.is_some(), "a search examined nothing");
            at.or(Some(MessageId(next.saturating_add(1))))
        }
    };
    Ok(Found {
        matches,
        next_before,
    })
}

#[cfg(test)]
mod tests {
    use log_format::events::{AccountId, ArchivedMessage, ConversationId};
    use log_format::{Archive, ArchiveConfig};

    use super::*;

    #[test]
    fn case_is_ignored_the_unicode_way() {
        let mut scratch = String::new();
        for (query, body, found) in [
            ("ÄRGER", "so ein ärger!", true),
            ("ärger", "SO EIN ÄRGER", true),
            ("hello", "Say HeLLo to them", true),
            ("HELLO", "héllo", false),
            ("Émile", "émile et ÉMILE", true),
            ("straße", "STRASSE", false),
            ("ΟΔΟΣ", "στην οδος", true),
            ("οδος", "ΟΔΟΣ ΟΔΟΣ", true),
            ("οδοσ", "Οδος", true),
            ("οσ", "ΟΔΟΣΑ", true),
            // The Kelvin sign lowercases to an ASCII k.
            ("k", "\u{212A}", true),
            ("🙂 ok", "fine 🙂 OK", true),
            ("x", "", false),
        ] {
            assert_eq!(
                Query::new(query).matches(body, &mut scratch),
                found,
                "{query:?} in {body:?}"
            );
        }
    }

    /// An archive of `n` messages with ids 10, 20, ... whose bodies say
    /// their number; those in `marked` also carry "Needle".
    fn bodies(n: u64, marked: &[u64], cache: u64) -> (tempfile::TempDir, Bodies, Vec<MessageId>) {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path(), ArchiveConfig::default()).unwrap();
        let messages: Vec<(u64, ArchivedMessage)> = (1..=n)
            .map(|i| {
                let needle = if marked.contains(&i) { " a Needle" } else { "" };
                let m = ArchivedMessage {
                    conversation: ConversationId(1),
                    from: AccountId(2),
                    at_ms: i,
                    body: format!("message {i}{needle}"),
                };
                (i * 10, m)
            })
            .collect();
        let refs: Vec<_> = messages.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
        let bodies = Bodies::new(archive.reader(), cache);
        let ids = (1..=n).rev().map(|i| MessageId(i * 10)).collect();
        (dir, bodies, ids)
    }

    fn ids_of(found: &Found) -> Vec<u64> {
        found.matches.iter().map(|(id, _, _)| id.0).collect()
    }

    #[test]
    fn finds_newest_first_and_says_where_to_go_on() {
        let (_dir, bodies, ids) = bodies(1000, &[3, 500, 501, 999], 0);
        let query = Query::new("NEEDLE");
        let budget = SearchBudget::default();
        let all = Scope {
            ids: ids.clone(),
            more: false,
        };
        let found = scan(&bodies, &all, &query, 50, budget).unwrap();
        assert_eq!(ids_of(&found), [9990, 5010, 5000, 30]);
        assert_eq!(found.matches[0].1, "message 999 a Needle");
        assert_eq!(found.matches[0].2, 999);
        assert_eq!(found.next_before, None);

        // A full page stops at its last match.
        let found = scan(&bodies, &all, &query, 2, budget).unwrap();
        assert_eq!(ids_of(&found), [9990, 5010]);
        assert_eq!(found.next_before, Some(MessageId(5010)));
        // ... even when that is the scope's oldest message, if older ones
        // remain; when none do, the search is done.
        let mut down_to_30 = Scope {
            ids: ids[..998].to_vec(),
            more: true,
        };
        let found = scan(&bodies, &down_to_30, &query, 4, budget).unwrap();
        assert_eq!(ids_of(&found), [9990, 5010, 5000, 30]);
        assert_eq!(found.next_before, Some(MessageId(30)));
        down_to_30.more = false;
        let found = scan(&bodies, &down_to_30, &query, 4, budget).unwrap();
        assert_eq!(found.next_before, None);

        // A scope cut by the message budget goes on below its oldest.
        let part = Scope {
            ids: ids[..100].to_vec(),
            more: true,
        };
        let found = scan(&bodies, &part, &query, 50, budget).unwrap();
        assert_eq!(ids_of(&found), [9990]);
        assert_eq!(found.next_before, Some(MessageId(9010)));

        // The byte budget stops at the message that spends it: "message
        // 1000", "message 999 a Needle", then nine of 11 bytes.
        let small = SearchBudget {
            messages: 1000,
            bytes: 12 + 20 + 9 * 11,
            ..budget
        };
        let found = scan(&bodies, &all, &query, 50, small).unwrap();
        assert_eq!(ids_of(&found), [9990]);
        assert_eq!(found.next_before, Some(MessageId(9900)));
    }

    /// Pages a search through every message of `ids` as a client does,
    /// the scope of each call read as the service reads it; the matches
    /// of each call.
    fn pages(
        bodies: &Bodies,
        ids: &[MessageId],
        query: &str,
        limit: usize,
        budget: SearchBudget,
    ) -> Vec<Vec<u64>> {
        let query = Query::new(query);
        let mut pages = Vec::new();
        let mut before = u64::MAX;
        loop {
            let below: Vec<MessageId> = ids.iter().copied().filter(|id| id.0 < before).collect();
            let scope = Scope {
                more: below.len() > budget.messages,
                ids: below.into_iter().take(budget.messages).collect(),
            };
            let found = scan(bodies, &scope, &query, limit, budget).unwrap();
            pages.push(ids_of(&found));
            match found.next_before {
                Some(id) => {
                    assert!(id.0 < before, "no progress at {before}");
                    before = id.0;
                }
                None => return pages,
            }
        }
    }

    /// Whichever bound stops each call, paging finds every match once.
    #[test]
    fn paging_finds_every_match_once_whatever_stops_each_call() {
        let marked: Vec<u64> = (1..=3000).filter(|i| i % 97 == 0 || *i == 1).collect();
        let want: Vec<u64> = marked.iter().rev().map(|i| i * 10).collect();
        for cache in [0, 1 << 20] {
            let (_dir, bodies, ids) = bodies(3000, &marked, cache);
            if cache > 0 {
                let hot: Vec<MessageId> = ids.iter().copied().step_by(3).collect();
                bodies.get_many(&hot).unwrap();
            }
            let all = SearchBudget::default();
            // 31 matches among 3,000 messages of 9 to 21 bytes (~35 KB),
            // ~150 KB of archive.
            for (limit, budget, calls) in [
                (50, all, 1..=1),
                (7, all, 5..=5),
                (
                    50,
                    SearchBudget {
                        messages: 100,
                        ..all
                    },
                    30..=30,
                ),
                (50, SearchBudget { bytes: 2000, ..all }, 17..=19),
                // The first 256 ids are looked up in one window, read in
                // one span: ~12 KB, and the budget is spent.
                (
                    50,
                    SearchBudget {
                        archive_bytes: 4096,
                        ..all
                    },
                    12..=12,
                ),
                (
                    2,
                    SearchBudget {
                        messages: 500,
                        bytes: 1,
                        archive_bytes: 1,
                    },
                    3000..=3000,
                ),
            ] {
                let got = pages(&bodies, &ids, "NEEDLE", limit, budget);
                assert_eq!(
                    got.concat(),
                    want,
                    "limit {limit}, {budget:?}, cache {cache}"
                );
                if cache == 0 {
                    assert!(
                        calls.contains(&got.len()),
                        "{} calls, {budget:?}",
                        got.len()
                    );
                }
            }
        }
    }

    #[test]
    fn a_scan_reads_through_the_cache_without_changing_it() {
        let (_dir, bodies, mut ids) = bodies(3000, &[1, 1500, 2993, 2999], 1 << 20);
        // Every seventh message cached (2993 among them), the others not.
        let hot: Vec<MessageId> = ids.iter().copied().step_by(7).collect();
        bodies.get_many(&hot).unwrap();
        let (cached, weight) = (bodies.cached(), bodies.cached_bytes());
        assert_eq!(cached, hot.len());
        // One id erased from the archive since the scope was read: skipped.
        let at = ids.iter().position(|id| id.0 == 15_000).unwrap();
        ids.insert(at, MessageId(15_005));
        let all = Scope { ids, more: false };
        let found = scan(
            &bodies,
            &all,
            &Query::new("needle"),
            50,
            SearchBudget::default(),
        )
        .unwrap();
        assert_eq!(ids_of(&found), [29990, 29930, 15000, 10]);
        assert_eq!(found.matches[1].1, "message 2993 a Needle");
        assert_eq!(found.matches[2].1, "message 1500 a Needle");
        assert_eq!((bodies.cached(), bodies.cached_bytes()), (cached, weight));
    }
}
