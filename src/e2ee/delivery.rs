//! Store and forward. A message is queued in the store first, always, and only then handed to
//! the hub, which gives it to the recipient device's WebSocket on whichever node holds it; the
//! store deletes it when the device acknowledges it. So a message is never lost: at worst
//! (a node dies before the acknowledgement) it is delivered again. Ephemeral messages (WebRTC
//! offers and ICE candidates) are handed to the hub only and never stored.

use serde_json::json;

use super::hub_user;
use crate::hub::Hub;
use crate::metrics as m;
use crate::protocol::Frame;
use crate::store::{DeviceRef, Outgoing, Queued, Store, StoreError};

/// A `message` frame: `{type, id, from: {user_id, device_id}, content, sent_at}`; `id` is null
/// for an ephemeral message, which is not acknowledged.
pub fn message_frame(message: &Queued, ephemeral: bool) -> Frame {
    let id = (!ephemeral).then_some(message.id);
    let mut frame = json!({
        "type": "message",
        "id": id,
        "from": {"user_id": message.sender_id, "device_id": message.sender_device},
        "content": message.content,
        "sent_at": message.sent_at,
    });
    if ephemeral {
        frame["ephemeral"] = true.into();
    }
    Frame::from(frame.to_string())
}

/// `{"type":"queue_empty"}`: every message queued when the device connected was sent.
pub fn queue_empty_frame() -> Frame {
    Frame::from_static(r#"{"type":"queue_empty"}"#)
}

/// Queues `messages` from `sender` for devices of `recipient` (unless `ephemeral`) and hands
/// them to the devices' connections; returns the queued ids (none when ephemeral).
pub async fn deliver(
    store: &Store,
    hub: &Hub,
    sender: &DeviceRef,
    recipient: &str,
    messages: &[Outgoing],
    ephemeral: bool,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let ids = if ephemeral {
        vec![0; messages.len()]
    } else {
        store.e2ee_enqueue(recipient, sender, messages, now).await?
    };
    for (message, id) in messages.iter().zip(&ids) {
        let queued = Queued {
            id: *id,
            sender_id: sender.account_id.clone(),
            sender_device: sender.device_id,
            content: message.content.clone(),
            sent_at: now,
        };
        let device = DeviceRef {
            account_id: recipient.to_owned(),
            device_id: message.device_id,
        };
        hub.post_user(&hub_user(&device), message_frame(&queued, ephemeral));
    }
    let kind = if ephemeral { "ephemeral" } else { "queued" };
    metrics::counter!(m::E2EE_MESSAGES, "kind" => kind).increment(messages.len() as u64);
    Ok(if ephemeral { Vec::new() } else { ids })
}

/// Tells the online devices of `device` that its one-time prekeys ran out (a peer was given
/// its fallback key): `{"type":"prekeys_low","one_time_prekeys":0}`.
pub fn notify_refill(hub: &Hub, device: &DeviceRef) {
    let frame = Frame::from_static(r#"{"type":"prekeys_low","one_time_prekeys":0}"#);
    hub.post_user(&hub_user(device), frame);
}
