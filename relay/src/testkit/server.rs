//! The real relay, in-process on a random loopback port: the same router, store, jobs and SMS
//! outbox as `relay serve`, with the console SMS provider writing to a file in a temporary
//! directory and, unless a test asks for the wall clock, a clock the test moves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::limits::Limits;
use crate::sms::SmsProvider;
use crate::sms::console::ConsoleProvider;
use crate::state::{AppState, Clock, Settings};
use crate::store::{Backend, Store};
use rand_core::OsRng;
use serde_json::Value;
use shared::at_rest::DataKey;
use shared::ids::{MessageId, OrganisationId};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::contract::Contract;
use super::db::TestDb;
use super::fixtures::{header, keys, seal};
use super::proxy::DatabaseProxy;

/// The manual clock's starting time (Unix seconds, in 2027).
pub const START: i64 = 1_800_000_000;

/// How a [`TestRelay`] is started; [`TestRelay::start`] takes every default.
#[derive(Debug)]
pub struct TestRelayBuilder {
    backend: Backend,
    limits: Limits,
    clock: Clock,
    viewer_dir: Option<PathBuf>,
    twilio_token: Option<String>,
    tls: bool,
    trust_forwarded_for: bool,
    database_outages: bool,
}

impl TestRelayBuilder {
    /// Behave as a relay behind a trusted proxy (`--trust-forwarded-for`): the client address
    /// is the last `X-Forwarded-For` entry, so a test can present any client address.
    pub fn trust_forwarded_for(mut self) -> Self {
        self.trust_forwarded_for = true;
        self
    }

    /// Behave as a relay reached over TLS (`Secure`, `__Host-` cookie; HSTS), although the test
    /// talks plain HTTP to it.
    pub fn behind_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Limits other than `relay serve`'s defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The wall clock instead of the manual one (for tests that drive real binaries, which
    /// stamp messages with the real time). [`TestRelay::advance`] then panics.
    pub fn system_clock(mut self) -> Self {
        self.clock = Clock::System;
        self
    }

    /// A manual clock starting at `now` instead of [`START`].
    pub fn clock_at(mut self, now: i64) -> Self {
        self.clock = Clock::Manual(Arc::new(AtomicI64::new(now)));
        self
    }

    /// Serve this built viewer instead of a one-line placeholder page.
    pub fn viewer_dir(mut self, dir: PathBuf) -> Self {
        self.viewer_dir = Some(dir);
        self
    }

    /// Reaches PostgreSQL through a [`DatabaseProxy`] the test can cut
    /// ([`TestRelay::database_proxy`]).
    pub fn database_outages(mut self) -> Self {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "only PostgreSQL has a server to lose"
        );
        self.database_outages = true;
        self
    }

    /// Accept Twilio status callbacks signed with this auth token.
    pub fn twilio_token(mut self, token: &str) -> Self {
        self.twilio_token = Some(token.to_owned());
        self
    }

    /// Creates the database and starts the relay.
    pub async fn start(self) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(self.backend, dir.path()).await;
        let viewer_dir = self.viewer_dir.unwrap_or_else(|| {
            let placeholder = dir.path().join("dist");
            std::fs::create_dir_all(&placeholder).unwrap();
            std::fs::write(
                placeholder.join("index.html"),
                "<!doctype html><title>SecureText</title><script src=\"/viewer.js\"></script>",
            )
            .unwrap();
            placeholder
        });
        let (_, data_key) = DataKey::generate_encoded(&mut OsRng);
        let database_proxy = match self.database_outages {
            true => Some(DatabaseProxy::start(([127, 0, 0, 1], 5432).into()).await),
            false => None,
        };
        let mut relay = TestRelay {
            base: String::new(),
            metrics_base: String::new(),
            state: None,
            clock: self.clock,
            outbox_file: dir.path().join("sms-outbox.jsonl"),
            viewer_dir,
            dir,
            db,
            data_key: data_key.to_string(),
            http: reqwest::Client::new(),
            twilio_token: self.twilio_token,
            tls: self.tls,
            trust_forwarded_for: self.trust_forwarded_for,
            contract: Arc::new(Contract::new()),
            database_proxy,
            server: None,
            metrics_server: None,
        };
        relay.boot(self.limits).await;
        relay
    }
}

/// A running listener: how to stop it and the task to wait for.
#[derive(Debug)]
struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Spawns a listener's serve loop, which ends when [`Server::stop`] is called.
    fn spawn<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async move {
            let _ = stopped.await;
        })));
        Self { shutdown, task }
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A running relay and everything a test needs to reach into it.
#[derive(Debug)]
pub struct TestRelay {
    /// `http://127.0.0.1:<port>` of the API listener.
    pub base: String,
    /// `http://127.0.0.1:<port>` of the metrics listener.
    pub metrics_base: String,
    state: Option<AppState>,
    clock: Clock,
    /// Where the console SMS provider appends one JSON line per SMS.
    pub outbox_file: PathBuf,
    viewer_dir: PathBuf,
    /// The temporary directory holding the SQLite file, the outbox file and the placeholder
    /// viewer; removed when the relay is dropped.
    pub dir: tempfile::TempDir,
    /// The relay's database.
    pub db: TestDb,
    /// The data key (base64url) the relay seals phone numbers and SMS payloads with.
    pub data_key: String,
    /// An HTTP client for the test's own requests.
    pub http: reqwest::Client,
    /// Twilio auth token for status callbacks; set it before [`TestRelay::boot`] to restart
    /// with callbacks accepted.
    pub twilio_token: Option<String>,
    tls: bool,
    trust_forwarded_for: bool,
    /// The generated API description every [`TestRelay::call`] answer is checked against.
    pub contract: Arc<Contract>,
    /// The cuttable connection to PostgreSQL ([`TestRelayBuilder::database_outages`]).
    pub database_proxy: Option<DatabaseProxy>,
    server: Option<Server>,
    metrics_server: Option<Server>,
}

impl TestRelay {
    /// A relay on a fresh database of `backend` with `relay serve`'s default limits, the
    /// manual clock at [`START`] and a placeholder viewer page.
    pub async fn start(backend: Backend) -> Self {
        Self::builder(backend).start().await
    }

    /// A relay with some options changed.
    pub fn builder(backend: Backend) -> TestRelayBuilder {
        TestRelayBuilder {
            backend,
            limits: Limits::default(),
            clock: Clock::Manual(Arc::new(AtomicI64::new(START))),
            viewer_dir: None,
            twilio_token: None,
            tls: false,
            trust_forwarded_for: false,
            database_outages: false,
        }
    }

    /// The application state of the running server (store, data key, settings).
    pub fn state(&self) -> &AppState {
        self.state.as_ref().expect("the relay is running")
    }

    /// Starts the server (again, after [`TestRelay::stop`]) on the same database, data key,
    /// clock and files, on a new port.
    pub async fn boot(&mut self, limits: Limits) {
        let store = Store::open(&self.store_url()).await.unwrap();
        let data_key = DataKey::from_base64url(&self.data_key).unwrap();
        crate::store::recipients::upgrade(&store, &data_key)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        self.base = format!("http://{address}");
        let settings = Settings {
            public_url: self.base.clone(),
            tls: self.tls,
            viewer_dir: self.viewer_dir.clone(),
            limits,
            trust_forwarded_for: self.trust_forwarded_for,
            twilio_auth_token: self.twilio_token.as_deref().map(|t| t.parse().unwrap()),
        };
        let state = AppState::new(
            store,
            data_key,
            settings,
            Arc::new(ConsoleProvider::new(self.outbox_file.clone())),
            self.clock.clone(),
        );
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.metrics_base = format!("http://{}", metrics_listener.local_addr().unwrap());
        self.server = Some(Server::spawn(|stopped| {
            crate::serve_http(listener, state.clone(), stopped)
        }));
        self.metrics_server = Some(Server::spawn(|stopped| {
            crate::serve_metrics(metrics_listener, state.clone(), stopped)
        }));
        self.state = Some(state);
    }

    /// A second relay instance on the same database, data key and clock, with its own SMS
    /// provider and no HTTP listener: for outage and multi-instance tests.
    pub async fn instance(&self, sms: Arc<dyn SmsProvider>) -> AppState {
        AppState::new(
            Store::open(&self.store_url()).await.unwrap(),
            DataKey::from_base64url(&self.data_key).unwrap(),
            self.state().settings().clone(),
            sms,
            self.clock.clone(),
        )
    }

    /// The database URL the relay opens: through the proxy when there is one.
    fn store_url(&self) -> String {
        match &self.database_proxy {
            Some(proxy) => self.db.url_on_port(proxy.port()),
            None => self.db.url(),
        }
    }

    /// Stops the server, waits for it to finish and closes the database.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        if let Some(server) = self.metrics_server.take() {
            server.stop().await;
        }
        if let Some(state) = self.state.take() {
            state.store().close().await;
        }
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn finish(mut self) {
        self.stop().await;
        self.db.drop_database().await;
    }

    /// The relay's current time (Unix seconds).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, seconds: i64) {
        match &self.clock {
            Clock::Manual(now) => {
                now.fetch_add(seconds, Ordering::SeqCst);
            }
            Clock::System => panic!("advance() needs the manual clock"),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `metrics_base` + `path`.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("{}{path}", self.metrics_base)
    }

    /// The directory of the served viewer.
    pub fn viewer_dir(&self) -> &Path {
        &self.viewer_dir
    }

    /// Sends every due SMS now (the outbox worker's step).
    pub async fn deliver_sms(&self) {
        crate::jobs::send_due(self.state()).await.unwrap();
    }

    /// The SMS the console provider wrote, oldest first.
    pub fn sms(&self) -> Vec<Value> {
        super::load::console_lines(&self.outbox_file)
    }

    /// The link of the newest SMS already sent to `phone`, as texted (`<base>/m/#<token>`).
    pub fn sms_link_for(&self, phone: &str) -> String {
        let sms = self
            .sms()
            .into_iter()
            .rev()
            .find(|s| s["to"] == phone)
            .expect("an SMS to this phone");
        let body = sms["body"].as_str().unwrap();
        body.rsplit(' ').next().unwrap().trim().to_owned()
    }

    /// The link token of the newest SMS already sent to `phone`: what follows `/m/#` in the
    /// link (or `/m/` in the path form of links texted before the fragment form).
    pub fn link_for(&self, phone: &str) -> String {
        let link = self.sms_link_for(phone);
        let tail = link.rsplit("/m/").next().unwrap();
        tail.strip_prefix('#').unwrap_or(tail).to_owned()
    }

    /// Sends every due SMS, then returns the link token of the newest one to `phone`.
    pub async fn deliver_link_for(&self, phone: &str) -> String {
        self.deliver_sms().await;
        self.link_for(phone)
    }

    /// Creates an organisation with an API key.
    pub async fn organisation(&self, name: &str) -> Sender {
        let store = self.state().store();
        let id = crate::admin::create_org(store, name).await.unwrap();
        let key = crate::admin::create_api_key(store, &id.to_string(), "test")
            .await
            .unwrap();
        Sender {
            id,
            key_id: key.id,
            api_key: key.secret.to_string(),
        }
    }

    /// Creates an organisation with an API key and registers the vector organisation key for
    /// it, so that it can submit messages.
    pub async fn registered_organisation(&self, name: &str) -> Sender {
        let sender = self.organisation(name).await;
        let body = serde_json::json!({ "public_key": keys().organisation.public_key() });
        let (status, answer) = self
            .call(
                reqwest::Method::PUT,
                "/v1/organisation/key",
                Some(&sender.api_key),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        sender
    }

    /// Submits a first-contact message (sealed to the organisation only, living a day) from
    /// `sender` to `phone`; returns its id. The SMS is queued, not yet sent.
    pub async fn submit_first_contact(
        &self,
        sender: &Sender,
        phone: &str,
        body: &str,
    ) -> MessageId {
        let envelope = seal(
            header(sender.id, None, self.now(), 86_400),
            body,
            &keys(),
            None,
        );
        let request = serde_json::json!({ "to": phone, "envelope": envelope });
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                "/v1/messages",
                Some(&sender.api_key),
                Some(request),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        envelope.header.message_id
    }

    /// Queues `count` SMS to `phone` for one first-contact message from `sender`: its own SMS
    /// and `count - 1` more outbox rows with distinct bodies, written in one transaction. A
    /// backlog for outbox load, concurrency and shutdown tests without `count` submissions.
    /// Returns every queued SMS's outbox reference.
    pub async fn queue_sms(&self, sender: &Sender, phone: &str, count: usize) -> Vec<String> {
        use crate::store::outbox::{self, NewSms, SealedSms};
        let message = self.submit_first_contact(sender, phone, "backlog").await;
        let number = shared::phone::PhoneNumber::parse(phone).unwrap();
        let store = self.state().store();
        let mut references: Vec<String> =
            sqlx::query_scalar("SELECT id FROM sms_outbox WHERE message_id = $1")
                .bind(message.to_string())
                .fetch_all(&mut *store.conn().await.unwrap())
                .await
                .unwrap();
        let backlog: Vec<NewSms> = (1..count)
            .map(|n| {
                let body = format!("backlog SMS {n} of message {message}");
                NewSms {
                    id: format!("{message}-backlog-{n:06}"),
                    message,
                    organisation: sender.id,
                    sms: SealedSms::seal(self.state().data_key(), &number, &body),
                    now: self.now(),
                }
            })
            .collect();
        let mut tx = store.begin().await.unwrap();
        outbox::enqueue(&mut tx, &backlog).await.unwrap();
        tx.commit().await.unwrap();
        references.extend(backlog.into_iter().map(|new| new.id));
        references
    }

    /// Forgets the patient's enrollment with each organisation (the operator's reset for a
    /// forgotten password).
    pub async fn reset_enrollment(&self, phone: &str) {
        crate::admin::reset_enrollment(self.state().store(), self.state().data_key(), phone, None)
            .await
            .unwrap();
    }

    /// The audit event kinds of a message, as its sender sees them, oldest first.
    pub async fn event_kinds(&self, api_key: &str, message: impl std::fmt::Display) -> Vec<String> {
        let path = format!("/v1/messages/{message}");
        let (status, body) = self
            .call(reqwest::Method::GET, &path, Some(api_key), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// One request (with an API key when `auth` is given, and a JSON body), its status and
    /// JSON body (or the text as a JSON string), checked against the OpenAPI document.
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
#[derive(Debug, Clone)]
pub struct Sender {
    /// Its id.
    pub id: OrganisationId,
    /// The API key's public id (for revocation).
    pub key_id: String,
    /// The API key's secret.
    pub api_key: String,
}
