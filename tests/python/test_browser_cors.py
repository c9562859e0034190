"""CORS in a real browser (issue 14): Debian's headless chromium, driven by Playwright, loads a page
from one loopback origin and calls the gateway, on another, with `fetch`. Everything is real and on
free loopback ports: `portcullis idp` signs the token, `portcullis run` is the gateway, a recording
backend answers JSON, and two page servers give an allowed and a disallowed origin (same host,
different ports: different origins).

What the browser proves, beyond the HTTP-level tests in crates/portcullis/tests/it/pipeline.rs:
- from the allowed origin, a call with `Authorization` (a real preflight) succeeds and the page reads
  the backend's JSON; the gateway's own 401 (no token, bad token) and 429 are readable, status, body
  and exposed headers, so they carry the CORS headers a browser requires;
- from a disallowed origin, `fetch` rejects (TypeError) and the backend never sees the request;
- `preflight-result-max-age` is honoured: two identical calls send one preflight with max-age 600,
  two with max-age 0 (counted at the gateway: `portcullis_requests_total{reason="CorsPreflight"}`).

The browser binary is $PORTCULLIS_CHROMIUM (default /usr/bin/chromium); Playwright's own browser
download is never used. A missing browser fails, it does not skip.
"""
import json
import os
import re
import shutil
import tempfile
import time
from http.server import BaseHTTPRequestHandler

import pytest
from playwright.sync_api import sync_playwright
from stack import (
    TIMEOUT, Server, client_credentials_token, get, start_gateway, start_idp, stop, wait_for,
)

CHROMIUM = os.environ.get("PORTCULLIS_CHROMIUM", "/usr/bin/chromium")
# The flags this machine needs (no sandbox as root, no GPU, no QUIC, no background connections to
# the closed network); Playwright's launch() already gives a fresh, empty profile directory.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

IDP_YAML = """
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{port}/realm"
resources:
  "api://orders": { token-lifetime: 300 }
clients:
  - { client-id: spa, client-secret: "spa-secret", auth-method: client_secret_post,
      default-resource: "api://orders" }
  - { client-id: spa-limited, client-secret: "spa-secret", auth-method: client_secret_post,
      default-resource: "api://orders" }
signing-keys: [{ id: browser-test-key }]
"""

def gateway_yaml(allowed, backend, discovery):
    """`cached`, `uncached` and `browser-default` differ only in preflight-result-max-age (600, 0,
    none); `limited` adds a per-caller limit of 2 calls a minute."""
    def cors(max_age):
        age = "" if max_age is None else f"\n          preflight-result-max-age: {max_age}"
        return f"""
      - cors:
          allowed-origins: ["{allowed}"]
          allowed-methods: [GET, POST]{age}
          allowed-headers: [authorization, content-type]
          expose-headers: [x-request-id, retry-after, x-ratelimit-remaining]
      - validate-jwt:
          openid-config: [{{ url: "{discovery}" }}]
          audiences: [api://orders]"""

    routes = "".join(
        f"""
  - {{ name: {r}, match: {{ path-prefix: /{r} }}, upstream: "{backend}", policy: {r} }}"""
        for r in ("cached", "uncached", "browser-default", "limited")
    )
    return f"""
server:
  listen: ["127.0.0.1:0"]
  admin: "127.0.0.1:0"
policies:
  cached:
    inbound:{cors(600)}
  uncached:
    inbound:{cors(0)}
  browser-default:
    inbound:{cors(None)}
  limited:
    inbound:{cors(600)}
      - rate-limit-by-key:
          calls: 2
          renewal-period: 60
          counter-key: {{ claim: sub }}
          remaining-calls-header-name: X-RateLimit-Remaining
routes:{routes}
"""


# The page's one job: call the gateway with fetch and hand back what browser code can see.
FETCH_JS = """async ([url, headers]) => {
  try {
    const r = await fetch(url, { headers });
    const h = {};
    for (const [k, v] of r.headers) h[k] = v;
    return { status: r.status, body: await r.text(), headers: h };
  } catch (e) {
    return { error: e.name, message: String(e.message) };
  }
}"""


def backend_handler(seen):
    class Backend(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path))
            body = json.dumps({"backend": "echo", "method": self.command, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_OPTIONS = _answer

        def log_message(self, *args):
            pass

    return Backend


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>spa</title><p>the single-page app</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stack():
    bin_ = os.environ["PORTCULLIS_BIN"]
    work = tempfile.mkdtemp(prefix="portcullis-browser-")
    procs, servers = [], []
    try:
        idp, urls = start_idp(bin_, work, IDP_YAML)
        procs.append(idp)

        seen = []
        backend = Server(backend_handler(seen))
        allowed, other = Server(Page), Server(Page)
        servers += [backend, allowed, other]

        gw, proxy, admin = start_gateway(
            bin_, work, gateway_yaml(allowed.url, backend.url, urls["discovery"])
        )
        procs.append(gw)

        def token(client):
            return client_credentials_token(urls["token"], client, "spa-secret")

        yield {
            "proxy": proxy, "admin": admin, "allowed": allowed.url, "other": other.url,
            "seen": seen, "token": token("spa"), "limited_token": token("spa-limited"),
        }
    finally:
        for p in procs:
            stop(p)
        for s in servers:
            s.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: install Debian's chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT * 3000
        )
        yield b
        b.close()


@pytest.fixture
def page_at(browser):
    """A fresh browser context (its own preflight cache) with a page loaded from an origin."""
    contexts = []

    def open_page(origin):
        ctx = browser.new_context()
        ctx.set_default_timeout(TIMEOUT * 1000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(origin + "/")
        return page

    yield open_page
    for ctx in contexts:
        ctx.close()


def call(page, url, headers=None):
    return page.evaluate(FETCH_JS, [url, headers or {}])


def metric(stack, route, reason):
    """portcullis_requests_total summed over statuses for one route and reason."""
    _, text = get(f"{stack['admin']}/metrics")
    total = 0
    for line in text.splitlines():
        if line.startswith("portcullis_requests_total{") and f'route="{route}"' in line \
                and f'reason="{reason}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_allowed_origin_reads_the_backend_json_and_the_gateways_401(stack, page_at):
    page = page_at(stack["allowed"])
    url = f"{stack['proxy']}/cached/orders/1"
    before = metric(stack, "cached", "CorsPreflight")

    ok = call(page, url, bearer(stack["token"]))
    assert "error" not in ok, ok
    assert ok["status"] == 200, ok
    assert json.loads(ok["body"]) == {"backend": "echo", "method": "GET", "path": "/cached/orders/1"}
    assert ok["headers"].get("x-request-id"), ok  # an exposed header is readable
    # The Authorization header made it a preflighted call; the gateway answered the preflight.
    wait_for("the preflight counted", lambda: metric(stack, "cached", "CorsPreflight") > before)
    assert metric(stack, "cached", "CorsPreflight") == before + 1
    assert ("GET", "/cached/orders/1") in stack["seen"]
    assert not [m for m, _ in stack["seen"] if m == "OPTIONS"], "a preflight reached the backend"

    # No token: a simple request, answered by the gateway's 401 with CORS headers: readable.
    no_token = call(page, f"{stack['proxy']}/cached/orders/2")
    assert "error" not in no_token, no_token
    assert no_token["status"] == 401, no_token
    body = json.loads(no_token["body"])
    assert body["statusCode"] == 401 and body["message"], body

    # A bad token (preflighted): the 401 is readable as well.
    bad = call(page, f"{stack['proxy']}/cached/orders/3", bearer("not.a.jwt"))
    assert "error" not in bad, bad
    assert bad["status"] == 401, bad
    assert json.loads(bad["body"])["statusCode"] == 401
    assert ("GET", "/cached/orders/2") not in stack["seen"]
    assert ("GET", "/cached/orders/3") not in stack["seen"]


def test_allowed_origin_reads_the_429(stack, page_at):
    page = page_at(stack["allowed"])
    url = f"{stack['proxy']}/limited/orders"
    answers = [call(page, url, bearer(stack["limited_token"])) for _ in range(3)]
    assert [a.get("status") for a in answers] == [200, 200, 429], answers
    assert answers[0]["headers"].get("x-ratelimit-remaining") == "1", answers[0]
    limited = answers[2]
    body = json.loads(limited["body"])
    assert body["statusCode"] == 429, body
    assert re.fullmatch(r"Rate limit is exceeded\. Try again in \d+ seconds\.", body["message"]), body
    assert int(limited["headers"]["retry-after"]) > 0, limited  # exposed, so readable


def test_disallowed_origin_is_blocked_by_the_browser(stack, page_at):
    page = page_at(stack["other"])
    refused_before = metric(stack, "cached", "CorsOriginNotAllowed")

    preflighted = call(page, f"{stack['proxy']}/cached/blocked/1", bearer(stack["token"]))
    assert preflighted.get("error") == "TypeError", preflighted
    simple = call(page, f"{stack['proxy']}/cached/blocked/2")
    assert simple.get("error") == "TypeError", simple

    # Both reached the gateway (the preflight, and the GET ended by terminate-unmatched-request)...
    wait_for("two CorsOriginNotAllowed answers",
             lambda: metric(stack, "cached", "CorsOriginNotAllowed") == refused_before + 2)
    # ...and neither reached the backend.
    assert not [p for _, p in stack["seen"] if p.startswith("/cached/blocked")], stack["seen"]


# Chromium keeps a preflight result without Access-Control-Max-Age for 5 seconds, and caps any
# max-age at 2 hours. The second calls come after a gap longer than that default, so only a
# max-age the gateway sent (600) can explain a cached preflight; the `browser-default` route shows
# the gap is long enough.
BROWSER_DEFAULT_PREFLIGHT_CACHE = 5
EXPECTED_PREFLIGHTS = {"cached": 1, "uncached": 2, "browser-default": 2}


def test_preflight_result_max_age(stack, page_at):
    page = page_at(stack["allowed"])
    before = {r: metric(stack, r, "CorsPreflight") for r in EXPECTED_PREFLIGHTS}

    def call_each():
        for route in EXPECTED_PREFLIGHTS:
            answer = call(page, f"{stack['proxy']}/{route}/max-age-probe", bearer(stack["token"]))
            assert answer.get("status") == 200, (route, answer)

    call_each()
    # Back to back, the 0 route already preflights twice: max-age 0 disables the cache.
    answer = call(page, f"{stack['proxy']}/uncached/max-age-probe", bearer(stack["token"]))
    assert answer.get("status") == 200, answer
    wait_for("two preflights on uncached",
             lambda: metric(stack, "uncached", "CorsPreflight") - before["uncached"] == 2)
    # Not synchronisation: the time the browser's own default cache needs to run out.
    time.sleep(BROWSER_DEFAULT_PREFLIGHT_CACHE + 1.5)
    call_each()

    # Every actual call reached the backend, so every preflight before it has been answered.
    paths = [p for _, p in stack["seen"]]
    assert paths.count("/cached/max-age-probe") == 2
    expected = dict(EXPECTED_PREFLIGHTS, uncached=3)
    for route, n in expected.items():
        wait_for(f"{n} preflight(s) on {route}",
                 lambda: metric(stack, route, "CorsPreflight") - before[route] >= n)
    counted = {r: metric(stack, r, "CorsPreflight") - before[r] for r in expected}
    assert counted == expected
