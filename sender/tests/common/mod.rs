//! The real relay in-process on a loopback port (SQLite file or a fresh PostgreSQL database),
//! with the console SMS provider, plus the viewer's side of the protocol played with `shared`.
//! Modelled on the relay's own test harness; test code is not shared across crates.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use relay::sms::console::ConsoleProvider;
use relay::state::{AppState, Clock, Settings};
use relay::store::{Backend, Store};
use serde_json::{Value, json};
use shared::at_rest::DataKey;
use shared::bundle::KeyBundle;
use shared::envelope::{Content, Envelope};
use shared::ids::{OrganisationId, RecipientId};
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::keys::PrivateKey;
use sqlx::Connection as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The PostgreSQL server of the machine and CI.
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A running relay.
pub struct TestRelay {
    pub base: String,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub outbox_file: PathBuf,
    database: Option<String>,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestRelay {
    /// Starts the relay on a fresh database of `backend`, with the system clock (the sender
    /// stamps messages with the real time).
    pub async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (url, database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("relay.sqlite").display()),
                None,
            ),
            Backend::Postgres => {
                let name = format!("securetext_sender_test_{:016x}", OsRng.next_u64());
                let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
        };
        let viewer_dir = dir.path().join("dist");
        std::fs::create_dir_all(&viewer_dir).unwrap();
        std::fs::write(viewer_dir.join("index.html"), "<!doctype html>").unwrap();
        let store = Store::open(&url).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let base = format!("http://{address}");
        let outbox_file = dir.path().join("sms-outbox.jsonl");
        let state = AppState::new(
            store,
            DataKey::random(&mut OsRng),
            Settings {
                public_url: base.clone(),
                tls: false,
                viewer_dir,
                limits: default_limits(),
                trust_forwarded_for: false,
                twilio_auth_token: None,
            },
            Arc::new(ConsoleProvider::new(outbox_file.clone())),
            Clock::System,
        );
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(relay::serve_http(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            base,
            state,
            dir,
            outbox_file,
            database,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and drops the PostgreSQL database.
    pub async fn finish(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.state.store().close().await;
        if let Some(name) = &self.database
            && let Ok(mut admin) = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates an organisation and an API key for it.
    pub async fn organisation(&self, name: &str) -> (OrganisationId, String) {
        let id = relay::admin::create_org(self.state.store(), name)
            .await
            .unwrap();
        let key = relay::admin::create_api_key(self.state.store(), &id.to_string(), "test")
            .await
            .unwrap();
        (id, key.secret.to_string())
    }

    /// Sends every due SMS now (the outbox worker's step).
    pub async fn deliver_sms(&self) {
        while relay::jobs::send_one(&self.state).await.unwrap() {}
    }

    /// The link token of the newest SMS to `phone`.
    pub async fn link_for(&self, phone: &str) -> String {
        self.deliver_sms().await;
        let text = std::fs::read_to_string(&self.outbox_file).unwrap();
        let sms: Value = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .rev()
            .find(|s| s["to"] == phone)
            .expect("an SMS to this phone");
        let body = sms["body"].as_str().unwrap();
        body.rsplit("/m/").next().unwrap().trim().to_owned()
    }

    /// Forgets the patient's enrollment (the relay operator's reset for a forgotten password).
    pub async fn reset_enrollment(&self, phone: &str) {
        relay::admin::reset_enrollment(self.state.store(), self.state.data_key(), phone)
            .await
            .unwrap();
    }

    async fn post(&self, path: &str, body: Value, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }
}

/// Default relay limits, as `relay serve` has them with no flags.
pub fn default_limits() -> relay::limits::Limits {
    relay::limits::Limits::default()
}

/// The patient's side, played with `shared` as the viewer would.
pub struct Patient {
    pub key: PrivateKey,
    pub password: &'static str,
}

impl Patient {
    /// Opens the link; returns the recipient id and whether the patient is enrolled.
    pub async fn open(relay: &TestRelay, link: &str) -> (RecipientId, bool) {
        let response = relay
            .post("/v1/viewer/open", json!({ "link": link }), None)
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let id = RecipientId::parse(body["recipient_id"].as_str().unwrap()).unwrap();
        (id, body["state"] == "enrolled")
    }

    /// Enrolls with this key and password (minimum KDF cost, to keep tests fast).
    pub async fn enroll(&self, relay: &TestRelay, link: &str) -> RecipientId {
        let (recipient, enrolled) = Self::open(relay, link).await;
        assert!(!enrolled, "the patient must not be enrolled yet");
        let salt = Salt::random(&mut OsRng);
        let keys = derive_password_keys(
            &Password::new(self.password).unwrap(),
            &salt,
            &KdfParams::MINIMUM,
        )
        .unwrap();
        let bundle = KeyBundle::seal(&self.key, recipient, &keys.sealing, &mut OsRng).unwrap();
        let response = relay
            .post(
                "/v1/viewer/enroll",
                json!({
                    "link": link,
                    "bundle": bundle,
                    "salt": salt,
                    "kdf_params": KdfParams::MINIMUM,
                    "verifier": keys.auth.verifier(),
                }),
                None,
            )
            .await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        recipient
    }

    /// Unlocks and returns, for each live message, its id and either the opened content or
    /// `None` while it waits for a wrap to this patient's key.
    pub async fn read_all(
        &self,
        relay: &TestRelay,
        link: &str,
        recipient: RecipientId,
    ) -> Vec<(String, Option<Content>)> {
        let response = relay
            .post("/v1/viewer/open", json!({ "link": link }), None)
            .await;
        let opened: Value = response.json().await.unwrap();
        assert_eq!(opened["state"], "enrolled");
        let salt: Salt = serde_json::from_value(opened["salt"].clone()).unwrap();
        let params: KdfParams = serde_json::from_value(opened["kdf_params"].clone()).unwrap();
        let keys =
            derive_password_keys(&Password::new(self.password).unwrap(), &salt, &params).unwrap();
        let response = relay
            .post(
                "/v1/viewer/unlock",
                json!({ "link": link, "proof": keys.auth.to_base64url().as_str() }),
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        // The sealed key the relay holds opens with the password-derived key.
        let bundle: KeyBundle = relay
            .http
            .get(relay.url("/v1/viewer/key"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = bundle.unseal(recipient, &keys.sealing).unwrap();
        assert_eq!(key.public_key(), self.key.public_key());
        let listing: Value = relay
            .http
            .get(relay.url("/v1/viewer/messages"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listing["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let id = m["message_id"].as_str().unwrap().to_owned();
                let content = (m["awaiting_key"] == false).then(|| {
                    let envelope: Envelope = serde_json::from_value(m["envelope"].clone()).unwrap();
                    envelope.open(&key, Some(recipient)).unwrap()
                });
                (id, content)
            })
            .collect()
    }
}

/// The fixed RSA keys of the protocol vectors (no key generation in tests).
pub struct Keys {
    pub organisation: PrivateKey,
    pub patient: PrivateKey,
    pub patient_after_reset: PrivateKey,
}

pub fn keys() -> Keys {
    let file: Value =
        serde_json::from_str(include_str!("../../../shared/tests/vectors/v1.json")).unwrap();
    let named = |name: &str| {
        let entry = file["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap();
        PrivateKey::from_pkcs8_der(
            &hex::decode(entry["private_key_pkcs8"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    Keys {
        organisation: named("organisation"),
        patient: named("recipient"),
        patient_after_reset: named("recipient-after-reset"),
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns the time it took,
/// or `None` on timeout. Never a fixed sleep standing in for an assertion.
pub async fn wait_for<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
