//! Seed 004's code checks and calls: validate a scanned code, start a call with it (no account
//! needed), and the owner's answer or refusal. Code checks are limited per address and per code
//! (`[calls]` rates, on every node together) so that codes cannot be guessed, and every kind of
//! bad code gets the same answer.

use std::net::IpAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::{bad_body, no_store};
use super::calls::{calls, rfc3339};
use super::openapi::{DatabaseDown, InvalidBody, RateLimited, Refused};
use super::{Bearer, Limited, rate_limited};
use crate::calls::{CallError, code, valid_anon_id};
use crate::client_ip::budget_key;
use crate::error::{ApiError, ErrorBody};
use crate::limits::Rate;
use crate::protocol::UserId;
use crate::state::AppState;
use crate::store::CallSession;

/// The body of `POST /api/v1/tokens/validate`.
#[derive(Deserialize, ToSchema)]
pub struct Validate {
    /// A scanned code (`pqc:1:<token>:<checksum>`) or its bare token.
    token: String,
}

/// The body of `POST /api/v1/calls/initiate`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Initiate {
    /// A scanned code (`pqc:1:<token>:<checksum>`) or its bare token.
    scanned_token: String,
    /// The caller's own anonymous id for this call (`anon_` and 8–64 of `[A-Za-z0-9_-]`);
    /// a fresh one otherwise.
    #[serde(default)]
    caller_anonymous_id: Option<String>,
}

/// Counts a code check against the address's and the code's rates.
async fn limit(state: &AppState, ip: IpAddr, scanned: &str) -> Result<(), ApiError> {
    let c = &state.config.calls;
    let by_ip = Rate::per_minute("calls_ip_rate", c.ip_rate, c.ip_burst);
    if let Err(wait) = state.throttle.hit(by_ip, &budget_key(ip)).await {
        return Err(rate_limited("calls_ip_rate", wait));
    }
    if let Ok(token) = code::parse(scanned) {
        let by_code = Rate::per_minute("calls_code_rate", c.code_rate, c.code_burst);
        if let Err(wait) = state.throttle.hit(by_code, &code::hash(token)).await {
            return Err(rate_limited("calls_code_rate", wait));
        }
    }
    Ok(())
}

/// Where and how a participant signals: the WebSocket path, its secret and ICE servers.
fn signaling(state: &AppState, call: &CallSession, anon: &str, secret: &str) -> Value {
    let user = UserId::parse(anon).expect("anonymous ids are valid user ids");
    let now = crate::auth::unix_now();
    json!({
        "sessionId": call.session_id,
        "signalingEndpoint": format!("/api/v1/calls/signaling/{}", call.session_id),
        "signalingToken": secret,
        "anonymousId": anon,
        "status": call.status,
        "iceServers": state.turn.ice_servers(&user, now),
    })
}

/// Check a scanned code.
///
/// `{valid, canInitiateCall}` and nothing of the owner; an unknown, expired, revoked or damaged
/// code is `valid: false` alike.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/validate",
    tag = "calls",
    request_body = Validate,
    responses(
        (status = 200, description = "`{valid, canInitiateCall}`", body = Object,
            example = json!({"valid": true, "canInitiateCall": true})),
        (status = 400, response = InvalidBody),
        (status = 429, description = "`rate_limited`: `calls_ip_rate`, `calls_code_rate` or \
            `auth_rate`", body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn validate(
    State(state): State<AppState>,
    Limited(ip): Limited,
    body: Result<Json<Validate>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(bad_body)?;
    limit(&state, ip, &request.token).await?;
    let valid = match calls(&state).check(&request.token).await {
        Ok(_) => true,
        Err(CallError::Store(e)) => return Err(e.into()),
        Err(_) => false,
    };
    Ok(Json(json!({"valid": valid, "canInitiateCall": valid})))
}

/// Call the owner of a scanned code.
///
/// No account needed. Every device of the owner online on any node rings; the answer holds the
/// caller's signaling secret. With no device online the call is `missed` at once.
#[utoipa::path(
    post,
    path = "/api/v1/calls/initiate",
    tag = "calls",
    request_body = Initiate,
    responses(
        (status = 200, description = "`{sessionId, signalingEndpoint, signalingToken, \
            anonymousId, status, iceServers}`: status `ringing`, or `missed`", body = Object),
        (status = 400, description = "`malformed_code`, `invalid_anonymous_id`, `invalid_body`",
            body = ErrorBody),
        (status = 404, description = "`invalid_code`: unknown, expired or revoked alike",
            body = ErrorBody),
        (status = 429, description = "`rate_limited`: `calls_ip_rate`, `calls_code_rate` or \
            `auth_rate`", body = ErrorBody),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn initiate(
    State(state): State<AppState>,
    Limited(ip): Limited,
    body: Result<Json<Initiate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(bad_body)?;
    let anon = request.caller_anonymous_id.filter(|a| !a.is_empty());
    if anon.as_deref().is_some_and(|a| !valid_anon_id(a)) {
        let detail = "callerAnonymousId must be anon_ and 8-64 of A-Z a-z 0-9 _ -";
        return Err(ApiError::bad_request("invalid_anonymous_id", detail));
    }
    limit(&state, ip, &request.scanned_token).await?;
    let started = calls(&state)
        .initiate(&request.scanned_token, anon.as_deref())
        .await?;
    let call = &started.call;
    let mut body = signaling(&state, call, &call.participant_a_anon, &started.secret);
    body["ringsUntil"] = rfc3339(call.ring_deadline).into();
    Ok(no_store(StatusCode::OK, body))
}

fn session_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|_| ApiError::from(CallError::NoSuchCall))
}

/// Answer a ringing call (the owner, on one device).
///
/// Of the owner's devices answering at once, on any node, exactly one gets 200 with its
/// signaling secret; the others get 409 `call_taken`, and every device hears `call_answered`.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{sessionId}/accept",
    tag = "calls",
    security(("bearer" = [])),
    params(("sessionId" = String, Path, description = "The call's `sessionId`")),
    responses(
        (status = 200, description = "`{sessionId, signalingEndpoint, signalingToken, \
            anonymousId, peerAnonymousId, status, iceServers}`", body = Object),
        (status = 401, response = Refused),
        (status = 404, description = "`no_such_call`", body = ErrorBody),
        (status = 409, description = "`call_taken`: another device answered", body = ErrorBody),
        (status = 410, description = "`call_over`: missed, rejected or ended", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn accept(
    State(state): State<AppState>,
    _: Limited,
    Bearer(identity): Bearer,
    session: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let session = session_path(session)?;
    let (call, secret) = calls(&state)
        .answer(&session, identity.user_id.as_str())
        .await?;
    let mut body = signaling(&state, &call, &call.participant_b_anon, &secret);
    body["peerAnonymousId"] = call.participant_a_anon.clone().into();
    Ok(no_store(StatusCode::OK, body))
}

/// Decline a ringing call.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{sessionId}/reject",
    tag = "calls",
    security(("bearer" = [])),
    params(("sessionId" = String, Path, description = "The call's `sessionId`")),
    responses(
        (status = 200, description = "`{sessionId, status: \"rejected\"}`", body = Object),
        (status = 401, response = Refused),
        (status = 404, description = "`no_such_call`", body = ErrorBody),
        (status = 410, description = "`call_over`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    _: Limited,
    Bearer(identity): Bearer,
    session: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let session = session_path(session)?;
    calls(&state)
        .reject(&session, identity.user_id.as_str())
        .await?;
    Ok(Json(json!({"sessionId": session, "status": "rejected"})))
}
