-- SecureText relay schema (SQLite). Keep in step with ../postgres/0001_initial.sql.
-- Times are Unix seconds. The relay stores ciphertext, public keys, salts, verifiers and hashes:
-- nothing here opens a message.

CREATE TABLE organisations (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    public_key   BLOB,            -- SPKI DER of the organisation's RSA key
    fingerprint  TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES organisations(id),
    token_hash      BLOB NOT NULL UNIQUE,
    label           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);

CREATE TABLE recipients (
    id                 TEXT PRIMARY KEY,
    phone_lookup       BLOB NOT NULL UNIQUE,   -- keyed hash of the E.164 number
    phone_sealed       BLOB NOT NULL,          -- the number, sealed with the data key
    created_at         INTEGER NOT NULL,
    enrolled_at        INTEGER,
    public_key         BLOB,
    fingerprint        TEXT,
    sealed_private_key BLOB,
    kdf_params         TEXT,
    salt               BLOB,
    verifier           BLOB,
    failed_unlocks     INTEGER NOT NULL DEFAULT 0,
    lockouts           INTEGER NOT NULL DEFAULT 0,
    locked_until       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES organisations(id),
    recipient_id    TEXT NOT NULL REFERENCES recipients(id),
    idempotency_key TEXT,
    envelope        TEXT,                      -- JSON envelope; NULL once purged
    recipient_wrap_fingerprint TEXT,
    status          TEXT NOT NULL,             -- active | revoked | expired
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    opened_at       INTEGER,
    read_at         INTEGER,
    ended_at        INTEGER,
    UNIQUE (organisation_id, idempotency_key)
);
CREATE INDEX messages_recipient ON messages(recipient_id, status);
CREATE INDEX messages_expiry ON messages(status, expires_at);

CREATE TABLE links (
    token_hash BLOB PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE REFERENCES messages(id)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   BLOB NOT NULL UNIQUE,
    recipient_id TEXT NOT NULL REFERENCES recipients(id),
    relay_half   BLOB,                         -- destroyed (NULL) when the session ends
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT
);
CREATE INDEX sessions_recipient ON sessions(recipient_id);

CREATE TABLE sms_outbox (
    id              TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL REFERENCES messages(id),
    organisation_id TEXT NOT NULL,
    to_sealed       BLOB NOT NULL,
    body_sealed     BLOB,                      -- wiped (NULL) once sent or failed
    status          TEXT NOT NULL,             -- pending | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER NOT NULL DEFAULT 0,
    provider_id     TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX sms_outbox_due ON sms_outbox(status, next_attempt_at);

CREATE TABLE audit_events (
    organisation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    message_id      TEXT,
    event           TEXT NOT NULL,             -- the hash-chained event as JSON
    PRIMARY KEY (organisation_id, seq)
);
CREATE INDEX audit_events_message ON audit_events(message_id);

CREATE TABLE throttles (
    key          TEXT PRIMARY KEY,             -- "address:<keyed hash>" or "send:<api key id>:<minute>"
    count        INTEGER NOT NULL,
    lockouts     INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL
);
