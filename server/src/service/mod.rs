//! The gRPC services, one per file, and the conversion of domain types to
//! protobuf (the only place that knows both).

pub mod chat;
pub mod cluster;
pub mod convert;
pub mod raft;
