//! Seed 004's account and code routes under `/api/v1`: register and log in (the same accounts
//! as `/auth/*`), generate, list and revoke call codes, and draw a code as an SVG QR image.
//! Code checks and calls are in [`super::call_sessions`].

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::{bad_body, log_in, no_store};
use super::openapi::{DatabaseDown, InvalidBody, RateLimited, Refused};
use super::{Bearer, Limited};
use crate::accounts;
use crate::auth::{self, unix_seconds as now};
use crate::calls::{CallError, Calls, code};
use crate::error::{ApiError, ErrorBody};
use crate::protocol::UserId;
use crate::state::AppState;
use crate::store::{SealedProfile, User};

/// The calls service of this node.
pub(super) fn calls(state: &AppState) -> Calls {
    Calls {
        store: state.store.clone(),
        hub: std::sync::Arc::clone(&state.hub),
        config: state.config.calls.clone(),
    }
}

/// Unix seconds as RFC 3339 (`2026-12-12T10:00:00Z`).
pub(super) fn rfc3339(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        let detail = e.to_string();
        match e {
            CallError::Malformed => ApiError::bad_request("malformed_code", detail),
            CallError::Invalid => ApiError::new(StatusCode::NOT_FOUND, "invalid_code", detail),
            CallError::NoSuchCall => ApiError::new(StatusCode::NOT_FOUND, "no_such_call", detail),
            CallError::Taken => ApiError::new(StatusCode::CONFLICT, "call_taken", detail),
            CallError::Over => ApiError::new(StatusCode::GONE, "call_over", detail),
            CallError::Store(e) => ApiError::from(e),
        }
    }
}

/// The body of `POST /api/v1/auth/register`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterV1 {
    #[schema(example = "alice")]
    username: String,
    password: String,
    /// Optional; kept sealed with the data key, never shown to callers.
    #[serde(default)]
    emergency_contact: Option<String>,
    /// Optional; kept sealed with the data key, never shown to callers.
    #[serde(default)]
    vehicle_number: Option<String>,
}

/// The body of `POST /api/v1/auth/login`.
#[derive(Deserialize, ToSchema)]
pub struct LoginV1 {
    #[schema(example = "alice")]
    username: String,
    password: String,
}

/// The body of `POST /api/v1/tokens/generate`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Generate {
    /// The caller's own account id (an admin may name another account).
    user_id: String,
}

/// The body of `POST /api/v1/tokens/qr`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrRequest {
    /// A code as `generate` returned it.
    #[schema(example = "pqc:1:q3Jm0v5CkT2cO1hXyLp8dW4eRz7uA9sB6nF0gHjKlMo:1a2b3c4d")]
    qr_code_data: String,
}

/// An access token for `user`: `{token, expiresAt, userId}`.
fn session(state: &AppState, user: &User) -> Value {
    let subject = UserId::parse(&user.id).expect("account ids are valid user ids");
    let ttl = super::auth::ACCESS_TTL.min(state.config.max_token_lifetime);
    let mut claims = auth::claims(&subject, &user.username, ttl);
    claims.role = (user.role == "admin").then(|| "admin".to_owned());
    let expires = now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0));
    json!({"token": state.tokens.mint(&claims), "expiresAt": rfc3339(expires), "userId": user.id})
}

/// Create an account (seed 004's shape).
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "calls",
    request_body = RegisterV1,
    responses(
        (status = 201, description = "`{token, expiresAt, userId}`", body = Object),
        (status = 400, description = "`invalid_body`, `invalid_username`, `invalid_password`, \
            `invalid_profile`", body = ErrorBody),
        (status = 403, description = "`registration_closed`", body = ErrorBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 415, response = InvalidBody),
        (status = 422, response = InvalidBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    _: Limited,
    body: Result<Json<RegisterV1>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !state.config.registration_open() {
        let detail = "registration is closed on this deployment";
        return Err(ApiError::forbidden(detail).with_code("registration_closed"));
    }
    let Json(new) = body.map_err(bad_body)?;
    let profile = [&new.emergency_contact, &new.vehicle_number];
    if profile
        .iter()
        .any(|f| f.as_ref().is_some_and(|f| f.chars().count() > 256))
    {
        let detail = "emergencyContact and vehicleNumber are at most 256 characters";
        return Err(ApiError::bad_request("invalid_profile", detail));
    }
    let user = accounts::add_user(
        &state.store,
        &new.username,
        &new.password,
        None,
        "user",
        now(),
    )
    .await?;
    store_profile(&state, &user.id, new.emergency_contact, new.vehicle_number).await?;
    Ok(no_store(StatusCode::CREATED, session(&state, &user)))
}

/// Log in (seed 004's shape).
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "calls",
    request_body = LoginV1,
    responses(
        (status = 200, description = "`{token, expiresAt, userId}`", body = Object),
        (status = 400, response = InvalidBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 415, response = InvalidBody),
        (status = 422, response = InvalidBody),
        (status = 429, description = "`rate_limited`, `account_locked`, `address_locked`",
            body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Limited(ip): Limited,
    body: Result<Json<LoginV1>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(login) = body.map_err(bad_body)?;
    let user = log_in(&state, &login.username, &login.password, ip).await?;
    Ok(no_store(StatusCode::OK, session(&state, &user)))
}

/// Generate a call code.
///
/// The code's token is 256 random bits; only its SHA-256 is stored, so the code is shown once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/generate",
    tag = "calls",
    security(("bearer" = [])),
    request_body = Generate,
    responses(
        (status = 200, description = "`{qrCodeData: \"pqc:1:<token>:<checksum>\", expiresAt, \
            tokenId}`", body = Object),
        (status = 400, response = InvalidBody),
        (status = 401, response = Refused),
        (status = 403, description = "`forbidden`: another user's id", body = ErrorBody),
        (status = 404, description = "`no_such_user`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn generate(
    State(state): State<AppState>,
    _: Limited,
    Bearer(identity): Bearer,
    body: Result<Json<Generate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(bad_body)?;
    if request.user_id != identity.user_id.as_str() && !identity.admin {
        return Err(ApiError::forbidden(
            "codes can only be generated for your own account",
        ));
    }
    let no_user = || ApiError::new(StatusCode::NOT_FOUND, "no_such_user", "no such account");
    let user = state.store.user_by_id(&request.user_id).await?;
    user.filter(|u| u.active).ok_or_else(no_user)?;
    let (data, row) = calls(&state).generate(&request.user_id).await?;
    let body = json!({"qrCodeData": data, "expiresAt": rfc3339(row.expires_at), "tokenId": row.id});
    Ok(no_store(StatusCode::OK, body))
}

/// List your call codes (never their tokens).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "calls",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{tokens: [{id, createdAt, expiresAt, revoked}]}`",
            body = Object),
        (status = 401, response = Refused),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Bearer(identity): Bearer,
) -> Result<Json<Value>, ApiError> {
    let codes = state.store.call_codes(identity.user_id.as_str()).await?;
    let codes: Vec<Value> = codes
        .iter()
        .map(|c| {
            json!({"id": c.id, "createdAt": rfc3339(c.created_at),
                "expiresAt": rfc3339(c.expires_at), "revoked": c.is_revoked})
        })
        .collect();
    Ok(Json(json!({"tokens": codes})))
}

/// Revoke one of your call codes.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "calls",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The code's `tokenId`")),
    responses(
        (status = 200, description = "`{id, revoked: true}`", body = Object),
        (status = 401, response = Refused),
        (status = 404, description = "`no_such_token`: not one of yours", body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Bearer(identity): Bearer,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "no_such_token", "no such code");
    let Path(id) = id.map_err(|_| missing())?;
    if !state
        .store
        .revoke_call_code(identity.user_id.as_str(), &id)
        .await?
    {
        return Err(missing());
    }
    Ok(Json(json!({"id": id, "revoked": true})))
}

/// Draw a code as a QR image (SVG).
#[utoipa::path(
    post,
    path = "/api/v1/tokens/qr",
    tag = "calls",
    security(("bearer" = [])),
    request_body = QrRequest,
    responses(
        (status = 200, description = "The QR code", content_type = "image/svg+xml", body = String),
        (status = 400, description = "`malformed_code`, `invalid_body`", body = ErrorBody),
        (status = 401, response = Refused),
        (status = 429, response = RateLimited),
    )
)]
pub async fn qr(
    _: Limited,
    _: Bearer,
    body: Result<Json<QrRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(bad_body)?;
    let token = code::parse(&request.qr_code_data).map_err(|_| CallError::Malformed)?;
    let data = code::qr_data(token);
    let qr = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| ApiError::from(CallError::Malformed))?;
    let svg = qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .build();
    let headers = [
        (header::CONTENT_TYPE, "image/svg+xml"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, svg).into_response())
}

/// Keeps an owner's profile fields, each sealed with the data key (the account id as its
/// context, so a value cannot move to another account's row).
async fn store_profile(
    state: &AppState,
    user_id: &str,
    emergency_contact: Option<String>,
    vehicle_number: Option<String>,
) -> Result<(), ApiError> {
    let seal = |value: Option<String>| {
        value
            .filter(|v| !v.is_empty())
            .map(|v| state.data_keys.seal(&v, user_id))
    };
    let profile = SealedProfile {
        emergency_contact: seal(emergency_contact),
        vehicle_number: seal(vehicle_number),
    };
    if profile == SealedProfile::default() {
        return Ok(());
    }
    state.store.set_profile(user_id, &profile, now()).await?;
    Ok(())
}
