-- Revoked credentials and account lockout (SQLite).

-- What must stop before it expires: an access token (`token`, subject = its jti), an API key
-- (`key`, subject = its id) or a user's tokens issued before `issued_before` (`user`, subject =
-- the user id). Nodes read new rows in `seq` order; a row goes once what it stops has expired.
CREATE TABLE revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    issued_before INTEGER,
    expires_at    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX revocations_expiry ON revocations (expires_at);

-- Consecutive failed logins, and until when the account refuses logins after too many.
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until INTEGER;
