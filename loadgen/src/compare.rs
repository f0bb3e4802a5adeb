//! `loadgen compare`: a regression verdict from two result files. Every
//! figure both files have is compared; throughput (msgs/s, MB/s) regresses
//! when it falls, a latency percentile when it rises, each by more than the
//! threshold. Pure: the command prints the table and sets the exit code.

use std::fmt::Write as _;

use crate::results::RunResult;

/// Whether a larger value of a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput.
    Higher,
    /// Latency.
    Lower,
}

/// One figure of both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its name, e.g. "msgs/s" or "p99 (us)".
    pub figure: &'static str,
    /// The baseline's value.
    pub baseline: f64,
    /// The new run's value.
    pub new: f64,
    /// new / baseline.
    pub ratio: f64,
    /// Which direction is better.
    pub better: Better,
    /// Worse than the baseline by more than the threshold.
    pub regressed: bool,
}

/// The comparison of two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Every figure both runs have.
    pub rows: Vec<Row>,
    /// Differences in what was run (system, scenario, parameters), which
    /// make the comparison suspect; reported, not fatal.
    pub warnings: Vec<String>,
}

impl Comparison {
    /// True when any figure regressed.
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.regressed)
    }

    /// The table, as plain text.
    pub fn table(&self, max_regression_pct: f64) -> String {
        let mut s = String::new();
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(
            s,
            "{:<16} {:>14} {:>14} {:>8}  verdict (max regression {max_regression_pct}%)",
            "figure", "baseline", "new", "ratio"
        );
        for r in &self.rows {
            let verdict = match (r.regressed, r.better) {
                (true, Better::Higher) => "REGRESSED (fell)",
                (true, Better::Lower) => "REGRESSED (rose)",
                (false, _) => "ok",
            };
            let _ = writeln!(
                s,
                "{:<16} {:>14.2} {:>14.2} {:>8.3}  {verdict}",
                r.figure, r.baseline, r.new, r.ratio
            );
        }
        s
    }
}

/// Compares `new` against `baseline`: a figure regresses when it is worse
/// by more than `max_regression_pct` percent.
pub fn compare(baseline: &RunResult, new: &RunResult, max_regression_pct: f64) -> Comparison {
    let mut warnings = Vec::new();
    if baseline.system != new.system {
        warnings.push(format!(
            "systems differ: {} vs {}",
            baseline.system, new.system
        ));
    }
    if baseline.scenario != new.scenario {
        warnings.push(format!(
            "scenarios differ: {} vs {}",
            baseline.scenario, new.scenario
        ));
    }
    if baseline.parameters != new.parameters {
        warnings.push("parameters differ".into());
    }
    let mut figures: Vec<(&'static str, f64, f64, Better)> = vec![
        (
            "msgs/s",
            baseline.msgs_per_s,
            new.msgs_per_s,
            Better::Higher,
        ),
        ("MB/s", baseline.mb_per_s, new.mb_per_s, Better::Higher),
    ];
    match (&baseline.latency, &new.latency) {
        (Some(b), Some(n)) => figures.extend([
            ("p50 (us)", b.p50_us, n.p50_us, Better::Lower),
            ("p90 (us)", b.p90_us, n.p90_us, Better::Lower),
            ("p99 (us)", b.p99_us, n.p99_us, Better::Lower),
            ("p99.9 (us)", b.p999_us, n.p999_us, Better::Lower),
            ("max (us)", b.max_us, n.max_us, Better::Lower),
        ]),
        (Some(_), None) => warnings.push("the new run has no latency figures".into()),
        (None, Some(_)) => warnings.push("the baseline has no latency figures".into()),
        (None, None) => {}
    }
    let limit = max_regression_pct / 100.0;
    let rows = figures
        .into_iter()
        .map(|(figure, b, n, better)| {
            let ratio = if b > 0.0 { n / b } else { f64::NAN };
            let regressed = match better {
                // A throughput of 0 against a positive baseline is a regression.
                Better::Higher => b > 0.0 && n < b * (1.0 - limit),
                Better::Lower => b > 0.0 && n > b * (1.0 + limit),
            };
            Row {
                figure,
                baseline: b,
                new: n,
                ratio,
                better,
                regressed,
            }
        })
        .collect();
    Comparison { rows, warnings }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;
    use crate::results::Latency;
    use std::time::Duration;

    fn run(msgs_per_s: f64, p99_us: Option<f64>) -> RunResult {
        let mut r = RunResult::new(
            "broker",
            "produce-batch50",
            serde_json::json!({"size": 200, "batch": 50}),
            msgs_per_s as u64,
            200,
            Duration::from_secs(1),
        );
        r.latency = p99_us.map(|p99| Latency {
            kind: "produce-to-ack".into(),
            samples: 100,
            p50_us: p99 / 4.0,
            p90_us: p99 / 2.0,
            p99_us: p99,
            p999_us: p99 * 2.0,
            max_us: p99 * 3.0,
        });
        r
    }

    #[test]
    fn equal_runs_pass_with_ratio_one() {
        let c = compare(&run(1000.0, Some(100.0)), &run(1000.0, Some(100.0)), 10.0);
        assert!(!c.regressed());
        assert_eq!(c.rows.len(), 7);
        assert!(c.rows.iter().all(|r| (r.ratio - 1.0).abs() < 1e-9));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn throughput_falling_past_the_threshold_regresses() {
        let c = compare(&run(1000.0, None), &run(850.0, None), 10.0);
        assert!(c.regressed());
        let row = &c.rows[0];
        assert_eq!(row.figure, "msgs/s");
        assert!(row.regressed);
        assert!((row.ratio - 0.85).abs() < 1e-9);
        assert!(c.table(10.0).contains("REGRESSED (fell)"));
    }

    #[test]
    fn throughput_falling_within_the_threshold_passes() {
        let c = compare(&run(1000.0, None), &run(950.0, None), 10.0);
        assert!(!c.regressed(), "{}", c.table(10.0));
    }

    #[test]
    fn faster_runs_never_regress() {
        let c = compare(&run(1000.0, Some(100.0)), &run(5000.0, Some(10.0)), 1.0);
        assert!(!c.regressed(), "{}", c.table(1.0));
    }

    #[test]
    fn latency_rising_past_the_threshold_regresses() {
        let c = compare(&run(1000.0, Some(100.0)), &run(1000.0, Some(130.0)), 20.0);
        assert!(c.regressed());
        let p99 = c.rows.iter().find(|r| r.figure == "p99 (us)").unwrap();
        assert!(p99.regressed);
        assert!(c.table(20.0).contains("REGRESSED (rose)"));
        let c = compare(&run(1000.0, Some(100.0)), &run(1000.0, Some(115.0)), 20.0);
        assert!(!c.regressed(), "{}", c.table(20.0));
    }

    #[test]
    fn zero_throughput_regresses() {
        assert!(compare(&run(1000.0, None), &run(0.0, None), 99.0).regressed());
    }

    #[test]
    fn mismatched_runs_are_warned_about() {
        let mut other = run(1000.0, None);
        other.scenario = "consume".into();
        let c = compare(&run(1000.0, Some(1.0)), &other, 10.0);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.table(10.0).starts_with("warning: scenarios differ"));
    }
}
