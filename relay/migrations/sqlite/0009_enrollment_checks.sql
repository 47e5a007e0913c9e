-- Verified first enrollment (issue 10, part 2). Keep in step with
-- ../postgres/0009_enrollment_checks.sql.
--
-- A sender may ask the patient to confirm their identity (date of birth, an enrollment code,
-- or both) before its agent trusts the first key enrolled from a message's link. The answer
-- never reaches the relay: the patient's browser and the sender's agent run a PAKE through it
-- (docs/PROTOCOL.md, "Enrollment check"). The relay only stores the exchange's public messages
-- and holds the candidate enrollment until the agent's verdict.

-- What the message's link asks before enrolling (shared::identity_check::CheckKind): NULL for
-- none, else 'date_of_birth', 'code' or 'date_of_birth_and_code'.
ALTER TABLE messages ADD COLUMN identity_check TEXT;

-- One row per answer the patient typed (an attempt). Counting a message's rows limits the
-- answers it accepts (shared::identity_check::MAX_ATTEMPTS). The candidate enrollment is held
-- exactly as recipients holds one (public key, password record sealed under the data key for
-- the recipient, peppered verifier) and is erased once the attempt is decided: copied to the
-- patient when the answer verified, dropped when it did not.
CREATE TABLE enrollment_checks (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    organisation_id TEXT NOT NULL REFERENCES organisations(id),
    recipient_id TEXT NOT NULL REFERENCES recipients(id),
    enrollment_epoch BIGINT NOT NULL,
    public_key BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    password_record BLOB,
    verifier BLOB,
    patient_message TEXT NOT NULL,
    agent_message TEXT,
    agent_confirmation TEXT,
    patient_confirmation TEXT,
    -- shared::api::CheckProgress
    progress TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX enrollment_checks_by_message ON enrollment_checks (message_id);
CREATE INDEX enrollment_checks_by_progress ON enrollment_checks (organisation_id, progress);
