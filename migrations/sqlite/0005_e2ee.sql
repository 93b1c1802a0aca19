-- The E2EE relay (SQLite): accounts by phone hash, their devices and public key bundles,
-- one-time prekeys (each claimed at most once), claimed-key tombstones, single-use WebSocket
-- tickets and the queue of encrypted messages for devices that are offline. Nothing here is
-- plaintext: keys are public, contents are ciphertexts, secrets are stored as SHA-256 hashes.

CREATE TABLE e2ee_accounts (
    id           TEXT   PRIMARY KEY,
    -- SHA-256 of the phone number, as the client computed it (64 lower-case hex digits)
    phone_hash   TEXT   NOT NULL UNIQUE,
    -- Ed25519 public key, Base64
    identity_key TEXT   NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE e2ee_devices (
    account_id         TEXT   NOT NULL REFERENCES e2ee_accounts (id) ON DELETE CASCADE,
    device_id          INTEGER NOT NULL,
    -- `account_id:device_id`: the row's one text key (the sealing context of its push token)
    device_key         TEXT   NOT NULL UNIQUE,
    -- SHA-256 of the device's bearer token
    token_hash         TEXT   NOT NULL UNIQUE,
    registration_id    INTEGER NOT NULL DEFAULT 0,
    signed_prekey_id   INTEGER NOT NULL,
    signed_prekey      TEXT   NOT NULL,
    prekey_signature   TEXT   NOT NULL,
    fallback_key_id    INTEGER NOT NULL,
    fallback_key       TEXT   NOT NULL,
    fallback_signature TEXT   NOT NULL,
    -- the push service's token, sealed (never stored in the clear)
    push_token_sealed  TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
);

-- Unclaimed one-time prekeys; a claim deletes the oldest (lowest id) of a device.
CREATE TABLE e2ee_prekeys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT   NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key TEXT   NOT NULL,
    UNIQUE (account_id, device_id, key_id),
    FOREIGN KEY (account_id, device_id) REFERENCES e2ee_devices (account_id, device_id)
        ON DELETE CASCADE
);
CREATE INDEX e2ee_prekeys_device ON e2ee_prekeys (account_id, device_id, id);

-- Key ids claimed in the last 7 days: uploading one of them again is refused.
CREATE TABLE e2ee_claimed_prekeys (
    account_id TEXT   NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id),
    FOREIGN KEY (account_id, device_id) REFERENCES e2ee_devices (account_id, device_id)
        ON DELETE CASCADE
);
CREATE INDEX e2ee_claimed_prekeys_at ON e2ee_claimed_prekeys (claimed_at);

-- Single-use WebSocket tickets, by the SHA-256 of their secret.
CREATE TABLE e2ee_tickets (
    ticket_hash TEXT   PRIMARY KEY,
    account_id  TEXT   NOT NULL,
    device_id   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    FOREIGN KEY (account_id, device_id) REFERENCES e2ee_devices (account_id, device_id)
        ON DELETE CASCADE
);
CREATE INDEX e2ee_tickets_expiry ON e2ee_tickets (expires_at);

-- Messages waiting for their device's acknowledgement.
CREATE TABLE e2ee_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    TEXT   NOT NULL,
    device_id     INTEGER NOT NULL,
    sender_id     TEXT   NOT NULL,
    sender_device INTEGER NOT NULL,
    -- the ciphertext, Base64 as the sender gave it
    content       TEXT   NOT NULL,
    sent_at       INTEGER NOT NULL,
    FOREIGN KEY (account_id, device_id) REFERENCES e2ee_devices (account_id, device_id)
        ON DELETE CASCADE
);
CREATE INDEX e2ee_messages_recipient ON e2ee_messages (account_id, device_id, id);
CREATE INDEX e2ee_messages_sent ON e2ee_messages (sent_at);
