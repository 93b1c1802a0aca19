//! Call codes as they travel in a QR code: `pqc:1:<token>:<checksum>`.
//!
//! - `token`: 32 bytes from the OS random number generator, base64url without padding (43
//!   characters). The store keeps only its SHA-256 (hex).
//! - `checksum`: the first 8 hex digits (lower case) of SHA-256 of `pqc:1:<token>`. Anyone can
//!   compute it, so it proves nothing about a code; it lets a client reject a mistyped or
//!   damaged code before it sends a request.
//!
//! A bare token (without the `pqc:1:` frame and checksum) is accepted too, as the predecessor's
//! clients send it.

use sha2::{Digest, Sha256};

/// The frame of a version-1 code.
pub const PREFIX: &str = "pqc:1:";
/// The length of a token: 32 bytes in base64url without padding.
pub const TOKEN_CHARS: usize = 43;
/// The length of a checksum.
pub const CHECKSUM_CHARS: usize = 8;

/// A code that cannot be one: the wrong frame, version, token or checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this is not a well-formed call code")]
pub struct Malformed;

/// A new token and the hash the store keeps in its place.
pub fn new_token() -> (String, String) {
    crate::accounts::new_secret()
}

/// The checksum of `token`.
pub fn checksum(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(PREFIX.as_bytes())
        .chain_update(token.as_bytes())
        .finalize();
    digest[..CHECKSUM_CHARS / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The text of the QR code of `token`.
pub fn qr_data(token: &str) -> String {
    format!("{PREFIX}{token}:{}", checksum(token))
}

/// The token of a scanned code (`pqc:1:<token>:<checksum>`, or a bare token), checked.
pub fn parse(scanned: &str) -> Result<&str, Malformed> {
    let scanned = scanned.trim();
    let token = match scanned.strip_prefix(PREFIX) {
        Some(rest) => {
            let (token, sum) = rest.split_once(':').ok_or(Malformed)?;
            if sum != checksum(token) {
                return Err(Malformed);
            }
            token
        }
        None if scanned.starts_with("pqc:") => return Err(Malformed),
        None => scanned,
    };
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if token.len() == TOKEN_CHARS && token.bytes().all(alphabet) {
        Ok(token)
    } else {
        Err(Malformed)
    }
}

/// The hash under which the store keeps `token`.
pub fn hash(token: &str) -> String {
    crate::accounts::secret_hash(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_damage_is_caught() {
        let (token, hashed) = new_token();
        assert_eq!(token.len(), TOKEN_CHARS);
        assert_eq!(hash(&token), hashed);
        let data = qr_data(&token);
        assert!(data.starts_with("pqc:1:"));
        assert_eq!(parse(&data), Ok(token.as_str()));
        assert_eq!(parse(&format!(" {data}\n")), Ok(token.as_str()));
        assert_eq!(parse(&token), Ok(token.as_str()), "a bare token");
        // One character changed anywhere in the token or checksum is caught.
        for at in PREFIX.len()..data.len() {
            let mut bytes = data.clone().into_bytes();
            if bytes[at] == b':' {
                continue;
            }
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let damaged = String::from_utf8(bytes).unwrap();
            assert_eq!(parse(&damaged), Err(Malformed), "{damaged}");
        }
        for bad in [
            "",
            "pqc:2:x:y",
            "pqc:1:short:00000000",
            "abc",
            &"a".repeat(44),
        ] {
            assert_eq!(parse(bad), Err(Malformed), "{bad}");
        }
    }

    #[test]
    fn the_checksum_is_the_documented_one() {
        // sha256("pqc:1:" + 43 × "A"), first 4 bytes.
        let token = "A".repeat(TOKEN_CHARS);
        let digest = Sha256::digest(format!("pqc:1:{token}").as_bytes());
        let want: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(checksum(&token), want);
        assert_eq!(want.len(), CHECKSUM_CHARS);
    }
}
