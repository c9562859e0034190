//! End-to-end tests: tokens never reach the logs. The gateway binary runs at `debug` level (what a
//! user turns on to investigate) and at `trace`, in text and in JSON format, and sees valid, expired, tampered and
//! garbage tokens in the header and in the query; afterwards no part of any token's payload or
//! signature appears anywhere in what it wrote. And the access log (on by default) never holds a
//! request up: a gateway whose stderr nobody reads keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_idp::{IdpConfig, MintRequest};
use portcullis_testkit::backend::Backend;

use crate::support::Gateway;

/// Windows of a token segment to look for: 16 characters (12 random bytes, never a coincidence)
/// at every 8th offset, so a log of any part of it (head, middle, tail) is found.
fn probes(segment: &str) -> Vec<&str> {
    const WIDTH: usize = 16;
    if segment.len() <= WIDTH {
        return vec![segment];
    }
    let mut starts: Vec<usize> = (0..=segment.len() - WIDTH).step_by(8).collect();
    starts.push(segment.len() - WIDTH);
    starts.into_iter().map(|i| &segment[i..i + WIDTH]).collect()
}

/// The values in a token's decoded payload and signature that are unique to it: every string in
/// the payload JSON of 12 characters or more that is not a URL (the jti), and a segment's decoded
/// text when it is not JSON (the garbage token's markers). The header is left out: its `kid` is
/// public and may be logged.
fn decoded_secrets(token: &str) -> Vec<String> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.len() >= 12 && !s.contains("://") => {
                out.push(s.clone())
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for segment in token.split('.').skip(1) {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(segment) else {
            continue;
        };
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(json) => strings(&json, &mut out),
            Err(_) => match String::from_utf8(bytes) {
                Ok(text) if text.len() >= 8 && text.is_ascii() => out.push(text),
                _ => {}
            },
        }
    }
    out
}

async fn tokens_stay_out_of_the_logs(global_args: &[&str], rust_log: &str) {
    let idp = portcullis_idp::start(IdpConfig::demo()).await.unwrap();
    let backend = Backend::start().unwrap();
    let config = format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  header:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://default]
    forward-claims: {{ X-User-Id: sub }}
  query:
    validate-jwt:
      query-parameter-name: access_token
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://default]
routes:
  - name: header
    match: {{ path-prefix: /api }}
    upstream: {backend}
    policy: header
  - name: query
    match: {{ path-prefix: /q }}
    upstream: {backend}
    policy: query
"#,
        discovery = idp.discovery_url(),
        backend = backend.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let client = reqwest::Client::new();
    let gw = Gateway::run_with(
        &config,
        &client,
        global_args,
        &[("RUST_LOG", rust_log)],
        Stdio::from(log),
    )
    .await;

    let valid = idp
        .mint(&MintRequest::new("alice", "api://default"))
        .unwrap();
    let mut expired_req = MintRequest::new("alice", "api://default");
    expired_req.ttl = Duration::from_secs(0);
    let expired = idp.mint(&expired_req).unwrap();
    let wrong_aud = idp.mint(&MintRequest::new("alice", "api://other")).unwrap();
    let mut tampered = valid.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let garbage = "eyJzZWNyZXQiOiJnYXJiYWdlLW1hcmtlci0zMTQxNTkifQ.bm90LWpzb24tbWFya2VyLTI3MTgy.c2lnLW1hcmtlcg".to_owned();
    let tokens = [&valid, &expired, &wrong_aud, &tampered, &garbage];

    let mut statuses = Vec::new();
    for token in tokens {
        statuses.push(gw.call("/api/orders", token).await.0);
        let resp = client
            .get(format!("{}/q/orders?access_token={token}", gw.proxy))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    // The decisions are right (so the tokens really went through validation) ...
    assert_eq!(statuses, [200, 200, 401, 401, 401, 401, 401, 401, 401, 401]);
    let status = gw.stop();
    assert!(status.success(), "the gateway exited with {status}");

    // ... and no token part is in the log: neither raw nor decoded.
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logged.contains("status"),
        "the gateway logged no requests: {logged}"
    );
    for token in tokens {
        for (i, part) in token.split('.').enumerate().skip(1) {
            for probe in probes(part) {
                let line = logged.lines().find(|l| l.contains(probe));
                assert!(
                    line.is_none(),
                    "token segment {i} (...{probe}...) appears in the log: {line:?}"
                );
            }
        }
        // Decoded: the payload's unique values (each minted token's jti, the garbage token's
        // markers), which a log of the claims would carry.
        for secret in decoded_secrets(token) {
            let line = logged.lines().find(|l| l.contains(&secret));
            assert!(
                line.is_none(),
                "a decoded token value ({secret}) appears in the log: {line:?}"
            );
        }
    }
    assert!(
        !logged.contains("Bearer "),
        "an Authorization value appears in the log"
    );
    assert!(
        !logged.contains("access_token="),
        "a token query string appears in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_text_logs_at_debug_level() {
    tokens_stay_out_of_the_logs(&[], "debug").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_json_logs_at_debug_level() {
    tokens_stay_out_of_the_logs(&["--log-format", "json"], "debug").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_logs_even_when_pingora_is_asked_for_trace() {
    tokens_stay_out_of_the_logs(&[], "trace,pingora_proxy=trace,pingora_core=trace").await;
}

/// A gateway with one route, `open` (`/open`, no policy), to `backend`.
fn open_route(backend: &Backend) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
routes:
  - name: open
    match: {{ path-prefix: /open }}
    upstream: {backend}
    policy: none
"#,
        backend = backend.url(),
    )
}

/// The default access log is written off the request path: with stderr a pipe nobody reads (its
/// buffer fills after a few hundred lines), the gateway still answers thousands of requests, and
/// once the pipe is read every line arrives, without colour codes (stderr is not a terminal).
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_stderr_does_not_hold_requests_up() {
    const REQUESTS: usize = 3000;
    let backend = Backend::start().unwrap();
    let config = open_route(&backend);
    let client = reqwest::Client::new();
    let mut gw = Gateway::run_with(
        &config,
        &client,
        &[],
        &[("RUST_LOG", "info")],
        Stdio::piped(),
    )
    .await;
    let stderr = gw.take_stderr().unwrap();
    // ~200 bytes a line: 3000 lines are ten times what a pipe buffers.
    for i in 0..REQUESTS {
        let resp = client
            .get(format!("{}/open/item-{i}", gw.proxy))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} did not complete: {e}"));
        assert_eq!(resp.status(), 200, "request {i}");
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("portcullis_log_lines_dropped_total 0"),
        "the queue had room for every line: {metrics}"
    );
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stderr }, &mut text).unwrap();
        text
    });
    let status = gw.stop();
    assert!(status.success(), "the gateway exited with {status}");
    let logged = reader.join().unwrap();
    let lines = logged
        .lines()
        .filter(|l| l.contains("route=\"open\"") && l.contains("/open/item-"))
        .count();
    assert_eq!(
        lines, REQUESTS,
        "every access line arrives once the pipe is read"
    );
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a non-terminal log"
    );
}

/// The access line, written straight into the log by the binary (not through tracing), still
/// obeys `RUST_LOG` as the event would: off at `warn`, off when its target is turned down while
/// the rest stays at `info`, on (one line per request, in the documented shape) by default.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_line_follows_rust_log() {
    let backend = Backend::start().unwrap();
    let config = open_route(&backend);
    let client = reqwest::Client::new();
    let run = |rust_log: &'static str| {
        let (config, client) = (config.clone(), client.clone());
        async move {
            let dir = tempfile::tempdir().unwrap();
            let log_path = dir.path().join("gateway.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let gw = Gateway::run_with(
                &config,
                &client,
                &[],
                &[("RUST_LOG", rust_log)],
                Stdio::from(log),
            )
            .await;
            for i in 0..3 {
                let resp = client
                    .get(format!("{}/open/item-{i}", gw.proxy))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
            assert!(gw.stop().success());
            std::fs::read_to_string(&log_path).unwrap()
        }
    };
    let access = |log: &str| {
        log.lines()
            .filter(|l| l.contains("portcullis_proxy::proxy: request "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    let default = run("info").await;
    let lines = access(&default);
    assert_eq!(lines.len(), 3, "{default}");
    for line in &lines {
        // `2026-12-07T06:23:36.542872Z  INFO portcullis_proxy::proxy: request route="open" ...`
        let (time, rest) = line.split_at(27);
        assert!(time.as_bytes()[10] == b'T' && time.ends_with('Z'), "{line}");
        let rest = rest
            .strip_prefix("  INFO portcullis_proxy::proxy: request route=\"open\" method=GET path=\"/open/item-")
            .unwrap_or_else(|| panic!("{line}"));
        let (_, rest) = rest
            .split_once("\" status=200 reason=\"ok\" subscription=\"-\" latency_ms=")
            .unwrap_or_else(|| panic!("{line}"));
        let (latency, id) = rest
            .split_once(" request_id=\"")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(latency.parse::<f64>().is_ok_and(|ms| ms > 0.0), "{line}");
        assert!(id.len() == 37 && id.ends_with('"'), "{line}");
    }

    let warn = run("warn").await;
    assert_eq!(access(&warn), Vec::<String>::new(), "{warn}");

    let target_off = run("info,portcullis_proxy::proxy=warn").await;
    assert_eq!(access(&target_off), Vec::<String>::new(), "{target_off}");
    assert!(
        target_off.contains(" INFO "),
        "the other info lines are still written: {target_off}"
    );
}
