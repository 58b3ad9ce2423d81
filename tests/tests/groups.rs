//! Group conversations through the real API: making one, who may change
//! it, what members see and when, delivery on every member's stream, and
//! receipts; and direct conversations addressed by account id.

mod common;

use chat_proto as pb;
use common::*;
use pb::change_group_request::Change;
use tonic::Code;

async fn create_group(
    c: &mut Client,
    token: &str,
    title: &str,
    names: &[&str],
    key: &str,
) -> Result<u64, tonic::Status> {
    c.create_group(pb::CreateGroupRequest {
        token: token.into(),
        title: title.into(),
        member_names: names.iter().map(|n| n.to_string()).collect(),
        client_request_id: key.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().conversation_id)
}

async fn change(
    c: &mut Client,
    token: &str,
    group: u64,
    change: Change,
) -> Result<tonic::Response<pb::ChangeGroupResponse>, tonic::Status> {
    c.change_group(pb::ChangeGroupRequest {
        token: token.into(),
        conversation_id: group,
        change: Some(change),
        ..Default::default()
    })
    .await
}

async fn post(
    c: &mut Client,
    token: &str,
    group: u64,
    body: &str,
) -> Result<pb::SendResponse, tonic::Status> {
    c.send(pb::SendRequest {
        token: token.into(),
        conversation_id: group,
        body: body.into(),
        client_msg_id: format!("{group}-{body}"),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

async fn history(
    c: &mut Client,
    token: &str,
    group: u64,
) -> Result<pb::HistoryResponse, tonic::Status> {
    c.history(pb::HistoryRequest {
        token: token.into(),
        conversation_id: group,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

async fn members(
    c: &mut Client,
    token: &str,
    group: u64,
) -> Result<tonic::Response<pb::MembersResponse>, tonic::Status> {
    c.members(pb::MembersRequest {
        token: token.into(),
        conversation_id: group,
        ..Default::default()
    })
    .await
}

fn bodies(h: &pb::HistoryResponse) -> Vec<&str> {
    h.messages.iter().map(|m| m.body.as_str()).collect()
}

async fn account_id(c: &mut Client, name: &str) -> u64 {
    let page = c
        .list_accounts(pb::ListAccountsRequest {
            pattern: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.accounts[0].account_id
}

/// Events of a stream up to its CaughtUp, as short strings.
async fn until_caught_up(stream: &mut tonic::Streaming<pb::Event>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let e = next_event(stream).await.expect("event");
        match e.kind.expect("kind") {
            pb::event::Kind::CaughtUp(_) => return out,
            kind => out.push(describe(kind)),
        }
    }
}

fn describe(kind: pb::event::Kind) -> String {
    match kind {
        pb::event::Kind::Message(m) => format!("message {} from {}", m.body, m.from),
        pb::event::Kind::Group(g) => {
            let kind = pb::group_event::Kind::try_from(g.kind).unwrap();
            let names: Vec<String> = g.accounts.into_iter().map(|a| a.username).collect();
            format!("{} {kind:?} {} {names:?}", g.title, g.by)
        }
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_their_rules_and_what_members_see() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let cy = account(&mut c, "cy").await;
    let dee = account(&mut c, "dee").await;
    let cy_id = account_id(&mut c, "cy").await;
    let dee_id = account_id(&mut c, "dee").await;

    // Bad requests: the rule in the message, nothing made.
    for (title, key) in [
        ("", "k"),
        (&"x".repeat(65)[..], "k"),
        ("a\nb", "k"),
        ("   ", "k"),
        ("ok", ""),
    ] {
        let r = create_group(&mut c, &ann, title, &["bob"], key).await;
        assert_eq!(
            r.unwrap_err().code(),
            Code::InvalidArgument,
            "{title:?} {key:?}"
        );
    }
    let unknown = create_group(&mut c, &ann, "team", &["nobody"], "k").await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let g = create_group(&mut c, &ann, "team 🚀", &["bob", "BOB"], "team-1")
        .await
        .unwrap();
    let again = create_group(&mut c, &ann, "team 🚀", &["bob"], "team-1")
        .await
        .unwrap();
    assert_eq!(again, g, "a retried CreateGroup makes no second group");

    // Streams of the two members.
    let mut ann_stream = c
        .subscribe(pb::SubscribeRequest {
            token: ann.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut bob_stream = c
        .subscribe(pb::SubscribeRequest {
            token: bob.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created = r#"team 🚀 Created ann ["ann", "bob"]"#;
    assert_eq!(until_caught_up(&mut ann_stream).await, vec![created]);
    assert_eq!(until_caught_up(&mut bob_stream).await, vec![created]);

    let first = post(&mut c, &ann, g, "before cy").await.unwrap();
    let retry = post(&mut c, &ann, g, "before cy").await.unwrap();
    assert_eq!(retry.message_id, first.message_id, "same key, same message");
    for s in [&mut ann_stream, &mut bob_stream] {
        let e = next_event(s).await.unwrap();
        assert_eq!(describe(e.kind.unwrap()), "message before cy from ann");
    }

    // A non-member gets the answer of a group that does not exist.
    for group in [g, 999_999_999] {
        assert_eq!(
            post(&mut c, &cy, group, "hi").await.unwrap_err().code(),
            Code::NotFound
        );
        assert_eq!(
            history(&mut c, &cy, group).await.unwrap_err().code(),
            Code::NotFound
        );
        assert_eq!(code(members(&mut c, &cy, group).await), Code::NotFound);
        let rename = change(&mut c, &cy, group, Change::Rename("mine".into())).await;
        assert_eq!(code(rename), Code::NotFound);
        let read = c
            .mark_read(pb::MarkReadRequest {
                token: cy.clone(),
                conversation_id: group,
                up_to: 1,
                ..Default::default()
            })
            .await;
        assert_eq!(code(read), Code::NotFound);
    }
    // A plain member has no right to add, rename or remove.
    let add = change(
        &mut c,
        &bob,
        g,
        Change::Add(pb::AccountIds { ids: vec![cy_id] }),
    )
    .await;
    assert_eq!(code(add), Code::PermissionDenied);
    assert_eq!(
        code(change(&mut c, &bob, g, Change::Rename("x".into())).await),
        Code::PermissionDenied
    );
    let none = c
        .change_group(pb::ChangeGroupRequest {
            token: ann.clone(),
            conversation_id: g,
            ..Default::default()
        })
        .await;
    assert_eq!(code(none), Code::InvalidArgument);

    // cy joins later: it sees what comes after, not before.
    change(
        &mut c,
        &ann,
        g,
        Change::Add(pb::AccountIds { ids: vec![cy_id] }),
    )
    .await
    .unwrap();
    let twice = change(
        &mut c,
        &ann,
        g,
        Change::Add(pb::AccountIds { ids: vec![cy_id] }),
    )
    .await;
    assert_eq!(code(twice), Code::AlreadyExists);
    let added = r#"team 🚀 Added ann ["cy"]"#;
    for s in [&mut ann_stream, &mut bob_stream] {
        assert_eq!(describe(next_event(s).await.unwrap().kind.unwrap()), added);
    }
    post(&mut c, &bob, g, "after cy").await.unwrap();
    for s in [&mut ann_stream, &mut bob_stream] {
        let e = next_event(s).await.unwrap();
        assert_eq!(describe(e.kind.unwrap()), "message after cy from bob");
    }
    let seen = history(&mut c, &cy, g).await.unwrap();
    assert_eq!(bodies(&seen), vec!["after cy"]);
    assert_eq!(
        seen.group_events.len(),
        1,
        "cy sees the change that added it"
    );
    let all = history(&mut c, &bob, g).await.unwrap();
    assert_eq!(bodies(&all), vec!["after cy", "before cy"]);
    let kinds: Vec<i32> = all.group_events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            pb::group_event::Kind::Added as i32,
            pb::group_event::Kind::Created as i32
        ]
    );
    // Each change sits by its id among the messages: created < "before cy"
    // < added < "after cy".
    let ids: Vec<u64> = vec![
        all.group_events[1].id,
        all.messages[1].id,
        all.group_events[0].id,
        all.messages[0].id,
    ];
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(seen.group_events[0].id, all.group_events[0].id);
    let mut cy_stream = c
        .subscribe(pb::SubscribeRequest {
            token: cy.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        until_caught_up(&mut cy_stream).await,
        vec![added.to_string(), "message after cy from bob".to_string()],
        "a backlog from 0 holds only what came after joining"
    );

    // Unread counts and receipts: "read by 1 of 2", and by whom.
    let list = c
        .conversations(pb::ConversationsRequest {
            token: cy.clone(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let row = &list.conversations[0];
    assert!(row.is_group);
    assert_eq!(
        (row.title.as_str(), row.member_count, row.unread_count),
        ("team 🚀", 3, 1)
    );
    assert_eq!(row.conversation_id, g);
    let after_cy = all.messages[0].id;
    let read = c
        .mark_read(pb::MarkReadRequest {
            token: cy.clone(),
            conversation_id: g,
            up_to: after_cy,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.unread_count, 0);
    let e = next_event(&mut bob_stream).await.unwrap();
    match e.kind.unwrap() {
        pb::event::Kind::Read(r) => {
            assert_eq!(
                (r.peer.as_str(), r.up_to, r.conversation_id),
                ("cy", after_cy, g)
            );
        }
        other => panic!("{other:?}"),
    }
    let mine = history(&mut c, &bob, g).await.unwrap();
    let m = &mine.messages[0];
    assert_eq!(
        (m.in_group, m.read_by, m.readers, m.read),
        (true, 1, 2, false)
    );
    let cursors = members(&mut c, &bob, g).await.unwrap().into_inner();
    let by_name = |n: &str| {
        cursors
            .members
            .iter()
            .find(|m| m.username == n)
            .unwrap()
            .clone()
    };
    assert!(by_name("ann").owner);
    assert!(by_name("cy").read_up_to >= after_cy);
    assert!(by_name("ann").read_up_to < after_cy);

    // Admins, removal, leaving; the owner's rights pass on.
    let admin = change(&mut c, &bob, g, Change::AddAdmin(cy_id)).await;
    assert_eq!(code(admin), Code::PermissionDenied);
    let bob_id = account_id(&mut c, "bob").await;
    change(&mut c, &ann, g, Change::AddAdmin(bob_id))
        .await
        .unwrap();
    change(
        &mut c,
        &bob,
        g,
        Change::Add(pb::AccountIds { ids: vec![dee_id] }),
    )
    .await
    .unwrap();
    assert_eq!(
        bodies(&history(&mut c, &dee, g).await.unwrap()),
        Vec::<&str>::new()
    );
    change(&mut c, &bob, g, Change::Remove(dee_id))
        .await
        .unwrap();
    assert_eq!(
        history(&mut c, &dee, g).await.unwrap_err().code(),
        Code::NotFound
    );
    let not_member = change(&mut c, &bob, g, Change::Remove(dee_id)).await;
    assert_eq!(code(not_member), Code::NotFound);
    change(&mut c, &ann, g, Change::Rename("renamed".into()))
        .await
        .unwrap();
    change(&mut c, &ann, g, Change::Leave(true)).await.unwrap();
    let after = members(&mut c, &bob, g).await.unwrap().into_inner();
    assert_eq!(after.title, "renamed");
    assert!(after.members.iter().any(|m| m.username == "bob" && m.owner));
    assert_eq!(
        history(&mut c, &ann, g).await.unwrap_err().code(),
        Code::NotFound
    );
    change(&mut c, &bob, g, Change::Leave(true)).await.unwrap();
    change(&mut c, &cy, g, Change::Leave(true)).await.unwrap();
    assert_eq!(
        history(&mut c, &cy, g).await.unwrap_err().code(),
        Code::NotFound
    );
}

/// A reply addressed by account id never reaches a new account that took
/// the name of a deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_by_account_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let carol = account(&mut c, "carol").await;
    let old_carol = account_id(&mut c, "carol").await;
    let by_id = |to_account_id: u64, key: &str| pb::SendRequest {
        token: ann.clone(),
        to_account_id,
        body: "hello".into(),
        client_msg_id: key.into(),
        ..Default::default()
    };
    let sent = c.send(by_id(old_carol, "one")).await.unwrap().into_inner();
    let ann_id = account_id(&mut c, "ann").await;
    let h = c
        .history(pb::HistoryRequest {
            token: carol.clone(),
            peer_account_id: ann_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.messages[0].id, sent.message_id);
    assert_ne!(h.messages[0].conversation_id, 0);
    let both = c
        .send(pb::SendRequest {
            to: "carol".into(),
            ..by_id(old_carol, "two")
        })
        .await;
    assert_eq!(code(both), Code::InvalidArgument);

    c.delete_account(pb::DeleteAccountRequest {
        token: carol,
        password: "carol-password".into(),
        min_applied: 0,
    })
    .await
    .unwrap();
    let new_carol = account(&mut c, "carol").await;
    let gone = c.send(by_id(old_carol, "three")).await;
    assert_eq!(code(gone), Code::NotFound);
    let conversations = c
        .conversations(pb::ConversationsRequest {
            token: new_carol,
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        conversations.conversations.is_empty(),
        "the new carol got nothing"
    );
}

/// chat-client's group calls and its addressing by account and by
/// conversation, against a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_makes_and_uses_a_group() {
    use chat_client::{Client, ClientConfig, GroupChangeKind, GroupEdit, Peer};
    let server = TestServer::start().await;
    let client = Client::connect(ClientConfig {
        servers: vec![server.addr.clone()],
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let ann_id = client
        .create_account("ann", "ann-password")
        .await
        .unwrap()
        .account_id;
    let bob_id = client
        .create_account("bob", "bob-password")
        .await
        .unwrap()
        .account_id;
    let ann = client.login("ann", "ann-password").await.unwrap().token;
    let bob = client.login("bob", "bob-password").await.unwrap().token;
    let g = client.create_group(&ann, "pair", &[bob_id]).await.unwrap();
    let sent = client
        .send_with_id(&bob, Peer::Conversation(g), "hello group", "k1")
        .await
        .unwrap();
    let page = client
        .history(&ann, Peer::Conversation(g), None, 10)
        .await
        .unwrap();
    assert_eq!(page.messages[0].id, sent.id);
    assert!(page.messages[0].in_group);
    assert_eq!(page.messages[0].conversation_id, g);
    let unread = client
        .mark_read(&ann, Peer::Conversation(g), sent.id)
        .await
        .unwrap();
    assert_eq!(unread, 0);
    let members = client.members(&bob, g).await.unwrap();
    assert_eq!(members.title, "pair");
    assert!(
        members
            .members
            .iter()
            .any(|m| m.account_id == ann_id && m.owner)
    );
    // Direct, by account id.
    client
        .send_with_id(&ann, Peer::Account(bob_id), "direct", "k2")
        .await
        .unwrap();
    let list = client.conversations(&bob).await.unwrap();
    assert_eq!(list.conversations.len(), 2);
    assert!(
        list.conversations
            .iter()
            .any(|c| c.group.as_ref().is_some_and(|g| g.title == "pair"))
    );
    // A change, seen on the stream.
    let mut events = client.subscribe(&bob, 0).await.unwrap();
    client
        .change_group(&ann, g, GroupEdit::Rename("renamed".into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the rename reaches bob's stream")
            .expect("stream open")
            .unwrap();
        if let chat_client::Event::Group { change, .. } = event
            && change.kind == GroupChangeKind::Renamed
        {
            assert_eq!(change.title, "renamed");
            break;
        }
    }
    // A change whose outcome is a refusal is reported, not retried into a
    // different answer.
    let refused = client
        .change_group(&bob, g, GroupEdit::Rename("mine".into()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::PermissionDenied));
    // History tells each change with the title it gave, in place.
    client
        .change_group(&ann, g, GroupEdit::Rename("again".into()))
        .await
        .unwrap();
    let page = client
        .history(&bob, Peer::Conversation(g), None, 10)
        .await
        .unwrap();
    let changes: Vec<(GroupChangeKind, &str)> = (page.group_changes.iter().rev())
        .map(|c| (c.kind, c.title.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (GroupChangeKind::Created, "pair"),
            (GroupChangeKind::Renamed, "renamed"),
            (GroupChangeKind::Renamed, "again"),
        ]
    );
    assert!(page.group_changes[2].id < sent.id && sent.id < page.group_changes[1].id);
}
