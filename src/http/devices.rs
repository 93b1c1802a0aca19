//! An E2EE account's devices after registration: `PUT /api/v1/devices/push-token` (the push
//! service's token for the caller's device, sealed at rest with the node's data key) and
//! `DELETE /api/v1/devices/{device_id}` (a device of the caller's account goes, with its
//! keys, queued messages, tickets and push token).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::e2ee::{Device, bad_body, store_down};
use super::openapi::DatabaseDown;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::store::DeviceRef;

/// The longest push token taken (APNs and FCM tokens are a few hundred characters).
const MAX_PUSH_TOKEN: usize = 4096;

/// `PUT /api/v1/devices/push-token`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushTokenJson {
    /// The push service's token for this device; `null` removes it.
    pub push_token: Option<String>,
}

/// Set (or remove) the caller's push token.
#[utoipa::path(
    put,
    path = "/api/v1/devices/push-token",
    tag = "e2ee",
    security(("bearer" = [])),
    request_body = PushTokenJson,
    responses(
        (status = 200, description = "`{push_token: \"stored\" | \"removed\"}`; the token is \
            kept sealed with the node's data key", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, or `invalid_field`: longer than 4096",
            body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn push_token(
    State(state): State<AppState>,
    Device(me): Device,
    body: Result<Json<PushTokenJson>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(bad_body)?;
    let sealed = match body.push_token.as_deref() {
        Some(token) if token.is_empty() || token.len() > MAX_PUSH_TOKEN => {
            let detail = format!("push_token: must be 1 to {MAX_PUSH_TOKEN} characters");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                detail,
            ));
        }
        Some(token) => Some(state.data_keys.seal(token, &me.key())),
        None => None,
    };
    state
        .store
        .e2ee_set_push_token(&me, sealed.as_deref())
        .await
        .map_err(store_down)?;
    let done = if sealed.is_some() {
        "stored"
    } else {
        "removed"
    };
    Ok(Json(json!({"push_token": done})))
}

/// Remove a device of the caller's account.
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{device_id}",
    tag = "e2ee",
    security(("bearer" = [])),
    params(("device_id" = u32, Path, description = "A device of the caller's account")),
    responses(
        (status = 204, description = "Removed, with its keys, queued messages, tickets and \
            push token; its token no longer works"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: the account has no such device",
            body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Device(me): Device,
    Path(device_id): Path<u32>,
) -> Result<StatusCode, ApiError> {
    let device = DeviceRef {
        account_id: me.account_id,
        device_id: i64::from(device_id),
    };
    let removed = state
        .store
        .e2ee_remove_device(&device)
        .await
        .map_err(store_down)?;
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such device",
        ));
    }
    let user = crate::e2ee::hub_user(&device);
    state
        .hub
        .registry
        .close_where(|h| h.user == user, crate::protocol::CloseCode::Revoked);
    Ok(StatusCode::NO_CONTENT)
}
