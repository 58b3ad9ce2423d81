//! Workloads and measuring tools for the chat system's benchmarks.
//!
//! Each bench target in `benches/` is a thin `main` that reads its options,
//! runs workloads from here and prints a [`Table`]. The workloads use real
//! files and real `fdatasync`s, so [`disk`] picks a directory on a real disk
//! and reads the device's flush counter. [`log`] drives `log-format` in
//! process; [`server`] drives the real `chat-server` binary over gRPC, and
//! [`cluster`] runs several of them as one Raft cluster and kills them.

pub mod cluster;
pub mod disk;
pub mod log;
pub mod machine;
pub mod server;
mod table;

pub use crate::table::{Table, grouped, millis, percent};
