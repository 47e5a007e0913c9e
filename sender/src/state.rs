//! The sender's state directory and the owner-only file handling every state file goes through.
//!
//! Layout of the directory (default: the platform's config directory + `securetext`, e.g.
//! `~/.config/securetext` on Linux; `SECURETEXT_CONFIG_DIR` or `--config-dir` override it):
//! ```text
//! config.json            relay URL, organisation id, API key           (crate::config)
//! organisation-key.json  the sealed organisation key file             (shared::keyfile)
//! pins.json              recipient id -> pinned key fingerprint,       (crate::pins)
//!                        keyed phone hash -> recipient id first seen
//! phone-hash.key         the key of those phone hashes (hex)           (crate::pins)
//! messages.json          journal of this host's sends and re-wraps     (crate::journal)
//! audit-anchor.json      last audit event verified                     (crate::audit)
//! *.lock                 lock files serialising read-modify-write of the files above
//! ```
//!
//! # Invariants
//! - The directory is created `0700` and every file `0600` (Unix). A directory or file that
//!   grants any access to group or others is refused, not fixed silently: the key file,
//!   the API key and the pin store (whose integrity decides which keys are trusted) must not be
//!   readable or writable by other users, and an operator should learn that they were.
//! - Files are replaced atomically (write a temporary file, `fsync`, rename, `fsync` the
//!   directory), so a crash leaves the old or the new content, never a torn file.
//! - Read-modify-write of a shared file (pins, journal) happens under an exclusive lock, because
//!   the agent and an operator's `securetext keys approve` or `send` run concurrently.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::Error;

/// Permission bits of the state directory.
pub const DIR_MODE: u32 = 0o700;
/// Permission bits of every state file.
pub const FILE_MODE: u32 = 0o600;

/// The sender's state directory (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The platform's default location: the XDG config directory on Linux (honouring
    /// `XDG_CONFIG_HOME`), the equivalent elsewhere, plus `securetext`.
    pub fn default_path() -> Result<PathBuf, Error> {
        use etcetera::BaseStrategy as _;
        let base = etcetera::choose_base_strategy()
            .map_err(|e| Error::Config(format!("cannot find a config directory: {e}")))?;
        Ok(base.config_dir().join("securetext"))
    }

    /// Opens the directory, creating it (and its parents) owner-only if missing. An existing
    /// directory that others can access is refused.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        if !path.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
            builder.create(&path).map_err(|e| Error::io(&path, e))?;
        }
        let metadata = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if !metadata.is_dir() {
            return Err(Error::Config(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        check_private(&path, &metadata, DIR_MODE)?;
        Ok(Self { path })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.json`.
    pub fn config_file(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// The default organisation key file, `organisation-key.json`.
    pub fn default_key_file(&self) -> PathBuf {
        self.path.join("organisation-key.json")
    }

    /// `pins.json`.
    pub fn pins_file(&self) -> PathBuf {
        self.path.join("pins.json")
    }

    /// `phone-hash.key`: the key of the phone hashes in `pins.json` and the journal, kept out
    /// of both so that neither alone can test phone numbers.
    pub fn phone_hash_key_file(&self) -> PathBuf {
        self.path.join("phone-hash.key")
    }

    /// `messages.json`.
    pub fn journal_file(&self) -> PathBuf {
        self.path.join("messages.json")
    }

    /// `audit-anchor.json`.
    pub fn audit_anchor_file(&self) -> PathBuf {
        self.path.join("audit-anchor.json")
    }

    /// Takes the exclusive lock named `name` (a `name.lock` file in the directory), blocking
    /// until it is free. Held until the guard is dropped.
    pub(crate) fn lock(&self, name: &str) -> Result<LockGuard, Error> {
        let path = self.path.join(format!("{name}.lock"));
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
        let file = options.open(&path).map_err(|e| Error::io(&path, e))?;
        file.lock().map_err(|e| Error::io(&path, e))?;
        Ok(LockGuard { _file: file })
    }
}

/// An exclusive lock on a state file; released on drop (closing the file releases it).
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

/// Reads a state file, refusing one that others can access. `Ok(None)` if it does not exist.
pub fn read_private(path: &Path) -> Result<Option<String>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(path, error)),
    };
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    check_private(path, &metadata, FILE_MODE)?;
    std::io::read_to_string(file)
        .map(Some)
        .map_err(|e| Error::io(path, e))
}

/// Replaces `path` atomically with `contents`, owner-only (`0600`).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Config(format!("{} is not a file name", path.display())))?;
    let temporary = dir.join(format!(".{name}.{:016x}.tmp", OsRng.next_u64()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let written = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(Error::io(path, error));
    }
    // Make the rename itself durable. Directories cannot be opened for syncing everywhere;
    // where they can (Unix), a failure here is reported.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    Ok(())
}

/// Refuses a file or directory that grants any permission to group or others.
#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata, wanted: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions {
            path: path.to_owned(),
            mode,
            wanted,
        });
    }
    Ok(())
}

/// Elsewhere, permissions are left to the platform's defaults for the user's profile directory.
#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata, _wanted: u32) -> Result<(), Error> {
    Ok(())
}

/// Reads and parses a JSON state file; `Ok(None)` if it does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    read_private(path)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| Error::StateFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// Serialises and atomically writes a JSON state file.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).expect("state files always serialize");
    text.push('\n');
    write_private(path, text.as_bytes())
}

/// The format version state files are at unless they say otherwise ([`Versioned::VERSION`]).
/// A file of another version is refused rather than guessed at: a newer tool may have written
/// it with a meaning this one does not know.
pub(crate) const STATE_VERSION: u8 = 1;

/// A JSON state file that carries its format version (`"version": 1`).
pub(crate) trait Versioned {
    /// The version this tool reads and writes.
    const VERSION: u8 = STATE_VERSION;

    /// The version the file declares.
    fn version(&self) -> u8;
}

/// Reads a versioned state file; `Ok(None)` if it does not exist. A version other than
/// [`Versioned::VERSION`] is refused.
pub(crate) fn read_versioned<T>(path: &Path) -> Result<Option<T>, Error>
where
    T: Versioned + serde::de::DeserializeOwned,
{
    let file: Option<T> = read_json(path)?;
    if let Some(version) = file.as_ref().map(Versioned::version)
        && version != T::VERSION
    {
        return Err(Error::StateFile {
            path: path.to_owned(),
            reason: format!("unsupported version {version}"),
        });
    }
    Ok(file)
}

impl StateDir {
    /// Locked read-modify-write of the versioned state file at `path` (a missing file starts
    /// as `T::default()`), under the lock `lock`. `change` failing leaves the file as it was.
    pub(crate) fn update<T, R>(
        &self,
        path: &Path,
        lock: &str,
        change: impl FnOnce(&mut T) -> Result<R, Error>,
    ) -> Result<R, Error>
    where
        T: Versioned + Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        let _lock = self.lock(lock)?;
        let mut file: T = read_versioned(path)?.unwrap_or_default();
        let result = change(&mut file)?;
        write_json(path, &file)?;
        Ok(result)
    }
}

/// Current Unix seconds from the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn files_are_owner_only_and_open_permissions_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::open(root.path().join("a/b")).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
        let file = dir.pins_file();
        assert_eq!(read_private(&file).unwrap(), None);
        write_private(&file, b"{}").unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(read_private(&file).unwrap().as_deref(), Some("{}"));
        write_private(&file, b"[]").unwrap();
        assert_eq!(read_private(&file).unwrap().as_deref(), Some("[]"));

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_private(&file),
            Err(Error::InsecurePermissions { mode: 0o644, .. })
        ));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            StateDir::open(dir.path()),
            Err(Error::InsecurePermissions { .. })
        ));
        // No temporary files are left behind.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("pins.json")]);
    }

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Counter {
        version: u8,
        count: u32,
    }

    impl Versioned for Counter {
        fn version(&self) -> u8 {
            self.version
        }
    }

    #[test]
    fn versioned_files_update_under_lock_and_refuse_other_versions() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::open(root.path().join("s")).unwrap();
        let file = dir.path().join("counter.json");
        assert_eq!(read_versioned::<Counter>(&file).unwrap(), None);
        let bump = |c: &mut Counter| {
            c.version = STATE_VERSION;
            c.count += 1;
            Ok(c.count)
        };
        assert_eq!(dir.update(&file, "counter", bump).unwrap(), 1);
        assert_eq!(dir.update(&file, "counter", bump).unwrap(), 2);
        // A failing change leaves the file as it was.
        let refused = dir.update(&file, "counter", |c: &mut Counter| {
            c.count = 99;
            Err::<(), _>(Error::Input("no".into()))
        });
        assert!(refused.is_err());
        assert_eq!(read_versioned::<Counter>(&file).unwrap().unwrap().count, 2);

        write_private(&file, br#"{"version": 2, "count": 0}"#).unwrap();
        assert!(matches!(
            read_versioned::<Counter>(&file),
            Err(Error::StateFile { reason, .. }) if reason == "unsupported version 2"
        ));
        assert!(dir.update(&file, "counter", bump).is_err());
    }
}
