-- Patients belong to an organisation (issue 10, part 1). Keep in step with
-- ../sqlite/0008_patients_per_organisation.sql.
--
-- A patient record (key, password, sessions, devices, counters, messages) is now one
-- organisation's: the same number texted by two organisations is two patients, with two
-- passwords, so that no organisation learns from the relay that a number is another's patient.
-- `phone_lookup` becomes the keyed hash of (organisation, number) (PROTOCOL.md, "Keyed
-- lookups"), so the unique index on it stays, and a copy of the database cannot link one
-- organisation's patient to another's.
--
-- SQL cannot compute that keyed hash. Rows written before this migration keep `organisation_id`
-- NULL and their old lookup until a relay that holds the data key starts (`relay serve` and
-- the `relay patient` commands): it gives each to the organisation that messaged it first and
-- rehashes its lookup (relay::store::recipients::scope_to_organisations). Messages another
-- organisation sent such a patient before the upgrade stay with that patient (they are wrapped
-- to its key); that organisation's next message goes to a new patient record of its own.
ALTER TABLE recipients ADD COLUMN organisation_id TEXT REFERENCES organisations(id);

-- Each session is opened through one organisation's link and lists only that organisation's
-- messages. Sessions live at the upgrade cannot say which link opened them: they end here (the
-- patient unlocks again), which also erases their relay halves.
ALTER TABLE sessions ADD COLUMN organisation_id TEXT REFERENCES organisations(id);
UPDATE sessions SET relay_half = NULL, ended_at = CAST(EXTRACT(EPOCH FROM now()) AS BIGINT),
    end_reason = 'upgrade'
    WHERE ended_at IS NULL;
