//! Workloads for `chat-server`: the real binary as a child process
//! ([`process`]), driven over gRPC by many clients ([`load`]), and what the
//! machine spent meanwhile ([`Probe`], [`Usage`]); [`abuse`] holds silent
//! connections and floods account creation to see what that costs others;
//! [`reads`] pages through stored history and reads Subscribe backlogs;
//! [`groups`] drives group conversations through `chat-client`.

pub mod abuse;
pub mod groups;
pub mod load;
pub mod process;
pub mod reads;

use std::time::{Duration, Instant};

/// Counters read at one instant, to subtract over a window.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub at: Instant,
    /// CPU time of the server process so far.
    pub server_cpu: Option<Duration>,
    /// CPU time of the bench process (the clients) so far.
    pub bench_cpu: Option<Duration>,
    /// Cache flushes the disk has completed (`/proc/diskstats`).
    pub disk_flushes: Option<u64>,
}

/// CPU and disk use over a window.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub elapsed: Duration,
    pub server_cpu: Option<Duration>,
    pub bench_cpu: Option<Duration>,
    pub disk_flushes: Option<u64>,
}

impl Usage {
    pub fn between(before: &Probe, after: &Probe) -> Option<Usage> {
        let elapsed = after.at.checked_duration_since(before.at)?;
        Some(Usage {
            elapsed,
            server_cpu: after
                .server_cpu
                .zip(before.server_cpu)
                .map(|(a, b)| a.saturating_sub(b)),
            bench_cpu: after
                .bench_cpu
                .zip(before.bench_cpu)
                .map(|(a, b)| a.saturating_sub(b)),
            disk_flushes: after
                .disk_flushes
                .zip(before.disk_flushes)
                .map(|(a, b)| a.saturating_sub(b)),
        })
    }

    /// `cpu` as cores busy on average over the window (1.0 = one core).
    pub fn cores(&self, cpu: Option<Duration>) -> Option<f64> {
        let elapsed = self.elapsed.as_secs_f64();
        cpu.filter(|_| elapsed > 0.0)
            .map(|c| c.as_secs_f64() / elapsed)
    }

    pub fn disk_flushes_per_sec(&self) -> Option<f64> {
        let elapsed = self.elapsed.as_secs_f64();
        self.disk_flushes
            .filter(|_| elapsed > 0.0)
            .map(|f| f as f64 / elapsed)
    }
}
