#!/usr/bin/env python3
"""Renders deploy/grafana/portcullis-dashboard.json from a real run, without Grafana (which is not
installable here), and screenshots it: the image in the README (docs/images/dashboard.png) comes
from this script, not from Grafana.

What it does, all on loopback:
1. starts `portcullis demo` (gateway, dev token server, echo backend on free ports);
2. starts Debian's `prometheus` scraping the gateway's /metrics every second (and loading
   deploy/prometheus/alerts.yaml, so the rules are evaluated against the run too);
3. drives `portcullis loadtest` traffic through the gateway in three phases (different rates and
   shares of invalid tokens: expired, bad signature, wrong audience, unknown kid ...);
4. runs every panel's real PromQL from the dashboard JSON against that Prometheus's HTTP API
   (`query_range` for time series, `query` for stats; `$__rate_interval` = 10s, `$instance` and
   `$route` = all), and writes a static HTML page laid out by the panels' gridPos, charts drawn by
   uPlot (the copy vendored in crates/portcullis-loadtest/assets/uplot), stats coloured by their
   thresholds;
5. screenshots the page with headless chromium.

Usage: deploy/grafana/render.py --bin target/debug/portcullis [--out docs/images/dashboard.png]
       [--seconds 90] [--keep DIR]   (needs prometheus and chromium: apt-get install prometheus chromium)
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
UPLOT = os.path.join(REPO, "crates", "portcullis-loadtest", "assets", "uplot")
RATE_INTERVAL = "10s"
STEP = 2  # seconds between points of a time series


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"render: timed out waiting for {what}")


def http_get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def start_demo(bin_, work):
    log_path = os.path.join(work, "demo.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [bin_, "demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--idp-listen",
         "127.0.0.1:0", "--backend-listen", "127.0.0.1:0", "--state-dir", os.path.join(work, "demo")],
        stdout=log, stderr=subprocess.STDOUT)

    def banner():
        text = open(log_path).read()
        if proc.poll() is not None:
            raise SystemExit(f"render: portcullis demo exited:\n{text}")
        lt = [l for l in text.splitlines() if l.startswith("portcullis loadtest ")]
        admin = [l.split()[1] for l in text.splitlines() if l.startswith("admin ")]
        return lt and admin and (lt[0].split()[2:], admin[0])

    args, admin = wait_for("portcullis demo", banner)
    wait_for("the demo's /readyz", lambda: http_get(f"{admin}/readyz")[0] == 200)
    return proc, args, admin


def start_prometheus(prometheus, work, admin):
    port = free_port()
    target = urllib.parse.urlparse(admin).netloc
    shutil.copy(os.path.join(REPO, "deploy", "prometheus", "alerts.yaml"), work)
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        f.write(f"""global: {{ scrape_interval: 1s, evaluation_interval: 5s }}
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: portcullis
    static_configs: [{{ targets: ["{target}"] }}]
""")
    log = open(os.path.join(work, "prometheus.log"), "w")
    proc = subprocess.Popen(
        [prometheus, "--config.file=prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
         f"--web.listen-address=127.0.0.1:{port}"], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for("prometheus /-/ready", lambda: http_get(f"{url}/-/ready")[0] == 200)
    return proc, url


def drive(bin_, args, seconds):
    """Three phases of open-loop load: steady, busier, then a burst of bad tokens."""
    phases = [(0.35, 150, "10%"), (0.35, 400, "10%"), (0.30, 250, "45%")]
    for share, rate, invalid in phases:
        run_args = [a for a in args]
        i = run_args.index("--duration")
        run_args[i + 1] = f"{max(5, int(seconds * share))}s"
        subprocess.run([bin_, "loadtest", *run_args, "--rate", str(rate), "--connections", "8",
                        "--tokens", "300", "--invalid", invalid, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)


def substitute(expr):
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace('"$instance"', '".*"').replace('"$route"', '".*"'))


def query(prom, path, **params):
    status, body = http_get(f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}")
    doc = json.loads(body)
    if doc.get("status") != "success":
        raise SystemExit(f"render: {params.get('query')}: {doc}")
    return doc["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"


def collect(dash, prom, start, end):
    """Each panel with its series: {"t": [...], "series": [{"name", "values"}]} or a stat value."""
    panels = []
    for p in dash["panels"]:
        out = {k: p.get(k) for k in ("type", "title", "gridPos", "description")}
        out["unit"] = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        out["thresholds"] = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds")
        out["mappings"] = p.get("fieldConfig", {}).get("defaults", {}).get("mappings")
        out["overrides"] = p.get("fieldConfig", {}).get("overrides", [])
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        out["symlog"] = custom.get("scaleDistribution", {}).get("type") == "symlog"
        if p["type"] == "stat":
            res = query(prom, "query", query=substitute(p["targets"][0]["expr"]), time=end)
            out["value"] = float(res[0]["value"][1]) if res else None
        elif p["type"] == "timeseries":
            times = list(range(int(start), int(end) + 1, STEP))
            series = []
            for t in p["targets"]:
                for r in query(prom, "query_range", query=substitute(t["expr"]), start=start,
                               end=end, step=STEP):
                    got = {int(float(ts)): float(v) for ts, v in r["values"]}
                    vals = [got.get(x) for x in times]
                    vals = [None if v is None or v != v or v in (float("inf"), float("-inf")) else v
                            for v in vals]
                    series.append({"name": legend(t.get("legendFormat", ""), r["metric"]),
                                   "values": vals})
            out["t"], out["series"] = times, series
        panels.append(out)
    return panels


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Portcullis dashboard (rendered)</title>
<style>{css}
body{{background:#111217;color:#ccccdc;font-family:Inter,Helvetica,Arial,sans-serif;margin:0;padding:12px}}
#bar{{display:flex;justify-content:space-between;align-items:baseline;margin:0 4px 10px}}
#bar h1{{font-size:20px;margin:0;color:#fff}} #bar span{{font-size:12px;color:#8e8e9e}}
#grid{{position:relative}}
.panel{{position:absolute;box-sizing:border-box;background:#181b1f;border:1px solid #2c3235;border-radius:2px;padding:6px 8px;overflow:hidden}}
.panel h3{{font-size:13px;font-weight:500;margin:0 0 4px;color:#d8d9da}}
.row{{position:absolute;font-size:15px;font-weight:500;color:#fff;padding-top:8px}}
.stat{{font-size:40px;font-weight:500;text-align:center;margin-top:14px}}
.uplot{{font-family:inherit}} .u-legend{{font-size:11px;color:#ccccdc}} .u-legend th{{font-weight:400}}
.u-legend .u-value{{display:none}}
</style></head><body>
<div id="bar"><h1>Portcullis</h1><span>{subtitle}</span></div>
<div id="grid"></div>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
<script>
(function () {{
  var d = JSON.parse(document.getElementById("data").textContent);
  var W = {width}, COL = W / 24, ROW = 34, grid = document.getElementById("grid");
  var palette = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#ff9830", "#96d98d", "#ca95e5", "#ffb357"];
  function fmt(v, unit) {{
    if (v == null || isNaN(v)) return "No data";
    if (unit === "percentunit") return (v * 100).toFixed(v < 0.1 ? 2 : 1) + "%";
    if (unit === "s") {{ var a = Math.abs(v); return a === 0 ? "0 s" : a < 1e-3 ? (v * 1e6).toFixed(0) + " µs" : a < 1 ? (v * 1e3).toFixed(a < 0.01 ? 2 : 0) + " ms" : a < 120 ? v.toFixed(1) + " s" : a < 7200 ? (v / 60).toFixed(0) + " min" : a < 172800 ? (v / 3600).toFixed(0) + " h" : (v / 86400).toFixed(0) + " d"; }}
    if (unit === "reqps") return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " req/s";
    if (unit === "ops") return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ops/s";
    return Math.abs(v) < 10 && v % 1 ? v.toFixed(2) : v.toFixed(0);
  }}
  function colour(p, v) {{
    var steps = (p.thresholds && p.thresholds.steps) || [{{color: "green", value: null}}], c = steps[0].color;
    steps.forEach(function (s) {{ if (s.value == null || v >= s.value) c = s.color; }});
    return {{green: "#73bf69", red: "#f2495c", orange: "#ff9830"}}[c] || c;
  }}
  d.panels.forEach(function (p) {{
    var g = p.gridPos, el = document.createElement("div");
    el.style.left = (g.x * COL) + "px"; el.style.top = (g.y * ROW) + "px";
    if (p.type === "row") {{ el.className = "row"; el.textContent = p.title; grid.appendChild(el); return; }}
    el.className = "panel"; el.style.width = (g.w * COL - 6) + "px"; el.style.height = (g.h * ROW - 6) + "px";
    el.innerHTML = "<h3></h3>"; el.firstChild.textContent = p.title; grid.appendChild(el);
    if (p.type === "stat") {{
      var s = document.createElement("div"); s.className = "stat";
      var text = fmt(p.value, p.unit);
      (p.mappings || []).forEach(function (m) {{ var o = m.options && m.options[String(p.value)]; if (o) text = o.text; }});
      s.textContent = text; s.style.color = p.value == null ? "#8e8e9e" : colour(p, p.value); el.appendChild(s); return;
    }}
    var unitOf = function (name) {{
      var u = p.unit;
      (p.overrides || []).forEach(function (o) {{
        var m = o.matcher, hit = m.id === "byName" ? name === m.options : m.id === "byRegexp" && new RegExp(m.options).test(name);
        if (hit) o.properties.forEach(function (pr) {{ if (pr.id === "unit") u = pr.value; }});
      }});
      return u;
    }};
    var units = p.series.map(function (s) {{ return unitOf(s.name); }});
    var left = units[0] || p.unit, right = units.filter(function (u) {{ return u !== left; }})[0];
    var series = [{{}}].concat(p.series.map(function (s, i) {{
      return {{label: s.name, stroke: palette[i % palette.length], width: 1.5, scale: units[i] === left || !right ? "y" : "y2",
               fill: p.series.length === 1 ? "rgba(115,191,105,0.12)" : undefined, points: {{show: false}}, spanGaps: false}};
    }}));
    var hhmmss = function (u, v) {{ return v.map(function (t) {{ return new Date(t * 1000).toISOString().substr(11, 8); }}); }};
    var axes = [{{stroke: "#8e8e9e", grid: {{stroke: "#2c3235", width: 1}}, ticks: {{stroke: "#2c3235"}}, values: hhmmss}},
                {{stroke: "#8e8e9e", grid: {{stroke: "#2c3235", width: 1}}, ticks: {{stroke: "#2c3235"}}, size: 84,
                  values: function (u, v) {{ return v.map(function (x) {{ return x == null ? "" : fmt(x, left); }}); }}}}];
    var top = 0;
    p.series.forEach(function (s) {{ s.values.forEach(function (v) {{ if (v != null && v > top) top = v; }}); }});
    if (p.symlog) {{
      // Grafana's symlog axis: a few round values, 0 to the largest.
      axes[1].splits = function () {{ return [0, 1, 10, 60, 600, 3600, 21600, 86400, 604800].filter(function (v) {{ return v <= top * 1.01; }}); }};
    }}
    if (right) axes.push({{scale: "y2", side: 1, stroke: "#8e8e9e", grid: {{show: false}}, size: 84,
                          values: function (u, v) {{ return v.map(function (x) {{ return fmt(x, right); }}); }}}});
    var chars = 0;
    p.series.forEach(function (s) {{ chars += s.name.length * 6.2 + 34; }});
    var h = g.h * ROW - 6 - 34 - 20 * Math.max(1, Math.ceil(chars / (g.w * COL - 40)));
    var data = [p.t].concat(p.series.map(function (s) {{ return s.values; }}));
    var box = document.createElement("div"); el.appendChild(box);
    new uPlot({{width: g.w * COL - 24, height: Math.max(90, h), series: series, axes: axes,
               scales: {{x: {{time: true}}, y: p.symlog ? {{distr: 4, asinh: 1, range: function () {{ return [0, top * 1.3 || 1]; }}}} : {{range: function (u, mn, mx) {{ return [Math.min(0, mn), mx > 0 ? mx * 1.1 : 1]; }}}}}},
               cursor: {{show: false}}, legend: {{show: true, live: false}}}}, data, box);
  }});
  grid.style.height = (Math.max.apply(null, d.panels.map(function (p) {{ return p.gridPos.y + p.gridPos.h; }})) * ROW) + "px";
  document.body.setAttribute("data-rendered", "1");
}})();
</script></body></html>
"""


def write_page(path, panels, subtitle, width):
    data = json.dumps({"panels": panels}).replace("<", "\\u003c")
    with open(os.path.join(UPLOT, "uPlot.iife.min.js")) as f:
        js = f.read()
    with open(os.path.join(UPLOT, "uPlot.min.css")) as f:
        css = f.read()
    with open(path, "w") as f:
        f.write(PAGE.format(css=css, js=js, data=data, subtitle=subtitle, width=width))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the portcullis binary")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "images", "dashboard.png"))
    ap.add_argument("--seconds", type=int, default=90, help="seconds of load")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--keep", help="keep the work directory (HTML page, logs) here")
    a = ap.parse_args()
    for tool in (a.prometheus, a.chromium):
        if not os.access(tool, os.X_OK):
            sys.exit(f"render: {tool} not found (apt-get install prometheus chromium)")
    bin_ = os.path.abspath(a.bin)
    dash = json.load(open(os.path.join(HERE, "portcullis-dashboard.json")))
    work = a.keep or tempfile.mkdtemp(prefix="portcullis-render-")
    os.makedirs(work, exist_ok=True)
    procs = []
    try:
        demo, args, admin = start_demo(bin_, work)
        procs.append(demo)
        prom_proc, prom = start_prometheus(a.prometheus, work, admin)
        procs.append(prom_proc)
        start = time.time()
        drive(bin_, args, a.seconds)
        time.sleep(3)  # two more scrapes, so the last rates are in
        end = time.time()
        panels = collect(dash, prom, start, end)
        width = 1560
        page = os.path.join(work, "dashboard.html")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
        subtitle = (f"rendered by deploy/grafana/render.py (not Grafana) from a real run: portcullis demo "
                    f"under portcullis loadtest, {int(end - start)} s, Prometheus {when}")
        write_page(page, panels, subtitle, width)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        subprocess.run([a.chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--virtual-time-budget=5000",
                        f"--window-size={width + 24},{50 * 34 + 60}",
                        f"--screenshot={os.path.abspath(a.out)}", f"file://{page}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"render: wrote {a.out} (page and logs in {work})")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
