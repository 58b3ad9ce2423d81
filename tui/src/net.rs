//! The client task: the only place that talks to the network.
//!
//! The UI loop sends it [`Command`]s and never waits for an answer; it sends
//! back [`ServerEvent`]s, which the UI applies to its state when they come.
//! The task owns the [`Client`] (connection, failover) and, once signed in,
//! a session: the subscription (first the conversation list, then the event
//! stream, resumed across failures from its cursor), a watcher of the
//! connection state, and the outbox sender, which sends in order and
//! retries a failed send with the same idempotency key until the server
//! answers. Every other call runs in its own task so a slow one never holds
//! up the stream. Signing out, or a new sign-in, aborts the session's tasks.

use std::path::PathBuf;
use std::time::Duration;

use chat_client::{
    Backoff, Client, ClientConfig, ClientError, Code, ConnectionState, MessageId, Peer, Retry,
};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;

use crate::message::{Command, Field, Outgoing, ServerEvent, SignInRequest};
use crate::session_file::{self, Saved};
use crate::state::ChatId;

/// Matches asked for per search call.
const SEARCH_PAGE: u32 = 50;

/// How often the client asks whether the cluster commits again while the
/// servers answer but writes wait for a majority.
const WRITES_WAIT_PROBE_EVERY: Duration = Duration::from_secs(2);

/// How many messages one history page asks for.
pub const HISTORY_PAGE: u32 = 100;

/// How many accounts one page of the directory asks for.
pub const ACCOUNTS_PAGE: u32 = 100;

/// How many names a completion offers.
pub const COMPLETIONS: u32 = 6;

/// Starts the client task. Returns where to send commands and where events
/// come out. The task ends when the command sender is dropped.
///
/// With `saved`, a session opened by logging in is saved there for the
/// next start, and [`Command::Resume`] resumes the one saved there.
pub fn spawn(
    tls_ca: Option<Vec<u8>>,
    saved: Option<PathBuf>,
) -> (UnboundedSender<Command>, UnboundedReceiver<ServerEvent>) {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(commands, events, tls_ca, saved));
    (commands_tx, events_rx)
}

/// The open connection and the list it was opened with.
struct Connection {
    servers: Vec<String>,
    client: Client,
    /// Publishes the connection state to the UI for as long as the client
    /// lives.
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// A signed-in session and the tasks working for it.
struct Session {
    token: String,
    /// Queue of the outbox sender.
    outbox: UnboundedSender<Outgoing>,
    /// The subscription, the sender, and every call in flight.
    tasks: JoinSet<()>,
    /// The highest id acknowledged, so an ack that moves nothing is not sent.
    acked: MessageId,
}

/// The task's loop: one command at a time, each started and left to run.
async fn run(
    mut commands: UnboundedReceiver<Command>,
    events: UnboundedSender<ServerEvent>,
    tls_ca: Option<Vec<u8>>,
    saved: Option<PathBuf>,
) {
    let mut connection: Option<Connection> = None;
    let mut session: Option<Session> = None;
    while let Some(command) = commands.recv().await {
        // Finished tasks are reaped here so the set does not grow forever.
        if let Some(session) = session.as_mut() {
            while session.tasks.try_join_next().is_some() {}
        }
        match command {
            Command::SignIn(SignInRequest {
                servers,
                username,
                password,
                create,
            }) => {
                session = None;
                if connection.as_ref().is_none_or(|c| c.servers != servers) {
                    connection = None;
                    match connect(&servers, &events, tls_ca.clone()).await {
                        Ok(opened) => connection = Some(opened),
                        Err(error) => {
                            let _ = events.send(ServerEvent::SignInFailed {
                                field: Some(Field::Servers),
                                message: error.to_string(),
                            });
                            continue;
                        }
                    }
                }
                let Some(open) = connection.as_ref() else {
                    continue;
                };
                session = sign_in(&open.client, &username, &password, create, &events).await;
                if let (Some(opened), Some(path)) = (session.as_ref(), saved.clone()) {
                    let keep = Saved {
                        servers: servers.clone(),
                        username: username.clone(),
                        token: opened.token.clone(),
                    };
                    // Not saving only means signing in again next time.
                    let _ = tokio::task::spawn_blocking(move || keep.save(&path)).await;
                }
            }
            Command::Resume => {
                session = None;
                let found = saved.as_deref().and_then(Saved::load);
                let Some(Saved { servers, token, .. }) = found else {
                    let _ = events.send(ServerEvent::SignInFailed {
                        field: None,
                        message: "no saved session: sign in".to_owned(),
                    });
                    continue;
                };
                if connection.as_ref().is_none_or(|c| c.servers != servers) {
                    connection = None;
                    match connect(&servers, &events, tls_ca.clone()).await {
                        Ok(opened) => connection = Some(opened),
                        Err(error) => {
                            let _ = events.send(ServerEvent::SignInFailed {
                                field: Some(Field::Servers),
                                message: error.to_string(),
                            });
                            continue;
                        }
                    }
                }
                let Some(open) = connection.as_ref() else {
                    continue;
                };
                match open.client.resume(&token).await {
                    Ok(opened) => session = Some(start_session(&open.client, opened, &events)),
                    Err(error) if error.is_unauthenticated() => {
                        if let Some(path) = saved.as_deref() {
                            let _ = session_file::forget(path);
                        }
                        let _ = events.send(ServerEvent::SignInFailed {
                            field: None,
                            message: format!("the saved session has ended ({error}): sign in"),
                        });
                    }
                    Err(error) => {
                        let _ = events.send(ServerEvent::SignInFailed {
                            field: Some(Field::Servers),
                            message: error.to_string(),
                        });
                    }
                }
            }
            Command::SignOut => {
                if let (Some(ended), Some(open)) = (session.take(), connection.as_ref()) {
                    let client = open.client.clone();
                    tokio::spawn(async move {
                        // The session closes by itself when idle if this fails.
                        let _ = client.logout(&ended.token).await;
                    });
                }
                let _ = events.send(ServerEvent::SignedOut);
            }
            Command::DeleteAccount { password } => {
                let (Some(open), Some(active)) = (connection.as_ref(), session.as_ref()) else {
                    continue;
                };
                // Awaited here, not spawned: the answer decides whether the
                // session goes on, and nothing else should start meanwhile.
                match open.client.delete_account(&active.token, &password).await {
                    Ok(()) => {
                        session = None;
                        let _ = events.send(ServerEvent::AccountDeleted);
                    }
                    Err(error) if error.is_unauthenticated() => {
                        session = None;
                        let _ = events.send(ended(&error));
                    }
                    Err(error) => {
                        let _ = events.send(ServerEvent::DeleteAccountFailed {
                            error: error.to_string(),
                        });
                    }
                }
            }
            command => {
                let (Some(open), Some(active)) = (connection.as_ref(), session.as_mut()) else {
                    continue;
                };
                handle(command, &open.client, active, &events);
            }
        }
    }
}

/// Connects to the cluster and starts publishing the connection state.
async fn connect(
    servers: &[String],
    events: &UnboundedSender<ServerEvent>,
    tls_ca: Option<Vec<u8>>,
) -> Result<Connection, ClientError> {
    let client = Client::connect(ClientConfig {
        servers: servers.to_vec(),
        tls_ca,
        ..ClientConfig::default()
    })
    .await?;
    let mut state = client.connection_state();
    let events = events.clone();
    let prober = client.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let current = state.borrow_and_update().clone();
            let writes_wait = matches!(current, ConnectionState::NoMajority { .. });
            if events.send(ServerEvent::Connection(current)).is_err() {
                return;
            }
            // While writes wait, ask now and then whether the cluster
            // commits again, so the bar recovers without a write.
            let changed = if writes_wait {
                loop {
                    tokio::select! {
                        changed = state.changed() => break changed,
                        () = tokio::time::sleep(WRITES_WAIT_PROBE_EVERY) => {
                            // A failed probe moves the connection (and its
                            // state) like any call; the next tick asks again.
                            let _ = prober.probe_writes().await;
                        }
                    }
                }
            } else {
                state.changed().await
            };
            if changed.is_err() {
                return;
            }
        }
    });
    Ok(Connection {
        servers: servers.to_vec(),
        client,
        watcher,
    })
}

/// Creates the account if asked, logs in, and starts the session's tasks.
async fn sign_in(
    client: &Client,
    username: &str,
    password: &str,
    create: bool,
    events: &UnboundedSender<ServerEvent>,
) -> Option<Session> {
    if create && let Err(error) = client.create_account(username, password).await {
        let _ = events.send(sign_in_failed(&error, true));
        return None;
    }
    let opened = match client.login(username, password).await {
        Ok(opened) => opened,
        Err(error) => {
            let _ = events.send(sign_in_failed(&error, false));
            return None;
        }
    };
    Some(start_session(client, opened, events))
}

/// Tells the UI the session is open and starts its tasks: the stream and
/// the outbox sender.
fn start_session(
    client: &Client,
    opened: chat_client::Session,
    events: &UnboundedSender<ServerEvent>,
) -> Session {
    let _ = events.send(ServerEvent::SignedIn {
        username: opened.username.clone(),
        account_id: opened.account_id,
        server: client.current_server(),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(stream(
        client.clone(),
        opened.token.clone(),
        opened.delivered_cursor,
        events.clone(),
    ));
    let (outbox, queue) = mpsc::unbounded_channel();
    tasks.spawn(send_in_order(
        client.clone(),
        opened.token.clone(),
        queue,
        events.clone(),
    ));
    Session {
        token: opened.token,
        outbox,
        tasks,
        acked: opened.delivered_cursor,
    }
}

/// Which field a sign-in error belongs to, and the words to show.
fn sign_in_failed(error: &ClientError, creating: bool) -> ServerEvent {
    let message = error.to_string();
    let field = match error {
        ClientError::InvalidAddress { .. }
        | ClientError::NoServerReachable { .. }
        | ClientError::Timeout { .. } => Some(Field::Servers),
        ClientError::Status { code, .. } => match code {
            Code::AlreadyExists => {
                return ServerEvent::SignInFailed {
                    field: Some(Field::Username),
                    message: if creating {
                        format!("{message}: choose another name, or switch to \"log in\"")
                    } else {
                        message
                    },
                };
            }
            Code::Unauthenticated => {
                return ServerEvent::SignInFailed {
                    field: Some(Field::Password),
                    message: "wrong username or password (new here? Ctrl+T creates an account)"
                        .to_owned(),
                };
            }
            Code::InvalidArgument if message.to_lowercase().contains("password") => {
                Some(Field::Password)
            }
            Code::InvalidArgument | Code::NotFound => Some(Field::Username),
            Code::ResourceExhausted => Some(Field::Password),
            Code::Unavailable | Code::DeadlineExceeded => Some(Field::Servers),
            _ => None,
        },
    };
    ServerEvent::SignInFailed { field, message }
}

/// Starts the work of one command of a signed-in session, in a task of its
/// own (sends go to the outbox sender, in order).
fn handle(
    command: Command,
    client: &Client,
    session: &mut Session,
    events: &UnboundedSender<ServerEvent>,
) {
    let client = client.clone();
    let token = session.token.clone();
    let events = events.clone();
    match command {
        Command::Send(outgoing) => {
            let _ = session.outbox.send(outgoing);
        }
        Command::ListAccounts {
            pattern,
            page_token,
        } => {
            session.tasks.spawn(async move {
                let result = client
                    .list_accounts(&pattern, page_token.as_deref(), ACCOUNTS_PAGE)
                    .await;
                let event = match result {
                    Ok(page) => ServerEvent::Accounts {
                        pattern,
                        appended: page_token.is_some(),
                        page,
                    },
                    Err(error) => failure("list accounts", &error),
                };
                let _ = events.send(event);
            });
        }
        Command::LoadHistory { chat, before } => {
            session.tasks.spawn(async move {
                let result = client
                    .history(&token, peer_of(chat), before, HISTORY_PAGE)
                    .await;
                let event = match result {
                    Ok(page) => ServerEvent::History {
                        chat,
                        page: Ok(page),
                    },
                    Err(error) if error.is_unauthenticated() => ended(&error),
                    Err(error) => ServerEvent::History {
                        chat,
                        page: Err(error.to_string()),
                    },
                };
                let _ = events.send(event);
            });
        }
        Command::Search {
            chat,
            query,
            before,
        } => {
            session.tasks.spawn(async move {
                let result = client
                    .search(&token, peer_of(chat), &query, before, SEARCH_PAGE)
                    .await;
                let event = match result {
                    Err(error) if error.is_unauthenticated() => ended(&error),
                    result => ServerEvent::Found {
                        chat,
                        query,
                        page: result.map_err(|e| e.to_string()),
                    },
                };
                let _ = events.send(event);
            });
        }
        Command::Ack { up_to } => {
            if up_to <= session.acked {
                return;
            }
            session.acked = up_to;
            session.tasks.spawn(async move {
                if let Err(error) = client.ack(&token, up_to).await {
                    let _ = events.send(failure("acknowledge", &error));
                }
            });
        }
        Command::MarkRead { chat, up_to } => {
            session.tasks.spawn(async move {
                if let Err(error) = client.mark_read(&token, peer_of(chat), up_to).await {
                    let _ = events.send(failure("mark read", &error));
                }
            });
        }
        Command::CreateGroup { title, members } => {
            session.tasks.spawn(async move {
                let event = match client.create_group(&token, &title, &members).await {
                    Ok(group) => ServerEvent::GroupCreated { group, title },
                    Err(error) if error.is_unauthenticated() => ended(&error),
                    Err(error) => ServerEvent::GroupNotCreated {
                        error: error.to_string(),
                    },
                };
                let _ = events.send(event);
            });
        }
        Command::ChangeGroup { group, edit } => {
            session.tasks.spawn(async move {
                // What it changed arrives on the stream, like anyone's change.
                if let Err(error) = client.change_group(&token, group, edit).await {
                    let _ = events.send(failure("change the group", &error));
                }
            });
        }
        Command::LoadMembers { group } => {
            session.tasks.spawn(async move {
                let event = match client.members(&token, group).await {
                    Ok(members) => ServerEvent::Members {
                        group,
                        members: Ok(members),
                    },
                    Err(error) if error.is_unauthenticated() => ended(&error),
                    Err(error) => ServerEvent::Members {
                        group,
                        members: Err(error.to_string()),
                    },
                };
                let _ = events.send(event);
            });
        }
        Command::Complete { prefix } => {
            session.tasks.spawn(async move {
                let pattern = format!("{}*", prefix.replace(['*', '?'], ""));
                // A completion that fails offers nothing; typing goes on.
                if let Ok(page) = client.list_accounts(&pattern, None, COMPLETIONS).await {
                    let _ = events.send(ServerEvent::Completions {
                        prefix,
                        accounts: page.accounts,
                    });
                }
            });
        }
        Command::DeleteMessages { ids } => {
            session.tasks.spawn(async move {
                let event = match client.delete_messages(&token, &ids).await {
                    Ok(_) => ServerEvent::Deleted { ids },
                    Err(error) => failure("delete", &error),
                };
                let _ = events.send(event);
            });
        }
        // Handled by the loop itself.
        Command::SignIn(_) | Command::Resume | Command::SignOut | Command::DeleteAccount { .. } => {
        }
    }
}

/// The event for a call that failed: the end of the session if the server
/// no longer knows it, otherwise an error for the status bar.
fn failure(action: &'static str, error: &ClientError) -> ServerEvent {
    if error.is_unauthenticated() {
        ended(error)
    } else {
        ServerEvent::Error {
            action,
            error: error.to_string(),
        }
    }
}

/// The event for a session the server no longer knows.
fn ended(error: &ClientError) -> ServerEvent {
    ServerEvent::SessionEnded {
        reason: error.to_string(),
    }
}

/// The value of a call that [`Retry::run`] finished, or `None` once its
/// failure (one that waiting would not cure) is reported as `what`.
fn reported<T>(
    result: Result<T, ClientError>,
    what: &'static str,
    events: &UnboundedSender<ServerEvent>,
) -> Option<T> {
    result
        .inspect_err(|error| {
            let _ = events.send(failure(what, error));
        })
        .ok()
}

/// The session's view of the world: the conversation list first (so every
/// event after it can be told new or already counted), then the event
/// stream, resumed by the subscription after every failure.
async fn stream(
    client: Client,
    token: String,
    after: MessageId,
    events: UnboundedSender<ServerEvent>,
) {
    // One backoff for both steps: a cluster that failed the list is no
    // healthier for the subscription.
    let mut retry = Retry::new(Backoff::default());
    let interrupted = |error: &ClientError, _: Duration| {
        let _ = events.send(ServerEvent::StreamInterrupted {
            error: error.to_string(),
        });
    };
    let loaded = retry
        .run(interrupted, || client.conversations(&token))
        .await;
    let Some(conversations) = reported(loaded, "load conversations", &events) else {
        return;
    };
    if events
        .send(ServerEvent::Conversations(conversations))
        .is_err()
    {
        return;
    }
    let subscribed = retry
        .run(interrupted, || client.subscribe(&token, after))
        .await;
    let Some(mut subscription) = reported(subscribed, "subscribe", &events) else {
        return;
    };
    while let Some(next) = subscription.next().await {
        let event = match next {
            Ok(event) => ServerEvent::Live(event),
            // `next` waits its own backoff before the next attempt.
            Err(error) if error.is_transient() => ServerEvent::StreamInterrupted {
                error: error.to_string(),
            },
            Err(error) => {
                let _ = events.send(failure("receive", &error));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// The outbox sender: sends one message at a time, in the order they were
/// written, each retried with its own idempotency key until the server
/// stores it or refuses it. A retried send never makes a duplicate.
async fn send_in_order(
    client: Client,
    token: String,
    mut queue: UnboundedReceiver<Outgoing>,
    events: UnboundedSender<ServerEvent>,
) {
    let mut retry = Retry::new(Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    });
    while let Some(outgoing) = queue.recv().await {
        // Each message starts from the shortest wait.
        retry.reset();
        let result = retry
            .run(
                |error, retry_in| {
                    let _ = events.send(ServerEvent::SendRetrying {
                        client_msg_id: outgoing.client_msg_id.clone(),
                        error: error.to_string(),
                        retry_in,
                    });
                },
                || {
                    client.send_with_id(
                        &token,
                        peer_of(outgoing.to),
                        &outgoing.body,
                        &outgoing.client_msg_id,
                    )
                },
            )
            .await;
        let event = match result {
            Ok(sent) => ServerEvent::Sent(sent),
            Err(error) if error.is_unauthenticated() => {
                // The outbox keeps the message; it is sent again, with the
                // same key, after the user signs in again.
                let _ = events.send(ended(&error));
                return;
            }
            Err(error) => ServerEvent::SendFailed {
                client_msg_id: outgoing.client_msg_id,
                error: error.to_string(),
                // Addressed by account id: NOT_FOUND means that account no
                // longer exists (a new one with its name is someone else).
                gone: matches!(outgoing.to, ChatId::Direct(_))
                    && error.code() == Some(Code::NotFound),
            },
        };
        let _ = events.send(event);
    }
}

/// A conversation as a call names it: by account id for a direct one (a
/// name registered again after a deletion is someone else), by
/// conversation id for a group.
fn peer_of(chat: ChatId) -> Peer<'static> {
    match chat {
        ChatId::Direct(id) => Peer::Account(id),
        ChatId::Group(id) => Peer::Conversation(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> ClientError {
        ClientError::Status {
            code,
            message: message.to_owned(),
            server: "127.0.0.1:1".to_owned(),
        }
    }

    fn field_of(error: ClientError, creating: bool) -> (Option<Field>, String) {
        match sign_in_failed(&error, creating) {
            ServerEvent::SignInFailed { field, message } => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sign_in_errors_land_on_their_field() {
        let unreachable = ClientError::NoServerReachable {
            tried: vec!["127.0.0.1:1".to_owned()],
        };
        assert_eq!(field_of(unreachable, false).0, Some(Field::Servers));
        let (field, message) = field_of(
            status(Code::Unauthenticated, "unknown username or wrong password"),
            false,
        );
        assert_eq!(field, Some(Field::Password));
        assert!(
            message.starts_with("wrong username or password"),
            "{message}"
        );
        assert!(message.contains("Ctrl+T"), "{message}");
        let (field, message) =
            field_of(status(Code::AlreadyExists, "the name alice is taken"), true);
        assert_eq!(field, Some(Field::Username));
        assert!(message.contains("choose another name"), "{message}");
        let too_short = status(Code::InvalidArgument, "a password is 8 to 1024 bytes long");
        assert_eq!(field_of(too_short, true).0, Some(Field::Password));
        let bad_name = status(Code::InvalidArgument, "a username is 1 to 32 characters");
        assert_eq!(field_of(bad_name, true).0, Some(Field::Username));
        assert_eq!(field_of(status(Code::Internal, "bug"), false).0, None);
    }

    #[test]
    fn an_unknown_session_ends_it_and_other_failures_are_reported() {
        assert!(matches!(
            failure("ack", &status(Code::Unauthenticated, "the session has ended; log in again")),
            ServerEvent::SessionEnded { reason } if reason.contains("log in again")
        ));
        assert!(matches!(
            failure("ack", &status(Code::InvalidArgument, "beyond the log")),
            ServerEvent::Error { action: "ack", .. }
        ));
    }
}
