//! A careless or hostile client, over a real socket: each test is one way
//! a client once could get around a limit or hurt the server.

mod common;

use chat_proto as pb;
use common::{TestServer, config, next_event};
use tonic::Code;

async fn create(c: &mut common::Client, name: &str) -> Result<(), tonic::Status> {
    c.create_account(pb::CreateAccountRequest {
        username: name.into(),
        password: format!("{name}-password"),
    })
    .await
    .map(|_| ())
}

/// Concurrent guesses are each counted before their password is checked:
/// 64 at once for one account get at most the allowed 5 checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_do_not_pass_the_login_lockout() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    create(&mut c, "victim").await.unwrap();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut c = c.clone();
        guesses.spawn(async move {
            c.login(pb::LoginRequest {
                username: "victim".into(),
                password: format!("guess number {i}"),
                min_applied: 0,
            })
            .await
            .unwrap_err()
            .code()
        });
    }
    let mut checked = 0;
    while let Some(code) = guesses.join_next().await {
        match code.unwrap() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(checked <= 5, "{checked} guesses were checked");
    // The right password is refused too while the lockout lasts.
    let locked = c
        .login(pb::LoginRequest {
            username: "victim".into(),
            password: "victim-password".into(),
            min_applied: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
}

/// Password hashing runs a bounded number at a time; the rest wait in a
/// bounded queue or are refused at once, and other calls stay answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.password_hashing = chat_server::HashingCost {
        memory_kib: 8 * 1024,
        iterations: 4,
    };
    cfg.hash_workers = 1;
    cfg.hash_queue = 2;
    cfg.account_creations_per_minute = 0;
    let server = TestServer::start_with(cfg).await;
    let c = server.client().await;
    let mut creations = tokio::task::JoinSet::new();
    for i in 0..24 {
        let mut c = c.clone();
        creations.spawn(async move { create(&mut c, &format!("flood{i}")).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(result) = creations.join_next().await {
        match result.unwrap() {
            Ok(()) => created += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("try again"), "{}", s.message());
                refused += 1;
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert!(created >= 3, "{created} created");
    assert!(refused > 0, "nothing was refused: {created} created");
}

/// One address creates a bounded number of accounts per minute; a refusal
/// is held in the tarpit first, so that a client calling in a loop makes
/// about one call a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_creation_is_limited_per_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.account_creations_per_minute = 3;
    let server = TestServer::start_with(cfg).await;
    let mut c = server.client().await;
    for i in 0..3 {
        create(&mut c, &format!("early{i}")).await.unwrap();
    }
    let asked = std::time::Instant::now();
    let refused = create(&mut c, "late").await.unwrap_err();
    assert!(asked.elapsed() >= chat_server::testing::TARPIT_HOLD);
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("try again in"), "{refused:?}");
}

/// A huge name is refused without being echoed back: the error stays
/// small enough for every client to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_echo_oversized_input() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    create(&mut c, "ann").await.unwrap();
    let token = c
        .login(pb::LoginRequest {
            username: "ann".into(),
            password: "ann-password".into(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let huge = "x".repeat(1 << 20);
    let check = |s: tonic::Status, what: &str| {
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {}", s.code());
        assert!(
            s.message().len() < 200,
            "{what}: {} bytes",
            s.message().len()
        );
    };
    let sent = c
        .send(pb::SendRequest {
            token: token.clone(),
            to: huge.clone(),
            body: "hi".into(),
            client_msg_id: "k1".into(),
            min_applied: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(sent, "Send.to");
    let history = c
        .history(pb::HistoryRequest {
            token: token.clone(),
            peer: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(history, "History.peer");
    let read = c
        .mark_read(pb::MarkReadRequest {
            token,
            peer: huge,
            up_to: 1,
            min_applied: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(read, "MarkRead.peer");
}

async fn signed_in(c: &mut common::Client, name: &str) -> String {
    create(c, name).await.unwrap();
    c.login(pb::LoginRequest {
        username: name.into(),
        password: format!("{name}-password"),
        min_applied: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

/// One session holds a bounded number of subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_session_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.max_streams_per_session = 2;
    let server = TestServer::start_with(cfg).await;
    let mut c = server.client().await;
    let token = signed_in(&mut c, "ann").await;
    let subscribe = |c: &mut common::Client| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            c.subscribe(pb::SubscribeRequest {
                token,
                after: 0,
                min_applied: 0,
            })
            .await
        }
    };
    let first = subscribe(&mut c).await.unwrap();
    let _second = subscribe(&mut c).await.unwrap();
    let third = subscribe(&mut c).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    // Closing one makes room.
    drop(first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match subscribe(&mut c).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(tokio::time::Instant::now() < deadline, "no room made");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
}

/// A quiet but live client keeps its connection: it answers the server's
/// keepalive pings, so a subscription that sees nothing for many idle
/// periods still gets the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_live_subscription_is_not_cut() {
    use tokio_stream::StreamExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.keepalive = std::time::Duration::from_millis(300);
    let server = TestServer::start_with(cfg).await;
    let mut c = server.client().await;
    let ann = signed_in(&mut c, "ann").await;
    let bob = signed_in(&mut c, "bob").await;
    let mut listener = server.client().await;
    let mut stream = listener
        .subscribe(pb::SubscribeRequest {
            token: bob,
            after: 0,
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let caught_up = stream.next().await.unwrap().unwrap();
    assert!(matches!(caught_up.kind, Some(pb::event::Kind::CaughtUp(_))));
    // Five idle periods (twice the keepalive each) with nothing to say.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    c.send(pb::SendRequest {
        token: ann,
        to: "bob".into(),
        body: "still there?".into(),
        client_msg_id: "k".into(),
        min_applied: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let next = next_event(&mut stream).await.unwrap();
    let Some(pb::event::Kind::Message(m)) = next.kind else {
        panic!("{next:?}");
    };
    assert_eq!(m.body, "still there?");
}

/// A request over the size limit is RESOURCE_EXHAUSTED (gRPC's convention),
/// and the server goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_resource_exhausted() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let huge = c
        .send(pb::SendRequest {
            token: "t".into(),
            to: "bob".into(),
            body: "x".repeat(5 << 20),
            client_msg_id: "k".into(),
            min_applied: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
    assert!(huge.message().contains("send less"), "{huge:?}");
    create(&mut c, "after").await.unwrap();
}
