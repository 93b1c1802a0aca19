//! The wire protocol: identifiers, the frames clients send ([`inbound`]), the frames the
//! server sends ([`ServerMessage`]), error codes and close codes. `docs/protocol.md` is the
//! human version of this module; the two change together.

/// Declares a fieldless enum whose variants each have one stable wire name: the one table
/// from which `as_str`, `from_name` and `ALL` (in declaration order) are generated, so that a
/// new variant is one line.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order (`variant as usize` indexes it).
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }

            /// The variant with wire name `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

mod frame;
mod ids;
pub mod inbound;
mod member;

use serde::Serialize;

pub use frame::{Frame, Stamp, unix_micros};
pub use ids::{ClientId, ConnId, InvalidId, NodeId, RoomId, UserId};
pub use inbound::{ClientMessage, RoomSignalKind, UserSignalKind};
pub use member::{Member, RoomGrant, matches_any};

/// WebSocket close codes the server sends, and what a client should do about each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The session ended normally.
    Normal = 1000,
    /// Authentication failed or timed out, or the client id belongs to another user.
    PolicyViolation = 1008,
    /// A text frame was not valid UTF-8 (a WebSocket protocol violation).
    InvalidPayload = 1007,
    /// A frame exceeded `max_message_bytes`.
    MessageTooBig = 1009,
    /// The server failed; reconnect with backoff.
    InternalError = 1011,
    /// The node is draining; reconnect at once (the load balancer picks another node).
    ServiceRestart = 1012,
    /// The room named in the URL is full; try again later.
    TryAgainLater = 1013,
    /// Another connection of the same user took this client id. Do not reconnect.
    Replaced = 4001,
    /// The client did not read fast enough and its outbox filled up.
    SlowConsumer = 4002,
    /// No frame and no pong within the idle timeout.
    IdleTimeout = 4003,
    /// The credentials of the connection were revoked (logout, a revoked API key, a disabled
    /// account). Do not reconnect with the same token.
    Revoked = 4004,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Whether a well-behaved client should reconnect after this close.
    pub fn should_reconnect(self) -> bool {
        matches!(
            self,
            Self::InternalError
                | Self::ServiceRestart
                | Self::TryAgainLater
                | Self::SlowConsumer
                | Self::IdleTimeout
        )
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::PolicyViolation => "policy violation",
            Self::InvalidPayload => "invalid UTF-8",
            Self::MessageTooBig => "message too big",
            Self::InternalError => "internal error",
            Self::ServiceRestart => "service restart",
            Self::TryAgainLater => "try again later",
            Self::Replaced => "replaced by a newer connection",
            Self::SlowConsumer => "slow consumer",
            Self::IdleTimeout => "idle timeout",
            Self::Revoked => "credentials revoked",
        }
    }

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::PolicyViolation => "policy_violation",
            Self::InvalidPayload => "invalid_payload",
            Self::MessageTooBig => "message_too_big",
            Self::InternalError => "internal_error",
            Self::ServiceRestart => "service_restart",
            Self::TryAgainLater => "try_again_later",
            Self::Replaced => "replaced",
            Self::SlowConsumer => "slow_consumer",
            Self::IdleTimeout => "idle_timeout",
            Self::Revoked => "revoked",
        }
    }
}

named_enum! {
    /// The stable `code` of an error frame.
    pub enum ErrorCode {
        InvalidJson = "invalid_json",
        UnknownType = "unknown_type",
        MissingField = "missing_field",
        InvalidField = "invalid_field",
        BinaryNotSupported = "binary_not_supported",
        Unauthorized = "unauthorized",
        TokenExpired = "token_expired",
        TokenRevoked = "token_revoked",
        Forbidden = "forbidden",
        AlreadyAuthenticated = "already_authenticated",
        NotInRoom = "not_in_room",
        PeerNotFound = "peer_not_found",
        UserOffline = "user_offline",
        RoomFull = "room_full",
        TooManyRooms = "too_many_rooms",
        ClientIdTaken = "client_id_taken",
        Unavailable = "unavailable",
        RateLimited = "rate_limited",
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error frame: `{"type":"error","code":...,"message":...}` plus context fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<ClientId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long to wait before sending again (`rate_limited`). (`u32`s keep the frame, which
    /// the relay path returns, small.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u32>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            room: None,
            to: None,
            target_user_id: None,
            max: None,
            retry_after_ms: None,
        }
    }

    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        // Rounded up: a client that waits exactly this long is not refused again.
        let ms = u32::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        self.retry_after_ms = Some(ms.max(1));
        self
    }

    pub fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn room(mut self, room: &RoomId) -> Self {
        self.room = Some(room.clone());
        self
    }

    pub fn max(mut self, max: usize) -> Self {
        self.max = Some(u32::try_from(max).unwrap_or(u32::MAX));
        self
    }
}

/// One entry of an `RTCConfiguration`'s `iceServers`: STUN URIs, or TURN URIs with the
/// time-limited username and credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A room member as peers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    pub client_id: ClientId,
    pub username: String,
    pub user_id: UserId,
}

/// A session's id and resume token, as `auth_success` and the `reconnect` notice carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumeGrant {
    pub session: String,
    pub resume_token: String,
}

/// Every frame the server originates (relayed signals are spliced, see [`inbound`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    AuthRequired,
    AuthSuccess {
        user: String,
        user_id: UserId,
        client_id: ClientId,
        /// The ICE servers for an `RTCPeerConnection` (STUN, and TURN with this user's
        /// credentials), when the node has any configured.
        #[serde(skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Vec<IceServer>>,
        /// The session this connection is, and the secret that resumes it after a lost
        /// connection (`resume`), when resuming is on.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeGrant>,
    },
    /// The answer to a good `resume`: the session's client id and rooms, as before; what it
    /// missed follows.
    Resumed {
        session: String,
        client_id: ClientId,
        rooms: Vec<RoomId>,
    },
    /// The answer to a `resume` that cannot be honoured; the client authenticates afresh.
    ResumeFailed {
        reason: &'static str,
        message: &'static str,
    },
    UsersInRoom {
        room: RoomId,
        users: Vec<PeerView>,
    },
    UserJoined {
        room: RoomId,
        #[serde(flatten)]
        peer: PeerView,
    },
    UserLeft {
        room: RoomId,
        #[serde(flatten)]
        peer: PeerView,
    },
    Pong,
    Reconnect {
        reason: &'static str,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeGrant>,
    },
    Error(ErrorFrame),
}

impl ServerMessage {
    /// The frame's JSON text. Serialising these types cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

impl From<ErrorFrame> for ServerMessage {
    fn from(e: ErrorFrame) -> Self {
        Self::Error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_message_shapes() {
        let peer = PeerView {
            client_id: ClientId::parse("c1").unwrap(),
            username: "bob".into(),
            user_id: UserId::parse("u2").unwrap(),
        };
        let room = RoomId::parse("r").unwrap();
        let joined = ServerMessage::UserJoined { room, peer };
        let v: serde_json::Value = serde_json::from_str(&joined.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"user_joined","room":"r","client_id":"c1","username":"bob","user_id":"u2"})
        );
        let err = ServerMessage::from(ErrorFrame::new(ErrorCode::RoomFull, "full").max(10));
        let v: serde_json::Value = serde_json::from_str(&err.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"room_full","message":"full","max":10})
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn close_codes() {
        assert_eq!(CloseCode::SlowConsumer.code(), 4002);
        assert!(CloseCode::ServiceRestart.should_reconnect());
        assert!(!CloseCode::Replaced.should_reconnect());
        assert!(!CloseCode::PolicyViolation.should_reconnect());
    }
}
