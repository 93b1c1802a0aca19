//! `WS /api/v1/calls/signaling/{sessionId}`: one participant's signaling socket of a QR call.
//! The upgrade is refused in HTTP unless the request carries that participant's signaling
//! secret (`?token=` or `Authorization: Bearer`), so a session id alone never opens a call;
//! [`call_socket`] then relays between the two participants (see [`crate::calls::signal`]).

mod socket;

use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;

use super::Upgrade;
use crate::auth::bearer_token;
use crate::calls::{FINAL, Side, valid_session_id};
use crate::client_ip::budget_key;
use crate::error::{ApiError, ErrorBody};
use crate::metrics as m;
use crate::state::AppState;
use crate::store::CallSession;
pub use socket::call_socket;

/// The signaling upgrade's query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// The participant's `signalingToken` (or send it as `Authorization: Bearer`).
    token: Option<String>,
}

fn refused() -> ApiError {
    m::auth_failure("call_secret");
    ApiError::unauthorized("this call needs its participant's signaling token")
}

/// Which side of `call` holds `secret`, compared in constant time against the stored hashes.
fn side_of(call: &CallSession, secret: &str) -> Option<Side> {
    let hash = crate::accounts::secret_hash(secret);
    let caller: bool = hash
        .as_bytes()
        .ct_eq(call.caller_secret_hash.as_bytes())
        .into();
    let owner = call
        .callee_secret_hash
        .as_ref()
        .is_some_and(|h| hash.as_bytes().ct_eq(h.as_bytes()).into());
    match (caller, owner) {
        (true, _) => Some(Side::Caller),
        (_, true) => Some(Side::Owner),
        _ => None,
    }
}

/// Connect one participant's signaling socket.
#[utoipa::path(
    get,
    path = "/api/v1/calls/signaling/{sessionId}",
    tag = "calls",
    description = "Upgrades to the call's signaling WebSocket. Frames: `{\"type\": \"offer\" | \
        \"answer\" | \"ice-candidate\", \"payload\": {...}}` relayed to the other participant \
        (never echoed), `{\"type\": \"hang-up\"}`; the server sends `session`, `peer-joined`, \
        `peer-left`, `accepted`, `hang-up`, `call-ended`, `fingerprints` and `error`. See \
        docs/calls.md.",
    params(("sessionId" = String, Path, description = "The call's `sessionId`"), CallQuery),
    responses(
        (status = 101, description = "Switching Protocols: the signaling WebSocket"),
        (status = 400, description = "`invalid_query`, `not_websocket`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no signaling token, or not this call's",
            body = ErrorBody),
        (status = 404, description = "`no_such_call`: not a session id", body = ErrorBody),
        (status = 410, description = "`call_over`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (`ip_upgrade_rate`)", body = ErrorBody),
        (status = 503, description = "`draining`, `node_full`, `unavailable`", body = ErrorBody),
    )
)]
pub async fn call_endpoint(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Result<Path<String>, PathRejection>,
    query: Result<Query<CallQuery>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable(
            "draining",
            "this node is shutting down; reconnect",
        ));
    }
    let no_call = || ApiError::new(StatusCode::NOT_FOUND, "no_such_call", "no such call");
    let Path(session) = session.map_err(|_| no_call())?;
    if !valid_session_id(&session) {
        return Err(no_call());
    }
    let values = |name: &str| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    let ip = state.client_ip(peer.ip(), values("x-forwarded-for"), values("forwarded"));
    if let Err(wait) = state
        .throttle
        .hit(state.upgrade_rate(), &budget_key(ip))
        .await
    {
        m::limit_hit("ip_upgrade_rate");
        return Err(ApiError::rate_limited("ip_upgrade_rate", wait));
    }
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let secret = query.token.or_else(|| {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        bearer_token(value).map(str::to_owned)
    });
    let secret = secret.ok_or_else(refused)?;
    let call = state.store.call(&session).await?.ok_or_else(refused)?;
    let side = side_of(&call, &secret).ok_or_else(refused)?;
    if FINAL.contains(&call.status.as_str()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            "call_over",
            "the call is over",
        ));
    }
    let upgrade = upgrade.map_err(|e| ApiError::bad_request("not_websocket", e.body_text()))?;
    let slot = state.slots.take().ok_or_else(|| {
        m::limit_hit("max_connections");
        ApiError::unavailable("node_full", "this node holds as many WebSockets as it may")
    })?;
    let limit = state.config.max_message_bytes;
    let upgrade = upgrade.max_message_size(limit).max_frame_size(limit);
    Ok(upgrade.on_upgrade(move |socket| call_socket(socket, state, call, side, slot)))
}
