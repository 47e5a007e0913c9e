//! The viewer's screens and the state machine that moves between them.
//!
//! Secrets never enter a reactive signal: the password is read from its field once on submit
//! (and the field cleared), the private key sits in a [`StoredValue`] that lock and idle
//! timeout empty, and decrypted messages (kept, opened once each, in the session's
//! [`flow::Inbox`]) are dropped (and wiped) on lock.

use std::sync::Arc;
use std::time::Duration;

use leptos::ev::SubmitEvent;
use leptos::html::Input;
use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::{CheckChallenge, ErrorCode, OpenResponse, PatientState};
use shared::identity_check::CheckAnswer;
use shared::ids::MessageId;
use wasm_bindgen::JsValue;

use crate::api::{self, ApiError};
use crate::flow::{self, Entry, FlowError, Inbox, Step, Unlocked};
use crate::i18n::{Key, Lang, text};
use crate::lifecycle;
use crate::strength::{Estimator, MIN_PASSWORD_CHARS, Strength, page_words};

/// How often an open page checks that its session still exists (remote wipe) and whether
/// messages awaiting the sender's re-wrap have arrived.
const POLL: Duration = Duration::from_secs(3);

/// While a message awaits the sender's re-wrap, each refresh is a long-poll of this many
/// seconds, started as soon as the previous one answers: the relay answers the moment the
/// re-wrap lands, and a session ended meanwhile is still noticed within [`POLL`].
const REWRAP_WAIT_SECONDS: u32 = 3;

/// A long-poll answered sooner than this (milliseconds) is not followed by another at once.
const MIN_LONG_POLL_MS: f64 = 1_000.0;

/// What the page shows.
#[derive(Debug, Clone, PartialEq)]
enum Screen {
    Opening,
    Choose(OpenResponse, Option<Key>),
    Working(Key),
    Unlock(OpenResponse, Option<Notice>),
    Preparing,
    Reading,
    Locked(Option<Key>),
    Ended(Key, Key),
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Notice {
    Wrong(u32),
    LockedOut(u64),
    Unsafe,
    Failed,
}

fn step_text(step: Step) -> Key {
    match step {
        Step::Deriving => Key::StepDeriving,
        Step::Generating => Key::StepGenerating,
        Step::Enrolling => Key::StepEnrolling,
        Step::Confirming => Key::StepConfirming,
        Step::Unlocking => Key::StepUnlocking,
    }
}

/// The page for a refusal that ends the journey (the link's message is gone or unknown, or the
/// link was sent before a password reset and cannot set the new password), if it is one.
fn ended_page(code: ErrorCode) -> Option<Screen> {
    match code {
        ErrorCode::LinkSuperseded => {
            Some(Screen::Ended(Key::SupersededTitle, Key::SupersededIntro))
        }
        ErrorCode::MessageRevoked => Some(Screen::Ended(Key::RevokedTitle, Key::RevokedIntro)),
        ErrorCode::MessageExpired => Some(Screen::Ended(Key::ExpiredTitle, Key::ExpiredIntro)),
        ErrorCode::NotFound => Some(Screen::Ended(Key::UnknownTitle, Key::UnknownIntro)),
        ErrorCode::CheckAttemptsExhausted => {
            Some(Screen::Ended(Key::CheckExhaustedTitle, Key::CheckExhausted))
        }
        _ => None,
    }
}

/// The screen for a relay error that ends the journey, if it is one.
fn ending(error: &ApiError) -> Option<Screen> {
    match error {
        ApiError::Network => Some(Screen::Network),
        ApiError::Relay { code, .. } => ended_page(*code),
        ApiError::Unexpected => None,
    }
}

fn browser_language() -> Lang {
    web_sys::window()
        .and_then(|w| w.navigator().language())
        .map(|tag| Lang::from_tag(&tag))
        .unwrap_or(Lang::En)
}

fn supported() -> bool {
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .is_some_and(|c| !JsValue::from(c.subtle()).is_undefined())
}

fn now_seconds() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

fn format_time(lang: Lang, unix: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(unix as f64 * 1000.0));
    date.to_locale_string(lang.tag(), &JsValue::UNDEFINED)
        .as_string()
        .unwrap_or_default()
}

/// Takes the value of a password field once and clears the field.
fn take_password(input: NodeRef<Input>) -> String {
    input
        .get()
        .map(|field| {
            let value = field.value();
            field.set_value("");
            value
        })
        .unwrap_or_default()
}

/// The whole viewer.
#[component]
pub fn App() -> impl IntoView {
    let lang = RwSignal::new(browser_language());
    let screen = RwSignal::new(Screen::Opening);
    let link: StoredValue<Option<String>> = StoredValue::new(None);
    let unlocked: StoredValue<Option<Arc<Unlocked>>> = StoredValue::new(None);
    let inbox: StoredValue<Inbox> = StoredValue::new(Inbox::default());
    let refreshing = StoredValue::new(false);
    let messages: RwSignal<Vec<Entry>> = RwSignal::new(Vec::new());
    let selected: RwSignal<Option<MessageId>> = RwSignal::new(None);
    let waiting = RwSignal::new(0usize);
    let fingerprint: RwSignal<Option<String>> = RwSignal::new(None);
    let last_activity = StoredValue::new(now_seconds());
    // Bumped by a refresh that found messages awaiting their re-wrap: starts the next long-poll.
    let await_rewrap = RwSignal::new(0u64);

    Effect::new(move |_| {
        if let Some(root) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.document_element())
        {
            let _ = root.set_attribute("lang", lang.get().tag());
        }
    });

    // Forget everything readable and show why.
    let forget = move |reason: Option<Key>| {
        unlocked.set_value(None);
        inbox.set_value(Inbox::default());
        refreshing.set_value(false);
        messages.set(Vec::new());
        selected.set(None);
        fingerprint.set(None);
        link.set_value(None);
        screen.set(Screen::Locked(reason));
    };
    // Lock: forget, and end the session on the relay.
    let lock = move |reason: Option<Key>| {
        forget(reason);
        spawn_local(flow::logout());
    };
    // Leaving the page (not a reload): the same, with a request that outlives the page.
    let leave_listeners = lifecycle::end_session_on_leave(
        move || unlocked.with_value(Option::is_some),
        move || forget(None),
    );
    let new_link_listener = lifecycle::reload_on_new_link();

    // Show the messages (or the waiting page). One refresh at a time per session, so a slow
    // answer cannot make two refreshes open the same new envelope; what is new is opened, the
    // rest comes from the inbox. Results that arrive after a lock (or for an earlier session)
    // are dropped, and so are their reports' answers.
    let refresh = move |wait_seconds: u32| {
        let Some(current) = unlocked.get_value() else {
            return;
        };
        if refreshing.get_value() {
            return;
        }
        refreshing.set_value(true);
        let asked_at = js_sys::Date::now();
        spawn_local(async move {
            let session = Arc::downgrade(&current);
            let is_current = move || {
                unlocked.with_value(|now| {
                    now.as_ref()
                        .is_some_and(|now| std::ptr::eq(Arc::as_ptr(now), session.as_ptr()))
                })
            };
            // Opening is asynchronous (WebCrypto): the flag stays set until what is new has
            // been opened and filed, so no other refresh opens the same envelope meanwhile.
            let listed = match flow::messages(wait_seconds).await {
                Ok(items) if is_current() => {
                    let now = now_seconds();
                    let wanted = inbox.with_value(|inbox| inbox.unopened(&items, now));
                    let opened = flow::open_envelopes(&items, &wanted, &current, now).await;
                    Ok((items, now, opened))
                }
                Ok(_) => return,
                Err(error) => Err(error),
            };
            // After a lock the flag is the next session's: leave it alone.
            if !is_current() {
                return;
            }
            refreshing.set_value(false);
            match listed {
                Ok((items, now, opened)) => {
                    let Some(refreshed) =
                        inbox.try_update_value(|inbox| flow::open_new(inbox, &items, now, opened))
                    else {
                        return;
                    };
                    drop(current);
                    for (id, reason) in refreshed.to_report {
                        let is_current = is_current.clone();
                        spawn_local(async move {
                            if flow::report_unreadable(id, reason).await && is_current() {
                                inbox.update_value(|inbox| inbox.reported(id));
                            }
                        });
                    }
                    let entries = refreshed.entries;
                    waiting.set(refreshed.waiting);
                    // A long-poll answered early while messages still wait (one of several was
                    // re-wrapped, or a relay that does not hold answers): the next refresh is
                    // the interval's, so a page never asks faster than that.
                    let held = js_sys::Date::now() - asked_at >= MIN_LONG_POLL_MS;
                    if refreshed.waiting > 0 && (wait_seconds == 0 || held) {
                        await_rewrap.update(|n| *n += 1);
                    }
                    if entries.is_empty() && refreshed.waiting > 0 {
                        screen.set(Screen::Preparing);
                        return;
                    }
                    if selected
                        .get_untracked()
                        .is_none_or(|id| entries.iter().all(|m| m.id() != id))
                    {
                        let first = entries
                            .iter()
                            .find(|m| matches!(m, Entry::Readable(_)))
                            .or(entries.first());
                        selected.set(first.map(Entry::id));
                    }
                    if messages.with_untracked(|old| *old != entries) {
                        messages.set(entries);
                    }
                    if screen.get_untracked() != Screen::Reading {
                        screen.set(Screen::Reading);
                    }
                }
                Err(FlowError::Api(ApiError::Relay {
                    code: ErrorCode::Unauthorized,
                    ..
                })) => {
                    lock(Some(Key::SessionEnded));
                }
                Err(FlowError::Api(ApiError::Network)) => screen.set(Screen::Network),
                Err(_) => screen.set(Screen::Ended(Key::AppName, Key::SomethingWrong)),
            }
        });
    };

    let opened = move |result: Unlocked| {
        fingerprint.set(Some(result.key.public_key().fingerprint().to_string()));
        unlocked.set_value(Some(Arc::new(result)));
        last_activity.set_value(now_seconds());
        screen.set(Screen::Working(Key::StepDecrypting));
        refresh(0);
    };
    Effect::new(move |_| {
        if await_rewrap.get() > 0 {
            refresh(REWRAP_WAIT_SECONDS);
        }
    });

    // Start: unsupported browser, fresh link, or re-open within a live session.
    spawn_local(async move {
        if !supported() {
            screen.set(Screen::Ended(Key::UnsupportedTitle, Key::UnsupportedIntro));
            return;
        }
        let from_url = lifecycle::take_link();
        if let Some(resumed) = flow::resume().await {
            // Within a live session a new link opens its own message at once (and records
            // the open); a revoked or expired one still gets its page.
            if let Some(token) = &from_url {
                match api::open(token).await {
                    Ok(info) => selected.set(Some(info.message_id)),
                    Err(error) => {
                        if let Some(page) = ending(&error) {
                            screen.set(page);
                            return;
                        }
                    }
                }
            }
            link.set_value(from_url);
            opened(resumed);
            return;
        }
        let Some(token) = from_url else {
            screen.set(Screen::Locked(None));
            return;
        };
        link.set_value(Some(token.clone()));
        match api::open(&token).await {
            Ok(info) => {
                let params = match &info.patient {
                    PatientState::New { kdf_params, .. }
                    | PatientState::Enrolled { kdf_params, .. } => *kdf_params,
                };
                screen.set(match info.patient {
                    PatientState::New { .. } => Screen::Choose(info, None),
                    PatientState::Enrolled { .. } => Screen::Unlock(info, None),
                });
                flow::prepare_derivation(&params).await;
            }
            Err(error) => screen.set(ending(&error).unwrap_or(Screen::Network)),
        }
    });

    // Idle timeout and liveness: lock after inactivity; lock when the relay ended the session
    // (remote wipe); pick up messages the sender has just re-wrapped.
    let interval = set_interval_with_handle(
        move || {
            let idle_limit = unlocked.with_value(|u| u.as_ref().map(|u| u.idle_timeout_seconds));
            let Some(idle_limit) = idle_limit else { return };
            let idle = now_seconds() - last_activity.get_value();
            if idle >= i64::try_from(idle_limit).unwrap_or(300) {
                lock(Some(Key::IdleLocked));
            } else {
                refresh(0);
            }
        },
        POLL,
    );
    on_cleanup(move || {
        if let Ok(handle) = interval {
            handle.clear();
        }
        for listener in leave_listeners {
            listener.remove();
        }
        new_link_listener.remove();
    });
    let touched = move || last_activity.set_value(now_seconds());

    view! {
        <div class="page" on:pointerdown=move |_| touched() on:keydown=move |_| touched()>
            <header class="bar">
                <span class="brand">{move || text(lang.get(), Key::AppName)}</span>
                <button class="link-button" type="button" lang=move || lang.get().other().tag()
                    on:click=move |_| lang.update(|l| *l = l.other())>
                    {move || text(lang.get(), Key::SwitchLanguage)}
                </button>
                <Show when=move || matches!(screen.get(), Screen::Reading | Screen::Preparing)>
                    <button class="lock" type="button" on:click=move |_| lock(None)>
                        {move || text(lang.get(), Key::Lock)}
                    </button>
                </Show>
            </header>
            <main id="main" tabindex="-1">
                {move || {
                    let l = lang.get();
                    match screen.get() {
                        Screen::Opening => status_view(l, Key::Opening).into_any(),
                        Screen::Working(key) => status_view(l, key).into_any(),
                        Screen::Choose(info, problem) => choose_view(l, info, problem, screen, link, selected, opened).into_any(),
                        Screen::Unlock(info, notice) => unlock_view(l, info, notice, screen, link, selected, opened).into_any(),
                        Screen::Preparing => page_view(l, Key::PreparingTitle, Key::PreparingIntro, true).into_any(),
                        Screen::Reading => reading_view(l, messages, inbox, selected, waiting, fingerprint).into_any(),
                        Screen::Locked(reason) => locked_view(l, reason).into_any(),
                        Screen::Ended(title, intro) => page_view(l, title, intro, false).into_any(),
                        Screen::Network => network_view(l).into_any(),
                    }
                }}
            </main>
        </div>
    }
}

fn status_view(lang: Lang, key: Key) -> impl IntoView {
    view! {
        <section class="card" aria-busy="true">
            <div class="spinner" aria-hidden="true"></div>
            <p class="status" role="status" aria-live="polite">{text(lang, key)}</p>
        </section>
    }
}

fn page_view(lang: Lang, title: Key, intro: Key, busy: bool) -> impl IntoView {
    view! {
        <section class="card">
            <h1>{text(lang, title)}</h1>
            <Show when=move || busy>
                <div class="spinner" aria-hidden="true"></div>
            </Show>
            <p role="status" aria-live="polite">{text(lang, intro)}</p>
        </section>
    }
}

fn locked_view(lang: Lang, reason: Option<Key>) -> impl IntoView {
    view! {
        <section class="card">
            <h1>{text(lang, Key::LockedTitle)}</h1>
            {reason.map(|key| view! { <p class="notice" role="status" aria-live="polite">{text(lang, key)}</p> })}
            <p>{text(lang, Key::LockedIntro)}</p>
        </section>
    }
}

fn network_view(lang: Lang) -> impl IntoView {
    view! {
        <section class="card">
            <h1>{text(lang, Key::NetworkTitle)}</h1>
            <p role="alert">{text(lang, Key::NetworkIntro)}</p>
            <button type="button" on:click=move |_| {
                if let Some(window) = web_sys::window() {
                    let _ = window.location().reload();
                }
            }>{text(lang, Key::TryAgain)}</button>
        </section>
    }
}

fn choose_view(
    lang: Lang,
    info: OpenResponse,
    problem: Option<Key>,
    screen: RwSignal<Screen>,
    link: StoredValue<Option<String>>,
    selected: RwSignal<Option<MessageId>>,
    opened: impl Fn(Unlocked) + Copy + 'static,
) -> AnyView {
    let first: NodeRef<Input> = NodeRef::new();
    let second: NodeRef<Input> = NodeRef::new();
    let birth_date: NodeRef<Input> = NodeRef::new();
    let code: NodeRef<Input> = NodeRef::new();
    let meter = RwSignal::new(Strength::TooShort);
    let organisation = info.organisation_name.clone();
    let challenge = match &info.patient {
        PatientState::New { identity_check, .. } => *identity_check,
        PatientState::Enrolled { .. } => None,
    };
    if challenge.is_some_and(|c| c.attempts_left == 0) {
        return page_view(lang, Key::CheckExhaustedTitle, Key::CheckExhausted, false).into_any();
    }
    // Started now, so that its download overlaps the patient's reading and typing.
    let estimator = StoredValue::new_local(Estimator::start().ok());
    let words = StoredValue::new(page_words(&info.organisation_name));
    // Each keystroke's estimate applies only if no later keystroke came before it.
    let typed_generation = StoredValue::new(0u32);
    let on_input = move |_| {
        let value = zeroize::Zeroizing::new(first.get().map(|f| f.value()).unwrap_or_default());
        let generation = typed_generation.get_value().wrapping_add(1);
        typed_generation.set_value(generation);
        if value.chars().count() < MIN_PASSWORD_CHARS {
            meter.set(Strength::TooShort);
            return;
        }
        meter.set(Strength::Checking);
        let Some(estimator) = estimator.get_value() else {
            return;
        };
        spawn_local(async move {
            let rated = estimator.rate(&value, &words.get_value()).await;
            if let Ok(rated) = rated
                && typed_generation.get_value() == generation
            {
                meter.set(rated);
            }
        });
    };
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let typed = zeroize::Zeroizing::new(take_password(first));
        let again = zeroize::Zeroizing::new(take_password(second));
        typed_generation.set_value(typed_generation.get_value().wrapping_add(1));
        meter.set(Strength::TooShort);
        let problem = if *typed != *again {
            Some(Key::PasswordsDiffer)
        } else if typed.chars().count() < MIN_PASSWORD_CHARS {
            Some(Key::StrengthTooShort)
        } else {
            None
        };
        if problem.is_some() {
            screen.set(Screen::Choose(info.clone(), problem));
            return;
        }
        // The answer is checked for form here; whether it is right, only the sender can say.
        let answer = match challenge {
            None => None,
            Some(challenge) => {
                let typed_date = birth_date.get().map(|f| f.value());
                let typed_code = code.get().map(|f| zeroize::Zeroizing::new(f.value()));
                let kind = challenge.kind;
                let date = typed_date.filter(|_| kind.asks_date_of_birth());
                let code = typed_code.filter(|_| kind.asks_code());
                match CheckAnswer::new(kind, date.as_deref(), code.as_ref().map(|c| c.as_str())) {
                    Ok(answer) => Some(answer),
                    Err(_) => {
                        screen.set(Screen::Choose(info.clone(), Some(Key::CheckMalformed)));
                        return;
                    }
                }
            }
        };
        let info = info.clone();
        let Some(token) = link.get_value() else {
            return;
        };
        let estimator = estimator.get_value();
        spawn_local(async move {
            let verdict = match estimator {
                Some(estimator) => estimator.rate(&typed, &words.get_value()).await,
                None => Err(crate::strength::Unavailable),
            };
            match verdict {
                Ok(verdict) if verdict.accepted() => {}
                Ok(_) => return screen.set(Screen::Choose(info, Some(Key::StrengthRefused))),
                Err(_) => return screen.set(Screen::Choose(info, Some(Key::StrengthUnavailable))),
            }
            let Ok(password) = flow::password(&typed) else {
                return;
            };
            drop(typed);
            screen.set(Screen::Working(Key::StepDeriving));
            let progress = move |step| screen.set(Screen::Working(step_text(step)));
            match flow::enroll(&token, &info, password, answer, progress).await {
                Ok(result) => {
                    selected.set(Some(info.message_id));
                    opened(result);
                }
                Err(FlowError::CheckFailed { attempts_left }) => {
                    let mut info = info;
                    if let PatientState::New {
                        identity_check: Some(challenge),
                        ..
                    } = &mut info.patient
                    {
                        challenge.attempts_left = attempts_left;
                    }
                    screen.set(Screen::Choose(info, Some(Key::CheckWrong)));
                }
                Err(FlowError::Api(error)) if ending(&error).is_some() => {
                    screen.set(ending(&error).unwrap_or(Screen::Network));
                }
                Err(FlowError::Unsupported) => {
                    screen.set(Screen::Ended(Key::UnsupportedTitle, Key::UnsupportedIntro));
                }
                Err(FlowError::UnsafeRelay) => {
                    screen.set(Screen::Choose(info, Some(Key::UnsafeService)));
                }
                Err(_) => screen.set(Screen::Choose(info, Some(Key::SomethingWrong))),
            }
        });
    };
    view! {
        <section class="card">
            <p class="from">{text(lang, Key::From)}": "<strong>{organisation}</strong></p>
            <h1>{text(lang, Key::WelcomeTitle)}</h1>
            <p>{text(lang, Key::WelcomeIntro)}</p>
            <p>{text(lang, Key::PasswordPerSender)}</p>
            <p class="warning" role="note">{text(lang, Key::ForgottenWarning)}</p>
            {problem.map(|key| view! { <p class="error" role="alert">{text(lang, key)}</p> })}
            <form on:submit=submit>
                {challenge.map(|challenge| check_fields(lang, challenge, birth_date, code))}
                <label for="new-password">{text(lang, Key::NewPassword)}</label>
                <input id="new-password" name="new-password" type="password" autocomplete="new-password"
                    autofocus required minlength=MIN_PASSWORD_CHARS node_ref=first
                    aria-describedby="strength"
                    on:input=on_input />
                <p id="strength" class="strength" aria-live="polite"
                    data-level=move || meter.get().level()>
                    {move || text(lang, meter.get().key())}
                </p>
                <label for="confirm-password">{text(lang, Key::ConfirmPassword)}</label>
                <input id="confirm-password" name="confirm-password" type="password" autocomplete="new-password"
                    required node_ref=second />
                <button type="submit">{text(lang, Key::CreatePassword)}</button>
            </form>
        </section>
    }
    .into_any()
}

/// The "confirm it's you" step of an enrollment the sender asked to check: the questions, and
/// how many answers are left.
fn check_fields(
    lang: Lang,
    challenge: CheckChallenge,
    birth_date: NodeRef<Input>,
    code: NodeRef<Input>,
) -> impl IntoView {
    let left = format!(
        "{} {}",
        challenge.attempts_left,
        text(lang, Key::CheckAttemptsLeft)
    );
    view! {
        <fieldset class="check" aria-describedby="check-intro check-left">
            <legend>{text(lang, Key::CheckTitle)}</legend>
            <p id="check-intro">{text(lang, Key::CheckIntro)}</p>
            {challenge.kind.asks_date_of_birth().then(|| view! {
                <label for="date-of-birth">{text(lang, Key::DateOfBirth)}</label>
                <input id="date-of-birth" name="date-of-birth" type="date" autocomplete="bday"
                    required node_ref=birth_date />
            })}
            {challenge.kind.asks_code().then(|| view! {
                <label for="enrollment-code">{text(lang, Key::EnrollmentCode)}</label>
                <input id="enrollment-code" name="enrollment-code" type="text"
                    autocomplete="one-time-code" autocapitalize="characters" spellcheck="false"
                    aria-describedby="code-hint" required node_ref=code />
                <p id="code-hint" class="hint">{text(lang, Key::EnrollmentCodeHint)}</p>
            })}
            <p id="check-left" class="hint" aria-live="polite">{left}</p>
        </fieldset>
    }
}

fn unlock_view(
    lang: Lang,
    info: OpenResponse,
    notice: Option<Notice>,
    screen: RwSignal<Screen>,
    link: StoredValue<Option<String>>,
    selected: RwSignal<Option<MessageId>>,
    opened: impl Fn(Unlocked) + Copy + 'static,
) -> impl IntoView {
    let field: NodeRef<Input> = NodeRef::new();
    let organisation = info.organisation_name.clone();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let typed = zeroize::Zeroizing::new(take_password(field));
        let Ok(password) = flow::password(&typed) else {
            return;
        };
        let info = info.clone();
        let Some(token) = link.get_value() else {
            return;
        };
        screen.set(Screen::Working(Key::StepDeriving));
        spawn_local(async move {
            let progress = move |step| screen.set(Screen::Working(step_text(step)));
            match flow::unlock(&token, &info, password, progress).await {
                Ok(result) => {
                    selected.set(Some(info.message_id));
                    opened(result);
                }
                Err(FlowError::Api(ApiError::Relay {
                    code,
                    attempts_left,
                    retry_after,
                })) => {
                    let notice = match code {
                        ErrorCode::WrongPassword => Notice::Wrong(attempts_left.unwrap_or(0)),
                        ErrorCode::LockedOut => {
                            Notice::LockedOut(retry_after.unwrap_or(60).div_ceil(60))
                        }
                        _ => Notice::Failed,
                    };
                    screen.set(ended_page(code).unwrap_or(Screen::Unlock(info, Some(notice))));
                }
                Err(FlowError::Api(ApiError::Network)) => screen.set(Screen::Network),
                Err(FlowError::UnsafeRelay) => {
                    screen.set(Screen::Unlock(info, Some(Notice::Unsafe)));
                }
                Err(_) => screen.set(Screen::Unlock(info, Some(Notice::Failed))),
            }
        });
    };
    // "I never set a password": someone else may have enrolled with the patient's link. The
    // sender is told (an audit event its tooling reports); the patient is told whom to call.
    let disown = move |_| {
        let Some(token) = link.get_value() else {
            return;
        };
        spawn_local(async move {
            match api::disown(&token).await {
                Ok(()) => screen.set(Screen::Ended(Key::DisownedTitle, Key::DisownedIntro)),
                Err(ApiError::Network) => screen.set(Screen::Network),
                Err(error) => screen.set(
                    ending(&error).unwrap_or(Screen::Ended(Key::DisownedTitle, Key::ContactSender)),
                ),
            }
        });
    };
    let notice_view = notice.map(|notice| {
        let message = match notice {
            Notice::Wrong(left) => format!(
                "{} {left} {}",
                text(lang, Key::WrongPassword),
                text(lang, Key::AttemptsLeft)
            ),
            Notice::LockedOut(minutes) => format!(
                "{} {minutes} {}",
                text(lang, Key::LockedOut),
                text(lang, Key::Minutes)
            ),
            Notice::Unsafe => text(lang, Key::UnsafeService).to_owned(),
            Notice::Failed => text(lang, Key::SomethingWrong).to_owned(),
        };
        view! { <p class="error" role="alert">{message}</p> }
    });
    view! {
        <section class="card">
            <p class="from">{text(lang, Key::From)}": "<strong>{organisation}</strong></p>
            <h1>{text(lang, Key::UnlockTitle)}</h1>
            <p>{text(lang, Key::UnlockIntro)}</p>
            {notice_view}
            <form on:submit=submit>
                <label for="password">{text(lang, Key::Password)}</label>
                <input id="password" name="password" type="password" autocomplete="current-password"
                    autofocus required node_ref=field />
                <button type="submit">{text(lang, Key::Unlock)}</button>
            </form>
            <button type="button" class="secondary" on:click=disown>
                {text(lang, Key::NeverSetPassword)}
            </button>
        </section>
    }
}

fn reading_view(
    lang: Lang,
    messages: RwSignal<Vec<Entry>>,
    inbox: StoredValue<Inbox>,
    selected: RwSignal<Option<MessageId>>,
    waiting: RwSignal<usize>,
    fingerprint: RwSignal<Option<String>>,
) -> impl IntoView {
    // Send the read receipt once for the message on screen, if it opened.
    Effect::new(move |_| {
        let Some(id) = selected.get() else { return };
        let unread = messages.with(|list| {
            list.iter()
                .any(|m| matches!(m, Entry::Readable(m) if m.id == id && !m.read))
        });
        if unread {
            messages.update(|list| {
                for entry in list.iter_mut() {
                    if let Entry::Readable(m) = entry
                        && m.id == id
                    {
                        m.read = true;
                    }
                }
            });
            inbox.update_value(|inbox| inbox.mark_read(id));
            spawn_local(async move {
                let _ = api::read_receipt(id).await;
            });
        }
    });
    let current = move || {
        let id = selected.get()?;
        messages.with(|list| list.iter().find(|m| m.id() == id).cloned())
    };
    view! {
        {move || match current() {
            Some(Entry::Readable(m)) => view! {
                <article class="card message" aria-labelledby="subject">
                    <p class="from">{text(lang, Key::From)}": "<strong>{m.organisation.clone()}</strong></p>
                    <h1 id="subject">{m.subject.clone()}</h1>
                    <dl class="meta">
                        <dt>{text(lang, Key::Sent)}</dt><dd>{format_time(lang, m.created_at)}</dd>
                        <dt>{text(lang, Key::Expires)}</dt><dd>{format_time(lang, m.expires_at)}</dd>
                    </dl>
                    <div class="body">{m.body.clone()}</div>
                </article>
            }.into_any(),
            Some(Entry::Unreadable(m)) => view! {
                <section class="card">{unreadable_notice(lang, &m.organisation)}</section>
            }.into_any(),
            None => (messages.with(Vec::is_empty) && waiting.get() == 0).then(|| view! {
                <section class="card">
                    <h1>{text(lang, Key::NoMessagesTitle)}</h1>
                    <p role="status">{text(lang, Key::NoMessagesIntro)}</p>
                </section>
            }).into_any(),
        }}
        {move || {
            let others: Vec<Entry> = messages.with(|list| {
                list.iter().filter(|m| Some(m.id()) != selected.get()).cloned().collect()
            });
            let pending = waiting.get();
            (!others.is_empty() || pending > 0).then(|| view! {
                <section class="card others">
                    <h2>{text(lang, Key::OtherMessages)}</h2>
                    <ul>
                        {others.into_iter().map(|entry| match entry {
                            Entry::Readable(m) => {
                                let id = m.id;
                                view! {
                                    <li>
                                        <button type="button" class="list-item" on:click=move |_| selected.set(Some(id))>
                                            <span class="subject">{m.subject.clone()}</span>
                                            <span class="meta">{m.organisation.clone()}" · "{format_time(lang, m.created_at)}</span>
                                        </button>
                                    </li>
                                }.into_any()
                            }
                            Entry::Unreadable(m) => view! {
                                <li>{unreadable_notice(lang, &m.organisation)}</li>
                            }.into_any(),
                        }).collect_view()}
                        {(pending > 0).then(|| view! {
                            <li class="pending" role="status">{pending}" · "{text(lang, Key::BeingPrepared)}</li>
                        })}
                    </ul>
                </section>
            })
        }}
        {move || fingerprint.get().map(|fp| {
            let grouped = fp.as_bytes().chunks(4).take(8).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ");
            view! {
                <p class="fingerprint">{text(lang, Key::YourKey)}": "<code>{grouped}</code></p>
            }
        })}
    }
}

/// What the patient sees in place of a message that did not open safely: that it is not shown
/// and why, and whom to contact (through contact details they already have, since nothing of
/// the message can be trusted). An alert, so a screen reader announces it.
fn unreadable_notice(lang: Lang, organisation: &str) -> impl IntoView {
    view! {
        <div class="unreadable" role="alert">
            <h2>{text(lang, Key::UnreadableTitle)}</h2>
            <p>{text(lang, Key::UnreadableIntro)}</p>
            <p>{text(lang, Key::UnreadableContact)}</p>
            <p class="from">{text(lang, Key::From)}": "<strong>{organisation.to_owned()}</strong></p>
        </div>
    }
}
