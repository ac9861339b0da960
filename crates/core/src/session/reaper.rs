//! When a live session ends on its own: its idle timeout (moved forward by
//! every sign of use) or its maximum lifetime, whichever comes first.
//!
//! The idle timeout is the session's own, fixed at create
//! ([`idle_timeout`]); only sessions stored before it was chosen per
//! session follow the server's setting, so restarting the server with
//! another `--idle-timeout` changes no promise made to a client.
//!
//! Activity is recorded without going through the actor ([`Activity`] is a
//! shared atomic), so an API read never waits behind a running command;
//! the actor sleeps until the next possible expiry and checks again.

use crate::seams::SessionRecord;
use crate::time::now;
use cc_wire::api::{SessionLimits, SessionState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The last time anyone used a session. Cheap to touch from any task.
///
/// Kept to the nanosecond: a coarser unit truncated toward the past would
/// put the last use before the real one, and the idle timeout would end
/// the session that much early (it is a promise of *at least* so long).
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    /// Nanoseconds after `origin` of the last touch (u64: 584 years).
    last_ns: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
}

/// Why the session must end (or, idle, may sleep) now, or when to look
/// again.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Its maximum lifetime is over.
    Expired(String),
    /// Nobody used it for its idle timeout.
    Idle(String),
    CheckAt(Instant),
}

/// The idle timeout a session lives by: its own (`Some(0)`: never), or the
/// server's for a session stored before it was chosen per session.
pub(crate) fn idle_timeout(limits: &SessionLimits, server: Option<Duration>) -> Option<Duration> {
    match limits.idle_timeout_secs {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => server,
    }
}

/// Judges a session's lifetime. The idle clock only runs while the session
/// waits for its user (`ready`): a running turn, a clone or a start is use.
pub(crate) fn judge(
    record: &SessionRecord,
    activity: &Activity,
    idle_timeout: Option<Duration>,
) -> Verdict {
    let now_i = Instant::now();
    let lifetime_end = now_i
        + record
            .expires_at
            .duration_since(now())
            .unwrap_or(Duration::ZERO);
    if lifetime_end <= now_i {
        return Verdict::Expired(format!(
            "the session reached its maximum lifetime of {} s",
            record.limits.timeout_secs
        ));
    }
    let Some(idle) = idle_timeout else {
        return Verdict::CheckAt(lifetime_end);
    };
    if record.state != SessionState::Ready {
        // Look again soon: reaching `ready` starts the idle clock.
        activity.touch();
        return Verdict::CheckAt(lifetime_end.min(now_i + idle));
    }
    let idle_end = activity.last() + idle;
    if idle_end <= now_i {
        return Verdict::Idle(format!(
            "the session was idle for {} s (idle timeout)",
            idle.as_secs()
        ));
    }
    Verdict::CheckAt(lifetime_end.min(idle_end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;

    fn record(state: SessionState, lifetime: Duration) -> SessionRecord {
        let t = now();
        SessionRecord {
            id: SessionId::generate(),
            container_id: None,
            state,
            reason: None,
            repo_url: "https://example.com/r.git".into(),
            branch: None,
            limits: SessionLimits {
                memory_bytes: 1,
                cpu: 1.0,
                timeout_secs: lifetime.as_secs(),
                egress: Default::default(),
                idle_timeout_secs: Some(10),
            },
            created_at: t,
            updated_at: t,
            expires_at: t + lifetime,
            last_seq: 0,
            agent_seq: 0,
            usage: Default::default(),
            lease: Default::default(),
            owner: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn activity_moves_the_idle_deadline() {
        let rec = record(SessionState::Ready, Duration::from_secs(3600));
        let act = Activity::new();
        act.touch();
        let idle = Some(Duration::from_secs(10));
        let Verdict::CheckAt(first) = judge(&rec, &act, idle) else {
            panic!("not expired yet")
        };
        tokio::time::advance(Duration::from_secs(6)).await;
        act.touch();
        let Verdict::CheckAt(second) = judge(&rec, &act, idle) else {
            panic!("touched 0 s ago")
        };
        assert!(second >= first + Duration::from_secs(5), "moved forward");
        tokio::time::advance(Duration::from_secs(11)).await;
        let v = judge(&rec, &act, idle);
        assert!(
            matches!(&v, Verdict::Idle(r) if r.contains("idle")),
            "{v:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_use_is_never_put_before_the_real_one() {
        let act = Activity::new();
        // Between two whole milliseconds, where a millisecond clock
        // truncated the touch to 1 ms and the session ended early.
        tokio::time::advance(Duration::from_micros(1_999)).await;
        act.touch();
        let touched = Instant::now();
        assert!(act.last() >= touched, "{:?} < {touched:?}", act.last());
        let rec = record(SessionState::Ready, Duration::from_secs(3600));
        let idle = Some(Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(3) - Duration::from_micros(1)).await;
        let v = judge(&rec, &act, idle);
        assert!(matches!(v, Verdict::CheckAt(_)), "1 µs before: {v:?}");
        tokio::time::advance(Duration::from_micros(1)).await;
        let v = judge(&rec, &act, idle);
        assert!(matches!(v, Verdict::Idle(_)), "at 3 s: {v:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_turn_is_not_idle() {
        let rec = record(SessionState::Busy, Duration::from_secs(3600));
        let act = Activity::new();
        tokio::time::advance(Duration::from_secs(60)).await;
        let v = judge(&rec, &act, Some(Duration::from_secs(10)));
        assert!(matches!(v, Verdict::CheckAt(_)), "{v:?}");
    }

    #[test]
    fn the_sessions_own_idle_timeout_wins_over_the_servers() {
        let server = Some(Duration::from_secs(1800));
        let mut limits = record(SessionState::Ready, Duration::from_secs(60)).limits;
        limits.idle_timeout_secs = Some(90);
        assert_eq!(idle_timeout(&limits, server), Some(Duration::from_secs(90)));
        limits.idle_timeout_secs = Some(0);
        assert_eq!(idle_timeout(&limits, server), None, "never");
        // Stored before the idle timeout was per session.
        limits.idle_timeout_secs = None;
        assert_eq!(idle_timeout(&limits, server), server);
        assert_eq!(idle_timeout(&limits, None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_own_idle_timeout_ends_the_session_first() {
        let mut rec = record(SessionState::Ready, Duration::from_secs(3600));
        rec.limits.idle_timeout_secs = Some(2);
        let act = Activity::new();
        act.touch();
        let idle = idle_timeout(&rec.limits, Some(Duration::from_secs(600)));
        assert!(matches!(judge(&rec, &act, idle), Verdict::CheckAt(_)));
        tokio::time::advance(Duration::from_secs(3)).await;
        let v = judge(&rec, &act, idle);
        assert_eq!(
            v,
            Verdict::Idle("the session was idle for 2 s (idle timeout)".into())
        );
    }

    #[test]
    fn the_maximum_lifetime_wins_over_activity() {
        let mut rec = record(SessionState::Ready, Duration::from_secs(5));
        rec.expires_at = now() - Duration::from_secs(1);
        let act = Activity::new();
        act.touch();
        let v = judge(&rec, &act, Some(Duration::from_secs(600)));
        assert!(
            matches!(&v, Verdict::Expired(r) if r.contains("maximum lifetime")),
            "{v:?}"
        );
    }
}
