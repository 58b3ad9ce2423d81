//! Every RPC of `chat.v1.Chat` against a real server over a real socket:
//! the happy paths, every error code, and the rules of who may see what.

mod common;

use chat_proto as pb;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sessions_and_their_errors() {
    let server = TestServer::start().await;
    let mut c = server.client().await;

    let created = c
        .create_account(pb::CreateAccountRequest {
            username: "Alice".into(),
            password: "alice-password".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.username, "Alice");
    assert_eq!(created.account_id, created.log_position);

    // Names are unique ignoring case.
    let dup = c
        .create_account(pb::CreateAccountRequest {
            username: "ALICE".into(),
            password: "whatever-password".into(),
        })
        .await;
    assert_eq!(code(dup), Code::AlreadyExists);

    // Bad input is INVALID_ARGUMENT with the rule in the message.
    for (name, password) in [
        ("", "long-enough"),
        ("has space", "long-enough"),
        (&"x".repeat(33)[..], "long-enough"),
        ("bob", "short"),
    ] {
        let r = c
            .create_account(pb::CreateAccountRequest {
                username: name.into(),
                password: password.into(),
            })
            .await;
        let status = r.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
        assert!(
            status.message().contains("username is 1 to 32")
                || status.message().contains("password is 8 to 1024")
        );
    }

    // Unknown user and wrong password get the same answer.
    let unknown = c
        .login(pb::LoginRequest {
            username: "nobody".into(),
            password: "alice-password".into(),
            min_applied: 0,
        })
        .await
        .unwrap_err();
    let wrong = c
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: "not-the-password".into(),
            min_applied: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (wrong.code(), wrong.message())
    );
    assert_eq!(wrong.code(), Code::Unauthenticated);

    // Login works ignoring case and reports the session's facts.
    let login = c
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: "alice-password".into(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.token.len(), 64);
    assert_eq!(login.username, "Alice");
    assert_eq!(login.unread_count, 0);
    assert_eq!(login.session_idle_timeout_secs, 30 * 60);

    // A saved token resumes its session: the same facts, no new session.
    let resumed = c
        .resume(pb::ResumeRequest {
            token: login.token.clone(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            resumed.token.as_str(),
            resumed.account_id,
            resumed.username.as_str()
        ),
        (login.token.as_str(), login.account_id, "Alice")
    );
    assert_eq!(resumed.delivered_cursor, login.delivered_cursor);
    for token in ["", "not-a-token"] {
        let refused = c
            .resume(pb::ResumeRequest {
                token: token.into(),
                min_applied: 0,
            })
            .await;
        assert_eq!(code(refused), Code::Unauthenticated, "{token:?}");
    }

    // Logout ends the session.
    c.logout(pb::LogoutRequest {
        token: login.token.clone(),
        min_applied: 0,
    })
    .await
    .unwrap();
    let after = c
        .conversations(pb::ConversationsRequest {
            token: login.token.clone(),
            min_applied: 0,
        })
        .await;
    assert_eq!(code(after), Code::Unauthenticated);
    let ended = c
        .resume(pb::ResumeRequest {
            token: login.token.clone(),
            min_applied: 0,
        })
        .await;
    assert_eq!(
        code(ended),
        Code::Unauthenticated,
        "a closed session does not resume"
    );
    let missing = c.conversations(pb::ConversationsRequest::default()).await;
    assert_eq!(code(missing), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_rate_limited() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    account(&mut c, "carol").await;
    let bad = pb::LoginRequest {
        username: "carol".into(),
        password: "wrong-password".into(),
        min_applied: 0,
    };
    for _ in 0..5 {
        assert_eq!(code(c.login(bad.clone()).await), Code::Unauthenticated);
    }
    let limited = c.login(bad).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited.message().contains("try again in"),
        "{}",
        limited.message()
    );
    // Even the right password waits out the lockout.
    let good = c
        .login(pb::LoginRequest {
            username: "carol".into(),
            password: "carol-password".into(),
            min_applied: 0,
        })
        .await;
    assert_eq!(code(good), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_history_receipts_and_deletion() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;

    let m1 = send(&mut c, &ann, "bob", "hi bob").await;
    let m2 = send(&mut c, &ann, "BOB", "are you there?").await;
    let m3 = send(&mut c, &bob, "ann", "yes").await;
    assert!(m1.message_id < m2.message_id && m2.message_id < m3.message_id);

    // Idempotent: the same key returns the first message, and makes no second.
    let again = send_keyed(&mut c, &ann, "bob", "hi bob", "bob-hi bob-6").await;
    assert_eq!(again.message_id, m1.message_id);

    // Errors of send.
    let to_nobody = c
        .send(pb::SendRequest {
            token: ann.clone(),
            to: "nobody".into(),
            body: "x".into(),
            client_msg_id: "k".into(),
            min_applied: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(code(to_nobody), Code::NotFound);
    for (body, key) in [
        ("", "k1"),
        (&"x".repeat(16 * 1024 + 1)[..], "k2"),
        ("ok", ""),
    ] {
        let r = c
            .send(pb::SendRequest {
                token: ann.clone(),
                to: "bob".into(),
                body: body.into(),
                client_msg_id: key.into(),
                min_applied: 0,
                ..Default::default()
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument);
    }
    let to_self = c
        .send(pb::SendRequest {
            token: ann.clone(),
            to: "ann".into(),
            body: "me".into(),
            client_msg_id: "self".into(),
            min_applied: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(code(to_self), Code::InvalidArgument);
    // The largest body is accepted.
    send(&mut c, &ann, "bob", &"y".repeat(16 * 1024)).await;

    // Conversations and unread counts.
    let convs = c
        .conversations(pb::ConversationsRequest {
            token: bob.clone(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(convs.total_unread, 3);
    assert_eq!(convs.conversations.len(), 1);
    assert_eq!(convs.conversations[0].peer, "ann");
    assert_eq!(convs.conversations[0].unread_count, 3);

    // History: both directions, newest first, paged.
    let page = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "ann".into(),
            before: 0,
            limit: 2,
            min_applied: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[1].body, "yes");
    let rest = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "ann".into(),
            before: page.next_before,
            limit: 10,
            min_applied: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bodies: Vec<&str> = rest.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["are you there?", "hi bob"]);
    assert_eq!(rest.next_before, 0);
    let too_many = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "ann".into(),
            limit: 1001,
            ..Default::default()
        })
        .await;
    assert_eq!(code(too_many), Code::InvalidArgument);
    let no_peer = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "zed".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(no_peer), Code::NotFound);

    // Receipts: ack then read; ann's history shows them.
    c.ack(pb::AckRequest {
        token: bob.clone(),
        up_to: m1.message_id,
        min_applied: 0,
    })
    .await
    .unwrap();
    let read = c
        .mark_read(pb::MarkReadRequest {
            token: bob.clone(),
            peer: "ann".into(),
            up_to: m2.message_id,
            min_applied: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.unread_count, 1, "the 16 KiB message is still unread");
    let beyond = c
        .ack(pb::AckRequest {
            token: bob.clone(),
            up_to: 1_000_000,
            min_applied: 0,
        })
        .await;
    assert_eq!(code(beyond), Code::InvalidArgument);
    let ann_view = c
        .history(pb::HistoryRequest {
            token: ann.clone(),
            peer: "bob".into(),
            min_applied: read.log_position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let flags: Vec<(String, bool, bool)> = ann_view
        .messages
        .iter()
        .filter(|m| m.from == "ann")
        .map(|m| (m.body.chars().take(6).collect(), m.delivered, m.read))
        .collect();
    assert_eq!(
        flags,
        vec![
            ("yyyyyy".into(), false, false),
            ("are yo".into(), true, true),
            ("hi bob".into(), true, true)
        ]
    );

    // Deleting removes from the caller's view only; others' ids are skipped.
    let deleted = c
        .delete_messages(pb::DeleteMessagesRequest {
            token: bob.clone(),
            ids: vec![m1.message_id, 999_999],
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    let count = |v: &pb::HistoryResponse| v.messages.len();
    let bob_view = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ann_view = c
        .history(pb::HistoryRequest {
            token: ann.clone(),
            peer: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((count(&bob_view), count(&ann_view)), (3, 4));
    let none = c
        .delete_messages(pb::DeleteMessagesRequest {
            token: bob.clone(),
            ids: vec![],
            min_applied: 0,
        })
        .await;
    assert_eq!(code(none), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reaches_only_its_own_data() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let eve = account(&mut c, "eve").await;
    let m = send(&mut c, &ann, "bob", "private").await;

    // Eve sees nothing of the ann-bob conversation, whatever she names.
    let h = c
        .history(pb::HistoryRequest {
            token: eve.clone(),
            peer: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.messages.is_empty());
    // She cannot delete or mark someone else's message.
    let d = c
        .delete_messages(pb::DeleteMessagesRequest {
            token: eve.clone(),
            ids: vec![m.message_id],
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 0);
    c.mark_read(pb::MarkReadRequest {
        token: eve.clone(),
        peer: "ann".into(),
        up_to: m.message_id,
        min_applied: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let convs = c
        .conversations(pb::ConversationsRequest {
            token: bob.clone(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        convs.total_unread, 1,
        "eve's calls changed nothing of bob's"
    );
    let ann_h = c
        .history(pb::HistoryRequest {
            token: ann.clone(),
            peer: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ann_h.messages[0].read);
    // A made-up token is refused.
    let forged = c
        .conversations(pb::ConversationsRequest {
            token: "0".repeat(64),
            min_applied: 0,
        })
        .await;
    assert_eq!(code(forged), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_erases_it_and_frees_the_name() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    send(&mut c, &ann, "bob", "from ann").await;
    send(&mut c, &bob, "ann", "from bob").await;

    let wrong = c
        .delete_account(pb::DeleteAccountRequest {
            token: ann.clone(),
            password: "not-it-at-all".into(),
            min_applied: 0,
        })
        .await;
    assert_eq!(code(wrong), Code::PermissionDenied);
    c.delete_account(pb::DeleteAccountRequest {
        token: ann.clone(),
        password: "ann-password".into(),
        min_applied: 0,
    })
    .await
    .unwrap();

    // Its sessions ended, its conversation is gone from bob's answers.
    let gone = c
        .conversations(pb::ConversationsRequest {
            token: ann.clone(),
            min_applied: 0,
        })
        .await;
    assert_eq!(code(gone), Code::Unauthenticated);
    let convs = c
        .conversations(pb::ConversationsRequest {
            token: bob.clone(),
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(convs.conversations.is_empty());
    assert_eq!(convs.total_unread, 0);
    let listed = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .accounts
            .iter()
            .map(|a| a.username.as_str())
            .collect::<Vec<_>>(),
        vec!["bob"]
    );

    // A new account with the name starts empty.
    let ann2 = account(&mut c, "ann").await;
    let h = c
        .history(pb::HistoryRequest {
            token: ann2.clone(),
            peer: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(h.messages.is_empty());
    let login = login(&mut c, "ann").await;
    assert_eq!(login.unread_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_accounts_by_wildcard_without_logging_in() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for name in ["alan", "Alice", "al", "bob", "carl", "alba"] {
        c.create_account(pb::CreateAccountRequest {
            username: name.into(),
            password: "long-enough".into(),
        })
        .await
        .unwrap();
    }
    let list = |pattern: &str, token: &str, limit: u32| pb::ListAccountsRequest {
        pattern: pattern.into(),
        page_token: token.into(),
        limit,
        min_applied: 0,
        token: String::new(),
    };
    let names = |r: &pb::ListAccountsResponse| {
        r.accounts
            .iter()
            .map(|a| a.username.clone())
            .collect::<Vec<_>>()
    };

    let all = c.list_accounts(list("", "", 0)).await.unwrap().into_inner();
    assert_eq!(
        names(&all),
        vec!["al", "alan", "alba", "Alice", "bob", "carl"]
    );
    assert!(all.next_page_token.is_empty());

    let p1 = c
        .list_accounts(list("AL*", "", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&p1), vec!["al", "alan"]);
    let p2 = c
        .list_accounts(list("AL*", &p1.next_page_token, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&p2), vec!["alba", "Alice"]);
    assert!(p2.next_page_token.is_empty());

    let q = c
        .list_accounts(list("?ob", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&q), vec!["bob"]);
    let mid = c
        .list_accounts(list("*l*", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&mid), vec!["al", "alan", "alba", "Alice", "carl"]);

    assert_eq!(
        code(c.list_accounts(list("*", "", 1001)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.list_accounts(list("a b", "", 0)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.list_accounts(list("b*", &p1.next_page_token, 0)).await),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_cluster_status_answer() {
    let server = TestServer::start().await;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut cluster = pb::cluster_client::ClusterClient::new(ch.clone());
    let s = cluster
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (s.node_id, s.leader_id, s.role),
        (1, 1, pb::Role::Leader as i32)
    );
    assert_eq!(s.members.len(), 1);
    assert_eq!(s.members[0].address, server.addr);
    assert!(s.applied_index >= 1);

    // The standard health service says SERVING for the chat service.
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec: tonic_prost_codec::Codec = Default::default();
    let reply: tonic::Response<HealthCheckResponse> = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: "chat.v1.Chat".into(),
            }),
            path,
            codec,
        )
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, 1, "SERVING");
}

/// Reflection answers in both versions: grpcurl speaks v1, while older
/// grpcurl, evans, Postman and Python's grpcio speak only v1alpha.
#[tokio::test]
async fn reflection_answers_in_v1_and_v1alpha() {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::{v1, v1alpha};

    let server = TestServer::start().await;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("v1: {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"chat.v1.Chat".to_string()), "v1: {names:?}");

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("v1alpha: {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"chat.v1.Chat".to_string()),
        "v1alpha: {names:?}"
    );
}

/// The two messages of grpc.health.v1, declared here to call the service
/// without another dependency.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

mod tonic_prost_codec {
    pub type Codec = tonic_prost::ProstCodec<super::HealthCheckRequest, super::HealthCheckResponse>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_logged_out() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    let idle = std::time::Duration::from_millis(300);
    cfg.session_idle = idle;
    let server = TestServer::start_with(cfg).await;
    let mut c = server.client().await;
    let token = account(&mut c, "sleepy").await;
    wait_logged_out(&mut c, &token, idle, std::time::Duration::from_secs(10)).await;
}
