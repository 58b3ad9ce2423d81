//! Test servers and clients: an in-process `chat-server` on `127.0.0.1:0`
//! with a temporary data directory, stopped when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_proto::chat_client::ChatClient;
use chat_proto::{self as pb};
use chat_server::{Config, HashingCost};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub type Client = ChatClient<Channel>;

/// A server running in this process; shut down and awaited on `stop`, or
/// told to stop when dropped.
pub struct TestServer {
    pub addr: String,
    pub dir: PathBuf,
    /// Keeps a temporary directory alive when the server owns it.
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow_like::Result>>,
}

mod anyhow_like {
    pub type Result = std::result::Result<(), String>;
}

pub fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir);
    c.password_hashing = HashingCost::TESTING;
    c
}

impl TestServer {
    /// A server on a fresh temporary directory.
    pub async fn start() -> TestServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = TestServer::start_with(config(&dir)).await;
        s._tmp = Some(tmp);
        s
    }

    pub async fn start_with(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        TestServer::start_on(config, listener).await
    }

    /// A server on a listener bound beforehand (so a cluster's addresses
    /// are known before any of its servers starts).
    pub async fn start_on(config: Config, listener: tokio::net::TcpListener) -> TestServer {
        let addr = listener.local_addr().unwrap().to_string();
        let dir = config.data_dir.clone();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            chat_server::run(config, listener, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| format!("{e:#}"))
        });

        TestServer {
            addr,
            dir,
            _tmp: None,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        let ch = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        ChatClient::new(ch)
    }

    /// Stops the server and waits until it has flushed and exited; hands
    /// back the temporary directory so the data can be reopened.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server exited cleanly");
        }
        self._tmp.take()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Creates an account and logs in; returns the token.
pub async fn account(c: &mut Client, name: &str) -> String {
    c.create_account(pb::CreateAccountRequest {
        username: name.into(),
        password: format!("{name}-password"),
    })
    .await
    .expect("create account");
    login(c, name).await.token
}

pub async fn login(c: &mut Client, name: &str) -> pb::LoginResponse {
    c.login(pb::LoginRequest {
        username: name.into(),
        password: format!("{name}-password"),
        min_applied: 0,
    })
    .await
    .expect("login")
    .into_inner()
}

pub async fn send(c: &mut Client, token: &str, to: &str, body: &str) -> pb::SendResponse {
    let key: String = body.chars().take(40).collect();
    send_keyed(c, token, to, body, &format!("{to}-{key}-{}", body.len())).await
}

pub async fn send_keyed(
    c: &mut Client,
    token: &str,
    to: &str,
    body: &str,
    key: &str,
) -> pb::SendResponse {
    c.send(pb::SendRequest {
        token: token.into(),
        to: to.into(),
        body: body.into(),
        client_msg_id: key.into(),
        min_applied: 0,
        ..Default::default()
    })
    .await
    .expect("send")
    .into_inner()
}

/// The status code of a failed call.
pub fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

/// The next event of a subscription, or a panic after a deadline.
pub async fn next_event(
    stream: &mut tonic::Streaming<pb::Event>,
) -> Result<pb::Event, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(e))) => Ok(e),
        Ok(Ok(None)) => panic!("stream ended"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no event within 10 s"),
    }
}

/// Bodies of message events until the caught-up marker.
pub async fn backlog(stream: &mut tonic::Streaming<pb::Event>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let e = next_event(stream).await.expect("event");
        match e.kind.expect("kind") {
            pb::event::Kind::Message(m) => out.push((e.id, m.body)),
            pb::event::Kind::CaughtUp(_) => return out,
            _ => {}
        }
    }
}

/// Whether `name` has an open session, as `ListAccounts` (which needs no
/// session, so asking does not keep anyone active) reports it.
pub async fn online(c: &mut Client, name: &str) -> bool {
    c.list_accounts(pb::ListAccountsRequest {
        pattern: name.into(),
        ..Default::default()
    })
    .await
    .expect("list accounts")
    .into_inner()
    .accounts
    .iter()
    .any(|a| a.username == name && a.online)
}

/// Waits (up to `within`) until the server has ended `name`'s idle
/// session, then checks that its `token` is refused.
pub async fn wait_logged_out(c: &mut Client, name: &str, token: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    while online(c, name).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle session of {name} was never closed"
        );
        poll.tick().await;
    }
    let status = c
        .conversations(pb::ConversationsRequest {
            token: token.into(),
            min_applied: 0,
        })
        .await
        .expect_err("an ended session is refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
