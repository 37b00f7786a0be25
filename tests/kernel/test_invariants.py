"""Property tests: the invariants of kernel spec §5 on random event sequences, both kernels.

Hypothesis draws a list of steps; each step is either a user-mode move (enter
the critical section at some offset, leave it, disarm ``rseq_cs``) or one round
trip through the kernel on a 4-CPU, 2-node :class:`ScriptedMachine`: an interrupt or
exception (maybe preempting and migrating, maybe delivering SIGUSR1), a page
fault that sleeps, a membarrier RSEQ IPI, a syscall (maybe blocking, maybe
preempted on the way out, maybe raising task_work or signalling itself),
``rt_sigreturn`` of an outstanding handler frame, fork/clone (the run may go on
as the child), unregistration, registration, a KVM_RUN ioctl. Fault runs add
evicted and fault-injected pages.

After every step the invariants are checked against what user space can see
(the IP, the saved signal frames, the bytes of the rseq area) and against the
task state and counters the model exposes. Expected values are derived from the
spec, never read back from the model: the node of a CPU, for instance, is
computed here from the 4-CPU/2-node topology.

Conventions of the step language, so every run is a legal program:

* a syscall is never issued with the IP inside the section: a syscall-type
  step first leaves the section (commits), as a correct program would
  (spec §1.5: a syscall in a section is an ABI violation);
* ``Sigreturn`` with no handler frame outstanding does nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from rseqlab.kernel import Entry, RseqStats, Task, Tif
from rseqlab.kernel._task import CLONE_VM, SIGSEGV, SIGUSR1
from rseqlab.machine.scripted import LAYOUT, Placement, ScriptedMachine

KERNELS = ("6.18", "6.19")
CPUS, NODES, MM_CIDS = 4, 2, 3
LAY = LAYOUT
RSEQ_CS_OFFSET = 8  # struct rseq: rseq_cs at offset 8 (spec §1.1)

# 6.18 rseq_event_mask bits (spec §2.1): PREEMPT=bit0, SIGNAL=bit1, MIGRATE=bit2.
PREEMPT, SIGNAL, MIGRATE = 1, 2, 4


def node_of(cpu: int) -> int:
    """cpu_to_node() of the bench topology: 4 CPUs split evenly over 2 nodes."""
    return cpu // (CPUS // NODES)


def in_section(ip: int) -> bool:
    return LAY.cs_start <= ip < LAY.cs_start + LAY.cs_len


# ======================================================================
# The step language
# ======================================================================
@dataclass(frozen=True)
class Enter:
    """User mode: arm rseq_cs and run to cs_start + at."""
    at: int


@dataclass(frozen=True)
class Leave:
    """User mode: commit, back to plain code (rseq_cs stays armed; the kernel clears it lazily)."""


@dataclass(frozen=True)
class ClearCs:
    """User mode: store 0 into rseq_cs."""


@dataclass(frozen=True)
class Irq:
    resched: Placement | None
    signal: bool
    exception: bool  # an exception entry (e.g. #PF that does not sleep) instead of an IRQ


@dataclass(frozen=True)
class PageFault:
    """An exception from user mode that sleeps and wakes at ``block``."""
    block: Placement


@dataclass(frozen=True)
class Ipi:
    """membarrier(PRIVATE_EXPEDITED_RSEQ) from another thread hits the task in user mode."""


@dataclass(frozen=True)
class Syscall:
    block: Placement | None
    resched: Placement | None
    work: str  # a key of WORKS


@dataclass(frozen=True)
class Sigreturn:
    """rt_sigreturn() from the newest handler frame (a syscall round trip)."""


@dataclass(frozen=True)
class Fork:
    """fork() (or a CLONE_VM clone); the child returns once. With ``follow`` the run goes on
    as the (non-CLONE_VM) child, the parent staying in user mode."""
    clone_vm: bool
    child_place: Placement | None
    follow: bool = False


@dataclass(frozen=True)
class Unregister:
    """sys_rseq(RSEQ_FLAG_UNREGISTER) (-EINVAL if not registered)."""


@dataclass(frozen=True)
class Register:
    """sys_rseq() of the bench area (-EBUSY if already registered)."""


@dataclass(frozen=True)
class KvmRun:
    block: Placement


@dataclass(frozen=True)
class Evict:
    """The page holding ``page`` is swapped out (next access needs a resolvable fault)."""
    page: str


@dataclass(frozen=True)
class Inject:
    """The next ``times`` accesses to the page of ``page`` fail hard."""
    page: str
    times: int


Step = (Enter | Leave | ClearCs | Irq | PageFault | Ipi | Syscall | Sigreturn | Fork | Unregister
        | Register | KvmRun | Evict | Inject)

WORKS: dict[str, Callable | None] = {
    "none": None,
    "task_work": lambda k, t: k.task_work_add(t),  # another TIF_NOTIFY_RESUME user
    "kill_self": lambda k, t: k.send_signal(t, SIGUSR1),
    "both": lambda k, t: (k.task_work_add(t), k.send_signal(t, SIGUSR1)),
}

PAGES = {"area": LAY.area, "descriptor": LAY.descriptor, "text": LAY.abort_ip - 4}

placements = st.builds(Placement, cpu=st.integers(0, CPUS - 1), mm_cid=st.integers(0, MM_CIDS - 1))
maybe_placement = st.none() | placements

enter_steps = st.builds(Enter, at=st.integers(0, LAY.cs_len - 1))
irq_steps = st.builds(Irq, resched=maybe_placement, signal=st.booleans(), exception=st.booleans())
syscall_steps = st.builds(Syscall, block=maybe_placement, resched=maybe_placement,
                          work=st.sampled_from(sorted(WORKS)))
fork_steps = st.builds(Fork, clone_vm=st.booleans(), child_place=maybe_placement, follow=st.booleans())
fault_steps = st.one_of(
    st.builds(Evict, page=st.sampled_from(["descriptor", "area"])),
    st.builds(Inject, page=st.sampled_from(["area", "descriptor", "text"]), times=st.integers(1, 3)),
)
# Entering the section and interrupts are listed twice: the interesting cases need both.
plain_steps = st.one_of(
    enter_steps,
    irq_steps,
    st.just(Leave()),
    st.just(ClearCs()),
    st.builds(PageFault, block=placements),
    st.just(Ipi()),
    enter_steps,
    irq_steps,
    syscall_steps,
    st.just(Sigreturn()),
    st.just(Unregister()),
    st.just(Register()),
    st.just(Register()),
    st.builds(KvmRun, block=placements),
)
steps_with_fork = st.one_of(plain_steps, fork_steps)
steps_with_faults = st.one_of(steps_with_fork, fault_steps)


# A kernel entry right after entering the section: the case §5.1 is about, made common.
kernel_entries = st.one_of(irq_steps, st.builds(PageFault, block=placements), st.just(Ipi()))
entered_then_interrupted = st.tuples(enter_steps, kernel_entries).map(list)


def step_lists(steps=steps_with_fork, *, min_size: int = 2, max_size: int = 40):
    """Lists of steps, built from single steps and enter-then-interrupt pairs.

    Hypothesis aims at an average of about max(2 * min_size, min_size + 5) chunks, so the long
    runs need a large ``min_size``, not just a large ``max_size``."""
    chunks = st.one_of(steps.map(lambda step: [step]), entered_then_interrupted)
    return st.lists(chunks, min_size=min_size, max_size=max_size).map(
        lambda chunked: [step for chunk in chunked for step in chunk])


# ======================================================================
# Running a step list
# ======================================================================
@dataclass
class State:
    """The main task as the checks compare it before and after a step."""

    ip: int
    rseq_cs: int
    registered: bool
    cpu: int
    switches: int
    nframes: int
    stats: RseqStats
    mask: int | None  # 6.18 rseq_event_mask

    @property
    def in_armed_section(self) -> bool:
        return self.registered and self.rseq_cs == LAY.descriptor and in_section(self.ip)


@dataclass
class Tally:
    """What the counter relations compare with, counted by the test itself."""

    returns: int = 0  # returns to user mode
    deliveries_registered: int = 0  # handler frames set up while registered
    deliveries_after_irq: int = 0  # ... in a stay entered by an interrupt/exception
    unregistrations: int = 0  # successful sys_rseq(UNREGISTER)


@dataclass
class Record:
    """One step: what was done, how the kernel was entered, before and after."""

    step: Step
    kind: str  # "user", "irq" (interrupt/exception/IPI entry) or "syscall"
    before: State
    after: State
    child: Task | None = None
    parent_mask_at_fork: int | None = None
    frames_set_up: int = 0  # handler frames set up by this step (after any sigreturn pop)
    restored_ip: int | None = None  # Sigreturn: the IP the popped frame restored


@dataclass
class Run:
    """A bench with one registered task, driven by a step list."""

    release: str
    initial: Placement = field(default_factory=Placement)
    b: ScriptedMachine = field(init=False)
    tallies: dict[int, Tally] = field(default_factory=dict)  # by pid
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.b = ScriptedMachine(self.release, cpus=CPUS, nodes=NODES)
        self.tallies[self.t.pid] = Tally()
        # Put the unregistered task somewhere first, so the registration has real IDs to write.
        self.b.syscall(block=self.initial)
        self._returned()
        assert self.b.register() == 0
        self._returned()

    @property
    def t(self) -> Task:
        """The task the steps drive (the bench's task: the original one or a followed child)."""
        return self.b.task

    @property
    def tally(self) -> Tally:
        return self.tallies[self.t.pid]

    def state(self) -> State:
        t = self.t
        mask = int(t.rseq.event_mask) if self.release == "6.18" else None
        return State(ip=t.regs.ip, rseq_cs=self.b.area(t)["rseq_cs"], registered=registered(t),
                     cpu=t.cpu, switches=self.b.sched.switches, nframes=len(t.sigframes),
                     stats=dataclasses.replace(t.stats), mask=mask)

    def play(self, steps: list[Step], checks: list[Callable[[Run, Record], None]], *,
             faults: bool = False) -> None:
        for step in steps:
            self.do(step)
            rec = self.records[-1]
            for t in self.b.tasks:
                if t.killed_by is not None:
                    # Only a fault may end a task, and only with SIGSEGV (spec §5.6).
                    assert faults, f"task {t.pid} died without any fault: killed_by={t.killed_by}"
                    assert t.killed_by == SIGSEGV, f"task {t.pid} killed by {t.killed_by}"
            if self.t.killed_by is not None:
                return
            for check in checks:
                check(self, rec)

    # ------------------------------------------------------------------
    def do(self, step: Step) -> None:
        b, t = self.b, self.t
        kind = "user"
        if isinstance(step, (Syscall, Fork, Unregister, Register, KvmRun)) or (isinstance(step, Sigreturn)
                                                                   and t.sigframes):
            kind = "syscall"
            if b.in_cs():
                b.leave_cs()  # commit before the syscall: a section cannot contain one
        elif isinstance(step, (Irq, PageFault, Ipi)):
            kind = "irq"
        before = self.state()
        rec = Record(step, kind, before, before)
        match step:
            case Enter(at):
                b.enter_cs(at=at)
            case Leave():
                b.leave_cs()
            case ClearCs():
                t.mm.poke(LAY.area + RSEQ_CS_OFFSET, 8, 0)
            case Irq(resched, signal, exception):
                b.interrupt(resched=resched, signal=SIGUSR1 if signal else None,
                            entry=Entry.EXCEPTION if exception else Entry.IRQ)
                self._returned()
            case PageFault(block):
                b.page_fault(block=block)
                self._returned()
            case Ipi():
                b.membarrier_ipi()
                self._returned()
            case Syscall(block, resched, work):
                b.syscall(block=block, resched=resched, work=WORKS[work])
                self._returned()
            case Sigreturn():
                if t.sigframes:
                    rec.restored_ip = t.sigframes[-1].saved_ip
                    b.syscall(work=lambda k, task: k.sigreturn(task))
                    self._returned()
            case Fork(clone_vm, child_place, _follow):
                rec.parent_mask_at_fork = before.mask
                child = b.spawn_child(clone_flags=CLONE_VM if clone_vm else 0, child_place=child_place)
                self._returned()
                b.child_first_return(child)
                self.tallies[child.pid] = Tally(returns=0 if child.killed_by else 1)
                rec.child = child
            case Unregister():
                if b.unregister() == 0:
                    self.tally.unregistrations += 1
                self._returned()
            case Register():
                b.register()
                self._returned()
            case KvmRun(block):
                b.kvm_run(block=block)
                self._returned()
            case Evict(page):
                t.mm.evict(PAGES[page], 1)  # the one page holding it
            case Inject(page, times):
                t.mm.inject_fault(PAGES[page], times)
        rec.after = self.state()
        # rt_sigreturn pops one frame first; a signal the restored mask unblocks is then
        # delivered on that same return (SIGUSR1 is blocked while its handler runs).
        popped = 1 if isinstance(step, Sigreturn) and before.nframes else 0
        grown = rec.frames_set_up = max(0, rec.after.nframes - (before.nframes - popped))
        if before.registered:
            self.tally.deliveries_registered += grown
            if kind == "irq":
                self.tally.deliveries_after_irq += grown
        self.records.append(rec)
        if isinstance(step, Fork) and step.follow and not step.clone_vm and rec.child.killed_by is None:
            b.task = rec.child  # from now on the steps drive the child

    def _returned(self) -> None:
        if self.t.killed_by is None:
            self.tally.returns += 1


def registered(t: Task) -> bool:
    return bool(t.rseq.usrptr)


def resumed_ip(rec: Record, t: Task) -> int:
    """The user context that will resume the interrupted code: the IP, or the first new frame."""
    if rec.after.nframes > rec.before.nframes:
        return t.sigframes[rec.before.nframes].saved_ip
    return t.regs.ip


def live_tasks(run: Run) -> list[Task]:
    return [t for t in run.b.tasks if t.killed_by is None and t.in_user]


# ======================================================================
# The invariants, one check each
# ======================================================================
def check_abort_correctness(run: Run, rec: Record) -> None:
    """§5.1: interrupted inside the armed section and switched out / given a handler frame /
    hit by the membarrier IPI => resumes at abort_ip with rseq_cs == 0."""
    if rec.kind != "irq" or not rec.before.in_armed_section:
        return
    switched = rec.after.switches > rec.before.switches
    framed = rec.after.nframes > rec.before.nframes
    if not (switched or framed or isinstance(rec.step, Ipi)):
        return
    t = run.t
    assert resumed_ip(rec, t) == LAY.abort_ip, (
        f"{rec.step}: resumes at {resumed_ip(rec, t):#x}, not abort_ip {LAY.abort_ip:#x}")
    assert run.b.area(t)["rseq_cs"] == 0, f"{rec.step}: rseq_cs left armed after the abort"


def check_no_abort_without_cause(run: Run, rec: Record) -> None:
    """§5.3(a), §2.5 step 6, §3.5: the kernel moves the interrupted IP only for an armed
    section that needs an abort. An IP outside the armed section resumes where it was; an
    interrupt alone (no switch, no frame, no IPI) does not abort, nor touch rseq_cs."""
    if rec.kind != "irq" or not rec.before.registered:
        return
    t = run.t
    switched = rec.after.switches > rec.before.switches
    framed = rec.after.nframes > rec.before.nframes
    if not rec.before.in_armed_section:
        assert resumed_ip(rec, t) == rec.before.ip, f"{rec.step}: IP outside a section was moved"
    elif not (switched or framed or isinstance(rec.step, Ipi)):
        assert t.regs.ip == rec.before.ip, f"{rec.step}: aborted without a cause"
        assert run.b.area(t)["rseq_cs"] == LAY.descriptor


def assert_fresh_ids(b: ScriptedMachine, t: Task, what: str) -> None:
    area = b.area(t)
    want = {"cpu_id_start": t.cpu, "cpu_id": t.cpu, "node_id": node_of(t.cpu), "mm_cid": t.mm_cid}
    got = {name: area[name] for name in want}
    assert got == want, f"{what}: stale IDs in the rseq area"


def check_id_freshness(run: Run, rec: Record) -> None:
    """§5.2, §1.5: after every return to user of a registered task the area holds its CPU,
    that CPU's node and its mm_cid. The fork child is checked after its first return."""
    for t in live_tasks(run):
        if registered(t):
            assert_fresh_ids(run.b, t, f"task {t.pid} after {rec.step}")
    if isinstance(rec.step, Fork) and rec.child is not None:
        child = rec.child
        assert child.killed_by is None, f"the child of {rec.step} died"
        # A non-CLONE_VM child inherits the registration; a thread has none (§2.8, §3.8).
        assert registered(child) is (rec.before.registered and not rec.step.clone_vm)


def check_event_hygiene_619(run: Run, rec: Record) -> None:
    """§5.4 (6.19): at every return to user sched_switch == 0; always sched_switch =>
    TIF_RSEQ and has_rseq; slowpath => TIF_NOTIFY_RESUME; §5.2: the cached IDs equal what
    the area holds."""
    for t in run.b.tasks:
        if t.killed_by is not None:
            continue
        ev = t.rseq
        if ev.sched_switch:
            assert t.tif & Tif.RSEQ and ev.has_rseq, f"task {t.pid}: sched_switch without TIF_RSEQ/has_rseq"
        if ev.slowpath:
            assert t.tif & Tif.NOTIFY_RESUME, f"task {t.pid}: slowpath without TIF_NOTIFY_RESUME"
        if t.in_user:
            # §3.1: user_irq records the latest entry; §3.3: an interrupt return clears it.
            assert not ev.user_irq, f"task {t.pid} returned to user with user_irq set"
        if t.in_user and ev.has_rseq:
            assert not ev.sched_switch, f"task {t.pid} returned to user with sched_switch set"
            area = run.b.area(t)
            assert (ev.ids_cpu_id, ev.ids_mm_cid) == (area["cpu_id"], area["mm_cid"]), (
                f"task {t.pid}: ids cache differs from the area")


def check_legacy_mask(run: Run, rec: Record) -> None:
    """§5.5, §2.2 (6.18): bits come only from their producers (switch-out and membarrier IPI:
    PREEMPT; migration: MIGRATE; handler frame: SIGNAL) and are lost only in an in-section
    pass of rseq_ip_fixup. Fork: the child inherits the mask (non-CLONE_VM) or starts from 0
    (CLONE_VM); wake_up_new_task() then adds MIGRATE (§2.2)."""
    before, after = rec.before, rec.after
    switched = after.switches > before.switches
    produced = 0
    if switched or isinstance(rec.step, Ipi):
        produced |= PREEMPT
    if rec.frames_set_up:
        produced |= SIGNAL
    required = produced | (MIGRATE if after.cpu != before.cpu else 0)
    allowed = required | (MIGRATE if switched else 0)
    assert after.mask & ~(before.mask | allowed) == 0, (
        f"{rec.step}: mask {before.mask:#x} -> {after.mask:#x} gained bits no producer set")
    # An in-section pass: the IP was inside the armed section and rseq_ip_fixup ran.
    # After rt_sigreturn the exit work (a signal the restored mask lets through) runs on the
    # restored context, whose IP may be inside the section.
    ip_inside = before.in_armed_section or (
        rec.restored_ip is not None and before.registered and before.rseq_cs == LAY.descriptor
        and in_section(rec.restored_ip))
    in_section_pass = ip_inside and after.stats.cs > before.stats.cs
    if in_section_pass and rec.kind == "irq":
        # §2.5 step 7 reads and clears the whole mask; in an interrupt/exception stay every
        # producer (the one switch, the IPI, the frame) fires before that first pass.
        assert after.mask == 0, f"{rec.step}: in-section pass left mask {after.mask:#x}"
    if not in_section_pass:
        assert after.mask & (before.mask | required) == before.mask | required, (
            f"{rec.step}: mask {before.mask:#x} -> {after.mask:#x} lost or missed bits "
            f"(required {required:#x}) without an in-section pass")
    if isinstance(rec.step, Fork):
        child = rec.child
        inherited = 0 if rec.step.clone_vm else rec.parent_mask_at_fork
        assert int(child.rseq.event_mask) == inherited | MIGRATE, (
            f"{rec.step}: child mask {int(child.rseq.event_mask):#x}, parent had {rec.parent_mask_at_fork:#x}")


def assert_counter_relations(release: str, t: Task, tally: Tally) -> None:
    s, tr = t.stats, t.trace
    faulted = any(t.uaccess.faults.values())
    # Both kernels (§5.7, §2.10 for 6.18's instrumentation).
    assert s.clear + s.fixup <= s.cs, f"clear {s.clear} + fixup {s.fixup} > cs {s.cs}"
    if not faulted:
        assert s.clear + s.fixup == s.cs, f"clear {s.clear} + fixup {s.fixup} != cs {s.cs} without faults"
    assert tr.rseq_ip_fixup == s.fixup, f"tp rseq_ip_fixup {tr.rseq_ip_fixup} != fixup {s.fixup}"
    assert s.exit == tally.returns, f"exit {s.exit} != {tally.returns} returns to user"
    if release == "6.19":
        assert tr.rseq_update == s.ids, f"tp rseq_update {tr.rseq_update} != ids {s.ids}"
        assert s.ids <= s.fastpath + s.slowpath + tally.unregistrations, (
            f"ids {s.ids} > fastpath {s.fastpath} + slowpath {s.slowpath} + unreg {tally.unregistrations}")
        # The slow path runs only after a failed fast path, and every fast-path run is counted.
        assert s.slowpath <= s.fastpath, f"slowpath {s.slowpath} > fastpath {s.fastpath}"
        # §5.7 says signal <= deliveries after user-mode interrupts; §3.7 counts every one.
        assert s.signal <= tally.deliveries_after_irq
        assert s.signal == tally.deliveries_after_irq, (
            f"signal {s.signal} != {tally.deliveries_after_irq} deliveries after an interrupt")
    else:
        assert s.fastpath == 0, "6.18 has no fast path"
        assert tr.rseq_update <= s.ids
        # §2.10: signal counts every handler pass with ksig, i.e. every frame while registered.
        assert s.signal == tally.deliveries_registered, (
            f"signal {s.signal} != {tally.deliveries_registered} frames set up while registered")
        if not faulted:
            assert tr.rseq_update == s.ids, f"tp rseq_update {tr.rseq_update} != ids {s.ids}"
            # §5.8: the legacy counting identity.
            assert s.ids == s.slowpath + s.signal, (
                f"ids {s.ids} != slowpath {s.slowpath} + signal {s.signal}")


def check_counter_relations(run: Run, rec: Record) -> None:
    """§5.7 (6.19), §5.8 and §2.9/§2.10 (6.18), for the task and every fork child."""
    for t in run.b.tasks:
        if t.killed_by is None:
            assert_counter_relations(run.release, t, run.tallies[t.pid])


ALL_CHECKS = [check_abort_correctness, check_no_abort_without_cause, check_id_freshness,
              check_counter_relations]


def all_checks(release: str) -> list[Callable[[Run, Record], None]]:
    extra = check_event_hygiene_619 if release == "6.19" else check_legacy_mask
    return [*ALL_CHECKS, extra]


def play(release: str, initial: Placement, steps: list[Step], checks, *, faults: bool = False) -> Run:
    note(f"kernel {release}, start at {initial}")
    run = Run(release, initial)
    run.play(steps, checks, faults=faults)
    return run


# ======================================================================
# The property tests
# ======================================================================
@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists())
def test_abort_correctness(release, initial, steps):
    """Spec §5.1 (and §1.5): a section interrupted by an interrupt, exception or IPI that was
    then scheduled out, given a signal frame, or hit by the membarrier RSEQ IPI resumes at
    abort_ip (directly, or in the saved context of the new frame) with rseq_cs == 0."""
    play(release, initial, steps, [check_abort_correctness])


@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists())
def test_no_abort_without_cause(release, initial, steps):
    """Spec §5.3(a), §2.5 step 6, §3.5: no abort outside an armed section, none for a plain
    interrupt inside one (no switch, no signal, no IPI)."""
    play(release, initial, steps, [check_no_abort_without_cause])


@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists())
def test_id_freshness(release, initial, steps):
    """Spec §5.2, §1.5: cpu_id_start == cpu_id == task CPU, node_id == cpu_to_node(cpu),
    mm_cid == task mm_cid, after every return to user of a registered task."""
    play(release, initial, steps, [check_id_freshness])


@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, prefix=step_lists(plain_steps, max_size=12), fork=fork_steps,
       suffix=step_lists(plain_steps, max_size=12))
def test_id_freshness_across_fork(release, initial, prefix, fork, suffix):
    """Spec §5.2 with fork (§2.8, §3.8, §7 Q3): the child's first return writes its own IDs
    into its (copy-on-write) area; the parent's area stays right for the parent, before and
    after; a CLONE_VM child has no rseq and leaves the shared area alone."""
    play(release, initial, [*prefix, fork, *suffix], all_checks(release))


@given(initial=placements, steps=step_lists())
def test_event_hygiene_619(initial, steps):
    """Spec §5.4 (6.19): sched_switch is 0 at every return to user; sched_switch implies
    TIF_RSEQ and has_rseq; slowpath implies TIF_NOTIFY_RESUME; the ids cache (§5.2) equals
    the area's cpu_id and mm_cid."""
    play("6.19", initial, steps, [check_event_hygiene_619])


@given(initial=placements, steps=step_lists())
def test_legacy_mask_semantics(initial, steps):
    """Spec §5.5 (6.18) on random runs: the event mask gains only producer bits (§2.2), loses
    bits only in an in-section rseq_ip_fixup pass, and is inherited (or zeroed) at fork."""
    play("6.18", initial, steps, [check_legacy_mask])


@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists())
def test_counter_relations(release, initial, steps):
    """Spec §5.7 (6.19) and §5.8, §2.9, §2.10 (6.18): clear + fixup <= cs (== without faults);
    tracepoints match ids and fixup; 6.19 ids <= fastpath + slowpath + unregistrations and
    signal <= (here ==) deliveries after user-mode interrupts; 6.18 ids == slowpath + signal;
    exit == returns to user."""
    play(release, initial, steps, [check_counter_relations])


def fingerprint(run: Run):
    b = run.b
    tasks = []
    for t in b.tasks:
        tasks.append((t.pid, t.stats.as_dict(), t.trace.as_dict(), b.area(t), t.regs.ip,
                      [(f.sig, f.saved_ip) for f in t.sigframes], t.killed_by, int(t.tif), t.cpu,
                      t.mm_cid, dataclasses.asdict(t.rseq), dict(t.uaccess.reads),
                      dict(t.uaccess.writes), dict(t.uaccess.faults), dataclasses.astuple(t.mm.faults)))
    return tasks, b.kernel.stats().as_dict(), b.kernel.trace_totals.as_dict(), b.sched.switches


@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists(steps_with_faults))
def test_determinism(release, initial, steps):
    """The model is a function of its input: the same step list (faults included) run twice
    gives identical counters, tracepoints, areas, registers and task states."""
    first = play(release, initial, steps, [], faults=True)
    second = play(release, initial, steps, [], faults=True)
    assert fingerprint(first) == fingerprint(second)
    # The fingerprint is not vacuous: every run returns to user at least once (registration).
    assert first.b.task.stats.exit + first.b.task.stats.ids + len(first.records) > 0


@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists(steps_with_faults))
def test_faults_fresh_ids_or_sigsegv(release, initial, steps):
    """Spec §5.6 with evicted and fault-injected pages: the model never raises; the task
    either returns with fresh IDs (and aborts where it must, counters consistent) or is
    killed with SIGSEGV, which ends the run."""
    play(release, initial, steps, all_checks(release), faults=True)


@pytest.mark.stress
@pytest.mark.parametrize("release", KERNELS)
@given(initial=placements, steps=step_lists(steps_with_faults, min_size=60, max_size=300))
def test_all_invariants_long_runs(release, initial, steps):
    """Every check of this file on long runs, faults included (``make stress``)."""
    play(release, initial, steps, all_checks(release), faults=True)


# ======================================================================
# Deterministic tests of the legacy mask (spec §5.5, §2.5 step 8, §2.8)
# ======================================================================
def legacy_bench() -> ScriptedMachine:
    b = ScriptedMachine("6.18", cpus=CPUS, nodes=NODES)
    assert b.register() == 0
    return b


def notify_resume_pass(b: ScriptedMachine, entry: Entry) -> None:
    """A kernel stay whose only exit work is task_work's TIF_NOTIFY_RESUME."""
    if entry is Entry.SYSCALL:
        b.syscall(work=lambda k, t: k.task_work_add(t))
    else:
        k, t = b.kernel, b.task
        k.enter_from_user_mode(t, entry)
        k.task_work_add(t)  # e.g. an interrupt handler queueing TWA_RESUME work
        assert k.irqentry_exit_to_user_mode(t)


@pytest.mark.parametrize("entry", [Entry.IRQ, Entry.SYSCALL])
def test_legacy_empty_mask_does_not_abort(entry):
    """§5.5, §2.5 step 8: an in-section handler pass with mask == 0 does not abort and leaves
    rseq_cs armed. (A syscall from a section is an ABI violation; here it only shows that
    the mask, not the entry type, decides.)"""
    b = legacy_bench()
    t = b.task
    assert int(t.rseq.event_mask) == 0  # registering is a syscall without a switch
    b.enter_cs(at=5)
    b.start_measuring(ftrace=False)
    notify_resume_pass(b, entry)
    assert t.regs.ip == LAY.cs_start + 5
    assert b.area()["rseq_cs"] == LAY.descriptor
    assert int(t.rseq.event_mask) == 0
    s = t.stats
    assert (s.slowpath, s.cs, s.clear, s.fixup, s.ids) == (1, 1, 0, 0, 1)
    assert t.trace.as_dict() == {"rseq_update": 1, "rseq_ip_fixup": 0}


@pytest.mark.parametrize("entry", [Entry.IRQ, Entry.SYSCALL])
def test_legacy_stale_mask_aborts_and_is_consumed(entry):
    """§2.5 quirk, the counterpart of the test above: a bit left from an earlier switch
    (outside the section, so never cleared) makes the same pass abort and clears the mask."""
    b = legacy_bench()
    t = b.task
    b.syscall(block=Placement(t.cpu, t.mm_cid))  # a voluntary switch with the IP outside
    assert int(t.rseq.event_mask) == PREEMPT  # stale: only an in-section pass clears it
    b.enter_cs(at=5)
    notify_resume_pass(b, entry)
    assert t.regs.ip == LAY.abort_ip
    assert b.area()["rseq_cs"] == 0
    assert int(t.rseq.event_mask) == 0


def build_legacy_mask(b: ScriptedMachine) -> int:
    """Give the parent PREEMPT (switch) and SIGNAL (a frame) bits, IP outside any section."""
    t = b.task
    b.syscall(block=Placement(t.cpu, t.mm_cid), work=WORKS["kill_self"])
    b.syscall(work=lambda k, task: k.sigreturn(task))
    return int(t.rseq.event_mask)


def test_legacy_mask_inherited_on_fork():
    """§5.5, §2.8: a non-CLONE_VM child copies the mask; wake_up_new_task() adds MIGRATE."""
    b = legacy_bench()
    mask = build_legacy_mask(b)
    assert mask == PREEMPT | SIGNAL
    child = b.spawn_child()
    assert int(child.rseq.event_mask) == mask | MIGRATE
    assert int(b.task.rseq.event_mask) == mask  # the parent keeps its own
    assert b.child_first_return(child)
    assert_fresh_ids(b, child, "the child after its first return")


def test_legacy_mask_zeroed_for_clone_vm():
    """§5.5, §2.8: a CLONE_VM child gets no rseq and no inherited bits (only wake_up_new_task's
    MIGRATE, §2.2)."""
    b = legacy_bench()
    assert build_legacy_mask(b) == PREEMPT | SIGNAL
    child = b.spawn_child(clone_flags=CLONE_VM)
    assert not registered(child)
    assert int(child.rseq.event_mask) == MIGRATE


def test_legacy_mask_zeroed_on_exec():
    """§5.5, §2.8: a successful execve unregisters and zeroes the mask; a failed one keeps the
    mask and re-raises TIF_NOTIFY_RESUME."""
    b = legacy_bench()
    t = b.task
    mask = build_legacy_mask(b)
    assert mask
    b.kernel.execve(t, success=False)
    assert int(t.rseq.event_mask) == mask
    assert t.tif & Tif.NOTIFY_RESUME
    t.tif &= ~Tif.NOTIFY_RESUME
    b.kernel.execve(t)
    assert int(t.rseq.event_mask) == 0
    assert not registered(t)


@pytest.mark.parametrize("release", KERNELS)
def test_checks_are_not_vacuous(release):
    """The checks pass on a real run and fail once the outcome is tampered with."""
    run = Run(release, Placement(3, 2))
    run.play([Enter(3), Irq(Placement(1, 1), False, False)], all_checks(release))
    rec = run.records[-1]
    assert run.t.regs.ip == LAY.abort_ip and run.t.cpu == 1
    run.t.mm.poke(LAY.area + 24, 4, 7)  # mm_cid scribbled over
    with pytest.raises(AssertionError):
        check_id_freshness(run, rec)
    run.t.regs.ip = LAY.cs_start + 3  # as if the abort had not happened
    with pytest.raises(AssertionError):
        check_abort_correctness(run, rec)
    run.t.stats.fixup += 1  # a fixup without its tracepoint
    with pytest.raises(AssertionError):
        check_counter_relations(run, rec)

