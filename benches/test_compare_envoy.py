#!/usr/bin/env python3
"""Unit tests of benches/compare-envoy's logic that needs no load: the summaries (median, spread,
ratios), the cost table's arithmetic, the report's rows and targets, the logging environment and
the argument defaults. Run: python3 benches/test_compare_envoy.py (CI runs it: .ci/run)."""

import contextlib
import importlib.machinery
import io
import importlib.util
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
_loader = importlib.machinery.SourceFileLoader("compare_envoy", str(HERE / "compare-envoy"))
_spec = importlib.util.spec_from_loader("compare_envoy", _loader)
ce = importlib.util.module_from_spec(_spec)
_loader.exec_module(ce)


_ppr_loader = importlib.machinery.SourceFileLoader("perf_per_request",
                                                  str(HERE / "perf-per-request"))
_ppr_spec = importlib.util.spec_from_loader("perf_per_request", _ppr_loader)
ppr = importlib.util.module_from_spec(_ppr_spec)
_ppr_loader.exec_module(ppr)


_lab_loader = importlib.machinery.SourceFileLoader("log_ab", str(HERE / "log-ab"))
_lab_spec = importlib.util.spec_from_loader("log_ab", _lab_loader)
lab = importlib.util.module_from_spec(_lab_spec)
_lab_loader.exec_module(lab)


def run(rps, p99=5.0, rss_kib=20480, problems=()):
    return {"rps": rps, "p50": 1.0, "p99": p99, "rss_kib": rss_kib, "problems": list(problems)}


class Warmup(unittest.TestCase):
    def test_a_warm_up_short_of_the_token_set_gets_a_second_run_long_enough_for_it(self):
        self.assertEqual(ce.more_warmup(12000, 2, 10000), 0, "1.2x the set seen: warm")
        # 6,000 in 2 s: 3,000/s, so 1.5 x 10,000 takes 5 s (+1).
        self.assertEqual(ce.more_warmup(6000, 2, 10000), 6)
        self.assertEqual(ce.more_warmup(0, 2, 10000), 60, "capped")


class Summaries(unittest.TestCase):
    def test_median_and_spread_of_an_odd_count(self):
        s = ce.summarise([30.0, 10.0, 20.0])
        self.assertEqual((s["median"], s["min"], s["max"], s["n"]), (20.0, 10.0, 30.0, 3))
        self.assertEqual(s["values"], [30.0, 10.0, 20.0], "reps kept in run order")

    def test_median_of_an_even_count_is_the_mean_of_the_middle_two(self):
        self.assertEqual(ce.summarise([1.0, 4.0, 2.0, 3.0])["median"], 2.5)

    def test_missing_values_are_left_out_and_none_means_none(self):
        self.assertEqual(ce.summarise([None, 5.0])["n"], 1)
        self.assertIsNone(ce.summarise([]))
        self.assertIsNone(ce.summarise([None]))

    def test_spread_formatting(self):
        self.assertEqual(ce.fmt_spread(ce.summarise([21000, 19000, 20000])), "20.0k (19.0k-21.0k)")
        self.assertEqual(ce.fmt_spread(ce.summarise([20000])), "20.0k")
        self.assertEqual(ce.fmt_spread(None), "-")

    def test_ratios_use_medians_and_pair_reps(self):
        a, b = ce.summarise([30, 10, 20]), ce.summarise([10, 10, 100])
        self.assertEqual(ce.ratio_of(a, b), "2.00x")
        self.assertEqual(ce.ratio_of(a, None), "-")
        self.assertEqual(ce.per_rep_ratios([run(20), run(30)], [run(10), run(10)]), [2.0, 3.0])

    def test_microseconds_per_request(self):
        self.assertEqual(ce.us_per_request(20000), 50.0)
        self.assertIsNone(ce.us_per_request(0))


class CostTable(unittest.TestCase):
    def test_each_variant_adds_its_difference_to_its_baseline(self):
        variants = ce.cost_variants(["RS256", "ES256"])
        names = [v[0] for v in variants]
        self.assertEqual(names[:2], ["plain", "cached"])
        self.assertIn("verify-ES256", names)
        self.assertIn("cached+cors", names)
        results = {
            "plain": [run(25000), run(20000), run(24000)],      # median 24000: 41.67 µs
            "cached": [run(20000), run(19000), run(21000)],     # median 20000: 50 µs
            "verify-RS256": [run(10000)],                       # 100 µs
            "cached+cors": [run(16000), run(16000), run(17000)],  # 62.5 µs
        }
        rows = {r["name"]: r for r in ce.cost_rows(variants, results)}
        self.assertAlmostEqual(rows["plain"]["us"], 1e6 / 24000)
        self.assertIsNone(rows["plain"]["added"])
        self.assertAlmostEqual(rows["cached"]["added"], 50.0 - 1e6 / 24000)
        self.assertAlmostEqual(rows["verify-RS256"]["added"], 100.0 - 1e6 / 24000)
        self.assertAlmostEqual(rows["cached+cors"]["added"], 12.5)
        self.assertIsNone(rows["verify-ES256"]["us"], "not run: no figure, no difference")
        self.assertIsNone(rows["cached+set-header"]["added"])

    def test_variant_configs(self):
        self.assertEqual(ce.cost_config("plain", 10), ("plain", "RS256", None))
        self.assertEqual(ce.cost_config("cached", 10), ("cached", "RS256", None))
        self.assertEqual(ce.cost_config("verify-EdDSA", 10), ("verify-every", "EdDSA", None))
        self.assertEqual(ce.cost_config("cached+rate-limit-by-key", 10),
                         ("cached", "RS256", "rate-limit-by-key"))
        for name, _, _ in ce.cost_variants(list(ce.ALGS)):
            step = ce.cost_config(name, 10)[2]
            self.assertTrue(step is None or step in ce.STEPS, name)


class Logging(unittest.TestCase):
    def test_default_logging_is_as_shipped_whatever_the_shell_says(self):
        env = ce.portcullis_env(False, {"RUST_LOG": "warn", "PATH": "/bin"})
        self.assertNotIn("RUST_LOG", env)
        self.assertEqual(env["PATH"], "/bin")

    def test_log_off_is_warn(self):
        self.assertEqual(ce.portcullis_env(True, {"RUST_LOG": "debug"})["RUST_LOG"], "warn")

    def test_preload_only_when_asked(self):
        self.assertNotIn("LD_PRELOAD", ce.portcullis_env(False, {"LD_PRELOAD": "/x.so"}))
        self.assertEqual(ce.portcullis_env(False, {}, "/y.so")["LD_PRELOAD"], "/y.so")


class Arguments(unittest.TestCase):
    def test_defaults(self):
        a = ce.parse_args([])
        self.assertEqual(a.reps, 3)
        self.assertFalse(a.log_off)
        self.assertEqual(a.algs, "RS256,ES256")
        self.assertEqual(ce.parse_args(["--quick"]).reps, 1)
        c = ce.parse_args(["--cost-table"])
        self.assertTrue(c.no_envoy)
        self.assertEqual((c.tokens, c.algs), ("10000", "RS256,ES256,EdDSA"))

    def test_variants_alternate_within_a_rep(self):
        labels = [v[0] for v in ce.variants_of(ce.parse_args(["--log-compare"]))]
        self.assertEqual(labels, ["portcullis", "portcullis-log-off", "envoy"])
        off = ce.variants_of(ce.parse_args(["--log-off", "--no-envoy"]))
        self.assertEqual(off, [("portcullis", "portcullis", True, None)])
        pre = ce.variants_of(ce.parse_args(["--preload", "/lib/x.so", "--no-envoy"]))
        self.assertEqual(pre, [("portcullis", "portcullis", False, None),
                               ("portcullis-preload", "portcullis", False, "/lib/x.so")])

    def test_every_other_rep_runs_in_reverse(self):
        runs = ["portcullis", "portcullis-log-off", "envoy"]
        self.assertEqual([ce.in_rep_order(runs, rep) for rep in range(3)],
                         [runs, runs[::-1], runs])
        self.assertEqual(runs, ["portcullis", "portcullis-log-off", "envoy"], "not reordered in place")

    def test_contradictions_are_refused(self):
        for argv in (["--log-compare", "--log-off"], ["--cost-table", "--step", "cors"]):
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
                ce.parse_args(argv)


class CacheCheck(unittest.TestCase):
    METRICS = """# HELP portcullis_token_cache_hits_total x
portcullis_token_cache_hits_total 99000
portcullis_token_cache_misses_total 10003
portcullis_token_cache_evictions_total{cause="expired"} 2
portcullis_token_cache_evictions_total{cause="size"} 0
"""

    def test_counts_are_read_from_metrics(self):
        self.assertEqual(ce.cache_counts(self.METRICS), (99000.0, 10003.0, 0.0))
        self.assertEqual(ce.cache_counts(""), (None, None, None))

    def test_a_cache_holding_the_set_passes(self):
        self.assertEqual(ce.cache_problems(99000, 10003, 0, 10000), [])

    def test_evictions_by_size_and_extra_misses_are_problems(self):
        problems = ce.cache_problems(70000, 40000, 30000, 10000)
        self.assertEqual(len(problems), 2)
        self.assertIn("30000 evictions by size", problems[0])
        self.assertIn("40000 cache misses for 10000 tokens (hit ratio 0.636)", problems[1])

    def test_the_cached_config_is_sized_to_hold_the_set(self):
        saved = ce.WORK
        with tempfile.TemporaryDirectory() as d:
            ce.WORK = Path(d)
            try:
                cached = ce.portcullis_config("cached", 10000).read_text()
                every = ce.portcullis_config("verify-every", 10000).read_text()
            finally:
                ce.WORK = saved
        self.assertIn(f"max-entries: {10000 * ce.CACHE_UNITS_PER_TOKEN} ", cached)
        self.assertIn("max-entries: 0 ", every)

    def test_server_yaml_lines_go_into_the_server_block(self):
        saved = ce.WORK
        with tempfile.TemporaryDirectory() as d:
            ce.WORK = Path(d)
            ce.SERVER_EXTRA[:] = ["work-stealing: true"]
            try:
                text = ce.portcullis_config("plain", 100).read_text()
            finally:
                ce.WORK = saved
                ce.SERVER_EXTRA.clear()
        server = text.split("\nserver:\n", 1)[1].split("\npolicies:", 1)[0]
        self.assertIn("\n  work-stealing: true", "\n" + server)


def results_fixture():
    return {
        ("plain", "RS256", 10000): {
            "portcullis": [run(28000), run(27000), run(29000)],
            "envoy": [run(22000), run(21000), run(23000)],
        },
        ("cached", "RS256", 10000): {
            "portcullis": [run(26000, p99=4.0), run(27000, p99=6.0), run(25000, p99=5.0)],
            "envoy": [run(20000, p99=4.5), run(19000, p99=4.5), run(19500, p99=4.5)],
            "cache_available": True,
        },
    }


class Report(unittest.TestCase):
    def test_row_has_medians_spreads_p99_and_cached_over_plain_for_both(self):
        results = results_fixture()
        row = ce.result_row(("cached", "RS256", 10000), results[("cached", "RS256", 10000)], results)
        cells = [c.strip() for c in row.strip("|").split("|")]
        self.assertEqual(cells[3], "26.0k (25.0k-27.0k)")
        self.assertEqual(cells[4], "19.5k (19.0k-20.0k)")
        self.assertEqual(cells[5], "1.33x")
        self.assertEqual(cells[6], "5.00 (4.00-6.00)")
        self.assertEqual(cells[10], "0.93x")  # 26000 / 28000
        self.assertEqual(cells[11], "0.89x")  # 19500 / 22000
        self.assertEqual(cells[12], "pass")

    def test_targets_on_medians(self):
        out = "\n".join(ce.targets(results_fixture()))
        self.assertIn("RS256, 10000 tokens: cached >= 1.3x Envoy: 1.33x met", out)
        self.assertIn("cached >= 0.95x own plain: 0.93x **missed**", out)
        self.assertIn("p99 <= Envoy's in every validating row: **missed** in cached/RS256/10000 "
                      "(5.00 vs 4.50 ms)", out)

    def test_problems_are_reported_per_system(self):
        results = results_fixture()
        results[("cached", "RS256", 10000)]["envoy"][1]["problems"] = ["1 invalid request(s) reached the backend"]
        row = ce.result_row(("cached", "RS256", 10000), results[("cached", "RS256", 10000)], results)
        self.assertTrue(row.endswith("| E: 1 invalid request(s) reached the backend |"))

    def test_report_is_a_table_with_machine_date_and_commit(self):
        args = ce.parse_args(["--log-compare"])
        results = results_fixture()
        for row in results.values():
            row["portcullis-log-off"] = [run(30000), run(29000), run(31000)]
        meta = {"date": "2026-12-07 10:00 UTC", "command": "benches/compare-envoy --log-compare",
                "commit": "abc1234",
                "machine": {"nproc": "2", "cpu": "Test CPU", "loadavg": ["0.1", "0.2", "0.3"],
                            "kernel": "6.0"},
                "versions": {"portcullis": "portcullis 0.1.0", "envoy": "1.40", "wrk": "wrk 4",
                             "nginx": "nginx 1"}}
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "r.md"
            ce.write_report(path, results, meta, args, {})
            text = path.read_text()
        self.assertIn("2 cores (Test CPU)", text)
        self.assertIn("Date: 2026-12-07 10:00 UTC. Commit: abc1234.", text)
        self.assertIn("default logging as shipped", text)
        self.assertIn("## Default logging vs logging off (Portcullis)", text)
        self.assertIn("| cached | RS256 | 10000 | 26.0k (25.0k-27.0k) | 30.0k (29.0k-31.0k) | 0.87x |", text)
        self.assertIn("default logging >= 0.95x logging off: 0.87x **missed**", text)
        self.assertIn("P/E per rep 1.27, 1.29, 1.26", text)


def meta_fixture(probes=None):
    return {"date": "2026-12-07 10:00 UTC", "command": "benches/compare-envoy --cost-table",
            "commit": "abc1234", "probes": probes or {},
            "machine": {"nproc": "2", "cpu": "Test CPU", "loadavg": ["0.1", "0.2", "0.3"],
                        "kernel": "6.0"},
            "versions": {"portcullis": "portcullis 0.1.0", "envoy": "1.40", "wrk": "wrk 4",
                         "nginx": "nginx 1"}}


class Steadiness(unittest.TestCase):
    STEADY = [35.0, 36.0, 34.0, 35.5, 36.5, 35.0, 34.5, 35.0, 36.0, 35.0]
    SHARED = [33.0, 64.0, 37.0, 61.0, 34.0, 66.0, 36.0, 119.0, 35.0, 63.0]

    def test_the_probe_times_real_work_on_the_proxys_core(self):
        ms = ce.probe_core(2, pause=0.0)
        self.assertEqual(len(ms), 2)
        self.assertTrue(all(x > 0 for x in ms), ms)

    def test_spread_is_p90_over_p10(self):
        st = ce.steadiness(self.SHARED)
        # Sorted: 33 34 35 36 37 61 63 64 66 119; p10 and p90 interpolate (inclusive method).
        self.assertAlmostEqual(st["p10"], 33.9)
        self.assertAlmostEqual(st["p90"], 71.3)
        self.assertEqual((st["min"], st["max"], st["n"]), (33.0, 119.0, 10))
        self.assertAlmostEqual(st["spread"], 71.3 / 33.9)
        self.assertEqual(ce.steadiness([40.0])["spread"], 1.0)
        self.assertIsNone(ce.steadiness([]))

    def test_a_shared_core_marks_the_run_unsteady_and_a_steady_one_does_not(self):
        self.assertEqual(ce.unsteady(self.STEADY), [])
        line = ce.unsteady(self.SHARED)
        self.assertEqual(len(line), 1)
        self.assertIn("**machine unsteady**", line[0])
        self.assertIn("spread 2.10", line[0])

    def test_every_probe_of_a_run_counts(self):
        meta = {"probes": {"before": self.STEADY, "after": self.STEADY}}
        runs = [run(1000), dict(run(1000), probe=[70.0, 71.0, 72.0, 69.0, 70.0] * 2)]
        self.assertEqual(len(ce.all_probes(meta, runs)), 30)
        self.assertEqual(ce.unsteady(ce.all_probes(meta, runs[:1])), [])
        self.assertNotEqual(ce.unsteady(ce.all_probes(meta, runs)), [])


class CostVariantsAndPairs(unittest.TestCase):
    SETS = {("RS256", 10000): None, ("ES256", 10000): None}

    def test_named_variants_bring_their_baselines(self):
        args = ce.parse_args(["--cost-table", "--cost-variants", "cached+cors"])
        names = [v[0] for v in ce.cost_variants_of(args, 10000, self.SETS)]
        self.assertEqual(names, ["plain", "cached", "cached+cors"])
        every = ce.cost_variants_of(ce.parse_args(["--cost-table"]), 10000, self.SETS)
        self.assertIn("verify-ES256", [v[0] for v in every])

    def test_unknown_variants_and_variants_without_the_cost_table_are_refused_up_front(self):
        for argv, says in ((["--cost-table", "--cost-variants", "plain,nope"], "variant(s) nope"),
                           (["--cost-variants", "plain"], "goes with --cost-table")):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
                ce.parse_args(argv)
            self.assertIn(says, err.getvalue())

    def test_the_report_pairs_each_rep_and_judges_the_hit_on_their_median(self):
        args = ce.parse_args(["--cost-table", "--cost-variants", "plain,cached"])
        variants = ce.cost_variants_of(args, 10000, self.SETS)
        # The machine drifts: plain's and the hit's medians (20.0k, 19.3k) give 0.965x, but rep
        # by rep the hit is at 0.90-0.93x of the plain run beside it.
        results = {"plain": [run(20000), run(15000), run(25000)],
                   "cached": [run(18000), run(13800), run(23000)]}
        for r in results["plain"] + results["cached"]:
            r["probe"] = list(Steadiness.SHARED)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "cost.md"
            ce.write_cost_report(path, variants, results, meta_fixture(
                {"before": Steadiness.SHARED}), args, 10000)
            text = path.read_text()
        self.assertIn("| 0.900, 0.920, 0.920 | 0.920 (0.900-0.920) |", text)
        self.assertIn("cache hit >= 0.95x plain, paired reps: median 0.920 (0.900-0.920, 3 reps):"
                      " **missed**", text)
        self.assertIn("**machine unsteady**", text)
        self.assertIn("Core steadiness", text)
        self.assertIn("- cached: [18.0k, 13.8k, 23.0k] probe ms [49, 49, 49]", text)


class PerfPerRequest(unittest.TestCase):
    """benches/perf-per-request: symbols sorted into places, samples turned into µs per request."""

    REPORT = """# Samples: 100
    40.00%            40  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore
    20.00%            20  [kernel.kallsyms]  [k] tcp_sendmsg_locked
     5.00%             5  portcullis         [.] moka::sync::cache::Cache<K,V,S>::get
     5.00%             5  portcullis         [.] quick_cache::shard::CacheShard<K,V>::get
     5.00%             5  portcullis         [.] _mi_page_malloc_zero
     5.00%             5  libc.so.6          [.] _int_malloc
     5.00%             5  portcullis         [.] sha2::sha256::x86::digest_blocks
     5.00%             5  portcullis         [.] portcullis_auth::claims::Rules::check
    10.00%            10  portcullis         [.] pingora_core::protocols::http::v1::server::HttpSession::read_request
"""

    def test_symbols_are_sorted_into_their_places(self):
        by = ppr.samples_by_category(self.REPORT)
        self.assertEqual(by[ppr.CATEGORIES[0][0]], 40, "wake-ups of the other core")
        self.assertEqual(by[ppr.CATEGORIES[1][0]], 20, "the rest of the kernel")
        self.assertEqual(by["allocator"], 10, "mimalloc and glibc both")
        self.assertEqual(by[ppr.CATEGORIES[3][0]], 10, "the token cache's map, either one")
        self.assertEqual(by["claim rules on the cached claims"], 5)
        self.assertEqual(by[ppr.OTHER], 10)
        self.assertEqual(sum(by.values()), 100)

    def test_samples_become_micros_per_request(self):
        # 1,000 samples at 1 kHz over 2 s of 10,000 req/s: 1 s of CPU for 20,000 requests.
        us = ppr.to_micros({"x": 1000}, rate=10000, seconds=2, hz=1000)
        self.assertAlmostEqual(us["x"], 50.0)

    def test_the_table_sorts_by_difference_and_totals(self):
        text = ppr.table(["plain", "cached"], [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.5}])
        lines = text.splitlines()
        self.assertIn("| a | 1.00 | 3.00 | +2.00 |", lines[2], "largest difference first")
        self.assertEqual(lines[-1], "| **total** | 3.0 | 5.5 | +2.5 |")


class LogAb(unittest.TestCase):
    def test_ratios_are_paired_rep_by_rep(self):
        res = {"file": [20000, 30000, 10000], "devnull": [21000, 31000, 10500],
               "warn": [21000, 31000, 10400]}
        # Medians: file 20000 / warn 21000 = 0.952; rep by rep 0.952, 0.968, 0.962.
        p = lab.paired(res)
        self.assertEqual(set(p), {"file", "devnull"})
        self.assertAlmostEqual(p["file"]["median"], 10000 / 10400)
        self.assertAlmostEqual(p["file"]["min"], 20000 / 21000)
        self.assertAlmostEqual(p["file"]["max"], 30000 / 31000)
        self.assertAlmostEqual(p["devnull"]["max"], 1.0096, places=4)

    def test_the_devnull_mode_points_the_log_at_dev_null_and_the_others_at_a_file(self):
        with tempfile.TemporaryDirectory() as d:
            log = Path(d) / "portcullis.log"
            log.write_text("old run")
            lab.point_log(log, "devnull")
            self.assertTrue(log.is_symlink())
            self.assertEqual(str(log.resolve()), "/dev/null")
            lab.point_log(log, "file")
            self.assertFalse(log.exists() or log.is_symlink(), "the gateway opens a fresh file")


if __name__ == "__main__":
    unittest.main()
