//! A whole deployment in one process, for the browser tests and the browser benchmark: the real
//! relay (this workspace's code, SQLite, the wall clock) serving the built viewer, a clinic set
//! up with the sender tooling, and the sender's agent running as a task with its defaults.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use relay::store::Backend;
use relay::testkit::{TestRelay, wait_for};
use sender::agent::{Agent, AgentEvent, AgentNotice, AgentPolicy, RunOptions};
use sender::client::RetryPolicy;
use sender::config::{ApiKey, Config, Overrides, RelayUrl};
use sender::send::{IdentityCheck, OrganisationIdentity, OutgoingMessage, PhoneNumber, SendPolicy};
use sender::setup::{InitRequest, unseal_key};
use sender::state::StateDir;
use shared::envelope::Content;
use shared::ids::MessageId;
use shared::kdf::{KdfParams, Password};

use crate::dist_dir;

const PASSPHRASE: &str = "organisation passphrase of the test deployment";

/// See the module documentation.
#[allow(missing_debug_implementations)] // holds the agent's task and the sender's client
pub struct Deployment {
    /// The relay.
    pub relay: TestRelay,
    client: sender::Client,
    me: OrganisationIdentity,
    state: StateDir,
    _home: tempfile::TempDir,
    /// What the agent reported, with when.
    events: Arc<Mutex<Vec<(AgentEvent, SystemTime)>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    agent: tokio::task::JoinHandle<()>,
}

impl Deployment {
    /// Starts the relay (generous address and rate limits: one test address makes many
    /// attempts), sets the clinic up and starts its agent.
    pub async fn start() -> Result<Self> {
        let limits = relay::limits::Limits {
            address_unlock_attempts: 10_000,
            open_rate_per_minute: 10_000,
            send_rate_per_minute: 10_000,
            ..relay::limits::Limits::DEFAULT
        };
        let relay = TestRelay::builder(Backend::Sqlite)
            .limits(limits)
            .system_clock()
            .viewer_dir(dist_dir())
            .start()
            .await;
        let clinic = relay.organisation("Riverside Clinic").await;
        let home = tempfile::tempdir()?;
        let state = StateDir::open(home.path().join("securetext"))?;
        let outcome = sender::setup::init(
            &state,
            InitRequest {
                relay_url: RelayUrl::parse(&relay.base)?,
                api_key: ApiKey::new(&clinic.api_key)?,
                store_api_key: true,
                key_file: None,
                kdf_params: KdfParams::MINIMUM,
                replace_registered_key: false,
            },
            &Password::new(PASSPHRASE)?,
            None,
        )
        .await?;
        let config = Config::load(state.clone(), Overrides::default())?;
        let client = |retry| {
            sender::Client::with_retry_policy(
                config.relay_url.clone(),
                config.api_key.clone(),
                retry,
            )
        };
        let me = OrganisationIdentity {
            organisation_id: outcome.organisation_id,
            public_key: config.load_key_file()?.public_key,
            policy: SendPolicy::default(),
        };
        let agent = Agent::new(
            client(RetryPolicy::no_retries())?,
            outcome.organisation_id,
            unseal_key(&config, &Password::new(PASSPHRASE)?)?,
            &state,
            AgentPolicy::default(),
        );
        let events: Arc<Mutex<Vec<(AgentEvent, SystemTime)>>> = Arc::default();
        let sink = events.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            agent
                .run(
                    RunOptions::default(),
                    shutdown,
                    move |notice| match notice {
                        AgentNotice::Event(event) => {
                            sink.lock()
                                .unwrap()
                                .push((event.clone(), SystemTime::now()));
                        }
                        AgentNotice::PassFailed { error, .. } => eprintln!("agent: {error}"),
                        AgentNotice::Recovered => {}
                    },
                )
                .await;
        });
        Ok(Self {
            relay,
            client: client(RetryPolicy::default())?,
            me,
            state,
            _home: home,
            events,
            stop,
            agent,
        })
    }

    /// Sends a message as `securetext send` does (with `check`, a first contact's identity
    /// check), delivers its SMS and returns its id and the link as texted.
    pub async fn send(
        &self,
        phone: &str,
        body: &str,
        check: Option<IdentityCheck>,
    ) -> Result<(MessageId, String)> {
        let receipt = self
            .client
            .send(
                &self.me,
                &self.state,
                &OutgoingMessage {
                    to: PhoneNumber::parse(phone)?,
                    content: Content {
                        subject: "Lab results".into(),
                        body: body.into(),
                    },
                    lifetime_seconds: 3_600,
                    identity_check: check,
                },
            )
            .await?;
        self.relay.deliver_sms().await;
        Ok((receipt.message_id, self.relay.sms_link_for(phone)))
    }

    /// Whether the agent reported an event that `matches`.
    pub fn reported(&self, matches: impl Fn(&AgentEvent) -> bool) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|(event, _)| matches(event))
    }

    /// When the agent reported re-wrapping `id`, waiting up to `limit` for it.
    pub async fn rewrapped(&self, id: MessageId, limit: Duration) -> Option<SystemTime> {
        let at = || {
            self.events.lock().unwrap().iter().find_map(|(event, at)| {
                matches!(event, AgentEvent::Rewrapped { message_id, .. } if *message_id == id)
                    .then_some(*at)
            })
        };
        wait_for(limit, || async { at().is_some() }).await?;
        at()
    }

    /// Stops the agent and the relay.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.agent.await;
        self.relay.finish().await;
    }
}
