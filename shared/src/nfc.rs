//! Unicode Normalization Form C (UAX #15) of passwords and passphrases, from the
//! `unicode-normalization` crate's canonical building blocks: full canonical decomposition,
//! canonical combining classes and primary composition.
//!
//! Why not the crate's `nfc()` iterator: it shares one decomposition iterator with NFKD, which
//! picks its table at run time, so every build that normalises links the compatibility tables
//! too (about 60 KB of the viewer's WebAssembly, a fifth of its download). This module only
//! reaches the canonical tables. It is the textbook algorithm (decompose, order marks
//! canonically, compose unblocked pairs) and is checked against the crate's `nfc()` on every
//! code point and on random strings (the tests below), so it normalises exactly as before.
//!
//! Every intermediate buffer holds password characters: each is allocated at its final size,
//! so no reallocation leaves a copy behind, and wiped on drop.

use unicode_normalization::char::{canonical_combining_class, compose, decompose_canonical};
use zeroize::Zeroizing;

/// The NFC form of `text`, in a buffer wiped on drop.
pub(crate) fn nfc(text: &str) -> Zeroizing<String> {
    let mut decomposed_len = 0;
    for c in text.chars() {
        decompose_canonical(c, |_| decomposed_len += 1);
    }
    // Canonical decomposition with canonical ordering: each non-starter moves before the
    // non-starters of a higher combining class in its run (a stable sort by class).
    let mut chars: Zeroizing<Vec<(u8, char)>> = Zeroizing::new(Vec::with_capacity(decomposed_len));
    for c in text.chars() {
        decompose_canonical(c, |d| {
            let class = canonical_combining_class(d);
            let mut at = chars.len();
            while class != 0 && at > 0 && chars[at - 1].0 > class {
                at -= 1;
            }
            chars.insert(at, (class, d));
        });
    }
    // Canonical composition, in place: `chars[..kept]` is the output so far and `starter` the
    // index in it of the last starter. A character is blocked from that starter if a character
    // between them is a starter or has a class at least its own; between them are only
    // non-starters, in canonical order, so the last one kept decides.
    let mut kept = 0;
    let mut starter: Option<usize> = None;
    for i in 0..chars.len() {
        let (class, c) = chars[i];
        if let Some(s) = starter {
            let unblocked = kept == s + 1 || chars[kept - 1].0 < class;
            if unblocked && let Some(composed) = compose(chars[s].1, c) {
                chars[s].1 = composed;
                continue;
            }
        }
        if class == 0 {
            starter = Some(kept);
        }
        chars[kept] = (class, c);
        kept += 1;
    }
    let mut out = String::with_capacity(chars[..kept].iter().map(|(_, c)| c.len_utf8()).sum());
    for (_, c) in &chars[..kept] {
        out.push(*c);
    }
    Zeroizing::new(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    use super::nfc;

    fn crate_nfc(text: &str) -> String {
        text.nfc().collect()
    }

    #[test]
    fn every_code_point_normalises_as_the_crate_does() {
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let text = c.to_string();
            assert_eq!(*nfc(&text), crate_nfc(&text), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn known_forms() {
        // NFD "é" composes; the Angstrom sign is a singleton; Hangul jamo compose
        // algorithmically; marks reorder by class; a blocked mark stays apart.
        for (typed, expected) in [
            ("Contrase\u{6e}\u{303}a-2026", "Contrase\u{f1}a-2026"),
            ("\u{212b}", "\u{c5}"),
            ("\u{1100}\u{1161}\u{11a8}", "\u{ac01}"),
            ("a\u{323}\u{302}", "\u{1ead}"),
            ("a\u{302}\u{323}", "\u{1ead}"),
            ("\u{1e0b}\u{323}", "\u{1e0d}\u{307}"),
            ("\u{301}a", "\u{301}a"),
            ("", ""),
        ] {
            assert_eq!(*nfc(typed), expected, "{typed:?}");
            assert_eq!(crate_nfc(typed), expected, "{typed:?}");
        }
    }

    /// Characters where normalisation does something: Latin with marks, combining marks of
    /// several classes, Greek, Hangul jamo and syllables, Indic and Tibetan vowels,
    /// compatibility ideographs, composition exclusions, and plain ASCII.
    fn interesting() -> impl Strategy<Value = char> {
        prop_oneof![
            (0x20u32..0x7f),
            (0xc0u32..0x250),
            (0x300u32..0x370),
            (0x370u32..0x400),
            (0x591u32..0x5c8),
            (0x93cu32..0x94e),
            (0x9bcu32..0x9d8),
            (0xf71u32..0xf82),
            (0x1100u32..0x1200),
            (0x1e00u32..0x2000),
            (0x20d0u32..0x20f1),
            (0x2126u32..0x212c),
            (0x3099u32..0x309d),
            (0xac00u32..0xac40),
            (0xf900u32..0xfb50),
            (0x1d15eu32..0x1d1c1),
            (0x11099u32..0x110bb),
        ]
        .prop_filter_map("a scalar value", char::from_u32)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn strings_normalise_as_the_crate_does(text in prop::collection::vec(interesting(), 0..12)) {
            let text: String = text.into_iter().collect();
            let (ours, theirs) = (nfc(&text), crate_nfc(&text));
            prop_assert_eq!(ours.as_str(), theirs.as_str());
        }
    }
}
