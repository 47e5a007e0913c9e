//! The message envelope: what a sender seals, the relay stores, and the viewer opens.
//!
//! # Wire format
//! Header, canonical form (72 bytes, integers big-endian), used verbatim as AES-GCM associated
//! data:
//! ```text
//! off len field
//!   0   4 magic "STXE"
//!   4   1 format version (0x01)
//!   5  16 message_id
//!  21  16 organisation_id
//!  37   1 recipient flag: 0x00 none (first contact), 0x01 present
//!  38  16 recipient_id (all zero when the flag is 0x00)
//!  54   8 created_at, i64 Unix seconds
//!  62   8 expires_at, i64 Unix seconds (> created_at)
//!  70   1 content type: 0x01 text
//!  71   1 direction: 0x01 organisation -> patient, 0x02 patient -> organisation
//! ```
//! Content (text, content type 0x01) and padding:
//! ```text
//! content = u32 len(subject) || subject UTF-8 || u32 len(body) || body UTF-8
//! padded  = u32 len(content) || content || 0x00 * k,  total = max(256, next power of two)
//!           of 4 + len(content), at most 65536
//! ```
//! Encryption and wrapping:
//! ```text
//! content_key = 32 random bytes, fresh per message
//! ciphertext  = AES-256-GCM(content_key, nonce[12] random, aad = header, padded)
//! wrap        = RSA-OAEP(SHA-256, MGF1-SHA-256,
//!                        label = "securetext/v1/content-key/" || message_id as UUID text)
//!               of content_key to a public key
//! ```
//! JSON: `{"header": {...}, "nonce": b64u, "ciphertext": b64u, "wraps": [{"role":
//! "organisation"|"recipient", "key_fingerprint": hex, "wrapped_key": b64u}]}`.
//!
//! # Invariants
//! - Every envelope carries exactly one organisation wrap (the sender keeps access to what it
//!   sent) and at most one recipient wrap. A first-contact envelope has no recipient id in its
//!   header and no recipient wrap until the sender's agent re-wraps it.
//! - The relay can check an envelope's structure and header ([`Envelope::validate`]) without any
//!   key; nothing it can do to the bytes makes the viewer show altered text.
//! - Padding hides the exact length: only the bucket is visible.

use std::fmt;

use rand_core::CryptoRngCore;
#[cfg(feature = "rsa")]
use rsa::Oaep;
use serde::{Deserialize, Serialize};
#[cfg(feature = "rsa")]
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::encoding::Reader;
use crate::ids::{MessageId, OrganisationId, RecipientId};
use crate::keys::{Fingerprint, PublicKey, WrapKey};
use crate::secret::SecretBytes;
use crate::{Error, FORMAT_VERSION};

/// First bytes of a canonical header.
pub const HEADER_MAGIC: &[u8; 4] = b"STXE";
/// Length of a canonical header.
pub const HEADER_LEN: usize = 72;
/// Smallest padding bucket.
pub const MIN_PADDED_LEN: usize = 256;
/// Largest padding bucket, hence the largest message.
pub const MAX_PADDED_LEN: usize = 65_536;
/// Largest encoded content (subject and body with their length prefixes).
pub const MAX_CONTENT_LEN: usize = MAX_PADDED_LEN - 4;
/// Prefix of the OAEP label; the message id's UUID text follows.
pub const WRAP_LABEL_PREFIX: &str = "securetext/v1/content-key/";

/// The one expiry rule: a message expiring at `expires_at` is expired from that second on.
/// (The relay's SQL selects live messages with the same rule, `expires_at > now`.)
pub const fn is_expired(expires_at: i64, now: i64) -> bool {
    now >= expires_at
}

/// What kind of content the ciphertext holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ContentType {
    /// A subject and a plain-text body (UTF-8), shown as text, never as HTML.
    #[serde(rename = "text/plain")]
    Text,
}

impl ContentType {
    const fn code(self) -> u8 {
        match self {
            Self::Text => 1,
        }
    }

    fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            1 => Ok(Self::Text),
            _ => Err(Error::malformed("envelope header", "unknown content type")),
        }
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the organisation to the patient.
    ToRecipient,
    /// From the patient to the organisation (replies).
    ToOrganisation,
}

impl Direction {
    const fn code(self) -> u8 {
        match self {
            Self::ToRecipient => 1,
            Self::ToOrganisation => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            1 => Ok(Self::ToRecipient),
            2 => Ok(Self::ToOrganisation),
            _ => Err(Error::malformed("envelope header", "unknown direction")),
        }
    }
}

/// The public, authenticated description of a message. The relay reads it to route, expire
/// and check ownership; any change to it makes decryption fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version; 1 for everything this crate produces.
    pub version: u8,
    /// Chosen by the sender; the relay refuses duplicates.
    pub message_id: MessageId,
    /// The sending organisation; must match the sender's API key.
    pub organisation_id: OrganisationId,
    /// The patient, or `None` for a first-contact message to a patient not yet enrolled.
    pub recipient_id: Option<RecipientId>,
    /// Unix seconds when the sender sealed the message.
    pub created_at: i64,
    /// Unix seconds after which the relay stops serving and purges the message.
    pub expires_at: i64,
    /// What the ciphertext holds.
    pub content_type: ContentType,
    /// Which way the message travels.
    pub direction: Direction,
}

impl Header {
    /// The canonical 72-byte form, used as associated data.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(HEADER_MAGIC);
        out[4] = self.version;
        out[5..21].copy_from_slice(self.message_id.as_bytes());
        out[21..37].copy_from_slice(self.organisation_id.as_bytes());
        if let Some(recipient) = self.recipient_id {
            out[37] = 1;
            out[38..54].copy_from_slice(recipient.as_bytes());
        }
        out[54..62].copy_from_slice(&self.created_at.to_be_bytes());
        out[62..70].copy_from_slice(&self.expires_at.to_be_bytes());
        out[70] = self.content_type.code();
        out[71] = self.direction.code();
        out
    }

    /// Parses and validates the canonical form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader::new(bytes, "envelope header");
        if reader.take(4)? != HEADER_MAGIC {
            return Err(Error::malformed("envelope header", "bad magic"));
        }
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let message_id = MessageId::from_bytes(reader.array()?);
        let organisation_id = OrganisationId::from_bytes(reader.array()?);
        let flag = reader.u8()?;
        let recipient_bytes: [u8; 16] = reader.array()?;
        let recipient_id = match flag {
            0 if recipient_bytes == [0; 16] => None,
            1 if recipient_bytes != [0; 16] => Some(RecipientId::from_bytes(recipient_bytes)),
            _ => return Err(Error::malformed("envelope header", "bad recipient field")),
        };
        let header = Self {
            version,
            message_id,
            organisation_id,
            recipient_id,
            created_at: reader.i64()?,
            expires_at: reader.i64()?,
            content_type: ContentType::from_code(reader.u8()?)?,
            direction: Direction::from_code(reader.u8()?)?,
        };
        reader.finish()?;
        header.validate()?;
        Ok(header)
    }

    /// Checks the version and that the message expires after it was created.
    pub fn validate(&self) -> Result<(), Error> {
        if self.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(self.version));
        }
        if self.expires_at <= self.created_at {
            return Err(Error::malformed(
                "envelope header",
                "expires_at must be after created_at",
            ));
        }
        Ok(())
    }

    /// Whether the message has expired at `now` (Unix seconds).
    pub const fn is_expired(&self, now: i64) -> bool {
        is_expired(self.expires_at, now)
    }

    fn wrap_label(&self) -> String {
        format!("{WRAP_LABEL_PREFIX}{}", self.message_id)
    }
}

/// The readable content of a message. Wiped on drop, never logged.
#[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Content {
    /// A short subject; may be empty.
    pub subject: String,
    /// The message text.
    pub body: String,
}

impl Content {
    /// Encodes and pads the content (see the module's wire format).
    pub fn to_padded(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let len = 8 + self.subject.len() + self.body.len();
        if len > MAX_CONTENT_LEN {
            return Err(Error::ContentTooLarge {
                size: len,
                max: MAX_CONTENT_LEN,
            });
        }
        let mut padded = Zeroizing::new(Vec::with_capacity(padded_len(len)));
        put_u32_len(&mut padded, len);
        put_u32_len(&mut padded, self.subject.len());
        padded.extend_from_slice(self.subject.as_bytes());
        put_u32_len(&mut padded, self.body.len());
        padded.extend_from_slice(self.body.as_bytes());
        padded.resize(padded_len(len), 0);
        Ok(padded)
    }

    /// Strips padding and decodes; refuses anything not produced by [`Self::to_padded`].
    pub fn from_padded(padded: &[u8]) -> Result<Self, Error> {
        if padded.len() != padded_len(padded.len().saturating_sub(4))
            || padded.len() < MIN_PADDED_LEN
        {
            return Err(Error::malformed("content", "not a padding bucket"));
        }
        let mut reader = Reader::new(padded, "content");
        let len = reader.u32()? as usize;
        if padded_len(len) != padded.len() {
            return Err(Error::malformed("content", "length does not match bucket"));
        }
        let content = reader.take(len)?;
        if reader.rest().iter().any(|&b| b != 0) {
            return Err(Error::malformed("content", "non-zero padding"));
        }
        let mut reader = Reader::new(content, "content");
        let subject_len = reader.u32()? as usize;
        let subject = utf8(reader.take(subject_len)?)?;
        let body_len = reader.u32()? as usize;
        let body = utf8(reader.take(body_len)?)?;
        reader.finish()?;
        Ok(Self { subject, body })
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Content([redacted])")
    }
}

/// Appends a length already checked against [`MAX_CONTENT_LEN`] as a big-endian u32.
fn put_u32_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("lengths are capped at 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
}

fn utf8(bytes: &[u8]) -> Result<String, Error> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Error::malformed("content", "not UTF-8"))
}

/// The padding bucket for `content_len` bytes of encoded content.
pub fn padded_len(content_len: usize) -> usize {
    (content_len + 4).next_power_of_two().max(MIN_PADDED_LEN)
}

/// A message opened by its recipient: the header, which authenticated the ciphertext and so is
/// the sender's (its dates are what the viewer shows), and the content. Wiped on drop.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The authenticated header.
    pub header: Header,
    /// The readable content.
    pub content: Content,
}

/// The per-message AES-256 key. Wiped on drop; leaves the sender only wrapped.
#[derive(Debug)]
pub struct ContentKey(SecretBytes<32>);

impl ContentKey {
    /// A fresh random content key.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// A content key from fixed bytes, for test vectors only.
    #[doc(hidden)]
    pub fn from_bytes_for_vectors(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::new(bytes))
    }

    /// Whether two content keys are equal, in constant time (tests and vector checks).
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(other.0.expose())
    }

    #[cfg(feature = "rsa")]
    fn wrap(
        &self,
        to: &PublicKey,
        header: &Header,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, Error> {
        to.rsa()?
            .encrypt(
                rng,
                Oaep::new_with_label::<Sha256, _>(header.wrap_label()),
                self.0.expose(),
            )
            .map_err(|_| Error::InvalidKey("cannot wrap to this key"))
    }

    /// The content key from a decrypted wrap, whichever backend decrypted it. Anything but 32
    /// bytes is [`Error::DecryptionFailed`].
    fn from_unwrapped(bytes: &[u8]) -> Result<Self, Error> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| Error::DecryptionFailed)?;
        Ok(Self(SecretBytes::new(array)))
    }
}

/// An envelope that passed every check possible without a private key, and the one wrap that
/// a private key must decrypt to open it: the "what" of opening, apart from the "who" (the
/// decrypting backend, see [`WrapKey`]), so that a caller whose backend is asynchronous
/// (WebCrypto in the viewer) decrypts [`Self::wrapped_key`] under [`Self::label`] itself and
/// finishes with [`Self::open`].
#[derive(Debug)]
pub struct Unwrapping<'a> {
    envelope: &'a Envelope,
    wrap: &'a Wrap,
    label: String,
}

impl<'a> Unwrapping<'a> {
    /// The RSA-OAEP ciphertext to decrypt.
    pub fn wrapped_key(&self) -> &'a [u8] {
        &self.wrap.wrapped_key
    }

    /// The OAEP label to decrypt it under (`WRAP_LABEL_PREFIX` and the message id).
    pub fn label(&self) -> &[u8] {
        self.label.as_bytes()
    }

    /// Finishes opening with the decrypted wrap, `unwrapped`, whichever backend produced it:
    /// the content key decrypts and authenticates the ciphertext under the header.
    pub fn open(self, unwrapped: &[u8]) -> Result<Opened, Error> {
        let content_key = ContentKey::from_unwrapped(unwrapped)?;
        Ok(Opened {
            header: self.envelope.header,
            content: self.envelope.decrypt(&content_key)?,
        })
    }

    /// Decrypts the wrap with `key` and finishes opening.
    pub fn open_with(self, key: &impl WrapKey) -> Result<Opened, Error> {
        let unwrapped = key.decrypt_wrap(self.wrapped_key(), self.label())?;
        self.open(&unwrapped)
    }
}

/// Whose key a wrap is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WrapRole {
    /// The sending organisation's key: records, replies, re-wrapping.
    Organisation,
    /// The patient's key.
    Recipient,
}

/// The content key encrypted to one public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Wrap {
    /// Whose key this is for.
    pub role: WrapRole,
    /// Which key: lets each party find its wrap, and the sender's agent check pinned keys.
    pub key_fingerprint: Fingerprint,
    /// RSA-OAEP ciphertext, as long as the key's modulus.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[serde(with = "crate::encoding::b64u")]
    pub wrapped_key: Vec<u8>,
}

/// A sealed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The authenticated public header.
    pub header: Header,
    /// AES-GCM nonce.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[serde(with = "crate::encoding::b64u")]
    pub nonce: Vec<u8>,
    /// AES-GCM ciphertext and tag over the padded content.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[serde(with = "crate::encoding::b64u")]
    pub ciphertext: Vec<u8>,
    /// The content key, wrapped to the organisation and (once enrolled) the recipient.
    pub wraps: Vec<Wrap>,
}

impl Envelope {
    /// Seals `content` under a fresh content key, wrapped to the organisation and, when the
    /// patient is enrolled, to the patient. `recipient` must be given exactly when the header
    /// names a recipient; a header without one makes a first-contact envelope.
    #[cfg(feature = "rsa")]
    pub fn seal(
        header: Header,
        content: &Content,
        organisation: &PublicKey,
        recipient: Option<&PublicKey>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        let content_key = ContentKey::random(rng);
        let nonce = aead::random_nonce(rng);
        Self::seal_with(
            header,
            content,
            &content_key,
            &nonce,
            organisation,
            recipient,
            rng,
        )
    }

    /// Sealing with a given content key and nonce, for test vectors; production code uses
    /// [`Self::seal`], which draws both fresh.
    #[cfg(feature = "rsa")]
    #[doc(hidden)]
    pub fn seal_with(
        header: Header,
        content: &Content,
        content_key: &ContentKey,
        nonce: &[u8; NONCE_LEN],
        organisation: &PublicKey,
        recipient: Option<&PublicKey>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, Error> {
        header.validate()?;
        if header.recipient_id.is_some() != recipient.is_some() {
            return Err(Error::malformed(
                "envelope header",
                "recipient id and recipient key must be given together",
            ));
        }
        let padded = content.to_padded()?;
        let ciphertext = aead::encrypt(content_key.0.expose(), nonce, &header.to_bytes(), &padded);
        let mut wraps = vec![Wrap {
            role: WrapRole::Organisation,
            key_fingerprint: organisation.fingerprint(),
            wrapped_key: content_key.wrap(organisation, &header, rng)?,
        }];
        if let Some(recipient) = recipient {
            wraps.push(Wrap {
                role: WrapRole::Recipient,
                key_fingerprint: recipient.fingerprint(),
                wrapped_key: content_key.wrap(recipient, &header, rng)?,
            });
        }
        Ok(Self {
            header,
            nonce: nonce.to_vec(),
            ciphertext,
            wraps,
        })
    }

    /// Checks everything that can be checked without a key: header, nonce and ciphertext
    /// lengths (a valid padding bucket), and the set of wraps. The relay runs this on submit.
    pub fn validate(&self) -> Result<(), Error> {
        self.header.validate()?;
        if self.nonce.len() != NONCE_LEN {
            return Err(Error::malformed("envelope", "nonce must be 12 bytes"));
        }
        let padded = self.ciphertext.len().checked_sub(TAG_LEN);
        if !padded.is_some_and(|len| {
            (MIN_PADDED_LEN..=MAX_PADDED_LEN).contains(&len) && len.is_power_of_two()
        }) {
            return Err(Error::malformed(
                "envelope",
                "ciphertext is not a padding bucket",
            ));
        }
        let count = |role| self.wraps.iter().filter(|w| w.role == role).count();
        if count(WrapRole::Organisation) != 1 {
            return Err(Error::malformed(
                "envelope",
                "exactly one organisation wrap required",
            ));
        }
        if count(WrapRole::Recipient) > 1 {
            return Err(Error::malformed(
                "envelope",
                "at most one recipient wrap allowed",
            ));
        }
        if self.header.recipient_id.is_some() && count(WrapRole::Recipient) == 0 {
            return Err(Error::malformed(
                "envelope",
                "recipient named but not wrapped to",
            ));
        }
        let wrapped_sizes = (crate::keys::RSA_BITS / 8)..=(crate::keys::RSA_MAX_BITS / 8);
        if self
            .wraps
            .iter()
            .any(|w| !wrapped_sizes.contains(&w.wrapped_key.len()))
        {
            return Err(Error::malformed(
                "envelope",
                "wrapped key has the wrong length",
            ));
        }
        if self.wraps.len() == 2 && self.wraps[0].key_fingerprint == self.wraps[1].key_fingerprint {
            return Err(Error::malformed("envelope", "duplicate wrap key"));
        }
        Ok(())
    }

    /// The wrap for a role, if present.
    pub fn wrap_for(&self, role: WrapRole) -> Option<&Wrap> {
        self.wraps.iter().find(|w| w.role == role)
    }

    /// Opens the envelope with a private key. The patient passes its recipient id (checked
    /// against the header); the organisation passes `None`.
    pub fn open(
        &self,
        key: &impl WrapKey,
        recipient: Option<RecipientId>,
    ) -> Result<Content, Error> {
        let Opened { content, .. } = self
            .unwrapping(key.public_key(), recipient)?
            .open_with(key)?;
        Ok(content)
    }

    /// What must be decrypted to open this envelope with the private key of `key`: checks the
    /// structure and the recipient (the patient passes its id, the organisation `None`), then
    /// picks the wrap for `key`. Only public data is used; the private-key step is the caller's
    /// ([`Unwrapping::open`] or [`Unwrapping::open_with`]).
    pub fn unwrapping(
        &self,
        key: &PublicKey,
        recipient: Option<RecipientId>,
    ) -> Result<Unwrapping<'_>, Error> {
        self.validate()?;
        self.check_recipient(recipient)?;
        let fingerprint = key.fingerprint();
        let wrap = self
            .wraps
            .iter()
            .find(|w| w.key_fingerprint == fingerprint)
            .ok_or(Error::NotAddressedToKey)?;
        Ok(Unwrapping {
            envelope: self,
            wrap,
            label: self.header.wrap_label(),
        })
    }

    /// Opens, as the patient's viewer must, an envelope the relay listed as message `listed`,
    /// at the viewer's own clock `now` (Unix seconds); see [`Self::unwrapping_listed`].
    pub fn open_listed(
        &self,
        listed: MessageId,
        key: &impl WrapKey,
        recipient: RecipientId,
        now: i64,
    ) -> Result<Opened, Error> {
        self.unwrapping_listed(listed, key.public_key(), recipient, now)?
            .open_with(key)
    }

    /// What the patient's viewer must decrypt to open an envelope the relay listed as message
    /// `listed`, at the viewer's own clock `now`. Besides the checks of [`Self::unwrapping`], it
    /// refuses a header that names another message ([`Error::WrongMessage`]: the relay moved
    /// an envelope between messages) and a header that has expired ([`Error::Expired`]: the
    /// relay's list is not trusted to stop serving it). All these checks use public data and
    /// run before any private-key operation; a header that passes them is authenticated only
    /// once decryption succeeds, which is why the result of opening carries it.
    pub fn unwrapping_listed(
        &self,
        listed: MessageId,
        key: &PublicKey,
        recipient: RecipientId,
        now: i64,
    ) -> Result<Unwrapping<'_>, Error> {
        self.validate()?;
        if self.header.message_id != listed {
            return Err(Error::WrongMessage);
        }
        if self.header.is_expired(now) {
            return Err(Error::Expired);
        }
        self.unwrapping(key, Some(recipient))
    }

    /// Opening step 2: a header that names a recipient must name the opening one.
    fn check_recipient(&self, recipient: Option<RecipientId>) -> Result<(), Error> {
        match (self.header.recipient_id, recipient) {
            (Some(named), Some(me)) if named != me => Err(Error::WrongRecipient),
            _ => Ok(()),
        }
    }

    /// Re-wrap for first contact or re-enrollment: the organisation unwraps its own wrap,
    /// checks that the content key really opens this ciphertext (so it never vouches for
    /// substituted bytes), and wraps the key to the recipient's public key.
    #[cfg(feature = "rsa")]
    pub fn rewrap(
        &self,
        organisation: &impl WrapKey,
        recipient: &PublicKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Wrap, Error> {
        let content_key = self.unwrap_with(organisation)?;
        drop(self.decrypt(&content_key)?);
        Ok(Wrap {
            role: WrapRole::Recipient,
            key_fingerprint: recipient.fingerprint(),
            wrapped_key: content_key.wrap(recipient, &self.header, rng)?,
        })
    }

    /// Installs a recipient wrap (from [`Self::rewrap`]), replacing any earlier one.
    pub fn set_recipient_wrap(&mut self, wrap: Wrap) -> Result<(), Error> {
        if wrap.role != WrapRole::Recipient {
            return Err(Error::malformed("wrap", "not a recipient wrap"));
        }
        self.wraps.retain(|w| w.role != WrapRole::Recipient);
        self.wraps.push(wrap);
        self.validate()
    }

    /// Unwraps the content key with `key`, for re-wrapping and for callers that verify vectors.
    pub fn unwrap_with(&self, key: &impl WrapKey) -> Result<ContentKey, Error> {
        let unwrapping = self.unwrapping(key.public_key(), None)?;
        ContentKey::from_unwrapped(&key.decrypt_wrap(unwrapping.wrapped_key(), unwrapping.label())?)
    }

    fn decrypt(&self, content_key: &ContentKey) -> Result<Content, Error> {
        let nonce: &[u8; NONCE_LEN] = self
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::DecryptionFailed)?;
        let padded = aead::decrypt(
            content_key.0.expose(),
            nonce,
            &self.header.to_bytes(),
            &self.ciphertext,
        )?;
        Content::from_padded(&padded).map_err(|_| Error::DecryptionFailed)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rand_core::OsRng;

    use super::*;
    use crate::keys::PrivateKey;

    /// A backend that is not `PrivateKey` itself, and counts its private-key operations: what
    /// the envelope asks of the viewer's WebCrypto key and the agent's AWS-LC key.
    struct Counting<'a> {
        key: &'a PrivateKey,
        calls: Cell<usize>,
    }

    impl WrapKey for Counting<'_> {
        fn public_key(&self) -> &PublicKey {
            self.key.public_key()
        }

        fn decrypt_wrap(&self, wrapped: &[u8], label: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
            self.calls.set(self.calls.get() + 1);
            self.key.decrypt_wrap(wrapped, label)
        }
    }

    fn sealed(organisation: &PrivateKey, patient: &PrivateKey) -> (Envelope, RecipientId) {
        let recipient = RecipientId::random(&mut OsRng);
        let header = Header {
            version: FORMAT_VERSION,
            message_id: MessageId::random(&mut OsRng),
            organisation_id: OrganisationId::random(&mut OsRng),
            recipient_id: Some(recipient),
            created_at: 1_800_000_000,
            expires_at: 1_800_003_600,
            content_type: ContentType::Text,
            direction: Direction::ToRecipient,
        };
        let content = Content {
            subject: "Results".into(),
            body: "All normal.".into(),
        };
        let envelope = Envelope::seal(
            header,
            &content,
            organisation.public_key(),
            Some(patient.public_key()),
            &mut OsRng,
        )
        .unwrap();
        (envelope, recipient)
    }

    /// What to decrypt is the recipient's wrap under the message's label; whoever decrypts it
    /// finishes the opening with the plain bytes (issue 12, finding 12).
    #[test]
    fn any_backend_opens_through_the_unwrapping() {
        let organisation = PrivateKey::generate(&mut OsRng).unwrap();
        let patient = PrivateKey::generate(&mut OsRng).unwrap();
        let (envelope, recipient) = sealed(&organisation, &patient);
        let id = envelope.header.message_id;

        let unwrapping = envelope
            .unwrapping_listed(id, patient.public_key(), recipient, 1_800_000_001)
            .unwrap();
        let wrap = envelope.wrap_for(WrapRole::Recipient).unwrap();
        assert_eq!(unwrapping.wrapped_key(), wrap.wrapped_key.as_slice());
        assert_eq!(
            unwrapping.label(),
            format!("{WRAP_LABEL_PREFIX}{id}").as_bytes()
        );
        let unwrapped = patient
            .decrypt_wrap(unwrapping.wrapped_key(), unwrapping.label())
            .unwrap();
        let opened = unwrapping.open(&unwrapped).unwrap();
        assert_eq!(opened.content.body, "All normal.");
        assert_eq!(opened.header, envelope.header);

        let backend = Counting {
            key: &organisation,
            calls: Cell::new(0),
        };
        assert_eq!(envelope.open(&backend, None).unwrap().subject, "Results");
        envelope
            .rewrap(&backend, patient.public_key(), &mut OsRng)
            .unwrap();
        assert_eq!(backend.calls.get(), 2, "each opening is one backend call");
    }

    #[test]
    fn public_checks_run_before_the_backend_and_bad_unwraps_fail_opaquely() {
        let organisation = PrivateKey::generate(&mut OsRng).unwrap();
        let patient = PrivateKey::generate(&mut OsRng).unwrap();
        let (envelope, recipient) = sealed(&organisation, &patient);
        let backend = Counting {
            key: &patient,
            calls: Cell::new(0),
        };
        let other = MessageId::random(&mut OsRng);
        assert_eq!(
            envelope.open_listed(other, &backend, recipient, 1_800_000_001),
            Err(Error::WrongMessage)
        );
        let id = envelope.header.message_id;
        assert_eq!(
            envelope.open_listed(id, &backend, recipient, 1_800_003_600),
            Err(Error::Expired)
        );
        assert_eq!(backend.calls.get(), 0);

        let unwrapping = || {
            envelope
                .unwrapping(patient.public_key(), Some(recipient))
                .unwrap()
        };
        assert_eq!(
            unwrapping().open(&[7; 31]).err(),
            Some(Error::DecryptionFailed)
        );
        assert_eq!(
            unwrapping().open(&[7; 32]).err(),
            Some(Error::DecryptionFailed)
        );
    }
}
