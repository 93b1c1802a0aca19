//! The E2EE relay: a directory of public key bundles and a queue of encrypted messages for
//! devices that are offline (seed 003's key directory and store-and-forward). Switchboard never
//! sees plaintext: it checks the shapes and signatures of public keys ([`bundle`]), hands out
//! each one-time prekey at most once, and keeps opaque ciphertexts until their device
//! acknowledges them.
//!
//! A device is an account's numbered device with a bearer token (only its SHA-256 is stored).
//! Its WebSocket joins the hub as the user [`hub_user`]`(device)`, so a message reaches it on
//! whichever node it is connected to: every message is queued in the store first, then handed
//! to the hub, and deleted only when the device acknowledges it ([`deliver`]).
//! `docs/e2ee.md` describes the API.

pub mod bundle;
mod delivery;
mod devices;

use std::time::Duration;

use crate::accounts::{new_secret, secret_hash};
use crate::protocol::{ClientId, UserId};
use crate::store::{DeviceRef, Store, StoreError};

pub use delivery::{deliver, message_frame, notify_refill, queue_empty_frame};
pub use devices::{Mismatch, WantedDevice, check_devices};

/// How long a WebSocket ticket is good for (seed 003).
pub const TICKET_LIFETIME: Duration = Duration::from_secs(300);
/// Queued messages a connecting device is sent per page.
pub const DRAIN_PAGE: i64 = 100;

/// The hub user a device's WebSocket connects as: unique per device, never a login's id.
pub fn hub_user(device: &DeviceRef) -> UserId {
    UserId::parse(&format!("e2ee:{}:{}", device.account_id, device.device_id))
        .expect("account ids are UUIDs")
}

/// Whether `user` is an E2EE device's hub user ([`hub_user`]): reserved for the devices'
/// sockets, so that no token's connection may be one or send it anything.
pub fn is_device_user(user: &UserId) -> bool {
    user.as_str().starts_with("e2ee:")
}

/// The client id a device's WebSocket claims: a newer connection of the device takes over.
pub fn hub_client(device: &DeviceRef) -> ClientId {
    ClientId::parse(&format!("e2ee-{}-{}", device.account_id, device.device_id))
        .expect("account ids are UUIDs")
}

/// A new device bearer token and the hash the store keeps of it.
pub fn new_device_token() -> (String, String) {
    new_secret()
}

/// The device whose bearer token is `token`.
pub async fn device_by_token(store: &Store, token: &str) -> Result<Option<DeviceRef>, StoreError> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    store.e2ee_device_by_token(&secret_hash(token)).await
}

/// Issues a single-use WebSocket ticket for `device`, good for [`TICKET_LIFETIME`] from
/// `now` (Unix seconds); only its hash is stored.
pub async fn issue_ticket(
    store: &Store,
    device: &DeviceRef,
    now: i64,
) -> Result<String, StoreError> {
    let (ticket, hash) = new_secret();
    let lifetime = i64::try_from(TICKET_LIFETIME.as_secs()).unwrap_or(300);
    store.e2ee_add_ticket(&hash, device, now + lifetime).await?;
    Ok(ticket)
}

/// Takes `ticket`: the device it was issued to, once, before it expires.
pub async fn take_ticket(
    store: &Store,
    ticket: &str,
    now: i64,
) -> Result<Option<DeviceRef>, StoreError> {
    if ticket.is_empty() || ticket.len() > 256 {
        return Ok(None);
    }
    store.e2ee_take_ticket(&secret_hash(ticket), now).await
}
