//! Wall-clock helpers. REST bodies carry RFC 3339 times with millis; the
//! session stream carries milliseconds since the Unix epoch (the seed's
//! `timestamp: number`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The current time as a stream timestamp.
pub fn now_ms() -> u64 {
    epoch_ms(now())
}

/// An RFC 3339 time as milliseconds since the epoch; `None` when `s` is
/// not one.
pub fn rfc3339_to_ms(s: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(s).ok().map(epoch_ms)
}

/// Milliseconds since the epoch back to a time.
pub fn from_epoch_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_timestamps_are_javascript_milliseconds() {
        assert_eq!(rfc3339_to_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            rfc3339_to_ms("2026-12-04T01:43:09.413Z"),
            Some(1_796_348_589_413)
        );
        assert_eq!(rfc3339_to_ms("yesterday"), None);
        let t = now();
        let ms = epoch_ms(t);
        assert_eq!(epoch_ms(from_epoch_ms(ms)), ms);
    }
}
