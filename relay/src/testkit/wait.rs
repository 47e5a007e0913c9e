//! Waiting for something another task or process does, always with a deadline: never a fixed
//! sleep standing in for an assertion.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields a value or `limit` passes; panics naming `what` on timeout.
pub async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds or `limit` passes; returns how long it took, or `None` on
/// timeout (for tests that report or compare the delay rather than fail on it).
pub async fn wait_for<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_the_probe_yields() {
        let mut calls = 0;
        let value = wait_until(Duration::from_secs(5), "the third call", || {
            calls += 1;
            let done = calls == 3;
            async move { done.then_some(42) }
        })
        .await;
        assert_eq!((value, calls), (42, 3));
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn panics_at_the_deadline() {
        wait_until(Duration::from_millis(50), "nothing", || async {
            None::<()>
        })
        .await;
    }

    #[tokio::test]
    async fn wait_for_reports_a_timeout_as_none() {
        assert!(
            wait_for(Duration::from_millis(50), || async { false })
                .await
                .is_none()
        );
    }
}
