//! Cluster-wide room and presence queries over bearer tokens.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

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

/// The rooms a page of `GET /api/rooms` holds at most, unless `limit` says fewer.
const PAGE: usize = 100;
/// The largest `limit`.
const MAX_PAGE: usize = 1000;

/// A page of `GET /api/rooms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomsPage {
    /// Rooms per page, 1–1000 (default 100).
    limit: Option<usize>,
    /// The `next` of the previous page: rooms after this name.
    after: Option<String>,
}

/// Rooms and their member counts, cluster-wide, in name order.
///
/// Admins see every room; other tokens the rooms their grant allows (a token without a room
/// grant, all). With more than a page, `next` names the `after` of the next page.
#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "rooms",
    security(("bearer" = [])),
    params(RoomsPage),
    responses(
        (status = 200, description = "The rooms the token may see and their member counts",
            body = Object, example = json!({"rooms": [{"room": "demo", "members": 2}],
                "next": "demo"})),
        (status = 400, description = "`invalid_query`: a bad `limit` or `after`",
            body = ErrorBody),
        (status = 401, response = Refused),
        (status = 503, response = ClusterDown),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Bearer(identity): Bearer,
    page: Result<Query<RoomsPage>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let invalid = |detail: String| ApiError::bad_request("invalid_query", detail);
    let Query(page) = page.map_err(|e| invalid(e.body_text()))?;
    let limit = page.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let after = match page.after.as_deref() {
        Some(after) => Some(RoomId::parse(after).map_err(|e| invalid(e.to_string()))?),
        None => None,
    };
    // In name order already: pages follow it.
    let mut rooms: Vec<_> = state
        .hub
        .presence
        .rooms()
        .await?
        .into_iter()
        .filter(|r| identity.admin || identity.rooms.allows(&r.room))
        .filter(|r| after.as_ref().is_none_or(|after| r.room > *after))
        .collect();
    if rooms.len() > limit {
        rooms.truncate(limit);
        let next = rooms.last().map(|r| r.room.clone());
        return Ok(Json(json!({ "rooms": rooms, "next": next })));
    }
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
///
/// For the user itself and for admins: whether someone is online is not every token holder's
/// business (room members see each other through `users_in_room` and `user_joined`).
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
        (status = 403, description = "`forbidden`: neither the user nor an admin",
            body = ErrorBody),
        (status = 503, response = ClusterDown),
    )
)]
pub async fn presence(
    State(state): State<AppState>,
    Bearer(identity): Bearer,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(user) = user.map_err(|e| ApiError::bad_request("invalid_user", e.body_text()))?;
    let user =
        UserId::parse(&user).map_err(|e| ApiError::bad_request("invalid_user", e.to_string()))?;
    if !identity.admin && identity.user_id != user {
        return Err(ApiError::forbidden(
            "only the user and admins may read a user's presence",
        ));
    }
    let devices = state.hub.presence.devices(&user).await?;
    Ok(Json(
        json!({ "user_id": user, "online": devices > 0, "devices": devices }),
    ))
}
