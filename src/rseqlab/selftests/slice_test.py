"""Port of ``tools/testing/selftests/rseq/slice_test.c`` (7.0+), run as ``run_timeslice_test.sh``
runs it: glibc's registration off (``GLIBC_TUNABLES=glibc.pthread.rseq=0``), so the test
registers its own area with the feature size (a v2 registration on 7.1).

The fixture (``FIXTURE_SETUP(slice_ext)``): register, enable the extension with
``prctl(PR_RSEQ_SLICE_EXTENSION, SET, ENABLE)`` (a failure is the test's SKIP), pin to one
CPU other than CPU 0, and start a noise thread on it that busy-waits ``noise`` ns and
sleeps ``sleep`` ns in a loop: its wake-ups preempt the test thread. The test
(``TEST_F(slice_ext, slice_test)``) then, until ``total`` ns have passed: sets
``slice_ctrl.request``, busy-waits ``slice`` ns (a critical section), clears the request if
it is still set (``success``: nobody needed the CPU), and if ``slice_ctrl.granted`` is set
calls ``rseq_slice_yield()`` (``yielded``; ``raced`` if that returned 0) or, in the
``no_yield`` variant, ``getpid()`` (``aborted``); a request the kernel cleared without a
grant means the thread was scheduled (``scheduled``). It prints the six counts. The C test
asserts nothing else; what it shows is whether grants happen.

The three variants keep their names and parameters; ``total`` is 5 s in the C file and
``TOTAL_NS`` (20 ms) here, a simulated run of that length already sees hundreds of the
noise thread's wake-ups.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import PR_RSEQ_SLICE_EXT_ENABLE, PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, StructRseq
from ..userprog.libc import Glibc, librseq_register_current_thread
from .harness import MachineSpec, Output, RunResult, TestAbort, run_program

TOTAL_NS = 20_000_000
_REQUEST = StructRseq.SLICE_CTRL.offset
_GRANTED = StructRseq.SLICE_CTRL.offset + 1


@dataclass(frozen=True)
class Variant:
    slice_ns: int
    noise_ns: int
    sleep_ns: int
    no_yield: bool = False


#: ``FIXTURE_VARIANT_ADD(slice_ext, ...)``, in the C file's order.
VARIANTS = {
    "n2_2_50": Variant(slice_ns=2_000, noise_ns=2_000, sleep_ns=50_000),
    "n50_2_50": Variant(slice_ns=50_000, noise_ns=2_000, sleep_ns=50_000),
    "n2_2_50_no_yield": Variant(slice_ns=2_000, noise_ns=2_000, sleep_ns=50_000, no_yield=True),
}
NAMES = [f"slice_ext.{v}.slice_test" for v in VARIANTS]


def main(th, out: Output, variant: Variant, total_ns: int = TOTAL_NS) -> int:
    if librseq_register_current_thread(th, nolibc=True):
        out.print("# SKIP RSEQ not supported")
        return 0
    if th.prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, PR_RSEQ_SLICE_EXT_ENABLE, 0, 0):
        out.print("# SKIP Time slice extension not supported")
        return 0
    cpus = sorted(th.st.affinity)
    pinned = next((c for c in cpus if c != 0), cpus[0])
    if th.setaffinity({pinned}):
        raise TestAbort("ASSERT_EQ(sched_setaffinity(...), 0) failed")
    run = {"run": True}

    def noise(t) -> None:
        while run["run"]:
            t.compute(variant.noise_ns)  # busy until noise_nsecs elapsed
            t.sleep(variant.sleep_ns)  # clock_nanosleep

    noise_thread = th.spawn_thread(noise)  # inherits the pinned affinity
    area = th.area
    n = {"total": 0, "success": 0, "yielded": 0, "aborted": 0, "scheduled": 0, "raced": 0}
    start = th.now
    while True:
        req = False
        n["total"] += 1
        th.store(area + _REQUEST, 1, 1)
        th.compute(variant.slice_ns)  # the critical section: busy until slice_nsecs elapsed
        if th.load(area + _REQUEST, 1):
            th.store(area + _REQUEST, 0, 1)
            req = True
            n["success"] += 1
        if th.load(area + _GRANTED, 1):
            if req:  # raced against a late grant
                n["success"] -= 1
            if variant.no_yield:
                th.getpid()
                n["aborted"] += 1
            else:
                n["yielded"] += 1
                if not th.rseq_slice_yield():
                    n["raced"] += 1
        elif not req:
            n["scheduled"] += 1
        if th.now - start >= total_ns:
            break
    run["run"] = False  # FIXTURE_TEARDOWN
    th.join(noise_thread)
    for label in ("Total", "Success", "Yielded", "Aborted", "Scheduled", "Raced"):
        out.print(f"# {label:<9} {n[label.lower()]:12d}")
    th.local.update({f"slice_test_{k}": v for k, v in n.items()})
    return 0


def run(kernel: str, variant: str = "n2_2_50", *, machine: MachineSpec | None = None, seed: int = 0,
        total_ns: int = TOTAL_NS) -> RunResult:
    v = VARIANTS[variant]
    r = run_program(kernel, lambda th, out: main(th, out, v, total_ns), machine=machine or MachineSpec(),
                    seed=seed, glibc=Glibc("2.41", rseq_tunable=False))
    if r.passed and skipped(r):
        r.detail = "SKIP: " + r.stdout[0].removeprefix("# SKIP ")  # kselftest's exit status 4
    return r


def skipped(r: RunResult) -> bool:
    return any(line.startswith("# SKIP") for line in r.stdout)
