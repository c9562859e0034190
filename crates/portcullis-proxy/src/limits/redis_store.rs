//! The Redis store: the counters of every replica in one Redis, decided atomically by one Lua
//! script with the same arithmetic as [`decide`](super::decide).
//!
//! **Keys.** One hash per (statement, counter key): `portcullis:rl:{statement id}:{counter key}`
//! with fields `w` (window index), `c` (current window's count) and `p` (previous window's count),
//! expiring two periods after its last count (by then both windows are over and the key would read
//! as empty anyway).
//!
//! **Clock.** The script reads Redis's own clock (`TIME`), not the gateway's: every replica then
//! agrees on the window index even when their clocks drift, and a replica whose clock runs ahead
//! cannot roll a window the others still count in. (Scripts may call `TIME` since Redis 5, where
//! scripts are replicated by their effects.) Tests pass the time in instead, to compare the script
//! with [`decide`](super::decide) step by step.
//!
//! **Atomicity and exactness.** Roll, decide and count happen in one script, so concurrent calls
//! from any number of replicas are serialised by Redis: no overshoot within a window. Lua numbers
//! are doubles: the comparison is exact while counts times the period in milliseconds stay below
//! 2^53 (a rate limit's period is at most 300 s and its `calls` at most 2^32: well inside; quotas
//! are compared unscaled). The script returns the rolled counters as they were before the call,
//! and the verdict's remaining calls and retry time are computed from them by `decide` itself, so
//! both stores answer the same headers.
//!
//! **Connections and failures.** `pool-size` multiplexed connections, used round robin; each
//! pipelines any number of concurrent calls. A connection is made on first use (the gateway starts
//! without Redis), replaced after an I/O error or a timeout, and after a failed attempt not retried
//! for [`RECONNECT_BACKOFF`]: meanwhile calls fail at once instead of each waiting for a connect
//! timeout. Every call (connecting included) is bounded by `rate-limit-store-timeout`. A failure
//! is counted in `portcullis_rate_limit_store_errors_total{error}`, logged at most once per
//! [`WARN_EVERY`], and answered as `rate-limit-store-failure` says (the pipeline's job).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};

use super::{decide, Counted, Hit, Slot};

/// After a failed connection attempt, no new one on that connection for this long.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// At most one warning line per this interval while Redis fails.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Key prefix of every counter.
pub const KEY_PREFIX: &str = "portcullis:rl:";
/// Limits above this are passed as "no limit" (Lua numbers are doubles).
const UNLIMITED_ABOVE: u64 = 1 << 52;

/// Roll the key's windows to now, decide, count when allowed and asked to.
/// KEYS[1]: the counter. ARGV: period_ms, limit (-1: none), amount, sliding (1/0), commit (1/0),
/// now_ms ('': Redis's clock). Returns {allowed, window, curr, prev, now_ms}: the counters as
/// rolled, before this call's count.
const SCRIPT: &str = r"
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local now
if ARGV[6] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[6])
end
local window = math.floor(now / period)
local elapsed = now - window * period
local v = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(v[1])
local c = tonumber(v[2]) or 0
local p = tonumber(v[3]) or 0
if w ~= window then
  if w ~= nil and w + 1 == window then p = c else p = 0 end
  c = 0
end
local allowed
if limit < 0 then
  allowed = true
elseif ARGV[4] == '1' then
  allowed = p * (period - elapsed) + (c + amount) * period <= limit * period
else
  allowed = c + amount <= limit
end
if allowed and ARGV[5] == '1' then
  local f = function(x) return string.format('%.0f', x) end
  redis.call('HSET', KEYS[1], 'w', f(window), 'c', f(c + amount), 'p', f(p))
  redis.call('PEXPIRE', KEYS[1], f(2 * period))
end
return {allowed and 1 or 0, window, c, p, now}
";

/// Why a call to Redis failed (the `error` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No connection (refused, or waiting out the reconnect backoff).
    Unavailable,
    /// The call (or the connection attempt) took longer than the timeout.
    Timeout,
    /// Redis answered with an error, or with something the script does not return.
    Reply,
}

impl StoreError {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StoreError::Unavailable => "unavailable",
            StoreError::Timeout => "timeout",
            StoreError::Reply => "reply",
        }
    }
}

/// One pooled connection.
#[derive(Default)]
struct Pooled {
    conn: Option<MultiplexedConnection>,
    connecting: bool,
    retry_at: Option<Instant>,
}

/// Counters in Redis, shared by every replica pointed at it.
pub struct RedisStore {
    client: Client,
    display: String,
    pool: Vec<Mutex<Pooled>>,
    next: AtomicUsize,
    timeout: Duration,
    script: Script,
    errors: IntCounterVec,
    /// Failures since the last warning line.
    unreported: AtomicU64,
    /// When the last warning line was written (ms since `started`; 0: never).
    last_warn_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.display)
            .field("pool_size", &self.pool.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Clears `connecting` however the attempt ends (a timeout drops the future mid-connect).
struct Connecting<'a>(&'a Mutex<Pooled>);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if let Ok(mut pooled) = self.0.lock() {
            pooled.connecting = false;
        }
    }
}

impl RedisStore {
    /// A store for `url` (checked by the config: `redis://host[:port][/db]`); connects on first
    /// use. `display` is the URL without its password, for logs; `errors` the failure counter.
    pub fn new(
        url: &str,
        display: &str,
        pool_size: usize,
        timeout: Duration,
        errors: IntCounterVec,
    ) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            client: Client::open(url)?,
            display: display.to_owned(),
            pool: (0..pool_size.max(1)).map(|_| Mutex::default()).collect(),
            next: AtomicUsize::new(0),
            timeout,
            script: Script::new(SCRIPT),
            errors,
            unreported: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// The Redis key of a counter: `portcullis:rl:{statement id}:{counter key}`.
    pub fn key(hit: &Hit<'_>) -> String {
        let mut key = String::with_capacity(KEY_PREFIX.len() + hit.id.len() + 1 + hit.key.len());
        key.push_str(KEY_PREFIX);
        key.push_str(hit.id);
        key.push(':');
        key.push_str(hit.key);
        key
    }

    /// Count (or look at) one hit on Redis's clock.
    pub async fn hit(&self, hit: &Hit<'_>) -> Counted {
        self.hit_at(hit, None).await
    }

    /// As [`RedisStore::hit`], at `now_ms` instead of Redis's clock when given (tests).
    pub async fn hit_at(&self, hit: &Hit<'_>, now_ms: Option<u64>) -> Counted {
        let pooled = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len()];
        let call = async {
            let mut conn = self.connection(pooled).await?;
            let limit = if hit.limit > UNLIMITED_ABOVE {
                -1
            } else {
                i64::try_from(hit.limit).unwrap_or(-1)
            };
            let mut invocation = self.script.key(Self::key(hit));
            invocation
                .arg(hit.period_ms.max(1))
                .arg(limit)
                .arg(hit.amount)
                .arg(u8::from(hit.sliding))
                .arg(u8::from(hit.commit))
                .arg(now_ms.map(|n| n.to_string()).unwrap_or_default());
            invocation
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "rate-limit store: redis call failed");
                    if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                        drop_connection(pooled);
                    }
                    if e.is_timeout() {
                        StoreError::Timeout
                    } else {
                        StoreError::Reply
                    }
                })
        };
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return self.failed(e),
            Err(_) => {
                // A hung Redis: start over on a fresh connection.
                drop_connection(pooled);
                return self.failed(StoreError::Timeout);
            }
        };
        let field = |i: usize| reply.get(i).and_then(|v| u64::try_from(*v).ok());
        let (Some(allowed), Some(window), Some(curr), Some(prev), Some(now)) =
            (field(0), field(1), field(2), field(3), field(4))
        else {
            return self.failed(StoreError::Reply);
        };
        // The verdict's numbers come from the same arithmetic as the in-process store; whether
        // the call was allowed (and counted) is the script's decision.
        let mut slot = Slot { window, curr, prev };
        let mut verdict = decide(&mut slot, hit, now);
        let allowed = allowed == 1;
        if verdict.allowed != allowed {
            tracing::debug!(
                ?verdict,
                allowed,
                "rate-limit store: script and decide disagree"
            );
            verdict.allowed = allowed;
        }
        Counted::Yes(verdict)
    }

    /// A connection of `pooled`: the live one, or a new one (unless another call is connecting
    /// or the last attempt failed less than [`RECONNECT_BACKOFF`] ago: then at once an error).
    async fn connection(
        &self,
        pooled: &Mutex<Pooled>,
    ) -> Result<MultiplexedConnection, StoreError> {
        {
            let mut p = pooled.lock().map_err(|_| StoreError::Unavailable)?;
            if let Some(conn) = &p.conn {
                return Ok(conn.clone());
            }
            if p.connecting || p.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(StoreError::Unavailable);
            }
            p.connecting = true;
        }
        let _connecting = Connecting(pooled);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let made = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        let mut p = pooled.lock().map_err(|_| StoreError::Unavailable)?;
        match made {
            Ok(conn) => {
                p.conn = Some(conn.clone());
                p.retry_at = None;
                tracing::info!(url = %self.display, "rate-limit store: connected to redis");
                Ok(conn)
            }
            Err(e) => {
                p.retry_at = Some(Instant::now() + RECONNECT_BACKOFF);
                tracing::debug!(error = %e, "rate-limit store: cannot connect to redis");
                Err(if e.is_timeout() {
                    StoreError::Timeout
                } else {
                    StoreError::Unavailable
                })
            }
        }
    }

    /// Count the failure, warn (at most once per [`WARN_EVERY`]), and say so.
    fn failed(&self, e: StoreError) -> Counted {
        self.errors.with_label_values(&[e.label()]).inc();
        let pending = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= every;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unreported.fetch_sub(pending, Ordering::Relaxed);
            tracing::warn!(
                url = %self.display,
                error = e.label(),
                failures = pending,
                "rate-limit store: redis did not answer; calls are decided by \
                 rate-limit-store-failure (failures: since the last such line)"
            );
        }
        Counted::Failed(e)
    }
}

fn drop_connection(pooled: &Mutex<Pooled>) {
    if let Ok(mut p) = pooled.lock() {
        p.conn = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::limits::LocalStore;
    use portcullis_testkit::redis::{RedisServer, Reply};

    fn errors() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("errors", "test"), &["error"]).unwrap()
    }

    /// A store call, failing the test instead of hanging it: a generous bound (10 times the
    /// store timeout of the tests that use it), so a slow machine passes and a hung call fails.
    async fn bounded(call: impl std::future::Future<Output = Counted>) -> Counted {
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a store call hung")
    }

    /// Counts one call against 5 per minute.
    fn counting(id: &'static str) -> Hit<'static> {
        Hit {
            id,
            key: "k",
            period_ms: 60_000,
            limit: 5,
            amount: 1,
            sliding: true,
            commit: true,
        }
    }

    fn store(url: &str, timeout: Duration) -> RedisStore {
        RedisStore::new(url, url, 2, timeout, errors()).unwrap()
    }

    /// The script and `decide` agree call by call: a pseudo-random walk over time, amounts,
    /// looks and counts, sliding and fixed windows, fresh keys (a full first window, where the
    /// limit is exact) and calls with no limit (what the counts made after the response use),
    /// against both stores.
    #[tokio::test]
    async fn the_script_decides_exactly_as_the_in_process_store() {
        let redis = RedisServer::start();
        let remote = store(&redis.url(), Duration::from_secs(5));
        let local = LocalStore::default();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 1_700_000_000_000u64 - 7_000;
        let (mut allowed, mut refused) = (0, 0);
        for step in 0..600 {
            now += next(1_500);
            let sliding = step % 2 == 0;
            let key = format!("k{}", step / 60);
            let hit = Hit {
                id: if sliding { "p#0" } else { "p#1" },
                key: &key,
                period_ms: 10_000,
                limit: if next(10) == 0 { u64::MAX } else { 7 },
                amount: 1 + next(3),
                sliding,
                commit: next(5) != 0,
            };
            let expected = local.hit(&hit, now);
            let got = remote.hit_at(&hit, Some(now)).await;
            assert_eq!(got, expected, "step {step} at {now}: {hit:?}");
            match got {
                Counted::Yes(v) if v.allowed => allowed += 1,
                Counted::Yes(_) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        // The walk exercised both outcomes.
        assert!(
            allowed > 50 && refused > 50,
            "{allowed} allowed, {refused} refused"
        );
    }

    #[tokio::test]
    async fn a_counter_expires_two_periods_after_its_last_count_and_looks_write_nothing() {
        let redis = RedisServer::start();
        let remote = store(&redis.url(), Duration::from_secs(5));
        let hit = Hit {
            id: "ttl#0",
            key: "caller",
            period_ms: 1_000,
            limit: 5,
            amount: 1,
            sliding: true,
            commit: false,
        };
        let key = RedisStore::key(&hit);
        assert_eq!(key, "portcullis:rl:ttl#0:caller");
        assert!(matches!(remote.hit(&hit).await, Counted::Yes(v) if v.allowed));
        assert_eq!(redis.command(&["EXISTS", &key]), Reply::Int(0));
        let count = Hit {
            commit: true,
            ..hit
        };
        assert!(matches!(remote.hit(&count).await, Counted::Yes(v) if v.remaining == 4));
        let Reply::Int(ttl) = redis.command(&["PTTL", &key]) else {
            panic!("no PTTL");
        };
        assert!(ttl > 0 && ttl <= 2_000, "PTTL {ttl}");
        // Gone once two periods (2 s) have passed: polled, within a generous 6 s.
        let deadline = Instant::now() + Duration::from_secs(6);
        while redis.command(&["EXISTS", &key]) != Reply::Int(0) {
            assert!(Instant::now() < deadline, "{key} never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_dead_redis_fails_without_hanging_and_a_restarted_one_is_used_again() {
        let mut redis = RedisServer::start();
        let errors = errors();
        let remote = RedisStore::new(
            &redis.url(),
            "r",
            1,
            Duration::from_millis(500),
            errors.clone(),
        )
        .unwrap();
        let hit = counting("down#0");
        assert!(matches!(remote.hit(&hit).await, Counted::Yes(_)));
        redis.kill();
        // The live connection breaks, then reconnecting is refused or waits out the backoff:
        // every call ends within the timeout, none hangs.
        for _ in 0..5 {
            assert!(matches!(
                bounded(remote.hit(&hit)).await,
                Counted::Failed(_)
            ));
        }
        let failed: u64 = ["unavailable", "timeout", "reply"]
            .iter()
            .map(|l| errors.with_label_values(&[l]).get())
            .sum();
        assert_eq!(failed, 5);
        redis.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Counted::Yes(v) = bounded(remote.hit(&hit)).await {
                // A fresh Redis: the count starts over.
                assert_eq!(v.remaining, 4);
                break;
            }
            assert!(Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_hung_redis_times_out() {
        // Bound and listening for the test's lifetime (the kernel completes the handshake), never
        // accepted on or answered.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", hung.local_addr().unwrap());
        let errors = errors();
        let remote =
            RedisStore::new(&url, "r", 1, Duration::from_millis(200), errors.clone()).unwrap();
        let hit = counting("hung#0");
        assert_eq!(
            bounded(remote.hit(&hit)).await,
            Counted::Failed(StoreError::Timeout)
        );
        assert_eq!(errors.with_label_values(&["timeout"]).get(), 1);
    }
}
