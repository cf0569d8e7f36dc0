//! Hysteresis: an alert is raised once when a figure crosses its alert
//! threshold, and cleared once when it is back past a separate clear
//! threshold. Between the two nothing is said, so a figure hovering at the
//! threshold cannot cause an alert storm.

use std::collections::BTreeMap;

pub use crate::wire::events::Bad;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub bad: Bad,
    pub alert_at: f64,
    pub clear_at: f64,
}

impl Rule {
    pub fn below(alert_at: f64, clear_at: f64) -> Rule {
        Rule { bad: Bad::Below, alert_at, clear_at }
    }

    pub fn above(alert_at: f64, clear_at: f64) -> Rule {
        Rule { bad: Bad::Above, alert_at, clear_at }
    }

    fn crossed(&self, value: f64) -> bool {
        match self.bad {
            Bad::Below => value < self.alert_at,
            Bad::Above => value > self.alert_at,
        }
    }

    fn recovered(&self, value: f64) -> bool {
        match self.bad {
            Bad::Below => value >= self.clear_at,
            Bad::Above => value <= self.clear_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Raised,
    Cleared,
}

/// Which alerts are raised now, by key (`precision`, `brightness/<camera>`...).
#[derive(Debug, Default)]
pub struct AlertBook {
    raised: BTreeMap<String, f64>,
}

impl AlertBook {
    /// Judges one figure. `None` (not enough evidence) changes nothing.
    pub fn judge(&mut self, key: &str, rule: Rule, value: Option<f64>) -> Option<Transition> {
        let value = value.filter(|v| v.is_finite())?;
        if self.raised.contains_key(key) {
            if rule.recovered(value) {
                self.raised.remove(key);
                return Some(Transition::Cleared);
            }
            self.raised.insert(key.to_string(), value);
        } else if rule.crossed(value) {
            self.raised.insert(key.to_string(), value);
            return Some(Transition::Raised);
        }
        None
    }

    pub fn is_raised(&self, key: &str) -> bool {
        self.raised.contains_key(key)
    }

    /// Raised alerts and their latest value, for telemetry.
    pub fn raised(&self) -> &BTreeMap<String, f64> {
        &self.raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_crossing_and_one_clear_past_the_gap() {
        let rule = Rule::below(0.40, 0.50);
        let mut book = AlertBook::default();
        let seen: Vec<Option<Transition>> =
            [0.9, 0.41, 0.39, 0.2, 0.45, 0.39, 0.49, 0.5, 0.45, 0.39].iter().map(|v| book.judge("p", rule, Some(*v))).collect();
        use Transition::*;
        assert_eq!(seen, [None, None, Some(Raised), None, None, None, None, Some(Cleared), None, Some(Raised)]);
    }

    #[test]
    fn no_evidence_changes_nothing_and_keys_are_independent() {
        let rule = Rule::above(0.35, 0.25);
        let mut book = AlertBook::default();
        assert_eq!(book.judge("mix/a", rule, Some(0.5)), Some(Transition::Raised));
        assert_eq!(book.judge("mix/a", rule, None), None);
        assert!(book.is_raised("mix/a"));
        assert_eq!(book.judge("mix/b", rule, Some(0.3)), None);
        assert_eq!(book.judge("mix/a", rule, Some(f64::NAN)), None);
        assert_eq!(book.judge("mix/a", rule, Some(0.25)), Some(Transition::Cleared));
        assert!(book.raised().is_empty());
    }
}
