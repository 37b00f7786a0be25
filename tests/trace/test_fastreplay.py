"""The array replay (trace/fastreplay/) against the per-event reference loop: identical results.

Every comparison covers the eight counters, both tracepoints, user reads and writes, and the
per-task results (exits, counters, predicted and observed tracepoints), for the two kernels
and the what-if variants, on hand-built traces, random traces and (as root) a live recording.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from rseqlab.kernel import kernel_names
from rseqlab.trace.fastreplay import Fallback, Plan, fast_replay
from rseqlab.trace.format import Kind, save
from rseqlab.trace.replay import Replay, replay

from .test_replay import AREA, ROOT, SIG, Builder, started

KERNELS = kernel_names()  # every personality and what-if variant


def _same(trace, kernels=KERNELS):
    """Fast path == reference. A trace the fast path refuses (Fallback) is replayed by
    ``replay()`` with the reference loop; the callers assert how often that may happen."""
    fast = fast_replay(trace, kernels)
    for k in kernels:
        ref = Replay(trace, k).run()
        got = fast[k]
        assert got.counters == ref.counters, k
        assert got.tracepoints == ref.tracepoints, k
        assert (got.user_reads, got.user_writes) == (ref.user_reads, ref.user_writes), k
        assert got.per_task == ref.per_task, k
    return fast


def _random_trace(seed: int, n: int = 1500):
    """Plausible but unconstrained event soup: several tasks, forks, execs, signals, ticks,
    file mappings, registrations, blocking, preemption, migrations, exits, pid reuse."""
    rng = random.Random(seed)
    b = Builder()
    b.ev(Kind.SWITCH_IN, ROOT).ev(Kind.SYS_EXIT, ROOT, 0, 2)
    alive = [ROOT]
    next_pid = ROOT + 1
    for _ in range(n):
        pid = rng.choice(alive)
        cpu = rng.choice((0, 1))
        dt = rng.choice((300, 900, 4_000, 20_000, 200_000, 4_000_000, 60_000_000))
        r = rng.random()
        if r < 0.30:
            nr = rng.choice((0, 1, 39, 39, 39, 3, 9, 11, 257, 334, 15, 59, 56))
            args = None
            if nr == 334:
                args = (AREA + (pid % 64) * 0x10000, 32, rng.choice((0, 0, 0, 1)), SIG)
            elif nr == 9:
                args = (0, 4096 * rng.choice((1, 2)), 3, rng.choice((1, 0x22)), rng.choice((3, 4)), 0)
            elif nr == 11:
                args = (0x7000_0000 + 4096 * rng.choice((0, 1)), 4096)
            elif nr == 3:
                args = (rng.choice((3, 4)),)
            ret = {9: 0x7000_0000, 257: rng.choice((3, 4, -2)), 59: rng.choice((0, -2, -8))}.get(nr, 0)
            b.ts += dt
            b.syscall(nr, ret=ret, pid=pid, args=args, block=rng.random() < 0.3, cpu=cpu)
        elif r < 0.40:
            b.ev(Kind.SYS_ENTER, pid, rng.choice((0, 39, 61)), -1, dt=dt, cpu=cpu)
        elif r < 0.48:
            b.ev(Kind.SYS_EXIT, pid, rng.choice((0, 39)), 0, dt=dt, cpu=cpu)
        elif r < 0.62:
            b.ev(Kind.SWITCH_OUT, pid, rng.choice((0, 0, 1, 2, 0x100)), dt=dt, cpu=cpu)
            b.ev(Kind.SWITCH_IN, pid, dt=rng.choice((500, 50_000)), cpu=rng.choice((cpu, cpu, 1 - cpu)))
        elif r < 0.74:
            b.ev(Kind.IRQ, pid, rng.choice((0, 0, 1, 5, 6)), dt=dt, cpu=cpu)
        elif r < 0.80:
            b.ev(Kind.SIGNAL, pid, rng.choice((10, 12, 17)), rng.choice((0, 1, 0x401000)), dt=dt, cpu=cpu)
        elif r < 0.84 and len(alive) < 8:
            child = next_pid if rng.random() < 0.8 or len(alive) < 2 else rng.choice(alive)
            next_pid += 1
            flags = rng.choice((0x3D0F00, 0x1200011, 0x4111, -1))
            # clone()'s child TID pointer: none, on the forking task's rseq page, or elsewhere
            tid = rng.choice((None, AREA + (pid % 64) * 0x10000 + 0x200, 0x5000_0000))
            row = -1
            if tid is not None:
                row = len(b.args)
                b.args.append((len(b.rows), flags & 0xFFFF_FFFF, 0, 0, tid, 0, 0))
            b.ev(Kind.SYS_ENTER, pid, 56, row, dt=dt).ev(Kind.FORK, pid, child, flags)
            b.ev(Kind.SYS_EXIT, pid, 56, child)
            if child not in alive:
                alive.append(child)
        elif r < 0.86:
            if seed % 3 == 0:  # exec drops the handlers: a signal still pending then kills the task
                b.ev(Kind.EXEC, pid, pid, dt=dt)
        elif r < 0.87 and len(alive) > 1:
            b.ev(Kind.EXIT, pid, 1, dt=dt)
            alive.remove(pid)
        elif r < 0.95:
            b.ev(Kind.RSEQ_UPDATE, pid, cpu, 0, 0, dt=dt, cpu=cpu)
        else:
            b.ev(Kind.MIGRATE, pid, cpu, 1 - cpu, dt=dt)
    trace = b.trace()
    trace.meta["root"].update(rseq_registered=seed % 2 == 0, rseq_addr=AREA, rseq_len=32)
    return trace


@pytest.mark.parametrize("seed", range(12))
def test_random_traces_identical_to_reference(seed):
    trace = _random_trace(seed)
    try:
        _same(trace)
    except Fallback:
        # Only a kill by the kernel (a signal without handler after exec) may refuse the fast path,
        # and the public replay() then gives the reference results.
        assert seed % 3 == 0
        res = replay(trace, ["6.18"])
        assert res["6.18"].counters == Replay(trace, "6.18").run().counters


def test_repeated_rounds_are_counted_in_bulk_and_identical():
    b = started()
    for i in range(3000):
        b.syscall(0, block=i % 3 != 2)  # blocking reads between plain ones: irregular but repeating
        b.syscall(1)
        if i % 97 == 0:
            b.ev(Kind.IRQ, ROOT, 0, dt=500)  # a tick in user mode now and then (mm_cid work)
            b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=30_000).ev(Kind.SWITCH_IN, ROOT, cpu=i % 2)
    trace = b.trace()
    plan = Plan(trace)
    assert len(plan.seg_type) > 6000 and len(set(plan.seg_type.tolist())) < 40
    res = _same(trace)
    assert res["6.18"].counters["exit"] > 6000


def test_existing_scenarios_identical(tmp_path):
    from . import test_replay as tr

    builders = []
    orig = tr.counts

    def capture(b):
        builders.append(b)
        return orig(b)

    tr.counts = capture
    try:
        for name in dir(tr):
            if name.startswith("test_") and name != "test_replay_output_is_byte_identical":
                getattr(tr, name)()
    finally:
        tr.counts = orig
    assert len(builders) >= 8
    for b in builders:
        _same(b.trace())


def test_jobs_and_reference_give_identical_json(run_cli, tmp_path):
    path = tmp_path / "r.trace"
    save(_random_trace(3, 600), path)
    outs = [run_cli("replay", str(path), "--json", "--per-process", *extra)
            for extra in ((), ("--jobs", "2"), ("--reference",), ("--reference", "--jobs", "2"))]
    assert all(o.status == 0 for o in outs), [o.stderr for o in outs]
    assert len({o.stdout for o in outs}) == 1


def test_replay_api_jobs_identical():
    trace = _random_trace(5, 800)
    one = replay(trace, ["6.18", "6.19"])
    two = replay(trace, ["6.18", "6.19"], jobs=2)
    assert {k: (v.counters, v.per_task) for k, v in one.items()} == {k: (v.counters, v.per_task)
                                                                      for k, v in two.items()}


def test_live_recording_identical(tmp_path):
    """A real recording (ping-pong and a thread mix) replays identically on both paths (root only)."""
    if os.geteuid() != 0:
        pytest.skip("recording needs root")
    from rseqlab.errors import Unavailable
    from rseqlab.live.workloads import build
    from rseqlab.trace.record import record

    try:
        runs = [[str(build("pingpong")), "3000", "none"], [str(build("threadmix")), "10", "3"]]
        traces = [record(cmd, tmp_path / f"{i}.trace").trace for i, cmd in enumerate(runs)]
    except Unavailable as exc:
        pytest.skip(str(exc))
    for trace in traces:
        assert len(trace) > 1000
        res = _same(trace, ["6.18", "6.19"])
        assert res["6.18"].tracepoints["rseq_update"] > 0
    assert np.any(traces[0].events["kind"] == Kind.SWITCH_IN)


def test_segment_typing_checks_every_segment_exactly():
    """Types are proposed by hash and numbered by first appearance; a segment whose ops differ from
    its type's first segment under the same hash is a collision (the caller falls back)."""
    from rseqlab.trace.fastreplay import compiled

    def _type_segments(*args, size=16):
        while True:  # as Plan._segment: a larger table when this one is half full
            types, ok = compiled.type_segments(*args, np.empty(size, np.uint64), np.zeros(size, np.int64))
            if ok >= 0:
                return types, bool(ok)
            size *= 2

    # three segments of 2 ops each; ops: (code, a, b, c)
    code = np.array([1, 4, 1, 4, 1, 4], np.int8)
    a = np.array([0, 0, 0, 0, 0, 0], np.int64)
    b = np.zeros(6, np.int64)
    c = np.zeros(6, np.int64)
    order = np.arange(6, dtype=np.int64)
    starts = np.array([0, 2, 4], np.int64)
    lengths = np.array([2, 2, 2], np.int64)
    types, ok = _type_segments(order, starts, lengths, np.array([7, 9, 7], np.uint64), code, a, b, c)
    assert ok and types.tolist() == [0, 1, 0]
    a[5] = 1  # the third segment differs from the first, under the same hash
    _, ok = _type_segments(order, starts, lengths, np.array([7, 9, 7], np.uint64), code, a, b, c)
    assert not ok
    _, ok = _type_segments(order, starts, np.array([2, 2, 1], np.int64), np.array([7, 9, 7], np.uint64),
                           code, a, b, c)
    assert not ok  # a different length under the same hash
    # many distinct types (the table is sized for them) and colliding table slots
    n = 5000
    hashes = (np.arange(n, dtype=np.uint64) * np.uint64(1 << 40)) | np.uint64(3)
    code = np.tile(np.array([1], np.int8), n)
    zero = np.zeros(n, np.int64)
    types, ok = _type_segments(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n, np.int64),
                               hashes, code, np.arange(n, dtype=np.int64), zero, zero)
    assert ok and types.tolist() == list(range(n))
    # the table full signal itself
    _, status = compiled.type_segments(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                                       np.ones(n, np.int64), hashes, code, np.arange(n, dtype=np.int64), zero,
                                       zero, np.empty(64, np.uint64), np.zeros(64, np.int64))
    assert status == -1
