//! The console provider: SMS for development, demos and tests, without a telephone network.
//!
//! Each SMS is appended as one JSON object per line to the outbox file, so an end-to-end test
//! or a demo script can pick up the link a patient would have received, and printed to stdout
//! so a developer running the relay sees it. The printout shows the body (the developer needs
//! the link) but masks the phone number; nothing is written to the log except the outbox
//! reference.
//!
//! The file is opened in append mode for every SMS (so it may be deleted or rotated while the
//! relay runs) and synced before `send` returns, so whoever reads it right after sees the line.
//! Appends are serialised by a mutex so concurrent sends never interleave.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;

use super::{Accepted, OutgoingSms, SendFuture, SmsError, SmsProvider, mask_phone};

/// Writes SMS to a JSON-lines file and stdout instead of sending them.
#[derive(Debug)]
pub struct ConsoleProvider {
    outbox_file: PathBuf,
    append: Mutex<()>,
}

impl ConsoleProvider {
    /// A provider appending to `outbox_file` (created on the first SMS if missing).
    pub fn new(outbox_file: PathBuf) -> Self {
        Self {
            outbox_file,
            append: Mutex::new(()),
        }
    }

    /// The file SMS are appended to.
    pub fn outbox_file(&self) -> &Path {
        &self.outbox_file
    }

    async fn deliver(&self, sms: &OutgoingSms) -> Result<Accepted, SmsError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut line = serde_json::to_vec(&serde_json::json!({
            "reference": sms.reference,
            "to": sms.to,
            "body": sms.body,
            "at": at,
        }))
        .map_err(|e| SmsError::Temporary(format!("console outbox: encoding failed: {e}")))?;
        line.push(b'\n');

        {
            let _guard = self.append.lock().await;
            self.append_line(&line).await.map_err(|e| {
                SmsError::Temporary(format!("console outbox: writing the file failed: {e}"))
            })?;
        }

        print_block(&mask_phone(&sms.to), &sms.body);
        let provider_id = format!("console-{}", sms.reference);
        tracing::info!(
            reference = %sms.reference,
            provider_id = %provider_id,
            "SMS written to the console outbox"
        );
        Ok(Accepted { provider_id })
    }

    async fn append_line(&self, line: &[u8]) -> std::io::Result<()> {
        // Owner-only: the console outbox holds phone numbers and link tokens in clear.
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.outbox_file)
            .await?;
        file.write_all(line).await?;
        file.flush().await?;
        file.sync_data().await
    }
}

/// Prints the human-readable block in one write, so concurrent SMS do not interleave. A closed
/// stdout is not a delivery failure (the file is the record), so write errors are ignored.
fn print_block(masked_phone: &str, body: &str) {
    let block = format!("SMS to {masked_phone}:\n{body}\n\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(block.as_bytes());
    let _ = stdout.flush();
}

impl SmsProvider for ConsoleProvider {
    fn name(&self) -> &'static str {
        "console"
    }

    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> SendFuture<'a> {
        Box::pin(async move {
            let result = self.deliver(sms).await;
            if let Err(error) = &result {
                tracing::warn!(reference = %sms.reference, %error, "console SMS failed");
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh path under the system temporary directory; removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "relay-console-test-{}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir.join(name))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn sms(reference: &str, to: &str) -> OutgoingSms {
        OutgoingSms {
            to: to.into(),
            body: format!("Message from Clinic: https://relay.example/m/{reference}#token"),
            reference: reference.into(),
        }
    }

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_one_json_line_per_sms() {
        let path = TempPath::new("outbox.jsonl");
        let provider = ConsoleProvider::new(path.0.clone());
        assert_eq!(provider.name(), "console");
        assert_eq!(provider.outbox_file(), path.0.as_path());

        let first = provider.send(&sms("r1", "+15551234567")).await.unwrap();
        assert_eq!(first.provider_id, "console-r1");
        let lines = read_lines(&path.0);
        assert_eq!(lines.len(), 1);

        let second = provider.send(&sms("r2", "+447700900123")).await.unwrap();
        assert_eq!(second.provider_id, "console-r2");
        let lines = read_lines(&path.0);
        assert_eq!(lines.len(), 2);

        assert_eq!(lines[0]["reference"], "r1");
        assert_eq!(lines[0]["to"], "+15551234567");
        assert_eq!(
            lines[0]["body"],
            "Message from Clinic: https://relay.example/m/r1#token"
        );
        assert!(lines[0]["at"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(lines[1]["reference"], "r2");
        assert_eq!(lines[1]["to"], "+447700900123");
    }

    #[tokio::test]
    async fn appends_to_an_existing_file() {
        let path = TempPath::new("existing.jsonl");
        std::fs::write(&path.0, "{\"reference\":\"old\"}\n").unwrap();
        let provider = ConsoleProvider::new(path.0.clone());
        provider.send(&sms("new", "+15551234567")).await.unwrap();
        let lines = read_lines(&path.0);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reference"], "old");
        assert_eq!(lines[1]["reference"], "new");
    }

    #[tokio::test]
    async fn concurrent_sends_do_not_interleave() {
        let path = TempPath::new("concurrent.jsonl");
        let provider = Arc::new(ConsoleProvider::new(path.0.clone()));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let provider = Arc::clone(&provider);
                tokio::spawn(async move {
                    provider
                        .send(&sms(&format!("r{i}"), "+15551234567"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut references: Vec<String> = read_lines(&path.0)
            .iter()
            .map(|l| l["reference"].as_str().unwrap().to_owned())
            .collect();
        references.sort();
        let mut expected: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
        expected.sort();
        assert_eq!(references, expected);
    }

    #[tokio::test]
    async fn unwritable_file_is_a_temporary_failure() {
        let path = TempPath::new("missing-dir");
        // The parent of the outbox file does not exist: the open fails.
        let provider = ConsoleProvider::new(path.0.join("outbox.jsonl"));
        let error = provider.send(&sms("r1", "+15551234567")).await.unwrap_err();
        assert!(error.is_temporary(), "{error}");
        let text = error.to_string();
        assert!(!text.contains("5551234567"), "{text}");
        assert!(!text.contains("token"), "{text}");
    }
}
