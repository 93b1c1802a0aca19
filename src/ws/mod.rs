//! The WebSocket endpoints. Everything that can be refused before the upgrade is refused here,
//! with an HTTP JSON error: the room name, the query string, a token given in the query, and
//! upgrades while the node drains. [`connection`] runs the upgraded socket; [`routes`] are
//! merged into the node's router by [`crate::app`].

mod connection;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use crate::auth::{AuthError, Identity};
use crate::error::ApiError;
use crate::metrics as m;
use crate::protocol::{ClientId, RoomId};
use crate::state::AppState;

/// The upgrade's query string. Unknown parameters are ignored (cache busters); duplicates of
/// known ones are refused.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    client_id: Option<String>,
    #[serde(rename = "clientId")]
    client_id_camel: Option<String>,
}

/// The WebSocket routes: `/ws/{room}` and `/ws`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws", get(root_endpoint))
        .route("/ws/{room}", get(room_endpoint))
}

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
type WsQueryResult = Result<Query<WsQuery>, QueryRejection>;

pub async fn room_endpoint(
    State(state): State<AppState>,
    room: Result<Path<String>, PathRejection>,
    query: WsQueryResult,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let invalid = |detail: String| reject(ApiError::bad_request("invalid_room", detail));
    let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
    let room = RoomId::parse(&room).map_err(|e| invalid(e.to_string()))?;
    accept(state, Some(room), query, upgrade)
}

pub async fn root_endpoint(
    State(state): State<AppState>,
    query: WsQueryResult,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    accept(state, None, query, upgrade)
}

fn reject(e: ApiError) -> ApiError {
    metrics::counter!(m::HTTP_REJECTED, "code" => e.code).increment(1);
    e
}

fn accept(
    state: AppState,
    room: Option<RoomId>,
    query: WsQueryResult,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(reject(ApiError::unavailable(
            "draining",
            "this node is shutting down; reconnect",
        )));
    }
    let Query(query) =
        query.map_err(|e| reject(ApiError::bad_request("invalid_query", e.body_text())))?;
    let upgrade =
        upgrade.map_err(|e| reject(ApiError::bad_request("not_websocket", e.body_text())))?;
    let pre_auth = match &query.token {
        Some(token) => Some(verify_query_token(&state, token, room.as_ref())?),
        None => None,
    };
    let client_id = query
        .client_id
        .or(query.client_id_camel)
        .and_then(|c| ClientId::parse(&c).ok());
    let limit = state.config.max_message_bytes;
    let upgrade = upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        // An idle connection holds the read buffer: 1 KiB fits ICE candidates, an offer takes a
        // few reads. Writes are flushed once per batch, so the write buffer holds a batch.
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024);
    let start = connection::Start {
        room,
        identity: pre_auth,
        client_id,
    };
    Ok(upgrade.on_upgrade(move |socket| connection::run(socket, state, start)))
}

fn verify_query_token(
    state: &AppState,
    token: &str,
    room: Option<&RoomId>,
) -> Result<Identity, ApiError> {
    let identity = state.tokens.verify(token).map_err(|e| {
        metrics::counter!(m::AUTH_FAILURES, "reason" => auth_reason(&e)).increment(1);
        reject(ApiError::unauthorized(e.to_string()))
    })?;
    if let Some(room) = room.filter(|r| !identity.rooms.allows(r)) {
        return Err(reject(ApiError::forbidden(format!(
            "token does not grant room {room}"
        ))));
    }
    Ok(identity)
}

pub fn auth_reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::Expired => "expired",
        AuthError::TooLarge => "too_large",
        AuthError::Invalid(_) => "invalid",
    }
}
