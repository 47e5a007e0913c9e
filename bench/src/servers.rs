//! The bench's own HTTP servers: the no-op handler (the HTTP ceiling) and the Twilio stand-in.
//!
//! Both are served by the relay's own listener (`relay::server::serve`: hyper HTTP/1.1 with the
//! relay's head-size, header-timeout and connection limits) on a Tokio runtime of their own
//! with two worker threads, as the relay process has on this machine: so the no-op figure is
//! the same stack as the relay's minus the relay, and the load generator does not share a
//! scheduler with the server it measures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use relay::limits::Limits;
use tokio::sync::oneshot;

/// A server on its own runtime thread; stopped when dropped.
#[derive(Debug)]
pub struct Served {
    /// Where it listens.
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves `router` on a free loopback port on a new two-thread runtime.
    pub fn start(name: &str, router: Router) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a server runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("the listener joins the runtime");
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    if let Err(error) =
                        relay::server::serve(listener, router, &Limits::DEFAULT, shutdown).await
                    {
                        eprintln!("bench server failed: {error}");
                    }
                });
            })?;
        Ok(Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://address`.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The no-op: `GET /noop` answers `200` with an empty body, touching nothing.
pub fn noop() -> anyhow::Result<Served> {
    Served::start(
        "bench-noop",
        Router::new().route("/noop", get(|| async { StatusCode::OK })),
    )
}

/// The Twilio account the relay is configured with (any SID of Twilio's shape).
pub const TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000b0c";

/// A stand-in for Twilio's Messages API: `POST /2010-04-01/Accounts/{sid}/Messages.json` is
/// answered as Twilio answers an accepted SMS — `201`, a JSON message resource with a fresh
/// `SM…` sid and `"status": "queued"` — after a latency between `min` and `max` (spread evenly,
/// fixed by the call's number so runs are comparable). It counts calls per SMS body: each SMS
/// the bench queues has its own body, so a count above one is an SMS sent twice.
#[derive(Debug)]
pub struct StandIn {
    min_ms: u64,
    max_ms: u64,
    total: AtomicU64,
    log: Mutex<CallLog>,
}

/// Calls since the last [`StandIn::reset`].
#[derive(Debug, Default, Clone)]
pub struct CallLog {
    /// Calls per SMS body.
    pub per_body: HashMap<String, u32>,
    /// The first call's arrival.
    pub first: Option<Instant>,
    /// The last call's arrival.
    pub last: Option<Instant>,
    /// Calls answered other than `201` (wrong account, no body).
    pub refused: u64,
}

impl CallLog {
    /// Every call.
    pub fn calls(&self) -> u64 {
        self.per_body.values().map(|&n| u64::from(n)).sum()
    }

    /// The most calls one SMS got.
    pub fn most_per_sms(&self) -> u32 {
        self.per_body.values().copied().max().unwrap_or(0)
    }
}

impl StandIn {
    /// Starts the stand-in.
    pub fn start(min: Duration, max: Duration) -> anyhow::Result<(Arc<Self>, Served)> {
        let stand_in = Arc::new(Self {
            min_ms: min.as_millis() as u64,
            max_ms: max.as_millis().max(min.as_millis()) as u64,
            total: AtomicU64::new(0),
            log: Mutex::new(CallLog::default()),
        });
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(answer_like_twilio),
            )
            .with_state(stand_in.clone());
        Ok((stand_in, Served::start("bench-twilio", router)?))
    }

    /// Forgets the calls so far (the next measurement starts from none).
    pub fn reset(&self) {
        *self.log.lock().unwrap() = CallLog::default();
    }

    /// The calls since the last reset.
    pub fn log(&self) -> CallLog {
        self.log.lock().unwrap().clone()
    }

    /// Calls since the last reset (cheaper than [`Self::log`]).
    pub fn calls(&self) -> u64 {
        self.log.lock().unwrap().calls()
    }

    /// The latency of call `n`: `min..=max` ms, spread by a fixed mix of `n`.
    fn latency(&self, n: u64) -> Duration {
        let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        Duration::from_millis(self.min_ms + x % (self.max_ms - self.min_ms + 1))
    }
}

async fn answer_like_twilio(
    State(stand_in): State<Arc<StandIn>>,
    axum::extract::Path(sid): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let n = stand_in.total.fetch_add(1, Ordering::SeqCst);
    let sms = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "Body")
        .map(|(_, value)| value.into_owned());
    let accepted = sid == TWILIO_ACCOUNT_SID && sms.is_some();
    {
        let mut log = stand_in.log.lock().unwrap();
        let now = Instant::now();
        log.first.get_or_insert(now);
        log.last = Some(now);
        match sms {
            Some(sms) if accepted => *log.per_body.entry(sms).or_default() += 1,
            _ => log.refused += 1,
        }
    }
    tokio::time::sleep(stand_in.latency(n)).await;
    if !accepted {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"code":21604,"message":"A 'Body' parameter is required.","status":400}"#.to_owned(),
        );
    }
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            r#"{{"sid":"SM{n:032x}","account_sid":"{sid}","status":"queued","num_segments":"1","direction":"outbound-api","error_code":null,"error_message":null,"uri":"/2010-04-01/Accounts/{sid}/Messages/SM{n:032x}.json"}}"#
        ),
    )
}
