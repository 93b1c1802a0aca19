//! Which address a request comes from. The peer's address, unless the peer is a trusted proxy
//! (`trusted_proxies`, CIDRs): then the address its `X-Forwarded-For` (or, without one, its
//! `Forwarded`) names, read from the right, skipping further trusted proxies. A client that
//! talks to a node directly cannot choose its address by sending these headers.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>, Arc<AtomicBool>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) and single addresses (`192.0.2.7`); `Err` names the bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not a CIDR like 10.0.0.0/8 or an address"))
            })
            .collect::<Result<_, _>>()
            .map(|nets| Self(nets, Arc::default()))
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, or when `peer` is trusted what the forwarding headers
    /// say (`x_forwarded_for`: each `X-Forwarded-For` header's value, in order; `forwarded`:
    /// each `Forwarded` header's value).
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        x_forwarded_for: impl Iterator<Item = &'a str>,
        forwarded: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            let mut x_forwarded_for = x_forwarded_for;
            if self.0.is_empty()
                && is_internal(peer)
                && x_forwarded_for.next().is_some()
                && !self.1.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    peer = %peer,
                    "a proxy forwards requests but trusted_proxies is empty: every client counts \
                     as the proxy's address for the per-address limits and lockouts; list it in \
                     SWITCHBOARD_TRUSTED_PROXIES"
                );
            }
            return peer;
        }
        let mut hops: Vec<Option<IpAddr>> = x_forwarded_for
            .flat_map(|value| value.split(','))
            .map(parse_hop)
            .collect();
        if hops.is_empty() {
            hops = forwarded
                .flat_map(|value| value.split(','))
                .map(|element| {
                    element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim().eq_ignore_ascii_case("for").then_some(value)
                    })
                })
                .map(|value| value.and_then(parse_hop))
                .collect();
        }
        // From the nearest hop back: the first one that is not a trusted proxy. A hop that is
        // not an address (`unknown`, an obfuscated name) ends the search at the last trusted
        // one: what lies beyond it is the client's word.
        let mut last = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(hop) if self.trusts(*hop) => last = *hop,
                Some(hop) => return *hop,
                None => return last,
            }
        }
        last
    }
}

/// The key an address's limits are counted under: an IPv4 address, or the /64 an IPv6 address
/// belongs to (one host or customer holds a whole /64, and must not get a fresh budget per
/// address in it).
pub fn budget_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Loopback or private: where a proxy in front of the nodes usually is.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `"[2001:db8::1]:4711"`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7"]).unwrap();
        let xff = |v: &'static str| std::iter::once(v);
        let none = std::iter::empty;
        // A direct client cannot choose its address.
        let direct = proxies.client_ip(ip("203.0.113.9"), xff("198.51.100.1"), none());
        assert_eq!(direct, ip("203.0.113.9"));
        // Behind a trusted proxy: the nearest untrusted hop, not what the client put first.
        let chained = proxies.client_ip(
            ip("10.0.0.2"),
            xff("6.6.6.6, 198.51.100.1, 10.0.0.9"),
            none(),
        );
        assert_eq!(chained, ip("198.51.100.1"));
        let single = proxies.client_ip(ip("192.0.2.7"), xff("198.51.100.2:5555"), none());
        assert_eq!(single, ip("198.51.100.2"));
        // Forwarded (RFC 7239), with quotes, brackets and ports.
        let forwarded = proxies.client_ip(
            ip("10.1.1.1"),
            std::iter::empty(),
            std::iter::once(r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.3"#),
        );
        assert_eq!(forwarded, ip("2001:db8::1"));
        // No usable header: the proxy itself; an unusable hop stops the search there.
        let garbage = proxies.client_ip(ip("10.0.0.2"), xff("unknown, ::zz"), none());
        assert_eq!(garbage, ip("10.0.0.2"));
        let hidden = proxies.client_ip(ip("10.0.0.2"), xff("6.6.6.6, _hidden, 10.0.0.9"), none());
        assert_eq!(hidden, ip("10.0.0.9"));
        // All hops trusted: the farthest proxy.
        let inner = proxies.client_ip(ip("10.0.0.2"), xff("10.0.0.8, 10.0.0.9"), none());
        assert_eq!(inner, ip("10.0.0.8"));
        // IPv4 mapped into IPv6 is the IPv4 address.
        assert!(proxies.trusts(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn ipv6_addresses_share_their_64s_budget() {
        assert_eq!(budget_key(ip("198.51.100.7")), "198.51.100.7");
        assert_eq!(budget_key(ip("::ffff:198.51.100.7")), "198.51.100.7");
        let a = budget_key(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, budget_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, budget_key(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn bad_entries_are_named() {
        let e = TrustedProxies::parse(&["10.0.0.0/8", "proxy.local"]).unwrap_err();
        assert!(e.contains("proxy.local"), "{e}");
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().0.is_empty());
    }
}
