"""The scenarios of spec §4, runnable on any personality (``rseqlab explain``).

Each scenario sets the scripted machine's task up (usually: registered, first exit done, so
the area holds valid IDs), zeroes the counters, then plays one situation and
reports what the kernel did on the way back to user space: the call graph,
every user access by field, the counters, the tracepoints, the resulting IP
and rseq area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .abi import (
    PR_RSEQ_SLICE_EXT_ENABLE,
    PR_RSEQ_SLICE_EXTENSION,
    PR_RSEQ_SLICE_EXTENSION_SET,
    RSEQ_SIG,
    StructRseq,
    as_s32,
    slice_ctrl,
)
from .errors import BadInput
from .kernel import Task, kernel_class
from .kernel._task import CLONE_CHILD_SETTID, CLONE_VM, SIGNAL_NAMES, SIGUSR1
from .machine.scripted import Placement, ScriptedMachine
from .usermem import PAGE_SIZE


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    row: str  # the spec §4 row it plays
    summary: str
    play: Callable[[ScriptedMachine], Task]  # sets up, starts measuring, acts; returns the task to report


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, row: str, summary: str):
    def register(play: Callable[[ScriptedMachine], Task]) -> Callable[[ScriptedMachine], Task]:
        SCENARIOS[name] = Scenario(name, row, summary, play)
        return play

    return register


def _registered(b: ScriptedMachine) -> Task:
    """A task that registered its area and has returned to user once since."""
    b.register()
    return b.task


def _here(t: Task) -> Placement:
    return Placement(t.cpu, t.mm_cid)


# ----------------------------------------------------------------------
# The scenarios the issue names, in spec-table order
# ----------------------------------------------------------------------
@scenario("syscall-exit", "1", "syscall returns with nothing pending")
def _syscall_exit(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.syscall()
    return t


@scenario("notify-resume-other", "1b", "syscall exit with TIF_NOTIFY_RESUME from task_work (deferred fput)")
def _notify_resume_other(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.syscall(work=lambda k, task: k.task_work_add(task))
    return t


@scenario("block-same-cpu", "2", "syscall blocks, wakes on the same CPU with the same mm_cid")
def _block_same_cpu(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.syscall(block=_here(t))
    return t


@scenario("preempt-user-same-cpu", "3", "timer interrupt from user preempts; back on the same CPU (glibc: rseq_cs == 0)")
def _preempt_user_same_cpu(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.interrupt(resched=_here(t))
    return t


@scenario("migrate", "4", "preempted from user and moved to another CPU by the load balancer")
def _migrate(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.interrupt(resched=Placement(1, t.mm_cid))
    return t


@scenario("mmcid-change", "5", "syscall blocks, wakes on the same CPU with a different mm_cid")
def _mmcid_change(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.syscall(block=Placement(t.cpu, t.mm_cid + 1))
    return t


@scenario("signal", "6", "signal with a handler, delivered on return from an interrupt; IP not in a section")
def _signal(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.interrupt(signal=SIGUSR1)
    return t


@scenario("irq-no-resched", "7", "interrupt from user, returns without rescheduling")
def _irq_no_resched(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.interrupt()
    return t


@scenario("fork-child-cow", "8", "first return of a raw-clone() child (no CLONE_CHILD_SETTID); "
          "its rseq page is copy-on-write")
def _fork_child_cow(b: ScriptedMachine) -> Task:
    _registered(b)
    child = b.spawn_child()
    b.start_measuring()
    b.child_first_return(child)
    return child


@scenario("fork-child-settid", "8", "first return of a glibc fork() child; schedule_tail()'s TID store "
          "made its rseq page private")
def _fork_child_settid(b: ScriptedMachine) -> Task:
    _registered(b)
    child = b.spawn_child(clone_flags=CLONE_CHILD_SETTID, child_tid=b.layout.tid)
    b.start_measuring()
    b.child_first_return(child)
    return child


@scenario("preempt-in-cs", "9", "preempted from user inside a critical section, same CPU")
def _preempt_in_cs(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs(at=8)
    b.start_measuring()
    b.interrupt(resched=_here(t))
    return t


@scenario("migrate-in-cs", "9", "preempted from user inside a critical section and moved to another CPU")
def _migrate_in_cs(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs(at=8)
    b.start_measuring()
    b.interrupt(resched=Placement(1, t.mm_cid))
    return t


@scenario("signal-in-cs", "10", "signal delivered on return from an interrupt inside a critical section")
def _signal_in_cs(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs(at=8)
    b.start_measuring()
    b.interrupt(signal=SIGUSR1)
    return t


@scenario("syscall-in-cs", "11", "a section illegally makes a syscall that blocks and wakes on another CPU")
def _syscall_in_cs(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs(at=8)
    b.start_measuring()
    b.syscall(block=Placement(1, t.mm_cid))
    return t


@scenario("register", "12", "sys_rseq registers a 32-byte area; first return to user")
def _register(b: ScriptedMachine) -> Task:
    b.start_measuring()
    b.register()
    return b.task


@scenario("unregister", "13", "sys_rseq(RSEQ_FLAG_UNREGISTER)")
def _unregister(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.unregister()
    return t


@scenario("membarrier-ipi", "14", "membarrier PRIVATE_EXPEDITED_RSEQ IPI hits the task in user mode")
def _membarrier_ipi(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.membarrier_ipi()
    return t


# ----------------------------------------------------------------------
# The table's other cases
# ----------------------------------------------------------------------
@scenario("preempt-user-cs-outside", "3", "preempted from user with rseq_cs still armed, IP past the section")
def _preempt_user_cs_outside(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs()
    b.leave_cs()
    b.start_measuring()
    b.interrupt(resched=_here(t))
    return t


@scenario("migrate-syscall", "4", "syscall blocks and wakes on another CPU")
def _migrate_syscall(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.syscall(block=Placement(1, t.mm_cid))
    return t


@scenario("signal-syscall", "6", "self-sent signal (kill) delivered at syscall exit")
def _signal_syscall(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.syscall(work=lambda k, task: k.send_signal(task, SIGUSR1))
    return t


@scenario("thread-create", "8b", "first return of a new thread (CLONE_VM): no rseq until it registers")
def _thread_create(b: ScriptedMachine) -> Task:
    _registered(b)
    child = b.spawn_child(clone_flags=CLONE_VM)
    b.start_measuring()
    b.child_first_return(child)
    return child


@scenario("preempt-in-cs-fault", "9", "preempted in a section whose descriptor page was swapped out")
def _preempt_in_cs_fault(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs(at=8)
    t.mm.evict(b.layout.rodata, PAGE_SIZE)
    b.start_measuring()
    b.interrupt(resched=_here(t))
    return t


@scenario("signal-in-cs-preempted", "10", "signal and preemption in the same interrupt return, inside a section")
def _signal_in_cs_preempted(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.enter_cs(at=8)
    b.start_measuring()
    b.interrupt(signal=SIGUSR1, resched=_here(t))
    return t


@scenario("kvm-guest-entry", "15", "vCPU thread: KVM_RUN sleeps, wakes on another CPU, enters the guest, returns")
def _kvm_guest_entry(b: ScriptedMachine) -> Task:
    t = _registered(b)
    b.start_measuring()
    b.kvm_run(block=Placement(1, t.mm_cid))
    return t


# ----------------------------------------------------------------------
# Signals as the kernel sends them: a process with a SIGSEGV handler
# ----------------------------------------------------------------------
def _ro_area_migrated(b: ScriptedMachine) -> Task:
    """Registered, then the page holding the rseq area turns read-only (an mprotect()
    gone wrong), and a tick preempts the task, which comes back on the other CPU."""
    t = b.task
    t.mm.protect(b.layout.tls, PAGE_SIZE, writable=False)
    b.start_measuring()
    b.interrupt(resched=Placement(1, t.mm_cid))
    b.return_from_handlers()
    return t


@scenario("segv-handler-ro-area", "SEGV1", "crash reporter: SIGSEGV handler installed, rseq area read-only, "
          "preempted onto another CPU")
def _segv_handler_ro_area(b: ScriptedMachine) -> Task:
    """The ID write fails; the handler, if it gets to run, returns with rt_sigreturn.

    6.18: force_sigsegv(0) is a catchable SIGSEGV, but delivering it runs the handler pass
    again, which fails again: force_sigsegv(SIGSEGV) resets the action and queues SIGSEGV,
    yet the frame is still set up and signal_delivered() then blocks SIGSEGV, so the
    handler runs; its rt_sigreturn unblocks the pending SIGSEGV, now SIG_DFL: death.
    6.19: the slow path's force_sig(SIGSEGV) is delivered with only a CS check, which
    succeeds: the handler runs and returns, the task lives (with stale IDs). 7.1 (32-byte
    registration): legacy mode forces an ID rewrite after the delivery; it fails while
    SIGSEGV is blocked in its handler, so the action is reset, SIGSEGV unblocked, and the
    task dies before the handler runs."""
    _registered(b)
    b.install_segv_handler()
    return _ro_area_migrated(b)


@scenario("segv-handler-blocked", "SEGV2", "SIGSEGV handler installed but SIGSEGV blocked; rseq area read-only, "
          "preempted onto another CPU")
def _segv_handler_blocked(b: ScriptedMachine) -> Task:
    """force_sig() finds SIGSEGV blocked: the action is reset to SIG_DFL and the signal
    unblocked, so the handler never runs and the task dies on every kernel."""
    _registered(b)
    b.install_segv_handler(block=True)
    return _ro_area_migrated(b)


@scenario("segv-ignored", "SEGV3", "SIGSEGV ignored (SIG_IGN); rseq area read-only, preempted onto another CPU")
def _segv_ignored(b: ScriptedMachine) -> Task:
    """An ignored SIGSEGV is reset to SIG_DFL by force_sig(): the task dies on every kernel."""
    _registered(b)
    b.install_segv_handler(ignore=True)
    return _ro_area_migrated(b)


@scenario("segv-handler-bad-cs", "SEGV4", "SIGSEGV handler installed; preempted inside a section whose abort "
          "signature is wrong")
def _segv_handler_bad_cs(b: ScriptedMachine) -> Task:
    """The CS check fails on the exit path and fails again when the SIGSEGV is delivered
    (the IP is still inside the section): force_sigsegv(SIGSEGV) resets the action, but
    the frame is set up and SIGSEGV blocked during it, so the handler runs once and the
    task dies at its rt_sigreturn, on 6.18, 6.19 and 7.1 alike."""
    t = _registered(b)
    b.install_segv_handler()
    t.mm.poke(b.layout.abort_ip - 4, 4, 0xBAD5_1647)
    b.enter_cs(at=8)
    b.start_measuring()
    b.interrupt(resched=_here(t))
    b.return_from_handlers()
    return t


# ----------------------------------------------------------------------
# The time-slice extension (7.0+ with CONFIG_RSEQ_SLICE_EXTENSION; rows SL1-SL5)
# ----------------------------------------------------------------------
#: x86_64 ``getpid``: a syscall other than ``rseq_slice_yield`` inside a granted extension.
NR_GETPID = 39
#: The slice scenarios register 64 bytes (a v2 registration on 7.1) at the scripted task's area.
SLICE_RSEQ_LEN = 64


def _slice_requested(b: ScriptedMachine) -> Task:
    """Registered with 64 bytes, the extension enabled by prctl, and ``request`` set, as a
    thread does on entering its critical section (a kernel without it refuses the prctl)."""
    t = b.task
    a = b.layout.area
    b.syscall(work=lambda k, task: k.sys_rseq(task, a, SLICE_RSEQ_LEN, 0, RSEQ_SIG))
    ret = b.prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, PR_RSEQ_SLICE_EXT_ENABLE)
    b.kernel.note(f"prctl(PR_RSEQ_SLICE_EXTENSION, SET, ENABLE) = {ret}")
    t.mm.poke(a + StructRseq.SLICE_CTRL.offset, 4, slice_ctrl(request=1))
    return t


def _slice_granted(b: ScriptedMachine) -> Task:
    """As above, then a tick asks for a reschedule: a slice kernel grants instead."""
    t = _slice_requested(b)
    b.interrupt(resched=_here(t))
    return t


@scenario("slice-grant", "SL1", "slice extension requested; a tick's reschedule is replaced by a grant")
def _slice_grant(b: ScriptedMachine) -> Task:
    t = _slice_requested(b)
    b.start_measuring()
    b.interrupt(resched=_here(t))
    return t


@scenario("slice-expire", "SL2", "granted, the thread overruns: the slice hrtimer fires and forces the reschedule")
def _slice_expire(b: ScriptedMachine) -> Task:
    t = _slice_granted(b)
    b.start_measuring()
    if b.sched.timers.get(t.cpu) is None:  # nothing armed (no grant): a plain tick instead
        b.interrupt(resched=_here(t))
    else:
        b.hrtimer_interrupt(resched=_here(t))
    return t


@scenario("slice-syscall-revoke", "SL3", "granted, the thread makes another syscall (getpid): the grant ends at entry")
def _slice_syscall_revoke(b: ScriptedMachine) -> Task:
    t = _slice_granted(b)
    b.start_measuring()
    b.sched.plan.append(_here(t))
    b.syscall(nr=NR_GETPID)
    return t


@scenario("slice-yield", "SL4", "granted, the thread leaves its section and calls rseq_slice_yield()")
def _slice_yield(b: ScriptedMachine) -> Task:
    t = _slice_granted(b)
    b.start_measuring()
    ret = b.rseq_slice_yield(resched=_here(t))
    b.kernel.note(f"rseq_slice_yield() = {ret}")
    return t


@scenario("slice-refused", "SL5", "slice requested, but a signal is pending with the reschedule: no grant")
def _slice_refused(b: ScriptedMachine) -> Task:
    t = _slice_requested(b)
    b.start_measuring()
    b.interrupt(resched=_here(t), signal=SIGUSR1)
    return t


#: The scenarios of the spec's §4 table (rows numbered); the "SEGV" rows (signal semantics,
#: tests/kernel/test_signals.py) and the "SL" rows (the slice extension, tests/kernel/test_v7_0.py)
#: are tested on their own.
SPEC_SCENARIOS: dict[str, Scenario] = {n: s for n, s in SCENARIOS.items() if not s.row.startswith("S")}


# ----------------------------------------------------------------------
@dataclass(slots=True)
class Explanation:
    kernel: str
    scenario: str
    row: str
    summary: str
    debug: bool
    counters: dict[str, int]
    tracepoints: dict[str, int]
    user_reads: dict[str, int]
    user_writes: dict[str, int]
    user_faults: dict[str, int]
    ip: int
    ip_is_abort: bool
    signal: str | None
    rseq_area: dict[str, int]
    work: list[str] = field(default_factory=list)
    #: Handler frames outstanding (oldest first): set up, their handler not yet returned.
    sigframes: list[str] = field(default_factory=list)
    #: Signals whose handler ran to its end and returned with rt_sigreturn, in order.
    handlers_run: list[str] = field(default_factory=list)
    #: ``/sys/kernel/debug/rseq/stats`` as the kernel prints it (None: the kernel has none).
    debugfs: str | None = None

    def as_json(self) -> dict:
        return {
            "kernel": self.kernel,
            "scenario": self.scenario,
            "spec_row": self.row,
            "summary": self.summary,
            "debug": self.debug,
            "counters": self.counters,
            "tracepoints": self.tracepoints,
            "user_reads": self.user_reads,
            "user_writes": self.user_writes,
            "user_faults": self.user_faults,
            "ip": self.ip,
            "ip_is_abort": self.ip_is_abort,
            "signal": self.signal,
            "rseq_area": self.rseq_area,
            "work": self.work,
            "sigframes": self.sigframes,
            "handlers_run": self.handlers_run,
            "debugfs": self.debugfs,
        }


def explain(name: str, release: str, *, debug: bool = False) -> Explanation:
    """Play scenario ``name`` on a fresh scripted machine running kernel ``release``."""
    if name not in SCENARIOS:
        raise BadInput(f"unknown scenario {name!r}; accepted: {', '.join(SCENARIOS)}")
    kernel_class(release)  # BadInput naming the accepted kernels
    sc = SCENARIOS[name]
    sm = ScriptedMachine(release, debug=debug)
    t = sc.play(sm)
    killed = t.killed_by
    area = sm.area(t)
    for signed in ("cpu_id_start", "cpu_id"):
        area[signed] = as_s32(area[signed])
    k = sm.kernel
    if getattr(k, "slice_configured", False):
        # Only a kernel with the extension shows its control word (request | granted << 8).
        area["slice_ctrl"] = t.mm.peek(sm.layout.area + StructRseq.SLICE_CTRL.offset, 4)
    return Explanation(
        kernel=release,
        scenario=name,
        row=sc.row,
        summary=sc.summary,
        debug=debug,
        counters={c: getattr(t.stats, c) for c in k.counters},
        tracepoints=t.trace.as_dict(),
        user_reads=dict(sorted(t.uaccess.reads.items())),
        user_writes=dict(sorted(t.uaccess.writes.items())),
        user_faults=dict(sorted(t.uaccess.faults.items())),
        ip=t.regs.ip,
        ip_is_abort=t.regs.ip == sm.layout.abort_ip
        or any(f.saved_ip == sm.layout.abort_ip for f in t.sigframes),
        signal=SIGNAL_NAMES.get(killed, str(killed)) if killed else None,
        rseq_area=area,
        work=list(sm.kernel.ftrace.lines) if sm.kernel.ftrace else [],
        sigframes=[SIGNAL_NAMES.get(f.sig, str(f.sig)) for f in t.sigframes],
        handlers_run=[SIGNAL_NAMES.get(sig, str(sig)) for sig in sm.handlers_run],
        debugfs=sm.kernel.rseq_stats_show(),
    )
