//! The password-strength policy of the enrollment, and the web worker that estimates it.
//!
//! The estimate is zxcvbn's (the `viewer-strength` crate, run as a web worker): it recognises
//! common passwords, words, names, keyboard patterns, dates and repeats. The worker is about
//! three times the size of the whole viewer, so it is started only on the enrollment screen;
//! unlocking never downloads it. Enrollment refuses a password shorter than
//! [`MIN_PASSWORD_CHARS`] or one the estimator calls weak (zxcvbn score 0 to 2, that is fewer
//! than about 10^8 guesses), and refuses to go on when the estimator cannot be reached: a
//! password that was never checked is not accepted.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker};

use crate::i18n::Key;

/// Minimum password length accepted at enrollment.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// The worker's loader, written by Trunk beside the viewer (see `index.html`).
const WORKER_URL: &str = "/strength_loader.js";

/// How long an answer may take, the worker's first download included, before the check
/// counts as unavailable.
const ANSWER_TIMEOUT_MS: i32 = 60_000;

/// What the meter shows, and what enrollment accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    /// The estimate has not arrived yet.
    Checking,
    /// Below the minimum length: refused.
    TooShort,
    /// Guessable (zxcvbn score 0 to 2): refused.
    Weak,
    /// zxcvbn score 3: accepted.
    Fair,
    /// zxcvbn score 4: accepted.
    Strong,
}

impl Strength {
    /// The verdict for a password of `chars` characters that zxcvbn scored `score` (0 to 4).
    pub fn from_score(chars: usize, score: u8) -> Self {
        match (chars, score) {
            (c, _) if c < MIN_PASSWORD_CHARS => Self::TooShort,
            (_, 0..=2) => Self::Weak,
            (_, 3) => Self::Fair,
            _ => Self::Strong,
        }
    }

    /// Whether enrollment accepts the password.
    pub fn accepted(self) -> bool {
        matches!(self, Self::Fair | Self::Strong)
    }

    /// The meter's `data-level` attribute, which the style sheet colours by. A fixed string,
    /// not the lowercased `Debug` form: that pulled in Unicode case tables (about 12 KB).
    pub fn level(self) -> &'static str {
        match self {
            Self::Checking => "checking",
            Self::TooShort => "tooshort",
            Self::Weak => "weak",
            Self::Fair => "fair",
            Self::Strong => "strong",
        }
    }

    /// The meter's label.
    pub fn key(self) -> Key {
        match self {
            Self::Checking => Key::StrengthChecking,
            Self::TooShort => Key::StrengthTooShort,
            Self::Weak => Key::StrengthWeak,
            Self::Fair => Key::StrengthFair,
            Self::Strong => Key::StrengthStrong,
        }
    }
}

/// The estimator could not be started or did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the password-strength estimator is unavailable")]
pub struct Unavailable;

type Pending = Rc<RefCell<HashMap<u32, (Function, Function)>>>;

/// A running estimator worker. Cloning shares it.
#[derive(Clone)]
pub struct Estimator(Rc<Inner>);

struct Inner {
    worker: Worker,
    pending: Pending,
    next_id: Cell<u32>,
    broken: Rc<Cell<bool>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(JsValue)>,
}

impl std::fmt::Debug for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Estimator")
            .field("waiting", &self.0.pending.borrow().len())
            .field("broken", &self.0.broken.get())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

impl Estimator {
    /// Starts the worker (its download begins now).
    pub fn start() -> Result<Self, Unavailable> {
        let worker = Worker::new(WORKER_URL).map_err(|_| Unavailable)?;
        let pending: Pending = Rc::default();
        let broken = Rc::new(Cell::new(false));
        let answered = pending.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let field = |name: &str| Reflect::get(&data, &JsValue::from_str(name)).ok();
            let Some(id) = field("id").and_then(|v| v.as_f64()) else {
                return;
            };
            // Ids are small counters; the cast is exact.
            let waiting = answered.borrow_mut().remove(&(id as u32));
            if let (Some((resolve, _)), Some(score)) = (waiting, field("score")) {
                let _ = resolve.call1(&JsValue::NULL, &score);
            }
        });
        let failed = pending.clone();
        let broken_flag = broken.clone();
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| {
            broken_flag.set(true);
            for (_, (_, reject)) in failed.borrow_mut().drain() {
                let _ = reject.call0(&JsValue::NULL);
            }
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self(Rc::new(Inner {
            worker,
            pending,
            next_id: Cell::new(0),
            broken,
            _on_message: on_message,
            _on_error: on_error,
        })))
    }

    /// Rates `password`, treating `inputs` (the sender's name, the service's name) as easy to
    /// guess.
    pub async fn rate(&self, password: &str, inputs: &[String]) -> Result<Strength, Unavailable> {
        let chars = password.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Ok(Strength::TooShort);
        }
        let inner = &self.0;
        if inner.broken.get() {
            return Err(Unavailable);
        }
        let id = inner.next_id.get().wrapping_add(1);
        inner.next_id.set(id);
        let pending = inner.pending.clone();
        let mut timeout = None;
        let answer = Promise::new(&mut |resolve, reject| {
            timeout = Some(reject.clone());
            pending.borrow_mut().insert(id, (resolve, reject));
        });
        let request = Object::new();
        let set =
            |key: &str, value: &JsValue| Reflect::set(&request, &JsValue::from_str(key), value);
        let words: Array = inputs.iter().map(|i| JsValue::from_str(i)).collect();
        set("id", &JsValue::from_f64(f64::from(id))).map_err(|_| Unavailable)?;
        set("password", &JsValue::from_str(password)).map_err(|_| Unavailable)?;
        set("inputs", &words).map_err(|_| Unavailable)?;
        if let (Some(window), Some(reject)) = (web_sys::window(), timeout) {
            window
                .set_timeout_with_callback_and_timeout_and_arguments_0(&reject, ANSWER_TIMEOUT_MS)
                .map_err(|_| Unavailable)?;
        }
        inner.worker.post_message(&request).map_err(|_| {
            inner.pending.borrow_mut().remove(&id);
            Unavailable
        })?;
        let score = JsFuture::from(answer).await.map_err(|_| {
            inner.pending.borrow_mut().remove(&id);
            Unavailable
        })?;
        let score = score.as_f64().ok_or(Unavailable)?;
        // zxcvbn scores are 0 to 4.
        Ok(Strength::from_score(chars, score.clamp(0.0, 4.0) as u8))
    }
}

/// Words a password should not be built from on this page: the sender's name and its words, and
/// the service's own. As written: zxcvbn lowercases its inputs itself (and the password for
/// matching), so lowercasing here only pulled Unicode case tables into every open's download.
pub fn page_words(organisation: &str) -> Vec<String> {
    let mut words = vec![
        organisation.to_owned(),
        "securetext".to_owned(),
        "secure message".to_owned(),
    ];
    words.extend(
        organisation
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
            .map(str::to_owned),
    );
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_short_or_weak_passwords() {
        assert_eq!(Strength::from_score(9, 4), Strength::TooShort);
        assert_eq!(Strength::from_score(12, 0), Strength::Weak);
        assert_eq!(Strength::from_score(12, 2), Strength::Weak);
        assert_eq!(Strength::from_score(12, 3), Strength::Fair);
        assert_eq!(Strength::from_score(12, 4), Strength::Strong);
        for refused in [Strength::Checking, Strength::TooShort, Strength::Weak] {
            assert!(!refused.accepted(), "{refused:?}");
        }
        assert!(Strength::Fair.accepted() && Strength::Strong.accepted());
    }

    #[test]
    fn page_words_name_the_sender() {
        assert_eq!(
            page_words("Riverside Clinic"),
            [
                "Riverside Clinic",
                "securetext",
                "secure message",
                "Riverside",
                "Clinic"
            ]
        );
    }
}
