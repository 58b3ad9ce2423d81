//! A subscription to a user's events that survives failures.
//!
//! The server streams events in log order, each with an id that is the same
//! on every replica. The subscription remembers the last id it handed out;
//! when a stream breaks (the server died, the connection reset, or the server
//! dropped a slow subscriber with ABORTED or RESOURCE_EXHAUSTED) it
//! subscribes again after that id, on the next server if the old one failed,
//! so the consumer sees every event once, in order. It also drops any event
//! whose id is not above the last one, in case a server replays.
//!
//! It calls and fails over through the client's `failover::Connection`, not
//! through the [`Client`](crate::Client), and paces repeated resubscribes
//! with a [`Retry`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chat_proto as proto;
use chat_proto::chat_client::ChatClient;
use tokio::time::{self, Instant};
use tonic::{Code, Status};

use crate::error::{ClientError, Result};
use crate::failover::{Connection, Route};
use crate::model::{Event, EventId};
use crate::retry::{Backoff, Fault, Retry, Rpc, classify};

/// A live, resumable stream of a session's events, from
/// [`Client::subscribe`](crate::Client::subscribe).
///
/// Read it with [`next`](Self::next). Dropping it ends the stream.
pub struct Subscription {
    /// The connection of the client that opened it, shared with that client.
    connection: Arc<Connection>,
    /// The session token the stream is opened with.
    token: String,
    /// The last event id handed out: where to resume.
    cursor: Cursor,
    /// The stream in use; `None` between a failure and the resubscribe.
    stream: Option<OpenStream>,
    /// The pause before each resubscribe.
    resubscribes: Resubscribes,
    /// How long to wait before the next resubscribe.
    resume_delay: Duration,
    /// Set once the stream cannot go on (e.g. the session expired).
    finished: bool,
}

/// A stream and the route it came over, to know which server failed.
struct OpenStream {
    events: tonic::Streaming<proto::Event>,
    route: Route,
    /// A stream that lasted longer than the longest backoff was healthy: its
    /// end does not count as a quiet one.
    opened_at: Instant,
}

impl OpenStream {
    /// Opens the event stream after `after`, with the same failover and
    /// retries as any read.
    async fn open(connection: &Connection, token: &str, after: EventId) -> Result<Self> {
        let request = || proto::SubscribeRequest {
            token: token.to_owned(),
            after,
            // A replica that has not applied `after` yet would announce
            // CaughtUp before it has what the cursor says was seen. A cursor
            // saved by an earlier run is not in `read_cursor`.
            min_applied: connection.read_cursor().max(after),
        };
        let (events, route) = connection
            .call(Rpc::Subscribe, request, |channel, request, _| async move {
                ChatClient::new(channel).subscribe(request).await
            })
            .await?;
        Ok(Self {
            events,
            route,
            opened_at: Instant::now(),
        })
    }
}

/// The pause before each resubscribe: none after the first end of a stream
/// since the last news (a server may drop a slow subscriber, or restart),
/// then growing by the backoff with each stream that ends, or resubscribe
/// that fails, before any news: a server that keeps ending streams is not
/// hammered.
#[derive(Debug, Clone)]
struct Resubscribes {
    /// Whether a stream ended, or a resubscribe failed, since the last news.
    ended_without_news: bool,
    /// The backoff of the ends after the first.
    backoff: Retry,
}

impl Resubscribes {
    fn new(backoff: Backoff) -> Self {
        Self {
            ended_without_news: false,
            backoff: Retry::new(backoff),
        }
    }

    /// Counts a stream's end, or a failed resubscribe; returns the pause
    /// before the next resubscribe.
    fn ended(&mut self) -> Duration {
        if std::mem::replace(&mut self.ended_without_news, true) {
            self.backoff.next_delay()
        } else {
            Duration::ZERO
        }
    }

    /// Records that a stream brought news, or lasted long enough to count
    /// as healthy: the next end resubscribes at once again.
    fn news(&mut self) {
        self.ended_without_news = false;
        self.backoff.reset();
    }
}

/// The position in the event stream, and the guard against replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    last: EventId,
}

impl Cursor {
    /// Starts after `last`: events up to it count as already seen.
    pub(crate) fn after(last: EventId) -> Self {
        Self { last }
    }

    /// Whether an event with this id is new; if so, moves past it.
    pub(crate) fn admit(&mut self, id: EventId) -> bool {
        if id <= self.last {
            return false;
        }
        self.last = id;
        true
    }

    /// The last id admitted (or the starting point).
    pub(crate) fn last(self) -> EventId {
        self.last
    }
}

/// What to do when a stream ends with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// The server or connection failed: move to the next server, then
    /// resubscribe.
    FailOver,
    /// The server asked for it (a slow subscriber dropped): resubscribe.
    Resubscribe,
    /// The stream cannot go on: report the error and end.
    Stop,
}

/// Decides how to go on after a stream ended with `status`.
fn resume_after(status: &Status) -> Resume {
    match classify(status) {
        Fault::NotSent | Fault::Unsure => Resume::FailOver,
        Fault::Answered => match status.code() {
            // The API ends a subscriber that fell behind with ABORTED; the
            // design names RESOURCE_EXHAUSTED. Both mean "come back from your
            // cursor".
            Code::Aborted | Code::ResourceExhausted => Resume::Resubscribe,
            _ => Resume::Stop,
        },
    }
}

impl Subscription {
    /// Opens the first stream; fails like any read if no server accepts it.
    pub(crate) async fn open(
        connection: Arc<Connection>,
        token: &str,
        after: EventId,
    ) -> Result<Self> {
        let stream = OpenStream::open(&connection, token, after).await?;
        let resubscribes = Resubscribes::new(connection.backoff());
        Ok(Self {
            connection,
            token: token.to_owned(),
            cursor: Cursor::after(after),
            stream: Some(stream),
            resubscribes,
            resume_delay: Duration::ZERO,
            finished: false,
        })
    }

    /// The id of the last event handed out (or the `after` it started from):
    /// pass it to a later [`Client::subscribe`](crate::Client::subscribe) to
    /// go on from here.
    pub fn last_event_id(&self) -> EventId {
        self.cursor.last()
    }

    /// The next event, waiting for it if need be.
    ///
    /// Resubscribes by itself after a broken stream. Returns `Some(Err(_))`
    /// when it could not: if the error [is
    /// transient](ClientError::is_transient) (no server reachable), calling
    /// `next` again tries again from the same cursor; otherwise (e.g.
    /// UNAUTHENTICATED: the session expired or was closed, log in again) the
    /// subscription is over and `next` returns `None` from then on.
    ///
    /// Cancel-safe: it can be raced in `tokio::select!`; a call dropped
    /// half-way loses no event.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if self.finished {
                return None;
            }
            if self.stream.is_none()
                && let Err(error) = self.reopen().await
            {
                return Some(Err(error));
            }
            let Some(open) = self.stream.as_mut() else {
                continue;
            };
            let received = open.events.message().await;
            match received {
                Ok(Some(event)) => {
                    if let Some(event) = self.accept(event) {
                        return Some(Ok(event));
                    }
                }
                Ok(None) => {
                    // A clean end, which the API does not promise: a proxy
                    // or a server going away. Resubscribing tells which.
                    tracing::debug!(cursor = self.cursor.last(), "event stream ended");
                    let ended = self.stream.take().map(|open| open.opened_at);
                    self.ended_quietly(ended);
                }
                Err(status) => {
                    if let Some(error) = self.broken(status).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// Opens a new stream after the cursor, after the pause the last end
    /// called for.
    async fn reopen(&mut self) -> Result<()> {
        if !self.resume_delay.is_zero() {
            time::sleep(self.resume_delay).await;
        }
        match OpenStream::open(&self.connection, &self.token, self.cursor.last()).await {
            Ok(opened) => {
                tracing::debug!(cursor = self.cursor.last(), "resubscribed");
                self.resume_delay = Duration::ZERO;
                self.stream = Some(opened);
                Ok(())
            }
            Err(error) => {
                if error.is_transient() {
                    self.ended_quietly(None);
                } else {
                    self.finished = true;
                }
                Err(error)
            }
        }
    }

    /// Hands out a received event unless it was seen already or is of a
    /// kind this client does not know (its cursor still counts).
    ///
    /// Every stream's CaughtUp is handed out, even one whose id is not past
    /// the cursor (a stream with no backlog may mark its end with the cursor
    /// it started from): it carries no data, so a repeat is harmless, and a
    /// front end learns that it is live again. It is given the cursor as its
    /// id, so ids handed out never go backwards.
    ///
    /// Presence and directory news are not in the log: handed out as they
    /// come, without a cursor.
    fn accept(&mut self, event: proto::Event) -> Option<Event> {
        use proto::event::Kind;
        if matches!(event.kind, Some(Kind::Presence(_) | Kind::Directory(_))) {
            return Event::from_proto(event);
        }
        let id = event.id;
        let new = self.cursor.admit(id);
        let caught_up = matches!(event.kind, Some(Kind::CaughtUp(_)));
        if caught_up {
            self.connection.observed(self.cursor.last());
            return Some(Event::CaughtUp {
                id: self.cursor.last(),
            });
        }
        if !new {
            tracing::debug!(id, cursor = self.cursor.last(), "dropped a replayed event");
            return None;
        }
        self.resubscribes.news();
        self.connection.observed(id);
        let event = Event::from_proto(event);
        if event.is_none() {
            tracing::debug!(id, "skipped an event of an unknown kind");
        }
        event
    }

    /// Counts a stream that ended without news (one opened at `opened_at`,
    /// or none), and sets the pause before the next resubscribe.
    fn ended_quietly(&mut self, opened_at: Option<Instant>) {
        let longest_wait = self.connection.backoff().max;
        if opened_at.is_some_and(|at| at.elapsed() >= longest_wait) {
            self.resubscribes.news();
        }
        self.resume_delay = self.resubscribes.ended();
    }

    /// Handles a stream that ended with `status`: the error to report if it
    /// cannot go on, else `None` once ready to resubscribe.
    async fn broken(&mut self, status: Status) -> Option<ClientError> {
        let open = self.stream.take()?;
        let resume = resume_after(&status);
        tracing::debug!(
            ?resume,
            ?status,
            cursor = self.cursor.last(),
            "event stream broke"
        );
        match resume {
            Resume::FailOver => {
                // Counted, but the failover waits its own backoff instead.
                let _pause = self.resubscribes.ended();
                self.resume_delay = Duration::ZERO;
                // If the next server cannot be reached either, the resubscribe
                // goes on to the one after, like any call.
                let _reached = self.connection.fail_over(open.route.generation()).await;
                None
            }
            Resume::Resubscribe => {
                self.ended_quietly(Some(open.opened_at));
                None
            }
            Resume::Stop => {
                self.finished = true;
                let server = self.connection.address(&open.route);
                Some(ClientError::from_status(&status, server))
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("token", &"<redacted>")
            .field("cursor", &self.cursor.last())
            .field("open", &self.stream.is_some())
            .field("resubscribes", &self.resubscribes)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// Feeds `ids` through a cursor that starts after `start`; returns those
    /// handed out.
    fn admitted(start: EventId, ids: &[EventId]) -> Vec<EventId> {
        let mut cursor = Cursor::after(start);
        ids.iter().copied().filter(|&id| cursor.admit(id)).collect()
    }

    #[test]
    fn the_cursor_hands_out_each_id_once_in_order() {
        assert_eq!(admitted(0, &[1, 2, 5, 9]), [1, 2, 5, 9]);
        // A resubscribe that replays what was seen: duplicates are dropped.
        assert_eq!(admitted(0, &[1, 2, 3, 2, 3, 4]), [1, 2, 3, 4]);
        // A server that ignores `after` and starts from the beginning.
        assert_eq!(admitted(3, &[1, 2, 3, 4, 5]), [4, 5]);
        // An id going backwards is dropped, the cursor stays.
        assert_eq!(admitted(0, &[7, 6, 8]), [7, 8]);
    }

    #[test]
    fn the_cursor_remembers_the_last_id() {
        let mut cursor = Cursor::after(10);
        assert!(!cursor.admit(10));
        assert_eq!(cursor.last(), 10);
        assert!(cursor.admit(12));
        assert_eq!(cursor.last(), 12);
    }

    #[test]
    fn resubscribes_back_off_after_the_first_end_until_there_is_news() {
        let mut resubscribes = Resubscribes::new(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
        });
        let pauses = |resubscribes: &mut Resubscribes, ends: usize| -> Vec<u128> {
            (0..ends)
                .map(|_| resubscribes.ended().as_millis())
                .collect()
        };
        assert_eq!(pauses(&mut resubscribes, 5), [0, 100, 200, 300, 300]);
        resubscribes.news();
        assert_eq!(pauses(&mut resubscribes, 2), [0, 100]);
    }

    #[test]
    fn broken_streams_resume_unless_the_session_is_gone() {
        let reset = Status::from_error(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)));
        let check = |status: Status, expected| {
            assert_eq!(resume_after(&status), expected, "{status:?}");
        };
        check(reset, Resume::FailOver);
        check(Status::unavailable("shutting down"), Resume::FailOver);
        check(
            Status::aborted("too far behind, resubscribe"),
            Resume::Resubscribe,
        );
        check(
            Status::resource_exhausted("buffer full"),
            Resume::Resubscribe,
        );
        check(Status::unauthenticated("session expired"), Resume::Stop);
        check(Status::permission_denied("no"), Resume::Stop);
        check(Status::invalid_argument("bad cursor"), Resume::Stop);
        check(Status::internal("bug"), Resume::Stop);
    }
}
