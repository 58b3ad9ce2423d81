//! Credentials and sessions: argon2id password hashes, session tokens (256
//! random bits, of which only the SHA-256 is ever stored), the failed-login
//! rate limit ([`LoginThrottle`]), and the activity clock that idle sessions
//! are judged by ([`SessionActivity`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use log_format::events::{PasswordHash, SessionId, TokenHash};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use crate::config::HashingCost;
use crate::error::ChatError;

/// Hashes `password` with argon2id and a fresh random salt. CPU-heavy: call
/// it off the async threads.
pub fn hash_password(password: &str, cost: HashingCost) -> Result<PasswordHash, ChatError> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|e| ChatError::Internal(format!("argon2 parameters: {e}")))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ChatError::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ChatError::Internal(e.to_string()))?;
    let hash = argon
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| ChatError::Internal(format!("argon2: {e}")))?;
    Ok(PasswordHash(hash.to_string()))
}

/// Whether `password` matches `hash` (its parameters come from the hash).
pub fn verify_password(hash: &PasswordHash, password: &str) -> bool {
    argon2::PasswordHash::new(&hash.0).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A new session token and the hash that goes in the log.
pub fn new_token() -> Result<(String, TokenHash), ChatError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ChatError::Internal(format!("no randomness: {e}")))?;
    let token = hex::encode(bytes);
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub fn token_hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// The most usernames (or client addresses) a throttle tracks at once:
/// about 100 bytes each, so a client trying millions of names cannot grow
/// the server's memory past a few MiB.
pub const MAX_TRACKED: usize = 100_000;

/// Login attempts per username on this replica, and the lockout they earn.
/// An attempt is counted before its password is checked, so concurrent
/// guesses cannot slip past the limit while the first ones are verified.
#[derive(Debug)]
pub struct LoginThrottle {
    attempts: u32,
    lockout: Duration,
    tracked: Mutex<HashMap<String, Attempts>>,
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    count: u32,
    /// When the current window started, or the lockout began.
    since: Instant,
}

impl LoginThrottle {
    /// Allows `attempts` attempts per username without a success, then
    /// refuses it for `lockout` from the last one.
    pub fn new(attempts: u32, lockout: Duration) -> Self {
        LoginThrottle {
            attempts,
            lockout,
            tracked: Mutex::default(),
        }
    }

    /// Counts a login attempt for `username`, or refuses it if the name has
    /// had its attempts within the lockout.
    pub fn begin_attempt(&self, username: &str) -> Result<(), ChatError> {
        let mut tracked = self.tracked.lock().expect("lock");
        let key = username.to_lowercase();
        if !tracked.contains_key(&key) && tracked.len() >= MAX_TRACKED {
            tracked.retain(|_, a| a.since.elapsed() < self.lockout);
            if tracked.len() >= MAX_TRACKED {
                return Err(ChatError::RateLimited(
                    "too many logins are failing on this server right now; try again in a minute"
                        .into(),
                ));
            }
        }
        let now = Instant::now();
        let a = tracked.entry(key).or_insert(Attempts {
            count: 0,
            since: now,
        });
        let elapsed = a.since.elapsed();
        if elapsed >= self.lockout {
            *a = Attempts {
                count: 0,
                since: now,
            };
        } else if a.count >= self.attempts {
            let wait = (self.lockout - elapsed).as_secs().max(1);
            return Err(ChatError::RateLimited(format!(
                "too many failed logins for this username; try again in {wait} s"
            )));
        }
        a.count += 1;
        if a.count >= self.attempts {
            // The lockout runs from the last attempt.
            a.since = now;
        }
        Ok(())
    }

    /// A correct password clears the name's attempts.
    pub fn login_succeeded(&self, username: &str) {
        self.tracked
            .lock()
            .expect("lock")
            .remove(&username.to_lowercase());
    }

    /// Forgets names whose attempts are older than the lockout.
    pub fn forget_expired(&self) {
        let mut tracked = self.tracked.lock().expect("lock");
        tracked.retain(|_, a| a.since.elapsed() < self.lockout);
        if tracked.capacity() > 4 * tracked.len().max(1024) {
            tracked.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tracked.lock().expect("lock").len()
    }
}

/// Accounts created per client address, per minute: a token bucket per
/// address (one minute's allowance as its burst), tracked for at most
/// [`MAX_TRACKED`] addresses.
#[derive(Debug)]
pub struct CreationLimit {
    /// Allowed per minute per address; 0 for no limit.
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl CreationLimit {
    pub fn new(per_minute: u32) -> Self {
        CreationLimit {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Takes one creation from `address`'s allowance, or refuses.
    pub fn take(&self, address: Option<IpAddr>) -> Result<(), ChatError> {
        let (Some(address), true) = (address, self.per_minute > 0) else {
            return Ok(());
        };
        let per_minute = f64::from(self.per_minute);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("lock");
        if !buckets.contains_key(&address) && buckets.len() >= MAX_TRACKED {
            // A full bucket is as good as none.
            buckets.retain(|_, b| {
                b.tokens + per_minute * now.duration_since(b.at).as_secs_f64() / 60.0 < per_minute
            });
            if buckets.len() >= MAX_TRACKED {
                return Err(ChatError::RateLimited(
                    "the server is creating too many accounts right now; try again in a minute"
                        .into(),
                ));
            }
        }
        let b = buckets.entry(address).or_insert(Bucket {
            tokens: per_minute,
            at: now,
        });
        let refill = per_minute * now.duration_since(b.at).as_secs_f64() / 60.0;
        b.tokens = (b.tokens + refill).min(per_minute);
        b.at = now;
        if b.tokens < 1.0 {
            let wait = ((1.0 - b.tokens) * 60.0 / per_minute).ceil().max(1.0);
            return Err(ChatError::RateLimited(format!(
                "too many accounts created from this address; try again in {wait} s"
            )));
        }
        b.tokens -= 1.0;
        Ok(())
    }
}

/// Bounds the password hashing (argon2id: CPU and memory heavy) running at
/// once: `workers` dedicated threads, `queue` more jobs waiting; past that a
/// request is refused with RESOURCE_EXHAUSTED rather than growing the
/// server's memory and starving every other request. The threads run at a
/// lower scheduling priority (nice 10), so that a burst of account
/// creations and logins takes the cores only while nothing else wants
/// them: other users' sends stay fast meanwhile.
#[derive(Debug)]
pub struct Hashing {
    /// Jobs admitted, running or waiting: `workers + queue` permits.
    admitted: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The nice value of the password threads (0 is everyone else's, 19 the
/// lowest priority).
const HASHING_NICE: i32 = 10;

impl Hashing {
    /// Starts the `workers` threads; they end when this is dropped.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        let (jobs, waiting) = mpsc::channel::<Job>();
        let waiting = Arc::new(Mutex::new(waiting));
        for n in 0..workers {
            let waiting = Arc::clone(&waiting);
            let spawned = std::thread::Builder::new()
                .name(format!("passwords-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = waiting.lock().expect("lock").recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a password thread: {e}");
            }
        }
        Hashing {
            admitted: Arc::new(Semaphore::new(workers + queue)),
            jobs,
        }
    }

    /// Runs `f` (a hash or a verification) when a worker is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ChatError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| {
                ChatError::RateLimited(
                    "the server is busy checking passwords; try again in a few seconds".into(),
                )
            })?;
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(f());
            drop(admitted);
        });
        self.jobs
            .send(job)
            .map_err(|_| ChatError::Unavailable("the server is shutting down".into()))?;
        answered
            .await
            .map_err(|_| ChatError::Internal("a password worker failed".into()))
    }
}

/// Lowers the calling thread's scheduling priority to [`HASHING_NICE`]
/// (Linux keeps a nice value per thread); elsewhere, or if refused, the
/// thread keeps its priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICE)
    {
        tracing::debug!("password thread keeps its priority: {e}");
    }
}

/// Holds a refusal of a rate limit for [`TARPIT_HOLD`] before it is sent, so
/// that a client calling in a loop makes one call a second instead of
/// thousands, each of which costs every other user some of the server. At
/// most [`TARPIT_SLOTS`] refusals are held at once (each holds a request's
/// memory); past that they are answered at once.
#[derive(Debug)]
pub struct Tarpit {
    slots: Semaphore,
    hold: Duration,
}

pub const TARPIT_HOLD: Duration = Duration::from_secs(1);
pub const TARPIT_SLOTS: usize = 1024;

impl Default for Tarpit {
    fn default() -> Self {
        Tarpit::new(TARPIT_SLOTS, TARPIT_HOLD)
    }
}

impl Tarpit {
    pub fn new(slots: usize, hold: Duration) -> Self {
        Tarpit {
            slots: Semaphore::new(slots),
            hold,
        }
    }

    /// Returns `refusal` after the hold, or at once when every slot is taken.
    pub async fn hold(&self, refusal: ChatError) -> ChatError {
        if let Ok(_slot) = self.slots.try_acquire() {
            tokio::time::sleep(self.hold).await;
        }
        refusal
    }
}

/// When each session was last active, here or on another replica: the
/// clock idle sessions are judged by.
#[derive(Debug)]
pub struct SessionActivity {
    idle: Duration,
    /// Under one lock: a request touches both.
    activity: Mutex<Activity>,
}

#[derive(Debug, Default)]
struct Activity {
    /// When each session was last active, here or (as reported) elsewhere.
    last: HashMap<SessionId, Instant>,
    /// Sessions active here since the last report to the other replicas.
    unreported: HashSet<SessionId>,
}

impl SessionActivity {
    /// Judges a session idle after `idle` without activity.
    pub fn new(idle: Duration) -> Self {
        SessionActivity {
            idle,
            activity: Mutex::default(),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Records activity of a session now, here.
    pub fn touch(&self, session: SessionId) {
        let mut activity = self.activity.lock().expect("lock");
        activity.last.insert(session, Instant::now());
        activity.unreported.insert(session);
    }

    /// Records activity another replica reported.
    pub fn touched_elsewhere(&self, sessions: &[SessionId]) {
        let now = Instant::now();
        let mut activity = self.activity.lock().expect("lock");
        for s in sessions {
            activity.last.insert(*s, now);
        }
    }

    /// The sessions active here since the last call.
    pub fn take_unreported(&self) -> Vec<SessionId> {
        self.activity
            .lock()
            .expect("lock")
            .unreported
            .drain()
            .collect()
    }

    /// How often idle sessions are looked for and activity is shared: a
    /// quarter of the idle timeout, between 50 ms and 10 s.
    pub fn period(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(10))
    }

    /// Whether the session has been idle too long. A session this replica
    /// has not seen yet (opened elsewhere, or before a restart) starts its
    /// idle clock now.
    pub fn is_idle(&self, session: SessionId) -> bool {
        let mut activity = self.activity.lock().expect("lock");
        let last = *activity.last.entry(session).or_insert_with(Instant::now);
        last.elapsed() >= self.idle
    }

    pub fn forget(&self, session: SessionId) {
        let mut activity = self.activity.lock().expect("lock");
        activity.last.remove(&session);
        activity.unreported.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_hash() {
        let h = hash_password("correct horse", HashingCost::TESTING).unwrap();
        assert!(h.0.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(!verify_password(&PasswordHash("garbage".into()), "x"));
        let (t1, h1) = new_token().unwrap();
        let (t2, _) = new_token().unwrap();
        assert_eq!(t1.len(), 64);
        assert_ne!(t1, t2);
        assert_eq!(token_hash(&t1), h1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_logins_lock_a_username_for_a_while() {
        let g = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            g.begin_attempt("Alice").unwrap();
        }
        assert!(matches!(
            g.begin_attempt("ALICE"),
            Err(ChatError::RateLimited(_))
        ));
        g.begin_attempt("bob").unwrap();
        // A success clears the count.
        g.login_succeeded("bob");
        for _ in 0..3 {
            g.begin_attempt("bob").unwrap();
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        g.begin_attempt("alice").unwrap();
        // Expired names are forgotten.
        tokio::time::advance(Duration::from_secs(61)).await;
        g.forget_expired();
        assert_eq!(g.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_login_table_is_bounded() {
        let g = LoginThrottle::new(3, Duration::from_secs(60));
        for i in 0..MAX_TRACKED {
            g.begin_attempt(&format!("u{i}")).unwrap();
        }
        // Full of recent names: a new one is refused, a known one counted.
        assert!(matches!(
            g.begin_attempt("newcomer"),
            Err(ChatError::RateLimited(_))
        ));
        g.begin_attempt("u1").unwrap();
        assert_eq!(g.tracked(), MAX_TRACKED);
        // Once they expire, they make room.
        tokio::time::advance(Duration::from_secs(61)).await;
        g.begin_attempt("newcomer").unwrap();
        assert_eq!(g.tracked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn account_creation_is_limited_per_address() {
        let limit = CreationLimit::new(3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            limit.take(a).unwrap();
        }
        assert!(matches!(limit.take(a), Err(ChatError::RateLimited(_))));
        limit.take(b).unwrap();
        // One minute refills the allowance, 20 s one creation of it.
        tokio::time::advance(Duration::from_secs(20)).await;
        limit.take(a).unwrap();
        assert!(limit.take(a).is_err());
        CreationLimit::new(0).take(a).unwrap();
    }

    #[tokio::test]
    async fn hashing_refuses_past_its_queue() {
        let hashing = Arc::new(Hashing::new(1, 1));
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let busy = {
            let (hashing, hold) = (Arc::clone(&hashing), Arc::clone(&hold));
            tokio::spawn(async move {
                hashing
                    .run(move || hold.lock().unwrap().recv().unwrap())
                    .await
            })
        };
        // Wait until the first is admitted, then one may queue and a third
        // is refused at once.
        while hashing.admitted.available_permits() > 1 {
            tokio::task::yield_now().await;
        }
        let queued = {
            let hashing = Arc::clone(&hashing);
            tokio::spawn(async move { hashing.run(|| 7).await })
        };
        while hashing.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            hashing.run(|| 8).await,
            Err(ChatError::RateLimited(_))
        ));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 7);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_below_everyone_else() {
        let hashing = Hashing::new(1, 0);
        let nice = hashing
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nice, HASHING_NICE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tarpit_holds_refusals_while_it_has_room() {
        let tarpit = Arc::new(Tarpit::new(1, Duration::from_secs(1)));
        let start = Instant::now();
        let held = {
            let tarpit = Arc::clone(&tarpit);
            tokio::spawn(async move { tarpit.hold(ChatError::RateLimited("a".into())).await })
        };
        while tarpit.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // The only slot is taken: the next refusal leaves at once.
        let at_once = tarpit.hold(ChatError::RateLimited("b".into())).await;
        assert!(matches!(at_once, ChatError::RateLimited(m) if m == "b"));
        assert_eq!(start.elapsed(), Duration::ZERO);
        let held = held.await.unwrap();
        assert!(matches!(held, ChatError::RateLimited(m) if m == "a"));
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_go_idle_without_activity() {
        let g = SessionActivity::new(Duration::from_secs(30));
        let s = SessionId(5);
        assert!(!g.is_idle(s));
        tokio::time::advance(Duration::from_secs(20)).await;
        g.touch(s);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(!g.is_idle(s));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(g.is_idle(s));
    }
}
