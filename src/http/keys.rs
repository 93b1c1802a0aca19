//! The E2EE key directory: `PUT /api/v1/keys` (more one-time prekeys, a new signed prekey),
//! `GET /api/v1/keys/count` and `GET /api/v1/keys/{phone_hash}`, the bundle fetch that claims
//! one one-time prekey per device of the target, or serves its fallback key when none is left.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::e2ee::{
    Device, PrekeyJson, SignedJson, bad_body, invalid, limit, one_time, signed, store_down,
};
use super::openapi::{DatabaseDown, RateLimited};
use crate::auth::unix_now;
use crate::e2ee::{self, bundle};
use crate::error::{ApiError, ErrorBody};
use crate::limits::Rate;
use crate::metrics as m;
use crate::state::AppState;
use crate::store::{DeviceKeys, DeviceRef, Upload};

/// `PUT /api/v1/keys`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadJson {
    /// Up to 100 one-time prekeys.
    #[serde(default)]
    pub one_time_prekeys: Vec<PrekeyJson>,
    /// A new signed prekey, signed by the account's identity key.
    #[serde(default)]
    pub signed_prekey: Option<SignedJson>,
}

/// Upload one-time prekeys and, optionally, a new signed prekey.
#[utoipa::path(
    put,
    path = "/api/v1/keys",
    tag = "e2ee",
    security(("bearer" = [])),
    request_body = UploadJson,
    responses(
        (status = 200, description = "`{one_time_prekeys: N}`: what the device holds now. A \
            retried upload stores nothing twice", body = Object,
            example = json!({"one_time_prekeys": 100})),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`prekey_reused` (`key_ids`: claimed in the last 7 days, \
            or held with another key; nothing stored) or `too_many_prekeys` (more than 500 \
            held)", body = ErrorBody),
        (status = 422, description = "`invalid_field` naming it, or `invalid_body`",
            body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Device(me): Device,
    body: Result<Json<UploadJson>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(bad_body)?;
    let keys = one_time(&body.one_time_prekeys);
    if let Err(e) = bundle::one_time_keys(&keys) {
        return Ok(invalid(e));
    }
    let signed_prekey = body.signed_prekey.as_ref().map(signed);
    if let Some(key) = &signed_prekey {
        let identity = state
            .store
            .e2ee_identity_key(&me.account_id)
            .await
            .map_err(store_down)?
            .unwrap_or_default();
        let checked = bundle::identity_key(&identity).and_then(|verifier| {
            let fields = ("signed_prekey.public_key", "signed_prekey.signature");
            bundle::signed_key(&verifier, fields.0, fields.1, key)
        });
        if let Err(e) = checked {
            return Ok(invalid(e));
        }
    }
    let cap = bundle::MAX_KEYS_PER_DEVICE;
    let outcome = state
        .store
        .e2ee_upload(&me, &keys, signed_prekey.as_ref(), cap, unix_now() as i64)
        .await
        .map_err(store_down)?;
    Ok(match outcome {
        Upload::Stored(held) => Json(json!({"one_time_prekeys": held})).into_response(),
        Upload::Conflict(ids) => conflict(
            "prekey_reused",
            "these key ids were claimed in the last 7 days, or are held with another key; \
             nothing was stored",
            json!(ids),
        ),
        Upload::TooMany { held } => conflict(
            "too_many_prekeys",
            &format!("a device holds at most {cap} one-time prekeys; it holds {held}"),
            Value::Null,
        ),
    })
}

fn conflict(code: &str, detail: &str, key_ids: Value) -> Response {
    let mut body = json!({"detail": detail, "code": code});
    if !key_ids.is_null() {
        body["key_ids"] = key_ids;
    }
    (StatusCode::CONFLICT, Json(body)).into_response()
}

/// How many one-time prekeys the caller's device holds.
#[utoipa::path(
    get,
    path = "/api/v1/keys/count",
    tag = "e2ee",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{one_time_prekeys: N}` (0 when none is left): refill \
            below a threshold", body = Object, example = json!({"one_time_prekeys": 17})),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn count(
    State(state): State<AppState>,
    Device(me): Device,
) -> Result<Json<Value>, ApiError> {
    let held = state
        .store
        .e2ee_prekey_count(&me)
        .await
        .map_err(store_down)?;
    Ok(Json(json!({"one_time_prekeys": held})))
}

/// Fetch a user's key bundle, claiming one one-time prekey per device.
#[utoipa::path(
    get,
    path = "/api/v1/keys/{phone_hash}",
    tag = "e2ee",
    security(("bearer" = [])),
    params(("phone_hash" = String, Path, description = "SHA-256 of the phone number, 64 hex")),
    responses(
        (status = 200, description = "`{identity_key, devices: [...]}`: each device with its \
            signed prekey and one claimed one-time prekey, or `one_time_prekey: null` and its \
            fallback key when none was left (its owner is told to refill)", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no account has this phone hash",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: not 64 hex digits", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn bundle_of(
    State(state): State<AppState>,
    Device(me): Device,
    Path(phone_hash): Path<String>,
) -> Result<Response, ApiError> {
    let phone = match bundle::phone_hash(&phone_hash) {
        Ok(phone) => phone,
        Err(e) => return Ok(invalid(e)),
    };
    let per_minute = state.config.e2ee.claim_rate;
    let rate = Rate::per_minute("e2ee_claim_rate", per_minute, per_minute);
    limit(
        &state,
        rate,
        &format!("{}:{}>{phone}", me.account_id, me.device_id),
    )
    .await?;
    let (account, identity_key) = state
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
    let mut served = Vec::with_capacity(devices.len());
    for device in devices {
        served.push(claim(&state, &account, device).await?);
    }
    Ok(Json(json!({"identity_key": identity_key, "devices": served})).into_response())
}

/// One device's part of a bundle, with a claimed one-time prekey or its fallback key.
async fn claim(state: &AppState, account: &str, device: DeviceKeys) -> Result<Value, ApiError> {
    let owner = DeviceRef {
        account_id: account.to_owned(),
        device_id: device.device_id,
    };
    let key = state
        .store
        .e2ee_claim(&owner, unix_now() as i64)
        .await
        .map_err(store_down)?;
    let label = if key.is_some() {
        "one_time"
    } else {
        "fallback"
    };
    metrics::counter!(m::E2EE_CLAIMS, "key" => label).increment(1);
    let (one_time, fallback) = match key {
        Some(k) => (
            json!({"key_id": k.key_id, "public_key": k.public_key}),
            Value::Null,
        ),
        None => {
            e2ee::notify_refill(&state.hub, &owner);
            let fallback = json!({
                "key_id": device.fallback_key_id,
                "public_key": device.fallback_key,
                "signature": device.fallback_signature,
            });
            (Value::Null, fallback)
        }
    };
    Ok(json!({
        "device_id": device.device_id,
        "registration_id": device.registration_id,
        "signed_prekey": device.signed_prekey,
        "signed_prekey_id": device.signed_prekey_id,
        "prekey_signature": device.prekey_signature,
        "one_time_prekey": one_time,
        "fallback_key": fallback,
    }))
}
