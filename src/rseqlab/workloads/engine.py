"""Run a workload on the simulated machine under one kernel, and collect what the kernel did.

Each ``[[process]]`` with ``instances >= 1`` starts at time 0. Its main thread
installs the handlers, starts the other threads (pthread_create: glibc
registers rseq in each), runs its own steps and joins them. ``spawn`` steps
start other processes the way make and the gcc driver do, with
``posix_spawn``/``vfork`` and ``execve``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..kernel import Entry
from ..machine.machine import MachineConfig, Machine
from ..userprog.api import (
    MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
    Pipe,
    Thread,
)
from ..userprog.libc import Glibc, librseq_register_current_thread
from ..userprog.primitives import CsOptions, current_index, load_add_store
from .schema import SIGNALS, ProcessSpec, Step, ThreadSpec, Workload

#: A signal handler of the simulated programs: a short burst of user code.
HANDLER_NS = 300


@dataclass
class RunResult:
    """What one kernel did for one workload run."""

    kernel: str
    counters: dict[str, int]
    tracepoints: dict[str, int]
    user_reads: int
    user_writes: int
    sim_ns: int
    switches: int
    migrations: int
    processes: int
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, int]:
        from ..report.compare import kernel_result

        return kernel_result(self.counters, self.tracepoints, self.user_reads, self.user_writes)


class _ProcessRun:
    """Per-process-instance state: its pipes and its threads by name."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.pipes: dict[str, Pipe] = {}
        self.threads: dict[str, list] = {}
        self.counter = 0  # heap address of the per-CPU counters of `rseq` steps
        self.extra: dict[str, Any] = {}

    def pipe(self, name: str) -> Pipe:
        return self.pipes.setdefault(name, Pipe())


class WorkloadRunner:
    def __init__(self, workload: Workload, kernel: str, seed: int, *, bulk: bool = True) -> None:
        self.w = workload
        self.bulk = bulk
        self.caches: list = []  # TCMalloc slab caches (with their hand-out oracles), one per process
        self.locks: list = []  # the slicelock steps' locks, one per process instance
        self.selftest_runs: list = []  # (args, build, exit status, output) of param_test steps
        spec = workload.machine
        self.m = Machine(kernel, MachineConfig(cpus=spec.cpus, nodes=spec.nodes, hz=spec.hz), seed=seed)
        # bulk=False is the reference path: every exit one by one, every wait an event.
        self.m.sim.fast_forward = bulk

    # ------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        m, w = self.m, self.w
        for p in w.processes:
            for _ in range(p.instances):
                m.spawn(self._main_program(p), runtime=Glibc(p.glibc, p.rseq))
        limit = w.duration_ms * 1_000_000 if w.duration_ms else None
        chunk = 10_000_000
        while True:
            target = m.now + chunk
            if limit is not None:
                target = min(target, limit)
            m.run(until_ns=target)
            if progress is not None:
                progress(m.now, limit or 0)
            if not m.running or (limit is not None and m.now >= limit):
                break
        return self._result()

    def _result(self) -> RunResult:
        m = self.m
        k = m.kernel
        reads = sum(sum(t.kt.uaccess.reads.values()) for t in m.tasks.values())
        writes = sum(sum(t.kt.uaccess.writes.values()) for t in m.tasks.values())
        stats = k.stats()
        return RunResult(
            kernel=k.name,
            counters={c: getattr(stats, c) for c in k.counters},
            tracepoints=k.trace_totals.as_dict(),
            user_reads=reads,
            user_writes=writes,
            sim_ns=m.now,
            switches=m.switches,
            migrations=m.migrations,
            processes=len(m.processes),
            threads=len(m.tasks),
            extra=self._extra(),
        )

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.caches:
            extra["tcmalloc_allocations"] = sum(c.oracle.allocations for c in self.caches)
            extra["tcmalloc_double_handouts"] = sum(len(c.oracle.double) for c in self.caches)
            # Threads whose TCMalloc found rseq taken (glibc's registration): no per-CPU caches.
            extra["tcmalloc_slow_mode_threads"] = sum(c.slow_mode_threads for c in self.caches)
        for lock in self.locks:
            # "asking" locks request slice extensions (where the kernel allows), "plain" ones never.
            prefix = "asking" if lock.slices else "plain"
            for key, value in lock.stats.as_dict().items():
                name = f"{prefix}_{key}"
                extra[name] = max(extra.get(name, 0), value) if "max" in key else extra.get(name, 0) + value
        if self.selftest_runs:
            extra["param_test_runs"] = len(self.selftest_runs)
            extra["param_test_failures"] = [f"{build} {args}: exit {status}"
                                            for args, build, status, _ in self.selftest_runs if status]
        return extra

    # ------------------------------------------------------------------
    def _main_program(self, spec: ProcessSpec) -> Callable[[Thread], Any]:
        def main(th: Thread) -> None:
            run = _ProcessRun(spec)
            for name in spec.handlers:
                th.sigaction(SIGNALS[name], _handler)
            run.threads[spec.threads[0].name] = [th.st]
            children = []
            for tspec in spec.threads[1:]:
                for _ in range(tspec.count):
                    child = th.spawn_thread(self._thread_program(run, tspec), affinity=tspec.affinity)
                    run.threads.setdefault(tspec.name, []).append(child)
                    children.append(child)
            if spec.threads[0].affinity is not None:
                th.setaffinity(spec.threads[0].affinity)
            self._steps(th, run, spec.threads[0])
            for child in children:
                th.join(child)

        return main

    def _thread_program(self, run: _ProcessRun, tspec: ThreadSpec) -> Callable[[Thread], Any]:
        return lambda th: self._steps(th, run, tspec)

    def _steps(self, th: Thread, run: _ProcessRun, tspec: ThreadSpec) -> None:
        rng = self.m.rng
        ops = _OPS
        for i in range(tspec.repeat):
            for step in tspec.steps:
                if i % step.every:
                    continue
                if step.prob < 1.0 and rng.random() >= step.prob:
                    continue
                ops[step.op](self, th, run, step)

    # ------------------------------------------------------------------
    # The operations
    # ------------------------------------------------------------------
    def _jittered(self, step: Step) -> int:
        ns = step.params["ns"]
        jitter = step.params.get("jitter", 0.0)
        if jitter:
            ns = int(ns * (1.0 + jitter * (2.0 * self.m.rng.random() - 1.0)))
        return max(ns, 1)

    def op_compute(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        th.compute(self._jittered(step))

    def op_syscalls(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        p = step.params
        th.round_trips(p["count"], p["user_ns"], p["kernel_ns"], entry=Entry.SYSCALL, bulk=self.bulk)

    def op_page_faults(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        p = step.params
        th.round_trips(p["count"], p["user_ns"], p["kernel_ns"], entry=Entry.EXCEPTION, bulk=self.bulk)

    def op_sleep(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        th.sleep(self._jittered(step))

    op_io = op_sleep

    def op_pipe_write(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        th.pipe_write(run.pipe(step.params["pipe"]))

    def op_pipe_read(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        th.pipe_read(run.pipe(step.params["pipe"]))

    def op_signal(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        sig = SIGNALS[step.params["sig"]]
        target = step.params.get("target", "self")
        if target == "self":
            th.raise_signal(sig)
            return
        for st in run.threads.get(target, []):
            th.kill(st, sig)

    def op_munmap(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        th.task_work()

    def op_yield(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        th.sched_yield()

    def op_membarrier(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        if not th.proc.membarrier_rseq_registered:
            th.membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ)
        th.membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)

    def op_rseq(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        """Per-CPU counter increments in rseq sections (librseq's ``load_add_store``)."""
        if not th.area and librseq_register_current_thread(th) != 0:
            return
        if not run.counter:
            run.counter = th.image.alloc(8 * self.m.config.cpus, align=64)
        opts = CsOptions(loops={3: step.params.get("loops", 0)})
        for _ in range(step.params["count"]):
            while True:
                cpu = current_index(th, opts)
                if load_add_store(th, run.counter + 8 * cpu, 1, cpu, opts) == 0:
                    break

    def op_spawn(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        template = self.w.process(step.params["process"])
        main = self._main_program(template)

        def child(c: Thread) -> Any:
            c.st.proc.runtime = Glibc(template.glibc, template.rseq)
            return c.execve(main)

        children = [th.vfork(child) for _ in range(step.params.get("count", 1))]
        if step.params.get("wait", True):
            for c in children:
                th.join(c)


    def op_param_test(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        """posix_spawn() the ported param_test binary and wait for it (run_param_test.sh)."""
        from ..selftests.harness import Output, library_area
        from ..selftests.param_test import BUILDS, ParamTest, parse_args

        build = step.params.get("build", "param_test")
        prog = ParamTest(BUILDS[build], parse_args(step.params["args"].split(), build), self.m.config.cpus)
        glibc = th.proc.runtime.version if isinstance(th.proc.runtime, Glibc) else "2.36"
        out = Output()

        def main(c: Thread) -> int:
            library_area(c)
            return prog.main(c, out) or 0

        def child(c: Thread) -> Any:
            c.st.proc.runtime = Glibc(glibc, rseq_tunable=False)  # the runner exports rseq=0
            return c.execve(main)

        status = th.join(th.vfork(child))
        self.selftest_runs.append((step.params["args"], build, status, out.lines))

    def op_tcmalloc(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        """malloc/free pairs through the per-CPU slab cache (its own 32-byte registration).

        In a process where glibc registered rseq, TCMalloc's registration is refused and it
        runs in slow mode (:meth:`SlabCache.init_fast_per_cpu`): the same allocations, no rseq."""
        from ..userprog.tcmalloc import SlabCache

        cache = run.extra.get("tcmalloc")
        if cache is None:
            cache = run.extra["tcmalloc"] = SlabCache(th, self.m.config.cpus, fence=False)
            self.caches.append(cache)
        cache.init_fast_per_cpu(th)
        hold = step.params.get("hold", 4)
        ns = step.params.get("ns", 0)
        live: list[int] = []
        for _ in range(step.params["count"]):
            live.append(cache.malloc(th))
            if ns:
                th.compute(ns)
            if len(live) > hold:
                cache.free(th, live.pop(0))
        for obj in live:
            cache.free(th, obj)

    def op_slicelock(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        """Take the process's spinlock ``count`` times, hold it ``hold`` ns, ``ns`` ns apart."""
        from ..userprog.slicelock import SliceSpinlock

        lock = run.extra.get("slicelock")
        if lock is None:
            lock = run.extra["slicelock"] = SliceSpinlock(th, slices=step.params.get("slices", True))
            self.locks.append(lock)
        p = step.params
        for _ in range(p["count"]):
            lock.lock(th)
            th.compute(p["hold"])
            lock.unlock(th)
            if p.get("ns"):
                th.compute(p["ns"])

    def op_tcmalloc_drain(self, th: Thread, run: _ProcessRun, step: Step) -> None:
        cache = run.extra.get("tcmalloc")
        if cache is not None:
            for cpu in range(self.m.config.cpus):
                cache.drain(th, cpu)


def _handler(th: Thread, sig: int) -> None:
    th.compute(HANDLER_NS, th.ip)


_OPS: dict[str, Callable[[WorkloadRunner, Thread, _ProcessRun, Step], None]] = {
    name[3:]: getattr(WorkloadRunner, name) for name in dir(WorkloadRunner) if name.startswith("op_")
}


def run_workload(workload: Workload, kernel: str, seed: int = 0, *, bulk: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> RunResult:
    return WorkloadRunner(workload, kernel, seed, bulk=bulk).run(progress)
