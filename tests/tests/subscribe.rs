//! Subscriptions: backlog then live, resuming from a cursor, several
//! sessions, the end of a session, and the overflow rule.

mod common;

use chat_proto as pb;
use common::*;
use tonic::Code;

async fn subscribe(c: &mut Client, token: &str, after: u64) -> tonic::Streaming<pb::Event> {
    c.subscribe(pb::SubscribeRequest {
        token: token.into(),
        after,
        min_applied: 0,
    })
    .await
    .expect("subscribe")
    .into_inner()
}

async fn next_message(s: &mut tonic::Streaming<pb::Event>) -> (u64, String) {
    loop {
        let e = next_event(s).await.expect("event");
        if let Some(pb::event::Kind::Message(m)) = e.kind {
            return (e.id, m.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_then_live_then_resume_without_gap_or_duplicate() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    for i in 0..3 {
        send(&mut c, &ann, "bob", &format!("queued {i}")).await;
    }
    // Offline messages arrive as the backlog, then the caught-up marker.
    let mut s = subscribe(&mut c, &bob, 0).await;
    let queued = backlog(&mut s).await;
    assert_eq!(
        queued.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["queued 0", "queued 1", "queued 2"]
    );
    // Live messages follow at once.
    let live = send(&mut c, &ann, "bob", "live").await;
    assert_eq!(
        next_message(&mut s).await,
        (live.message_id, "live".to_string())
    );
    drop(s);

    // More while away; resuming from the last id gives exactly those.
    let last = live.message_id;
    send(&mut c, &ann, "bob", "while away 1").await;
    send(&mut c, &ann, "bob", "while away 2").await;
    let mut s = subscribe(&mut c, &bob, last).await;
    let resumed = backlog(&mut s).await;
    assert_eq!(
        resumed.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["while away 1", "while away 2"]
    );
    assert!(resumed.iter().all(|(id, _)| *id > last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_gets_every_message_and_the_sender_gets_receipts() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob1 = account(&mut c, "bob").await;
    let bob2 = login(&mut c, "bob").await.token;
    let mut s1 = subscribe(&mut c, &bob1, 0).await;
    let mut s2 = subscribe(&mut c, &bob2, 0).await;
    let mut sa = subscribe(&mut c, &ann, 0).await;
    backlog(&mut s1).await;
    backlog(&mut s2).await;
    backlog(&mut sa).await;

    let m = send(&mut c, &ann, "bob", "to both").await;
    assert_eq!(next_message(&mut s1).await.1, "to both");
    assert_eq!(next_message(&mut s2).await.1, "to both");
    // The sender's own stream shows its message too (for its other sessions).
    assert_eq!(next_message(&mut sa).await.1, "to both");

    c.ack(pb::AckRequest {
        token: bob1.clone(),
        up_to: m.message_id,
        min_applied: 0,
    })
    .await
    .unwrap();
    c.mark_read(pb::MarkReadRequest {
        token: bob2.clone(),
        peer: "ann".into(),
        up_to: m.message_id,
        min_applied: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match next_event(&mut sa).await.unwrap().kind.unwrap() {
            pb::event::Kind::Delivered(d) => kinds.push(("delivered", d.peer, d.up_to)),
            pb::event::Kind::Read(r) => kinds.push(("read", r.peer, r.up_to)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        kinds,
        vec![
            ("delivered", "bob".into(), m.message_id),
            ("read", "bob".into(), m.message_id)
        ]
    );

    // Deleting in one session shows up in the other.
    c.delete_messages(pb::DeleteMessagesRequest {
        token: bob1.clone(),
        ids: vec![m.message_id],
        min_applied: 0,
    })
    .await
    .unwrap();
    loop {
        if let Some(pb::event::Kind::Deleted(d)) = next_event(&mut s2).await.unwrap().kind {
            assert_eq!(d.ids, vec![m.message_id]);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_its_session() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let bob = account(&mut c, "bob").await;
    let mut s = subscribe(&mut c, &bob, 0).await;
    backlog(&mut s).await;
    c.logout(pb::LogoutRequest {
        token: bob.clone(),
        min_applied: 0,
    })
    .await
    .unwrap();
    let end = next_event(&mut s).await.unwrap_err();
    assert_eq!(end.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_cut_off_and_told_to_resume_without_slowing_others() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.stream_buffer = 4;
    let server = TestServer::start_with(cfg).await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let carl = account(&mut c, "carl").await;
    let mut slow = subscribe(&mut c, &bob, 0).await;
    backlog(&mut slow).await;
    let mut fast = subscribe(&mut c, &carl, 0).await;
    backlog(&mut fast).await;

    // Bob's stream is never read while far more than its buffer arrives.
    // HTTP/2 flow control buffers some megabytes in the transport as well,
    // so the messages are large: 300 x 16 KiB.
    let total = 300;
    let mut ids = Vec::new();
    for i in 0..total {
        let body = format!("m{i} {}", "x".repeat(16 * 1024 - 10));
        ids.push(send(&mut c, &ann, "bob", &body).await.message_id);
        // Carl, reading promptly, sees his messages at once throughout.
        if i % 50 == 0 {
            let m = send(&mut c, &ann, "carl", &format!("c{i}")).await;
            assert_eq!(next_message(&mut fast).await.0, m.message_id);
        }
    }
    // Bob now reads: some messages, then the end of the stream with a
    // status telling him to resume from his cursor.
    let mut got = Vec::new();
    let status = loop {
        match next_event(&mut slow).await {
            Ok(e) => {
                if let Some(pb::event::Kind::Message(_)) = e.kind {
                    got.push(e.id);
                }
            }
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("resubscribe"),
        "{}",
        status.message()
    );
    assert!(got.len() < total, "the stream was cut off");
    assert_eq!(
        got,
        ids[..got.len()],
        "what arrived is in order, without gaps"
    );
    // Resuming from the cursor yields exactly the rest.
    let cursor = got.last().copied().unwrap_or(0);
    let mut again = subscribe(&mut c, &bob, cursor).await;
    let rest: Vec<u64> = backlog(&mut again)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(rest, ids[got.len()..]);
}

/// When the other party of a direct conversation deletes their account,
/// a live stream says so (by account id), so a client can mark the
/// conversation before anyone writes into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_deleting_their_account_is_told_live() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    send(&mut c, &ann, "bob", "hello").await;
    let bob_id = login(&mut c, "bob").await.account_id;
    let mut stream = subscribe(&mut c, &ann, 0).await;
    backlog(&mut stream).await;

    c.delete_account(pb::DeleteAccountRequest {
        token: bob.clone(),
        password: "bob-password".into(),
        min_applied: 0,
    })
    .await
    .expect("bob deletes his account");
    let gone = loop {
        let e = next_event(&mut stream).await.expect("event");
        if let Some(pb::event::Kind::PeerGone(gone)) = e.kind {
            break gone;
        }
    };
    assert_eq!(gone.account_id, bob_id);
    assert_eq!(gone.username, "bob");
    assert_ne!(gone.conversation_id, 0);
    // A resumed stream holds nothing of the erased conversation.
    let mut resumed = subscribe(&mut c, &ann, 0).await;
    assert!(backlog(&mut resumed).await.is_empty());
}
