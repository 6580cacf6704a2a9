//! Results: medians over repeats with their spread, the rows of
//! `summary.json`, the human table and the goal verdicts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::serve::Impl;

/// How a metric reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
}

/// One measurement: metric name to value (NaN: no value, e.g. a p99 of
/// round trips that did not all complete).
pub(crate) type Sample = Vec<(&'static str, f64)>;

/// Every value of one scenario, by metric and implementation, in repeat order.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) values: BTreeMap<(&'static str, Impl), Vec<f64>>,
    pub(crate) errors: Vec<String>,
    pub(crate) notes: Vec<String>,
}

impl Results {
    pub(crate) fn add(&mut self, imp: Impl, sample: &Sample) {
        for &(metric, value) in sample {
            self.values.entry((metric, imp)).or_default().push(value);
        }
    }

    /// The values of `metric` for `imp` that are numbers.
    pub(crate) fn of(&self, metric: &str, imp: Impl) -> Vec<f64> {
        self.values
            .iter()
            .filter(|((m, i), _)| *m == metric && *i == imp)
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| !v.is_nan())
            .collect()
    }

    /// Whether any repeat of `imp` gave `metric` no value.
    pub(crate) fn any_missing(&self, metric: &str, imp: Impl) -> bool {
        self.values
            .iter()
            .any(|((m, i), v)| *m == metric && *i == imp && v.iter().any(|x| x.is_nan()))
    }

    pub(crate) fn median(&self, metric: &str, imp: Impl) -> Option<f64> {
        median(&self.of(metric, imp))
    }

    pub(crate) fn min(&self, metric: &str, imp: Impl) -> Option<f64> {
        self.of(metric, imp).into_iter().reduce(f64::min)
    }

    pub(crate) fn max(&self, metric: &str, imp: Impl) -> Option<f64> {
        self.of(metric, imp).into_iter().reduce(f64::max)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// One line of `summary.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) metric: String,
    pub(crate) unit: String,
    pub(crate) ours: Option<f64>,
    pub(crate) raw: Option<f64>,
    pub(crate) floor: Option<f64>,
    pub(crate) naive: Option<f64>,
    pub(crate) ratio_vs_raw: Option<f64>,
    pub(crate) ratio_vs_floor: Option<f64>,
    pub(crate) ratio_vs_naive: Option<f64>,
}

/// A row with the spread behind it, for `details.json` and the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DetailRow {
    #[serde(flatten)]
    pub(crate) row: Row,
    /// `[min, max]` over the repeats, per implementation.
    pub(crate) spread: BTreeMap<&'static str, [f64; 2]>,
    /// Every value, per implementation, in repeat order (null: no value).
    pub(crate) values: BTreeMap<&'static str, Vec<Option<f64>>>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The rows of one scenario.
pub(crate) fn rows(scenario: &str, metrics: &[Metric], results: &Results) -> Vec<DetailRow> {
    metrics
        .iter()
        .map(|metric| {
            let med = |imp| results.median(metric.name, imp);
            let (ours, raw, naive) = (med(Impl::Ours), med(Impl::Raw), med(Impl::Naive));
            let floor = med(Impl::Floor);
            let mut spread = BTreeMap::new();
            let mut values = BTreeMap::new();
            for imp in Impl::ALL {
                if let (Some(lo), Some(hi)) =
                    (results.min(metric.name, imp), results.max(metric.name, imp))
                {
                    spread.insert(imp.name(), [lo, hi]);
                }
                if let Some(all) = results.values.get(&(metric.name, imp)) {
                    values.insert(
                        imp.name(),
                        all.iter().map(|v| (!v.is_nan()).then_some(*v)).collect(),
                    );
                }
            }
            DetailRow {
                row: Row {
                    scenario: scenario.to_owned(),
                    metric: metric.name.to_owned(),
                    unit: metric.unit.to_owned(),
                    ours,
                    raw,
                    floor,
                    naive,
                    ratio_vs_raw: ratio(ours, raw),
                    ratio_vs_floor: ratio(ours, floor),
                    ratio_vs_naive: ratio(ours, naive),
                },
                spread,
                values,
            }
        })
        .collect()
}

/// A number for the table: three significant digits or so.
pub(crate) fn num(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if abs >= 1000.0 {
        format!("{value:.0}")
    } else if abs >= 100.0 {
        format!("{value:.1}")
    } else if abs >= 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn cell(row: &DetailRow, imp: Impl, value: Option<f64>) -> String {
    match (value, row.spread.get(imp.name())) {
        (Some(v), Some([lo, hi])) if lo != hi => format!("{} ({}-{})", num(v), num(*lo), num(*hi)),
        (Some(v), _) => num(v),
        (None, _) if row.values.contains_key(imp.name()) => "none".into(),
        (None, _) => "-".into(),
    }
}

fn ratio_cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

/// The human table: medians with (min-max) over the repeats.
pub(crate) fn table(rows: &[DetailRow]) -> String {
    let header = [
        "scenario",
        "metric",
        "unit",
        "ours",
        "raw",
        "floor",
        "naive",
        "ours/raw",
        "ours/floor",
        "ours/naive",
    ];
    let lines: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.row.scenario.clone(),
                r.row.metric.clone(),
                r.row.unit.clone(),
                cell(r, Impl::Ours, r.row.ours),
                cell(r, Impl::Raw, r.row.raw),
                cell(r, Impl::Floor, r.row.floor),
                cell(r, Impl::Naive, r.row.naive),
                ratio_cell(r.row.ratio_vs_raw),
                ratio_cell(r.row.ratio_vs_floor),
                ratio_cell(r.row.ratio_vs_naive),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[String]| {
        out.push('|');
        for (c, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {c:<w$} |");
        }
        out.push('\n');
    };
    push(&header.map(String::from));
    push(&widths.map(|w| "-".repeat(w)));
    for line in &lines {
        push(line);
    }
    out
}

/// A goal and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verdict {
    pub(crate) goal: &'static str,
    pub(crate) what: String,
    /// `None` when the scenarios it needs did not run or gave no value.
    pub(crate) met: Option<bool>,
}

impl Verdict {
    pub(crate) fn line(&self) -> String {
        let mark = match self.met {
            Some(true) => "MET   ",
            Some(false) => "MISSED",
            None => "N/A   ",
        };
        format!("{mark} {}: {}", self.goal, self.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: [Metric; 2] = [
        Metric {
            name: "p50",
            unit: "us",
        },
        Metric {
            name: "p99",
            unit: "us",
        },
    ];

    #[test]
    fn medians_ignore_missing_values_and_average_the_middle_pair() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn rows_carry_medians_ratios_and_nulls_where_a_baseline_is_absent() {
        let mut results = Results::default();
        for (ours, raw) in [(12.0, 10.0), (13.0, 10.0), (11.0, 9.0)] {
            results.add(Impl::Ours, &vec![("p50", ours), ("p99", f64::NAN)]);
            results.add(Impl::Raw, &vec![("p50", raw), ("p99", 20.0)]);
        }
        let rows = rows("rtt_64B", &METRICS, &results);
        let p50 = &rows[0].row;
        assert_eq!(
            (p50.ours, p50.raw, p50.naive),
            (Some(12.0), Some(10.0), None)
        );
        assert_eq!(p50.ratio_vs_raw, Some(1.2));
        assert_eq!(p50.ratio_vs_naive, None);
        assert_eq!(rows[0].spread["ours"], [11.0, 13.0]);
        assert_eq!(rows[1].row.ours, None);
        assert!(results.any_missing("p99", Impl::Ours));

        let json = serde_json::to_value(&rows[0].row).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.len(),
            10,
            "summary rows have exactly the documented keys: {keys:?}"
        );
        assert!(json["naive"].is_null());
        assert!(json["floor"].is_null() && json["ratio_vs_floor"].is_null());

        let table = table(&rows);
        assert!(table.contains("12.00 (11.00-13.00)"), "{table}");
        assert!(table.contains("| none"), "{table}");
    }
}
