//! `performance.mark` at the steps of unlocking and enrolling, for the browser benchmark
//! (`scripts/bench-browser`), which reads them with `performance.getEntriesByType("mark")`.
//! Names are fixed `securetext:…` labels: nothing secret, nothing about the patient. A mark
//! that fails (no Performance API) is skipped.

/// Records a mark named `name` at `performance.now()`.
pub fn mark(name: &str) {
    if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
        let _ = performance.mark(name);
    }
}
