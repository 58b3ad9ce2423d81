//! The `chat.v1.Chat` service: validates requests, authenticates sessions,
//! turns actions into events for the log, and answers reads from the local
//! state. Protobuf types are converted in [`super::convert`].

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use chat_proto as pb;
use log_format::events::{
    AccountId, CloseReason, ConversationId, Event, GroupChange, MessageId, SessionId,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert;
use crate::auth::{self, CreationLimit, Hashing, LoginThrottle, SessionActivity, Tarpit};
use crate::error::ChatError;
use crate::hub::{Ended, News, StreamItem, Subscription};
use crate::node::Node;
use crate::node::search::Scope;
use crate::state::{Applied, ChatState, ConversationSummary, MAX_MEMBERS, MessageView, Rejection};

/// Longest username, in characters.
pub const MAX_USERNAME: usize = 32;
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;
pub const MAX_BODY: usize = 16 * 1024;
pub const MAX_CLIENT_MSG_ID: usize = 64;
pub const MAX_PATTERN: usize = 64;
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_ACCOUNT_PAGE: u32 = 100;
pub const DEFAULT_HISTORY_PAGE: u32 = 50;
pub const MAX_DELETE: usize = 1000;
/// Longest History search text, in bytes.
pub const MAX_QUERY: usize = 256;
/// Longest group title, in characters.
pub const MAX_TITLE: usize = 64;
/// Backlog entries read from the indexes at a time by a subscription.
const BACKLOG_PAGE: usize = 256;

#[derive(Debug, Clone)]
pub struct ChatService {
    node: Node,
    guards: Arc<Guards>,
    activity: Arc<SessionActivity>,
    shutdown: CancellationToken,
}

/// What keeps one client from exhausting the server for everyone: the
/// login throttle, the bound on password hashing, the per-address limit on
/// account creation, and the tarpit their refusals wait in.
#[derive(Debug)]
pub struct Guards {
    pub throttle: Arc<LoginThrottle>,
    pub hashing: Hashing,
    pub creations: CreationLimit,
    pub tarpit: Tarpit,
}

impl Guards {
    /// `result`, with a rate limit's refusal held in the tarpit first.
    async fn held<T>(&self, result: Result<T, ChatError>) -> Result<T, ChatError> {
        match result {
            Err(refusal @ ChatError::RateLimited(_)) => Err(self.tarpit.hold(refusal).await),
            other => other,
        }
    }
}

/// Milliseconds since the Unix epoch, decided before an event is proposed.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn validate_username(name: &str) -> Result<(), ChatError> {
    let ok = (1..=MAX_USERNAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ChatError::invalid(format!(
            "a username is 1 to {MAX_USERNAME} characters of letters, digits, '_', '.' and '-'"
        )))
    }
}

fn validate_password(password: &str) -> Result<(), ChatError> {
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        Ok(())
    } else {
        Err(ChatError::invalid(format!(
            "a password is {MIN_PASSWORD} to {MAX_PASSWORD} bytes long"
        )))
    }
}

fn validate_body(body: &str) -> Result<(), ChatError> {
    if body.is_empty() {
        return Err(ChatError::invalid("a message cannot be empty"));
    }
    if body.len() > MAX_BODY {
        return Err(ChatError::invalid(format!(
            "a message is at most {MAX_BODY} bytes; this one is {} bytes",
            body.len()
        )));
    }
    Ok(())
}

/// The account named `name` in `state`, or NOT_FOUND. A name no account
/// could have is refused before any look-up, and never echoed.
fn peer(state: &ChatState, name: &str) -> Result<AccountId, ChatError> {
    if name.is_empty() || name.len() > MAX_USERNAME {
        return Err(ChatError::invalid(format!(
            "give the other person's username: 1 to {MAX_USERNAME} characters"
        )));
    }
    state
        .account_by_name(name)
        .map(|(id, _)| id)
        .ok_or_else(|| ChatError::NotFound(format!("there is no account named '{name}'")))
}

/// The conversation a request names, by the other person or by its id.
#[derive(Debug, Clone, Copy)]
enum Target {
    Peer(AccountId),
    Conversation(ConversationId),
}

/// Which conversation a request names: exactly one of the other person's
/// name (`field`), account id (`field_account_id`) or `conversation_id`.
fn target(
    state: &ChatState,
    field: &str,
    name: &str,
    account_id: u64,
    conversation_id: u64,
) -> Result<Target, ChatError> {
    let given = [!name.is_empty(), account_id != 0, conversation_id != 0];
    match given.iter().filter(|g| **g).count() {
        0 => {
            return Err(ChatError::invalid(format!(
                "say which conversation: `{field}` (a username), `{field}_account_id` or `conversation_id`"
            )));
        }
        1 => {}
        _ => {
            return Err(ChatError::invalid(format!(
                "give only one of `{field}`, `{field}_account_id` and `conversation_id`"
            )));
        }
    }
    if conversation_id != 0 {
        return Ok(Target::Conversation(ConversationId(conversation_id)));
    }
    if account_id != 0 {
        return match state.account(AccountId(account_id)) {
            Some(_) => Ok(Target::Peer(AccountId(account_id))),
            None => Err(ChatError::NotFound(format!(
                "there is no account with id {account_id}; it may have been deleted"
            ))),
        };
    }
    peer(state, name).map(Target::Peer)
}

fn no_conversation(id: ConversationId) -> ChatError {
    ChatError::NotFound(format!(
        "there is no conversation {id} that you are a member of"
    ))
}

/// A group title: 1 to [`MAX_TITLE`] characters, no control characters,
/// not only spaces. Never echoed.
fn validate_title(title: &str) -> Result<(), ChatError> {
    let chars = title.chars().count();
    let ok = (1..=MAX_TITLE).contains(&chars)
        && !title.chars().any(char::is_control)
        && !title.trim().is_empty();
    if ok {
        Ok(())
    } else {
        Err(ChatError::invalid(format!(
            "a group title is 1 to {MAX_TITLE} characters of printable text, not only spaces"
        )))
    }
}

/// What the state's refusal of a group change means for the caller.
fn group_refusal(r: Rejection, group: ConversationId) -> ChatError {
    match r {
        Rejection::NoSuchConversation => no_conversation(group),
        Rejection::NotAGroup => ChatError::FailedPrecondition(format!(
            "conversation {group} is a direct conversation, not a group: it has no members to change"
        )),
        Rejection::NotAllowed => ChatError::PermissionDenied(
            "only the group's owner (and the admins it names, for adding, removing plain members and renaming) may do that".into(),
        ),
        Rejection::AlreadyMember => {
            ChatError::AlreadyExists("every account named is a member already".into())
        }
        Rejection::NotAMember => {
            ChatError::NotFound("that account is not a member of the group".into())
        }
        Rejection::TooManyMembers => ChatError::FailedPrecondition(format!(
            "a group has at most {MAX_MEMBERS} members"
        )),
        Rejection::NoSuchAccount => {
            ChatError::NotFound("an account named does not exist (any more)".into())
        }
        other => unexpected(Applied::Rejected(other)),
    }
}

/// A History search text: 1 to [`MAX_QUERY`] bytes (empty means no
/// search). Never echoed.
fn validate_query(query: &str) -> Result<(), ChatError> {
    if query.len() > MAX_QUERY {
        return Err(ChatError::invalid(format!(
            "a search query is 1 to {MAX_QUERY} bytes of text; this one is {} bytes",
            query.len()
        )));
    }
    Ok(())
}

fn page_limit(limit: u32, default: u32) -> Result<usize, ChatError> {
    match limit {
        0 => Ok(default as usize),
        l if l <= MAX_PAGE => Ok(l as usize),
        _ => Err(ChatError::invalid(format!("limit is at most {MAX_PAGE}"))),
    }
}

impl ChatService {
    pub fn new(
        node: Node,
        guards: Arc<Guards>,
        activity: Arc<SessionActivity>,
        shutdown: CancellationToken,
    ) -> Self {
        ChatService {
            node,
            guards,
            activity,
            shutdown,
        }
    }

    /// The session and account behind `token` in `state`, refreshing its
    /// idle clock. Call it inside [`Node::read`], with the request's other
    /// look-ups.
    fn signed_in(
        &self,
        state: &ChatState,
        token: &str,
    ) -> Result<(SessionId, AccountId), ChatError> {
        if token.is_empty() {
            return Err(ChatError::Unauthenticated(
                "this call needs a session token; log in first".into(),
            ));
        }
        let (session, account) = state
            .session_by_token(&auth::token_hash(token))
            .map(|(id, s)| (id, s.account))
            .ok_or_else(|| {
                ChatError::Unauthenticated(
                    "the session has ended or the token is unknown; log in again".into(),
                )
            })?;
        if self.activity.is_idle(session) {
            self.close_idle(session, account);
            return Err(ChatError::Unauthenticated(format!(
                "the session ended after {} of inactivity; log in again",
                humantime::format_duration(self.activity.idle_timeout())
            )));
        }
        self.activity.touch(session);
        Ok((session, account))
    }

    /// [`Self::signed_in`] for a request that needs nothing else from the
    /// state.
    fn authenticate(&self, token: &str) -> Result<(SessionId, AccountId), ChatError> {
        self.node.read(|state| self.signed_in(state, token))
    }

    /// Records in the log that an idle session ended (in the background:
    /// the caller is answered either way).
    fn close_idle(&self, session: SessionId, account: AccountId) {
        let node = self.node.clone();
        tokio::spawn(async move {
            let event = Event::SessionClosed {
                account,
                session,
                reason: CloseReason::Idle,
                at_ms: now_ms(),
            };
            if let Err(e) = node.propose(event).await {
                tracing::debug!("could not record the end of idle session {session}: {e}");
            }
        });
    }

    async fn create_account(
        &self,
        req: pb::CreateAccountRequest,
        from: Option<std::net::IpAddr>,
    ) -> Result<pb::CreateAccountResponse, ChatError> {
        validate_username(&req.username)?;
        validate_password(&req.password)?;
        if (self.node).read(|state| state.account_by_name(&req.username).is_some()) {
            return Err(name_taken(&req.username));
        }
        self.guards.held(self.guards.creations.take(from)).await?;
        let cost = self.node.config().password_hashing;
        let password = req.password;
        let hashing = (self.guards.hashing).run(move || auth::hash_password(&password, cost));
        let password_hash = self.guards.held(hashing.await).await??;
        let event = Event::AccountCreated {
            username: req.username.clone(),
            password_hash,
            at_ms: now_ms(),
        };
        match self.node.propose(event).await? {
            (index, Applied::AccountCreated(id)) => Ok(pb::CreateAccountResponse {
                account_id: id.0,
                username: req.username,
                log_position: index,
            }),
            (_, Applied::Rejected(Rejection::NameTaken)) => Err(name_taken(&req.username)),
            (_, other) => Err(unexpected(other)),
        }
    }

    async fn login(&self, req: pb::LoginRequest) -> Result<pb::LoginResponse, ChatError> {
        let denied = || ChatError::Unauthenticated("unknown username or wrong password".into());
        self.node.wait_applied(req.min_applied).await?;
        if req.username.is_empty()
            || req.username.len() > MAX_USERNAME
            || req.password.len() > MAX_PASSWORD
        {
            return Err(denied());
        }
        (self.guards)
            .held(self.guards.throttle.begin_attempt(&req.username))
            .await?;
        let found = self.node.read(|state| {
            (state.account_by_name(&req.username)).map(|(id, a)| (id, a.password_hash.clone()))
        });
        let password = req.password;
        let (account, matches) = match found {
            Some((id, hash)) => {
                let check = move || auth::verify_password(&hash, &password);
                let ok = self
                    .guards
                    .held(self.guards.hashing.run(check).await)
                    .await?;
                (Some(id), ok)
            }
            None => (None, false),
        };
        let Some(account) = account.filter(|_| matches) else {
            return Err(denied());
        };
        self.guards.throttle.login_succeeded(&req.username);
        let (token, token_hash) = auth::new_token()?;
        let event = Event::SessionOpened {
            account,
            token_hash,
            at_ms: now_ms(),
        };
        let (index, applied) = self.node.propose(event).await?;
        let Applied::SessionOpened(session) = applied else {
            return Err(match applied {
                Applied::Rejected(Rejection::NoSuchAccount) => denied(),
                other => unexpected(other),
            });
        };
        self.activity.touch(session);
        let (username, delivered_cursor, unread_count) = self.node.read(|state| {
            let acc = state.account(account).ok_or_else(denied)?;
            Ok::<_, ChatError>((acc.username.clone(), acc.delivered_up_to.0, acc.unread))
        })?;
        Ok(pb::LoginResponse {
            token,
            account_id: account.0,
            username,
            delivered_cursor,
            unread_count,
            session_idle_timeout_secs: (self.activity.idle_timeout().as_secs()).min(u32::MAX as u64)
                as u32,
            log_position: index,
        })
    }

    async fn resume(&self, req: pb::ResumeRequest) -> Result<pb::LoginResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (username, delivered_cursor, unread_count, account) = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            let acc = state.account(account).ok_or_else(|| {
                ChatError::Unauthenticated("the account no longer exists; log in again".into())
            })?;
            Ok::<_, ChatError>((
                acc.username.clone(),
                acc.delivered_up_to.0,
                acc.unread,
                account,
            ))
        })?;
        Ok(pb::LoginResponse {
            token: req.token,
            account_id: account.0,
            username,
            delivered_cursor,
            unread_count,
            session_idle_timeout_secs: (self.activity.idle_timeout().as_secs()).min(u32::MAX as u64)
                as u32,
            log_position: 0,
        })
    }

    async fn logout(&self, req: pb::LogoutRequest) -> Result<pb::LogoutResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (session, account) = self.authenticate(&req.token)?;
        let event = Event::SessionClosed {
            account,
            session,
            reason: CloseReason::Logout,
            at_ms: now_ms(),
        };
        let (index, _) = self.node.propose(event).await?;
        self.activity.forget(session);
        Ok(pb::LogoutResponse {
            log_position: index,
        })
    }

    async fn delete_account(
        &self,
        req: pb::DeleteAccountRequest,
    ) -> Result<pb::DeleteAccountResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (account, hash) = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            let hash = (state.account(account))
                .map(|a| a.password_hash.clone())
                .ok_or_else(|| ChatError::Unauthenticated("the account no longer exists".into()))?;
            Ok::<_, ChatError>((account, hash))
        })?;
        let password = req.password;
        let check = move || auth::verify_password(&hash, &password);
        if !self.guards.hashing.run(check).await? {
            return Err(ChatError::PermissionDenied(
                "wrong password; the account was not deleted".into(),
            ));
        }
        let (index, _) = self
            .node
            .propose(Event::AccountDeleted {
                account,
                at_ms: now_ms(),
            })
            .await?;
        Ok(pb::DeleteAccountResponse {
            log_position: index,
        })
    }

    async fn list_accounts(
        &self,
        req: pb::ListAccountsRequest,
    ) -> Result<pb::ListAccountsResponse, ChatError> {
        let pattern = if req.pattern.is_empty() {
            "*".to_string()
        } else {
            req.pattern.to_lowercase()
        };
        if pattern.len() > MAX_PATTERN
            || !pattern
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*' | b'?'))
        {
            return Err(ChatError::invalid(format!(
                "a pattern is at most {MAX_PATTERN} characters of letters, digits, '_', '.', '-' and the wildcards '*' and '?'"
            )));
        }
        let limit = page_limit(req.limit, DEFAULT_ACCOUNT_PAGE)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            match req.page_token.rsplit_once('/') {
                Some((p, name)) if p == pattern && !name.is_empty() => Some(name.to_string()),
                _ => {
                    return Err(ChatError::invalid(
                        "the page token does not belong to this pattern; start again with an empty page token",
                    ));
                }
            }
        };
        self.node.wait_applied(req.min_applied).await?;
        let (page, online) = self.node.read(|state| {
            let caller = if req.token.is_empty() {
                None
            } else {
                Some(self.signed_in(state, &req.token)?.1)
            };
            let page = state.list_accounts(&pattern, after.as_deref(), limit);
            // Presence only of those the caller shares a conversation with.
            let contacts: Vec<AccountId> = (page.accounts.iter())
                .map(|(id, ..)| *id)
                .filter(|id| caller.is_some_and(|me| state.share_a_conversation(me, *id)))
                .collect();
            let online: HashSet<AccountId> =
                self.node.online_among(&contacts).into_iter().collect();
            Ok::<_, ChatError>((page, online))
        })?;
        Ok(pb::ListAccountsResponse {
            accounts: page
                .accounts
                .into_iter()
                .map(|(id, username, created_at_ms)| pb::Account {
                    username,
                    account_id: id.0,
                    created_at_ms,
                    online: online.contains(&id),
                })
                .collect(),
            next_page_token: page
                .next_after
                .map(|n| format!("{pattern}/{n}"))
                .unwrap_or_default(),
        })
    }

    async fn send(&self, req: pb::SendRequest) -> Result<pb::SendResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        /// What the state says of a send, read under one lock.
        enum Check {
            /// A retry of a send that already happened: the first result.
            Done(MessageId),
            New {
                from: AccountId,
                to: Target,
            },
        }
        let check = self.node.read(|state| {
            let (_, from) = self.signed_in(state, &req.token)?;
            validate_body(&req.body)?;
            if req.client_msg_id.is_empty() || req.client_msg_id.len() > MAX_CLIENT_MSG_ID {
                return Err(ChatError::invalid(format!(
                    "client_msg_id is required: 1 to {MAX_CLIENT_MSG_ID} bytes that identify this message among the sender's (a UUID works)"
                )));
            }
            if let Some(id) = state.message_by_key(from, &req.client_msg_id) {
                return Ok(Check::Done(id));
            }
            let to = target(state, "to", &req.to, req.to_account_id, req.conversation_id)?;
            if let Target::Conversation(c) = to
                && !state.is_member(from, c)
            {
                return Err(no_conversation(c));
            }
            if let Target::Peer(to) = to
                && to == from
            {
                return Err(ChatError::invalid("you cannot send a message to yourself"));
            }
            Ok(Check::New { from, to })
        })?;
        let (from, to) = match check {
            Check::Done(id) => {
                return Ok(pb::SendResponse {
                    message_id: id.0,
                    sent_at_ms: self.node.sent_at(id).await?,
                    log_position: id.0,
                });
            }
            Check::New { from, to } => (from, to),
        };
        let at_ms = now_ms();
        let event = match to {
            Target::Peer(to) => Event::MessageSent {
                from,
                to,
                client_msg_id: req.client_msg_id,
                body: req.body,
                at_ms,
            },
            Target::Conversation(conversation) => Event::Posted {
                from,
                conversation,
                client_msg_id: req.client_msg_id,
                body: req.body,
                at_ms,
            },
        };
        match self.node.propose(event).await? {
            (index, Applied::Message { id, duplicate, .. }) => Ok(pb::SendResponse {
                message_id: id.0,
                // A retry that raced the first send is answered as the first.
                sent_at_ms: if duplicate {
                    self.node.sent_at(id).await?
                } else {
                    at_ms
                },
                log_position: index.max(id.0),
            }),
            (_, Applied::Rejected(Rejection::NoSuchAccount)) => Err(ChatError::NotFound(
                "the recipient's account does not exist (any more)".into(),
            )),
            (_, Applied::Rejected(Rejection::NoSuchConversation)) => {
                Err(no_conversation(ConversationId(req.conversation_id)))
            }
            (_, other) => Err(unexpected(other)),
        }
    }

    async fn history(&self, req: pb::HistoryRequest) -> Result<pb::HistoryResponse, ChatError> {
        if !req.query.is_empty() {
            return self.search(req).await;
        }
        self.node.wait_applied(req.min_applied).await?;
        let before = (req.before != 0).then_some(MessageId(req.before));
        let (refs, next, notices) = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            let limit = page_limit(req.limit, DEFAULT_HISTORY_PAGE)?;
            let c = match target(
                state,
                "peer",
                &req.peer,
                req.peer_account_id,
                req.conversation_id,
            )? {
                Target::Peer(peer) => {
                    let (refs, next) = state.history(account, peer, before, limit);
                    return Ok((refs, next, Vec::new()));
                }
                Target::Conversation(c) => c,
            };
            let (refs, next) =
                (state.history_of(account, c, before, limit)).ok_or_else(|| no_conversation(c))?;
            // The changes between this page's oldest message and `before`.
            let after = match (next, refs.last()) {
                (Some(_), Some(oldest)) => oldest.id.0,
                _ => 0,
            };
            let up_to = before.map_or(u64::MAX, |b| b.0 - 1);
            let mut notices = state.notices_of(account, c, after, up_to);
            notices.reverse();
            Ok::<_, ChatError>((refs, next, notices))
        })?;
        let messages = self.node.views(refs).await?;
        Ok(pb::HistoryResponse {
            messages: messages.into_iter().map(convert::message).collect(),
            next_before: next.map_or(0, |m| m.0),
            group_events: notices.into_iter().map(convert::group_event).collect(),
        })
    }

    /// History with a query: the ids in the caller's view come from the
    /// indexes under one state lock, the bodies are scanned without it
    /// (`Node::search`), and the matches are described under a second lock
    /// (one deleted or erased in between is left out, as History leaves
    /// out a body erased after its page was read).
    async fn search(&self, req: pb::HistoryRequest) -> Result<pb::HistoryResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let before = (req.before != 0).then_some(MessageId(req.before));
        let budget = self.node.config().search_budget.messages.max(1);
        let scope = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            validate_query(&req.query)?;
            let limit = page_limit(req.limit, DEFAULT_HISTORY_PAGE)?;
            let c = match target(
                state,
                "peer",
                &req.peer,
                req.peer_account_id,
                req.conversation_id,
            )? {
                Target::Conversation(c) => c,
                // No messages exchanged yet: nothing to find, as History
                // finds nothing.
                Target::Peer(peer) => match state.direct_with(account, peer) {
                    Some(c) => c,
                    None => return Ok(None),
                },
            };
            let (ids, more) = (state.visible_ids(account, c, before, budget))
                .ok_or_else(|| no_conversation(c))?;
            Ok::<_, ChatError>(Some((account, c, Scope { ids, more }, limit)))
        })?;
        let Some((account, c, scope, limit)) = scope else {
            return Ok(pb::HistoryResponse::default());
        };
        let found = self.node.search(scope, &req.query, limit).await?;
        let ids = found.matches.iter().map(|(id, _, _)| *id);
        let refs = self.node.read(|state| state.message_refs(account, c, ids));
        let messages = (refs.into_iter().zip(found.matches))
            .filter_map(|(meta, (_, body, at_ms))| {
                Some(MessageView {
                    meta: meta?,
                    body,
                    at_ms,
                })
            })
            .map(convert::message)
            .collect();
        Ok(pb::HistoryResponse {
            messages,
            next_before: found.next_before.map_or(0, |m| m.0),
            group_events: Vec::new(),
        })
    }

    async fn conversations(
        &self,
        req: pb::ConversationsRequest,
    ) -> Result<pb::ConversationsResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (summaries, total_unread) = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            let total_unread = state.account(account).map_or(0, |a| a.unread);
            Ok::<_, ChatError>((state.conversations(account), total_unread))
        })?;
        let lasts = self
            .node
            .views(summaries.iter().filter_map(|c| c.last.clone()).collect())
            .await?;
        let mut lasts = lasts.into_iter().peekable();
        let conversations = (summaries.into_iter()).map(|c| ConversationSummary {
            last: match (&c.last, lasts.peek()) {
                (Some(r), Some(v)) if v.meta.id == r.id => lasts.next(),
                _ => None,
            },
            conversation: c.conversation,
            peer: c.peer,
            peer_name: c.peer_name,
            group: c.group,
            unread: c.unread,
        });
        Ok(pb::ConversationsResponse {
            conversations: conversations
                .into_iter()
                .map(convert::conversation)
                .collect(),
            total_unread,
        })
    }

    /// Fails when `up_to` lies beyond the end of the log.
    fn check_cursor(&self, up_to: u64) -> Result<(), ChatError> {
        let last = self.node.applied_cursor();
        if up_to > last {
            return Err(ChatError::invalid(format!(
                "cursor {up_to} is beyond the end of the log ({last}); use a message id you received"
            )));
        }
        Ok(())
    }

    async fn ack(&self, req: pb::AckRequest) -> Result<pb::AckResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (account, current) = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            self.check_cursor(req.up_to)?;
            let current = state.account(account).map_or(0, |a| a.delivered_up_to.0);
            Ok::<_, ChatError>((account, current))
        })?;
        if req.up_to <= current {
            return Ok(pb::AckResponse {
                log_position: self.node.applied_cursor(),
            });
        }
        let event = Event::DeliveredUpTo {
            account,
            up_to: MessageId(req.up_to),
            at_ms: now_ms(),
        };
        let (index, _) = self.node.propose(event).await?;
        Ok(pb::AckResponse {
            log_position: index,
        })
    }

    async fn mark_read(&self, req: pb::MarkReadRequest) -> Result<pb::MarkReadResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (account, to) = self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            let to = target(
                state,
                "peer",
                &req.peer,
                req.peer_account_id,
                req.conversation_id,
            )?;
            if let Target::Conversation(c) = to
                && !state.is_member(account, c)
            {
                return Err(no_conversation(c));
            }
            self.check_cursor(req.up_to)?;
            Ok::<_, ChatError>((account, to))
        })?;
        let (up_to, at_ms) = (MessageId(req.up_to), now_ms());
        let event = match to {
            Target::Peer(peer) => Event::ReadUpTo {
                account,
                peer,
                up_to,
                at_ms,
            },
            Target::Conversation(conversation) => Event::ConversationRead {
                account,
                conversation,
                up_to,
                at_ms,
            },
        };
        match self.node.propose(event).await? {
            (index, Applied::Unread(n)) => Ok(pb::MarkReadResponse {
                unread_count: n,
                log_position: index,
            }),
            (_, Applied::Rejected(Rejection::NoSuchConversation)) => {
                Err(no_conversation(ConversationId(req.conversation_id)))
            }
            (_, other) => Err(unexpected(other)),
        }
    }

    async fn delete_messages(
        &self,
        req: pb::DeleteMessagesRequest,
    ) -> Result<pb::DeleteMessagesResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (_, account) = self.authenticate(&req.token)?;
        if req.ids.is_empty() || req.ids.len() > MAX_DELETE {
            return Err(ChatError::invalid(format!(
                "give 1 to {MAX_DELETE} message ids to delete"
            )));
        }
        let event = Event::MessagesDeleted {
            account,
            ids: req.ids.iter().map(|id| MessageId(*id)).collect(),
            at_ms: now_ms(),
        };
        match self.node.propose(event).await? {
            (index, Applied::Deleted(n)) => Ok(pb::DeleteMessagesResponse {
                deleted: n,
                log_position: index,
            }),
            (_, other) => Err(unexpected(other)),
        }
    }

    async fn create_group(
        &self,
        req: pb::CreateGroupRequest,
    ) -> Result<pb::CreateGroupResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        validate_title(&req.title)?;
        if req.client_request_id.is_empty() || req.client_request_id.len() > MAX_CLIENT_MSG_ID {
            return Err(ChatError::invalid(format!(
                "client_request_id is required: 1 to {MAX_CLIENT_MSG_ID} bytes that identify this request among the caller's (a UUID works)"
            )));
        }
        if req.member_ids.len() + req.member_names.len() >= MAX_MEMBERS {
            return Err(ChatError::invalid(format!(
                "a group has at most {MAX_MEMBERS} members, you included: name at most {} others",
                MAX_MEMBERS - 1
            )));
        }
        let (owner, members, done) = self.node.read(|state| {
            let (_, owner) = self.signed_in(state, &req.token)?;
            if let Some(c) = state.group_by_key(owner, &req.client_request_id) {
                return Ok((owner, Vec::new(), Some(c)));
            }
            let mut members = Vec::new();
            for id in &req.member_ids {
                if state.account(AccountId(*id)).is_none() {
                    return Err(ChatError::NotFound(format!(
                        "there is no account with id {id}; it may have been deleted"
                    )));
                }
                members.push(AccountId(*id));
            }
            for name in &req.member_names {
                members.push(peer(state, name)?);
            }
            Ok::<_, ChatError>((owner, members, None))
        })?;
        if let Some(c) = done {
            return Ok(pb::CreateGroupResponse {
                conversation_id: c.0,
                log_position: self.node.applied_cursor(),
            });
        }
        let event = Event::GroupCreated {
            owner,
            title: req.title,
            members,
            client_request_id: req.client_request_id,
            at_ms: now_ms(),
        };
        match self.node.propose(event).await? {
            (index, Applied::GroupCreated(c)) => Ok(pb::CreateGroupResponse {
                conversation_id: c.0,
                log_position: index,
            }),
            (_, Applied::Rejected(r)) => Err(group_refusal(r, ConversationId(0))),
            (_, other) => Err(unexpected(other)),
        }
    }

    async fn change_group(
        &self,
        req: pb::ChangeGroupRequest,
    ) -> Result<pb::ChangeGroupResponse, ChatError> {
        use pb::change_group_request::Change as C;
        self.node.wait_applied(req.min_applied).await?;
        let group = ConversationId(req.conversation_id);
        let one = |id: u64| {
            if id == 0 {
                Err(ChatError::invalid(
                    "name the member by its account id (not 0)",
                ))
            } else {
                Ok(AccountId(id))
            }
        };
        let change = match req.change {
            None => {
                return Err(ChatError::invalid(
                    "say what to change: add, remove, leave, rename, new_owner, add_admin or remove_admin",
                ));
            }
            Some(C::Add(ids)) => {
                if ids.ids.is_empty() || ids.ids.len() >= MAX_MEMBERS {
                    return Err(ChatError::invalid(format!(
                        "add 1 to {} accounts at a time",
                        MAX_MEMBERS - 1
                    )));
                }
                let ids = ids
                    .ids
                    .iter()
                    .map(|id| one(*id))
                    .collect::<Result<_, _>>()?;
                GroupChange::Added(ids)
            }
            Some(C::Remove(id)) => GroupChange::Removed(one(id)?),
            Some(C::Leave(true)) => GroupChange::Left,
            Some(C::Leave(false)) => {
                return Err(ChatError::invalid("leave must be true to leave"));
            }
            Some(C::Rename(title)) => {
                validate_title(&title)?;
                GroupChange::Renamed(title)
            }
            Some(C::NewOwner(id)) => GroupChange::OwnerChanged(one(id)?),
            Some(C::AddAdmin(id)) => GroupChange::AdminSet {
                account: one(id)?,
                admin: true,
            },
            Some(C::RemoveAdmin(id)) => GroupChange::AdminSet {
                account: one(id)?,
                admin: false,
            },
        };
        let by = self.node.read(|state| {
            let (_, by) = self.signed_in(state, &req.token)?;
            if let GroupChange::Added(ids) = &change
                && let Some(id) = ids.iter().find(|id| state.account(**id).is_none())
            {
                return Err(ChatError::NotFound(format!(
                    "there is no account with id {id}; it may have been deleted"
                )));
            }
            Ok::<_, ChatError>(by)
        })?;
        let event = Event::GroupChanged {
            by,
            group,
            change,
            at_ms: now_ms(),
        };
        match self.node.propose(event).await? {
            (index, Applied::Done) => Ok(pb::ChangeGroupResponse {
                log_position: index,
            }),
            (_, Applied::Rejected(r)) => Err(group_refusal(r, group)),
            (_, other) => Err(unexpected(other)),
        }
    }

    async fn members(&self, req: pb::MembersRequest) -> Result<pb::MembersResponse, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        self.node.read(|state| {
            let (_, account) = self.signed_in(state, &req.token)?;
            let c = ConversationId(req.conversation_id);
            let members = state
                .members_of(account, c)
                .ok_or_else(|| no_conversation(c))?;
            let group = state.group(account, c);
            let ids: Vec<AccountId> = members.iter().map(|m| m.account).collect();
            let online: HashSet<AccountId> = self.node.online_among(&ids).into_iter().collect();
            Ok(pb::MembersResponse {
                members: (members.into_iter())
                    .map(|m| pb::ConversationMember {
                        account_id: m.account.0,
                        username: m.name,
                        owner: group.is_some_and(|g| g.owner == m.account),
                        admin: group.is_some_and(|g| g.admins.contains(&m.account)),
                        joined_at: m.joined.0,
                        read_up_to: m.read_up_to.0,
                        delivered_up_to: m.delivered_up_to.0,
                        online: online.contains(&m.account),
                    })
                    .collect(),
                title: group.map(|g| g.title.clone()).unwrap_or_default(),
            })
        })
    }

    async fn subscribe(&self, req: pb::SubscribeRequest) -> Result<EventStream, ChatError> {
        self.node.wait_applied(req.min_applied).await?;
        let (session, account, sub, applied) = self.node.read(|state| {
            let (session, account) = self.signed_in(state, &req.token)?;
            // Registered before the backlog is read, so nothing falls
            // between the two; anything seen twice is dropped by its id
            // below.
            let sub = self.node.open_stream(account, session)?;
            // Everything up to `applied` is in the backlog, so it is the
            // cursor the caught-up marker reports (live events start after).
            let applied = self.node.applied_cursor();
            Ok::<_, ChatError>((session, account, sub, applied))
        })?;
        // The backlog is read by a task of its own and sent through a
        // channel; the live events that follow are taken from the hub by
        // the response stream itself, one hop less per delivery.
        let (tx, rx) = mpsc::channel(64);
        let cursor = Arc::new(AtomicU64::new(BACKLOG_UNFINISHED));
        let node = self.node.clone();
        let backlog_cursor = Arc::clone(&cursor);
        tokio::spawn(async move {
            if let Some(last) = send_backlog(&node, account, req.after, applied, &tx).await {
                backlog_cursor.store(last, Ordering::Release);
            }
        });
        let live = LiveEvents {
            sub,
            cursor,
            shutdown: Box::pin(self.shutdown.clone().cancelled_owned()),
            node: self.node.clone(),
            session,
            done: false,
        };
        Ok(ReceiverStream::new(rx).chain(live))
    }
}

/// The response of `Subscribe`: the backlog, then the live events.
pub type EventStream =
    tokio_stream::adapters::Chain<ReceiverStream<Result<pb::Event, Status>>, LiveEvents>;

/// The cursor of a backlog that did not finish (it failed, or the client
/// left): the live events do not follow it.
const BACKLOG_UNFINISHED: u64 = u64::MAX;

/// Sends `account`'s backlog after `after` (up to `applied`), the
/// caught-up marker and who is online; the cursor after them, or `None`
/// if it stopped (an error was sent, or the client left).
async fn send_backlog(
    node: &Node,
    account: AccountId,
    after: u64,
    applied: u64,
    tx: &mpsc::Sender<Result<pb::Event, Status>>,
) -> Option<u64> {
    let mut last = after;
    // A page at a time, so that a long backlog is never held in memory
    // whole.
    loop {
        let page = node.read(|state| state.feed_after(account, last, applied, BACKLOG_PAGE));
        let (full, end) = (page.len() == BACKLOG_PAGE, page.last().map(|e| e.index));
        let events = match node.feed_views(page).await {
            Ok(events) => events,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return None;
            }
        };
        for event in events {
            if event.index <= last {
                continue;
            }
            last = event.index;
            tx.send(Ok(convert::event(event))).await.ok()?;
        }
        // Past entries whose messages were erased meanwhile, too.
        last = last.max(end.unwrap_or(0));
        if !full {
            break;
        }
    }
    last = last.max(applied);
    tx.send(Ok(convert::caught_up(last))).await.ok()?;
    // Who is online now; changes follow on the live stream.
    let presence = News::Presence {
        full: true,
        online: node.online_contacts(account),
        offline: Vec::new(),
    };
    tx.send(Ok(convert::news(presence))).await.ok()?;
    Some(last)
}

/// The live part of a `Subscribe` stream: each event taken from the hub
/// and converted when the connection asks for the next one.
pub struct LiveEvents {
    sub: Subscription,
    /// The last event id sent; set by the backlog when it finishes.
    cursor: Arc<AtomicU64>,
    shutdown: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    node: Node,
    session: SessionId,
    done: bool,
}

impl LiveEvents {
    /// Ends the stream after this item.
    fn last_item(&mut self, error: ChatError) -> Poll<Option<Result<pb::Event, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl tokio_stream::Stream for LiveEvents {
    type Item = Result<pb::Event, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let last = this.cursor.load(Ordering::Acquire);
        if this.done || last == BACKLOG_UNFINISHED {
            return Poll::Ready(None);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            return this.last_item(ChatError::Unavailable(format!(
                "the server is shutting down; resubscribe elsewhere with after={last}"
            )));
        }
        loop {
            let Poll::Ready(item) = this.sub.rx.poll_recv(cx) else {
                return Poll::Pending;
            };
            match item {
                Some(StreamItem::Entry(event)) => {
                    if event.index <= last {
                        continue;
                    }
                    this.cursor.store(event.index, Ordering::Release);
                    return Poll::Ready(Some(Ok(convert::event(event))));
                }
                Some(StreamItem::News(news)) => return Poll::Ready(Some(Ok(convert::news(news)))),
                Some(StreamItem::Ended(Ended::SessionClosed)) => {
                    return this.last_item(ChatError::Unauthenticated(
                        "the session has ended; log in again".into(),
                    ));
                }
                Some(StreamItem::Ended(Ended::Resync)) => {
                    return this.last_item(ChatError::Aborted(format!(
                        "this server caught up from a snapshot; resubscribe with after={last}"
                    )));
                }
                None => {
                    let status = if this.sub.overflowed() {
                        ChatError::Aborted(format!(
                            "this subscriber fell behind and was dropped; resubscribe with after={last}"
                        ))
                    } else if (this.node).read(|state| state.session(this.session).is_none()) {
                        ChatError::Unauthenticated("the session has ended; log in again".into())
                    } else {
                        ChatError::Aborted(format!(
                            "the stream was interrupted; resubscribe with after={last}"
                        ))
                    };
                    return this.last_item(status);
                }
            }
        }
    }
}

fn name_taken(name: &str) -> ChatError {
    ChatError::AlreadyExists(format!("the username '{name}' is taken; choose another"))
}

fn unexpected(applied: Applied) -> ChatError {
    ChatError::Internal(format!(
        "unexpected result from the state machine: {applied:?}"
    ))
}

type RpcResult<T> = Result<Response<T>, Status>;

impl ChatService {
    /// The reply to a call; when this server does not lead, it names the
    /// leader so the client can send its writes there without a forward.
    fn answer<T>(&self, r: Result<T, ChatError>) -> RpcResult<T> {
        let mut response = r.map(Response::new).map_err(Status::from)?;
        if let Some(leader) = self.node.leader_elsewhere()
            && let Ok(value) = leader.parse()
        {
            response
                .metadata_mut()
                .insert(chat_proto::LEADER_METADATA_KEY, value);
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl pb::chat_server::Chat for ChatService {
    async fn create_account(
        &self,
        r: Request<pb::CreateAccountRequest>,
    ) -> RpcResult<pb::CreateAccountResponse> {
        let from = r.remote_addr().map(|a| a.ip());
        self.answer(ChatService::create_account(self, r.into_inner(), from).await)
    }

    async fn login(&self, r: Request<pb::LoginRequest>) -> RpcResult<pb::LoginResponse> {
        self.answer(ChatService::login(self, r.into_inner()).await)
    }

    async fn logout(&self, r: Request<pb::LogoutRequest>) -> RpcResult<pb::LogoutResponse> {
        self.answer(ChatService::logout(self, r.into_inner()).await)
    }

    async fn resume(&self, r: Request<pb::ResumeRequest>) -> RpcResult<pb::LoginResponse> {
        self.answer(ChatService::resume(self, r.into_inner()).await)
    }

    async fn delete_account(
        &self,
        r: Request<pb::DeleteAccountRequest>,
    ) -> RpcResult<pb::DeleteAccountResponse> {
        self.answer(ChatService::delete_account(self, r.into_inner()).await)
    }

    async fn list_accounts(
        &self,
        r: Request<pb::ListAccountsRequest>,
    ) -> RpcResult<pb::ListAccountsResponse> {
        self.answer(ChatService::list_accounts(self, r.into_inner()).await)
    }

    async fn send(&self, r: Request<pb::SendRequest>) -> RpcResult<pb::SendResponse> {
        self.answer(ChatService::send(self, r.into_inner()).await)
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        r: Request<pb::SubscribeRequest>,
    ) -> RpcResult<Self::SubscribeStream> {
        self.answer(ChatService::subscribe(self, r.into_inner()).await)
    }

    async fn history(&self, r: Request<pb::HistoryRequest>) -> RpcResult<pb::HistoryResponse> {
        self.answer(ChatService::history(self, r.into_inner()).await)
    }

    async fn conversations(
        &self,
        r: Request<pb::ConversationsRequest>,
    ) -> RpcResult<pb::ConversationsResponse> {
        self.answer(ChatService::conversations(self, r.into_inner()).await)
    }

    async fn ack(&self, r: Request<pb::AckRequest>) -> RpcResult<pb::AckResponse> {
        self.answer(ChatService::ack(self, r.into_inner()).await)
    }

    async fn mark_read(&self, r: Request<pb::MarkReadRequest>) -> RpcResult<pb::MarkReadResponse> {
        self.answer(ChatService::mark_read(self, r.into_inner()).await)
    }

    async fn delete_messages(
        &self,
        r: Request<pb::DeleteMessagesRequest>,
    ) -> RpcResult<pb::DeleteMessagesResponse> {
        self.answer(ChatService::delete_messages(self, r.into_inner()).await)
    }

    async fn create_group(
        &self,
        r: Request<pb::CreateGroupRequest>,
    ) -> RpcResult<pb::CreateGroupResponse> {
        self.answer(ChatService::create_group(self, r.into_inner()).await)
    }

    async fn change_group(
        &self,
        r: Request<pb::ChangeGroupRequest>,
    ) -> RpcResult<pb::ChangeGroupResponse> {
        self.answer(ChatService::change_group(self, r.into_inner()).await)
    }

    async fn members(&self, r: Request<pb::MembersRequest>) -> RpcResult<pb::MembersResponse> {
        self.answer(ChatService::members(self, r.into_inner()).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_rules() {
        for ok in ["a", "Alice_1", "bob.smith-2", &"x".repeat(32)] {
            validate_username(ok).unwrap();
        }
        for bad in ["", "al ice", "émile", "a/b", &"x".repeat(33)] {
            assert!(
                matches!(validate_username(bad), Err(ChatError::InvalidArgument(_))),
                "{bad}"
            );
        }
        validate_password("12345678").unwrap();
        assert!(validate_password("1234567").is_err());
        assert!(validate_password(&"x".repeat(1025)).is_err());
        validate_body("x").unwrap();
        validate_body(&"x".repeat(MAX_BODY)).unwrap();
        assert!(validate_body("").is_err());
        assert!(validate_body(&"x".repeat(MAX_BODY + 1)).is_err());
        validate_query("ä").unwrap();
        validate_query(&"ä".repeat(MAX_QUERY / 2)).unwrap();
        assert!(validate_query(&"x".repeat(MAX_QUERY + 1)).is_err());
        assert_eq!(page_limit(0, 50).unwrap(), 50);
        assert_eq!(page_limit(1000, 50).unwrap(), 1000);
        assert!(page_limit(1001, 50).is_err());
    }
}
