//! Verifying an exported audit log on the organisation's side, without trusting the relay.
//!
//! The relay's log is a per-organisation hash chain (`shared::audit`). A full export is checked
//! from its genesis; then, if an earlier verification left an **anchor** (the last event it
//! verified), the export must contain that exact event at its position and continue from it
//! ([`shared::audit::verify_continuation`]). A relay that rewrites history must recompute every
//! later hash, which makes a consistent chain, but not one that contains the anchor: the
//! rewrite is detected. A log cut short before the anchor is detected too.
//!
//! # Wire format
//! `audit-anchor.json` in the state directory is one audit event in its JSON form.
//!
//! # Invariants
//! - The anchor only moves forward, and only after a log verified completely.
//! - A log of another organisation is refused even if it verifies.

use serde::Serialize;
use shared::audit::{AuditEvent, from_json_lines, verify_chain, verify_continuation};
use shared::ids::OrganisationId;

use crate::Error;
use crate::state::{StateDir, read_json, write_json};

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Number of events checked.
    pub events: usize,
    /// Sequence number of the last event, if any.
    pub last_seq: Option<u64>,
    /// Hash of the last event (hex), if any.
    pub head: Option<String>,
    /// Sequence number of the anchor the log was checked against, if one existed.
    pub anchored_at: Option<u64>,
}

/// Verifies a complete log (JSON lines) of `organisation` against the chain and, if given,
/// against `anchor`.
pub fn verify_log(
    text: &str,
    organisation: OrganisationId,
    anchor: Option<&AuditEvent>,
) -> Result<(Vec<AuditEvent>, Verified), Error> {
    let events = from_json_lines(text).map_err(|e| Error::AuditVerification(e.to_string()))?;
    verify_events(&events, organisation, anchor)?;
    let verified = Verified {
        events: events.len(),
        last_seq: events.last().map(|e| e.seq),
        head: events.last().map(|e| hex::encode(e.hash)),
        anchored_at: anchor.map(|a| a.seq),
    };
    Ok((events, verified))
}

/// [`verify_log`] on parsed events.
pub fn verify_events(
    events: &[AuditEvent],
    organisation: OrganisationId,
    anchor: Option<&AuditEvent>,
) -> Result<(), Error> {
    let fail = |reason: String| Error::AuditVerification(reason);
    if let Some(first) = events.first()
        && first.organisation_id != organisation
    {
        return Err(fail(format!(
            "the log belongs to organisation {}, not {organisation}",
            first.organisation_id
        )));
    }
    verify_chain(events).map_err(|e| fail(e.to_string()))?;
    let Some(anchor) = anchor else {
        return Ok(());
    };
    if anchor.organisation_id != organisation {
        return Err(fail("the stored anchor is for another organisation".into()));
    }
    let position = usize::try_from(anchor.seq)
        .ok()
        .and_then(|seq| seq.checked_sub(1))
        .ok_or_else(|| fail("the stored anchor is invalid".into()))?;
    match events.get(position) {
        None => Err(fail(format!(
            "the log ends before event {} that was verified earlier: events were removed",
            anchor.seq
        ))),
        Some(event) if event != anchor => Err(fail(format!(
            "event {} differs from the one verified earlier: the log was rewritten",
            anchor.seq
        ))),
        Some(_) => verify_continuation(anchor, &events[position + 1..])
            .map_err(|e| fail(format!("after the anchor: {e}"))),
    }
}

/// The anchor stored in a state directory.
#[derive(Debug, Clone)]
pub struct AnchorStore {
    state: StateDir,
}

impl AnchorStore {
    /// The anchor file of `state`.
    pub fn new(state: &StateDir) -> Self {
        Self {
            state: state.clone(),
        }
    }

    /// The last verified event, if any.
    pub fn load(&self) -> Result<Option<AuditEvent>, Error> {
        read_json(&self.state.audit_anchor_file())
    }

    /// Moves the anchor to the last of `events`, which must have verified against the current
    /// anchor. Never moves it backwards.
    pub fn advance(&self, events: &[AuditEvent]) -> Result<(), Error> {
        let _lock = self.state.lock("audit-anchor")?;
        let Some(last) = events.last() else {
            return Ok(());
        };
        if self.load()?.is_some_and(|anchor| anchor.seq >= last.seq) {
            return Ok(());
        }
        write_json(&self.state.audit_anchor_file(), last)
    }
}

#[cfg(test)]
mod tests {
    use shared::audit::{AuditKind, to_json_lines};

    use super::*;

    fn org() -> OrganisationId {
        OrganisationId::from_bytes([5; 16])
    }

    fn log(n: usize) -> Vec<AuditEvent> {
        let mut events = vec![
            AuditEvent::first(org(), 1_000, AuditKind::ApiKeyCreated, None, None, "key=1").unwrap(),
        ];
        while events.len() < n {
            let next = events
                .last()
                .unwrap()
                .next(1_001, AuditKind::Read, None, None, "")
                .unwrap();
            events.push(next);
        }
        events
    }

    #[test]
    fn chain_and_anchor_checks() {
        let events = log(5);
        let text = to_json_lines(&events);
        let (_, verified) = verify_log(&text, org(), None).unwrap();
        assert_eq!((verified.events, verified.last_seq), (5, Some(5)));
        assert!(verify_log(&text, OrganisationId::from_bytes([6; 16]), None).is_err());

        let anchor = events[2].clone();
        verify_log(&text, org(), Some(&anchor)).unwrap();
        // Cut short before the anchor.
        assert!(verify_log(&to_json_lines(&events[..2]), org(), Some(&anchor)).is_err());
        // Rewritten: a consistent chain with different history.
        let mut rewritten = vec![
            AuditEvent::first(org(), 999, AuditKind::ApiKeyCreated, None, None, "key=1").unwrap(),
        ];
        for _ in 1..5 {
            let next = rewritten
                .last()
                .unwrap()
                .next(1_001, AuditKind::Read, None, None, "")
                .unwrap();
            rewritten.push(next);
        }
        verify_chain(&rewritten).unwrap();
        let error = verify_events(&rewritten, org(), Some(&anchor)).unwrap_err();
        assert!(error.to_string().contains("rewritten"), "{error}");
        // Tampered: one detail changed.
        let tampered = text.replacen("key=1", "key=2", 1);
        assert!(verify_log(&tampered, org(), None).is_err());
    }
}
