//! The patient's side of the protocol, played with `shared` as the viewer plays it: open the
//! link, enroll (derive keys from the password, seal the private key), unlock, fetch the sealed
//! key and the messages, open them locally.

use rand_core::OsRng;
use shared::api::{
    EnrollRequest, LinkRequest, MessageList, OpenResponse, PatientState, UnlockRequest,
};
use shared::bundle::{KeyBundle, SealBinding};
use shared::envelope::Content;
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
        assert!(
            matches!(opened.patient, PatientState::New { .. }),
            "the patient must not be enrolled yet"
        );
        let recipient = opened.recipient_id;
        let binding = SealBinding {
            recipient,
            salt: Salt::random(&mut OsRng),
            kdf_params,
        };
        let keys = derive_password_keys(
            &Password::new(self.password).unwrap(),
            &binding.salt,
            &binding.kdf_params,
        )
        .unwrap();
        let request = EnrollRequest {
            link: link.into(),
            bundle: KeyBundle::seal(&self.key, &binding, &keys.sealing, &mut OsRng).unwrap(),
            salt: binding.salt,
            kdf_params,
            verifier: keys.auth.verifier(),
        };
        let response = relay
            .http()
            .post(relay.url("/v1/viewer/enroll"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        recipient
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
