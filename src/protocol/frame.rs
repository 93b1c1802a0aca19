//! [`Frame`]: a text frame on its way to clients, as the delivery core carries it, and its
//! [`Stamp`]: when and as what a relayed signal was received, for the relay's metrics.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use bytestring::ByteString;

/// A UTF-8 text frame on its way to one or many clients. Cloning shares the buffer (a
/// reference count, no copy), so a room broadcast hands every member the same bytes; the
/// socket edge turns it into its own frame type without copying. A relayed signal carries its
/// [`Stamp`]; every other frame carries [`Stamp::NONE`]. Frames compare by their text.
#[derive(Clone)]
pub struct Frame {
    text: ByteString,
    stamp: Stamp,
}

impl Frame {
    pub const fn from_static(text: &'static str) -> Self {
        Self {
            text: ByteString::from_static(text),
            stamp: Stamp::NONE,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The frame's bytes (shared, not copied).
    pub fn into_bytes(self) -> Bytes {
        self.text.into_bytes()
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// The frame with `stamp`.
    pub fn stamped(mut self, stamp: Stamp) -> Self {
        self.stamp = stamp;
        self
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Frame {}

impl std::hash::Hash for Frame {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl From<String> for Frame {
    /// Takes the string's buffer over; no copy.
    fn from(text: String) -> Self {
        Self {
            text: ByteString::from(text),
            stamp: Stamp::NONE,
        }
    }
}

impl TryFrom<Bytes> for Frame {
    type Error = std::str::Utf8Error;

    /// Checks that `bytes` are UTF-8 and keeps them; no copy.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        ByteString::try_from(bytes).map(|text| Self {
            text,
            stamp: Stamp::NONE,
        })
    }
}

/// When a relayed signal was received (microseconds of the Unix epoch, so that a node that
/// receives it over the bus can tell its age on a synchronised clock), what kind of signal it
/// is (a small tag, 0 for none), and whether it crossed the bus: one word.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp(u64);

impl Stamp {
    /// Not a relayed signal: not counted.
    pub const NONE: Self = Self(0);
    /// The tag bit of a signal that came from another node.
    const REMOTE: u64 = 0x80;

    /// A signal of kind `tag` (1..=127) received at `micros` (see [`unix_micros`]).
    pub fn new(micros: u64, tag: u8) -> Self {
        Self((micros << 8) | u64::from(tag & 0x7f))
    }

    /// The stamp as it travels in an envelope.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// A stamp as an envelope carried it.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The stamp marked as having crossed the bus ([`Stamp::NONE`] stays so).
    pub const fn remote(self) -> Self {
        if self.tag() == 0 {
            Self::NONE
        } else {
            Self(self.0 | Self::REMOTE)
        }
    }

    /// The signal's kind tag; 0 for a frame that is not a relayed signal.
    pub const fn tag(self) -> u8 {
        (self.0 & 0x7f) as u8
    }

    /// Whether the signal came over the bus from another node.
    pub const fn is_remote(self) -> bool {
        self.0 & Self::REMOTE != 0
    }

    /// When the signal was received, in microseconds of the Unix epoch.
    pub const fn micros(self) -> u64 {
        self.0 >> 8
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stamp")
            .field("micros", &self.micros())
            .field("tag", &self.tag())
            .field("remote", &self.is_remote())
            .finish()
    }
}

/// Now, in microseconds of the Unix epoch (the wall clock, which NTP keeps in step across
/// hosts; 0 before 1970).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl From<Frame> for Bytes {
    fn from(frame: Frame) -> Self {
        frame.into_bytes()
    }
}

impl std::ops::Deref for Frame {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
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
        write!(f, "Frame({} bytes)", self.text.len())
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
    fn stamps_keep_time_kind_and_origin_in_one_word() {
        let at = unix_micros();
        let stamp = Stamp::new(at, 5);
        assert_eq!(
            (stamp.micros(), stamp.tag(), stamp.is_remote()),
            (at, 5, false)
        );
        let remote = Stamp::from_bits(stamp.to_bits()).remote();
        assert_eq!(
            (remote.micros(), remote.tag(), remote.is_remote()),
            (at, 5, true)
        );
        assert_eq!(Stamp::from_bits(0).remote(), Stamp::NONE);
        assert_eq!(Stamp::from_bits(at << 8).remote(), Stamp::NONE);
        let frame = Frame::from_static("{}").stamped(stamp);
        assert_eq!(frame.clone().stamp(), stamp);
        assert_eq!(frame, Frame::from_static("{}"));
    }

    #[test]
    fn invalid_utf8_is_refused_and_payloads_are_not_shown() {
        assert!(Frame::try_from(Bytes::from_static(b"\xff\xfe")).is_err());
        let frame = Frame::from_static(r#"{"sdp":"secret"}"#);
        assert_eq!(format!("{frame:?}"), "Frame(16 bytes)");
    }
}
