//! The floor under the group bench: a `chat.v1.Chat` server that keeps
//! nothing but who listens, so that `cargo bench --bench server -- --only
//! groups-floor` measures what tonic, HTTP/2 and the kernel alone cost to
//! hand a message to every member's stream on this machine.
//!
//! It answers only what the group bench calls: CreateAccount and Login (no
//! password hashing, tokens are the account id), CreateGroup, Send (no log,
//! no disk, no idempotency: each message goes straight to the open streams
//! of its conversation's members) and
//! Subscribe (CaughtUp at once, then live messages; no history). As in the
//! server, a message is built once and handed to each stream's queue as a
//! shared pointer, in id order; each stream copies it into the reply it
//! encodes. Everything
//! else is UNIMPLEMENTED. It takes the server's `--listen ADDR` and ignores
//! its other flags, and prints `listening on ADDR` as `chat-server` does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chat_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// Events a stream may hold before the floor drops it, as the server's
/// per-stream queue does.
const STREAM_QUEUE: usize = 1024;

type Outbox = mpsc::Sender<Arc<pb::Event>>;

#[derive(Default)]
struct State {
    names: HashMap<String, u64>,
    groups: HashMap<u64, Vec<u64>>,
    streams: HashMap<u64, Vec<Outbox>>,
}

#[derive(Default)]
struct Floor {
    next_id: AtomicU64,
    state: Mutex<State>,
}

impl Floor {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn account_of(token: &str) -> Result<u64, Status> {
    token
        .parse()
        .map_err(|_| Status::unauthenticated("not a token of this floor server"))
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the floor server answers only what the group bench calls",
    ))
}

#[tonic::async_trait]
impl pb::chat_server::Chat for Floor {
    async fn create_account(
        &self,
        r: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let username = r.into_inner().username;
        let account_id = self.id();
        self.state().names.insert(username.clone(), account_id);
        Ok(Response::new(pb::CreateAccountResponse {
            account_id,
            username,
            log_position: account_id,
        }))
    }

    async fn login(
        &self,
        r: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let username = r.into_inner().username;
        let account_id = *self
            .state()
            .names
            .get(&username)
            .ok_or_else(|| Status::not_found("no such account"))?;
        Ok(Response::new(pb::LoginResponse {
            token: account_id.to_string(),
            account_id,
            username,
            session_idle_timeout_secs: 3600,
            ..pb::LoginResponse::default()
        }))
    }

    async fn logout(
        &self,
        _: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        unimplemented()
    }

    async fn resume(
        &self,
        _: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        unimplemented()
    }

    async fn delete_account(
        &self,
        _: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        unimplemented()
    }

    async fn list_accounts(
        &self,
        _: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        unimplemented()
    }

    async fn send(
        &self,
        r: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let r = r.into_inner();
        let from = account_of(&r.token)?;
        let sent_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // The id is taken and the message handed out under one lock, so
        // that every stream sees ids rising, as the log orders them in the
        // server (a client drops an event whose id is not past the last).
        let state = self.state();
        let id = self.id();
        let event = Arc::new(pb::Event {
            id,
            kind: Some(pb::event::Kind::Message(pb::Message {
                id,
                from_account_id: from,
                to_account_id: r.to_account_id,
                body: r.body,
                sent_at_ms,
                conversation_id: r.conversation_id,
                in_group: r.conversation_id != 0,
                ..pb::Message::default()
            })),
        });
        let direct = [from, r.to_account_id];
        let recipients = if r.conversation_id == 0 {
            &direct[..]
        } else {
            state
                .groups
                .get(&r.conversation_id)
                .ok_or_else(|| Status::not_found("no such group"))?
        };
        let outboxes = recipients
            .iter()
            .filter_map(|account| state.streams.get(account))
            .flatten();
        for outbox in outboxes {
            // A full queue loses the message, as the server drops a stream
            // that does not keep up; a closed one is a stream that ended.
            let _ = outbox.try_send(Arc::clone(&event));
        }
        drop(state);
        Ok(Response::new(pb::SendResponse {
            message_id: id,
            sent_at_ms,
            log_position: id,
        }))
    }

    type SubscribeStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        r: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = r.into_inner();
        let account = account_of(&r.token)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let caught_up = pb::Event {
            id: r.after,
            kind: Some(pb::event::Kind::CaughtUp(pb::CaughtUp { cursor: r.after })),
        };
        let mut state = self.state();
        let streams = state.streams.entry(account).or_default();
        streams.retain(|outbox| !outbox.is_closed());
        streams.push(tx);
        let live = ReceiverStream::new(rx).map(|event: Arc<pb::Event>| Ok((*event).clone()));
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(caught_up)).chain(live),
        )))
    }

    async fn history(
        &self,
        _: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        unimplemented()
    }

    async fn conversations(
        &self,
        _: Request<pb::ConversationsRequest>,
    ) -> Result<Response<pb::ConversationsResponse>, Status> {
        unimplemented()
    }

    async fn ack(&self, _: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        unimplemented()
    }

    async fn mark_read(
        &self,
        _: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        unimplemented()
    }

    async fn delete_messages(
        &self,
        _: Request<pb::DeleteMessagesRequest>,
    ) -> Result<Response<pb::DeleteMessagesResponse>, Status> {
        unimplemented()
    }

    async fn create_group(
        &self,
        r: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let r = r.into_inner();
        let owner = account_of(&r.token)?;
        let conversation_id = self.id();
        let mut members = vec![owner];
        members.extend(r.member_ids);
        self.state().groups.insert(conversation_id, members);
        Ok(Response::new(pb::CreateGroupResponse {
            conversation_id,
            log_position: conversation_id,
        }))
    }

    async fn change_group(
        &self,
        _: Request<pb::ChangeGroupRequest>,
    ) -> Result<Response<pb::ChangeGroupResponse>, Status> {
        unimplemented()
    }

    async fn members(
        &self,
        _: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        unimplemented()
    }
}

/// The value after `--listen`, or an ephemeral port on loopback.
fn listen_addr() -> anyhow::Result<SocketAddr> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--listen") {
        Some(i) => args
            .get(i + 1)
            .context("--listen needs an address")?
            .parse()
            .context("--listen takes HOST:PORT"),
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 0))),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen_addr()?)
        .await
        .context("cannot listen")?;
    println!("listening on {}", listener.local_addr()?);
    // As the server does with every accepted connection.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    tonic::transport::Server::builder()
        .add_service(pb::chat_server::ChatServer::new(Floor::default()))
        .serve_with_incoming_shutdown(incoming, terminated())
        .await
        .context("serving failed")
}

/// Resolves at SIGTERM or SIGINT, on which the bench stops its server.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
