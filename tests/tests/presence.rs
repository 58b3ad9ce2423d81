//! Presence and the live directory: online is an open Subscribe stream,
//! told only to those who share a conversation; new and deleted accounts
//! reach every stream without anyone asking.

mod common;

use chat_proto as pb;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_is_an_open_stream_and_only_those_who_share_a_conversation_hear_of_it() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let alice_token = account(&mut c, "alice").await;
    let bob_token = account(&mut c, "bob").await;
    let carol_token = account(&mut c, "carol").await;
    let alice = id_of(&mut c, "alice").await;
    let bob = id_of(&mut c, "bob").await;
    send(&mut c, &bob_token, "alice", "hi").await;

    // A session is not presence: alice is logged in but has no stream.
    let mut bob_watch = Watch::open(&mut c, &bob_token).await;
    assert!(!bob_watch.online.contains(&alice));
    assert!(!online_to(&mut c, &bob_token, "alice").await);
    let mut carol_watch = Watch::open(&mut c, &carol_token).await;

    // Alice opens a stream: her full list has bob, and bob hears of her.
    let mut alice_client = server.client().await;
    let alice_watch = Watch::open(&mut alice_client, &alice_token).await;
    assert_eq!(alice_watch.online, set(&[bob]));
    let began = std::time::Instant::now();
    bob_watch.until(|w| w.online.contains(&alice)).await;
    eprintln!("bob heard alice came online in {:?}", began.elapsed());

    // Listing with a session shows it to bob; to carol and to no session,
    // not.
    assert!(online_to(&mut c, &bob_token, "alice").await);
    assert!(!online_to(&mut c, &carol_token, "alice").await);
    assert!(!online_to(&mut c, "", "alice").await);

    // A new account reaches every stream; carol, who shares nothing with
    // alice, heard nothing of her before it (news comes in order).
    c.create_account(pb::CreateAccountRequest {
        username: "dave".into(),
        password: "dave-password".into(),
    })
    .await
    .unwrap();
    let dave = id_of(&mut c, "dave").await;
    carol_watch
        .until(|w| w.created.iter().any(|(id, ..)| *id == dave))
        .await;
    assert!(carol_watch.created.contains(&(dave, "dave".into(), false)));
    assert!(
        carol_watch.heard_of.is_empty(),
        "{:?}",
        carol_watch.heard_of
    );

    // Alice's stream closes: bob hears she went offline.
    drop(alice_watch);
    bob_watch.until(|w| !w.online.contains(&alice)).await;
    assert!(!online_to(&mut c, &bob_token, "alice").await);

    // A deleted account leaves every directory; carol still heard of no
    // one's presence.
    let dave_token = login(&mut c, "dave").await.token;
    c.delete_account(pb::DeleteAccountRequest {
        token: dave_token,
        password: "dave-password".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    carol_watch.until(|w| w.deleted.contains(&dave)).await;
    assert!(
        carol_watch.heard_of.is_empty(),
        "{:?}",
        carol_watch.heard_of
    );

    // A bad token in a listing is refused, not ignored.
    let refused = c
        .list_accounts(pb::ListAccountsRequest {
            pattern: "alice".into(),
            token: "not-a-token".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(refused), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_contacts_learn_each_others_presence_at_once() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let alice_token = account(&mut c, "alice").await;
    let carol_token = account(&mut c, "carol").await;
    let erin_token = account(&mut c, "erin").await;
    let alice = id_of(&mut c, "alice").await;
    let carol = id_of(&mut c, "carol").await;
    let erin = id_of(&mut c, "erin").await;

    let mut alice_watch = Watch::open(&mut c, &alice_token).await;
    let mut carol_watch = Watch::open(&mut c, &carol_token).await;
    let mut erin_watch = Watch::open(&mut c, &erin_token).await;
    assert!(alice_watch.online.is_empty() && carol_watch.online.is_empty());

    // Carol writes to alice for the first time: each learns the other is
    // online, though neither stream opened or closed.
    send(&mut c, &carol_token, "alice", "hello").await;
    carol_watch.until(|w| w.online.contains(&alice)).await;
    alice_watch.until(|w| w.online.contains(&carol)).await;

    // A group with erin: erin learns of both, both learn of erin.
    c.create_group(pb::CreateGroupRequest {
        token: alice_token.clone(),
        title: "team".into(),
        member_names: vec!["carol".into(), "erin".into()],
        client_request_id: "team-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    erin_watch.until(|w| w.online == set(&[alice, carol])).await;
    alice_watch.until(|w| w.online == set(&[carol, erin])).await;
    carol_watch.until(|w| w.online == set(&[alice, erin])).await;
}
