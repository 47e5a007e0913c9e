-- A patient's live messages, one organisation's (issue 11). Keep in step with
-- ../sqlite/0010_messages_by_patient.sql.
--
-- The viewer's list asks for recipient_id, organisation_id, status = 'active' and
-- expires_at > now. With the index on (recipient_id, status) and no table statistics, SQLite
-- chose the expiry index instead and read every live message of every patient for each list:
-- 17 ms of CPU per request with 19,000 live messages (scripts/bench, GET /v1/viewer/messages).
-- An index on all four columns serves the whole condition, and still serves the queries by
-- recipient_id alone.
DROP INDEX messages_recipient;
CREATE INDEX messages_recipient ON messages(recipient_id, organisation_id, status, expires_at);
