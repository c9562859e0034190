//! End-to-end: OpenTelemetry tracing (`server.telemetry`).
//!
//! The real gateway (in process), the recording backend, a JWKS server and the testkit's OTLP
//! receiver (the official protobuf definitions; gRPC and HTTP/protobuf), all on loopback port 0.
//! Each test reads the spans the receiver decoded and the `traceparent` the backend received, so
//! a gateway that did not export, or that gave the backend a parent other than its own span,
//! fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_auth::Policy;
use portcullis_config::telemetry::{Otlp, OtlpProtocol, Telemetry};
use portcullis_config::{KeyLifecycle, KeySource, Model};
use portcullis_testkit::backend::{Backend, RecordedRequest};
use portcullis_testkit::jwks_server::{JwksServer, TestKey};
use portcullis_testkit::otlp::{OtlpReceiver, Protocol, ReceivedSpan};
use portcullis_testkit::ports::ClosedPort;
use portcullis_testkit::wait::poll_text;
use serde_json::json;

use crate::support::{self, metric_value, route, InProcess};

const AUDIENCE: &str = "api://orders";
const WAIT: Duration = Duration::from_secs(10);
const INCOMING: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

struct Fixture {
    backend: Backend,
    idp: JwksServer,
    key: TestKey,
    gw: InProcess,
    client: reqwest::Client,
}

fn telemetry(endpoint: String, protocol: OtlpProtocol, interval: Duration) -> Telemetry {
    Telemetry {
        otlp: Otlp {
            endpoint,
            protocol,
            headers: vec![("x-api-key".to_owned(), "collector-key".to_owned())],
            timeout: Duration::from_secs(2),
            max_queue_size: 2048,
            export_interval: interval,
        },
        service_name: "portcullis-test".to_owned(),
        sample_ratio: 1.0,
    }
}

fn otlp_protocol(protocol: Protocol) -> OtlpProtocol {
    match protocol {
        Protocol::Grpc => OtlpProtocol::Grpc,
        Protocol::HttpProtobuf => OtlpProtocol::HttpProtobuf,
    }
}

/// Routes: `orders` (validate-jwt) and `public` (anonymous), both to the recording backend.
async fn fixture(telemetry: Option<Telemetry>) -> Fixture {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let key = TestKey::rsa("k1").unwrap();
    idp.set_keys(&[&key]);
    let mut policy = Policy::new("orders");
    policy.issuers = vec![idp.issuer().to_owned()];
    policy.audiences = vec![AUDIENCE.to_owned()];
    let source = KeySource::JwksUri {
        url: idp.jwks_url(),
        lifecycle: KeyLifecycle::default(),
    };
    let routes = vec![
        route("orders", "/api/orders", backend.addr(), Some("orders")),
        route("public", "/public", backend.addr(), None),
    ];
    let mut model: Model = support::model("telemetry.yaml", vec![(policy, vec![source])], routes);
    model.server.telemetry = telemetry;
    let gw = InProcess::start(&model).await;
    Fixture {
        backend,
        idp,
        key,
        gw,
        client: reqwest::Client::new(),
    }
}

impl Fixture {
    fn token_with(&self, key: &TestKey) -> String {
        key.sign(&json!({
            "iss": self.idp.issuer(),
            "aud": AUDIENCE,
            "sub": "user-42",
            "exp": support::now() + 300,
        }))
        .unwrap()
    }

    fn token(&self) -> String {
        self.token_with(&self.key)
    }

    /// Status and `X-Request-Id` of `GET path` with these headers.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.client.get(format!("http://{}{path}", self.gw.proxy()));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        (resp.status().as_u16(), id)
    }

    /// The one request the backend received (it is cleared between requests).
    fn received(&self) -> RecordedRequest {
        let mut requests = self.backend.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        self.backend.clear();
        requests.remove(0)
    }
}

/// The SERVER span of the request with this id, and its CLIENT (upstream) child if any.
async fn request_spans(
    receiver: &OtlpReceiver,
    request_id: &str,
    upstream: bool,
) -> (ReceivedSpan, Option<ReceivedSpan>) {
    let server = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .find(|s| s.kind == "server" && s.attr("portcullis.request_id") == Some(request_id))
            .cloned()
    };
    let spans = receiver
        .wait_for(WAIT, |spans| match server(spans) {
            Some(s) => !upstream || spans.iter().any(|c| c.parent_span_id == s.span_id),
            None => false,
        })
        .await;
    let server = server(&spans).unwrap_or_else(|| panic!("no span for {request_id}: {spans:#?}"));
    let client = spans
        .iter()
        .find(|c| c.kind == "client" && c.parent_span_id == server.span_id)
        .cloned();
    (server, client)
}

async fn through_the_gateway_to_the_backend(protocol: Protocol) {
    let receiver = OtlpReceiver::start(protocol).unwrap();
    let config = telemetry(
        receiver.endpoint(),
        otlp_protocol(protocol),
        Duration::from_millis(50),
    );
    let f = fixture(Some(config)).await;
    let token = f.token();
    let bearer = format!("Bearer {token}");
    let (status, id) = f
        .get(
            "/api/orders/7?access_token=query-secret",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(status, 200);

    let (server, client) = request_spans(&receiver, &id, true).await;
    let client = client.unwrap();
    assert_eq!(server.name, "GET orders");
    assert_eq!(
        server.parent_span_id, "",
        "no traceparent came in: a new trace"
    );
    assert_eq!(server.service_name, "portcullis-test");
    assert_eq!(server.scope, "portcullis");
    assert_eq!(server.attr("portcullis.route"), Some("orders"));
    assert_eq!(server.attr("portcullis.policy"), Some("orders"));
    assert_eq!(server.attr("portcullis.result"), Some("ok"));
    assert_eq!(server.attr("portcullis.reason"), Some("ok"));
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("url.path"), Some("/api/orders/7"));
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(
        client.attr("portcullis.upstream"),
        Some(format!("http://{}", f.backend.addr()).as_str())
    );
    assert_eq!(client.attr("http.response.status_code"), Some("200"));
    assert!(client.start_unix_nano >= server.start_unix_nano);
    assert!(client.end_unix_nano <= server.end_unix_nano);

    // The backend continues the gateway's trace: its own span's parent is the gateway's.
    let received = f.received();
    let tp = received
        .traceparent()
        .expect("the backend got a traceparent");
    assert_eq!(tp.flags, "01");
    let backend_span = tp.child();
    assert_eq!(backend_span.trace_id, server.trace_id);
    assert_eq!(backend_span.parent_span_id, client.span_id);
    assert_eq!(received.header_values("tracestate"), Vec::<&str>::new());

    // The collector's headers were sent; no token text in any attribute of any span.
    let headers = receiver.request_headers();
    assert!(
        headers
            .iter()
            .all(|h| h.contains(&("x-api-key".to_owned(), "collector-key".to_owned()))),
        "{headers:?}"
    );
    let secret_part = &token[token.len() - 20..];
    for span in receiver.spans() {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(secret_part) && !value.contains("query-secret"),
                "{key}={value} in {span:?}"
            );
        }
    }
    // The exporter counts a batch once the collector has answered, which can be just after the
    // receiver holds the spans.
    let metrics =
        f.gw.metrics_when("portcullis_otel_spans_exported_total", 2.0)
            .await;
    assert!(
        metric_value(&metrics, "portcullis_otel_spans_exported_total") >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "portcullis_otel_spans_dropped_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_a_trace_at_the_receiver_over_grpc_with_the_backends_span_as_a_child() {
    through_the_gateway_to_the_backend(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_a_trace_at_the_receiver_over_http_protobuf_with_the_backends_span_as_a_child()
{
    through_the_gateway_to_the_backend(Protocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incoming_traceparent_is_continued_and_the_backend_gets_the_gateways_span() {
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let config = telemetry(
        receiver.endpoint(),
        OtlpProtocol::HttpProtobuf,
        Duration::from_millis(50),
    );
    let f = fixture(Some(config)).await;
    let (status, id) = f
        .get(
            "/public/x",
            &[
                ("traceparent", INCOMING),
                ("tracestate", "rojo=00f067aa0ba902b7"),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let (server, client) = request_spans(&receiver, &id, true).await;
    let client = client.unwrap();
    assert_eq!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.parent_span_id, "b7ad6b7169203331");
    assert_eq!(server.attr("portcullis.route"), Some("public"));
    assert_eq!(server.attr("portcullis.policy"), None);

    // Exactly one traceparent reaches the backend: the gateway's, not the client's.
    let received = f.received();
    assert_eq!(received.header_values("traceparent").len(), 1);
    let tp = received.traceparent().unwrap();
    assert_eq!(tp.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(tp.parent_id, client.span_id);
    assert_ne!(tp.parent_id, "b7ad6b7169203331");
    assert_eq!(tp.flags, "01");
    assert_eq!(
        received.header_values("tracestate"),
        vec!["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]
    );

    // An unsampled parent is followed (parent-based sampling): nothing exported, the flag
    // passed on.
    let unsampled = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let (status, _) = f.get("/public/y", &[("traceparent", unsampled)]).await;
    assert_eq!(status, 200);
    let tp = f.received().traceparent().unwrap();
    assert_eq!(tp.trace_id, "1af7651916cd43dd8448eb211c80319c");
    assert_eq!(tp.flags, "00");
    // A later sampled request is exported; the unsampled one never is.
    let (_, id) = f.get("/public/z", &[]).await;
    request_spans(&receiver, &id, true).await;
    assert!(receiver
        .spans()
        .iter()
        .all(|s| s.trace_id != "1af7651916cd43dd8448eb211c80319c"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_traceparent_starts_a_new_trace_and_its_tracestate_is_dropped() {
    let receiver = OtlpReceiver::start(Protocol::Grpc).unwrap();
    let config = telemetry(
        receiver.endpoint(),
        OtlpProtocol::Grpc,
        Duration::from_millis(50),
    );
    let f = fixture(Some(config)).await;
    for invalid in [
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        "garbage",
    ] {
        let (status, id) = f
            .get(
                "/public/x",
                &[("traceparent", invalid), ("tracestate", "rojo=1")],
            )
            .await;
        assert_eq!(status, 200);
        let (server, client) = request_spans(&receiver, &id, true).await;
        assert_eq!(server.parent_span_id, "", "{invalid}: a new trace");
        assert_ne!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
        let received = f.received();
        assert_eq!(received.header_values("traceparent").len(), 1, "{invalid}");
        let tp = received.traceparent().unwrap();
        assert_eq!(tp.trace_id, server.trace_id, "{invalid}");
        assert_eq!(tp.parent_id, client.unwrap().span_id, "{invalid}");
        assert!(received.header_values("tracestate").is_empty(), "{invalid}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_is_a_span_with_its_reason_and_an_unknown_kid_fetch_is_its_child() {
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf).unwrap();
    let config = telemetry(
        receiver.endpoint(),
        OtlpProtocol::HttpProtobuf,
        Duration::from_millis(50),
    );
    let f = fixture(Some(config)).await;
    let (status, id) = f.get("/api/orders/1", &[]).await;
    assert_eq!(status, 401);
    let (server, client) = request_spans(&receiver, &id, false).await;
    assert!(client.is_none(), "a rejected request has no upstream call");
    assert_eq!(server.attr("portcullis.result"), Some("rejected"));
    assert_eq!(server.attr("portcullis.reason"), Some("TokenNotPresent"));
    assert_eq!(server.attr("http.response.status_code"), Some("401"));
    assert_eq!(f.backend.request_count(), 0);

    // A token signed by a key published after start: the gateway refetches the keys for it,
    // and that fetch is a span under the request's.
    let rotated = TestKey::rsa("k2").unwrap();
    f.idp.set_keys(&[&f.key, &rotated]);
    let bearer = format!("Bearer {}", f.token_with(&rotated));
    let (status, id) = f.get("/api/orders/2", &[("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    let (server, _) = request_spans(&receiver, &id, true).await;
    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.name == "key fetch" && s.parent_span_id == server.span_id)
        })
        .await;
    let fetch = spans
        .iter()
        .find(|s| s.name == "key fetch" && s.parent_span_id == server.span_id)
        .unwrap_or_else(|| panic!("no key fetch under the request: {spans:#?}"));
    assert_eq!(fetch.kind, "client");
    assert_eq!(fetch.trace_id, server.trace_id);
    assert_eq!(fetch.attr("url.full"), Some(f.idp.jwks_url().as_str()));
    assert_eq!(
        fetch.attr("portcullis.key_fetch.trigger"),
        Some("unknown-kid")
    );
    assert_eq!(fetch.attr("portcullis.key_fetch.outcome"), Some("ok"));
    assert_eq!(fetch.attr("portcullis.key_fetch.keys"), Some("2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_receiver_down_requests_pass_and_spans_are_counted_as_dropped() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let down = ClosedPort::reserve().unwrap();
        let endpoint = match protocol {
            OtlpProtocol::Grpc => down.url(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", down.url()),
        };
        let f = fixture(Some(telemetry(
            endpoint,
            protocol,
            Duration::from_millis(50),
        )))
        .await;
        for i in 0..5 {
            let (status, _) = f.get(&format!("/public/{i}"), &[]).await;
            assert_eq!(status, 200, "{protocol:?}");
            // Propagation does not depend on the collector.
            assert!(f.received().traceparent().is_some());
        }
        let admin = format!("http://{}/metrics", f.gw.admin());
        let metrics = poll_text(
            1000,
            || async { reqwest::get(&admin).await.unwrap().text().await.unwrap() },
            |text| metric_value(text, "portcullis_otel_spans_dropped_total") >= 10.0,
        )
        .await;
        // Two spans a request (server and upstream client), none exported.
        assert!(
            metric_value(&metrics, "portcullis_otel_spans_dropped_total") >= 10.0,
            "{protocol:?}: {metrics}"
        );
        assert_eq!(
            metric_value(&metrics, "portcullis_otel_spans_exported_total"),
            0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_flushes_the_spans_waiting_for_export() {
    let receiver = OtlpReceiver::start(Protocol::Grpc).unwrap();
    // A batch would wait a minute: only the flush at shutdown can deliver it in time.
    let config = telemetry(
        receiver.endpoint(),
        OtlpProtocol::Grpc,
        Duration::from_secs(60),
    );
    let f = fixture(Some(config)).await;
    let (status, id) = f.get("/public/last", &[]).await;
    assert_eq!(status, 200);
    let Fixture { gw, .. } = f;
    tokio::task::spawn_blocking(move || gw.stop_gracefully())
        .await
        .unwrap();
    let spans = receiver.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.attr("portcullis.request_id") == Some(id.as_str())),
        "{spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_telemetry_trace_headers_pass_through_untouched() {
    let f = fixture(None).await;
    for (traceparent, tracestate) in [
        (INCOMING, "rojo=00f067aa0ba902b7"),
        ("not-a-traceparent", "Not A Valid=State"),
    ] {
        let (status, _) = f
            .get(
                "/public/x",
                &[("traceparent", traceparent), ("tracestate", tracestate)],
            )
            .await;
        assert_eq!(status, 200);
        let received = f.received();
        assert_eq!(received.header_values("traceparent"), vec![traceparent]);
        assert_eq!(received.header_values("tracestate"), vec![tracestate]);
    }
    let metrics = f.gw.metrics().await;
    assert_eq!(
        metric_value(&metrics, "portcullis_otel_spans_exported_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_queue_size_spans_are_dropped_at_once_not_waited_for() {
    // A collector that accepts connections and never answers: the first export hangs for the
    // whole `timeout`, so every span after the one queued finds the queue full.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", silent.local_addr().unwrap());
    let mut config = telemetry(
        endpoint,
        OtlpProtocol::HttpProtobuf,
        Duration::from_millis(50),
    );
    config.otlp.timeout = Duration::from_secs(30);
    config.otlp.max_queue_size = 1;
    let f = fixture(Some(config)).await;
    let started = std::time::Instant::now();
    for i in 0..4 {
        let (status, _) = f.get(&format!("/public/{i}"), &[]).await;
        assert_eq!(status, 200);
    }
    // 8 spans, at most one waiting: the others are counted as dropped long before the export's
    // 30 s timeout could have failed anything.
    let admin = format!("http://{}/metrics", f.gw.admin());
    let metrics = poll_text(
        500,
        || async { reqwest::get(&admin).await.unwrap().text().await.unwrap() },
        |text| metric_value(text, "portcullis_otel_spans_dropped_total") >= 7.0,
    )
    .await;
    assert!(
        metric_value(&metrics, "portcullis_otel_spans_dropped_total") >= 7.0,
        "{metrics}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(silent);
}
