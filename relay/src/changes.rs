//! Change notices for the long-polls: the agent's `GET /v1/rewraps?wait=…` waits for an
//! enrollment, the viewer's `GET /v1/viewer/messages?wait=…` for a re-wrap.
//!
//! Why: an agent that polled once a second and a viewer that polled every three seconds put up
//! to four seconds of pure waiting between a patient choosing a password and the first
//! plaintext. A waiter here sleeps until the change it waits for commits, then answers.
//!
//! A handler that commits such a change wakes the waiters of its [`Topic`] in this process
//! ([`Changes::wake`], after the commit). On PostgreSQL the same transaction also announces the
//! topic with `pg_notify` ([`crate::store::notices`]), which PostgreSQL delivers to every relay
//! at commit (and never for a rollback); each relay's [`listen`] task turns the notices into
//! wakes, so a waiter on one relay learns of an enrollment through another.
//!
//! # Invariants
//! - A waiter registers before it checks the database, so a change that commits between its
//!   check and its sleep still wakes it ([`Changes::wait`]).
//! - A wake is only a hint to look again: the answer always comes from the database, so a lost
//!   notice (a listener reconnecting) costs at most the wait, never a wrong answer.
//! - Shutdown ([`Changes::close`]) answers every waiter at once, so long-polls never hold up a
//!   relay that stops.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shared::ids::{CheckAttemptId, OrganisationId, RecipientId};
use tokio::sync::{Notify, watch};

use crate::state::AppState;
use crate::store::notices;

/// What a long-poll waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A message of this organisation may need a re-wrap (a patient enrolled).
    Rewraps(OrganisationId),
    /// A message of this patient was re-wrapped to their key.
    Wraps(RecipientId),
    /// An identity-check attempt of this organisation waits for its agent (answer or verdict).
    Checks(OrganisationId),
    /// This identity-check attempt moved on (the patient's viewer waits for it).
    Check(CheckAttemptId),
}

impl Topic {
    /// The topic as a notice payload (`rewraps:<uuid>`, `wraps:<uuid>`).
    pub fn encode(&self) -> String {
        match self {
            Self::Rewraps(organisation) => format!("rewraps:{organisation}"),
            Self::Wraps(recipient) => format!("wraps:{recipient}"),
            Self::Checks(organisation) => format!("checks:{organisation}"),
            Self::Check(attempt) => format!("check:{attempt}"),
        }
    }

    /// The topic of a notice payload; `None` for anything else.
    pub fn decode(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        match kind {
            "rewraps" => id.parse().ok().map(Self::Rewraps),
            "wraps" => id.parse().ok().map(Self::Wraps),
            "checks" => id.parse().ok().map(Self::Checks),
            "check" => id.parse().ok().map(Self::Check),
            _ => None,
        }
    }
}

/// What one look at the database found: an answer to give now, or one to give only if nothing
/// changes before the wait ends.
#[derive(Debug)]
pub enum Look<T> {
    /// Something to report: answer at once.
    Ready(T),
    /// Nothing yet: this is the answer if the wait ends first.
    Nothing(T),
}

/// One topic's waiters: their number (changed only under the map's lock) and their wake.
#[derive(Debug, Default)]
struct Waiting {
    count: usize,
    notify: Arc<Notify>,
}

/// The relay's waiters, by topic.
#[derive(Debug)]
pub struct Changes {
    waiting: Mutex<HashMap<Topic, Waiting>>,
    closed: watch::Sender<bool>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            closed: watch::Sender::new(false),
        }
    }
}

impl Changes {
    /// Wakes the waiters of `topic` (call after the change committed).
    pub fn wake(&self, topic: &Topic) {
        if let Some(waiting) = self.lock().get(topic) {
            waiting.notify.notify_waiters();
        }
    }

    /// Wakes every waiter (notices may have been lost).
    pub fn wake_all(&self) {
        for waiting in self.lock().values() {
            waiting.notify.notify_waiters();
        }
    }

    /// Answers every waiter now and every later one at once (the relay is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// How many requests are waiting (the `securetext_long_polls_waiting` gauge).
    pub fn waiting(&self) -> usize {
        self.lock().values().map(|waiting| waiting.count).sum()
    }

    /// Looks (`look`) until it finds something to report, `limit` passes or the relay shuts
    /// down, looking again each time `topic` is woken and once more at the end (so that what
    /// changed unannounced while it waited, such as a session ending, is in the answer);
    /// returns the last look's answer.
    pub async fn wait<T, E, F, Fut>(
        &self,
        topic: Topic,
        limit: Duration,
        mut look: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Look<T>, E>>,
    {
        if limit.is_zero() {
            return look().await.map(Look::into_answer);
        }
        let waiter = Waiter::register(self, topic);
        let deadline = tokio::time::Instant::now() + limit;
        let mut closed = self.closed.subscribe();
        loop {
            let woken = waiter.notify.notified();
            tokio::pin!(woken);
            // Registered before looking: a wake between the look and the sleep is not lost.
            woken.as_mut().enable();
            if let Look::Ready(answer) = look().await? {
                return Ok(answer);
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(deadline) => break,
                _ = closed.wait_for(|closed| *closed) => break,
            }
        }
        look().await.map(Look::into_answer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, Waiting>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> Look<T> {
    fn into_answer(self) -> T {
        match self {
            Self::Ready(answer) | Self::Nothing(answer) => answer,
        }
    }
}

/// One waiting request's registration; the topic's entry goes when its last waiter does.
struct Waiter<'a> {
    changes: &'a Changes,
    topic: Topic,
    notify: Arc<Notify>,
}

impl<'a> Waiter<'a> {
    fn register(changes: &'a Changes, topic: Topic) -> Self {
        let notify = {
            let mut waiting = changes.lock();
            let entry = waiting.entry(topic).or_default();
            entry.count += 1;
            entry.notify.clone()
        };
        Self {
            changes,
            topic,
            notify,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.changes.lock();
        if let Some(entry) = waiting.get_mut(&self.topic) {
            entry.count -= 1;
            if entry.count == 0 {
                waiting.remove(&self.topic);
            }
        }
    }
}

/// How long to wait before listening again after the notice connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// On PostgreSQL, turns other relays' (and this relay's) committed notices into wakes until
/// `stopped` holds `true`; on SQLite (one relay per database) there is nothing to listen to.
pub async fn listen(state: AppState, mut stopped: watch::Receiver<bool>) {
    let stopping = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopping);
    loop {
        let mut listener = tokio::select! {
            () = &mut stopping => return,
            listener = notices::listener(state.store()) => match listener {
                Ok(Some(listener)) => listener,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for change notices; long-polls wait out their time");
                    tokio::select! {
                        () = &mut stopping => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => continue,
                    }
                }
            },
        };
        // Notices sent before the listener was ready are lost: look again everywhere.
        state.changes().wake_all();
        loop {
            let notice = tokio::select! {
                () = &mut stopping => return,
                notice = listener.try_recv() => notice,
            };
            match notice {
                Ok(Some(notice)) => {
                    if let Some(topic) = Topic::decode(notice.payload()) {
                        state.changes().wake(&topic);
                    }
                }
                // The connection dropped; the next receive reconnects. Notices in between are
                // lost, so every waiter looks again.
                Ok(None) => state.changes().wake_all(),
                Err(error) => {
                    tracing::warn!(%error, "change notices interrupted");
                    state.changes().wake_all();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn topics_round_trip_and_reject_anything_else() {
        let organisation = OrganisationId::random(&mut OsRng);
        let recipient = RecipientId::random(&mut OsRng);
        let attempt = CheckAttemptId::random(&mut OsRng);
        for topic in [
            Topic::Rewraps(organisation),
            Topic::Wraps(recipient),
            Topic::Checks(organisation),
            Topic::Check(attempt),
        ] {
            assert_eq!(Topic::decode(&topic.encode()), Some(topic));
        }
        for payload in ["", "rewraps", "rewraps:", "wraps:nope", "other:x", ":"] {
            assert_eq!(Topic::decode(payload), None, "{payload:?}");
        }
    }

    #[tokio::test]
    async fn a_wake_between_the_look_and_the_sleep_is_not_lost() {
        let changes = Changes::default();
        let topic = Topic::Wraps(RecipientId::random(&mut OsRng));
        let mut looks = 0;
        let answer: Result<u32, ()> = changes
            .wait(topic, Duration::from_secs(3600), || {
                looks += 1;
                // The first look finds nothing and a change commits right after it.
                if looks == 1 {
                    changes.wake(&topic);
                }
                let look = if looks == 1 {
                    Look::Nothing(0)
                } else {
                    Look::Ready(looks)
                };
                std::future::ready(Ok(look))
            })
            .await;
        assert_eq!(answer, Ok(2));
        assert_eq!(
            changes.waiting(),
            0,
            "the topic is forgotten with its last waiter"
        );
    }

    #[tokio::test]
    async fn close_answers_waiters_with_what_they_found() {
        let changes = Arc::new(Changes::default());
        let topic = Topic::Rewraps(OrganisationId::random(&mut OsRng));
        let waiter = tokio::spawn({
            let changes = changes.clone();
            async move {
                changes
                    .wait(topic, Duration::from_secs(3600), || {
                        std::future::ready(Ok::<_, ()>(Look::Nothing("empty")))
                    })
                    .await
            }
        });
        // The waiter registers on its first poll: yield until it has (bounded).
        for _ in 0..1_000 {
            if changes.waiting() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(changes.waiting(), 1);
        changes.close();
        assert_eq!(waiter.await.unwrap(), Ok("empty"));
    }

    #[tokio::test]
    async fn the_wait_ends_at_its_limit() {
        let changes = Changes::default();
        let topic = Topic::Wraps(RecipientId::random(&mut OsRng));
        let answer = changes
            .wait(topic, Duration::from_millis(20), || {
                std::future::ready(Ok::<_, ()>(Look::Nothing(7)))
            })
            .await;
        assert_eq!(answer, Ok(7));
    }
}
