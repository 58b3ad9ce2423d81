//! The gRPC codec of every `chat.v1` service, client and server: prost's
//! encoding unchanged, but a message that does not decode is reported as
//! INVALID_ARGUMENT, the sender's mistake, rather than `tonic_prost`'s
//! INTERNAL, which tells a client that sent random bytes or a non-UTF-8
//! `string` that the server is broken.
//!
//! `build.rs` names [`Codec`] as the codec path of the generated stubs.
//! tonic-prost-build has one codec path for clients and servers alike, so a
//! client that receives a response that does not decode sees INVALID_ARGUMENT
//! too; the message names the `…Response` type, so it reads as the peer's
//! fault. A server built on this crate cannot send one (prost encodes what it
//! decodes), so it takes a foreign server or a broken proxy.
//!
//! A message larger than the receiver's `max_decoding_message_size` never
//! reaches this codec: tonic's `Streaming` checks the length prefix of the
//! frame first and fails with OUT_OF_RANGE.

use std::{any, marker::PhantomData};

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf},
};
use tonic_prost::{ProstCodec, ProstEncoder};

/// The protobuf package of the messages the codec carries, for the
/// fully-qualified name in an error.
const PACKAGE: &str = "chat.v1";

/// What prost puts in front of every `DecodeError`; left out of a status
/// message, which already says the message does not decode.
const PROST_PREFIX: &str = "failed to decode Protobuf message: ";

/// A [`tonic::codec::Codec`] that encodes `T` and decodes `U` as protobuf with
/// prost, like [`ProstCodec`], and reports a message that does not decode as
/// INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    /// Encoding is prost's, unchanged.
    prost: ProstCodec<T, U>,
}

// Not derived: the derive would ask `T: Default` and `U: Default`, and the
// generated stubs call `Codec::default()` for any pair of messages.
impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder {
            _message: PhantomData,
        }
    }
}

/// The decoding half of [`Codec`]: prost's decoding, with INVALID_ARGUMENT
/// for a message that does not decode.
#[derive(Debug, Clone)]
pub struct Decoder<U> {
    /// The message type this decoder produces.
    _message: PhantomData<U>,
}

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| invalid_message(message_name::<U>(), &error))
    }

    fn buffer_settings(&self) -> BufferSettings {
        // What `ProstCodec` uses.
        BufferSettings::default()
    }
}

/// The status for a message that does not decode as `name`. It carries what
/// prost found wrong (a field path from the schema and a fixed description,
/// such as "LoginRequest.username: invalid string value: data is not UTF-8
/// encoded"), never the bytes received.
fn invalid_message(name: &str, error: &prost::DecodeError) -> Status {
    let error = error.to_string();
    let reason = error.strip_prefix(PROST_PREFIX).unwrap_or(&error);
    Status::invalid_argument(format!(
        "the message is not a valid {PACKAGE}.{name} ({reason}); send a protobuf-encoded {PACKAGE}.{name}"
    ))
}

/// The unqualified Rust name of a generated message type, which is its proto
/// name (`chat_proto::LoginRequest` is `chat.v1.LoginRequest`).
fn message_name<U>() -> &'static str {
    let path = any::type_name::<U>();
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use std::{
        fmt,
        pin::pin,
        task::{Context, Poll, Waker},
    };

    use prost::bytes::BufMut as _;
    use tonic::{
        Code, Streaming,
        codec::{Codec as _, EncodeBody, EncodeBuf, Encoder},
        codegen::tokio_stream,
    };

    use super::*;
    use crate::{AddMemberRequest, LoginRequest};

    /// Frames `body` as one gRPC message (as a client sends it, bytes as
    /// given) and decodes it with [`Codec`]'s decoder, the way a server does.
    fn decode<U: Message + Default + fmt::Debug + Send + 'static>(
        body: &[u8],
    ) -> Result<U, Status> {
        let request = EncodeBody::new_client(
            RawEncoder,
            tokio_stream::iter([Ok(body.to_vec())]),
            None,
            None,
        );
        let decoder = Codec::<(), U>::default().decoder();
        let mut stream = Streaming::new_request(decoder, request, None, None);
        ready(stream.message()).map(|message| message.expect("one message was sent"))
    }

    /// Checks that `body` is rejected as a `U` with INVALID_ARGUMENT, a message
    /// that names `U` and says what went wrong, and no echo of the body.
    fn check_rejected<U: Message + Default + fmt::Debug + Send + 'static>(
        body: &[u8],
        reason: &str,
    ) {
        let status = decode::<U>(body).expect_err("the body is not a valid message");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let name = message_name::<U>();
        assert_eq!(
            status.message(),
            format!(
                "the message is not a valid chat.v1.{name} ({reason}); send a protobuf-encoded chat.v1.{name}"
            )
        );
    }

    #[test]
    fn a_string_field_that_is_not_utf8_is_an_invalid_argument() {
        // Field 1 (username), length-delimited, 6 bytes: "alice" and 0xff.
        let body = b"\x0a\x06alice\xff";
        check_rejected::<LoginRequest>(
            body,
            "LoginRequest.username: invalid string value: data is not UTF-8 encoded",
        );
    }

    #[test]
    fn bytes_that_are_not_protobuf_are_an_invalid_argument() {
        // Someone speaking HTTP/1 or JSON to the gRPC port.
        check_rejected::<AddMemberRequest>(b"GET / HTTP/1.1\r\n", "invalid wire type value: 7");
        check_rejected::<AddMemberRequest>(
            br#"{"node_id": 2, "address": "10.0.0.2:50051"}"#,
            "buffer underflow",
        );
        // A varint that never ends.
        check_rejected::<AddMemberRequest>(
            &[0x08, 0xff, 0xff, 0xff],
            "AddMemberRequest.node_id: invalid varint",
        );
    }

    #[test]
    fn a_valid_message_decodes_as_with_prost() {
        let login = LoginRequest {
            username: "alice".into(),
            password: "secret".into(),
            min_applied: 7,
        };
        let decoded = decode::<LoginRequest>(&login.encode_to_vec()).expect("a valid message");
        assert_eq!(decoded, login);
    }

    #[test]
    fn message_name_is_the_proto_name() {
        assert_eq!(message_name::<LoginRequest>(), "LoginRequest");
    }

    /// Writes the bytes it is given, so a test can send what no prost encoder
    /// would.
    #[derive(Debug)]
    struct RawEncoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;

        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }

        fn buffer_settings(&self) -> BufferSettings {
            BufferSettings::default()
        }
    }

    /// Polls `future` once: with an in-memory body every step is ready at
    /// once, so no runtime is needed.
    fn ready<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("an in-memory body is ready at once"),
        }
    }
}
