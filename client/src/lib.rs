//! A typed client of the chat cluster, for the terminal client, the
//! integration tests and the benchmarks. It never depends on the server.
//!
//! - **Server list and failover.** [`Client::connect`] takes the first
//!   server of [`ClientConfig::servers`] that answers. When a server or the
//!   connection fails, the client moves to the next one (round robin, with
//!   exponential [`Backoff`]) and watchers of
//!   [`Client::connection_state`] see it happen.
//! - **Retries only where harmless.** A call is repeated on the next server
//!   if its request never left, or if repeating it cannot do harm: reads,
//!   sends (which carry an idempotency key), acks and read marks (cursors
//!   that only grow). Each method's documentation says what it does.
//! - **Read-your-writes.** Every write's log position is remembered and sent
//!   with later reads and subscriptions as `min_applied`, so a replica never
//!   answers with state older than this client's own writes.
//! - **Resumable subscription.** [`Subscription::next`] yields [`Event`]s in
//!   log order; after a broken stream it resubscribes from the last event id,
//!   so nothing is missed or repeated.
//! - **Plain values.** Calls take `&str` and plain numbers and return the
//!   types of this crate, converted from protobuf in one place (`model`).
//!
//! ```no_run
//! # async fn demo() -> chat_client::Result<()> {
//! use chat_client::{Client, ClientConfig, Event};
//!
//! let client = Client::connect(ClientConfig {
//!     servers: vec!["127.0.0.1:50051".into(), "127.0.0.1:50052".into()],
//!     ..ClientConfig::default()
//! })
//! .await?;
//! let session = client.login("alice", "correct horse").await?;
//! let mut events = client.subscribe(&session.token, session.delivered_cursor).await?;
//! client.send(&session.token, "bob", "hello, bob").await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Message { message, .. } = event? {
//!         println!("{}: {}", message.from, message.body);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
mod failover;
mod model;
mod retry;
mod subscription;

pub use client::Client;
pub use config::{ClientConfig, DEFAULT_SERVER, KeepAlive, endpoint_uri};
pub use error::{ClientError, Result};
pub use failover::ConnectionState;
pub use model::{
    Account, AccountId, AccountPage, ClusterStatus, Conversation, ConversationId,
    ConversationMember, ConversationMembers, Conversations, CreatedAccount, Event, EventId,
    GroupChange, GroupChangeKind, GroupEdit, GroupSummary, HistoryPage, LogIndex, LogPosition,
    Member, Message, MessageId, Peer, Role, SentMessage, Session,
};
pub use retry::{Backoff, Retry};
pub use subscription::Subscription;
/// The gRPC status codes found in [`ClientError::Status`].
pub use tonic::Code;
