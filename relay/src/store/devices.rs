//! Device tokens: the browsers that unlocked a patient before (OWASP "device cookies").
//!
//! A successful unlock gives the browser a random token in an `HttpOnly` cookie; the relay keeps
//! only its hash ([`TokenKind::Device`](shared::token::TokenKind::Device)), bound to the patient
//! it unlocked, with a failure [`Counter`] of its own. A proof presented with a live binding is
//! held back by that counter only, not by the patient's lockout for unknown browsers nor by the
//! client address's: whoever guesses with the link alone cannot lock the patient's own browser
//! out, and a stolen device token still gets no more guesses than the device lockout allows.

use shared::ids::RecipientId;
use shared::token::TokenHash;
use sqlx::{AnyConnection, Row};

use super::throttle::Counter;
use super::{StoreResult, Tx, row};

/// A live binding of a presented device token to a patient.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    /// The token's hash.
    pub token: TokenHash,
    /// The device's own wrong proofs and lockouts.
    pub unlock: Counter,
}

/// The first of `tokens` that is bound to `recipient` and not expired at `now`. Callers hold the
/// patient's row lock, which already serialises the patient's unlocks and so the device's.
pub async fn find(
    tx: &mut Tx,
    recipient: RecipientId,
    tokens: &[TokenHash],
    now: i64,
) -> StoreResult<Option<Device>> {
    for token in tokens {
        let found = sqlx::query(
            "SELECT failed_unlocks, lockouts, locked_until FROM device_tokens \
             WHERE token_hash = $1 AND recipient_id = $2 AND expires_at > $3",
        )
        .bind(token.as_bytes().to_vec())
        .bind(recipient.to_string())
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(found) = found {
            return Ok(Some(Device {
                token: *token,
                unlock: Counter {
                    count: row::count(&found, "failed_unlocks")?,
                    lockouts: row::count(&found, "lockouts")?,
                    locked_until: found.try_get("locked_until")?,
                    updated_at: 0,
                },
            }));
        }
    }
    Ok(None)
}

/// The first of `tokens` the relay issued and that is still live for some patient: a browser
/// that unlocked one patient keeps its token when it unlocks another (a shared family phone).
pub async fn first_live(
    conn: &mut AnyConnection,
    tokens: &[TokenHash],
    now: i64,
) -> StoreResult<Option<TokenHash>> {
    for token in tokens {
        let live = sqlx::query(
            "SELECT 1 AS live FROM device_tokens WHERE token_hash = $1 AND expires_at > $2 \
             LIMIT 1",
        )
        .bind(token.as_bytes().to_vec())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if live.is_some() {
            return Ok(Some(*token));
        }
    }
    Ok(None)
}

/// Binds `token` to `recipient` until `expires_at`, with a clean counter: after a successful
/// unlock, for a new token or one the browser already had.
pub async fn bind(
    conn: &mut AnyConnection,
    token: &TokenHash,
    recipient: RecipientId,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO device_tokens (token_hash, recipient_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash, recipient_id) DO UPDATE SET \
         expires_at = $4, failed_unlocks = 0, lockouts = 0, locked_until = 0",
    )
    .bind(token.as_bytes().to_vec())
    .bind(recipient.to_string())
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the device's failure counter.
pub async fn set_unlock_state(
    conn: &mut AnyConnection,
    device: &Device,
    recipient: RecipientId,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE device_tokens SET failed_unlocks = $1, lockouts = $2, locked_until = $3 \
         WHERE token_hash = $4 AND recipient_id = $5",
    )
    .bind(i64::from(device.unlock.count))
    .bind(i64::from(device.unlock.lockouts))
    .bind(device.unlock.locked_until)
    .bind(device.token.as_bytes().to_vec())
    .bind(recipient.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the failure counters of every device of the patient (`relay patient clear-lockout`).
pub async fn clear_counters(conn: &mut AnyConnection, recipient: RecipientId) -> StoreResult<()> {
    sqlx::query(
        "UPDATE device_tokens SET failed_unlocks = 0, lockouts = 0, locked_until = 0 \
         WHERE recipient_id = $1",
    )
    .bind(recipient.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets every device of the patient: after a reset (a new password starts with no trusted
/// browser) and a remote wipe (the lost phone is trusted no more).
pub async fn forget(conn: &mut AnyConnection, recipient: RecipientId) -> StoreResult<u64> {
    Ok(
        sqlx::query("DELETE FROM device_tokens WHERE recipient_id = $1")
            .bind(recipient.to_string())
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// Deletes expired bindings.
pub async fn prune(conn: &mut AnyConnection, now: i64) -> StoreResult<u64> {
    Ok(
        sqlx::query("DELETE FROM device_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
