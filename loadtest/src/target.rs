//! Target URLs: parsing, the loopback-only rule, and endpoint URLs.
//!
//! The tool only ever talks to this machine. A target is `ws://HOST:PORT` (or `http://`) whose
//! host is `localhost`, an address in 127.0.0.0/8, or `::1`; anything else is refused when the
//! command line is parsed, and every resolved address is checked again before connecting.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};
use tokio_tungstenite::tungstenite::http::Uri;

/// A loopback WebSocket server base, e.g. `ws://127.0.0.1:13001`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// Parse and check a target URL; see the module docs for what is accepted.
    pub fn parse(text: &str) -> Result<Self> {
        let uri: Uri = text.parse().with_context(|| format!("bad URL {text:?}"))?;
        match uri.scheme_str() {
            Some("ws" | "http") => {}
            _ => bail!("{text}: only ws:// or http:// URLs are supported"),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            bail!("{text}: give the server base only (no path or query)");
        }
        let host = uri.host().context("URL has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if !is_loopback_host(&host) {
            bail!("{text}: refusing a non-loopback target (only 127.0.0.0/8, ::1, localhost)");
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self { host, port })
    }

    /// `ws://host:port` + `path_and_query` (which starts with `/`).
    pub fn ws_url(&self, path_and_query: &str) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("ws://[{}]:{}{path_and_query}", self.host, self.port),
            _ => format!("ws://{}:{}{path_and_query}", self.host, self.port),
        }
    }

    /// Resolve to a socket address, refusing any that is not loopback.
    pub async fn resolve(&self) -> Result<SocketAddr> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        let mut first = None;
        for addr in addrs {
            if !addr.ip().is_loopback() {
                bail!("{} resolved to non-loopback {addr}", self.host);
            }
            first.get_or_insert(addr);
        }
        first.with_context(|| format!("{} resolved to nothing", self.host))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.ws_url(""))
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::parse(s).map_err(|e| format!("{e:#}"))
    }
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuse a listen address that is not loopback.
pub fn check_listen(addr: SocketAddr) -> Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("refusing to listen on non-loopback {addr}");
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        for ok in [
            "ws://127.0.0.1:13001",
            "http://127.9.8.7:1/",
            "ws://localhost:5",
            "ws://[::1]:7",
        ] {
            assert!(Target::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Target::parse("ws://[::1]:7").unwrap().ws_url("/ws"),
            "ws://[::1]:7/ws"
        );
        assert_eq!(
            Target::parse("ws://LOCALHOST:9").unwrap().to_string(),
            "ws://localhost:9"
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "ws://10.0.0.1:80",
            "ws://192.168.1.2:80",
            "ws://8.8.8.8:80",
            "ws://example.com:80",
            "ws://localhost.evil.com:80",
            "ws://[::2]:80",
            "ws://[::ffff:127.0.0.1]:80",
            "ws://0.0.0.0:80",
            "wss://127.0.0.1:443",
            "ws://127.0.0.1:1/ws/room",
            "127.0.0.1:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_must_be_loopback() {
        assert!(check_listen("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(check_listen("0.0.0.0:0".parse().unwrap()).is_err());
    }
}
