-- QR call invites (Postgres): the codes owners hand out, the calls made with them, and the
-- owners' sealed profile fields. Times are Unix seconds.

-- A call code, by the SHA-256 (hex) of its 256-bit token: the token itself is never stored.
-- `id` names the code to its owner (listing, revoking) without revealing anything of the token.
CREATE TABLE token_mappings (
    hashed_token TEXT    PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    is_revoked   BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX token_mappings_user ON token_mappings (user_id);
CREATE INDEX token_mappings_expiry ON token_mappings (expires_at);

-- A call: participant a is the caller (who scanned), b the owner; both only by per-call
-- anonymous ids. Status: ringing -> active -> ended, or missed / rejected / expired. The
-- participants' signaling secrets are kept as SHA-256 hashes; `owner_id` is what lets the
-- owner's devices answer, and never leaves the server.
CREATE TABLE call_sessions (
    session_id             TEXT    PRIMARY KEY,
    participant_a_anon     TEXT    NOT NULL,
    participant_b_anon     TEXT    NOT NULL,
    status                 TEXT    NOT NULL,
    created_at             BIGINT  NOT NULL,
    answered_at            BIGINT,
    ended_at               BIGINT,
    -- SHA-256 over both sides' DTLS fingerprints, once both are known: what they compare
    encryption_fingerprint TEXT,
    fingerprint_a          TEXT,
    fingerprint_b          TEXT,
    owner_id               TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    caller_secret_hash     TEXT    NOT NULL,
    callee_secret_hash     TEXT,
    ring_deadline          BIGINT  NOT NULL,
    session_deadline       BIGINT  NOT NULL
);
CREATE INDEX call_sessions_ended ON call_sessions (ended_at);
CREATE INDEX call_sessions_status ON call_sessions (status, ring_deadline);

-- What an owner may leave for the finder of a code's object, sealed with the data key.
CREATE TABLE user_profiles (
    user_id           TEXT    PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    emergency_contact TEXT,
    vehicle_number    TEXT,
    updated_at        BIGINT  NOT NULL
);
