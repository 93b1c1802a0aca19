//! TURN credentials and ICE servers, in the shapes of both predecessors: seed 001's
//! `GET /auth/turn-credentials` and seed 000's `GET /api/webrtc/turn-credentials` and
//! `GET /api/webrtc/ice-servers`. Every answer is for the caller (the token's `sub`) and is not
//! cacheable.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::openapi::{RateLimited, Refused};
use super::{Bearer, Limited};
use crate::auth::unix_now;
use crate::error::{ApiError, ErrorBody};
use crate::metrics as m;
use crate::state::AppState;
use crate::turn::TurnCredential;

/// Fresh credentials for the caller, or 503 `turn_not_configured`.
fn credential(state: &AppState, bearer: &Bearer) -> Result<TurnCredential, ApiError> {
    let issued = state.turn.credential(&bearer.0.user_id, unix_now());
    let credential = issued.ok_or_else(|| {
        ApiError::unavailable(
            "turn_not_configured",
            "no TURN server is configured on this deployment (turn.secret, SWITCHBOARD_TURN_SECRET)",
        )
    })?;
    metrics::counter!(m::TURN_CREDENTIALS).increment(1);
    Ok(credential)
}

/// A JSON answer no cache may keep: it holds a credential.
fn private(body: Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Time-limited TURN credentials (seed 001's shape): `{username, credential, urls, ttl}`.
#[utoipa::path(
    get,
    path = "/auth/turn-credentials",
    tag = "webrtc",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Credentials for the caller: the username is \
            `<expiry>:<user id>`, the credential base64(HMAC-SHA1(secret, username))",
            body = Object, example = json!({
                "username": "1764892800:5f0c8a9e-3b8e-4a8e-9d1c-0d6f1f2b7c11",
                "credential": "/Hgk2wzS1yMKgEQRSzOmdlh6bg0=",
                "urls": ["turn:turn.example.com:3478?transport=udp",
                    "turns:turn.example.com:5349?transport=tcp"],
                "ttl": 86400
            })),
        (status = 401, response = Refused),
        (status = 429, response = RateLimited),
        (status = 503, description = "`turn_not_configured`: no TURN secret is set",
            body = ErrorBody),
    )
)]
pub async fn auth_credentials(
    State(state): State<AppState>,
    _: Limited,
    bearer: Bearer,
) -> Result<Response, ApiError> {
    let c = credential(&state, &bearer)?;
    Ok(private(json!({
        "username": c.username,
        "credential": c.credential,
        "urls": state.turn.turn_uris(),
        "ttl": c.ttl,
    })))
}

/// Time-limited TURN credentials (seed 000's shape): `{username, credential, password, ttl,
/// uris}`; `password` is the credential again.
#[utoipa::path(
    get,
    path = "/api/webrtc/turn-credentials",
    tag = "webrtc",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Credentials for the caller", body = Object,
            example = json!({
                "username": "1764892800:5f0c8a9e-3b8e-4a8e-9d1c-0d6f1f2b7c11",
                "credential": "/Hgk2wzS1yMKgEQRSzOmdlh6bg0=",
                "password": "/Hgk2wzS1yMKgEQRSzOmdlh6bg0=",
                "ttl": 86400,
                "uris": ["turn:turn.example.com:3478?transport=udp"]
            })),
        (status = 401, response = Refused),
        (status = 503, description = "`turn_not_configured`: no TURN secret is set",
            body = ErrorBody),
    )
)]
pub async fn webrtc_credentials(
    State(state): State<AppState>,
    bearer: Bearer,
) -> Result<Response, ApiError> {
    let c = credential(&state, &bearer)?;
    Ok(private(json!({
        "username": c.username,
        "credential": c.credential,
        "password": c.credential,
        "ttl": c.ttl,
        "uris": state.turn.turn_uris(),
    })))
}

/// A ready `RTCConfiguration`: `{"iceServers": [{urls: [stun…]}, {urls: [turn…], username,
/// credential}]}`. Without a TURN secret, only the STUN servers.
#[utoipa::path(
    get,
    path = "/api/webrtc/ice-servers",
    tag = "webrtc",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's RTCConfiguration", body = Object,
            example = json!({"iceServers": [
                {"urls": ["stun:stun.example.com:3478"]},
                {"urls": ["turn:turn.example.com:3478?transport=udp"],
                    "username": "1764892800:5f0c8a9e-3b8e-4a8e-9d1c-0d6f1f2b7c11",
                    "credential": "/Hgk2wzS1yMKgEQRSzOmdlh6bg0="}
            ]})),
        (status = 401, response = Refused),
    )
)]
pub async fn ice_servers(State(state): State<AppState>, bearer: Bearer) -> Response {
    if state.turn.has_turn() {
        metrics::counter!(m::TURN_CREDENTIALS).increment(1);
    }
    let servers = state.turn.ice_servers(&bearer.0.user_id, unix_now());
    private(json!({ "iceServers": servers }))
}
