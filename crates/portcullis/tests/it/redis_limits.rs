//! End-to-end: rate limits on the Redis store (`server.rate-limit-store`, issue 14). A real
//! `redis-server` on a free loopback port (started and stopped by the test; the test fails when it
//! is not installed), real gateways (two `portcullis run` processes, or in-process gateways where
//! the test reads their metrics), a recording backend, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_testkit::backend::Backend;
use portcullis_testkit::ports::ClosedPort;
use portcullis_testkit::redis::{RedisServer, Reply};
use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::support::{Gateway, InProcess};

/// A generous bound on one call while Redis is gone (15 times the 200 ms store timeout, so a slow
/// machine passes): a call that waited on the dead Redis would not return within it.
const NO_HANG: Duration = Duration::from_secs(3);

/// A gateway on `redis` with `extra` server keys: one route whose policy allows `calls` per
/// 300 s per `X-Client` header.
fn config(redis: &RedisServer, backend: &Backend, calls: u32, extra: &str) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  threads: 1
  rate-limit-store: "{}"
{extra}policies:
  shared:
    rate-limit-by-key:
      calls: {calls}
      renewal-period: 300
      counter-key: {{ header: X-Client }}
      remaining-calls-header-name: X-Remaining
routes:
  - {{ name: api, match: {{ path-prefix: / }}, upstream: "{}", policy: shared }}
"#,
        redis.url(),
        backend.url()
    )
}

async fn call(client: &Client, base: &str, caller: &str) -> Response {
    client
        .get(format!("{base}/api"))
        .header("X-Client", caller)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Two gateway processes on one Redis enforce one limit: the calls of both count against the same
/// counter, exactly within the window (6 pass in all, then both refuse), and the counter's key
/// carries its expiry.
#[tokio::test]
async fn two_gateway_processes_share_one_limit() {
    let redis = RedisServer::start();
    let backend = Backend::start().unwrap();
    let client = Client::new();
    let text = config(&redis, &backend, 6, "");
    let a = Gateway::run(&text, &client).await;
    let b = Gateway::run(&text, &client).await;
    // Windows are 300 s, aligned to the epoch. A burst that straddles a window edge is still cut
    // at exactly 6: right after the edge the previous window's 6 calls weigh 6 x (1 - e/300 s),
    // which stays above 5 for the first 50 s.
    let mut remaining = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = call(&client, &gw.proxy, "tenant-a").await;
        assert_eq!(r.status(), 200, "call {i}");
        remaining.push(header(&r, "x-remaining").unwrap());
    }
    assert_eq!(remaining, ["5", "4", "3", "2", "1", "0"]);
    for gw in [&a, &b] {
        let r = call(&client, &gw.proxy, "tenant-a").await;
        assert_eq!(r.status(), 429);
        assert!(header(&r, "retry-after").is_some());
    }
    assert_eq!(backend.request_count(), 6);
    // Another caller has its own counter, on either gateway.
    assert_eq!(call(&client, &b.proxy, "tenant-b").await.status(), 200);
    // The counter in Redis: one hash per (statement, key), expiring two periods after its last
    // count.
    let key = "portcullis:rl:shared#0:tenant-a";
    assert_eq!(
        redis.command(&["HGET", key, "c"]),
        Reply::Bulk(Some("6".into()))
    );
    let Reply::Int(ttl) = redis.command(&["PTTL", key]) else {
        panic!("no PTTL for {key}");
    };
    assert!(ttl > 590_000 && ttl <= 600_000, "PTTL {ttl}");
}

/// Sum of a counter's series in a gateway's `/metrics`.
async fn metric(gw: &InProcess, name: &str) -> u64 {
    let text = gw.metrics().await;
    let values = text.lines().filter(|l| l.starts_with(name));
    values
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn gateway(text: &str) -> InProcess {
    let (model, _) = portcullis_config::load_str(text, Path::new("redis.yaml"))
        .unwrap_or_else(|d| panic!("config rejected: {d:?}\n{text}"));
    InProcess::bind(&model)
}

/// Redis killed mid-run: the fail-open gateway keeps serving (uncounted, errors counted), the
/// fail-closed one answers 503 in the usual JSON shape without calling the backend, and neither
/// hangs. Redis restarted: both enforce the shared limit again, without a gateway restart.
#[tokio::test]
async fn redis_killed_and_restarted_mid_run() {
    let mut redis = RedisServer::start();
    let backend = Backend::start().unwrap();
    let client = Client::new();
    // One connection each, so the one broken by the kill must be replaced for any call to count.
    let timeout = "  rate-limit-store-timeout: 200ms\n  rate-limit-store-pool-size: 1\n";
    let open = gateway(&config(&redis, &backend, 2, timeout));
    let closed = gateway(&config(
        &redis,
        &backend,
        2,
        &format!("{timeout}  rate-limit-store-failure: closed\n"),
    ));
    open.wait_ready().await;
    closed.wait_ready().await;
    let (open_url, closed_url) = (
        format!("http://{}", open.proxy()),
        format!("http://{}", closed.proxy()),
    );

    // Up: one limit across both.
    assert_eq!(call(&client, &open_url, "a").await.status(), 200);
    assert_eq!(call(&client, &closed_url, "a").await.status(), 200);
    assert_eq!(call(&client, &open_url, "a").await.status(), 429);
    assert_eq!(call(&client, &closed_url, "a").await.status(), 429);
    assert_eq!(
        metric(&open, "portcullis_rate_limit_store_errors_total").await,
        0
    );

    // Down.
    redis.kill();
    let forwarded = backend.request_count();
    for _ in 0..3 {
        let started = Instant::now();
        let r = call(&client, &open_url, "a").await;
        assert_eq!(r.status(), 200, "fail-open serves the limited caller");
        assert!(started.elapsed() < NO_HANG, "{:?}", started.elapsed());
    }
    assert_eq!(backend.request_count(), forwarded + 3);
    let errors = metric(&open, "portcullis_rate_limit_store_errors_total").await;
    assert_eq!(errors, 3, "one store error per uncounted call");
    for caller in ["a", "fresh"] {
        let started = Instant::now();
        let r = call(&client, &closed_url, caller).await;
        assert_eq!(r.status(), 503);
        assert!(started.elapsed() < NO_HANG, "{:?}", started.elapsed());
        assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"statusCode": 503, "message": "Rate limit store is unavailable. Try again later."})
        );
    }
    assert_eq!(
        backend.request_count(),
        forwarded + 3,
        "no 503 reached the backend"
    );
    assert!(metric(&closed, "portcullis_rate_limit_store_errors_total").await >= 2);

    // Back (empty: nothing was persisted). The gateways reconnect on their own (bounded poll).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = call(&client, &closed_url, "b").await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "the fail-closed gateway never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // "b" has one call on the new Redis; the second passes on the other gateway, the third is
    // refused on both: one limit again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let r = call(&client, &open_url, "b").await;
        // The fail-open gateway may still be waiting out its reconnect backoff: such a call
        // passes uncounted and says nothing about the limit. Counted calls carry X-Remaining.
        if header(&r, "x-remaining").is_some() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the fail-open gateway never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-remaining").as_deref(), Some("0"));
    assert_eq!(call(&client, &open_url, "b").await.status(), 429);
    assert_eq!(call(&client, &closed_url, "b").await.status(), 429);
}

/// A gateway starts, and is ready, while its Redis is not there; fail-open calls pass, counted
/// as store errors.
#[tokio::test]
async fn a_gateway_starts_without_its_redis() {
    let backend = Backend::start().unwrap();
    // Reserved for the test's lifetime, never listening: connections are refused.
    let dead = ClosedPort::reserve().unwrap();
    let text = format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  threads: 1
  rate-limit-store: "redis://{}"
policies:
  limited:
    rate-limit: {{ calls: 1, renewal-period: 60 }}
routes:
  - {{ name: api, match: {{ path-prefix: / }}, upstream: "{}", policy: limited }}
"#,
        dead.addr(),
        backend.url()
    );
    let gw = gateway(&text);
    gw.wait_ready().await;
    let client = Client::new();
    let base = format!("http://{}", gw.proxy());
    for _ in 0..2 {
        assert_eq!(call(&client, &base, "a").await.status(), 200);
    }
    assert_eq!(
        metric(&gw, "portcullis_rate_limit_store_errors_total").await,
        2
    );
}
