//! `PUT /api/v1/messages/{phone_hash}`: one ciphertext for each device of the recipient,
//! queued (unless ephemeral) and handed at once to the devices that are online, on any node.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::e2ee::{Device, bad_body, invalid, store_down};
use super::openapi::DatabaseDown;
use crate::auth::unix_now;
use crate::e2ee::{self, Mismatch, WantedDevice, bundle};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::store::Outgoing;

/// Messages one request may carry (one per device of the recipient).
const MAX_MESSAGES: usize = 64;

/// One ciphertext for one device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageJson {
    pub device_id: u32,
    /// The ciphertext, opaque Base64, at most `e2ee.max_content_bytes`.
    pub content: String,
    /// The device's registration id as the sender knows it; another one gets 410.
    #[serde(default)]
    pub registration_id: Option<u32>,
}

/// `PUT /api/v1/messages/{phone_hash}`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendJson {
    pub messages: Vec<MessageJson>,
    /// Delivered only to devices online now and never stored (WebRTC offers, ICE).
    #[serde(default)]
    pub ephemeral: bool,
}

fn field(field: String, reason: &str) -> bundle::Invalid {
    bundle::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

/// Checks sizes and Base64 of every content.
fn check(body: &SendJson, max: usize) -> Result<(), bundle::Invalid> {
    use base64::Engine;
    if body.messages.is_empty() || body.messages.len() > MAX_MESSAGES {
        return Err(field("messages".into(), "must hold 1 to 64 messages"));
    }
    for (i, m) in body.messages.iter().enumerate() {
        if m.content.is_empty() || m.content.len() > max {
            let reason = format!("must be 1 to {max} bytes of Base64");
            return Err(field(format!("messages[{i}].content"), &reason));
        }
        if base64::engine::general_purpose::STANDARD
            .decode(&m.content)
            .is_err()
        {
            return Err(field(format!("messages[{i}].content"), "is not Base64"));
        }
    }
    Ok(())
}

/// Send one ciphertext to each device of a user.
#[utoipa::path(
    put,
    path = "/api/v1/messages/{phone_hash}",
    tag = "e2ee",
    security(("bearer" = [])),
    params(("phone_hash" = String, Path, description = "The recipient's phone hash")),
    request_body = SendJson,
    responses(
        (status = 200, description = "`{ids: [...]}`: queued (in the order given; empty when \
            ephemeral) and handed to the devices online", body = Object,
            example = json!({"ids": [4211, 4212]})),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = ErrorBody),
        (status = 409, description = "`mismatched_devices`: `missing_devices` and \
            `extra_devices`; nothing was sent", body = Object),
        (status = 410, description = "`stale_devices`: devices registered again since; \
            nothing was sent", body = Object),
        (status = 422, description = "`invalid_field` naming it, or `invalid_body`",
            body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    Device(me): Device,
    Path(phone_hash): Path<String>,
    body: Result<Json<SendJson>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(bad_body)?;
    let checked = bundle::phone_hash(&phone_hash)
        .and_then(|phone| check(&body, state.config.e2ee.max_content_bytes).map(|()| phone));
    let phone = match checked {
        Ok(phone) => phone,
        Err(e) => return Ok(invalid(e)),
    };
    let (account, _) = state
        .store
        .e2ee_account(&phone)
        .await
        .map_err(store_down)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account"))?;
    let devices = state
        .store
        .e2ee_devices(&account)
        .await
        .map_err(store_down)?;
    let wanted: Vec<WantedDevice> = body
        .messages
        .iter()
        .map(|m| WantedDevice {
            device_id: i64::from(m.device_id),
            registration_id: m.registration_id.map(i64::from),
        })
        .collect();
    let skip = (account == me.account_id).then_some(me.device_id);
    if let Err(mismatch) = e2ee::check_devices(&devices, &wanted, skip) {
        return Ok(mismatched(mismatch));
    }
    let outgoing: Vec<Outgoing> = body
        .messages
        .into_iter()
        .map(|m| Outgoing {
            device_id: i64::from(m.device_id),
            content: m.content,
        })
        .collect();
    let now = unix_now() as i64;
    let ids = e2ee::deliver(
        &state.store,
        &state.hub,
        &me,
        &account,
        &outgoing,
        body.ephemeral,
        now,
    )
    .await
    .map_err(store_down)?;
    Ok(Json(json!({"ids": ids})).into_response())
}

fn mismatched(mismatch: Mismatch) -> Response {
    let (status, code, detail) = match mismatch {
        Mismatch::Devices { .. } => (
            StatusCode::CONFLICT,
            "mismatched_devices",
            "the messages do not match the recipient's devices",
        ),
        Mismatch::Stale { .. } => (
            StatusCode::GONE,
            "stale_devices",
            "devices registered again since their keys were fetched",
        ),
    };
    let mut body = serde_json::to_value(&mismatch).expect("a mismatch serializes");
    body["code"] = code.into();
    body["detail"] = detail.into();
    (status, Json(body)).into_response()
}
