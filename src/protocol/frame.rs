//! [`Frame`]: a text frame on its way to clients, as the delivery core carries it.

use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;

/// A UTF-8 text frame on its way to one or many clients. Cloning shares the buffer (a
/// reference count, no copy), so a room broadcast hands every member the same bytes; the
/// socket edge turns it into its own frame type without copying.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Frame(ByteString);

impl Frame {
    pub const fn from_static(text: &'static str) -> Self {
        Self(ByteString::from_static(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The frame's bytes (shared, not copied).
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Frame {
    /// Takes the string's buffer over; no copy.
    fn from(text: String) -> Self {
        Self(ByteString::from(text))
    }
}

impl TryFrom<Bytes> for Frame {
    type Error = std::str::Utf8Error;

    /// Checks that `bytes` are UTF-8 and keeps them; no copy.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        ByteString::try_from(bytes).map(Self)
    }
}

impl From<Frame> for Bytes {
    fn from(frame: Frame) -> Self {
        frame.into_bytes()
    }
}

impl std::ops::Deref for Frame {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Frame {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Frame {
    /// Shows the length only: frames carry SDP bodies and other payloads that are not logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_buffer_and_conversions_do_not_copy() {
        let text = String::from(r#"{"type":"offer"}"#);
        let at = text.as_ptr();
        let frame = Frame::from(text);
        let copy = frame.clone();
        assert_eq!(copy.as_str().as_ptr(), at);
        let bytes = frame.into_bytes();
        assert_eq!(bytes.as_ptr(), at);
        let back = Frame::try_from(bytes).unwrap();
        assert_eq!(back.as_str().as_ptr(), at);
        assert_eq!(back, r#"{"type":"offer"}"#);
    }

    #[test]
    fn invalid_utf8_is_refused_and_payloads_are_not_shown() {
        assert!(Frame::try_from(Bytes::from_static(b"\xff\xfe")).is_err());
        let frame = Frame::from_static(r#"{"sdp":"secret"}"#);
        assert_eq!(format!("{frame:?}"), "Frame(16 bytes)");
    }
}
