//! Vehicle counts per interval: intervals start on multiples of the
//! interval's length (UTC), so every device's minute is the same minute.
//! The first interval of a run starts when the run does and the last ends
//! at shutdown, so two runs never cover the same time; a vehicle is counted
//! once, in the interval its track ended in (when its message went out).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::vehicles::{ClassCounts, Direction, LineCounts};

/// What one vehicle adds to the counts.
#[derive(Debug, Clone)]
pub struct Counted<'a> {
    pub class: &'a str,
    pub lane: Option<&'a str>,
    pub crossings: Vec<(&'a str, Direction)>,
}

/// One finished interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub from: SystemTime,
    pub to: SystemTime,
    pub vehicles: ClassCounts,
    pub lines: BTreeMap<String, LineCounts>,
    pub lanes: BTreeMap<String, ClassCounts>,
}

pub struct Counts {
    length: Duration,
    lanes: Vec<String>,
    lines: Vec<String>,
    open: Interval,
}

impl Counts {
    /// Counts from `now` for the given lane and line ids.
    pub fn new(length: Duration, lanes: Vec<String>, lines: Vec<String>, now: SystemTime) -> Counts {
        let length = length.max(Duration::from_secs(1));
        let open = Self::empty(&lanes, &lines, now, next_boundary(now, length));
        Counts { length, lanes, lines, open }
    }

    fn empty(lanes: &[String], lines: &[String], from: SystemTime, to: SystemTime) -> Interval {
        Interval {
            from,
            to,
            vehicles: ClassCounts::new(),
            lines: lines.iter().map(|l| (l.clone(), LineCounts::default())).collect(),
            lanes: lanes.iter().map(|l| (l.clone(), ClassCounts::new())).collect(),
        }
    }

    pub fn add(&mut self, vehicle: &Counted<'_>) {
        let open = &mut self.open;
        *open.vehicles.entry(vehicle.class.to_string()).or_default() += 1;
        if let Some(lane) = vehicle.lane.and_then(|l| open.lanes.get_mut(l)) {
            *lane.entry(vehicle.class.to_string()).or_default() += 1;
        }
        for (line, direction) in &vehicle.crossings {
            if let Some(counts) = open.lines.get_mut(*line) {
                let side = match direction {
                    Direction::Forward => &mut counts.forward,
                    Direction::Backward => &mut counts.backward,
                };
                *side.entry(vehicle.class.to_string()).or_default() += 1;
            }
        }
    }

    /// The open interval as it stands, cut at `now` (for the journal).
    pub fn snapshot(&self, now: SystemTime) -> Interval {
        let mut open = self.open.clone();
        open.to = now.max(open.from);
        open
    }

    /// When the open interval ends.
    pub fn due(&self) -> SystemTime {
        self.open.to
    }

    /// The intervals that ended by `now`, oldest first (several after a
    /// long pause, each empty but the first); the next one opens.
    pub fn take_due(&mut self, now: SystemTime) -> Vec<Interval> {
        let mut done = Vec::new();
        while self.open.to <= now {
            let from = self.open.to;
            let next = Self::empty(&self.lanes, &self.lines, from, from + self.length);
            done.push(std::mem::replace(&mut self.open, next));
        }
        done
    }

    /// At shutdown: the due intervals and the open one, cut at `now`
    /// (counting goes on from `now`, as in a new run).
    pub fn finish(&mut self, now: SystemTime) -> Vec<Interval> {
        let mut done = self.take_due(now);
        let next = Self::empty(&self.lanes, &self.lines, now, next_boundary(now, self.length));
        let mut last = std::mem::replace(&mut self.open, next);
        last.to = now.max(last.from);
        done.push(last);
        done
    }
}

/// The first multiple of `length` since the epoch after `now`.
fn next_boundary(now: SystemTime, length: Duration) -> SystemTime {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = since.as_nanos() / length.as_nanos() + 1;
    let nanos = n.saturating_mul(length.as_nanos()).min(u64::MAX as u128) as u64;
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn intervals_align_to_the_clock_and_the_first_starts_with_the_run() {
        let mut counts = Counts::new(Duration::from_secs(60), vec!["east-1".into()], vec!["gantry".into()], at(6_000_030));
        assert_eq!(counts.due(), at(6_000_060));
        counts.add(&Counted { class: "car", lane: Some("east-1"), crossings: vec![("gantry", Direction::Forward)] });
        counts.add(&Counted { class: "van", lane: None, crossings: vec![] });
        assert!(counts.take_due(at(6_000_059)).is_empty());
        let done = counts.take_due(at(6_000_061));
        assert_eq!(done.len(), 1);
        let first = &done[0];
        assert_eq!((first.from, first.to), (at(6_000_030), at(6_000_060)));
        assert_eq!(first.vehicles, ClassCounts::from([("car".into(), 1), ("van".into(), 1)]));
        assert_eq!(first.lanes["east-1"], ClassCounts::from([("car".into(), 1)]));
        assert_eq!(first.lines["gantry"].forward, ClassCounts::from([("car".into(), 1)]));
        assert!(first.lines["gantry"].backward.is_empty());
        assert_eq!(counts.due(), at(6_000_120));
    }

    #[test]
    fn a_long_pause_gives_every_missed_interval_and_shutdown_cuts_the_last() {
        let mut counts = Counts::new(Duration::from_secs(10), vec![], vec!["l".into()], at(105));
        counts.add(&Counted { class: "car", lane: None, crossings: vec![("l", Direction::Backward)] });
        let done = counts.take_due(at(131));
        let spans: Vec<(SystemTime, SystemTime)> = done.iter().map(|i| (i.from, i.to)).collect();
        assert_eq!(spans, vec![(at(105), at(110)), (at(110), at(120)), (at(120), at(130))]);
        assert_eq!(done[0].lines["l"].backward["car"], 1);
        assert!(done[1].vehicles.is_empty() && done[2].vehicles.is_empty());
        counts.add(&Counted { class: "bus", lane: None, crossings: vec![] });
        let last = counts.finish(at(134));
        assert_eq!(counts.due(), at(140));
        assert_eq!(last.len(), 1);
        assert_eq!((last[0].from, last[0].to), (at(130), at(134)));
        assert_eq!(last[0].vehicles["bus"], 1);
    }

    #[test]
    fn two_runs_never_cover_the_same_time() {
        // The first run stops at 125; the next starts at 127, mid-interval.
        let first = Counts::new(Duration::from_secs(60), vec![], vec![], at(100)).finish(at(125));
        let second = Counts::new(Duration::from_secs(60), vec![], vec![], at(127));
        assert_eq!(first.last().unwrap().to, at(125));
        assert_eq!(second.open.from, at(127));
        assert_eq!(second.due(), at(180));
    }
}
