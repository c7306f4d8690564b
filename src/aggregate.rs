//! Samples -> one datapoint per interval. Pure.
//!
//! The interval's **maximum** is what is published, so a session shorter than the interval is
//! not lost between publications (the cron recipe samples once a minute and misses it). A failed
//! sample is never a zero: it is simply absent, and an interval without any good sample publishes
//! nothing.

use crate::probe::Session;

/// One published value with its statistics over the interval's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    /// Unix ms: start of the interval (aligned), or the sample time with `--once`.
    pub timestamp_ms: u64,
    pub max: f64,
    pub min: f64,
    pub sum: f64,
    /// The same statistics for sessions not idle (`--idle-after`); equal to the above otherwise.
    pub active_max: f64,
    pub active_min: f64,
    pub active_sum: f64,
    pub sample_count: u32,
    /// Samples that failed in the interval (logged; shown in EMF properties).
    pub failed_samples: u32,
    /// The sessions of the sample that had the maximum (latest such sample).
    pub sessions: Vec<Session>,
}

/// One sample's numbers: all counted sessions, and those not idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub active: usize,
}

/// Collects samples of one interval.
#[derive(Debug, Default)]
pub struct Aggregator {
    interval_start_ms: u64,
    current: Option<Datapoint>,
    failed: u32,
}

impl Aggregator {
    pub fn new(interval_start_ms: u64) -> Self {
        Aggregator {
            interval_start_ms,
            current: None,
            failed: 0,
        }
    }

    pub fn add(&mut self, count: usize, sessions: &[Session]) {
        self.add_counts(
            Counts {
                total: count,
                active: count,
            },
            sessions,
        )
    }

    pub fn add_counts(&mut self, counts: Counts, sessions: &[Session]) {
        let v = counts.total as f64;
        let a = counts.active as f64;
        match &mut self.current {
            None => {
                self.current = Some(Datapoint {
                    timestamp_ms: self.interval_start_ms,
                    max: v,
                    min: v,
                    sum: v,
                    active_max: a,
                    active_min: a,
                    active_sum: a,
                    sample_count: 1,
                    failed_samples: 0,
                    sessions: sessions.to_vec(),
                })
            }
            Some(d) => {
                if v >= d.max {
                    d.sessions = sessions.to_vec();
                }
                d.max = d.max.max(v);
                d.min = d.min.min(v);
                d.sum += v;
                d.active_max = d.active_max.max(a);
                d.active_min = d.active_min.min(a);
                d.active_sum += a;
                d.sample_count += 1;
            }
        }
    }

    pub fn add_failure(&mut self) {
        self.failed += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_none()
    }

    /// Ends the interval: its datapoint (if any good sample) and a fresh aggregator.
    pub fn finish(&mut self, next_interval_start_ms: u64) -> Option<Datapoint> {
        let failed = std::mem::take(&mut self.failed);
        self.interval_start_ms = next_interval_start_ms;
        self.current.take().map(|mut d| {
            d.failed_samples = failed;
            d
        })
    }
}

/// Start of the interval containing `now_ms`, for intervals aligned to the epoch.
pub fn interval_start(now_ms: u64, interval_ms: u64) -> u64 {
    now_ms - now_ms % interval_ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_the_interval_maximum_with_statistics() {
        let mut a = Aggregator::new(60_000);
        a.add(0, &[]);
        a.add(2, &[]);
        a.add_failure();
        a.add(1, &[]);
        let d = a.finish(120_000).expect("datapoint");
        assert_eq!(
            (d.max, d.min, d.sum, d.sample_count, d.failed_samples),
            (2.0, 0.0, 3.0, 3, 1)
        );
        assert_eq!(d.timestamp_ms, 60_000);
        assert!(a.is_empty());
    }

    #[test]
    fn an_interval_of_failed_samples_publishes_nothing() {
        let mut a = Aggregator::new(0);
        a.add_failure();
        a.add_failure();
        assert_eq!(a.finish(60_000), None);
    }

    #[test]
    fn intervals_align_to_boundaries() {
        assert_eq!(interval_start(125_300, 60_000), 120_000);
        assert_eq!(interval_start(125_300, 10_000), 120_000);
    }
}
