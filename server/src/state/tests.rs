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
    let msgs: Vec<MessageId> = state.all_message_ids();
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
        let sum: u64 = (a.conversations.iter())
            .map(|c| s.conversations[c].unread_of(*id))
            .sum();
        assert_eq!(a.unread, sum, "account {id}: total unread");
        assert_eq!(s.by_name.get(&a.username.to_lowercase()), Some(id));
        assert!(a.conversations.windows(2).all(|w| w[0] < w[1]));
        for c in &a.conversations {
            assert!(s.conversations[c].members().contains(id));
        }
    }
    for (c, conv) in &s.conversations {
        conv.check();
        for m in conv.members() {
            assert!(s.accounts[&m].conversations.contains(c), "{m} lists {c}");
        }
        for id in conv.message_ids() {
            assert!(!s.erased.contains(&id), "erased message {id} still indexed");
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
    assert!(s.conversations.is_empty());
    assert!(s.erased_pending() > 0, "the archive is told to drop them");
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
            duplicate: false,
            conversation: ConversationId(4),
        }
    );
    assert_eq!(
        send(&mut s, 5, a, b, "same"),
        Applied::Message {
            id: MessageId(4),
            duplicate: true,
            conversation: ConversationId(4),
        }
    );
    assert_eq!(stored(&s), 1);
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
    assert_eq!(stored(&s), 3);
    assert_eq!(s.take_erased(), [MessageId(7)]);
}

/// How many messages the conversations index.
fn stored(s: &ChatState) -> usize {
    s.conversations
        .values()
        .map(|c| c.message_ids().count())
        .sum()
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

fn apply(s: &mut ChatState, index: u64, event: Event) -> Applied {
    s.apply(index, &event, &mut Vec::new())
}

/// What a backlog holds, as (index, kind) with messages by id.
fn backlog(s: &ChatState, account: AccountId, after: u64, limit: usize) -> Vec<(u64, String)> {
    s.feed_after(account, after, u64::MAX, limit)
        .into_iter()
        .map(|e| {
            let what = match e.kind {
                FeedKind::Message(m) => format!("message {} from {}", m.id, m.from_name),
                FeedKind::Delivered {
                    peer_name, up_to, ..
                } => {
                    format!("delivered to {peer_name} up to {up_to}")
                }
                FeedKind::Read {
                    peer_name, up_to, ..
                } => {
                    format!("read by {peer_name} up to {up_to}")
                }
                FeedKind::Deleted(ids) => format!("deleted {ids:?}"),
            };
            (e.index, what)
        })
        .collect()
}

/// A backlog is the member's messages in log order, the newest receipt of
/// each peer that moved after the cursor, and its own deletions.
#[test]
fn backlogs_merge_conversations_in_log_order() {
    let mut s = ChatState::default();
    let a = created(&mut s, 2, "a");
    let b = created(&mut s, 3, "b");
    let c = created(&mut s, 4, "c");
    send(&mut s, 5, a, b, "1");
    send(&mut s, 6, c, a, "2");
    send(&mut s, 7, a, b, "3");
    apply(
        &mut s,
        8,
        Event::DeliveredUpTo {
            account: b,
            up_to: MessageId(5),
            at_ms: 0,
        },
    );
    apply(
        &mut s,
        9,
        Event::DeliveredUpTo {
            account: b,
            up_to: MessageId(7),
            at_ms: 0,
        },
    );
    apply(
        &mut s,
        10,
        Event::MessagesDeleted {
            account: a,
            ids: vec![MessageId(6)],
            at_ms: 0,
        },
    );
    assert_eq!(
        backlog(&s, a, 0, 100),
        vec![
            (5, "message 5 from a".to_string()),
            (7, "message 7 from a".to_string()),
            // Only the newest of b's two receipts: they are cursors.
            (9, "delivered to b up to 7".to_string()),
            (10, "deleted [MessageId(6)]".to_string()),
        ]
    );
    // From a cursor, and a page at a time.
    assert_eq!(backlog(&s, a, 7, 100).len(), 2);
    assert_eq!(
        backlog(&s, a, 0, 2),
        vec![
            (5, "message 5 from a".to_string()),
            (7, "message 7 from a".to_string()),
        ]
    );
    // The receipt's recipient sees its own messages only; c sees its own.
    assert_eq!(
        backlog(&s, b, 0, 100),
        vec![
            (5, "message 5 from a".to_string()),
            (7, "message 7 from a".to_string()),
        ]
    );
    assert_eq!(
        backlog(&s, c, 0, 100),
        vec![(6, "message 6 from c".to_string())]
    );
    // Up to a bound: what was applied when the subscription opened.
    assert_eq!(s.feed_after(a, 0, 6, 100).len(), 1);
}

/// A message is erased once every member deleted it, and an account's
/// deletion erases its conversations on both sides.
#[test]
fn erasure_drops_bodies_and_indexes() {
    let mut s = ChatState::default();
    let a = created(&mut s, 2, "a");
    let b = created(&mut s, 3, "b");
    let c = created(&mut s, 4, "c");
    send(&mut s, 5, a, b, "1");
    send(&mut s, 6, b, a, "2");
    send(&mut s, 7, a, c, "3");
    for who in [a, b] {
        apply(
            &mut s,
            8 + who.0,
            Event::MessagesDeleted {
                account: who,
                ids: vec![MessageId(5)],
                at_ms: 0,
            },
        );
    }
    assert_eq!(s.take_erased(), [MessageId(5)]);
    assert_eq!(s.history(b, a, None, 10).0.len(), 1);
    assert_eq!(s.unread_with(a, b), 1);
    apply(
        &mut s,
        20,
        Event::AccountDeleted {
            account: b,
            at_ms: 0,
        },
    );
    check_invariants(&s);
    assert_eq!(s.take_erased(), [MessageId(6)]);
    assert_eq!(s.account(a).unwrap().unread, 0);
    assert_eq!(s.conversations(a).len(), 1);
    // A's key for its message to b is forgotten with it; the one to c stays.
    assert_eq!(s.message_by_key(a, "3"), Some(MessageId(7)));
    assert_eq!(s.message_by_key(b, "2"), None);
}
