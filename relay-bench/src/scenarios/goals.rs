//! Reading a run's results against the goals: the medians and ratios the
//! verdicts quote, and how they print.

use crate::report::Results;
use crate::serve::Impl;

use super::Scenario;

/// The results of a run, looked up by scenario name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judge<'a> {
    results: &'a [(&'static Scenario, Results)],
}

impl<'a> Judge<'a> {
    pub(super) fn new(results: &'a [(&'static Scenario, Results)]) -> Judge<'a> {
        Judge { results }
    }

    /// The results of the scenario `name`, if it ran.
    pub(super) fn results(&self, name: &str) -> Option<&'a Results> {
        self.results
            .iter()
            .find(|(s, _)| s.name == name)
            .map(|(_, r)| r)
    }

    /// The names of the scenarios that ran, in order.
    pub(super) fn names(&self) -> impl Iterator<Item = &'static str> + 'a {
        self.results.iter().map(|(s, _)| s.name)
    }

    /// The median of `metric` for `imp` in scenario `name`.
    pub(super) fn median(&self, name: &str, metric: &str, imp: Impl) -> Option<f64> {
        self.results(name).and_then(|r| r.median(metric, imp))
    }

    /// Ours over `base`, of the medians of `metric` in scenario `name`.
    pub(super) fn ratio(&self, name: &str, metric: &str, base: Impl) -> Option<f64> {
        Some(self.median(name, metric, Impl::Ours)? / self.median(name, metric, base)?)
    }
}

/// A ratio as `1.23x`, or `n/a`.
pub(super) fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
}

/// A value with `decimals` decimals, or `n/a`.
pub(super) fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// A percentage as `99.5%`, or `n/a`.
pub(super) fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}%"))
}

/// Whether every check is met: unknown (`None`) if any check could not be
/// made.
pub(super) fn all_met(checks: &[Option<bool>]) -> Option<bool> {
    if checks.iter().any(Option::is_none) {
        None
    } else {
        Some(checks.iter().all(|c| *c == Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_with_an_unknown_check_is_neither_met_nor_missed() {
        assert_eq!(all_met(&[Some(true), Some(true)]), Some(true));
        assert_eq!(all_met(&[Some(true), Some(false)]), Some(false));
        assert_eq!(all_met(&[Some(false), None]), None);
    }

    #[test]
    fn missing_figures_print_as_not_available() {
        assert_eq!(times(Some(1.234)), "1.23x");
        assert_eq!(number(Some(7.26), 1), "7.3");
        assert_eq!(number(None, 0), "n/a");
        assert_eq!(percent(Some(100.0)), "100.0%");
        assert_eq!(percent(None), "n/a");
    }
}
