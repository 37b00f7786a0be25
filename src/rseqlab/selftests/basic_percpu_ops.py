"""Port of ``basic_percpu_ops_test`` and ``basic_percpu_ops_mm_cid_test`` (userspace spec §2.5).

The same spinlock and list algorithms as param_test (they share the code in
:mod:`.param_test`), run as kselftest runs the binary: glibc owns the
registration (``rseq_register_current_thread()`` returns 0), the list test
yields unconditionally between pop and push, no injection. Scaled to the
simulated machine: the real test's 200 threads x 5000 (spinlock) and
x 100000 (list) become :data:`THREADS` x :data:`SPIN_REPS` / :data:`LIST_REPS`.
"""

from __future__ import annotations

from ..userprog.libc import Glibc, librseq_register_current_thread
from .harness import MachineSpec, Output, RunResult, TestAbort, check_machine, run_program
from .param_test import Build, ParamOptions, ParamTest

THREADS = 24
SPIN_REPS = 200
LIST_REPS = 100


class BasicPercpuOps(ParamTest):
    def register(self, th) -> int:
        return librseq_register_current_thread(th)  # glibc owning it counts as success

    def main(self, th, out: Output) -> int:
        self.out = out
        if self.register(th):
            raise TestAbort("Error: rseq_register_current_thread(...) failed")
        if self.build.index == "mm_cid" and th.k.abi.feature_size < 28:
            raise TestAbort("Error: rseq_mm_cid_available() is false")
        if self.build.index == "cpu_id" and th.area_field("cpu_id") < 0:
            raise TestAbort("Error: rseq_current_cpu_raw() < 0")
        out.print("spinlock")
        self.o.test, self.o.reps, self.o.yield_ = "s", self.spin_reps, False
        self.test_s(th)
        out.print("percpu_list")
        self.o.test, self.o.reps, self.o.yield_ = "l", self.list_reps, True
        self.test_l(th)
        return 0

    def progress(self, th, i: int, reps: int) -> None:
        """basic_percpu_ops has no progress lines."""


def run(kernel: str, *, mm_cid: bool = False, threads: int = THREADS, spin_reps: int = SPIN_REPS,
        list_reps: int = LIST_REPS, machine: MachineSpec | None = None, seed: int = 0) -> RunResult:
    spec = machine or MachineSpec()
    check_machine(spec, threads)
    build = Build("basic_percpu_ops_mm_cid_test" if mm_cid else "basic_percpu_ops_test",
                  "mm_cid" if mm_cid else "cpu_id", False)
    prog = BasicPercpuOps(build, ParamOptions(threads=threads), spec.cpus)
    prog.spin_reps, prog.list_reps = spin_reps, list_reps
    return run_program(kernel, prog.main, machine=spec, seed=seed, glibc=Glibc("2.41", rseq_tunable=True))
