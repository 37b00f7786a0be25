"""Port of ``basic_test`` (userspace spec §2.4): the IDs follow the thread from CPU to CPU.

kselftest runs it directly, so glibc (2.41 here) owns the registration and
``rseq_register_current_thread()`` returns 0 without a syscall.
"""

from __future__ import annotations

from ..userprog.libc import Glibc, librseq_register_current_thread, librseq_unregister_current_thread
from .harness import MachineSpec, Output, RunResult, TestAbort, run_program


def main(th, out: Output) -> int:
    if librseq_register_current_thread(th):
        raise TestAbort("Error: rseq_register_current_thread(...) failed")
    allowed = sorted(th.st.affinity)
    for i in allowed:
        if th.setaffinity({i}):
            raise TestAbort("Error: sched_setaffinity failed")
        cpu, node = th.getcpu_node()
        checks = {
            "sched_getcpu() == i": cpu,
            "rseq_current_cpu() == i": th.area_field("cpu_id"),
            "rseq_current_cpu_raw() == i": th.area_field("cpu_id"),
            "rseq_cpu_start() == i": th.area_field("cpu_id_start"),
        }
        for what, got in checks.items():
            if got != i:
                raise TestAbort(f"Assertion `{what}' failed: {got} != {i}")
        if th.area_field("node_id") != node:
            raise TestAbort(f"Assertion `rseq_current_node_id() == node' failed on CPU {i}")
        out.print(f"CPU {i}: cpu_id, cpu_id_start and node_id ok")
    th.setaffinity(allowed)
    if librseq_unregister_current_thread(th):
        raise TestAbort("Error: rseq_unregister_current_thread(...) failed")
    return 0


def run(kernel: str, *, machine: MachineSpec | None = None, seed: int = 0) -> RunResult:
    return run_program(kernel, main, machine=machine or MachineSpec(cpus=4, nodes=2), seed=seed,
                       glibc=Glibc("2.41", rseq_tunable=True))
