//! The SMS outbox against the Twilio stand-in: how fast a backlog drains, and how fast the relay
//! stops with one.
//!
//! Drain: with the outbox empty, a backlog of distinct SMS is queued in one transaction (as
//! `TestRelay::queue_sms` writes them: one first-contact message's SMS and outbox rows for the
//! rest); the rate is the backlog over the time from the stand-in's first call to the moment the
//! outbox has nothing pending (every result recorded), polled every 20 ms. The stand-in counts
//! calls per SMS body: each SMS must have been sent exactly once.
//!
//! Shutdown: a fresh backlog, `SIGTERM` once the stand-in has had a few hundred calls, the time
//! until the process has exited (its `/proc` entry a zombie or gone). Then: nothing sent twice,
//! every SMS the stand-in got recorded `sent` (so the next start does not send it again), the
//! exit status, and after a restart the rest of the backlog sent, each SMS exactly once over
//! both runs.

use std::time::{Duration, Instant};

use crate::rig::Rig;

/// A backlog drained.
#[derive(Debug, Clone)]
pub struct Drain {
    /// SMS queued.
    pub backlog: usize,
    /// Calls the stand-in got.
    pub calls: u64,
    /// Distinct SMS among them.
    pub distinct: usize,
    /// The most calls one SMS got.
    pub most_per_sms: u32,
    /// From the first call to an empty outbox; `None` if it did not empty within the limit.
    pub first_call_to_empty: Option<Duration>,
    /// From the first call to the limit, when the outbox did not empty by then.
    pub first_call_to_limit: Option<Duration>,
    /// From the queueing commit to the first call (the worker's poll or wake-up).
    pub queued_to_first_call: Option<Duration>,
    /// Outbox rows marked failed.
    pub failed_rows: i64,
    /// The relay's peak resident memory while draining, KiB.
    pub peak_rss_kib: Option<u64>,
    /// The relay's CPU while draining, percent of one core.
    pub cpu_percent: Option<f64>,
}

impl Drain {
    /// SMS per second.
    pub fn rate(&self) -> Option<f64> {
        match (self.first_call_to_empty, self.first_call_to_limit) {
            (Some(d), _) => Some(self.backlog as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE)),
            // Not drained in time: the SMS sent so far over the time they took.
            (None, Some(d)) => Some(self.calls as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE)),
            (None, None) => None,
        }
    }

    /// Each SMS sent exactly once.
    pub fn exactly_once(&self) -> bool {
        self.distinct == self.backlog && self.most_per_sms == 1 && self.calls == self.backlog as u64
    }
}

/// Queues `backlog` SMS and measures the drain (at most `limit`).
pub async fn drain(rig: &Rig, backlog: usize, limit: Duration) -> anyhow::Result<Drain> {
    anyhow::ensure!(
        rig.wait_for_empty_outbox(limit).await?.is_some(),
        "the outbox did not empty before the drain"
    );

    let failed_before = rig.outbox_rows("failed").await?;
    let probe = rig.probe()?;
    probe.reset_peak();
    rig.stand_in.reset();
    rig.relay
        .queue_sms(&rig.clinic, "+15550400001", backlog)
        .await;
    let queued = Instant::now();
    let cpu_before = probe.cpu_ticks();
    let emptied = loop {
        if rig.stand_in.calls() > 0 && rig.pending().await? == 0 {
            break Some(Instant::now());
        }
        if queued.elapsed() >= limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_before.and_then(|before| probe.cpu_since(before, queued.elapsed()));
    let log = rig.stand_in.log();
    Ok(Drain {
        backlog,
        calls: log.calls(),
        distinct: log.per_body.len(),
        most_per_sms: log.most_per_sms(),
        first_call_to_empty: emptied.zip(log.first).map(|(e, f)| e.duration_since(f)),
        first_call_to_limit: match emptied {
            Some(_) => None,
            None => log.first.map(|f| f.elapsed()),
        },
        queued_to_first_call: log.first.map(|f| f.duration_since(queued)),
        failed_rows: rig.outbox_rows("failed").await? - failed_before,
        peak_rss_kib: probe.peak_rss_kib(),
        cpu_percent: cpu.map(|c| c.percent),
    })
}

/// A `SIGTERM` with a backlog.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// SMS queued.
    pub backlog: usize,
    /// Calls the stand-in had when the signal was sent.
    pub calls_at_signal: u64,
    /// Time from the signal to the exit; `None` if the process was still running at the limit
    /// (then it was killed).
    pub exit_after: Option<Duration>,
    /// The exit status, as text.
    pub status: String,
    /// Calls the stand-in had got once the process had gone (a little later, to catch stragglers).
    pub calls_at_exit: u64,
    /// The backlog's rows recorded `sent` at exit.
    pub recorded_sent: i64,
    /// The backlog's rows still pending at exit.
    pub pending_at_exit: i64,
    /// The most calls one SMS got in this run.
    pub most_per_sms: u32,
    /// SMS still pending from before (a drain that had not finished).
    pub pending_before: i64,
    /// After a restart sent the rest: distinct SMS over both runs, the most calls one got, all
    /// calls, and how long the restarted relay took to send the rest.
    pub after_restart: Option<(usize, u32, u64, Duration)>,
}

impl Shutdown {
    /// Nothing sent twice, in the run and over the restart, and every call recorded.
    pub fn nothing_twice(&self) -> bool {
        let recorded = self.recorded_sent == self.calls_at_exit as i64;
        let restart = self
            .after_restart
            .is_none_or(|(distinct, most, calls, _)| most == 1 && calls == distinct as u64);
        self.most_per_sms <= 1 && recorded && restart
    }
}

/// Queues `backlog`, sends `SIGTERM` once `calls_first` SMS went out, times the exit (at most
/// `limit`), checks, restarts and lets the rest drain (at most `drain_limit`).
pub async fn shutdown(
    rig: &mut Rig,
    backlog: usize,
    calls_first: u64,
    limit: Duration,
    drain_limit: Duration,
) -> anyhow::Result<Shutdown> {
    // A backlog the drain left (an outbox slower than its limit) stays: the checks below count
    // calls per SMS and rows recorded since this point, whichever backlog they belong to.
    let pending_before = rig.pending().await?;
    let sent_before = rig.outbox_rows("sent").await?;
    rig.stand_in.reset();
    rig.relay
        .queue_sms(&rig.clinic, "+15550400002", backlog)
        .await;
    let waiting = Instant::now();
    while rig.stand_in.calls() < calls_first {
        anyhow::ensure!(
            waiting.elapsed() < drain_limit,
            "the relay did not start sending the backlog"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let probe = rig.probe()?;
    let pid = rig.process.pid().unwrap_or_default().to_string();
    let calls_at_signal = rig.stand_in.calls();
    let signalled = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    anyhow::ensure!(sent.success(), "kill -TERM {pid}");
    let exit_after = loop {
        match probe.state() {
            None | Some('Z') | Some('X') => break Some(signalled.elapsed()),
            _ if signalled.elapsed() >= limit => break None,
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    let status = match exit_after {
        // Reaps the exited process (a second SIGTERM to a zombie does nothing).
        Some(_) => format!("{}", rig.process.terminate(Duration::from_secs(5)).await),
        None => {
            rig.process.kill();
            "still running; killed".to_owned()
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = rig.stand_in.log();
    let recorded_sent = rig.outbox_rows("sent").await? - sent_before;
    let pending_at_exit = rig.pending().await?;

    // The next start sends the rest; each SMS once over both runs.
    let restarted = Instant::now();
    rig.process.restart().await;
    let after_restart = rig.wait_for_empty_outbox(drain_limit).await?.map(|_| {
        let all = rig.stand_in.log();
        (
            all.per_body.len(),
            all.most_per_sms(),
            all.calls(),
            restarted.elapsed(),
        )
    });
    Ok(Shutdown {
        backlog,
        calls_at_signal,
        exit_after,
        status,
        calls_at_exit: log.calls(),
        recorded_sent,
        pending_at_exit,
        most_per_sms: log.most_per_sms(),
        pending_before,
        after_restart,
    })
}
