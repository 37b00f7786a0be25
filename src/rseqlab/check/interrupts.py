"""Interrupts that land inside an armed critical section: which ones the explorer can skip.

A thread stopped at an instruction inside an armed rseq critical section is *doomed* for an
interrupt (a preemption, a migration, a delivered signal) if that interrupt must abort the
section before the thread runs another instruction of it: the kernel then moves the IP to
the abort handler and the thread's section frames unwind to the code that catches the
abort. Everything the thread had done inside the section since the last store (loads into
registers, the IP itself) is dead: the interrupt at the k-th instruction boundary and the
one at the (k+1)-th reach states with the same future whenever memory and the rest of the
machine are the same. ``statehash.state_keys`` hashes such a thread with its position in the
section left out; the explorer (``search.py``) keeps, under that digest and the interrupt,
the budget and sleep set it explored the interrupt with, and skips the same interrupt at
another boundary of the section that reaches the same digest: no execution is spent on it.

The argument, and what each condition below is for, is in docs/scale.md ("Interrupts inside
a section"). In short, the skip needs (a) a kernel whose code was read for it: every
function of the personality comes from a module listed in :data:`AUDITED_MODULES` (no
what-if variant, no slice extension, which may grant the thread more time instead of
switching it out), where the only reads of the user IP are the critical-section checks,
which compare it with the section's bounds; (b) a section the kernel must abort: ``rseq_cs``
of the registered area points to an intact descriptor (version and flags 0) of one of the
image's sections in read-only memory, with the registered signature before its abort
handler; (c) a thread in user mode, in no signal handler, whose Python frames inside the
code that catches the abort (:data:`LANDINGS`) have no exception handlers of their own;
(d) for a signal, a handler installed and the signal neither blocked nor pending. A
tripwire (:class:`Tripwire`) watches every such interrupt the explorer does run: if the
thread ever comes back to user mode without the kernel's fixup, the premise is wrong and
the search starts again without the skip.
"""

from __future__ import annotations

import inspect

from ..abi import StructRseq, StructRseqCs
from ..kernel._task import SIG_DFL, SIG_IGN, SIGUSR1
from ..kernel.slice_ext import SliceExtension
from ..machine.machine import State
from ..userprog import primitives, primitives_arm64, tcmalloc
from .controlled import ControlledMachine
from .model import Cs
from .statehash import _frames, _freeze, _word

#: Alternatives that interrupt a thread and abort a section it is in.
KINDS = ("preempt", "migrate", "signal")

#: Kernel modules whose every path from an interrupt in user mode back to user mode was read
#: for this: an interrupted section with a valid descriptor is aborted, and the IP is read
#: only to compare it with the section's bounds (v6_18 ``rseq_ip_fixup``; v6_19
#: ``rseq_update_user_cs``, ``rseq_debug_update_user_cs``; v7_0 and v7_1 inherit them; the
#: signal frame saves the IP after the fixup).
AUDITED_MODULES = frozenset({"rseqlab.kernel._base", "rseqlab.kernel.v6_18", "rseqlab.kernel.v6_19",
                             "rseqlab.kernel.v7_0", "rseqlab.kernel.v7_1", "rseqlab.kernel.slice_ext",
                             "rseqlab.kernel.arm64"})

#: The functions that catch ``RseqAbort`` for a section, each of them the same way wherever in
#: the section the abort surfaced (count it, return -1 or restart; every exit sets the IP).
LANDINGS = frozenset({primitives._run.__code__, primitives_arm64._run.__code__, Cs.run.__code__,
                      tcmalloc.SlabCache.pop.__code__, tcmalloc.SlabCache.push.__code__})

_RSEQ_CS = StructRseq.RSEQ_CS.offset
_SKIP_CODE = ControlledMachine.wait.__code__


def audited(cls: type) -> bool:
    """True if every function of kernel class ``cls`` is one read for the skip (see above)."""
    if issubclass(cls, SliceExtension):
        return False
    for name in dir(cls):
        fn = getattr(cls, name, None)
        if inspect.isfunction(fn) and fn.__module__ not in AUDITED_MODULES:
            return False
    return True


def _intact(mm, site, sig) -> bool:
    """The image's descriptor of ``site``, unchanged, in read-only memory, with its signature."""
    d = site.descriptor
    if mm.is_writable(d) or mm.is_writable(site.abort_ip - 4):
        return False
    return (_word(mm, d) == 0 and _word(mm, d + StructRseqCs.START_IP.offset) == site.start_ip
            and _word(mm, d + StructRseqCs.POST_COMMIT_OFFSET.offset) == site.post_commit_ip - site.start_ip
            and _word(mm, d + StructRseqCs.ABORT_IP.offset) == site.abort_ip
            and not site.start_ip <= site.abort_ip < site.post_commit_ip
            and _word(mm, site.abort_ip - 4, 4) == sig)


def _landing(glet):
    """The innermost frame that catches the abort, if every frame inside it has no exception
    handler (so nothing runs on the way out but the landing's own handler); else None."""
    f = glet.gr_frame if glet is not None and not glet.dead else None
    while f is not None:
        code = f.f_code
        if code in LANDINGS:
            return f
        if code is not _SKIP_CODE and code.co_exceptiontable:
            return None
        f = f.f_back
    return None


def doomed(world, tid: int) -> tuple[object, tuple[str, ...]] | None:
    """(section, interrupt kinds that abort it) if thread ``tid`` is doomed, else None."""
    m = world.m
    if m.parked.get(tid) != "user":
        return None
    st = m.tasks[tid]
    th, kt = st.thread, st.kt
    if kt.sigframes or not th.area or kt.rseq.usrptr != th.area or kt.regs.ip != th.ip:
        return None
    ip = th.ip
    for site in world.image.sites.values():
        if site.start_ip <= ip < site.post_commit_ip:
            break
    else:
        return None
    mm = th.mm
    if _word(mm, th.area + _RSEQ_CS) != site.descriptor or not _intact(mm, site, kt.rseq.sig):
        return None
    if _landing(st.glet) is None:
        return None
    kinds = ("preempt", "migrate")
    if (kt.handlers.get(SIGUSR1, SIG_DFL) not in (SIG_DFL, SIG_IGN) and SIGUSR1 not in kt.blocked
            and SIGUSR1 not in kt.pending):
        kinds += ("signal",)
    return site, kinds


def doomed_stack(glet, irqs: int):
    """The frames of a doomed thread as ``statehash._stack`` pictures them, with everything
    inside the landing frame left out and the landing frame's position replaced by 'abort'."""
    land = _landing(glet)
    return (("abort", land.f_code.co_name, _freeze(land.f_locals)),) + _frames(land.f_back, irqs)


class PremiseBroken(Exception):
    """A doomed thread came back to user mode without an abort (``Tripwire``)."""


class Tripwire:
    """Every interrupt run at a doomed boundary must reach the kernel's fixup (or end the task)
    before the thread is back in user mode; one that does not breaks the skip's premise."""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}  # tid -> its fixup count when the interrupt landed

    def before(self, world, alt) -> None:
        kind, tid, _ = alt
        if kind in KINDS:
            found = doomed(world, tid)
            if found is not None and kind in found[1]:
                self.pending[tid] = world.m.tasks[tid].kt.stats.fixup

    def after(self, world) -> None:
        if not self.pending:
            return
        m = world.m
        for tid, fixups in list(self.pending.items()):
            st = m.tasks[tid]
            if st.state is State.DEAD or st.kt.killed_by or st.kt.exiting:
                del self.pending[tid]
            elif tid in m.parked:
                if st.kt.stats.fixup == fixups:
                    raise PremiseBroken(tid)
                del self.pending[tid]
