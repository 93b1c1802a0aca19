//! Access tokens and the keys that verify them. One claims model for every source: `sub`,
//! `name`, `iat`, `exp`, `nbf`, `jti`, and optional `rooms` (a grant of room names and
//! `prefix*` patterns) and `role`. A token's header picks its key:
//!
//! - no `kid`: the node's own HS256 secret (`/auth/*` logins and `switchboard token mint`);
//! - a `kid` of the form `ak_…`: an [API key](ApiKeyId)'s HS256 secret, which an application
//!   backend signs with;
//! - any other `kid`: a key of the configured external issuer's JWKS ([`jwks`]), RS256, ES256,
//!   ES384 or EdDSA, with the `iss` and `aud` the node requires.
//!
//! `none`, HMAC with a public key, an algorithm other than the key's, and every unknown
//! algorithm are refused. A verified token is then checked against the [revocations](Revoked)
//! the cluster knows. [`Tokens`] holds what it has in memory and never waits: a key it does not
//! hold is reported as [`AuthError::UnknownKey`] for the layer above to load.

pub mod jwks;
pub mod revocation;
pub mod seal;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::protocol::RoomId;
use crate::protocol::{ErrorCode, RoomGrant, UserId};

pub use jwks::IssuerKeys;
pub use revocation::{Revocation, Revoked};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat` (a revocation is kept this much
/// past its token's `exp`).
pub const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued at; optional, as other issuers' `{sub, exp}` tokens leave it out.
    #[serde(default)]
    pub iat: u64,
    pub exp: u64,
    /// Not before: a token used earlier is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// The user ids (and `prefix*` patterns) this token may send user-addressed signals to
    /// when `user_signals` is `grant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What a token was: what revocations look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// What revokes this one token: `sub/jti`, or, for a token without a `jti`,
    /// `sub/#` and a digest of the token's header and claims. Namespaced by the subject, so
    /// that one issuer's token ids cannot revoke another's.
    pub jti: Option<Box<str>>,
    /// The API key that signed it, if one did.
    pub key: Option<Box<str>>,
    /// `iat` (0 when absent).
    pub issued_at: u64,
    pub expires_at: u64,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub name: String,
    pub rooms: RoomGrant,
    /// The `peers` claim: whom user-addressed signals may go to under the `grant` policy.
    pub peers: Vec<String>,
    pub admin: bool,
    pub credential: Credential,
}

/// A key a token names that [`Tokens`] does not hold (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// An API key id (`ak_…`): its secret is in the store.
    ApiKey(ApiKeyId),
    /// A key id of the external issuer: its JWKS may have a new key.
    Issuer(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token too large")]
    TooLarge,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token revoked")]
    Revoked,
    #[error("invalid token: unknown key id")]
    UnknownKey(KeyRef),
    #[error("the keys that verify this token are unavailable; try again")]
    Unavailable,
}

impl AuthError {
    /// The error code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            Self::Revoked => ErrorCode::TokenRevoked,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::TooLarge | Self::Invalid(_) | Self::UnknownKey(_) => ErrorCode::Unauthorized,
        }
    }

    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::TooLarge => "too_large",
            Self::Invalid(_) => "invalid",
            Self::Revoked => "revoked",
            Self::UnknownKey(_) => "unknown_key",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The token of an `Authorization` header value: the scheme `Bearer` in any case (RFC 7235),
/// with any spaces or tabs around the token. `None` for another scheme or no token.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// An API key's id: `ak_` and 24 lowercase hex digits. Public: it travels in every token's
/// `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyId(Box<str>);

impl ApiKeyId {
    const PREFIX: &'static str = "ak_";

    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix(Self::PREFIX)?;
        let valid = hex.len() == 24 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self(s.into()))
    }

    /// A new random id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).expect("the OS random number generator is available");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("{}{hex}", Self::PREFIX).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the external issuer's tokens must carry.
#[derive(Debug, Clone, Default)]
pub struct IssuerRules {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's), when set.
    pub audience: Option<String>,
}

/// Signs the node's tokens and verifies tokens from every source, with the keys it holds in
/// memory.
pub struct Tokens {
    encoding: EncodingKey,
    node: DecodingKey,
    hs256: Validation,
    max_lifetime: Option<Duration>,
    api_keys: RwLock<HashMap<ApiKeyId, Arc<DecodingKey>>>,
    issuer_keys: RwLock<Arc<IssuerKeys>>,
    issuer_rules: IssuerRules,
    revoked: Arc<Revoked>,
}

fn hs256_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_nbf = true;
    // Audiences are the external issuer's business; an application may name its own.
    validation.validate_aud = false;
    validation
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            node: DecodingKey::from_secret(secret),
            hs256: hs256_validation(),
            max_lifetime: None,
            api_keys: RwLock::default(),
            issuer_keys: RwLock::default(),
            issuer_rules: IssuerRules::default(),
            revoked: Arc::default(),
        }
    }

    /// Refuses tokens that live longer than `max`: from `iat` (or from now, without one) to
    /// `exp`.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// Requires `iss` and `aud` of the external issuer's tokens.
    pub fn with_issuer_rules(mut self, rules: IssuerRules) -> Self {
        self.issuer_rules = rules;
        self
    }

    /// Checks tokens against `revoked` (shared with whatever keeps it current).
    pub fn with_revocations(mut self, revoked: Arc<Revoked>) -> Self {
        self.revoked = revoked;
        self
    }

    /// The revocations verified tokens are checked against.
    pub fn revoked(&self) -> &Arc<Revoked> {
        &self.revoked
    }

    /// Holds API key `id` with its signing `secret`.
    pub fn add_api_key(&self, id: ApiKeyId, secret: &[u8]) {
        let key = Arc::new(DecodingKey::from_secret(secret));
        let mut keys = self.api_keys.write().unwrap_or_else(|e| e.into_inner());
        keys.insert(id, key);
    }

    /// Whether API key `id` is held.
    pub fn has_api_key(&self, id: &ApiKeyId) -> bool {
        let keys = self.api_keys.read().unwrap_or_else(|e| e.into_inner());
        keys.contains_key(id)
    }

    /// Replaces the external issuer's keys.
    pub fn set_issuer_keys(&self, keys: IssuerKeys) {
        *self.issuer_keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// How many external issuer keys are held.
    pub fn issuer_key_count(&self) -> usize {
        self.issuer_keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        let (claims, key) = match header.kid {
            None => (decode(token, &self.node, &self.hs256)?, None),
            Some(kid) => match ApiKeyId::parse(&kid) {
                Some(id) => {
                    let key = self.api_key(&id)?;
                    (decode(token, &key, &self.hs256)?, Some(id))
                }
                None => (self.decode_issued(token, header.alg, kid)?, None),
            },
        };
        let identity = self.identity(token, claims, key)?;
        if self.revoked.refuses(&identity) {
            return Err(AuthError::Revoked);
        }
        Ok(identity)
    }

    fn api_key(&self, id: &ApiKeyId) -> Result<Arc<DecodingKey>, AuthError> {
        let keys = self.api_keys.read().unwrap_or_else(|e| e.into_inner());
        let key = keys.get(id).cloned();
        key.ok_or_else(|| AuthError::UnknownKey(KeyRef::ApiKey(id.clone())))
    }

    /// Decodes a token of the external issuer, signed with its key `kid`.
    fn decode_issued(&self, token: &str, alg: Algorithm, kid: String) -> Result<Claims, AuthError> {
        let keys = Arc::clone(&self.issuer_keys.read().unwrap_or_else(|e| e.into_inner()));
        let Some(key) = keys.get(&kid) else {
            return Err(AuthError::UnknownKey(KeyRef::Issuer(kid)));
        };
        if alg != key.algorithm {
            return Err(AuthError::Invalid("algorithm not allowed"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer_rules.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.issuer_rules.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        decode(token, &key.key, &validation)
    }

    /// The identity of verified `claims`, after the checks every source shares.
    fn identity(
        &self,
        token: &str,
        claims: Claims,
        key: Option<ApiKeyId>,
    ) -> Result<Identity, AuthError> {
        let now = unix_now();
        if claims.iat > now + LEEWAY_SECS {
            return Err(AuthError::Invalid("issued in the future (iat)"));
        }
        let start = if claims.iat > 0 { claims.iat } else { now };
        let lifetime = Duration::from_secs(claims.exp.saturating_sub(start));
        if self.max_lifetime.is_some_and(|max| lifetime > max) {
            return Err(AuthError::Invalid("lives longer than max_token_lifetime"));
        }
        let user_id = UserId::parse(&claims.sub).map_err(|_| AuthError::Invalid("bad sub"))?;
        let name = claims
            .name
            .filter(|n| !n.is_empty() && n.chars().count() <= 128)
            .unwrap_or_else(|| claims.sub.clone());
        Ok(Identity {
            user_id,
            name,
            rooms: claims.rooms.map_or(RoomGrant::Any, RoomGrant::Only),
            peers: claims.peers.unwrap_or_default(),
            admin: claims.role.as_deref() == Some("admin"),
            credential: Credential {
                jti: Some(revocation_id(&claims.sub, claims.jti.as_deref(), token)),
                key: key.map(|k| k.0),
                issued_at: claims.iat,
                expires_at: claims.exp,
            },
        })
    }

    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }
}

/// The id under which a token is revoked: `sub/jti`, or `sub/#` and the first 16 bytes of the
/// SHA-256 of the signed part (header and claims; not the signature, which ECDSA lets anyone
/// re-write) for a token without a `jti`.
fn revocation_id(sub: &str, jti: Option<&str>, token: &str) -> Box<str> {
    match jti {
        Some(jti) => format!("{sub}/{jti}").into(),
        None => {
            use sha2::Digest;
            let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
            let digest = sha2::Sha256::digest(signed.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("{sub}/#{hex}").into()
        }
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, AuthError> {
    let data =
        jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)"),
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
            ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not allowed"),
            ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing claim"),
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer (iss)"),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience (aud)"),
            _ => AuthError::Invalid("malformed"),
        })?;
    Ok(data.claims)
}

/// Unix seconds now, as the store keeps times.
pub fn unix_seconds() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.unwrap_or_default().as_secs()
}

/// Claims for a new token valid for `ttl` from now.
pub fn claims(user: &UserId, name: &str, ttl: Duration) -> Claims {
    let now = unix_now();
    Claims {
        sub: user.to_string(),
        name: Some(name.to_owned()),
        iat: now,
        exp: now + ttl.as_secs(),
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().to_string()),
        rooms: None,
        peers: None,
        role: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn user() -> UserId {
        UserId::parse("u-1").unwrap()
    }

    #[test]
    fn bearer_headers_in_any_case_and_spacing() {
        for header in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "  Bearer   abc  ",
            "Bearer\tabc",
        ] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "", "abc"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn tokens_from_the_future_are_refused() {
        let tokens = Tokens::new(SECRET);
        let mut early = claims(&user(), "A", Duration::from_secs(600));
        early.nbf = Some(early.iat + 300);
        assert_eq!(
            tokens.verify(&tokens.mint(&early)),
            Err(AuthError::Invalid("not valid yet (nbf)"))
        );
        let mut future = claims(&user(), "A", Duration::from_secs(600));
        future.iat += 300;
        assert_eq!(
            tokens.verify(&tokens.mint(&future)),
            Err(AuthError::Invalid("issued in the future (iat)"))
        );
        let mut started = claims(&user(), "A", Duration::from_secs(600));
        started.nbf = Some(started.iat - 1);
        assert!(tokens.verify(&tokens.mint(&started)).is_ok());
    }

    #[test]
    fn tokens_living_longer_than_the_maximum_are_refused() {
        let tokens = Tokens::new(SECRET).with_max_lifetime(Duration::from_secs(3600));
        let long = claims(&user(), "A", Duration::from_secs(7200));
        assert_eq!(
            tokens.verify(&tokens.mint(&long)),
            Err(AuthError::Invalid("lives longer than max_token_lifetime"))
        );
        let short = claims(&user(), "A", Duration::from_secs(3600));
        assert!(tokens.verify(&tokens.mint(&short)).is_ok());
    }

    #[test]
    fn tokens_without_iat_or_name_are_accepted() {
        let tokens = Tokens::new(SECRET);
        let exp = claims(&user(), "A", Duration::from_secs(60)).exp;
        let bare = serde_json::json!({"sub": "u-1", "exp": exp});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &bare,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let id = tokens.verify(&token).unwrap();
        assert_eq!((id.user_id.as_str(), id.name.as_str()), ("u-1", "u-1"));
    }

    #[test]
    fn round_trip_and_grants() {
        let tokens = Tokens::new(SECRET);
        let mut c = claims(&user(), "Alice", Duration::from_secs(60));
        c.rooms = Some(vec!["team-*".into(), "lobby".into()]);
        c.role = Some("admin".into());
        let id = tokens.verify(&tokens.mint(&c)).unwrap();
        assert_eq!(id.name, "Alice");
        assert!(id.admin);
        let room = |s| RoomId::parse(s).unwrap();
        assert!(id.rooms.allows(&room("team-7")));
        assert!(id.rooms.allows(&room("lobby")));
        assert!(!id.rooms.allows(&room("lobby2")));
        assert!(!id.rooms.allows(&room("other")));
    }

    #[test]
    fn refuses_expired_forged_and_foreign_tokens() {
        let tokens = Tokens::new(SECRET);
        let mut c = claims(&user(), "A", Duration::from_secs(60));
        c.exp = c.iat - 60;
        assert_eq!(tokens.verify(&tokens.mint(&c)), Err(AuthError::Expired));

        let good = tokens.mint(&claims(&user(), "A", Duration::from_secs(60)));
        let other = Tokens::new(b"another-secret-another-secret-xx");
        assert!(other.verify(&good).is_err());
        assert!(tokens.verify("garbage").is_err());
        assert!(tokens.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());

        // alg: none, and HS512 with the right secret: both refused.
        let parts: Vec<&str> = good.split('.').collect();
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        assert!(
            tokens
                .verify(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(&user(), "A", Duration::from_secs(60)),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(tokens.verify(&hs512).is_err());
    }
}
