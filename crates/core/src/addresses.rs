//! Which addresses a session may be led to: public ones only.
//!
//! An address is not public when it lies in one of the IANA special-purpose
//! ranges (the IPv4 and IPv6 special-purpose address registries: loopback,
//! private, shared, link-local, documentation, benchmarking, multicast,
//! reserved, ...), when it is an IPv6 form carrying a non-public IPv4
//! (`::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`),
//! or when it is one of this host's own addresses — a service bound on the
//! host's public interface is no more for a session than one on loopback.
//! IPv6 outside global unicast (`2000::/3`) is refused as a whole.
//!
//! The host's addresses are read from the kernel (`/proc/net/fib_trie`: the
//! `LOCAL` routes, which also cover a whole local prefix such as
//! `127.0.0.0/8`; `/proc/net/if_inet6`), no subprocess, and read again
//! once [`HOST_ADDRESSES_TTL`] has passed. Where those files do not exist
//! (not Linux) only the ranges apply.
//!
//! [`resolve_checked`] resolves a name once and checks every address; the
//! caller connects to exactly the addresses it returns, so a name cannot
//! resolve to a public address for the check and another for the
//! connection (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the host's addresses are used before they are read again.
/// Interfaces come and go (each session network brings a bridge); reading
/// the two procfs files costs about 0.1 ms (measured on a host with four
/// interfaces), which this spares all but one connection in a while.
pub const HOST_ADDRESSES_TTL: Duration = Duration::from_secs(5);

const FIB_TRIE: &str = "/proc/net/fib_trie";
const IF_INET6: &str = "/proc/net/if_inet6";

/// The IPv4 special-purpose ranges (RFC 6890 and the IANA registry).
const V4_SPECIAL: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "a reserved (\"this network\")"),
    ([10, 0, 0, 0], 8, "a private"),
    ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT)"),
    ([127, 0, 0, 0], 8, "a loopback"),
    ([169, 254, 0, 0], 16, "a link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "a private"),
    ([192, 0, 0, 0], 24, "an IETF protocol assignment"),
    ([192, 0, 2, 0], 24, "a documentation"),
    ([192, 88, 99, 0], 24, "a 6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "a private"),
    ([198, 18, 0, 0], 15, "a benchmarking"),
    ([198, 51, 100, 0], 24, "a documentation"),
    ([203, 0, 113, 0], 24, "a documentation"),
    ([224, 0, 0, 0], 4, "a multicast"),
    ([255, 255, 255, 255], 32, "a broadcast"),
    ([240, 0, 0, 0], 4, "a reserved"),
];

/// The IPv6 special-purpose ranges inside global unicast (`2000::/3`) and
/// the ones outside it worth naming; the rest outside `2000::/3` is
/// refused as "reserved". 2001::/23 is refused whole, though the registry
/// marks a few of its blocks globally reachable: nothing a repository or a
/// package registry needs lives there.
const V6_SPECIAL: &[(u128, u8, &str)] = &[
    (0, 128, "an unspecified"),
    (1, 128, "a loopback"),
    (0x0064_ff9b_0001 << 80, 48, "a local-use NAT64"),
    (0x0100 << 112, 64, "a discard-only"),
    (0x2001_0db8 << 96, 32, "a documentation"),
    (
        0x2001 << 112,
        23,
        "an IETF protocol assignment (Teredo and others)",
    ),
    (0x3fff << 112, 20, "a documentation"),
    (0x5f00 << 112, 16, "an SRv6 segment identifier"),
    (0xfc00 << 112, 7, "a private (unique local)"),
    (0xfe80 << 112, 10, "a link-local"),
    (0xff00 << 112, 8, "a multicast"),
];

/// Why a host may not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    #[error("{host} cannot be resolved: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error("{host} resolves to {why} address {addr}")]
    NotPublic {
        host: String,
        addr: IpAddr,
        why: &'static str,
    },
}

/// Why `addr` is not public, or `None` when it is. Includes this host's
/// own addresses (see the module docs).
pub fn non_public(addr: IpAddr) -> Option<&'static str> {
    non_public_with(addr, &host_addresses())
}

/// [`non_public`] against a given set of host addresses.
pub fn non_public_with(addr: IpAddr, host: &HostAddresses) -> Option<&'static str> {
    if let Some(why) = special_purpose(addr) {
        return Some(why);
    }
    if host.contains(addr) || embedded_v4(addr).is_some_and(|v4| host.contains(IpAddr::V4(v4))) {
        return Some("this host's own");
    }
    None
}

/// The special-purpose range `addr` lies in, or `None` for a globally
/// reachable address; IPv4 carried in IPv6 is judged as that IPv4.
pub fn special_purpose(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            V4_SPECIAL
                .iter()
                .find(|(net, len, _)| {
                    within(bits.into(), u32::from_be_bytes(*net).into(), *len, 32)
                })
                .map(|(_, _, why)| *why)
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            if let Some((_, _, why)) = V6_SPECIAL
                .iter()
                .find(|(net, len, _)| within(bits, *net, *len, 128))
            {
                return Some(why);
            }
            if let Some(v4) = embedded_v4(addr) {
                return special_purpose(IpAddr::V4(v4));
            }
            // Global unicast is 2000::/3; everything else is reserved,
            // IPv4-compatible (`::a.b.c.d`) and IPv4-translated
            // (`::ffff:0:a.b.c.d`) forms included.
            (bits >> 125 != 1).then_some("a reserved")
        }
    }
}

/// The IPv4 address an IPv6 address carries and a host would reach it
/// by: IPv4-mapped (`::ffff:0:0/96`), well-known NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002::/16`, the IPv4 in bits 16 to 48).
pub fn embedded_v4(addr: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(a) = addr else {
        return None;
    };
    let bits = u128::from(a);
    if within(bits, 0xffff << 32, 96, 128) || within(bits, 0x0064_ff9b << 96, 96, 128) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if within(bits, 0x2002 << 112, 16, 128) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Whether the top `len` of `width` bits of `addr` and `net` agree.
fn within(addr: u128, net: u128, len: u8, width: u8) -> bool {
    let shift = u32::from(width - len);
    len == 0 || (addr >> shift) == (net >> shift)
}

/// Resolves `host:port` once and checks every address it resolves to
/// (none may be non-public unless `allow_non_public`); the addresses to
/// connect to, exactly these.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_non_public: bool,
) -> Result<Vec<SocketAddr>, AddressRefusal> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| AddressRefusal::Unresolvable {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AddressRefusal::Unresolvable {
            host: host.to_owned(),
            reason: "no address".into(),
        });
    }
    if !allow_non_public {
        let host_addrs = host_addresses();
        if let Some((addr, why)) = addrs
            .iter()
            .find_map(|a| non_public_with(a.ip(), &host_addrs).map(|w| (a.ip(), w)))
        {
            return Err(AddressRefusal::NotPublic {
                host: host.to_owned(),
                addr,
                why,
            });
        }
    }
    Ok(addrs)
}

/// This host's own addresses: IPv4 prefixes routed locally and IPv6
/// interface addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddresses {
    v4: Vec<(Ipv4Addr, u8)>,
    v6: Vec<Ipv6Addr>,
}

impl HostAddresses {
    /// From the text of `/proc/net/fib_trie` and `/proc/net/if_inet6`.
    pub fn parse(fib_trie: &str, if_inet6: &str) -> Self {
        let mut v4 = Vec::new();
        // A leaf `|-- a.b.c.d` is followed by its routes, one a line:
        // `/32 host LOCAL`, `/8 host LOCAL` (a whole local prefix), ...
        let mut leaf: Option<Ipv4Addr> = None;
        for line in fib_trie.lines() {
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("|-- ") {
                leaf = addr.trim().parse().ok();
            } else if let (Some(addr), Some(route)) = (leaf, line.strip_prefix('/')) {
                let mut words = route.split_whitespace();
                let len = words.next().and_then(|l| l.parse::<u8>().ok());
                if let Some(len) = len.filter(|l| *l <= 32) {
                    if words.any(|w| w == "LOCAL") && !v4.contains(&(addr, len)) {
                        v4.push((addr, len));
                    }
                }
            } else if !line.starts_with('/') {
                leaf = None;
            }
        }
        let v6 = if_inet6
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|hex| {
                u128::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 32)
            })
            .map(Ipv6Addr::from)
            .collect();
        Self { v4, v6 }
    }

    /// Reads the kernel's view now; empty where the files do not exist.
    pub fn read() -> Self {
        let fib = std::fs::read_to_string(FIB_TRIE).unwrap_or_default();
        let inet6 = std::fs::read_to_string(IF_INET6).unwrap_or_default();
        Self::parse(&fib, &inet6)
    }

    /// Whether `addr` is one of them.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self
                .v4
                .iter()
                .any(|(net, len)| within(u32::from(a).into(), u32::from(*net).into(), *len, 32)),
            IpAddr::V6(a) => self.v6.contains(&a),
        }
    }

    /// The individual addresses (a local prefix counts by its first
    /// address), for tests and diagnostics.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.v4
            .iter()
            .map(|(a, _)| IpAddr::V4(*a))
            .chain(self.v6.iter().map(|a| IpAddr::V6(*a)))
            .collect()
    }
}

/// The host's addresses, read at most every [`HOST_ADDRESSES_TTL`].
pub fn host_addresses() -> Arc<HostAddresses> {
    static CACHE: Mutex<Option<(Instant, Arc<HostAddresses>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    match &*cache {
        Some((at, addrs)) if at.elapsed() < HOST_ADDRESSES_TTL => addrs.clone(),
        _ => {
            let addrs = Arc::new(HostAddresses::read());
            *cache = Some((Instant::now(), addrs.clone()));
            addrs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(a: &str) -> Option<&'static str> {
        special_purpose(a.parse().unwrap())
    }

    #[test]
    fn every_ipv4_special_range_is_refused_at_both_ends() {
        for (first, last) in [
            ("0.0.0.0", "0.255.255.255"),
            ("10.0.0.0", "10.255.255.255"),
            ("100.64.0.0", "100.127.255.255"),
            ("127.0.0.0", "127.255.255.255"),
            ("169.254.0.0", "169.254.255.255"),
            ("172.16.0.0", "172.31.255.255"),
            ("192.0.0.0", "192.0.0.255"),
            ("192.0.2.0", "192.0.2.255"),
            ("192.88.99.0", "192.88.99.255"),
            ("192.168.0.0", "192.168.255.255"),
            ("198.18.0.0", "198.19.255.255"),
            ("198.51.100.0", "198.51.100.255"),
            ("203.0.113.0", "203.0.113.255"),
            ("224.0.0.0", "239.255.255.255"),
            ("240.0.0.0", "255.255.255.254"),
            ("255.255.255.255", "255.255.255.255"),
        ] {
            assert!(why(first).is_some(), "{first}");
            assert!(why(last).is_some(), "{last}");
        }
        assert_eq!(why("255.255.255.255"), Some("a broadcast"));
        assert_eq!(
            why("169.254.169.254"),
            Some("a link-local (cloud metadata)")
        );
        // Just outside.
        for public in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "192.0.3.0",
            "192.88.98.255",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "203.0.112.255",
            "223.255.255.255",
            "140.82.112.3",
        ] {
            assert_eq!(why(public), None, "{public}");
        }
    }

    #[test]
    fn every_ipv6_special_range_is_refused() {
        for (a, expected) in [
            ("::", "an unspecified"),
            ("::1", "a loopback"),
            ("64:ff9b:1::1", "a local-use NAT64"),
            ("100::1", "a discard-only"),
            ("2001::1", "an IETF protocol assignment (Teredo and others)"),
            (
                "2001:1ff:ffff::1",
                "an IETF protocol assignment (Teredo and others)",
            ),
            ("2001:db8::1", "a documentation"),
            ("3fff::1", "a documentation"),
            ("5f00::1", "an SRv6 segment identifier"),
            ("fc00::1", "a private (unique local)"),
            ("fdff::1", "a private (unique local)"),
            ("fe80::1", "a link-local"),
            ("febf::1", "a link-local"),
            ("ff02::1", "a multicast"),
            // Outside global unicast.
            ("::2", "a reserved"),
            ("::7f00:1", "a reserved"),
            ("::ffff:0:7f00:1", "a reserved"),
            ("fec0::1", "a reserved"),
            ("4000::1", "a reserved"),
        ] {
            assert_eq!(why(a), Some(expected), "{a}");
        }
        for public in ["2606:4700::1111", "2001:200::1", "2a00:1450::1", "3ffe::1"] {
            assert_eq!(why(public), None, "{public}");
        }
    }

    #[test]
    fn ipv4_carried_in_ipv6_is_judged_as_that_ipv4() {
        for (a, expected) in [
            ("::ffff:127.0.0.1", Some("a loopback")),
            ("::ffff:10.0.0.1", Some("a private")),
            (
                "::ffff:169.254.169.254",
                Some("a link-local (cloud metadata)"),
            ),
            ("::ffff:140.82.112.3", None),
            ("64:ff9b::127.0.0.1", Some("a loopback")),
            ("64:ff9b::192.168.0.1", Some("a private")),
            ("64:ff9b::140.82.112.3", None),
            // 6to4: 2002:AABB:CCDD:: carries AA.BB.CC.DD.
            ("2002:7f00:1::", Some("a loopback")),
            ("2002:a9fe:a9fe::1", Some("a link-local (cloud metadata)")),
            ("2002:c000:0201::", Some("a documentation")),
            ("2002:8c52:7003::1", None),
        ] {
            assert_eq!(why(a), expected, "{a}");
        }
        assert_eq!(
            embedded_v4("2002:8c52:7003::1".parse().unwrap()),
            Some(Ipv4Addr::new(140, 82, 112, 3))
        );
        assert_eq!(embedded_v4("2606:4700::1111".parse().unwrap()), None);
        assert_eq!(embedded_v4("1.2.3.4".parse().unwrap()), None);
    }

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 140.82.0.0/16 2 0 2
           |-- 140.82.0.0
              /16 link UNICAST
           |-- 140.82.7.9
              /32 host LOCAL
        |-- 140.82.255.255
           /32 link BROADCAST
Local:
     |-- 140.82.7.9
        /32 host LOCAL
";
    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
2a001450400100000000000000000042 02 40 00 80     eth0
fe8000000000000000fc00fffe000001 02 40 20 80     eth0
";

    #[test]
    fn the_hosts_addresses_are_read_from_the_kernels_tables() {
        let host = HostAddresses::parse(FIB_TRIE, IF_INET6);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(host.contains(ip("140.82.7.9")));
        assert!(host.contains(ip("127.0.0.1")));
        assert!(host.contains(ip("127.3.4.5")), "a local /8 counts whole");
        assert!(host.contains(ip("2a00:1450:4001::42")));
        // Routes that are not LOCAL, and the broadcast address, are not ours.
        assert!(!host.contains(ip("140.82.7.10")));
        assert!(!host.contains(ip("140.82.255.255")));
        assert!(!host.contains(ip("0.0.0.0")));
        assert!(!host.contains(ip("2a00:1450:4001::43")));
        assert_eq!(host.addresses().len(), 2 + 1 + 3, "{host:?}");
        assert_eq!(HostAddresses::parse("", ""), HostAddresses::default());
        assert_eq!(
            HostAddresses::parse("garbage\n/32 host LOCAL", "zz"),
            HostAddresses::default()
        );
    }

    #[test]
    fn the_hosts_own_public_addresses_are_not_public_for_sessions() {
        let host = HostAddresses::parse(FIB_TRIE, IF_INET6);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for own in [
            "140.82.7.9",
            "::ffff:140.82.7.9",
            "64:ff9b::140.82.7.9",
            "2002:8c52:709::",
            "2a00:1450:4001::42",
        ] {
            assert_eq!(
                non_public_with(ip(own), &host),
                Some("this host's own"),
                "{own}"
            );
        }
        assert_eq!(non_public_with(ip("140.82.7.10"), &host), None);
        assert_eq!(
            non_public_with(ip("140.82.7.10"), &HostAddresses::default()),
            None
        );
        assert_eq!(non_public_with(ip("127.0.0.1"), &host), Some("a loopback"));
    }

    #[test]
    fn this_machines_addresses_are_all_refused() {
        // Whatever the machine running the tests has, loopback included.
        for addr in HostAddresses::read().addresses() {
            assert!(non_public(addr).is_some(), "{addr}");
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_once_and_every_address_checked() {
        let err = resolve_checked("localhost", 80, false).await.unwrap_err();
        assert!(
            matches!(
                err,
                AddressRefusal::NotPublic {
                    why: "a loopback",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("localhost resolves to a loopback address"),
            "{err}"
        );
        let ok = resolve_checked("localhost", 80, true).await.unwrap();
        assert!(
            ok.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{ok:?}"
        );
        let literal = resolve_checked("[::ffff:127.0.0.1]", 80, false).await;
        assert!(literal.is_err(), "{literal:?}");
    }
}
