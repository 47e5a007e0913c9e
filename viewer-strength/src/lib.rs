//! The viewer's password-strength estimate: zxcvbn (Dropbox's estimator, in its Rust port),
//! which knows common passwords, names, words, keyboard patterns, dates and repeats, rather
//! than rules about character classes.
//!
//! It runs in a web worker of its own (`src/main.rs`) because its dictionaries make it about
//! three times the size of the whole viewer: only a patient who sets a password downloads it,
//! and typing stays responsive while it works. The viewer decides what each score means
//! (`viewer/src/strength.rs`).
//!
//! # Messages
//! ```text
//! viewer -> worker   {"id": <number>, "password": <string>, "inputs": [<string>, ...]}
//! worker -> viewer   {"id": <number>, "score": 0..=4}
//! ```
//! `inputs` are words the page knows the password should not be built from (the sender's name),
//! as written: zxcvbn compares them lowercased.

/// zxcvbn's score, 0 (guessable within 10^3 guesses) to 4 (more than 10^10), for `password`
/// given words that are easy to guess in this context.
pub fn score(password: &str, inputs: &[&str]) -> u8 {
    if password.is_empty() {
        return 0;
    }
    zxcvbn::zxcvbn(password, inputs).score() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_patterned_passwords_score_low() {
        for weak in [
            "password1234",
            "qwertyuiop12",
            "1234567890",
            "aaaaaaaaaaaa",
            "Password2024!",
        ] {
            assert!(score(weak, &[]) <= 2, "{weak}: {}", score(weak, &[]));
        }
    }

    #[test]
    fn long_unpredictable_passwords_score_high() {
        for strong in [
            "Maple syrup 2026!",
            "tulip orbit canyon walrus",
            "x7#Qm!pL2vR9",
        ] {
            assert!(score(strong, &[]) >= 3, "{strong}: {}", score(strong, &[]));
        }
    }

    #[test]
    fn the_senders_name_counts_as_guessable() {
        let alone = score("riversideclinic", &[]);
        let known = score(
            "riversideclinic",
            &["Riverside Clinic", "riverside", "clinic"],
        );
        assert!(known <= alone, "{known} > {alone}");
        assert!(known <= 2, "{known}");
        assert_eq!(score("", &[]), 0);
    }
}
