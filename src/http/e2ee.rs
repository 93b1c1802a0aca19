//! The E2EE relay's accounts and devices: `POST /api/v1/register` (an account and its first
//! device), `POST /api/v1/devices` (another device of the caller's account) and
//! `POST /api/v1/ws-token` (a single-use WebSocket ticket), with the device bearer extractor
//! and the errors the other E2EE routes share. `docs/e2ee.md` describes the API.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::openapi::{DatabaseDown, InvalidBody, RateLimited};
use crate::auth::{bearer_token, unix_now};
use crate::e2ee::{self, bundle};
use crate::error::{ApiError, ErrorBody};
use crate::limits::Rate;
use crate::state::AppState;
use crate::store::{DeviceRef, NewDevice, OneTimeKey, SignedKey, StoreError};

/// The device behind an `Authorization: Bearer <device_token>` header.
pub struct Device(pub DeviceRef);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| {
                crate::metrics::auth_failure("missing");
                ApiError::unauthorized("missing Authorization: Bearer <device_token>")
            })?;
        match e2ee::device_by_token(&state.store, token).await {
            Ok(Some(device)) => Ok(Self(device)),
            Ok(None) => {
                crate::metrics::auth_failure("invalid");
                Err(ApiError::unauthorized("unknown device token"))
            }
            Err(e) => Err(store_down(e)),
        }
    }
}

/// 503 `unavailable` for a store that failed (logged without its query's values).
pub fn store_down(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "the E2EE store failed");
    ApiError::unavailable("unavailable", "the database does not answer; try again")
}

/// A refused JSON body: its status (422 for a field missing or of the wrong type, naming it).
pub fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
}

/// 422 `invalid_field` naming the field, in `field` too.
pub fn invalid(e: bundle::Invalid) -> Response {
    let body = json!({"detail": e.to_string(), "code": "invalid_field", "field": e.field});
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// 429 `rate_limited` for limit `name` on `key`, cluster-wide.
pub async fn limit(state: &AppState, rate: Rate, key: &str) -> Result<(), ApiError> {
    state.throttle.hit(rate, key).await.map_err(|wait| {
        crate::metrics::limit_hit(rate.name);
        ApiError::rate_limited(rate.name, wait)
    })
}

/// A one-time prekey as uploaded and served.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrekeyJson {
    pub key_id: u32,
    /// X25519 public key, 32 bytes of Base64.
    pub public_key: String,
}

/// A signed key (a signed prekey in uploads, the fallback key everywhere).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedJson {
    pub key_id: u32,
    /// X25519 public key, 32 bytes of Base64.
    pub public_key: String,
    /// Ed25519 signature of the 32 key bytes by the identity key, 64 bytes of Base64.
    pub signature: String,
}

/// A device's keys: what registering an account (with `phone_hash` and `identity_key`) or a
/// device publishes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceJson {
    /// SHA-256 of the phone number, 64 hex digits: required for `/register` only.
    #[serde(default)]
    pub phone_hash: Option<String>,
    /// Required for `/register`; for `/devices`, the account's key, if given, must match.
    #[serde(default)]
    pub identity_key: Option<String>,
    pub signed_prekey: String,
    pub signed_prekey_id: u32,
    pub prekey_signature: String,
    #[serde(default)]
    pub one_time_prekeys: Vec<PrekeyJson>,
    pub fallback_key: SignedJson,
    /// The client's registration id; messages naming another one get 410.
    #[serde(default)]
    pub registration_id: u32,
}

pub fn one_time(keys: &[PrekeyJson]) -> Vec<OneTimeKey> {
    keys.iter()
        .map(|k| OneTimeKey {
            key_id: i64::from(k.key_id),
            public_key: k.public_key.clone(),
        })
        .collect()
}

pub fn signed(key: &SignedJson) -> SignedKey {
    SignedKey {
        key_id: i64::from(key.key_id),
        public_key: key.public_key.clone(),
        signature: key.signature.clone(),
    }
}

/// Checks `device`'s keys against `identity` (Base64) and builds what the store keeps, with a
/// fresh bearer token (returned).
fn new_device(identity: &str, device: &DeviceJson) -> Result<(NewDevice, String), bundle::Invalid> {
    let verifier = bundle::identity_key(identity)?;
    let signed_prekey = SignedKey {
        key_id: i64::from(device.signed_prekey_id),
        public_key: device.signed_prekey.clone(),
        signature: device.prekey_signature.clone(),
    };
    bundle::signed_key(
        &verifier,
        "signed_prekey",
        "prekey_signature",
        &signed_prekey,
    )?;
    let fallback_key = signed(&device.fallback_key);
    bundle::signed_key(
        &verifier,
        "fallback_key.public_key",
        "fallback_key.signature",
        &fallback_key,
    )?;
    let one_time_keys = one_time(&device.one_time_prekeys);
    bundle::one_time_keys(&one_time_keys)?;
    let (token, token_hash) = e2ee::new_device_token();
    let new = NewDevice {
        token_hash,
        registration_id: i64::from(device.registration_id),
        signed_prekey,
        fallback_key,
        one_time_keys,
    };
    Ok((new, token))
}

/// A registered device's credentials (shown once).
fn registered(user_id: &str, device_id: i64, token: String) -> Response {
    let body = json!({"user_id": user_id, "device_id": device_id, "device_token": token});
    let headers = [(header::CACHE_CONTROL, "no-store")];
    (StatusCode::CREATED, headers, Json(body)).into_response()
}

/// Register an account and its first device.
#[utoipa::path(
    post,
    path = "/api/v1/register",
    tag = "e2ee",
    request_body = DeviceJson,
    responses(
        (status = 201, description = "`{user_id, device_id, device_token}`: the device token is \
            shown once and is the device's bearer credential", body = Object,
            example = json!({"user_id": "5f0c8a9e-3b8e-4a8e-9d1c-0d6f1f2b7c11", "device_id": 1,
                "device_token": "q3Jm0v5CkT2cO1hXyLp8dW4eRz7uA9sB6nF0gHjKlMo"})),
        (status = 409, description = "`already_registered`: the phone hash has an account",
            body = ErrorBody),
        (status = 413, description = "`too_large`: bodies stop at 64 KiB", body = ErrorBody),
        (status = 422, description = "`invalid_field` (naming it in `field`: bad Base64, a \
            wrong length, a signature that does not verify, more than 100 keys) or \
            `invalid_body`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    super::Limited(ip): super::Limited,
    body: Result<Json<DeviceJson>, JsonRejection>,
) -> Result<Response, ApiError> {
    let per_hour = state.config.e2ee.register_rate;
    let rate = Rate::per_hour("e2ee_register_rate", per_hour, per_hour);
    limit(&state, rate, &crate::client_ip::budget_key(ip)).await?;
    let Json(body) = body.map_err(bad_body)?;
    let required = |field: &str| bundle::Invalid {
        field: field.into(),
        reason: "is required".into(),
    };
    let phone = body
        .phone_hash
        .as_deref()
        .ok_or_else(|| required("phone_hash"));
    let phone = match phone.and_then(bundle::phone_hash) {
        Ok(phone) => phone,
        Err(e) => return Ok(invalid(e)),
    };
    let Some(identity) = body.identity_key.as_deref() else {
        return Ok(invalid(required("identity_key")));
    };
    let (device, token) = match new_device(identity, &body) {
        Ok(made) => made,
        Err(e) => return Ok(invalid(e)),
    };
    let stored = state
        .store
        .e2ee_register(&phone, identity, &device, unix_now() as i64)
        .await;
    match stored {
        Ok(user_id) => Ok(registered(&user_id, 1, token)),
        Err(StoreError::Duplicate(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_registered",
            "this phone hash has an account; add devices with POST /api/v1/devices",
        )),
        Err(e) => Err(store_down(e)),
    }
}

/// Add a device to the caller's account.
#[utoipa::path(
    post,
    path = "/api/v1/devices",
    tag = "e2ee",
    security(("bearer" = [])),
    request_body = DeviceJson,
    responses(
        (status = 201, description = "`{user_id, device_id, device_token}` of the new device",
            body = Object),
        (status = 401, description = "`unauthorized`: no device token, or an unknown one",
            body = ErrorBody),
        (status = 422, response = InvalidBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn add_device(
    State(state): State<AppState>,
    _: super::Limited,
    Device(me): Device,
    body: Result<Json<DeviceJson>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(bad_body)?;
    let identity = state
        .store
        .e2ee_identity_key(&me.account_id)
        .await
        .map_err(store_down)?
        .ok_or_else(|| ApiError::unauthorized("unknown device token"))?;
    if body.identity_key.as_ref().is_some_and(|k| *k != identity) {
        let e = bundle::Invalid {
            field: "identity_key".into(),
            reason: "is not the account's identity key".into(),
        };
        return Ok(invalid(e));
    }
    let (device, token) = match new_device(&identity, &body) {
        Ok(made) => made,
        Err(e) => return Ok(invalid(e)),
    };
    let now = unix_now() as i64;
    let id = state
        .store
        .e2ee_add_device(&me.account_id, &device, now)
        .await
        .map_err(store_down)?;
    Ok(registered(&me.account_id, id, token))
}

/// A single-use WebSocket ticket for the caller's device.
#[utoipa::path(
    post,
    path = "/api/v1/ws-token",
    tag = "e2ee",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{token, expires_in}`: open `/api/v1/ws?token=…` within \
            `expires_in` seconds; the ticket works once", body = Object,
            example = json!({"token": "Zk3w...", "expires_in": 300})),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn ws_token(
    State(state): State<AppState>,
    _: super::Limited,
    Device(me): Device,
) -> Result<Response, ApiError> {
    let per_minute = state.config.e2ee.ticket_rate;
    let rate = Rate::per_minute("e2ee_ticket_rate", per_minute, per_minute);
    let key = format!("{}:{}", me.account_id, me.device_id);
    limit(&state, rate, &key).await?;
    let ticket = e2ee::issue_ticket(&state.store, &me, unix_now() as i64)
        .await
        .map_err(store_down)?;
    let body = json!({"token": ticket, "expires_in": e2ee::TICKET_LIFETIME.as_secs()});
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
