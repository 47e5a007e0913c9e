//! Organisations and their API keys.

use shared::ids::OrganisationId;
use shared::keys::PublicKey;
use shared::token::TokenHash;
use sqlx::{AnyConnection, Row};

use super::{StoreError, StoreResult, row};

/// An organisation as the relay knows it.
#[derive(Debug, Clone)]
pub struct Organisation {
    /// Its id.
    pub id: OrganisationId,
    /// Name shown to patients.
    pub display_name: String,
    /// Its registered public key, once registered.
    pub public_key: Option<PublicKey>,
}

/// The organisation an API key belongs to.
#[derive(Debug, Clone)]
pub struct ApiKeyOwner {
    /// The API key's id (not secret; appears in audit details).
    pub key_id: String,
    /// The organisation.
    pub organisation: Organisation,
}

fn parse_org(row: &sqlx::any::AnyRow) -> StoreResult<Organisation> {
    let key: Option<Vec<u8>> = row.try_get("public_key")?;
    Ok(Organisation {
        id: row::parsed(row, "id")?,
        display_name: row.try_get("display_name")?,
        public_key: key
            .map(|der| PublicKey::from_spki_der(&der))
            .transpose()
            .map_err(|e| StoreError::corrupt("organisation key", e))?,
    })
}

/// Creates an organisation.
pub async fn create(
    conn: &mut AnyConnection,
    id: OrganisationId,
    display_name: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO organisations (id, display_name, created_at) VALUES ($1, $2, $3)")
        .bind(id.to_string())
        .bind(display_name)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Finds an organisation by id.
pub async fn get(
    conn: &mut AnyConnection,
    id: OrganisationId,
) -> StoreResult<Option<Organisation>> {
    sqlx::query("SELECT id, display_name, public_key FROM organisations WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .map(|row| parse_org(&row))
        .transpose()
}

/// Lists all organisations.
pub async fn list(conn: &mut AnyConnection) -> StoreResult<Vec<Organisation>> {
    sqlx::query("SELECT id, display_name, public_key FROM organisations ORDER BY created_at, id")
        .fetch_all(conn)
        .await?
        .iter()
        .map(parse_org)
        .collect()
}

/// Registers (or replaces) the organisation's public key.
pub async fn set_public_key(
    conn: &mut AnyConnection,
    id: OrganisationId,
    key: &PublicKey,
) -> StoreResult<()> {
    sqlx::query("UPDATE organisations SET public_key = $1, fingerprint = $2 WHERE id = $3")
        .bind(key.spki_der().to_vec())
        .bind(key.fingerprint().to_string())
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a new API key hash.
pub async fn create_api_key(
    conn: &mut AnyConnection,
    key_id: &str,
    organisation: OrganisationId,
    hash: &TokenHash,
    label: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, organisation_id, token_hash, label, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id)
    .bind(organisation.to_string())
    .bind(hash.as_bytes().to_vec())
    .bind(label)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes an API key; returns its organisation if it existed and was live.
pub async fn revoke_api_key(
    conn: &mut AnyConnection,
    key_id: &str,
    now: i64,
) -> StoreResult<Option<OrganisationId>> {
    let row = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
         RETURNING organisation_id",
    )
    .bind(now)
    .bind(key_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| row::parsed(&row, "organisation_id"))
        .transpose()
}

/// The live API key with this hash, and its organisation.
pub async fn api_key_owner(
    conn: &mut AnyConnection,
    hash: &TokenHash,
) -> StoreResult<Option<ApiKeyOwner>> {
    let row = sqlx::query(
        "SELECT k.id AS key_id, o.id, o.display_name, o.public_key \
         FROM api_keys k JOIN organisations o ON o.id = k.organisation_id \
         WHERE k.token_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(hash.as_bytes().to_vec())
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(ApiKeyOwner {
            key_id: row.try_get("key_id")?,
            organisation: parse_org(&row)?,
        })
    })
    .transpose()
}
