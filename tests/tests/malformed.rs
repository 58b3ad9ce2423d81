//! Whatever a client sends, the server answers with a precise status and
//! keeps serving: random bytes as the body of every RPC of every service,
//! and well-formed messages with random field values. Never INTERNAL or
//! UNKNOWN (a client's mistake is not the server's fault), never a panic.

mod common;

use bytes::{Buf, BufMut};
use chat_proto as pb;
use common::{TestServer, config};
use proptest::prelude::*;
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const SECRET: &str = "a cluster secret for the malformed tests";

/// Sends and receives raw bytes: the body is whatever the test made.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// One RPC: its path, its request type, whether the server streams.
#[derive(Debug, Clone)]
struct Rpc {
    path: String,
    input: String,
    streaming: bool,
}

fn schema() -> (Vec<Rpc>, Vec<DescriptorProto>) {
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    let mut messages = Vec::new();
    for file in set.file {
        let package = file.package().to_string();
        for service in &file.service {
            for method in &service.method {
                rpcs.push(Rpc {
                    path: format!("/{package}.{}/{}", service.name(), method.name()),
                    input: method.input_type().trim_start_matches('.').to_string(),
                    streaming: method.server_streaming(),
                });
            }
        }
        for m in file.message_type {
            messages.push(DescriptorProto {
                name: Some(format!("{package}.{}", m.name())),
                ..m
            });
        }
    }
    assert!(rpcs.len() >= 20, "{rpcs:?}");
    // The standard health service mounted beside ours (reflection's one
    // call is a bidirectional stream this test does not drive).
    rpcs.push(Rpc {
        path: "/grpc.health.v1.Health/Check".into(),
        input: "grpc.health.v1.HealthCheckRequest".into(),
        streaming: false,
    });
    (rpcs, messages)
}

/// A well-formed encoding of message `name` whose every scalar field gets a
/// value drawn from `seed` (strings of any length, including huge ones).
fn random_message(name: &str, messages: &[DescriptorProto], seed: &[u64], depth: u32) -> Vec<u8> {
    let Some(m) = messages.iter().find(|m| m.name() == name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, field) in m.field.iter().enumerate() {
        let r = seed[(i + depth as usize) % seed.len()].rotate_left(i as u32 * 7);
        let number = u64::from(field.number() as u32);
        let key = |wire: u64| (number << 3) | wire;
        match field.r#type() {
            Type::String | Type::Bytes => {
                let len = match r % 5 {
                    0 => 0,
                    1 => 1,
                    2 => 40,
                    3 => 5_000,
                    _ => 1 << 20,
                };
                let text: String = (0..len)
                    .map(|j| char::from_u32(((r as usize + j) % 0x7ff) as u32 + 1).unwrap_or('x'))
                    .take(len)
                    .collect();
                prost::encoding::encode_key(
                    field.number() as u32,
                    prost::encoding::WireType::LengthDelimited,
                    &mut out,
                );
                prost::encoding::encode_varint(text.len() as u64, &mut out);
                out.extend_from_slice(text.as_bytes());
            }
            Type::Message if depth < 3 => {
                let inner = random_message(
                    field.type_name().trim_start_matches('.'),
                    messages,
                    seed,
                    depth + 1,
                );
                prost::encoding::encode_varint(key(2), &mut out);
                prost::encoding::encode_varint(inner.len() as u64, &mut out);
                out.extend_from_slice(&inner);
            }
            Type::Message => {}
            _ => {
                // Integers, bools and enums: any varint, from 0 to u64::MAX.
                let value = match r % 4 {
                    0 => 0,
                    1 => u64::MAX,
                    _ => r,
                };
                prost::encoding::encode_varint(key(0), &mut out);
                prost::encoding::encode_varint(value, &mut out);
            }
        }
    }
    out
}

/// Calls `rpc` with `body` (with the cluster secret when `secret`) and
/// returns the status code it ended with (OK for a success).
async fn call(channel: &tonic::transport::Channel, rpc: &Rpc, body: Vec<u8>, secret: bool) -> Code {
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        call_once(channel, rpc, body, secret),
    );
    answered
        .await
        .unwrap_or_else(|_| panic!("{} did not answer within 10 s", rpc.path))
}

async fn call_once(
    channel: &tonic::transport::Channel,
    rpc: &Rpc,
    body: Vec<u8>,
    secret: bool,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(body);
    if secret {
        request
            .metadata_mut()
            .insert(pb::CLUSTER_SECRET_METADATA_KEY, SECRET.parse().unwrap());
    }
    let path: tonic::codegen::http::uri::PathAndQuery = rpc.path.parse().unwrap();
    if rpc.streaming {
        match grpc.server_streaming(request, path, Raw).await {
            Ok(mut stream) => {
                // The first item or the end says how the call went.
                match stream.get_mut().message().await {
                    Ok(_) => Code::Ok,
                    Err(s) => s.code(),
                }
            }
            Err(s) => s.code(),
        }
    } else {
        match grpc.unary(request, path, Raw).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }
}

fn acceptable(code: Code) -> bool {
    !matches!(code, Code::Internal | Code::Unknown)
}

#[test]
fn random_requests_get_precise_statuses_and_the_server_keeps_serving() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.cluster_secret = Some(SECRET.into());
    cfg.account_creations_per_minute = 0;
    // Random `min_applied` cursors lie ahead of the log: each such read
    // waits this long for the replica to catch up, then is UNAVAILABLE.
    cfg.read_wait = std::time::Duration::from_millis(20);
    let server = rt.block_on(TestServer::start_with(cfg));
    let channel = rt.block_on(async {
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let (rpcs, messages) = schema();

    let runner = proptest::test_runner::Config {
        cases: 24,
        failure_persistence: None,
        // A failure is reported as found: every case costs a round trip.
        max_shrink_iters: 16,
        ..Default::default()
    };
    for rpc in &rpcs {
        // The secret goes with random calls to the client API only: a
        // holder of the secret is a member of the cluster, whose votes and
        // membership changes are obeyed by design. Raft calls without it
        // are refused before their body is read.
        let member = !rpc.path.starts_with("/chat.v1.Raft/");
        // Random bytes.
        proptest!(runner.clone(), |(body in proptest::collection::vec(any::<u8>(), 0..600), secret in any::<bool>())| {
            let secret = secret && member;
            let code = rt.block_on(call(&channel, rpc, body, secret));
            prop_assert!(acceptable(code), "{} answered {code:?} to random bytes", rpc.path);
        });
        // Well-formed messages with random field values.
        proptest!(runner.clone(), |(seed in proptest::collection::vec(any::<u64>(), 1..8), secret in any::<bool>())| {
            let secret = secret && member;
            let body = random_message(&rpc.input, &messages, &seed, 0);
            let code = rt.block_on(call(&channel, rpc, body, secret));
            prop_assert!(acceptable(code), "{} answered {code:?} to random fields", rpc.path);
        });
    }

    // From a member, a payload that does not decode is the member's
    // mistake: INVALID_ARGUMENT, not INTERNAL. From a stranger, refused
    // before it is read.
    let forward = rpcs
        .iter()
        .find(|r| r.path == "/chat.v1.Raft/Forward")
        .unwrap();
    let garbage = pb::ForwardRequest {
        payload: vec![0xff; 16],
    }
    .encode_to_vec();
    assert_eq!(
        rt.block_on(call(&channel, forward, garbage.clone(), true)),
        Code::InvalidArgument
    );
    assert_eq!(
        rt.block_on(call(&channel, forward, garbage, false)),
        Code::PermissionDenied
    );

    // Still serving: a real client does real work.
    rt.block_on(async {
        let mut c = server.client().await;
        c.create_account(pb::CreateAccountRequest {
            username: "survivor".into(),
            password: "survivor-password".into(),
        })
        .await
        .unwrap();
    });
    drop(server);
}
