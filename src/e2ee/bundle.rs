//! Checking what a device publishes before anyone can fetch it: phone hashes (64 hex digits),
//! keys and signatures (Base64 of exactly 32 and 64 bytes), and each signature (Ed25519 by the
//! account's identity key over the signed key's 32 public bytes), so that a broken or
//! malicious client cannot publish a bundle on which every peer would fail.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::store::{OneTimeKey, SignedKey};

/// One-time prekeys one request may carry (seed 003).
pub const MAX_KEYS_PER_UPLOAD: usize = 100;
/// One-time prekeys a device may hold unclaimed.
pub const MAX_KEYS_PER_DEVICE: i64 = 500;

/// A refused field: which one (`one_time_prekeys[3].public_key`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A phone hash (64 hex digits, either case) in lower case.
pub fn phone_hash(text: &str) -> Result<String, Invalid> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(invalid("phone_hash", "must be 64 hexadecimal digits"))
    }
}

/// The `N` bytes `text` holds in standard Base64 (padded or not).
pub fn decode<const N: usize>(field: &str, text: &str) -> Result<[u8; N], Invalid> {
    // Anything longer than N bytes' worth is refused before decoding.
    if text.len() > N.div_ceil(3) * 4 {
        return Err(invalid(field, format!("must be {N} bytes of Base64")));
    }
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|_| invalid(field, "is not Base64"))?;
    bytes
        .try_into()
        .map_err(|_| invalid(field, format!("must be {N} bytes of Base64")))
}

/// The account's identity key: an Ed25519 public key.
pub fn identity_key(text: &str) -> Result<VerifyingKey, Invalid> {
    let bytes = decode::<32>("identity_key", text)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("identity_key", "is not an Ed25519 key"))
}

/// Checks a signed key named `field` (`signed_prekey`, `fallback_key`): its key is 32 bytes,
/// its signature 64, and `identity` signed exactly those 32 bytes.
pub fn signed_key(
    identity: &VerifyingKey,
    field: &str,
    signature_field: &str,
    key: &SignedKey,
) -> Result<(), Invalid> {
    let public = decode::<32>(field, &key.public_key)?;
    let signature = Signature::from_bytes(&decode::<64>(signature_field, &key.signature)?);
    identity.verify_strict(&public, &signature).map_err(|_| {
        invalid(
            signature_field,
            "is not the identity key's signature of the key",
        )
    })
}

/// Checks one-time prekeys: at most [`MAX_KEYS_PER_UPLOAD`], each 32 bytes, no key id twice.
pub fn one_time_keys(keys: &[OneTimeKey]) -> Result<(), Invalid> {
    if keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(invalid(
            "one_time_prekeys",
            format!("at most {MAX_KEYS_PER_UPLOAD} per upload"),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        decode::<32>(
            &format!("one_time_prekeys[{i}].public_key"),
            &key.public_key,
        )?;
        if !seen.insert(key.key_id) {
            return Err(invalid(
                format!("one_time_prekeys[{i}].key_id"),
                "appears twice",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn keys_and_signatures_are_checked() {
        let signer = SigningKey::from_bytes(&[7; 32]);
        let identity = identity_key(&b64(signer.verifying_key().as_bytes())).unwrap();
        let public = [9u8; 32];
        let good = SignedKey {
            key_id: 1,
            public_key: b64(&public),
            signature: b64(&signer.sign(&public).to_bytes()),
        };
        assert!(signed_key(&identity, "signed_prekey", "prekey_signature", &good).is_ok());
        let other = SignedKey {
            public_key: b64(&[8u8; 32]),
            ..good.clone()
        };
        let e = signed_key(&identity, "signed_prekey", "prekey_signature", &other).unwrap_err();
        assert_eq!(e.field, "prekey_signature");
        let short = SignedKey {
            public_key: b64(&[8u8; 31]),
            ..good
        };
        let e = signed_key(&identity, "fallback_key", "signature", &short).unwrap_err();
        assert_eq!(e.field, "fallback_key");
        assert!(decode::<32>("k", "!!!").is_err());
        assert!(decode::<32>("k", &"A".repeat(10_000)).is_err());
        assert!(phone_hash(&"Ab".repeat(32)).is_ok());
        assert!(phone_hash(&"g".repeat(64)).is_err());
    }
}
