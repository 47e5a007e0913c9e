//! The release-shaped relay: the `relay serve` binary as a child process on the database, data
//! key and files of a [`TestRelay`], for what an in-process relay cannot show — a `SIGKILL` at
//! any instruction, and several relay processes on one PostgreSQL database.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::server::TestRelay;
use super::wait::wait_until;

/// Longest wait for a started relay to answer `GET /readyz` (migrations included).
const START_LIMIT: Duration = Duration::from_secs(60);

/// Something a test talks HTTP to: an in-process [`TestRelay`] or a [`RelayProcess`].
pub trait Endpoint {
    /// The client for the test's requests.
    fn http(&self) -> &reqwest::Client;
    /// The absolute URL of `path` on this relay.
    fn url(&self, path: &str) -> String;
}

impl Endpoint for TestRelay {
    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        TestRelay::url(self, path)
    }
}

/// A `relay serve` child process; killed (`SIGKILL`) when dropped.
#[derive(Debug)]
pub struct RelayProcess {
    binary: PathBuf,
    environment: Vec<(String, String)>,
    log: PathBuf,
    base: String,
    child: Option<Child>,
    http: reqwest::Client,
}

impl RelayProcess {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_relay")`) serving `relay`'s database with its data
    /// key, viewer and limits as given by `settings` (`RELAY_*` variables, e.g.
    /// `("RELAY_SEND_RATE_PER_MINUTE", "100000")`), on a free loopback port it keeps across
    /// restarts, the console SMS provider appending to `outbox_file`; waits until it is ready.
    /// The in-process relay should be stopped first unless the test wants two instances.
    pub async fn start(
        binary: &Path,
        relay: &TestRelay,
        outbox_file: &Path,
        settings: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = relay.dir.path().join(format!("relay-{port}.log"));
        let mut environment: Vec<(String, String)> = [
            ("RELAY_LISTEN", format!("127.0.0.1:{port}")),
            ("RELAY_PUBLIC_URL", base.clone()),
            ("RELAY_DATABASE_URL", relay.db.url()),
            ("RELAY_DATA_KEY", relay.data_key.clone()),
            ("RELAY_VIEWER_DIR", relay.viewer_dir().display().to_string()),
            ("RELAY_SMS_PROVIDER", "console".to_owned()),
            ("RELAY_SMS_OUTBOX_FILE", outbox_file.display().to_string()),
            ("RELAY_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        environment.extend(
            settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let mut process = Self {
            binary: binary.to_owned(),
            environment,
            log,
            base,
            child: None,
            http: reqwest::Client::new(),
        };
        process.restart().await;
        process
    }

    /// Starts the process again (after [`Self::kill`]) with the same settings and port, and
    /// waits until it is ready.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the relay process is running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.environment.iter().map(|(n, v)| (n, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the relay binary starts");
        self.child = Some(child);
        let ready = self.url("/readyz");
        let http = self.http.clone();
        let child = self.child.as_mut().unwrap();
        let log = self.log.clone();
        wait_until(START_LIMIT, "the relay process to be ready", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the relay process exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let request = http.get(&ready).timeout(Duration::from_secs(2)).send();
            async move {
                match request.await {
                    Ok(response) if response.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
    }

    /// `SIGKILL`: the process ends at whatever instruction it was executing, with no chance to
    /// flush, commit or release anything; returns once it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// `SIGTERM`, as an orchestrator stops a relay; returns its exit status once it has gone,
    /// failing the test if that takes longer than `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the relay process is running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        wait_until(limit, "the relay process to exit", || {
            let exited = child.try_wait().unwrap();
            async move { exited }
        })
        .await
    }

    /// The process id while it runs, for what `/proc/<pid>` tells about it (the benchmark
    /// reads its peak memory and CPU time there).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the process wrote to standard error, every run so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Endpoint for RelayProcess {
    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for RelayProcess {
    /// Kills the process; when a test fails, shows what the relay logged, the likeliest clue.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of the relay process at {} ---\n{}",
                self.base,
                self.log()
            );
        }
    }
}

/// A loopback port nothing listens on now, for a server the test starts next. The relay binds
/// it with `SO_REUSEADDR` (as tokio does), so a restart reuses it even while connections of the
/// killed process linger.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
