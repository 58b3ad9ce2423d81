//! The one error type of the client. It keeps the gRPC code and the server's
//! message verbatim, so a front end can show what the server said and decide
//! what to do next (UNAUTHENTICATED: back to the sign-in screen).

use std::time::Duration;

use tonic::Code;

/// What went wrong with a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The call ended with a gRPC status: the server's answer (NOT_FOUND,
    /// ALREADY_EXISTS, UNAUTHENTICATED, ...) or a failure of the connection
    /// that could not safely be retried. Displayed as the server's message
    /// alone, which the server writes for people ("no account named bob").
    #[error("{}", display_status(*code, message))]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message, exactly as the server (or the transport) gave it.
        message: String,
        /// The server that gave it, as configured.
        server: String,
    },
    /// No server of the list accepted a connection, within the failover
    /// budget of one call.
    #[error("no server reachable (tried {})", tried.join(", "))]
    NoServerReachable {
        /// The servers that refused or timed out, in the order they were tried.
        tried: Vec<String>,
    },
    /// A server accepted the call but did not answer within the request
    /// timeout, and the call could not safely be retried.
    #[error("{server} did not answer within {after:?}")]
    Timeout {
        /// The server that did not answer.
        server: String,
        /// The request timeout that ran out.
        after: Duration,
    },
    /// A configured server address cannot be used.
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The result type of every client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// Builds the error for a status returned by `server`.
    pub(crate) fn from_status(status: &tonic::Status, server: &str) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
            server: server.to_owned(),
        }
    }

    /// The gRPC status code, when the call ended with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the session token is missing, unknown or expired (or, for
    /// login and account deletion, the password is wrong): the user has to
    /// log in again.
    pub fn is_unauthenticated(&self) -> bool {
        self.code() == Some(Code::Unauthenticated)
    }

    /// True when the same call may succeed if made again later, unchanged:
    /// the cluster was unreachable, had no quorum, was too slow, or shed
    /// load. A send that fails this way can be retried later with
    /// [`Client::send_with_id`](crate::Client::send_with_id) and the same key.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::NoServerReachable { .. } | Self::Timeout { .. } => true,
            Self::Status { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::ResourceExhausted
            ),
            Self::InvalidAddress { .. } => false,
        }
    }
}

/// The text shown for a status: the server's message when it gave one,
/// otherwise a sentence for the code that says what to do.
fn display_status(code: Code, message: &str) -> String {
    if !message.is_empty() {
        return message.to_owned();
    }
    match code {
        Code::Unauthenticated => "session expired, log in again".to_owned(),
        Code::Unavailable => "the server is unavailable, try again later".to_owned(),
        other => other.description().to_owned(),
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

    #[test]
    fn a_status_shows_the_server_message_verbatim() {
        let error = status(Code::NotFound, "no account named bob");
        assert_eq!(error.to_string(), "no account named bob");
        assert_eq!(error.code(), Some(Code::NotFound));
        assert!(!error.is_transient());
    }

    #[test]
    fn an_empty_message_falls_back_to_what_to_do() {
        let error = status(Code::Unauthenticated, "");
        assert_eq!(error.to_string(), "session expired, log in again");
        assert!(error.is_unauthenticated());
    }

    #[test]
    fn unreachable_clusters_are_transient() {
        let error = ClientError::NoServerReachable {
            tried: vec!["a:1".to_owned(), "b:2".to_owned()],
        };
        assert_eq!(error.to_string(), "no server reachable (tried a:1, b:2)");
        assert!(error.is_transient());
        assert_eq!(error.code(), None);
        assert!(status(Code::Unavailable, "no quorum").is_transient());
        assert!(!status(Code::InvalidArgument, "body is empty").is_transient());
    }
}
