//! `securetext-bench`: the relay half of issue 11's benchmark command.
//!
//! It starts the real release relay (`target/release/relay serve`, through the test kit's
//! `RelayProcess`) on a random loopback port, once per backend — SQLite in a temporary directory
//! (WAL, `synchronous=FULL`, as the relay opens it) and PostgreSQL at 127.0.0.1:5432 — and
//! measures, side by side in one run:
//!
//! 1. the limits the relay works within: a no-op handler on the relay's own HTTP stack, and a
//!    raw insert loop of the message row at the relay's durability (one row per commit);
//! 2. `POST /v1/messages` (pre-built first-contact envelopes) and `GET /v1/viewer/messages`
//!    (an unlocked session) at concurrency 1, 16 and 64: requests/s, p50, p99, errors, and the
//!    relay process's peak resident memory;
//! 3. the SMS outbox draining a backlog to a Twilio stand-in, each SMS counted;
//! 4. the time to exit after `SIGTERM` with a backlog, and that nothing was sent twice.
//!
//! It prints markdown to standard output (progress goes to standard error): one section per
//! measurement and a final table of the budgets of issue 11, item 6, each PASS or MISS. A MISS
//! is a finding, not a failure: the exit status is 0 unless a measurement could not be made.
//! Timings belong here, never in tests (which would fail on a busy machine).
//!
//! `scripts/bench` builds the release binaries, runs this and writes `docs/BENCHMARKS.md`.

mod cells;
mod load;
mod outbox;
mod probe;
mod report;
mod rig;
mod servers;
mod storage;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use relay::store::Backend;

use crate::cells::RelayCell;
use crate::load::{Outcome, Timing};
use crate::outbox::{Drain, Shutdown};
use crate::report::{Budgets, Table, Verdict, cpu, mib, ms, thousands};
use crate::rig::Rig;
use crate::storage::InsertRate;

/// Benchmarks the release relay against its limits and prints markdown tables.
#[derive(Debug, Parser)]
#[command(name = "securetext-bench")]
struct Args {
    /// Shorter cells and backlogs, for trying the bench out (figures are rougher).
    #[arg(long)]
    quick: bool,
    /// The relay binary; by default `relay` beside this binary (`target/release/relay`).
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Backends to measure (repeatable); by default both.
    #[arg(long, value_enum)]
    backend: Vec<BackendArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

/// Durations and sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    timing: Timing,
    concurrencies: [usize; 3],
    backlog: usize,
    shutdown_backlog: usize,
    calls_before_signal: u64,
    drain_limit: Duration,
    shutdown_limit: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let (warmup, duration, backlog) = match quick {
            true => (0.5, 2.0, 1000),
            false => (2.0, 8.0, 5000),
        };
        Self {
            timing: Timing {
                warmup: Duration::from_secs_f64(warmup),
                duration: Duration::from_secs_f64(duration),
            },
            concurrencies: [1, 16, 64],
            backlog,
            shutdown_backlog: backlog,
            calls_before_signal: if quick { 100 } else { 300 },
            drain_limit: Duration::from_secs(60),
            shutdown_limit: Duration::from_secs(30),
        }
    }
}

/// The budgets of issue 11, item 6.
const P99_LIMIT_MS: f64 = 50.0;
const OUTBOX_LIMIT_PER_S: f64 = 500.0;
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Everything measured on one backend; filled as it goes, so a failure keeps what came before.
#[derive(Debug, Default)]
struct BackendRun {
    raw: Option<InsertRate>,
    errors: Vec<String>,
    start_time: Option<Duration>,
    idle_rss_kib: Option<u64>,
    post: Vec<RelayCell>,
    get: Vec<RelayCell>,
    drain: Option<Drain>,
    shutdown: Option<Shutdown>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("securetext-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("securetext-bench: some measurements failed (see the tables)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("securetext-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(what: impl std::fmt::Display) {
    eprintln!("[bench] {what}");
}

fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

/// Runs everything and prints it; `false` if a measurement failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let plan = Plan::new(args.quick);
    let binary = match args.relay {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no directory around this binary"))?
            .join("relay"),
    };
    anyhow::ensure!(
        binary.is_file(),
        "no relay binary at {} (cargo build --release -p relay)",
        binary.display()
    );
    let backends: Vec<Backend> = if args.backend.is_empty() {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        args.backend
            .iter()
            .map(|b| match b {
                BackendArg::Sqlite => Backend::Sqlite,
                BackendArg::Postgres => Backend::Postgres,
            })
            .collect()
    };

    // A first-contact submission's sealed envelope, for the raw rows' size.
    let envelope_bytes = {
        let keys = relay::testkit::keys();
        let organisation = shared::ids::OrganisationId::random(&mut rand_core::OsRng);
        let sample = cells::build_submissions(&keys, organisation, "size", 1);
        let value: serde_json::Value = serde_json::from_slice(&sample[0])?;
        // The relay stores the envelope's JSON sealed under a row key (AES-GCM: +28 bytes).
        serde_json::to_vec(&value["envelope"])?.len() + 28
    };

    // 1. The limits: the no-op handler, then one message row per commit on each backend.
    let mut noop = Vec::new();
    {
        let server = servers::noop()?;
        for &c in &plan.concurrencies {
            progress(format!("no-op handler, concurrency {c}"));
            noop.push(cells::noop(&server.base(), c, plan.timing).await);
        }
    }
    let mut runs: Vec<(Backend, Arc<Mutex<BackendRun>>)> = Vec::new();
    for &backend in &backends {
        let run = Arc::new(Mutex::new(BackendRun::default()));
        progress(format!("{}: raw insert loop", name(backend)));
        let timing = plan.timing;
        match tokio::spawn(storage::insert_loop(backend, timing, envelope_bytes)).await {
            Ok(Ok(raw)) => run.lock().unwrap().raw = Some(raw),
            Ok(Err(error)) => run
                .lock()
                .unwrap()
                .errors
                .push(format!("raw inserts: {error:#}")),
            Err(panic) => run
                .lock()
                .unwrap()
                .errors
                .push(format!("raw inserts: {panic}")),
        }
        runs.push((backend, run));
    }

    // 2–4. The relay process, one backend at a time.
    for (backend, run) in &runs {
        let task = tokio::spawn(measure_backend(*backend, binary.clone(), plan, run.clone()));
        if let Err(panic) = task.await {
            run.lock()
                .unwrap()
                .errors
                .push(format!("stopped by a failure: {panic}"));
        }
    }

    let runs: Vec<(Backend, BackendRun)> = runs
        .into_iter()
        .map(|(b, r)| (b, std::mem::take(&mut *r.lock().unwrap())))
        .collect();
    print_report(&plan, &binary, &noop, &runs, started.elapsed());
    Ok(runs.iter().all(|(_, r)| r.errors.is_empty()))
}

/// The relay-process measurements of one backend.
async fn measure_backend(
    backend: Backend,
    binary: PathBuf,
    plan: Plan,
    run: Arc<Mutex<BackendRun>>,
) {
    let fail = |what: &str, error: anyhow::Error| {
        progress(format!("{}: {what} failed: {error:#}", name(backend)));
        run.lock()
            .unwrap()
            .errors
            .push(format!("{what}: {error:#}"));
    };
    progress(format!("{}: starting the relay process", name(backend)));
    let mut rig = match Rig::start(backend, &binary).await {
        Ok(rig) => rig,
        Err(error) => return fail("set-up", error),
    };
    {
        let mut run = run.lock().unwrap();
        run.start_time = Some(rig.start_time);
        run.idle_rss_kib = rig.probe().ok().and_then(|p| p.rss_kib());
    }
    let raw_rate = run
        .lock()
        .unwrap()
        .raw
        .as_ref()
        .map_or(0.0, InsertRate::rate);
    let mut estimate = 1000.0_f64.max(2.0 * raw_rate);
    for &c in &plan.concurrencies {
        // Enough pre-built bodies for the cell: well above the best rate seen so far.
        let count = (estimate.min(12_000.0) * plan.timing.total().as_secs_f64()).ceil() as usize;
        progress(format!(
            "{}: POST /v1/messages, concurrency {c} ({count} bodies)",
            name(backend)
        ));
        match cells::submissions(&rig, c, plan.timing, count, plan.drain_limit).await {
            Ok(cell) => {
                estimate = estimate.max(3.0 * cell.load.rate());
                run.lock().unwrap().post.push(cell);
            }
            Err(error) => fail(&format!("POST c={c}"), error),
        }
    }
    for &c in &plan.concurrencies {
        progress(format!(
            "{}: GET /v1/viewer/messages, concurrency {c}",
            name(backend)
        ));
        match cells::viewer_reads(&rig, c, plan.timing, plan.drain_limit).await {
            Ok(cell) => run.lock().unwrap().get.push(cell),
            Err(error) => fail(&format!("GET c={c}"), error),
        }
    }
    progress(format!(
        "{}: outbox drain of {} SMS",
        name(backend),
        plan.backlog
    ));
    match outbox::drain(&rig, plan.backlog, plan.drain_limit).await {
        Ok(drain) => run.lock().unwrap().drain = Some(drain),
        Err(error) => fail("outbox drain", error),
    }
    progress(format!(
        "{}: SIGTERM with a backlog of {}",
        name(backend),
        plan.shutdown_backlog
    ));
    match outbox::shutdown(
        &mut rig,
        plan.shutdown_backlog,
        plan.calls_before_signal,
        plan.shutdown_limit,
        plan.drain_limit,
    )
    .await
    {
        Ok(shutdown) => run.lock().unwrap().shutdown = Some(shutdown),
        Err(error) => fail("shutdown", error),
    }
    rig.finish().await;
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn print_report(
    plan: &Plan,
    binary: &std::path::Path,
    noop: &[Outcome],
    runs: &[(Backend, BackendRun)],
    took: Duration,
) {
    let t = plan.timing;
    println!("## Relay\n");
    println!(
        "The release relay (`{}` `serve`) as a child process on a random loopback port, a fresh \
         database per backend: SQLite in a temporary directory (WAL, `synchronous=FULL`, as the \
         relay opens it), PostgreSQL at 127.0.0.1:5432. Load: `securetext-bench`'s own \
         generator (Rust, reqwest, HTTP/1.1 keep-alive, closed loop: each connection sends its \
         next request when the last is answered), {:.1} s warm-up then {:.1} s measured per \
         cell; latencies from send to the last byte of the answer; an error is any non-2xx \
         answer or a transport failure (10 s timeout), warm-up included. Peak RSS is the \
         relay process's `VmHWM`, reset at the start of each cell. CPU is percent of one core \
         (two cores: 200 % at most, shared by the relay and the bench).\n",
        binary
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("relay"),
        t.warmup.as_secs_f64(),
        t.duration.as_secs_f64(),
    );
    println!(
        "Relay settings for the bench: `RELAY_SEND_RATE_PER_MINUTE={}` and \
         `RELAY_OPEN_RATE_PER_MINUTE={}` (rate limits out of the way), \
         `RELAY_SMS_PROVIDER=twilio` with `RELAY_TWILIO_BASE_URL` at the bench's Twilio \
         stand-in (answers `201` with a Twilio message resource after {}–{} ms), \
         `RELAY_METRICS_LISTEN` on loopback (to read `securetext_submission_batches_total`); \
         everything else at its default (`RELAY_LOG=warn`, 512 connections, SMS concurrency \
         32 for Twilio).\n",
        rig::SEND_RATE_PER_MINUTE,
        rig::OPEN_RATE_PER_MINUTE,
        rig::TWILIO_LATENCY_MS.0,
        rig::TWILIO_LATENCY_MS.1,
    );

    println!("### 1. Limits\n");
    println!(
        "No-op handler: `GET /noop` answering `200` with an empty body, served by the relay's \
         own listener (`relay::server::serve`, hyper HTTP/1.1) on a two-thread runtime inside \
         the bench process, measured by the same generator. CPU is the bench process's \
         (server and generator together).\n"
    );
    let mut table = Table::new(&[
        ">concurrency",
        ">req/s",
        ">p50 ms",
        ">p99 ms",
        ">errors",
        ">bench CPU",
    ]);
    for outcome in noop {
        let mut row = vec![outcome.concurrency.to_string()];
        row.extend(report::load_cells(outcome));
        row.push(cpu(outcome.generator.map(|c| c.percent)));
        table.row(row);
    }
    println!("{}", table.render());
    println!(
        "Storage: the message row the relay writes (every column it fills, the sealed envelope \
         of a first-contact message's size) inserted by one connection, one row per \
         transaction, through `relay::store::Store` (the relay's connection settings), for \
         {:.1} s after {:.1} s warm-up.\n",
        t.duration.as_secs_f64(),
        t.warmup.as_secs_f64()
    );
    let mut table = Table::new(&[
        "backend",
        "durability",
        ">rows/s",
        ">p50 ms",
        ">p99 ms",
        ">rows",
        ">envelope bytes",
    ]);
    for (backend, run) in runs {
        match &run.raw {
            Some(raw) => table.row(vec![
                name(*backend).into(),
                format!("`{}`", raw.durability),
                thousands(raw.rate()),
                ms(raw.quantile_ms(0.5)),
                ms(raw.quantile_ms(0.99)),
                thousands(raw.rows as f64),
                thousands(raw.envelope_bytes as f64),
            ]),
            None => table.row(vec![name(*backend).into(), "not measured".into()]),
        }
    }
    println!("{}", table.render());

    println!("### 2. Submissions and viewer reads\n");
    println!(
        "`POST /v1/messages`: valid first-contact envelopes (sealed to the organisation's key \
         only), each with its own message id and idempotency key, to 1,000 patients' numbers, \
         built and serialised before the cell. Each cell starts with an empty outbox; the SMS \
         its submissions queue go out to the stand-in during the cell, as they would in use. \
         *per commit* is accepted submissions over durable commits (group commit), from the \
         relay's metrics.\n"
    );
    let mut table = Table::new(&[
        "backend",
        ">concurrency",
        ">req/s",
        ">p50 ms",
        ">p99 ms",
        ">errors",
        ">per commit",
        ">relay CPU",
        ">bench CPU",
        ">relay peak RSS",
    ]);
    for (backend, run) in runs {
        for cell in &run.post {
            let mut row = vec![name(*backend).into(), cell.load.concurrency.to_string()];
            row.extend(report::load_cells(&cell.load));
            row.push(cell.per_commit.map_or("—".into(), |p| format!("{p:.1}")));
            row.push(cpu(cell.load.target.map(|c| c.percent)));
            row.push(cpu(cell.load.generator.map(|c| c.percent)));
            row.push(mib(cell.peak_rss_kib));
            table.row(row);
        }
    }
    println!("{}", table.render());
    println!(
        "`GET /v1/viewer/messages`: one patient's unlocked session (cookie), a list of 5 \
         messages (one first-contact message waiting for its re-wrap, four sealed to the \
         patient).\n"
    );
    let mut table = Table::new(&[
        "backend",
        ">concurrency",
        ">req/s",
        ">p50 ms",
        ">p99 ms",
        ">errors",
        ">relay CPU",
        ">bench CPU",
        ">relay peak RSS",
    ]);
    for (backend, run) in runs {
        for cell in &run.get {
            let mut row = vec![name(*backend).into(), cell.load.concurrency.to_string()];
            row.extend(report::load_cells(&cell.load));
            row.push(cpu(cell.load.target.map(|c| c.percent)));
            row.push(cpu(cell.load.generator.map(|c| c.percent)));
            row.push(mib(cell.peak_rss_kib));
            table.row(row);
        }
    }
    println!("{}", table.render());
    let mut table = Table::new(&[
        "backend",
        ">relay start (spawn → ready)",
        ">relay RSS at rest",
        "SMS drained before the cells (POST c=1, 16, 64; GET c=1, 16, 64)",
    ]);
    for (backend, run) in runs {
        let drained: Vec<String> = run
            .post
            .iter()
            .chain(&run.get)
            .map(|c| {
                c.drained_before
                    .map_or("not empty".into(), |d| format!("{:.1} s", d.as_secs_f64()))
            })
            .collect();
        table.row(vec![
            name(*backend).into(),
            run.start_time
                .map_or("—".into(), |d| format!("{} ms", d.as_millis())),
            mib(run.idle_rss_kib),
            drained.join(", "),
        ]);
    }
    println!("{}", table.render());

    println!("### 3. SMS outbox drain\n");
    println!(
        "A backlog queued in one transaction with the outbox empty; the rate is the backlog \
         over the time from the stand-in's first call to an empty outbox (every result \
         recorded). The stand-in counts calls per SMS body (each SMS has its own).\n"
    );
    let mut table = Table::new(&[
        "backend",
        ">backlog",
        ">SMS/s",
        ">first call → empty",
        ">queued → first call",
        ">calls",
        "each SMS once",
        ">failed",
        ">relay CPU",
        ">relay peak RSS",
    ]);
    for (backend, run) in runs {
        if let Some(d) = &run.drain {
            table.row(vec![
                name(*backend).into(),
                thousands(d.backlog as f64),
                d.rate().map_or("—".into(), thousands),
                match (d.first_call_to_empty, d.first_call_to_limit) {
                    (Some(t), _) => secs(t),
                    (None, Some(t)) => format!("not empty after {} ({} sent)", secs(t), d.calls),
                    (None, None) => "no call".into(),
                },
                d.queued_to_first_call
                    .map_or("—".into(), |q| format!("{} ms", q.as_millis())),
                thousands(d.calls as f64),
                if d.exactly_once() {
                    "yes".into()
                } else if d.most_per_sms <= 1 && d.distinct < d.backlog {
                    format!(
                        "none twice, but only {} of {} sent",
                        thousands(d.distinct as f64),
                        thousands(d.backlog as f64)
                    )
                } else {
                    format!(
                        "**no** ({} distinct, at most {} calls for one)",
                        d.distinct, d.most_per_sms
                    )
                },
                d.failed_rows.to_string(),
                cpu(d.cpu_percent),
                mib(d.peak_rss_kib),
            ]);
        }
    }
    println!("{}", table.render());

    println!("### 4. Shutdown with a backlog\n");
    println!(
        "A fresh backlog; `SIGTERM` once the stand-in has had {} calls; the time until the \
         process has exited. Then the stand-in's calls against the outbox rows recorded \
         `sent`, and a restart that sends the rest: each SMS once over both runs.\n",
        plan.calls_before_signal
    );
    let mut table = Table::new(&[
        "backend",
        ">backlog",
        ">calls at SIGTERM",
        ">exit after",
        "exit status",
        ">calls by exit",
        ">recorded sent",
        ">pending at exit",
        ">most calls per SMS",
        ">pending before",
        "after restart",
    ]);
    for (backend, run) in runs {
        if let Some(s) = &run.shutdown {
            table.row(vec![
                name(*backend).into(),
                thousands(s.backlog as f64),
                thousands(s.calls_at_signal as f64),
                s.exit_after
                    .map_or("still running".into(), |d| format!("{} ms", d.as_millis())),
                s.status.clone(),
                thousands(s.calls_at_exit as f64),
                thousands(s.recorded_sent as f64),
                thousands(s.pending_at_exit as f64),
                s.most_per_sms.to_string(),
                thousands(s.pending_before as f64),
                s.after_restart
                    .map_or("did not drain".into(), |(distinct, most, calls, took)| {
                        format!(
                            "{} calls for {} SMS, at most {} each, in {:.1} s",
                            thousands(calls as f64),
                            thousands(distinct as f64),
                            most,
                            took.as_secs_f64()
                        )
                    }),
            ]);
        }
    }
    println!("{}", table.render());

    let errors: Vec<String> = runs
        .iter()
        .flat_map(|(b, r)| r.errors.iter().map(move |e| format!("- {}: {e}", name(*b))))
        .collect();
    if !errors.is_empty() {
        println!("### Measurements that failed\n");
        println!("{}\n", errors.join("\n"));
    }

    println!("### Budgets (issue 11, item 6)\n");
    let budgets = budgets(runs);
    println!("{}", budgets.render());
    println!(
        "{} of {} budgets met; relay bench took {:.0} s.\n",
        budgets.passed(),
        budgets.passed() + budgets.missed(),
        took.as_secs_f64()
    );
}

fn budgets(runs: &[(Backend, BackendRun)]) -> Budgets {
    let mut budgets = Budgets::default();
    for (backend, run) in runs {
        let b = name(*backend);
        let c64 = run.post.iter().find(|c| c.load.concurrency == 64);
        let raw = run.raw.as_ref().map(InsertRate::rate);
        match (c64, raw) {
            (Some(cell), Some(raw)) => budgets.add(
                format!("{b}: submissions/s at c=64 ≥ raw single-insert rows/s"),
                format!("{} req/s", thousands(cell.load.rate())),
                format!("≥ {} rows/s", thousands(raw)),
                Verdict::of(cell.load.rate() >= raw),
            ),
            _ => budgets.unmeasured(
                format!("{b}: submissions/s at c=64 ≥ raw single-insert rows/s"),
                "raw rows/s".into(),
            ),
        }
        match c64 {
            Some(cell) => budgets.add(
                format!("{b}: submission p99 at c=64"),
                format!("{} ms", ms(cell.load.quantile_ms(0.99))),
                format!("≤ {P99_LIMIT_MS:.0} ms"),
                Verdict::of(cell.load.quantile_ms(0.99) <= P99_LIMIT_MS),
            ),
            None => budgets.unmeasured(
                format!("{b}: submission p99 at c=64"),
                format!("≤ {P99_LIMIT_MS:.0} ms"),
            ),
        }
        let cells: Vec<&RelayCell> = run.post.iter().chain(&run.get).collect();
        if cells.len() == 6 {
            let errors: u64 = cells.iter().map(|c| c.load.error_count()).sum();
            budgets.add(
                format!("{b}: errors, POST and GET at c=1, 16, 64"),
                errors.to_string(),
                "0".into(),
                Verdict::of(errors == 0),
            );
        } else {
            budgets.unmeasured(
                format!("{b}: errors, POST and GET at c=1, 16, 64"),
                "0".into(),
            );
        }
        let peak = cells
            .iter()
            .filter_map(|c| c.peak_rss_kib)
            .chain(run.drain.as_ref().and_then(|d| d.peak_rss_kib))
            .max();
        match peak {
            Some(peak) if cells.len() == 6 => budgets.add(
                format!("{b}: relay peak RSS (every POST, GET and drain cell)"),
                mib(Some(peak)),
                format!("≤ {}", mib(Some(RSS_LIMIT_KIB))),
                Verdict::of(peak <= RSS_LIMIT_KIB),
            ),
            _ => budgets.unmeasured(
                format!("{b}: relay peak RSS"),
                format!("≤ {}", mib(Some(RSS_LIMIT_KIB))),
            ),
        }
        match run.drain.as_ref().and_then(|d| d.rate().map(|r| (d, r))) {
            Some((drain, rate)) => {
                budgets.add(
                    format!("{b}: outbox drain to the Twilio stand-in"),
                    format!("{} SMS/s", thousands(rate)),
                    format!("≥ {OUTBOX_LIMIT_PER_S:.0} SMS/s"),
                    Verdict::of(rate >= OUTBOX_LIMIT_PER_S),
                );
                budgets.add(
                    format!("{b}: outbox drain, each SMS sent once"),
                    format!(
                        "{} calls, {} SMS, at most {} each",
                        drain.calls, drain.distinct, drain.most_per_sms
                    ),
                    format!("{} calls, 1 each", drain.backlog),
                    Verdict::of(drain.exactly_once()),
                );
            }
            None => budgets.unmeasured(
                format!("{b}: outbox drain to the Twilio stand-in"),
                format!("≥ {OUTBOX_LIMIT_PER_S:.0} SMS/s"),
            ),
        }
        match &run.shutdown {
            Some(s) => {
                budgets.add(
                    format!("{b}: exit after SIGTERM with a backlog"),
                    s.exit_after
                        .map_or("still running".into(), |d| format!("{} ms", d.as_millis())),
                    format!("≤ {} ms", SHUTDOWN_LIMIT.as_millis()),
                    Verdict::of(s.exit_after.is_some_and(|d| d <= SHUTDOWN_LIMIT)),
                );
                budgets.add(
                    format!("{b}: shutdown and restart, nothing sent twice"),
                    format!(
                        "at most {} call per SMS; {} calls, {} recorded sent",
                        s.most_per_sms.max(s.after_restart.map_or(0, |r| r.1)),
                        s.calls_at_exit,
                        s.recorded_sent
                    ),
                    "1 each; every call recorded".into(),
                    Verdict::of(s.nothing_twice()),
                );
            }
            None => budgets.unmeasured(
                format!("{b}: exit after SIGTERM with a backlog"),
                format!("≤ {} ms", SHUTDOWN_LIMIT.as_millis()),
            ),
        }
    }
    budgets
}
