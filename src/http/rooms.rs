//! Cluster-wide room and presence queries over bearer tokens.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::Bearer;
use crate::error::ApiError;
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

pub async fn list(
    State(state): State<AppState>,
    Bearer(_): Bearer,
) -> Result<Json<Value>, ApiError> {
    let rooms = state.hub.presence.rooms().await?;
    Ok(Json(json!({ "rooms": rooms })))
}

/// Members of a room, for admins and for users with a connection in it.
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

/// Whether a user is online, and on how many devices, anywhere in the cluster.
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
