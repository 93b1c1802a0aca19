//! Signal frames the tool sends.
//!
//! Each timed signal carries a [`Stamp`] (sender, sequence number, scheduled send time in
//! nanoseconds since the process epoch) as an `lt` field *inside* its payload object
//! (`candidate` or `offer`), which the relay passes through untouched. Offers carry a ~3 KB SDP,
//! candidates make a ~250-byte frame, like a browser's.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// Who sent a timed signal, which one, and when it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
    pub sched_ns: u64,
}

impl Stamp {
    /// `sender.seq.sched_ns`
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.sender, self.seq, self.sched_ns)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let stamp = Self {
            sender: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            sched_ns: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

/// Builds one sender's frames; addressing is fixed at construction.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    tail: String,
    first_is_offer: bool,
}

impl FrameBuilder {
    /// `to`: the recipient's client id, or `None` to broadcast to the room.
    pub fn new(to: Option<&str>, first_is_offer: bool) -> Self {
        let tail = match to {
            Some(to) => format!(",\"to\":{}}}", json_str(to)),
            None => "}".to_owned(),
        };
        Self {
            tail,
            first_is_offer,
        }
    }

    /// The frame for message `stamp.seq`: an offer first (if so built), then candidates.
    pub fn build(&self, stamp: &Stamp) -> String {
        let lt = stamp.encode();
        let mut out = String::with_capacity(if stamp.seq == 0 { 3300 } else { 300 });
        if self.first_is_offer && stamp.seq == 0 {
            let _ = write!(
                out,
                r#"{{"type":"offer","offer":{{"type":"offer","sdp":{},"lt":"{lt}"}}"#,
                json_str(sdp_offer())
            );
        } else {
            let _ = write!(
                out,
                r#"{{"type":"ice_candidate","candidate":{{"candidate":"{CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw","lt":"{lt}"}}"#
            );
        }
        out.push_str(&self.tail);
        out
    }
}

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 198.51.100.7 54321 typ srflx \
raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-id 1 network-cost 10";

/// A plausible ~3 KB SDP offer (one audio and one video section), built once.
pub fn sdp_offer() -> &'static str {
    static SDP: OnceLock<String> = OnceLock::new();
    SDP.get_or_init(|| {
        let mut sdp = String::from(
            "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             a=group:BUNDLE 0 1\r\na=msid-semantic: WMS stream\r\n",
        );
        for (mid, kind) in [(0, "audio"), (1, "video")] {
            let _ = write!(
                sdp,
                "m={kind} 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
                 a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n\
                 a=ice-options:trickle\r\na=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:\
                 61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\na=setup:actpass\r\n\
                 a=mid:{mid}\r\na=sendrecv\r\na=rtcp-mux\r\n"
            );
            for pt in 96..110 {
                let _ = write!(sdp, "a=rtpmap:{pt} {kind}-codec-{pt}/90000\r\na=rtcp-fb:{pt} nack\r\n");
            }
        }
        while sdp.len() < 3000 {
            sdp.push_str("a=ssrc:1001 cname:loadtestloadtest\r\n");
        }
        sdp
    })
}

/// A JSON string literal for `s`.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_rejects_junk() {
        let s = Stamp {
            sender: 7,
            seq: 123_456,
            sched_ns: u64::MAX,
        };
        assert_eq!(Stamp::decode(&s.encode()), Some(s));
        for bad in ["", "1.2", "1.2.3.4", "a.2.3", "-1.2.3", "1..3"] {
            assert_eq!(Stamp::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_have_browser_like_sizes_and_shapes() {
        let b = FrameBuilder::new(Some("peer-1"), true);
        let offer = b.build(&Stamp {
            sender: 1,
            seq: 0,
            sched_ns: 5,
        });
        let cand = b.build(&Stamp {
            sender: 1,
            seq: 1,
            sched_ns: 6,
        });
        assert!((3000..3600).contains(&offer.len()), "offer {}", offer.len());
        assert!((200..300).contains(&cand.len()), "candidate {}", cand.len());
        let v: serde_json::Value = serde_json::from_str(&offer).unwrap();
        assert_eq!(v["type"], "offer");
        assert_eq!(v["to"], "peer-1");
        let v: serde_json::Value = serde_json::from_str(&cand).unwrap();
        assert_eq!(v["type"], "ice_candidate");
        let broadcast = FrameBuilder::new(None, false).build(&Stamp {
            sender: 0,
            seq: 0,
            sched_ns: 0,
        });
        assert!(!broadcast.contains("\"to\"") && broadcast.contains("ice_candidate"));
    }
}
