"""Port of the kernel selftest ``param_test`` (userspace spec §2.6), all four builds.

Builds (one binary each in the kernel tree): ``param_test``,
``param_test_compare_twice`` (``RSEQ_COMPARE_TWICE``), ``param_test_mm_cid``
(``BUILDOPT_RSEQ_PERCPU_MM_CID``) and ``param_test_mm_cid_compare_twice``.
The option parser is the real one (a hand-rolled loop over ``argv`` that looks
only at the second character of each ``-x`` word, skips words not starting
with ``-``, and answers anything it does not know with the usage text and exit
status 255); the usage text lists ``-L``, which the 2026 parser implements,
instead of the stale ``-O`` of the C help text. ``-c`` is librseq's and is
rejected here, as by the kernel's parser.

Scaled to the simulated machine: ``CPU_SETSIZE`` is :data:`CPU_SETSIZE` (64,
not 1024), which sizes the per-index arrays, the mm_cid fill and the
membarrier manager's ``rand() % CPU_SETSIZE``. Everything else (algorithms,
retry loops, injection points, final assertions, the verbose lines) is the
real test's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BadInput
from ..kernel._task import SIGUSR1
from ..userprog import primitives as P
from ..userprog.api import (
    MEMBARRIER_CMD_FLAG_CPU,
    MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
)
from ..userprog.libc import librseq_register_current_thread, librseq_unregister_current_thread
from .harness import MachineSpec, Output, RunResult, TestAbort, check_machine, library_area, run_program

CPU_SETSIZE = 64
ENTRY = 128  # __attribute__((aligned(128))) per-index entries
ITEMS_PER_CPU = 100  # BUFFER_ITEM_PER_CPU, MEMCPY_BUFFER_ITEM_PER_CPU
#: A thread whose sections abort this many times in a row can never commit (an
#: unregistered thread under -d/-D: cpu_id is -1): the C test spins forever.
ABORT_STREAK_LIMIT = 20_000
TESTS = "slbmir"
TEST_NAMES = {"s": "spinlock", "l": "linked list", "b": "buffer", "m": "memcpy buffer",
              "i": "counter increment", "r": "membarrier"}


@dataclass(frozen=True)
class Build:
    """One of the four param_test binaries."""

    name: str
    index: str  # "cpu_id" or "mm_cid"
    compare_twice: bool


BUILDS = {b.name: b for b in (
    Build("param_test", "cpu_id", False),
    Build("param_test_compare_twice", "cpu_id", True),
    Build("param_test_mm_cid", "mm_cid", False),
    Build("param_test_mm_cid_compare_twice", "mm_cid", True),
)}


@dataclass
class ParamOptions:
    """What ``main()``'s option loop leaves in its globals."""

    test: str = "s"
    reps: int = 5000
    threads: int = 200
    loops: dict[int, int] = field(default_factory=dict)
    modulo: int = 0
    yield_: bool = False
    signal: bool = False
    sleep_ms: int = 0
    disable_rseq: bool = False
    disable_mod: int = 0
    release: bool = False
    legacy: bool = False
    verbose: bool = False
    help: bool = False


class ParamTestUsage(BadInput):
    """The option loop called ``show_usage()`` and ``goto error`` (exit status 255)."""

    def __init__(self, prog: str, argv: list[str], reason: str) -> None:
        self.usage = usage(prog)
        self.exit_status = 255
        super().__init__(f"{prog}: {reason} (usage printed; the real test exits 255)")


def usage(prog: str) -> str:
    """``show_usage()``, with the options the parser really has."""
    lines = [f"Usage : {prog} <OPTIONS>", "OPTIONS:"]
    lines += [f"\t[-{n} loops] Number of loops for delay injection {n}" for n in range(1, 7)]
    lines += [f"\t[-{n} loops] Number of loops for delay injection {n} (-1 to enable -m)" for n in (7, 8, 9)]
    lines += [
        "\t[-m N] Yield/sleep/kill every modulo N (default 0: disabled) (>= 0)",
        "\t[-y] Yield",
        "\t[-k] Kill thread with signal",
        "\t[-s S] S: =0: disabled (default), >0: sleep time (ms)",
        "\t[-t N] Number of threads (default 200)",
        "\t[-r N] Number of repetitions per thread (default 5000)",
        "\t[-d] Disable rseq system call (no initialization)",
        "\t[-D M] Disable rseq for each M threads",
        "\t[-T test] Choose test: (s)pinlock, (l)ist, (b)uffer, (m)emcpy, (i)ncrement, membarrie(r)",
        "\t[-M] Push into buffer and memcpy buffer with memory barriers.",
        "\t[-L] Register rseq in legacy (32-byte) mode.",
        "\t[-v] Verbose output.",
        "\t[-h] Show this help.",
        "",
    ]
    return "\n".join(lines) + "\n"


def _atol(text: str) -> int:
    """C ``atol()``: optional blanks and sign, then digits; anything else stops (0 if none)."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if s[:1] in "+-" and s[:1]:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def parse_args(argv: list[str], prog: str = "param_test") -> ParamOptions:
    """The option loop of ``param_test.c``'s ``main()``, word by word."""
    o = ParamOptions()
    i = 0
    n = len(argv)

    def value(flag: str) -> str:
        if i + 1 >= n:
            raise ParamTestUsage(prog, argv, f"option -{flag} needs an argument")
        return argv[i + 1]

    while i < n:
        word = argv[i]
        if not word.startswith("-"):
            i += 1  # not an option: skipped, as the C loop does
            continue
        c = word[1:2]
        if c and c in "123456789":
            o.loops[int(c)] = _atol(value(c))
            i += 1
        elif c in ("m", "s", "D", "t", "r"):
            v = _atol(value(c))
            if v < 0:
                raise ParamTestUsage(prog, argv, f"option -{c} must be >= 0")
            if c == "m":
                o.modulo = v
            elif c == "s":
                o.sleep_ms = v
            elif c == "D":
                o.disable_mod = v
            elif c == "t":
                o.threads = v
            else:
                o.reps = v
            i += 1
        elif c == "y":
            o.yield_ = True
        elif c == "k":
            o.signal = True
        elif c == "d":
            o.disable_rseq = True
        elif c == "h":
            o.help = True
            return o
        elif c == "T":
            t = value(c)[:1]
            if not t or t not in TESTS:
                raise ParamTestUsage(prog, argv, f"unknown test {value(c)!r} (accepted: s l b m i r)")
            o.test = t
            i += 1
        elif c == "v":
            o.verbose = True
        elif c == "M":
            o.release = True
        elif c == "L":
            o.legacy = True
        else:
            raise ParamTestUsage(prog, argv, f"unknown option {word!r}")
        i += 1
    return o


# ======================================================================
# The program
# ======================================================================
class ParamTest:
    """One run of one build with one set of options, as a simulated process."""

    def __init__(self, build: Build, opts: ParamOptions, cpus: int) -> None:
        self.build = build
        self.o = opts
        self.cpus = cpus
        self.cs = P.CsOptions(index=build.index, compare_twice=build.compare_twice,
                              loops={k: v for k, v in opts.loops.items() if v},
                              every=opts.modulo, yield_=opts.yield_, kill=opts.signal,
                              sleep_ms=opts.sleep_ms)
        self.cs_push = P.CsOptions(**{**self.cs.__dict__, "mo": "release" if opts.release else "relaxed"})
        self.out: Output | None = None

    # -- helpers --------------------------------------------------------
    def verbose(self, line: str) -> None:
        if self.o.verbose and self.out is not None:
            self.out.print(line)

    def index(self, th) -> int:
        """``get_current_cpu_id()``: ``rseq_cpu_start()`` or ``rseq_current_mm_cid()``."""
        return P.current_index(th, self.cs)

    def usable(self, th) -> list[int]:
        """Indices filled and drained: the allowed CPUs, or every index for mm_cid."""
        if self.build.index == "mm_cid":
            return list(range(CPU_SETSIZE))
        return sorted(th.st.affinity)

    @staticmethod
    def retried(th, ret: int) -> None:
        """Bookkeeping of a retry loop: an endless abort streak is a livelock."""
        if ret < 0:
            streak = th.local["abort_streak"] = th.local.get("abort_streak", 0) + 1
            if streak >= ABORT_STREAK_LIMIT:
                raise TestAbort(f"livelock: tid {th.tid} aborted {streak} times in a row "
                                "(unregistered thread: cpu_id is -1, the real test spins forever)")
        else:
            th.local["abort_streak"] = 0

    def register(self, th) -> int:
        return librseq_register_current_thread(th, nolibc=True, legacy=self.o.legacy)

    def thread_start(self, th, reg: bool = True) -> None:
        library_area(th)
        if not self.o.disable_rseq and reg and self.register(th):
            raise TestAbort(f"abort(): rseq_register_current_thread() failed in tid {th.tid}")

    def thread_end(self, th, reg: bool = True) -> None:
        self.verbose(f"tid {th.tid}: number of rseq abort: {th.local.get('nr_abort', 0)}, "
                     f"signals delivered: {th.local.get('signals_delivered', 0)}")
        if not self.o.disable_rseq and reg and librseq_unregister_current_thread(th):
            raise TestAbort(f"abort(): rseq_unregister_current_thread() failed in tid {th.tid}")

    def progress(self, th, i: int, reps: int) -> None:
        """``if (i != 0 && !(i % (reps / 10))) printf_verbose(...)`` -- evaluated even when quiet."""
        if i == 0:
            return
        if reps // 10 == 0:
            raise TestAbort("SIGFPE: integer division by zero in i % (reps / 10) (reps < 10)")
        if i % (reps // 10) == 0:
            self.verbose(f"tid {th.tid}: count {i}")

    def spawn_all(self, th, body, count: int) -> None:
        threads = [th.spawn_thread(lambda t, k=k: body(t, k)) for k in range(count)]
        for t in threads:
            th.join(t)

    def registered_thread(self, k: int) -> bool:
        return self.o.disable_mod <= 0 or bool(k % self.o.disable_mod)

    # -- main -------------------------------------------------------------
    def main(self, th, out: Output) -> int:
        self.out = out
        o = self.o

        def on_sigusr1(t, sig: int) -> None:
            t.local["signals_delivered"] = t.local.get("signals_delivered", 0) + 1

        th.sigaction(SIGUSR1, on_sigusr1)
        self.verbose("Signal handler set for SIGUSR1")
        if not o.disable_rseq and self.register(th):
            return 255
        if not o.disable_rseq and not self.validate_cpu_id(th):
            out.print("Error: cpu id getter unavailable")
            return 255
        self.verbose(TEST_NAMES[o.test])
        getattr(self, f"test_{o.test}")(th)
        if not o.disable_rseq and librseq_unregister_current_thread(th):
            raise TestAbort("abort(): rseq_unregister_current_thread() failed in main")
        return 0

    def validate_cpu_id(self, th) -> bool:
        if self.build.index == "mm_cid":
            # rseq_mm_cid_available(): rseq_size (the kernel's feature size once a
            # thread registered) >= offsetofend(struct rseq, mm_cid) = 28.
            return th.k.abi.feature_size >= 28
        return th.area_field("cpu_id") >= 0

    # -- -T s ---------------------------------------------------------------
    def test_s(self, th) -> None:
        lock = th.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
        count = th.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
        reps = self.o.reps

        def this_cpu_lock(t) -> int:
            while True:
                cpu = self.index(t)
                if cpu < 0:
                    raise TestAbort(f"abort(): tid {t.tid}: cpu: {t.area_field('cpu_id')}: cid: {cpu}")
                ret = P.load_cbne_store(t, lock + ENTRY * cpu, 0, 1, cpu, self.cs)
                self.retried(t, ret)
                if ret == 0:
                    return cpu

        def body(t, k: int) -> None:
            reg = self.registered_thread(k)
            self.thread_start(t, reg)
            for i in range(reps):
                cpu = this_cpu_lock(t)
                t.add(count + ENTRY * cpu, 1)  # data->c[cpu].count++
                if t.load(lock + ENTRY * cpu) != 1:
                    raise TestAbort("Assertion `lock->c[cpu].v == 1' failed (rseq_percpu_unlock)")
                t.store(lock + ENTRY * cpu, 0)  # rseq_smp_store_release()
                self.progress(t, i, reps)
            self.thread_end(t, reg)

        self.spawn_all(th, body, self.o.threads)
        total = sum(th.mm.peek(count + ENTRY * c, 8) for c in range(CPU_SETSIZE))
        if total != reps * self.o.threads:
            raise TestAbort(f"Assertion `sum == (uint64_t)opt_reps * num_threads' failed: "
                            f"sum {total} != {reps * self.o.threads}")

    # -- -T i ---------------------------------------------------------------
    def test_i(self, th) -> None:
        count = th.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
        reps = self.o.reps

        def body(t, k: int) -> None:
            reg = self.registered_thread(k)
            self.thread_start(t, reg)
            for i in range(reps):
                while True:
                    cpu = self.index(t)
                    ret = P.load_add_store(t, count + ENTRY * cpu, 1, cpu, self.cs)
                    self.retried(t, ret)
                    if ret == 0:
                        break
                self.progress(t, i, reps)
            self.thread_end(t, reg)

        self.spawn_all(th, body, self.o.threads)
        total = sum(th.mm.peek(count + ENTRY * c, 8) for c in range(CPU_SETSIZE))
        if total != reps * self.o.threads:
            raise TestAbort(f"Assertion `sum == (uint64_t)opt_reps * num_threads' failed: "
                            f"sum {total} != {reps * self.o.threads}")

    # -- -T l ---------------------------------------------------------------
    def test_l(self, th) -> None:
        mm = th.mm
        heads = th.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
        expected = 0
        # Setup and the final drain are single-threaded plain C: written
        # directly, not instruction by instruction.
        usable = self.usable(th)
        for i in usable:
            for j in range(1, 101):
                node = th.image.alloc(16, 16)
                expected += j
                mm.poke(node, 8, j)
                mm.poke(node + 8, 8, mm.peek(heads + ENTRY * i, 8))
                mm.poke(heads + ENTRY * i, 8, node)

        def pop(t, slot: int) -> int:
            while True:
                cpu = self.index(t)
                ret = P.load_cbeq_store_add_load_store(t, heads + ENTRY * cpu, 0, 8, slot, cpu, self.cs)
                self.retried(t, ret)
                if ret == 0:
                    return t.load(slot)
                if ret > 0:
                    return 0

        def push(t, node: int) -> None:
            while True:
                cpu = self.index(t)
                expect = t.load(heads + ENTRY * cpu)
                t.store(node + 8, expect)
                ret = P.load_cbne_store(t, heads + ENTRY * cpu, expect, node, cpu, self.cs)
                self.retried(t, ret)
                if ret == 0:
                    return

        def body(t, k: int) -> None:
            self.thread_start(t)
            slot = t.image.alloc(8)
            for _ in range(self.o.reps):
                node = pop(t, slot)
                if self.o.yield_:
                    t.sched_yield()  # encourage shuffling
                if node:
                    push(t, node)
            self.thread_end(t)

        self.spawn_all(th, body, self.o.threads)
        total = 0
        seen: set[int] = set()
        for i in usable:
            node = mm.peek(heads + ENTRY * i, 8)
            while node and node not in seen:
                seen.add(node)
                total += mm.peek(node, 8)
                node = mm.peek(node + 8, 8)
        if total != expected:
            raise TestAbort(f"Assertion `sum == expected_sum' failed: sum {total} != {expected}")

    # -- -T b ---------------------------------------------------------------
    def test_b(self, th) -> None:
        mm = th.mm
        buf = th.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
        buflen = CPU_SETSIZE * ITEMS_PER_CPU
        expected = 0
        usable = self.usable(th)
        for i in usable:
            e = buf + ENTRY * i
            array = th.image.alloc(8 * buflen, 8)
            mm.poke(e + 8, 8, buflen)
            mm.poke(e + 16, 8, array)
            for j in range(1, ITEMS_PER_CPU + 1):
                node = th.image.alloc(8, 8)
                expected += j
                mm.poke(node, 8, j)
                mm.poke(array + 8 * (j - 1), 8, node)
                mm.poke(e, 8, j)

        def pop(t) -> int:
            while True:
                cpu = self.index(t)
                e = buf + ENTRY * cpu
                offset = t.load(e)
                if offset == 0:
                    return 0
                array = t.load(e + 16)
                head = t.load(array + 8 * (offset - 1))
                ret = P.load_cbne_load_cbne_store(t, e, offset, array + 8 * (offset - 1), head,
                                                  offset - 1, cpu, self.cs)
                self.retried(t, ret)
                if ret == 0:
                    return head

        def push(t, node: int) -> bool:
            while True:
                cpu = self.index(t)
                e = buf + ENTRY * cpu
                offset = t.load(e)
                if offset == t.load(e + 8):
                    return False
                array = t.load(e + 16)
                ret = P.load_cbne_store_store(t, e, offset, array + 8 * offset, node, offset + 1,
                                              cpu, self.cs_push)
                self.retried(t, ret)
                if ret == 0:
                    return True

        def body(t, k: int) -> None:
            self.thread_start(t)
            for _ in range(self.o.reps):
                node = pop(t)
                if self.o.yield_:
                    t.sched_yield()
                if node and not push(t, node):
                    raise TestAbort("abort(): per-CPU buffer full (should increase buffer size)")
            self.thread_end(t)

        self.spawn_all(th, body, self.o.threads)
        total = 0
        for i in usable:
            e = buf + ENTRY * i
            array = mm.peek(e + 16, 8)
            for off in range(mm.peek(e, 8), 0, -1):
                total += mm.peek(mm.peek(array + 8 * (off - 1), 8), 8)
        if total != expected:
            raise TestAbort(f"Assertion `sum == expected_sum' failed: sum {total} != {expected}")

    # -- -T m ---------------------------------------------------------------
    def test_m(self, th) -> None:
        mm = th.mm
        buf = th.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
        buflen = CPU_SETSIZE * ITEMS_PER_CPU
        expected = 0
        usable = self.usable(th)
        for i in usable:
            e = buf + ENTRY * i
            array = th.image.alloc(16 * buflen, 16)
            mm.poke(e + 8, 8, buflen)
            mm.poke(e + 16, 8, array)
            for j in range(1, ITEMS_PER_CPU + 1):
                expected += 2 * j + 1
                mm.poke(array + 16 * (j - 1), 8, j)
                mm.poke(array + 16 * (j - 1) + 8, 8, j + 1)
                mm.poke(e, 8, j)

        def pop(t, item: int) -> bool:
            while True:
                cpu = self.index(t)
                e = buf + ENTRY * cpu
                offset = t.load(e)
                if offset == 0:
                    return False
                array = t.load(e + 16)
                ret = P.load_cbne_memcpy_store(t, e, offset, item, array + 16 * (offset - 1), 16,
                                               offset - 1, cpu, self.cs)
                self.retried(t, ret)
                if ret == 0:
                    return True

        def push(t, item: int) -> bool:
            while True:
                cpu = self.index(t)
                e = buf + ENTRY * cpu
                offset = t.load(e)
                if offset == t.load(e + 8):
                    return False
                array = t.load(e + 16)
                ret = P.load_cbne_memcpy_store(t, e, offset, array + 16 * offset, item, 16,
                                               offset + 1, cpu, self.cs_push)
                self.retried(t, ret)
                if ret == 0:
                    return True

        def body(t, k: int) -> None:
            self.thread_start(t)
            item = t.image.alloc(16, 16)  # the thread's stack copy of the item
            for _ in range(self.o.reps):
                got = pop(t, item)
                if self.o.yield_:
                    t.sched_yield()
                if got and not push(t, item):
                    raise TestAbort("abort(): per-CPU memcpy buffer full (should increase buffer size)")
            self.thread_end(t)

        self.spawn_all(th, body, self.o.threads)
        total = 0
        for i in usable:
            e = buf + ENTRY * i
            array = mm.peek(e + 16, 8)
            for off in range(mm.peek(e, 8), 0, -1):
                total += mm.peek(array + 16 * (off - 1), 8) + mm.peek(array + 16 * (off - 1) + 8, 8)
        if total != expected:
            raise TestAbort(f"Assertion `sum == expected_sum' failed: sum {total} != {expected}")

    # -- -T r ---------------------------------------------------------------
    def test_r(self, th) -> None:
        if not th.k.arch.has_offset_deref_addv:
            # param_test.c without RSEQ_ARCH_HAS_OFFSET_DEREF_ADDV (arm64): the test is skipped.
            self.out.print("rseq_offset_deref_addv is not implemented on this architecture. "
                           "Skipping membarrier test.")
            return
        if th.membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ):
            raise TestAbort("abort(): sys_membarrier(REGISTER_PRIVATE_EXPEDITED_RSEQ) failed")
        args = th.image.alloc(16, 16)  # {int stop; intptr_t percpu_list_ptr;}
        stop, list_ptr = args, args + 8
        mm_cid = self.build.index == "mm_cid"

        def new_list(t) -> int:
            lst = t.image.alloc(ENTRY * CPU_SETSIZE, ENTRY)
            for i in range(CPU_SETSIZE):
                node = t.image.alloc(16, 16)
                t.mm.poke(lst + ENTRY * i, 8, node)
            return lst

        def fence(t, cpu: int) -> None:
            if mm_cid:  # membarrier cannot target a cid: broadcast
                ret = t.membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0)
            else:
                ret = t.membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu)
            if ret and ret != -6:  # ENXIO: a missing CPU
                raise TestAbort(f"sys_membarrier: error {-ret}")

        def data(t, lst: int, cpu: int) -> int:
            return t.load(t.load(lst + ENTRY * cpu))

        def manager(t) -> None:
            self.thread_start(t)
            list_a, list_b = new_list(t), new_list(t)
            t.store(list_ptr, list_a)
            expect_a = expect_b = 0
            cpu_b = 0
            while not t.load(stop):
                cpu_a = t.rng.randrange(CPU_SETSIZE)
                if expect_b != data(t, list_b, cpu_b):
                    raise TestAbort("Membarrier test failed")
                t.store(list_ptr, list_b)
                fence(t, cpu_a)
                expect_a = data(t, list_a, cpu_a)
                cpu_b = t.rng.randrange(CPU_SETSIZE)
                if expect_a != data(t, list_a, cpu_a):
                    raise TestAbort("Membarrier test failed")
                t.store(list_ptr, list_a)
                fence(t, cpu_b)
                expect_b = data(t, list_b, cpu_b)
            self.thread_end(t)

        def worker(t, k: int) -> None:
            self.thread_start(t)
            while not t.load(list_ptr):
                pass  # wait for initialization
            for _ in range(self.o.reps):
                while True:
                    cpu = self.index(t)
                    ret = P.load_add_load_load_add_store(t, list_ptr, ENTRY * cpu, 1, cpu, self.cs)
                    self.retried(t, ret)
                    if ret == 0:
                        break
            self.thread_end(t)

        mgr = th.spawn_thread(manager)
        workers = [th.spawn_thread(lambda t, k=k: worker(t, k)) for k in range(self.o.threads)]
        for w in workers:
            th.join(w)
        th.store(stop, 1)
        th.join(mgr)


def run(argv: list[str], kernel: str, *, build: str = "param_test", machine: MachineSpec | None = None,
        seed: int = 0) -> RunResult:
    """Parse ``argv`` like the real binary, then run it on a fresh machine under ``kernel``."""
    if build not in BUILDS:
        raise BadInput(f"unknown param_test build {build!r}; accepted: {', '.join(BUILDS)}")
    opts = parse_args(argv, build)
    spec = machine or MachineSpec()
    if opts.help:
        return RunResult(True, "usage", {}, usage(build).splitlines(), 0)
    check_machine(spec, opts.threads)
    if spec.cpus > CPU_SETSIZE:
        raise BadInput(f"impossible machine: {spec.cpus} CPUs exceed the port's CPU_SETSIZE ({CPU_SETSIZE})")
    prog = ParamTest(BUILDS[build], opts, spec.cpus)
    return run_program(kernel, prog.main, machine=spec, seed=seed)
