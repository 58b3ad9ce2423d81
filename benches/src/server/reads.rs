//! Reads of stored history while the server takes writes: `History` pages
//! at random places in long conversations (mostly outside the server's body
//! cache), and a `Subscribe` backlog read from the start to its `CaughtUp`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chat_proto::chat_client::ChatClient;
use chat_proto::cluster_client::ClusterClient;
use chat_proto::{HistoryRequest, StatusRequest, SubscribeRequest, event};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::load::{User, Window, latency_histogram, nanos};

/// Messages per `History` page (the server's default).
pub const PAGE: u32 = 50;

/// One reader: a user and the peer whose conversation it pages through.
#[derive(Debug, Clone)]
pub struct Reader {
    pub user: User,
    pub peer: String,
}

/// What each paced call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A History page.
    Page,
    /// `Cluster.Status`, a call that reads nothing: the floor under a page's
    /// latency at the same pace (network, scheduling, the machine).
    NoOp,
}

/// What the readers of one window measured.
#[derive(Debug)]
pub struct ReadTally {
    /// Page latency, for pages started in the window.
    pub latency: Histogram<u64>,
    /// Pages that held fewer than [`PAGE`] messages (near a conversation's
    /// start, where `before` fell below its `PAGE`-th message).
    pub short_pages: u64,
    /// Calls that failed.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl ReadTally {
    fn new() -> Self {
        ReadTally {
            latency: latency_histogram(),
            short_pages: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn pages(&self) -> u64 {
        self.latency.len()
    }

    pub fn at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(quantile))
    }
}

/// xorshift64*: a page place per call, the same sequence in every run.
struct Places(u64);

impl Places {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The readers together make `rate` calls per second until `window`
/// ends, each one call at a time: for [`Ask::Page`] the page of its
/// conversation before a random message id in `1..=newest`. Calls started
/// inside `window` are timed. Every page is checked: newest first, every id
/// below `before`, every body present.
pub async fn read_pages(
    readers: &[Reader],
    ask: Ask,
    newest: u64,
    rate: f64,
    window: Window,
) -> anyhow::Result<ReadTally> {
    let mut tasks = JoinSet::new();
    let every = Duration::from_secs_f64(readers.len() as f64 / rate);
    for (i, reader) in readers.iter().enumerate() {
        let reader = reader.clone();
        // Spread the readers' calls over the interval.
        let first = tokio::time::Instant::now() + every.mul_f64(i as f64 / readers.len() as f64);
        let mut ticks = tokio::time::interval_at(first, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tasks.spawn(async move {
            let mut client = ChatClient::new(reader.user.channel.clone());
            let mut status = ClusterClient::new(reader.user.channel.clone());
            let mut places = Places(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
            let mut tally = ReadTally::new();
            loop {
                ticks.tick().await;
                let began = Instant::now();
                if began >= window.end {
                    return anyhow::Ok(tally);
                }
                if ask == Ask::NoOp {
                    let answer = status.status(StatusRequest {}).await;
                    let took = began.elapsed();
                    if let Err(status) = answer {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| status.to_string());
                    } else if window.contains(began) {
                        tally.latency.saturating_record(nanos(took));
                    }
                    continue;
                }
                let before = 1 + places.below(newest);
                let answer = client
                    .history(HistoryRequest {
                        token: reader.user.token.clone(),
                        peer: reader.peer.clone(),
                        before,
                        limit: PAGE,
                        ..Default::default()
                    })
                    .await;
                let took = began.elapsed();
                let page = match answer {
                    Ok(page) => page.into_inner(),
                    Err(status) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| status.to_string());
                        continue;
                    }
                };
                let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
                ensure!(
                    ids.iter().all(|&id| id < before) && ids.windows(2).all(|w| w[0] > w[1]),
                    "a History page before {before} came back out of order or out of range: {ids:?}"
                );
                ensure!(
                    page.messages.iter().all(|m| !m.body.is_empty()),
                    "a History page before {before} has a message without its body"
                );
                if window.contains(began) {
                    tally.latency.saturating_record(nanos(took));
                    if ids.len() < PAGE as usize {
                        tally.short_pages += 1;
                    }
                }
            }
        });
    }
    let mut all = ReadTally::new();
    while let Some(done) = tasks.join_next().await {
        let tally = done.context("a reader panicked")??;
        all.latency
            .add(&tally.latency)
            .context("merge the page histograms")?;
        all.short_pages += tally.short_pages;
        all.errors += tally.errors;
        if all.first_error.is_none() {
            all.first_error = tally.first_error;
        }
    }
    Ok(all)
}

/// One backlog read: `Subscribe` from the start to `CaughtUp`.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    /// From the call to the `CaughtUp` event.
    pub caught_up: Duration,
    /// Until the first event arrived.
    pub first_event: Duration,
    pub messages: u64,
}

/// Subscribes as `user` from cursor 0 and reads the backlog up to its
/// `CaughtUp`, counting the messages in it, then drops the stream.
pub async fn read_backlog(user: &User) -> anyhow::Result<Backlog> {
    let mut client = ChatClient::new(user.channel.clone());
    let began = Instant::now();
    let mut stream = client
        .subscribe(SubscribeRequest {
            token: user.token.clone(),
            after: 0,
            ..Default::default()
        })
        .await
        .context("Subscribe")?
        .into_inner();
    let mut first_event = None;
    let mut messages = 0;
    while let Some(item) = stream.message().await.context("the backlog stream")? {
        first_event.get_or_insert_with(|| began.elapsed());
        match item.kind {
            Some(event::Kind::Message(m)) => {
                ensure!(!m.body.is_empty(), "backlog message {} has no body", m.id);
                messages += 1;
            }
            Some(event::Kind::CaughtUp(_)) => {
                return Ok(Backlog {
                    caught_up: began.elapsed(),
                    first_event: first_event.unwrap_or_default(),
                    messages,
                });
            }
            _ => {}
        }
    }
    bail!("the stream ended before CaughtUp")
}
