//! Group conversations under load, through `chat-client` as a front end
//! uses it: members that each hold a `Subscribe` stream of their own
//! session, open-loop sends with `send_with_id` into groups (or direct
//! conversations), and a closed-loop store of many messages to weigh them
//! in the server's memory.
//!
//! A message counts as delivered to its conversation once every member's
//! stream has handed it out, the sender's own included (a sender's other
//! sessions see what it sent). Each stream marks its arrivals in a
//! [`Ledger`] shared by the phase, indexed by the sequence number stamped in
//! the body, so the time to the last member is known per message without a
//! lock. `chat-client` resubscribes by itself after the server drops a slow
//! stream; each resumed stream starts with a CaughtUp, which is how those
//! are counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_client::{
    AccountId, Client, ClientConfig, ClientError, ConversationId, Event, EventId, Peer,
};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::load::{
    Clock, MAX_OPEN_LOOP_IN_FLIGHT, PASSWORD, SendOutcome, SendTally, Window, body_stamp, in_order,
    latency_histogram, nanos, stamped_body,
};
use super::{Probe, Usage};

/// How long every member's stream may take to open and reach CaughtUp.
const STREAMS_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Failed sends after which a store gives up.
const MAX_STORE_ERRORS: u64 = 1_000;

/// Groups made at once; each is one write.
const GROUP_CREATE_CONCURRENCY: usize = 16;

/// A logged-in account with a connection of its own, as a separate front
/// end would have.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub account_id: AccountId,
    pub token: String,
    pub client: Client,
    /// The last event its streams handed out, so that the next phase
    /// resumes after it instead of reading the history again.
    pub last_event: EventId,
}

/// A `chat-client` of the one server at `addr`, on a new connection.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
    Client::connect(ClientConfig {
        servers: vec![addr.to_string()],
        ..ClientConfig::default()
    })
    .await
    .with_context(|| format!("cannot connect to {addr}"))
}

/// Creates an account for each name and logs it in, `concurrency` at a
/// time, each on its own connection. Slow by design: the server hashes
/// every password with argon2 twice (creation and login).
pub async fn create_members(
    addr: SocketAddr,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<Member>> {
    in_order(names.iter().cloned(), concurrency, |name| async move {
        let client = connect(addr).await?;
        client
            .create_account(&name, PASSWORD)
            .await
            .with_context(|| format!("create account {name}"))?;
        let session = client
            .login(&name, PASSWORD)
            .await
            .with_context(|| format!("log in as {name}"))?;
        Ok(Member {
            name,
            account_id: session.account_id,
            token: session.token,
            client,
            last_event: 0,
        })
    })
    .await
}

/// Creates an account for each name without logging it in (one argon2
/// hash each), `concurrency` at a time over one connection: members that
/// are only added to a group.
pub async fn create_accounts(
    addr: SocketAddr,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<AccountId>> {
    let client = connect(addr).await?;
    in_order(names.iter().cloned(), concurrency, |name| {
        let client = client.clone();
        async move {
            let created = client
                .create_account(&name, PASSWORD)
                .await
                .with_context(|| format!("create account {name}"))?;
            Ok(created.account_id)
        }
    })
    .await
}

/// A group made of some of the phase's members.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: ConversationId,
    /// Indexes into the members, the owner first.
    pub members: Vec<usize>,
}

/// Makes `count` groups of `size` members each out of `members`, group `g`
/// taking members `g * size ..` (wrapping around, so accounts are reused
/// once there are more groups than `members.len() / size`), owned by its
/// first.
pub async fn create_groups(
    members: &[Member],
    count: usize,
    size: usize,
) -> anyhow::Result<Vec<Group>> {
    if size == 0 || size > members.len() {
        bail!(
            "a group of {size} cannot be made from {} accounts",
            members.len()
        );
    }
    in_order(0..count, GROUP_CREATE_CONCURRENCY, |g| {
        let indexes: Vec<usize> = (0..size).map(|j| (g * size + j) % members.len()).collect();
        let owner = members[indexes[0]].clone();
        let others: Vec<AccountId> = indexes[1..]
            .iter()
            .map(|&i| members[i].account_id)
            .collect();
        async move {
            let id = owner
                .client
                .create_group(&owner.token, &format!("bench group {g}"), &others)
                .await
                .with_context(|| format!("create group {g} of {size} members"))?;
            Ok(Group {
                id,
                members: indexes,
            })
        }
    })
    .await
}

/// One sender and where it writes.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Index of the sending member.
    pub from: usize,
    pub to: Peer<'static>,
}

/// One open-loop phase.
#[derive(Debug, Clone)]
pub struct PhaseConfig {
    /// Messages per second in all, taking the routes in turn.
    pub rate: f64,
    /// Load before the window, not measured.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// How long after the last send returns to wait for the deliveries.
    pub drain: Duration,
    pub body_len: usize,
    /// Streams that must hand out each message: its conversation's members.
    pub streams_per_message: u32,
}

/// What one phase measured. Every latency counts from the time a send was
/// due (open loop), so a stall is not hidden by sending less.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub config: PhaseConfig,
    pub window: Duration,
    pub sends: SendTally,
    /// Per message sent in the window and acknowledged: from its due time
    /// to its arrival on the last of its conversation's streams.
    pub last_member: Histogram<u64>,
    /// Per arrival on the stream of a member other than the sender.
    pub delivery: Histogram<u64>,
    /// Arrivals on any stream inside the window, the senders' own included.
    pub arrivals_in_window: u64,
    /// Acknowledged messages of the window that some stream had not handed
    /// out when the drain time ran out.
    pub incomplete: u64,
    /// Streams the server ended that the client resumed.
    pub resubscribes: u64,
    /// How far behind schedule the dispatcher fell at worst.
    pub max_dispatch_lag: Duration,
    pub usage: Option<Usage>,
}

impl PhaseResult {
    /// Acknowledged sends that returned inside the window, per second.
    pub fn sends_per_sec(&self) -> f64 {
        self.sends.completed as f64 / self.window.as_secs_f64()
    }

    pub fn arrivals_per_sec(&self) -> f64 {
        self.arrivals_in_window as f64 / self.window.as_secs_f64()
    }

    pub fn send_at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.sends.latency.value_at_quantile(quantile))
    }

    pub fn last_member_at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.last_member.value_at_quantile(quantile))
    }

    pub fn last_member_max(&self) -> Duration {
        Duration::from_nanos(self.last_member.max())
    }

    pub fn delivery_at(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.delivery.value_at_quantile(quantile))
    }
}

/// Per message of a phase, by sequence number: whether its send was
/// acknowledged, how many streams handed it out, and when the last did.
#[derive(Debug)]
struct Ledger {
    first_seq: u64,
    slots: Vec<Slot>,
    streams_per_message: u32,
    /// Messages due in the window that every stream has handed out: the
    /// drain waits for this to reach the window's acknowledged sends.
    complete: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    /// When the send was due, in [`Clock`] nanoseconds.
    due: AtomicU64,
    acked: AtomicBool,
    streams: AtomicU32,
    /// The latest arrival so far, in [`Clock`] nanoseconds.
    last: AtomicU64,
}

/// What every task of a phase shares.
#[derive(Debug)]
struct Phase {
    clock: Clock,
    /// Set once every stream is open, before the first send.
    window: OnceLock<Window>,
    ledger: Ledger,
}

impl Phase {
    fn slot(&self, seq: u64) -> Option<&Slot> {
        let i = usize::try_from(seq.checked_sub(self.ledger.first_seq)?).ok()?;
        self.ledger.slots.get(i)
    }

    /// Marks the arrival at `at`, on the stream of `member`, of a message
    /// from `from` with this `body`.
    fn arrived(
        &self,
        body: &str,
        from: AccountId,
        member: AccountId,
        at: Instant,
        tally: &mut StreamTally,
    ) {
        let (Some((seq, due)), Some(window)) = (body_stamp(body), self.window.get()) else {
            return;
        };
        let Some(slot) = self.slot(seq) else {
            return;
        };
        slot.last.fetch_max(self.clock.nanos(at), Ordering::AcqRel);
        let streams = slot.streams.fetch_add(1, Ordering::AcqRel) + 1;
        let due = self.clock.instant(due);
        tally.arrivals_in_window += u64::from(window.contains(at));
        if window.contains(due) {
            if from != member {
                tally
                    .delivery
                    .saturating_record(nanos(at.saturating_duration_since(due)));
            }
            if streams == self.ledger.streams_per_message {
                self.ledger.complete.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// What one member's stream saw.
#[derive(Debug)]
struct StreamTally {
    delivery: Histogram<u64>,
    arrivals_in_window: u64,
    resubscribes: u64,
}

/// Runs one phase: opens every member's stream and waits for each one's
/// CaughtUp, sends `config.rate` messages a second taking `routes` in turn
/// (message `k` over `routes[k % len]`), waits for every stream to hand out
/// every acknowledged message of the window (or the drain time), then
/// closes the streams. Returns the members with their cursors moved on.
pub async fn run_phase(
    members: Vec<Member>,
    routes: &[Route],
    config: &PhaseConfig,
    seq: &AtomicU64,
    probe: impl Fn() -> Probe + Send + 'static,
) -> anyhow::Result<(PhaseResult, Vec<Member>)> {
    if routes.is_empty() || !(config.rate.is_finite() && config.rate > 0.0) {
        bail!("a phase needs at least one route and a positive rate");
    }
    if let Some(bad) = routes.iter().find(|r| r.from >= members.len()) {
        bail!("route from member {} of {}", bad.from, members.len());
    }
    let total = config.warmup + config.measure;
    let capacity = (total.as_secs_f64() * config.rate).ceil() as usize + 1;
    let phase = Arc::new(Phase {
        clock: Clock::default(),
        window: OnceLock::new(),
        ledger: Ledger {
            first_seq: seq.fetch_add(capacity as u64, Ordering::Relaxed),
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            streams_per_message: config.streams_per_message,
            complete: AtomicU64::new(0),
        },
    });
    let senders: Vec<(Client, String)> = members
        .iter()
        .map(|m| (m.client.clone(), m.token.clone()))
        .collect();

    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::channel(members.len());
    let streams_count = members.len();
    let mut streams = JoinSet::new();
    for (i, member) in members.into_iter().enumerate() {
        let listening = listen(member, Arc::clone(&phase), ready_tx.clone(), stop.clone());
        // The routes name members by index: they come back in this order.
        streams.spawn(async move { anyhow::Ok((i, listening.await?)) });
    }
    drop(ready_tx);
    let opened = Instant::now();
    for _ in 0..streams_count {
        let ready =
            tokio::time::timeout_at((opened + STREAMS_READY_TIMEOUT).into(), ready_rx.recv()).await;
        if !matches!(ready, Ok(Some(()))) {
            stop.cancel();
            // A failed stream says why.
            while let Some(done) = streams.join_next().await {
                done??;
            }
            bail!(
                "the {streams_count} streams did not all reach CaughtUp within {STREAMS_READY_TIMEOUT:?}"
            );
        }
    }

    let start = Instant::now() + Duration::from_millis(10);
    let window = Window {
        start: start + config.warmup,
        end: start + total,
    };
    phase
        .window
        .set(window)
        .expect("the window is set once per phase");
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window.start.into()).await;
        let before = probe();
        tokio::time::sleep_until(window.end.into()).await;
        Usage::between(&before, &probe())
    });
    let (sends, max_dispatch_lag) =
        open_loop(&phase, &senders, routes, config, start, window).await?;
    let usage = sampler.await?;

    let deadline = Instant::now() + config.drain;
    while phase.ledger.complete.load(Ordering::Acquire) < sends.acked_started
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let mut members = Vec::with_capacity(streams_count);
    let mut delivery = latency_histogram();
    let (mut arrivals_in_window, mut resubscribes) = (0, 0);
    while let Some(done) = streams.join_next().await {
        let (i, (member, tally)) = done??;
        members.push((i, member));
        delivery
            .add(&tally.delivery)
            .context("merge the delivery histograms")?;
        arrivals_in_window += tally.arrivals_in_window;
        resubscribes += tally.resubscribes;
    }
    members.sort_by_key(|(i, _)| *i);
    let members: Vec<Member> = members.into_iter().map(|(_, m)| m).collect();

    let mut last_member = latency_histogram();
    let mut incomplete = 0;
    for slot in &phase.ledger.slots {
        let due = phase.clock.instant(slot.due.load(Ordering::Acquire));
        if !slot.acked.load(Ordering::Acquire) || !window.contains(due) {
            continue;
        }
        if slot.streams.load(Ordering::Acquire) >= config.streams_per_message {
            let last = phase.clock.instant(slot.last.load(Ordering::Acquire));
            last_member.saturating_record(nanos(last.saturating_duration_since(due)));
        } else {
            incomplete += 1;
        }
    }
    let result = PhaseResult {
        config: config.clone(),
        window: window.end - window.start,
        sends,
        last_member,
        delivery,
        arrivals_in_window,
        incomplete,
        resubscribes,
        max_dispatch_lag,
        usage,
    };
    Ok((result, members))
}

/// Sends due every `1 / rate` seconds from `start` until the window ends,
/// each in its own task so that a slow reply delays no later send.
async fn open_loop(
    phase: &Arc<Phase>,
    senders: &[(Client, String)],
    routes: &[Route],
    config: &PhaseConfig,
    start: Instant,
    window: Window,
) -> anyhow::Result<(SendTally, Duration)> {
    let mut tally = SendTally::new();
    let mut in_flight = JoinSet::new();
    let mut max_lag = Duration::ZERO;
    let record = |tally: &mut SendTally, done: Result<(Instant, Instant, SendOutcome), _>| {
        let (due, returned, outcome) = done?;
        tally.record(window, due, returned, outcome);
        anyhow::Ok(())
    };
    for (k, slot) in phase.ledger.slots.iter().enumerate() {
        let due = start + Duration::from_secs_f64(k as f64 / config.rate);
        if due >= window.end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if window.contains(due) {
            max_lag = max_lag.max(due.elapsed());
        }
        if in_flight.len() >= MAX_OPEN_LOOP_IN_FLIGHT {
            tally.skipped += 1;
            continue;
        }
        let route = routes[k % routes.len()];
        let (client, token) = senders[route.from].clone();
        let seq = phase.ledger.first_seq + k as u64;
        let due_nanos = phase.clock.nanos(due);
        slot.due.store(due_nanos, Ordering::Release);
        let body = stamped_body(seq, due_nanos, config.body_len);
        let phase = Arc::clone(phase);
        in_flight.spawn(async move {
            let sent = client
                .send_with_id(&token, route.to, &body, &format!("bench-{seq}"))
                .await;
            let returned = Instant::now();
            if sent.is_ok() {
                phase.ledger.slots[k].acked.store(true, Ordering::Release);
            }
            (due, returned, sent.map(|_| ()).map_err(status_of))
        });
        while let Some(done) = in_flight.try_join_next() {
            record(&mut tally, done)?;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        record(&mut tally, done)?;
    }
    Ok((tally, max_lag))
}

/// The tally keeps a gRPC status per failure; `chat-client` has already
/// turned the status into its own error, kept here by its code and text.
fn status_of(error: ClientError) -> Status {
    Status::new(error.code().unwrap_or(Code::Unknown), error.to_string())
}

/// Holds `member`'s stream open until `stop`, marking each message's
/// arrival. Says `ready` at its first CaughtUp; a later one is a resumed
/// stream.
async fn listen(
    mut member: Member,
    phase: Arc<Phase>,
    ready: mpsc::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<(Member, StreamTally)> {
    let mut tally = StreamTally {
        delivery: latency_histogram(),
        arrivals_in_window: 0,
        resubscribes: 0,
    };
    let mut subscription = member
        .client
        .subscribe(&member.token, member.last_event)
        .await
        .with_context(|| format!("subscribe as {}", member.name))?;
    let mut ready = Some(ready);
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = subscription.next() => next,
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                return Err(error).with_context(|| format!("{}'s stream failed", member.name));
            }
            None => bail!("{}'s stream ended", member.name),
        };
        match event {
            Event::Message { message, .. } => {
                let at = Instant::now();
                phase.arrived(
                    &message.body,
                    message.from_account_id,
                    member.account_id,
                    at,
                    &mut tally,
                );
            }
            Event::CaughtUp { .. } => match ready.take() {
                Some(ready) => ready.send(()).await?,
                None => tally.resubscribes += 1,
            },
            _ => {}
        }
    }
    member.last_event = subscription.last_event_id();
    Ok((member, tally))
}

/// How a store of messages went.
#[derive(Debug, Clone)]
pub struct StoreResult {
    /// Sends acknowledged.
    pub sent: u64,
    /// Sends that failed (each replaced by another, under a new key).
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl StoreResult {
    pub fn sends_per_sec(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Gets `messages` sends acknowledged as fast as the server takes them:
/// `per_route` sends in flight over each route, closed loop.
pub async fn store(
    members: &[Member],
    routes: &[Route],
    messages: u64,
    per_route: usize,
    body_len: usize,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<StoreResult> {
    if routes.is_empty() {
        bail!("a store needs at least one route");
    }
    let started = Instant::now();
    let clock = Clock::default();
    // A send claims a slot before it goes; a failed one gives it back.
    let claimed = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut loops = JoinSet::new();
    for route in routes {
        let member = members
            .get(route.from)
            .with_context(|| format!("route from member {} of {}", route.from, members.len()))?;
        for _ in 0..per_route.max(1) {
            let (client, token, to) = (member.client.clone(), member.token.clone(), route.to);
            let (seq, claimed, acked, errors) = (
                Arc::clone(seq),
                Arc::clone(&claimed),
                Arc::clone(&acked),
                Arc::clone(&errors),
            );
            loops.spawn(async move {
                let mut first_error = None;
                while claimed.fetch_add(1, Ordering::Relaxed) < messages {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let body = stamped_body(n, clock.nanos(Instant::now()), body_len);
                    match client
                        .send_with_id(&token, to, &body, &format!("bench-{n}"))
                        .await
                    {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            claimed.fetch_sub(1, Ordering::Relaxed);
                            if errors.fetch_add(1, Ordering::Relaxed) >= MAX_STORE_ERRORS {
                                bail!(
                                    "more than {MAX_STORE_ERRORS} sends failed while storing; the last: {error}"
                                );
                            }
                            first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
                anyhow::Ok(first_error)
            });
        }
    }
    let mut first_error = None;
    while let Some(done) = loops.join_next().await {
        match done? {
            Ok(error) => first_error = first_error.or(error),
            Err(e) => {
                loops.abort_all();
                return Err(e);
            }
        }
    }
    Ok(StoreResult {
        sent: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(streams_per_message: u32) -> Phase {
        Phase {
            clock: Clock::default(),
            window: OnceLock::new(),
            ledger: Ledger {
                first_seq: 100,
                slots: (0..4).map(|_| Slot::default()).collect(),
                streams_per_message,
                complete: AtomicU64::new(0),
            },
        }
    }

    #[test]
    fn a_message_is_complete_once_every_stream_has_it_and_the_last_one_counts() {
        let phase = phase(3);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        phase
            .window
            .set(Window {
                start: ms(0),
                end: ms(1000),
            })
            .unwrap();
        let due = phase.clock.nanos(ms(10));
        let body = |seq| stamped_body(seq, due, 100);
        let sender = 1;
        let mut tally = StreamTally {
            delivery: latency_histogram(),
            arrivals_in_window: 0,
            resubscribes: 0,
        };
        for (member, at) in [(sender, ms(12)), (2, ms(30)), (3, ms(20))] {
            assert_eq!(phase.ledger.complete.load(Ordering::Acquire), 0);
            phase.arrived(&body(101), sender, member, at, &mut tally);
        }
        assert_eq!(phase.ledger.complete.load(Ordering::Acquire), 1);
        let slot = phase.slot(101).unwrap();
        assert_eq!(slot.streams.load(Ordering::Acquire), 3);
        assert_eq!(
            phase.clock.instant(slot.last.load(Ordering::Acquire)),
            ms(30)
        );
        // The sender's own copy is not a delivery to someone else.
        assert_eq!(tally.delivery.len(), 2);
        assert_eq!(tally.arrivals_in_window, 3);
        // Outside the ledger (another phase's message): ignored.
        phase.arrived(&body(99), sender, 2, ms(40), &mut tally);
        phase.arrived(&body(104), sender, 2, ms(40), &mut tally);
        assert_eq!(tally.arrivals_in_window, 3);
    }
}
