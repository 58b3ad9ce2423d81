//! A careless or hostile client, over a real socket: each test is one way
//! a client once could get around a limit or hurt the server.

mod common;

use chat_proto as pb;
use common::{TestServer, config};
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

/// One address creates a bounded number of accounts per minute.
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
    let refused = create(&mut c, "late").await.unwrap_err();
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
        })
        .await
        .unwrap_err();
    check(read, "MarkRead.peer");
}
