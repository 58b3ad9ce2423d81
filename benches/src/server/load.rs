//! Load on a running server through raw gRPC clients: accounts made up
//! front, senders that each `Send` to one recipient, and recipients that
//! each hold a live `Subscribe` stream and time every delivery.
//!
//! Each user has its own HTTP/2 connection, as separate clients would. The
//! measured path calls `chat_proto::chat_client::ChatClient` directly rather
//! than `chat-client`: that client retries a failed send on the next server
//! and resubscribes by itself, which would hide the very failures, retries
//! and dropped streams a load test has to count. Here one send is one RPC,
//! and a subscription the server drops (ABORTED) is counted, then resumed.
//!
//! Every body starts with the message's sequence number and the time its
//! send was due, so a recipient needs no shared table to time a delivery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chat_proto::chat_client::ChatClient;
use chat_proto::{CreateAccountRequest, LoginRequest, SendRequest, SubscribeRequest, event};
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{Probe, Usage};

/// The password of every bench account.
pub const PASSWORD: &str = "bench password";

/// Bytes at the start of each body that carry its stamp: the sequence
/// number and the due time, 16 hex digits each.
pub const STAMP_LEN: usize = 32;

/// Open-loop sends allowed in flight at once; beyond it a due send is
/// skipped (and counted) rather than piling up without bound.
pub const MAX_OPEN_LOOP_IN_FLIGHT: usize = 20_000;

/// A logged-in bench user with its own connection.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub token: String,
    pub channel: Channel,
}

/// A user that receives: a subscriber.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user: User,
    /// The id of the last event received, so that the next phase's
    /// subscription resumes after it instead of replaying the history.
    pub last_event: u64,
}

impl Recipient {
    pub fn new(user: User) -> Self {
        Recipient {
            user,
            last_event: 0,
        }
    }
}

/// A new HTTP/2 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// Runs `task` on each item, at most `concurrency` at once, and returns
/// the results in the items' order; the first error ends it.
pub async fn in_order<T, R, Fut>(
    items: impl IntoIterator<Item = T>,
    concurrency: usize,
    task: impl Fn(T) -> Fut,
) -> anyhow::Result<Vec<R>>
where
    R: Send + 'static,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let permits = Arc::clone(&permits);
        // A future does nothing until polled: the work waits for its permit.
        let work = task(item);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            anyhow::Ok((i, work.await?))
        });
    }
    let mut done = Vec::new();
    while let Some(next) = tasks.join_next().await {
        done.push(next??);
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
}

/// Creates an account for each name and logs it in, `concurrency` at a time,
/// each on a connection of its own. Slow by design: the server hashes every
/// password with argon2 twice (creation and login).
pub async fn create_users(
    addr: SocketAddr,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<User>> {
    in_order(names.iter().cloned(), concurrency, |name| async move {
        let channel = connect(addr).await?;
        let mut client = ChatClient::new(channel.clone());
        client
            .create_account(CreateAccountRequest {
                username: name.clone(),
                password: PASSWORD.to_owned(),
            })
            .await
            .with_context(|| format!("create account {name}"))?;
        let session = client
            .login(LoginRequest {
                username: name.clone(),
                password: PASSWORD.to_owned(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("log in as {name}"))?
            .into_inner();
        Ok(User {
            name,
            token: session.token,
            channel,
        })
    })
    .await
}

/// Converts between instants and the nanosecond offsets stamped in bodies.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }
}

impl Clock {
    pub fn nanos(self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn instant(self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }
}

/// A body of `len` bytes (at least [`STAMP_LEN`]) stamped with `seq` and the
/// send's due time.
pub fn stamped_body(seq: u64, due_nanos: u64, len: usize) -> String {
    let mut body = format!("{seq:016x}{due_nanos:016x}");
    body.extend(std::iter::repeat_n('x', len.saturating_sub(STAMP_LEN)));
    body
}

/// The `(seq, due_nanos)` stamp of a body made by [`stamped_body`].
pub fn body_stamp(body: &str) -> Option<(u64, u64)> {
    let seq = u64::from_str_radix(body.get(..16)?, 16).ok()?;
    let due = u64::from_str_radix(body.get(16..STAMP_LEN)?, 16).ok()?;
    Some((seq, due))
}

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Offered {
    /// Each sender keeps `per_sender` sends in flight, starting the next as
    /// soon as one returns: the most the server gives to that many clients.
    ClosedLoop { per_sender: usize },
    /// Sends are due at a fixed `rate` per second in all, in turn from each
    /// sender, whether or not earlier ones have returned. Latency counts
    /// from when a send was due, so a stall is not hidden by sending less
    /// (no coordinated omission).
    OpenLoop { rate: f64 },
}

/// One load phase.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub offered: Offered,
    /// Load before the window, not measured.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// Bytes per message body.
    pub body_len: usize,
    /// How long after the last send returns to wait for deliveries.
    pub drain: Duration,
}

/// What one load phase measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub config: LoadConfig,
    pub senders: usize,
    pub subscribers: usize,
    pub window: Duration,
    pub sends: SendTally,
    /// Messages whose send started in the window that reached their
    /// recipient's stream, and how long after the send was due.
    pub delivered: u64,
    pub delivery_latency: Histogram<u64>,
    /// Streams the server ended with ABORTED (subscriber too slow), each
    /// resumed from its last event.
    pub resubscribes: u64,
    /// Open loop: how far behind schedule the dispatcher fell at worst.
    pub max_dispatch_lag: Duration,
    /// CPU and disk over the window.
    pub usage: Option<Usage>,
}

impl LoadResult {
    /// Acknowledged sends that returned inside the window, per second.
    pub fn sends_per_sec(&self) -> f64 {
        self.sends.completed as f64 / self.window.as_secs_f64()
    }

    pub fn send_latency_at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.sends.latency.value_at_quantile(quantile))
    }

    pub fn delivery_latency_at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.delivery_latency.value_at_quantile(quantile))
    }
}

/// What senders counted.
#[derive(Debug, Clone)]
pub struct SendTally {
    /// Sends started (or due, open loop) in the window.
    pub started: u64,
    /// Of those, the ones acknowledged: every one must be delivered.
    pub acked_started: u64,
    /// Acknowledged sends that returned inside the window.
    pub completed: u64,
    /// Acknowledged sends in the whole phase, warm-up included.
    pub acked_total: u64,
    /// Failed sends in the whole phase.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Open loop: sends not made because too many were in flight.
    pub skipped: u64,
    /// From start (or due time) to reply, for sends started in the window.
    pub latency: Histogram<u64>,
}

impl Default for SendTally {
    fn default() -> Self {
        Self::new()
    }
}

impl SendTally {
    pub fn new() -> Self {
        SendTally {
            started: 0,
            acked_started: 0,
            completed: 0,
            acked_total: 0,
            errors: 0,
            first_error: None,
            skipped: 0,
            latency: latency_histogram(),
        }
    }

    /// Counts one send that started at `started` and returned at `done`.
    pub fn record(
        &mut self,
        window: Window,
        started: Instant,
        done: Instant,
        outcome: SendOutcome,
    ) {
        let in_window = window.contains(started);
        self.started += u64::from(in_window);
        match outcome {
            Ok(()) => {
                self.acked_total += 1;
                self.completed += u64::from(window.contains(done));
                if in_window {
                    self.acked_started += 1;
                    self.latency.saturating_record(nanos(done - started));
                }
            }
            Err(status) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| status.to_string());
            }
        }
    }

    pub fn merge(&mut self, other: SendTally) {
        self.started += other.started;
        self.acked_started += other.acked_started;
        self.completed += other.completed;
        self.acked_total += other.acked_total;
        self.errors += other.errors;
        self.skipped += other.skipped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds");
    }
}

pub type SendOutcome = Result<(), Status>;

/// Where measuring starts and ends.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// 1 µs to 10 minutes, in nanoseconds, at three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("valid histogram bounds")
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What every send of a phase shares.
#[derive(Debug)]
struct SendContext {
    clock: Clock,
    window: Window,
    body_len: usize,
    /// Makes every body and `client_msg_id` unique across the run.
    next_seq: Arc<AtomicU64>,
}

impl SendContext {
    async fn send(
        &self,
        client: &mut ChatClient<Channel>,
        token: &str,
        to: &str,
        due: Instant,
    ) -> SendOutcome {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let request = SendRequest {
            token: token.to_owned(),
            to: to.to_owned(),
            body: stamped_body(seq, self.clock.nanos(due), self.body_len),
            client_msg_id: format!("bench-{seq}"),
            ..Default::default()
        };
        client.send(request).await.map(|_| ())
    }
}

/// The sequence numbers of a whole run, shared by all its phases.
pub fn sequence() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(1))
}

/// Runs one phase: opens every recipient's stream, offers load from every
/// sender (sender `i` writes to recipient `i % recipients.len()`), waits for
/// the deliveries, then closes the streams. Returns the recipients with
/// their cursors moved on, for the next phase.
pub async fn run_load(
    senders: &[User],
    recipients: Vec<Recipient>,
    config: &LoadConfig,
    seq: &Arc<AtomicU64>,
    probe: impl Fn() -> Probe + Send + 'static,
) -> anyhow::Result<(LoadResult, Vec<Recipient>)> {
    if senders.is_empty() || recipients.is_empty() {
        bail!("a load phase needs at least one sender and one recipient");
    }
    let subscribers = recipients.len();
    let clock = Clock::default();
    let stop = CancellationToken::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = mpsc::channel(subscribers);
    let recipient_names: Vec<String> = recipients.iter().map(|r| r.user.name.clone()).collect();

    // The window is only known once every stream is open; subscribers
    // learn it through this cell, before any message can reach them.
    let window_cell = Arc::new(tokio::sync::OnceCell::new());
    let mut streams = JoinSet::new();
    for recipient in recipients {
        streams.spawn(receive(
            recipient,
            clock,
            Arc::clone(&window_cell),
            Arc::clone(&delivered),
            ready_tx.clone(),
            stop.clone(),
        ));
    }
    drop(ready_tx);
    for _ in 0..subscribers {
        let ready = tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await;
        if !matches!(ready, Ok(Some(()))) {
            stop.cancel();
            // A failed stream says why.
            while let Some(done) = streams.join_next().await {
                done??;
            }
            bail!("the subscriptions did not all open within 60 s");
        }
    }

    let phase_start = Instant::now() + Duration::from_millis(10);
    let window = Window {
        start: phase_start + config.warmup,
        end: phase_start + config.warmup + config.measure,
    };
    window_cell
        .set(window)
        .expect("the window is set once per phase");
    let ctx = Arc::new(SendContext {
        clock,
        window,
        body_len: config.body_len,
        next_seq: Arc::clone(seq),
    });
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window.start.into()).await;
        let before = probe();
        tokio::time::sleep_until(window.end.into()).await;
        Usage::between(&before, &probe())
    });

    let targets: Vec<(User, String)> = senders
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), recipient_names[i % subscribers].clone()))
        .collect();
    let (sends, max_dispatch_lag) = match config.offered {
        Offered::ClosedLoop { per_sender } => (
            closed_loop(&targets, per_sender, &ctx).await?,
            Duration::ZERO,
        ),
        Offered::OpenLoop { rate } => open_loop(&targets, rate, phase_start, &ctx).await?,
    };
    let usage = sampler.await?;

    // Every acknowledged send from the window must reach its recipient.
    let deadline = Instant::now() + config.drain;
    while delivered.load(Ordering::Acquire) < sends.acked_started && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let mut recipients = Vec::with_capacity(subscribers);
    let mut delivery_latency = latency_histogram();
    let mut resubscribes = 0;
    while let Some(done) = streams.join_next().await {
        let (recipient, tally) = done??;
        recipients.push(recipient);
        delivery_latency
            .add(&tally.latency)
            .expect("histograms with equal bounds");
        resubscribes += tally.resubscribes;
    }
    recipients.sort_by(|a, b| a.user.name.cmp(&b.user.name));
    let result = LoadResult {
        config: config.clone(),
        senders: senders.len(),
        subscribers,
        window: window.end - window.start,
        sends,
        delivered: delivered.load(Ordering::Acquire),
        delivery_latency,
        resubscribes,
        max_dispatch_lag,
        usage,
    };
    Ok((result, recipients))
}

/// `per_sender` loops per sender, each sending as soon as its last send
/// returned, until the window ends.
async fn closed_loop(
    targets: &[(User, String)],
    per_sender: usize,
    ctx: &Arc<SendContext>,
) -> anyhow::Result<SendTally> {
    let mut loops = JoinSet::new();
    for (sender, to) in targets {
        for _ in 0..per_sender.max(1) {
            let mut client = ChatClient::new(sender.channel.clone());
            let token = sender.token.clone();
            let to = to.clone();
            let ctx = Arc::clone(ctx);
            loops.spawn(async move {
                let mut tally = SendTally::new();
                loop {
                    let started = Instant::now();
                    if started >= ctx.window.end {
                        return tally;
                    }
                    let outcome = ctx.send(&mut client, &token, &to, started).await;
                    tally.record(ctx.window, started, Instant::now(), outcome);
                }
            });
        }
    }
    let mut total = SendTally::new();
    while let Some(tally) = loops.join_next().await {
        total.merge(tally?);
    }
    Ok(total)
}

/// Sends due every `1 / rate` seconds from `start`, sender after sender,
/// each in its own task so that a slow reply delays no later send.
async fn open_loop(
    targets: &[(User, String)],
    rate: f64,
    start: Instant,
    ctx: &Arc<SendContext>,
) -> anyhow::Result<(SendTally, Duration)> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("the offered rate must be positive, not {rate}");
    }
    let clients: Vec<ChatClient<Channel>> = targets
        .iter()
        .map(|(s, _)| ChatClient::new(s.channel.clone()))
        .collect();
    let mut tally = SendTally::new();
    let mut in_flight = JoinSet::new();
    let mut max_lag = Duration::ZERO;
    let record = |tally: &mut SendTally, done: Result<(Instant, Instant, SendOutcome), _>| {
        let (due, returned, outcome) = done?;
        tally.record(ctx.window, due, returned, outcome);
        anyhow::Ok(())
    };
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if due >= ctx.window.end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if ctx.window.contains(due) {
            max_lag = max_lag.max(due.elapsed());
        }
        let i = (k % targets.len() as u64) as usize;
        if in_flight.len() >= MAX_OPEN_LOOP_IN_FLIGHT {
            tally.skipped += 1;
        } else {
            let mut client = clients[i].clone();
            let (sender, to) = &targets[i];
            let token = sender.token.clone();
            let to = to.clone();
            let ctx = Arc::clone(ctx);
            in_flight.spawn(async move {
                let outcome = ctx.send(&mut client, &token, &to, due).await;
                (due, Instant::now(), outcome)
            });
        }
        while let Some(done) = in_flight.try_join_next() {
            record(&mut tally, done)?;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        record(&mut tally, done)?;
    }
    Ok((tally, max_lag))
}

/// What one recipient's stream saw.
#[derive(Debug)]
struct DeliveryTally {
    latency: Histogram<u64>,
    resubscribes: u64,
}

/// Holds `recipient`'s stream open until `stop`, timing each message sent in
/// the window from its due time to its arrival. Says `ready` at its first
/// CaughtUp.
async fn receive(
    mut recipient: Recipient,
    clock: Clock,
    window: Arc<tokio::sync::OnceCell<Window>>,
    delivered: Arc<AtomicU64>,
    ready: mpsc::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<(Recipient, DeliveryTally)> {
    let mut client = ChatClient::new(recipient.user.channel.clone());
    let mut tally = DeliveryTally {
        latency: latency_histogram(),
        resubscribes: 0,
    };
    let mut ready = Some(ready);
    'subscribe: loop {
        let request = SubscribeRequest {
            token: recipient.user.token.clone(),
            after: recipient.last_event,
            ..Default::default()
        };
        let mut events = tokio::select! {
            () = stop.cancelled() => break,
            opened = client.subscribe(request) => opened
                .with_context(|| format!("subscribe as {}", recipient.user.name))?
                .into_inner(),
        };
        loop {
            let item = tokio::select! {
                () = stop.cancelled() => break 'subscribe,
                item = events.message() => item,
            };
            let event = match item {
                Ok(Some(event)) => event,
                Ok(None) => bail!("the server ended {}'s stream", recipient.user.name),
                Err(status) if status.code() == Code::Aborted => {
                    tally.resubscribes += 1;
                    continue 'subscribe;
                }
                Err(status) => {
                    return Err(anyhow!(status))
                        .with_context(|| format!("{}'s stream failed", recipient.user.name));
                }
            };
            recipient.last_event = recipient.last_event.max(event.id);
            match event.kind {
                Some(event::Kind::Message(message)) => {
                    let arrived = Instant::now();
                    let (Some(window), Some((_, due))) = (window.get(), body_stamp(&message.body))
                    else {
                        continue;
                    };
                    let due = clock.instant(due);
                    if window.contains(due) {
                        tally
                            .latency
                            .saturating_record(nanos(arrived.saturating_duration_since(due)));
                        delivered.fetch_add(1, Ordering::Release);
                    }
                }
                Some(event::Kind::CaughtUp(_)) => {
                    if let Some(ready) = ready.take() {
                        ready.send(()).await?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok((recipient, tally))
}

/// How a log was filled with messages.
#[derive(Debug, Clone)]
pub struct FillResult {
    /// Sends acknowledged.
    pub sent: u64,
    /// Sends that failed (each is replaced by another, under a new key).
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Failed sends after which filling gives up.
const MAX_FILL_ERRORS: u64 = 1_000;

/// How to fill a log.
#[derive(Debug, Clone)]
pub struct FillConfig {
    /// Acknowledged sends wanted.
    pub messages: u64,
    /// Sends in flight per sender: enough to keep the server's queue full.
    pub per_sender: usize,
    /// Recipients each sender writes to, in turn: sender `i` writes to
    /// `recipients[i]`, `recipients[i + 1]`, ... (wrapping), so that with
    /// as many senders as recipients every account is in this many direct
    /// conversations.
    pub conversations: usize,
    pub body_len: usize,
    /// How often to report progress; filling a large log through a slow
    /// server takes minutes.
    pub progress_every: Duration,
}

/// Gets `config.messages` sends acknowledged as fast as the server takes
/// them, sender `i` writing to `config.conversations` recipients from
/// `recipients[i % len]` on, in turn. Calls `progress` with
/// the count so far every `config.progress_every`.
pub async fn fill(
    senders: &[User],
    recipients: &[String],
    config: &FillConfig,
    seq: &Arc<AtomicU64>,
    progress: impl Fn(u64) + Send + 'static,
) -> anyhow::Result<FillResult> {
    let FillConfig {
        messages,
        per_sender,
        conversations,
        body_len,
        progress_every,
    } = *config;
    if recipients.is_empty() {
        bail!("filling needs at least one recipient");
    }
    let started = Instant::now();
    let ctx = Arc::new(SendContext {
        clock: Clock::default(),
        window: Window {
            start: started,
            end: started,
        },
        body_len,
        next_seq: Arc::clone(seq),
    });
    // A send claims a slot before it goes; a failed one gives it back.
    let claimed = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let reporter = {
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(progress_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                progress(acked.load(Ordering::Relaxed));
            }
        })
    };
    let mut loops = JoinSet::new();
    for (i, sender) in senders.iter().enumerate() {
        let peers: Arc<[String]> = (0..conversations.max(1))
            .map(|k| recipients[(i + k) % recipients.len()].clone())
            .collect();
        for first in 0..per_sender.max(1) {
            let mut client = ChatClient::new(sender.channel.clone());
            let token = sender.token.clone();
            let peers = Arc::clone(&peers);
            let ctx = Arc::clone(&ctx);
            let (claimed, acked, errors) = (
                Arc::clone(&claimed),
                Arc::clone(&acked),
                Arc::clone(&errors),
            );
            loops.spawn(async move {
                let mut first_error = None;
                let mut turn = first;
                while claimed.fetch_add(1, Ordering::Relaxed) < messages {
                    let to = &peers[turn % peers.len()];
                    turn += 1;
                    match ctx.send(&mut client, &token, to, Instant::now()).await {
                        Ok(()) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => {
                            claimed.fetch_sub(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| status.to_string());
                            if errors.fetch_add(1, Ordering::Relaxed) >= MAX_FILL_ERRORS {
                                bail!("more than {MAX_FILL_ERRORS} sends failed while filling; the last: {status}");
                            }
                        }
                    }
                }
                anyhow::Ok(first_error)
            });
        }
    }
    let mut first_error = None;
    let mut outcome = Ok(());
    while let Some(done) = loops.join_next().await {
        match done {
            Ok(Ok(error)) => first_error = first_error.or(error),
            Ok(Err(e)) => {
                loops.abort_all();
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => return Err(join.into()),
        }
    }
    reporter.abort();
    outcome?;
    Ok(FillResult {
        sent: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_its_stamp_and_has_the_asked_length() {
        for len in [STAMP_LEN, 100, 4096] {
            let body = stamped_body(42, 1_234_567_890, len);
            assert_eq!(body.len(), len);
            assert_eq!(body_stamp(&body), Some((42, 1_234_567_890)));
        }
        assert_eq!(body_stamp("hello"), None);
        assert_eq!(body_stamp(&"z".repeat(40)), None);
    }

    #[test]
    fn the_clock_round_trips_instants() {
        let clock = Clock::default();
        let later = Instant::now() + Duration::from_millis(1500);
        let back = clock.instant(clock.nanos(later));
        assert_eq!(back, later);
    }

    #[test]
    fn sends_count_by_when_they_started_and_returned() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let window = Window {
            start: ms(10),
            end: ms(20),
        };
        let mut tally = SendTally::new();
        // Warm-up send returning inside the window: throughput, no latency.
        tally.record(window, ms(5), ms(12), Ok(()));
        // Inside and returning inside.
        tally.record(window, ms(11), ms(13), Ok(()));
        // Started inside, returned after: latency, no throughput.
        tally.record(window, ms(19), ms(25), Ok(()));
        // A failure inside.
        tally.record(window, ms(15), ms(16), Err(Status::unavailable("down")));
        assert_eq!(tally.started, 3);
        assert_eq!(tally.acked_started, 2);
        assert_eq!(tally.completed, 2);
        assert_eq!(tally.acked_total, 3);
        assert_eq!(tally.errors, 1);
        assert_eq!(tally.latency.len(), 2);
        assert!(tally.first_error.unwrap().contains("down"));
    }
}
