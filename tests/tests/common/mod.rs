//! Test servers and clients: an in-process `chat-server` on `127.0.0.1:0`
//! with a temporary data directory, stopped when dropped.

#![allow(dead_code)]

use std::collections::BTreeSet;
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

/// The next event of a subscription, or a panic after a deadline;
/// presence and directory news (not in the log, see [`Watch`]) are
/// skipped.
pub async fn next_event(
    stream: &mut tonic::Streaming<pb::Event>,
) -> Result<pb::Event, tonic::Status> {
    loop {
        let event = next_any_event(stream).await?;
        if !matches!(
            event.kind,
            Some(pb::event::Kind::Presence(_) | pb::event::Kind::Directory(_))
        ) {
            return Ok(event);
        }
    }
}

/// The next event of a subscription, news included, or a panic after a
/// deadline.
pub async fn next_any_event(
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

/// Whether `name` shows as online (a Subscribe stream open on some
/// server) to the holder of `token`, as `ListAccounts` reports it.
pub async fn online_to(c: &mut Client, token: &str, name: &str) -> bool {
    c.list_accounts(pb::ListAccountsRequest {
        pattern: name.into(),
        token: token.into(),
        ..Default::default()
    })
    .await
    .expect("list accounts")
    .into_inner()
    .accounts
    .iter()
    .any(|a| a.username == name && a.online)
}

/// Leaves the session of `token` unused for longer than `idle`, then
/// checks that it has ended (the server's sweeper, or the call itself,
/// found it idle); tries again up to `within` in case a use was still
/// being counted.
pub async fn wait_logged_out(c: &mut Client, token: &str, idle: Duration, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Being idle is the point: time has to pass without a call.
        tokio::time::sleep(idle + Duration::from_millis(100)).await;
        let status = c
            .conversations(pb::ConversationsRequest {
                token: token.into(),
                min_applied: 0,
            })
            .await;
        match status {
            Err(s) if s.code() == tonic::Code::Unauthenticated => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the idle session was never closed: {other:?}"
            ),
        }
    }
}

/// A stream, and what its news said so far: who is online, every account
/// it heard of through presence at all, and the directory's news.
pub struct Watch {
    pub stream: tonic::Streaming<pb::Event>,
    pub online: BTreeSet<u64>,
    pub heard_of: BTreeSet<u64>,
    pub fulls: usize,
    pub created: Vec<(u64, String, bool)>,
    pub deleted: Vec<u64>,
}

impl Watch {
    pub async fn open(c: &mut Client, token: &str) -> Watch {
        Watch::open_applied(c, token, 0).await
    }

    /// [`Watch::open`] on a server that has applied `min_applied`.
    pub async fn open_applied(c: &mut Client, token: &str, min_applied: u64) -> Watch {
        let stream = c
            .subscribe(pb::SubscribeRequest {
                token: token.into(),
                after: 0,
                min_applied,
            })
            .await
            .expect("subscribe")
            .into_inner();
        let mut watch = Watch {
            stream,
            online: BTreeSet::new(),
            heard_of: BTreeSet::new(),
            fulls: 0,
            created: Vec::new(),
            deleted: Vec::new(),
        };
        // The full list follows the CaughtUp.
        watch.until(|w| w.fulls > 0).await;
        watch
    }

    /// Reads the stream until `done` holds (`next_event` gives up after
    /// 10 s without an event).
    pub async fn until(&mut self, done: impl Fn(&Watch) -> bool) {
        while !done(self) {
            let event = next_any_event(&mut self.stream).await.expect("event");
            let kind = event.kind.expect("kind");
            if matches!(
                kind,
                pb::event::Kind::Presence(_) | pb::event::Kind::Directory(_)
            ) {
                assert_eq!(event.id, 0, "news is not in the log");
            }
            match kind {
                pb::event::Kind::Presence(p) => {
                    if p.full {
                        self.online.clear();
                        self.fulls += 1;
                    }
                    self.heard_of.extend(p.online.iter().chain(&p.offline));
                    self.online.extend(p.online);
                    for id in p.offline {
                        self.online.remove(&id);
                    }
                }
                pb::event::Kind::Directory(d) => {
                    (self.created).extend(
                        (d.created.into_iter()).map(|a| (a.account_id, a.username, a.online)),
                    );
                    self.deleted.extend(d.deleted);
                }
                _ => {}
            }
        }
    }
}

pub fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

/// The id of account `name`.
pub async fn id_of(c: &mut Client, name: &str) -> u64 {
    let listed = c
        .list_accounts(pb::ListAccountsRequest {
            pattern: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    listed.accounts[0].account_id
}
