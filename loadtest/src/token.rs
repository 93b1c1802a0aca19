//! Minting the HS256 tokens the tool's clients present (the server's claim set).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;

/// The server's development default, used when no secret is given.
pub const DEV_SECRET: &str = "switchboard-dev-secret-do-not-use-in-production";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

/// Signs tokens with one secret.
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    pub fn new(secret: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for user `sub` called `name`, valid for two hours.
    pub fn mint(&self, sub: &str, name: &str) -> Result<String> {
        let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub,
            name,
            iat,
            exp: iat + 7_200,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok(encode(&Header::default(), &claims, &self.key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

    #[test]
    fn mints_hs256_tokens_the_server_can_verify() {
        let token = Minter::new("s3cret").mint("u-1", "alice").unwrap();
        let data = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "u-1");
        assert_eq!(data.claims["name"], "alice");
        assert!(data.claims["jti"].as_str().is_some_and(|j| j.len() == 36));
    }
}
