//! The server's error type and the one place where errors become gRPC
//! status codes. A user's mistake is never `INTERNAL`, and every message
//! says what to do.

use tonic::codegen::http;
use tonic::{Code, Status};

/// Serializable, so a leader's answer to a forwarded write reaches the
/// client unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ChatError {
    /// The request breaks a rule; the message states the rule.
    #[error("{0}")]
    InvalidArgument(String),
    /// No valid session, or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Too many attempts; the message says when to try again.
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The stream fell behind and must be resumed from its cursor.
    #[error("{0}")]
    Aborted(String),
    /// No quorum, not caught up, or shutting down: try again or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the server itself, never of the request.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ChatError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ChatError::InvalidArgument(msg.into())
    }

    pub fn code(&self) -> Code {
        match self {
            ChatError::InvalidArgument(_) => Code::InvalidArgument,
            ChatError::Unauthenticated(_) => Code::Unauthenticated,
            ChatError::PermissionDenied(_) => Code::PermissionDenied,
            ChatError::NotFound(_) => Code::NotFound,
            ChatError::AlreadyExists(_) => Code::AlreadyExists,
            ChatError::RateLimited(_) => Code::ResourceExhausted,
            ChatError::FailedPrecondition(_) => Code::FailedPrecondition,
            ChatError::Aborted(_) => Code::Aborted,
            ChatError::Unavailable(_) => Code::Unavailable,
            ChatError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ChatError> for Status {
    fn from(e: ChatError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// tonic's `grpc-message` when a request is over the size limit, as it
/// percent-encodes it.
const TOO_LARGE: &[u8] = b"decoded%20message%20length%20too%20large";

/// prost's `grpc-message` for a body that does not decode, in the services
/// that use tonic's own codec (health, reflection).
const UNDECODABLE: &[u8] = b"failed%20to%20decode%20Protobuf%20message";

/// Two answers tonic gives before any of our code runs are corrected here,
/// on every response, leaving every other alone: a request over the size
/// limit is RESOURCE_EXHAUSTED (gRPC's convention; tonic says OUT_OF_RANGE),
/// and a body that does not decode in the health and reflection services
/// is INVALID_ARGUMENT (tonic says INTERNAL; ours use `chat_proto::codec`).
pub fn correct_transport_status<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let says = |needle: &[u8]| {
        (headers.get("grpc-message"))
            .is_some_and(|m| m.as_bytes().windows(needle.len()).any(|w| w == needle))
    };
    let status = headers.get("grpc-status").map(http::HeaderValue::as_bytes);
    let (code, message) = match status {
        Some(b"11") if says(TOO_LARGE) => (
            "8",
            "the%20request%20is%20larger%20than%20this%20server%20accepts%20(4%20MiB%20for%20the%20client%20API);%20send%20less",
        ),
        Some(b"13") if says(UNDECODABLE) => (
            "3",
            "the%20request%20is%20not%20a%20valid%20protobuf%20message%20for%20this%20call",
        ),
        _ => return response,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
    headers.insert("grpc-message", http::HeaderValue::from_static(message));
    response
}
