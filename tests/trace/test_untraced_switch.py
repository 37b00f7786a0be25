"""build_trace's repair of a switch-in the kernel did not record (trace/build.py)."""

from __future__ import annotations

import numpy as np

from rseqlab.trace.build import _add_untraced_switch_ins, _untraced_switch_ins
from rseqlab.trace.format import EVENT_COLUMNS, Kind

OUT, IN, ENTER, EXIT, MIG, FORK = Kind.SWITCH_OUT, Kind.SWITCH_IN, Kind.SYS_ENTER, Kind.SYS_EXIT, Kind.MIGRATE, Kind.FORK


def _events(rows):
    cols = {c: np.array([r.get(c, 0) for r in rows], dtype=t) for c, t in EVENT_COLUMNS.items()}
    return cols


def _rows(events):
    return [(int(events["ts"][i]), int(events["cpu"][i]), int(events["kind"][i]), int(events["pid"][i]),
             int(events["a"][i])) for i in range(len(events["ts"]))]


def test_a_task_seen_running_after_its_switch_out_gets_the_switch_in_before_that_event():
    # The CI failure's shape: 7 blocks on CPU 0, is woken onto CPU 1, and the idle exit there
    # left no sched_switch; its next own events are a syscall and another switch-out on CPU 1.
    ev = _events([dict(ts=10, cpu=0, kind=IN, pid=7, a=0),
                  dict(ts=20, cpu=0, kind=OUT, pid=7, a=2),
                  dict(ts=30, cpu=1, kind=MIG, pid=7, a=0, b=1),  # the migration is not the task's own event
                  dict(ts=40, cpu=1, kind=ENTER, pid=7, a=39),
                  dict(ts=50, cpu=1, kind=EXIT, pid=7, a=39),
                  dict(ts=60, cpu=1, kind=OUT, pid=7, a=1),
                  dict(ts=70, cpu=1, kind=OUT, pid=7, a=1)])  # a second gap: switched out twice
    fixed, n = _add_untraced_switch_ins(ev, np.array([7]), np.array([], np.int32))
    assert n == 2
    assert _rows(fixed) == [(10, 0, IN, 7, 0), (20, 0, OUT, 7, 2), (30, 1, MIG, 7, 0), (40, 1, IN, 7, -1),
                            (40, 1, ENTER, 7, 39), (50, 1, EXIT, 7, 39), (60, 1, OUT, 7, 1),
                            (70, 1, IN, 7, -1), (70, 1, OUT, 7, 1)]
    assert {c: v.dtype for c, v in fixed.items()} == {c: v.dtype for c, v in ev.items()}


def test_a_child_forked_in_the_recording_starts_with_its_switch_in():
    ev = _events([dict(ts=10, cpu=0, kind=FORK, pid=7, a=8),
                  dict(ts=20, cpu=1, kind=EXIT, pid=8, a=0),  # the child's first event, no switch-in
                  dict(ts=30, cpu=0, kind=ENTER, pid=7, a=0),  # the root: running when recording began
                  dict(ts=40, cpu=1, kind=OUT, pid=8, a=0)])
    fixed, n = _add_untraced_switch_ins(ev, np.array([7, 8]), np.array([8]))
    assert n == 1
    assert [r[2:4] for r in _rows(fixed)] == [(FORK, 7), (IN, 8), (EXIT, 8), (ENTER, 7), (OUT, 8)]


def test_a_complete_recording_is_left_alone():
    ev = _events([dict(ts=10, cpu=0, kind=FORK, pid=7, a=8),
                  dict(ts=15, cpu=1, kind=IN, pid=8, a=0),
                  dict(ts=20, cpu=1, kind=ENTER, pid=8),
                  dict(ts=25, cpu=1, kind=OUT, pid=8, a=1),
                  dict(ts=26, cpu=0, kind=MIG, pid=8),
                  dict(ts=30, cpu=0, kind=IN, pid=8),
                  dict(ts=35, cpu=0, kind=OUT, pid=8, a=32)])
    fixed, n = _add_untraced_switch_ins(ev, np.array([7, 8]), np.array([8]))
    assert n == 0 and _rows(fixed) == _rows(ev)


def test_the_compiled_walk_and_the_numpy_version_mark_the_same_rows():
    # Random per-task event streams (switch-outs, switch-ins, syscalls, migrations, a lost-events
    # row): both ways of finding the missing switch-ins give the same rows.
    rng = np.random.default_rng(5)
    n = 5000
    kinds = np.array([OUT, IN, ENTER, EXIT, MIG, Kind.LOST], np.uint8)
    kind = kinds[rng.choice(len(kinds), n, p=[0.3, 0.25, 0.2, 0.15, 0.07, 0.03])]
    tree = np.array([3, 40, 41, 900, 70000])
    pid = tree[rng.integers(0, len(tree), n)].astype(np.int32)
    pid[kind == Kind.LOST] = -1
    children = np.array([41, 70000])
    compiled = _untraced_switch_ins(kind, pid, tree, children, compiled=True)
    plain = _untraced_switch_ins(kind, pid, tree, children, compiled=False)
    assert len(plain) > 100 and np.array_equal(compiled, plain)
