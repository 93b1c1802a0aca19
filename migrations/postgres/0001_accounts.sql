-- Accounts, refresh tokens, API keys and security events (Postgres).
-- Times are Unix seconds; ids are UUIDs as text; secrets are stored only as hashes or sealed.

CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    username      TEXT    NOT NULL,
    -- the username folded to lower case: unique, so names differ in more than case
    username_key  TEXT    NOT NULL UNIQUE,
    email         TEXT,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL DEFAULT 'user',
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT  NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE refresh_tokens (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- every token rotated from one login shares a family; reuse revokes the family
    family_id   TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

CREATE TABLE api_keys (
    id            TEXT   PRIMARY KEY,
    name          TEXT   NOT NULL,
    -- the signing secret, sealed with the node's key (never stored in the clear)
    secret_sealed TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE UNIQUE INDEX api_keys_name ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE security_events (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT    NOT NULL,
    kind     TEXT      NOT NULL,
    user_id  TEXT,
    username TEXT,
    ip       TEXT,
    detail   TEXT
);
CREATE INDEX security_events_at ON security_events (at);
CREATE INDEX security_events_user ON security_events (user_id, at);
