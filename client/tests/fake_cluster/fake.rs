//! An in-process fake of the chat cluster: one shared, trivially consistent
//! state behind several gRPC servers on `127.0.0.1:0`, each of which can be
//! told to fail in the ways a real replica does (answer UNAVAILABLE, apply a
//! write and then fail, cut a subscription, replay from the start). It
//! records every call, so a test can check what the client sent where. A
//! [`Relay`] in front of a server can make it fall silent without closing a
//! connection.
//!
//! It implements just enough of the API's meaning for the client's tests:
//! accounts, sessions, idempotent sends, history and subscriptions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_proto::chat_server::{Chat, ChatServer};
use chat_proto::cluster_server::{Cluster, ClusterServer};
use chat_proto::{self as proto, event::Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// The state every fake server shares: one log, applied at once everywhere.
#[derive(Debug, Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// The last log index handed out.
    last_index: u64,
    /// Lowercased username -> (account id, username, password).
    accounts: HashMap<String, (u64, String, String)>,
    /// Token -> account id.
    sessions: HashMap<String, u64>,
    /// (sender, client_msg_id) -> the first send's reply.
    sends: HashMap<(u64, String), proto::SendResponse>,
    messages: Vec<proto::Message>,
    /// Every subscription event: (account it is for, event).
    events: Vec<(u64, proto::Event)>,
    /// Events as they happen, and session closings, for open streams.
    live: broadcast::Sender<Live>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            last_index: 0,
            accounts: HashMap::new(),
            sessions: HashMap::new(),
            sends: HashMap::new(),
            messages: Vec::new(),
            events: Vec::new(),
            live: broadcast::Sender::new(256),
        }
    }
}

#[derive(Debug, Clone)]
enum Live {
    Event(u64, proto::Event),
    SessionClosed(String),
}

impl State {
    fn next_index(&mut self) -> u64 {
        self.last_index += 1;
        self.last_index
    }

    fn account_of(&self, token: &str) -> Result<u64, Status> {
        self.sessions
            .get(token)
            .copied()
            .ok_or_else(|| Status::unauthenticated("session expired, log in again"))
    }

    fn account_named(&self, username: &str) -> Result<(u64, String), Status> {
        self.accounts
            .get(&username.to_lowercase())
            .map(|(id, name, _)| (*id, name.clone()))
            .ok_or_else(|| Status::not_found(format!("no account named {username}")))
    }

    fn publish(&mut self, account: u64, event: proto::Event) {
        self.events.push((account, event.clone()));
        // No receiver is fine: nobody is subscribed.
        let _ = self.live.send(Live::Event(account, event));
    }
}

/// How one fake server misbehaves, set by the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer the next this many calls UNAVAILABLE without doing anything.
    pub unavailable_next: AtomicU32,
    /// Do the next this many writes, then answer UNAVAILABLE anyway: the
    /// client cannot know the write happened.
    pub apply_then_fail_next: AtomicU32,
    /// End the next Subscribe stream with this code after this many events.
    pub cut_next_stream: Mutex<Option<(usize, Code)>>,
    /// Ignore Subscribe's `after` and replay every event from the start.
    pub ignore_cursor: AtomicBool,
    /// Name this address as the leader on write replies, as a real
    /// follower does.
    pub leader: Mutex<Option<String>>,
}

/// One call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    /// Send's idempotency key.
    pub client_msg_id: Option<String>,
    /// A read's or Subscribe's read-your-writes cursor.
    pub min_applied: u64,
    /// Subscribe's cursor.
    pub after: u64,
}

impl Call {
    fn new(method: &'static str) -> Self {
        Self {
            method,
            client_msg_id: None,
            min_applied: 0,
            after: 0,
        }
    }
}

/// One fake server: the chat and cluster services over the shared state.
#[derive(Debug, Clone)]
struct Replica {
    node_id: u64,
    cluster: FakeCluster,
    faults: Arc<Faults>,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A fake server listening on 127.0.0.1.
#[derive(Debug)]
pub struct RunningServer {
    pub address: String,
    pub faults: Arc<Faults>,
    calls: Arc<Mutex<Vec<Call>>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Every call this server received, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Stops accepting connections, closes the open ones and waits until
    /// the server is gone.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.expect("fake server task");
    }
}

/// A TCP relay in front of a server that can fall silent: it keeps every
/// connection open but stops passing bytes either way, as a server does that
/// lost power or sits behind a partition.
#[derive(Debug)]
pub struct Relay {
    pub address: String,
    silent: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1 and relays every connection to `server`.
    pub async fn start(server: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let silent = Arc::new(AtomicBool::new(false));
        let server = server.to_owned();
        let task = tokio::spawn({
            let silent = silent.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(upstream) = TcpStream::connect(&server).await else {
                        continue;
                    };
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = upstream.into_split();
                    tokio::spawn(pass(from_client, to_server, silent.clone()));
                    tokio::spawn(pass(from_server, to_client, silent.clone()));
                }
            }
        });
        Self {
            address,
            silent,
            task,
        }
    }

    /// From now on, bytes are read and dropped: no answer, no close.
    pub fn fall_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes from `from` to `to` until either side closes, dropping
/// them once `silent` is set.
async fn pass(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, silent: Arc<AtomicBool>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("fake state lock")
}

impl FakeCluster {
    /// Starts one more server over this state, as node `node_id`.
    pub async fn start_server(&self, node_id: u64) -> RunningServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let replica = Replica {
            node_id,
            cluster: self.clone(),
            faults: Arc::default(),
            calls: Arc::default(),
        };
        let (faults, calls) = (replica.faults.clone(), replica.calls.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ChatServer::new(replica.clone()))
                .add_service(ClusterServer::new(replica))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("fake server");
        });
        RunningServer {
            address,
            faults,
            calls,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Tells `account`'s open streams `event` (news outside the log, such
    /// as presence, has id 0).
    pub fn tell(&self, account: u64, event: proto::Event) {
        lock(&self.state).publish(account, event);
    }

    /// The messages the state holds, in log order.
    pub fn messages(&self) -> Vec<proto::Message> {
        lock(&self.state).messages.clone()
    }
}

/// An address nothing listens on: bound once, then released.
pub async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: SocketAddr = listener.local_addr().expect("local address");
    drop(listener);
    address.to_string()
}

impl Replica {
    /// Records the call and applies the "unavailable" fault.
    fn enter(&self, call: Call) -> Result<(), Status> {
        lock(&self.calls).push(call);
        let fail = self
            .faults
            .unavailable_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Status::unavailable("fake: unavailable"));
        }
        Ok(())
    }

    /// Answers a write that has been applied, unless told to fail after it.
    fn reply<T>(&self, reply: T) -> Result<Response<T>, Status> {
        let fail = self
            .faults
            .apply_then_fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Status::unavailable("fake: applied, then lost the reply"));
        }
        let mut response = Response::new(reply);
        if let Some(leader) = lock(&self.faults.leader).as_deref() {
            response.metadata_mut().insert(
                chat_proto::LEADER_METADATA_KEY,
                leader.parse().expect("an address is valid metadata"),
            );
        }
        Ok(response)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.cluster.state)
    }
}

/// Sends one event on a stream, or the cut if this is where it falls.
/// Returns false when the stream is over.
async fn forward(
    tx: &mpsc::Sender<Result<proto::Event, Status>>,
    event: proto::Event,
    sent: &mut usize,
    cut: Option<(usize, Code)>,
) -> bool {
    if let Some((after, code)) = cut
        && *sent == after
    {
        let _ = tx.send(Err(Status::new(code, "fake: stream cut"))).await;
        return false;
    }
    *sent += 1;
    tx.send(Ok(event)).await.is_ok()
}

#[tonic::async_trait]
impl Chat for Replica {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<Response<proto::CreateAccountResponse>, Status> {
        self.enter(Call::new("CreateAccount"))?;
        let request = request.into_inner();
        let reply = {
            let mut state = self.state();
            let key = request.username.to_lowercase();
            if request.username.is_empty() {
                return Err(Status::invalid_argument("the username is empty"));
            }
            if state.accounts.contains_key(&key) {
                return Err(Status::already_exists(format!(
                    "the username {} is taken",
                    request.username
                )));
            }
            let id = state.next_index();
            state
                .accounts
                .insert(key, (id, request.username.clone(), request.password));
            proto::CreateAccountResponse {
                account_id: id,
                username: request.username,
                log_position: id,
            }
        };
        self.reply(reply)
    }

    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        self.enter(Call::new("Login"))?;
        let request = request.into_inner();
        let reply = {
            let mut state = self.state();
            let wrong = || Status::unauthenticated("wrong username or password");
            let (id, username, password) = state
                .accounts
                .get(&request.username.to_lowercase())
                .cloned()
                .ok_or_else(wrong)?;
            if password != request.password {
                return Err(wrong());
            }
            let index = state.next_index();
            let token = format!("token-{index}");
            state.sessions.insert(token.clone(), id);
            proto::LoginResponse {
                token,
                account_id: id,
                username,
                delivered_cursor: 0,
                unread_count: 0,
                session_idle_timeout_secs: 600,
                log_position: index,
            }
        };
        self.reply(reply)
    }

    async fn resume(
        &self,
        request: Request<proto::ResumeRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        self.enter(Call::new("Resume"))?;
        let token = request.into_inner().token;
        let reply = {
            let state = self.state();
            let id = state.account_of(&token)?;
            let username = (state.accounts.values())
                .find(|(account, _, _)| *account == id)
                .map(|(_, name, _)| name.clone())
                .unwrap_or_default();
            proto::LoginResponse {
                token,
                account_id: id,
                username,
                delivered_cursor: 0,
                unread_count: 0,
                session_idle_timeout_secs: 600,
                log_position: 0,
            }
        };
        self.reply(reply)
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        self.enter(Call::new("Logout"))?;
        let token = request.into_inner().token;
        let reply = {
            let mut state = self.state();
            state.account_of(&token)?;
            state.sessions.remove(&token);
            let index = state.next_index();
            let _ = state.live.send(Live::SessionClosed(token));
            proto::LogoutResponse {
                log_position: index,
            }
        };
        self.reply(reply)
    }

    async fn delete_account(
        &self,
        request: Request<proto::DeleteAccountRequest>,
    ) -> Result<Response<proto::DeleteAccountResponse>, Status> {
        self.enter(Call::new("DeleteAccount"))?;
        let request = request.into_inner();
        let reply = {
            let mut state = self.state();
            let account = state.account_of(&request.token)?;
            let key = state
                .accounts
                .iter()
                .find(|(_, (id, _, password))| *id == account && *password == request.password)
                .map(|(key, _)| key.clone())
                .ok_or_else(|| Status::unauthenticated("wrong password"))?;
            state.accounts.remove(&key);
            let closed: Vec<String> = state
                .sessions
                .iter()
                .filter(|(_, id)| **id == account)
                .map(|(token, _)| token.clone())
                .collect();
            for token in closed {
                state.sessions.remove(&token);
                let _ = state.live.send(Live::SessionClosed(token));
            }
            proto::DeleteAccountResponse {
                log_position: state.next_index(),
            }
        };
        self.reply(reply)
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        let request = request.into_inner();
        self.enter(Call {
            min_applied: request.min_applied,
            ..Call::new("ListAccounts")
        })?;
        let state = self.state();
        let mut accounts: Vec<proto::Account> = state
            .accounts
            .values()
            .map(|(id, username, _)| proto::Account {
                username: username.clone(),
                account_id: *id,
                created_at_ms: id * 1000,
                online: state.sessions.values().any(|a| a == id),
            })
            .collect();
        accounts.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(Response::new(proto::ListAccountsResponse {
            accounts,
            next_page_token: String::new(),
        }))
    }

    async fn send(
        &self,
        request: Request<proto::SendRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        let request = request.into_inner();
        self.enter(Call {
            client_msg_id: Some(request.client_msg_id.clone()),
            ..Call::new("Send")
        })?;
        let reply = {
            let mut state = self.state();
            let from = state.account_of(&request.token)?;
            let key = (from, request.client_msg_id.clone());
            if let Some(first) = state.sends.get(&key) {
                *first
            } else {
                let (to, to_name) = state.account_named(&request.to)?;
                let from_name = state
                    .accounts
                    .values()
                    .find(|(id, _, _)| *id == from)
                    .map(|(_, name, _)| name.clone())
                    .unwrap_or_default();
                let id = state.next_index();
                let message = proto::Message {
                    id,
                    from: from_name,
                    from_account_id: from,
                    to: to_name,
                    to_account_id: to,
                    body: request.body,
                    sent_at_ms: id * 1000,
                    delivered: false,
                    read: false,
                    ..Default::default()
                };
                state.messages.push(message.clone());
                let event = proto::Event {
                    id,
                    kind: Some(Kind::Message(message)),
                };
                state.publish(to, event.clone());
                state.publish(from, event);
                let reply = proto::SendResponse {
                    message_id: id,
                    sent_at_ms: id * 1000,
                    log_position: id,
                };
                state.sends.insert(key, reply);
                reply
            }
        };
        self.reply(reply)
    }

    type SubscribeStream = ReceiverStream<Result<proto::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        self.enter(Call {
            min_applied: request.min_applied,
            after: request.after,
            ..Call::new("Subscribe")
        })?;
        let after = if self.faults.ignore_cursor.load(Ordering::SeqCst) {
            0
        } else {
            request.after
        };
        // Backlog and live feed are taken under one lock, and events are
        // published under it too, so nothing falls between them.
        let (backlog, mut live, account) = {
            let state = self.state();
            let account = state.account_of(&request.token)?;
            let mut backlog: Vec<proto::Event> = state
                .events
                .iter()
                .filter(|(to, event)| *to == account && event.id > after)
                .map(|(_, event)| event.clone())
                .collect();
            // Like the real server: the cursor after the backlog, which is
            // `after` itself when there is no backlog.
            let cursor = backlog.last().map_or(after, |event| event.id);
            backlog.push(proto::Event {
                id: cursor,
                kind: Some(Kind::CaughtUp(proto::CaughtUp { cursor })),
            });
            (backlog, state.live.subscribe(), account)
        };
        let cut = lock(&self.faults.cut_next_stream).take();
        let token = request.token;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent = 0;
            for event in backlog {
                if !forward(&tx, event, &mut sent, cut).await {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(Live::Event(to, event)) if to == account => {
                        if !forward(&tx, event, &mut sent, cut).await {
                            return;
                        }
                    }
                    Ok(Live::SessionClosed(closed)) if closed == token => {
                        let _ = tx
                            .send(Err(Status::unauthenticated(
                                "the session was closed, log in again",
                            )))
                            .await;
                        return;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(Status::aborted("fake: fell behind"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn history(
        &self,
        request: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let request = request.into_inner();
        self.enter(Call {
            min_applied: request.min_applied,
            ..Call::new("History")
        })?;
        let state = self.state();
        let me = state.account_of(&request.token)?;
        let (peer, _) = state.account_named(&request.peer)?;
        let mut messages: Vec<proto::Message> = state
            .messages
            .iter()
            .filter(|m| {
                (m.from_account_id == me && m.to_account_id == peer)
                    || (m.from_account_id == peer && m.to_account_id == me)
            })
            .filter(|m| request.before == 0 || m.id < request.before)
            .cloned()
            .collect();
        messages.reverse();
        Ok(Response::new(proto::HistoryResponse {
            messages,
            next_before: 0,
            ..Default::default()
        }))
    }

    async fn conversations(
        &self,
        request: Request<proto::ConversationsRequest>,
    ) -> Result<Response<proto::ConversationsResponse>, Status> {
        let request = request.into_inner();
        self.enter(Call {
            min_applied: request.min_applied,
            ..Call::new("Conversations")
        })?;
        self.state().account_of(&request.token)?;
        Ok(Response::new(proto::ConversationsResponse::default()))
    }

    async fn ack(
        &self,
        request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        self.enter(Call::new("Ack"))?;
        let reply = {
            let mut state = self.state();
            state.account_of(&request.into_inner().token)?;
            proto::AckResponse {
                log_position: state.next_index(),
            }
        };
        self.reply(reply)
    }

    async fn mark_read(
        &self,
        request: Request<proto::MarkReadRequest>,
    ) -> Result<Response<proto::MarkReadResponse>, Status> {
        self.enter(Call::new("MarkRead"))?;
        let reply = {
            let mut state = self.state();
            state.account_of(&request.into_inner().token)?;
            proto::MarkReadResponse {
                unread_count: 0,
                log_position: state.next_index(),
            }
        };
        self.reply(reply)
    }

    async fn delete_messages(
        &self,
        request: Request<proto::DeleteMessagesRequest>,
    ) -> Result<Response<proto::DeleteMessagesResponse>, Status> {
        self.enter(Call::new("DeleteMessages"))?;
        let request = request.into_inner();
        let reply = {
            let mut state = self.state();
            state.account_of(&request.token)?;
            proto::DeleteMessagesResponse {
                deleted: request.ids.len() as u64,
                log_position: state.next_index(),
            }
        };
        self.reply(reply)
    }

    async fn create_group(
        &self,
        _: Request<proto::CreateGroupRequest>,
    ) -> Result<Response<proto::CreateGroupResponse>, Status> {
        Err(Status::unimplemented("the fake cluster has no groups"))
    }

    async fn change_group(
        &self,
        _: Request<proto::ChangeGroupRequest>,
    ) -> Result<Response<proto::ChangeGroupResponse>, Status> {
        Err(Status::unimplemented("the fake cluster has no groups"))
    }

    async fn members(
        &self,
        _: Request<proto::MembersRequest>,
    ) -> Result<Response<proto::MembersResponse>, Status> {
        Err(Status::unimplemented("the fake cluster has no groups"))
    }
}

#[tonic::async_trait]
impl Cluster for Replica {
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.enter(Call::new("Status"))?;
        let last = self.state().last_index;
        Ok(Response::new(proto::StatusResponse {
            node_id: self.node_id,
            leader_id: 1,
            leader_address: String::new(),
            members: vec![],
            last_log_index: last,
            applied_index: last,
            committed_index: last,
            term: 1,
            role: if self.node_id == 1 {
                proto::Role::Leader
            } else {
                proto::Role::Follower
            }
            .into(),
        }))
    }

    async fn add_member(
        &self,
        _request: Request<proto::AddMemberRequest>,
    ) -> Result<Response<proto::AddMemberResponse>, Status> {
        Err(Status::unimplemented("the fake has a fixed membership"))
    }

    async fn remove_member(
        &self,
        _request: Request<proto::RemoveMemberRequest>,
    ) -> Result<Response<proto::RemoveMemberResponse>, Status> {
        Err(Status::unimplemented("the fake has a fixed membership"))
    }
}
