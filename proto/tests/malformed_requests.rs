//! A request that does not decode, sent to a generated server, is answered
//! with INVALID_ARGUMENT before the handler runs. The server is called
//! in-process through its tower `Service` with a real gRPC-framed body, so no
//! runtime or socket is needed.

use std::{
    pin::pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context, Poll, Waker},
};

use chat_proto::{
    AddMemberRequest, AddMemberResponse, FILE_DESCRIPTOR_SET, RemoveMemberRequest,
    RemoveMemberResponse, StatusRequest, StatusResponse,
    cluster_server::{Cluster, ClusterServer},
};
use prost::{Message as _, bytes::BufMut as _};
use tonic::{
    Code, Request, Response, Status,
    codec::{BufferSettings, EncodeBody, EncodeBuf, Encoder},
    codegen::{Service as _, http, tokio_stream},
};

#[test]
fn a_request_that_does_not_decode_is_an_invalid_argument() {
    // Field 2 (address), length-delimited, 3 bytes that are not UTF-8.
    let body = b"\x12\x03\xff\xfe\xfd";
    let cluster = Recorder::default();
    let status = call(&cluster, "/chat.v1.Cluster/AddMember", body);

    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "the message is not a valid chat.v1.AddMemberRequest \
         (AddMemberRequest.address: invalid string value: data is not UTF-8 encoded); \
         send a protobuf-encoded chat.v1.AddMemberRequest"
    );
    assert!(!cluster.reached.load(Ordering::SeqCst));
}

#[test]
fn a_valid_request_reaches_the_handler() {
    let request = AddMemberRequest {
        node_id: 2,
        address: "10.0.0.2:50051".into(),
        cluster_secret: "secret".into(),
    };
    let cluster = Recorder::default();
    let status = call(
        &cluster,
        "/chat.v1.Cluster/AddMember",
        &request.encode_to_vec(),
    );

    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(cluster.reached.load(Ordering::SeqCst));
}

#[test]
fn every_generated_stub_uses_the_chat_codec() {
    // A client and a server stub per method, each building its codec once.
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let methods: usize = fds
        .file
        .iter()
        .flat_map(|file| &file.service)
        .map(|service| service.method.len())
        .sum();
    let generated = include_str!(concat!(env!("OUT_DIR"), "/chat.v1.rs"));

    assert_eq!(generated.matches("::default();").count(), 2 * methods);
    assert_eq!(
        generated.matches("crate::codec::Codec::default()").count(),
        2 * methods
    );
}

/// Sends `body` as the one message of a unary call to `path` and returns the
/// status the server answers with.
fn call(cluster: &Recorder, path: &str, body: &[u8]) -> Status {
    let body = EncodeBody::new_client(
        RawEncoder,
        tokio_stream::iter([Ok(body.to_vec())]),
        None,
        None,
    );
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(body)
        .unwrap();
    let mut server = ClusterServer::new(cluster.clone());
    let response = ready(server.call(request)).unwrap();
    // A call that fails before the handler answers headers only; one that
    // gets to the handler carries its status in the trailers, which this test
    // does not read: a response without `grpc-status` in its headers is taken
    // as OK.
    Status::from_header_map(response.headers()).unwrap_or_else(|| Status::ok(""))
}

/// A `chat.v1.Cluster` that records whether a request reached it.
#[derive(Debug, Default, Clone)]
struct Recorder {
    /// Set by any handler; a request that does not decode must not get there.
    reached: std::sync::Arc<AtomicBool>,
}

#[tonic::async_trait]
impl Cluster for Recorder {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.reached.store(true, Ordering::SeqCst);
        Ok(Response::new(StatusResponse::default()))
    }

    async fn add_member(
        &self,
        _: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        self.reached.store(true, Ordering::SeqCst);
        Ok(Response::new(AddMemberResponse::default()))
    }

    async fn remove_member(
        &self,
        _: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        self.reached.store(true, Ordering::SeqCst);
        Ok(Response::new(RemoveMemberResponse::default()))
    }
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

/// Polls `future` once: with an in-memory body every step is ready at once.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory body is ready at once"),
    }
}
