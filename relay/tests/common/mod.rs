//! The real relay, in-process on a random loopback port, on a fresh SQLite file or a fresh
//! PostgreSQL database, with a manual clock and the console SMS provider writing to a temp file.
#![allow(dead_code)]

pub mod contract;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rand_core::{OsRng, RngCore};
use relay::limits::Limits;
use relay::sms::console::ConsoleProvider;
use relay::state::{AppState, Clock, Settings};
use relay::store::{Backend, Store};
use serde_json::Value;
use shared::at_rest::DataKey;
use shared::envelope::{Content, ContentType, Direction, Envelope, Header};
use shared::ids::{MessageId, OrganisationId, RecipientId};
use shared::keys::PrivateKey;
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the PostgreSQL server of the machine and CI listens.
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database of one backend.
pub enum TestDb {
    /// A SQLite file in the relay's temp directory.
    Sqlite(PathBuf),
    /// A database created for this test on the local PostgreSQL server.
    Postgres(String),
}

impl TestDb {
    pub async fn new(backend: Backend, dir: &std::path::Path) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(dir.join("relay.sqlite")),
            Backend::Postgres => {
                let name = format!("securetext_test_{:016x}", OsRng.next_u64());
                let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432 (see README)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                Self::Postgres(name)
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    /// Every byte the database holds, as text to scan: the SQLite files, or a `pg_dump`.
    pub fn dump(&self) -> Vec<u8> {
        match self {
            Self::Sqlite(path) => {
                let mut bytes = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    let file = PathBuf::from(format!("{}{suffix}", path.display()));
                    if let Ok(content) = std::fs::read(file) {
                        bytes.extend(content);
                    }
                }
                bytes
            }
            Self::Postgres(_) => {
                let output = std::process::Command::new("pg_dump")
                    .arg(self.url())
                    .output()
                    .expect("pg_dump runs");
                assert!(output.status.success(), "pg_dump failed");
                output.stdout
            }
        }
    }

    pub async fn drop_database(&self) {
        if let Self::Postgres(name) = self
            && let Ok(mut admin) = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// Default limits, as `relay serve` would have them with no flags.
pub fn default_limits() -> Limits {
    Limits::default()
}

/// What a relay server is started from.
struct Parts<'a> {
    dir: &'a std::path::Path,
    db_url: String,
    data_key: &'a str,
    outbox_file: &'a std::path::Path,
    clock: &'a Arc<AtomicI64>,
    twilio_token: Option<&'a str>,
}

/// A started server.
struct Running {
    base: String,
    state: AppState,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Parts<'_> {
    async fn launch(self, limits: Limits) -> Running {
        let viewer_dir = self.dir.join("dist");
        std::fs::create_dir_all(&viewer_dir).unwrap();
        std::fs::write(
            viewer_dir.join("index.html"),
            "<!doctype html><title>SecureText</title><script src=\"/viewer.js\"></script>",
        )
        .unwrap();
        let store = Store::open(&self.db_url).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let base = format!("http://{address}");
        let settings = Settings {
            public_url: base.clone(),
            tls: false,
            viewer_dir,
            limits,
            trust_forwarded_for: false,
            twilio_auth_token: self.twilio_token.map(|t| t.parse().unwrap()),
        };
        let state = AppState::new(
            store,
            DataKey::from_base64url(self.data_key).unwrap(),
            settings,
            Arc::new(ConsoleProvider::new(self.outbox_file.to_path_buf())),
            Clock::Manual(self.clock.clone()),
        );
        let (shutdown, rx) = oneshot::channel();
        let task = tokio::spawn(relay::serve_http(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Running {
            base,
            state,
            shutdown,
            task,
        }
    }
}

/// A running relay.
pub struct TestRelay {
    pub base: String,
    pub state: AppState,
    pub clock: Arc<AtomicI64>,
    pub dir: tempfile::TempDir,
    pub outbox_file: PathBuf,
    pub db: TestDb,
    pub data_key: String,
    pub http: reqwest::Client,
    /// Twilio auth token for status callbacks (set before `boot`).
    pub twilio_token: Option<String>,
    /// The generated API description every answer is checked against.
    pub contract: Arc<contract::Contract>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub const START: i64 = 1_800_000_000;

impl TestRelay {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, default_limits()).await
    }

    pub async fn start_with(backend: Backend, limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(backend, dir.path()).await;
        let (_, data_key) = DataKey::generate_encoded(&mut OsRng);
        let clock = Arc::new(AtomicI64::new(START));
        let outbox_file = dir.path().join("sms-outbox.jsonl");
        let parts = Parts {
            dir: dir.path(),
            db_url: db.url(),
            data_key: &data_key,
            outbox_file: &outbox_file,
            clock: &clock,
            twilio_token: None,
        };
        let running = parts.launch(limits).await;
        Self {
            base: running.base,
            state: running.state,
            clock,
            outbox_file,
            dir,
            db,
            data_key: data_key.to_string(),
            http: reqwest::Client::new(),
            twilio_token: None,
            contract: Arc::new(contract::Contract::new()),
            shutdown: Some(running.shutdown),
            task: Some(running.task),
        }
    }

    /// Starts (or restarts) the server on the same database, data key and clock.
    pub async fn boot(&mut self, limits: Limits) {
        let running = Parts {
            dir: self.dir.path(),
            db_url: self.db.url(),
            data_key: &self.data_key,
            outbox_file: &self.outbox_file,
            clock: &self.clock,
            twilio_token: self.twilio_token.as_deref(),
        }
        .launch(limits)
        .await;
        self.base = running.base;
        self.state = running.state;
        self.shutdown = Some(running.shutdown);
        self.task = Some(running.task);
    }

    /// A second relay instance on the same database, data key and clock, with its own SMS
    /// provider (no HTTP listener): for outage and multi-instance tests.
    pub async fn instance(&self, sms: Arc<dyn relay::sms::SmsProvider>) -> AppState {
        AppState::new(
            Store::open(&self.db.url()).await.unwrap(),
            DataKey::from_base64url(&self.data_key).unwrap(),
            self.state.settings().clone(),
            sms,
            Clock::Manual(self.clock.clone()),
        )
    }

    /// Stops the server and closes the database.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.state.store().close().await;
    }

    pub async fn finish(mut self) {
        self.stop().await;
        self.db.drop_database().await;
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends every due SMS now (the outbox worker's step).
    pub async fn deliver_sms(&self) {
        while relay::jobs::send_one(&self.state).await.unwrap() {}
    }

    /// The SMS the console provider wrote, oldest first.
    pub fn sms(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.outbox_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The link token of the newest SMS sent to `phone`.
    pub fn link_for(&self, phone: &str) -> String {
        let sms = self
            .sms()
            .into_iter()
            .rev()
            .find(|s| s["to"] == phone)
            .expect("an SMS to this phone");
        let body = sms["body"].as_str().unwrap();
        body.rsplit("/m/").next().unwrap().trim().to_owned()
    }

    /// Creates an organisation with an API key.
    pub async fn organisation(&self, name: &str) -> Sender {
        let id = relay::admin::create_org(self.state.store(), name)
            .await
            .unwrap();
        let key = relay::admin::create_api_key(self.state.store(), &id.to_string(), "test")
            .await
            .unwrap();
        Sender {
            id,
            key_id: key.id,
            api_key: key.secret.to_string(),
        }
    }

    /// The audit event kinds of a message, as its sender sees them, oldest first.
    pub async fn event_kinds(&self, api_key: &str, message: impl std::fmt::Display) -> Vec<String> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/messages/{message}"),
                Some(api_key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method_name = method.as_str().to_owned();
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = auth {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.contract.check(&method_name, path, status, &body);
        (status, body)
    }
}

/// An organisation's credentials.
pub struct Sender {
    pub id: OrganisationId,
    pub key_id: String,
    pub api_key: String,
}

/// The fixed RSA keys of the protocol vectors.
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

/// A header for a message from `organisation`, created now, living `lifetime` seconds.
pub fn header(
    organisation: OrganisationId,
    recipient: Option<RecipientId>,
    now: i64,
    lifetime: i64,
) -> Header {
    Header {
        version: shared::FORMAT_VERSION,
        message_id: MessageId::random(&mut OsRng),
        organisation_id: organisation,
        recipient_id: recipient,
        created_at: now,
        expires_at: now + lifetime,
        content_type: ContentType::Text,
        direction: Direction::ToRecipient,
    }
}

pub fn content(body: &str) -> Content {
    Content {
        subject: "From your clinic".into(),
        body: body.into(),
    }
}

/// Seals a message the way the sender tooling does.
pub fn seal(header: Header, body: &str, keys: &Keys, patient: Option<&PrivateKey>) -> Envelope {
    Envelope::seal(
        header,
        &content(body),
        keys.organisation.public_key(),
        patient.map(PrivateKey::public_key),
        &mut OsRng,
    )
    .unwrap()
}
