//! The client against fake servers on 127.0.0.1: failover between servers,
//! which calls are retried and with what, read-your-writes cursors, and the
//! subscription resuming without gap or duplicate. Every test runs under a
//! deadline; none sleeps to wait for something.

mod fake;

use std::future::Future;
use std::time::Duration;

use chat_client::{
    Backoff, Client, ClientConfig, ClientError, Code, ConnectionState, Event, KeepAlive, MessageId,
    Role, Session, Subscription,
};
use chat_proto as proto;
use fake::{FakeCluster, Relay, RunningServer, dead_address};

/// Long enough for any of these tests on a loaded machine; a hang fails.
const DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("the test did not finish within its deadline")
}

/// A config for `servers` with short waits, so failover tests run fast.
fn config(servers: &[&str]) -> ClientConfig {
    ClientConfig {
        servers: servers.iter().map(|s| (*s).to_owned()).collect(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        failover_attempts: 6,
        tls_ca: None,
        keep_alive: Some(KeepAlive::default()),
    }
}

/// Two fake servers over one state, A preferred.
async fn two_servers() -> (FakeCluster, RunningServer, RunningServer) {
    let cluster = FakeCluster::default();
    let a = cluster.start_server(1).await;
    let b = cluster.start_server(2).await;
    (cluster, a, b)
}

async fn connect(servers: &[&RunningServer]) -> Client {
    let addresses: Vec<&str> = servers.iter().map(|s| s.address.as_str()).collect();
    Client::connect(config(&addresses)).await.expect("connect")
}

/// Creates an account and logs in to it.
async fn user(client: &Client, name: &str) -> Session {
    client
        .create_account(name, "password123")
        .await
        .expect("create account");
    client.login(name, "password123").await.expect("login")
}

/// Reads events until `count` messages have arrived; returns their ids.
async fn messages(subscription: &mut Subscription, count: usize) -> Vec<MessageId> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let event = subscription
            .next()
            .await
            .expect("the subscription ended")
            .expect("the subscription failed");
        if let Event::Message { id, message } = event {
            assert_eq!(id, message.id);
            ids.push(id);
        }
    }
    ids
}

fn state(client: &Client) -> ConnectionState {
    client.connection_state().borrow().clone()
}

#[tokio::test]
async fn connect_skips_servers_that_refuse() {
    within(async {
        let cluster = FakeCluster::default();
        let a = cluster.start_server(1).await;
        let dead = dead_address().await;
        let client = Client::connect(config(&[&dead, &a.address])).await.unwrap();
        assert_eq!(client.current_server(), a.address);
        assert_eq!(
            state(&client),
            ConnectionState::Connected {
                server: a.address.clone()
            }
        );
        assert_eq!(client.servers(), [dead, a.address]);
    })
    .await;
}

#[tokio::test]
async fn connect_names_every_server_it_tried() {
    within(async {
        let (first, second) = (dead_address().await, dead_address().await);
        let error = Client::connect(config(&[&first, &second]))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ClientError::NoServerReachable {
                tried: vec![first, second]
            }
        );
    })
    .await;
}

#[tokio::test]
async fn writes_move_to_the_leader_a_server_names() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        user(&client, "bob").await;
        *a.faults.leader.lock().unwrap() = Some(b.address.clone());

        client.send(&alice.token, "bob", "one").await.unwrap();
        assert_eq!(client.current_server(), b.address);
        assert_eq!(
            state(&client),
            ConnectionState::Connected {
                server: b.address.clone()
            }
        );
        client.send(&alice.token, "bob", "two").await.unwrap();
        assert_eq!(a.calls_of("Send").len(), 1);
        assert_eq!(b.calls_of("Send").len(), 1);

        // A leader the client was not given is not followed.
        *b.faults.leader.lock().unwrap() = Some("10.9.9.9:50051".into());
        client.send(&alice.token, "bob", "three").await.unwrap();
        assert_eq!(client.current_server(), b.address);
        assert_eq!(b.calls_of("Send").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_read_fails_over_to_the_next_server() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        user(&client, "alice").await;
        a.faults
            .unavailable_next
            .store(1, std::sync::atomic::Ordering::SeqCst);

        let page = client.list_accounts("*", None, 0).await.unwrap();

        assert_eq!(page.accounts.len(), 1);
        assert_eq!(page.accounts[0].username, "alice");
        assert_eq!(client.current_server(), b.address);
        assert_eq!(
            state(&client),
            ConnectionState::Connected {
                server: b.address.clone()
            }
        );
        assert_eq!(a.calls_of("ListAccounts").len(), 1);
        assert_eq!(b.calls_of("ListAccounts").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_send_retried_after_an_unknown_outcome_keeps_its_key() {
    within(async {
        let (cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        user(&client, "bob").await;
        // A applies the send, then the reply is lost.
        a.faults
            .apply_then_fail_next
            .store(1, std::sync::atomic::Ordering::SeqCst);

        let sent = client
            .send(&alice.token, "bob", "hello, bob")
            .await
            .unwrap();

        let on_a = a.calls_of("Send");
        let on_b = b.calls_of("Send");
        assert_eq!(on_a.len(), 1);
        assert_eq!(on_b.len(), 1);
        assert_eq!(
            on_a[0].client_msg_id.as_deref(),
            Some(sent.client_msg_id.as_str())
        );
        assert_eq!(on_b[0].client_msg_id, on_a[0].client_msg_id);
        let stored = cluster.messages();
        assert_eq!(stored.len(), 1, "the retry made a duplicate");
        assert_eq!(stored[0].id, sent.id);
    })
    .await;
}

#[tokio::test]
async fn send_with_id_returns_the_first_send_for_a_known_key() {
    within(async {
        let (cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        user(&client, "bob").await;
        let key = Client::new_client_msg_id();

        let first = client
            .send_with_id(&alice.token, "bob", "hi", &key)
            .await
            .unwrap();
        let again = client
            .send_with_id(&alice.token, "bob", "hi", &key)
            .await
            .unwrap();

        assert_eq!(first, again);
        assert_eq!(first.client_msg_id, key);
        assert_eq!(cluster.messages().len(), 1);
        assert_ne!(Client::new_client_msg_id(), key);
    })
    .await;
}

#[tokio::test]
async fn a_server_answer_is_not_retried_and_is_shown_verbatim() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;

        let error = client.send(&alice.token, "nobody", "hi").await.unwrap_err();

        assert_eq!(error.code(), Some(Code::NotFound));
        assert_eq!(error.to_string(), "no account named nobody");
        assert_eq!(a.calls_of("Send").len(), 1);
        assert!(b.calls().is_empty());
        assert_eq!(client.current_server(), a.address);
    })
    .await;
}

#[tokio::test]
async fn delete_account_is_not_retried_after_an_unknown_outcome() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        a.faults
            .apply_then_fail_next
            .store(1, std::sync::atomic::Ordering::SeqCst);

        let error = client
            .delete_account(&alice.token, "password123")
            .await
            .unwrap_err();

        assert_eq!(error.code(), Some(Code::Unavailable));
        assert!(error.is_transient());
        assert_eq!(a.calls_of("DeleteAccount").len(), 1);
        assert!(b.calls_of("DeleteAccount").is_empty());
        // The next call goes to a server that has not just failed.
        assert_eq!(client.current_server(), b.address);
    })
    .await;
}

#[tokio::test]
async fn logout_retried_after_it_closed_the_session_succeeds() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        a.faults
            .apply_then_fail_next
            .store(1, std::sync::atomic::Ordering::SeqCst);

        client.logout(&alice.token).await.unwrap();

        assert_eq!(b.calls_of("Logout").len(), 1);
        // A first attempt that finds no session is an error, though.
        let error = client.logout(&alice.token).await.unwrap_err();
        assert!(error.is_unauthenticated());
    })
    .await;
}

#[tokio::test]
async fn create_account_retried_after_it_succeeded_reports_already_exists() {
    // The documented caveat: the retry cannot tell its own account from
    // someone else's.
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        a.faults
            .apply_then_fail_next
            .store(1, std::sync::atomic::Ordering::SeqCst);

        let error = client
            .create_account("alice", "password123")
            .await
            .unwrap_err();

        assert_eq!(error.code(), Some(Code::AlreadyExists));
        client.login("alice", "password123").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reads_after_a_failover_wait_for_the_clients_own_writes() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        user(&client, "bob").await;
        let sent = client.send(&alice.token, "bob", "hello").await.unwrap();
        assert_eq!(client.read_cursor(), sent.id);
        a.faults
            .unavailable_next
            .store(1, std::sync::atomic::Ordering::SeqCst);

        let page = client.history(&alice.token, "bob", None, 0).await.unwrap();

        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].body, "hello");
        let on_b = b.calls_of("History");
        assert_eq!(on_b.len(), 1);
        assert_eq!(on_b[0].min_applied, sent.id);
        client.conversations(&alice.token).await.unwrap();
        assert_eq!(b.calls_of("Conversations")[0].min_applied, sent.id);
    })
    .await;
}

#[tokio::test]
async fn a_call_gives_up_when_no_server_is_left() {
    within(async {
        let cluster = FakeCluster::default();
        let a = cluster.start_server(1).await;
        let client = connect(&[&a]).await;
        let address = a.address.clone();
        a.stop().await;

        let error = client.list_accounts("*", None, 0).await.unwrap_err();

        assert_eq!(
            error,
            ClientError::NoServerReachable {
                tried: vec![address]
            }
        );
        assert_eq!(state(&client), ConnectionState::Failed);
    })
    .await;
}

#[tokio::test]
async fn writes_and_receipts_reach_the_server() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let alice = user(&client, "alice").await;
        user(&client, "bob").await;
        let sent = client.send(&alice.token, "bob", "hi").await.unwrap();

        client.ack(&alice.token, sent.id).await.unwrap();
        assert_eq!(
            client
                .mark_read(&alice.token, "bob", sent.id)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            client
                .delete_messages(&alice.token, &[sent.id])
                .await
                .unwrap(),
            1
        );

        assert!(client.read_cursor() > sent.id);
        let status = client.cluster_status().await.unwrap();
        assert_eq!(status.node_id, 1);
        assert_eq!(status.role, Role::Leader);
        assert_eq!(status.leader_address, None);
    })
    .await;
}

/// Alice (on her own client) sends `count` messages to bob; returns their ids.
async fn send_messages(client: &Client, alice: &Session, count: usize) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let sent = client
            .send(&alice.token, "bob", &format!("message {n}"))
            .await
            .unwrap();
        ids.push(sent.id);
    }
    ids
}

/// Two clients, alice's and bob's, on servers A then B.
async fn alice_and_bob(a: &RunningServer, b: &RunningServer) -> (Client, Session, Client, Session) {
    let alice_client = connect(&[a, b]).await;
    let alice = user(&alice_client, "alice").await;
    let bob_client = connect(&[a, b]).await;
    let bob = user(&bob_client, "bob").await;
    (alice_client, alice, bob_client, bob)
}

#[tokio::test]
async fn a_subscription_fails_over_and_resumes_without_gap_or_duplicate() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let (alice_client, alice, bob_client, bob) = alice_and_bob(&a, &b).await;
        // A dies after CaughtUp and two messages.
        *a.faults.cut_next_stream.lock().unwrap() = Some((3, Code::Unavailable));
        let mut events = bob_client.subscribe(&bob.token, 0).await.unwrap();

        let sent = send_messages(&alice_client, &alice, 5).await;
        let received = messages(&mut events, 5).await;

        assert_eq!(received, sent);
        assert_eq!(events.last_event_id(), sent[4]);
        assert_eq!(bob_client.current_server(), b.address);
        let resubscribed = b.calls_of("Subscribe");
        assert_eq!(resubscribed.len(), 1);
        assert_eq!(resubscribed[0].after, sent[1]);
        assert!(resubscribed[0].min_applied >= sent[1]);
    })
    .await;
}

#[tokio::test]
async fn a_subscription_leaves_a_server_that_fell_silent() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let relay = Relay::start(&a.address).await;
        let alice_client = connect(&[&b]).await;
        let alice = user(&alice_client, "alice").await;
        // Short pings, so the test is quick; the default's bound is a unit
        // test of the config.
        let bob_client = Client::connect(ClientConfig {
            keep_alive: Some(KeepAlive {
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(500),
            }),
            ..config(&[&relay.address, &b.address])
        })
        .await
        .unwrap();
        let bob = user(&bob_client, "bob").await;
        let mut events = bob_client.subscribe(&bob.token, 0).await.unwrap();

        // A neither answers nor closes: only the missing ping answers tell.
        relay.fall_silent();
        let sent = send_messages(&alice_client, &alice, 2).await;
        let received = messages(&mut events, 2).await;

        assert_eq!(received, sent);
        assert_eq!(bob_client.current_server(), b.address);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_slow_subscriber_resubscribes_from_its_cursor() {
    for code in [Code::Aborted, Code::ResourceExhausted] {
        within(async {
            let (_cluster, a, b) = two_servers().await;
            let (alice_client, alice, bob_client, bob) = alice_and_bob(&a, &b).await;
            *a.faults.cut_next_stream.lock().unwrap() = Some((2, code));
            let mut events = bob_client.subscribe(&bob.token, 0).await.unwrap();

            let sent = send_messages(&alice_client, &alice, 4).await;
            let received = messages(&mut events, 4).await;

            assert_eq!(received, sent, "{code:?}");
            // Same server: it asked for a resubscribe, it did not fail.
            assert_eq!(bob_client.current_server(), a.address);
            let subscribes = a.calls_of("Subscribe");
            assert_eq!(subscribes.len(), 2);
            assert_eq!(subscribes[1].after, sent[0]);
            assert!(b.calls().is_empty());
        })
        .await;
    }
}

#[tokio::test]
async fn a_subscription_drops_events_a_server_replays() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let (alice_client, alice, bob_client, bob) = alice_and_bob(&a, &b).await;
        *a.faults.cut_next_stream.lock().unwrap() = Some((3, Code::Unavailable));
        b.faults
            .ignore_cursor
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut events = bob_client.subscribe(&bob.token, 0).await.unwrap();

        let sent = send_messages(&alice_client, &alice, 5).await;
        let received = messages(&mut events, 5).await;

        assert_eq!(received, sent);
        assert_eq!(b.calls_of("Subscribe").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_subscription_ends_when_the_session_is_closed() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let (alice_client, alice, bob_client, bob) = alice_and_bob(&a, &b).await;
        let mut events = bob_client.subscribe(&bob.token, 0).await.unwrap();
        let sent = send_messages(&alice_client, &alice, 1).await;
        assert_eq!(messages(&mut events, 1).await, sent);

        bob_client.logout(&bob.token).await.unwrap();

        let error = events.next().await.unwrap().unwrap_err();
        assert!(error.is_unauthenticated(), "{error:?}");
        assert_eq!(error.to_string(), "the session was closed, log in again");
        assert_eq!(events.next().await, None);
    })
    .await;
}

#[tokio::test]
async fn subscribing_with_an_unknown_token_fails_at_once() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let client = connect(&[&a, &b]).await;
        let error = client.subscribe("no-such-token", 0).await.unwrap_err();
        assert!(error.is_unauthenticated());
        assert_eq!(a.calls_of("Subscribe").len(), 1);
        assert!(b.calls().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_subscription_from_a_saved_cursor_resumes_there() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let (alice_client, alice, _, bob) = alice_and_bob(&a, &b).await;
        let sent = send_messages(&alice_client, &alice, 3).await;
        // A new run of the program, with the cursor it saved last time.
        let fresh = connect(&[&a, &b]).await;
        assert_eq!(fresh.read_cursor(), 0);

        let mut events = fresh.subscribe(&bob.token, sent[0]).await.unwrap();

        assert_eq!(messages(&mut events, 2).await, sent[1..]);
        let subscribe = a.calls_of("Subscribe").pop().unwrap();
        assert_eq!(subscribe.after, sent[0]);
        assert!(subscribe.min_applied >= sent[0], "{subscribe:?}");
    })
    .await;
}

#[tokio::test]
async fn every_stream_tells_when_it_is_live() {
    within(async {
        let (_cluster, a, b) = two_servers().await;
        let (alice_client, alice, bob_client, bob) = alice_and_bob(&a, &b).await;
        let start = bob_client.read_cursor();
        // Dropped when the second message comes, after CaughtUp and the first.
        *a.faults.cut_next_stream.lock().unwrap() = Some((2, Code::Aborted));
        let mut events = bob_client.subscribe(&bob.token, start).await.unwrap();

        let mut seen = Vec::new();
        let sent = send_messages(&alice_client, &alice, 2).await;
        while seen.len() < 4 {
            seen.push(events.next().await.unwrap().unwrap());
        }

        // No backlog: the first CaughtUp is at the cursor the stream started
        // from. The second stream's backlog ends at the second message, which
        // the consumer has already seen when its CaughtUp comes.
        let kinds: Vec<(bool, u64)> = seen
            .iter()
            .map(|event| (matches!(event, Event::CaughtUp { .. }), event.id()))
            .collect();
        assert_eq!(
            kinds,
            [
                (true, start),
                (false, sent[0]),
                (false, sent[1]),
                (true, sent[1])
            ]
        );
        assert_eq!(a.calls_of("Subscribe")[1].after, sent[0]);
    })
    .await;
}

#[tokio::test]
async fn presence_news_is_handed_out_without_moving_the_cursor() {
    within(async {
        let (cluster, a, b) = two_servers().await;
        let (alice_client, alice, bob_client, bob) = alice_and_bob(&a, &b).await;
        let mut events = bob_client.subscribe(&bob.token, 0).await.unwrap();
        let first = send_messages(&alice_client, &alice, 1).await;
        assert_eq!(messages(&mut events, 1).await, first);

        cluster.tell(
            bob.account_id,
            proto::Event {
                id: 0,
                kind: Some(proto::event::Kind::Presence(proto::Presence {
                    full: false,
                    online: vec![alice.account_id],
                    offline: vec![],
                })),
            },
        );
        let news = events.next().await.unwrap().unwrap();
        assert_eq!(
            news,
            Event::Presence {
                full: false,
                online: vec![alice.account_id],
                offline: vec![],
            }
        );
        assert_eq!(news.id(), 0);
        // The cursor is still the message's: a resume starts after it.
        assert_eq!(events.last_event_id(), first[0]);
        let second = send_messages(&alice_client, &alice, 1).await;
        assert_eq!(messages(&mut events, 1).await, second);
        assert_eq!(events.last_event_id(), second[0]);
    })
    .await;
}
