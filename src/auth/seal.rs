//! Sealing: how the store keeps secrets the node must read back (API keys' signing secrets),
//! never in the clear. XChaCha20-Poly1305 with a random nonce, under a key derived from the
//! node's sealing secret (`sealing_key`, or `jwt_secret` when that is unset), with the row's
//! id as associated data so a sealed value cannot be moved to another row.
//!
//! Sealed form: `v1.` and the base64url (no padding) of `nonce(24) || ciphertext || tag(16)`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: &str = "v1.";
const NONCE_BYTES: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed value")]
    Malformed,
    #[error("the sealed value does not open with this node's sealing key (was it changed?)")]
    WrongKey,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer whose key is derived from `secret` (HMAC-SHA256 with a fixed label).
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"switchboard sealing key v1");
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// Seals `secret`, bound to `context` (the id of the row that keeps it).
    pub fn seal(&self, secret: &[u8], context: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random number generator is available");
        let payload = Payload {
            msg: secret,
            aad: context.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`Sealer::seal`] sealed with the same key and `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed.strip_prefix(VERSION).ok_or(SealError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_BYTES + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        self.cipher
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_row() {
        let sealer = Sealer::new(b"a sealing secret of some length!");
        let sealed = sealer.seal(b"the secret", "ak_1");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("the secret"));
        assert_ne!(
            sealed,
            sealer.seal(b"the secret", "ak_1"),
            "a fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed, "ak_1").unwrap(), b"the secret");
        assert_eq!(sealer.open(&sealed, "ak_2"), Err(SealError::WrongKey));
        let other = Sealer::new(b"another sealing secret, also long");
        assert_eq!(other.open(&sealed, "ak_1"), Err(SealError::WrongKey));
        for bad in ["", "v1.", "v1.!!!", "v2.AAAA", "v1.AAAA"] {
            assert_eq!(
                sealer.open(bad, "ak_1"),
                Err(SealError::Malformed),
                "{bad:?}"
            );
        }
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(sealer.open(&flipped, "ak_1").is_err());
    }
}
