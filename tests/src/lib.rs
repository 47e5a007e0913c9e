//! Harness for the browser end-to-end tests: headless Chromium driven through chromedriver at a
//! phone viewport, with the process tree, profile and caches confined to a temporary directory
//! that is removed afterwards, also when a test fails.

mod deployment;

pub use deployment::Deployment;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use relay::testkit::{free_port, wait_for, wait_until};
use serde_json::{Value, json};

/// The phone viewport of the tests and screenshots.
pub const VIEWPORT: (u32, u32) = (390, 844);

/// The workspace root (where `dist/` and `docs/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The built viewer: `$SECURETEXT_DIST` or `<workspace>/dist`, which must hold a release build.
pub fn dist_dir() -> PathBuf {
    let dir = std::env::var_os("SECURETEXT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"));
    assert!(
        dir.join("index.html").exists(),
        "{} has no built viewer: run `trunk build --release` first (scripts/test-all does)",
        dir.display()
    );
    dir
}

/// A chromedriver process and one browser session.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    _home: tempfile::TempDir,
}

/// Chromium's browser-console log (the legacy endpoint chromedriver still serves).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

/// A Chrome DevTools command through chromedriver.
#[derive(Debug)]
struct DevTools(Value);

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose preferred language is `lang`.
    pub async fn start(lang: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        // chromedriver runs in a session of its own (through `setsid`, which execs it in place so
        // the pid stays chromedriver's): Chromium then has no controlling terminal to disturb,
        // and the whole browser process group can be ended at once.
        let driver = Command::new("setsid")
            .arg(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()))
            .arg(format!("--port={port}"))
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_CACHE_HOME", home.path())
            .env("TMPDIR", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let profile = home.path().join("profile");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--lang={lang}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": { "intl.accept_languages": lang },
                "mobileEmulation": {
                    "deviceMetrics": { "width": VIEWPORT.0, "height": VIEWPORT.1, "pixelRatio": 1.0 },
                    "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36"
                }
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_until(
            Duration::from_secs(10),
            "chromedriver to start a browser session",
            || async {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
                    .ok()
            },
        )
        .await;
        Self {
            client,
            driver,
            _home: home,
        }
    }

    /// Waits for an element.
    pub async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} within 30 s: {e}"))
    }

    /// Waits until the page's `<main>` text contains `needle`, and returns that text.
    pub async fn wait_text(&self, needle: &str) -> String {
        let shown = wait_for(Duration::from_secs(30), || async {
            self.main_text().await.contains(needle)
        })
        .await;
        let text = self.main_text().await;
        assert!(
            shown.is_some() && text.contains(needle),
            "page never showed {needle:?}; it shows {text:?}"
        );
        text
    }

    /// The text of the page body.
    pub async fn main_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Types into a field and submits its form.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait(css).await;
        field.send_keys(text).await.unwrap();
    }

    /// Shows the message with `subject`: it is either on screen already or listed under the
    /// patient's other messages, from where the patient opens it.
    pub async fn open_message(&self, subject: &str, body: &str) {
        self.wait_text(subject).await;
        if !self.main_text().await.contains(body) {
            for item in self
                .client
                .find_all(Locator::Css(".list-item"))
                .await
                .unwrap()
            {
                if item.text().await.unwrap_or_default().contains(subject) {
                    item.click().await.unwrap();
                    break;
                }
            }
        }
        self.wait_text(body).await;
    }

    /// Clicks an element.
    pub async fn click(&self, css: &str) {
        self.wait(css).await.click().await.unwrap();
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Browser-console entries so far (and clears them).
    pub async fn console(&self) -> Vec<String> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or(Value::Null);
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends a Chrome DevTools command.
    pub async fn devtools(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(DevTools(json!({ "cmd": cmd, "params": params })))
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"))
    }

    /// Everything the page's origin stores: localStorage, sessionStorage, IndexedDB database
    /// names and contents, cookies visible to script and all cookies (DevTools), Cache Storage.
    pub async fn storage_dump(&self) -> String {
        let script = r#"
            const done = arguments[arguments.length - 1];
            (async () => {
              const out = {};
              const dump = (s) => { const o = {}; for (let i = 0; i < s.length; i++) { const k = s.key(i); o[k] = s.getItem(k); } return o; };
              out.localStorage = dump(localStorage);
              out.sessionStorage = dump(sessionStorage);
              out.documentCookie = document.cookie;
              out.indexedDB = [];
              if (indexedDB.databases) {
                for (const info of await indexedDB.databases()) {
                  const db = await new Promise((ok, err) => { const r = indexedDB.open(info.name); r.onsuccess = () => ok(r.result); r.onerror = err; });
                  for (const name of db.objectStoreNames) {
                    const all = await new Promise((ok) => { const r = db.transaction(name).objectStore(name).getAll(); r.onsuccess = () => ok(r.result); });
                    out.indexedDB.push({ db: info.name, store: name, values: all });
                  }
                }
              }
              out.caches = [];
              for (const name of await caches.keys()) {
                const cache = await caches.open(name);
                for (const request of await cache.keys()) {
                  const response = await cache.match(request);
                  out.caches.push({ name, url: request.url, body: await response.text() });
                }
              }
              done(JSON.stringify(out));
            })().catch((e) => done(JSON.stringify({ error: String(e) })));
        "#;
        let dumped = self.client.execute_async(script, vec![]).await.unwrap();
        let cookies = self.devtools("Network.getAllCookies", json!({})).await;
        format!("{}\n{}", dumped.as_str().unwrap_or_default(), cookies)
    }

    /// Ends the session; dropping the browser then ends chromedriver and Chromium.
    pub async fn finish(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Kills chromedriver's process group (and so Chromium), also when a test panics.
impl Drop for Browser {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // `--` is essential: procps' kill reads "-KILL -1234" as options and signals the
            // wrong process group.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
                .status();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
