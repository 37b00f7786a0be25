"""Linux 7.0 as released (and 7.0.y before the stable backport of the TCMalloc fix).

7.0 is 6.19's optimized RSEQ code for every registration size (no legacy/v2
split yet, so a 32-byte registration gets no ID rewrite after a plain switch:
TCMalloc's cached slab word survives preemptions and membarrier fences, as on
6.19), plus what the time-slice extension series added to the generic code:

* the ABI is already feature size 33 / ``AT_RSEQ_ALIGN`` 64 (3b68df978133,
  ``abi.ABI_BY_RELEASE["7.0"]``), and ``sys_rseq`` accepts
  ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON``;
* registration writes ``flags`` (the slice status bits; 0 without
  ``CONFIG_RSEQ_SLICE_EXTENSION``) and **always** stores ``slice_ctrl = 0`` at
  offset 28, for a 32-byte registration too (those bytes were the original
  struct's padding);
* the ``PR_RSEQ_SLICE_EXTENSION`` prctl case and syscall 471 exist (the
  ``SliceCalls`` part of ``slice_ext.py``).

Built with ``CONFIG_RSEQ_SLICE_EXTENSION=y`` (``7.0+slice``, ``slice_ext.py``)
the fast path and every ID write also store ``slice_ctrl = 0``, for every
registration size, whenever the static key is on: the second way 7.0 breaks
TCMalloc-style users of bytes 28-31. Plain ``7.0`` is the configuration
Debian ships (the option is off: see ``docs/kernel-7x.md``).

Sources (paraphrased, no code copied): torvalds/linux
``include/linux/rseq_entry.h`` at c17ee635fd3a482b2ad2bf5e269755c2eae5f25e
(7.0: ``rseq_set_ids_get_csaddr``, ``rseq_exit_user_update``, the grant and
the arming); ``kernel/rseq.c`` of 7.0 (``sys_rseq`` with the registration
inline, ``rseq_reset_ids`` through ``rseq_set_ids``, the slice-extension
functions) as quoted in the fix series' diffs ("rseq: Don't advertise time
slice extensions if disabled", upstream 010b7723c0a3, and "rseq: Reenable
performance optimizations conditionally", upstream 99428157dcf3, both against
7.0); commits d6200245c75e (registration), dd0a04606937 (syscall entry work),
b5b8282441bc (statistics), 21c0e92d0681 (5 µs default).

``Linux707`` is 7.0.7 .. 7.0.9: the stable review series 7.0.7-rc2
(<20260513153754.934923793@linuxfoundation.org>, 2026-05-13) carries the
series' "rseq: Set rseq::cpu_id_start to 0 on unregistration", "rseq: Protect
rseq_reset() against interrupts" (no effect the model can show), "rseq: Don't
advertise time slice extensions if disabled" (010b7723c0a3; only visible with
the extension configured) and two selftest patches; the split itself came in
7.0.10 (see ``kernel/__init__.py``'s aliases).
"""

from __future__ import annotations

import errno

from ..abi import ABI_BY_RELEASE, CpuIdSentinel, StructRseq, to_u32
from ._ftrace import models
from ._task import Task
from .slice_ext import SliceCalls
from .v6_19 import Linux619
from .v7_1 import Linux71

_UNINITIALIZED = to_u32(CpuIdSentinel.UNINITIALIZED)


class Linux70(SliceCalls, Linux619):
    release = "7.0"
    summary = ("6.19's handling for every size (TCMalloc still broken), ABI 33/64; registration "
               "writes flags and slice_ctrl = 0 at offset 28 for every size")
    abi = ABI_BY_RELEASE["7.0"]

    def rseq_register(self, t: Task, rseq: int, rseq_len: int, sig: int, flags: int = 0) -> int:
        """The registration part of ``sys_rseq`` (inline in 7.0): W rseq_cs=0, flags,
        cpu_id_start=cpu_id=-1, node_id=mm_cid=0, and slice_ctrl=0 for any size."""
        rseqfl = self.rseq_slice_register_flags(flags, rseq_len)
        for f, value in ((StructRseq.RSEQ_CS, 0), (StructRseq.FLAGS, rseqfl),
                         (StructRseq.CPU_ID_START, _UNINITIALIZED), (StructRseq.CPU_ID, _UNINITIALIZED),
                         (StructRseq.NODE_ID, 0), (StructRseq.MM_CID, 0), (StructRseq.SLICE_CTRL, 0)):
            if not self.put_user(t, rseq + f.offset, f.size, value, f.name):
                return -errno.EFAULT
        ev = t.rseq
        ev.usrptr, ev.len, ev.sig = rseq, rseq_len, sig
        self.rseq_slice_registered(t, rseqfl)
        ev.has_rseq = True
        self.rseq_force_update(t)
        return 0


class Linux707(Linux70):
    """7.0.7 .. 7.0.9: 7.0 plus the unregistration fix (and two more the model cannot tell)."""

    release = "7.0.7"
    summary = "7.0 plus the first fixes (7.0.7): unregistration writes cpu_id_start = 0 directly"

    @models("rseq_reset_ids", "kernel/rseq.c")
    def rseq_reset_ids(self, t: Task) -> bool:
        # "Set rseq::cpu_id_start to 0 on unregistration": four plain stores, no ids, no event.
        return Linux71.rseq_reset_ids(self, t)
