-- Revoked credentials and login lockout (SQLite).

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

-- Failed logins by username, for every name tried (known or not, so that a lockout does not
-- tell them apart): the count within the lockout window, and until when the name refuses
-- logins after too many. A success deletes the row.
CREATE TABLE login_failures (
    username_key TEXT   PRIMARY KEY,
    failures     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    locked_until INTEGER
);
CREATE INDEX login_failures_updated ON login_failures (updated_at);
