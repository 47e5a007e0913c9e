//! The device cookie: how a browser that unlocked before is recognised at the next unlock.
//!
//! Its value is a random [`Token`] and nothing else (no identity, no secret beyond its
//! randomness); the relay stores only its hash, bound to the patient it unlocked
//! ([`crate::store::devices`]). It is `HttpOnly`, `SameSite=Strict`, `Secure` under TLS, sent
//! only to `POST /v1/viewer/unlock` (its `Path`), and lives `Limits::device_lifetime`.

use axum::http::{HeaderMap, HeaderValue};
use shared::token::{Token, TokenHash, TokenKind};

use crate::error::{ApiResult, AppError};
use crate::http::cookie_tokens;
use crate::state::AppState;

/// Name of the device cookie over plain HTTP (development, tests).
pub const DEVICE_COOKIE: &str = "securetext_device";
/// Name over TLS: the `__Secure-` prefix makes browsers accept it only with `Secure` (the
/// `__Host-` prefix would demand `Path=/`, and this cookie is meant for one path only).
pub const TLS_DEVICE_COOKIE: &str = "__Secure-securetext_device";
/// The one path the browser sends it to.
const DEVICE_COOKIE_PATH: &str = "/v1/viewer/unlock";

fn name(state: &AppState) -> &'static str {
    if state.settings().tls {
        TLS_DEVICE_COOKIE
    } else {
        DEVICE_COOKIE
    }
}

/// The device tokens the request presents (a few at most, see [`cookie_tokens`]).
pub fn presented(state: &AppState, headers: &HeaderMap) -> Vec<Token> {
    cookie_tokens(headers, name(state))
}

/// The hashes the relay stores for `tokens`.
pub fn hashes(tokens: &[Token]) -> Vec<TokenHash> {
    tokens.iter().map(|t| t.hash(TokenKind::Device)).collect()
}

/// The `Set-Cookie` value that gives the browser (again) its device token.
pub fn set_cookie(state: &AppState, token: &Token) -> ApiResult<HeaderValue> {
    let secure = if state.settings().tls { "; Secure" } else { "" };
    let max_age = state.settings().limits.device_lifetime.as_secs();
    HeaderValue::from_str(&format!(
        "{}={}; Path={DEVICE_COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        name(state),
        token.to_base64url().as_str(),
    ))
    .map_err(|e| AppError::Internal(format!("cookie: {e}")))
}
