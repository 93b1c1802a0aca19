//! `SWITCHBOARD_REDIS_URL` parsing. Standalone: `redis://[user:pass@]host:port[/db]` or
//! `rediss://...`. Redis Cluster: a seed list `redis-cluster://[user:pass@]h1:p1,h2:p2,...`
//! (fred's own `redis-cluster://h1:p1?node=h2:p2` form works too; `rediss-cluster://` for TLS).

use fred::types::config::Config;

/// A parsed Redis location.
#[derive(Debug)]
pub struct Target {
    pub config: Config,
    /// Redis Cluster (sharded pub/sub) rather than one server (classic pub/sub).
    pub clustered: bool,
    /// The URL without credentials, for logs and errors.
    pub redacted: String,
}

#[derive(Debug, thiserror::Error)]
#[error("SWITCHBOARD_REDIS_URL ({redacted}): {reason}")]
pub struct UrlError {
    redacted: String,
    reason: String,
}

impl UrlError {
    /// What is wrong, with the URL shown without credentials.
    pub fn explain(&self) -> String {
        format!("{}: {}", self.redacted, self.reason)
    }
}

pub fn parse(url: &str) -> Result<Target, UrlError> {
    let redacted = redact(url);
    let fail = |reason: String| UrlError {
        redacted: redacted.clone(),
        reason,
    };
    let (scheme, _) = url
        .split_once("://")
        .ok_or_else(|| fail("expected scheme://host:port".into()))?;
    let clustered = scheme.ends_with("-cluster");
    if !matches!(
        scheme,
        "redis" | "rediss" | "redis-cluster" | "rediss-cluster"
    ) {
        return Err(fail(format!(
            "unsupported scheme {scheme}: use redis, rediss, redis-cluster or rediss-cluster"
        )));
    }
    let normalized = if clustered {
        seeds_to_nodes(url)
    } else {
        url.to_owned()
    };
    let config = Config::from_url(&normalized).map_err(|e| fail(e.details().to_owned()))?;
    Ok(Target {
        config,
        clustered,
        redacted,
    })
}

/// Rewrites `scheme://auth@h1:p1,h2:p2/rest` as `scheme://auth@h1:p1/rest?node=h2:p2`.
fn seeds_to_nodes(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), authority),
    };
    let mut seeds = hosts.split(',').filter(|h| !h.is_empty());
    let first = seeds.next().unwrap_or_default();
    let extra: Vec<String> = seeds.map(|h| format!("node={h}")).collect();
    let mut out = format!("{scheme}://{auth}{first}{tail}");
    if !extra.is_empty() {
        out.push(if tail.contains('?') { '&' } else { '?' });
        out.push_str(&extra.join("&"));
    }
    out
}

/// The URL with any `user:password@` and query removed. The credentials end at the last `@`,
/// so a password holding `/`, `?`, `#` or `@` is never shown in part.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable>".into();
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let rest = rest.split_once(['?', '#']).map_or(rest, |(kept, _)| kept);
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::config::ServerConfig;

    #[test]
    fn standalone_and_cluster_urls() {
        let t = parse("redis://127.0.0.1:6390/2").unwrap();
        assert!(!t.clustered);
        assert_eq!(t.config.database, Some(2));
        let t =
            parse("redis-cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002").unwrap();
        assert!(t.clustered);
        let ServerConfig::Clustered { hosts, .. } = &t.config.server else {
            panic!("not clustered: {:?}", t.config.server);
        };
        let mut ports: Vec<u16> = hosts.iter().map(|s| s.port).collect();
        ports.sort();
        assert_eq!(ports, [7000, 7001, 7002]);
        assert_eq!(t.config.password.as_deref(), Some("p@ss"));
        assert_eq!(
            t.redacted,
            "redis-cluster://10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002"
        );
        let t = parse("redis-cluster://h1:7000?node=h2:7001").unwrap();
        assert!(t.clustered);
    }

    #[test]
    fn redaction_hides_passwords_with_any_characters() {
        for (url, shown) in [
            ("redis://u:p/ss?x#y@h:1/2", "redis://h:1/2"),
            ("rediss://:s3cr@t@h:6379", "rediss://h:6379"),
            (
                "redis-cluster://u:pw@a:1,b:2?node=c:3",
                "redis-cluster://a:1,b:2",
            ),
            ("redis://h:1", "redis://h:1"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn errors_never_show_the_password() {
        for bad in ["http://u:secret@h:1", "redis://u:secret@:x", "nonsense"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
