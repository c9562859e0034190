"""The HTML report of `portcullis loadtest --report FILE.html` in a real browser (issue 20): Debian's
headless chromium, driven by Playwright, opens a report written by a real run (`portcullis demo` on
free loopback ports, two seconds of mixed valid and invalid tokens) from a file:// URL with every
network request refused, so the embedded chart library (uPlot) must work offline, and checks that it
drew each chart: the uPlot elements exist with the charts' titles, each chart's canvas has paint on
it (the report's script counts painted canvases into `data-painted`) in several colours, the
per-kind chart has its three bar colours, and the page raised no script error.

The browser binary is $PORTCULLIS_CHROMIUM (default /usr/bin/chromium); Playwright's own browser
download is never used. A missing browser fails, it does not skip.
"""
import json
import os
import subprocess
import tempfile

import pytest
from playwright.sync_api import sync_playwright
from stack import TIMEOUT, start_demo, stop
from test_browser_cors import CHROMIUM, CHROMIUM_ARGS

BIN = os.environ.get("PORTCULLIS_BIN", "portcullis")
CHARTS = ["Latency over time (per second)", "Latency per token kind", "Responses per second",
          "Latency by percentile"]


@pytest.fixture(scope="module")
def report():
    """(path of the HTML report, the same run's JSON report) from a 2-second run."""
    with tempfile.TemporaryDirectory() as work:
        demo, args, _admin = start_demo(BIN, work)
        try:
            args = [a if a != "10s" else "2s" for a in args]
            html = os.path.join(work, "report.html")
            run = subprocess.run(
                [BIN, "loadtest", *args, "--connections", "4", "--tokens", "50", "--invalid",
                 "20%", "--quiet", "--json", "--report", html],
                capture_output=True, text=True, timeout=TIMEOUT * 6,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            data = json.loads(run.stdout)
            with open(html, encoding="utf-8") as f:
                page = f.read()
            yield page, data
        finally:
            stop(demo)


def test_report_json_has_latency_over_time_and_per_kind(report):
    _page, data = report
    buckets = data["latency_over_time_us"]
    assert len(buckets) >= 2, buckets
    assert sum(b["responses"] for b in buckets) == data["requests"]
    for b in buckets:
        assert 0 < b["p50"] <= b["p90"] <= b["p99"] <= b["max"], b
    kinds = {k["kind"]: k for k in data["latency_by_kind_us"]}
    assert "valid" in kinds and len(kinds) == 10, kinds.keys()
    assert sum(k["responses"] for k in kinds.values()) == data["requests"]


def test_the_charts_render_offline_in_a_browser(report):
    page_html, data = report
    assert "uPlot" in page_html and "<script src" not in page_html and "<link" not in page_html
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "report.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(page_html)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 1000})
                errors, requests = [], []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))

                def refuse(route):
                    if not route.request.url.startswith("file://"):
                        requests.append(route.request.url)
                        return route.abort()
                    return route.continue_()

                page.route("**/*", refuse)
                page.goto(f"file://{path}")
                page.wait_for_function(
                    "document.body.dataset.painted !== undefined", timeout=TIMEOUT * 1000)
                assert errors == [] and requests == [], (errors, requests)
                assert page.evaluate("document.body.dataset.charts") == str(len(CHARTS))
                assert page.evaluate("document.body.dataset.painted") == str(len(CHARTS))
                titles = page.eval_on_selector_all(".uplot .u-title", "els => els.map(e => e.textContent)")
                assert titles == CHARTS
                assert page.locator(".uplot canvas").count() == len(CHARTS)
                # Each chart's pixels vary (lines, bars, axis text: uPlot draws them all on the
                # canvas), and the per-kind chart has the three bar colours.
                colours = page.eval_on_selector_all(".uplot canvas", """cs => cs.map(c => {
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    const s = new Set();
                    for (let i = 0; i < d.length; i += 4) s.add(d[i] + ',' + d[i+1] + ',' + d[i+2] + ',' + d[i+3]);
                    return [...s]; })""")
                assert all(len(c) >= 4 for c in colours), [len(c) for c in colours]
                for bar in ["255,127,14,255", "44,160,44,255", "31,119,180,255"]:
                    assert bar in colours[1], bar
                canvas = page.locator(".uplot canvas").first
                shot = canvas.screenshot()
                assert len(shot) > 2000, len(shot)
            finally:
                browser.close()
