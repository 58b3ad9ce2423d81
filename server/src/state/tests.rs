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
    Send {
        from: u8,
        to: u8,
        key: u8,
        body: u8,
    },
    Ack {
        who: u8,
        back: u8,
    },
    Read {
        who: u8,
        peer: u8,
        back: u8,
    },
    DeleteMsgs {
        who: u8,
        pick: Vec<u8>,
    },
    CreateGroup {
        owner: u8,
        members: Vec<u8>,
        key: u8,
    },
    ChangeGroup {
        by: u8,
        group: u8,
        change: u8,
        who: u8,
    },
    Post {
        from: u8,
        group: u8,
        key: u8,
        body: u8,
    },
    ReadGroup {
        who: u8,
        group: u8,
        back: u8,
    },
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
        1 => (0u8..6, proptest::collection::vec(0u8..6, 0..4), 0u8..3).prop_map(|(owner, members, key)| Action::CreateGroup { owner, members, key }),
        2 => (0u8..6, any::<u8>(), 0u8..7, 0u8..6).prop_map(|(by, group, change, who)| Action::ChangeGroup { by, group, change, who }),
        4 => (0u8..6, any::<u8>(), 0u8..4, any::<u8>()).prop_map(|(from, group, key, body)| Action::Post { from, group, key, body }),
        1 => (0u8..6, any::<u8>(), 0u8..4).prop_map(|(who, group, back)| Action::ReadGroup { who, group, back }),
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
    let groups: Vec<ConversationId> = {
        let mut v: Vec<_> = (state.conversations.iter())
            .filter(|(_, c)| c.group_info().is_some())
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    };
    let group = |n: u8| {
        groups
            .get(n as usize % groups.len().max(1))
            .copied()
            .unwrap_or(ConversationId(4242))
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
        Action::CreateGroup {
            owner,
            members,
            key,
        } => Event::GroupCreated {
            owner: pick(*owner),
            title: format!("group {index}"),
            members: members.iter().map(|m| pick(*m)).collect(),
            client_request_id: format!("g{key}"),
            at_ms,
        },
        Action::ChangeGroup {
            by,
            group: g,
            change,
            who,
        } => {
            let who = pick(*who);
            let change = match change {
                0 => GroupChange::Added(vec![who]),
                1 => GroupChange::Removed(who),
                2 => GroupChange::Left,
                3 => GroupChange::Renamed(format!("renamed {index}")),
                4 => GroupChange::OwnerChanged(who),
                5 => GroupChange::AdminSet {
                    account: who,
                    admin: true,
                },
                _ => GroupChange::AdminSet {
                    account: who,
                    admin: false,
                },
            };
            Event::GroupChanged {
                by: pick(*by),
                group: group(*g),
                change,
                at_ms,
            }
        }
        Action::Post {
            from,
            group: g,
            key,
            body,
        } => Event::Posted {
            from: pick(*from),
            conversation: group(*g),
            client_msg_id: format!("p{key}"),
            body: format!("group body {body}"),
            at_ms,
        },
        Action::ReadGroup {
            who,
            group: g,
            back,
        } => Event::ConversationRead {
            account: pick(*who),
            conversation: group(*g),
            up_to: MessageId(index.saturating_sub(*back as u64 * 1500)),
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
        if let Some(g) = conv.group_info() {
            let members = conv.members();
            assert!(!members.is_empty(), "an empty group {c} is gone");
            assert!(
                members.contains(&g.owner),
                "group {c}: the owner is a member"
            );
            assert!(
                !g.admins.contains(&g.owner),
                "group {c}: the owner is not also an admin"
            );
            assert!(
                g.admins.iter().all(|a| members.contains(a)),
                "group {c}: admins are members"
            );
            assert!(g.admins.windows(2).all(|w| w[0] < w[1]));
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

    /// A copy of the state (what a snapshot encodes while writes go on)
    /// keeps what it was taken with, byte for byte, whatever the live state
    /// does after it; it shares its parts with the live state until the
    /// live state changes them.
    #[test]
    fn a_copy_keeps_the_state_it_was_taken_at(
        before in proptest::collection::vec(action(), 1..60),
        after in proptest::collection::vec(action(), 1..60),
    ) {
        let mut live = ChatState::default();
        let mut notices = Vec::new();
        let mut index = 1;
        for a in &before {
            let event = event_for(&live, index, a);
            live.apply(index, &event, &mut notices);
            index += 1;
        }
        let copy = live.clone();
        let (fingerprint, bytes) = (live.fingerprint(), postcard::to_stdvec(&live).unwrap());
        for a in &after {
            let event = event_for(&live, index, a);
            live.apply(index, &event, &mut notices);
            check_invariants(&live);
            index += 1;
        }
        prop_assert_eq!(copy.fingerprint(), fingerprint);
        prop_assert_eq!(postcard::to_stdvec(&copy).unwrap(), bytes);
        check_invariants(&copy);
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
                FeedKind::Group(n) => {
                    format!("group {} {:?} by {}", n.conversation, n.change, n.by_name)
                }
                FeedKind::PeerGone { peer_name, .. } => format!("{peer_name} is gone"),
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

fn group_change(
    s: &mut ChatState,
    index: u64,
    by: AccountId,
    group: ConversationId,
    change: GroupChange,
) -> Applied {
    apply(
        s,
        index,
        Event::GroupChanged {
            by,
            group,
            change,
            at_ms: index,
        },
    )
}

fn post(s: &mut ChatState, index: u64, from: AccountId, conversation: ConversationId) -> Applied {
    apply(
        s,
        index,
        Event::Posted {
            from,
            conversation,
            client_msg_id: format!("k{index}"),
            body: format!("m{index}"),
            at_ms: index,
        },
    )
}

/// Who may change a group, what a member added later sees, and what
/// leaving does: the rules of the group-conversation issue.
#[test]
fn group_rules_and_visibility() {
    let mut s = ChatState::default();
    let [ann, bob, cy, dee] =
        [(1, "ann"), (2, "bob"), (3, "cy"), (4, "dee")].map(|(i, n)| created(&mut s, i, n));
    let g = match apply(
        &mut s,
        100,
        Event::GroupCreated {
            owner: ann,
            title: "team".into(),
            members: vec![bob, bob, ann],
            client_request_id: "g1".into(),
            at_ms: 0,
        },
    ) {
        Applied::GroupCreated(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.group_by_key(ann, "g1"), Some(g));
    assert_eq!(s.members_of(ann, g).unwrap().len(), 2, "repeats count once");
    // A non-member: the same answer as for no group at all.
    assert!(s.history_of(cy, g, None, 10).is_none());
    assert_eq!(
        post(&mut s, 101, cy, g),
        Applied::Rejected(Rejection::NoSuchConversation)
    );
    assert_eq!(
        group_change(&mut s, 102, cy, g, GroupChange::Renamed("x".into())),
        Applied::Rejected(Rejection::NoSuchConversation)
    );
    // A plain member cannot add, rename or remove.
    assert_eq!(
        group_change(&mut s, 103, bob, g, GroupChange::Added(vec![cy])),
        Applied::Rejected(Rejection::NotAllowed)
    );
    assert!(matches!(
        post(&mut s, 104, ann, g),
        Applied::Message {
            duplicate: false,
            ..
        }
    ));
    assert_eq!(
        group_change(&mut s, 105, ann, g, GroupChange::Added(vec![cy])),
        Applied::Done
    );
    assert_eq!(
        group_change(&mut s, 106, ann, g, GroupChange::Added(vec![cy])),
        Applied::Rejected(Rejection::AlreadyMember)
    );
    assert!(matches!(post(&mut s, 107, bob, g), Applied::Message { .. }));
    // cy joined at 105: it sees 107, not 104.
    let (page, _) = s.history_of(cy, g, None, 10).unwrap();
    assert_eq!(page.iter().map(|m| m.id.0).collect::<Vec<_>>(), vec![107]);
    let (page, _) = s.history_of(bob, g, None, 10).unwrap();
    assert_eq!(
        page.iter().map(|m| m.id.0).collect::<Vec<_>>(),
        vec![107, 104]
    );
    assert_eq!(s.conversations(cy)[0].unread, 1);
    assert_eq!(s.account(cy).unwrap().unread, 1);
    // Its notices start with its own addition.
    let seen: Vec<u64> = s
        .notices_of(cy, g, 0, u64::MAX)
        .iter()
        .map(|n| n.conversation.0)
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(s.notices_of(bob, g, 0, u64::MAX).len(), 2);
    // Receipts: read by 1 of 2.
    assert_eq!(
        apply(
            &mut s,
            108,
            Event::ConversationRead {
                account: cy,
                conversation: g,
                up_to: MessageId(107),
                at_ms: 0
            },
        ),
        Applied::Unread(0)
    );
    let (page, _) = s.history_of(bob, g, None, 1).unwrap();
    assert_eq!(
        (page[0].read_by, page[0].readers, page[0].read),
        (1, 2, false)
    );
    // Only the owner names admins; an admin adds but cannot remove an admin.
    assert_eq!(
        group_change(
            &mut s,
            109,
            bob,
            g,
            GroupChange::AdminSet {
                account: cy,
                admin: true
            }
        ),
        Applied::Rejected(Rejection::NotAllowed)
    );
    assert_eq!(
        group_change(
            &mut s,
            110,
            ann,
            g,
            GroupChange::AdminSet {
                account: bob,
                admin: true
            }
        ),
        Applied::Done
    );
    assert_eq!(
        group_change(
            &mut s,
            111,
            ann,
            g,
            GroupChange::AdminSet {
                account: cy,
                admin: true
            }
        ),
        Applied::Done
    );
    assert_eq!(
        group_change(&mut s, 112, bob, g, GroupChange::Removed(cy)),
        Applied::Rejected(Rejection::NotAllowed)
    );
    assert_eq!(
        group_change(&mut s, 113, bob, g, GroupChange::Added(vec![dee])),
        Applied::Done
    );
    assert_eq!(
        group_change(&mut s, 114, bob, g, GroupChange::Removed(dee)),
        Applied::Done
    );
    assert!(
        s.history_of(dee, g, None, 10).is_none(),
        "a removed member keeps nothing"
    );
    assert!(s.conversations(dee).is_empty());
    // The owner leaves: the first admin owns the group.
    assert_eq!(
        group_change(&mut s, 115, ann, g, GroupChange::Left),
        Applied::Done
    );
    assert_eq!(s.group(bob, g).unwrap().owner, bob);
    // The message only ann could see (104, before cy joined; bob saw it too)
    // stays while bob is there.
    assert_eq!(
        group_change(&mut s, 116, bob, g, GroupChange::Left),
        Applied::Done
    );
    assert_eq!(s.group(cy, g).unwrap().owner, cy);
    assert_eq!(
        s.all_message_ids(),
        vec![MessageId(107)],
        "104 had no reader left"
    );
    assert!(s.take_erased().contains(&MessageId(104)));
    // The last member leaves: the group is gone and its messages erased.
    assert_eq!(
        group_change(&mut s, 117, cy, g, GroupChange::Left),
        Applied::Done
    );
    assert!(s.all_message_ids().is_empty());
    assert_eq!(s.take_erased(), vec![MessageId(107)]);
    assert!(s.group(cy, g).is_none());
    check_invariants(&s);
}

/// A deleted account leaves its groups, its messages there are erased, and
/// the others hear of it; a group message reaches every member once.
#[test]
fn deleting_an_account_leaves_its_groups() {
    let mut s = ChatState::default();
    let [ann, bob, cy] = [(1, "ann"), (2, "bob"), (3, "cy")].map(|(i, n)| created(&mut s, i, n));
    let Applied::GroupCreated(g) = apply(
        &mut s,
        100,
        Event::GroupCreated {
            owner: ann,
            title: "team".into(),
            members: vec![bob, cy],
            client_request_id: "g".into(),
            at_ms: 0,
        },
    ) else {
        panic!()
    };
    let mut notices = Vec::new();
    s.apply(
        101,
        &Event::Posted {
            from: ann,
            conversation: g,
            client_msg_id: "a".into(),
            body: "hi".into(),
            at_ms: 0,
        },
        &mut notices,
    );
    let mut told: Vec<AccountId> = (notices.iter())
        .flat_map(|n| match n {
            Fanout::Feed(
                to,
                FeedEntry {
                    kind: FeedKind::Message(_),
                    ..
                },
            ) => vec![*to],
            // One view shared by the others.
            Fanout::Posted { to, .. } => to.clone(),
            _ => vec![],
        })
        .collect();
    told.sort();
    assert_eq!(told, vec![ann, bob, cy], "each member once");
    post(&mut s, 102, bob, g);
    let mut notices = Vec::new();
    s.apply(
        103,
        &Event::AccountDeleted {
            account: ann,
            at_ms: 0,
        },
        &mut notices,
    );
    let (page, _) = s.history_of(bob, g, None, 10).unwrap();
    assert_eq!(page.iter().map(|m| m.id.0).collect::<Vec<_>>(), vec![102]);
    assert_eq!(
        s.group(bob, g).unwrap().owner,
        bob,
        "the longest-standing member owns it"
    );
    let heard: Vec<AccountId> = (notices.iter())
        .filter_map(|n| match n {
            Fanout::Feed(
                to,
                FeedEntry {
                    kind: FeedKind::Group(v),
                    ..
                },
            ) if v.change == Change::AccountDeleted => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(heard, vec![bob, cy]);
    assert_eq!(s.account(cy).unwrap().unread, 1);
    check_invariants(&s);
}

/// While a snapshot's copy shares the state, a receipt copies only the
/// conversations it changes: a delivery receipt spans every conversation
/// of its account, and copying them all on each one held ~60 MiB more
/// through each snapshot build at 1M messages (BENCHMARKS.md).
#[test]
fn a_receipt_copies_only_the_conversations_it_changes() {
    let mut s = ChatState::default();
    let b = created(&mut s, 1, "b");
    let peers: Vec<AccountId> = (0..5)
        .map(|i| created(&mut s, 2 + i, &format!("p{i}")))
        .collect();
    for (i, p) in peers.iter().enumerate() {
        send(&mut s, 10 + i as u64, *p, b, &format!("k{i}"));
    }
    let shared = |live: &ChatState, copy: &ChatState, p: AccountId| {
        let c = live.direct[&direct_key(p, b)];
        Arc::ptr_eq(&live.conversations[&c], &copy.conversations[&c])
    };
    let copy = s.clone();
    // Delivered up to the first peer's message: only that conversation.
    s.apply(
        20,
        &Event::DeliveredUpTo {
            account: b,
            up_to: MessageId(10),
            at_ms: 0,
        },
        &mut Vec::new(),
    );
    assert!(!shared(&s, &copy, peers[0]));
    assert!(peers[1..].iter().all(|p| shared(&s, &copy, *p)));

    // Read up to the second peer's message, then the same again: the
    // repeat changes nothing and copies nothing.
    let read = |s: &mut ChatState, index| {
        s.apply(
            index,
            &Event::ReadUpTo {
                account: b,
                peer: peers[1],
                up_to: MessageId(11),
                at_ms: 0,
            },
            &mut Vec::new(),
        )
    };
    assert!(matches!(read(&mut s, 21), Applied::Unread(0)));
    assert!(!shared(&s, &copy, peers[1]));
    let copy = s.clone();
    assert!(matches!(read(&mut s, 22), Applied::Unread(0)));
    assert!(peers.iter().all(|p| shared(&s, &copy, *p)));
    check_invariants(&s);
}

/// A copy of the state shares each sender's keys; a sender that sends
/// while the copy lives copies its own keys only, and the copy still
/// answers as it was taken. (Copying every sender's table of recent keys
/// was a third of the time applying waits for a snapshot's copy.)
#[test]
fn a_copy_shares_each_senders_keys_until_it_sends() {
    let mut s = ChatState::default();
    let a = created(&mut s, 1, "a");
    let b = created(&mut s, 2, "b");
    let c = created(&mut s, 3, "c");
    send(&mut s, 10, a, c, "ka");
    send(&mut s, 11, b, c, "kb");
    let copy = s.clone();
    let shared =
        |x: AccountId, live: &ChatState| Arc::ptr_eq(&live.idempotency[&x], &copy.idempotency[&x]);
    assert!(shared(a, &s) && shared(b, &s));
    send(&mut s, 12, a, c, "ka2");
    assert!(!shared(a, &s), "a's keys changed: copied");
    assert!(shared(b, &s), "b sent nothing: still shared");
    assert_eq!(copy.keyed(a, key_hash("ka2")), None);
    assert_eq!(s.keyed(a, key_hash("ka2")), Some(MessageId(12)));
    assert_eq!(copy.keyed(a, key_hash("ka")), Some(MessageId(10)));
}
