//! Credentials and sessions: argon2id password hashes, session tokens (256
//! random bits, of which only the SHA-256 is ever stored), the failed-login
//! rate limit ([`LoginThrottle`]), and the activity clock that idle sessions
//! are judged by ([`SessionActivity`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use log_format::events::{PasswordHash, SessionId, TokenHash};
use sha2::{Digest, Sha256};
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

/// Failed logins per username on this replica, and the lockout they earn.
#[derive(Debug)]
pub struct LoginThrottle {
    attempts: u32,
    lockout: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the current window started, or the lockout began.
    since: Instant,
}

impl LoginThrottle {
    /// Allows `attempts` failures per username, then refuses it for
    /// `lockout` from the last failure.
    pub fn new(attempts: u32, lockout: Duration) -> Self {
        LoginThrottle {
            attempts,
            lockout,
            failures: Mutex::default(),
        }
    }

    /// Refuses a login for a username that failed too often recently.
    pub fn check_login_allowed(&self, username: &str) -> Result<(), ChatError> {
        let mut failures = self.failures.lock().expect("lock");
        let key = username.to_lowercase();
        if let Some(f) = failures.get(&key) {
            let elapsed = f.since.elapsed();
            if elapsed >= self.lockout {
                failures.remove(&key);
            } else if f.count >= self.attempts {
                let wait = (self.lockout - elapsed).as_secs().max(1);
                return Err(ChatError::RateLimited(format!(
                    "too many failed logins for this username; try again in {wait} s"
                )));
            }
        }
        Ok(())
    }

    pub fn login_failed(&self, username: &str) {
        let mut failures = self.failures.lock().expect("lock");
        let now = Instant::now();
        let f = failures.entry(username.to_lowercase()).or_insert(Failures {
            count: 0,
            since: now,
        });
        f.count += 1;
        if f.count >= self.attempts {
            // The lockout runs from the last failure.
            f.since = now;
        }
    }

    pub fn login_succeeded(&self, username: &str) {
        self.failures
            .lock()
            .expect("lock")
            .remove(&username.to_lowercase());
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
            g.check_login_allowed("Alice").unwrap();
            g.login_failed("alice");
        }
        assert!(matches!(
            g.check_login_allowed("ALICE"),
            Err(ChatError::RateLimited(_))
        ));
        g.check_login_allowed("bob").unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        g.check_login_allowed("alice").unwrap();
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
