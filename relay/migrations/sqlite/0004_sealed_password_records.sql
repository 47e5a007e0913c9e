-- A copy of the database alone must not let anyone test password guesses offline (issue 12,
-- finding 3). An enrollment's salt, KDF parameters and sealed private key now live in one
-- record sealed under the data key (`shared::at_rest`, "password-record/<recipient id>"), and
-- `verifier` now holds the verifier peppered with the data key.
--
-- SQL cannot seal: rows enrolled before this migration keep their old columns until a relay
-- that holds the data key starts (`relay serve` and the `relay patient` commands), which
-- seals them into `password_record`, peppers `verifier` and empties `sealed_private_key`,
-- `kdf_params` and `salt`. After that those three columns stay NULL.
ALTER TABLE recipients ADD COLUMN password_record BLOB;
