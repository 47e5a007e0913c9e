-- The audit's `failures=<n>` restarts when a lockout starts and after a success, so the log
-- never showed how many wrong passwords were tried in all (issue 12, finding 14). This counts
-- the wrong proofs against the patient's current password: neither a lockout nor a success
-- resets it; a new password (enrollment, re-enrollment after a reset) does. Rows enrolled
-- before this migration start at 0.
ALTER TABLE recipients ADD COLUMN wrong_guesses BIGINT NOT NULL DEFAULT 0;
