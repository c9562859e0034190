//! `--report FILE.svg|.html`. The HTML report charts latency over time (percentiles per second),
//! latency per token kind, throughput and the percentile curve with uPlot, a real chart library
//! embedded in the page (pinned, MIT: `assets/uplot/README.md`), so it renders offline and can be
//! attached to an issue; the SVG (and the HTML's `<noscript>` fallback) is drawn here, with no
//! scripts and no external assets.

use std::fmt::Write as _;

use crate::report::{us, Report};
use crate::stats::Second;

const W: f64 = 760.0;
const H: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// One plotted line.
struct Line<'a> {
    name: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// A panel: title, x labels at given positions, y in the unit `y_fmt` formats.
struct Panel<'a> {
    title: &'a str,
    x_ticks: Vec<(f64, String)>,
    x_max: f64,
    y_fmt: &'a dyn Fn(f64) -> String,
    lines: Vec<Line<'a>>,
}

/// The whole SVG: three panels stacked.
pub fn svg(report: &Report) -> String {
    let panels = [
        percentiles(report),
        latency_over_time(report),
        throughput(report),
    ];
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="11">"#,
        H * panels.len() as f64
    );
    out.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, panel) in panels.iter().enumerate() {
        draw(&mut out, panel, i as f64 * H);
    }
    out.push_str("</svg>\n");
    out
}

/// uPlot 1.6.32 (MIT), embedded in every HTML report.
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");
/// Draws the report's charts from its JSON.
const REPORT_JS: &str = include_str!("../assets/report.js");

/// An HTML page: the summary as text, the charts (uPlot, from the report's JSON embedded in the
/// page), a table of latency per token kind, and the SVG for browsers without scripts.
pub fn html(report: &Report) -> String {
    // Every `<` written `\u003c` (the same string to JSON): nothing in the data can end the
    // script element or start a comment or tag inside it.
    let data = serde_json::to_string(report)
        .unwrap_or_else(|_| "{}".to_owned())
        .replace('<', "\\u003c");
    let mut kinds = String::new();
    for k in &report.latency_by_kind_us {
        let _ = write!(
            kinds,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(k.kind),
            k.responses,
            us(k.p50 as f64),
            us(k.p90 as f64),
            us(k.p99 as f64),
            us(k.max as f64)
        );
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>portcullis loadtest</title>\n\
         <style>{UPLOT_CSS}\nbody{{font-family:sans-serif;margin:16px;max-width:1040px}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}.chart{{margin:18px 0}}</style></head>\n\
         <body><h1>portcullis loadtest</h1>\n<pre>{}</pre>\n<div id=\"charts\"></div>\n\
         <h2>Latency per token kind</h2>\n<table><tr><th>kind</th><th>responses</th><th>p50</th>\
         <th>p90</th><th>p99</th><th>max</th></tr>{kinds}</table>\n\
         <noscript>{}</noscript>\n\
         <script type=\"application/json\" id=\"report-data\">{data}</script>\n\
         <script>{UPLOT_JS}</script>\n<script>{REPORT_JS}</script>\n</body></html>\n",
        escape(&report.text()),
        svg(report)
    )
}

fn percentiles(r: &Report) -> Panel<'_> {
    // x = -log10(1 - q): 0 at p0, 1 at p90, 2 at p99 ... (the usual HDR percentile plot).
    let x = |p: f64| -(1.0 - p / 100.0).max(1e-9).log10();
    let points = r
        .latency_us
        .curve
        .iter()
        .map(|&(p, v)| (x(p), v as f64))
        .collect();
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    Panel {
        title: "Latency by percentile",
        x_ticks: labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64, l.to_string()))
            .collect(),
        x_max: 5.0,
        y_fmt: &|v| us(v),
        lines: vec![Line {
            name: "latency",
            colour: "#1f77b4",
            points,
        }],
    }
}

fn time_ticks(seconds: usize) -> Vec<(f64, String)> {
    let step = (seconds / 10).max(1);
    (0..=seconds)
        .step_by(step)
        .map(|s| (s as f64, format!("{s}s")))
        .collect()
}

/// One point per second that had responses, at the middle of the second.
fn per_second(r: &Report, y: fn(&Second) -> f64) -> Vec<(f64, f64)> {
    r.per_second
        .iter()
        .enumerate()
        .filter(|(_, s)| s.responses > 0)
        .map(|(i, s)| (i as f64 + 0.5, y(s)))
        .collect()
}

fn time_panel<'a>(
    r: &Report,
    title: &'a str,
    y_fmt: &'a dyn Fn(f64) -> String,
    lines: Vec<Line<'a>>,
) -> Panel<'a> {
    let seconds = r.per_second.len();
    Panel {
        title,
        x_ticks: time_ticks(seconds),
        x_max: seconds.max(1) as f64,
        y_fmt,
        lines,
    }
}

fn latency_over_time(r: &Report) -> Panel<'_> {
    let max = Line {
        name: "max",
        colour: "#d62728",
        points: per_second(r, |s| s.latency_max_us as f64),
    };
    let mean = Line {
        name: "mean",
        colour: "#1f77b4",
        points: per_second(r, |s| s.latency_sum_us as f64 / s.responses as f64),
    };
    time_panel(
        r,
        "Latency over time (per second)",
        &|v| us(v),
        vec![max, mean],
    )
}

fn throughput(r: &Report) -> Panel<'_> {
    let line = Line {
        name: "req/s",
        colour: "#2ca02c",
        points: per_second(r, |s| s.responses as f64),
    };
    time_panel(
        r,
        "Responses per second",
        &|v| format!("{v:.0}"),
        vec![line],
    )
}

fn draw(out: &mut String, p: &Panel, y0: f64) {
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y_max = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|pt| pt.1))
        .fold(1.0f64, f64::max)
        * 1.05;
    let sx = |x: f64| LEFT + x / p.x_max * plot_w;
    let sy = |y: f64| y0 + TOP + plot_h - y / y_max * plot_h;
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        escape(p.title)
    );
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##,
        y0 + TOP
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = sy(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            y + 4.0,
            escape(&(p.y_fmt)(v))
        );
    }
    for (x, label) in &p.x_ticks {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            sx(*x),
            y0 + TOP + plot_h + 15.0,
            escape(label)
        );
    }
    for (i, line) in p.lines.iter().enumerate() {
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/><text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
            line.colour,
            pts.join(" "),
            LEFT + plot_w - 60.0,
            y0 + TOP + 14.0 + 13.0 * i as f64,
            line.colour,
            escape(line.name)
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::mint::Kind;
    use crate::stats::{Stats, Timeline};

    #[test]
    fn the_html_report_embeds_uplot_and_its_data_safely() {
        let mut stats = Stats::new().unwrap();
        stats.timeline = Timeline::for_run(Duration::from_secs(2));
        for (kind, second, ms) in [
            (Kind::Valid, 0, 2),
            (Kind::Valid, 1, 5),
            (Kind::Expired, 1, 1),
        ] {
            let latency = Duration::from_millis(ms);
            stats.response(kind, 200, latency, second);
            stats
                .timeline
                .record(kind, second, latency.as_micros() as u64);
        }
        let mut setup = crate::report::tests::setup();
        setup.url = "http://x/</script><script>alert(1)</script>".into();
        let report = Report::new(setup, &stats, Duration::from_secs(2));
        assert_eq!(report.latency_over_time_us.len(), 2);
        assert_eq!(report.latency_by_kind_us[0].kind, "valid");
        assert_eq!(report.latency_by_kind_us[0].responses, 2);
        let page = html(&report);
        assert!(page.contains("uPlot v1.6.32") || page.contains("(v1.6.32)"));
        assert!(page.contains(".uplot"), "uPlot's stylesheet");
        // Nothing from the report can close a script element or open a tag.
        assert_eq!(page.matches("</script>").count(), 3, "{page}");
        assert!(!page.contains("<script>alert"));
        let start = page.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
        let end = start + page[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(data["latency_by_kind_us"][1]["kind"], "expired");
    }
}
