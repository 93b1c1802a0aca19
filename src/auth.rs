//! Access tokens: HS256 JWTs with the claims `sub`, `name`, `iat`, `exp`, `jti`, and optional
//! `rooms` (a grant of room names and `prefix*` patterns) and `role`. Only HS256 verifies;
//! `none`, RS/HS confusion and every other algorithm are refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::protocol::RoomId;
use crate::protocol::{ErrorCode, RoomGrant, UserId};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub name: String,
    pub rooms: RoomGrant,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token too large")]
    TooLarge,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    /// The error code a client sees: `token_expired` or `unauthorized`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::TokenExpired,
            Self::TooLarge | Self::Invalid(_) => ErrorCode::Unauthorized,
        }
    }

    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::TooLarge => "too_large",
            Self::Invalid(_) => "invalid",
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

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    max_lifetime: Option<Duration>,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            max_lifetime: None,
        }
    }

    /// Refuses tokens that live longer than `max`: from `iat` (or from now, without one) to
    /// `exp`.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)"),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not allowed"),
                ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing claim"),
                _ => AuthError::Invalid("malformed"),
            })?;
        let claims = data.claims;
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
            admin: claims.role.as_deref() == Some("admin"),
        })
    }

    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }
}

fn unix_now() -> u64 {
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
