//! The layout of `shared/tests/vectors/enrollment-check-v1.json`, shared by the generator
//! (`examples/make_enrollment_check_vectors.rs`) and the checker (`tests/vectors.rs`), and the
//! fixed-output generator that makes SPAKE2 deterministic for them. Byte strings are lowercase
//! hex; `docs/PROTOCOL.md` ("Test vectors") describes each field.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentCheckFile {
    pub description: String,
    pub format_version: u8,
    pub enrollment_check: Vec<EnrollmentCheckVector>,
}

/// One attempt: both sides' inputs, every intermediate value, and the two verdicts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentCheckVector {
    pub name: String,
    /// `date_of_birth`, `code` or `date_of_birth_and_code`.
    pub kind: String,
    pub message_id: String,
    pub organisation_id: String,
    /// The patient's browser (SPAKE2 side A).
    pub patient: CheckSide,
    /// The organisation's agent (SPAKE2 side B).
    pub agent: CheckSide,
    /// The patient's verdict: the agent's confirmation verified.
    pub agent_verified: bool,
    /// The agent's verdict: the patient's confirmation equals the expected one.
    pub patient_verified: bool,
}

/// What one side was given and what it computed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSide {
    /// The date of birth as typed (or as the sender recorded it), before normalisation.
    pub date_of_birth: Option<String>,
    /// The enrollment code as typed (or as printed), before normalisation.
    pub code: Option<String>,
    /// The canonical answer encoding (text), e.g. `dob:1984-02-29`.
    pub answer: String,
    /// The fingerprint of the patient's key as this side knows it.
    pub fingerprint: String,
    /// The 64 bytes this side's generator returns; the SPAKE2 scalar is them read as a
    /// little-endian integer, reduced modulo the group order.
    pub rng: String,
    pub password_input: String,
    /// This side's SPAKE2 message (33 bytes, side byte first).
    pub message: String,
    /// The SPAKE2 shared key K.
    pub key: String,
    pub k_patient: String,
    pub k_agent: String,
    pub transcript: String,
    /// The confirmation this side sends.
    pub confirmation: String,
    /// The confirmation this side expects from the other.
    pub expected_confirmation: String,
}

/// A generator that returns the given bytes and then refuses to go on, so that a vector pins
/// exactly the randomness SPAKE2 consumes. For vectors only: it is not random.
pub struct FixedRng(Vec<u8>);

impl FixedRng {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(
            dest.len() <= self.0.len(),
            "the vector's randomness is used up"
        );
        dest.copy_from_slice(&self.0[..dest.len()]);
        self.0.drain(..dest.len());
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}
