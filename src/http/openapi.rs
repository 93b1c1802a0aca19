//! The OpenAPI 3.1 document of the node's HTTP API, and where it is served: `GET /openapi.json`
//! and a Swagger UI page at `GET /docs` whose assets the node serves itself (`/docs/{file}`,
//! embedded in the binary; nothing is fetched from elsewhere).
//!
//! The document is generated from the handlers: each carries a `#[utoipa::path]` that states its
//! method, path, parameters, bodies and answers, and is registered with `routes!`, which takes
//! the method and path from that attribute. A route is therefore registered and documented in
//! one step; `tests/it/openapi.rs` fails on any route registered another way and undocumented.
//! [`base`] holds what belongs to no route: the description, the tags and the bearer scheme.

use std::sync::Arc;

use axum::extract::{Extension, Path};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, body::Bytes};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, ErrorBody};

/// The security scheme that the handlers taking an access token name (`security(("bearer" = []))`).
const BEARER: &str = "bearer";

/// The document's parts that belong to no route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "A WebRTC signaling relay cluster. Clients exchange SDP offers, answers and \
            ICE candidates over WebSockets (`/ws`, `/ws/{room}`); this API also reports the \
            node's health, answers cluster-wide room and presence queries, and logs users in.\n\n\
            Every error is JSON `{\"detail\", \"code\"}` (the `ApiError` schema) with a stable \
            `code`; request bodies over 64 KiB are refused with 413 `too_large`, unknown routes \
            with 404 `not_found` and unknown methods with 405 `method_not_allowed`. While a node \
            is starting (connecting to Redis), every route but `/healthz`, `/readyz`, `/health` \
            and `/health/` answers 503 `starting`."
    ),
    tags(
        (name = "health", description = "Liveness, readiness and the health report"),
        (name = "rooms", description = "Cluster-wide rooms and presence (bearer token)"),
        (name = "auth", description = "Accounts, access tokens and refresh tokens"),
        (name = "websocket", description = "The signaling endpoints: WebSocket upgrades"),
        (name = "webrtc", description = "TURN credentials and ICE servers for RTCPeerConnection"),
        (name = "e2ee", description = "The E2EE relay: key bundles with one-time prekey claims, \
            and store-and-forward of encrypted messages (device bearer tokens)"),
        (name = "calls", description = "QR call invites (seed 004): codes, anonymous calls, their signaling socket"),
        (name = "docs", description = "This document and its browsable page"),
    ),
    components(
        schemas(ErrorBody),
        responses(
            HealthReport,
            RoomMembers,
            Tokens,
            Refused,
            InvalidBody,
            Internal,
            DatabaseDown,
            RateLimited,
            ClusterDown
        )
    ),
    modifiers(&BearerScheme)
)]
struct Base;

/// The health report: `healthy`, or `degraded` while draining (200); `unhealthy` (503): a
/// dependency is down, an essential task ended, or the node is still connecting.
#[derive(ToResponse)]
#[response(
    content_type = "application/json",
    example = json!({
        "status": "healthy", "node_id": "node-1", "version": "0.1.0",
        "uptime_seconds": 42, "connections": 2, "rooms": 1, "errors": [],
        "database": {"status": "ok", "backend": "sqlite"},
        "services": {
            "bus": {"status": "ok", "backend": "memory"},
            "presence": {"status": "ok", "backend": "memory"},
            "tasks": {"status": "ok"},
            "database": {"status": "ok", "backend": "sqlite"}
        }
    })
)]
pub struct HealthReport(pub serde_json::Value);

/// A room's members, cluster-wide.
#[derive(ToResponse)]
#[response(
    content_type = "application/json",
    example = json!({
        "room": "demo",
        "count": 1,
        "members": [{"client_id": "c-42", "username": "Alice", "user_id": "alice"}]
    })
)]
pub struct RoomMembers(pub serde_json::Value);

/// Logged in: an access token, valid `expires_in` seconds, and a refresh token.
#[derive(ToResponse)]
#[response(
    content_type = "application/json",
    headers(("Cache-Control" = String, description = "`no-store`: no cache may keep tokens")),
    example = json!({
        "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
        "token_type": "bearer",
        "expires_in": 3600,
        "refresh_token": "q3Jm0v5CkT2cO1hXyLp8dW4eRz7uA9sB6nF0gHjKlMo",
        "user": {
            "id": "5f0c8a9e-3b8e-4a8e-9d1c-0d6f1f2b7c11", "username": "alice", "email": null,
            "role": "user", "active": true, "created_at": 1764806400, "last_login_at": 1764806400
        }
    })
)]
pub struct Tokens(pub serde_json::Value);

/// `unauthorized`, `token_expired` or `token_revoked`: no `Authorization: Bearer` token, or a
/// refused one. (A token whose API key cannot be loaded while the database is down gets 503
/// `unavailable`.)
#[derive(ToResponse)]
pub struct Refused(pub ErrorBody);

/// `invalid_body`: not JSON (400), without `Content-Type: application/json` (415), or a field
/// missing or of the wrong type (422).
#[derive(ToResponse)]
pub struct InvalidBody(pub ErrorBody);

/// `internal`: an unexpected failure; try again.
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);

/// `unavailable`: the database does not answer; try again.
#[derive(ToResponse)]
pub struct DatabaseDown(pub ErrorBody);

/// `rate_limited`: too many requests from this address (`auth_rate`, `ip_upgrade_rate`);
/// `Retry-After` and `retry_after` say how many seconds to wait.
#[derive(ToResponse)]
pub struct RateLimited(pub ErrorBody);

/// `unavailable`: the cluster state (Redis) does not answer; try again.
#[derive(ToResponse)]
pub struct ClusterDown(pub ErrorBody);

/// Adds the `bearer` security scheme: `Authorization: Bearer <JWT>`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "An HS256 access token from `/auth/login`, `/auth/token`, `/auth/refresh` or \
                 `switchboard token mint`",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// The document without its routes: description, tags and the bearer scheme.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// The document as served, shared by the routes through an extension.
#[derive(Clone)]
pub(super) struct Document(Bytes);

/// Splits `api` into its router and its document, and gives the document to `/openapi.json`.
pub fn serve<S: Clone + Send + Sync + 'static>(api: OpenApiRouter<S>) -> Router<S> {
    let (router, document) = api.split_for_parts();
    let json = document.to_json().expect("an OpenAPI document serializes");
    router.layer(Extension(Document(Bytes::from(json))))
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses((status = 200, description = "This document (OpenAPI 3.1)",
        content_type = "application/json"))
)]
pub(super) async fn document(Extension(document): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document.0).into_response()
}

/// The page at `/docs`. Its URLs are relative so that it also works behind a path prefix.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Switchboard API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="stylesheet" href="docs/index.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/swagger-ui-standalone-preset.js"></script>
  <script src="docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// Swagger UI over this document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 200, description = "Swagger UI over this document",
        content_type = "text/html"))
)]
pub(super) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// A file of Swagger UI, embedded in the binary.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    params(("file" = String, Path, description = "A file of Swagger UI's distribution",
        example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
    )
)]
pub(super) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    // The page reads this node's document; the validator badge would send its URL elsewhere.
    let config = Config::new(["openapi.json"]).validator_url("none");
    match utoipa_swagger_ui::serve(&file, Arc::new(config)) {
        Ok(Some(asset)) => {
            Ok(([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response())
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file",
        )),
        Err(e) => {
            tracing::warn!(error = %e, file, "Swagger UI file not served");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "try again",
            ))
        }
    }
}
