//! The external issuer's public keys, read from a JWKS document (RFC 7517). Each usable key
//! has a `kid` and one algorithm: RS256 (or the `alg` it names among RS384, RS512, PS256) for
//! RSA, ES256 for P-256, ES384 for P-384, EdDSA for Ed25519. Symmetric (`oct`) keys, keys for
//! encryption (`use: enc`), and keys whose `alg` does not fit their type are skipped and
//! reported, never used.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A JWKS document larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys beyond this many are ignored.
pub const MAX_KEYS: usize = 100;

/// One usable key.
pub struct IssuerKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// The usable keys of a JWKS, by `kid`.
#[derive(Default)]
pub struct IssuerKeys {
    keys: HashMap<String, Arc<IssuerKey>>,
}

impl IssuerKeys {
    pub fn get(&self, kid: &str) -> Option<&Arc<IssuerKey>> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids held, sorted.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Malformed(String),
    #[error("the JWKS has no usable signing key ({0})")]
    NoUsableKey(String),
}

/// Reads a JWKS document. Returns its usable keys and, for each key skipped, its `kid` (or
/// position) and why.
pub fn parse(document: &[u8]) -> Result<(IssuerKeys, Vec<String>), JwksError> {
    if document.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    // Keys one at a time: one key this library cannot represent must not hide the others.
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw =
        serde_json::from_slice(document).map_err(|e| JwksError::Malformed(e.to_string()))?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for (i, value) in raw.keys.into_iter().take(MAX_KEYS).enumerate() {
        let label = value
            .get("kid")
            .and_then(|k| k.as_str())
            .map_or_else(|| format!("key #{i}"), |k| format!("kid {k:?}"));
        let jwk = serde_json::from_value::<Jwk>(value)
            .map_err(|e| e.to_string())
            .and_then(|jwk| usable(&jwk).map(|key| (jwk, key)));
        match jwk {
            Ok((jwk, key)) => {
                let kid = jwk.common.key_id.expect("usable keys have a kid");
                match keys.entry(kid) {
                    Entry::Occupied(_) => {
                        skipped.push(format!("{label}: a second key with this kid"));
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(Arc::new(key));
                    }
                }
            }
            Err(why) => skipped.push(format!("{label}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(if skipped.is_empty() {
            "it has no keys".to_owned()
        } else {
            skipped.join("; ")
        }));
    }
    Ok((IssuerKeys { keys }, skipped))
}

/// Builds the key of `jwk`, or says why it is not usable.
fn usable(jwk: &Jwk) -> Result<IssuerKey, String> {
    if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
        return Err("no kid".into());
    }
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key (use)".into());
    }
    let named = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match named {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(other) => return Err(format!("algorithm {other:?} not accepted for RSA")),
        },
        AlgorithmParameters::EllipticCurve(ec) => match (&ec.curve, named) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            (curve, alg) => return Err(format!("curve {curve:?} with {alg:?} not accepted")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match (&okp.curve, named) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => Algorithm::EdDSA,
            (curve, alg) => return Err(format!("curve {curve:?} with {alg:?} not accepted")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never accepted from a JWKS".into());
        }
        _ => return Err("unknown key type".into()),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unreadable key: {e}"))?;
    Ok(IssuerKey { key, algorithm })
}

/// The JWKS of `keys` (what a test issuer publishes).
pub fn document(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).expect("a JWKS serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    fn doc(keys: &[&str]) -> Vec<u8> {
        format!(r#"{{"keys":[{}]}}"#, keys.join(",")).into_bytes()
    }

    #[test]
    fn usable_keys_are_kept_and_the_rest_reported() {
        let (keys, skipped) = parse(&doc(&[
            EC_P256,
            r#"{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}"#,
            r#"{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
            r#"{"kty":"EC","crv":"P-256","alg":"RS256","kid":"mismatch","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
            r#"{"kty":"XYZ","kid":"odd"}"#,
        ]))
        .unwrap();
        assert_eq!(keys.ids(), ["ec1"]);
        assert_eq!(keys.get("ec1").unwrap().algorithm, Algorithm::ES256);
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(skipped[0].contains("hmac") && skipped[0].contains("symmetric"));
    }

    #[test]
    fn documents_that_are_not_a_jwks_are_refused() {
        for bad in [&b""[..], b"{}", b"[]", b"{\"keys\":1}", b"<html>"] {
            assert!(
                matches!(parse(bad), Err(JwksError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse(&doc(&[])), Err(JwksError::NoUsableKey(_))));
        let only_oct = doc(&[r#"{"kty":"oct","kid":"h","k":"c2VjcmV0"}"#]);
        assert!(matches!(parse(&only_oct), Err(JwksError::NoUsableKey(_))));
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(matches!(parse(&huge), Err(JwksError::TooLarge)));
    }
}
