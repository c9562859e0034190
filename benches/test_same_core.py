#!/usr/bin/env python3
"""Unit tests of benches/same-core's logic that needs no load: moving a rendered config to a
slot's ports, the slot swap, a rep's figures from wrk results and CPU ticks, what makes a rep
unreadable, the summaries and verdicts over sound reps, the report and the arguments.
Run: python3 benches/test_same_core.py (CI runs it: .ci/run)."""

import contextlib
import importlib.machinery
import importlib.util
import io
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
_loader = importlib.machinery.SourceFileLoader("same_core", str(HERE / "same-core"))
_spec = importlib.util.spec_from_loader("same_core", _loader)
sc = importlib.util.module_from_spec(_spec)
_loader.exec_module(sc)
ce = sc.ce


def wrk_result(rps, requests=None, non2xx=0, sockerr=""):
    return {"rps": rps, "requests": requests if requests is not None else int(rps * 8),
            "non2xx": non2xx, "sockerr": sockerr, "cache_misses": None}


def rep(ratio_a=9500.0, rps_b=10000.0, share=1.0, proxy_idle=0.01, load_idle=0.4, problems=None,
        slot_a=0):
    a, b = wrk_result(ratio_a), wrk_result(rps_b)
    m = {"a": a, "b": b, "slot_a": slot_a, "proxy_idle": proxy_idle, "load_idle": load_idle}
    m.update(sc.rep_figures(a, b, round(800 * share), 800, 100))
    m["problems"] = sc.rep_checks(m, 10000) if problems is None else problems
    return m


class Ports(unittest.TestCase):
    def test_a_portcullis_config_moves_to_the_slot_ports_and_keeps_the_backend(self):
        text = ('server:\n  listen: "127.0.0.1:18910"\n  admin: "127.0.0.1:18911"\n'
                'routes:\n  - upstream: "http://127.0.0.1:18900"\n')
        out = sc.with_ports(text, "portcullis", (18914, 18915))
        self.assertIn('listen: "127.0.0.1:18914"', out)
        self.assertIn('admin: "127.0.0.1:18915"', out)
        self.assertIn("127.0.0.1:18900", out, "the backend's port is not the proxy's")
        self.assertNotIn("18910", out)

    def test_the_real_renderers_output_moves(self):
        work = ce.WORK
        with tempfile.TemporaryDirectory() as tmp:
            ce.WORK = Path(tmp)
            try:
                p = sc.with_ports(ce.portcullis_config("cached", 10).read_text(), "portcullis",
                                  sc.SLOT_PORTS[1])
                e = sc.with_ports(ce.envoy_config("plain", 10, {"keys": []}).read_text(),
                                  "envoy", sc.SLOT_PORTS[0])
            finally:
                ce.WORK = work
        self.assertIn(f'listen: "127.0.0.1:{sc.SLOT_PORTS[1][0]}"', p)
        self.assertIn(f'admin: "127.0.0.1:{sc.SLOT_PORTS[1][1]}"', p)
        self.assertIn(f"port_value: {sc.SLOT_PORTS[0][0]}", e)
        self.assertIn(f"port_value: {sc.SLOT_PORTS[0][1]}", e)
        self.assertIn(f"port_value: {ce.PORT_BACKEND}", e)

    def test_a_config_without_the_port_or_with_it_twice_is_refused(self):
        with self.assertRaises(ValueError):
            sc.with_ports('listen: "127.0.0.1:18911"', "portcullis", (1, 2))
        with self.assertRaises(ValueError):
            sc.with_ports("18910 18910 18911", "portcullis", (1, 2))

    def test_a_port_inside_a_longer_number_is_not_touched(self):
        with self.assertRaises(ValueError):
            sc.with_ports("189100 18911", "portcullis", (1, 2))

    def test_slots_swap_every_other_rep(self):
        self.assertEqual([sc.slots(r) for r in range(4)], [(0, 1), (1, 0), (0, 1), (1, 0)])
        self.assertNotEqual(sc.SLOT_PORTS[0], sc.SLOT_PORTS[1])
        fixed = {ce.PORT_BACKEND, ce.PORT_IDP, ce.PORT_P, ce.PORT_P_ADMIN, ce.PORT_E,
                 ce.PORT_E_ADMIN}
        self.assertFalse(fixed & {p for s in sc.SLOT_PORTS for p in s})


class Figures(unittest.TestCase):
    def test_ratio_share_and_cost_ratio(self):
        a, b = wrk_result(9000, 72000), wrk_result(10000, 80000)
        f = sc.rep_figures(a, b, 400, 400, 100)
        self.assertAlmostEqual(f["ratio"], 0.9)
        self.assertAlmostEqual(f["share"], 1.0)
        # 4 s of CPU each: 55.6 µs a request for A, 50 for B.
        self.assertAlmostEqual(f["us_a"], 4e6 / 72000)
        self.assertAlmostEqual(f["us_b"], 50.0)
        self.assertAlmostEqual(f["cost_ratio"], 0.9)

    def test_an_uneven_share_shows_in_the_cost_ratio_not_the_req_per_s(self):
        # A had 10 % more CPU than B and served the same: its requests cost 10 % more.
        a, b = wrk_result(10000, 80000), wrk_result(10000, 80000)
        f = sc.rep_figures(a, b, 440, 400, 100)
        self.assertAlmostEqual(f["ratio"], 1.0)
        self.assertAlmostEqual(f["share"], 1.1)
        self.assertAlmostEqual(f["cost_ratio"], 1 / 1.1)

    def test_no_requests_gives_no_figure(self):
        f = sc.rep_figures(wrk_result(0, 0), wrk_result(10000), 400, 400, 100)
        self.assertIsNone(f["ratio"])
        self.assertIsNone(f["cost_ratio"])


class Checks(unittest.TestCase):
    def test_a_sound_rep_has_no_problems(self):
        self.assertEqual(rep()["problems"], [])

    def test_an_idle_proxy_core_a_busy_load_core_or_an_uneven_share_is_not_counted(self):
        self.assertIn("not saturated", rep(proxy_idle=0.2)["problems"][0])
        self.assertIn("load core", rep(load_idle=0.01)["problems"][0])
        self.assertIn("uneven CPU share", rep(share=1.2)["problems"][0])
        self.assertEqual(rep(share=1.04)["problems"], [])

    def test_errors_and_cache_misses_are_not_counted(self):
        m = rep()
        m["a"]["non2xx"] = 3
        m["b"]["sockerr"] = "connect 0, read 2, write 0, timeout 0"
        m["a"].update(cache_hits=1000.0, cache_misses=20000.0, cache_evicted=5.0)
        problems = sc.rep_checks(m, 10000)
        self.assertTrue(any(p.startswith("A: 3 non-2xx") for p in problems))
        self.assertTrue(any(p.startswith("B: socket errors") for p in problems))
        self.assertTrue(any("evictions by size" in p for p in problems))
        self.assertTrue(any("20000 cache misses" in p for p in problems))


class Summary(unittest.TestCase):
    def test_medians_over_the_sound_reps_only(self):
        reps = [rep(9400), rep(9600), rep(9500), rep(5000, problems=["x"])]
        s = sc.pair_summary(reps)
        self.assertEqual((s["sound"], s["reps"]), (3, 4))
        self.assertAlmostEqual(s["ratio"]["median"], 0.95)
        self.assertAlmostEqual(s["ratio"]["min"], 0.94)
        self.assertEqual(s["rps_a"]["n"], 3)

    def test_verdicts(self):
        met = sc.pair_summary([rep(9500), rep(9600), rep(9550)])
        self.assertEqual(sc.verdict(met, 0.95), "met")
        self.assertEqual(sc.verdict(met, 0.96), "not met")
        self.assertEqual(sc.verdict(met, None), "-")
        two = sc.pair_summary([rep(9500), rep(9600), rep(9550, problems=["x"])])
        self.assertTrue(sc.verdict(two, 0.95).startswith("unread (2 sound reps"))

    def test_report_has_the_pairs_the_verdicts_and_every_rep(self):
        results = {"hit": [rep(9600), rep(9500, slot_a=1), rep(9700)],
                   "control": [rep(10000), rep(10100), rep(5000, proxy_idle=0.3)]}
        meta = {"date": "2026-12-08 00:00 UTC", "command": "benches/same-core --binary b",
                "machine": {"nproc": "2", "cpu": "cpu", "kernel": "k"}, "portcullis": "p",
                "commit": "abc", "probe": "Core probe: steady"}
        args = sc.parse_args(["--binary", "b", "--pairs", "hit,control", "--reps", "3"])
        text = sc.report(results, meta, args)
        self.assertIn("| hit | Portcullis cached | Portcullis plain | RS256 | 9.6k (9.5k-9.7k) | "
                      "10.0k (10.0k-10.0k) | 0.960 (0.950-0.970) |", text)
        self.assertIn("| 3/3 | >= 0.95 | met |", text)
        self.assertIn("| control |", text)
        self.assertIn("| 2/3 | - | - |", text)
        self.assertIn("rep 2 (A in slot 1)", text)
        self.assertIn("A/B with A in slot 0: 0.965 (0.960-0.970), in slot 1: 0.950:", text)
        self.assertIn("**not counted**: proxy core 30.0% idle", text)
        # A side that served nothing: its rep is reported with dashes, not a crash.
        results["control"].append(rep(0.0))
        self.assertIn("A/B -, cost ratio - (- / ", sc.report(results, meta, args))
        self.assertIn("Core probe: steady", text)
        self.assertNotIn("every B side runs", text)
        args.binary_b = "/tmp/old"
        self.assertIn("every B side runs `/tmp/old`", sc.report(results, meta, args))


class Args(unittest.TestCase):
    def test_defaults(self):
        a = sc.parse_args(["--binary", "b"])
        self.assertEqual(a.pairs, sc.DEFAULT_PAIRS.split(","))
        self.assertEqual((a.reps, a.duration, a.tokens, a.connections), (5, 8, 10000, 64))
        self.assertIsNone(a.binary_b, "both sides run --binary unless told")

    def test_an_unknown_pair_is_refused_with_the_known_ones(self):
        err = io.StringIO()
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(err):
            sc.parse_args(["--binary", "b", "--pairs", "hit,nope"])
        self.assertIn("unknown pair(s) nope", err.getvalue())
        self.assertIn("envoy-verify-ES256", err.getvalue())

    def test_every_pair_names_known_scenarios_and_algorithms(self):
        for name, (a, b, alg, target, what) in sc.PAIRS.items():
            self.assertIn(a.scenario, ce.SCENARIOS, name)
            self.assertIn(b.scenario, ce.SCENARIOS, name)
            self.assertIn(alg, ce.ALGS, name)
            self.assertTrue(what)


if __name__ == "__main__":
    unittest.main()
