-- Lockouts that cannot be turned against the patient, and a reset without a race (issue 10,
-- parts 3 and 4). Keep in step with ../postgres/0007_lockouts.sql.

-- When the patient's last wrong proof from an unknown browser was (0: none since the last
-- success). The per-address lockout only holds back patients with such a recent failure, so
-- that a carrier address locked by someone else's guesses does not lock out everyone behind it.
ALTER TABLE recipients ADD COLUMN failed_unlock_at INTEGER NOT NULL DEFAULT 0;

-- Enrollment epochs: `relay patient reset-enrollment` adds one to the patient's, and each
-- message records the patient's epoch when it was accepted. Only a link whose message carries
-- the current epoch may enroll, so no link texted before a reset can set the new password.
-- Existing rows start at 0 (a reset before this migration is not made retroactive).
ALTER TABLE recipients ADD COLUMN enrollment_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN enrollment_epoch INTEGER NOT NULL DEFAULT 0;

-- How often the link was opened (each open is audited as `link_opened` with `opens=<n>`).
ALTER TABLE messages ADD COLUMN opens INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET opens = 1 WHERE opened_at IS NOT NULL;

-- Device tokens: a browser that unlocked a patient gets a random token in an HttpOnly cookie;
-- the relay keeps only its hash, bound to that patient, with the device's own wrong-proof
-- counter. Its proofs pass the patient's lockout for unknown browsers.
CREATE TABLE device_tokens (
    token_hash     BLOB NOT NULL,                -- shared::token hash, kind "device"
    recipient_id   TEXT NOT NULL REFERENCES recipients(id),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    failed_unlocks INTEGER NOT NULL DEFAULT 0,
    lockouts       INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (token_hash, recipient_id)
);
CREATE INDEX device_tokens_recipient ON device_tokens(recipient_id);
CREATE INDEX device_tokens_expiry ON device_tokens(expires_at);
