//! Markdown tables of the results and the budgets of issue 11, item 6, each with its figure and
//! `PASS` or `MISS`. A MISS is a result, not a failure of the bench: it is printed and the bench
//! still exits 0; only a measurement that could not be made is a failure.

use std::fmt::Write as _;

use crate::load::Outcome;

/// A markdown table.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; a column whose name starts with `>` is right-aligned
    /// (numbers), the `>` not shown.
    pub fn new(columns: &[&str]) -> Self {
        Self {
            header: columns
                .iter()
                .map(|c| c.trim_start_matches('>').to_owned())
                .collect(),
            right: columns.iter().map(|c| c.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let rule: Vec<&str> = self
            .right
            .iter()
            .map(|&r| if r { "---:" } else { "---" })
            .collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// `1,234` (thousands separated), for counts and rates.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Milliseconds with a precision that suits their size.
pub fn ms(value: f64) -> String {
    if !value.is_finite() {
        "—".into()
    } else if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// KiB as MiB.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("—".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// A percentage of one core.
pub fn cpu(percent: Option<f64>) -> String {
    percent.map_or("—".into(), |p| format!("{p:.0} %"))
}

/// Requests/s, p50, p99 and errors of a load outcome.
pub fn load_cells(outcome: &Outcome) -> Vec<String> {
    let mut rate = thousands(outcome.rate());
    if outcome.exhausted {
        rate.push_str(" (bodies ran out)");
    }
    vec![
        rate,
        ms(outcome.quantile_ms(0.50)),
        ms(outcome.quantile_ms(0.99)),
        outcome.errors_text(),
    ]
}

/// PASS, MISS, or no figure (the measurement failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget.
    Pass,
    /// Outside it.
    Miss,
    /// Not measured (the bench failed there).
    Unmeasured,
}

impl Verdict {
    /// `PASS` when `ok`.
    pub fn of(ok: bool) -> Self {
        if ok { Self::Pass } else { Self::Miss }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Miss => "**MISS**",
            Self::Unmeasured => "not measured",
        }
    }
}

/// The budgets table.
#[derive(Debug, Default)]
pub struct Budgets {
    rows: Vec<(String, String, String, Verdict)>,
}

impl Budgets {
    /// Adds a budget with its figure, its limit and its verdict.
    pub fn add(&mut self, budget: String, figure: String, limit: String, verdict: Verdict) {
        self.rows.push((budget, figure, limit, verdict));
    }

    /// Adds a budget whose figure could not be measured.
    pub fn unmeasured(&mut self, budget: String, limit: String) {
        self.rows
            .push((budget, "—".into(), limit, Verdict::Unmeasured));
    }

    /// Budgets missed.
    pub fn missed(&self) -> usize {
        self.rows.iter().filter(|r| r.3 == Verdict::Miss).count()
    }

    /// Budgets passed.
    pub fn passed(&self) -> usize {
        self.rows.iter().filter(|r| r.3 == Verdict::Pass).count()
    }

    /// The table.
    pub fn render(&self) -> String {
        let mut table = Table::new(&["budget", ">figure", ">limit", "verdict"]);
        for (budget, figure, limit, verdict) in &self.rows {
            table.row(vec![
                budget.clone(),
                figure.clone(),
                limit.clone(),
                verdict.text().to_owned(),
            ]);
        }
        table.render()
    }
}
