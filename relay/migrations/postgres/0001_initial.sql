-- SecureText relay schema (PostgreSQL). Keep in step with ../sqlite/0001_initial.sql.
-- Times are Unix seconds. The relay stores ciphertext, public keys, salts, verifiers and hashes:
-- nothing here opens a message.

CREATE TABLE organisations (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    public_key   BYTEA,            -- SPKI DER of the organisation's RSA key
    fingerprint  TEXT,
    created_at   BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES organisations(id),
    token_hash      BYTEA NOT NULL UNIQUE,
    label           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);

CREATE TABLE recipients (
    id                 TEXT PRIMARY KEY,
    phone_lookup       BYTEA NOT NULL UNIQUE,   -- keyed hash of the E.164 number
    phone_sealed       BYTEA NOT NULL,          -- the number, sealed with the data key
    created_at         BIGINT NOT NULL,
    enrolled_at        BIGINT,
    public_key         BYTEA,
    fingerprint        TEXT,
    sealed_private_key BYTEA,
    kdf_params         TEXT,
    salt               BYTEA,
    verifier           BYTEA,
    failed_unlocks     BIGINT NOT NULL DEFAULT 0,
    lockouts           BIGINT NOT NULL DEFAULT 0,
    locked_until       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES organisations(id),
    recipient_id    TEXT NOT NULL REFERENCES recipients(id),
    idempotency_key TEXT,
    envelope        TEXT,                      -- JSON envelope; NULL once purged
    recipient_wrap_fingerprint TEXT,
    status          TEXT NOT NULL,             -- active | revoked | expired
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    opened_at       BIGINT,
    read_at         BIGINT,
    ended_at        BIGINT,
    UNIQUE (organisation_id, idempotency_key)
);
CREATE INDEX messages_recipient ON messages(recipient_id, status);
CREATE INDEX messages_expiry ON messages(status, expires_at);

CREATE TABLE links (
    token_hash BYTEA PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE REFERENCES messages(id)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE,
    recipient_id TEXT NOT NULL REFERENCES recipients(id),
    relay_half   BYTEA,                         -- destroyed (NULL) when the session ends
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT
);
CREATE INDEX sessions_recipient ON sessions(recipient_id);

CREATE TABLE sms_outbox (
    id              TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL REFERENCES messages(id),
    organisation_id TEXT NOT NULL,
    to_sealed       BYTEA NOT NULL,
    body_sealed     BYTEA,                      -- wiped (NULL) once sent or failed
    status          TEXT NOT NULL,             -- pending | sent | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    provider_id     TEXT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX sms_outbox_due ON sms_outbox(status, next_attempt_at);

CREATE TABLE audit_events (
    organisation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    message_id      TEXT,
    event           TEXT NOT NULL,             -- the hash-chained event as JSON
    PRIMARY KEY (organisation_id, seq)
);
CREATE INDEX audit_events_message ON audit_events(message_id);

CREATE TABLE throttles (
    key          TEXT PRIMARY KEY,             -- "address:<keyed hash>" or "send:<api key id>:<minute>"
    count        BIGINT NOT NULL,
    lockouts     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL
);
