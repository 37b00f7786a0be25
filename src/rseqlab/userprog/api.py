"""What a simulated user program can do: the ``Thread`` handle.

A program is a Python function ``program(th)``. Every method that executes
user code (``insn``, ``load``, ``store``, ``compute``) is an instruction
boundary at a known IP where an interrupt may land; every syscall method is
a full kernel round trip through the personality. If the kernel resumes the
thread at a critical section's abort IP, the method raises
:class:`~rseqlab.machine.interface.RseqAbort`, which the section's code catches
exactly where the real code has its abort label.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..abi import NR_RSEQ_SLICE_YIELD, RSEQ_SIG, StructRseq, as_s32
from ..kernel import Entry
from ..kernel._base import SIG_BLOCK, SIG_SETMASK, SIG_UNBLOCK  # noqa: F401 (re-exported for programs)
from ..kernel._task import SA_NODEFER, SA_RESETHAND, SIG_DFL, SIG_IGN, SIGSEGV  # noqa: F401
from ..machine.interface import RseqAbort, State, TaskExit, WaitQueue
from .image import PLAIN_IP, handler_ip

if TYPE_CHECKING:
    from ..machine.core import BaseMachine, SimTask

MEMBARRIER_CMD_QUERY = 0
MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ = 1 << 7
MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ = 1 << 8
MEMBARRIER_CMD_FLAG_CPU = 1 << 0


class Pipe:
    """A pipe carrying whole messages (the simulated programs only count them)."""

    def __init__(self) -> None:
        self.queue: list[Any] = []
        self.readers = WaitQueue()


class Thread:
    """The handle a simulated program uses; one per simulated thread."""

    def __init__(self, machine: BaseMachine, st: SimTask) -> None:
        self.m = machine
        self.st = st
        self.kt = st.kt
        self.k = machine.kernel
        self.ip = st.kt.regs.ip or PLAIN_IP
        st.kt.regs.ip = self.ip
        self.interruptible = False
        self._frames = 0
        #: Interrupts taken from user mode so far (instructions use it to know they were cut).
        self.irqs = 0
        #: (start, period, user_ns) while a bulk burst of round trips is being served.
        self.burst: tuple[int, int, int] | None = None
        #: The registered rseq area this thread's sections use (0: none).
        self.area = 0
        #: Per-thread user-space state for programs (e.g. TCMalloc's cached slab pointer).
        self.local: dict[str, Any] = {}

    # ------------------------------------------------------------------
    @property
    def tid(self) -> int:
        return self.kt.pid

    @property
    def proc(self):
        return self.st.proc

    @property
    def mm(self):
        return self.kt.mm

    @property
    def image(self):
        return self.st.proc.image

    @property
    def rng(self):
        return self.m.rng

    @property
    def now(self) -> int:
        return self.m.now

    # ==================================================================
    # User-mode execution
    # ==================================================================
    def _exec(self, ip: int, ns: int) -> None:
        """Execute user code at ``ip`` for ``ns``: an interrupt may land before it completes."""
        self.ip = ip
        self.kt.regs.ip = ip
        self.m.wait(self.st, ns, user=True, on_irq=self._on_user_irq)
        # Retired: the IP moves past it (past a section's commit, that is post_commit_ip).
        self.ip = self.kt.regs.ip = ip + 1

    def insn(self, ip: int) -> None:
        self._exec(ip, self.m.config.insn_ns)

    def compute(self, ns: int, ip: int = PLAIN_IP) -> None:
        """A CPU burst in user mode (a loop, or non-rseq work)."""
        if ns > 0:
            self._exec(ip, ns)

    def load(self, addr: int, size: int = 8, *, ip: int = PLAIN_IP, signed: bool = False) -> int:
        self.insn(ip)
        while True:
            value = self.mm.read(addr, size, faults_allowed=False)
            if value is not None:
                return as_s32(value) if signed and size == 4 else value
            self._user_fault(addr, size, write=False)

    def store(self, addr: int, value: int, size: int = 8, *, ip: int = PLAIN_IP) -> None:
        self.insn(ip)
        while not self.mm.write(addr, size, value, faults_allowed=False):
            self._user_fault(addr, size, write=True)

    def add(self, addr: int, delta: int, size: int = 8, *, ip: int = PLAIN_IP) -> None:
        """One non-atomic read-modify-write instruction (``addq %reg, (mem)`` without lock).

        It reads when it starts and writes when it completes, so another CPU's
        store in between is lost, as on hardware. An interrupt lands before the
        instruction: it is then re-executed (or aborted), re-reading memory.
        """
        mask = (1 << (8 * size)) - 1
        while True:
            value = self.mm.read(addr, size, faults_allowed=False)
            if value is None:
                self._user_fault(addr, size, write=True)
                continue
            irqs = self.irqs
            self.insn(ip)
            if self.irqs != irqs:
                continue  # interrupted before the instruction retired: execute it again
            if self.mm.write(addr, size, (value + delta) & mask, faults_allowed=False):
                return
            self._user_fault(addr, size, write=True)

    def round_trips(self, count: int, user_ns: int, kernel_ns: int, *, entry: str = Entry.SYSCALL,
                    bulk: bool = True) -> None:
        """``count`` times: ``user_ns`` of user code, then a kernel entry (a fast syscall,
        or a minor page fault with ``Entry.EXCEPTION``) that stays ``kernel_ns``.

        With ``bulk`` the trips nothing interrupts are counted at once
        (:meth:`Kernel.bulk_round_trips`); an interrupt splits the burst at the
        instant it lands, in user or kernel mode, and that trip takes the full
        path. The timeline and every counter equal ``bulk=False``, which runs
        each trip through the kernel one by one.
        """
        if not bulk:
            for _ in range(count):
                self.compute(user_ns, self.ip)
                self._trip(entry, kernel_ns)
            return
        period = user_ns + kernel_ns
        m, k, kt = self.m, self.k, self.kt
        done = 0
        kt.regs.ip = self.ip
        while done < count:
            if kt.syscall_work and entry is Entry.SYSCALL:
                # A granted slice extension arms syscall entry work: this trip takes the full path.
                self.compute(user_ns, self.ip)
                self._trip(entry, kernel_ns)
                done += 1
                kt.regs.ip = self.ip
                continue
            start = m.now
            self.burst = (start, period, user_ns)
            try:
                kind = m.wait_once(self.st, (count - done) * period) if period else None
            finally:
                self.burst = None
            if kind is None:
                self._return_to_user(k.bulk_round_trips(kt, count - done, entry), self.ip)
                return
            full, pos = burst_position(m.now - start, period)
            self._return_to_user(k.bulk_round_trips(kt, full, entry), self.ip)
            done += full + 1
            if user_ns and pos <= user_ns:  # landed in user code: a user interrupt, then finish the trip
                self._on_user_irq(kind)
                self.compute(user_ns - pos, self.ip)
                self._trip(entry, kernel_ns)
            else:  # landed during the kernel part of this trip
                kt.regs.ip = self.ip
                k.enter_from_user_mode(kt, entry)
                self._on_kernel_irq(kind)
                m.wait(self.st, period - pos, user=False, on_irq=self._on_kernel_irq)
                self._return_to_user(k.exit_to_user_mode(kt, entry), self.ip)

    def in_user_mode(self) -> bool:
        """Whether the thread runs user code now (inside a bulk burst: by its position)."""
        if self.burst is None:
            return self.kt.in_user
        start, period, user_ns = self.burst
        _, pos = burst_position(self.m.now - start, period)
        return bool(user_ns) and pos <= user_ns

    def end_of_trip(self) -> int | None:
        """In a bulk burst, the instant the current round trip returns to user space."""
        if self.burst is None:
            return None
        start, period, _ = self.burst
        full, _ = burst_position(self.m.now - start, period)
        return start + (full + 1) * period

    def _trip(self, entry: str, kernel_ns: int) -> None:
        k, kt = self.k, self.kt
        kt.regs.ip = self.ip
        k.enter_from_user_mode(kt, entry)
        self.m.wait(self.st, kernel_ns, user=False, on_irq=self._on_kernel_irq)
        self._return_to_user(k.exit_to_user_mode(kt, entry), self.ip)

    def execve(self, program: Callable[[Thread], Any]) -> Any:
        """execve() of a new image running ``program``: rseq is reset, the libc registers again."""

        def work() -> int:
            self.k.execve(self.kt)
            self.m.exec_image(self.st)
            self.area = 0
            self._frames = 0
            return 0

        self.syscall(work)
        runtime = self.st.proc.runtime
        if runtime is not None:
            runtime.thread_start(self)
        return program(self)

    def cmpxchg(self, addr: int, old: int, new: int, size: int = 8, *, ip: int = PLAIN_IP) -> int:
        """``lock cmpxchg``: one atomic instruction; returns the value it found.

        The read, compare and write happen at the same instant, after the
        instruction's time has passed (an interrupt lands before it, never inside).
        """
        self.insn(ip)
        while True:
            value = self.mm.read(addr, size, faults_allowed=False)
            if value is None:
                self._user_fault(addr, size, write=True)
                continue
            if value != old:
                return value
            if self.mm.write(addr, size, new, faults_allowed=False):
                return value
            self._user_fault(addr, size, write=True)

    def _user_fault(self, addr: int, size: int, *, write: bool) -> None:
        """A page fault from user mode: an exception entry, maybe I/O, then the exit work."""
        k, kt = self.k, self.kt
        k.enter_from_user_mode(kt, Entry.EXCEPTION)
        self.m.user_irqs += 1
        resolved, major = self.mm.fault_in(addr, size, write=write)
        if not resolved:
            k.force_sig(kt, SIGSEGV)
        elif major and self.m.config.major_fault_ns:
            self._sleep_in_kernel(self.m.config.major_fault_ns, interruptible=False)
        self._return_to_user(k.irqentry_exit_to_user_mode(kt), self.ip)

    def _on_user_irq(self, kind: str) -> None:
        self.irqs += 1
        k, kt = self.k, self.kt
        k.enter_from_user_mode(kt, Entry.IRQ)
        self.m.user_irqs += 1
        if kind == "tick":
            self.m.scheduler_tick(self.st)
        elif kind == "membarrier-ipi":
            k.ipi_rseq(kt)
        elif kind == "hrtimer":
            self.m.run_hrtimer(self.m.cpus[kt.cpu])
        self._return_to_user(k.irqentry_exit_to_user_mode(kt), self.ip)

    def _on_kernel_irq(self, kind: str) -> None:
        if kind == "tick":
            self.m.scheduler_tick(self.st)
        elif kind == "membarrier-ipi":
            self.k.ipi_rseq(self.kt)
        elif kind == "hrtimer":
            self.m.run_hrtimer(self.m.cpus[self.kt.cpu])

    def _return_to_user(self, returned: bool, expected_ip: int) -> None:
        """Back in user mode: run handler frames the kernel set up, then check the IP."""
        if not returned:
            self.st.proc.killed_by = self.kt.killed_by
            raise TaskExit
        kt = self.kt
        while len(kt.sigframes) > self._frames:
            self._run_handler()
        if kt.regs.ip != expected_ip:
            if kt.regs.ip in self.image.abort_ips:
                self.ip = kt.regs.ip
                raise RseqAbort(kt.regs.ip)
            raise RuntimeError(f"rseqlab bug: kernel moved IP {expected_ip:#x} -> {kt.regs.ip:#x}")

    def _run_handler(self) -> None:
        """Run the handler of the newest frame, then ``rt_sigreturn()`` from it.

        Frames below it belong to outer contexts: when several signals were set
        up on one exit, each handler's sigreturn resumes the previous handler,
        whose own frame the outer loop runs next.
        """
        kt = self.kt
        index = len(kt.sigframes) - 1
        sig = kt.sigframes[index].sig
        handler = self.st.proc.handlers.get(sig)
        saved_frames, outer_ip = self._frames, self.ip
        self._frames = index + 1
        try:
            if handler is not None:
                self.ip = handler_ip(sig)
                handler(self, sig)
        finally:
            self._frames = saved_frames
        # rt_sigreturn(): restores the interrupted context, possibly an abort IP.
        k = self.k
        kt.regs.ip = self.ip
        k.enter_from_user_mode(kt, Entry.SYSCALL)
        k.sigreturn(kt)
        resumed = kt.regs.ip
        self._frames, self.ip = index, resumed
        try:
            self._return_to_user(k.syscall_exit_to_user_mode(kt), resumed)
        finally:
            self._frames, self.ip = saved_frames, outer_ip

    # ==================================================================
    # Syscalls
    # ==================================================================
    def syscall(self, work: Callable[[], int] | None = None, *, nr: int = -1) -> int:
        """One syscall (number ``nr``: only the slice extension's entry work looks at it):
        ``work()`` runs in kernel mode (it may block) and gives the result."""
        k, kt = self.k, self.kt
        kt.regs.ip = self.ip
        k.enter_from_user_mode(kt, Entry.SYSCALL, nr)
        ret = work() if work is not None else 0
        self.m.wait(self.st, self.m.config.syscall_ns, user=False, on_irq=self._on_kernel_irq)
        self._return_to_user(k.syscall_exit_to_user_mode(kt), self.ip)
        return ret

    def _sleep_in_kernel(self, ns: int, *, interruptible: bool = True) -> int:
        st = self.st
        m = self.m
        token = object()
        st.wake_token = token

        def expire() -> None:
            if getattr(st, "wake_token", None) is token and st.state is State.BLOCKED:
                m.wake(st)

        m.sim.after(ns, expire)
        self.interruptible = interruptible
        st.interrupted_by_signal = False
        m.block(st)
        self.interruptible = False
        st.wake_token = None
        return -errno.EINTR if st.interrupted_by_signal else 0

    def getpid(self) -> int:
        return self.syscall(lambda: self.st.proc.pid)

    def sleep(self, ns: int) -> int:
        """nanosleep()/poll(NULL, 0, ms): block, wake on the timer (or a signal: -EINTR)."""
        return self.syscall(lambda: self._sleep_in_kernel(ns))

    def sched_yield(self) -> int:
        def work() -> int:
            self.m.schedule(self.kt)
            return 0

        return self.syscall(work)

    def getcpu(self) -> int:
        return self.syscall(lambda: self.kt.cpu)

    def getcpu_node(self) -> tuple[int, int]:
        """getcpu(&cpu, &node): both from one syscall."""
        got: list[tuple[int, int]] = []

        def work() -> int:
            got.append((self.kt.cpu, self.k.cpu_to_node(self.kt.cpu)))
            return 0

        self.syscall(work)
        return got[0]

    def task_work(self) -> int:
        """A syscall that leaves task_work behind (munmap of a file's last mapping: deferred fput)."""
        return self.syscall(lambda: self.k.task_work_add(self.kt) or 0)

    def rseq(self, area: int, length: int, flags: int, sig: int = RSEQ_SIG) -> int:
        return self.syscall(lambda: self.k.sys_rseq(self.kt, area, length, flags, sig))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return self.syscall(lambda: self.k.sys_prctl(self.kt, option, arg2, arg3, arg4, arg5))

    def rseq_slice_yield(self) -> int:
        """Syscall 471: 1 if the entry work ended a granted extension by yielding, else 0."""
        return self.syscall(lambda: self.k.sys_rseq_slice_yield(self.kt), nr=NR_RSEQ_SLICE_YIELD)

    def sigaction(self, sig: int, handler: Callable[[Thread, int], None] | int | None, *,
                  flags: int = 0, mask=()) -> int:
        """rt_sigaction(): ``handler`` is a Python function run at the handler's IP, ``None``
        (SIG_DFL) or :data:`SIG_IGN`; ``flags`` may hold ``SA_NODEFER``/``SA_RESETHAND``,
        ``mask`` the signals blocked while the handler runs. The action is process-wide."""

        def work() -> int:
            if handler is None:
                self.st.proc.handlers.pop(sig, None)
                self.k.sigaction(self.kt, sig, SIG_DFL)
            elif handler == SIG_IGN:
                self.st.proc.handlers.pop(sig, None)
                self.k.sigaction(self.kt, sig, SIG_IGN)
                # do_sigaction(): a newly ignored signal is flushed from every thread's queue.
                for t in self.st.proc.threads:
                    if sig in t.kt.pending:
                        t.kt.pending.remove(sig)
                        self.k.recalc_sigpending(t.kt)
            else:
                self.st.proc.handlers[sig] = handler
                self.k.sigaction(self.kt, sig, handler_ip(sig), flags=flags, mask=mask)
            for t in self.st.proc.threads:  # threads made before share the table already
                if t.kt.handlers is not self.kt.handlers:
                    t.kt.handlers, t.kt.sa_flags, t.kt.sa_mask = self.kt.handlers, self.kt.sa_flags, self.kt.sa_mask
            return 0

        return self.syscall(work)

    def sigprocmask(self, how: int, sigs=()) -> frozenset[int]:
        """rt_sigprocmask(SIG_BLOCK / SIG_UNBLOCK / SIG_SETMASK): this thread's mask; returns
        the old one. Unblocking a pending signal delivers it at this syscall's return."""
        old: list[frozenset[int]] = []
        self.syscall(lambda: old.append(self.k.sigprocmask(self.kt, how, sigs)) or 0)
        return old[0]

    def kill(self, target: SimTask, sig: int) -> int:
        return self.syscall(lambda: self.m.kill(target, sig))

    def raise_signal(self, sig: int) -> int:
        return self.kill(self.st, sig)

    def membarrier(self, cmd: int, flags: int = 0, cpu_id: int = 0) -> int:
        def work() -> int:
            proc = self.st.proc
            if cmd == MEMBARRIER_CMD_QUERY:
                return MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ
            if cmd == MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ:
                proc.membarrier_rseq_registered = True
                return 0
            if cmd != MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ or flags & ~MEMBARRIER_CMD_FLAG_CPU:
                return -errno.EINVAL
            if not proc.membarrier_rseq_registered:
                return -errno.EPERM
            target = None
            if flags & MEMBARRIER_CMD_FLAG_CPU:
                if not 0 <= cpu_id < self.m.config.cpus:
                    return -errno.ENXIO
                target = cpu_id
            if self.m.membarrier_rseq(self.st, target):
                # The IPIs were queued at this instant (Prio.IPI); wait for them to complete.
                self.m.wait(self.st, self.m.config.ipi_wait_ns, user=False, on_irq=self._on_kernel_irq)
            return 0

        return self.syscall(work)

    def setaffinity(self, cpus) -> int:
        def work() -> int:
            allowed = frozenset(cpus)
            if not allowed or not allowed <= set(range(self.m.config.cpus)):
                return -errno.EINVAL
            self.st.affinity = allowed
            self.st.proc.mmcid.update_cpus_allowed(allowed)  # mm_update_cpus_allowed()
            if self.kt.cpu not in allowed:
                self.m.move_current(self.st)
            return 0

        return self.syscall(work)

    def spawn_thread(self, program: Callable[[Thread], Any], *, affinity=None):
        """pthread_create(): clone(CLONE_VM); the libc runtime registers rseq in the new thread."""
        runtime = self.st.proc.runtime

        def start(th: Thread) -> Any:
            if runtime is not None:
                runtime.thread_start(th)
            return program(th)

        return self.syscall(lambda: self.m.clone(self.st, start, thread=True, affinity=affinity))

    def fork(self, program: Callable[[Thread], Any]):
        """fork(): the child continues with ``program`` (its registration is inherited). Under
        glibc it is ``_Fork()``: clone(CLONE_CHILD_SETTID, child_tid=&THREAD_SELF->tid); without a
        libc runtime, a raw clone() with no TID pointer."""
        from .libc import GLIBC_TID_OFFSET, Glibc

        def start(th: Thread) -> Any:
            th.area = self.area
            return program(th)

        tid = self.st.tls + GLIBC_TID_OFFSET if isinstance(self.st.proc.runtime, Glibc) else 0
        return self.syscall(lambda: self.m.clone(self.st, start, thread=False, child_tid=tid))

    def vfork(self, program: Callable[[Thread], Any]):
        """vfork()/posix_spawn(): the child borrows this memory (no rseq: CLONE_VM resets it)
        and must exec; the parent sleeps until it has."""

        def work():
            child = self.m.clone(self.st, program, thread=False, vfork=True)
            done = child.proc.vfork_done = WaitQueue()
            while child.proc.vfork_done is done:
                self.m.block(self.st, done)
            return child

        return self.syscall(work)

    def join(self, target: SimTask) -> Any:
        def work() -> int:
            while target.state is not State.DEAD:
                self.m.block(self.st, target.joiners)
            return 0

        self.syscall(work)
        return target.result

    def pipe_write(self, pipe: Pipe, item: Any = 1) -> int:
        def work() -> int:
            pipe.queue.append(item)
            self.m.wake_one(pipe.readers)
            return 1

        return self.syscall(work)

    def pipe_read(self, pipe: Pipe) -> Any:
        result: list[Any] = []

        def work() -> int:
            while not pipe.queue:
                self.interruptible = False
                self.m.block(self.st, pipe.readers)
            result.append(pipe.queue.pop(0))
            return 1

        self.syscall(work)
        return result[0]

    def _exit(self) -> None:
        """exit(): the thread leaves; the kernel never returns to it."""
        self.k.enter_from_user_mode(self.kt, Entry.SYSCALL)
        self.k.do_exit(self.kt)
        raise TaskExit

    # ==================================================================
    # The rseq area, as user space reads it
    # ==================================================================
    def area_field(self, name: str, *, ip: int = PLAIN_IP) -> int:
        f = getattr(StructRseq, name.upper())
        return self.load(self.area + f.offset, f.size, ip=ip, signed=f.size == 4)

    def cpu_id_start(self) -> int:
        return self.area_field("cpu_id_start")

    def cpu_id(self) -> int:
        return self.area_field("cpu_id")

    def mm_cid(self) -> int:
        return self.area_field("mm_cid")

    def node_id(self) -> int:
        return self.area_field("node_id")


def burst_position(elapsed: int, period: int) -> tuple[int, int]:
    """(completed trips, position in the current one) ``elapsed`` ns into a burst.

    An event due at the very instant a segment ends lands before the segment
    completes (it sorts first), so an exact boundary belongs to the segment
    that is ending, as it does when the trips run one by one.
    """
    if elapsed == 0:
        return 0, 0
    full = (elapsed - 1) // period
    return full, elapsed - full * period
