//! What each connection counts: latency histogram, statuses, correctness per token kind,
//! transport errors and a per-second series. Each connection owns its counters (no sharing on
//! the hot path); they are merged once at the end.
//!
//! The latency over time (percentiles per time bucket) and per token kind need a histogram each,
//! too big to keep per connection: a [`Timeline`] is kept per load thread instead, shared by that
//! thread's connections (which run one at a time on it, so its lock is never contended), and
//! bounded: at most [`MAX_BUCKETS`] time buckets however long the run (wider than a second on
//! runs longer than that), each a 2-significant-digit histogram that grows only to the largest
//! latency it saw.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::ClientError;
use crate::mint::Kind;

/// Highest latency recorded exactly (µs); anything slower is recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Status codes counted individually (0..600).
const STATUSES: usize = 600;
/// Most time buckets a [`Timeline`] keeps (a 10-minute run has one per second).
pub const MAX_BUCKETS: u64 = 600;

/// Latency percentiles over time and per token kind (see the module doc).
#[derive(Clone, Default)]
pub struct Timeline {
    /// Seconds per bucket: 1, or more on runs longer than [`MAX_BUCKETS`] seconds.
    pub width_s: u64,
    /// Latency (µs) of responses completed in each bucket (index = second / `width_s`).
    pub buckets: Vec<Option<Histogram<u64>>>,
    /// Latency (µs) per token kind (indexed by [`Kind::index`]), allocated at its first response.
    pub kinds: Vec<Option<Histogram<u64>>>,
}

impl Timeline {
    /// Empty, with buckets sized for a run of `duration`.
    pub fn for_run(duration: Duration) -> Timeline {
        Timeline {
            width_s: duration.as_secs().div_ceil(MAX_BUCKETS).max(1),
            buckets: Vec::new(),
            kinds: vec![None; Kind::ALL.len()],
        }
    }

    /// Counts `us` into `slot`, creating its histogram (auto-resizing: it grows to the largest
    /// value recorded) on first use. Creation fails only for a precision outside 0..=5.
    fn count(slot: &mut Option<Histogram<u64>>, sigfig: u8, us: u64) {
        if slot.is_none() {
            *slot = Histogram::new(sigfig).ok().map(|mut h| {
                h.auto(true);
                h
            });
        }
        if let Some(h) = slot {
            // `record`, not `saturating_record` (which clamps instead of growing); growing to
            // `MAX_LATENCY_US` cannot fail.
            let _ = h.record(us);
        }
    }

    /// Counts one response of `kind` completed `second`s into the run, `us` microseconds.
    pub fn record(&mut self, kind: Kind, second: usize, us: u64) {
        let i = second / self.width_s.max(1) as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, None);
        }
        Self::count(&mut self.buckets[i], 2, us);
        if let Some(k) = self.kinds.get_mut(kind.index()) {
            Self::count(k, 3, us);
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Timeline) {
        self.width_s = self.width_s.max(other.width_s);
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), None);
        }
        if self.kinds.len() < other.kinds.len() {
            self.kinds.resize(other.kinds.len(), None);
        }
        let pairs = self
            .buckets
            .iter_mut()
            .zip(&other.buckets)
            .chain(self.kinds.iter_mut().zip(&other.kinds));
        for (a, b) in pairs {
            match (a.as_mut(), b) {
                // Auto-resizing histograms take any value: adding cannot fail.
                (Some(a), Some(b)) => {
                    let _ = a.add(b);
                }
                (None, Some(b)) => *a = Some(b.clone()),
                (_, None) => {}
            }
        }
    }
}

/// A latency as recorded: whole microseconds, 1 to [`MAX_LATENCY_US`].
pub fn micros(latency: Duration) -> u64 {
    (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// Correctness counters of one token kind.
#[derive(Debug, Default, Clone)]
pub struct KindCounts {
    /// Responses received.
    pub responses: u64,
    /// Responses with the status the kind must get.
    pub expected: u64,
    /// Unexpected statuses and how often each came.
    pub wrong: Vec<(u16, u64)>,
}

impl KindCounts {
    /// Responses with a status the kind must not get.
    pub fn unexpected(&self) -> u64 {
        self.responses - self.expected
    }
}

/// Transport error counters.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Errors {
    /// Connection attempts that failed.
    pub connect: u64,
    /// Read or write errors.
    pub io: u64,
    /// Connections closed mid-response.
    pub closed: u64,
    /// Responses that were not HTTP/1.x.
    pub parse: u64,
    /// Requests still unanswered after `--timeout` when the run ended.
    pub timeout: u64,
}

impl Errors {
    /// All transport errors.
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.closed + self.parse + self.timeout
    }

    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.io += o.io;
        self.closed += o.closed;
        self.parse += o.parse;
        self.timeout += o.timeout;
    }
}

/// One second of the run.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Second {
    /// Responses completed in this second.
    pub responses: u64,
    /// Sum of their latencies (µs).
    pub latency_sum_us: u64,
    /// Largest latency (µs).
    pub latency_max_us: u64,
}

/// Everything counted by one connection (or, merged, by the whole run).
#[derive(Clone)]
pub struct Stats {
    /// Latency of every response, µs.
    pub latency: Histogram<u64>,
    /// Responses by status code.
    pub statuses: Box<[u64; STATUSES]>,
    /// Correctness per [`Kind`] (indexed by [`Kind::index`]).
    pub kinds: [KindCounts; Kind::ALL.len()],
    /// Transport errors.
    pub errors: Errors,
    /// Connections opened after the first one (server closes, errors).
    pub reconnects: u64,
    /// Per-second series (index = second since start).
    pub series: Vec<Second>,
    /// Latency over time and per kind: filled by the load threads' shared timelines, merged
    /// into the run's total (a connection's own stays empty).
    pub timeline: Timeline,
}

impl Stats {
    /// Empty counters (the histogram bounds are constants, so this fails only on a bug).
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Stats {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            statuses: Box::new([0; STATUSES]),
            kinds: Default::default(),
            errors: Errors::default(),
            reconnects: 0,
            series: Vec::new(),
            timeline: Timeline::default(),
        })
    }
}

impl Stats {
    /// Counts one response to a token of `kind`; `second` is when it completed.
    pub fn response(&mut self, kind: Kind, status: u16, latency: Duration, second: usize) {
        let us = micros(latency);
        self.latency.saturating_record(us);
        if let Some(n) = self.statuses.get_mut(status as usize) {
            *n += 1;
        }
        let k = &mut self.kinds[kind.index()];
        k.responses += 1;
        if kind.expects(status) {
            k.expected += 1;
        } else {
            match k.wrong.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => k.wrong.push((status, 1)),
            }
        }
        if self.series.len() <= second {
            self.series.resize(second + 1, Second::default());
        }
        let s = &mut self.series[second];
        s.responses += 1;
        s.latency_sum_us += us;
        s.latency_max_us = s.latency_max_us.max(us);
    }

    /// Counts one transport error.
    pub fn error(&mut self, err: &ClientError) {
        let e = &mut self.errors;
        match err {
            ClientError::Connect(_) => e.connect += 1,
            ClientError::Io(_) => e.io += 1,
            ClientError::Closed => e.closed += 1,
            ClientError::Parse(_) => e.parse += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (a, b) in self.statuses.iter_mut().zip(other.statuses.iter()) {
            *a += b;
        }
        for (a, b) in self.kinds.iter_mut().zip(&other.kinds) {
            a.responses += b.responses;
            a.expected += b.expected;
            for &(status, n) in &b.wrong {
                match a.wrong.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, m)) => *m += n,
                    None => a.wrong.push((status, n)),
                }
            }
        }
        self.errors.add(&other.errors);
        self.reconnects += other.reconnects;
        if self.series.len() < other.series.len() {
            self.series.resize(other.series.len(), Second::default());
        }
        for (a, b) in self.series.iter_mut().zip(&other.series) {
            a.responses += b.responses;
            a.latency_sum_us += b.latency_sum_us;
            a.latency_max_us = a.latency_max_us.max(b.latency_max_us);
        }
        self.timeline.merge(&other.timeline);
    }

    /// Responses received.
    pub fn responses(&self) -> u64 {
        self.latency.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        a.response(Kind::Valid, 200, Duration::from_millis(1), 0);
        b.response(Kind::Expired, 200, Duration::from_millis(3), 2);
        b.response(Kind::Expired, 401, Duration::from_millis(2), 2);
        b.error(&ClientError::Closed);
        a.merge(&b);
        assert_eq!(a.responses(), 3);
        assert_eq!(a.statuses[200], 2);
        assert_eq!(a.kinds[Kind::Expired.index()].unexpected(), 1);
        assert_eq!(a.kinds[Kind::Expired.index()].wrong, vec![(200, 1)]);
        assert_eq!(a.errors.closed, 1);
        assert_eq!(a.series.len(), 3);
        assert_eq!(a.series[2].responses, 2);
    }

    #[test]
    fn timeline_buckets_are_bounded_and_merge() {
        let long = Timeline::for_run(Duration::from_secs(3600));
        assert_eq!(long.width_s, 6);
        let mut a = Timeline::for_run(Duration::from_secs(10));
        assert_eq!(a.width_s, 1);
        let mut b = a.clone();
        a.record(Kind::Valid, 0, 100);
        b.record(Kind::Valid, 2, 3000);
        b.record(Kind::Expired, 2, 50);
        a.merge(&b);
        assert_eq!(a.buckets.len(), 3);
        assert!(a.buckets[1].is_none());
        let last = a.buckets[2].as_ref().unwrap();
        assert_eq!(last.len(), 2);
        assert!(last.max() >= 3000 && last.max() < 3100);
        assert_eq!(a.kinds[Kind::Valid.index()].as_ref().unwrap().len(), 2);
        assert_eq!(a.kinds[Kind::Expired.index()].as_ref().unwrap().max(), 50);
        assert!(a.kinds[Kind::Missing.index()].is_none());
    }
}
