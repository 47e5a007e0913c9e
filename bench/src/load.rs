//! The load generator: a fixed number of connections, each sending its next request as soon as
//! the previous one is answered (closed loop, like `wrk`), for a warm-up and then a fixed
//! measured duration.
//!
//! Why closed loop: the budgets are about what the relay sustains with N clients in flight
//! (requests/s at concurrency 1, 16, 64), and a closed loop never queues requests in the client,
//! so a latency is the relay's, not the generator's backlog. Every request is timed from just
//! before it is sent to the end of its body; only requests started after the warm-up count
//! towards the rate and the latencies, but an error in the warm-up still counts as an error.
//!
//! One `reqwest` client (HTTP/1.1, keep-alive) for all connections: it holds one connection per
//! task in flight, so concurrency N is N keep-alive connections, as `wrk -c N` opens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::probe::{Cpu, Probe};

/// How long a cell runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Requests before the measurement (connections opened, caches and pools warm).
    pub warmup: Duration,
    /// The measured duration.
    pub duration: Duration,
}

impl Timing {
    /// Warm-up and measurement together.
    pub fn total(&self) -> Duration {
        self.warmup + self.duration
    }
}

/// What a request builder hands the generator for one request: `None` when it has nothing more
/// to send (a pool of pre-built bodies ran out), which ends that connection's loop.
pub type MakeRequest =
    Arc<dyn Fn(&reqwest::Client) -> Option<reqwest::RequestBuilder> + Send + Sync>;

/// The figures of one cell.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Connections in flight.
    pub concurrency: usize,
    /// Requests started in the measured window.
    pub requests: u64,
    /// From the window's start to the last measured answer.
    pub elapsed: Duration,
    /// Latencies of the measured requests, sorted (microseconds).
    pub latencies_us: Vec<u32>,
    /// Failed requests (warm-up included), by cause: an HTTP status (`"500"`) or `"transport"`.
    pub errors: BTreeMap<String, u64>,
    /// Whether a connection ran out of requests to send before the end.
    pub exhausted: bool,
    /// What the probed process (the relay) used meanwhile, if it was probed.
    pub target: Option<Cpu>,
    /// CPU of this process (the load generator, and whatever else runs in it) meanwhile.
    pub generator: Option<Cpu>,
}

impl Outcome {
    /// Measured requests per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q`-quantile latency (nearest rank), milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    /// Every failed request.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// `0`, or the count with its causes (`3 (500 ×2, transport ×1)`).
    pub fn errors_text(&self) -> String {
        let total = self.error_count();
        if total == 0 {
            return "0".into();
        }
        let causes: Vec<String> = self
            .errors
            .iter()
            .map(|(cause, n)| format!("{cause} ×{n}"))
            .collect();
        format!("{total} ({})", causes.join(", "))
    }
}

/// The `q`-quantile (nearest rank) of sorted microsecond samples, in milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

/// A client for the load: keep-alive, no idle limit, `TCP_NODELAY`, a 10 s request timeout (an
/// answer slower than that is an error, `transport`).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client builds")
}

struct Worker {
    requests: u64,
    last_answer: Option<Instant>,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    exhausted: bool,
}

/// Runs one cell: `concurrency` connections sending `make`'s requests for `timing`, probing
/// `probe` (the relay process) for CPU meanwhile.
pub async fn run(
    client: &reqwest::Client,
    concurrency: usize,
    timing: Timing,
    make: MakeRequest,
    probe: Option<&Probe>,
) -> Outcome {
    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let make = make.clone();
            tokio::spawn(async move { work(client, make, measure_from, end).await })
        })
        .collect();
    // The CPU figures cover the measured window only.
    tokio::time::sleep_until(measure_from.into()).await;
    let target_before = probe.and_then(Probe::cpu_ticks);
    let self_before = Probe::own().cpu_ticks();
    let window_start = Instant::now();
    let mut outcome = Outcome {
        concurrency,
        ..Outcome::default()
    };
    let mut last_answer = measure_from;
    for worker in workers {
        let worker = worker.await.expect("a load task panicked");
        outcome.requests += worker.requests;
        outcome.latencies_us.extend(worker.latencies_us);
        for (cause, n) in worker.errors {
            *outcome.errors.entry(cause).or_default() += n;
        }
        outcome.exhausted |= worker.exhausted;
        if let Some(at) = worker.last_answer {
            last_answer = last_answer.max(at);
        }
    }
    let window = window_start.elapsed();
    outcome.target = match (probe, target_before) {
        (Some(probe), Some(before)) => probe.cpu_since(before, window),
        _ => None,
    };
    outcome.generator = self_before.and_then(|before| Probe::own().cpu_since(before, window));
    outcome.elapsed = last_answer.saturating_duration_since(measure_from);
    outcome.latencies_us.sort_unstable();
    outcome
}

async fn work(
    client: reqwest::Client,
    make: MakeRequest,
    measure_from: Instant,
    end: Instant,
) -> Worker {
    let mut worker = Worker {
        requests: 0,
        last_answer: None,
        latencies_us: Vec::new(),
        errors: BTreeMap::new(),
        exhausted: false,
    };
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let Some(request) = make(&client) else {
            worker.exhausted = true;
            break;
        };
        let failure = match request.send().await {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) if status.is_success() => None,
                    Ok(_) => Some(status.as_u16().to_string()),
                    Err(_) => Some("transport".to_owned()),
                }
            }
            Err(_) => Some("transport".to_owned()),
        };
        let answered = Instant::now();
        if let Some(cause) = failure {
            *worker.errors.entry(cause).or_default() += 1;
        }
        if sent >= measure_from {
            worker.requests += 1;
            worker.last_answer = Some(answered);
            let us = answered.duration_since(sent).as_micros();
            worker
                .latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
    worker
}
