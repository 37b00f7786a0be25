"""A timeline: tracks with slices, instants and counter values, written by :mod:`.writers`.

:func:`recording_timeline` lays out a recording (what the workload did: each task's time on a
CPU, its syscalls, signals, forks, execs, exits and the rseq tracepoints the kernel fired) and,
overlaid, what each personality did on each exit to user mode in the replay: one ``exit`` slice
per return, with a child slice for each statistics counter the return incremented (``fastpath``,
``slowpath``, ``ids``, ``cs``, ``clear``, ``fixup``, ``signal``), and one counter track per
personality and counter with the running totals.

The model has no notion of how long kernel work takes, so an exit slice has a nominal length
(:data:`EXIT_SLICE_NS`) starting where the return happened in the recording; its children split
it evenly, in the order the counters are listed above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..kernel import COUNTERS
from ..trace.format import Kind, Trace

#: Nominal length of one modelled exit to user (the model keeps no durations).
EXIT_SLICE_NS = 1000
#: Counters shown as child slices of an exit, in this order.
EXIT_PARTS = ("fastpath", "slowpath", "ids", "cs", "clear", "fixup", "signal")
_SYSCALL_NAMES = {0: "read", 1: "write", 3: "close", 9: "mmap", 11: "munmap", 13: "rt_sigaction",
                  14: "rt_sigprocmask", 15: "rt_sigreturn", 24: "sched_yield", 39: "getpid", 56: "clone",
                  57: "fork", 59: "execve", 60: "exit", 61: "wait4", 62: "kill", 202: "futex", 231: "exit_group",
                  234: "tgkill", 334: "rseq", 435: "clone3"}


@dataclass
class Track:
    uuid: int
    name: str
    parent: int | None = None  # a group track's uuid
    pid: int | None = None  # process tracks
    tid: int | None = None  # thread tracks
    counter: bool = False


@dataclass
class Slice:
    track: int
    ts: int  # ns
    dur: int  # ns
    name: str
    cat: str
    args: dict = field(default_factory=dict)


@dataclass
class Instant:
    track: int
    ts: int
    name: str
    cat: str
    args: dict = field(default_factory=dict)


@dataclass
class CounterValue:
    track: int
    ts: int
    value: float


@dataclass
class Timeline:
    title: str
    tracks: list[Track] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    instants: list[Instant] = field(default_factory=list)
    counters: list[CounterValue] = field(default_factory=list)
    _next: int = 1

    def track(self, name: str, *, parent: int | None = None, pid: int | None = None, tid: int | None = None,
              counter: bool = False) -> int:
        uuid = self._next
        self._next += 1
        self.tracks.append(Track(uuid, name, parent, pid, tid, counter))
        return uuid

    def summary(self) -> dict:
        """Per track name: how many slices, instants and counter values it holds (tests, reports)."""
        names = {t.uuid: t.name for t in self.tracks}
        out: dict[str, dict[str, int]] = {}
        for kind, items in (("slices", self.slices), ("instants", self.instants), ("counters", self.counters)):
            for item in items:
                row = out.setdefault(names[item.track], {"slices": 0, "instants": 0, "counters": 0})
                row[kind] += 1
        return out


#: Synthetic process ids of the groups (Chrome's format and Perfetto's process tracks need one).
RECORDING_PID = 1
MODEL_PID_BASE = 100


def recording_timeline(trace: Trace, kernels: list[str], title: str = "") -> Timeline:
    """The recording's own events, plus each personality's exits to user overlaid."""
    tl = Timeline(title or " ".join(trace.meta.get("command", [])) or "recording")
    ev = trace.events
    comms = trace.meta.get("tasks", {})
    group = tl.track(f"recording: {tl.title}", pid=RECORDING_PID)
    pids = sorted({int(p) for p in ev["pid"].tolist() if p >= 0})
    run_track, sys_track, ev_track = {}, {}, {}
    for pid in pids:
        label = f"{comms.get(str(pid), '?')} {pid}"
        run_track[pid] = tl.track(f"{label}: on CPU", parent=group, pid=RECORDING_PID, tid=pid * 4)
        sys_track[pid] = tl.track(f"{label}: syscalls", parent=group, pid=RECORDING_PID, tid=pid * 4 + 1)
        ev_track[pid] = tl.track(f"{label}: events", parent=group, pid=RECORDING_PID, tid=pid * 4 + 2)
    lost_track = tl.track("lost events", parent=group, pid=RECORDING_PID, tid=3)
    on_cpu: dict[int, tuple[int, int]] = {}
    in_sys: dict[int, tuple[int, int]] = {}
    end = int(ev["ts"][-1]) if len(ev["ts"]) else 0
    cols = [ev[c].tolist() for c in ("ts", "cpu", "kind", "pid", "a", "b", "c")]
    for ts, cpu, kind, pid, a, b, c in zip(*cols):
        if kind == Kind.SWITCH_IN:
            on_cpu[pid] = (ts, cpu)
        elif kind == Kind.SWITCH_OUT and pid in on_cpu:
            t0, c0 = on_cpu.pop(pid)
            tl.slices.append(Slice(run_track[pid], t0, ts - t0, f"CPU {c0}", "sched",
                                   {"cpu": c0, "prev_state": a}))
        elif kind == Kind.SYS_ENTER:
            in_sys[pid] = (ts, a)
        elif kind == Kind.SYS_EXIT and pid in in_sys:
            t0, nr = in_sys.pop(pid)
            tl.slices.append(Slice(sys_track[pid], t0, ts - t0, _SYSCALL_NAMES.get(nr, f"syscall {nr}"), "syscall",
                                   {"nr": nr, "ret": b}))
        elif kind == Kind.LOST:
            tl.instants.append(Instant(lost_track, ts, "lost events", "lost", {"cpu": cpu, "count": a}))
        elif kind in _INSTANTS and pid in ev_track:
            name, argnames = _INSTANTS[kind]
            tl.instants.append(Instant(ev_track[pid], ts, name, "event",
                                       {"cpu": cpu, **dict(zip(argnames, (a, b, c)))}))
    for pid, (t0, c0) in on_cpu.items():  # still running when the recording ended
        tl.slices.append(Slice(run_track[pid], t0, max(end - t0, 0), f"CPU {c0}", "sched", {"cpu": c0}))
    for kernel in kernels:
        add_model_exits(tl, kernel, replay_exits(trace, kernel), comms, len(kernels))
    return tl


_INSTANTS = {
    Kind.FORK: ("fork", ("child", "clone_flags")),
    Kind.EXEC: ("exec", ("old_pid",)),
    Kind.EXIT: ("exit", ("group_dead",)),
    Kind.SIGNAL: ("signal_deliver", ("sig", "sa_handler", "code")),
    Kind.RSEQ_UPDATE: ("rseq_update", ("cpu_id", "node_id", "mm_cid")),
    Kind.RSEQ_IP_FIXUP: ("rseq_ip_fixup", ("regs_ip", "start_ip", "post_commit_offset")),
    Kind.MIGRATE: ("migrate", ("orig_cpu", "dest_cpu")),
    Kind.IRQ: ("irq", ("kind",)),
}


@dataclass
class ModelExit:
    ts: int
    pid: int
    entry: str
    parts: dict[str, int]  # counter -> increments during this exit


def replay_exits(trace: Trace, kernel: str) -> list[ModelExit]:
    """Every exit to user the per-event replay performs under ``kernel``, with its counter deltas."""
    from ..trace.replay import Replay

    exits: list[ModelExit] = []

    class Recording(Replay):
        def _finish(self, rt, ts):
            entry, when = rt.pending, rt.pending_ts
            if entry is None or rt.dead:
                return super()._finish(rt, ts)
            before = {c: getattr(rt.task.stats, c) for c in COUNTERS}
            super()._finish(rt, ts)
            parts = {c: getattr(rt.task.stats, c) - before[c] for c in COUNTERS}
            exits.append(ModelExit(when, rt.task.pid, str(entry), {c: n for c, n in parts.items() if n}))

    Recording(trace, kernel).run()
    return exits


def add_model_exits(tl: Timeline, kernel: str, exits: list[ModelExit], comms: dict, groups: int = 1) -> None:
    """One group per personality: per task, its exits (with the counters as child slices), and
    the running totals of every counter as counter tracks."""
    pid_group = MODEL_PID_BASE + sum(1 for t in tl.tracks if t.pid is not None and t.pid >= MODEL_PID_BASE
                                     and t.parent is None)
    group = tl.track(f"model {kernel}: exits to user", pid=pid_group)
    task_tracks: dict[int, int] = {}
    counter_tracks = {c: tl.track(f"{kernel} {c}", parent=group, pid=pid_group, counter=True) for c in COUNTERS}
    totals = dict.fromkeys(COUNTERS, 0)
    for c in COUNTERS:
        tl.counters.append(CounterValue(counter_tracks[c], exits[0].ts if exits else 0, 0))
    for ex in exits:
        track = task_tracks.get(ex.pid)
        if track is None:
            track = task_tracks[ex.pid] = tl.track(f"{kernel}: {comms.get(str(ex.pid), '?')} {ex.pid}",
                                                   parent=group, pid=pid_group, tid=ex.pid * 4 + 3)
        path = "fast path" if "fastpath" in ex.parts and "slowpath" not in ex.parts else \
            "slow path" if "slowpath" in ex.parts else "no rseq work"
        tl.slices.append(Slice(track, ex.ts, EXIT_SLICE_NS, f"exit to user ({path})", f"model.{kernel}",
                               {"entry": ex.entry, "kernel": kernel, **ex.parts}))
        shown = [p for p in EXIT_PARTS if p in ex.parts]
        step = EXIT_SLICE_NS // max(len(shown), 1)
        for i, part in enumerate(shown):
            tl.slices.append(Slice(track, ex.ts + i * step, step, _PART_NAMES[part], f"model.{kernel}",
                                   {"count": ex.parts[part]}))
        for c, n in ex.parts.items():
            totals[c] += n
            tl.counters.append(CounterValue(counter_tracks[c], ex.ts, totals[c]))


_PART_NAMES = {"fastpath": "fast path", "slowpath": "slow path", "ids": "ID write", "cs": "cs check",
               "clear": "cs clear", "fixup": "fixup", "signal": "signal delivery"}


# ----------------------------------------------------------------------
# Simulated runs: every exit to user of every kernel, as it happens
# ----------------------------------------------------------------------
#: Where a return to user mode is completed (``bulk_round_trips``: n returns with nothing pending at once).
_EXIT_METHODS = ("syscall_exit_to_user_mode", "irqentry_exit_to_user_mode", "bulk_round_trips")


@dataclass
class ExitLog:
    """The exits to user a simulated run performed (see :func:`tapped_exits`)."""

    exits: list[ModelExit] = field(default_factory=list)
    comms: dict[str, str] = field(default_factory=dict)
    steps: int = 0


def _kernel_classes():
    from ..kernel._base import Kernel

    seen, todo = [], [Kernel]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


class tapped_exits:
    """``with tapped_exits() as log:`` records every ``syscall_exit_to_user_mode``,
    ``irqentry_exit_to_user_mode`` and ``bulk_round_trips`` (one record for the n returns, its
    ``exit`` part n) of every kernel in this process, with the counters each one
    incremented and the simulated time (the scheduler's ``ktime_get_mono_fast_ns``, else a step
    number). The methods are wrapped where the classes define them and restored on exit."""

    def __enter__(self) -> ExitLog:
        self.log = log = ExitLog()
        self.saved = []
        for cls in _kernel_classes():
            for name in _EXIT_METHODS:
                if name in cls.__dict__:
                    original = cls.__dict__[name]
                    self.saved.append((cls, name, original))
                    setattr(cls, name, _wrap(original, name, log))
        return log

    def __exit__(self, *exc) -> None:
        for cls, name, original in reversed(self.saved):
            setattr(cls, name, original)


def _wrap(original, name: str, log: ExitLog):
    entry = {"syscall_exit_to_user_mode": "syscall", "irqentry_exit_to_user_mode": "irq"}.get(name, "bulk")

    def tapped(self, t, *args, **kwargs):
        depth = getattr(self, "_rseqlab_tap_depth", 0)
        if depth:  # an overriding method calling the base one: counted once
            return original(self, t, *args, **kwargs)
        self._rseqlab_tap_depth = 1
        try:
            before = [getattr(t.stats, c) for c in COUNTERS]
            result = original(self, t, *args, **kwargs)
        finally:
            self._rseqlab_tap_depth = 0
        clock = getattr(getattr(self, "scheduler", None), "ktime_get_mono_fast_ns", None)
        log.steps += 1
        now = clock() if callable(clock) else log.steps * EXIT_SLICE_NS * 2
        parts = {c: getattr(t.stats, c) - b for c, b in zip(COUNTERS, before) if getattr(t.stats, c) != b}
        if not parts:  # a bulk of none, or a task that died instead of returning
            return result
        log.exits.append(ModelExit(int(now), t.pid, entry, parts))
        log.comms.setdefault(str(t.pid), getattr(t, "comm", "?"))
        return result

    tapped.__wrapped__ = original
    return tapped


def simulated_timeline(title: str, runs: dict[str, ExitLog]) -> Timeline:
    """One group per kernel of a simulated run (compare, selftest, check)."""
    tl = Timeline(title)
    for kernel, log in runs.items():
        add_model_exits(tl, kernel, log.exits, log.comms)
    return tl


#: Spacing of a counterexample's steps on the timeline (a step has no duration of its own).
STEP_NS = 10_000


def counterexample_timeline(result) -> Timeline:
    """``check --perfetto``: the counterexample of a :class:`~rseqlab.check.results.CheckResult`
    step by step: one slice per step on the thread it ran (its action, where, the rseq area
    before and after, the kernel's call graph as arguments), with the step's consequences as
    instants; a result without a violation gets one instant saying so."""
    sc = result.scenario
    tl = Timeline(f"check {sc.name} under {result.kernel}")
    group = tl.track(f"check {sc.name} ({result.kernel}): counterexample", pid=MODEL_PID_BASE)
    ex = result.counterexample
    if ex is None:
        track = tl.track("result", parent=group, pid=MODEL_PID_BASE, tid=1)
        tl.instants.append(Instant(track, 0, "no violation", "check",
                                   {"explored": result.explored, "invariant": sc.invariant}))
        return tl
    tracks: dict[str, int] = {}
    for step in ex.steps:
        track = tracks.get(step.thread)
        if track is None:
            track = tracks[step.thread] = tl.track(f"{step.thread}", parent=group, pid=MODEL_PID_BASE,
                                                   tid=len(tracks) + 1)
        args = {"step": step.index, "cpu": step.cpu, "where": step.where, "in_cs": step.in_cs}
        for key, area in (("area_before", step.area_before), ("area_after", step.area_after)):
            if area:
                args[key] = ", ".join(f"{k}={v}" for k, v in area.items())
        for who, lines in step.kernel.items():
            args[f"kernel {who}"] = "\n".join(lines)
        ts = step.index * STEP_NS
        tl.slices.append(Slice(track, ts, STEP_NS // 2, step.action, "check.step", args))
        for i, text in enumerate(step.events):
            tl.instants.append(Instant(track, ts + STEP_NS // 2 + i, text, "check.event", {"step": step.index}))
    verdict = tl.track("violation", parent=group, pid=MODEL_PID_BASE, tid=len(tracks) + 1)
    tl.instants.append(Instant(verdict, len(ex.steps) * STEP_NS, ex.violation or "violation", "check",
                               {"invariant": sc.invariant}))
    return tl
