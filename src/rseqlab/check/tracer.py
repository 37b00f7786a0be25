"""The counterexample's account: each step's user accesses, kernel call graph and events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from greenlet import greenlet

from ..abi import StructRseq, in_rseq_cs
from ..kernel._ftrace import Ftrace
from ..kernel._task import SIGNAL_NAMES, SIGUSR1
from ..machine.machine import State
from ..userprog.image import PLAIN_IP, handler_ip
from .results import Step

if TYPE_CHECKING:
    from .world import World

class _ThreadFtrace(Ftrace):
    """The kernel's call-graph log, kept per thread: a step that switches threads
    (a preemption lets the next thread run its exit path) stays readable."""

    def __init__(self, label) -> None:
        self.lines: list[str] = []
        self.by_thread: dict[str, list[str]] = {}
        self._depths: dict[Any, int] = {}
        self._label = label

    @property
    def depth(self) -> int:  # type: ignore[override]
        return self._depths.get(greenlet.getcurrent(), 0)

    @depth.setter
    def depth(self, value: int) -> None:
        self._depths[greenlet.getcurrent()] = value

    def call(self, name: str) -> None:
        self.event(name + "()")

    def event(self, text: str) -> None:
        self.by_thread.setdefault(self._label(), []).append("  " * self.depth + text)


class Tracer:
    """Records a readable account of each step of one execution."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.steps: list[Step] = []
        self._current: Step | None = None
        self._tid = 0
        self._states: dict[int, tuple[Any, ...]] = {}
        mm = world.main.proc.mm
        read, write = mm.read, mm.write

        def traced_read(addr: int, size: int, *, faults_allowed: bool = True):
            value = read(addr, size, faults_allowed=faults_allowed)
            self._user("R", addr, size, value)
            return value

        def traced_write(addr: int, size: int, value: int, *, faults_allowed: bool = True) -> bool:
            ok = write(addr, size, value, faults_allowed=faults_allowed)
            self._user("W", addr, size, value if ok else None)
            return ok

        mm.read, mm.write = traced_read, traced_write

    def _thread_of_current(self):
        cur = greenlet.getcurrent()
        for st in self.w.m.tasks.values():
            if st.glet is cur:
                return st
        return None

    def _user(self, kind: str, addr: int, size: int, value: int | None) -> None:
        if self._current is None:
            return
        st = self._thread_of_current()
        if st is None or not st.kt.in_user:
            return  # kernel accesses are in the ftrace lines
        shown = "FAULT" if value is None else str(value) if value < 1 << 16 else f"{value:#x}"
        who = f"T{self.w.index.get(st.tid, '?')}"
        arrow = "->" if kind == "R" else "<-"
        self._current.user.append(f"{who} {'load ' if kind == 'R' else 'store'} {self.symbol(addr)} {arrow} {shown}")

    def symbol(self, addr: int) -> str:
        name = self.w.mem.name_of(addr)
        if name is not None:
            return name
        for tid, i in sorted(self.w.index.items()):
            th = self.w.threads[i]
            if th is not None and th.area and th.area - 8 <= addr < th.area + StructRseq.SIZE:
                off = addr - th.area
                for f in StructRseq.FIELDS:
                    if f.offset == off:
                        return f"T{i}.rseq.{f.name}"
                return f"T{i}.rseq{off:+d}"
        for site in self.w.image.sites.values():
            if site.descriptor <= addr < site.descriptor + 32:
                return f"rseq_cs({site.name})+{addr - site.descriptor}"
        return f"{addr:#x}"

    def where(self, th, ip: int) -> tuple[str, bool]:
        """The IP as a place in the program, and whether it is inside the armed section."""
        if PLAIN_IP <= ip < PLAIN_IP + 0x100:
            return "plain code", False
        if ip == handler_ip(SIGUSR1):
            return "SIGUSR1 handler", False
        for site in self.w.image.sites.values():
            if ip == site.pre_ip:
                return f"{site.name}: before arming", False
            if ip == site.arm_ip:
                return f"{site.name}: store rseq_cs", False
            if in_rseq_cs(ip, site.start_ip, site.post_commit_ip - site.start_ip):
                k = ip - site.start_ip
                last = site.post_commit_ip - site.start_ip - 1
                tag = " (commit)" if k == last else ""
                return f"{site.name}+{k}{tag}", True
            if ip == site.abort_ip:
                return f"{site.name}: abort handler", False
        return f"{ip:#x}", False

    def area(self, tid: int) -> dict[str, int] | None:
        th = self.w.m.tasks[tid].thread
        if not th.area:
            return None
        mm = self.w.main.proc.mm
        return {f.name: mm.peek(th.area + f.offset, f.size) for f in StructRseq.FIELDS}

    def before(self, alt: tuple[str, int, int]) -> None:
        kind, tid, arg = alt
        m = self.w.m
        st = m.tasks[tid]
        th = st.thread
        where, in_cs = self.where(th, th.ip)
        if kind == "run":
            action = "run" if m.parked[tid] == "user" else "continue in the kernel"
        elif kind == "resume":
            action = f"switched back in on cpu{m.away[tid]}"
        elif kind == "preempt":
            action = "preempted" if m.parked[tid] == "user" else "blocks in the syscall, same cpu"
        elif kind == "migrate":
            action = (f"preempted, migrated to cpu{arg}" if m.parked[tid] == "user"
                      else f"blocks in the syscall, wakes on cpu{arg}")
        elif kind == "expire":
            action = "slice extension timer expires"
        else:
            action = "SIGUSR1 delivered" if m.parked[tid] == "user" else "SIGUSR1 pending at syscall exit"
        if m.parked.get(tid) == "kernel":
            where = f"syscall at {where}"
        self._tid = tid
        self._current = Step(len(self.steps), f"T{self.w.index.get(tid, '?')}", st.kt.cpu, action, where, in_cs)
        if kind != "run" or m.parked.get(tid) == "kernel":
            self._current.area_before = self.area(tid)
        self._states = {t: (s.state, s.kt.killed_by) for t, s in m.tasks.items()}
        m.kernel.ftrace = _ThreadFtrace(self._label)

    def _label(self) -> str:
        st = self._thread_of_current()
        return "the scheduler (switch-in)" if st is None else f"T{self.w.index.get(st.tid, '?')}"

    def after(self) -> None:
        m = self.w.m
        step = self._current
        assert step is not None
        log = m.kernel.ftrace
        step.kernel = dict(sorted(log.by_thread.items())) if isinstance(log, _ThreadFtrace) else {}
        m.kernel.ftrace = None
        if step.area_before is not None:
            step.area_after = self.area(self._tid)
        for tid, st in sorted(m.tasks.items()):
            before = self._states.get(tid)
            name = f"T{self.w.index.get(tid, '?')}"
            if st.state is State.DEAD and (before is None or before[0] is not State.DEAD):
                if st.kt.killed_by:
                    step.events.append(f"{name} killed by {SIGNAL_NAMES.get(st.kt.killed_by, st.kt.killed_by)}")
                else:
                    step.events.append(f"{name} exits")
        for who, lines in step.kernel.items():
            if any("rseq:rseq_ip_fixup" in line for line in lines):
                step.events.append(f"the kernel moved {who}'s IP to the abort handler")
        self.steps.append(step)
        self._current = None
