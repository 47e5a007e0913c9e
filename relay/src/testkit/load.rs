//! Load for the crash and scale-out suites: enrolled patients, concurrent submitters that retry
//! an unanswered submission with its idempotency key until it is acknowledged (as the sender
//! tooling does), and the checks that every acknowledged message arrived once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::ids::{MessageId, RecipientId};
use tokio::task::JoinHandle;

use super::fixtures::{header, keys, seal};
use super::patient::Patient;
use super::server::{Sender, TestRelay};
use super::wait::wait_until;
use crate::store::{Store, outbox};

/// Longest a submission may stay unacknowledged, restarts of the relay included.
pub const SUBMISSION_LIMIT: Duration = Duration::from_secs(60);

/// Pause between attempts of an unanswered submission, while the relay restarts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A patient enrolled through a first-contact message.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The phone number.
    pub phone: String,
    /// The recipient id.
    pub recipient: RecipientId,
    /// The link of the first-contact message (the patient unlocks through it).
    pub link: String,
    /// The first-contact message, sealed to the organisation only: it waits for a re-wrap.
    pub welcome: MessageId,
}

/// Enrolls `count` patients of `clinic` (numbers `+1555020xxxx`), each with `patient`'s key and
/// password, through a first-contact message ("Welcome") each.
pub async fn enroll_patients(
    relay: &TestRelay,
    clinic: &Sender,
    patient: &Patient,
    count: usize,
) -> Vec<Enrolled> {
    let mut patients = Vec::new();
    for i in 0..count {
        let phone = format!("+1555020{i:04}");
        let welcome = relay.submit_first_contact(clinic, &phone, "Welcome").await;
        let link = relay.deliver_link_for(&phone).await;
        let recipient = patient.enroll(relay, &link).await;
        patients.push(Enrolled {
            phone,
            recipient,
            link,
            welcome,
        });
    }
    patients
}

/// An acknowledged submission.
#[derive(Debug)]
pub struct Acknowledged {
    /// Its id.
    pub message: MessageId,
    /// Index of its patient.
    pub patient: usize,
    /// The body sent.
    pub body: String,
}

/// Submitters' shared state.
#[derive(Debug, Default)]
pub struct Submissions {
    acknowledged: Mutex<Vec<Acknowledged>>,
    unanswered: AtomicUsize,
    stop: AtomicBool,
}

impl Submissions {
    /// Submissions acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Attempts that got no answer (the relay down or dying mid-request), a `503`, or a
    /// `409 duplicate_message` (the same submission still being committed by an attempt the
    /// client gave up on): each was tried again.
    pub fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::SeqCst)
    }

    /// Waits until `more` submissions beyond the current count are acknowledged.
    pub async fn wait_for_more(&self, more: usize) {
        let target = self.acknowledged() + more;
        wait_until(SUBMISSION_LIMIT, "acknowledged submissions", || {
            let reached = self.acknowledged() >= target;
            async move { reached.then_some(()) }
        })
        .await;
    }

    /// Spawns `count` submitters sending to `clinic`'s patients in turn, each request to the
    /// next of `urls` (`…/v1/messages` of one relay or several), until [`Self::stop`].
    pub fn spawn(
        self: &Arc<Self>,
        count: usize,
        urls: &[String],
        clinic: &Sender,
        patients: &[Enrolled],
    ) -> Vec<JoinHandle<()>> {
        (0..count)
            .map(|task| {
                tokio::spawn(submit_until_stopped(
                    task,
                    urls.to_vec(),
                    clinic.clone(),
                    patients.to_vec(),
                    self.clone(),
                ))
            })
            .collect()
    }

    /// Stops the submitters (each finishes its submission in hand) and returns every
    /// acknowledged submission.
    pub async fn stop(&self, submitters: Vec<JoinHandle<()>>) -> Vec<Acknowledged> {
        self.stop.store(true, Ordering::SeqCst);
        for submitter in submitters {
            submitter.await.unwrap();
        }
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

async fn submit_until_stopped(
    task: usize,
    urls: Vec<String>,
    clinic: Sender,
    patients: Vec<Enrolled>,
    load: Arc<Submissions>,
) {
    let keys = keys();
    let http = reqwest::Client::new();
    let mut n = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let patient = (task + n) % patients.len();
        let to = &patients[patient];
        let body = format!("message {n} of submitter {task}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .try_into()
            .unwrap();
        let envelope = seal(
            header(clinic.id, Some(to.recipient), now, 86_400),
            &body,
            &keys,
            Some(&keys.patient),
        );
        let message = envelope.header.message_id;
        let request = json!({
            "to": to.phone,
            "envelope": envelope,
            "idempotency_key": format!("load-{task}-{n}"),
        });
        let deadline = Instant::now() + SUBMISSION_LIMIT;
        let mut attempt = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "submission {task}-{n} never acknowledged"
            );
            let url = &urls[(n + attempt) % urls.len()];
            attempt += 1;
            let answer = http
                .post(url)
                .bearer_auth(&clinic.api_key)
                .json(&request)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let (status, answer) = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                }
                Err(_) => (0, Value::Null),
            };
            match (status, answer["error"].as_str()) {
                // 200: a retry of a submission an earlier attempt got accepted.
                (201, _) | (200, _) if attempt > 1 || status == 201 => {
                    assert_eq!(answer["message_id"], message.to_string());
                    load.acknowledged.lock().unwrap().push(Acknowledged {
                        message,
                        patient,
                        body,
                    });
                    break;
                }
                (0 | 503, _) | (409, Some("duplicate_message")) => {
                    load.unanswered.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                _ => panic!("submission {task}-{n}: unexpected {status} {answer}"),
            }
        }
        n += 1;
    }
}

/// Checks, as each patient unlocking and reading, that every acknowledged message is listed
/// once and opens to the body sent, and that nothing else is listed but the welcome message.
pub async fn check_delivered(
    relay: &TestRelay,
    patient: &Patient,
    patients: &[Enrolled],
    acknowledged: &[Acknowledged],
) {
    for (i, enrolled) in patients.iter().enumerate() {
        let listed = patient
            .read_all(relay, &enrolled.link, enrolled.recipient)
            .await;
        let mut bodies: HashMap<MessageId, String> = HashMap::new();
        for (message, content) in listed {
            if message == enrolled.welcome {
                assert!(content.is_none(), "the welcome message waits for a re-wrap");
                continue;
            }
            let content = content.expect("every message but the welcome is sealed to the patient");
            assert!(
                bodies.insert(message, content.body.clone()).is_none(),
                "message {message} listed twice"
            );
        }
        let sent: Vec<_> = acknowledged.iter().filter(|a| a.patient == i).collect();
        for ack in &sent {
            assert_eq!(
                bodies.get(&ack.message),
                Some(&ack.body),
                "acknowledged message {} of patient {i}",
                ack.message
            );
        }
        assert_eq!(
            bodies.len(),
            sent.len(),
            "patient {i}: the acknowledged messages (and the welcome message), nothing else"
        );
    }
}

/// Waits until no SMS is pending in `store`'s outbox.
pub async fn wait_for_empty_outbox(store: &Store) {
    wait_until(
        Duration::from_secs(60),
        "the SMS outbox to drain",
        || async {
            let mut conn = store.conn().await.ok()?;
            (outbox::pending_count(&mut conn).await.ok()? == 0).then_some(())
        },
    )
    .await;
}

/// The lines a console provider wrote to `outbox_file`, oldest first.
pub fn console_lines(outbox_file: &Path) -> Vec<Value> {
    std::fs::read_to_string(outbox_file)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The position of every line of each SMS (by outbox reference) in `lines`.
pub fn positions_by_reference(lines: &[Value]) -> HashMap<String, Vec<usize>> {
    let mut positions: HashMap<String, Vec<usize>> = HashMap::new();
    for (position, line) in lines.iter().enumerate() {
        let reference = line["reference"].as_str().unwrap().to_owned();
        positions.entry(reference).or_default().push(position);
    }
    positions
}

/// Every outbox row of `store` and its status.
pub async fn outbox_statuses(store: &Store) -> Vec<(String, String)> {
    use sqlx::Row as _;
    let mut conn = store.conn().await.unwrap();
    sqlx::query("SELECT id, status FROM sms_outbox")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.try_get("id").unwrap(), row.try_get("status").unwrap()))
        .collect()
}
