"""The fast replay: the same inference as :class:`~rseqlab.trace.replay.Replay`, on arrays.

The reference replay walks every event in Python and calls the personality for
each. This package splits that work in three, each exact:

1. **Driver** (:func:`drive`, compiled with numba): one pass over the event
   columns with the replay's own bookkeeping in per-task arrays (in a syscall
   or not, the pending return and its windows, ticks and the mm_cid task_work,
   mm_cid ownership, forks, execs, exits). It does not depend on the kernel,
   so it runs once for every personality, and it emits an *op stream*: the
   generic kernel calls the reference replay would make (enter, exit,
   switch-out, set_task_cpu, switch-in with its mm_cid, signal, task_work,
   rseq(), fork, exec, exit), one row each, in trace order.
2. **File table** (:func:`resolve_files`, Python over the few file
   syscalls): whether a ``munmap`` dropped the last reference of a file
   (deferred ``fput``: a ``task_work``), exactly as the reference tracks
   ``open``/``mmap``/``close``/``munmap``.
3. **Executor** (:class:`Executor`): per task, the op stream is cut into
   segments (up to each return to user mode); identical segments are found
   with numpy (hash, then an exact element-wise check) and run-length
   encoded. A segment is executed through the real personality; if the task's
   complete kernel-visible state (TIF bits, rseq state, CPU, mm_cid, IP,
   signals, the bytes and page state of its rseq area) is the same after it
   as before, the segment is a fixed point: its counter, tracepoint and
   user-access deltas are memoized under (segment, state), and every further
   repetition from that state is added in bulk, without Python work per exit.
   Forks and the root's start are barriers (they copy or reset shared state),
   so no bulk application crosses them; everything else a task does touches
   only its own state, its own rseq area and additive counters.

Anything the driver cannot model ahead of the kernel (a task killed by the
kernel, an assumption check failing, a hash collision) raises
:class:`Fallback` and the caller runs the reference path. ``tests/trace/
test_fastreplay.py`` checks per-kernel counters, tracepoints, user accesses
and per-task results against the reference on synthetic and recorded traces.

The package, by concern: :mod:`.compiled` (every numba-compiled function and the op codes they
freeze: the driver and the segment kernels; numba's cache tracks one source file per function,
so what a compiled function reads lives beside it), :mod:`.files` (the file table), :mod:`.plan`
(trace -> op stream -> typed segments, once per trace), :mod:`.executor` (one personality).
Shared with the reference loop: :mod:`rseqlab.trace.replaybase`.
"""

from ..replaybase import Fallback
from .compiled import mark_compiled
from .executor import Executor, fast_replay
from .plan import Plan

__all__ = ["Executor", "Fallback", "Plan", "fast_replay", "mark_compiled"]
