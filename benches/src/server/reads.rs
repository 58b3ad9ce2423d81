//! Reads of stored history while the server takes writes: `History` pages
//! at random places in long conversations (mostly outside the server's body
//! cache), and a `Subscribe` backlog read from the start to its `CaughtUp`;
//! and searches of one long conversation (`History` with a `query`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chat_proto::chat_client::ChatClient;
use chat_proto::cluster_client::ClusterClient;
use chat_proto::{HistoryRequest, SendRequest, StatusRequest, SubscribeRequest, event};
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

/// Words that chat bodies for searches are made of: everyday English with
/// a few accented words, so that about three bodies in four take the
/// server's non-ASCII lowercasing. No word holds [`RARE_WORD`].
const WORDS: &[&str] = &[
    "the", "and", "you", "that", "was", "for", "are", "with", "his", "they", "this", "have",
    "from", "one", "had", "word", "but", "not", "what", "all", "were", "when", "your", "can",
    "said", "there", "use", "each", "which", "she", "how", "their", "will", "other", "about",
    "out", "many", "then", "them", "these", "some", "would", "make", "like", "into", "time",
    "look", "more", "write", "number", "could", "people", "water", "than", "first", "been", "call",
    "who", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part",
    "over", "lunch", "meeting", "tomorrow", "tonight", "maybe", "sure", "thanks", "okay", "café",
    "über", "naïve", "Ärger", "déjà", "señor",
];

/// A word no generated body holds, for a search that finds (almost)
/// nothing and so examines its whole budget.
pub const RARE_WORD: &str = "Zanzibar";

/// A body of exactly `len` bytes (ASCII padding after the words) for
/// message `seq`: the same text for the same `seq` in every run.
pub fn chat_text(seq: u64, len: usize) -> String {
    let mut places = Places(0x2545_f491_4f6c_dd1d ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut body = String::with_capacity(len + 16);
    loop {
        let word = WORDS[places.below(WORDS.len() as u64) as usize];
        if body.len() + word.len() + 1 > len {
            break;
        }
        if !body.is_empty() {
            body.push(' ');
        }
        body.push_str(word);
    }
    while body.len() < len {
        body.push('.');
    }
    body
}

/// Sends `count` messages from `user` to `peer`, `in_flight` at a time,
/// the body of the `i`-th (from 0) being `body(i)`; returns how long it
/// took. Keys are `key_prefix` and `i`, so a second fill needs its own
/// prefix.
pub async fn fill_conversation(
    user: &User,
    peer: &str,
    count: u64,
    in_flight: usize,
    key_prefix: &str,
    body: impl Fn(u64) -> String + Send + Sync + 'static,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let body = Arc::new(body);
    let mut tasks = JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let mut client = ChatClient::new(user.channel.clone());
        let (token, peer, prefix) = (user.token.clone(), peer.to_owned(), key_prefix.to_owned());
        let (next, body) = (Arc::clone(&next), Arc::clone(&body));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                client
                    .send(SendRequest {
                        token: token.clone(),
                        to: peer.clone(),
                        body: body(i),
                        client_msg_id: format!("{prefix}-{i}"),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("send {i} of the fill"))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a sender panicked")??;
    }
    Ok(started.elapsed())
}

/// One search call: `query` in the conversation of `user` with `peer`,
/// below `before` (0: from the newest), the default page of matches.
async fn search_once(
    user: &User,
    peer: &str,
    query: &str,
    before: u64,
) -> anyhow::Result<chat_proto::HistoryResponse> {
    let page = ChatClient::new(user.channel.clone())
        .history(HistoryRequest {
            token: user.token.clone(),
            peer: peer.to_owned(),
            query: query.to_owned(),
            before,
            ..Default::default()
        })
        .await
        .with_context(|| format!("search for {query:?} below {before}"))?
        .into_inner();
    let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
    ensure!(
        ids.windows(2).all(|w| w[0] > w[1]) && (before == 0 || ids.iter().all(|&id| id < before)),
        "a search page below {before} came back out of order or out of range: {ids:?}"
    );
    let lower = query.to_lowercase();
    ensure!(
        page.messages
            .iter()
            .all(|m| m.body.to_lowercase().contains(&lower)),
        "a search for {query:?} returned a message without it"
    );
    Ok(page)
}

/// What repeated search calls measured.
#[derive(Debug)]
pub struct SearchTally {
    pub latency: Histogram<u64>,
    /// Matches returned by the first call.
    pub found: usize,
    /// Whether the first call said to go on (`next_before` set).
    pub more: bool,
    /// Server CPU time over the calls, when it could be read.
    pub server_cpu: Option<Duration>,
}

impl SearchTally {
    pub fn at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(quantile))
    }
}

/// The same search from the newest message, `calls` times one after the
/// other (after `warmup` untimed calls), each call timed from request to
/// reply. `server_cpu` reads the server's CPU time so far.
pub async fn time_searches(
    user: &User,
    peer: &str,
    query: &str,
    warmup: usize,
    calls: usize,
    server_cpu: impl Fn() -> Option<Duration>,
) -> anyhow::Result<SearchTally> {
    for _ in 0..warmup {
        search_once(user, peer, query, 0).await?;
    }
    let mut latency = latency_histogram();
    let (mut found, mut more) = (0, false);
    let cpu_before = server_cpu();
    for call in 0..calls {
        let began = Instant::now();
        let page = search_once(user, peer, query, 0).await?;
        latency.saturating_record(nanos(began.elapsed()));
        if call == 0 {
            (found, more) = (page.messages.len(), page.next_before != 0);
        }
    }
    let server_cpu = cpu_before
        .zip(server_cpu())
        .map(|(before, after)| after.saturating_sub(before));
    Ok(SearchTally {
        latency,
        found,
        more,
        server_cpu,
    })
}

/// A search paged from the newest message to the conversation's start.
#[derive(Debug, Clone)]
pub struct SearchedThrough {
    pub calls: usize,
    pub matches: usize,
    pub elapsed: Duration,
    /// The slowest call.
    pub slowest: Duration,
}

/// Pages `query` through the whole conversation, as a client does when
/// the user asks for older results until there are none.
pub async fn search_through(
    user: &User,
    peer: &str,
    query: &str,
) -> anyhow::Result<SearchedThrough> {
    let started = Instant::now();
    let (mut calls, mut matches, mut before, mut slowest) = (0, 0, 0, Duration::ZERO);
    loop {
        let began = Instant::now();
        let page = search_once(user, peer, query, before).await?;
        slowest = slowest.max(began.elapsed());
        calls += 1;
        matches += page.messages.len();
        if page.next_before == 0 {
            break;
        }
        ensure!(
            before == 0 || page.next_before < before,
            "a search did not move on: next_before {} after before {before}",
            page.next_before
        );
        before = page.next_before;
    }
    Ok(SearchedThrough {
        calls,
        matches,
        elapsed: started.elapsed(),
        slowest,
    })
}
