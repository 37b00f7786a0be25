"""The replay's exit windows come from the trace when it says so (a guest recording made under
TCG runs several times slower than the native windows assume), identically on both replay paths."""

from __future__ import annotations

import copy

from rseqlab.trace.format import Kind
from rseqlab.trace.replay import IRQ_EXIT_WINDOW_NS, SYSCALL_EXIT_WINDOW_NS, Replay, exit_windows, replay
from rseqlab.vm import vmrun
from tests.trace.test_replay import ROOT, started


def _slow_exit_switches(gap_ns: int, n: int = 30):
    """Syscalls each followed, ``gap_ns`` after sys_exit and with nothing in between, by a switch-out."""
    b = started()
    for _ in range(n):
        b.ev(Kind.SYS_ENTER, ROOT, 39, -1, dt=50_000)
        b.ev(Kind.SYS_EXIT, ROOT, 39, 0, dt=2_000)
        b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=gap_ns)
        b.ev(Kind.SWITCH_IN, ROOT, dt=30_000)
    return b.trace()


def test_windows_default_and_override():
    assert exit_windows({}) == (SYSCALL_EXIT_WINDOW_NS, IRQ_EXIT_WINDOW_NS)
    assert exit_windows({"replay": {"syscall_exit_window_ns": 7, "irq_exit_window_ns": 9}}) == (7, 9)


def test_a_wider_window_keeps_slow_exit_loop_switches_in_one_return():
    native = _slow_exit_switches(20_000)
    wide = copy.deepcopy(native)
    wide.meta["replay"] = {"syscall_exit_window_ns": 100_000, "irq_exit_window_ns": 3_000_000}
    for k in ("6.19", "7.1"):
        n = replay(native, [k])[k].counters["exit"]
        w = replay(wide, [k])[k].counters["exit"]
        assert n - w == 30  # natively each slow switch-out is one more return to user
        # both replay paths agree
        assert Replay(wide, k).run().counters == replay(wide, [k])[k].counters
        assert Replay(native, k).run().counters == replay(native, [k])[k].counters


def test_calibration_from_the_gaps():
    t = _slow_exit_switches(8_000)
    w = vmrun.calibrate_windows([t])
    assert w["samples"] == 30 and w["scale"] == 8.0
    assert w["syscall_exit_window_ns"] == SYSCALL_EXIT_WINDOW_NS * 8
    assert w["irq_exit_window_ns"] == IRQ_EXIT_WINDOW_NS * 8
    assert vmrun.calibrate_windows([_slow_exit_switches(8_000, n=5)]) is None  # too few samples
    assert vmrun.calibrate_windows([_slow_exit_switches(300)])["scale"] == 1.0  # never narrower
