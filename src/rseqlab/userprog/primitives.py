"""librseq's seven per-CPU critical-section primitives, instruction by instruction.

Each primitive follows the common structure of the x86-64 implementations
(userspace spec §2.3): C injection point 9 before the asm; injection point 1,
then the store that arms ``rseq_cs``; at ``start_ip`` injection point 2 and
the comparison of the current ``cpu_id`` (or ``mm_cid``) with the index the
caller snapshot (a mismatch jumps to the abort label: -1); the comparisons
(a mismatch leaves through the ne/eq exit: 1, with ``rseq_cs`` still armed,
to be cleared lazily by the kernel); the speculative stores; and the single
committing store, the last instruction before ``post_commit_ip``. A kernel
abort surfaces as :class:`RseqAbort` at the interrupted instruction and
returns -1, exactly as a jump to ``abort_ip`` does.

On arm64 (``th.k.arch``) each primitive runs the arm64 instruction sequence
instead (:mod:`.primitives_arm64`): ``ldr; sub; cbnz`` comparisons, the
``ldr; add; str`` counter commit, arm64's injection points.

Names: both librseq's (``load_cbne_store``) and the kernel selftests'
(``cmpeqv_storev``) are accepted (:data:`ALIASES`).

``compare_twice`` models the ``RSEQ_COMPARE_TWICE`` builds: just before the
commit, every comparison is made again; a mismatch means the kernel failed
to abort an interrupted section, and raises :class:`RseqBug` (``rseq_bug()``
calls ``abort()``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..abi import StructRseq
from ..machine.interface import RseqAbort
from .image import PLAIN_IP, CsSite


class RseqBug(AssertionError):
    """``rseq_bug()``: the compare-twice oracle caught a section that should have aborted."""


@dataclass
class CsOptions:
    """Build and run options of the primitives (param_test's build variants and flags)."""

    #: "cpu_id" (RSEQ_PERCPU_CPU_ID) or "mm_cid" (RSEQ_PERCPU_MM_CID).
    index: str = "cpu_id"
    compare_twice: bool = False
    #: Loop counts for injection points 1..9 (param_test -1 .. -9); -1 is blocking mode.
    loops: dict[int, int] = field(default_factory=dict)
    #: Blocking mode: act every m-th pass (-m), by yield (-y), SIGUSR1 (-k), sleep ms (-s).
    every: int = 0
    yield_: bool = False
    kill: bool = False
    sleep_ms: int = 0
    #: Memory order of the try-store and memcpy variants ("relaxed" or "release"; x86 is TSO).
    mo: str = "relaxed"

    @property
    def index_field(self):
        return StructRseq.MM_CID if self.index == "mm_cid" else StructRseq.CPU_ID


DEFAULT = CsOptions()
#: Injection delay-loop iterations per simulated nanosecond (see :func:`inject`).
LOOP_ITERATIONS_PER_NS = 3


def count_abort(th) -> None:
    th.local["nr_abort"] = th.local.get("nr_abort", 0) + 1


def inject(th, point: int, ip: int, opts: CsOptions) -> None:
    """``RSEQ_INJECT_ASM(n)`` / ``RSEQ_INJECT_C(n)``: widen a window, or block at C points."""
    loops = opts.loops.get(point, 0)
    if loops > 0:
        # A ``dec; jnz`` iteration retires in one cycle: a third of a nanosecond at 3 GHz.
        th.compute(max(1, loops * th.m.config.insn_ns // LOOP_ITERATIONS_PER_NS), ip)
    elif loops == -1 and point >= 7 and opts.every:
        n = th.local["inject_passes"] = th.local.get("inject_passes", 0) + 1
        if n % opts.every == 0:
            if opts.sleep_ms:
                th.sleep(opts.sleep_ms * 1_000_000)
            if opts.yield_:
                th.sched_yield()
            if opts.kill:
                from ..kernel._task import SIGUSR1

                th.raise_signal(SIGUSR1)


class _Section:
    """One run of a section: arming, the CPU check, and IP bookkeeping."""

    def __init__(self, th, name: str, n_insns: int, opts: CsOptions) -> None:
        self.th = th
        self.opts = opts
        suffix = "_mm_cid" if opts.index == "mm_cid" else "_cpu_id"
        suffix += "_ct" if opts.compare_twice else ""
        suffix += "_release" if opts.mo == "release" else ""
        self.site: CsSite = th.image.site(name + suffix, n_insns)

    def arm(self) -> None:
        th, s = self.th, self.site
        inject(th, 1, s.arm_ip, self.opts)
        th.store(th.area + StructRseq.RSEQ_CS.offset, s.descriptor, ip=s.arm_ip)

    def cpu_matches(self, cpu: int, k: int = 0) -> bool:
        th = self.th
        inject(th, 2, self.site.ip(k), self.opts)
        f = self.opts.index_field
        return th.load(th.area + f.offset, 4, ip=self.site.ip(k), signed=True) == cpu

    def load(self, addr: int, k: int, size: int = 8) -> int:
        return self.th.load(addr, size, ip=self.site.ip(k))

    def store(self, addr: int, value: int, k: int, size: int = 8) -> None:
        self.th.store(addr, value, size, ip=self.site.ip(k))

    def recheck(self, cpu: int, k: int, compares: list[tuple[int, int]]) -> None:
        """Compare-twice: re-read the index and every compared word right before the commit."""
        if not self.opts.compare_twice:
            return
        th = self.th
        f = self.opts.index_field
        if th.load(th.area + f.offset, 4, ip=self.site.ip(k), signed=True) != cpu:
            raise RseqBug(f"{self.site.name}: cpu changed before commit without an abort")
        for addr, expect in compares:
            if th.load(addr, 8, ip=self.site.ip(k)) != expect:
                raise RseqBug(f"{self.site.name}: {addr:#x} changed before commit without an abort")


def _run(th, name: str, n_insns: int, opts: CsOptions, cpu: int, body) -> int:
    """Arm, check the CPU, run ``body(sec)``; any abort (kernel or CPU mismatch) is -1."""
    inject(th, 9, _pre_ip(th, name, n_insns, opts), opts)
    sec = _Section(th, name, n_insns, opts)
    try:
        sec.arm()
        if not sec.cpu_matches(cpu):
            count_abort(th)
            return -1
        return body(sec)
    except RseqAbort:
        count_abort(th)
        return -1
    finally:
        th.ip = PLAIN_IP  # every exit (commit, ne/eq, abort) returns to the C caller


def _pre_ip(th, name: str, n_insns: int, opts: CsOptions) -> int:
    return _Section(th, name, n_insns, opts).site.pre_ip


# ----------------------------------------------------------------------
# The seven primitives (librseq names; return 0 ok, 1 ne/eq, -1 abort)
# ----------------------------------------------------------------------
def load_cbne_store(th, v: int, expect: int, newv: int, cpu: int, opts: CsOptions = DEFAULT) -> int:
    """``if (*v != expect) return 1; *v = newv`` (commit)."""
    if th.k.arch.name == "arm64":
        return _A64.load_cbne_store(th, v, expect, newv, cpu, opts)

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        if s.load(v, 1) != expect:
            return 1
        inject(th, 4, s.site.ip(2), opts)
        s.recheck(cpu, 2, [(v, expect)])
        s.store(v, newv, 3)
        return 0

    return _run(th, "load_cbne_store", 4, opts, cpu, body)


def load_cbeq_store_add_load_store(th, v: int, expectnot: int, voffp: int, load: int, cpu: int,
                                   opts: CsOptions = DEFAULT) -> int:
    """List pop: ``r1 = *v; if r1 == expectnot return 1; *load = r1; *v = *(r1 + voffp)`` (commit)."""
    if th.k.arch.name == "arm64":
        return _A64.load_cbeq_store_add_load_store(th, v, expectnot, voffp, load, cpu, opts)

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        r1 = s.load(v, 1)
        if r1 == expectnot:
            return 1
        inject(th, 4, s.site.ip(2), opts)
        s.store(load, r1, 2)
        r2 = s.load(r1 + voffp, 3)
        inject(th, 5, s.site.ip(4), opts)
        s.recheck(cpu, 4, [(v, r1)])
        s.store(v, r2, 5)
        return 0

    return _run(th, "load_cbeq_store_add_load_store", 6, opts, cpu, body)


def load_add_store(th, v: int, count: int, cpu: int, opts: CsOptions = DEFAULT) -> int:
    """``*v += count``: one memory-destination add is the commit (restart-safe, not atomic)."""
    if th.k.arch.name == "arm64":
        return _A64.load_add_store(th, v, count, cpu, opts)

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        s.recheck(cpu, 1, [])
        th.add(v, count, ip=s.site.ip(2))  # the memory-destination add: the commit
        return 0

    return _run(th, "load_add_store", 3, opts, cpu, body)


def load_add_load_load_add_store(th, ptr: int, off: int, inc: int, cpu: int,
                                 opts: CsOptions = DEFAULT) -> int:
    """``p = *(*ptr + off); *p += inc`` (commit): the membarrier test's increment."""
    if th.k.arch.name == "arm64":
        return _A64.load_add_load_load_add_store(th, ptr, off, inc, cpu, opts)

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        # Compare-twice re-checks only the CPU here, as the x86 code does: *ptr is not
        # per-CPU data (the membarrier test swaps it concurrently).
        s.recheck(cpu, 1, [])
        base = s.load(ptr, 2)
        p = s.load(base + off, 3)
        th.add(p, inc, ip=s.site.ip(4))  # the commit; injection point 4 follows it
        return 0

    return _run(th, "load_add_load_load_add_store", 5, opts, cpu, body)


def load_cbne_store_store(th, v: int, expect: int, v2: int, newv2: int, newv: int, cpu: int,
                          opts: CsOptions = DEFAULT) -> int:
    """``if (*v != expect) return 1; *v2 = newv2`` (speculative) ``; *v = newv`` (commit)."""
    if th.k.arch.name == "arm64":
        return _A64.load_cbne_store_store(th, v, expect, v2, newv2, newv, cpu, opts)

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        if s.load(v, 1) != expect:
            return 1
        inject(th, 4, s.site.ip(2), opts)
        s.store(v2, newv2, 2)
        inject(th, 5, s.site.ip(3), opts)
        s.recheck(cpu, 3, [(v, expect)])
        s.store(v, newv, 4)  # RELEASE adds a barrier before this store: a no-op on x86 (TSO)
        return 0

    return _run(th, "load_cbne_store_store", 5, opts, cpu, body)


def load_cbne_load_cbne_store(th, v: int, expect: int, v2: int, expect2: int, newv: int, cpu: int,
                              opts: CsOptions = DEFAULT) -> int:
    """``if (*v != expect || *v2 != expect2) return 1; *v = newv`` (commit)."""
    if th.k.arch.name == "arm64":
        return _A64.load_cbne_load_cbne_store(th, v, expect, v2, expect2, newv, cpu, opts)

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        if s.load(v, 1) != expect:
            return 1
        inject(th, 4, s.site.ip(2), opts)
        if s.load(v2, 2) != expect2:
            return 1
        inject(th, 5, s.site.ip(3), opts)
        s.recheck(cpu, 3, [(v, expect), (v2, expect2)])
        s.store(v, newv, 4)
        return 0

    return _run(th, "load_cbne_load_cbne_store", 5, opts, cpu, body)


def load_cbne_memcpy_store(th, v: int, expect: int, dst: int, src: int, length: int, newv: int,
                           cpu: int, opts: CsOptions = DEFAULT) -> int:
    """``if (*v != expect) return 1; memcpy(dst, src, len)`` (byte loop, speculative) ``; *v = newv``."""
    if th.k.arch.name == "arm64":
        return _A64.load_cbne_memcpy_store(th, v, expect, dst, src, length, newv, cpu, opts)
    if length > 4096:
        raise ValueError("the selftests keep memcpy sections at 4 kB or less")

    def body(s: _Section) -> int:
        inject(th, 3, s.site.ip(1), opts)
        if s.load(v, 1) != expect:
            return 1
        inject(th, 4, s.site.ip(2), opts)
        for i in range(length):  # the copy loop: two instructions, repeated
            byte = s.load(src + i, 2, size=1)
            s.store(dst + i, byte, 3, size=1)
        inject(th, 5, s.site.ip(4), opts)
        s.recheck(cpu, 4, [(v, expect)])
        s.store(v, newv, 5)
        return 0

    return _run(th, "load_cbne_memcpy_store", 6, opts, cpu, body)


from . import primitives_arm64 as _A64  # noqa: E402 (it builds on the helpers above)

#: The kernel selftests' (pre-2024) names for the same primitives.
ALIASES = {
    "cmpeqv_storev": load_cbne_store,
    "cmpnev_storeoffp_load": load_cbeq_store_add_load_store,
    "addv": load_add_store,
    "offset_deref_addv": load_add_load_load_add_store,
    "cmpeqv_trystorev_storev": load_cbne_store_store,
    "cmpeqv_cmpeqv_storev": load_cbne_load_cbne_store,
    "cmpeqv_trymemcpy_storev": load_cbne_memcpy_store,
}
PRIMITIVES = {f.__name__: f for f in ALIASES.values()}


def primitive(name: str):
    """Look a primitive up by either name."""
    try:
        return PRIMITIVES.get(name) or ALIASES[name]
    except KeyError:
        raise KeyError(f"unknown primitive {name!r}; accepted: {', '.join([*PRIMITIVES, *ALIASES])}") from None


def current_index(th, opts: CsOptions = DEFAULT) -> int:
    """The caller's snapshot before a section: ``rseq_cpu_start()`` or ``rseq_current_mm_cid()``."""
    if opts.index == "mm_cid":
        return th.area_field("mm_cid")
    return th.area_field("cpu_id_start")
