//! Workloads and measuring tools for the chat system's benchmarks.
//!
//! Each bench target in `benches/` is a thin `main` that reads its options,
//! runs workloads from here and prints a [`Table`]. The workloads use real
//! files and real `fdatasync`s, so [`disk`] picks a directory on a real disk
//! and reads the device's flush counter.

pub mod disk;
pub mod log;
mod table;

pub use crate::table::{Table, grouped};
