//! Rate limits for repeated log lines: an attacker (or a broken peer) that
//! repeats one bad input thousands of times a second must not turn the
//! journal into the bottleneck or push the useful lines out of it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one occurrence through per interval and counts the others, so the
/// next line that gets through can say how many were not logged.
///
/// ```ignore
/// if let Some(suppressed) = self.bad_command_log.allow() {
///     tracing::warn!(suppressed, "…");
/// }
/// ```
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle { every, state: Mutex::new(State::default()) }
    }

    /// The usual interval for warnings caused by input from outside: one per 10 s.
    pub fn for_warnings() -> Throttle {
        Throttle::new(Duration::from_secs(10))
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many
    /// were held back since the last one logged; `None` when it should not.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.allow_at(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(throttle.allow_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(21)), Some(1));
    }
}
