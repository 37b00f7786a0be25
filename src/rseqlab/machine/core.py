"""The simulated machine: CPUs, a scheduler, interrupts, syscalls, signals, processes.

Every simulated thread runs its user program in a greenlet of its own, so a
program is plain Python that calls :class:`~rseqlab.userprog.api.Thread`
methods, and the kernel's exit path can ``schedule()`` from deep inside a call
chain, exactly where the real one does. The main greenlet runs the event loop
(:class:`~rseqlab.machine.sim.Sim`); a thread greenlet runs until it needs
simulated time to pass (a user instruction, a compute burst, a kernel stay),
then hands control back. Interrupts are delivered into the waiting thread's
greenlet at the instant they fire: it enters the kernel there, runs the exit
work (which may switch it out), and on return either continues its
instruction or, if the kernel moved its IP to an abort handler, unwinds with
:class:`~rseqlab.machine.interface.RseqAbort`.

The scheduler is deliberately simple and documented: per-CPU FIFO run queues,
a time slice enforced by the periodic tick (``HZ``), wake-up on the previous
CPU if idle, else an idle allowed CPU, else the previous one, a wake-up
preemption rule, periodic and idle load balancing, and CPU affinity. All
choices are deterministic given the seed.
"""

from __future__ import annotations

import errno
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from greenlet import greenlet

from ..errors import BadInput
from ..kernel import Entry, Kernel, Task, Tif, Topology, make_kernel
from ..kernel._task import CLONE_CHILD_SETTID, CLONE_THREAD, CLONE_VFORK, CLONE_VM, EXIT_TO_USER_MODE_WORK, SIGCHLD
from ..usermem import AddressSpace
from .interface import State, TaskExit, WaitQueue
from .mmcid import MmCid
from .sim import Prio, Sim

NS_PER_S = 1_000_000_000


#: The largest simulated machine (the workload format's limit too): each CPU is an object with
#: its own run queue and tick, and a request for far more is a mistake, not a workload.
MAX_CPUS = 512


@dataclass(frozen=True, slots=True)
class MachineConfig:
    cpus: int = 2
    nodes: int = 1
    hz: int = 250
    #: Time slice before the tick asks for a reschedule when others wait.
    slice_ns: int = 3_000_000
    #: A woken task preempts the current one if that one ran at least this long.
    wakeup_granularity_ns: int = 1_000_000
    #: The tick runs load balancing every this many ticks.
    balance_ticks: int = 4
    #: Cost of a syscall's kernel part and of the user instructions of the model.
    syscall_ns: int = 150
    insn_ns: int = 1
    #: Latency of a major page fault (swap-in); 0 makes every fault minor.
    major_fault_ns: int = 0
    #: How long a membarrier() caller waits for its IPIs (smp_call_function_many(..., wait=1)).
    ipi_wait_ns: int = 4_000
    #: Random per-CPU tick phase drawn from the seed; False puts every tick on the 1/HZ grid.
    tick_phase: bool = True
    #: Memory limit for threads: each costs a kernel stack and a TLS page.
    max_threads: int = 4096
    debug: bool = False

    def validate(self) -> None:
        if not 1 <= self.cpus <= MAX_CPUS:
            raise BadInput(f"impossible machine: {self.cpus} CPUs (accepted: 1..{MAX_CPUS})")
        if not 1 <= self.nodes <= self.cpus:
            raise BadInput(f"impossible machine: {self.nodes} nodes for {self.cpus} CPUs")
        if not 1 <= self.hz <= 10_000:
            raise BadInput(f"impossible machine: HZ={self.hz} (accepted: 1..10000)")
        if self.slice_ns <= 0 or self.syscall_ns < 0 or self.insn_ns < 1:
            raise BadInput("impossible machine: slice, syscall and instruction costs must be positive")


@dataclass(eq=False)
class Process:
    """A thread group: one address space, its mm_cid allocator, signal handlers."""

    pid: int
    mm: AddressSpace
    mmcid: MmCid
    threads: list[SimTask] = field(default_factory=list)
    handlers: dict[int, Callable[..., None]] = field(default_factory=dict)
    next_mm_cid_scan: int = 0
    membarrier_rseq_registered: bool = False
    killed_by: int | None = None
    #: The image: text/descriptor allocation for rseq critical-section sites.
    image: Any = None
    #: User-space runtime state (glibc / librseq registration), set by userprog.
    runtime: Any = None
    exit_status: int | None = None
    #: The thread that forked this process (gets SIGCHLD when the process ends).
    parent: SimTask | None = None
    #: A vfork parent sleeps here until this process execs or exits.
    vfork_done: WaitQueue | None = None

    @property
    def alive(self) -> bool:
        return any(t.state is not State.DEAD for t in self.threads)


class SimTask:
    """A schedulable thread: the kernel's Task plus what the machine needs."""

    def __init__(self, machine: BaseMachine, kt: Task, proc: Process, program: Callable[..., Any],
                 affinity: frozenset[int]) -> None:
        self.m = machine
        self.kt = kt
        self.proc = proc
        self.program = program
        self.affinity = affinity
        self.state = State.RUNNABLE
        self.glet: greenlet | None = None
        self.waiting = False  # suspended in _wait, interruptible by events
        self.token = 0  # invalidates stale completion events
        self.ran_since = 0
        self.interrupted_by_signal = False
        self.result: Any = None
        self.joiners = WaitQueue()
        self.thread: Any = None  # the userprog.api.Thread handle
        self.tls = 0  # base of this thread's TLS page
        self.nivcsw = 0  # switches away from a runnable task (preemption, sched_yield)

    @property
    def tid(self) -> int:
        return self.kt.pid

    def __repr__(self) -> str:
        return f"SimTask({self.tid}, {self.state}, cpu={self.kt.cpu})"


@dataclass(eq=False)
class Cpu:
    index: int
    curr: SimTask | None = None
    rq: deque = field(default_factory=deque)
    dispatching: bool = False
    ticks: int = 0
    tick_armed: bool = False
    #: Offset of this CPU's tick from the 1/HZ grid (local APIC timers are not synchronised).
    tick_phase: int = 0
    #: The tick's event callback, made once (a tick fires thousands of times).
    tick: Callable[[], None] | None = None
    #: The armed hrtimer (the slice extension's): (token, callback), or None.
    hrtimer: tuple | None = None


_RUN = ("run",)
_DONE = ("done",)


class BaseMachine:
    """N CPUs running simulated processes on one kernel personality.

    User space comes from the subclass (:class:`rseqlab.machine.machine.Machine` plugs in
    userprog's): :meth:`new_image` lays out a process's memory, :meth:`new_thread` makes the
    handle a thread's program is called with. This module imports nothing of userprog."""

    def __init__(self, release: str, config: MachineConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or MachineConfig()
        self.config.validate()
        cfg = self.config
        self.topology = Topology.uniform(cfg.cpus, cfg.nodes)
        self.kernel: Kernel = make_kernel(release, self.topology, debug=cfg.debug, scheduler=self)
        self.sim = Sim()
        self.rng = random.Random(seed)
        self.seed = seed
        self.cpus = [Cpu(i) for i in range(cfg.cpus)]
        for cpu in self.cpus:
            cpu.tick = lambda c=cpu: self._tick(c)
        self.tasks: dict[int, SimTask] = {}
        self.processes: dict[int, Process] = {}
        self._next_pid = 1000
        self._main = greenlet.getcurrent()
        self.tick_ns = NS_PER_S // cfg.hz
        self._ticking = False
        self.switches = 0
        self.migrations = 0
        self.user_irqs = 0

    # ==================================================================
    # Processes and threads
    # ==================================================================
    def _pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    def spawn(self, program: Callable[..., Any], *, cpu: int = 0, affinity=None,
              runtime: Any = None) -> SimTask:
        """Start a new process (as if exec'd) whose main thread runs ``program(thread)``."""
        pid = self._pid()
        mm, image = self.new_address_space()
        proc = Process(pid, mm, MmCid(self.kernel.mm_cid_policy, self.config.cpus, affinity))
        proc.image = image
        proc.runtime = runtime
        proc.next_mm_cid_scan = 0  # a new mm's first compaction scan is due at once (measured, see trace/)
        self.processes[pid] = proc
        kt = self.kernel.new_task(pid, mm, cpu=cpu, comm="prog")
        kt.in_user = False

        def start(th) -> Any:
            if runtime is not None:
                runtime.thread_start(th)  # the libc registers rseq before main()
            return program(th)

        st = self._add_task(kt, proc, start, affinity)
        self._wake_new(st)
        return st

    def new_address_space(self) -> tuple[AddressSpace, Any]:
        """A new process's memory and image (a hook: ``rseqlab check`` maps less per run)."""
        mm = AddressSpace()
        return mm, self.new_image(mm)

    def new_image(self, mm: AddressSpace) -> Any:
        """The user-space layout of a new or exec'd process in ``mm`` (text, descriptors, TLS)."""
        raise NotImplementedError

    def new_thread(self, st: SimTask) -> Any:
        """The handle ``st``'s program runs against (what it can do at user level)."""
        raise NotImplementedError

    def _add_task(self, kt: Task, proc: Process, program, affinity, parent: SimTask | None = None) -> SimTask:
        live = sum(1 for t in self.tasks.values() if t.state is not State.DEAD)
        if live >= self.config.max_threads:
            raise BadInput(f"impossible workload: more than {self.config.max_threads} live threads "
                           "(memory for kernel stacks and TLS is exhausted)")
        allowed = frozenset(range(self.config.cpus)) if affinity is None else frozenset(affinity)
        if not allowed or not allowed <= set(range(self.config.cpus)):
            raise BadInput(f"impossible affinity {sorted(allowed)} on {self.config.cpus} CPUs")
        st = SimTask(self, kt, proc, program, allowed)
        st.tls = proc.image.new_tls()
        proc.threads.append(st)
        # sched_post_fork() -> sched_mm_cid_fork(): run by the parent on its CPU (a new
        # process's first user is itself).
        shares_mm = parent is not None and parent.proc.mmcid is proc.mmcid
        proc.mmcid.add_thread(kt.pid, current=parent.tid if shares_mm else kt.pid,
                              cpu=parent.kt.cpu if parent is not None else kt.cpu)
        if shares_mm and allowed != parent.affinity:
            proc.mmcid.update_cpus_allowed(allowed)  # the new thread's sched_setaffinity()
        self.tasks[kt.pid] = st
        st.glet = greenlet(lambda *_: self._thread_main(st), parent=self._main)
        st.thread = self.new_thread(st)
        return st

    def clone(self, parent: SimTask, program, *, thread: bool, vfork: bool = False,
              affinity=None, child_tid: int = 0) -> SimTask:
        """A new thread (``thread``: CLONE_VM|CLONE_THREAD), a vfork child (CLONE_VM|CLONE_VFORK:
        a new process borrowing the parent's memory until it execs), or a fork child (the
        memory copy-on-write). ``child_tid``: CLONE_CHILD_SETTID with that address (glibc's
        fork), stored by the child's ``schedule_tail()``. Called inside the parent's syscall."""
        k = self.kernel
        pid = self._pid()
        flags = CLONE_VM | CLONE_THREAD if thread else CLONE_VM | CLONE_VFORK if vfork else 0
        if child_tid:
            flags |= CLONE_CHILD_SETTID
        kt = k.copy_process(parent.kt, pid, flags, child_tid)
        if thread:
            proc = parent.proc
        else:
            # A vfork child shares the parent's mm, and so its mm_cid users, until it execs.
            mmcid = parent.proc.mmcid if vfork else MmCid(k.mm_cid_policy, self.config.cpus, parent.affinity)
            proc = Process(pid, kt.mm, mmcid, handlers=dict(parent.proc.handlers))
            proc.image = parent.proc.image if vfork else parent.proc.image.forked(kt.mm)
            proc.runtime = parent.proc.runtime.forked() if parent.proc.runtime is not None else None
            proc.next_mm_cid_scan = parent.proc.next_mm_cid_scan if vfork else 0  # fork: a new mm
            proc.parent = parent
            self.processes[pid] = proc
        st = self._add_task(kt, proc, program, affinity if affinity is not None else parent.affinity,
                            parent)
        if not thread:
            # Same TLS address as the parent: shared (vfork) or copy-on-write (fork).
            proc.image.free_tls(st.tls)
            st.tls = parent.tls
        self._wake_new(st)
        return st

    def _thread_main(self, st: SimTask) -> None:
        """A thread's life: return from fork/exec to user space, run the program, exit."""
        try:
            # The IP to resume at is read before the exit: a signal already pending at the
            # first return (sent before the thread ever ran) moves regs.ip to its handler.
            resume_ip = st.kt.regs.ip
            st.thread._return_to_user(self.kernel.syscall_exit_to_user_mode(st.kt), resume_ip)
            st.result = st.program(st.thread)
            st.thread._exit()
        except TaskExit:
            pass
        self._finish(st)

    def _finish(self, st: SimTask) -> None:
        """The last schedule() of a dead task: never returns to it."""
        st.state = State.DEAD
        st.proc.mmcid.remove_thread(st.tid, cpu=st.kt.cpu)
        self._wake_all(st.joiners)
        if st.proc.vfork_done is not None:
            self._wake_all(st.proc.vfork_done)
            st.proc.vfork_done = None
        parent = st.proc.parent
        if parent is not None and not st.proc.alive and parent.state is not State.DEAD:
            self.kill(parent, SIGCHLD)  # do_notify_parent(); ignored unless handled
        cpu = self.cpus[st.kt.cpu]
        self._switch_away(cpu, st)
        if self._ticking and not any(t.state is not State.DEAD for t in self.tasks.values()):
            self._ticking = False
            self.sim.halt()  # run() returns before the next event

    # ==================================================================
    # Running
    # ==================================================================
    def run(self, until_ns: int | None = None) -> None:
        """Run until every thread has exited (or ``until_ns``)."""
        if not self._ticking:
            self._ticking = True
            for cpu in self.cpus:
                # The phase is drawn from the seed: it is what makes two seeds interleave differently.
                cpu.tick_phase = self.rng.randrange(self.tick_ns) if self.config.tick_phase else 0
                cpu.tick_armed = True
                self.sim.at(self._next_tick(cpu), cpu.tick, Prio.TIMER)
        self.sim.run(until=until_ns)
        if self._ticking and self.sim.pending == 0:
            blocked = sorted(t.tid for t in self.tasks.values() if t.state is State.BLOCKED)
            raise BadInput(f"the simulated program deadlocks: threads {blocked} sleep at "
                           f"{self.sim.now} ns with nothing left to wake them")

    @property
    def now(self) -> int:
        return self.sim.now

    @property
    def running(self) -> bool:
        """True while some thread has not exited (the ticks keep going)."""
        return self._ticking

    # ==================================================================
    # Waiting inside a thread greenlet
    # ==================================================================
    def wait(self, st: SimTask, ns: int, *, user: bool, on_irq: Callable[[str], None]) -> None:
        """Let ``ns`` of ``st``'s CPU time pass. Interrupts landing meanwhile call
        ``on_irq(kind)`` (in this greenlet); the remaining time is served afterwards."""
        remaining = ns
        while True:
            end = self.sim.now + remaining
            kind = self.wait_once(st, remaining)
            if kind is None:
                return
            remaining = max(0, end - self.sim.now)
            on_irq(kind)
            if remaining == 0:
                return

    def wait_once(self, st: SimTask, ns: int) -> str | None:
        """Wait up to ``ns``; None if it all passed, else the kind of the interrupt that
        landed (now is its instant; the caller handles it)."""
        st.token += 1
        if self.sim.advance(ns):
            return None  # nothing can land meanwhile: no event, no hand-off to the loop
        token = st.token
        self.sim.at(self.sim.now + ns, lambda: self._complete(st, token))
        st.waiting = True
        msg = self._main.switch()
        st.waiting = False
        return None if msg is _DONE else msg[1]

    def _complete(self, st: SimTask, token: int) -> None:
        if st.token == token and st.waiting and st.state is State.RUNNING:
            st.glet.switch(_DONE)

    def _interrupt(self, cpu: Cpu, kind: str) -> bool:
        """Deliver an interrupt to whatever runs on ``cpu``; False if it was idle."""
        st = cpu.curr
        if st is None or not st.waiting or st.state is not State.RUNNING:
            return False
        st.token += 1  # the pending completion is stale: the thread re-arms it
        st.glet.switch(("irq", kind))
        return True

    # ==================================================================
    # The timer service (the kernel's Scheduler protocol): the slice extension's hrtimer
    # ==================================================================
    def ktime_get_mono_fast_ns(self) -> int:
        return self.sim.now

    def hrtimer_start(self, cpu: int, expires_ns: int, callback: Callable[[Task | None], None]) -> None:
        """Arm ``cpu``'s one hrtimer (re-arming replaces it): at ``expires_ns`` it interrupts
        whatever runs there, and ``callback(current)`` runs in that interrupt."""
        c = self.cpus[cpu]
        token = object()
        c.hrtimer = (token, callback)
        self.sim.at(max(expires_ns, self.sim.now), lambda: self._hrtimer_expire(c, token), Prio.TIMER)

    def hrtimer_try_to_cancel(self, cpu: int) -> bool:
        c = self.cpus[cpu]
        armed = c.hrtimer is not None
        c.hrtimer = None
        return armed

    def _hrtimer_expire(self, cpu: Cpu, token: object) -> None:
        if cpu.hrtimer is None or cpu.hrtimer[0] is not token:
            return  # cancelled or re-armed
        if not self._interrupt(cpu, "hrtimer"):
            self.run_hrtimer(cpu)  # idle, or its task is between waits: nothing to interrupt

    def run_hrtimer(self, cpu: Cpu) -> None:
        """The hard-irq part of the hrtimer interrupt: the expired callback, with ``current``."""
        armed, cpu.hrtimer = cpu.hrtimer, None
        if armed is not None:
            armed[1](cpu.curr.kt if cpu.curr is not None else None)

    # ==================================================================
    # The scheduler (the kernel's Scheduler protocol)
    # ==================================================================
    def schedule(self, kt: Task) -> None:
        """``schedule()`` from the exit loop (TIF_NEED_RESCHED): preempt if anyone waits."""
        kt.tif &= ~Tif.NEED_RESCHED
        st = self.tasks[kt.pid]
        cpu = self.cpus[kt.cpu]
        target = cpu.index if cpu.index in st.affinity else min(st.affinity)
        if not cpu.rq and target == cpu.index:
            st.ran_since = self.sim.now  # nothing else to run: keep going, no switch
            return
        st.state = State.RUNNABLE
        st.nivcsw += 1
        self._switch_away(cpu, st)
        self._enqueue(st, target)
        self._sleep(st)

    def block(self, st: SimTask, wq: WaitQueue | None = None) -> None:
        """Sleep in the kernel (syscall or fault) until woken; the CPU runs something else."""
        st.state = State.BLOCKED
        if wq is not None:
            wq.waiters.append(st)
        self._switch_away(self.cpus[st.kt.cpu], st)
        self._sleep(st)

    def _sleep(self, st: SimTask) -> None:
        msg = self._main.switch()
        assert msg is _RUN, f"rseqlab bug: {st} resumed with {msg}"

    def _switch_away(self, cpu: Cpu, prev: SimTask) -> None:
        """Context switch on ``cpu`` away from ``prev`` (which is not re-queued here)."""
        self.kernel.prepare_task_switch(prev.kt)
        prev.proc.mmcid.switch_out(prev.kt.pid, prev.kt.mm_cid, cpu=cpu.index)
        self.switches += 1
        cpu.curr = None
        if not cpu.rq:
            self._idle_balance(cpu)
        self._dispatch(cpu)

    def _dispatch(self, cpu: Cpu) -> None:
        if cpu.curr is not None or cpu.dispatching or not cpu.rq:
            return
        nxt = cpu.rq.popleft()
        cpu.curr = nxt
        cpu.dispatching = True
        self.sim.at(self.sim.now, lambda: self._switch_in(cpu, nxt))

    def _switch_in(self, cpu: Cpu, st: SimTask) -> None:
        cpu.dispatching = False
        if not cpu.tick_armed and self._ticking:
            # Leaving NOHZ idle: the tick resumes on its period's grid.
            cpu.tick_armed = True
            self.sim.at(self._next_tick(cpu), cpu.tick, Prio.TIMER)
        assert st.kt.cpu == cpu.index, "rseqlab bug: task dispatched on a CPU it was not placed on"
        mmcid = st.proc.mmcid
        cid = mmcid.switch_in(st.kt.pid, cpu.index)
        self.kernel.finish_task_switch_in(st.kt, cid, mmcid.last_changed)
        st.state = State.RUNNING
        st.ran_since = self.sim.now
        st.glet.switch(_RUN)

    def _enqueue(self, st: SimTask, target: int, *, new: bool = False) -> None:
        if target != st.kt.cpu:
            self.kernel.set_task_cpu(st.kt, target)
            # perf's cpu-migrations: a new task's first placement is not a migration.
            self.migrations += not new
        cpu = self.cpus[target]
        cpu.rq.append(st)
        self._dispatch(cpu)

    def _select_cpu(self, st: SimTask) -> int:
        prev = st.kt.cpu
        if prev in st.affinity and self._idle(self.cpus[prev]):
            return prev
        for c in sorted(st.affinity):
            if self._idle(self.cpus[c]):
                return c
        return prev if prev in st.affinity else min(st.affinity)

    @staticmethod
    def _idle(cpu: Cpu) -> bool:
        return cpu.curr is None and not cpu.rq

    def wake(self, st: SimTask) -> None:
        """``try_to_wake_up()``: make a blocked task runnable on a CPU of its choice."""
        if st.state is not State.BLOCKED:
            return
        st.state = State.RUNNABLE
        target = self._select_cpu(st)
        self._enqueue(st, target)
        self._check_preempt_wakeup(self.cpus[target])

    def _wake_new(self, st: SimTask) -> None:
        """``wake_up_new_task()``."""
        st.state = State.RUNNABLE
        target = self._select_cpu(st)
        self._enqueue(st, target, new=True)

    def _wake_all(self, wq: WaitQueue) -> None:
        while wq.waiters:
            self.wake(wq.waiters.popleft())

    def wake_one(self, wq: WaitQueue) -> None:
        while wq.waiters:
            st = wq.waiters.popleft()
            if st.state is State.BLOCKED:
                self.wake(st)
                return

    def _check_preempt_wakeup(self, cpu: Cpu) -> None:
        curr = cpu.curr
        if curr is None or cpu.dispatching or not cpu.rq:
            return
        if self.sim.now - curr.ran_since >= self.config.wakeup_granularity_ns:
            curr.kt.tif |= Tif.NEED_RESCHED
            self.sim.at(self.sim.now, lambda: self._interrupt(cpu, "resched-ipi"), Prio.IPI)

    def _next_tick(self, cpu: Cpu) -> int:
        """The first instant after now on ``cpu``'s tick grid."""
        k = (self.sim.now - cpu.tick_phase) // self.tick_ns + 1
        return k * self.tick_ns + cpu.tick_phase

    def _tick(self, cpu: Cpu) -> None:
        """The periodic timer interrupt on ``cpu``; an idle CPU stops ticking (NOHZ idle)."""
        if not self._ticking or (cpu.curr is None and not cpu.rq):
            cpu.tick_armed = False
            return
        cpu.ticks += 1
        self.sim.after(self.tick_ns, cpu.tick, Prio.TIMER)
        if cpu.ticks % self.config.balance_ticks == 0:
            self._periodic_balance(cpu)
        st = cpu.curr
        if st is not None and st.waiting and st.state is State.RUNNING and self._quiet_tick(st):
            return
        self._interrupt(cpu, "tick")

    def _quiet_tick(self, st: SimTask) -> bool:
        """A tick that raises no work is handled where it lands: the thread's wait goes on.

        ``scheduler_tick`` would neither ask for a reschedule nor queue task_work, so the
        interrupt is a bare round trip: from user mode, entry and exit hooks with nothing
        pending (``exit`` is counted; 6.19 sets and clears ``user_irq``); from kernel mode,
        nothing at all. The effect equals delivering it into the thread's greenlet, which
        is what every other tick still does.
        """
        now = self.sim.now
        if self.cpus[st.kt.cpu].rq and now - st.ran_since >= self.config.slice_ns:
            return False
        period = self.kernel.mm_cid_scan_period_ns
        if period and now >= st.proc.next_mm_cid_scan:
            return False
        th = st.thread
        if not th.in_user_mode():
            return True
        if st.kt.tif & EXIT_TO_USER_MODE_WORK:
            return False
        th.irqs += 1
        self.user_irqs += 1
        k, kt = self.kernel, st.kt
        k.enter_from_user_mode(kt, Entry.IRQ)
        return k.irqentry_exit_to_user_mode(kt)

    def scheduler_tick(self, st: SimTask) -> None:
        """Tick work for the running task: slice expiry, 6.18's mm_cid compaction task_work."""
        cpu = self.cpus[st.kt.cpu]
        if cpu.rq and self.sim.now - st.ran_since >= self.config.slice_ns:
            st.kt.tif |= Tif.NEED_RESCHED
        period = self.kernel.mm_cid_scan_period_ns
        if period and self.sim.now >= st.proc.next_mm_cid_scan:
            st.proc.next_mm_cid_scan = self.sim.now + period
            self.kernel.task_work_add(st.kt)

    def _periodic_balance(self, cpu: Cpu) -> None:
        """Pull one waiting task to ``cpu`` if it is idle or much less loaded than the busiest."""
        load = lambda c: len(c.rq) + (c.curr is not None)  # noqa: E731
        busiest = max(self.cpus, key=lambda c: (len(c.rq), -c.index))
        if busiest is cpu or not busiest.rq or load(busiest) - load(cpu) < 2:
            return
        self._pull_one(busiest, cpu)

    def _idle_balance(self, cpu: Cpu) -> None:
        busiest = max(self.cpus, key=lambda c: (len(c.rq), -c.index))
        if busiest is not cpu and busiest.rq:
            self._pull_one(busiest, cpu)

    def _pull_one(self, src: Cpu, dst: Cpu) -> None:
        for st in reversed(src.rq):
            if dst.index in st.affinity:
                src.rq.remove(st)
                self._enqueue(st, dst.index)
                return

    def exec_image(self, st: SimTask) -> None:
        """execve() succeeded: a fresh address space, image and handlers for the process."""
        proc = st.proc
        if proc.vfork_done is not None:  # the vfork parent may run again
            self._wake_all(proc.vfork_done)
            proc.vfork_done = None
        mm = AddressSpace()
        proc.mm = mm
        proc.image = self.new_image(mm)
        proc.handlers.clear()
        proc.next_mm_cid_scan = 0  # a new mm: its compaction scan is due at the next tick
        proc.mmcid.exec_out(st.tid, st.kt.cpu)  # sched_mm_cid_before_execve()
        proc.mmcid = MmCid(self.kernel.mm_cid_policy, self.config.cpus, st.affinity)
        st.kt.mm_cid = proc.mmcid.exec_in(st.tid, st.kt.cpu)  # sched_mm_cid_after_execve()
        st.kt.mm = mm
        st.tls = proc.image.new_tls()

    def move_current(self, st: SimTask) -> None:
        """The task's affinity no longer includes its CPU: the stopper moves it (in its syscall)."""
        st.state = State.RUNNABLE
        self._switch_away(self.cpus[st.kt.cpu], st)
        self._enqueue(st, self._select_cpu(st))
        self._sleep(st)

    # ==================================================================
    # Signals and IPIs
    # ==================================================================
    def kill(self, target: SimTask, sig: int) -> int:
        if target.state is State.DEAD:
            return -errno.ESRCH
        self.kernel.send_signal(target.kt, sig)
        if not target.kt.tif & Tif.SIGPENDING:
            return 0  # ignored (dropped) or blocked (stays pending): nobody is woken
        if target.state is State.BLOCKED and target.thread.interruptible:
            target.interrupted_by_signal = True
            self.wake(target)
        elif target.state is State.RUNNING and target.thread.in_user_mode():
            # signal_wake_up(): kick the CPU so the signal is seen on the way out.
            cpu = self.cpus[target.kt.cpu]
            self.sim.at(self.sim.now, lambda: self._interrupt(cpu, "signal-kick"), Prio.IPI)
        else:
            self._work_at_trip_end(target)
        return 0

    def _work_at_trip_end(self, st: SimTask) -> None:
        """Work was raised on a task in the kernel part of a bulk burst: the trip's own
        exit must see it, so the burst is cut at the instant that trip returns."""
        end = st.thread.end_of_trip() if st.thread is not None else None
        if end is not None and st.state is State.RUNNING:
            cpu = self.cpus[st.kt.cpu]
            self.sim.at(end, lambda: cpu.curr is st and self._interrupt(cpu, "exit-work"))

    def membarrier_rseq(self, caller: SimTask, cpu_filter: int | None) -> int:
        """IPI every CPU running a thread of the caller's process (not the caller's own CPU).

        Returns how many IPIs were sent; the caller waits for them (``ipi_wait_ns``)."""
        sent = 0
        for cpu in self.cpus:
            if cpu_filter is not None and cpu.index != cpu_filter:
                continue
            st = cpu.curr
            if st is None or st is caller or st.proc is not caller.proc or cpu.dispatching:
                continue
            self.sim.at(self.sim.now, lambda c=cpu, t=st: self._membarrier_ipi(c, t), Prio.IPI)
            sent += 1
        return sent

    def _membarrier_ipi(self, cpu: Cpu, st: SimTask) -> None:
        if cpu.curr is not st or st.state is not State.RUNNING:
            return
        if st.waiting and st.thread.in_user_mode():
            self._interrupt(cpu, "membarrier-ipi")
        else:
            self.kernel.ipi_rseq(st.kt)  # interrupted kernel mode: no user entry
            self._work_at_trip_end(st)
