"""The ``tcmalloc-slab-cache`` scenario: a TCMalloc-style allocator under load, plus its
background drain thread (``background_test`` in TCMalloc's own suite).

Workers allocate and free objects through the per-CPU slab cache of
:mod:`rseqlab.userprog.tcmalloc`; a background thread drains each CPU's slab in
turn (``stopped[cpu]``, ``FenceCpu``, move to the central list). The run passes
when the allocator stayed correct: no object was handed out while another
thread held it, and at the end every object sits exactly once in the free
structures. Expected: correct on 6.18, broken on 6.19 (userspace spec §5.1).
"""

from __future__ import annotations

from collections import Counter

from ..userprog.tcmalloc import SlabCache
from .harness import MachineSpec, Output, RunResult, TestAbort, check_machine, run_program

WORKERS = 6
OPS = 300  # malloc/free rounds per worker
BATCH = 8  # objects a worker holds at once
USE_NS = 500  # how long a worker uses its objects
CAPACITY = 8  # slots per slab
PREFILL = 2  # objects per slab at start: workers also live off the central list
DRAIN_ROUNDS = 100
DRAIN_PERIOD_NS = 3_000


def main(th, out: Output, *, workers: int = WORKERS, ops: int = OPS) -> int:
    cpus = th.m.config.cpus
    cache = SlabCache(th, cpus, capacity=CAPACITY, prefill=PREFILL)
    done = th.image.alloc(8)

    def worker(t) -> None:
        if cache.register(t):
            raise TestAbort(f"tid {t.tid}: tcmalloc could not register its rseq area")
        for _ in range(ops):
            held = [cache.malloc(t) for _ in range(BATCH)]
            t.compute(USE_NS)  # use the objects
            for obj in reversed(held):
                cache.free(t, obj)

    def background(t) -> None:
        if cache.register(t):
            raise TestAbort("background thread: registration failed")
        moved = 0
        for r in range(DRAIN_ROUNDS):
            if t.load(done):
                break
            moved += cache.drain(t, worker_cpus[r % len(worker_cpus)])
            t.sleep(DRAIN_PERIOD_NS)
        t.local["drained"] = moved

    # The background thread has the last CPU to itself; the workers share the others,
    # so every drain races with running workers (as TCMalloc's background_test does).
    worker_cpus = list(range(max(1, cpus - 1)))
    bg = th.spawn_thread(background, affinity={cpus - 1})
    ts = [th.spawn_thread(worker, affinity={worker_cpus[k % len(worker_cpus)]}) for k in range(workers)]
    for t in ts:
        th.join(t)
    th.store(done, 1)
    th.join(bg)

    oracle = cache.oracle
    free = cache.free_objects(th.mm)
    dup = sorted(obj for obj, n in Counter(free).items() if n > 1)
    lost = sorted(set(cache.objects) - set(free) - set(oracle.held))
    recached = sum(t.thread.local.get("recached", 0) for t in th.m.tasks.values())
    out.print(f"allocations {oracle.allocations}, objects {len(cache.objects)}, "
              f"drained {bg.thread.local.get('drained', 0)}, slab re-caches {recached}")
    out.print(f"double hand-outs {len(oracle.double)}, duplicated in free lists {len(dup)}, lost {len(lost)}")
    th.local["double_handouts"] = len(oracle.double)
    if oracle.double:
        obj, first, second = oracle.double[0]
        raise TestAbort(f"the same object was handed out twice: {obj:#x} held by tid {first} "
                        f"was given to tid {second} ({len(oracle.double)} double hand-outs)")
    if dup or lost:
        raise TestAbort(f"free lists corrupted: {len(dup)} objects duplicated, {len(lost)} lost")
    return 0


def run(kernel: str, *, machine: MachineSpec | None = None, seed: int = 0, workers: int = WORKERS,
        ops: int = OPS) -> RunResult:
    spec = machine or MachineSpec(cpus=4)
    check_machine(spec, workers + 1)
    return run_program(kernel, lambda th, out: main(th, out, workers=workers, ops=ops), machine=spec, seed=seed)
