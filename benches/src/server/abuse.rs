//! Abuse of a running server, to measure what it costs everyone else:
//! TCP connections that never send a byte, clients that call
//! `CreateAccount` as fast as they are answered, and the server's resident
//! memory sampled meanwhile.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chat_proto::CreateAccountRequest;
use chat_proto::chat_client::ChatClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::load::{self, PASSWORD};
use super::process;

/// Opens `count` TCP connections to `addr` that will never send anything.
pub fn open_silent(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    (0..count)
        .map(|i| TcpStream::connect(addr).with_context(|| format!("silent connection {i}")))
        .collect()
}

/// How many of `connections` the server has not closed (nor reset). What
/// it wrote (its HTTP/2 settings) is read and dropped to reach a close
/// behind it.
pub fn still_open(connections: &[TcpStream]) -> usize {
    connections.iter().filter(|c| is_open(c)).count()
}

fn is_open(mut connection: &TcpStream) -> bool {
    if connection.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0; 4096];
    loop {
        match connection.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// How the server answered a `CreateAccount` flood.
#[derive(Debug, Clone, Default)]
pub struct FloodAnswers {
    pub ok: u64,
    pub resource_exhausted: u64,
    pub other: u64,
    pub first_other: Option<String>,
    /// From the first call to the flood's end.
    pub elapsed: Duration,
}

impl FloodAnswers {
    pub fn calls(&self) -> u64 {
        self.ok + self.resource_exhausted + self.other
    }

    fn merge(&mut self, other: FloodAnswers) {
        self.ok += other.ok;
        self.resource_exhausted += other.resource_exhausted;
        self.other += other.other;
        self.first_other = self.first_other.take().or(other.first_other);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// `clients` connections to `addr`, each calling `CreateAccount` with a new
/// name as soon as its last call was answered, until `stop`.
pub async fn flood_create_account(
    addr: SocketAddr,
    clients: usize,
    stop: CancellationToken,
) -> anyhow::Result<JoinSet<FloodAnswers>> {
    let next_name = Arc::new(AtomicU64::new(0));
    let mut flood = JoinSet::new();
    for _ in 0..clients {
        let mut client = ChatClient::new(load::connect(addr).await?);
        let (next_name, stop) = (Arc::clone(&next_name), stop.clone());
        flood.spawn(async move {
            let started = Instant::now();
            let mut answers = FloodAnswers::default();
            while !stop.is_cancelled() {
                let n = next_name.fetch_add(1, Ordering::Relaxed);
                let request = CreateAccountRequest {
                    username: format!("flood-{n}"),
                    password: PASSWORD.to_owned(),
                };
                let answer = tokio::select! {
                    () = stop.cancelled() => break,
                    answer = client.create_account(request) => answer,
                };
                match answer {
                    Ok(_) => answers.ok += 1,
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        answers.resource_exhausted += 1;
                    }
                    Err(s) => {
                        answers.other += 1;
                        answers.first_other.get_or_insert_with(|| s.to_string());
                    }
                }
            }
            answers.elapsed = started.elapsed();
            answers
        });
    }
    Ok(flood)
}

/// Waits for every flooding client and adds up their answers.
pub async fn flood_answers(mut flood: JoinSet<FloodAnswers>) -> anyhow::Result<FloodAnswers> {
    let mut all = FloodAnswers::default();
    while let Some(done) = flood.join_next().await {
        all.merge(done?);
    }
    Ok(all)
}

/// Samples process `pid`'s resident memory every `every` until `stop`;
/// the task returns the highest value seen, in bytes.
pub fn sample_peak_rss(
    pid: u32,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(every);
        loop {
            peak = peak.max(process::rss_of(pid).unwrap_or(0));
            tokio::select! {
                () = stop.cancelled() => return peak,
                _ = tick.tick() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_closed_connection_is_not_counted_open() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = open_silent(listener.local_addr().unwrap(), 2).unwrap();
        let (first, _) = listener.accept().unwrap();
        let (_second, _) = listener.accept().unwrap();
        assert_eq!(still_open(&silent), 2);
        let mut first = first;
        first.write_all(b"settings").unwrap();
        assert_eq!(still_open(&silent), 2, "what the server writes is no close");
        let closed = silent
            .iter()
            .find(|s| s.local_addr().unwrap() == first.peer_addr().unwrap())
            .unwrap();
        drop(first);
        // Wait for the close to arrive: a read returns 0 once it has.
        closed.set_nonblocking(false).unwrap();
        let mut rest = Vec::new();
        (&*closed).read_to_end(&mut rest).unwrap();
        assert_eq!(still_open(&silent), 1);
    }
}
