"""Per-trace exit windows (``meta["replay"]``), for recordings whose kernel timing is not native
(a guest under QEMU's TCG); both replay paths honour them."""

from __future__ import annotations

from rseqlab.trace.format import Kind
from rseqlab.trace.replay import replay
from rseqlab.vm.ingest import UNTIMED_EXIT_WINDOWS
from tests.trace.test_replay import ROOT, started


def _late_switches(delay_ns: int):
    """20 writes, each preempted ``delay_ns`` after its sys_exit, nothing recorded in between."""
    b = started()
    for _ in range(20):
        b.syscall(1)
        b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=delay_ns).ev(Kind.SWITCH_IN, ROOT)
    b.syscall(39)
    return b.trace()


def _both(trace):
    fast = replay(trace, ["6.19"])["6.19"].counters
    ref = replay(trace, ["6.19"], reference=True)["6.19"].counters
    assert fast == ref
    return fast


def test_native_windows_by_default():
    quick, slow = _both(_late_switches(2_000)), _both(_late_switches(20_000))
    # 20 us after the exit is a new user-mode entry natively: one more return and a fast path each.
    assert slow["exit"] == quick["exit"] + 20
    assert slow["fastpath"] == quick["fastpath"] + 20


def test_untimed_windows_fold_the_late_switch_into_the_exit_loop():
    quick = _both(_late_switches(2_000))
    trace = _late_switches(20_000)
    trace.meta["replay"] = {"syscall_exit_window_ns": UNTIMED_EXIT_WINDOWS[0],
                            "irq_exit_window_ns": UNTIMED_EXIT_WINDOWS[1]}
    assert _both(trace) == quick
    trace.meta["replay"] = {"syscall_exit_window_ns": 25_000}  # just wide enough, irq window native
    assert _both(trace) == quick


def test_the_recorders_window_uses_the_traces_windows():
    from tests.vm.test_validate_file import _guest_trace

    from rseqlab.vm.ingest import recorder_trace

    trace = _guest_trace()
    assert "replay" not in recorder_trace(trace).meta
    trace.meta["replay"] = {"syscall_exit_window_ns": 123}
    assert recorder_trace(trace).meta["replay"] == {"syscall_exit_window_ns": 123}
    assert recorder_trace(trace, upto_ns=3_500_000).meta["replay"] == {"syscall_exit_window_ns": 123}
