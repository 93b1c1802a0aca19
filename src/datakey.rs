//! Data keys: how the store keeps sensitive columns (contact details, vehicle numbers, push
//! tokens) encrypted at rest. AES-256-GCM with a random 96-bit nonce under the current key
//! (`data_key`), with the row's id as associated data so that a sealed value cannot be moved to
//! another row. Every sealed value names the key that sealed it, so older keys
//! (`data_key_previous`) keep opening what they sealed while `switchboard data rotate-key`
//! re-seals it under the current one in batches.
//!
//! Sealed form: `dk1.<key id>.<base64url(nonce(12) || ciphertext || tag(16))>`. A key's id is the
//! first 8 hex digits of the SHA-256 of its bytes: it names the key without revealing it, and
//! the same key always gets the same id on every node.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const PREFIX: &str = "dk1.";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// The bytes of a data key.
pub const KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataKeyError {
    #[error("not a sealed value")]
    Malformed,
    #[error(
        "sealed under data key {0}, which this node does not hold (set it in data_key_previous)"
    )]
    UnknownKey(String),
    #[error("the sealed value does not open with its data key (tampered, or moved to another row)")]
    Tampered,
}

/// Why a configured key is refused (for the config's message; never shows the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not base64 (standard or URL-safe)")]
    NotBase64,
    #[error("decodes to {0} bytes; a data key is 32 random bytes (`openssl rand -base64 32`)")]
    WrongLength(usize),
}

/// Decodes a configured data key: base64 (standard or URL-safe, padded or not) of 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; KEY_BYTES], KeyFormatError> {
    let text = text.trim();
    let bytes = [&STANDARD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .ok()
        })
        .ok_or(KeyFormatError::NotBase64)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyFormatError::WrongLength(bytes.len()))
}

/// One key and its id.
#[derive(Clone)]
struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

impl DataKey {
    fn new(bytes: &[u8; KEY_BYTES]) -> Self {
        let digest = Sha256::digest(bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id,
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*bytes)),
        }
    }
}

/// The node's data keys: the current one seals, every one opens. Cheap to clone.
#[derive(Clone)]
pub struct DataKeys {
    current: DataKey,
    previous: Vec<DataKey>,
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("DataKeys")
            .field("current", &self.current.id)
            .field("previous", &previous)
            .finish()
    }
}

impl DataKeys {
    /// Keys from their bytes: `current` seals; `previous` (older keys) only open.
    pub fn new(current: &[u8; KEY_BYTES], previous: &[[u8; KEY_BYTES]]) -> Self {
        let current = DataKey::new(current);
        let previous = previous
            .iter()
            .map(DataKey::new)
            .filter(|k| k.id != current.id)
            .collect();
        Self { current, previous }
    }

    /// A development node's key when none is configured: derived from `secret` (the node's
    /// sealing secret), so that it stays the same across restarts. Production refuses this.
    pub fn derived(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"switchboard data key v1");
        Self::new(&mac.finalize().into_bytes().into(), &[])
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext`, bound to `context` (the id of the row that keeps it).
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random number generator is available");
        let aad = associated(&self.current.id, context);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: aad.as_bytes(),
        };
        let sealed = self
            .current
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .expect("sealing a column value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// Opens what [`DataKeys::seal`] sealed for `context`, under any key this node holds.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, DataKeyError> {
        let (id, body) = split(sealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| DataKeyError::UnknownKey(id.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DataKeyError::Malformed)?;
        if bytes.len() < NONCE_BYTES + TAG_BYTES {
            return Err(DataKeyError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| DataKeyError::Malformed)?;
        let aad = associated(id, context);
        let payload = Payload {
            msg: ciphertext,
            aad: aad.as_bytes(),
        };
        let plain = key
            .cipher
            .decrypt(&Nonce::from(nonce), payload)
            .map_err(|_| DataKeyError::Tampered)?;
        String::from_utf8(plain).map_err(|_| DataKeyError::Tampered)
    }

    /// Whether `sealed` is sealed under the current key (a rotation skips it).
    pub fn is_current(&self, sealed: &str) -> bool {
        split(sealed).is_ok_and(|(id, _)| id == self.current.id)
    }

    /// Re-seals `sealed` under the current key; `None` when it already is.
    pub fn reseal(&self, sealed: &str, context: &str) -> Result<Option<String>, DataKeyError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let plain = self.open(sealed, context)?;
        Ok(Some(self.seal(&plain, context)))
    }
}

fn split(sealed: &str) -> Result<(&str, &str), DataKeyError> {
    sealed
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .filter(|(id, _)| id.len() == 8)
        .ok_or(DataKeyError::Malformed)
}

/// The associated data: the key's id and the row, so neither can be swapped.
fn associated(id: &str, context: &str) -> String {
    format!("{id}/{context}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [7; 32];
    const B: [u8; 32] = [9; 32];

    #[test]
    fn sealed_values_open_only_for_their_row_and_hide_the_plaintext() {
        let keys = DataKeys::new(&A, &[]);
        let sealed = keys.seal("+49 170 1234567", "user-1");
        assert!(sealed.starts_with(&format!("dk1.{}.", keys.current_id())));
        assert!(!sealed.contains("1234567"));
        assert_ne!(
            sealed,
            keys.seal("+49 170 1234567", "user-1"),
            "fresh nonce"
        );
        assert_eq!(keys.open(&sealed, "user-1").unwrap(), "+49 170 1234567");
        assert_eq!(keys.open(&sealed, "user-2"), Err(DataKeyError::Tampered));
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(keys.open(&flipped, "user-1").is_err());
    }

    #[test]
    fn a_rotation_keeps_old_values_readable_and_reseals_them() {
        let old = DataKeys::new(&A, &[]);
        let sealed = old.seal("AB-123", "row");
        let rotated = DataKeys::new(&B, &[A]);
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.open(&sealed, "row").unwrap(), "AB-123");
        let resealed = rotated.reseal(&sealed, "row").unwrap().unwrap();
        assert!(rotated.is_current(&resealed));
        assert_eq!(rotated.reseal(&resealed, "row").unwrap(), None);
        let only_new = DataKeys::new(&B, &[]);
        assert_eq!(only_new.open(&resealed, "row").unwrap(), "AB-123");
        assert_eq!(
            only_new.open(&sealed, "row"),
            Err(DataKeyError::UnknownKey(old.current_id().to_owned()))
        );
    }

    #[test]
    fn malformed_values_and_keys_are_refused() {
        let keys = DataKeys::new(&A, &[]);
        let id = keys.current_id().to_owned();
        for bad in [
            String::new(),
            "dk1.".into(),
            "v1.AAAA".into(),
            format!("dk1.{id}"),
            format!("dk1.{id}.!!!"),
            format!("dk1.{id}.AAAA"),
            "dk1.short.AAAA".into(),
        ] {
            assert_eq!(
                keys.open(&bad, "row"),
                Err(DataKeyError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_key("not base64 at all!"),
            Err(KeyFormatError::NotBase64)
        );
        assert_eq!(
            parse_key(&STANDARD.encode([1u8; 16])),
            Err(KeyFormatError::WrongLength(16))
        );
        assert_eq!(parse_key(&STANDARD.encode(A)).unwrap(), A);
        assert_eq!(parse_key(&URL_SAFE_NO_PAD.encode(B)).unwrap(), B);
        let debug = format!("{:?}", DataKeys::new(&A, &[B]));
        assert!(debug.contains(&id) && !debug.contains("7, 7"));
    }

    #[test]
    fn a_derived_key_is_stable() {
        let one = DataKeys::derived(b"secret");
        let two = DataKeys::derived(b"secret");
        assert_eq!(one.current_id(), two.current_id());
        assert_eq!(two.open(&one.seal("x", "r"), "r").unwrap(), "x");
        assert_ne!(DataKeys::derived(b"other").current_id(), one.current_id());
    }
}
