"""Kernel-side task state shared by every personality (a slice of ``task_struct``).

Only what the RSEQ paths read or write is here. The personality keeps its own
rseq state in ``Task.rseq`` (6.18: pointer, length, signature and event mask;
6.19: ``struct rseq_data``); everything else is the generic kernel's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..usermem import AddressSpace

# Signal numbers (x86_64, asm/signal.h) used by the model.
SIGUSR1 = 10
SIGSEGV = 11
SIGUSR2 = 12
SIGALRM = 14
SIGCHLD = 17
SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSYS = 4, 5, 7, 8, 31
SIGCONT, SIGURG, SIGWINCH = 18, 23, 28
SIGNAL_NAMES = {SIGUSR1: "SIGUSR1", SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGALRM: "SIGALRM", SIGCHLD: "SIGCHLD"}
#: Signals whose default action is to ignore them (``sig_kernel_ignore()``); every other
#: one the model uses terminates.
DEFAULT_IGNORED = frozenset({SIGCHLD, SIGCONT, SIGURG, SIGWINCH})
#: ``SYNCHRONOUS_MASK`` (kernel/signal.c): dequeued before any other pending signal.
SYNCHRONOUS = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGSYS})
#: ``sa_handler`` values that are not an address (include/uapi/asm-generic/signal-defs.h).
SIG_DFL = 0
SIG_IGN = 1
#: ``sa_flags`` bits the model acts on (x86_64 values).
SA_NODEFER = 0x4000_0000
SA_RESETHAND = 0x8000_0000

# clone() flags the model looks at.
CLONE_VM = 0x100
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000
#: glibc's fork() passes it with the address of its ``struct pthread::tid`` (``_Fork``).
CLONE_CHILD_SETTID = 0x0100_0000


class Tif:
    """Thread-info work flags that the exit-to-user loop acts on.

    The bit values are this model's; only the names and meanings are the
    kernel's. ``RSEQ`` exists only in 6.19 with generic TIF bits (spec §0.1).
    Plain ints, not an ``IntFlag``: they are tested on every exit to user.
    """

    NOTIFY_RESUME = 1 << 0
    SIGPENDING = 1 << 1
    NEED_RESCHED = 1 << 2
    RSEQ = 1 << 3


#: ``EXIT_TO_USER_MODE_WORK``: any of these sends the exit path into the loop.
EXIT_TO_USER_MODE_WORK = Tif.NOTIFY_RESUME | Tif.SIGPENDING | Tif.NEED_RESCHED | Tif.RSEQ
#: The inner loop's condition: ``TIF_RSEQ`` alone is handled after the loop (6.19).
EXIT_TO_USER_MODE_WORK_LOOP = EXIT_TO_USER_MODE_WORK & ~Tif.RSEQ


class Entry:
    """How a task entered the kernel from user mode (plain strings: passed on every entry,
    and an enum member lookup costs ten times a class attribute on CPython 3.11)."""

    SYSCALL = "syscall"
    IRQ = "interrupt"
    EXCEPTION = "exception"


#: ``SYSCALL_WORK_SYSCALL_RSEQ_SLICE`` (``task->syscall_work``): a granted slice extension makes
#: the next syscall entry run ``rseq_syscall_enter_work()``. The bit value is the model's.
SYSCALL_WORK_RSEQ_SLICE = 1 << 0

COUNTERS = ("exit", "signal", "slowpath", "fastpath", "ids", "cs", "clear", "fixup")
#: The time-slice extension's counters (7.0+, ``CONFIG_RSEQ_SLICE_EXTENSION=y`` only; shown
#: only by kernels built with it, so every other kernel's output is as it was).
SLICE_COUNTERS = ("s_granted", "s_expired", "s_revoked", "s_yielded", "s_aborted")
ALL_COUNTERS = COUNTERS + SLICE_COUNTERS
#: debugfs ``/sys/kernel/debug/rseq/stats`` labels, in the kernel's order.
DEBUGFS_LABELS = {
    "exit": "exit",
    "signal": "signal",
    "slowpath": "slowp",
    "fastpath": "fastp",
    "ids": "ids",
    "cs": "cs",
    "clear": "clear",
    "fixup": "fixup",
    "s_granted": "sgrant",
    "s_expired": "sexpir",
    "s_revoked": "srevok",
    "s_yielded": "syield",
    "s_aborted": "sabort",
}
TRACEPOINTS = ("rseq_update", "rseq_ip_fixup")


@dataclass(slots=True)
class RseqStats:
    """``struct rseq_stats`` (6.19, ``CONFIG_RSEQ_STATS``); 6.18 is instrumented per spec §2.10."""

    exit: int = 0
    signal: int = 0
    slowpath: int = 0
    fastpath: int = 0
    ids: int = 0
    cs: int = 0
    clear: int = 0
    fixup: int = 0
    s_granted: int = 0
    s_expired: int = 0
    s_revoked: int = 0
    s_yielded: int = 0
    s_aborted: int = 0

    def as_dict(self, names: tuple[str, ...] = COUNTERS) -> dict[str, int]:
        """The counters ``names`` (a kernel's ``counters``: the slice ones only if it has them)."""
        return {name: getattr(self, name) for name in names}

    def add(self, other: RseqStats) -> None:
        for name in ALL_COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def debugfs(self, names: tuple[str, ...] = COUNTERS) -> str:
        """The text ``cat /sys/kernel/debug/rseq/stats`` prints (``rseq_stats_show()``; ``names``:
        the kernel's counters, the five slice ones only with ``CONFIG_RSEQ_SLICE_EXTENSION``):
        per line the label, its colon padded to eight columns, then the sum over every possible
        CPU right-aligned in 16 (``%16lu``)."""
        return "".join(f"{DEBUGFS_LABELS[n] + ':':<8}{getattr(self, n):>16}\n" for n in names)


@dataclass(slots=True)
class TraceCounts:
    """How often each ``rseq:*`` tracepoint fired."""

    rseq_update: int = 0
    rseq_ip_fixup: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"rseq_update": self.rseq_update, "rseq_ip_fixup": self.rseq_ip_fixup}


@dataclass(slots=True)
class UserAccessLog:
    """Every kernel access to user memory on behalf of a task, by field label."""

    reads: Counter = field(default_factory=Counter)
    writes: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)

    def clear(self) -> None:
        self.reads.clear()
        self.writes.clear()
        self.faults.clear()


@dataclass(slots=True)
class SignalFrame:
    """A signal handler frame: what ``sigreturn`` will restore (the IP and ``uc_sigmask``)."""

    sig: int
    saved_ip: int
    saved_blocked: frozenset[int] = frozenset()


@dataclass(slots=True)
class Regs:
    """The user register state the RSEQ code looks at (``struct pt_regs``)."""

    ip: int = 0


class Task:
    """One schedulable thread of the simulated machine, as the kernel sees it."""

    def __init__(self, pid: int, mm: AddressSpace, *, tgid: int | None = None, cpu: int = 0,
                 mm_cid: int = 0, comm: str = "task") -> None:
        self.pid = pid
        self.tgid = pid if tgid is None else tgid
        self.comm = comm
        self.mm = mm
        self.cpu = cpu  # task_cpu()
        self.mm_cid = mm_cid  # task_mm_cid()
        self.regs = Regs()
        self.tif = 0  # Tif bits
        self.syscall_work = 0  # SYSCALL_WORK_* bits
        self.in_user = True
        self.exiting = False  # PF_EXITING
        self.killed_by: int | None = None  # the signal that ended the task, if any
        self.pending: list[int] = []  # standard signals: a set, kept in arrival order
        self.blocked: set[int] = set()  # the thread's signal mask (task_struct::blocked)
        #: ``sighand->action[]``, shared by the threads of a process (CLONE_SIGHAND):
        #: signal -> handler address or SIG_IGN (absent: SIG_DFL), and its sa_flags / sa_mask.
        self.handlers: dict[int, int] = {}
        self.sa_flags: dict[int, int] = {}
        self.sa_mask: dict[int, frozenset[int]] = {}
        self.sigframes: list[SignalFrame] = []
        self.pagefault_disabled = 0
        #: ``set_child_tid`` (CLONE_CHILD_SETTID's user address; 0: none), written by
        #: ``schedule_tail()`` when the new task first runs (``ret_from_fork`` still ahead: True).
        self.set_child_tid = 0
        self.ret_from_fork = False
        self.rseq: Any = None  # the personality's per-task rseq state
        self.stats = RseqStats()
        self.trace = TraceCounts()
        self.uaccess = UserAccessLog()

    def __repr__(self) -> str:
        return f"Task(pid={self.pid}, cpu={self.cpu}, mm_cid={self.mm_cid})"
