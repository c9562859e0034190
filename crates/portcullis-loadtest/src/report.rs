//! The run's result: one serialisable [`Report`] built from the merged counters, rendered as text
//! for people, JSON for machines, and judged into the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::mint::Kind;
use crate::stats::{Errors, Second, Stats, Timeline};

/// Exit code: every response as expected, transport errors within the threshold.
pub const EXIT_PASS: u8 = 0;
/// Exit code: a valid token was refused or an invalid one was not (401/403) answered.
pub const EXIT_CORRECTNESS: u8 = 1;
/// Exit code: bad arguments, keys or URL; nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: transport errors above `--max-errors`, or no response at all.
pub const EXIT_TRANSPORT: u8 = 3;

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Target URL.
    pub url: String,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Target rate in open-loop mode.
    pub target_rate: Option<f64>,
    /// `http/1.1`, `h2` (over TLS) or `h2c`.
    pub protocol: &'static str,
    /// `none` (http), `verified` or `insecure` (`--insecure`).
    pub tls: &'static str,
    /// `minted`, or the token endpoint's URL.
    pub token_source: String,
    /// Tokens fetched from the token endpoint (the first and every refresh); 0 when minted.
    pub token_fetches: u64,
    /// Signing algorithm (of the fetched token: its header's `alg`).
    pub alg: String,
    /// Valid request slots (each its own minted token, or all the fetched token).
    pub valid_tokens: usize,
    /// Invalid tokens.
    pub invalid_tokens: usize,
    /// The kinds this run could produce for its target, `valid` first; the others are reported
    /// as not produced.
    pub kinds_produced: Vec<&'static str>,
    /// Allowed transport error share, percent.
    pub max_errors_percent: f64,
}

/// Latency summary, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Maximum.
    pub max: u64,
    /// (percentile, µs) points for a percentile plot, 0 to 99.999.
    pub curve: Vec<(f64, u64)>,
}

/// Latency percentiles of one time bucket (µs).
#[derive(Debug, Clone, Serialize)]
pub struct TimeBucket {
    /// Seconds from the start of the run to the start of the bucket.
    pub start_s: u64,
    /// Seconds the bucket spans (1, or more on runs longer than 600 s).
    pub width_s: u64,
    /// Responses completed in it.
    pub responses: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// Latency of the responses to one token kind (µs).
#[derive(Debug, Clone, Serialize)]
pub struct KindLatency {
    /// Kind name.
    pub kind: &'static str,
    /// Responses received.
    pub responses: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// Correctness of one token kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// Kind name.
    pub kind: &'static str,
    /// Whether this run sent tokens of this kind; `false` when its token source cannot make
    /// them (see `not_produced`).
    pub produced: bool,
    /// Why the kind was not produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_produced: Option<&'static str>,
    /// What it must get: `2xx` or `401/403`.
    pub expect: &'static str,
    /// Responses received.
    pub responses: u64,
    /// Responses as expected.
    pub as_expected: u64,
    /// Responses not as expected.
    pub unexpected: u64,
    /// Unexpected statuses with counts.
    pub unexpected_statuses: BTreeMap<u16, u64>,
}

impl KindReport {
    /// The unexpected statuses as `200 x12, 500 x1`.
    fn wrong_statuses(&self) -> String {
        let parts: Vec<String> = self
            .unexpected_statuses
            .iter()
            .map(|(s, n)| format!("{s} x{n}"))
            .collect();
        parts.join(", ")
    }
}

/// Whether the run passed, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// True when the exit code is 0.
    pub pass: bool,
    /// The process exit code.
    pub exit_code: u8,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Everything the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Setup.
    pub setup: Setup,
    /// Measured run time, seconds.
    pub duration_s: f64,
    /// Responses received.
    pub requests: u64,
    /// Responses per second.
    pub throughput_rps: f64,
    /// Latency.
    pub latency_us: Latency,
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Correctness per kind.
    pub correctness: Vec<KindReport>,
    /// Transport errors.
    pub errors: Errors,
    /// Reconnects.
    pub reconnects: u64,
    /// Per-second series.
    pub per_second: Vec<Second>,
    /// Latency percentiles over time: one entry per time bucket (buckets without responses
    /// omitted).
    pub latency_over_time_us: Vec<TimeBucket>,
    /// Latency per token kind that got responses, `valid` first.
    pub latency_by_kind_us: Vec<KindLatency>,
    /// Verdict.
    pub verdict: Verdict,
}

impl Report {
    /// Builds the report from merged counters.
    pub fn new(setup: Setup, stats: &Stats, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &stats.latency;
        let curve = (0..=100)
            .map(|i| {
                let q = 1.0 - 10f64.powf(-(i as f64) / 20.0);
                (q * 100.0, h.value_at_quantile(q))
            })
            .collect();
        let correctness: Vec<KindReport> = Kind::ALL
            .iter()
            .map(|&kind| {
                let k = &stats.kinds[kind.index()];
                let produced = setup.kinds_produced.contains(&kind.name());
                KindReport {
                    kind: kind.name(),
                    produced,
                    not_produced: (!produced).then_some(crate::token::NOT_PRODUCED),
                    expect: if kind == Kind::Valid {
                        "2xx"
                    } else {
                        "401/403"
                    },
                    responses: k.responses,
                    as_expected: k.expected,
                    unexpected: k.unexpected(),
                    unexpected_statuses: k.wrong.iter().copied().collect(),
                }
            })
            .collect();
        let max_errors = setup.max_errors_percent;
        let mut report = Report {
            setup,
            duration_s: secs,
            requests: stats.responses(),
            throughput_rps: stats.responses() as f64 / secs,
            latency_us: Latency {
                mean: h.mean(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p99_9: h.value_at_quantile(0.999),
                max: h.max(),
                curve,
            },
            statuses: stats
                .statuses
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(s, &n)| (s as u16, n))
                .collect(),
            correctness,
            errors: stats.errors,
            reconnects: stats.reconnects,
            per_second: stats.series.clone(),
            latency_over_time_us: over_time(&stats.timeline),
            latency_by_kind_us: by_kind(&stats.timeline),
            verdict: Verdict {
                pass: true,
                exit_code: EXIT_PASS,
                problems: Vec::new(),
            },
        };
        report.verdict = judge(&report, max_errors);
        report
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let s = &self.setup;
        let l = &self.latency_us;
        let rate = s
            .target_rate
            .map_or(String::new(), |r| format!(" at {r} req/s"));
        let tls = match s.tls {
            "none" => String::new(),
            t => format!(", TLS {t}"),
        };
        let _ = writeln!(
            out,
            "{}: {} connections, {} threads, {:.1}s, {} loop{rate}, {}{tls}",
            s.url, s.connections, s.threads, self.duration_s, s.mode, s.protocol
        );
        let source = match s.token_fetches {
            0 => String::new(),
            n => format!(", from {} ({n} fetched)", s.token_source),
        };
        let _ = writeln!(
            out,
            "tokens:     {} valid + {} invalid ({}{source})",
            s.valid_tokens, s.invalid_tokens, s.alg
        );
        let _ = writeln!(
            out,
            "requests:   {} in {:.2}s = {:.1} req/s",
            self.requests, self.duration_s, self.throughput_rps
        );
        let _ = writeln!(
            out,
            "latency:    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            us(l.p50 as f64),
            us(l.p90 as f64),
            us(l.p99 as f64),
            us(l.p99_9 as f64),
            us(l.max as f64),
            us(l.mean)
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(out, "statuses:   {}", statuses.join("  "));
        let e = &self.errors;
        let _ = writeln!(
            out,
            "transport:  {} errors (connect {}, io {}, closed {}, parse {}, timeout {}), {} reconnects",
            e.total(),
            e.connect,
            e.io,
            e.closed,
            e.parse,
            e.timeout,
            self.reconnects
        );
        let _ = writeln!(
            out,
            "\n{:<16} {:>8} {:>12} {:>12} {:>12}",
            "token", "expect", "responses", "as expected", "unexpected"
        );
        for k in &self.correctness {
            if let Some(why) = k.not_produced {
                let line = format!(
                    "{:<16} {:>8} {:>12} {:>12} {:>12}  not produced: {why}",
                    k.kind, k.expect, "-", "-", "-"
                );
                let _ = writeln!(out, "{line}");
                continue;
            }
            let line = format!(
                "{:<16} {:>8} {:>12} {:>12} {:>12}  {}",
                k.kind,
                k.expect,
                k.responses,
                k.as_expected,
                k.unexpected,
                k.wrong_statuses()
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(out);
        if self.verdict.pass {
            let _ = writeln!(out, "PASS: every token answered as expected");
        }
        for p in &self.verdict.problems {
            let _ = writeln!(out, "FAIL: {p}");
        }
        out
    }
}

fn over_time(t: &Timeline) -> Vec<TimeBucket> {
    t.buckets
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let h = h.as_ref().filter(|h| !h.is_empty())?;
            Some(TimeBucket {
                start_s: i as u64 * t.width_s,
                width_s: t.width_s,
                responses: h.len(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            })
        })
        .collect()
}

fn by_kind(t: &Timeline) -> Vec<KindLatency> {
    Kind::ALL
        .iter()
        .filter_map(|&kind| {
            let h = t
                .kinds
                .get(kind.index())?
                .as_ref()
                .filter(|h| !h.is_empty())?;
            Some(KindLatency {
                kind: kind.name(),
                responses: h.len(),
                mean: h.mean(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            })
        })
        .collect()
}

fn judge(r: &Report, max_errors_percent: f64) -> Verdict {
    let mut problems = Vec::new();
    let mut exit_code = EXIT_PASS;
    for k in r.correctness.iter().filter(|k| k.unexpected > 0) {
        let what = if k.kind == "valid" {
            "valid tokens refused".to_string()
        } else {
            format!("{} tokens not rejected with 401/403", k.kind)
        };
        problems.push(format!("{} {what} ({})", k.unexpected, k.wrong_statuses()));
        exit_code = EXIT_CORRECTNESS;
    }
    let errors = r.errors.total();
    let attempts = r.requests + errors;
    let share = if attempts == 0 {
        100.0
    } else {
        errors as f64 * 100.0 / attempts as f64
    };
    if r.requests == 0 {
        problems.push("no response received".into());
    } else if share > max_errors_percent {
        problems.push(format!(
            "{errors} transport errors ({share:.3}% of requests, allowed {max_errors_percent}%)"
        ));
    } else {
        return verdict(problems, exit_code);
    }
    if exit_code == EXIT_PASS {
        exit_code = EXIT_TRANSPORT;
    }
    verdict(problems, exit_code)
}

fn verdict(problems: Vec<String>, exit_code: u8) -> Verdict {
    Verdict {
        pass: exit_code == EXIT_PASS,
        exit_code,
        problems,
    }
}

/// Formats microseconds for people: `812µs`, `1.52ms`, `1.20s`.
pub fn us(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}µs")
    } else if v < 1_000_000.0 {
        format!("{:.2}ms", v / 1000.0)
    } else {
        format!("{:.2}s", v / 1_000_000.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub(crate) fn setup() -> Setup {
        Setup {
            url: "http://x/".into(),
            connections: 1,
            threads: 1,
            mode: "closed",
            target_rate: None,
            protocol: "http/1.1",
            tls: "none",
            token_source: "minted".into(),
            token_fetches: 0,
            alg: "RS256".into(),
            valid_tokens: 1,
            invalid_tokens: 1,
            kinds_produced: Kind::ALL.iter().map(|k| k.name()).collect(),
            max_errors_percent: 0.1,
        }
    }

    #[test]
    fn verdict_orders_correctness_before_transport() {
        let mut stats = Stats::new().unwrap();
        stats.response(Kind::Valid, 200, Duration::from_millis(1), 0);
        stats.response(Kind::Expired, 401, Duration::from_millis(1), 0);
        let ok = Report::new(setup(), &stats, Duration::from_secs(1));
        assert_eq!(ok.verdict.exit_code, EXIT_PASS);
        stats.errors.io = 1;
        let transport = Report::new(setup(), &stats, Duration::from_secs(1));
        assert_eq!(transport.verdict.exit_code, EXIT_TRANSPORT);
        stats.response(Kind::AlgNone, 200, Duration::from_millis(1), 0);
        let wrong = Report::new(setup(), &stats, Duration::from_secs(1));
        assert_eq!(wrong.verdict.exit_code, EXIT_CORRECTNESS);
        assert!(
            wrong.verdict.problems[0].contains("alg-none"),
            "{:?}",
            wrong.verdict
        );
        assert!(wrong.text().contains("FAIL"));
    }

    #[test]
    fn empty_run_is_a_transport_failure() {
        let r = Report::new(setup(), &Stats::new().unwrap(), Duration::from_secs(1));
        assert_eq!(r.verdict.exit_code, EXIT_TRANSPORT);
    }

    #[test]
    fn microseconds_read_well() {
        assert_eq!(us(812.0), "812µs");
        assert_eq!(us(1520.0), "1.52ms");
        assert_eq!(us(1_200_000.0), "1.20s");
    }
}
