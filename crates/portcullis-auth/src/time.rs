//! Time as data. The core never reads the clock: callers pass `now`, tests pass any instant.

/// Seconds since the Unix epoch, as the caller's clock read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Seconds since the epoch.
    pub fn secs(self) -> i64 {
        self.0
    }
}
