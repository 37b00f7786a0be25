"""librseq's per-CPU primitives as the arm64 selftests build them, instruction by instruction.

Written from the structure of ``tools/testing/selftests/rseq/rseq-arm64.h`` and
``rseq-arm64-bits.h`` (6.19.10; the same in 7.1.8), in the model's own terms:

* arming: injection point 1, then ``adrp; add; str`` of the descriptor address
  into ``rseq_cs`` (one store in the model, before ``start_ip``);
* the CPU check at ``start_ip`` (``RSEQ_ASM_CMP_CPU_ID``): injection point 2, then
  ``ldr w; sub; cbnz`` -- three instructions, a mismatch branches to the abort;
* every comparison (``RSEQ_ASM_OP_CMPEQ``/``CMPNE``) is ``ldr; sub; cbnz``/``cbz``;
* the counter increment (``rseq_addv``) commits with **``ldr; add; str``**
  (``RSEQ_ASM_OP_R_LOAD``, ``R_ADD``, ``R_FINAL_STORE``): unlike x86's single
  memory-destination ``addq``, a thread preempted between its ``ldr`` and its
  ``str`` writes back a stale sum unless the kernel aborts the section;
* the injection points are where the arm64 asm has them: 3 after the CPU
  check, 4/5 between the comparisons and stores as each primitive places them,
  and the last one (4 for ``addv``, 5 or 6 for the others) *after* the commit
  label, outside the section;
* ``rseq_offset_deref_addv`` does not exist on arm64
  (no ``RSEQ_ARCH_HAS_OFFSET_DEREF_ADDV``), so param_test's membarrier test is
  skipped there.

Return values and the compare-twice oracle are those of :mod:`.primitives`.
"""

from __future__ import annotations

from ..machine.interface import RseqAbort
from .image import PLAIN_IP
from .primitives import CsOptions, RseqBug, _Section, count_abort, inject

#: Instructions of one comparison (``ldr; sub; cbnz``) and of the CPU check.
CMP = 3


class _A64:
    """One run of an arm64 section: a running instruction index from ``start_ip``."""

    def __init__(self, th, name: str, n_insns: int, opts: CsOptions) -> None:
        self.th = th
        self.opts = opts
        self.sec = _Section(th, name + "_a64", n_insns, opts)
        self.site = self.sec.site
        self.k = 0

    def ip(self) -> int:
        return self.site.ip(self.k)

    def inject(self, point: int) -> None:
        inject(self.th, point, self.ip(), self.opts)

    def inject_after_commit(self, point: int) -> None:
        inject(self.th, point, self.site.post_commit_ip, self.opts)

    def cmp(self, addr: int, size: int = 8, *, signed: bool = False) -> int:
        """``ldr; sub; cbnz``: the loaded value (the caller decides where the branch goes)."""
        th, ip = self.th, self.site.ip
        value = th.load(addr, size, ip=ip(self.k), signed=signed)
        th.insn(ip(self.k + 1))
        th.insn(ip(self.k + 2))
        self.k += CMP
        return value

    def cpu_cmp(self) -> int:
        th = self.th
        return self.cmp(th.area + self.opts.index_field.offset, 4, signed=True)

    def ldr(self, addr: int, size: int = 8) -> int:
        value = self.th.load(addr, size, ip=self.ip())
        self.k += 1
        return value

    def op(self) -> None:
        """A register-only instruction (``add``, ``sub``, ``mov``, ``cbz``...)."""
        self.th.insn(self.ip())
        self.k += 1

    def str(self, addr: int, value: int, size: int = 8) -> None:
        self.th.store(addr, value, size, ip=self.ip())
        self.k += 1

    def recheck(self, cpu: int, compares: list[tuple[int, int]]) -> None:
        """``RSEQ_COMPARE_TWICE``: the CPU check and every comparison again, three instructions each."""
        if not self.opts.compare_twice:
            return
        if self.cpu_cmp() != cpu:
            raise RseqBug(f"{self.site.name}: cpu_id comparison failed")
        for addr, expect in compares:
            if self.cmp(addr) != expect:
                raise RseqBug(f"{self.site.name}: expected value comparison failed ({addr:#x})")


def _run(th, name: str, n_insns: int, ct_insns: int, opts: CsOptions, cpu: int, body) -> int:
    """Arm, check the CPU (3 instructions), run ``body(s)``; an abort is -1."""
    n = n_insns + (ct_insns if opts.compare_twice else 0)
    s = _A64(th, name, n, opts)
    inject(th, 9, s.site.pre_ip, opts)
    try:
        s.sec.arm()
        s.inject(2)
        if s.cpu_cmp() != cpu:
            count_abort(th)
            return -1
        return body(s)
    except RseqAbort:
        count_abort(th)
        return -1
    finally:
        th.ip = PLAIN_IP


def load_cbne_store(th, v: int, expect: int, newv: int, cpu: int, opts: CsOptions) -> int:
    """``rseq_cmpeqv_storev``: cmp v; [ct]; ``str`` newv (commit); injection 5 after it."""

    def body(s: _A64) -> int:
        s.inject(3)
        if s.cmp(v) != expect:
            return 1
        s.inject(4)
        s.recheck(cpu, [(v, expect)])
        s.str(v, newv)
        s.inject_after_commit(5)
        return 0

    return _run(th, "load_cbne_store", CMP + CMP + 1, 2 * CMP, opts, cpu, body)


def load_cbeq_store_add_load_store(th, v: int, expectnot: int, voffp: int, load: int, cpu: int,
                                   opts: CsOptions) -> int:
    """``rseq_cmpnev_storeoffp_load``: cmp v (``cbz``); [ct]; ``ldr`` v, ``str`` to load,
    ``ldr`` [v + voffp], ``str`` to v (commit); injection 5 after it."""

    def body(s: _A64) -> int:
        s.inject(3)
        if s.cmp(v) == expectnot:
            return 1
        s.inject(4)
        if opts.compare_twice:
            if s.cpu_cmp() != cpu:
                raise RseqBug(f"{s.site.name}: cpu_id comparison failed")
            if s.cmp(v) == expectnot:
                raise RseqBug(f"{s.site.name}: expected value comparison failed")
        r = s.ldr(v)
        s.str(load, r)
        r = s.ldr(r + voffp)
        s.str(v, r)
        s.inject_after_commit(5)
        return 0

    return _run(th, "load_cbeq_store_add_load_store", CMP + CMP + 4, 2 * CMP, opts, cpu, body)


def load_add_store(th, v: int, count: int, cpu: int, opts: CsOptions) -> int:
    """``rseq_addv``: [ct]; ``ldr`` v, ``add``, ``str`` v (commit); injection 4 after it.

    The sum lives in a register between the ``ldr`` and the ``str``: only the kernel's
    abort keeps a thread that was preempted there from storing a stale value.
    """

    def body(s: _A64) -> int:
        s.inject(3)
        s.recheck(cpu, [])
        value = s.ldr(v)
        s.op()  # add
        s.str(v, (value + count) & 0xFFFF_FFFF_FFFF_FFFF)
        s.inject_after_commit(4)
        return 0

    return _run(th, "load_add_store", CMP + 3, CMP, opts, cpu, body)


def load_add_load_load_add_store(th, ptr: int, off: int, inc: int, cpu: int, opts: CsOptions) -> int:
    raise NotImplementedError("rseq_offset_deref_addv is not implemented on arm64 "
                              "(no RSEQ_ARCH_HAS_OFFSET_DEREF_ADDV)")


def load_cbne_store_store(th, v: int, expect: int, v2: int, newv2: int, newv: int, cpu: int,
                          opts: CsOptions) -> int:
    """``rseq_cmpeqv_trystorev_storev``: cmp v; [ct]; ``str`` newv2; injection 5;
    ``str``/``stlr`` newv (commit); injection 6 after it."""

    def body(s: _A64) -> int:
        s.inject(3)
        if s.cmp(v) != expect:
            return 1
        s.inject(4)
        s.recheck(cpu, [(v, expect)])
        s.str(v2, newv2)
        s.inject(5)
        s.str(v, newv)  # stlr with RSEQ_TEMPLATE_MO_RELEASE: one instruction either way
        s.inject_after_commit(6)
        return 0

    return _run(th, "load_cbne_store_store", CMP + CMP + 2, 2 * CMP, opts, cpu, body)


def load_cbne_load_cbne_store(th, v: int, expect: int, v2: int, expect2: int, newv: int, cpu: int,
                              opts: CsOptions) -> int:
    """``rseq_cmpeqv_cmpeqv_storev``: cmp v; injection 4; cmp v2; injection 5; [ct];
    ``str`` newv (commit); injection 6 after it."""

    def body(s: _A64) -> int:
        s.inject(3)
        if s.cmp(v) != expect:
            return 1
        s.inject(4)
        if s.cmp(v2) != expect2:
            return 1
        s.inject(5)
        s.recheck(cpu, [(v, expect), (v2, expect2)])
        s.str(v, newv)
        s.inject_after_commit(6)
        return 0

    return _run(th, "load_cbne_load_cbne_store", CMP + 2 * CMP + 1, 3 * CMP, opts, cpu, body)


def load_cbne_memcpy_store(th, v: int, expect: int, dst: int, src: int, length: int, newv: int,
                           cpu: int, opts: CsOptions) -> int:
    """``rseq_cmpeqv_trymemcpy_storev``: cmp v; [ct]; ``cbz len; mov``, then per byte from the
    end ``sub; ldrb; strb; cbnz``; injection 5; ``str`` newv (commit); injection 6 after it."""
    if length > 4096:
        raise ValueError("the selftests keep memcpy sections at 4 kB or less")

    def body(s: _A64) -> int:
        s.inject(3)
        if s.cmp(v) != expect:
            return 1
        s.inject(4)
        s.recheck(cpu, [(v, expect)])
        s.op()  # cbz len
        if length:
            s.op()  # mov
            loop = s.k
            for i in reversed(range(length)):  # the loop's four instructions, repeated
                s.k = loop
                s.op()  # sub
                byte = s.ldr(src + i, 1)
                s.str(dst + i, byte, 1)
                s.op()  # cbnz
        else:
            s.k += 1 + 4
        s.inject(5)
        s.str(v, newv)
        s.inject_after_commit(6)
        return 0

    return _run(th, "load_cbne_memcpy_store", CMP + CMP + 2 + 4 + 1, 2 * CMP, opts, cpu, body)
