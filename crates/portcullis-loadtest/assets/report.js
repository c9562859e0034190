// Draws the charts of `portcullis loadtest --report FILE.html` with uPlot (embedded above) from the
// report's JSON (the same document `--json` prints), then records on <body> how many charts it drew
// and how many of their canvases have paint on them (data-charts, data-painted), which the
// headless-browser test reads.
(function () {
  "use strict";
  var report = JSON.parse(document.getElementById("report-data").textContent);
  var root = document.getElementById("charts");
  var width = Math.max(480, Math.min(1000, root.clientWidth || 900));
  var ms = function (us) { return us == null ? null : us / 1000; };
  var msAxis = function (u, splits) {
    return splits.map(function (v) { return v == null ? "" : (v < 1 ? (v * 1000).toFixed(0) + "µs" : v.toFixed(v < 10 ? 1 : 0) + "ms"); });
  };
  var charts = [];

  function chart(title, opts, data) {
    var box = document.createElement("div");
    box.className = "chart";
    root.appendChild(box);
    opts.title = title;
    opts.width = width;
    opts.height = opts.height || 260;
    charts.push(new uPlot(opts, data, box));
  }
  var line = function (label, stroke) { return { label: label, stroke: stroke, width: 1.5, points: { show: false } }; };

  // 1. Latency over time: percentiles of each time bucket.
  var t = report.latency_over_time_us;
  chart("Latency over time (per " + (t.length && t[0].width_s > 1 ? t[0].width_s + " s" : "second") + ")", {
    scales: { x: { time: false } },
    axes: [{ label: "seconds into the run" }, { values: msAxis, size: 60 }],
    series: [{ label: "s" }, line("p50", "#1f77b4"), line("p90", "#2ca02c"), line("p99", "#ff7f0e"), line("max", "#d62728")],
  }, [
    t.map(function (b) { return b.start_s + b.width_s / 2; }),
    t.map(function (b) { return ms(b.p50); }),
    t.map(function (b) { return ms(b.p90); }),
    t.map(function (b) { return ms(b.p99); }),
    t.map(function (b) { return ms(b.max); }),
  ]);

  // 2. Latency per token kind: p99, p90 and p50 as nested bars.
  var k = report.latency_by_kind_us;
  var bars = function (label, fill, size) {
    return { label: label, fill: fill, stroke: fill, width: 0, paths: uPlot.paths.bars({ size: [size, 80] }), points: { show: false } };
  };
  chart("Latency per token kind", {
    scales: { x: { time: false, range: [-0.5, Math.max(0.5, k.length - 0.5)] } },
    axes: [
      { splits: function () { return k.map(function (_, i) { return i; }); }, values: function (u, s) { return s.map(function (i) { return k[i] ? k[i].kind : ""; }); }, rotate: 0 },
      { values: msAxis, size: 60 },
    ],
    series: [{ label: "kind", value: function (u, i) { return i == null || !k[i] ? "" : k[i].kind; } },
      bars("p99", "#ff7f0e", 0.7), bars("p90", "#2ca02c", 0.5), bars("p50", "#1f77b4", 0.3)],
  }, [
    k.map(function (_, i) { return i; }),
    k.map(function (x) { return ms(x.p99); }),
    k.map(function (x) { return ms(x.p90); }),
    k.map(function (x) { return ms(x.p50); }),
  ]);

  // 3. Responses per second.
  var s = report.per_second;
  chart("Responses per second", {
    scales: { x: { time: false } },
    axes: [{ label: "seconds into the run" }, { size: 60 }],
    series: [{ label: "s" }, { label: "req/s", stroke: "#2ca02c", fill: "rgba(44,160,44,0.1)", width: 1.5, points: { show: false } }],
  }, [s.map(function (_, i) { return i + 0.5; }), s.map(function (x) { return x.responses; })]);

  // 4. Latency by percentile (HDR plot): x = -log10(1 - q).
  var c = report.latency_us.curve;
  var pct = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
  chart("Latency by percentile", {
    scales: { x: { time: false, range: [0, 5] } },
    axes: [{ splits: function () { return [0, 1, 2, 3, 4, 5]; }, values: function (u, sp) { return sp.map(function (v) { return pct[v] || ""; }); } },
      { values: msAxis, size: 60 }],
    series: [{ label: "percentile", value: function (u, v) { return v == null ? "" : (100 * (1 - Math.pow(10, -v))).toFixed(3) + "%"; } }, line("latency", "#1f77b4")],
  }, [c.map(function (p) { return -Math.log10(Math.max(1e-9, 1 - p[0] / 100)); }), c.map(function (p) { return ms(p[1]); })]);

  // What the test reads: charts drawn, and canvases with at least one non-transparent pixel
  // (uPlot paints after a microtask: look once it has).
  setTimeout(function () {
    var painted = 0;
    charts.forEach(function (u) {
      var cv = u.root.querySelector("canvas");
      var px = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
      for (var i = 3; i < px.length; i += 4) { if (px[i] !== 0) { painted++; break; } }
    });
    document.body.setAttribute("data-charts", String(charts.length));
    document.body.setAttribute("data-painted", String(painted));
  }, 100);
})();
