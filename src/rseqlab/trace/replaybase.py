"""What both replays share: the reference loop (:mod:`.replay`) and the array path
(:mod:`.fastreplay`) import this module, never each other's internals.

It holds the inference's constants and the helpers whose answers the two paths must agree on
(the root's start CPU, the exit windows, the file table's ``munmap``), the scheduler both hand to
the kernel, the result type, what the inference leaves out and what the trace observed, and
:class:`Fallback`, the array path's way of saying "run the reference instead".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernel import Task, Tif
from .format import Kind, Trace

MAP_ANONYMOUS = 0x20
#: execve errors returned before ``bprm_execve`` (file lookup), which do not raise rseq work.
EXEC_LOOKUP_ERRORS = frozenset({-2, -13, -20, -36, -40, -14, -7})

#: ``MM_CID_SCAN_DELAY`` (kernel/sched/sched.h, 6.18): 100 ms between compaction scans.
MM_CID_SCAN_DELAY_NS = 100_000_000
#: A switch-out this soon after ``sys_exit``, with no interrupt in between, is taken to be
#: in that syscall's exit work loop (measured: median 1 us, p99 1.5 us) ...
SYSCALL_EXIT_WINDOW_NS = 5_000
#: ... and this soon after an interrupt entry, in that interrupt's exit (the handler runs
#: first: the timer tick takes 10-50 us in the recorded VMs, rarely up to ~140 us).
IRQ_EXIT_WINDOW_NS = 150_000


#: What the replay cannot see or infers (the report prints them beside the residuals).
RESIDUAL_SOURCES = (
    "exceptions other than user page faults are not recorded (interrupts and exceptions:page_fault_user "
    "are), and whether an interrupt right after a return hit user mode or that exit path is inferred",
    "TIF_NOTIFY_RESUME raised by sources not in the trace (memcg/blkcg throttling, "
    "task_work of other subsystems, deferred fput of files the trace did not see opened)",
    "the mm_cid compaction task_work is modelled from the tick and a 100 ms per-mm period, "
    "not observed",
    "user-space rseq critical sections are not recorded (rseq_cs is always 0 in the replay): "
    "rseq_ip_fixup is never predicted",
    "membarrier RSEQ IPIs and KVM guest entry are not replayed",
    "events lost by the ring buffer, if any",
)


#: What replaces RESIDUAL_SOURCES[3] when the recording has the user IPs and the sections.
PARTIAL_SECTIONS = ("critical sections are placed from the user IP each interrupt saved and the "
                    "programs' __rseq_cs descriptors; a stale rseq_cs user space left outside a "
                    "section since the last one seen is not recorded (clear may be undercounted)")


def residual_sources(trace: Trace) -> list[str]:
    """What the replay of ``trace`` cannot see: :data:`RESIDUAL_SOURCES`, less the inference of
    returns and entries when the recording has them, and with the critical sections' item
    narrowed when it also has the user IPs and the programs' descriptors."""
    out = list(RESIDUAL_SOURCES)
    if not tracks_user_mode(trace):
        return out
    if trace.meta.get("rseq_cs") and (trace.meta.get("user_ip") or {}).get("with_ip"):
        out[3] = PARTIAL_SECTIONS
    return out[1:]


def observed(trace: Trace) -> dict[str, int]:
    """The recorded rseq tracepoints, to set beside each kernel's prediction."""
    kinds = trace.events["kind"]
    return {"rseq_update": int(np.count_nonzero(kinds == Kind.RSEQ_UPDATE)),
            "rseq_ip_fixup": int(np.count_nonzero(kinds == Kind.RSEQ_IP_FIXUP))}


class Fallback(Exception):
    """The fast path cannot reproduce this trace exactly; use the reference replay."""


def root_start_cpu(trace: Trace, root: int) -> int:
    """The CPU the recorded root waited on when the recording started: that of its first event,
    or the source CPU when that event is a migration. Its history before the recording (the
    registration, the gate's ``read()``) ran there, so its first switch-in is no migration."""
    ev = trace.events
    idx = np.nonzero((ev["pid"] == root) & (ev["kind"] != Kind.LOST))[0]
    if not len(idx):
        return 0
    i = int(idx[0])
    cpu = int(ev["a"][i]) if ev["kind"][i] == Kind.MIGRATE else int(ev["cpu"][i])
    ncpus = len(trace.meta.get("topology", {}).get("node_of_cpu") or [0] * int(trace.meta.get("cpus", 1)))
    return cpu if 0 <= cpu < ncpus else 0


def tracks_user_mode(trace: Trace) -> bool:
    """Whether the recording holds ``context_tracking:user_enter/user_exit`` (every entry from
    and return to user mode recorded): the reference loop then reads them, the array path
    falls back to it."""
    kinds = trace.events["kind"]
    return bool(np.any(kinds == Kind.USER_ENTER) and np.any(kinds == Kind.USER_EXIT))


def exit_windows(meta: dict) -> tuple[int, int]:
    """The two windows for one trace: the constants above, unless the trace says otherwise
    (``meta["replay"]``: a recording made in an emulated guest runs many times slower, see
    ``rseqlab.vm.vmrun.calibrate_windows``)."""
    r = meta.get("replay") or {}
    return (int(r.get("syscall_exit_window_ns", SYSCALL_EXIT_WINDOW_NS)),
            int(r.get("irq_exit_window_ns", IRQ_EXIT_WINDOW_NS)))


def unmap_range(vmas: list, start: int, length: int) -> tuple[list, bool]:
    """munmap() of ``[start, start+length)`` over tracked file mappings ``(lo, hi, file)``:
    the mappings left (split where the range cuts them), and whether a file lost its last
    reference (its release is deferred to task_work)."""
    end = start + length
    last = False
    kept = []
    for lo, hi, f in vmas:
        if hi <= start or lo >= end:
            kept.append((lo, hi, f))
            continue
        pieces = [(lo, start)] if lo < start else []
        pieces += [(end, hi)] if hi > end else []
        f.refs += len(pieces) - 1
        kept.extend((p_lo, p_hi, f) for p_lo, p_hi in pieces)
        if f.refs == 0:
            last = True
    return kept, last


class ReplayScheduler:
    """The exit loop's ``schedule()``: the trace performs every real switch explicitly."""

    def schedule(self, task: Task) -> None:
        task.tif &= ~Tif.NEED_RESCHED


@dataclass
class KernelReplay:
    """What one personality did with the recorded workload."""

    kernel: str
    counters: dict[str, int]
    tracepoints: dict[str, int]
    user_reads: int
    user_writes: int
    per_task: dict[int, dict]

    def as_json(self) -> dict:
        return {**self.counters, **self.tracepoints, "user_reads": self.user_reads,
                "user_writes": self.user_writes}
