//! When a failed call may be made again, and how long to wait first.
//!
//! A failure is one of three [`Fault`]s. The request may never have left
//! this machine (connection refused): any call may be retried. The server or
//! the connection may have failed after the request was sent (UNAVAILABLE, a
//! reset, a timeout): the effect is unknown, so only calls that are harmless
//! to repeat are retried. Or the server answered (NOT_FOUND, ...): asking
//! again would get the same answer.

use std::error::Error as _;
use std::time::Duration;

use tonic::{Code, Status};

use crate::ClientError;

/// The wait before each reconnection attempt: `initial`, then doubling, never
/// more than `max`. No jitter: clients fail over at the moment their own
/// calls fail, which already spreads them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first attempt.
    pub initial: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before attempt number `attempt` (1 for the first), after
    /// `attempt - 1` failed ones. Attempt 0 does not wait.
    pub fn delay(&self, attempt: u32) -> Duration {
        let Some(doublings) = attempt.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A caller's retry loop over one [`Backoff`]: runs a call again while it
/// fails for a reason that may pass ([`ClientError::is_transient`]), waiting
/// longer each time. The attempt count carries over between calls, so a
/// caller that runs several steps in a row (load, then subscribe) backs off
/// as one sequence; [`Retry::reset`] starts over after a success that proves
/// the connection healthy.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    attempt: u32,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            attempt: 0,
        }
    }

    /// Forgets earlier failures: the next one waits `backoff.initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Counts one more failure and returns how long to wait before trying
    /// again.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.backoff.delay(self.attempt)
    }

    /// The failures counted since the last [`reset`](Self::reset): the
    /// number of the attempt the last [`next_delay`](Self::next_delay) was
    /// for.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Runs `call` until it succeeds or fails for a reason that will not
    /// pass by waiting; that error is returned. Before each wait,
    /// `on_retry(error, wait)` is told why and for how long (to show it).
    pub async fn run<T, Fut>(
        &mut self,
        mut on_retry: impl FnMut(&ClientError, Duration),
        mut call: impl FnMut() -> Fut,
    ) -> crate::Result<T>
    where
        Fut: Future<Output = crate::Result<T>>,
    {
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() => {
                    let wait = self.next_delay();
                    on_retry(&error, wait);
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The calls of the API, as far as retrying them is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    CreateAccount,
    Login,
    Resume,
    Logout,
    DeleteAccount,
    ListAccounts,
    Send,
    Subscribe,
    History,
    Conversations,
    Ack,
    MarkRead,
    DeleteMessages,
    CreateGroup,
    ChangeGroup,
    Members,
    ClusterStatus,
}

impl Rpc {
    /// Whether the call writes (goes through the leader).
    pub(crate) fn writes(self) -> bool {
        matches!(
            self,
            Rpc::CreateAccount
                | Rpc::Login
                | Rpc::Logout
                | Rpc::DeleteAccount
                | Rpc::Send
                | Rpc::Ack
                | Rpc::MarkRead
                | Rpc::DeleteMessages
                | Rpc::CreateGroup
                | Rpc::ChangeGroup
        )
    }

    /// Whether the call may be made again when a first attempt may or may not
    /// have taken effect.
    ///
    /// - Reads (Resume, ListAccounts, Subscribe, History, Conversations,
    ///   Members, Status) change nothing.
    /// - Send and CreateGroup carry an idempotency key: the server returns
    ///   the first call's message or group instead of making a second one.
    /// - Ack and MarkRead move cursors that only grow; DeleteMessages skips
    ///   ids already deleted (its `deleted` count may then be lower than what
    ///   the two attempts deleted together).
    /// - Login may leave a second, unused session behind, which the server
    ///   closes when it has been idle for its timeout.
    /// - Logout: a retry after the first attempt closed the session is
    ///   answered UNAUTHENTICATED, which the client takes as done.
    /// - CreateAccount: a retry after the first attempt created the account
    ///   is answered ALREADY_EXISTS, and the caller cannot tell that answer
    ///   from someone else having the name. Retried all the same, since the
    ///   common case (the request never reached the leader) then succeeds.
    /// - DeleteAccount is not retried: a retry after the account was deleted
    ///   would report UNAUTHENTICATED, which also means "wrong password", and
    ///   deleting an account is too grave to report wrongly. The caller gets
    ///   the error and the user can try again.
    /// - ChangeGroup is not retried either: a retry after an add, a removal
    ///   or a leave took effect is refused (ALREADY_EXISTS, NOT_FOUND), which
    ///   would report a change that happened as one that failed. The caller
    ///   gets the error and can look (Members) before trying again.
    pub(crate) fn retries_when_unsure(self) -> bool {
        !matches!(self, Self::DeleteAccount | Self::ChangeGroup)
    }

    /// Whether a call that failed with `fault` is made again, on the next
    /// server.
    pub(crate) fn retries(self, fault: Fault) -> bool {
        match fault {
            Fault::NotSent => true,
            Fault::Unsure => self.retries_when_unsure(),
            Fault::Answered => false,
        }
    }
}

/// How one attempt of a call failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The call ended with a status, from the server or from the transport.
    Status(Status),
    /// No answer within the request timeout.
    TimedOut(Duration),
}

impl Failure {
    /// What the failure says about the request having taken effect.
    pub(crate) fn fault(&self) -> Fault {
        match self {
            Self::Status(status) => classify(status),
            Self::TimedOut(_) => Fault::Unsure,
        }
    }

    /// Whether a server itself answered UNAVAILABLE (no leader, or no
    /// quorum in time), not the connection: the cluster is up but cannot
    /// take writes.
    pub(crate) fn refused_by_server(&self) -> bool {
        match self {
            Self::Status(status) => status.code() == Code::Unavailable && status.source().is_none(),
            Self::TimedOut(_) => false,
        }
    }

    /// The error reported to the caller when this failure is the last word.
    pub(crate) fn into_error(self, server: &str) -> ClientError {
        match self {
            Self::Status(status) => ClientError::from_status(&status, server),
            Self::TimedOut(after) => ClientError::Timeout {
                server: server.to_owned(),
                after,
            },
        }
    }
}

/// What a failure says about whether the request took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The request never reached a server: the connection could not be made.
    NotSent,
    /// The server or the connection failed; the request may have taken
    /// effect or not.
    Unsure,
    /// The server answered; asking again would get the same answer.
    Answered,
}

/// Sorts a status into a [`Fault`].
///
/// Statuses decoded from a server's reply carry no `source`; tonic attaches
/// one only to statuses it makes from a local error (I/O, HTTP/2, hyper), and
/// such an error means the connection failed, whatever code it was mapped to
/// (UNKNOWN for a reset, INTERNAL for some HTTP/2 errors, CANCELLED for
/// a keep-alive timeout).
pub(crate) fn classify(status: &Status) -> Fault {
    let mut source = status.source();
    let from_transport = source.is_some();
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return Fault::NotSent;
        }
        source = error.source();
    }
    if from_transport || matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
        Fault::Unsure
    } else {
        Fault::Answered
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let schedule: Vec<u128> = (0..=7).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(schedule, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
    }

    /// What a [`Retry::run`] did: what it returned, the waits it announced
    /// (in ms) and the time that passed (in ms).
    type Run = (crate::Result<u32>, Vec<u128>, u128);

    /// Runs `retry` over a call that gives `outcomes` in turn.
    async fn retry_over(retry: &mut Retry, outcomes: Vec<crate::Result<u32>>) -> Run {
        let start = tokio::time::Instant::now();
        let mut outcomes = outcomes.into_iter();
        let mut announced = Vec::new();
        let result = retry
            .run(
                |_error, wait| announced.push(wait.as_millis()),
                || {
                    let outcome = outcomes.next().expect("called after the last outcome");
                    async move { outcome }
                },
            )
            .await;
        (result, announced, start.elapsed().as_millis())
    }

    fn status(code: Code) -> ClientError {
        ClientError::Status {
            code,
            message: "from the server".to_owned(),
            server: "a:1".to_owned(),
        }
    }

    fn unreachable() -> ClientError {
        ClientError::NoServerReachable {
            tried: vec!["a:1".to_owned()],
        }
    }

    fn ms(initial: u64, max: u64) -> Backoff {
        Backoff {
            initial: Duration::from_millis(initial),
            max: Duration::from_millis(max),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_transient_errors_on_the_backoff_schedule() {
        let mut retry = Retry::new(ms(100, 300));
        let outcomes = vec![
            Err(unreachable()),
            Err(status(Code::Unavailable)),
            Err(status(Code::DeadlineExceeded)),
            Err(status(Code::ResourceExhausted)),
            Ok(7),
        ];
        let run = retry_over(&mut retry, outcomes).await;
        assert_eq!(run, (Ok(7), vec![100, 200, 300, 300], 900));
    }

    #[tokio::test(start_paused = true)]
    async fn run_returns_the_first_error_that_waiting_will_not_cure() {
        let mut retry = Retry::new(ms(100, 1000));
        let outcomes = vec![Err(status(Code::NotFound)), Ok(7)];
        let run = retry_over(&mut retry, outcomes).await;
        assert_eq!(run, (Err(status(Code::NotFound)), vec![], 0));

        let outcomes = vec![
            Err(status(Code::Unavailable)),
            Err(status(Code::Unauthenticated)),
            Ok(7),
        ];
        let run = retry_over(&mut retry, outcomes).await;
        assert_eq!(run, (Err(status(Code::Unauthenticated)), vec![100], 100));
    }

    #[tokio::test(start_paused = true)]
    async fn run_keeps_counting_failures_until_reset() {
        let mut retry = Retry::new(ms(100, 1000));
        let two_failures = || vec![Err(unreachable()), Err(unreachable()), Ok(7)];
        assert_eq!(
            retry_over(&mut retry, two_failures()).await,
            (Ok(7), vec![100, 200], 300)
        );
        // A success alone does not start over: the next steps of the same
        // recovery go on from the last wait.
        assert_eq!(
            retry_over(&mut retry, two_failures()).await,
            (Ok(7), vec![400, 800], 1200)
        );
        retry.reset();
        assert_eq!(
            retry_over(&mut retry, two_failures()).await,
            (Ok(7), vec![100, 200], 300)
        );
        assert_eq!(retry.next_delay(), Duration::from_millis(400));
    }

    #[test]
    fn backoff_never_overflows() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(33), backoff.max);
        assert_eq!(backoff.delay(u32::MAX), backoff.max);
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn backoff_initial_above_max_waits_max() {
        let backoff = Backoff {
            initial: Duration::from_secs(9),
            max: Duration::from_secs(2),
        };
        assert_eq!(backoff.delay(1), Duration::from_secs(2));
    }

    fn refused() -> Status {
        // What a channel returns when it cannot (re)connect.
        let io = io::Error::from(io::ErrorKind::ConnectionRefused);
        Status::from_error(Box::new(tonic::ConnectError(Box::new(io))))
    }

    fn reset() -> Status {
        // What a call gets when the connection breaks after the request left.
        Status::from_error(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)))
    }

    fn check(status: Status, expected: Fault) {
        assert_eq!(classify(&status), expected, "{status:?}");
    }

    #[test]
    fn statuses_are_sorted_by_what_they_say_about_the_request() {
        check(refused(), Fault::NotSent);
        assert_eq!(refused().code(), Code::Unavailable);
        check(reset(), Fault::Unsure);
        assert_eq!(reset().code(), Code::Unknown);
        check(Status::unavailable("no quorum"), Fault::Unsure);
        check(Status::deadline_exceeded("too slow"), Fault::Unsure);
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
            Code::Unimplemented,
        ] {
            check(Status::new(code, "from the server"), Fault::Answered);
        }
        assert_eq!(
            Failure::TimedOut(Duration::from_secs(1)).fault(),
            Fault::Unsure
        );
    }

    #[test]
    fn only_a_server_saying_unavailable_means_writes_wait() {
        let refused_by_server = |failure: Failure| failure.refused_by_server();
        assert!(refused_by_server(Failure::Status(Status::unavailable(
            "not the leader; no leader is elected right now"
        ))));
        // A dead server's connection maps to UNAVAILABLE too, but it is not
        // the cluster refusing.
        assert!(!refused_by_server(Failure::Status(refused())));
        assert!(!refused_by_server(Failure::Status(reset())));
        assert!(!refused_by_server(Failure::TimedOut(Duration::from_secs(
            1
        ))));
        assert!(!refused_by_server(Failure::Status(Status::not_found("x"))));
    }

    #[test]
    fn only_harmless_calls_are_retried_when_the_outcome_is_unknown() {
        use Rpc::*;
        let all = [
            CreateAccount,
            Login,
            Resume,
            Logout,
            DeleteAccount,
            ListAccounts,
            Send,
            Subscribe,
            History,
            Conversations,
            Ack,
            MarkRead,
            DeleteMessages,
            CreateGroup,
            ChangeGroup,
            Members,
            ClusterStatus,
        ];
        for rpc in all {
            assert!(
                rpc.retries(Fault::NotSent),
                "{rpc:?} never reached a server"
            );
            assert!(!rpc.retries(Fault::Answered), "{rpc:?} was answered");
            assert_eq!(
                rpc.retries(Fault::Unsure),
                !matches!(rpc, DeleteAccount | ChangeGroup),
                "{rpc:?}"
            );
        }
    }

    #[test]
    fn the_error_keeps_code_message_and_server() {
        let error = Failure::Status(Status::not_found("no account named bob")).into_error("a:1");
        assert_eq!(
            error,
            ClientError::Status {
                code: Code::NotFound,
                message: "no account named bob".to_owned(),
                server: "a:1".to_owned(),
            }
        );
        let timeout = Failure::TimedOut(Duration::from_secs(3)).into_error("a:1");
        assert_eq!(timeout.to_string(), "a:1 did not answer within 3s");
    }
}
