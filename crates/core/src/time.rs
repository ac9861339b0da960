//! Wall-clock helpers: every timestamp on the wire is RFC 3339 with millis.

use std::time::SystemTime;

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
