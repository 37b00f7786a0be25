"""The scripted machine: one task and a scripted scheduler driving a kernel personality round
trip by round trip (``rseqlab explain``'s scenarios and the kernel model's property tests).

It owns one user task (plus a child after fork) and drives a kernel
personality through complete user -> kernel -> user round trips: a syscall
that may block or reschedule, an interrupt or exception that may preempt or
deliver a signal, the membarrier RSEQ IPI, fork, KVM guest entry. Where the
kernel would switch to another task, the machine plays the rest of the system:
the task is switched out and back in at the placement (CPU, mm_cid) the
scenario scripted.

The user program is reduced to what the kernel looks at: the instruction
pointer, the registered rseq area and one critical section, whose
descriptor, code and signature live in the task's simulated memory at fixed
addresses (:data:`LAYOUT`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..abi import NR_RSEQ_SLICE_YIELD, RSEQ_SIG, RseqFlag, StructRseq, StructRseqCs, in_rseq_cs
from ..kernel import Entry, Kernel, Task, Tif, Topology, make_kernel
from ..kernel._ftrace import Ftrace
from ..kernel._base import SIG_BLOCK
from ..kernel._task import CLONE_VM, SIG_IGN, SIGSEGV, SIGUSR1, RseqStats, TraceCounts
from ..usermem import PAGE_SIZE, AddressSpace


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the scripted task keeps things in its address space."""

    text: int = 0x40_1000  # r-x: code, including the critical section and its signature
    plain_ip: int = 0x40_1000  # ordinary code, outside any section
    cs_start: int = 0x40_1100  # the critical section [cs_start, cs_start + cs_len)
    cs_len: int = 0x40
    abort_ip: int = 0x40_1200  # the signature sits in the 4 bytes before it
    handler_ip: int = 0x40_1400  # the signal handler
    segv_handler_ip: int = 0x40_1500  # a SIGSEGV handler (crash reporter), installed on demand
    rodata: int = 0x60_0000  # r--: the rseq_cs descriptor
    tls: int = 0x7F00_0000_0000  # rw-: the registered struct rseq (the "TLS" area)
    #: glibc's ``struct pthread::tid``, which its fork() hands to clone() as the child TID
    #: pointer: on the page of the rseq area (as measured, ``userprog.libc.GLIBC_TID_OFFSET``).
    tid: int = 0x7F00_0000_02D0

    @property
    def area(self) -> int:
        return self.tls + 0x100

    @property
    def descriptor(self) -> int:
        return self.rodata


LAYOUT = Layout()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a switched-out task comes back: its CPU and the mm_cid it is handed."""

    cpu: int = 0
    mm_cid: int = 0


class ScriptedScheduler:
    """Plays "another task ran": every ``schedule()`` is a real switch-out and switch-in.

    The task comes back at the next placement of ``plan`` (migrating if the
    CPU differs), or where it was if the plan is empty.
    """

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.plan: deque[Placement] = deque()
        self.switches = 0
        #: The timer service (the slice extension's hrtimer): a clock the script moves
        #: (``ScriptedMachine.advance``) and one armed timer per CPU, fired by ``ScriptedMachine.hrtimer_interrupt``.
        self.now_ns = 0
        self.timers: dict[int, tuple[int, object]] = {}
        self.cancelled = 0

    def ktime_get_mono_fast_ns(self) -> int:
        return self.now_ns

    def hrtimer_start(self, cpu: int, expires_ns: int, callback) -> None:
        self.timers[cpu] = (expires_ns, callback)

    def hrtimer_try_to_cancel(self, cpu: int) -> bool:
        self.cancelled += cpu in self.timers
        return self.timers.pop(cpu, None) is not None

    def schedule(self, t: Task) -> None:
        t.tif &= ~Tif.NEED_RESCHED
        place = self.plan.popleft() if self.plan else Placement(t.cpu, t.mm_cid)
        self.switch(t, place)

    def switch(self, t: Task, place: Placement) -> None:
        k = self.kernel
        self.switches += 1
        k.prepare_task_switch(t)
        k.note(f"... another task runs; task {t.pid} comes back on CPU {place.cpu} with mm_cid {place.mm_cid}")
        if place.cpu != t.cpu:
            k.set_task_cpu(t, place.cpu)  # load balancing or wake-up on another CPU
        k.finish_task_switch_in(t, place.mm_cid)


class ScriptedMachine:
    """One task on a kernel personality, driven one round trip at a time."""

    def __init__(self, release: str, *, cpus: int = 2, nodes: int = 1, debug: bool = False,
                 layout: Layout = LAYOUT, **kernel_options) -> None:
        self.kernel = make_kernel(release, Topology.uniform(cpus, nodes), debug=debug, **kernel_options)
        self.sched = ScriptedScheduler(self.kernel)
        self.kernel.scheduler = self.sched
        self.layout = layout
        self._next_pid = 100
        self.task = self.kernel.new_task(self._pid(), self._address_space(), comm="bench")
        self.task.regs.ip = layout.plain_ip
        self.task.handlers[SIGUSR1] = layout.handler_ip
        self.tasks = [self.task]
        #: Signals whose handler ran and returned (``return_from_handlers``), in order.
        self.handlers_run: list[int] = []

    def start_measuring(self, *, ftrace: bool = True) -> None:
        """Zero every counter and access log; from now on the kernel's work is recorded."""
        k = self.kernel
        for t in self.tasks:
            t.stats = RseqStats()
            t.trace = TraceCounts()
            t.uaccess.clear()
        k.cpu_stats = [RseqStats() for _ in k.cpu_stats]
        k.trace_totals = TraceCounts()
        k.ftrace = Ftrace() if ftrace else None

    def _pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    def _address_space(self) -> AddressSpace:
        lay = self.layout
        mm = AddressSpace()
        mm.map(lay.text, PAGE_SIZE, writable=False)
        mm.map(lay.rodata, PAGE_SIZE, writable=False)
        mm.map(lay.tls, PAGE_SIZE)
        mm.poke(lay.abort_ip - 4, 4, RSEQ_SIG)
        d = lay.descriptor
        mm.poke(d + StructRseqCs.START_IP.offset, 8, lay.cs_start)
        mm.poke(d + StructRseqCs.POST_COMMIT_OFFSET.offset, 8, lay.cs_len)
        mm.poke(d + StructRseqCs.ABORT_IP.offset, 8, lay.abort_ip)
        return mm

    # ------------------------------------------------------------------
    # What the user program does (plain user-mode stores: no kernel accounting)
    # ------------------------------------------------------------------
    def enter_cs(self, t: Task | None = None, *, at: int = 0) -> None:
        """Arm the section (store the descriptor address) and run to ``cs_start + at``."""
        t = t or self.task
        t.mm.poke(self.layout.area + StructRseq.RSEQ_CS.offset, 8, self.layout.descriptor)
        t.regs.ip = self.layout.cs_start + at

    def leave_cs(self, t: Task | None = None) -> None:
        """Commit and move on: the section stays armed until the kernel clears it lazily."""
        t = t or self.task
        t.regs.ip = self.layout.plain_ip

    def in_cs(self, t: Task | None = None) -> bool:
        t = t or self.task
        return in_rseq_cs(t.regs.ip, self.layout.cs_start, self.layout.cs_len)

    def area(self, t: Task | None = None) -> dict[str, int]:
        """The rseq area as user space reads it now (registered or not)."""
        t = t or self.task
        return {f.name: t.mm.peek(self.layout.area + f.offset, f.size) for f in StructRseq.FIELDS}

    # ------------------------------------------------------------------
    # Round trips through the kernel
    # ------------------------------------------------------------------
    def syscall(self, t: Task | None = None, *, block: Placement | None = None,
                resched: Placement | None = None, work=None, nr: int = -1) -> int | None:
        """One syscall (number ``nr``: only the slice extension's entry work looks at it).
        ``work(kernel, task)`` runs in kernel mode and gives the return value;
        ``block`` sleeps and wakes at that placement; ``resched`` is a tick that preempts
        the task on its way out. Returns the syscall's value (None if the task died)."""
        t = t or self.task
        k = self.kernel
        k.enter_from_user_mode(t, Entry.SYSCALL, nr)
        ret = work(k, t) if work is not None else 0
        if block is not None:
            self.sched.switch(t, block)
        if resched is not None:
            self._need_resched(t, resched)
        return ret if k.syscall_exit_to_user_mode(t) else None

    def interrupt(self, t: Task | None = None, *, resched: Placement | None = None,
                  signal: int | None = None, entry: str = Entry.IRQ) -> bool:
        """An interrupt (or exception) from user mode; ``resched`` preempts the task,
        ``signal`` is queued meanwhile (as a kill from another CPU would)."""
        t = t or self.task
        k = self.kernel
        k.enter_from_user_mode(t, entry)
        if signal is not None:
            k.send_signal(t, signal)
        if resched is not None:
            self._need_resched(t, resched)
        return k.irqentry_exit_to_user_mode(t)

    def page_fault(self, t: Task | None = None, *, block: Placement) -> bool:
        """A user page fault that sleeps (I/O) and wakes at ``block``."""
        t = t or self.task
        k = self.kernel
        k.enter_from_user_mode(t, Entry.EXCEPTION)
        self.sched.switch(t, block)
        return k.irqentry_exit_to_user_mode(t)

    def membarrier_ipi(self, t: Task | None = None) -> bool:
        """Another thread's ``membarrier(PRIVATE_EXPEDITED_RSEQ)`` IPIs this task in user mode."""
        t = t or self.task
        k = self.kernel
        k.enter_from_user_mode(t, Entry.IRQ)
        k.ipi_rseq(t)
        return k.irqentry_exit_to_user_mode(t)

    def install_segv_handler(self, t: Task | None = None, *, block: bool = False,
                             ignore: bool = False) -> None:
        """A crash reporter's ``sigaction(SIGSEGV)`` (or ``SIG_IGN``), optionally blocked with
        ``sigprocmask``: plain syscalls with nothing pending, so no counter moves."""
        t = t or self.task
        handler = SIG_IGN if ignore else self.layout.segv_handler_ip
        self.syscall(t, work=lambda k, task: k.sigaction(task, SIGSEGV, handler) or 0)
        if block:
            self.syscall(t, work=lambda k, task: k.sigprocmask(task, SIG_BLOCK, {SIGSEGV}) and 0)

    def return_from_handlers(self, t: Task | None = None, *, limit: int = 8) -> None:
        """User space runs each outstanding handler (newest first) to its end and calls
        ``rt_sigreturn``, a full syscall round trip that may deliver more (or kill); at most
        ``limit`` handlers (a returning handler can be re-entered forever)."""
        t = t or self.task
        while t.sigframes and t.killed_by is None and limit > 0:
            limit -= 1
            self.handlers_run.append(t.sigframes[-1].sig)
            t.regs.ip = self.layout.plain_ip if t.sigframes[-1].sig != SIGSEGV else self.layout.segv_handler_ip
            self.syscall(t, work=lambda k, task: k.sigreturn(task) or 0)

    def advance(self, ns: int) -> None:
        """Time passes in user mode (the slice extension's clock; nothing else looks at it)."""
        self.sched.now_ns += ns

    def hrtimer_interrupt(self, t: Task | None = None, *, resched: Placement | None = None) -> bool:
        """The hrtimer interrupt on ``t``'s CPU at the armed timer's expiry (the clock moves
        there): the callback runs in the interrupt, then the return to user mode. ``resched``
        is where the task comes back if the exit path schedules."""
        t = t or self.task
        k = self.kernel
        expires, callback = self.sched.timers.pop(t.cpu)
        self.sched.now_ns = max(self.sched.now_ns, expires)
        k.enter_from_user_mode(t, Entry.IRQ)
        callback(t)
        if resched is not None:
            self.sched.plan.append(resched)
        return k.irqentry_exit_to_user_mode(t)

    def _need_resched(self, t: Task, place: Placement) -> None:
        t.tif |= Tif.NEED_RESCHED
        self.sched.plan.append(place)

    # ------------------------------------------------------------------
    # Common syscalls
    # ------------------------------------------------------------------
    def register(self, t: Task | None = None, *, length: int = 32, sig: int = RSEQ_SIG,
                 addr: int | None = None) -> int | None:
        a = self.layout.area if addr is None else addr
        return self.syscall(t, work=lambda k, task: k.sys_rseq(task, a, length, 0, sig))

    def unregister(self, t: Task | None = None, *, length: int = 32, sig: int = RSEQ_SIG) -> int | None:
        a = self.layout.area
        return self.syscall(t, work=lambda k, task: k.sys_rseq(task, a, length, RseqFlag.UNREGISTER, sig))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0,
              t: Task | None = None) -> int | None:
        return self.syscall(t, work=lambda k, task: k.sys_prctl(task, option, arg2, arg3, arg4, arg5))

    def rseq_slice_yield(self, t: Task | None = None, *, resched: Placement | None = None) -> int | None:
        """Syscall 471; ``resched`` is where the task comes back if its entry work schedules."""
        if resched is not None:
            self.sched.plan.append(resched)
        return self.syscall(t, work=lambda k, task: k.sys_rseq_slice_yield(task), nr=NR_RSEQ_SLICE_YIELD)

    def spawn_child(self, *, clone_flags: int = 0, child_place: Placement | None = None,
                    child_tid: int = 0) -> Task:
        """The parent forks (one syscall); the child is switched in (``schedule_tail()``
        included) and ready to return."""
        parent = self.task
        k = self.kernel
        children: list[Task] = []

        def do_fork(kk: Kernel, p: Task) -> int:
            children.append(kk.copy_process(p, self._pid(), clone_flags, child_tid))
            return children[0].pid

        self.syscall(parent, work=do_fork)
        child = children[0]
        self.tasks.append(child)
        default_cid = parent.mm_cid + 1 if clone_flags & CLONE_VM else 0
        place = child_place or Placement(parent.cpu, default_cid)
        if place.cpu != child.cpu:
            k.set_task_cpu(child, place.cpu)
        k.finish_task_switch_in(child, place.mm_cid)
        return child

    def child_first_return(self, child: Task) -> bool:
        """``ret_from_fork``: the child's first return to user mode, from the fork syscall."""
        return self.kernel.syscall_exit_to_user_mode(child)

    def kvm_run(self, *, block: Placement) -> int | None:
        """A vCPU thread's ``ioctl(KVM_RUN)``: it sleeps, wakes at ``block``, enters the
        guest (handling pending work without user regs), exits the guest and returns."""

        def run(k: Kernel, t: Task) -> int:
            self.sched.switch(t, block)
            k.kvm_enter_guest(t)
            return 0

        return self.syscall(work=run)


__all__ = ["LAYOUT", "ScriptedMachine", "Layout", "Placement", "ScriptedScheduler"]
