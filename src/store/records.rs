//! The rows of the store. `Debug` never shows a hash or a sealed secret.

use std::fmt;

/// An account.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    /// argon2id (or an imported bcrypt hash until the first login re-hashes it).
    pub password_hash: String,
    pub role: String,
    pub active: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// What creating a user takes.
#[derive(Clone, Copy)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub password_hash: &'a str,
    pub role: &'a str,
}

/// A refresh token, by the SHA-256 of its secret.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshToken {
    pub id: String,
    pub user_id: String,
    /// Every token rotated from one login shares its family.
    pub family_id: String,
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
    /// The token that replaced this one when it was rotated.
    pub replaced_by: Option<String>,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("family_id", &self.family_id)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// An application's API key: its id is the `kid` of the tokens it signs.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The signing secret, sealed with the node's key.
    pub secret_sealed: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Something security-relevant that happened: who, what, when, from where — never a secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecurityEvent {
    /// Assigned by the store; ignored when recording.
    pub id: i64,
    pub at: i64,
    /// `login_succeeded`, `login_failed`, `lockout`, `token_revoked`, `api_key_created`, ...
    pub kind: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}
