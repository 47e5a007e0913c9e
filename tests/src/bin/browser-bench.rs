//! The browser half of the benchmark (issue 11): in headless Chromium, at no CPU throttling and
//! at 4× (`Emulation.setCPUThrottlingRate`, a low-end phone), measures
//!
//! 1. our Argon2id in WebAssembly (`shared::kdf` at [`KdfParams::DEFAULT`]) against `hash-wasm`
//!    with identical inputs, and checks that the outputs are equal;
//! 2. RSA-OAEP-3072 (SHA-256) unwrap and key generation: WebCrypto (what the viewer ships) and
//!    the `rsa` crate in WebAssembly (what it does not);
//! 3. AES-256-GCM of 1 MiB: ours in WebAssembly against WebCrypto;
//! 4. password submit → plaintext on screen, in the real viewer against the real relay;
//! 5. enrollment submit → first plaintext on screen, with the sender's agent re-wrapping;
//!
//! and prints markdown to standard output, ending with the budgets (figure, limit, PASS/MISS).
//! Timings are taken inside the page with `performance.now()` (and the viewer's
//! `performance.mark`s, `viewer/src/timing.rs`); a MISS is a result, not a failure: the exit
//! status is non-zero only when the benchmark itself could not run.
//!
//! Usage (`scripts/bench-browser` builds everything and runs this):
//! `browser-bench --web DIR [--reps N] [--primitives-only] [--out FILE]`, where DIR holds the
//! benchmark page (`bench-wasm/web/`), the wasm-bindgen output of `bench-wasm` in `pkg/` and
//! hash-wasm in `hash-wasm/`; the viewer is `dist/` (or `$SECURETEXT_DIST`), a release build.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use e2e::{Browser, Deployment};
use fantoccini::Locator;
use fantoccini::wd::TimeoutConfiguration;
use relay::testkit::Patient;
use serde_json::{Value, json};
use shared::kdf::KdfParams;

/// The CPU throttling rates measured: none, and a low-end phone.
const RATES: [u32; 2] = [1, 4];
/// Argon2id inputs: the same for both implementations.
const BENCH_PASSWORD: &str = "correct horse battery staple";
const SALT: [u8; 16] = [
    0x53, 0x65, 0x63, 0x75, 0x72, 0x65, 0x54, 0x65, 0x78, 0x74, 0x2d, 0x62, 0x65, 0x6e, 0x63, 0x68,
];
const OUTPUT_LEN: usize = 32;
/// The patient's password in the viewer journeys.
const PASSWORD: &str = "Maple syrup 2026!";
/// AES-GCM input size.
const AES_BYTES: usize = 1 << 20;
/// Longest the `rsa` crate's key generation is repeated for, per throttling level (it takes
/// seconds per key, and its time varies with the primes it happens to search through).
const RSA_CRATE_KEYGEN_CAP: Duration = Duration::from_secs(60);
/// Longest wait for a plaintext on screen.
const SCREEN_TIMEOUT_MS: u64 = 120_000;

struct Args {
    web: PathBuf,
    reps: usize,
    /// Only items 1-3 (no viewer, relay or agent).
    primitives_only: bool,
    /// Where the markdown goes; standard output when absent. The relay's console SMS provider
    /// also prints to standard output, so scripts/bench-browser passes a file.
    out: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut web = None;
    let mut reps = 5;
    let mut primitives_only = false;
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--web" => web = it.next().map(PathBuf::from),
            "--reps" => reps = it.next().context("--reps N")?.parse()?,
            "--primitives-only" => primitives_only = true,
            "--out" => out = it.next().map(PathBuf::from),
            other => {
                bail!(
                    "unknown argument {other:?} (usage: browser-bench --web DIR [--reps N] [--primitives-only] [--out FILE])"
                )
            }
        }
    }
    let web = web.context("--web DIR (the assembled benchmark page) is required")?;
    ensure!(
        web.join("index.html").exists() && web.join("pkg").exists(),
        "{} is not an assembled benchmark page (run scripts/bench-browser)",
        web.display()
    );
    ensure!(reps >= 1, "--reps must be at least 1");
    Ok(Args {
        web,
        reps,
        primitives_only,
        out,
    })
}

/// Polls `probe` every 20 ms until it gives a value or `limit` has passed.
async fn poll<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Progress on standard error; standard output is the markdown.
macro_rules! progress {
    ($($t:tt)*) => { eprintln!("[browser-bench] {}", format!($($t)*)) };
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    let started = Instant::now();
    let (base, _server) = serve(args.web.clone()).await?;
    let mut primitives = BTreeMap::new();
    for rate in RATES {
        progress!("primitives at {rate}x CPU throttling");
        primitives.insert(rate, measure_primitives(&base, rate, args.reps).await?);
    }
    let mut journeys = BTreeMap::new();
    for rate in RATES.into_iter().filter(|_| !args.primitives_only) {
        let deployment = Deployment::start().await?;
        progress!("unlock journey at {rate}x");
        let unlock = unlock_journey(&deployment, rate, args.reps).await?;
        progress!("enrollment journey at {rate}x");
        let enroll = enroll_journey(&deployment, rate, args.reps).await?;
        journeys.insert(rate, (unlock, enroll));
        deployment.finish().await;
    }
    let hash_wasm_version = std::fs::read_to_string(args.web.join("hash-wasm/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let markdown = report(&primitives, &journeys, &hash_wasm_version, args.reps);
    match &args.out {
        Some(path) => {
            std::fs::write(path, markdown).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{markdown}"),
    }
    progress!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Serves the benchmark page on a loopback port (a secure context for WebCrypto).
async fn serve(dir: PathBuf) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{address}"), task))
}

/// A browser with long script timeouts (one repetition of the `rsa` crate's key generation at
/// 4× takes tens of seconds).
async fn browser() -> Result<Browser> {
    let browser = Browser::start("en").await;
    browser
        .client
        .update_timeouts(TimeoutConfiguration::new(
            Some(Duration::from_secs(600)),
            Some(Duration::from_secs(60)),
            Some(Duration::ZERO),
        ))
        .await?;
    Ok(browser)
}

async fn throttle(browser: &Browser, rate: u32) {
    browser
        .devtools("Emulation.setCPUThrottlingRate", json!({ "rate": rate }))
        .await;
}

/// Runs `bench.<method>(arg)` in the page and returns what it resolved to.
async fn call(browser: &Browser, method: &str, arg: Value) -> Result<Value> {
    let script = format!(
        r#"const done = arguments[arguments.length - 1];
        window.bench.ready
          .then(() => window.bench.{method}(arguments[0]))
          .then((value) => done({{ value }}), (e) => done({{ error: String((e && e.stack) || e) }}));"#
    );
    let answer = browser.client.execute_async(&script, vec![arg]).await?;
    if let Some(error) = answer.get("error") {
        bail!("bench.{method}: {error}");
    }
    Ok(answer["value"].clone())
}

/// Milliseconds of several repetitions.
#[derive(Debug, Clone, Default)]
struct Sample(Vec<f64>);

impl Sample {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }
}

/// `1 + reps` calls of `method`, the first a discarded warm-up (compilation, tier-up).
async fn repeat(browser: &Browser, method: &str, arg: &Value, reps: usize) -> Result<Sample> {
    let mut sample = Sample::default();
    for i in 0..=reps {
        let value = call(browser, method, arg.clone()).await?;
        if value.get("ok") == Some(&Value::Bool(false)) {
            bail!("bench.{method} returned a wrong result: {value}");
        }
        if i > 0 {
            sample.push(value["ms"].as_f64().context("ms")?);
        }
    }
    Ok(sample)
}

#[derive(Debug, Default)]
struct Primitives {
    argon2_ours: Sample,
    argon2_hash_wasm: Sample,
    argon2_raw_equal: bool,
    argon2_verifier_equal: bool,
    argon2_raw_hex: String,
    rsa_unwrap_webcrypto: Sample,
    rsa_unwrap_rsa_crate: Sample,
    rsa_import_webcrypto: Sample,
    rsa_check_pkcs8: Sample,
    rsa_keygen_webcrypto: Sample,
    rsa_keygen_webcrypto_generate: Sample,
    rsa_keygen_rsa_crate: Sample,
    aes_seal_ours: Sample,
    aes_open_ours: Sample,
    aes_seal_webcrypto: Sample,
    aes_open_webcrypto: Sample,
    aes_same_ciphertext: bool,
}

async fn measure_primitives(base: &str, rate: u32, reps: usize) -> Result<Primitives> {
    let browser = browser().await?;
    browser.client.goto(&format!("{base}/index.html")).await?;
    throttle(&browser, rate).await;
    let mut out = Primitives::default();

    // 1. Argon2id, the two implementations alternating so that drift hits both alike.
    let params = KdfParams::DEFAULT;
    let arg = json!({
        "password": BENCH_PASSWORD, "salt": SALT, "m": params.memory_kib, "t": params.iterations,
        "p": params.parallelism, "len": OUTPUT_LEN,
    });
    let mut verifier = String::new();
    let mut raw = String::new();
    for i in 0..=reps {
        let ours = call(&browser, "argon2Ours", arg.clone()).await?;
        let theirs = call(&browser, "argon2HashWasm", arg.clone()).await?;
        verifier = ours["verifier"].as_str().context("verifier")?.to_owned();
        raw = theirs["raw"].as_str().context("raw")?.to_owned();
        if i > 0 {
            out.argon2_ours.push(ours["ms"].as_f64().context("ms")?);
            out.argon2_hash_wasm
                .push(theirs["ms"].as_f64().context("ms")?);
        }
        progress!(
            "  argon2id {rate}x #{i}: ours {:.0} ms, hash-wasm {:.0} ms",
            ours["ms"].as_f64().unwrap_or_default(),
            theirs["ms"].as_f64().unwrap_or_default()
        );
    }
    let mut check_arg = arg.clone();
    check_arg["hashWasmRaw"] = Value::String(raw.clone());
    let check = call(&browser, "argon2Check", check_arg).await?;
    out.argon2_raw_equal = check["raw"].as_str() == Some(raw.as_str());
    out.argon2_verifier_equal = check["verifierFromHashWasm"].as_str() == Some(verifier.as_str());
    out.argon2_raw_hex = raw;

    // 2. RSA-OAEP-3072.
    let setup = call(&browser, "rsaSetup", Value::Null).await?;
    ensure!(
        setup["webcryptoOk"] == true && setup["rsaCrateOk"] == true,
        "RSA set-up: {setup}"
    );
    out.rsa_unwrap_webcrypto = repeat(&browser, "rsaUnwrapWebCrypto", &Value::Null, reps).await?;
    out.rsa_unwrap_rsa_crate = repeat(&browser, "rsaUnwrapRsaCrate", &Value::Null, reps).await?;
    out.rsa_import_webcrypto = repeat(&browser, "rsaImportWebCrypto", &Value::Null, reps).await?;
    out.rsa_check_pkcs8 = repeat(&browser, "rsaCheckPkcs8", &Value::Null, reps).await?;
    for i in 0..=reps {
        let value = call(&browser, "rsaKeygenWebCrypto", Value::Null).await?;
        if i > 0 {
            out.rsa_keygen_webcrypto
                .push(value["ms"].as_f64().context("ms")?);
            out.rsa_keygen_webcrypto_generate
                .push(value["generate"].as_f64().context("generate")?);
        }
    }
    let started = Instant::now();
    for i in 0..reps {
        let value = call(&browser, "rsaKeygenRsaCrate", Value::Null).await?;
        let ms = value["ms"].as_f64().context("ms")?;
        progress!("  rsa crate keygen {rate}x #{i}: {ms:.0} ms");
        out.rsa_keygen_rsa_crate.push(ms);
        if started.elapsed() > RSA_CRATE_KEYGEN_CAP {
            break;
        }
    }

    // 3. AES-256-GCM of 1 MiB.
    let setup = call(&browser, "aesSetup", json!({ "size": AES_BYTES })).await?;
    ensure!(setup["roundTrip"] == true, "AES set-up: {setup}");
    out.aes_same_ciphertext = setup["sameCiphertext"] == true;
    out.aes_seal_ours = repeat(&browser, "aesSealOurs", &Value::Null, reps).await?;
    out.aes_open_ours = repeat(&browser, "aesOpenOurs", &Value::Null, reps).await?;
    out.aes_seal_webcrypto = repeat(&browser, "aesSealWebCrypto", &Value::Null, reps).await?;
    out.aes_open_webcrypto = repeat(&browser, "aesOpenWebCrypto", &Value::Null, reps).await?;
    browser.finish().await;
    Ok(out)
}

/// Arms the page: a capturing `submit` listener and a MutationObserver that notes when
/// `needle` first appears in the document and the next animation frame after it (the first
/// frame that can show it). Clears earlier `performance` marks.
async fn arm(browser: &Browser, needle: &str) -> Result<()> {
    let script = r#"
        const needle = arguments[0];
        performance.clearMarks();
        const b = { submit: null, dom: null, frame: null };
        window.__bench = b;
        document.addEventListener("submit", () => { if (b.submit === null) b.submit = performance.now(); }, true);
        const observer = new MutationObserver(() => {
          if (b.dom === null && document.body.textContent.includes(needle)) {
            b.dom = performance.now();
            observer.disconnect();
            requestAnimationFrame(() => { b.frame = performance.now(); });
          }
        });
        observer.observe(document.body, { subtree: true, childList: true, characterData: true });
    "#;
    browser
        .client
        .execute(script, vec![Value::String(needle.into())])
        .await?;
    Ok(())
}

/// One journey's timeline in page time (ms since the page's time origin).
#[derive(Debug, Clone)]
struct Timeline {
    submit: f64,
    frame: f64,
    origin: f64,
    marks: Vec<(String, f64)>,
    /// When the agent reported the re-wrap (enrollment only).
    rewrapped: Option<f64>,
}

impl Timeline {
    /// The last mark named `name` at or before the plaintext was on screen.
    fn mark(&self, name: &str) -> Option<f64> {
        self.marks
            .iter()
            .filter(|(n, t)| n == name && *t <= self.frame)
            .map(|(_, t)| *t)
            .next_back()
    }
    /// The first mark named `name` at or after `after`.
    fn mark_after(&self, name: &str, after: f64) -> Option<f64> {
        self.marks
            .iter()
            .find(|(n, t)| n == name && *t >= after)
            .map(|(_, t)| *t)
    }
    fn total(&self) -> f64 {
        self.frame - self.submit
    }
}

/// Waits for the armed page to show the plaintext and returns the timeline.
async fn timeline(browser: &Browser) -> Result<Timeline> {
    let script = format!(
        r#"const done = arguments[arguments.length - 1];
        const deadline = performance.now() + {SCREEN_TIMEOUT_MS};
        const poll = () => {{
          const b = window.__bench;
          if (b && b.frame !== null) {{
            const marks = performance.getEntriesByType("mark")
              .filter((m) => m.name.startsWith("securetext:"))
              .map((m) => [m.name, m.startTime]);
            done({{ submit: b.submit, frame: b.frame, origin: performance.timeOrigin, marks }});
          }} else if (performance.now() > deadline) {{
            done({{ error: "no plaintext on screen; the page shows: " + document.body.textContent.slice(0, 300) }});
          }} else {{
            setTimeout(poll, 100);
          }}
        }};
        poll();"#
    );
    let value = browser.client.execute_async(&script, vec![]).await?;
    if let Some(error) = value.get("error") {
        bail!("{error}");
    }
    let marks = value["marks"]
        .as_array()
        .context("marks")?
        .iter()
        .filter_map(|m| Some((m[0].as_str()?.to_owned(), m[1].as_f64()?)))
        .collect();
    Ok(Timeline {
        submit: value["submit"].as_f64().context("no submit event seen")?,
        frame: value["frame"].as_f64().context("frame")?,
        origin: value["origin"].as_f64().context("origin")?,
        marks,
        rewrapped: None,
    })
}

/// Item 4: a message waiting for an enrolled patient: open its link, type the password,
/// submit; until the plaintext is on screen. The patient locks between repetitions; the first
/// repetition is a discarded warm-up.
async fn unlock_journey(deployment: &Deployment, rate: u32, reps: usize) -> Result<Vec<Timeline>> {
    let phone = format!("+1555014{rate}000");
    let (first, _) = deployment
        .send(&phone, "Welcome to Riverside Clinic.", None)
        .await?;
    let patient = Patient {
        key: relay::testkit::keys().patient,
        password: PASSWORD,
    };
    let token = deployment.relay.link_for(&phone);
    patient
        .enroll_with(&deployment.relay, &token, KdfParams::DEFAULT)
        .await;
    deployment
        .rewrapped(first, Duration::from_secs(30))
        .await
        .context("the agent did not re-wrap the enrolled patient's first message")?;
    let browser = browser().await?;
    let mut timelines = Vec::new();
    for i in 0..=reps {
        let body = format!("Unlock benchmark {rate}x #{i}: your cholesterol results are normal.");
        let (_, link) = deployment.send(&phone, &body, None).await?;
        browser.client.goto("about:blank").await?;
        browser.client.goto(&link).await?;
        browser.wait("#password").await;
        throttle(&browser, rate).await;
        browser.fill("#password", PASSWORD).await;
        arm(&browser, &body).await?;
        browser.click("button[type=submit]").await;
        let timeline = timeline(&browser).await?;
        progress!("  unlock {rate}x #{i}: {:.0} ms", timeline.total());
        if i > 0 {
            timelines.push(timeline);
        }
        throttle(&browser, 1).await;
        browser.click(".lock").await;
        browser.wait_text("Messages locked").await;
    }
    browser.finish().await;
    Ok(timelines)
}

/// Item 5: a first-contact message to a new patient: open its link in a fresh browser, choose
/// a password (once the strength meter has accepted it, as a patient would see), submit; until
/// the plaintext is on screen, after the agent's re-wrap.
async fn enroll_journey(deployment: &Deployment, rate: u32, reps: usize) -> Result<Vec<Timeline>> {
    let mut timelines = Vec::new();
    for i in 0..reps {
        let phone = format!("+1555015{rate}{i:03}");
        let body = format!("Enrollment benchmark {rate}x #{i}: your prescription is ready.");
        let (id, link) = deployment.send(&phone, &body, None).await?;
        let browser = browser().await?;
        browser.client.goto(&link).await?;
        browser.wait("#new-password").await;
        throttle(&browser, rate).await;
        browser.fill("#new-password", PASSWORD).await;
        browser.fill("#confirm-password", PASSWORD).await;
        // Submitting re-checks the password in the estimator's worker anyway; waiting for the
        // meter first keeps the worker's start-up out of the figure. If the meter does not
        // settle, the submit waits for the worker instead (and the rep says so).
        let accepted = poll(Duration::from_secs(20), || async {
            let level = browser
                .client
                .find(Locator::Id("strength"))
                .await
                .ok()?
                .attr("data-level")
                .await
                .ok()??;
            matches!(level.as_str(), "fair" | "strong").then_some(())
        })
        .await;
        if accepted.is_none() {
            let level = match browser.client.find(Locator::Id("strength")).await {
                Ok(meter) => meter.attr("data-level").await.ok().flatten(),
                Err(_) => None,
            };
            progress!("  enroll {rate}x #{i}: the meter shows {level:?}; submitting anyway");
        }
        arm(&browser, &body).await?;
        browser.click("button[type=submit]").await;
        let mut timeline = timeline(&browser).await?;
        let rewrapped = deployment
            .rewrapped(id, Duration::from_secs(5))
            .await
            .context("the agent's re-wrap was not reported")?;
        let wall_ms = rewrapped.duration_since(UNIX_EPOCH)?.as_secs_f64() * 1000.0;
        timeline.rewrapped = Some(wall_ms - timeline.origin);
        progress!("  enroll {rate}x #{i}: {:.0} ms", timeline.total());
        timelines.push(timeline);
        browser.finish().await;
    }
    Ok(timelines)
}

// ------------------------------------------------------------------------------------------
// The report.

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: f64 = text
                .lines()
                .find(|l| l.starts_with("MemTotal"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB RAM", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    format!(
        "{} × {cpu}, {memory}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// `| median | min |` for each rate.
fn cells(samples: &[&Sample]) -> String {
    samples
        .iter()
        .map(|s| format!(" {} | {} |", ms(s.median()), ms(s.min())))
        .collect()
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**NO**" }
}

/// The phases of a journey: label and how to compute it from a timeline.
type Phase = (&'static str, fn(&Timeline) -> Option<f64>);

fn span(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    Some(to? - from?)
}

const UNLOCK_PHASES: &[Phase] = &[
    (
        "submit → Argon2id starts (checks, wait for a painted frame)",
        |t| span(Some(t.submit), t.mark("securetext:derive:start")),
    ),
    ("Argon2id + HKDF in the viewer", |t| {
        span(
            t.mark("securetext:derive:start"),
            t.mark("securetext:derive:end"),
        )
    }),
    ("proof accepted (`POST /v1/viewer/unlock`)", |t| {
        span(
            t.mark("securetext:derive:end"),
            t.mark("securetext:unlocked"),
        )
    }),
    (
        "key bundle fetched, unsealed, session blob sealed, WebCrypto import",
        |t| {
            span(
                t.mark("securetext:unlocked"),
                t.mark("securetext:key-ready"),
            )
        },
    ),
    ("messages listed (`GET /v1/viewer/messages`)", |t| {
        let ready = t.mark("securetext:key-ready")?;
        span(Some(ready), t.mark_after("securetext:messages", ready))
    }),
    ("envelope opened (WebCrypto RSA-OAEP, AES-GCM)", |t| {
        span(
            t.mark("securetext:open:start"),
            t.mark("securetext:open:end"),
        )
    }),
    ("rendered, next animation frame", |t| {
        span(t.mark("securetext:open:end"), Some(t.frame))
    }),
];

const ENROLL_PHASES: &[Phase] = &[
    (
        "submit → Argon2id starts (strength re-check in the worker, wait for a painted frame)",
        |t| span(Some(t.submit), t.mark("securetext:derive:start")),
    ),
    ("Argon2id + HKDF in the viewer", |t| {
        span(
            t.mark("securetext:derive:start"),
            t.mark("securetext:derive:end"),
        )
    }),
    (
        "key generation (WebCrypto + PKCS#8 check), after a painted frame",
        |t| {
            span(
                t.mark("securetext:derive:end"),
                t.mark("securetext:keygen:end"),
            )
        },
    ),
    (
        "sealed and enrolled (a painted frame, `POST /v1/viewer/enroll`)",
        |t| {
            span(
                t.mark("securetext:keygen:end"),
                t.mark("securetext:enrolled"),
            )
        },
    ),
    ("unlocked, session blob sealed, WebCrypto import", |t| {
        span(
            t.mark("securetext:enrolled"),
            t.mark("securetext:key-ready"),
        )
    }),
    ("enrolled → the agent reports the re-wrap", |t| {
        span(t.mark("securetext:enrolled"), t.rewrapped)
    }),
    ("re-wrap → the viewer's next list (its 3 s poll)", |t| {
        let rewrapped = t.rewrapped?;
        span(
            Some(rewrapped),
            t.mark_after("securetext:messages", rewrapped),
        )
    }),
    (
        "that list → plaintext on screen (open, render, frame)",
        |t| {
            let rewrapped = t.rewrapped?;
            span(
                t.mark_after("securetext:messages", rewrapped),
                Some(t.frame),
            )
        },
    ),
];

fn phase_sample(timelines: &[Timeline], phase: fn(&Timeline) -> Option<f64>) -> Sample {
    Sample(timelines.iter().filter_map(phase).collect())
}

fn total_sample(timelines: &[Timeline]) -> Sample {
    Sample(timelines.iter().map(Timeline::total).collect())
}

fn journey_table(
    out: &mut String,
    title: &str,
    phases: &[Phase],
    runs: &[&[Timeline]],
) -> std::fmt::Result {
    writeln!(
        out,
        "| {title} | no throttling: median | min | 4× CPU: median | min |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: |")?;
    let totals: Vec<Sample> = runs.iter().map(|t| total_sample(t)).collect();
    writeln!(
        out,
        "| **submit → plaintext on screen** |{}",
        cells(&totals.iter().collect::<Vec<_>>())
    )?;
    for (label, phase) in phases {
        let samples: Vec<Sample> = runs.iter().map(|t| phase_sample(t, *phase)).collect();
        writeln!(
            out,
            "| … {label} |{}",
            cells(&samples.iter().collect::<Vec<_>>())
        )?;
    }
    writeln!(out)
}

struct Budget {
    name: String,
    figure: String,
    limit: String,
    pass: bool,
}

fn report(
    primitives: &BTreeMap<u32, Primitives>,
    journeys: &BTreeMap<u32, (Vec<Timeline>, Vec<Timeline>)>,
    hash_wasm: &str,
    reps: usize,
) -> String {
    let mut out = String::new();
    write_report(&mut out, primitives, journeys, hash_wasm, reps).expect("writing to a String");
    out
}

fn write_report(
    out: &mut String,
    primitives: &BTreeMap<u32, Primitives>,
    journeys: &BTreeMap<u32, (Vec<Timeline>, Vec<Timeline>)>,
    hash_wasm: &str,
    reps: usize,
) -> std::fmt::Result {
    let p = |rate: u32| &primitives[&rate];
    let (none, slow) = (p(1), p(4));
    let params = KdfParams::DEFAULT;
    writeln!(out, "## In the browser (headless Chromium)\n")?;
    writeln!(
        out,
        "Measured {} with `scripts/bench-browser` on {}; {}, {}, headless, 390×844 phone \
         emulation. Each figure: {reps} repetitions after one discarded warm-up (except the \
         `rsa` crate's key generation: no warm-up, repeated for at most {} s) timed inside the \
         page with `performance.now()`, as median and minimum in milliseconds. \"4× CPU\" is \
         `Emulation.setCPUThrottlingRate {{rate: 4}}`, which slows the page's main thread \
         (WebAssembly and JavaScript); WebCrypto's RSA and AES run on the browser's own threads \
         and are slowed only in the part that runs on the main thread.\n",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine(),
        command_line("chromium", &["--version"]),
        command_line("chromedriver", &["--version"])
            .split(" (")
            .next()
            .unwrap_or("?"),
        RSA_CRATE_KEYGEN_CAP.as_secs(),
    )?;
    writeln!(
        out,
        "\"Ours\" is the workspace's Rust compiled to wasm32 in `bench-wasm` exactly as the \
         viewer is built (profile `viewer-release`: opt-level `z`, LTO, `panic = \"abort\"`; \
         wasm-opt 116 `-Oz`). Ships: what the viewer runs today.\n"
    )?;
    writeln!(
        out,
        "| operation | implementation | ships | no throttling: median | min | 4× CPU: median | min |"
    )?;
    writeln!(out, "| --- | --- | --- | ---: | ---: | ---: | ---: |")?;
    let row = |out: &mut String, op: &str, imp: &str, ships: &str, a: &Sample, b: &Sample| {
        writeln!(out, "| {op} | {imp} | {ships} |{}", cells(&[a, b]))
    };
    let argon = format!(
        "Argon2id m = {} KiB, t = {}, p = {}, {OUTPUT_LEN} B",
        params.memory_kib, params.iterations, params.parallelism
    );
    row(
        out,
        &argon,
        "ours: `shared::kdf::derive_password_keys` (RustCrypto `argon2` 0.5 + HKDF)",
        "yes",
        &none.argon2_ours,
        &slow.argon2_ours,
    )?;
    row(
        out,
        &argon,
        &format!("`hash-wasm` {hash_wasm} (npm)"),
        "no",
        &none.argon2_hash_wasm,
        &slow.argon2_hash_wasm,
    )?;
    row(
        out,
        "RSA-OAEP-3072 unwrap (decrypt a 32 B content key)",
        "WebCrypto `decrypt` (non-extractable key)",
        "yes",
        &none.rsa_unwrap_webcrypto,
        &slow.rsa_unwrap_webcrypto,
    )?;
    row(
        out,
        "RSA-OAEP-3072 unwrap (decrypt a 32 B content key)",
        "`rsa` 0.9 crate in wasm (not constant-time)",
        "no",
        &none.rsa_unwrap_rsa_crate,
        &slow.rsa_unwrap_rsa_crate,
    )?;
    row(
        out,
        "RSA private key, once per unlock: PKCS#8 parse and check",
        "ours: `shared::keys::PrivateKey::from_pkcs8_der` (`rsa` crate)",
        "yes",
        &none.rsa_check_pkcs8,
        &slow.rsa_check_pkcs8,
    )?;
    row(
        out,
        "RSA private key, once per unlock: import",
        "WebCrypto `importKey` pkcs8, non-extractable",
        "yes",
        &none.rsa_import_webcrypto,
        &slow.rsa_import_webcrypto,
    )?;
    row(
        out,
        "RSA-3072 key generation",
        "WebCrypto `generateKey` + `exportKey` + PKCS#8 check (the viewer's step)",
        "yes",
        &none.rsa_keygen_webcrypto,
        &slow.rsa_keygen_webcrypto,
    )?;
    row(
        out,
        "RSA-3072 key generation",
        "… of which WebCrypto `generateKey`",
        "yes",
        &none.rsa_keygen_webcrypto_generate,
        &slow.rsa_keygen_webcrypto_generate,
    )?;
    row(
        out,
        &format!(
            "RSA-3072 key generation (n = {} / {})",
            none.rsa_keygen_rsa_crate.0.len(),
            slow.rsa_keygen_rsa_crate.0.len()
        ),
        "`rsa` 0.9 crate in wasm (`PrivateKey::generate`)",
        "no",
        &none.rsa_keygen_rsa_crate,
        &slow.rsa_keygen_rsa_crate,
    )?;
    for (op, ours_n, ours_s, web_n, web_s) in [
        (
            "AES-256-GCM seal 1 MiB",
            &none.aes_seal_ours,
            &slow.aes_seal_ours,
            &none.aes_seal_webcrypto,
            &slow.aes_seal_webcrypto,
        ),
        (
            "AES-256-GCM open 1 MiB",
            &none.aes_open_ours,
            &slow.aes_open_ours,
            &none.aes_open_webcrypto,
            &slow.aes_open_webcrypto,
        ),
    ] {
        row(
            out,
            op,
            "ours: `aes-gcm` 0.10 as `shared::aead` calls it (wasm, incl. copies in and out)",
            "yes",
            ours_n,
            ours_s,
        )?;
        row(out, op, "WebCrypto `AES-GCM`", "no", web_n, web_s)?;
    }
    writeln!(out)?;
    let ratio = |p: &Primitives| p.argon2_ours.median() / p.argon2_hash_wasm.median();
    writeln!(
        out,
        "Argon2id outputs equal: our raw output (the call `shared::kdf` makes) = hash-wasm's: \
         {} / {} (no throttling / 4×; `{}`); the verifier `shared::kdf` derives = the one \
         computed from hash-wasm's output with WebCrypto HKDF-SHA256 and SHA-256: {} / {}. \
         Inputs: password `{BENCH_PASSWORD}`, salt `{}`. Ours ÷ hash-wasm (medians): {:.2} / \
         {:.2}. AES-GCM: our ciphertext and tag = WebCrypto's for the same key, nonce and \
         associated data: {} / {}.\n",
        yes(none.argon2_raw_equal),
        yes(slow.argon2_raw_equal),
        none.argon2_raw_hex,
        yes(none.argon2_verifier_equal),
        yes(slow.argon2_verifier_equal),
        SALT.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ratio(none),
        ratio(slow),
        yes(none.aes_same_ciphertext),
        yes(slow.aes_same_ciphertext),
    )?;
    writeln!(
        out,
        "What ships for RSA: the viewer generates the patient's key pair and decrypts wraps with \
         **WebCrypto** (`viewer/src/keygen.rs`, `viewer/src/webkey.rs`); the `rsa` crate's \
         private-key operations are in the viewer only as the PKCS#8 parse and check. The \
         `rsa` crate rows are for comparison.\n"
    )?;

    let none_yet = (Vec::new(), Vec::new());
    let journey = |rate: &u32| journeys.get(rate).unwrap_or(&none_yet);
    let unlock: Vec<&[Timeline]> = RATES.iter().map(|r| journey(r).0.as_slice()).collect();
    let enroll: Vec<&[Timeline]> = RATES.iter().map(|r| journey(r).1.as_slice()).collect();
    let viewer = !journeys.is_empty();
    if viewer {
        writeln!(
            out,
            "### The viewer, end to end\n\nThe release viewer (`dist/`, `trunk build --release`) \
         served by the real relay (in-process `relay::testkit::TestRelay`, SQLite, this \
         workspace's code), the sender's agent (`sender::agent::Agent::run`, default options: \
         1 s poll) in-process. From the form's `submit` event to the first animation frame \
         after the message's text is in the document; phases from the viewer's `performance` \
         marks (`viewer/src/timing.rs`). Unlock: {reps} unlocks of a waiting message by an \
         enrolled patient (after a warm-up; locked between). Enrollment: {reps} new patients, \
         each in a fresh browser, submitting once the strength meter accepts the password.\n"
        )?;
        journey_table(out, "unlock: password submit", UNLOCK_PHASES, &unlock)?;
        journey_table(out, "enrollment: password chosen", ENROLL_PHASES, &enroll)?;
    } else {
        writeln!(
            out,
            "(The viewer journeys were not run: `--primitives-only`.)\n"
        )?;
    }

    let mut budgets = Vec::new();
    for (i, rate) in RATES.iter().enumerate() {
        let p = p(*rate);
        let level = if *rate == 1 {
            "no throttling".to_owned()
        } else {
            format!("{rate}× CPU")
        };
        let argon = p.argon2_ours.median();
        let keygen = p.rsa_keygen_webcrypto.median();
        let r = ratio(p);
        budgets.push(Budget {
            name: format!("our WASM Argon2id ≤ 0.65× hash-wasm's time ({level})"),
            figure: format!(
                "{} ms = {r:.2}× ({} ms)",
                ms(argon),
                ms(p.argon2_hash_wasm.median())
            ),
            limit: format!("≤ 0.65× = {} ms", ms(0.65 * p.argon2_hash_wasm.median())),
            pass: r <= 0.65,
        });
        if !viewer {
            continue;
        }
        let total = total_sample(unlock[i]).median();
        budgets.push(Budget {
            name: format!("unlock: submit → plaintext ≤ Argon2id + 150 ms ({level})"),
            figure: format!("{} ms", ms(total)),
            limit: format!("≤ {} + 150 = {} ms", ms(argon), ms(argon + 150.0)),
            pass: total <= argon + 150.0,
        });
        let total = total_sample(enroll[i]).median();
        let limit = argon + keygen + 500.0;
        budgets.push(Budget {
            name: format!(
                "enrollment → first plaintext ≤ Argon2id + key generation + 500 ms ({level})"
            ),
            figure: format!("{} ms", ms(total)),
            limit: format!("≤ {} + {} + 500 = {} ms", ms(argon), ms(keygen), ms(limit)),
            pass: total <= limit,
        });
    }
    writeln!(out, "### Budgets (browser)\n")?;
    writeln!(
        out,
        "Medians. Argon2id: ours above (the code the viewer runs), at the same throttling; key \
         generation: the viewer's WebCrypto step above.\n"
    )?;
    writeln!(out, "| budget | figure | limit | result |")?;
    writeln!(out, "| --- | ---: | ---: | --- |")?;
    for b in &budgets {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            b.name,
            b.figure,
            b.limit,
            if b.pass { "PASS" } else { "**MISS**" }
        )?;
    }
    writeln!(out)
}
