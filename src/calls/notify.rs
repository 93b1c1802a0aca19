//! What the participants of a call are told, through the hub: the owner's devices on `/ws`
//! (user-addressed, every node), and each side's signaling socket (a user of its own). Frames
//! carry session and anonymous ids only.

use serde_json::json;

use super::{Calls, Side, side_user, unix_now};
use crate::protocol::{ClientId, ConnId, ErrorCode, Frame, Member, NodeId, UserId};
use crate::store::CallSession;

/// The sender of what the server itself says (its connection id is nobody's).
pub fn server_member(node: &NodeId) -> Member {
    Member {
        client_id: ClientId::parse("calls").expect("a valid client id"),
        user_id: UserId::parse("calls").expect("a valid user id"),
        username: String::new(),
        conn: ConnId(0),
        node: node.clone(),
    }
}

/// `incoming_call`, for the owner's devices.
fn incoming(call: &CallSession) -> String {
    json!({
        "type": "incoming_call",
        "sessionId": call.session_id,
        "callerAnonymousId": call.participant_a_anon,
        "anonymousId": call.participant_b_anon,
        "ringsUntil": call.ring_deadline,
    })
    .to_string()
}

/// `call_ended` with `reason`, for the owner's devices.
pub fn owner_ended(call: &CallSession, reason: &str) -> String {
    json!({"type": "call_ended", "sessionId": call.session_id, "reason": reason}).to_string()
}

/// `call-ended` with `reason`, for a signaling socket (its `type` first: the socket closes
/// after a frame that starts so).
pub fn call_ended(reason: &'static str) -> String {
    format!(r#"{{"type":"call-ended","reason":"{reason}"}}"#)
}

impl Calls {
    /// Rings every device of the owner; `false` when none is online.
    pub(super) async fn ring(&self, call: &CallSession) -> bool {
        let owner = UserId::parse(&call.owner_id).expect("account ids are valid user ids");
        let me = server_member(&self.hub.node);
        match self
            .hub
            .send_user(&me, &owner, Frame::from(incoming(call)))
            .await
        {
            Ok(()) => true,
            Err(e) if e.code == ErrorCode::UserOffline => false,
            Err(e) => {
                tracing::warn!(code = e.code.as_str(), "a call could not ring");
                false
            }
        }
    }

    /// Marks the call missed when it still rings at its ring deadline.
    pub(super) fn spawn_ring_timer(&self, session_id: String) {
        let calls = self.clone();
        let wait = calls.config.ring_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let now = unix_now();
            let Ok(Some(call)) = calls.store.call(&session_id).await else {
                return;
            };
            if let Ok(true) = calls
                .store
                .finish_call(&session_id, "ringing", "missed", now)
                .await
            {
                metrics::counter!(crate::metrics::CALLS, "outcome" => "missed").increment(1);
                calls.ended(&call, "missed").await;
            }
        });
    }

    /// Tells every device of the owner that the call was answered (the others stop ringing),
    /// and the caller that it was.
    pub(super) async fn answered(&self, call: &CallSession) {
        let notice = json!({"type": "call_answered", "sessionId": call.session_id});
        self.tell_owner(&call.owner_id, notice.to_string()).await;
        let accepted = json!({"type": "accepted", "peer": call.participant_b_anon});
        self.tell_side(call, Side::Caller, accepted.to_string())
            .await;
    }

    /// Tells the owner's devices and the caller that a call that rang is over.
    pub(super) async fn ended(&self, call: &CallSession, reason: &'static str) {
        self.tell_owner(&call.owner_id, owner_ended(call, reason))
            .await;
        self.tell_side(call, Side::Caller, call_ended(reason)).await;
    }

    /// Sends `frame` to every device of `owner_id`, on any node (none online: nothing).
    pub(super) async fn tell_owner(&self, owner_id: &str, frame: String) {
        let Ok(owner) = UserId::parse(owner_id) else {
            return;
        };
        let me = server_member(&self.hub.node);
        let _ = self.hub.send_user(&me, &owner, Frame::from(frame)).await;
    }

    /// Sends `frame` to side `side`'s signaling socket, on any node; `false` when it has none.
    pub async fn tell_side(&self, call: &CallSession, side: Side, frame: String) -> bool {
        let me = server_member(&self.hub.node);
        let target = side_user(&call.session_id, side);
        self.hub
            .send_user(&me, &target, Frame::from(frame))
            .await
            .is_ok()
    }

    /// Records `side`'s DTLS fingerprint; once both are known, stores their comparison value
    /// and tells both sides.
    pub async fn fingerprint(&self, call: &CallSession, side: Side, fingerprint: &str) {
        let session = &call.session_id;
        let Ok(Some(now)) = self
            .store
            .record_fingerprint(session, side == Side::Owner, fingerprint)
            .await
        else {
            return;
        };
        let (Some(a), Some(b)) = (&now.fingerprint_a, &now.fingerprint_b) else {
            return;
        };
        let combined = super::signal::combined_fingerprint(a, b);
        if self
            .store
            .set_call_fingerprint(session, &combined)
            .await
            .is_err()
        {
            return;
        }
        for (me, local, remote) in [(Side::Caller, a, b), (Side::Owner, b, a)] {
            let frame = json!({
                "type": "fingerprints",
                "local": local,
                "remote": remote,
                "encryptionFingerprint": combined,
            });
            self.tell_side(call, me, frame.to_string()).await;
        }
    }
}
