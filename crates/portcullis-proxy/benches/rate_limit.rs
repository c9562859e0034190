//! The in-process rate-limit store through the function the pipeline calls per limited request
//! (`LocalStore::hit`: hash of (statement, key), one shard lock, the window arithmetic):
//! - `one-key`: every call on one counter (one caller hammering);
//! - `10k-keys`: calls spread over 10,000 counters (many callers), so map lookups miss the cache
//!   as in production;
//! - `one-key-via-store`: as `one-key`, through `Store::hit` (what the pipeline calls: the enum
//!   over the in-process and Redis stores, an `async fn` that is ready at its first poll), to show
//!   the dispatch adds nothing measurable.
//!
//! Run: `cargo bench -p portcullis-proxy --bench rate_limit`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_proxy::limits::{Counted, Hit, LocalStore, Store};

fn hit(key: &str) -> Hit<'_> {
    Hit {
        id: "policy#1",
        key: black_box(key),
        period_ms: 60_000,
        limit: u64::MAX,
        amount: 1,
        sliding: true,
        commit: true,
    }
}

fn bench(c: &mut Criterion) {
    let store = LocalStore::default();
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let mut group = c.benchmark_group("rate_limit");
    let mut now = 1_700_000_000_000u64;
    group.bench_function("one-key", |b| {
        b.iter(|| {
            now += 1;
            black_box(store.hit(&hit("alice"), now))
        })
    });
    let mut i = 0usize;
    group.bench_function("10k-keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            now += 1;
            black_box(store.hit(&hit(&keys[i]), now))
        })
    });
    let via_store = Store::default();
    let mut cx = Context::from_waker(Waker::noop());
    group.bench_function("one-key-via-store", |b| {
        b.iter(|| {
            now += 1;
            let counted: Poll<Counted> = pin!(via_store.hit(&hit("alice"), now)).poll(&mut cx);
            black_box(counted)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
