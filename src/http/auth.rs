//! The `/auth` API: log in with a username and password (JSON, or the OAuth2 password grant),
//! read the account, and rotate refresh tokens. Access tokens are the node's HS256 JWTs; refresh
//! tokens are random secrets of which the store keeps only the SHA-256, in families: reusing a
//! rotated token revokes its whole family.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::openapi::{DatabaseDown, Internal, InvalidBody, RateLimited, Refused, Tokens};
use super::{Bearer, Limited};
use crate::accounts::{self, AccountError};
use crate::auth::{self, Revocation, unix_seconds as now};
use crate::credentials;
use crate::error::{ApiError, ErrorBody};
use crate::protocol::UserId;
use crate::state::AppState;
use crate::store::{RefreshToken, SecurityEvent, User};

/// How long an access token from `/auth/*` lives.
pub const ACCESS_TTL: Duration = Duration::from_secs(3600);
/// How long a refresh token lives.
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The body of `POST /auth/login`.
#[derive(Deserialize, ToSchema)]
pub struct Login {
    /// Matched in any case.
    #[schema(example = "alice")]
    username: String,
    password: String,
}

/// The form of `POST /auth/token`: an OAuth2 password grant (RFC 6749 §4.3).
#[derive(Deserialize, ToSchema)]
pub struct PasswordGrant {
    /// Only `password` is supported.
    #[schema(example = "password")]
    grant_type: String,
    /// Without it the answer is 400 `invalid_request`.
    #[serde(default)]
    #[schema(required = true, example = "alice")]
    username: String,
    /// Without it the answer is 400 `invalid_request`.
    #[serde(default)]
    #[schema(required = true)]
    password: String,
}

/// The body of `POST /auth/register`.
#[derive(Deserialize, ToSchema)]
pub struct Register {
    #[schema(example = "alice")]
    username: String,
    password: String,
    /// Optional; an empty string is none.
    #[serde(default)]
    #[schema(example = "alice@example.com")]
    email: Option<String>,
}

/// The body of `POST /auth/refresh` and `POST /auth/logout`.
#[derive(Deserialize, ToSchema)]
pub struct Refresh {
    /// A refresh token from a token answer.
    refresh_token: String,
}

/// An OAuth2 error answer (RFC 6749 §5.2): the errors of `POST /auth/token` that OAuth2 defines.
#[derive(Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `unsupported_grant_type`, `invalid_grant`, or
    /// `temporarily_unavailable` for a refusal by a limit.
    #[schema(example = "invalid_grant")]
    error: String,
    #[schema(example = "invalid username or password")]
    error_description: String,
    /// Switchboard's own code, for a refusal by a limit: `rate_limited`, `account_locked`,
    /// `address_locked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    /// Seconds to wait, as in `Retry-After`, for a refusal by a limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// An [`ApiError`] of a limit (429) in OAuth2's shape, keeping its code and `Retry-After`.
fn oauth_refusal(e: ApiError) -> Response {
    if e.status != StatusCode::TOO_MANY_REQUESTS {
        return e.into_response();
    }
    let body = OAuthError {
        error: "temporarily_unavailable".to_owned(),
        error_description: e.detail,
        code: Some(e.code),
        retry_after: e.retry_after,
    };
    let mut response = (e.status, Json(body)).into_response();
    if let Some(seconds) = e.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

/// A refused JSON body, answered as `{detail, code}` with the rejection's status.
pub(super) fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let detail = e.to_string();
        match e {
            AccountError::InvalidCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", detail)
            }
            AccountError::AddressLocked(until) | AccountError::AddressLockedOut(until) => {
                // Logged as the security event the login recorded.
                crate::metrics::limit_dropped("lockout_address_threshold");
                let wait = (until - now()).max(1);
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "address_locked", detail)
                    .with_retry_after(u64::try_from(wait).unwrap_or(1))
            }
            AccountError::Locked(until) | AccountError::LockedOut(until) => {
                crate::metrics::limit_dropped("lockout_threshold");
                let wait = (until - now()).max(1);
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "account_locked", detail)
                    .with_retry_after(u64::try_from(wait).unwrap_or(1))
            }
            AccountError::BadUsername => ApiError::bad_request("invalid_username", detail),
            AccountError::BadPassword => ApiError::bad_request("invalid_password", detail),
            AccountError::BadRole => ApiError::bad_request("invalid_role", detail),
            AccountError::Store(crate::store::StoreError::Duplicate(_)) => ApiError::new(
                StatusCode::CONFLICT,
                "username_taken",
                "a user with this username already exists",
            ),
            AccountError::Store(e) => ApiError::from(e),
            e => {
                tracing::warn!(error = %e, "account operation failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "try again")
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "store query failed");
        ApiError::unavailable("unavailable", "the database is unavailable; try again")
    }
}

/// The account as clients see it (never its hash).
fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "role": user.role,
        "active": user.active,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    })
}

/// Records a security event; a failure to record is logged, never fatal.
async fn record(
    state: &AppState,
    kind: &str,
    user_id: Option<&str>,
    username: Option<&str>,
    ip: IpAddr,
) {
    let event = SecurityEvent {
        id: 0,
        at: now(),
        kind: kind.to_owned(),
        user_id: user_id.map(str::to_owned),
        username: username.map(|name| name.chars().take(64).collect()),
        ip: Some(ip.to_string()),
        detail: None,
    };
    accounts::record_event(&state.store, event).await;
}

/// Mints an access token and a new refresh token (of `family`, or a new one) for `user`.
async fn issue(state: &AppState, user: &User, family: Option<&str>) -> Result<Value, ApiError> {
    let token = refresh_token(user, family.map(str::to_owned));
    let (secret, row) = token;
    state.store.add_refresh_token(&row).await?;
    Ok(grant(state, user, &secret))
}

/// A new refresh token for `user`: its secret, and the row the store keeps.
fn refresh_token(user: &User, family: Option<String>) -> (String, RefreshToken) {
    let (secret, hash) = accounts::new_secret();
    let at = now();
    let row = RefreshToken {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        family_id: family.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        token_hash: hash,
        created_at: at,
        expires_at: at + REFRESH_TTL.as_secs() as i64,
        revoked: false,
        replaced_by: None,
    };
    (secret, row)
}

/// The token answer: `{access_token, token_type, expires_in, refresh_token, user}`. Access
/// tokens live [`ACCESS_TTL`], or `max_token_lifetime` when that is shorter.
fn grant(state: &AppState, user: &User, refresh: &str) -> Value {
    let subject = UserId::parse(&user.id).expect("account ids are valid user ids");
    let ttl = ACCESS_TTL.min(state.config.max_token_lifetime);
    let mut claims = auth::claims(&subject, &user.username, ttl);
    claims.role = (user.role == "admin").then(|| "admin".to_owned());
    json!({
        "access_token": state.tokens.mint(&claims),
        "token_type": "bearer",
        "expires_in": ttl.as_secs(),
        "refresh_token": refresh,
        "user": user_json(user),
    })
}

/// Checks a username and password, recording the outcome.
pub(super) async fn log_in(
    state: &AppState,
    username: &str,
    password: &str,
    ip: IpAddr,
) -> Result<User, ApiError> {
    let lockout = accounts::Lockout {
        threshold: state.config.lockout_threshold,
        seconds: i64::try_from(state.config.lockout_duration.as_secs()).unwrap_or(i64::MAX),
        address: Some((ip, state.config.lockout_address_threshold)),
    };
    match accounts::authenticate(&state.store, username, password, now(), lockout).await {
        Ok(user) => {
            record(state, "login_succeeded", Some(&user.id), Some(username), ip).await;
            Ok(user)
        }
        Err(e) => {
            let event = match e {
                AccountError::InvalidCredentials => Some("login_failed"),
                AccountError::LockedOut(_) => Some("locked_out"),
                AccountError::Locked(_) => Some("login_locked"),
                AccountError::AddressLockedOut(_) => Some("address_locked_out"),
                AccountError::AddressLocked(_) => Some("login_address_locked"),
                _ => None,
            };
            if let Some(event) = event {
                metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => "login").increment(1);
                record(state, event, None, Some(username), ip).await;
            }
            Err(e.into())
        }
    }
}

/// A token answer, which no cache may keep (RFC 6749 §5.1).
pub(super) fn no_store(status: StatusCode, body: Value) -> Response {
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ];
    (status, headers, Json(body)).into_response()
}

/// Log in with a username and password.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, response = Tokens),
        (status = 400, response = InvalidBody),
        (status = 415, response = InvalidBody),
        (status = 422, response = InvalidBody),
        (status = 401, description = "`invalid_credentials`: an unknown user, a wrong password or \
            a disabled account alike", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests from this address; \
            `account_locked` or `address_locked`: too many failed logins of this name or from this \
            address. `Retry-After` and `retry_after` say how many seconds to wait",
            body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Limited(ip): Limited,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(login) = body.map_err(bad_body)?;
    let user = log_in(&state, &login.username, &login.password, ip).await?;
    Ok(no_store(StatusCode::OK, issue(&state, &user, None).await?))
}

/// Create an account and log in.
///
/// Only when `registration` is open: 201 with the login answer.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = Register,
    responses(
        (status = 201, response = Tokens),
        (status = 400, description = "`invalid_body` (not JSON), `invalid_username` or \
            `invalid_password`", body = ErrorBody),
        (status = 403, description = "`registration_closed`", body = ErrorBody),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 415, response = InvalidBody),
        (status = 422, response = InvalidBody),
        (status = 500, response = Internal),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Limited(ip): Limited,
    body: Result<Json<Register>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !state.config.registration_open() {
        let detail = "registration is closed on this deployment";
        return Err(ApiError::forbidden(detail).with_code("registration_closed"));
    }
    let Json(new) = body.map_err(bad_body)?;
    let email = new.email.as_deref().filter(|e| !e.is_empty());
    let user = accounts::add_user(
        &state.store,
        &new.username,
        &new.password,
        email,
        "user",
        now(),
    )
    .await?;
    record(
        &state,
        "registered",
        Some(&user.id),
        Some(&user.username),
        ip,
    )
    .await;
    Ok(no_store(
        StatusCode::CREATED,
        issue(&state, &user, None).await?,
    ))
}

/// Log in with an OAuth2 password grant.
///
/// A form body, and OAuth2's error answers.
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "auth",
    request_body(content = PasswordGrant, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, response = Tokens),
        (status = 400, description = "OAuth2's errors: `invalid_request` (no form body, or no \
            username or password), `unsupported_grant_type`, `invalid_grant` (wrong \
            credentials)", body = OAuthError),
        (status = 429, description = "`rate_limited`: too many requests from this address; \
            `account_locked` or `address_locked`: too many failed logins of this name or from this \
            address. OAuth2's shape: `error` is `temporarily_unavailable`, `code` says which; \
            `Retry-After` and `retry_after` say how many seconds to wait",
            body = OAuthError),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    limited: Result<Limited, ApiError>,
    body: Result<Form<PasswordGrant>, FormRejection>,
) -> Response {
    let ip = match limited {
        Ok(Limited(ip)) => ip,
        Err(e) => return oauth_refusal(e),
    };
    let oauth = |status: StatusCode, error: &str, description: &str| {
        let body = OAuthError {
            error: error.to_owned(),
            error_description: description.to_owned(),
            code: None,
            retry_after: None,
        };
        (status, Json(body)).into_response()
    };
    let Ok(Form(grant)) = body else {
        return oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected a form body",
        );
    };
    if grant.grant_type != "password" {
        let text = "only grant_type=password is supported";
        return oauth(StatusCode::BAD_REQUEST, "unsupported_grant_type", text);
    }
    if grant.username.is_empty() || grant.password.is_empty() {
        let text = "username and password are required";
        return oauth(StatusCode::BAD_REQUEST, "invalid_request", text);
    }
    match log_in(&state, &grant.username, &grant.password, ip).await {
        Ok(user) => match issue(&state, &user, None).await {
            Ok(answer) => no_store(StatusCode::OK, answer),
            Err(e) => e.into_response(),
        },
        Err(e) if e.code == "invalid_credentials" => oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "invalid username or password",
        ),
        Err(e) => oauth_refusal(e),
    }
}

/// The caller's account.
///
/// For a token without an account (from `switchboard token mint` or an application), what the
/// token says: `id`, `username` and `role`.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = Object, example = json!({
            "id": "5f0c8a9e-3b8e-4a8e-9d1c-0d6f1f2b7c11", "username": "alice", "email": null,
            "role": "user", "active": true, "created_at": 1764806400, "last_login_at": 1764806400
        })),
        (status = 401, response = Refused),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    _: Limited,
    Bearer(identity): Bearer,
) -> Result<Json<Value>, ApiError> {
    match state.store.user_by_id(identity.user_id.as_str()).await? {
        Some(user) => Ok(Json(user_json(&user))),
        None => Ok(Json(json!({
            "id": identity.user_id,
            "username": identity.name,
            "role": if identity.admin { "admin" } else { "user" },
        }))),
    }
}

/// Rotate a refresh token.
///
/// A new access token and a new refresh token; the old one is spent. Presenting a spent or
/// revoked one revokes its whole family.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    request_body = Refresh,
    responses(
        (status = 200, response = Tokens),
        (status = 400, response = InvalidBody),
        (status = 415, response = InvalidBody),
        (status = 422, response = InvalidBody),
        (status = 401, description = "`unauthorized`: an unknown, expired, spent or revoked \
            refresh token, or a disabled account", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Limited(ip): Limited,
    body: Result<Json<Refresh>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(refresh) = body.map_err(bad_body)?;
    let invalid = || ApiError::unauthorized("invalid or expired refresh token");
    let hash = accounts::secret_hash(&refresh.refresh_token);
    let old = state
        .store
        .refresh_token(&hash)
        .await?
        .ok_or_else(invalid)?;
    if old.revoked {
        let revoked = state.store.revoke_family(&old.family_id).await?;
        tracing::warn!(
            revoked,
            "a spent refresh token was presented; its family is revoked"
        );
        record(&state, "refresh_reused", Some(&old.user_id), None, ip).await;
        return Err(invalid());
    }
    let user = state.store.user_by_id(&old.user_id).await?;
    let user = user
        .filter(|u| u.active && old.expires_at > now())
        .ok_or_else(invalid)?;
    let (secret, new) = refresh_token(&user, Some(old.family_id.clone()));
    if !state.store.rotate_refresh_token(&old.id, &new).await? {
        // Rotated by a concurrent request a moment ago: a reuse all the same.
        state.store.revoke_family(&old.family_id).await?;
        record(&state, "refresh_reused", Some(&old.user_id), None, ip).await;
        return Err(invalid());
    }
    Ok(no_store(StatusCode::OK, grant(&state, &user, &secret)))
}

/// Log out: revoke the access token the request carries (its `jti`, on every node, until it
/// expires; WebSockets opened with it close with 4004) and, when the optional body names one,
/// the refresh token's family.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    request_body(content = Refresh, description = "Optional: the refresh token to revoke with its family"),
    responses(
        (status = 200, description = "Logged out (an unknown refresh token changes nothing)",
            body = Object, example = json!({"status": "logged_out"})),
        (status = 400, response = InvalidBody),
        (status = 415, response = InvalidBody),
        (status = 422, response = InvalidBody),
        (status = 401, response = Refused),
        (status = 403, description = "`forbidden`: the refresh token is another user's",
            body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = DatabaseDown),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    Limited(ip): Limited,
    Bearer(identity): Bearer,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let refresh = if body.trim_ascii().is_empty() {
        None
    } else {
        let Json(refresh) = Json::<Refresh>::from_bytes(&body).map_err(bad_body)?;
        Some(refresh)
    };
    if let Some(refresh) = refresh {
        let hash = accounts::secret_hash(&refresh.refresh_token);
        if let Some(token) = state.store.refresh_token(&hash).await? {
            if token.user_id != identity.user_id.as_str() {
                return Err(ApiError::forbidden(
                    "this refresh token belongs to another user",
                ));
            }
            state.store.revoke_family(&token.family_id).await?;
        }
    }
    if let Some(jti) = &identity.credential.jti {
        let revocation = Revocation::Token {
            jti: jti.to_string(),
            expires_at: identity.credential.expires_at + auth::LEEWAY_SECS,
        };
        credentials::revoke(&state.store, &state.hub, &revocation).await?;
    }
    let user = identity.user_id.as_str();
    record(&state, "logged_out", Some(user), Some(&identity.name), ip).await;
    Ok(Json(json!({"status": "logged_out"})))
}
