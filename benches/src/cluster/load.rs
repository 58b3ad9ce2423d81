//! Load that only a cluster needs.
//!
//! [`closed_loop`] is the throughput phase without subscribers: the same
//! sends and the same counting as `server::load::run_load`, which needs at
//! least one open stream. [`SteadyLoad`] keeps senders going across
//! failovers: each sender knows every server and, when a send fails, sends
//! it again (same `client_msg_id`) to the next one, as a client with a
//! server list does. Its [`FailoverWatch`] finds the first message that the
//! cluster acknowledged after a kill.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use chat_proto::SendRequest;
use chat_proto::chat_client::ChatClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;

use crate::server::load::{
    Clock, LoadConfig, LoadResult, Offered, SendTally, User, Window, latency_histogram,
    stamped_body,
};
use crate::server::{Probe, Usage};

/// The `client_msg_id` and body of message `seq`.
fn request(
    token: &str,
    to: &str,
    seq: u64,
    clock: Clock,
    due: Instant,
    body_len: usize,
) -> SendRequest {
    SendRequest {
        token: token.to_owned(),
        to: to.to_owned(),
        body: stamped_body(seq, clock.nanos(due), body_len),
        client_msg_id: format!("bench-{seq}"),
        ..Default::default()
    }
}

/// A closed-loop throughput phase with no subscriber: `per_sender` loops
/// per sender, each sending (to `recipients[i % len]`) as soon as its last
/// send returned. Counted as `server::load::run_load` counts: sends/s are
/// the acknowledged sends that return inside the window, latency is that of
/// the sends started in it.
pub async fn closed_loop(
    senders: &[User],
    recipients: &[String],
    config: &LoadConfig,
    seq: &Arc<AtomicU64>,
    probe: impl Fn() -> Probe + Send + 'static,
) -> anyhow::Result<LoadResult> {
    let Offered::ClosedLoop { per_sender } = config.offered else {
        bail!("without subscribers only the closed loop is offered");
    };
    if senders.is_empty() || recipients.is_empty() {
        bail!("a load phase needs at least one sender and one recipient");
    }
    let clock = Clock::default();
    let start = Instant::now() + Duration::from_millis(10);
    let window = Window {
        start: start + config.warmup,
        end: start + config.warmup + config.measure,
    };
    let (window_start, window_end) = (window.start, window.end);
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let before = probe();
        tokio::time::sleep_until(window_end.into()).await;
        Usage::between(&before, &probe())
    });
    let mut loops = JoinSet::new();
    for (i, sender) in senders.iter().enumerate() {
        for _ in 0..per_sender.max(1) {
            let mut client = ChatClient::new(sender.channel.clone());
            let token = sender.token.clone();
            let to = recipients[i % recipients.len()].clone();
            let seq = Arc::clone(seq);
            let body_len = config.body_len;
            loops.spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let mut tally = SendTally::new();
                loop {
                    let started = Instant::now();
                    if started >= window_end {
                        return tally;
                    }
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let outcome = client
                        .send(request(&token, &to, n, clock, started, body_len))
                        .await
                        .map(|_| ());
                    tally.record(window, started, Instant::now(), outcome);
                }
            });
        }
    }
    let mut sends = SendTally::new();
    while let Some(tally) = loops.join_next().await {
        sends.merge(tally?);
    }
    Ok(LoadResult {
        config: config.clone(),
        senders: senders.len(),
        subscribers: 0,
        window: window_end - window_start,
        sends,
        delivered: 0,
        delivery_latency: latency_histogram(),
        resubscribes: 0,
        max_dispatch_lag: Duration::ZERO,
        usage: sampler.await?,
    })
}

/// A sender that knows every server: it starts on the first of `servers`
/// and moves to the next whenever a send fails.
#[derive(Debug, Clone)]
pub struct RoamingSender {
    pub token: String,
    /// Its recipient's username.
    pub to: String,
    /// One connection per server, its home server first.
    pub servers: Vec<Channel>,
}

/// Pause after a send has failed on every server in turn, so that a
/// cluster with no server up is not called in a tight loop.
const ROUND_BACKOFF: Duration = Duration::from_millis(20);

/// What the watch knows since it was last armed.
#[derive(Debug, Default)]
struct WatchState {
    armed: bool,
    killed_at: Option<Instant>,
    /// Acknowledgements seen between arming and learning the kill instant:
    /// (first attempt, acknowledged).
    pending: Vec<(Instant, Instant)>,
    /// When the first message first tried after the kill was acknowledged.
    first_fresh_ack: Option<Instant>,
    /// Failed attempts since arming, by code and message.
    errors: BTreeMap<String, u64>,
}

/// Finds the first message acknowledged after a kill that the cluster must
/// have committed after the kill: a message whose *first* attempt started
/// after the kill instant. A retry of an older message does not count, even
/// if it started after the kill, since a server answers a repeated
/// `client_msg_id` from its own state without a new commit.
#[derive(Debug)]
pub struct FailoverWatch {
    state: watch::Sender<WatchState>,
    acks: AtomicU64,
    errors: AtomicU64,
}

/// A failover as the senders saw it.
#[derive(Debug, Clone)]
pub struct FailoverSeen {
    /// From the kill to the first fresh acknowledgement.
    pub first_fresh_ack: Duration,
    /// Failed attempts between arming and disarming, by code and message.
    pub errors: BTreeMap<String, u64>,
}

impl FailoverWatch {
    fn new() -> Self {
        FailoverWatch {
            state: watch::Sender::new(WatchState::default()),
            acks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Starts watching, just before a kill.
    pub fn arm(&self) {
        self.state.send_replace(WatchState {
            armed: true,
            ..WatchState::default()
        });
    }

    /// The kill happened at `at`.
    pub fn killed(&self, at: Instant) {
        self.state.send_modify(|s| {
            s.killed_at = Some(at);
            s.first_fresh_ack = s
                .pending
                .drain(..)
                .filter(|(first, _)| *first >= at)
                .map(|(_, acked)| acked)
                .min();
        });
    }

    /// Waits for the first fresh acknowledgement after the kill, then stops
    /// watching.
    pub async fn first_fresh_ack(&self, timeout: Duration) -> anyhow::Result<FailoverSeen> {
        let mut rx = self.state.subscribe();
        // The `Ref` that `wait_for` returns holds the value's read lock: it
        // must be gone (end of statement) before the value is replaced.
        let reached = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.killed_at.is_some() && s.first_fresh_ack.is_some()),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        let state = self.state.send_replace(WatchState::default());
        if !reached {
            bail!(
                "no message was acknowledged within {timeout:?} of the kill; failed attempts: {:?}",
                state.errors
            );
        }
        let (Some(killed), Some(acked)) = (state.killed_at, state.first_fresh_ack) else {
            bail!("the watch was reset while waiting");
        };
        Ok(FailoverSeen {
            first_fresh_ack: acked.saturating_duration_since(killed),
            errors: state.errors,
        })
    }

    fn acked(&self, first_attempt: Instant, acked: Instant) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.state.send_if_modified(|s| match s.killed_at {
            _ if !s.armed || s.first_fresh_ack.is_some() => false,
            None => {
                s.pending.push((first_attempt, acked));
                false
            }
            Some(killed) if first_attempt >= killed => {
                s.first_fresh_ack = Some(acked);
                true
            }
            Some(_) => false,
        });
    }

    fn failed(&self, status: &Status) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.state.send_if_modified(|s| {
            if s.armed {
                *s.errors.entry(error_kind(status)).or_default() += 1;
            }
            false
        });
    }

    /// Messages acknowledged so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// Failed attempts so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// A status's code and the start of its message: enough to tell a refused
/// connection from a timeout, few enough kinds to list.
pub fn error_kind(status: &Status) -> String {
    let message: String = status.message().chars().take(80).collect();
    format!("{:?}: {message}", status.code())
}

/// Senders sending without pause (one message in flight each) until
/// stopped, each moving to the next server when a send fails.
#[derive(Debug)]
pub struct SteadyLoad {
    pub watch: Arc<FailoverWatch>,
    stop: CancellationToken,
    senders: JoinSet<()>,
}

impl SteadyLoad {
    pub fn start(senders: Vec<RoamingSender>, body_len: usize, seq: &Arc<AtomicU64>) -> SteadyLoad {
        let watch = Arc::new(FailoverWatch::new());
        let stop = CancellationToken::new();
        let clock = Clock::default();
        let mut tasks = JoinSet::new();
        for sender in senders {
            let (watch, stop, seq) = (Arc::clone(&watch), stop.clone(), Arc::clone(seq));
            tasks.spawn(async move {
                let mut clients: Vec<ChatClient<Channel>> = sender
                    .servers
                    .iter()
                    .cloned()
                    .map(ChatClient::new)
                    .collect();
                let mut at = 0;
                'messages: while !stop.is_cancelled() {
                    let first_attempt = Instant::now();
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let message =
                        request(&sender.token, &sender.to, n, clock, first_attempt, body_len);
                    let mut failed_in_a_row = 0;
                    loop {
                        let outcome = tokio::select! {
                            () = stop.cancelled() => break 'messages,
                            outcome = clients[at].send(message.clone()) => outcome,
                        };
                        match outcome {
                            Ok(_) => {
                                watch.acked(first_attempt, Instant::now());
                                break;
                            }
                            Err(status) => {
                                watch.failed(&status);
                                at = (at + 1) % clients.len();
                                failed_in_a_row += 1;
                                if failed_in_a_row % clients.len() == 0 {
                                    tokio::time::sleep(ROUND_BACKOFF).await;
                                }
                            }
                        }
                    }
                }
            });
        }
        SteadyLoad {
            watch,
            stop,
            senders: tasks,
        }
    }

    /// Stops every sender (a send in flight is abandoned) and waits for
    /// them to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        while let Some(done) = self.senders.join_next().await {
            done?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_message_first_tried_after_the_kill_ends_a_failover() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let watch = FailoverWatch::new();
        watch.acked(ms(0), ms(1)); // before arming: not watched
        watch.arm();
        watch.acked(ms(2), ms(11)); // seen before the kill instant is known
        watch.killed(ms(10));
        watch.acked(ms(5), ms(30)); // a retry of a message from before the kill
        watch.failed(&Status::unavailable("transport error"));
        watch.acked(ms(20), ms(40)); // the first fresh one
        watch.acked(ms(25), ms(45));
        let seen = watch.first_fresh_ack(Duration::from_secs(5)).await.unwrap();
        assert_eq!(seen.first_fresh_ack, Duration::from_millis(30));
        assert_eq!(
            seen.errors,
            BTreeMap::from([("Unavailable: transport error".to_owned(), 1)])
        );
        assert_eq!((watch.acks(), watch.errors()), (5, 1));
    }

    #[tokio::test]
    async fn a_fresh_ack_seen_before_the_kill_instant_is_known_counts() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let watch = FailoverWatch::new();
        watch.arm();
        watch.acked(ms(12), ms(14));
        watch.killed(ms(10));
        let seen = watch.first_fresh_ack(Duration::from_secs(5)).await.unwrap();
        assert_eq!(seen.first_fresh_ack, Duration::from_millis(4));
    }

    #[tokio::test]
    async fn no_fresh_ack_in_time_is_an_error_and_disarms() {
        let t0 = Instant::now();
        let watch = FailoverWatch::new();
        watch.arm();
        watch.killed(t0);
        watch.acked(t0 - Duration::from_millis(1), t0);
        let error = watch.first_fresh_ack(Duration::ZERO).await.unwrap_err();
        assert!(
            error.to_string().contains("no message was acknowledged"),
            "{error}"
        );
        watch.acked(t0, t0);
        assert!(!watch.state.borrow().armed);
        assert_eq!(watch.state.borrow().first_fresh_ack, None);
    }
}
