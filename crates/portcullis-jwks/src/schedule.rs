//! When to fetch next: refresh after success, backoff after failure.
//!
//! Why it exists: the timing rules (Cache-Control within bounds, exponential backoff with jitter,
//! never later than half of max-stale) are the part of the key lifecycle most likely to be wrong
//! in subtle ways, so they live here as pure functions with their own tests.

use std::time::Duration;

use portcullis_config::KeyLifecycle;

/// Bounds on refresh and retry timing (not per-policy config; the defaults suit real IdPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBounds {
    /// Largest honoured `Cache-Control: max-age` (default 24 h).
    pub max_max_age: Duration,
    /// First retry delay after a failure (default 1 s).
    pub backoff_min: Duration,
    /// Largest retry delay after failures (default 60 s).
    pub backoff_max: Duration,
}

impl Default for RefreshBounds {
    fn default() -> Self {
        RefreshBounds {
            max_max_age: Duration::from_secs(24 * 3600),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Delay until the next refresh after a successful fetch: the server's max-age clamped to
/// `min-refresh-interval` .. the largest honoured max-age, else the configured refresh interval; never more than half of max-stale, so a healthy
/// source is refreshed (and retried) well before its keys go stale.
pub(crate) fn after_success(
    max_age: Option<Duration>,
    lifecycle: &KeyLifecycle,
    bounds: &RefreshBounds,
) -> Duration {
    let wanted = match max_age {
        Some(age) => age.clamp(
            lifecycle.min_refresh_interval,
            bounds.max_max_age.max(lifecycle.min_refresh_interval),
        ),
        None => lifecycle.refresh_interval,
    };
    wanted
        .min(lifecycle.max_stale / 2)
        .max(Duration::from_millis(1))
}

/// Delay before retrying after `failures` consecutive failures (1-based): exponential from
/// `backoff_min`, capped at `backoff_max` and at what [`after_success`] would give without a
/// max-age; `jitter` in [0, 1) spreads it over [50 %, 100 %] of that value so many gateways do not
/// retry in lockstep.
pub(crate) fn after_failure(
    failures: u32,
    lifecycle: &KeyLifecycle,
    bounds: &RefreshBounds,
    jitter: f64,
) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = bounds
        .backoff_min
        .saturating_mul(1u32 << exp)
        .min(bounds.backoff_max)
        .min(after_success(None, lifecycle, bounds));
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(refresh: u64, stale: u64) -> KeyLifecycle {
        KeyLifecycle {
            refresh_interval: Duration::from_secs(refresh),
            max_stale: Duration::from_secs(stale),
            ..KeyLifecycle::default()
        }
    }

    #[test]
    fn success_honours_max_age_within_bounds() {
        let b = RefreshBounds::default();
        let l = lc(3600, 86400);
        let s = Duration::from_secs;
        assert_eq!(after_success(None, &l, &b), s(3600));
        assert_eq!(after_success(Some(s(600)), &l, &b), s(600));
        assert_eq!(after_success(Some(s(0)), &l, &b), s(30));
        assert_eq!(after_success(Some(s(45)), &l, &b), s(45));
        assert_eq!(after_success(Some(s(10 * 86400)), &l, &b), s(43200));
        assert_eq!(after_success(None, &lc(3600, 600), &b), s(300));
    }

    #[test]
    fn default_floor_is_at_most_30_seconds() {
        // A key the issuer removed (and answers `no-store` for) stops verifying within 30 s.
        let floor = after_success(
            Some(Duration::ZERO),
            &KeyLifecycle::default(),
            &RefreshBounds::default(),
        );
        assert!(floor <= Duration::from_secs(30), "{floor:?}");
    }

    #[test]
    fn failure_backs_off_exponentially_with_cap_and_jitter() {
        let b = RefreshBounds::default();
        let l = lc(3600, 86400);
        let s = Duration::from_secs;
        let full: Vec<_> = (1..=8)
            .map(|n| after_failure(n, &l, &b, 0.999_999).as_secs_f64().round() as u64)
            .collect();
        assert_eq!(full, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(after_failure(3, &l, &b, 0.0), s(2));
        assert_eq!(after_failure(u32::MAX, &l, &b, 0.0), s(30));
        // never later than a normal refresh
        assert_eq!(after_failure(10, &lc(10, 86400), &b, 0.0), s(5));
    }
}
