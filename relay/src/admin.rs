//! Operator commands (`relay org …`, `relay api-key …`, `relay patient …`, `relay audit …`)
//! and the start-up steps they share with `relay serve`: opening the store and the data key.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rand_core::OsRng;
use shared::at_rest::DataKey;
use shared::audit::{AuditEvent, AuditKind};
use shared::ids::{OrganisationId, RecipientId};
use shared::phone::PhoneNumber;
use shared::token::{Token, TokenKind};

use crate::config::{Secret, StorageArgs};
use crate::store::audit::{self, Record};
use crate::store::throttle::Counter;
use crate::store::{Backend, Store, StoreError, Tx, devices, messages, orgs, recipients, sessions};

/// Why an operator command or start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data key is missing or unreadable.
    #[error("data key: {0}")]
    DataKey(String),
    /// An argument is not acceptable; names the flag.
    #[error("--{flag}: {reason}")]
    Input {
        /// The flag, without dashes.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// The thing the command names does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// The command does not apply to the current state.
    #[error("{0}")]
    NotApplicable(&'static str),
}

impl AdminError {
    fn input(flag: &'static str, reason: impl ToString) -> Self {
        Self::Input {
            flag,
            reason: reason.to_string(),
        }
    }
}

/// Where the SQLite relay keeps its generated data key: beside the database file.
fn default_key_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(format!("{path}.key")))
}

/// The environment variable that may hold the data key itself (the binary reads it; there is
/// no flag, because a command line is readable by every local user).
pub const DATA_KEY_VARIABLE: &str = "RELAY_DATA_KEY";

/// Loads the data key from `from_environment` (the value of [`DATA_KEY_VARIABLE`]), the key
/// file, or (SQLite only) a key file created on first start with owner-only permissions.
pub fn load_data_key(
    storage: &StorageArgs,
    from_environment: Option<&Secret>,
) -> Result<DataKey, AdminError> {
    if let Some(key) = from_environment {
        return DataKey::from_base64url(key.expose())
            .map_err(|e| AdminError::DataKey(format!("{DATA_KEY_VARIABLE}: {e}")));
    }
    let backend = Backend::from_url(&storage.database_url)?;
    let file = match (&storage.data_key_file, backend) {
        (Some(file), _) => file.clone(),
        (None, Backend::Sqlite) => default_key_file(&storage.database_url).ok_or_else(|| {
            AdminError::DataKey(format!(
                "set {DATA_KEY_VARIABLE} or --data-key-file for this database"
            ))
        })?,
        (None, Backend::Postgres) => {
            return Err(AdminError::DataKey(format!(
                "PostgreSQL relays share one data key: set {DATA_KEY_VARIABLE} or --data-key-file"
            )));
        }
    };
    read_or_create_key(&file)
}

fn read_or_create_key(file: &Path) -> Result<DataKey, AdminError> {
    match std::fs::read_to_string(file) {
        Ok(text) => DataKey::from_base64url(&text)
            .map_err(|e| AdminError::DataKey(format!("{}: {e}", file.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let (key, encoded) = DataKey::generate_encoded(&mut OsRng);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options
                .open(file)
                .map_err(|e| AdminError::DataKey(format!("{}: {e}", file.display())))?;
            out.write_all(encoded.as_bytes())
                .and_then(|()| out.sync_all())
                .map_err(|e| AdminError::DataKey(format!("{}: {e}", file.display())))?;
            tracing::info!(file = %file.display(), "created a new data key; back it up with the database");
            Ok(key)
        }
        Err(error) => Err(AdminError::DataKey(format!("{}: {error}", file.display()))),
    }
}

fn now() -> i64 {
    crate::state::Clock::System.now()
}

fn parse_org(text: &str) -> Result<OrganisationId, AdminError> {
    OrganisationId::parse(text).map_err(|_| AdminError::input("org", "not an organisation id"))
}

/// Creates an organisation and returns its id.
pub async fn create_org(store: &Store, name: &str) -> Result<OrganisationId, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(AdminError::input("name", "1 to 80 characters"));
    }
    let id = OrganisationId::random(&mut OsRng);
    let mut conn = store.conn().await?;
    orgs::create(&mut conn, id, name, now()).await?;
    Ok(id)
}

/// Lists organisations as (id, name, key fingerprint).
pub async fn list_orgs(
    store: &Store,
) -> Result<Vec<(OrganisationId, String, Option<String>)>, AdminError> {
    let mut conn = store.conn().await?;
    Ok(orgs::list(&mut conn)
        .await?
        .into_iter()
        .map(|o| {
            (
                o.id,
                o.display_name,
                o.public_key.map(|k| k.fingerprint().to_string()),
            )
        })
        .collect())
}

/// A newly created API key: the secret is shown once.
#[derive(Debug)]
pub struct NewApiKey {
    /// The key's id, for revoking it.
    pub id: String,
    /// The bearer secret.
    pub secret: zeroize::Zeroizing<String>,
}

/// Creates an API key for an organisation.
pub async fn create_api_key(
    store: &Store,
    org: &str,
    label: &str,
) -> Result<NewApiKey, AdminError> {
    let org = parse_org(org)?;
    let token = Token::random(&mut OsRng);
    let id = format!(
        "key_{}",
        &hex::encode(token.hash(TokenKind::ApiKey).as_bytes())[..12]
    );
    let mut tx = store.begin().await?;
    orgs::get(&mut tx, org)
        .await?
        .ok_or(AdminError::NotFound("no such organisation"))?;
    // Before the insert that references the organisation (see `lock_chain`).
    audit::lock_chain(&mut tx, org).await?;
    orgs::create_api_key(
        &mut tx,
        &id,
        org,
        &token.hash(TokenKind::ApiKey),
        label,
        now(),
    )
    .await?;
    let detail = format!("key={id}");
    let record = Record {
        organisation: org,
        kind: AuditKind::ApiKeyCreated,
        message: None,
        recipient: None,
        detail: &detail,
    };
    audit::append(&mut tx, record, now()).await?;
    tx.commit().await?;
    Ok(NewApiKey {
        id,
        secret: token.to_base64url(),
    })
}

/// Revokes an API key.
pub async fn revoke_api_key(store: &Store, id: &str) -> Result<(), AdminError> {
    let mut tx = store.begin().await?;
    let org = orgs::revoke_api_key(&mut tx, id, now())
        .await?
        .ok_or(AdminError::NotFound("no live API key with this id"))?;
    let detail = format!("key={id}");
    let record = Record {
        organisation: org,
        kind: AuditKind::ApiKeyRevoked,
        message: None,
        recipient: None,
        detail: &detail,
    };
    audit::append(&mut tx, record, now()).await?;
    tx.commit().await?;
    Ok(())
}

/// The patients with this number: `org`'s only, or (`None`) each organisation's. A patient
/// record is one organisation's (PROTOCOL.md, "Keyed lookups"), so the number is looked up
/// once per organisation.
async fn patients_by_phone(
    tx: &mut Tx,
    key: &DataKey,
    phone: &str,
    org: Option<&str>,
) -> Result<Vec<RecipientId>, AdminError> {
    let phone = PhoneNumber::parse(phone).map_err(|e| AdminError::input("phone", e))?;
    let organisations = match org {
        Some(org) => vec![parse_org(org)?],
        None => orgs::list(tx).await?.into_iter().map(|o| o.id).collect(),
    };
    let mut patients = Vec::new();
    for organisation in organisations {
        if let Some(patient) =
            recipients::find_by_phone(tx, &phone.lookup(key, organisation)).await?
        {
            patients.push(patient.id);
        }
    }
    if patients.is_empty() {
        return Err(AdminError::NotFound(if org.is_some() {
            "the organisation has no patient with this phone number"
        } else {
            "no patient with this phone number"
        }));
    }
    Ok(patients)
}

async fn audit_patient_event(
    tx: &mut Tx,
    recipient: RecipientId,
    kind: AuditKind,
    detail: &str,
) -> Result<(), AdminError> {
    for organisation in messages::organisations_of_recipient(tx, recipient).await? {
        let record = Record {
            organisation,
            kind,
            message: None,
            recipient: Some(recipient),
            detail,
        };
        audit::append(tx, record, now()).await?;
    }
    Ok(())
}

/// Ends every session of the patient (`org`'s, or each organisation's with this number): their
/// devices' sealed blobs become useless, and no browser stays a known device (a lost phone must
/// not keep passing lockouts). Returns how many sessions were live.
pub async fn revoke_sessions(
    store: &Store,
    key: &DataKey,
    phone: &str,
    org: Option<&str>,
) -> Result<u64, AdminError> {
    let mut tx = store.begin().await?;
    let mut ended = 0;
    for recipient in patients_by_phone(&mut tx, key, phone, org).await? {
        let these = sessions::end_all_for_recipient(&mut tx, recipient, now(), "revoked").await?;
        devices::forget(&mut tx, recipient).await?;
        let detail = format!("sessions={these}");
        audit_patient_event(&mut tx, recipient, AuditKind::SessionRevoked, &detail).await?;
        ended += these;
    }
    tx.commit().await?;
    Ok(ended)
}

/// Forgets the enrollment of the patient (`org`'s, or each organisation's with this number that
/// has enrolled), their sessions and known devices; only links texted after this enroll again.
/// Returns how many enrollments were reset.
pub async fn reset_enrollment(
    store: &Store,
    key: &DataKey,
    phone: &str,
    org: Option<&str>,
) -> Result<u64, AdminError> {
    let mut tx = store.begin().await?;
    let mut reset = 0;
    for recipient in patients_by_phone(&mut tx, key, phone, org).await? {
        if !recipients::reset_enrollment(&mut tx, recipient).await? {
            continue;
        }
        sessions::end_all_for_recipient(&mut tx, recipient, now(), "key_reset").await?;
        devices::forget(&mut tx, recipient).await?;
        audit_patient_event(&mut tx, recipient, AuditKind::KeyReset, "").await?;
        reset += 1;
    }
    if reset == 0 {
        return Err(AdminError::NotApplicable("the patient has not enrolled"));
    }
    tx.commit().await?;
    Ok(reset)
}

/// Clears the failure counters and lockouts of the patient (`org`'s, or each organisation's
/// with this number), for unknown browsers and for each known device; leaves the enrollment,
/// the links, the sessions and the devices themselves alone. Returns how many patients.
pub async fn clear_lockout(
    store: &Store,
    key: &DataKey,
    phone: &str,
    org: Option<&str>,
) -> Result<u64, AdminError> {
    let mut tx = store.begin().await?;
    let patients = patients_by_phone(&mut tx, key, phone, org).await?;
    for &recipient in &patients {
        recipients::set_unlock_state(&mut tx, recipient, &Counter::default()).await?;
        devices::clear_counters(&mut tx, recipient).await?;
        audit_patient_event(&mut tx, recipient, AuditKind::LockoutCleared, "").await?;
    }
    tx.commit().await?;
    Ok(patients.len() as u64)
}

/// Every audit event of an organisation, oldest first.
pub async fn audit_events(store: &Store, org: &str) -> Result<Vec<AuditEvent>, AdminError> {
    let org = parse_org(org)?;
    let mut conn = store.conn().await?;
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |e: &AuditEvent| e.seq);
        let page = audit::page(&mut conn, org, after, 5_000).await?;
        if page.is_empty() {
            return Ok(events);
        }
        events.extend(page);
    }
}
