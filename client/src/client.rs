//! The typed calls of the chat API.
//!
//! Each method builds its request from plain values, makes the call through
//! the failover engine (`failover`) with what the call is as far as retrying
//! goes (an `Rpc`), and turns the reply into this crate's types.
//!
//! A write builds its request once and sends the same one on every attempt
//! (a send's idempotency key must not change), and its log position goes
//! into the read-your-writes cursor. A read builds its request again for
//! each attempt, so its `min_applied` is the newest cursor, including what a
//! subscription showed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use chat_proto as proto;
use chat_proto::chat_client::ChatClient;
use chat_proto::cluster_client::ClusterClient;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::config::ClientConfig;
use crate::error::Result;
use crate::failover::{Connection, ConnectionState};
use crate::model::{
    AccountId, AccountPage, ClusterStatus, ConversationId, ConversationMembers, Conversations,
    CreatedAccount, EventId, GroupEdit, HistoryPage, LogPosition, MessageId, Peer, SentMessage,
    Session,
};
use crate::retry::Rpc;
use crate::subscription::Subscription;

/// A typed client of the chat cluster. Cheap to clone: clones share the
/// connection, the failover state and the read-your-writes cursor.
#[derive(Debug, Clone)]
pub struct Client {
    connection: Arc<Connection>,
}

impl Client {
    /// Connects to the first server of `config.servers` that accepts a
    /// connection, trying them in order, each once.
    ///
    /// Fails with [`ClientError::InvalidAddress`](crate::ClientError::InvalidAddress)
    /// if an address cannot be parsed (or the list is empty), and with
    /// [`ClientError::NoServerReachable`](crate::ClientError::NoServerReachable)
    /// if none accepts.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let connection = Connection::connect(config).await?;
        Ok(Self {
            connection: Arc::new(connection),
        })
    }

    /// The server calls go to now, as configured.
    pub fn current_server(&self) -> String {
        let route = self.connection.route();
        self.connection.address(&route).to_owned()
    }

    /// The configured servers, in list order.
    pub fn servers(&self) -> &[String] {
        self.connection.servers()
    }

    /// Follows the connection state: which server is in use, reconnection
    /// attempts, giving up. The receiver sees the latest state, not every
    /// intermediate one.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.connection.state()
    }

    /// The highest log position this client has written, or seen in a
    /// subscription. Reads and subscriptions ask the server to have applied
    /// at least this much, so they never show anything older than what this
    /// client already knows, whichever replica answers.
    pub fn read_cursor(&self) -> LogPosition {
        self.connection.read_cursor()
    }

    /// A fresh idempotency key for [`send_with_id`](Self::send_with_id): a
    /// random (v4) UUID.
    pub fn new_client_msg_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Registers a new account. Does not log in.
    ///
    /// Retried on another server after a failure whose outcome is unknown;
    /// if the first attempt did create the account, the retry fails with
    /// ALREADY_EXISTS, which then cannot be told apart from the name being
    /// someone else's. A front end can settle it by logging in with the
    /// password just chosen.
    pub async fn create_account(&self, username: &str, password: &str) -> Result<CreatedAccount> {
        let request = proto::CreateAccountRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        let reply = self
            .call(
                Rpc::CreateAccount,
                || request.clone(),
                |channel, request, _| async move {
                    ChatClient::new(channel).create_account(request).await
                },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(CreatedAccount {
            account_id: reply.account_id,
            username: reply.username,
        })
    }

    /// Opens a session. A wrong username or password fails with
    /// UNAUTHENTICATED.
    ///
    /// Retried after a failure whose outcome is unknown: at worst the first
    /// attempt leaves an unused session, which the server closes when its
    /// idle timeout runs out.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session> {
        let request = proto::LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::Login,
                || request.clone(),
                |channel, request, _| async move { ChatClient::new(channel).login(request).await },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(reply.into())
    }

    /// The session of `token`, saved from an earlier [`login`](Self::login),
    /// if it is still open: the same answer as a login, without opening
    /// another session. UNAUTHENTICATED once it has ended.
    pub async fn resume(&self, token: &str) -> Result<Session> {
        let request = || proto::ResumeRequest {
            token: token.to_owned(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(Rpc::Resume, request, |channel, request, _| async move {
                ChatClient::new(channel).resume(request).await
            })
            .await?;
        Ok(reply.into())
    }

    /// Closes the session of `token`.
    ///
    /// When a retry (after a failure whose outcome was unknown) is answered
    /// UNAUTHENTICATED, the first attempt closed the session, or it had
    /// expired: either way it is closed, and this returns `Ok`. On the first
    /// attempt, UNAUTHENTICATED is returned as an error.
    pub async fn logout(&self, token: &str) -> Result<()> {
        let request = proto::LogoutRequest {
            token: token.to_owned(),
            min_applied: self.read_cursor(),
        };
        let log_position = self
            .call(
                Rpc::Logout,
                || request.clone(),
                |channel, request, attempt| async move {
                    match ChatClient::new(channel).logout(request).await {
                        Ok(reply) => Ok(reply.map(|r| r.log_position)),
                        Err(status) if attempt > 1 && status.code() == Code::Unauthenticated => {
                            Ok(Response::new(0))
                        }
                        Err(status) => Err(status),
                    }
                },
            )
            .await?;
        self.wrote(log_position);
        Ok(())
    }

    /// Deletes the account of the session `token`, after the server checks
    /// `password` again; closes all its sessions.
    ///
    /// Not retried after a failure whose outcome is unknown (the error is
    /// returned, and the client moves to the next server for later calls):
    /// the account may or may not be gone. Trying again then fails with
    /// UNAUTHENTICATED if it is.
    pub async fn delete_account(&self, token: &str, password: &str) -> Result<()> {
        let request = proto::DeleteAccountRequest {
            token: token.to_owned(),
            password: password.to_owned(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::DeleteAccount,
                || request.clone(),
                |channel, request, _| async move {
                    ChatClient::new(channel).delete_account(request).await
                },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(())
    }

    /// Lists accounts whose username matches `pattern` (`*` any run of
    /// characters, `?` one; case is ignored; empty means all), a page at a
    /// time. `page_token` is the previous page's
    /// [`next_page_token`](AccountPage::next_page_token), `None` for the first
    /// page; `limit` is 1 to 1000, or 0 for the server's default. Needs no
    /// session (and without one, no account shows as online).
    pub async fn list_accounts(
        &self,
        pattern: &str,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<AccountPage> {
        self.list_accounts_as("", pattern, page_token, limit).await
    }

    /// [`list_accounts`](Self::list_accounts) with a session `token`: the
    /// accounts the caller shares a conversation with show whether they
    /// are online.
    pub async fn list_accounts_as(
        &self,
        token: &str,
        pattern: &str,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<AccountPage> {
        let request = || proto::ListAccountsRequest {
            pattern: pattern.to_owned(),
            page_token: page_token.unwrap_or_default().to_owned(),
            limit,
            min_applied: self.read_cursor(),
            token: token.to_owned(),
        };
        let reply = self
            .call(
                Rpc::ListAccounts,
                request,
                |channel, request, _| async move {
                    ChatClient::new(channel).list_accounts(request).await
                },
            )
            .await?;
        Ok(reply.into())
    }

    /// Sends `body` to the user `to`, under a fresh idempotency key that
    /// every retry of this call reuses, so a failover never sends twice.
    pub async fn send(&self, token: &str, to: &str, body: &str) -> Result<SentMessage> {
        self.send_with_id(token, to, body, &Self::new_client_msg_id())
            .await
    }

    /// Sends `body` to the user `to` under the idempotency key
    /// `client_msg_id` (1 to 64 bytes; see
    /// [`new_client_msg_id`](Self::new_client_msg_id)). Calling it again with
    /// the same key, even much later, sends nothing new and returns the first
    /// send's message: an outbox can keep a message with its key and retry
    /// until it gets an answer.
    ///
    /// `to` is a username, or better an account id ([`Peer::Account`]: a
    /// name registered again after a deletion is someone else) or a
    /// conversation ([`Peer::Conversation`], for groups).
    pub async fn send_with_id<'a>(
        &self,
        token: &str,
        to: impl Into<Peer<'a>>,
        body: &str,
        client_msg_id: &str,
    ) -> Result<SentMessage> {
        let (to, to_account_id, conversation_id) = to.into().fields();
        let request = proto::SendRequest {
            token: token.to_owned(),
            to,
            to_account_id,
            conversation_id,
            body: body.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::Send,
                || request.clone(),
                |channel, request, _| async move { ChatClient::new(channel).send(request).await },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(SentMessage {
            id: reply.message_id,
            sent_at: std::time::UNIX_EPOCH + Duration::from_millis(reply.sent_at_ms),
            client_msg_id: client_msg_id.to_owned(),
        })
    }

    /// Reads the conversation with `peer` (a name, an account id or a
    /// conversation id), newest first: messages with an id below `before`
    /// (`None` for the newest), at most `limit` (1 to 1000, or 0 for the
    /// server's default).
    pub async fn history<'a>(
        &self,
        token: &str,
        peer: impl Into<Peer<'a>>,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage> {
        self.read_history(token, peer.into(), "", before, limit)
            .await
    }

    /// Searches the whole history of the conversation with `peer` on the
    /// server for messages containing `query` (1 to 256 bytes, ignoring
    /// case), newest first, below `before` (`None` for the newest), at most
    /// `limit` matches (1 to 1000, or 0 for the server's default).
    ///
    /// One call examines a bounded part of the history: a page may hold
    /// fewer matches than `limit`, even none, and still have a
    /// [`next_before`](HistoryPage::next_before) to go on from. The search
    /// is over when that is `None`.
    pub async fn search<'a>(
        &self,
        token: &str,
        peer: impl Into<Peer<'a>>,
        query: &str,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage> {
        self.read_history(token, peer.into(), query, before, limit)
            .await
    }

    async fn read_history(
        &self,
        token: &str,
        peer: Peer<'_>,
        query: &str,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage> {
        let (peer, peer_account_id, conversation_id) = peer.fields();
        let request = || proto::HistoryRequest {
            token: token.to_owned(),
            peer: peer.clone(),
            peer_account_id,
            conversation_id,
            before: before.unwrap_or(0),
            limit,
            min_applied: self.read_cursor(),
            query: query.to_owned(),
        };
        let reply = self
            .call(Rpc::History, request, |channel, request, _| async move {
                ChatClient::new(channel).history(request).await
            })
            .await?;
        Ok(reply.into())
    }

    /// Lists the caller's conversations with their last message and unread
    /// counts, the most recently active first.
    pub async fn conversations(&self, token: &str) -> Result<Conversations> {
        let request = || proto::ConversationsRequest {
            token: token.to_owned(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::Conversations,
                request,
                |channel, request, _| async move {
                    ChatClient::new(channel).conversations(request).await
                },
            )
            .await?;
        Ok(reply.into())
    }

    /// Acknowledges delivery of every message to the caller with an id up to
    /// `up_to`. The cursor only moves forward, so repeating this is harmless.
    pub async fn ack(&self, token: &str, up_to: MessageId) -> Result<()> {
        let request = proto::AckRequest {
            token: token.to_owned(),
            up_to,
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::Ack,
                || request.clone(),
                |channel, request, _| async move { ChatClient::new(channel).ack(request).await },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(())
    }

    /// Marks the messages from `peer` (a name, an account id or a
    /// conversation id) up to `up_to` as read. Returns how many messages
    /// there are still unread.
    pub async fn mark_read<'a>(
        &self,
        token: &str,
        peer: impl Into<Peer<'a>>,
        up_to: MessageId,
    ) -> Result<u64> {
        let (peer, peer_account_id, conversation_id) = peer.into().fields();
        let request = proto::MarkReadRequest {
            token: token.to_owned(),
            peer,
            peer_account_id,
            conversation_id,
            up_to,
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::MarkRead,
                || request.clone(),
                |channel, request, _| async move {
                    ChatClient::new(channel).mark_read(request).await
                },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(reply.unread_count)
    }

    /// Deletes messages (1 to 1000 ids) from the caller's own view. Returns
    /// how many were deleted; ids unknown, not the caller's or already
    /// deleted are skipped, so after a retry the count may miss those the
    /// first attempt deleted.
    pub async fn delete_messages(&self, token: &str, ids: &[MessageId]) -> Result<u64> {
        let request = proto::DeleteMessagesRequest {
            token: token.to_owned(),
            ids: ids.to_vec(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::DeleteMessages,
                || request.clone(),
                |channel, request, _| async move {
                    ChatClient::new(channel).delete_messages(request).await
                },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(reply.deleted)
    }

    /// Makes a group titled `title` (1 to 64 characters) owned by the
    /// caller, with the accounts `member_ids` (up to 999; the caller is
    /// added). Returns its conversation id, for [`Peer::Conversation`]. A
    /// retry (this call retries under one fresh key) never makes two.
    pub async fn create_group(
        &self,
        token: &str,
        title: &str,
        member_ids: &[AccountId],
    ) -> Result<ConversationId> {
        let request = proto::CreateGroupRequest {
            token: token.to_owned(),
            title: title.to_owned(),
            member_ids: member_ids.to_vec(),
            member_names: Vec::new(),
            client_request_id: Self::new_client_msg_id(),
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(
                Rpc::CreateGroup,
                || request.clone(),
                |channel, request, _| async move {
                    ChatClient::new(channel).create_group(request).await
                },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(reply.conversation_id)
    }

    /// Changes group `group` (see the `ChangeGroup` call of the API for who
    /// may do what). Not retried when its outcome is unknown: see
    /// [`Members`](Self::members) before trying again.
    pub async fn change_group(
        &self,
        token: &str,
        group: ConversationId,
        edit: GroupEdit,
    ) -> Result<()> {
        let request = proto::ChangeGroupRequest {
            token: token.to_owned(),
            conversation_id: group,
            min_applied: self.read_cursor(),
            change: Some(edit.into()),
        };
        let reply = self
            .call(
                Rpc::ChangeGroup,
                || request.clone(),
                |channel, request, _| async move {
                    ChatClient::new(channel).change_group(request).await
                },
            )
            .await?;
        self.wrote(reply.log_position);
        Ok(())
    }

    /// The members of a conversation the caller is in, with their cursors,
    /// and a group's title.
    pub async fn members(
        &self,
        token: &str,
        conversation: ConversationId,
    ) -> Result<ConversationMembers> {
        let request = || proto::MembersRequest {
            token: token.to_owned(),
            conversation_id: conversation,
            min_applied: self.read_cursor(),
        };
        let reply = self
            .call(Rpc::Members, request, |channel, request, _| async move {
                ChatClient::new(channel).members(request).await
            })
            .await?;
        Ok(reply.into())
    }

    /// Describes the cluster as the current server sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let reply = self
            .call(Rpc::ClusterStatus, || proto::StatusRequest {}, |channel, request, _| async move {
                ClusterClient::new(channel).status(request).await
            })
            .await?;
        Ok(reply.into())
    }

    /// While writes wait for a majority ([`ConnectionState::NoMajority`]):
    /// asks the current server how the cluster stands and returns whether
    /// it commits again (a new term with a leader, or a commit index above
    /// the one the first probe saw), in which case the state says connected
    /// again. Returns true at once in any other state. A front end calls
    /// this every few seconds while the state says writes wait, so that the
    /// state recovers without waiting for the user's next write.
    pub async fn probe_writes(&self) -> Result<bool> {
        if !matches!(
            *self.connection.state().borrow(),
            ConnectionState::NoMajority { .. }
        ) {
            return Ok(true);
        }
        let status = self.cluster_status().await?;
        Ok(self.connection.commits_again(&status))
    }

    /// Subscribes to the events of the session `token` with an id above
    /// `after` (0 for everything the server holds; usually the session's
    /// [`delivered_cursor`](Session::delivered_cursor) or the last event id
    /// seen). Returns once a server has accepted the stream, so a bad token
    /// fails here.
    pub async fn subscribe(&self, token: &str, after: EventId) -> Result<Subscription> {
        Subscription::open(Arc::clone(&self.connection), token, after).await
    }

    /// Makes one call with failover and retries: each attempt sends what
    /// `request` builds with `send`, which is given the channel of the
    /// current server and the attempt number (1 for the first). See
    /// [`Connection::call`].
    async fn call<Req, T, Fut>(
        &self,
        rpc: Rpc,
        request: impl FnMut() -> Req,
        send: impl FnMut(Channel, Req, u32) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let (reply, _route) = self.connection.call(rpc, request, send).await?;
        Ok(reply)
    }

    /// Remembers a write's log position for read-your-writes.
    fn wrote(&self, log_position: LogPosition) {
        self.connection.observed(log_position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientError;

    #[tokio::test]
    async fn bad_addresses_fail_before_any_connection() {
        let config = ClientConfig {
            servers: vec!["127.0.0.1:1".to_owned(), "nowhere".to_owned()],
            ..ClientConfig::default()
        };
        let error = Client::connect(config).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::InvalidAddress { address, .. } if address == "nowhere"),
            "{error:?}"
        );
        let empty = ClientConfig {
            servers: vec![],
            ..ClientConfig::default()
        };
        assert!(matches!(
            Client::connect(empty).await,
            Err(ClientError::InvalidAddress { .. })
        ));
    }
}
