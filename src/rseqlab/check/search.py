"""The search: exhaustive exploration of interrupt placements and thread interleavings.

The explorer runs a scenario on :class:`ControlledMachine`, the simulated
machine with the explorer as its only source of events: no clock, no tick,
no load balancing. A thread running scenario code stops at every instruction
boundary (and inside every syscall) and waits for a decision. At each
*decision point* the explorer picks one alternative:

* ``run T``: thread T executes its next instruction (threads on different
  CPUs interleave instruction by instruction);
* ``preempt T``: an interrupt lands before T's next instruction and the exit
  path schedules: T is switched out and the CPU goes to the next of our
  threads queued there, or to "another process"; T is switched back in
  when the explorer says ``resume T`` (a preemption);
* ``migrate T -> cpu N``: the same, T coming back on CPU N (a migration);
* ``signal T``: SIGUSR1 is sent and an interrupt lands before T's next
  instruction; the handler (the scenario's, or an empty one) runs on the way
  out.

Inside a syscall the same three are the syscall blocking or being preempted,
and a signal pending at its exit. Preemptions, migrations and signals are
bounded (:class:`Bounds`).

The search is a depth-first search by re-execution (the machine is rebuilt
for every execution and replays a prefix of choices, which greenlets make
cheap), pruned by state hashing: at every new decision point the complete
state (user memory, each thread's kernel and user state including its Python
frames, run queues, mm_cid allocator) is hashed, and the execution stops if
that state was seen before with at least the same remaining budget. Two
interleavings of independent steps reach the same state, so this also does
the work of a partial-order reduction. ``explored`` counts executions (each
ran to the end or to a known state), ``distinct_states`` the distinct states
hashed.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import BadInput
from ..kernel import kernel_class
from .model import Scenario
from .interrupts import KINDS, PremiseBroken, Tripwire, audited, doomed
from .reduction import REDUCTIONS, Footprint, Node, absorbable, dependent, widen
from .results import HISTORY_POINTS, Bounds, CheckResult, Execution
from .statehash import inert_stale_rseq_cs
from .tracer import Tracer
from .world import World

#: Decisions in one execution before it is cut (a livelock the hashing did not catch).
MAX_DEPTH = 4000


class _UserReadsRseqCs(Exception):
    """An execution's user code read rseq_cs (``World.user_read_cs``)."""


class _SkipPremiseBroken(Exception):
    """An execution's user code read an mm_cid field (``World.user_read_mm_cid``) or touched
    another thread's TLS page (``World.cross_tls``): the premises of the pointless-preemption
    skip and the eager resumes."""


class Explorer:
    def __init__(self, scenario: Scenario, kernel: str, bounds: Bounds, *, debug: bool = False,
                 reduction: str = "sleep", progress: Callable[[int, int, int], None] | None = None) -> None:
        if reduction not in REDUCTIONS:
            raise BadInput(f"--reduction {reduction!r}: accepted {', '.join(REDUCTIONS)}")
        self.scenario = scenario
        self.kernel = kernel
        self.bounds = bounds
        self.debug = debug
        self.reduction = reduction
        #: Called after every execution with (explored, distinct states, violations).
        self.progress = progress
        #: state digest -> (remaining budgets, sleep set) it was explored with
        self.seen: dict[bytes, list[tuple[tuple[int, int, int], frozenset]]] = {}
        #: Alternatives found to change nothing and taken over by the execution (no replay).
        self.absorbed = 0
        #: Hash a stale rseq_cs as 0 (statehash.stale_rseq_cs): the sleep reduction, on kernels
        #: whose rseq_cs code was audited for it; off again if user code ever reads rseq_cs.
        self.canonical_cs = reduction == "sleep" and inert_stale_rseq_cs(kernel_class(kernel))
        #: Skip an interrupt at a section boundary whose outcome was explored at another boundary
        #: (interrupts.py): the sleep reduction, on audited kernels; off if the tripwire fires.
        self.skip_interrupts = reduction == "sleep" and audited(kernel_class(kernel))
        #: (digest without the doomed thread's position, interrupt) -> [(budget, sleep set, footprint)]
        self.icache: dict[tuple[bytes, tuple[str, int, int]], list[tuple[tuple[int, ...], frozenset, Footprint]]] = {}
        #: Interrupts skipped that way (no execution of their own).
        self.skipped = 0
        #: Known states explored again for only the alternatives asleep there before (``_known``).
        self.revisited = 0
        #: Pass preemptions that only send a thread away and back (``World.pointless_preempt``):
        #: the sleep reduction, on audited kernels, without membarrier (its IPIs look at which
        #: thread a CPU runs); off again if user code ever reads an mm_cid field or touches another
        #: thread's TLS page (``_SkipPremiseBroken``).
        self.skip_pointless = (reduction == "sleep" and audited(kernel_class(kernel))
                               and not scenario.membarrier)
        #: Preemptions passed that way, and alternatives passed for a resume that commutes with
        #: them all (``World.eager_resume``).
        self.pointless = self.eager = 0

    def run(self, root: list[int] | None = None, *, trace: bool = True) -> CheckResult:
        """The search (:meth:`_search`); again without the canonical rseq_cs hash if user code
        turned out to read an rseq_cs word, which breaks that hash's premise, and without the
        interrupt skip if a doomed thread came back without an abort (``interrupts.Tripwire``)."""
        while True:
            try:
                return self._search(root, trace=trace)
            except _UserReadsRseqCs:
                self.canonical_cs = False
            except PremiseBroken:
                self.skip_interrupts = False
            except _SkipPremiseBroken:
                self.skip_pointless = False
            self.seen.clear()
            self.icache.clear()
            self.absorbed = self.skipped = self.revisited = self.pointless = self.eager = 0

    def _search(self, root: list[int] | None = None, *, trace: bool = True) -> CheckResult:
        """Depth-first over decision sequences; each decision tries its allowed alternatives.

        ``root``: explore only the subtree below this prefix of choices (``check --subtrees``);
        ``trace``: run the counterexample again with tracing (its choices are kept either way).

        Partial-order reduction, two parts (``reduction="sleep"``; ``"local"`` is the first
        alone, ``"none"`` neither: state hashing only):

        * persistent sets of thread-local steps: if the alternative taken first at a
          decision, "run T", was a thread-local step (it touched only T's TLS page and
          switched nothing), it commutes with everything the other threads can do there,
          so only T's own alternatives (interrupts before that step) are explored besides
          it. A step that interrupts another thread (a membarrier IPI) does not commute
          with a local step: when one happens, the decisions before it at which its thread
          was already waiting get its "run" back;
        * sleep sets (Godefroid 1996; the sleep-set half of Abdulla et al.'s source-set
          DPOR, JACM 2017): once alternative a was explored at a decision, a later sibling
          b does not explore a again below it for as long as every step taken since
          commutes with a (:func:`dependent` on the recorded footprints): that ordering
          was covered below a. With the state cache, a state is known only if it was
          explored with at least this budget and a sleep set inside today's.
        """
        explored = violations = depth_cut = 0
        first: list[int] | None = None
        base = list(root or [])
        path: list[Node] = []
        history: list[tuple[int, int, int]] = []
        stride = 1  # record every stride-th execution; doubled whenever the history fills up
        while True:
            prefix = base + [node.allowed[node.pos] for node in path]
            ex = self.execute(prefix, path=path, n_fixed=len(base))
            explored += 1
            self.absorbed += ex.absorbed
            depth_cut += ex.ended == "depth"
            if ex.violation is not None:
                violations += 1
                if first is None or len(ex.choices) < len(first):
                    first = ex.choices  # the shortest counterexample (first found among equals)
            if explored % stride == 0:
                history.append((explored, len(self.seen), violations))
                if len(history) >= HISTORY_POINTS:
                    history = history[1::2]  # keep the multiples of the doubled stride
                    stride *= 2
            if self.progress is not None:
                self.progress(explored, len(self.seen), violations)
            for node, fp in zip(path, ex.footprints[len(base):]):
                node.fp = fp
            n_new = len(ex.allowed)
            offset = len(ex.choices) - n_new
            for i in range(n_new):
                path.append(Node(ex.allowed[i], ex.alts[offset + i], ex.footprints[offset + i]
                                 if offset + i < len(ex.footprints) else None, ex.keys[i]))
                node = path[-1]
                node.done = list(ex.predone[i])
                if ex.akeys:
                    node.akeys, node.budget, node.sleep = ex.akeys[i], ex.budgets[i], ex.sleeps[i]
            while True:  # the next alternative to explore: pop finished nodes, pass skipped ones
                while path and path[-1].pos + 1 >= len(path[-1].allowed):
                    path.pop()
                if not path:
                    break
                node = path[-1]
                if node.fp is not None:
                    node.done.append((node.alts[node.allowed[node.pos]], node.fp))
                node.pos += 1
                node.fp = None
                if not self._skip(node):
                    break
            if not path:
                break
        if not history or history[-1][0] != explored:
            history.append((explored, len(self.seen), violations))
        counterexample = self.execute(first, trace=True, prune=False) if first is not None and trace else None
        return CheckResult(self.scenario, self.kernel, self.bounds, self.debug, explored,
                           len(self.seen), violations, counterexample, depth_cut, history,
                           reduction=self.reduction, counterexample_choices=first)

    def _known(self, key: bytes, budget: list[int], sleep: frozenset) -> bool | frozenset:
        """True if this state was explored before with at least this much budget left and no
        alternative asleep there that is awake now (everything from here was explored).

        If it was explored with enough budget but with alternatives asleep that are awake now,
        only those are left to explore (Godefroid 1996, sleep sets with state matching): the
        ones that were awake there were explored from this very state, and what their subtrees
        left out relied only on the ones asleep there, which are now either asleep here too or
        explored here. Returns those (a frozenset), or False: explore everything."""
        b = tuple(budget)
        seen = self.seen.setdefault(key, [])
        left: frozenset | None = None
        matched: frozenset = frozenset()
        for old, old_sleep in seen:
            if all(s >= c for s, c in zip(old, b)):
                if old_sleep <= sleep:
                    return True
                rest = old_sleep - sleep
                if left is None or len(rest) < len(left):
                    left, matched = rest, old_sleep
        if left is not None:
            # NOTE: one earlier visit, never a union of several: two visits that each slept on
            # what the other explored would together leave their common orderings unexplored.
            seen.append((b, matched & sleep))
            self.revisited += 1
            return left
        seen.append((b, sleep))
        return False

    def _skip(self, node: Node) -> bool:
        """Is the alternative at ``node.pos`` an interrupt of a doomed thread whose outcome was
        explored at another boundary of its section (same digest without the thread's position,
        at least this budget, a sleep set inside the one it would have here)? Then it is passed
        as explored, with the footprint measured there (the same steps of the kernel)."""
        if node.akeys is None:
            return False
        alt = node.alts[node.allowed[node.pos]]
        kind, tid, _ = alt
        entry = node.akeys.get(tid)
        if entry is None or kind not in entry[1]:
            return False
        known = self.icache.get((entry[0], alt))
        if not known:
            return False
        avail = {**node.sleep, **dict(node.done)}
        for old_budget, old_sleep, fp in known:
            if all(o >= c for o, c in zip(old_budget, node.budget)):
                asleep = {z for z, zfp in avail.items() if z != alt and not dependent(zfp, fp)}
                if old_sleep <= asleep:
                    node.fp = fp
                    self.skipped += 1
                    return True
        return False

    def execute(self, prefix: list[int], *, trace: bool = False, prune: bool = True,
                path: list[Node] | None = None, n_fixed: int = 0) -> Execution:
        """Run once: replay ``prefix``, then take the first alternative not asleep at every new decision.

        ``path`` (the explorer's nodes for ``prefix[n_fixed:]``) gives the sleep sets along the
        prefix and lets a step that IPIs another thread widen the reduced decisions before it.
        """
        world = World(self.scenario, self.kernel, debug=self.debug)
        world.canonical_cs = self.canonical_cs and prune
        world.watch_mm_cid = self.skip_pointless
        tracer = Tracer(world) if trace else None
        budget = [self.bounds.preemptions, self.bounds.migrations, self.bounds.signals]
        ex = Execution([], [], "done")
        m = world.m
        moves: dict[int, int] = {}  # tid -> transitions taken so far
        records: list[tuple[list[tuple[str, int, int]], dict[int, int]]] = []
        sleeping = self.reduction == "sleep" and prune
        local_por = self.reduction != "none"
        sleep: dict[tuple[str, int, int], Footprint] = {}
        absorbing = sleeping and path is not None
        skipping = sleeping and self.skip_interrupts
        if skipping:
            world.tripwire = Tripwire()
        doomed_here: dict[int, tuple] = {}
        forced: tuple[int, Footprint] | None = None
        last_state: tuple = ()
        alts_taken: tuple[str, int] = ("", 0)
        prefix = list(prefix)
        try:
            m.sim.run()
            while True:
                alts = world.alternatives(budget)
                if not alts:
                    break
                depth = len(ex.choices)
                if depth >= MAX_DEPTH:
                    ex.ended = "depth"
                    break
                awake = list(range(len(alts)))
                if depth < len(prefix):
                    choice = prefix[depth]
                else:
                    if skipping:
                        doomed_here = {}
                        if budget[0] or budget[1] or budget[2]:
                            for t in m.parked:
                                found = doomed(world, t)
                                if found is not None:
                                    doomed_here[t] = found
                        key, akeys = world.state_keys({t: d[0] for t, d in doomed_here.items()})
                    else:
                        key = world.state_key() if prune else None
                    if (absorbing and depth == len(prefix) and depth > n_fixed
                            and absorbable(path[-1], alts_taken[0], ex.footprints[-1], key)):
                        # The deviation changed nothing: back at the last node's decision
                        # with its budget, take its next alternative in this execution.
                        node = path[-1]
                        node.done.append((ex.alts[-1][ex.choices[-1]], ex.footprints[-1]))
                        node.pos += 1
                        ex.absorbed += 1
                        del ex.choices[-1], ex.alts[-1], ex.footprints[-1], records[-1]
                        budget[:], sleep, moves[alts_taken[1]] = last_state
                        node.fp = None
                        while self._skip(node):
                            node.done.append((node.alts[node.allowed[node.pos]], node.fp))
                            if node.pos + 1 >= len(node.allowed):
                                break
                            node.pos += 1
                            node.fp = None
                        if node.fp is not None:  # every alternative left was skipped
                            ex.ended = "sleep"
                            break
                        prefix = prefix[:-1] + [node.allowed[node.pos]]
                        continue
                    if sleeping:
                        awake = [i for i in awake if alts[i] not in sleep]
                    if self.skip_pointless and prune:
                        kept = [i for i in awake if alts[i][0] != "preempt" or not world.pointless_preempt(alts[i][1])]
                        self.pointless += len(awake) - len(kept)
                        awake = kept
                        if not budget[1] and len(awake) > 1:
                            eager = world.eager_resume(alts)
                            if eager is not None and eager in awake:
                                self.eager += len(awake) - 1
                                awake = [eager]
                    known = self._known(key, budget, frozenset(sleep)) if prune else False
                    if known is True:
                        ex.ended = "cut"
                        break
                    if known:
                        awake = [i for i in awake if alts[i] in known]
                    if not awake:
                        ex.ended = "sleep"
                        break
                    choice = awake[0]
                    record = (alts, {tid: moves.get(tid, 0) for tid in m.parked})
                    probed, forced = self._probe(world, alts, awake, budget, key) if absorbing else ([], None)
                    if probed:
                        done = {a for a, _ in probed}
                        awake = [i for i in awake if alts[i] not in done]
                        ex.absorbed += len(probed)
                        if not awake:
                            ex.ended = "sleep"
                            break
                        choice = awake[0]
                    ex.keys.append(key)
                    ex.predone.append(probed)
                    if skipping:
                        ex.akeys.append({t: (akeys[t], d[1]) for t, d in doomed_here.items()})
                        ex.budgets.append(tuple(budget))
                        ex.sleeps.append(sleep)
                if forced is not None:  # a probe that changed the state: that is the step taken here
                    choice, fp = forced
                    ex.choices.append(choice)
                    ex.alts.append(alts)
                    records.append(record)
                    kind, tid, _ = alts[choice]
                    moves[tid] = moves.get(tid, 0) + 1
                    ex.footprints.append(fp)
                    ex.allowed.append([choice] + [i for i in awake if i != choice])
                    if sleeping:
                        sleep = {z: zfp for z, zfp in sleep.items() if z != alts[choice] and not dependent(zfp, fp)}
                    forced = None
                    continue
                ex.choices.append(choice)
                ex.alts.append(alts)
                records.append((alts, {tid: moves.get(tid, 0) for tid in m.parked}))
                if tracer is not None:
                    tracer.before(alts[choice])
                kind, tid, _ = alts[choice]
                before = moves.get(tid, 0)
                if absorbing and depth == len(prefix) - 1:
                    last_state = (list(budget), sleep, before)
                    alts_taken = (kind, tid)
                local = world.apply(alts[choice], budget)
                moves[tid] = before + 1
                fp = world.footprint
                ex.footprints.append(fp)
                if tracer is not None:
                    tracer.after()
                if depth >= len(prefix):
                    allowed = awake
                    if local and local_por:
                        allowed = [i for i in awake if i == choice or (alts[i][1] == tid and alts[i][0] != "run")]
                    ex.allowed.append(allowed)
                if sleeping:
                    if depth < len(prefix) and depth >= n_fixed and path is not None:
                        candidates = {**sleep, **dict(path[depth - n_fixed].done)}
                    else:
                        candidates = sleep
                    sleep = {z: zfp for z, zfp in candidates.items() if z != alts[choice] and not dependent(zfp, fp)}
                if skipping and kind in KINDS and depth >= len(prefix) - 1 >= n_fixed:
                    self._remember(ex, path, depth - n_fixed, alts[choice], sleep, fp)
                if m.kicked and kind == "run" and path is not None and local_por:
                    widen(records, path, n_fixed, len(prefix), ex.allowed, tid, before)
            if world.user_read_cs:
                raise _UserReadsRseqCs
            if world.user_read_mm_cid or world.cross_tls:
                raise _SkipPremiseBroken
            if ex.ended == "done":
                ex.violation = world.verdict()
            if tracer is not None:
                ex.steps = tracer.steps
        finally:
            world.teardown()
        return ex

    def _remember(self, ex: Execution, path: list[Node], i: int, alt, sleep: dict, fp: Footprint) -> None:
        """An interrupt just run at decision ``i`` of the path (its deviation, or a new decision):
        if its thread was doomed there, keep its budget and sleep set under the digest without
        the thread's position (for :meth:`_skip`)."""
        if i < len(path):
            node = path[i]
            akeys, budget = node.akeys, node.budget
        else:
            j = i - len(path)
            akeys, budget = ex.akeys[j], ex.budgets[j]
        entry = akeys.get(alt[1]) if akeys else None
        if entry is not None and alt[0] in entry[1]:
            self.icache.setdefault((entry[0], alt), []).append((budget, frozenset(sleep), fp))

    def _probe(self, world: World, alts, awake: list[int], budget: list[int], key: bytes):
        """Try first, at a new decision, the alternatives likely to change nothing (a signal with
        no handler to a thread outside every section): each whose state digest afterwards is
        ``key`` again is explored without an execution of its own (its subtree is this
        decision's, with less budget). Returns those, with their footprints, and the first that
        did change the state (index, footprint): the world is then past it, and it is the
        decision's first choice (explored without the thread-local reduction here)."""
        probed: list[tuple[tuple[str, int, int], Footprint]] = []
        for i in awake:
            if not self._likely_noop(world, alts[i]):
                continue
            saved = list(budget)
            world.apply(alts[i], budget)
            fp = world.footprint
            if not fp.total and world.state_key() == key:
                budget[:] = saved
                probed.append((alts[i], fp))
                continue
            return probed, (i, fp)
        return probed, None

    def _likely_noop(self, world: World, alt) -> bool:
        kind, tid, _ = alt
        if kind != "signal" or self.scenario.handler is not None or not self.canonical_cs:
            return False
        m = world.m
        st = m.tasks[tid]
        if m.parked.get(tid) != "user" or st.kt.sigframes:
            return False
        return not world.in_a_section(tid)

    _widen = staticmethod(widen)


def check(scenario: Scenario, kernel: str, bounds: Bounds | None = None, *, debug: bool = False,
          reduction: str = "sleep", progress: Callable[[int, int, int], None] | None = None) -> CheckResult:
    """Explore ``scenario`` under ``kernel`` within ``bounds``; ``progress`` is called after
    every execution with (explored, distinct states, violations)."""
    from ..kernel import kernel_class

    bounds = bounds or Bounds()
    bounds.validate()
    kernel_class(kernel)  # unknown kernel: BadInput with the accepted names
    return Explorer(scenario, kernel, bounds, debug=debug, reduction=reduction, progress=progress).run()
