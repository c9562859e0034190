#!/usr/bin/env python3
"""Unit tests of benches/instr-per-request's logic that needs no load and no valgrind: reading
callgrind dumps (totals, self costs, the clock thread), the per-request arithmetic and cycle
estimate, the request order, the window checks, the report. Run: python3
benches/test_instr_per_request.py (CI runs it: .ci/run)."""

import contextlib
import importlib.machinery
import importlib.util
import io
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
_loader = importlib.machinery.SourceFileLoader("instr_per_request",
                                               str(HERE / "instr-per-request"))
_spec = importlib.util.spec_from_loader("instr_per_request", _loader)
ipr = importlib.util.module_from_spec(_spec)
_loader.exec_module(ipr)

# A thread's dump as callgrind 3.19 writes it with --separate-threads=yes, cut down: compressed
# names defined on first use (fn= and cfn=), an inline file switch (fi=), relative and repeated
# positions, a finished call (calls=2) and a call still in progress at the dump (calls=0), whose
# next line is the call's inclusive cost and no one's self cost.
WORKER = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  /work/bin-u run -c portcullis-cached-2000.yaml --threads 1
part: 1
thread: 3

desc: I1 cache: 32768 B, 64 B, 8-way associative
desc: D1 cache: 32768 B, 64 B, 8-way associative
desc: LL cache: 33554432 B, 64 B, 16-way associative

positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 1000 250 120 5 8 4 1 2 3

ob=(1) /work/bin-u
fl=(1) /src/lib.rs
fn=(1) start_thread
cfn=(2) tokio::runtime::Runtime::block_on
calls=0 10
5 1160 330 140 6 9 4 1 2 3
3 10

fn=(2)
20 100 30 10 1 1
+1 50 10
fi=(2) /src/inlined.rs
* 40 10 10
cfn=(3) portcullis_proxy::cache::TokenCache::get
calls=2 7
-2 800 200 100 4 7 4 1 2 3

fn=(3)
7 800 200 100 4 7 4 1 2 3

totals: 1000 250 120 5 8 4 1 2 3
"""
# The same process's clock thread: its loop is CLOCK_FN's own code.
CLOCK = f"""# callgrind format
thread: 7
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
fl=(1) /src/timer.rs
fn=(9) {ipr.CLOCK_FN}
30 700 100 50 2
cfn=(10) clock_nanosleep
calls=100 0
31 300 50
fn=(10)
0 300 50
totals: 1000 150 50 2
"""
# A thread that did nothing in the window: callgrind writes a zero total with one number.
IDLE_THREAD = """thread: 1
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
totals: 0
"""


class Dumps(unittest.TestCase):
    def test_totals_are_read_by_event_name(self):
        t = ipr.parse_totals(WORKER)
        self.assertEqual(t["Ir"], 1000)
        self.assertEqual((t["D1mr"], t["D1mw"], t["DLmw"]), (8, 4, 3))

    def test_summary_stands_in_when_there_is_no_totals_line_and_short_lines_pad_zeros(self):
        t = ipr.parse_totals("events: Ir Dr Dw\nsummary: 7 3\n")
        self.assertEqual(t, {"Ir": 7, "Dr": 3, "Dw": 0})
        self.assertEqual(ipr.parse_totals(IDLE_THREAD)["DLmw"], 0)

    def test_a_dump_cut_short_is_an_error(self):
        with self.assertRaises(ValueError):
            ipr.parse_totals("events: Ir\nfn=(1) main\n")

    def test_self_costs_skip_call_lines_whatever_their_count_and_add_up_to_the_totals(self):
        events, costs = ipr.self_costs(WORKER)
        self.assertEqual(events[:3], ["Ir", "Dr", "Dw"])
        # start_thread only ran 10 instructions itself: the 1160 of its call in progress
        # (calls=0) belong to block_on (callgrind_annotate 3.19 would count them as its own).
        self.assertEqual(costs["start_thread"][0], 10)
        self.assertEqual(costs["tokio::runtime::Runtime::block_on"][:3], [190, 50, 20])
        self.assertEqual(costs["portcullis_proxy::cache::TokenCache::get"][0], 800)
        for i, e in enumerate(events):
            self.assertEqual(sum(v[i] for v in costs.values()), ipr.parse_totals(WORKER)[e], e)

    def test_a_name_used_before_it_is_defined_in_this_file_is_kept_apart(self):
        _, costs = ipr.self_costs("events: Ir\nfn=(77)\n1 5\n")
        self.assertEqual(costs, {"fn(77)": [5]})

    def test_the_clock_thread_is_shown_apart_and_idle_threads_count_nothing(self):
        threads = [ipr.parse_dump(t) for t in (WORKER, CLOCK, IDLE_THREAD)]
        counted, clock = ipr.split_threads(threads)
        self.assertEqual((counted["Ir"], counted["DLmr"]), (1000, 2))
        self.assertEqual((clock["Ir"], clock["I1mr"]), (1000, 2))
        self.assertEqual(set(counted), set(ipr.EVENTS))

    def test_without_a_clock_thread_every_thread_counts(self):
        counted, clock = ipr.split_threads([ipr.parse_dump(WORKER), ipr.parse_dump(WORKER)])
        self.assertEqual((counted["Ir"], clock["Ir"]), (2000, 0))

    def test_function_costs_leave_out_the_clock_thread(self):
        fns = ipr.function_ir([ipr.parse_dump(t) for t in (WORKER, CLOCK, IDLE_THREAD)])
        self.assertNotIn(ipr.CLOCK_FN, fns)
        self.assertNotIn("clock_nanosleep", fns)
        self.assertEqual(sum(fns.values()), 1000)

    def test_the_allocator_is_mimallocs_and_glibcs_functions(self):
        fns = {"mi_malloc": 10, "_mi_page_malloc_zero": 20, "malloc": 1, "free@@GLIBC_2.2.5": 2,
               "_int_malloc": 4, "mi_free": 8, "portcullis_proxy::cache::TokenCache::get": 100,
               "freeaddrinfo": 1000, "__memcpy_avx_unaligned_erms": 2000, "semi_final": 4000}
        self.assertEqual(ipr.allocator_ir(fns), 45)

    def test_a_dump_is_every_thread_file_of_that_dump_number_only(self):
        saved = ipr.callgrind_control
        ipr.callgrind_control = lambda flag, pid: None
        try:
            with tempfile.TemporaryDirectory() as d:
                out = Path(d) / "instr-cached-rep1.callgrind"
                Path(f"{out}.1-03").write_text(WORKER)
                Path(f"{out}.1-07").write_text(CLOCK)
                Path(f"{out}.10-03").write_text(WORKER)  # dump 10: not dump 1
                Path(f"{out}.2-03").write_text(WORKER)
                dumps = ipr.Dumps(4242, out)
                threads = dumps.dump()
            self.assertEqual(len(threads), 2)
            self.assertEqual(ipr.split_threads(threads)[1]["Ir"], 1000)
        finally:
            ipr.callgrind_control = saved


class Arithmetic(unittest.TestCase):
    COUNTS = {"Ir": 100000, "Dr": 30000, "Dw": 20000, "I1mr": 1, "D1mr": 2, "D1mw": 3,
              "ILmr": 4, "DLmr": 5, "DLmw": 6}

    def test_misses_and_the_classic_cycle_estimate(self):
        d = ipr.derived(self.COUNTS)
        self.assertEqual(d["D1 misses"], 5)
        self.assertEqual(d["LL misses"], 15)
        self.assertEqual(d["I1 misses"], 1)
        self.assertEqual(d["est. cycles"], 100000 + 10 * (1 + 2 + 3) + 100 * (4 + 5 + 6))

    def test_per_request_and_per_second_divide_every_figure(self):
        pr = ipr.per_request(self.COUNTS, 1000)
        self.assertEqual(pr["Ir"], 100.0)
        self.assertAlmostEqual(pr["est. cycles"], 101.56)
        self.assertEqual(ipr.per_second(self.COUNTS, 4)["Dw"], 5000)
        with self.assertRaises(ValueError):
            ipr.per_request(self.COUNTS, 0)

    def test_missing_events_count_zero(self):
        self.assertEqual(ipr.derived({"Ir": 9})["est. cycles"], 9)

    def test_cached_minus_plain_uses_medians_and_pairs_reps(self):
        plain = {f: ipr.ce.summarise([100.0, 102.0, 101.0]) for f in ipr.FIGURES}
        cached = {f: ipr.ce.summarise([104.0, 103.0, 106.0]) for f in ipr.FIGURES}
        diff, ratio, reps = ipr.compare(plain, cached)["Ir"]
        self.assertEqual(diff, 3.0)
        self.assertAlmostEqual(ratio, 104.0 / 101.0)
        self.assertEqual(reps, [4.0, 1.0, 5.0])

    def test_spread_and_idle_share(self):
        self.assertAlmostEqual(ipr.spread_pct(ipr.ce.summarise([99.0, 100.0, 101.0])), 2.0)
        self.assertIsNone(ipr.spread_pct(None))
        self.assertAlmostEqual(ipr.idle_share(1000.0, 20.0, 2e6), 0.01)
        self.assertIsNone(ipr.idle_share(1000.0, 20.0, 0))

    def test_top_differences_are_per_request_and_by_size_of_the_difference(self):
        plain = {"a": 1000, "b": 5000, "only_plain": 300}
        cached = {"a": 2000, "b": 5100, "only_cached": 2400}
        rows = ipr.top_differences(plain, cached, 10, 20, 3)
        self.assertEqual([r[0] for r in rows], ["b", "only_cached", "only_plain"])
        self.assertEqual(rows[0][1:], (500.0, 255.0, -245.0))
        self.assertEqual(rows[1][3], 120.0)

    def test_formatting(self):
        self.assertEqual(ipr.fmt_num(113316.6), "113,317")
        self.assertEqual(ipr.fmt_num(0.86), "0.9")
        self.assertEqual(ipr.fmt_cell(ipr.ce.summarise([3.0, 1.0, 2.0])), "2.0 (1.0-3.0)")
        self.assertEqual(ipr.fmt_cell(ipr.ce.summarise([1234.0])), "1,234")
        self.assertEqual(ipr.fmt_cell(None), "-")


class Load(unittest.TestCase):
    def test_requests_cycle_the_tokens_in_wrk_order(self):
        self.assertEqual(ipr.request_sequence(["a", "b", "c"], 7), list("abcabca"))
        self.assertEqual(ipr.request_sequence(["a", "b", "c"], 2, start=2), ["c", "a"])

    def test_a_window_is_only_good_with_every_response_200_and_no_new_connection(self):
        self.assertEqual(ipr.window_problems({200: 50}, 50, 0), [])
        self.assertEqual(len(ipr.window_problems({200: 49, 401: 1}, 50, 0)), 2)
        self.assertEqual(len(ipr.window_problems({200: 40, "not sent by the deadline": 10},
                                                 50, 0)), 2)
        self.assertIn("reconnects", ipr.window_problems({200: 50}, 50, 2)[0])

    def test_the_cached_window_must_be_all_hits(self):
        before, hit = (2000.0, 2000.0, None), (7000.0, 2000.0, None)
        self.assertEqual(ipr.cache_window_problems("cached", before, hit, 5000), [])
        self.assertTrue(ipr.cache_window_problems("cached", before, (6990.0, 2010.0, None), 5000))
        self.assertTrue(ipr.cache_window_problems("cached", before, (7000.0, 2000.0, 3.0), 5000))
        self.assertEqual(ipr.cache_window_problems("plain", (None, None, None),
                                                   (None, None, None), 5000), [])
        self.assertTrue(ipr.cache_window_problems("cached", (None, None, None),
                                                  (None, None, None), 5000))

    def test_listeners_are_read_from_proc_net_tcp(self):
        text = (
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
            "timeout inode\n"
            "   0: 0100007F:49DE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0  "
            "      0 154984 1 000000000bad795b 100 0 0 10 0\n"
            "   1: 0100007F:49DE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0  "
            "      0 154990 1 000000000bad795c 100 0 0 10 0\n"
            "   2: 0100007F:49DE 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0  "
            "      0 154991 1 000000000bad795d 100 0 0 10 0\n"
            "   3: 0100007F:49DF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0  "
            "      0 154985 1 0000000063af3b40 100 0 0 10 0\n")
        # 0x49DE = 18910: two listeners (SO_REUSEPORT), the connected socket is not one
        self.assertEqual(ipr.listening_inodes(text, 18910), ["154984", "154990"])
        self.assertEqual(ipr.listening_inodes(text, 18911), ["154985"])
        self.assertEqual(ipr.listening_inodes(text, 18900), [])

    def test_tokens_come_from_the_smallest_file_that_has_enough(self):
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            (work / "tokens-RS256-1.txt").write_text("t0\n")
            (work / "tokens-RS256-3.txt").write_text("t0\nt1\nt2\n")
            (work / "tokens-RS256-5.txt").write_text("t0\nt1\nt2\nt3\nx\n")
            (work / "tokens-ES256-9.txt").write_text("e\n" * 9)
            self.assertEqual(ipr.tokens_for("RS256", 2, work), ["t0", "t1"])
            self.assertEqual(ipr.tokens_for("RS256", 4, work), ["t0", "t1", "t2", "t3"])
            self.assertIsNone(ipr.tokens_for("RS256", 6, work))
            self.assertIsNone(ipr.tokens_for("EdDSA", 1, work))


def fake_run(ir, window_s=25.0, problems=(), alloc=12000.0):
    pr = ipr.per_request({"Ir": ir * 5000, "Dr": 40000 * 5000, "Dw": 34000 * 5000,
                          "I1mr": 4800 * 5000, "D1mr": 2000 * 5000, "D1mw": 1000 * 5000,
                          "DLmr": 5000}, 5000)
    return {"per_request": pr, "requests": 5000, "window_s": window_s, "clock_per_request": 400.0,
            "whole_per_request": ir + 400.0, "idle_per_s": {"Ir": 30000.0},
            "idle_clock_per_s": 83000.0, "statuses": {200: 5000}, "window_connects": 0,
            "problems": list(problems), "functions": {"f": ir * 5000},
            "allocator_per_request": alloc}


META = {"date": "2026-12-07 22:00 UTC", "command": "benches/instr-per-request --binary b",
        "machine": {"nproc": "2", "cpu": "AMD EPYC", "kernel": "6", "loadavg": ["0", "0", "0"]},
        "commit": "abc", "portcullis": "portcullis 0.1.0", "binary": "/work/bin-u",
        "valgrind": "valgrind-3.19.0", "valgrind_args": ["valgrind", "--tool=callgrind"],
        "configs": "portcullis-plain-2000.yaml", "requests": 5000, "connections": 8,
        "tokens": 2000, "alg": "RS256", "reps": 3, "idle_seconds": 10.0}


class Report(unittest.TestCase):
    def test_rows_difference_ratio_and_rep_agreement(self):
        results = {"plain": [fake_run(110000.0), fake_run(110100.0, alloc=12100.0),
                             fake_run(109900.0, alloc=11900.0)],
                   "cached": [fake_run(113300.0, alloc=12300.0), fake_run(113400.0, alloc=12400.0),
                              fake_run(113200.0, alloc=12200.0)]}
        tops = ipr.top_functions(["plain", "cached"], results, 5)
        text = ipr.report(META, ["plain", "cached"], results, tops)
        self.assertIn("| plain | 110,000 (109,900-110,100) |", text)
        self.assertIn("| cached − plain | +3,300.0 |", text)
        self.assertIn(f"| cached / plain | {113300 / 110000:.4f} |", text)
        self.assertIn("rep by rep: +3,300, +3,300, +3,300", text)
        self.assertIn("plain: Ir 0.182 %", text)
        # the idle rate over the window: 30,000 Ir/s x 25 s / 5000 requests
        self.assertIn("| 150 (150-150) |", text)
        self.assertIn("| `f` | 110,000.0 | 113,300.0 | +3,300.0 |", text)
        self.assertIn("est. cycles", text)
        self.assertNotIn("PROBLEMS", text)
        # the reps' spread is all in the allocator here: the rest is 98,000 in every plain rep
        self.assertIn("| plain | 12,000 (11,900-12,100) | 1.67 % | 98,000 (98,000-98,000) | "
                      "0.000 % |", text)
        self.assertIn("| cached − plain (medians) | +300.0 | | +3,000.0 | |", text)

    def test_problems_are_listed(self):
        results = {"plain": [fake_run(110000.0)],
                   "cached": [fake_run(113300.0, problems=["responses other than 200: {401: 1}"])]}
        text = ipr.report(META, ["plain", "cached"], results)
        self.assertIn("## PROBLEMS", text)
        self.assertIn("cached rep 1: responses other than 200", text)

    def test_a_failed_rep_leaves_the_others_reported(self):
        results = {"plain": [fake_run(110000.0), {"problems": ["RuntimeError: not ready"],
                                                  "requests": 5000}],
                   "cached": [fake_run(113300.0)]}
        text = ipr.report(META, ["plain", "cached"], results)
        self.assertIn("| plain | 110,000 |", text)
        self.assertIn("plain rep 2: RuntimeError: not ready", text)


class Arguments(unittest.TestCase):
    def parse(self, *argv):
        with contextlib.redirect_stderr(io.StringIO()):
            return ipr.parse_args(list(argv))

    def test_defaults(self):
        a = self.parse("--binary", "b")
        self.assertEqual((a.names, a.alg, a.tokens, a.requests, a.connections, a.reps),
                         (["plain", "cached"], "RS256", 2000, 5000, 8, 3))

    def test_refusals(self):
        for argv in ([], ["--binary", "b", "--configs", "plain,nope"],
                     ["--binary", "b", "--configs", "plain,cached,verify-every", "--top", "5"],
                     ["--binary", "b", "--requests", "0"]):
            with self.assertRaises(SystemExit, msg=argv):
                self.parse(*argv)


if __name__ == "__main__":
    unittest.main()
