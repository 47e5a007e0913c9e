//! The page's address and lifetime: where the link token comes from, and when the session ends
//! because the patient left.
//!
//! - **The link.** SMS links are `/m/#<token>`: the token is in the fragment, which the browser
//!   never sends, so no proxy or CDN in front of the relay logs it. Links of the older path form
//!   `/m/<token>` still work. Either way the token is read once and the address replaced with
//!   `/m/` (which the relay serves as this page), so the token stays neither in the address bar
//!   nor in the history, and a reload or a back navigation lands on the viewer again.
//! - **Another link in this tab.** While the page is at `/m/`, opening `/m/#<other token>` only
//!   changes the fragment: the browser loads nothing and fires `hashchange`. The viewer then
//!   reloads itself, and the new page reads the token like any other load (and re-opens the
//!   live session, PROTOCOL.md "Session re-open").
//! - **Leaving.** On `pagehide` the viewer ends the session (a `keepalive` logout, see
//!   [`api::logout_on_exit`]), deletes the session record and clears the page — unless the
//!   page is being replaced by the viewer itself in this tab: a reload, or a link to `/m/…`.
//!   Only the outgoing page can tell, and only through `pageswap`, which fires (before
//!   `pagehide`) for a navigation to another document and carries the navigation's type and,
//!   for a same-origin destination, its URL. No `pageswap` (closing the tab) or no activation
//!   (another site) means leaving. A browser without `pageswap` ends the session on every
//!   `pagehide`, reloads included: the reloaded page then asks for the link again — the safe
//!   side of not knowing.

use std::cell::Cell;
use std::rc::Rc;

use leptos::ev;
use leptos::prelude::{WindowListenerHandle, window_event_listener, window_event_listener_untyped};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{NavigationActivation, NavigationApiType};

use crate::api;
use crate::vault;

/// The viewer's address once the token has been read: the relay serves the page there.
const HOME: &str = "/m/";

/// Reads the link token — from the fragment (`/m/#<token>`), or from the path of an older link
/// (`/m/<token>`) — and replaces the address with `/m/`, so that the token is left neither in
/// the address bar nor in the history.
pub fn take_link() -> Option<String> {
    let window = web_sys::window()?;
    let location = window.location();
    let path = location.pathname().ok()?;
    let in_path = path.strip_prefix(HOME)?.trim_matches('/');
    let hash = location.hash().unwrap_or_default();
    let token = match hash.strip_prefix('#') {
        Some(in_fragment) if !in_fragment.is_empty() => in_fragment,
        _ => in_path,
    }
    .to_owned();
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(HOME));
    }
    (!token.is_empty()).then_some(token)
}

/// Reloads the page when a link is opened in this tab while it shows `/m/` (a change of
/// fragment only, which loads nothing), so that the new token is read as on any load.
pub fn reload_on_new_link() -> WindowListenerHandle {
    window_event_listener(ev::hashchange, |_| {
        let Some(window) = web_sys::window() else {
            return;
        };
        if window.location().hash().is_ok_and(|hash| hash.len() > 1) {
            let _ = window.location().reload();
        }
    })
}

/// Ends the session when the patient leaves the page (see the module documentation): logs out
/// with a `keepalive` request if `session_open` says a session may be live or a session record
/// is stored, deletes the record, and calls `forget` to clear the page, which the browser's
/// back/forward cache might otherwise keep in memory and show again.
pub fn end_session_on_leave(
    session_open: impl Fn() -> bool + 'static,
    forget: impl Fn() + 'static,
) -> [WindowListenerHandle; 2] {
    let staying = Rc::new(Cell::new(false));
    let announced = staying.clone();
    let swap = window_event_listener_untyped("pageswap", move |event| {
        announced.set(replaced_by_viewer(&event));
    });
    let hide = window_event_listener(ev::pagehide, move |_| {
        if staying.replace(false) {
            return;
        }
        if session_open() || vault::load().is_some() {
            api::logout_on_exit();
        }
        vault::clear();
        forget();
    });
    [swap, hide]
}

/// Whether a `pageswap` event announces that this tab loads the viewer again: a reload, or a
/// same-origin navigation to an address under `/m/` (another link opened in this tab).
fn replaced_by_viewer(event: &web_sys::Event) -> bool {
    // `PageSwapEvent` has no web-sys binding yet; its `activation` is a `NavigationActivation`,
    // or null when the destination (or a redirect on the way) is cross-origin.
    let Ok(activation) = js_sys::Reflect::get(event, &JsValue::from_str("activation")) else {
        return false;
    };
    let Ok(activation) = activation.dyn_into::<NavigationActivation>() else {
        return false;
    };
    if activation.navigation_type() == NavigationApiType::Reload {
        return true;
    }
    let Some(window) = web_sys::window() else {
        return false;
    };
    let Ok(origin) = window.location().origin() else {
        return false;
    };
    activation
        .entry()
        .url()
        .is_some_and(|url| url.starts_with(&format!("{origin}{HOME}")))
}
