//! Credentials: verifying a token from any source, with the keys the node loads on demand, and
//! keeping the node's revocations current.
//!
//! [`Credentials::verify`] asks [`Tokens`] first, which answers from memory. A token signed
//! with an API key the node does not hold yet loads that key from the store (once; an unknown
//! or revoked key id is remembered for a minute); a token whose `kid` the external issuer's
//! JWKS lacks fetches the JWKS again, at most once per [`Credentials::jwks_cooldown`]. Nothing
//! else waits: tokens of the node's own secret and of keys already held never touch the store.
//!
//! Revocations reach a node two ways: from the bus, at once ([`crate::hub::Hub::revoke`]), and
//! from the store, which [`watch_revocations`] reads every few seconds from where it left off
//! (what a node missed while its bus was down, what `switchboard apikey revoke` and
//! `switchboard user disable` wrote).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::seal::Sealer;
use crate::auth::{
    AuthError, Identity, IssuerRules, KeyRef, Revocation, Revoked, Tokens, jwks, unix_now,
};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics as m;
use crate::store::{Store, StoreError};

/// How long an unknown or revoked API key id is remembered before the store is asked again.
const MISS_TTL: Duration = Duration::from_secs(60);
/// Unknown key ids remembered at most (a flood of made-up ids cannot grow memory).
const MAX_MISSES: usize = 10_000;
/// How often the store is read for revocations.
pub const REVOCATION_POLL: Duration = Duration::from_secs(2);
/// Revocations read from the store per query.
const REVOCATION_PAGE: i64 = 1000;
/// How long a JWKS fetch may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a token waits for the API-key lookup ahead of it.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// Where the external issuer's JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

impl JwksSource {
    /// The source of a `jwks.url` setting: `http(s)://…`, `file:///PATH` or a path.
    pub fn parse(setting: &str) -> Option<Self> {
        if setting.is_empty() {
            None
        } else if setting.starts_with("http://") || setting.starts_with("https://") {
            Some(Self::Url(setting.to_owned()))
        } else {
            let path = setting.strip_prefix("file://").unwrap_or(setting);
            Some(Self::File(PathBuf::from(path)))
        }
    }

    /// For logs: the URL without credentials, query or fragment, or the path.
    fn label(&self) -> String {
        match self {
            Self::Url(url) => {
                let url = url.split(['?', '#']).next().unwrap_or_default();
                match url.split_once("://") {
                    Some((scheme, rest)) => {
                        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                        format!("{scheme}://{host}/{path}")
                    }
                    None => url.to_owned(),
                }
            }
            Self::File(path) => path.display().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksLoadError {
    #[error("cannot read the JWKS at {0}: {1}")]
    Read(String, String),
    #[error("the JWKS at {0}: {1}")]
    Invalid(String, jwks::JwksError),
}

/// Verifies tokens, loading keys as needed.
pub struct Credentials {
    tokens: Arc<Tokens>,
    store: Store,
    sealer: Sealer,
    jwks: Option<JwksSource>,
    jwks_cooldown: Duration,
    /// For a JWKS URL.
    http: Option<reqwest::Client>,
    /// When the last JWKS fetch ended. A fetch in progress holds the lock: a token that
    /// names an unknown key meanwhile is refused at once rather than queued behind it.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    misses: Mutex<HashMap<String, Instant>>,
    /// One API-key lookup in the store at a time: made-up key ids cannot take the pool.
    lookups: tokio::sync::Semaphore,
}

impl Credentials {
    pub fn new(
        tokens: Arc<Tokens>,
        store: Store,
        sealer: Sealer,
        jwks: Option<JwksSource>,
        jwks_refresh: Duration,
    ) -> Self {
        let http = matches!(jwks, Some(JwksSource::Url(_))).then(|| {
            // The process's TLS provider: ring, as for Redis and Postgres. Installing it a
            // second time fails harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(JWKS_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("the HTTP client builds")
        });
        Self {
            tokens,
            store,
            sealer,
            jwks,
            jwks_cooldown: (jwks_refresh / 30).max(Duration::from_secs(1)),
            http,
            last_fetch: tokio::sync::Mutex::new(None),
            misses: Mutex::default(),
            lookups: tokio::sync::Semaphore::new(1),
        }
    }

    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The external issuer's JWKS source, if one is configured.
    pub fn jwks_source(&self) -> Option<&JwksSource> {
        self.jwks.as_ref()
    }

    /// Verifies `token`, loading the API key or the JWKS it needs.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match self.tokens.verify(token) {
            Err(AuthError::UnknownKey(KeyRef::ApiKey(id))) => {
                self.load_api_key(id.as_str()).await?;
                self.tokens.verify(token)
            }
            Err(AuthError::UnknownKey(KeyRef::Issuer(kid))) if self.jwks.is_some() => {
                self.refetch_for(&kid).await;
                self.tokens.verify(token)
            }
            other => other,
        }
    }

    /// Loads API key `id` from the store into the verifier, unless it is unknown or revoked
    /// (then it is remembered as missing for a while).
    async fn load_api_key(&self, id: &str) -> Result<(), AuthError> {
        {
            let misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
            if misses.get(id).is_some_and(|at| at.elapsed() < MISS_TTL) {
                return Err(AuthError::Invalid("unknown or revoked API key"));
            }
        }
        let permit = tokio::time::timeout(LOOKUP_WAIT, self.lookups.acquire()).await;
        let Ok(Ok(_permit)) = permit else {
            return Err(AuthError::Unavailable);
        };
        if let Some(id) = crate::auth::ApiKeyId::parse(id)
            && self.tokens.has_api_key(&id)
        {
            // Loaded by the lookup this one waited for.
            return Ok(());
        }
        let key = match self.store.api_key(id).await {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(error = %e, "API key lookup failed");
                return Err(AuthError::Unavailable);
            }
        };
        let secret = key
            .filter(|k| k.revoked_at.is_none())
            .map(|k| self.sealer.open(&k.secret_sealed, &k.id));
        match secret {
            Some(Ok(secret)) => {
                let id = crate::auth::ApiKeyId::parse(id).expect("the verifier parsed this id");
                self.tokens.add_api_key(id, &secret);
                Ok(())
            }
            Some(Err(e)) => {
                tracing::error!(key = id, error = %e, "an API key does not open");
                self.remember_miss(id);
                Err(AuthError::Invalid("unknown or revoked API key"))
            }
            None => {
                self.remember_miss(id);
                Err(AuthError::Invalid("unknown or revoked API key"))
            }
        }
    }

    fn remember_miss(&self, id: &str) {
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if misses.len() >= MAX_MISSES {
            misses.retain(|_, at| at.elapsed() < MISS_TTL);
        }
        // Full of fresh misses (a flood of made-up ids): the lookups stay one at a time.
        if misses.len() < MAX_MISSES {
            misses.insert(id.to_owned(), Instant::now());
        }
    }

    /// Fetches the JWKS again for an unknown `kid`, unless a fetch finished within the
    /// cooldown.
    async fn refetch_for(&self, kid: &str) {
        let Ok(mut last) = self.last_fetch.try_lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < self.jwks_cooldown) {
            return;
        }
        let kid: String = kid.chars().take(64).collect();
        tracing::info!(kid, "a token names a key the JWKS lacks; fetching it again");
        if let Err(e) = self.fetch_jwks().await {
            tracing::warn!(error = %e, "JWKS fetch failed; the keys held are kept");
        }
        *last = Some(Instant::now());
    }

    /// Loads the JWKS now; returns how many keys it holds. A failed load keeps the keys held.
    pub async fn load_jwks(&self) -> Result<usize, JwksLoadError> {
        let mut last = self.last_fetch.lock().await;
        let loaded = self.fetch_jwks().await;
        *last = Some(Instant::now());
        loaded
    }

    async fn fetch_jwks(&self) -> Result<usize, JwksLoadError> {
        let Some(source) = &self.jwks else {
            return Ok(0);
        };
        let result = self.read_jwks(source).await.and_then(|document| {
            jwks::parse(&document).map_err(|e| JwksLoadError::Invalid(source.label(), e))
        });
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::JWKS_LOADS, "outcome" => outcome).increment(1);
        let (keys, skipped) = result?;
        for why in &skipped {
            tracing::warn!(source = %source.label(), "JWKS key skipped: {why}");
        }
        let count = keys.len();
        tracing::debug!(source = %source.label(), keys = ?keys.ids(), "JWKS loaded");
        self.tokens.set_issuer_keys(keys);
        Ok(count)
    }

    async fn read_jwks(&self, source: &JwksSource) -> Result<Vec<u8>, JwksLoadError> {
        let failed = |e: &dyn std::fmt::Display| JwksLoadError::Read(source.label(), e.to_string());
        match source {
            JwksSource::File(path) => {
                let size = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| failed(&e))?
                    .len();
                if size > jwks::MAX_JWKS_BYTES as u64 {
                    return Err(JwksLoadError::Invalid(
                        source.label(),
                        jwks::JwksError::TooLarge,
                    ));
                }
                tokio::fs::read(path).await.map_err(|e| failed(&e))
            }
            JwksSource::Url(url) => {
                let http = self.http.as_ref().expect("built for a JWKS URL");
                let mut response = http
                    .get(url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(|e| failed(&e.without_url()))?;
                if !response.status().is_success() {
                    return Err(failed(&format!("HTTP {}", response.status())));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| failed(&e.without_url()))?
                {
                    if body.len() + chunk.len() > jwks::MAX_JWKS_BYTES {
                        return Err(JwksLoadError::Invalid(
                            source.label(),
                            jwks::JwksError::TooLarge,
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }

    /// Fetches the JWKS every `interval`, keeping the keys held when a fetch fails.
    pub async fn refresh_jwks(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.load_jwks().await {
                Ok(keys) => tracing::debug!(keys, "JWKS refreshed"),
                Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; the keys held are kept"),
            }
        }
    }
}

/// The verifier `config` describes, checking tokens against `revoked`.
pub fn from_config(config: &Config, revoked: Arc<Revoked>, store: Store) -> Credentials {
    let rules = IssuerRules {
        issuer: Some(config.jwks.issuer.clone()).filter(|s| !s.is_empty()),
        audience: Some(config.jwks.audience.clone()).filter(|s| !s.is_empty()),
    };
    let tokens = Tokens::new(config.jwt_secret.expose().as_bytes())
        .with_max_lifetime(config.max_token_lifetime)
        .with_issuer_rules(rules)
        .with_revocations(revoked);
    Credentials::new(
        Arc::new(tokens),
        store,
        sealer(config),
        JwksSource::parse(&config.jwks.url),
        config.jwks.refresh,
    )
}

/// The sealer of API-key secrets: from `sealing_key`, or from `jwt_secret` when unset.
pub fn sealer(config: &Config) -> Sealer {
    let secret = config.sealing_key.as_ref().unwrap_or(&config.jwt_secret);
    Sealer::new(secret.expose().as_bytes())
}

/// Stores `revocation` and applies it on every node (here at once, elsewhere through the bus;
/// a node the bus misses reads it from the store within [`REVOCATION_POLL`]). With the store
/// down it is still applied and published, and the error returned: a node that misses the bus
/// then would not learn of it.
pub async fn revoke(store: &Store, hub: &Hub, revocation: &Revocation) -> Result<(), StoreError> {
    let now = crate::auth::unix_seconds();
    let stored = store.add_revocation(revocation, now).await;
    if let Err(e) = hub.revoke(revocation).await {
        tracing::warn!(error = %e, "revocation not published; other nodes read it from the store");
    }
    stored.map(|_| ())
}

/// Applies to `hub` every revocation in the store, then whatever is added, read every
/// [`REVOCATION_POLL`] by sequence number from where it left off; expired ones are forgotten.
/// Each round also reads again what was made in the last [`LATE_COMMITS`]: on Postgres a row
/// can become visible after a later-numbered one. Runs until the node stops.
pub async fn watch_revocations(store: Store, hub: Arc<Hub>) {
    let mut after = 0;
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let now = unix_now();
        hub.revoked.prune(now);
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        match read_revocations(&store, &hub, after, now).await {
            Ok(last) => {
                if failing {
                    tracing::info!("revocations readable again");
                    failing = false;
                }
                after = last;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read revocations; retrying");
                    failing = true;
                }
            }
        }
    }
}

/// How far back each round reads revocations again, for rows that became visible late.
const LATE_COMMITS: i64 = 30;

/// One round of [`watch_revocations`]: applies what came after `after`, and what was made in
/// the last [`LATE_COMMITS`]; returns the last sequence number seen.
async fn read_revocations(
    store: &Store,
    hub: &Hub,
    mut after: i64,
    now: i64,
) -> Result<i64, StoreError> {
    if after > 0 {
        let late = store
            .recent_revocations(after, now - LATE_COMMITS, now, 10 * REVOCATION_PAGE)
            .await?;
        for (_, revocation) in &late {
            hub.apply_revocation(revocation);
        }
    }
    loop {
        let page = store.revocations_after(after, now, REVOCATION_PAGE).await?;
        let full = page.len() as i64 == REVOCATION_PAGE;
        for (seq, revocation) in &page {
            hub.apply_revocation(revocation);
            after = *seq;
        }
        if !full {
            return Ok(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_sources() {
        assert_eq!(JwksSource::parse(""), None);
        assert_eq!(
            JwksSource::parse("https://idp.example/.well-known/jwks.json"),
            Some(JwksSource::Url(
                "https://idp.example/.well-known/jwks.json".into()
            ))
        );
        assert_eq!(
            JwksSource::parse("file:///etc/jwks.json"),
            Some(JwksSource::File("/etc/jwks.json".into()))
        );
        assert_eq!(
            JwksSource::parse("keys/jwks.json"),
            Some(JwksSource::File("keys/jwks.json".into()))
        );
        let url = JwksSource::Url("https://idp/jwks?token=secret".into());
        assert_eq!(url.label(), "https://idp/jwks");
    }
}
