//! Cluster-wide room and presence queries over bearer tokens.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::openapi::{ClusterDown, RateLimited, Refused, RoomMembers};
use super::{Bearer, Limited};
use crate::error::{ApiError, ErrorBody};
use crate::presence::PresenceError;
use crate::protocol::Member;
use crate::protocol::{RoomId, UserId};
use crate::state::AppState;

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        tracing::warn!(error = %e, "presence query failed");
        ApiError::unavailable("unavailable", "cluster state is unavailable; try again")
    }
}

/// Rooms and their member counts, cluster-wide.
#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "rooms",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every room of the cluster and its member count",
            body = Object, example = json!({"rooms": [{"room": "demo", "members": 2}]})),
        (status = 401, response = Refused),
        (status = 503, response = ClusterDown),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Bearer(_): Bearer,
) -> Result<Json<Value>, ApiError> {
    let rooms = state.hub.presence.rooms().await?;
    Ok(Json(json!({ "rooms": rooms })))
}

/// A room's members, cluster-wide.
///
/// For admins, and for users with a connection in the room.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}",
    tag = "rooms",
    security(("bearer" = [])),
    params((
        "room" = String,
        Path,
        description = "A room name: 1–128 characters of `[A-Za-z0-9._:-]`"
    )),
    responses(
        (status = 200, response = RoomMembers),
        (status = 400, description = "`invalid_room`", body = ErrorBody),
        (status = 401, response = Refused),
        (status = 403, description = "`forbidden`: neither an admin nor in the room",
            body = ErrorBody),
        (status = 503, response = ClusterDown),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Bearer(identity): Bearer,
    room: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(room) = room.map_err(|e| ApiError::bad_request("invalid_room", e.body_text()))?;
    let room =
        RoomId::parse(&room).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let members = state.hub.presence.members(&room).await?;
    let is_member = members.iter().any(|m| m.user_id == identity.user_id);
    if !identity.admin && !is_member {
        return Err(ApiError::forbidden(
            "only admins and members of the room may read its members",
        ));
    }
    let views: Vec<_> = members.iter().map(Member::view).collect();
    Ok(Json(
        json!({ "room": room, "count": views.len(), "members": views }),
    ))
}

/// A room's members, cluster-wide (POST).
#[utoipa::path(
    post,
    path = "/api/rooms/{room}/info",
    tag = "rooms",
    description = "The same answer as `GET /api/rooms/{room}`.",
    security(("bearer" = [])),
    params((
        "room" = String,
        Path,
        description = "A room name: 1–128 characters of `[A-Za-z0-9._:-]`"
    )),
    responses(
        (status = 200, response = RoomMembers),
        (status = 400, description = "`invalid_room`", body = ErrorBody),
        (status = 401, response = Refused),
        (status = 403, description = "`forbidden`: neither an admin nor in the room",
            body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = ClusterDown),
    )
)]
pub async fn info(
    state: State<AppState>,
    _: Limited,
    bearer: Bearer,
    room: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    show(state, bearer, room).await
}

/// Whether a user is online.
///
/// Online, and on how many devices, anywhere in the cluster.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/presence",
    tag = "rooms",
    security(("bearer" = [])),
    params(("user_id" = String, Path, description = "A user id (a token's `sub`)")),
    responses(
        (status = 200, description = "Whether the user is online, and on how many devices",
            body = Object, example = json!({"user_id": "alice", "online": true, "devices": 2})),
        (status = 400, description = "`invalid_user`", body = ErrorBody),
        (status = 401, response = Refused),
        (status = 503, response = ClusterDown),
    )
)]
pub async fn presence(
    State(state): State<AppState>,
    Bearer(_): Bearer,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(user) = user.map_err(|e| ApiError::bad_request("invalid_user", e.body_text()))?;
    let user =
        UserId::parse(&user).map_err(|e| ApiError::bad_request("invalid_user", e.to_string()))?;
    let devices = state.hub.presence.devices(&user).await?;
    Ok(Json(
        json!({ "user_id": user, "online": devices > 0, "devices": devices }),
    ))
}
