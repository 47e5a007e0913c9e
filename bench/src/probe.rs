//! What a process uses, read from `/proc`: peak resident memory and CPU time.
//!
//! Peak memory is the kernel's high-water mark (`VmHWM` in `/proc/<pid>/status`), which a write
//! of `5` to `/proc/<pid>/clear_refs` resets to the current resident size; so each cell reports
//! the peak of its own load, not of everything before it. CPU time is `utime + stime` of
//! `/proc/<pid>/stat`, in clock ticks: with it a cell shows whether the relay ran out of CPU
//! (two cores: 200 % at most, shared with the load generator) or waited on something else
//! (disk syncs, locks).

use std::sync::OnceLock;
use std::time::Duration;

/// A process to read figures of.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pid: Option<u32>,
}

/// CPU used over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// CPU time over wall time, in percent of one core.
    pub percent: f64,
}

impl Probe {
    /// The process `pid`.
    pub fn of(pid: u32) -> Self {
        Self { pid: Some(pid) }
    }

    /// This process.
    pub fn own() -> Self {
        Self { pid: None }
    }

    fn path(&self, file: &str) -> String {
        match self.pid {
            Some(pid) => format!("/proc/{pid}/{file}"),
            None => format!("/proc/self/{file}"),
        }
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    }

    /// Peak resident memory since start or the last [`Self::reset_peak`], KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    /// Starts a new peak: the high-water mark becomes the current resident size.
    pub fn reset_peak(&self) {
        // Only a process of the same user may do this; the figure then covers the whole run.
        let _ = std::fs::write(self.path("clear_refs"), "5");
    }

    /// User and system CPU time so far, clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // The command name (field 2) may hold spaces; fields after it are plain.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of the whole line: utime and stime, 12th and 13th after the name.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    /// CPU used since `before` (ticks from [`Self::cpu_ticks`]) over `window`.
    pub fn cpu_since(&self, before: u64, window: Duration) -> Option<Cpu> {
        let now = self.cpu_ticks()?;
        let seconds = now.saturating_sub(before) as f64 / ticks_per_second();
        (window.as_secs_f64() > 0.0).then(|| Cpu {
            percent: 100.0 * seconds / window.as_secs_f64(),
        })
    }

    /// The process state letter of `/proc/<pid>/stat` (`R`, `S`, `Z` once it has exited and
    /// waits to be reaped), or `None` once it is gone.
    pub fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        stat[stat.rfind(')')? + 1..].trim_start().chars().next()
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, 100 on Linux).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
