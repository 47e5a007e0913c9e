//! Transport encodings: base64url for bytes in JSON, and the readers used by canonical decoders.
//!
//! # Wire format
//! Every byte string in the JSON transport form is base64url (RFC 4648 §5) **without** padding.
//! Decoders reject padding, the standard alphabet and non-canonical trailing bits, so each value
//! has exactly one textual form.
//!
//! # Invariants
//! - Canonical binary forms (what is authenticated) never depend on JSON: JSON carries the same
//!   fields, and the binary form is rebuilt from the typed values.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::Error;

/// Encodes bytes as unpadded base64url.
pub fn b64u_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url; `what` names the field in the error.
pub fn b64u_decode(text: &str, what: &'static str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Error::malformed(what, "not unpadded base64url"))
}

/// Decodes unpadded base64url into exactly `N` bytes.
pub fn b64u_decode_array<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], Error> {
    b64u_decode(text, what)?
        .try_into()
        .map_err(|_| Error::malformed(what, "wrong length"))
}

/// Serde adapter: `Vec<u8>` as unpadded base64url (`#[serde(with = "shared::encoding::b64u")]`).
pub mod b64u {
    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Serializes bytes as unpadded base64url.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::b64u_encode(bytes))
    }

    /// Deserializes unpadded base64url into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::b64u_decode(&text, "base64url field").map_err(de::Error::custom)
    }
}

/// A cursor over a canonical byte string that refuses to read past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::malformed(self.what, "truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::malformed(self.what, "trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_is_unpadded_and_strict() {
        assert_eq!(b64u_encode([0xfb, 0xff]), "-_8");
        assert_eq!(b64u_decode("-_8", "x").unwrap(), vec![0xfb, 0xff]);
        assert!(b64u_decode("-_8=", "x").is_err(), "padding refused");
        assert!(
            b64u_decode("+/8", "x").is_err(),
            "standard alphabet refused"
        );
        assert!(
            b64u_decode("-_9", "x").is_err(),
            "non-canonical trailing bits refused"
        );
        assert!(
            b64u_decode_array::<3>("-_8", "x").is_err(),
            "length checked"
        );
    }

    #[test]
    fn reader_refuses_truncation_and_trailing_bytes() {
        let mut reader = Reader::new(&[0, 0, 0, 1, 9], "t");
        assert_eq!(reader.u32().unwrap(), 1);
        assert!(Reader::new(&[1, 2], "t").u32().is_err());
        assert!(reader.finish().is_err());
    }
}
