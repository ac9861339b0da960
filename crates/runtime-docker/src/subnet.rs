//! Session subnets from a pool ClaudeCluster owns.
//!
//! Docker's default address pools give out only about 30 bridge networks,
//! and each session has one. With a [`SubnetPool`] (e.g. `10.213.0.0/16`
//! cut into `/28`s: 4096 subnets of 14 hosts; a session has one container)
//! the runtime passes an explicit IPAM subnet and gateway when it creates a
//! session network instead of letting Docker pick.
//!
//! The subnet is chosen deterministically from the session id (a hash gives
//! the first index); when Docker answers that the subnet overlaps one in
//! use, the next index is tried, at most [`MAX_ATTEMPTS`] times.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Subnets tried per session network before giving up.
pub const MAX_ATTEMPTS: u32 = 64;
/// Smallest subnet prefix a pool may hand out (a /16 per session is plenty).
pub const MIN_SUBNET_PREFIX: u8 = 16;
/// Largest subnet prefix: a /29 still has a gateway and five hosts.
pub const MAX_SUBNET_PREFIX: u8 = 29;

/// A bad pool address or size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session subnet pool: {0}")]
pub struct SubnetPoolError(String);

/// An IPv4 network, `A.B.C.D/N`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// Fails when `prefix` > 32 or `addr` has host bits set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, SubnetPoolError> {
        if prefix > 32 {
            return Err(SubnetPoolError(format!(
                "prefix length /{prefix} is over 32"
            )));
        }
        if u32::from(addr) & !mask(prefix) != 0 {
            return Err(SubnetPoolError(format!(
                "{addr}/{prefix} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(addr) & mask(prefix))
            )));
        }
        Ok(Self { addr, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first host address, used as the bridge's gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(1))
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = SubnetPoolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').ok_or_else(|| {
            SubnetPoolError(format!("{s:?} is not a CIDR (expected e.g. 10.213.0.0/16)"))
        })?;
        if addr.contains(':') {
            return Err(SubnetPoolError(format!(
                "{s:?} is IPv6; session subnet pools are IPv4 only"
            )));
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| SubnetPoolError(format!("{addr:?} is not an IPv4 address")))?;
        let prefix = parse_prefix(prefix)?;
        Self::new(addr, prefix)
    }
}

fn parse_prefix(s: &str) -> Result<u8, SubnetPoolError> {
    // Digits only: u8::from_str would accept a leading '+'.
    if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SubnetPoolError(format!("{s:?} is not a prefix length")));
    }
    s.parse()
        .map_err(|_| SubnetPoolError(format!("{s:?} is not a prefix length")))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// A pool cut into equal subnets, one per session network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPool {
    pool: Ipv4Cidr,
    subnet_prefix: u8,
}

impl SubnetPool {
    /// Validates: `subnet_prefix` in 16..=29 and the pool holds more than
    /// one subnet of that size.
    pub fn new(pool: Ipv4Cidr, subnet_prefix: u8) -> Result<Self, SubnetPoolError> {
        if !(MIN_SUBNET_PREFIX..=MAX_SUBNET_PREFIX).contains(&subnet_prefix) {
            return Err(SubnetPoolError(format!(
                "subnet size /{subnet_prefix} is outside /{MIN_SUBNET_PREFIX}../{MAX_SUBNET_PREFIX}"
            )));
        }
        if pool.prefix >= subnet_prefix {
            return Err(SubnetPoolError(format!(
                "pool {pool} must be bigger than one /{subnet_prefix} subnet"
            )));
        }
        Ok(Self {
            pool,
            subnet_prefix,
        })
    }

    /// Parses `CIDR[/LEN]`: `10.213.0.0/16` (subnets of `default_len`) or
    /// `10.213.0.0/16/28` (subnets of /28).
    pub fn parse(spec: &str, default_len: u8) -> Result<Self, SubnetPoolError> {
        let spec = spec.trim();
        let (cidr, len) = match spec.match_indices('/').nth(1) {
            Some((i, _)) => (&spec[..i], parse_prefix(&spec[i + 1..])?),
            None => (spec, default_len),
        };
        Self::new(cidr.parse()?, len)
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.pool
    }

    pub fn subnet_prefix(&self) -> u8 {
        self.subnet_prefix
    }

    /// How many subnets the pool holds.
    pub fn len(&self) -> u32 {
        // subnet_prefix - pool.prefix is 1..=29, so this fits in u32.
        1u32 << (self.subnet_prefix - self.pool.prefix)
    }

    /// Always false: a pool holds at least two subnets.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The subnet at `index` (modulo [`Self::len`]).
    pub fn subnet(&self, index: u32) -> Ipv4Cidr {
        let size = 1u32 << (32 - u32::from(self.subnet_prefix));
        let base = u32::from(self.pool.addr) + (index % self.len()) * size;
        Ipv4Cidr {
            addr: Ipv4Addr::from(base),
            prefix: self.subnet_prefix,
        }
    }

    /// The first index tried for `key` (a session id): FNV-1a, so it is the
    /// same in every process and Rust version.
    pub fn start_index(&self, key: &str) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.len())) as u32
    }

    /// The subnets to try for `key`, in order: the hashed one, then the
    /// following ones, at most [`MAX_ATTEMPTS`] (or the whole pool if
    /// smaller).
    pub fn candidates(&self, key: &str) -> impl Iterator<Item = Ipv4Cidr> + '_ {
        let start = self.start_index(key);
        (0..self.len().min(MAX_ATTEMPTS)).map(move |i| self.subnet(start.wrapping_add(i)))
    }

    /// Picks the first candidate for `key` that `try_one` accepts:
    /// `Ok(true)` taken, `Ok(false)` in use (try the next), `Err` stops.
    /// Exhaustion gives `Err(None)`; the caller words the error.
    pub async fn allocate<F, Fut, E>(
        &self,
        key: &str,
        mut try_one: F,
    ) -> Result<Ipv4Cidr, Option<E>>
    where
        F: FnMut(Ipv4Cidr) -> Fut,
        Fut: std::future::Future<Output = Result<bool, E>>,
    {
        for subnet in self.candidates(key) {
            match try_one(subnet).await {
                Ok(true) => return Ok(subnet),
                Ok(false) => continue,
                Err(e) => return Err(Some(e)),
            }
        }
        Err(None)
    }

    /// The message when every candidate was in use.
    pub fn exhausted_message(&self) -> String {
        format!(
            "no free /{} subnet in the session subnet pool {} after {} tries ({} subnets in all): \
             widen the pool (--session-subnet-pool) or end idle sessions",
            self.subnet_prefix,
            self.pool,
            self.len().min(MAX_ATTEMPTS),
            self.len()
        )
    }
}

impl fmt::Display for SubnetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pool, self.subnet_prefix)
    }
}

/// Whether an Engine error from creating a network means "that subnet is
/// taken". Docker 20.10 answers 403 "Pool overlaps with other one on this
/// address space" (and 403 "... networks have overlapping IPv4" from the
/// bridge driver); other versions use 400/409/500 with the same words.
pub fn is_overlap(status: u16, message: &str) -> bool {
    matches!(status, 400 | 403 | 409 | 500) && message.to_ascii_lowercase().contains("overlap")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn pool(s: &str) -> SubnetPool {
        SubnetPool::parse(s, 28).unwrap()
    }

    #[test]
    fn parses_and_validates_cidrs() {
        let c: Ipv4Cidr = "10.213.0.0/16".parse().unwrap();
        assert_eq!(c.addr(), Ipv4Addr::new(10, 213, 0, 0));
        assert_eq!(c.prefix(), 16);
        assert_eq!(c.to_string(), "10.213.0.0/16");
        for bad in [
            "10.213.0.0",
            "10.213.0.0/",
            "10.213.0.0/33",
            "10.213.0.0/+8",
            "10.213.0.0/abc",
            "10.213.0/16",
            "10.213.1.0/16",
            "fd00::/64",
            "",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad:?} accepted");
        }
        let host_bits = "10.213.1.0/16".parse::<Ipv4Cidr>().unwrap_err();
        assert!(
            host_bits.to_string().contains("10.213.0.0/16"),
            "{host_bits}"
        );
        assert!("fd00::/64"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .to_string()
            .contains("IPv4 only"));
    }

    #[test]
    fn pool_spec_takes_an_optional_subnet_length() {
        let p = pool("10.213.0.0/16");
        assert_eq!(
            (p.cidr().prefix(), p.subnet_prefix(), p.len()),
            (16, 28, 4096)
        );
        let p = pool(" 10.213.0.0/16/24 ");
        assert_eq!((p.subnet_prefix(), p.len()), (24, 256));
        assert_eq!(p.to_string(), "10.213.0.0/16/24");
        assert!(SubnetPool::parse("10.213.0.0/16/30", 28).is_err());
        assert!(SubnetPool::parse("10.213.0.0/16/15", 28).is_err());
        assert!(SubnetPool::parse("10.213.0.0/16/x", 28).is_err());
        // Not bigger than one subnet.
        assert!(SubnetPool::parse("10.213.0.0/28", 28).is_err());
        assert!(SubnetPool::parse("10.213.0.0/29", 28).is_err());
        assert_eq!(pool("10.213.0.0/27").len(), 2);
    }

    #[test]
    fn subnets_tile_the_pool_and_have_a_gateway() {
        let p = pool("10.213.0.0/16");
        assert_eq!(p.subnet(0).to_string(), "10.213.0.0/28");
        assert_eq!(p.subnet(1).to_string(), "10.213.0.16/28");
        assert_eq!(p.subnet(4095).to_string(), "10.213.255.240/28");
        assert_eq!(p.subnet(4096), p.subnet(0));
        assert_eq!(p.subnet(1).first_host(), Ipv4Addr::new(10, 213, 0, 17));
        let all: HashSet<_> = (0..p.len()).map(|i| p.subnet(i)).collect();
        assert_eq!(all.len(), 4096);
        assert!(all.iter().all(|s| p.cidr().contains(s.addr())));
        assert!(!p.cidr().contains(Ipv4Addr::new(10, 214, 0, 0)));
    }

    #[test]
    fn allocation_is_deterministic_and_spread() {
        let p = pool("10.213.0.0/16");
        let key = "01JABCDEFGHJKMNPQRSTVWXYZ0";
        assert_eq!(p.start_index(key), p.start_index(key));
        assert_eq!(
            p.candidates(key).next(),
            pool("10.213.0.0/16").candidates(key).next()
        );
        let starts: HashSet<_> = (0..100)
            .map(|i| p.start_index(&format!("session-{i}")))
            .collect();
        assert!(starts.len() > 90, "poor spread: {}", starts.len());
    }

    #[tokio::test]
    async fn allocation_takes_the_next_subnet_on_conflict() {
        let p = pool("10.213.0.0/16");
        let key = "session-a";
        let first = p.subnet(p.start_index(key));
        let taken = [first, p.subnet(p.start_index(key) + 1)];
        let mut tried = Vec::new();
        let got = p
            .allocate(key, |s| {
                tried.push(s);
                async move { Ok::<_, ()>(!taken.contains(&s)) }
            })
            .await
            .unwrap();
        assert_eq!(got, p.subnet(p.start_index(key) + 2));
        assert_eq!(tried, vec![taken[0], taken[1], got]);
        // Wraps around the end of the pool.
        let small = pool("10.213.0.0/26"); // four /28s
        let last = small.subnet(3);
        let start = small.start_index(key);
        let order: Vec<_> = (0..4).map(|i| small.subnet(start + i)).collect();
        assert!(order.contains(&last) && order.contains(&small.subnet(0)));
        let target = order[3];
        let got = small
            .allocate(key, |s| async move { Ok::<_, ()>(s == target) })
            .await
            .unwrap();
        assert_eq!(got, target);
    }

    #[tokio::test]
    async fn allocation_stops_on_errors_and_exhaustion() {
        let small = pool("10.213.0.0/26");
        let mut calls = 0;
        let r = small
            .allocate("k", |_| {
                calls += 1;
                async { Ok::<_, ()>(false) }
            })
            .await;
        assert_eq!(r, Err(None));
        assert_eq!(calls, 4, "a small pool is searched once, whole");
        assert!(small.exhausted_message().contains("10.213.0.0/26"));

        let big = pool("10.0.0.0/8");
        let mut calls = 0;
        let r = big
            .allocate("k", |_| {
                calls += 1;
                async { Ok::<_, ()>(false) }
            })
            .await;
        assert_eq!(r, Err(None));
        assert_eq!(calls, MAX_ATTEMPTS, "bounded");

        let mut calls = 0;
        let r = big
            .allocate("k", |_| {
                calls += 1;
                async { Err::<bool, _>("docker down") }
            })
            .await;
        assert_eq!(r, Err(Some("docker down")));
        assert_eq!(calls, 1);
    }

    #[test]
    fn recognises_docker_overlap_answers() {
        assert!(is_overlap(
            403,
            "Pool overlaps with other one on this address space"
        ));
        assert!(is_overlap(
            400,
            "invalid pool request: Pool overlaps with other one on this address space"
        ));
        assert!(is_overlap(
            403,
            "cannot create network x (ccbabc): conflicts with network y (br-1): networks have overlapping IPv4"
        ));
        assert!(!is_overlap(409, "network with name cc-x already exists"));
        assert!(!is_overlap(404, "overlap"));
    }
}
