"""Exhaustive exploration of interrupt placements and thread interleavings.

The explorer runs a scenario on :class:`ControlledMachine`, the simulated
machine with the explorer as its only source of events: no clock, no tick,
no load balancing. A thread running scenario code stops at every instruction
boundary (and inside every syscall) and waits for a decision. At each
*decision point* the explorer picks one alternative:

* ``run T``: thread T executes its next instruction (threads on different
  CPUs interleave instruction by instruction);
* ``preempt T``: an interrupt lands before T's next instruction and the exit
  path schedules: T is switched out and the CPU goes to the next of our
  threads queued there, or to "another process"; T is switched back in
  when the explorer says ``resume T`` (a preemption);
* ``migrate T -> cpu N``: the same, T coming back on CPU N (a migration);
* ``signal T``: SIGUSR1 is sent and an interrupt lands before T's next
  instruction; the handler (the scenario's, or an empty one) runs on the way
  out.

Inside a syscall the same three are the syscall blocking or being preempted,
and a signal pending at its exit. Preemptions, migrations and signals are
bounded (:class:`Bounds`).

The search is a depth-first search by re-execution (the machine is rebuilt
for every execution and replays a prefix of choices, which greenlets make
cheap), pruned by state hashing: at every new decision point the complete
state (user memory, each thread's kernel and user state including its Python
frames, run queues, mm_cid allocator) is hashed, and the execution stops if
that state was seen before with at least the same remaining budget. Two
interleavings of independent steps reach the same state, so this also does
the work of a partial-order reduction. ``explored`` counts executions (each
ran to the end or to a known state), ``distinct_states`` the distinct states
hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from greenlet import greenlet

from ..abi import StructRseq, in_rseq_cs
from ..errors import BadInput
from ..kernel import Tif
from ..kernel._ftrace import Ftrace
from ..kernel._task import SIGNAL_NAMES, SIGUSR1
from ..machine.machine import Machine, MachineConfig, State
from ..usermem import PAGE_SIZE, AddressSpace
from ..userprog.image import PLAIN_IP, handler_ip
from ..userprog.libc import Glibc
from ..userprog.primitives import RseqBug
from .model import Final, Memory, Scenario

MAX_BOUND = 4
#: Decisions in one execution before it is cut (a livelock the hashing did not catch).
MAX_DEPTH = 4000

_GO = ("go",)
#: Hand-written and primitive sections a scenario may use (one text page each).
MAX_SECTIONS = 64
_TEMPLATE = None  # an Image whose fields new images copy
#: th.local keys that are statistics, not behaviour: left out of the state.
_STATS_KEYS = frozenset({"nr_abort", "inject_passes"})


@dataclass(frozen=True)
class Bounds:
    """How many of each event one execution may contain."""

    preemptions: int = 2
    migrations: int = 0
    signals: int = 1

    def validate(self) -> None:
        for name in ("preemptions", "migrations", "signals"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_BOUND:
                raise BadInput(f"bad bound --{name} {value}: accepted 0..{MAX_BOUND}")

    def as_dict(self) -> dict[str, int]:
        return {"preemptions": self.preemptions, "migrations": self.migrations, "signals": self.signals}


# ======================================================================
# The controlled machine
# ======================================================================
class ControlledMachine(Machine):
    """The machine with the explorer deciding every event (see the module docstring).

    NOTE: it overrides the machine's waiting and scheduling entry points
    (``wait``, ``schedule``, ``_idle_balance``, ``_check_preempt_wakeup``) and
    keeps everything else: processes, threads, the context switch, mm_cid,
    signals, membarrier IPIs.
    """

    def __init__(self, release: str, cpus: int, *, debug: bool = False) -> None:
        super().__init__(release, MachineConfig(cpus=cpus, debug=debug), seed=0)
        #: tid -> "user" or "kernel": threads stopped at a decision point.
        self.parked: dict[int, str] = {}
        #: tid -> CPU: preempted threads whose CPU runs another process until resumed.
        self.away: dict[int, int] = {}
        #: tid -> CPU the next schedule() of that thread puts it on.
        self.placement: dict[int, int] = {}
        #: Threads running scenario code (set-up code runs without decisions).
        self.active: set[int] = set()
        #: Threads an IPI or signal kick landed on during the current step.
        self.kicked: list[int] = []

    def _interrupt(self, cpu, kind: str) -> bool:
        if cpu.curr is not None:
            self.kicked.append(cpu.curr.tid)
        return super()._interrupt(cpu, kind)

    def _membarrier_ipi(self, cpu, st) -> None:
        self.kicked.append(st.tid)
        super()._membarrier_ipi(cpu, st)

    def wait(self, st, ns: int, *, user: bool, on_irq) -> None:
        """A decision point; interrupts that land (chosen, or IPIs) come back to it."""
        if st.tid not in self.active:
            return
        while True:
            self.parked[st.tid] = "user" if user else "kernel"
            st.waiting = True
            msg = self._main.switch()
            st.waiting = False
            self.parked.pop(st.tid, None)
            if msg is _GO:
                return
            on_irq(msg[1])

    def schedule(self, kt) -> None:
        """``schedule()`` from the exit loop: always a real switch (another task runs)."""
        kt.tif &= ~Tif.NEED_RESCHED
        st = self.tasks[kt.pid]
        target = self.placement.pop(kt.pid, kt.cpu)
        st.state = State.RUNNABLE
        st.nivcsw += 1
        self._switch_away(self.cpus[kt.cpu], st)
        cpu = self.cpus[target]
        if cpu.curr is not None or cpu.rq:
            self._enqueue(st, target)  # behind our thread running there
        else:
            if target != kt.cpu:  # moved while off the CPU (load balancing)
                self.kernel.set_task_cpu(kt, target)
                self.migrations += 1
            self.away[st.tid] = target
        self._sleep(st)

    def hrtimer_start(self, cpu: int, expires_ns: int, callback) -> None:
        """No time passes under the explorer: a slice extension's expiry is one of its
        decisions (``expire T``), offered at every instruction boundary of the grant."""
        self.cpus[cpu].hrtimer = (object(), callback)

    def new_address_space(self):
        """The image without its megabytes of zero text: only the pages sections use.

        Thousands of executions each build a process; mapping the 528 pages of
        the full layout was most of the cost. Section text (signatures) and
        descriptors are laid out exactly as in the full image."""
        from ..userprog.image import RODATA_BASE, SITE_BASE, SITE_STRIDE, Image

        global _TEMPLATE
        if _TEMPLATE is None:
            _TEMPLATE = Image(AddressSpace())
        mm = AddressSpace()
        mm.map(SITE_BASE, MAX_SECTIONS * SITE_STRIDE, writable=False)
        mm.map(RODATA_BASE, PAGE_SIZE, writable=False)
        return mm, _TEMPLATE.forked(mm)

    def resume(self, tid: int) -> None:
        """The other process leaves the CPU: ``tid`` is switched back in."""
        self._enqueue(self.tasks[tid], self.away.pop(tid))

    def _idle_balance(self, cpu) -> None:
        """No load balancing: CPU placement is the explorer's decision."""

    def _check_preempt_wakeup(self, cpu) -> None:
        """No wake-up preemption: preemptions are the explorer's decision."""


# ======================================================================
# One execution
# ======================================================================
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
        # Footprint of a "run" step: did it touch writable memory outside the thread's TLS?
        self._tls: tuple[int, int] | None = None
        self.foreign = False
        mm = self.main.proc.mm
        read, write = mm.read, mm.write

        def note(addr: int) -> None:
            lo_hi = self._tls
            if lo_hi is not None and not lo_hi[0] <= addr < lo_hi[1]:
                # NOTE: page writability tells shared data from text and descriptors.
                if not mm.is_mapped(addr) or mm.is_writable(addr):
                    self.foreign = True

        def tracked_read(addr: int, size: int, *, faults_allowed: bool = True):
            note(addr)
            return read(addr, size, faults_allowed=faults_allowed)

        def tracked_write(addr: int, size: int, value: int, *, faults_allowed: bool = True) -> bool:
            note(addr)
            return write(addr, size, value, faults_allowed=faults_allowed)

        mm.read, mm.write = tracked_read, tracked_write

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
        kind, tid, arg = alt
        m = self.m
        if kind == "resume":
            m.resume(tid)
            m.sim.run()
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
        self._tls, self.foreign = (st.tls, st.tls + PAGE_SIZE), False
        m.kicked.clear()
        st.glet.switch(msg)
        m.sim.run()
        self._tls = None
        return kind == "run" and not self.foreign and m.switches == switches and tid in m.parked

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
        """A digest of everything that decides the future of this execution."""
        m = self.m
        parts: list[Any] = []
        for tid, st in sorted(m.tasks.items()):
            kt, th = st.kt, st.thread
            local = {k: v for k, v in th.local.items() if k not in _STATS_KEYS}
            parts.append((tid, st.state, kt.cpu, kt.mm_cid, int(kt.tif), kt.syscall_work, kt.regs.ip, kt.in_user,
                          kt.killed_by, kt.exiting, tuple(kt.pending), tuple(sorted(kt.blocked)),
                          tuple((f.sig, f.saved_ip, tuple(sorted(f.saved_blocked))) for f in kt.sigframes), repr(kt.rseq),
                          th.ip, th._frames, th.area, _freeze(local),
                          m.parked.get(tid), m.away.get(tid), tid in m.active,
                          _stack(st.glet, th.irqs)))
        parts.append(tuple((c.curr.tid if c.curr else None, tuple(s.tid for s in c.rq), c.hrtimer is not None)
                           for c in m.cpus))
        for pid, proc in sorted(m.processes.items()):
            parts.append((pid, _freeze(vars(proc.mmcid))))
        h = hashlib.blake2b(repr(parts).encode(), digest_size=16)
        # NOTE: the page table is read directly: hashing the bytes of every writable page
        # is the one complete and cheap description of user memory.
        for pfn, pte in sorted(self.main.proc.mm.populate().items()):
            if pte.writable:
                h.update(pfn.to_bytes(8, "little"))
                page = pte.page
                h.update(page.view() if hasattr(page, "view") else page.data)  # lazily zeroed or not
        return h.digest()


_SKIP_CODE = {ControlledMachine.wait.__code__}


def _stack(glet: greenlet | None, irqs: int) -> Any:
    """A suspended thread's Python frames: code, position and plain local values.

    ``Thread.irqs`` only ever counts up; what an instruction compares is how
    many interrupts landed since it started (a local ``irqs``), so that local
    is kept relative and the counter itself is left out: an execution that
    took an interrupt outside any section can then meet one that did not.
    """
    if glet is None or glet.dead:
        return None
    out = []
    f = glet.gr_frame
    while f is not None:
        if f.f_code not in _SKIP_CODE:
            loc = f.f_locals
            if "irqs" in loc and type(loc["irqs"]) is int:
                loc = {**loc, "irqs": irqs - loc["irqs"]}
            out.append((f.f_code.co_name, f.f_lasti, _freeze(loc)))
        f = f.f_back
    return tuple(out)


_PLAIN = frozenset({type(None), bool, int, str, bytes, float})


def _freeze(value: Any, depth: int = 0) -> Any:
    """A deterministic, hashable picture of a value: plain data kept, objects by type."""
    t = type(value)
    if t in _PLAIN:
        return value
    if isinstance(value, Enum):
        return repr(value)
    if depth > 4:
        return "..."
    if t is list or t is tuple:
        return tuple([_freeze(v, depth + 1) for v in value])
    if t is dict:
        items = [(k, _freeze(v, depth + 1)) for k, v in value.items()]
        try:
            return tuple(sorted(items))
        except TypeError:
            return tuple(sorted(items, key=repr))
    if t is set or t is frozenset:
        return tuple(sorted(repr(_freeze(v, depth + 1)) for v in value))
    if isinstance(value, int):
        return int(value)
    return t.__name__


# ======================================================================
# The search
# ======================================================================
@dataclass
class Execution:
    """One run: the choices made, how many alternatives each decision had, how it ended."""

    choices: list[int]
    #: For each decision past the replayed prefix: the alternatives worth exploring there.
    allowed: list[list[int]]
    ended: str  # "done", "cut" (known state), "depth" (MAX_DEPTH)
    violation: str | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class CheckResult:
    scenario: Scenario
    kernel: str
    bounds: Bounds
    debug: bool
    explored: int
    distinct_states: int
    violations: int
    #: The first failing execution, re-run with tracing; None if every execution passed.
    counterexample: Execution | None
    #: Executions cut by the depth bound (0 unless a scenario livelocks).
    depth_cut: int = 0
    #: (executions explored, distinct states, violations) as the search went on: every
    #: execution at first, then thinned so at most HISTORY_POINTS samples are kept; the last
    #: sample is the final count.
    history: list[tuple[int, int, int]] = field(default_factory=list)


#: Samples of the exploration's progress a CheckResult keeps (plots need no more).
HISTORY_POINTS = 512


class Explorer:
    def __init__(self, scenario: Scenario, kernel: str, bounds: Bounds, *, debug: bool = False,
                 progress: Callable[[int, int, int], None] | None = None) -> None:
        self.scenario = scenario
        self.kernel = kernel
        self.bounds = bounds
        self.debug = debug
        #: Called after every execution with (explored, distinct states, violations).
        self.progress = progress
        #: state digest -> remaining budgets it was explored with
        self.seen: dict[bytes, list[tuple[int, int, int]]] = {}

    def run(self) -> CheckResult:
        """Depth-first over decision sequences; each decision tries its allowed alternatives.

        Partial-order reduction: if the first alternative at a decision, "run T",
        was a thread-local step (it touched only T's TLS page and switched nothing),
        it commutes with everything the other threads can do there, so only T's
        own alternatives (interrupts before that step) are explored besides it.
        A step that interrupts another thread (a membarrier IPI) is the one thing
        that does not commute with a local step: when one happens, the decisions
        before it at which its thread was already waiting get its "run" back
        (a dynamic partial-order reduction in miniature).
        """
        explored = violations = depth_cut = 0
        first: list[int] | None = None
        path: list[list[Any]] = []  # [position in allowed, allowed alternatives]
        history: list[tuple[int, int, int]] = []
        stride = 1  # record every stride-th execution; doubled whenever the history fills up
        while True:
            prefix = [allowed[pos] for pos, allowed in path]
            ex = self.execute(prefix, path=path)
            explored += 1
            depth_cut += ex.ended == "depth"
            if ex.violation is not None:
                violations += 1
                if first is None or len(ex.choices) < len(first):
                    first = ex.choices  # the shortest counterexample (first found among equals)
            if explored % stride == 0:
                history.append((explored, len(self.seen), violations))
                if len(history) >= HISTORY_POINTS:
                    history = history[1::2]  # keep the multiples of the doubled stride
                    stride *= 2
            if self.progress is not None:
                self.progress(explored, len(self.seen), violations)
            path += [[0, allowed] for allowed in ex.allowed]
            while path and path[-1][0] + 1 >= len(path[-1][1]):
                path.pop()
            if not path:
                break
            path[-1][0] += 1
        if not history or history[-1][0] != explored:
            history.append((explored, len(self.seen), violations))
        counterexample = self.execute(first, trace=True, prune=False) if first is not None else None
        return CheckResult(self.scenario, self.kernel, self.bounds, self.debug, explored,
                           len(self.seen), violations, counterexample, depth_cut, history)

    def _known(self, key: bytes, budget: list[int]) -> bool:
        """Seen with at least this much budget left (then everything from here was explored)."""
        b = tuple(budget)
        seen = self.seen.setdefault(key, [])
        if any(all(s >= c for s, c in zip(old, b)) for old in seen):
            return True
        seen.append(b)
        return False

    def execute(self, prefix: list[int], *, trace: bool = False, prune: bool = True,
                path: list[list[Any]] | None = None) -> Execution:
        """Run once: replay ``prefix``, then take the first alternative at every new decision.

        ``path`` (the explorer's [position, allowed] per prefix decision) lets a step
        that IPIs another thread widen the reduced decisions before it (see :meth:`run`).
        """
        world = World(self.scenario, self.kernel, debug=self.debug)
        tracer = Tracer(world) if trace else None
        budget = [self.bounds.preemptions, self.bounds.migrations, self.bounds.signals]
        ex = Execution([], [], "done")
        m = world.m
        moves: dict[int, int] = {}  # tid -> transitions taken so far
        records: list[tuple[list[tuple[str, int, int]], dict[int, int]]] = []
        try:
            m.sim.run()
            while True:
                alts = world.alternatives(budget)
                if not alts:
                    break
                depth = len(ex.choices)
                if depth >= MAX_DEPTH:
                    ex.ended = "depth"
                    break
                if depth < len(prefix):
                    choice = prefix[depth]
                else:
                    if prune and self._known(world.state_key(), budget):
                        ex.ended = "cut"
                        break
                    choice = 0
                ex.choices.append(choice)
                records.append((alts, {tid: moves.get(tid, 0) for tid in m.parked}))
                if tracer is not None:
                    tracer.before(alts[choice])
                kind, tid, _ = alts[choice]
                before = moves.get(tid, 0)
                local = world.apply(alts[choice], budget)
                moves[tid] = before + 1
                if tracer is not None:
                    tracer.after()
                if depth >= len(prefix):
                    allowed = list(range(len(alts)))
                    if local:
                        t0 = alts[0][1]
                        allowed = [i for i in allowed if i == 0 or (alts[i][1] == t0 and alts[i][0] != "run")]
                    ex.allowed.append(allowed)
                if m.kicked and kind == "run" and path is not None:
                    self._widen(records, path or [], len(prefix), ex.allowed, tid, before)
            if ex.ended == "done":
                ex.violation = world.verdict()
            if tracer is not None:
                ex.steps = tracer.steps
        finally:
            world.teardown()
        return ex

    @staticmethod
    def _widen(records, path, n_prefix: int, new_allowed, tid: int, moves: int) -> None:
        """Thread ``tid``'s step just interrupted another thread, so it does not commute
        with that thread's local steps: wherever ``tid`` was already waiting to take this
        same step, its "run" must be explored too."""
        for i in range(len(records) - 2, -1, -1):
            alts, parked = records[i]
            if parked.get(tid) != moves:
                return
            allowed = path[i][1] if i < n_prefix else new_allowed[i - n_prefix]
            run = alts.index(("run", tid, 0))
            if run not in allowed:
                allowed.append(run)


def check(scenario: Scenario, kernel: str, bounds: Bounds | None = None, *, debug: bool = False,
          progress: Callable[[int, int, int], None] | None = None) -> CheckResult:
    """Explore ``scenario`` under ``kernel`` within ``bounds``; ``progress`` is called after
    every execution with (explored, distinct states, violations)."""
    from ..kernel import kernel_class

    bounds = bounds or Bounds()
    bounds.validate()
    kernel_class(kernel)  # unknown kernel: BadInput with the accepted names
    return Explorer(scenario, kernel, bounds, debug=debug, progress=progress).run()


# ======================================================================
# Tracing the counterexample
# ======================================================================
@dataclass
class Step:
    """One decision of a traced execution, and what followed from it."""

    index: int
    thread: str
    cpu: int
    action: str
    where: str
    in_cs: bool
    user: list[str] = field(default_factory=list)
    #: The kernel's call graph during the step, by thread ("T0", "T1", ...).
    kernel: dict[str, list[str]] = field(default_factory=dict)
    area_before: dict[str, int] | None = None
    area_after: dict[str, int] | None = None
    events: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "thread": self.thread, "cpu": self.cpu, "action": self.action,
                "where": self.where, "in_cs": self.in_cs, "user": self.user, "kernel": self.kernel,
                "rseq_area_before": self.area_before, "rseq_area_after": self.area_after,
                "events": self.events}


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
