//! The call signaling protocol, without I/O: what a participant may send on
//! `/api/v1/calls/signaling/{sessionId}` and the frames it gets.
//!
//! A participant sends `{"type": "offer" | "answer" | "ice-candidate", "payload": {...}}`; the
//! other participant gets the same with `from` (the sender's anonymous id) added, never the
//! sender itself. `{"type": "hang-up"}` ends the call. Anything else is answered with
//! `{"type": "error", "code", "detail"}` and the connection stays open.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The longest DTLS fingerprint line kept (`sha-512` with its colons is 191 characters).
const MAX_FINGERPRINT: usize = 200;

/// What a participant sent.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A signal for the other participant: its kind and its payload (a JSON object).
    Relay {
        kind: &'static str,
        payload: &'a RawValue,
    },
    HangUp,
}

/// Why a frame was refused: its stable code and a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub detail: String,
}

fn refuse(code: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        code,
        detail: detail.into(),
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Incoming<'_>, Refusal> {
    let raw: Raw = serde_json::from_str(text).map_err(|_| {
        refuse(
            "invalid_message",
            "expected a JSON object with a string `type`",
        )
    })?;
    let kind = match raw.kind.as_ref() {
        "offer" => "offer",
        "answer" => "answer",
        "ice-candidate" | "ice_candidate" => "ice-candidate",
        "hang-up" | "hangup" => return Ok(Incoming::HangUp),
        _ => {
            return Err(refuse(
                "unknown_type",
                "type must be offer, answer, ice-candidate or hang-up",
            ));
        }
    };
    // Parsed in full once: skipping a value (what a raw value does) lets through escapes that
    // a strict parser refuses (a lone surrogate), and the other side must get valid JSON.
    let payload = raw
        .payload
        .filter(|p| p.get().trim_start().starts_with('{'))
        .filter(|p| serde_json::from_str::<serde_json::Value>(p.get()).is_ok())
        .ok_or_else(|| {
            refuse(
                "invalid_payload",
                format!("{kind} needs an object `payload`"),
            )
        })?;
    Ok(Incoming::Relay { kind, payload })
}

/// The frame the other participant gets for a relayed signal.
pub fn relayed(kind: &str, from: &str, payload: &RawValue) -> String {
    format!(
        r#"{{"type":"{kind}","from":"{from}","payload":{}}}"#,
        payload.get()
    )
}

/// An error frame.
pub fn error(refusal: &Refusal) -> String {
    serde_json::json!({"type": "error", "code": refusal.code, "detail": refusal.detail}).to_string()
}

/// The DTLS fingerprint (`sha-256 AB:CD:…`) of an offer's or answer's SDP, if it has one.
pub fn fingerprint(payload: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Sdp {
        sdp: String,
    }
    let sdp: Sdp = serde_json::from_str(payload.get()).ok()?;
    let line = sdp
        .sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))?
        .trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | ' ');
    (line.len() <= MAX_FINGERPRINT && !line.is_empty() && line.chars().all(allowed))
        .then(|| line.to_owned())
}

/// What both sides compare: the SHA-256 (hex) of the caller's and the owner's fingerprints.
pub fn combined_fingerprint(caller: &str, owner: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("a={caller}\nb={owner}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_hang_ups_and_junk() {
        let sdp = r#"{"type":"offer","payload":{"type":"offer","sdp":"v=0\r\na=fingerprint:sha-256 AB:CD\r\n"}}"#;
        let Ok(Incoming::Relay { kind, payload }) = parse(sdp) else {
            panic!("an offer");
        };
        assert_eq!(kind, "offer");
        assert_eq!(fingerprint(payload).as_deref(), Some("sha-256 AB:CD"));
        let out: serde_json::Value =
            serde_json::from_str(&relayed(kind, "anon_x", payload)).unwrap();
        assert_eq!(out["from"], "anon_x");
        assert_eq!(out["payload"]["type"], "offer");
        assert!(matches!(
            parse(r#"{"type":"hang-up"}"#),
            Ok(Incoming::HangUp)
        ));
        for (junk, code) in [
            ("nope", "invalid_message"),
            ("[]", "invalid_message"),
            (r#"{"type":1}"#, "invalid_message"),
            (r#"{"type":"join"}"#, "unknown_type"),
            (r#"{"type":"offer"}"#, "invalid_payload"),
            (r#"{"type":"answer","payload":"x"}"#, "invalid_payload"),
            (
                r#"{"type":"answer","payload":{"a":"\ud800"}}"#,
                "invalid_payload",
            ),
        ] {
            assert_eq!(parse(junk).unwrap_err().code, code, "{junk}");
        }
        let evil = RawValue::from_string(r#"{"sdp":"a=fingerprint:x\"}"}"#.into()).unwrap();
        assert_eq!(fingerprint(&evil), None);
    }
}
