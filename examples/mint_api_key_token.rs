//! Mints a Switchboard access token with an API key, as an application backend does:
//! `SWITCHBOARD_KEY_ID=ak_… SWITCHBOARD_KEY_SECRET=… cargo run --example mint_api_key_token`.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn mint(kid: &str, secret: &str, user_id: &str, name: &str, ttl: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "sub": user_id,
        "name": name,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&header, &claims, &key).expect("HS256 signing")
}

fn main() {
    let kid = std::env::var("SWITCHBOARD_KEY_ID").expect("SWITCHBOARD_KEY_ID");
    let secret = std::env::var("SWITCHBOARD_KEY_SECRET").expect("SWITCHBOARD_KEY_SECRET");
    println!("{}", mint(&kid, &secret, "user-42", "Ada", 600));
}
