//! Which address a request comes from. The peer's address, unless the peer is a trusted proxy
//! (`trusted_proxies`, CIDRs): then the address its `X-Forwarded-For` (or, without one, its
//! `Forwarded`) names, read from the right, skipping further trusted proxies. A client that
//! talks to a node directly cannot choose its address by sending these headers.

use std::net::IpAddr;

use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

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
            .map(Self)
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
            return peer;
        }
        let mut hops: Vec<IpAddr> = x_forwarded_for
            .flat_map(|value| value.split(','))
            .filter_map(parse_hop)
            .collect();
        if hops.is_empty() {
            hops = forwarded
                .flat_map(|value| value.split(','))
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim().eq_ignore_ascii_case("for").then_some(value)
                    })
                })
                .filter_map(parse_hop)
                .collect();
        }
        // From the nearest hop back: the first one that is not a trusted proxy.
        hops.iter()
            .rev()
            .copied()
            .find(|hop| !self.trusts(*hop))
            .or_else(|| hops.first().copied())
            .unwrap_or(peer)
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
        // No usable header: the proxy itself.
        let garbage = proxies.client_ip(ip("10.0.0.2"), xff("unknown, ::zz"), none());
        assert_eq!(garbage, ip("10.0.0.2"));
        // IPv4 mapped into IPv6 is the IPv4 address.
        assert!(proxies.trusts(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn bad_entries_are_named() {
        let e = TrustedProxies::parse(&["10.0.0.0/8", "proxy.local"]).unwrap_err();
        assert!(e.contains("proxy.local"), "{e}");
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().0.is_empty());
    }
}
