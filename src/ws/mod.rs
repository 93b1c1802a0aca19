//! The WebSocket endpoints. What can be refused before the upgrade is refused here with an HTTP
//! JSON error: the room name, the query string, and upgrades while the node drains. A refused
//! token (in `?token=` or an `Authorization: Bearer` header) is different: a browser cannot read
//! the status of a failed upgrade, so the upgrade is accepted and the connection answers with
//! an `error` frame (`unauthorized`, `token_expired`, `token_revoked`, `forbidden`) and closes with 1008. A plain
//! HTTP request with such a token gets 401/403 JSON. [`connection`] runs the upgraded socket;
//! [`routes()`] are merged into the node's router by [`crate::app`].

mod calls;
mod connection;
mod device;

use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Identity, bearer_token};
use crate::client_ip::budget_key;
use crate::credentials::Credentials;
use crate::error::{ApiError, ErrorBody};
use crate::limits::PendingFull;
use crate::metrics as m;
use crate::protocol::{ClientId, ErrorCode, ErrorFrame, Frame, RoomId};
use crate::state::AppState;
use connection::AddressSlot;

/// When an address at its `ip_connections` cap is told to try again.
const IP_CONNECTIONS_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The upgrade's query string. Unknown parameters are ignored (cache busters); duplicates of
/// known ones are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// An access token (JWT). An `Authorization: Bearer` header works too; without either, the
    /// client sends `auth_token` after `auth_required`.
    token: Option<String>,
    /// The client id to claim: 1–64 characters of `[A-Za-z0-9_-]`, else a generated one.
    client_id: Option<String>,
    /// The same as `client_id`.
    #[serde(rename = "clientId")]
    client_id_camel: Option<String>,
}

/// The socket's text frame for a core [`Frame`]: the same buffer, not copied. axum has no
/// unchecked way to build its text type, so the UTF-8 is checked again (a scan).
pub fn socket_text(frame: Frame) -> Message {
    let text = Utf8Bytes::try_from(frame.into_bytes()).expect("a Frame holds UTF-8");
    Message::Text(text)
}

/// The socket's text frame for a core [`Frame`] with the recipient's sequence number in front:
/// `{"seq":N,` and the frame's members (a copy; the frame itself is shared by its recipients).
/// The relayed signals never carry a client's own `seq` (the rules strip it).
pub fn socket_text_seq(frame: &Frame, seq: u64) -> Message {
    let text = frame.as_str();
    let Some(members) = text.strip_prefix('{') else {
        return socket_text(frame.clone());
    };
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(seq);
    let comma = !members.trim_start().starts_with('}');
    // Exactly the length: a `String` whose capacity is its length becomes the socket's buffer
    // without a second allocation for a shared count.
    let mut out =
        String::with_capacity(SEQ_KEY.len() + digits.len() + usize::from(comma) + members.len());
    out.push_str(SEQ_KEY);
    out.push_str(digits);
    if comma {
        out.push(',');
    }
    out.push_str(members);
    Message::Text(out.into())
}

const SEQ_KEY: &str = "{\"seq\":";

/// The WebSocket routes, `/ws/{room}`, `/ws` and the E2EE devices' `/api/v1/ws`, with their
/// OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(root_endpoint))
        .routes(routes!(room_endpoint))
        .routes(routes!(device::device_endpoint))
        .routes(routes!(calls::call_endpoint))
}

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
type WsQueryResult = Result<Query<WsQuery>, QueryRejection>;

/// Connect a WebSocket and join a room.
#[utoipa::path(
    get,
    path = "/ws/{room}",
    tag = "websocket",
    description = "Upgrades to a WebSocket, authenticates (with `token`, an `Authorization: \
        Bearer` header, or an `auth_token` message after `auth_required`), then joins `room`. \
        The frames, authentication, close codes and reconnection rules are described in \
        [docs/protocol.md](docs/protocol.md) of the Switchboard repository.",
    security((), ("bearer" = [])),
    params(
        ("room" = String, Path,
            description = "A room name: 1–128 characters of `[A-Za-z0-9._:-]`"),
        WsQuery,
    ),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket. A refused token is \
            answered on it: an `error` frame (`unauthorized`, `token_expired`, `token_revoked`, \
            `forbidden`, `unavailable`), then \
            close 1008"),
        (status = 400, description = "`invalid_room`, `invalid_query` (a parameter given twice) \
            or `not_websocket` (not an upgrade request)", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `token_expired` or `token_revoked`: a refused token on a \
            plain HTTP request (an upgrade is accepted and answered on the socket)",
            body = ErrorBody),
        (status = 403, description = "`forbidden`: the token does not grant the room, on a plain \
            HTTP request; `origin_not_allowed`: a page of an origin not in `allowed_origins`",
            body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many upgrades from this address \
            (`ip_upgrade_rate`), too many of its WebSockets open across the cluster \
            (`ip_connections`) or waiting to authenticate (`ip_unauthenticated`); `Retry-After` \
            says how long to wait", body = ErrorBody),
        (status = 503, description = "`draining`: the node is shutting down; `node_full`: it \
            holds `max_connections`, or `max_unauthenticated` WebSockets waiting to \
            authenticate; connect to another. `unavailable`: the API key the token names \
            cannot be loaded now", body = ErrorBody),
    )
)]
pub async fn room_endpoint(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    room: Result<Path<String>, PathRejection>,
    query: WsQueryResult,
    headers: HeaderMap,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let invalid = |detail: String| reject(ApiError::bad_request("invalid_room", detail));
    let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
    let room = RoomId::parse(&room).map_err(|e| invalid(e.to_string()))?;
    accept(state, peer, Some(room), query, &headers, upgrade).await
}

/// Connect a WebSocket without a room.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "websocket",
    description = "Upgrades to a WebSocket and authenticates (with `token`, an `Authorization: \
        Bearer` header, or an `auth_token` message after `auth_required`), without a room: for \
        user-addressed signals, and rooms joined later with `join`. The frames, authentication, \
        close codes and reconnection rules are described in \
        [docs/protocol.md](docs/protocol.md) of the Switchboard repository.",
    security((), ("bearer" = [])),
    params(WsQuery),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket. A refused token is \
            answered on it: an `error` frame (`unauthorized`, `token_expired`, `token_revoked`, \
            `unavailable`), then close 1008"),
        (status = 400, description = "`invalid_query` (a parameter given twice) or \
            `not_websocket` (not an upgrade request)", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `token_expired` or `token_revoked`: a refused token on a \
            plain HTTP request (an upgrade is accepted and answered on the socket)",
            body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`: a page of an origin not in \
            `allowed_origins`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many upgrades from this address \
            (`ip_upgrade_rate`), too many of its WebSockets open across the cluster \
            (`ip_connections`) or waiting to authenticate (`ip_unauthenticated`); `Retry-After` \
            says how long to wait", body = ErrorBody),
        (status = 503, description = "`draining`: the node is shutting down; `node_full`: it \
            holds `max_connections`, or `max_unauthenticated` WebSockets waiting to \
            authenticate; connect to another. `unavailable`: the API key the token names \
            cannot be loaded now", body = ErrorBody),
    )
)]
pub async fn root_endpoint(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: WsQueryResult,
    headers: HeaderMap,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    accept(state, peer, None, query, &headers, upgrade).await
}

fn reject(e: ApiError) -> ApiError {
    metrics::counter!(m::HTTP_REJECTED, "code" => e.code).increment(1);
    e
}

async fn accept(
    state: AppState,
    peer: SocketAddr,
    room: Option<RoomId>,
    query: WsQueryResult,
    headers: &HeaderMap,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(reject(ApiError::unavailable(
            "draining",
            "this node is shutting down; reconnect",
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|origin| state.config.origin_allowed(origin))
    {
        m::limit_hit("allowed_origins");
        return Err(reject(
            ApiError::forbidden("WebSockets from this page's origin are not allowed")
                .with_code("origin_not_allowed"),
        ));
    }
    let values = |name: &str| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    let ip = state.client_ip(peer.ip(), values("x-forwarded-for"), values("forwarded"));
    // What the address limits count: the address, or its /64 for IPv6.
    let address = budget_key(ip);
    if let Err(wait) = state.throttle.hit(state.upgrade_rate(), &address).await {
        m::limit_hit("ip_upgrade_rate");
        return Err(reject(ApiError::rate_limited("ip_upgrade_rate", wait)));
    }
    let Query(query) =
        query.map_err(|e| reject(ApiError::bad_request("invalid_query", e.body_text())))?;
    let token = query.token.as_deref().or_else(|| {
        let header = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        bearer_token(header)
    });
    let pre_auth = match token {
        Some(token) => Some(admit(&state.credentials, token, room.as_ref()).await),
        None => None,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        // A plain HTTP request: a refused token is answered in HTTP.
        Err(e) => {
            return Err(reject(match pre_auth {
                Some(Err(refused)) => http_refusal(&refused),
                _ => ApiError::bad_request("not_websocket", e.body_text()),
            }));
        }
    };
    // Taken last, so that what is refused above never holds a slot meanwhile.
    let Some(slot) = state.slots.take() else {
        m::limit_hit("max_connections");
        return Err(reject(ApiError::unavailable(
            "node_full",
            "this node holds as many WebSockets as it may; connect to another",
        )));
    };
    // A socket that authenticates by message holds a pending place until it does.
    let pending = match pre_auth {
        Some(_) => None,
        None => Some(state.pending.take(&address).map_err(|full| {
            let (limit, e) = match full {
                PendingFull::Node => (
                    "max_unauthenticated",
                    ApiError::unavailable(
                        "node_full",
                        "this node holds as many WebSockets waiting to authenticate as it may; \
                         try again, or send the token with the upgrade",
                    ),
                ),
                PendingFull::Address => {
                    let mut e = ApiError::rate_limited("ip_unauthenticated", IP_CONNECTIONS_RETRY);
                    e.detail =
                        "too many WebSockets from this address wait to authenticate".to_owned();
                    ("ip_unauthenticated", e)
                }
            };
            m::limit_hit(limit);
            reject(e)
        })?),
    };
    let address = AddressSlot::take(&state, &address).await.ok_or_else(|| {
        m::limit_hit("ip_connections");
        let max = state.config.ip_connections;
        let mut e = ApiError::rate_limited("ip_connections", IP_CONNECTIONS_RETRY);
        e.detail = format!("this address holds {max} connections already; close one first");
        reject(e)
    })?;
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
        pre_auth,
        client_id,
        slot,
        address,
        pending,
    };
    // Inside the request's span (its id, route and the client's address).
    let span = tracing::info_span!(
        "ws",
        node = %state.hub.node,
        client_id = tracing::field::Empty,
    );
    Ok(upgrade.on_upgrade(move |socket| connection::run(socket, state, start, span)))
}

/// Verifies `token` and that it may enter `room` (the URL's, if any). A refusal is the error
/// frame the client gets before its connection is closed with 1008: `unauthorized`,
/// `token_expired`, `token_revoked`, `forbidden`, or `unavailable` when the key the token
/// names cannot be loaded now.
pub async fn admit(
    credentials: &Credentials,
    token: &str,
    room: Option<&RoomId>,
) -> Result<Identity, ErrorFrame> {
    let identity = credentials.verify(token).await.map_err(|e| {
        m::auth_failure(e.reason());
        ErrorFrame::new(e.code(), e.to_string())
    })?;
    if crate::calls::is_call_side(&identity.user_id)
        || crate::e2ee::is_device_user(&identity.user_id)
    {
        // Reserved for QR calls' signaling sockets and E2EE devices' sockets: a token for one
        // would receive a call, or a device's messages.
        m::auth_failure("forbidden");
        let message = "this user id is reserved";
        return Err(ErrorFrame::new(ErrorCode::Forbidden, message));
    }
    if let Some(room) = room.filter(|r| !identity.rooms.allows(r)) {
        m::auth_failure("forbidden");
        let message = format!("token does not grant room {room}");
        return Err(ErrorFrame::new(ErrorCode::Forbidden, message).room(room));
    }
    Ok(identity)
}

/// The HTTP answer to a refused token on a request that is not a WebSocket upgrade.
fn http_refusal(refused: &ErrorFrame) -> ApiError {
    let status = match refused.code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    ApiError::new(status, refused.code.as_str(), refused.message.clone())
}
