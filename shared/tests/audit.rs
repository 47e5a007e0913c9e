//! The audit log as the sender tooling sees it: an exported JSON-lines log verifies on its own,
//! and any change to any event (a field, its position, its presence) is caught. The known-answer
//! test rebuilds the canonical form from the layout documented in `shared::audit`, with `sha2`
//! directly, so the documentation and the code cannot drift apart.

use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::audit::{
    AuditEvent, AuditKind, ChainError, MAX_DETAIL_LEN, from_json_lines, genesis_hash,
    to_json_lines, validate_detail, verify_chain, verify_continuation,
};
use shared::ids::{MessageId, OrganisationId, RecipientId};

fn org() -> OrganisationId {
    OrganisationId::from_bytes([0xa1; 16])
}

fn other_org() -> OrganisationId {
    OrganisationId::from_bytes([0xb2; 16])
}

fn message(n: u8) -> MessageId {
    MessageId::from_bytes([n; 16])
}

fn recipient(n: u8) -> RecipientId {
    RecipientId::from_bytes([n; 16])
}

/// A message's life, with and without ids and details.
fn log_of(organisation: OrganisationId) -> Vec<AuditEvent> {
    let steps: [(AuditKind, Option<MessageId>, Option<RecipientId>, &str); 9] = [
        (AuditKind::OrganisationKeyRegistered, None, None, ""),
        (AuditKind::ApiKeyCreated, None, None, "label=ehr"),
        (AuditKind::MessageCreated, Some(message(1)), None, ""),
        (
            AuditKind::SmsQueued,
            Some(message(1)),
            Some(recipient(2)),
            "",
        ),
        (
            AuditKind::SmsDelivered,
            Some(message(1)),
            Some(recipient(2)),
            "provider=twilio",
        ),
        (
            AuditKind::UnlockFailed,
            Some(message(1)),
            Some(recipient(2)),
            "attempts=1",
        ),
        (
            AuditKind::Unlocked,
            Some(message(1)),
            Some(recipient(2)),
            "",
        ),
        (AuditKind::Read, Some(message(1)), Some(recipient(2)), ""),
        (AuditKind::SessionRevoked, None, Some(recipient(2)), ""),
    ];
    let mut events: Vec<AuditEvent> = Vec::new();
    for (i, (kind, message, recipient, detail)) in steps.into_iter().enumerate() {
        let at = 1_700_000_000 + 60 * i64::try_from(i).unwrap();
        let event = match events.last() {
            None => AuditEvent::first(organisation, at, kind, message, recipient, detail),
            Some(prev) => prev.next(at, kind, message, recipient, detail),
        }
        .unwrap();
        events.push(event);
    }
    events
}

fn log() -> Vec<AuditEvent> {
    log_of(org())
}

/// The seq a verification error points at.
fn fault(error: &ChainError) -> u64 {
    match *error {
        ChainError::UnexpectedSeq { expected, .. } => expected,
        ChainError::WrongOrganisation { seq }
        | ChainError::PrevHashMismatch { seq }
        | ChainError::HashMismatch { seq }
        | ChainError::InvalidEvent { seq, .. } => seq,
        _ => unreachable!("no other variant exists"),
    }
}

#[test]
fn a_log_verifies_whole_and_in_pages() {
    let events = log();
    verify_chain(&events).unwrap();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, u64::try_from(i).unwrap() + 1);
        verify_continuation(event, &events[i + 1..]).unwrap();
        verify_chain(&events[..=i]).unwrap();
    }
    assert_eq!(events[0].prev_hash, genesis_hash(&org()));
    verify_chain(&[]).unwrap();
}

/// Every way to alter one field of one event, applied to every event.
#[test]
fn altering_any_field_of_any_event_is_detected() {
    type Alteration = (&'static str, fn(&mut AuditEvent));
    let alterations: [Alteration; 14] = [
        ("organisation", |e| e.organisation_id = other_org()),
        ("seq up", |e| e.seq += 1),
        ("seq down", |e| e.seq -= 1),
        ("at", |e| e.at += 1),
        ("kind", |e| {
            e.kind = if e.kind == AuditKind::Read {
                AuditKind::Revoked
            } else {
                AuditKind::Read
            }
        }),
        ("message id", |e| {
            e.message_id = match e.message_id {
                Some(_) => None,
                None => Some(message(9)),
            }
        }),
        ("message id value", |e| e.message_id = Some(message(8))),
        ("recipient id", |e| {
            e.recipient_id = match e.recipient_id {
                Some(_) => None,
                None => Some(recipient(9)),
            }
        }),
        ("recipient id value", |e| {
            e.recipient_id = Some(recipient(8))
        }),
        ("detail", |e| e.detail.push('x')),
        ("detail emptied or set", |e| {
            e.detail = if e.detail.is_empty() {
                "attempts=9".to_owned()
            } else {
                String::new()
            }
        }),
        ("prev_hash", |e| e.prev_hash[31] ^= 1),
        ("hash", |e| e.hash[0] ^= 0x80),
        ("invalid detail", |e| e.detail = "caf\u{e9}".to_owned()),
    ];
    let events = log();
    for index in 0..events.len() {
        for (name, alter) in &alterations {
            let mut altered = events.clone();
            alter(&mut altered[index]);
            if altered[index] == events[index] {
                continue; // e.g. a message id set to the value it already had
            }
            let error = verify_chain(&altered)
                .expect_err(&format!("{name} of event {} not detected", index + 1));
            assert_eq!(
                fault(&error),
                u64::try_from(index).unwrap() + 1,
                "{name} of event {}: {error}",
                index + 1
            );
        }
    }
}

#[test]
fn recomputing_the_altered_event_hash_breaks_the_next_link() {
    let mut events = log();
    events[3].detail = "provider=other".to_owned();
    events[3].hash = events[3].compute_hash().unwrap();
    assert_eq!(
        verify_chain(&events),
        Err(ChainError::PrevHashMismatch { seq: 5 })
    );
}

#[test]
fn rewriting_history_is_caught_by_a_kept_anchor() {
    let original = log();
    let anchor = original[5].clone(); // kept from an earlier export
    // The relay rewrites event 4 and everything after it, consistently.
    let mut rewritten = original[..3].to_vec();
    let mut prev = rewritten[2].clone();
    for event in &original[3..] {
        let detail = if event.seq == 4 { "forged=1" } else { "" };
        prev = prev
            .next(
                event.at,
                event.kind,
                event.message_id,
                event.recipient_id,
                detail,
            )
            .unwrap();
        rewritten.push(prev.clone());
    }
    verify_chain(&rewritten).unwrap(); // internally consistent ...
    assert_eq!(
        verify_continuation(&anchor, &rewritten[6..]),
        Err(ChainError::PrevHashMismatch { seq: 7 })
    ); // ... but not a continuation of what the sender already holds.

    let mut bad_anchor = anchor.clone();
    bad_anchor.at += 1;
    assert_eq!(
        verify_continuation(&bad_anchor, &original[6..]),
        Err(ChainError::HashMismatch { seq: 6 })
    );
    assert_eq!(
        verify_continuation(&anchor, &original[7..]),
        Err(ChainError::UnexpectedSeq {
            expected: 7,
            found: 8
        })
    );
    assert_eq!(
        verify_continuation(&log_of(other_org())[5], &original[6..]),
        Err(ChainError::WrongOrganisation { seq: 7 })
    );
}

#[test]
fn deleting_reordering_or_inserting_events_is_detected() {
    let events = log();
    let last = events.len() - 1;

    for index in 0..last {
        let mut deleted = events.clone();
        deleted.remove(index);
        assert!(
            matches!(
                verify_chain(&deleted),
                Err(ChainError::UnexpectedSeq { .. })
            ),
            "deleting event {}",
            index + 1
        );
    }
    // A log cut after its last event is indistinguishable from a shorter log: the module
    // documentation says so, and this pins that limitation down.
    verify_chain(&events[..last]).unwrap();

    for index in 0..last {
        let mut swapped = events.clone();
        swapped.swap(index, index + 1);
        assert!(verify_chain(&swapped).is_err(), "swapping {}", index + 1);
    }
    let mut reversed = events.clone();
    reversed.reverse();
    assert!(verify_chain(&reversed).is_err());

    let mut duplicated = events.clone();
    duplicated.insert(4, events[4].clone());
    assert_eq!(
        verify_chain(&duplicated),
        Err(ChainError::UnexpectedSeq {
            expected: 6,
            found: 5
        })
    );

    // A well-formed extra event forged after event 4, renumbering nothing.
    let forged = events[3]
        .next(events[3].at, AuditKind::Revoked, Some(message(1)), None, "")
        .unwrap();
    let mut inserted = events.clone();
    inserted.insert(4, forged.clone());
    assert_eq!(
        verify_chain(&inserted),
        Err(ChainError::UnexpectedSeq {
            expected: 6,
            found: 5
        })
    );
    // ... or renumbering the rest without recomputing their hashes.
    for event in &mut inserted[5..] {
        event.seq += 1;
    }
    assert_eq!(
        verify_chain(&inserted),
        Err(ChainError::PrevHashMismatch { seq: 6 })
    );

    // Another organisation's event at the right position.
    let mut spliced = events.clone();
    spliced[4] = log_of(other_org())[4].clone();
    assert_eq!(
        verify_chain(&spliced),
        Err(ChainError::WrongOrganisation { seq: 5 })
    );
    // Another organisation's whole log cannot pass for this one from event 1 on either.
    let mut relabelled = log_of(other_org());
    for event in &mut relabelled {
        event.organisation_id = org();
    }
    assert_eq!(
        verify_chain(&relabelled),
        Err(ChainError::PrevHashMismatch { seq: 1 })
    );
    assert!(matches!(
        verify_chain(&events[1..]),
        Err(ChainError::UnexpectedSeq {
            expected: 1,
            found: 2
        })
    ));
}

#[test]
fn json_lines_round_trip() {
    let events = log();
    let text = to_json_lines(&events);
    assert_eq!(text.lines().count(), events.len());
    assert!(text.ends_with('\n'));
    for (line, event) in text.lines().zip(&events) {
        assert_eq!(line, serde_json::to_string(event).unwrap());
        assert_eq!(&serde_json::from_str::<AuditEvent>(line).unwrap(), event);
    }
    let read = from_json_lines(&text).unwrap();
    assert_eq!(read, events);
    verify_chain(&read).unwrap();

    // Blank lines and CRLF line ends are tolerated.
    let spaced = format!("\n{}\r\n  \n", text.replace('\n', "\r\n\n"));
    assert_eq!(from_json_lines(&spaced).unwrap(), events);
    assert_eq!(to_json_lines(&[]), "");
    assert!(from_json_lines("").unwrap().is_empty());

    // The JSON shape is what the module documents.
    let value: Value = serde_json::from_str(text.lines().nth(4).unwrap()).unwrap();
    assert_eq!(value["organisation_id"], org().to_string());
    assert_eq!(value["seq"], 5);
    assert_eq!(value["kind"], "sms_delivered");
    assert_eq!(value["detail"], "provider=twilio");
    assert_eq!(value["hash"], hex::encode(events[4].hash));
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["message_id"], Value::Null);
    assert_eq!(first["recipient_id"], Value::Null);
}

/// Alters the exported text, as someone editing the file would, and reads it back.
#[test]
fn altering_an_exported_line_is_detected() {
    let events = log();
    let text = to_json_lines(&events);
    let edits: [(&str, Value); 9] = [
        ("organisation_id", Value::from(other_org().to_string())),
        ("seq", Value::from(9)),
        ("at", Value::from(1)),
        ("kind", Value::from("revoked")),
        ("message_id", Value::from(message(7).to_string())),
        ("recipient_id", Value::Null),
        ("detail", Value::from("attempts=2")),
        ("prev_hash", Value::from(hex::encode([0u8; 32]))),
        ("hash", Value::from(hex::encode([0u8; 32]))),
    ];
    for (field, replacement) in edits {
        let mut lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        lines[5][field] = replacement;
        let edited: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let read = from_json_lines(&edited).unwrap();
        let error = verify_chain(&read).expect_err(field);
        assert_eq!(fault(&error), 6, "{field}: {error}");
    }
}

#[test]
fn malformed_lines_are_refused_with_their_line_number() {
    let text = to_json_lines(&log());
    let line3 = text.lines().nth(2).unwrap();
    let cases = [
        line3.replace("\"detail\":\"\"", "\"detail\":\"caf\u{e9}\""),
        line3.replace("\"detail\":\"\"", "\"detail\":\"a\\nb\""),
        line3.replace(
            "\"detail\":\"\"",
            &format!("\"detail\":\"{}\"", "x".repeat(201)),
        ),
        line3.replace(
            "\"kind\":\"message_created\"",
            "\"kind\":\"MessageCreated\"",
        ),
        line3.replace("\"seq\":3", "\"seq\":-3"),
        line3.replace("\"seq\":3", "\"seq\":\"3\""),
        line3.replace('}', ",\"phone\":\"+15551234567\"}"),
        line3.replace(
            ",\"hash\"",
            &format!(",\"hash\":\"{}\",\"hash\"", "0".repeat(64)),
        ),
        line3.replace("\"hash\":\"", "\"hash\":\"A"),
        line3.replace("\"organisation_id\":\"", "\"organisation_id\":\"x"),
        line3.replace(",\"detail\":\"\"", ""),
        line3.replace('{', "[").replace('}', "]"),
        line3.replace('}', "} {}"),
    ];
    for case in cases {
        assert_ne!(case, line3);
        let error = from_json_lines(&format!("{}\n\n{case}\n", text.lines().next().unwrap()))
            .expect_err(&case);
        assert_eq!(error.line, 3, "{case}: {error}");
    }
    let upper = hex::encode(log()[2].hash).to_uppercase();
    let case = line3.replace(&hex::encode(log()[2].hash), &upper);
    assert!(from_json_lines(&case).is_err(), "uppercase hex refused");
}

/// The canonical form, rebuilt here from the module documentation's table.
fn documented_hash(event: &AuditEvent) -> [u8; 32] {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"STXA");
    bytes.push(0x01);
    bytes.extend_from_slice(event.organisation_id.as_bytes());
    bytes.extend_from_slice(&event.seq.to_be_bytes());
    bytes.extend_from_slice(&event.at.to_be_bytes());
    let kind = serde_json::to_value(event.kind).unwrap();
    let kind = kind.as_str().unwrap().as_bytes();
    bytes.push(u8::try_from(kind.len()).unwrap());
    bytes.extend_from_slice(kind);
    match event.message_id {
        Some(id) => {
            bytes.push(1);
            bytes.extend_from_slice(id.as_bytes());
        }
        None => bytes.extend_from_slice(&[0; 17]),
    }
    match event.recipient_id {
        Some(id) => {
            bytes.push(1);
            bytes.extend_from_slice(id.as_bytes());
        }
        None => bytes.extend_from_slice(&[0; 17]),
    }
    bytes.extend_from_slice(&u16::try_from(event.detail.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(event.detail.as_bytes());
    bytes.extend_from_slice(&event.prev_hash);
    assert_eq!(bytes.len(), 106 + kind.len() + event.detail.len());
    assert_eq!(event.canonical_bytes().unwrap(), bytes);
    Sha256::digest(&bytes).into()
}

#[test]
fn known_answer() {
    let mut genesis = Sha256::new();
    genesis.update(b"securetext/v1/audit-genesis");
    genesis.update([0xa1; 16]);
    let genesis: [u8; 32] = genesis.finalize().into();
    assert_eq!(genesis_hash(&org()), genesis);

    let events = log();
    let mut prev = genesis;
    for event in &events {
        assert_eq!(event.prev_hash, prev);
        assert_eq!(event.hash, documented_hash(event), "event {}", event.seq);
        prev = event.hash;
    }

    // One fixed event, fully spelled out.
    let event = AuditEvent::first(
        org(),
        1_700_000_000,
        AuditKind::SmsFailed,
        Some(message(0x42)),
        None,
        "code=30003",
    )
    .unwrap();
    let mut expected = Sha256::new();
    expected.update(b"STXA\x01");
    expected.update([0xa1; 16]);
    expected.update(1u64.to_be_bytes());
    expected.update(1_700_000_000i64.to_be_bytes());
    expected.update(b"\x0asms_failed");
    expected.update([1]);
    expected.update([0x42; 16]);
    expected.update([0; 17]);
    expected.update(b"\x00\x0acode=30003");
    expected.update(genesis);
    assert_eq!(event.hash, <[u8; 32]>::from(expected.finalize()));
}

#[test]
fn detail_is_short_printable_ascii() {
    for good in [
        "",
        "attempts=3",
        "provider=twilio code=30003",
        "~!@#$%^&*()",
    ] {
        validate_detail(good).unwrap();
    }
    validate_detail(&"a".repeat(MAX_DETAIL_LEN)).unwrap();
    let first = &log()[0];
    for bad in [
        "a".repeat(MAX_DETAIL_LEN + 1),
        "two\nlines".to_owned(),
        "tab\t".to_owned(),
        "\u{7f}".to_owned(),
        "\u{e9}".to_owned(),
        "\u{202e}reversed".to_owned(),
    ] {
        assert!(validate_detail(&bad).is_err(), "{bad:?}");
        assert!(
            first
                .next(0, AuditKind::Read, None, None, bad.clone())
                .is_err()
        );
        assert!(AuditEvent::first(org(), 0, AuditKind::Read, None, None, bad).is_err());
    }
}

#[test]
fn kinds_have_their_documented_names() {
    let names = [
        "message_created",
        "sms_queued",
        "sms_sent",
        "sms_delivered",
        "sms_failed",
        "link_opened",
        "unlock_failed",
        "unlocked",
        "read",
        "revoked",
        "expired",
        "session_revoked",
        "enrolled",
        "key_reset",
        "rewrapped",
        "organisation_key_registered",
        "api_key_created",
        "api_key_revoked",
        "open_failed",
        "lockout_cleared",
        "enrollment_check_failed",
        "enrollment_verified",
        "password_disowned",
    ];
    assert_eq!(AuditKind::ALL.len(), names.len());
    for (kind, name) in AuditKind::ALL.into_iter().zip(names) {
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<AuditKind>().unwrap(), kind);
        assert_eq!(serde_json::to_value(kind).unwrap(), name);
    }
    assert!("unknown".parse::<AuditKind>().is_err());
}
