//! The patient's side of the protocol, played with `shared` as the viewer plays it: open the
//! link, enroll (derive keys from the password, seal the private key), unlock, fetch the sealed
//! key and the messages, open them locally.

use rand_core::OsRng;
use shared::api::{
    CheckConfirmRequest, CheckProgress, CheckRequest, CheckStarted, CheckStatus, EnrollRequest,
    LinkRequest, MessageList, OpenResponse, PatientState, UnlockRequest,
};
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::Content;
use shared::identity_check::{CheckAnswer, CheckContext, PatientCheck};
use shared::ids::{MessageId, RecipientId};
use shared::kdf::{KdfParams, Password, Salt, derive_password_keys};
use shared::keys::PrivateKey;

use super::process::Endpoint;

/// A patient with a key pair and a password.
#[derive(Debug)]
pub struct Patient {
    /// The key the patient's browser generated.
    pub key: PrivateKey,
    /// The password the patient chose.
    pub password: &'static str,
}

/// How an enrollment through an identity check ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    /// The agent verified the answer: the patient is enrolled with this key.
    Verified,
    /// The agent did not: nothing was enrolled.
    Failed {
        /// Answers the message still accepts.
        attempts_left: u32,
    },
    /// The relay refused the enrollment (status, error body).
    Refused(u16, serde_json::Value),
}

/// A live viewer session.
#[derive(Debug)]
pub struct Unlocked {
    /// The `Cookie` header value of the session.
    pub cookie: String,
    /// The `Set-Cookie` header of the session cookie the unlock answered.
    pub set_cookie: String,
    /// The `Set-Cookie` header of the device cookie the unlock answered, if any.
    pub set_device_cookie: Option<String>,
    /// The private key, unsealed from the relay's bundle with the password.
    pub key: PrivateKey,
}

impl Patient {
    /// Opens the link (`POST /v1/viewer/open`).
    pub async fn open(relay: &impl Endpoint, link: &str) -> OpenResponse {
        let response = relay
            .http()
            .post(relay.url("/v1/viewer/open"))
            .json(&LinkRequest { link: link.into() })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "open");
        response.json().await.unwrap()
    }

    /// Enrolls with this key and password at the minimum KDF cost (to keep tests fast). The
    /// real viewer refuses to unlock such an enrollment: use [`Self::enroll_with`] and
    /// [`KdfParams::DEFAULT`] for a patient who then unlocks in a browser.
    pub async fn enroll(&self, relay: &impl Endpoint, link: &str) -> RecipientId {
        self.enroll_with(relay, link, KdfParams::MINIMUM).await
    }

    /// Enrolls with this key and password at the given KDF cost.
    pub async fn enroll_with(
        &self,
        relay: &impl Endpoint,
        link: &str,
        kdf_params: KdfParams,
    ) -> RecipientId {
        let opened = Self::open(relay, link).await;
        let request = self.enrollment(&opened, link, kdf_params);
        let response = relay
            .http()
            .post(relay.url("/v1/viewer/enroll"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        opened.recipient_id
    }

    /// The enrollment request the viewer makes from an open answer (minimum KDF cost).
    fn enrollment(
        &self,
        opened: &OpenResponse,
        link: &str,
        kdf_params: KdfParams,
    ) -> EnrollRequest {
        assert!(
            matches!(opened.patient, PatientState::New { .. }),
            "the patient must not be enrolled yet"
        );
        let binding = SealBinding {
            recipient: opened.recipient_id,
            salt: Salt::random(&mut OsRng),
            kdf_params,
        };
        let keys = derive_password_keys(
            &Password::new(self.password).unwrap(),
            &binding.salt,
            &binding.kdf_params,
        )
        .unwrap();
        EnrollRequest {
            link: link.into(),
            bundle: KeyBundle::seal(&self.key, &binding, &keys.sealing, &mut OsRng).unwrap(),
            salt: binding.salt,
            kdf_params,
            verifier: keys.auth.verifier(),
            identity_check: None,
        }
    }

    /// Enrolls through the message's identity check with `answer`, as the viewer does: starts
    /// the exchange with the enrollment, reads the agent's reply, sends the confirmation (also
    /// after a wrong answer), and waits for the agent's verdict. Needs an agent running.
    pub async fn enroll_checked(
        &self,
        relay: &impl Endpoint,
        link: &str,
        answer: &CheckAnswer,
    ) -> CheckOutcome {
        let opened = Self::open(relay, link).await;
        let mut request = self.enrollment(&opened, link, KdfParams::MINIMUM);
        let fingerprint = request.bundle.public_key.fingerprint();
        let context = CheckContext {
            message_id: &opened.message_id,
            organisation_id: &opened.organisation_id,
        };
        let (check, first) = PatientCheck::start(answer, &context, OsRng);
        request.identity_check = Some(first);
        let response = relay
            .http()
            .post(relay.url("/v1/viewer/enroll"))
            .json(&request)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status != 202 {
            return CheckOutcome::Refused(status, response.json().await.unwrap_or_default());
        }
        let started: CheckStarted = response.json().await.unwrap();
        let mut check = Some(check);
        // Each look is a long-poll; a handful cover the agent's answer and verdict.
        for _ in 0..10 {
            let status: CheckStatus = relay
                .http()
                .post(relay.url("/v1/viewer/check?wait=20"))
                .json(&CheckRequest {
                    link: link.into(),
                    attempt_id: started.attempt_id,
                })
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match status.progress {
                CheckProgress::Verified => return CheckOutcome::Verified,
                CheckProgress::Failed => {
                    return CheckOutcome::Failed {
                        attempts_left: status.attempts_left,
                    };
                }
                CheckProgress::Answered => {
                    let finish = check
                        .take()
                        .expect("answered once")
                        .finish(
                            status.agent_message.as_ref().unwrap(),
                            status.agent_confirmation.as_ref().unwrap(),
                            &fingerprint,
                        )
                        .unwrap();
                    let confirmed = relay
                        .http()
                        .post(relay.url("/v1/viewer/check/confirm"))
                        .json(&CheckConfirmRequest {
                            link: link.into(),
                            attempt_id: started.attempt_id,
                            confirmation: finish.confirmation,
                        })
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(confirmed.status(), 204, "confirm");
                }
                CheckProgress::AwaitingSender | CheckProgress::Confirmed => {}
            }
        }
        panic!("the identity check did not end (is the agent running?)");
    }

    /// Unlocks with the password and unseals the private key from the relay's bundle.
    pub async fn unlock(&self, relay: &impl Endpoint, link: &str) -> Unlocked {
        let opened = Self::open(relay, link).await;
        let PatientState::Enrolled { kdf_params, salt } = opened.patient else {
            panic!("the patient is not enrolled");
        };
        let keys = derive_password_keys(&Password::new(self.password).unwrap(), &salt, &kdf_params)
            .unwrap();
        let request = UnlockRequest {
            link: link.into(),
            proof: keys.auth.to_base64url().to_string(),
        };
        let response = relay
            .http()
            .post(relay.url("/v1/viewer/unlock"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "unlock");
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        let set_device_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.contains("securetext_device="))
            .map(str::to_owned);
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let bundle: KeyBundle = relay
            .http()
            .get(relay.url("/v1/viewer/key"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let binding = SealBinding {
            recipient: opened.recipient_id,
            salt,
            kdf_params,
        };
        let key = bundle.unseal(&binding, &keys.sealing).unwrap();
        Unlocked {
            cookie,
            set_cookie,
            set_device_cookie,
            key,
        }
    }

    /// Unlocks and returns, for each live message, its id and either the opened content or
    /// `None` while it waits for a wrap to this patient's key.
    pub async fn read_all(
        &self,
        relay: &impl Endpoint,
        link: &str,
        recipient: RecipientId,
    ) -> Vec<(MessageId, Option<Content>)> {
        let session = self.unlock(relay, link).await;
        // The sealed key the relay holds is the one this patient enrolled.
        assert_eq!(session.key.public_key(), self.key.public_key());
        let listing: MessageList = relay
            .http()
            .get(relay.url("/v1/viewer/messages"))
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listing
            .messages
            .into_iter()
            .map(|m| {
                let content = m
                    .envelope
                    .filter(|_| !m.awaiting_key)
                    .map(|envelope| envelope.open(&session.key, Some(recipient)).unwrap());
                (m.message_id, content)
            })
            .collect()
    }
}
