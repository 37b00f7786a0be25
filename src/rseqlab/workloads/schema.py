"""The workload file format (TOML), validated into plain dataclasses.

A workload describes a machine and the processes that run on it::

    name = "pingpong"
    description = "two threads of one process bounce a token over two pipes"
    source = "where every number comes from (a measurement, with its command, or a document)"
    duration_ms = 200            # optional: stop the simulation then (default: when all exit)

    [machine]
    cpus = 2                     # >= 1
    nodes = 1                    # 1 .. cpus
    hz = 250                     # 1 .. 10000

    [[process]]
    name = "pingpong"
    instances = 1                # started at time 0; 0 = only spawned by other processes
    glibc = "2.36"               # 2.35 .. 2.42: how glibc registers rseq
    rseq = true                  # false: GLIBC_TUNABLES=glibc.pthread.rseq=0
    handlers = ["SIGUSR1"]       # signals with a handler installed

    [[process.thread]]           # the first thread is the main thread (count 1)
    name = "ping"
    count = 1                    # identical threads
    repeat = 1000                # iterations of the step list
    affinity = [0]               # optional CPU list
    steps = [
      { op = "pipe_write", pipe = "ab" },
      { op = "pipe_read", pipe = "ba" },
      { op = "compute", ns = 2000 },
    ]

Steps (every step also takes ``every = N``: only on iterations divisible by N,
and ``prob = p``: with probability p, drawn from the seeded generator):

============ ============================================== ==========================
op           parameters                                     what it models
============ ============================================== ==========================
compute      ns, jitter (0..1)                              a CPU burst in user mode
syscalls     count, user_ns, kernel_ns                      fast non-blocking syscalls
page_faults  count, user_ns, kernel_ns                      minor page faults
sleep / io   ns, jitter                                     a blocking wait (nanosleep, disk read)
pipe_write   pipe                                           write one message
pipe_read    pipe                                           block until a message arrives
signal       sig, target ("self" or a thread name)          kill()/raise()
munmap       -                                              deferred fput: task_work on exit
yield        -                                              sched_yield()
membarrier   -                                              MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ
rseq         count, loops                                   per-CPU counter increments (rseq sections)
spawn        process, count, wait                           posix_spawn() children (vfork + exec)
param_test   args, build                                    run the ported selftest binary (a child)
tcmalloc     count, hold, ns                                malloc/free through a TCMalloc-style cache
tcmalloc_drain -                                            the background thread drains every CPU slab
slicelock    count, hold, ns, slices                        a spinlock held ``hold`` ns, with a time-slice
                                                            extension requested (7.0+) unless slices = false
============ ============================================== ==========================

Limits (a workload beyond them is refused before it runs, with the estimate): ``repeat``,
every ``count`` and ``instances`` at most ``MAX_REPEAT``/``MAX_COUNT``/``MAX_INSTANCES``; one
step's ``ns`` (and ``user_ns``/``kernel_ns``) at most one simulated hour; ``duration_ms`` at most
one simulated hour; in all, at most ``MAX_STEP_EXECUTIONS`` step executions (spawned children
included, so a process that spawns itself, directly or through others, is refused) and at most
one simulated hour of work in any one thread. The built-in workloads need under 0.2 % of that.

Any error names the file, the key and what was expected, on one line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..kernel._task import SIGNAL_NAMES
from ..userprog.libc import GLIBC_VERSIONS

SIGNALS = {name: num for num, name in SIGNAL_NAMES.items()}

_PARAM_BUILDS = ("param_test", "param_test_compare_twice", "param_test_mm_cid", "param_test_mm_cid_compare_twice")

#: op -> {parameter: (type, required, check, expected-text)}
MAX_REPEAT = 100_000_000
MAX_COUNT = 100_000_000
MAX_INSTANCES = 4096
MAX_NS = 3_600 * 10**9  # one simulated hour
MAX_STEP_EXECUTIONS = 100_000_000

_POS = (lambda v: 0 < v <= MAX_COUNT, f"an integer in 1..{MAX_COUNT:,}")
_NONNEG = (lambda v: 0 <= v <= MAX_COUNT, f"an integer in 0..{MAX_COUNT:,}")
_NS = (lambda v: 0 <= v <= MAX_NS, f"a number of ns in 0..{MAX_NS:,} (one simulated hour)")
_POS_NS = (lambda v: 0 < v <= MAX_NS, f"a number of ns in 1..{MAX_NS:,} (one simulated hour)")
_FRACTION = (lambda v: 0 <= v <= 1, "a number between 0 and 1")
STEP_PARAMS: dict[str, dict[str, tuple]] = {
    "compute": {"ns": (int, True, *_NS), "jitter": ((int, float), False, *_FRACTION)},
    "syscalls": {"count": (int, True, *_POS), "user_ns": (int, True, *_NS), "kernel_ns": (int, True, *_NS)},
    "page_faults": {"count": (int, True, *_POS), "user_ns": (int, True, *_NS),
                    "kernel_ns": (int, True, *_NS)},
    "sleep": {"ns": (int, True, *_POS_NS), "jitter": ((int, float), False, *_FRACTION)},
    "io": {"ns": (int, True, *_POS_NS), "jitter": ((int, float), False, *_FRACTION)},
    "pipe_write": {"pipe": (str, True, lambda v: bool(v), "a pipe name")},
    "pipe_read": {"pipe": (str, True, lambda v: bool(v), "a pipe name")},
    "signal": {"sig": (str, True, lambda v: v in SIGNALS, f"one of {', '.join(SIGNALS)}"),
               "target": (str, False, lambda v: bool(v), "'self' or a thread name")},
    "munmap": {},
    "yield": {},
    "membarrier": {},
    "rseq": {"count": (int, True, *_POS), "loops": (int, False, *_NONNEG)},
    "spawn": {"process": (str, True, lambda v: bool(v), "the name of a process"),
              "count": (int, False, *_POS), "wait": (bool, False, lambda v: True, "true or false")},
    "param_test": {"args": (str, True, lambda v: True, "param_test's command line, e.g. \"-T s -r 100\""),
                   "build": (str, False, lambda v: v in _PARAM_BUILDS, f"one of {', '.join(_PARAM_BUILDS)}")},
    "tcmalloc": {"count": (int, True, *_POS), "hold": (int, False, *_POS), "ns": (int, False, *_NS)},
    "tcmalloc_drain": {},
    "slicelock": {"count": (int, True, *_POS), "hold": (int, True, *_POS_NS), "ns": (int, False, *_NS),
                  "slices": (bool, False, lambda v: True, "true or false")},
}
COMMON_STEP_KEYS = {"op", "every", "prob"}


@dataclass(frozen=True)
class Step:
    op: str
    params: dict[str, Any]
    every: int = 1
    prob: float = 1.0

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass(frozen=True)
class ThreadSpec:
    name: str
    steps: tuple[Step, ...]
    count: int = 1
    repeat: int = 1
    affinity: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    threads: tuple[ThreadSpec, ...]
    instances: int = 1
    glibc: str = "2.36"
    rseq: bool = True
    handlers: tuple[str, ...] = ()


@dataclass(frozen=True)
class MachineSpec:
    cpus: int = 2
    nodes: int = 1
    hz: int = 250


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    source: str
    machine: MachineSpec
    processes: tuple[ProcessSpec, ...]
    duration_ms: int | None = None
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def process(self, name: str) -> ProcessSpec:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)


BUILTIN = ("kernel-build", "rseq-selftests", "pingpong", "signals", "server", "tcmalloc", "slicelock")


def builtin_names() -> list[str]:
    return list(BUILTIN)


def load_workload(name_or_path: str) -> Workload:
    """A built-in workload by name, or a TOML file by path."""
    if name_or_path in BUILTIN:
        text = resources.files("rseqlab.workloads").joinpath("builtin", f"{name_or_path}.toml").read_text()
        return parse_workload(text, f"{name_or_path}.toml")
    path = Path(name_or_path)
    if not path.exists():
        raise BadInput(f"no workload {name_or_path!r}: not a file, and not a built-in "
                       f"({', '.join(BUILTIN)})")
    if path.suffix in (".rlt", ".npz"):
        raise BadInput(f"{name_or_path}: this looks like a recorded trace; use `rseqlab replay {name_or_path}`")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{name_or_path}: cannot read: {exc}") from None
    return parse_workload(text, str(path))


def parse_workload(text: str, where: str) -> Workload:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:
        raise BadInput(f"{where}: not a workload: arrays or tables nested too deeply") from None
    v = _Validator(where)
    v.keys(doc, "", {"name", "description", "source", "duration_ms", "machine", "process"})
    name = v.get(doc, "name", str, required=True)
    description = v.get(doc, "description", str, required=True)
    source = v.get(doc, "source", str, required=True)
    duration = v.get(doc, "duration_ms", int,
                     check=(lambda d: 0 < d <= MAX_NS // 10**6, f"1..{MAX_NS // 10**6:,} (one simulated hour)"))
    mdoc = v.get(doc, "machine", dict, required=True)
    v.keys(mdoc, "machine.", {"cpus", "nodes", "hz"})
    cpus = v.get(mdoc, "cpus", int, "machine.", required=True, check=(lambda c: 1 <= c <= 512, "1..512"))
    nodes = v.get(mdoc, "nodes", int, "machine.", default=1,
                  check=(lambda n: 1 <= n <= cpus, f"1..{cpus} (no more nodes than CPUs)"))
    hz = v.get(mdoc, "hz", int, "machine.", default=250, check=(lambda h: 1 <= h <= 10_000, "1..10000"))
    procs_doc = v.get(doc, "process", list, required=True)
    if not procs_doc:
        raise BadInput(f"{where}: process: expected at least one [[process]]")
    processes = tuple(_process(v, p, i, cpus) for i, p in enumerate(procs_doc))
    names = [p.name for p in processes]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise BadInput(f"{where}: process[{i}].name: expected a unique name, {n!r} repeats")
    for p in processes:
        for t in p.threads:
            for j, s in enumerate(t.steps):
                if s.op == "spawn" and s.params["process"] not in names:
                    raise BadInput(f"{where}: process {p.name!r} thread {t.name!r} steps[{j}].process: "
                                   f"expected one of {', '.join(names)}, got {s.params['process']!r}")
                if s.op == "signal":
                    target = s.params.get("target", "self")
                    if target != "self" and target not in [x.name for x in p.threads]:
                        raise BadInput(f"{where}: process {p.name!r} thread {t.name!r} steps[{j}].target: "
                                       f"expected 'self' or a thread of the process, got {target!r}")
    if not any(p.instances for p in processes):
        raise BadInput(f"{where}: process: expected at least one process with instances >= 1")
    w = Workload(name, description, source, MachineSpec(cpus, nodes, hz), processes, duration, where)
    _check_work(w)
    return w


def estimate_work(w: Workload) -> tuple[int, int]:
    """(step executions, the most simulated ns of work in one thread), spawned children included.

    An upper bound from the step lists alone (``every``/``prob`` ignored); a spawn cycle raises
    BadInput, since the work it asks for has no bound."""
    by_name = {p.name: p for p in w.processes}
    memo: dict[str, tuple[int, int]] = {}

    def process_work(name: str, chain: tuple[str, ...]) -> tuple[int, int]:
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name):], name))
            raise BadInput(f"{w.path}: spawn chain {cycle} has no end (a process spawns itself)")
        if name in memo:
            return memo[name]
        steps = longest = 0
        for t in by_name[name].threads:
            per_steps = per_ns = 0
            for st in t.steps:
                count = st.params.get("count", 1)
                per_steps += param_test_work(st.params["args"]) if st.op == "param_test" else count
                per_ns += st.params.get("ns", 0) + count * (st.params.get("user_ns", 0) + st.params.get("kernel_ns", 0))
                if st.op == "slicelock":  # count rounds of hold + ns
                    per_ns += count * st.params["hold"] + (count - 1) * st.params.get("ns", 0)
                if st.op == "spawn":
                    child_steps, child_ns = process_work(st.params["process"], (*chain, name))
                    per_steps += count * child_steps
                    longest = max(longest, child_ns)
            steps += t.count * t.repeat * per_steps
            longest = max(longest, t.repeat * per_ns)
        memo[name] = (steps, longest)
        return memo[name]

    total = longest = 0
    for p in w.processes:
        steps, ns = process_work(p.name, ())
        total += p.instances * steps
        longest = max(longest, ns)
    return total, longest


def _check_work(w: Workload) -> None:
    steps, longest = estimate_work(w)
    if steps > MAX_STEP_EXECUTIONS:
        raise BadInput(f"{w.path}: too much work: about {steps:,} step executions "
                       f"(the limit is {MAX_STEP_EXECUTIONS:,}); lower repeat, count or instances")
    if longest > MAX_NS and (w.duration_ms is None or w.duration_ms * 10**6 > MAX_NS):
        raise BadInput(f"{w.path}: too much work: one thread asks for {longest / 1e9:,.0f} simulated "
                       f"seconds (the limit is {MAX_NS // 10**9:,}); lower repeat or ns, or set duration_ms")


def _process(v: _Validator, doc: Any, i: int, cpus: int) -> ProcessSpec:
    at = f"process[{i}]."
    if not isinstance(doc, dict):
        raise BadInput(f"{v.where}: process[{i}]: expected a table")
    v.keys(doc, at, {"name", "instances", "glibc", "rseq", "handlers", "thread"})
    name = v.get(doc, "name", str, at, required=True)
    instances = v.get(doc, "instances", int, at, default=1,
                      check=(lambda n: 0 <= n <= MAX_INSTANCES, f"0..{MAX_INSTANCES}"))
    glibc = v.get(doc, "glibc", str, at, default="2.36",
                  check=(lambda g: g in GLIBC_VERSIONS, f"one of {', '.join(GLIBC_VERSIONS)}"))
    rseq = v.get(doc, "rseq", bool, at, default=True)
    handlers = v.get(doc, "handlers", list, at, default=[])
    for h in handlers:
        if not isinstance(h, str) or h not in SIGNALS:
            raise BadInput(f"{v.where}: {at}handlers: expected signal names ({', '.join(SIGNALS)}), got {h!r}")
    threads_doc = v.get(doc, "thread", list, at, required=True)
    if not threads_doc:
        raise BadInput(f"{v.where}: {at}thread: expected at least one [[process.thread]]")
    threads = tuple(_thread(v, t, f"{at}thread[{j}].", cpus) for j, t in enumerate(threads_doc))
    if threads[0].count != 1:
        raise BadInput(f"{v.where}: {at}thread[0].count: expected 1 (the first thread is the main thread)")
    return ProcessSpec(name, threads, instances, glibc, rseq, tuple(handlers))


def _thread(v: _Validator, doc: Any, at: str, cpus: int) -> ThreadSpec:
    if not isinstance(doc, dict):
        raise BadInput(f"{v.where}: {at.rstrip('.')}: expected a table")
    v.keys(doc, at, {"name", "count", "repeat", "affinity", "steps"})
    name = v.get(doc, "name", str, at, required=True)
    count = v.get(doc, "count", int, at, default=1, check=(lambda c: 1 <= c <= 4096, "1..4096"))
    repeat = v.get(doc, "repeat", int, at, default=1,
                   check=(lambda r: 0 < r <= MAX_REPEAT, f"an integer in 1..{MAX_REPEAT:,}"))
    affinity = v.get(doc, "affinity", list, at)
    if affinity is not None:
        if not affinity or not all(isinstance(c, int) and 0 <= c < cpus for c in affinity):
            raise BadInput(f"{v.where}: {at}affinity: expected a non-empty list of CPUs in 0..{cpus - 1}, "
                           f"got {affinity!r}")
        affinity = tuple(sorted(set(affinity)))
    steps_doc = v.get(doc, "steps", list, at, required=True)
    steps = tuple(_step(v, s, f"{at}steps[{k}]") for k, s in enumerate(steps_doc))
    return ThreadSpec(name, steps, count, repeat, affinity)


def _step(v: _Validator, doc: Any, at: str) -> Step:
    if not isinstance(doc, dict):
        raise BadInput(f"{v.where}: {at}: expected a table like {{ op = \"compute\", ns = 1000 }}")
    op = doc.get("op")
    if not isinstance(op, str) or op not in STEP_PARAMS:
        raise BadInput(f"{v.where}: {at}.op: expected one of {', '.join(STEP_PARAMS)}, got {op!r}")
    spec = STEP_PARAMS[op]
    v.keys(doc, f"{at}.", set(spec) | COMMON_STEP_KEYS)
    params = {}
    for key, (typ, required, check, expected) in spec.items():
        value = v.get(doc, key, typ, f"{at}.", required=required, check=(check, expected))
        if value is not None:
            params[key] = value
    if op == "param_test":
        _check_param_test_args(v, params["args"], f"{at}.args")
    every = v.get(doc, "every", int, f"{at}.", default=1, check=_POS)
    prob = v.get(doc, "prob", (int, float), f"{at}.", default=1.0, check=_FRACTION)
    return Step(op, params, every, float(prob))


def param_test_work(args: str) -> int:
    """Step executions of one ported param_test run: each thread's repetitions (default 5000 x 200)."""
    from ..selftests.param_test import parse_args

    o = parse_args(args.split())
    return 0 if o.help else max(o.reps, 1) * max(o.threads, 1)


def _check_param_test_args(v: _Validator, args: str, at: str) -> None:
    try:
        param_test_work(args)
    except BadInput as exc:
        raise BadInput(f"{v.where}: {at}: {exc}") from None


class _Validator:
    def __init__(self, where: str) -> None:
        self.where = where

    def keys(self, doc: dict, at: str, allowed: set[str]) -> None:
        for key in doc:
            if key not in allowed:
                raise BadInput(f"{self.where}: {at}{key}: unknown key; expected one of {', '.join(sorted(allowed))}")

    def get(self, doc: dict, key: str, typ, at: str = "", *, required: bool = False, default: Any = None,
            check: tuple | None = None) -> Any:
        if key not in doc:
            if required:
                raise BadInput(f"{self.where}: {at}{key}: missing (required)")
            return default
        value = doc[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        # bool is an int in Python; a TOML boolean is never a valid number here.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true or false",
                                 list: "a list", dict: "a table"}[t] for t in types)
            raise BadInput(f"{self.where}: {at}{key}: expected {names}, got {value!r}")
        if check is not None and not check[0](value):
            raise BadInput(f"{self.where}: {at}{key}: expected {check[1]}, got {value!r}")
        return value
