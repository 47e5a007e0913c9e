//! Enrollment check: the patient proves a date of birth or a one-time enrollment code to the
//! organisation's agent before the agent pins the key the patient just enrolled.
//!
//! A first-contact message is sent before the patient has a key, so whoever opens the link first
//! enrolls (THREAT_MODEL.md, section 5.3), and the relay runs the key directory. A check lets the
//! sender ask for something only the patient should know. The answer has little entropy (a date
//! of birth is about 15 bits), so it is never sent, hashed or stored where the relay could test
//! guesses against it offline: browser and agent run SPAKE2, through the relay, and each side
//! learns only whether the other used the same answer. The key confirmation binds the
//! fingerprint of the key being enrolled, so neither the relay nor anyone on the path can answer
//! the check with the real patient's help and then swap in a key of its own.
//!
//! # Wire format
//! ```text
//! answer         = "dob:" YYYY-MM-DD | "code:" 10 symbols | "dob:" YYYY-MM-DD "\n" "code:" 10 symbols
//! password_input = "securetext/v1/enrollment-check/password" || message_id[16]
//!                  || organisation_id[16] || u32(len(answer)) || answer
//! SPAKE2         = RustCrypto spake2 0.4 / python-spake2 0.9, Ed25519 group, asymmetric,
//!                  id_a = "securetext/v1/enrollment-check/patient" (the patient, side A),
//!                  id_b = "securetext/v1/enrollment-check/agent"   (the agent, side B)
//! message        = side byte ('A' = 0x41 | 'B' = 0x42) || compressed Edwards point[32]  (33 bytes)
//! K              = SPAKE2 shared key (32 bytes)
//! prk            = HKDF-SHA256-Extract(salt = empty, ikm = K)
//! k_patient      = HKDF-SHA256-Expand(prk, "securetext/v1/enrollment-check/patient-confirm", 32)
//! k_agent        = HKDF-SHA256-Expand(prk, "securetext/v1/enrollment-check/agent-confirm", 32)
//! transcript     = "securetext/v1/enrollment-check/transcript" || message_id[16]
//!                  || organisation_id[16] || fingerprint[32] || message_a[33] || message_b[33]
//! agent confirmation   = HMAC-SHA256(k_agent, transcript)
//! patient confirmation = HMAC-SHA256(k_patient, transcript)
//! ```
//! Messages and confirmations travel as unpadded base64url (44 and 43 characters).
//!
//! # Invariants
//! - The answer exists only as a [`CheckAnswer`] (wiped on drop, redacted, not `Clone`); what
//!   leaves a party is a SPAKE2 message or a confirmation, neither of which lets an observer or a
//!   copy of the relay's database test a guess. Each run of the exchange gives an *active*
//!   attacker at most one guess, which is why both the relay and the agent stop after
//!   [`MAX_ATTEMPTS`] per message.
//! - Confirmations are compared in constant time; the expected patient confirmation is a secret
//!   until it has been matched (who knows it could confirm a substituted key to the agent).
//! - Best effort only: the `spake2` crate keeps its own copy of the password input and its
//!   ephemeral scalar in plain memory and does not wipe them on drop. They live for one attempt.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password as SpakePassword, Spake2};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Error;
use crate::encoding::{b64u_decode_array, b64u_encode};
use crate::ids::{MessageId, OrganisationId};
use crate::kdf::expand;
use crate::keys::Fingerprint;
use crate::secret::SecretBytes;

/// Prefix of the SPAKE2 password input.
pub const PASSWORD_INPUT_PREFIX: &[u8] = b"securetext/v1/enrollment-check/password";
/// SPAKE2 identity of side A, the patient's browser.
pub const PATIENT_IDENTITY: &[u8] = b"securetext/v1/enrollment-check/patient";
/// SPAKE2 identity of side B, the organisation's agent.
pub const AGENT_IDENTITY: &[u8] = b"securetext/v1/enrollment-check/agent";
/// HKDF-Expand info of the key of the patient's confirmation.
pub const PATIENT_CONFIRM_INFO: &[u8] = b"securetext/v1/enrollment-check/patient-confirm";
/// HKDF-Expand info of the key of the agent's confirmation.
pub const AGENT_CONFIRM_INFO: &[u8] = b"securetext/v1/enrollment-check/agent-confirm";
/// Prefix of the transcript both confirmations authenticate.
pub const TRANSCRIPT_PREFIX: &[u8] = b"securetext/v1/enrollment-check/transcript";

/// Most answers the relay and the agent each accept per message.
///
/// Both count, independently: the relay so that whoever holds the link cannot guess on and on,
/// and the agent because a malicious relay could otherwise make up patient messages itself and
/// test one guess against the agent with each of them.
pub const MAX_ATTEMPTS: u32 = 5;

/// The enrollment-code alphabet: Crockford's base32 (no I, L, O, U).
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in an enrollment code (5 bits each: 50 bits).
pub const CODE_LEN: usize = 10;

/// Which questions a message's check asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The patient's date of birth.
    DateOfBirth,
    /// A one-time enrollment code the organisation gave the patient in person.
    Code,
    /// Both.
    DateOfBirthAndCode,
}

impl CheckKind {
    /// Whether the check asks for the date of birth.
    pub const fn asks_date_of_birth(self) -> bool {
        matches!(self, Self::DateOfBirth | Self::DateOfBirthAndCode)
    }

    /// Whether the check asks for an enrollment code.
    pub const fn asks_code(self) -> bool {
        matches!(self, Self::Code | Self::DateOfBirthAndCode)
    }

    /// The serde name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DateOfBirth => "date_of_birth",
            Self::Code => "code",
            Self::DateOfBirthAndCode => "date_of_birth_and_code",
        }
    }
}

/// The answer to a check, in its canonical encoding (see the module's wire format). Secret:
/// wiped on drop, redacted in `Debug`, neither `Clone` nor `Serialize`.
pub struct CheckAnswer {
    kind: CheckKind,
    encoded: Zeroizing<String>,
}

impl CheckAnswer {
    /// Normalises the parts the kind asks for and refuses anything else.
    ///
    /// - Date of birth: surrounding whitespace is trimmed; then exactly `YYYY-MM-DD` (what an
    ///   `<input type=date>` yields), a real calendar date from 1900-01-01 to 2100-12-31.
    /// - Code: surrounding whitespace is trimmed; every space and `-` is removed; letters are
    ///   upper-cased; the look-alikes `O` → `0` and `I`, `L` → `1` are mapped as Crockford's
    ///   decoding rules say; then exactly [`CODE_LEN`] symbols of [`CODE_ALPHABET`].
    ///
    /// Errors: [`Error::Malformed`] for a date or code that does not follow these rules, or a
    /// part missing or given when the kind does not ask for it.
    pub fn new(
        kind: CheckKind,
        date_of_birth: Option<&str>,
        code: Option<&str>,
    ) -> Result<Self, Error> {
        let date = match (kind.asks_date_of_birth(), date_of_birth) {
            (true, Some(text)) => Some(normalise_date_of_birth(text)?),
            (false, None) => None,
            (true, None) => return Err(Error::malformed("check answer", "date of birth missing")),
            (false, Some(_)) => {
                return Err(Error::malformed(
                    "check answer",
                    "date of birth given, but not asked",
                ));
            }
        };
        let code = match (kind.asks_code(), code) {
            (true, Some(text)) => Some(normalise_code(text)?),
            (false, None) => None,
            (true, None) => return Err(Error::malformed("check answer", "code missing")),
            (false, Some(_)) => {
                return Err(Error::malformed(
                    "check answer",
                    "code given, but not asked",
                ));
            }
        };
        // Sized up front, so that the secret is never copied by a reallocation.
        let mut encoded = Zeroizing::new(String::with_capacity(4 + 10 + 1 + 5 + CODE_LEN));
        if let Some(date) = &date {
            encoded.push_str("dob:");
            encoded.push_str(date);
        }
        if let Some(code) = &code {
            if date.is_some() {
                encoded.push('\n');
            }
            encoded.push_str("code:");
            encoded.push_str(code);
        }
        Ok(Self { kind, encoded })
    }

    /// Which questions this answers.
    pub fn kind(&self) -> CheckKind {
        self.kind
    }

    fn encoded(&self) -> &[u8] {
        self.encoded.as_bytes()
    }
}

impl fmt::Debug for CheckAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckAnswer({:?}, [redacted])", self.kind)
    }
}

fn normalise_date_of_birth(text: &str) -> Result<Zeroizing<String>, Error> {
    const NOT_A_DATE: Error = Error::malformed("date of birth", "not a date YYYY-MM-DD");
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(NOT_A_DATE);
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range].iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let (year, month, day) = match (number(0..4), number(5..7), number(8..10)) {
        (Some(year), Some(month), Some(day)) => (year, month, day),
        _ => return Err(NOT_A_DATE),
    };
    if !(1900..=2100).contains(&year) {
        return Err(Error::malformed(
            "date of birth",
            "year outside 1900 to 2100",
        ));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(Error::malformed("date of birth", "no such month")),
    };
    if !(1..=days).contains(&day) {
        return Err(Error::malformed(
            "date of birth",
            "no such day in that month",
        ));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

fn normalise_code(text: &str) -> Result<Zeroizing<String>, Error> {
    const WRONG_LENGTH: Error = Error::malformed("enrollment code", "not 10 symbols");
    let mut code = Zeroizing::new(String::with_capacity(CODE_LEN));
    for c in text.trim().chars() {
        let symbol = match c.to_ascii_uppercase() {
            ' ' | '-' => continue,
            'O' => b'0',
            'I' | 'L' => b'1',
            c if c.is_ascii() && CODE_ALPHABET.contains(&(c as u8)) => c as u8,
            _ => {
                return Err(Error::malformed(
                    "enrollment code",
                    "not of the enrollment-code alphabet",
                ));
            }
        };
        if code.len() == CODE_LEN {
            return Err(WRONG_LENGTH);
        }
        code.push(char::from(symbol));
    }
    if code.len() != CODE_LEN {
        return Err(WRONG_LENGTH);
    }
    Ok(code)
}

/// A one-time enrollment code: [`CODE_LEN`] symbols of [`CODE_ALPHABET`] (50 bits), written
/// `XXXXX-XXXXX`. It is meant to be printed for the clinic, so [`fmt::Display`] shows it; it is
/// still wiped on drop, redacted in `Debug` (so it never reaches a log by accident) and not
/// `Clone`.
pub struct EnrollmentCode(Zeroizing<String>);

impl EnrollmentCode {
    /// A fresh random code. Each symbol is one random byte modulo 32, which is uniform.
    pub fn generate(rng: &mut (impl CryptoRng + RngCore)) -> Self {
        let mut random = Zeroizing::new([0u8; CODE_LEN]);
        rng.fill_bytes(random.as_mut());
        let mut grouped = Zeroizing::new(String::with_capacity(CODE_LEN + 1));
        for (i, byte) in random.iter().enumerate() {
            if i == CODE_LEN / 2 {
                grouped.push('-');
            }
            grouped.push(char::from(CODE_ALPHABET[usize::from(byte & 31)]));
        }
        Self(grouped)
    }

    /// The grouped form, `XXXXX-XXXXX`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnrollmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EnrollmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrollmentCode([redacted])")
    }
}

/// A SPAKE2 message as it travels: the side byte (`0x41` from the patient, `0x42` from the
/// agent) and a compressed Edwards point, 33 bytes, unpadded base64url in JSON. Public: the
/// relay stores and forwards it, and it reveals nothing testable about the answer.
///
/// Parsing checks the length and the side byte; whether the point is on the curve is checked
/// when the other side uses it ([`Error::Malformed`] then).
#[derive(Clone, PartialEq, Eq)]
pub struct PakeMessage([u8; PakeMessage::LEN]);

impl PakeMessage {
    /// Length in bytes.
    pub const LEN: usize = 33;
    /// Side byte of the patient's message (`'A'`).
    pub const PATIENT_SIDE: u8 = 0x41;
    /// Side byte of the agent's message (`'B'`).
    pub const AGENT_SIDE: u8 = 0x42;

    /// Parses the 33 bytes, refusing another length or side byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; Self::LEN] = bytes
            .try_into()
            .map_err(|_| Error::malformed("enrollment check message", "wrong length"))?;
        if bytes[0] != Self::PATIENT_SIDE && bytes[0] != Self::AGENT_SIDE {
            return Err(Error::malformed(
                "enrollment check message",
                "unknown side byte",
            ));
        }
        Ok(Self(bytes))
    }

    /// The 33 bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Whether the patient sent it (side A); otherwise the agent did.
    pub const fn is_from_patient(&self) -> bool {
        self.0[0] == Self::PATIENT_SIDE
    }

    /// The 44-character transport form.
    pub fn to_base64url(&self) -> String {
        b64u_encode(self.0)
    }

    /// Parses the transport form.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        Self::from_bytes(&b64u_decode_array::<{ Self::LEN }>(
            text,
            "enrollment check message",
        )?)
    }

    fn from_spake(bytes: Vec<u8>) -> Self {
        Self::from_bytes(&bytes).expect("spake2 writes a side byte and a 32-byte point")
    }
}

impl fmt::Debug for PakeMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PakeMessage({})", self.to_base64url())
    }
}

impl Serialize for PakeMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64url())
    }
}

impl<'de> Deserialize<'de> for PakeMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_base64url(&text).map_err(serde::de::Error::custom)
    }
}

/// A key-confirmation MAC (HMAC-SHA256, 32 bytes), unpadded base64url in JSON.
///
/// Not secret once sent: the relay carries it, and without one side's ephemeral SPAKE2 scalar
/// it tests no guess of the answer. `Debug` therefore shows it, shortened to a prefix that is
/// enough to correlate log lines. There is no `PartialEq`: compare with [`Self::matches`] (or
/// [`ExpectedConfirmation::matches`]), in constant time, so that a forger learns nothing from
/// how long a comparison took.
#[derive(Clone)]
pub struct Confirmation([u8; Confirmation::LEN]);

impl Confirmation {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// The confirmation from its bytes.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The 43-character transport form.
    pub fn to_base64url(&self) -> String {
        b64u_encode(self.0)
    }

    /// Parses the transport form.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        b64u_decode_array(text, "enrollment check confirmation").map(Self)
    }

    /// Whether both are the same confirmation, in constant time.
    pub fn matches(&self, other: &Confirmation) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Confirmation({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Confirmation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64url())
    }
}

impl<'de> Deserialize<'de> for Confirmation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_base64url(&text).map_err(serde::de::Error::custom)
    }
}

/// What binds an exchange to one message and one organisation: both go into the SPAKE2
/// password input and into the confirmation transcript, so an exchange (or an answer's
/// confirmation) for one message proves nothing for another.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    /// The first-contact message the check belongs to.
    pub message_id: &'a MessageId,
    /// The organisation that sent it.
    pub organisation_id: &'a OrganisationId,
}

/// The patient's (browser's) side of one attempt. Holds the SPAKE2 state; not `Clone`, and
/// [`Self::finish`] consumes it, so an attempt's ephemeral secret is used once.
pub struct PatientCheck {
    spake: Spake2<Ed25519Group>,
    message: PakeMessage,
    message_id: MessageId,
    organisation_id: OrganisationId,
}

impl PatientCheck {
    /// Starts an attempt: the state to keep and the message to send to the relay (flight 1).
    pub fn start(
        answer: &CheckAnswer,
        context: &CheckContext<'_>,
        rng: impl CryptoRng + RngCore,
    ) -> (Self, PakeMessage) {
        let (spake, message) = Spake2::<Ed25519Group>::start_a_with_rng(
            &SpakePassword::new(password_input(answer, context).as_slice()),
            &Identity::new(PATIENT_IDENTITY),
            &Identity::new(AGENT_IDENTITY),
            rng,
        );
        let message = PakeMessage::from_spake(message);
        let check = Self {
            spake,
            message: message.clone(),
            message_id: *context.message_id,
            organisation_id: *context.organisation_id,
        };
        (check, message)
    }

    /// Finishes with the agent's reply (flight 2). Returns the patient's confirmation, which the
    /// viewer sends in every case (flight 3, so that the agent records the outcome), and whether
    /// the agent's confirmation verified: `true` means the answer was right and the reply came
    /// from someone who knows it, for the key with this `fingerprint`. `false` means a wrong
    /// answer or a reply for another key (or another message); the two cannot be told apart.
    ///
    /// Errors: [`Error::Malformed`] if `agent_message` is not an agent's message or not a point.
    pub fn finish(
        self,
        agent_message: &PakeMessage,
        agent_confirmation: &Confirmation,
        fingerprint: &Fingerprint,
    ) -> Result<PatientFinish, Error> {
        if agent_message.is_from_patient() {
            return Err(Error::malformed(
                "enrollment check message",
                "not the agent's message",
            ));
        }
        let key = Zeroizing::new(
            self.spake
                .finish(agent_message.as_bytes())
                .map_err(spake_error)?,
        );
        let keys = ConfirmationKeys::derive(&key);
        let transcript = transcript(
            &self.message_id,
            &self.organisation_id,
            fingerprint,
            &self.message,
            agent_message,
        );
        let expected_agent = mac(&keys.agent, &transcript);
        Ok(PatientFinish {
            confirmation: Confirmation(mac(&keys.patient, &transcript)),
            agent_verified: expected_agent.ct_eq(agent_confirmation.as_bytes()).into(),
        })
    }
}

impl fmt::Debug for PatientCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientCheck")
            .field("message", &self.message)
            .field("state", &"[redacted]")
            .finish()
    }
}

/// What the patient's side ends with.
#[derive(Debug, Clone)]
pub struct PatientFinish {
    /// The patient's confirmation, to send to the relay for the agent (always).
    pub confirmation: Confirmation,
    /// Whether the agent's confirmation verified.
    pub agent_verified: bool,
}

/// The agent's answer to one attempt (flight 2), relayed to the patient.
#[derive(Debug, Clone)]
pub struct AgentReply {
    /// The agent's SPAKE2 message.
    pub message: PakeMessage,
    /// The agent's key confirmation.
    pub confirmation: Confirmation,
}

/// What the patient's confirmation must equal for the attempt to verify. Secret until it has
/// been matched: whoever knows it could confirm the attempt, and so the key, to the agent.
/// Wiped on drop, redacted in `Debug`, not `Clone`.
#[derive(Debug)]
pub struct ExpectedConfirmation(SecretBytes<32>);

impl ExpectedConfirmation {
    /// Whether the patient's confirmation is the expected one, in constant time.
    pub fn matches(&self, presented: &Confirmation) -> bool {
        self.0.ct_eq(presented.as_bytes())
    }

    /// The bytes, for an agent that keeps the attempt in its own state between flights 2 and 4
    /// (never sent anywhere). Wiped when dropped.
    pub fn to_stored_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0.expose())
    }

    /// Restores what [`Self::to_stored_bytes`] gave.
    pub fn from_stored_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::new(bytes))
    }
}

/// The agent's (sender's) side: answers one attempt at once. The agent counts the attempts per
/// message and refuses more than [`MAX_ATTEMPTS`] before calling this.
///
/// Errors: [`Error::Malformed`] if `patient_message` is not a patient's message or not a point.
pub fn answer_attempt(
    answer: &CheckAnswer,
    context: &CheckContext<'_>,
    patient_message: &PakeMessage,
    fingerprint: &Fingerprint,
    rng: impl CryptoRng + RngCore,
) -> Result<(AgentReply, ExpectedConfirmation), Error> {
    if !patient_message.is_from_patient() {
        return Err(Error::malformed(
            "enrollment check message",
            "not the patient's message",
        ));
    }
    let (spake, message) = Spake2::<Ed25519Group>::start_b_with_rng(
        &SpakePassword::new(password_input(answer, context).as_slice()),
        &Identity::new(PATIENT_IDENTITY),
        &Identity::new(AGENT_IDENTITY),
        rng,
    );
    let message = PakeMessage::from_spake(message);
    let key = Zeroizing::new(
        spake
            .finish(patient_message.as_bytes())
            .map_err(spake_error)?,
    );
    let keys = ConfirmationKeys::derive(&key);
    let transcript = transcript(
        context.message_id,
        context.organisation_id,
        fingerprint,
        patient_message,
        &message,
    );
    let reply = AgentReply {
        message,
        confirmation: Confirmation(mac(&keys.agent, &transcript)),
    };
    let expected = ExpectedConfirmation(SecretBytes::new(mac(&keys.patient, &transcript)));
    Ok((reply, expected))
}

/// The SPAKE2 password input (module docs), wiped when dropped.
fn password_input(answer: &CheckAnswer, context: &CheckContext<'_>) -> Zeroizing<Vec<u8>> {
    let encoded = answer.encoded();
    let mut input = Zeroizing::new(Vec::with_capacity(
        PASSWORD_INPUT_PREFIX.len() + 16 + 16 + 4 + encoded.len(),
    ));
    input.extend_from_slice(PASSWORD_INPUT_PREFIX);
    input.extend_from_slice(context.message_id.as_bytes());
    input.extend_from_slice(context.organisation_id.as_bytes());
    let len = u32::try_from(encoded.len()).expect("an answer is a few dozen bytes");
    input.extend_from_slice(&len.to_be_bytes());
    input.extend_from_slice(encoded);
    input
}

fn transcript(
    message_id: &MessageId,
    organisation_id: &OrganisationId,
    fingerprint: &Fingerprint,
    patient_message: &PakeMessage,
    agent_message: &PakeMessage,
) -> Vec<u8> {
    let mut transcript =
        Vec::with_capacity(TRANSCRIPT_PREFIX.len() + 16 + 16 + 32 + 2 * PakeMessage::LEN);
    transcript.extend_from_slice(TRANSCRIPT_PREFIX);
    transcript.extend_from_slice(message_id.as_bytes());
    transcript.extend_from_slice(organisation_id.as_bytes());
    transcript.extend_from_slice(fingerprint.as_bytes());
    transcript.extend_from_slice(patient_message.as_bytes());
    transcript.extend_from_slice(agent_message.as_bytes());
    transcript
}

struct ConfirmationKeys {
    patient: SecretBytes<32>,
    agent: SecretBytes<32>,
}

impl ConfirmationKeys {
    fn derive(key: &[u8]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(None, key);
        Self {
            patient: expand(&hkdf, PATIENT_CONFIRM_INFO),
            agent: expand(&hkdf, AGENT_CONFIRM_INFO),
        }
    }
}

fn mac(key: &SecretBytes<32>, transcript: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .expect("HMAC accepts a key of any length");
    mac.update(transcript);
    mac.finalize().into_bytes().into()
}

fn spake_error(error: spake2::Error) -> Error {
    let reason = match error {
        spake2::Error::WrongLength => "wrong length",
        spake2::Error::BadSide => "from the wrong side",
        spake2::Error::CorruptMessage => "not a point of the group",
    };
    Error::malformed("enrollment check message", reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    const MESSAGE: MessageId = MessageId::from_bytes([0x11; 16]);
    const ORGANISATION: OrganisationId = OrganisationId::from_bytes([0x22; 16]);
    const FINGERPRINT: Fingerprint = Fingerprint::from_bytes([0x33; 32]);

    fn context() -> CheckContext<'static> {
        CheckContext {
            message_id: &MESSAGE,
            organisation_id: &ORGANISATION,
        }
    }

    fn dob(text: &str) -> CheckAnswer {
        CheckAnswer::new(CheckKind::DateOfBirth, Some(text), None).unwrap()
    }

    /// Runs the four flights; returns (patient's view, agent's verdict).
    fn run(
        patient: (&CheckAnswer, CheckContext<'_>, &Fingerprint),
        agent: (&CheckAnswer, CheckContext<'_>, &Fingerprint),
    ) -> (bool, bool) {
        let (check, message_a) = PatientCheck::start(patient.0, &patient.1, OsRng);
        let (reply, expected) =
            answer_attempt(agent.0, &agent.1, &message_a, agent.2, OsRng).unwrap();
        let finish = check
            .finish(&reply.message, &reply.confirmation, patient.2)
            .unwrap();
        (
            finish.agent_verified,
            expected.matches(&finish.confirmation),
        )
    }

    #[test]
    fn right_answer_verifies_both_ways() {
        let answer = dob("1984-02-29");
        let both = (&answer, context(), &FINGERPRINT);
        assert_eq!(run(both, both), (true, true));
        let code = EnrollmentCode::generate(&mut OsRng);
        let answer = CheckAnswer::new(
            CheckKind::DateOfBirthAndCode,
            Some(" 1984-02-29 "),
            Some(code.as_str()),
        )
        .unwrap();
        let both = (&answer, context(), &FINGERPRINT);
        assert_eq!(run(both, both), (true, true));
    }

    #[test]
    fn wrong_answer_fails_both_ways() {
        let right = dob("1984-02-29");
        let wrong = dob("1984-02-28");
        assert_eq!(
            run(
                (&wrong, context(), &FINGERPRINT),
                (&right, context(), &FINGERPRINT)
            ),
            (false, false)
        );
        // The same date asked as another kind is another answer.
        let code = CheckAnswer::new(CheckKind::Code, None, Some("0123456789")).unwrap();
        let code_and_dob = CheckAnswer::new(
            CheckKind::DateOfBirthAndCode,
            Some("1984-02-29"),
            Some("0123456789"),
        )
        .unwrap();
        assert_eq!(
            run(
                (&code, context(), &FINGERPRINT),
                (&code_and_dob, context(), &FINGERPRINT)
            ),
            (false, false)
        );
    }

    #[test]
    fn substituted_key_fails_both_ways() {
        let answer = dob("1984-02-29");
        let other = Fingerprint::from_bytes([0x44; 32]);
        assert_eq!(
            run(
                (&answer, context(), &FINGERPRINT),
                (&answer, context(), &other)
            ),
            (false, false)
        );
    }

    #[test]
    fn another_message_or_organisation_fails() {
        let answer = dob("1984-02-29");
        let other_message = MessageId::from_bytes([0x12; 16]);
        let other_organisation = OrganisationId::from_bytes([0x23; 16]);
        for other in [
            CheckContext {
                message_id: &other_message,
                organisation_id: &ORGANISATION,
            },
            CheckContext {
                message_id: &MESSAGE,
                organisation_id: &other_organisation,
            },
        ] {
            assert_eq!(
                run(
                    (&answer, context(), &FINGERPRINT),
                    (&answer, other, &FINGERPRINT)
                ),
                (false, false)
            );
        }
    }

    #[test]
    fn messages_from_the_wrong_side_or_off_the_curve_are_refused() {
        let answer = dob("1984-02-29");
        let (check, message_a) = PatientCheck::start(&answer, &context(), OsRng);
        let (reply, _) =
            answer_attempt(&answer, &context(), &message_a, &FINGERPRINT, OsRng).unwrap();
        assert!(message_a.is_from_patient() && !reply.message.is_from_patient());
        // The agent refuses its own kind of message, the patient its own.
        assert!(answer_attempt(&answer, &context(), &reply.message, &FINGERPRINT, OsRng).is_err());
        let (second, _) = PatientCheck::start(&answer, &context(), OsRng);
        assert!(
            second
                .finish(&message_a, &reply.confirmation, &FINGERPRINT)
                .is_err()
        );
        // A y coordinate that is no point of the curve (y = 2 is not on edwards25519).
        let mut not_a_point = [0u8; 33];
        not_a_point[0] = PakeMessage::AGENT_SIDE;
        not_a_point[1] = 2;
        let not_a_point = PakeMessage::from_bytes(&not_a_point).unwrap();
        assert!(matches!(
            check.finish(&not_a_point, &reply.confirmation, &FINGERPRINT),
            Err(Error::Malformed { .. })
        ));
        assert!(PakeMessage::from_bytes(&[0x41; 32]).is_err());
        let mut bad_side = *message_a.as_bytes();
        bad_side[0] = 0x53;
        assert!(PakeMessage::from_bytes(&bad_side).is_err());
    }

    #[test]
    fn wire_forms_round_trip() {
        let (_, message) = PatientCheck::start(&dob("2000-01-01"), &context(), OsRng);
        let text = message.to_base64url();
        assert_eq!(text.len(), 44);
        assert_eq!(PakeMessage::from_base64url(&text).unwrap(), message);
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<PakeMessage>(&json).unwrap(), message);

        let confirmation = Confirmation::from_bytes([7; 32]);
        let json = serde_json::to_string(&confirmation).unwrap();
        assert_eq!(json.len(), 45);
        let parsed: Confirmation = serde_json::from_str(&json).unwrap();
        assert!(parsed.matches(&confirmation));
        assert!(!parsed.matches(&Confirmation::from_bytes([8; 32])));
        assert!(Confirmation::from_base64url("c2hvcnQ").is_err());

        let expected = ExpectedConfirmation::from_stored_bytes([7; 32]);
        assert!(expected.matches(&confirmation));
        let restored = ExpectedConfirmation::from_stored_bytes(*expected.to_stored_bytes());
        assert!(restored.matches(&confirmation));
    }

    #[test]
    fn kinds_serialize_snake_case() {
        for (kind, name, dob, code) in [
            (CheckKind::DateOfBirth, "date_of_birth", true, false),
            (CheckKind::Code, "code", false, true),
            (
                CheckKind::DateOfBirthAndCode,
                "date_of_birth_and_code",
                true,
                true,
            ),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<CheckKind>(&format!("\"{name}\"")).unwrap(),
                kind
            );
            assert_eq!((kind.asks_date_of_birth(), kind.asks_code()), (dob, code));
        }
    }

    #[test]
    fn dates_of_birth_are_real_calendar_dates() {
        for good in [
            "1900-01-01",
            "2100-12-31",
            "2024-02-29",
            "2000-02-29",
            "1984-12-31",
            "\t1984-06-30\n",
        ] {
            let answer = dob(good);
            assert_eq!(answer.encoded(), format!("dob:{}", good.trim()).as_bytes());
        }
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2100-02-29",
            "1899-12-31",
            "2101-01-01",
            "1984-04-31",
            "1984-13-01",
            "1984-00-10",
            "1984-01-00",
            "1984-1-01",
            "84-01-01",
            "1984/01/01",
            "01-01-1984",
            "1984-01-01T00",
            "+984-01-01",
            "１９８４-01-01",
            "",
        ] {
            assert!(
                matches!(
                    CheckAnswer::new(CheckKind::DateOfBirth, Some(bad), None),
                    Err(Error::Malformed { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn codes_are_normalised_the_crockford_way() {
        let code = |text: &str| CheckAnswer::new(CheckKind::Code, None, Some(text));
        for (typed, canonical) in [
            ("ABCDE-FGHJK", "ABCDEFGHJK"),
            ("abcde fghjk", "ABCDEFGHJK"),
            (" o1il0-OIL01 ", "0111001101"),
            ("a-b-c-d-e-f-g-h-j-k", "ABCDEFGHJK"),
            ("0123456789", "0123456789"),
        ] {
            assert_eq!(
                code(typed).unwrap().encoded(),
                format!("code:{canonical}").as_bytes(),
                "{typed:?}"
            );
        }
        for bad in [
            "ABCDE-FGHJ",
            "ABCDE-FGHJKM",
            "ABCDE-FGHJU",
            "ABCDE_FGHJK",
            "ÄBCDE-FGHJK",
            "",
        ] {
            assert!(
                matches!(code(bad), Err(Error::Malformed { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn parts_must_match_the_kind() {
        let d = Some("1984-02-29");
        let c = Some("0123456789");
        assert!(CheckAnswer::new(CheckKind::DateOfBirth, None, None).is_err());
        assert!(CheckAnswer::new(CheckKind::DateOfBirth, d, c).is_err());
        assert!(CheckAnswer::new(CheckKind::Code, d, c).is_err());
        assert!(CheckAnswer::new(CheckKind::Code, None, None).is_err());
        assert!(CheckAnswer::new(CheckKind::DateOfBirthAndCode, d, None).is_err());
        assert!(CheckAnswer::new(CheckKind::DateOfBirthAndCode, None, c).is_err());
        let both = CheckAnswer::new(CheckKind::DateOfBirthAndCode, d, c).unwrap();
        assert_eq!(both.kind(), CheckKind::DateOfBirthAndCode);
        assert_eq!(both.encoded(), b"dob:1984-02-29\ncode:0123456789");
    }

    #[test]
    fn generated_codes_round_trip_through_the_answer() {
        for _ in 0..64 {
            let code = EnrollmentCode::generate(&mut OsRng);
            let text = code.as_str();
            assert_eq!(text.len(), 11);
            assert_eq!(&text[5..6], "-");
            assert_eq!(code.to_string(), text);
            let answer = CheckAnswer::new(CheckKind::Code, None, Some(text)).unwrap();
            assert_eq!(
                answer.encoded(),
                format!("code:{}", text.replace('-', "")).as_bytes()
            );
            let lower = CheckAnswer::new(CheckKind::Code, None, Some(&text.to_lowercase()));
            assert_eq!(lower.unwrap().encoded(), answer.encoded());
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let answer = CheckAnswer::new(
            CheckKind::DateOfBirthAndCode,
            Some("1984-02-29"),
            Some("ABCDE-FGHJK"),
        )
        .unwrap();
        let (check, message) = PatientCheck::start(&answer, &context(), OsRng);
        let (_, expected) =
            answer_attempt(&answer, &context(), &message, &FINGERPRINT, OsRng).unwrap();
        assert_eq!(
            format!("{answer:?}"),
            "CheckAnswer(DateOfBirthAndCode, [redacted])"
        );
        assert_eq!(format!("{expected:?}"), "ExpectedConfirmation([redacted])");
        assert!(format!("{check:?}").ends_with("state: \"[redacted]\" }"));
        let code = EnrollmentCode::generate(&mut OsRng);
        assert_eq!(format!("{code:?}"), "EnrollmentCode([redacted])");
        static_assertions::assert_not_impl_any!(CheckAnswer: Clone, Serialize);
        static_assertions::assert_not_impl_any!(EnrollmentCode: Clone, Serialize);
        static_assertions::assert_not_impl_any!(ExpectedConfirmation: Clone, Serialize);
        static_assertions::assert_not_impl_any!(PatientCheck: Clone, Serialize);
        static_assertions::assert_not_impl_any!(Confirmation: PartialEq);
    }
}
