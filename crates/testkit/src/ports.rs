//! Ports a test keeps across a restart, or needs closed.
//!
//! Binding port 0 and dropping the listener hands out a port from the
//! kernel's ephemeral range — the range every other `bind(:0)` and every
//! outgoing connection on the machine draws from, so by the time the test
//! binds it again (an orchestrator restarted on its gateway port) or relies
//! on nothing listening there, another test may own it. [`fixed_port`]
//! draws from below that range instead, where only explicitly chosen ports
//! live.

use std::net::TcpListener;

/// Where Linux's ephemeral range starts unless the machine says otherwise
/// (`/proc/sys/net/ipv4/ip_local_port_range`).
const DEFAULT_EPHEMERAL_LOW: u16 = 32768;
/// The lowest port handed out: above the well-known and common service ports.
const LOWEST: u16 = 20000;
/// Attempts before giving up on finding a free port.
const TRIES: usize = 200;

/// A port outside the ephemeral range that was free on `0.0.0.0` just
/// now, chosen at random: stays free unless someone binds it by number.
pub fn fixed_port() -> u16 {
    let low = ephemeral_low();
    let span = low.saturating_sub(LOWEST).max(1);
    for _ in 0..TRIES {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).expect("OS random number generator");
        let port = LOWEST + u16::from_le_bytes(b) % span;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOWEST}..{low} after {TRIES} tries");
}

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_port_is_free_and_outside_the_ephemeral_range() {
        let port = fixed_port();
        assert!((LOWEST..ephemeral_low()).contains(&port), "{port}");
        // Free: this bind succeeds, and then nothing listens there.
        let l = TcpListener::bind(("0.0.0.0", port)).expect("free");
        drop(l);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
