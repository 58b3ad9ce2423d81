//! The state after a restart equals the state before: accounts, history,
//! unread counts, cursors and idempotency keys, all rebuilt from the log.

mod common;

use chat_proto as pb;
use common::*;

/// Everything a user could observe, rendered for comparison.
async fn observe(c: &mut Client, users: &[&str]) -> String {
    let mut out = String::new();
    let all = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    out += &format!(
        "{:?}\n",
        all.accounts
            .iter()
            .map(|a| (&a.username, a.account_id, a.created_at_ms))
            .collect::<Vec<_>>()
    );
    for u in users {
        let l = login(c, u).await;
        out += &format!(
            "{u}: delivered={} unread={}\n",
            l.delivered_cursor, l.unread_count
        );
        let convs = c
            .conversations(pb::ConversationsRequest {
                token: l.token.clone(),
                min_applied: 0,
            })
            .await
            .unwrap()
            .into_inner();
        for conv in convs.conversations {
            let h = c
                .history(pb::HistoryRequest {
                    token: l.token.clone(),
                    peer: conv.peer.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            out += &format!(
                "  {} unread={} {:?}\n",
                conv.peer, conv.unread_count, h.messages
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_exactly_the_same_state() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    account(&mut c, "cy").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (from, to) = if i % 3 == 0 {
            (&bob, "ann")
        } else {
            (&ann, "bob")
        };
        ids.push(
            send(&mut c, from, to, &format!("message {i}"))
                .await
                .message_id,
        );
    }
    c.ack(pb::AckRequest {
        token: bob.clone(),
        up_to: ids[10],
        min_applied: 0,
    })
    .await
    .unwrap();
    c.mark_read(pb::MarkReadRequest {
        token: bob.clone(),
        peer: "ann".into(),
        up_to: ids[5],
        min_applied: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_messages(pb::DeleteMessagesRequest {
        token: ann.clone(),
        ids: vec![ids[1], ids[3]],
        min_applied: 0,
    })
    .await
    .unwrap();
    let before = observe(&mut c, &["ann", "bob", "cy"]).await;

    let tmp = server.stop().await.unwrap();
    let server = TestServer::start_with(config(tmp.path())).await;
    let mut c = server.client().await;
    let after = observe(&mut c, &["ann", "bob", "cy"]).await;
    assert_eq!(before.lines().count(), after.lines().count());
    // Logins in `observe` add sessions but change nothing else observed.
    assert_eq!(before, after);

    // Sessions survive too, and so do idempotency keys.
    let again = send_keyed(&mut c, &ann, "bob", "message 1", "bob-message 1-9").await;
    assert_eq!(again.message_id, ids[1]);
    let h = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "ann".into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.messages.len(), 20, "no second copy was made");
    drop(tmp);
}
