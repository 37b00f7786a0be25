"""The controlled machine: the simulated machine with the explorer as its only source of events."""

from __future__ import annotations

from ..kernel import Tif
from ..machine.machine import Machine, MachineConfig, State
from ..usermem import PAGE_SIZE, AddressSpace

_GO = ("go",)
#: Hand-written and primitive sections a scenario may use (one text page each).
MAX_SECTIONS = 64
_TEMPLATE = None  # an Image whose fields new images copy


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
