-- Crypto-shredding (issue 12, finding 2). Keep in step with ../postgres/0005_row_keys.sql.
-- Purged fields must become unrecoverable from the database files, but a database keeps old
-- row versions the relay cannot overwrite. So each purgeable field is sealed under a random key
-- of its own row in `row_keys` (see shared::at_rest::RowKey), and the purge deletes that key.
-- Row keys only wrap what is already end-to-end ciphertext (envelopes) or already sealed with
-- the data key (relay halves): none of them opens message content.
CREATE TABLE row_keys (
    kind   TEXT NOT NULL,                      -- message | session
    row_id TEXT NOT NULL,                      -- messages.id or sessions.id
    key    BLOB NOT NULL,                      -- 32 random bytes; deleted when the row is purged
    PRIMARY KEY (kind, row_id)
);

-- The envelope JSON, sealed under the message's row key; NULL once purged. Envelopes stored
-- before this migration stay in `legacy_envelope` only until the relay's next start, which
-- seals them into `envelope_sealed` (sealing needs the relay's code, not SQL) and empties it.
ALTER TABLE messages RENAME COLUMN envelope TO legacy_envelope;
ALTER TABLE messages ADD COLUMN envelope_sealed BLOB;

-- From now on `sessions.relay_half` holds the data-key-sealed half sealed again under the
-- session's row key. Sessions live at the upgrade have no row key: they end here (their
-- patients unlock again), which also erases their relay halves.
UPDATE sessions SET relay_half = NULL, ended_at = CAST(strftime('%s', 'now') AS INTEGER),
    end_reason = 'upgrade'
    WHERE ended_at IS NULL;
UPDATE sessions SET relay_half = NULL WHERE relay_half IS NOT NULL;
