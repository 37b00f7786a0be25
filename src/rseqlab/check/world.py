"""One execution's world: a scenario set up on a fresh controlled machine.

:class:`World` offers the alternatives at a decision point, carries one out and measures
its :class:`~rseqlab.check.reduction.Footprint`, hashes the state (``statehash.py``), and
gives the verdict of a finished execution.
"""

from __future__ import annotations

from typing import Any

from ..abi import StructRseq
from ..kernel import Tif
from ..kernel._task import SIGNAL_NAMES, SIGUSR1
from ..machine.machine import State
from ..usermem import PAGE_SHIFT, PAGE_SIZE
from ..userprog.libc import Glibc
from ..userprog.primitives import RseqBug
from .controlled import _GO, ControlledMachine
from .interrupts import doomed_stack
from .model import Final, Memory, Scenario
from .reduction import Footprint
from .statehash import _word, state_key, state_keys

_MM_CID = StructRseq.MM_CID.offset
_MM_CID_END = _MM_CID + StructRseq.MM_CID.size


class World:
    """A scenario set up on a fresh controlled machine."""

    def __init__(self, scenario: Scenario, kernel: str, *, debug: bool) -> None:
        self.scenario = scenario
        self.m = m = ControlledMachine(kernel, scenario.cpus, debug=debug)
        self.mem = Memory()
        self.index: dict[int, int] = {}  # tid -> thread index in the scenario
        self.threads: list[Any] = [None] * len(scenario.threads)
        self.oracle: list[str] = []  # compare-twice oracle failures
        handler = scenario.handler

        def on_signal(th, sig: int) -> None:
            if handler is not None:
                handler(th, self.mem)

        def wrap(i: int):
            spec = scenario.threads[i]

            def run(th) -> None:
                self.index[th.tid] = i
                self.threads[i] = th
                m.active.add(th.tid)
                try:
                    spec.program(th, self.mem)
                except RseqBug as exc:
                    self.oracle.append(f"T{i}: {exc}")
                finally:
                    m.active.discard(th.tid)

            return run

        def main(th) -> None:
            from ..userprog.api import MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ

            th.sigaction(SIGUSR1, on_signal)
            if scenario.membarrier:
                th.membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ)
            for i in range(1, len(scenario.threads)):
                child = th.spawn_thread(wrap(i), affinity={scenario.threads[i].cpu})
                self.index[child.tid] = i
            wrap(0)(th)

        self.main = m.spawn(main, cpu=scenario.threads[0].cpu, runtime=Glibc(scenario.glibc))
        self.index[self.main.tid] = 0
        self.image = self.main.proc.image
        self.mem.layout(self.image, scenario.memory)
        #: Hash a stale ``rseq_cs`` as 0 (``statehash.stale_rseq_cs``); the explorer decides.
        self.canonical_cs = False
        #: User code read an ``rseq_cs`` word: the canonical hash's premise is broken.
        self.user_read_cs = False
        #: Watch user reads of ``mm_cid`` (:meth:`pointless_preempt`'s premise); the explorer decides.
        self.watch_mm_cid = False
        #: User code read an ``mm_cid`` field.
        self.user_read_mm_cid = False
        #: A step touched another thread's TLS page (``eager_resume``'s premise is broken).
        self.cross_tls = False
        self._tls_page_set: frozenset[int] | None = None
        #: Away threads that were switched out from user mode (``eager_resume``).
        self.left_user: set[int] = set()
        #: Watches interrupts at doomed boundaries (``interrupts.Tripwire``); the explorer sets it.
        self.tripwire = None
        # Footprint of a step: did it touch writable memory outside the thread's TLS, and
        # which words of user memory did it read and write (for the sleep sets)?
        self._tls: tuple[int, int] | None = None
        self.foreign = False
        self._reads: set[int] | None = None
        self._writes: set[int] | None = None
        mm = self.main.proc.mm
        read, write, peek, poke = mm.read, mm.write, mm.peek, mm.poke

        def note(addr: int, size: int, words: set[int] | None) -> None:
            lo_hi = self._tls
            if lo_hi is not None and not lo_hi[0] <= addr < lo_hi[1]:
                # NOTE: page writability tells shared data from text and descriptors.
                if not mm.is_mapped(addr) or mm.is_writable(addr):
                    self.foreign = True
                    if self.watch_mm_cid and addr >> PAGE_SHIFT in self._tls_pages():
                        self._touch_of_tls(addr)
            if words is not None:
                lo, hi = addr >> 3, (addr + size - 1) >> 3
                if lo >= hi:
                    words.add(lo)
                else:
                    words.update(range(lo, hi + 1))

        def note_read(addr: int, size: int) -> None:
            note(addr, size, self._reads)
            if self.canonical_cs:
                for th in self.threads:
                    if th is not None and th.area and addr < th.area + 16 and th.area + 8 < addr + size:
                        self._read_of_rseq_cs()
                        break
            if self.watch_mm_cid and not self.user_read_mm_cid:
                for th in self.threads:
                    if th is not None and th.area and addr < th.area + _MM_CID_END and th.area + _MM_CID < addr + size:
                        self._read_of_mm_cid()
                        break

        def tracked_read(addr: int, size: int, *, faults_allowed: bool = True):
            note_read(addr, size)
            return read(addr, size, faults_allowed=faults_allowed)

        def tracked_write(addr: int, size: int, value: int, *, faults_allowed: bool = True) -> bool:
            note(addr, size, self._writes)
            return write(addr, size, value, faults_allowed=faults_allowed)

        # Scenario code also reads and writes its "C local variables" directly.
        def tracked_peek(addr: int, size: int) -> int:
            note_read(addr, size)
            return peek(addr, size)

        def tracked_poke(addr: int, size: int, value: int) -> None:
            note(addr, size, self._writes)
            poke(addr, size, value)

        mm.read, mm.write, mm.peek, mm.poke = tracked_read, tracked_write, tracked_peek, tracked_poke
        fault_in = mm.fault_in

        def tracked_fault_in(*args, **kwargs):
            self.faulted = True  # the page tables are shared: a fault is never a thread-local step
            return fault_in(*args, **kwargs)

        mm.fault_in = tracked_fault_in
        self.faulted = False

    # ------------------------------------------------------------------
    def alternatives(self, budget: list[int]) -> list[tuple[str, int, int]]:
        """Every choice at this decision point, in a fixed order: plain runs first."""
        m = self.m
        parked = sorted(m.parked)
        alts = [("run", tid, 0) for tid in parked]
        alts += [("resume", tid, 0) for tid in sorted(m.away)]
        for tid in parked:
            cpu = m.tasks[tid].kt.cpu
            if budget[0]:
                alts.append(("preempt", tid, cpu))
            if budget[1]:
                alts += [("migrate", tid, c) for c in range(self.scenario.cpus) if c != cpu]
            if budget[2]:
                alts.append(("signal", tid, 0))
            # A granted time-slice extension: its timer may expire here (not budgeted: time passes).
            if m.cpus[cpu].hrtimer is not None and m.parked[tid] == "user":
                alts.append(("expire", tid, cpu))
        return alts

    def apply(self, alt: tuple[str, int, int], budget: list[int]) -> bool:
        """Carry out one alternative; True if it was a thread-local step (see :meth:`Explorer.run`)."""
        if self.tripwire is not None:
            self.tripwire.before(self, alt)
            local = self._apply(alt, budget)
            self.tripwire.after(self)
            return local
        return self._apply(alt, budget)

    def _apply(self, alt: tuple[str, int, int], budget: list[int]) -> bool:
        kind, tid, arg = alt
        m = self.m
        if kind == "resume":
            self._reads, self._writes = set(), set()
            if self.watch_mm_cid:  # for the cross-TLS watch only: a resume is never a local step
                self._tls = (m.tasks[tid].tls, m.tasks[tid].tls + PAGE_SIZE)
            m.kicked.clear()
            m.resume(tid)
            m.sim.run()
            self._tls = None
            self.left_user &= m.away.keys()
            self.footprint = Footprint(tid, frozenset(self._reads), frozenset(self._writes), kernel=True,
                                       total=bool(m.kicked))
            self._reads = self._writes = None
            return False
        st = m.tasks[tid]
        kt = st.kt
        user = m.parked[tid] == "user"
        msg = _GO
        if kind in ("preempt", "migrate"):
            budget[0 if kind == "preempt" else 1] -= 1
            kt.tif |= Tif.NEED_RESCHED
            m.placement[tid] = arg
            msg = ("irq", kind) if user else _GO
        elif kind == "signal":
            budget[2] -= 1
            m.kernel.send_signal(kt, SIGUSR1)
            msg = ("irq", "signal") if user else _GO
        elif kind == "expire":
            msg = ("irq", "hrtimer")
        switches = m.switches
        if self.watch_mm_cid:  # ``left_user`` is only read by ``eager_resume``, which needs the watch
            parked_before, away_before = dict(m.parked), set(m.away)
        user = kind == "run" and m.parked[tid] == "user"
        self._tls, self.foreign = (st.tls, st.tls + PAGE_SIZE), False
        self._reads, self._writes, self.faulted = set(), set(), False
        m.kicked.clear()
        st.glet.switch(msg)
        m.sim.run()
        self._tls = None
        quiet = m.switches == switches and not m.kicked
        self.footprint = Footprint(tid, frozenset(self._reads), frozenset(self._writes),
                                   kernel=not (user and quiet and not self.faulted and m.parked.get(tid) == "user"),
                                   total=bool(m.kicked) or kind == "expire")
        self._reads = self._writes = None
        if self.watch_mm_cid:
            self.left_user = {t for t in self.left_user if t in m.away} | {
                t for t in m.away.keys() - away_before if parked_before.get(t) == "user"}
        return kind == "run" and not self.foreign and m.switches == switches and tid in m.parked

    def _touch_of_tls(self, addr: int) -> None:
        """An access to some thread's TLS page: the kernel's for that thread, or that thread's
        own, are expected; user code touching another thread's breaks ``eager_resume``."""
        st = self._current_task()
        if st is not None and st.kt.in_user and st.tls >> PAGE_SHIFT != addr >> PAGE_SHIFT:
            self.cross_tls = True

    def _tls_pages(self) -> frozenset[int]:
        if self._tls_page_set is None:
            self._tls_page_set = frozenset(st.tls >> PAGE_SHIFT for st in self.m.tasks.values() if st.tls)
        return self._tls_page_set

    def eager_resume(self, alts) -> int | None:
        """The index of a resume that commutes with every other alternative here and after, if
        there is one: the thread was switched out from user mode outside every section (so its
        resume runs no user code, ``_clean``), its CPU is idle with no other thread of ours away
        on it, and no migration is left that could bring one there. Then the resume alone is a
        persistent set (docs/scale.md), on the premises of ``pointless_preempt`` (no user read of
        mm_cid: switch-ins elsewhere may only change cids) and no step touching another thread's
        TLS page (``cross_tls``)."""
        m = self.m
        for i, (kind, tid, _) in enumerate(alts):
            if kind != "resume" or tid not in self.left_user or not self._clean(tid):
                continue
            cpu = m.away[tid]
            if m.cpus[cpu].curr is not None or m.cpus[cpu].rq or m.cpus[cpu].hrtimer is not None:
                continue
            if any(c == cpu for t, c in m.away.items() if t != tid):
                continue
            return i
        return None

    def _read_of_rseq_cs(self) -> None:
        """A read of some thread's ``rseq_cs``: by the kernel (expected), or by user code."""
        if self._by_user():
            self.user_read_cs = True

    def _read_of_mm_cid(self) -> None:
        """A read of some thread's ``mm_cid``: by the kernel (expected), or by user code."""
        if self._by_user():
            self.user_read_mm_cid = True

    def _by_user(self) -> bool:
        """Is the read being made by user code (not by the kernel on a thread's behalf)?"""
        st = self._current_task()
        return st is not None and bool(st.kt.in_user)

    def _current_task(self):
        """The task whose greenlet is running (None: the explorer's own code, hashing say)."""
        from greenlet import getcurrent

        cur = getcurrent()
        return next((st for st in self.m.tasks.values() if st.glet is cur), None)

    def in_a_section(self, tid: int) -> bool:
        """Is the thread's IP, or the one the kernel returns it to, inside one of the image's sections?"""
        st = self.m.tasks[tid]
        ips = (st.thread.ip, st.kt.regs.ip)
        return any(site.start_ip <= ip < site.post_commit_ip for site in self.image.sites.values() for ip in ips)

    def pointless_preempt(self, tid: int) -> bool:
        """Would preempting ``tid`` here only send it away and bring it back unchanged?

        It would if the thread is stopped in user mode with nothing pending (no TIF work, no
        signal pending or being handled), outside every section (its IPs, and ``rseq_cs`` 0 or
        one of the image's descriptors: no abort), with no thread of ours queued on its CPU and
        no slice timer. Away, it does nothing; back on the same CPU it finds the same IDs, except
        perhaps ``mm_cid``, which another thread's switch-in may have taken meanwhile. So
        everything the preemption leads to is also reached by preempting the thread later, at
        the first step that looks at its CPU (a thread placed on it), or not at all; only the
        mm_cid values differ, and the explorer skips these preemptions only while no user code
        reads an ``mm_cid`` field (``watch_mm_cid``). docs/scale.md has the argument."""
        m = self.m
        cpu = m.cpus[m.tasks[tid].kt.cpu]
        if m.parked.get(tid) != "user" or cpu.rq or cpu.hrtimer is not None:
            return False
        return self._clean(tid)

    def _clean(self, tid: int) -> bool:
        """Nothing pending (no TIF work, no signal pending or being handled) and outside every
        section (neither IP inside one, ``rseq_cs`` 0 or one of the image's descriptors)."""
        st = self.m.tasks[tid]
        kt, th = st.kt, st.thread
        if th is None or int(kt.tif) or kt.pending or kt.sigframes or self.in_a_section(tid):
            return False
        if th.area:
            cs = _word(self.main.proc.mm, th.area + StructRseq.RSEQ_CS.offset)
            if cs and cs not in {site.descriptor for site in self.image.sites.values()}:
                return False
        return True

    def finished(self) -> bool:
        return all(st.state is State.DEAD for st in self.m.tasks.values())

    def verdict(self) -> str | None:
        """None if the execution is correct, else what went wrong."""
        problems = list(self.oracle)
        killed = {}
        for tid, st in sorted(self.m.tasks.items()):
            name = f"T{self.index.get(tid, '?')}"
            if st.state is not State.DEAD:
                problems.append(f"{name} never finished (deadlock)")
            elif st.kt.killed_by:
                killed[tid] = st.kt.killed_by
                problems.append(f"{name} killed by {SIGNAL_NAMES.get(st.kt.killed_by, st.kt.killed_by)}")
        if not problems:
            final = Final(self.mem, killed, [th.local if th is not None else {} for th in self.threads])
            broken = self.scenario.check(final)
            if broken:
                problems.append(broken)
        return "; ".join(problems) or None

    def teardown(self) -> None:
        """Unwind the greenlets still parked (a cut execution) so nothing lingers."""
        for st in self.m.tasks.values():
            if st.glet is not None and st.glet and not st.glet.dead:
                st.glet.throw()  # GreenletExit: finally blocks run, the greenlet dies

    # ------------------------------------------------------------------
    def state_key(self) -> bytes:
        """A digest of everything that decides the future of this execution (``statehash.py``)."""
        return state_key(self)

    def state_keys(self, doomed: dict) -> tuple[bytes, dict[int, bytes]]:
        """The digest, and one without the position of each doomed thread (tid -> its section;
        ``statehash.state_keys``)."""
        tasks = self.m.tasks
        return state_keys(self, {tid: (site.name, doomed_stack(tasks[tid].glet, tasks[tid].thread.irqs))
                                 for tid, site in doomed.items()})
