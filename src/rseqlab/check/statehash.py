"""The state hash: a digest of everything that decides the future of an execution.

The search cuts an execution at a decision whose digest it has seen with at least the
same remaining budget (``search.py``). What goes in: every task's kernel state (TIF bits,
signals and frames, the personality's rseq state, CPU, mm_cid), each thread's user state
(IP, plain locals, and its suspended Python frames: code, position and plain locals), the
run queues, each process's mm_cid allocator and the bytes of every writable user page.
What stays out: statistics (:data:`_STATS_KEYS`) and ``Thread.irqs``'s absolute value.

With ``world.canonical_cs`` a stale ``rseq_cs`` is hashed as 0 (:func:`stale_rseq_cs`; the
argument is in docs/scale.md, the personalities it holds for in :func:`inert_stale_rseq_cs`).
"""

from __future__ import annotations

import hashlib
import inspect
from enum import Enum
from typing import Any

from greenlet import greenlet

from ..abi import StructRseq, StructRseqCs
from ..usermem import PAGE_SHIFT, PAGE_SIZE
from .controlled import ControlledMachine

#: Kernel functions that read or write ``rseq_cs`` after registration, and the modules whose
#: code of them was checked to treat a stale pointer (a valid descriptor, the IP outside its
#: section) as it treats 0 apart from clearing it: a what-if or any other override of one of
#: them turns the canonical hash off.
CS_HOOKS = ("rseq_get_rseq_cs", "clear_rseq_cs", "rseq_ip_fixup", "rseq_need_restart", "rseq_syscall",
            "_rseq_handle_notify_resume", "rseq_exit_user_update", "rseq_update_usr", "rseq_handle_cs",
            "_put_ids_get_csaddr", "rseq_set_ids_get_csaddr", "_rseq_debug_syscall_return",
            "rseq_update_user_cs", "rseq_debug_update_user_cs", "_rseq_cs_clear", "_rseq_cs_abort",
            "get_rseq_field", "put_rseq_field", "get_user", "put_user", "rseq_signal_deliver",
            "_rseq_signal_deliver", "rseq_debug_syscall_return")
AUDITED_MODULES = frozenset({"rseqlab.kernel._base", "rseqlab.kernel.v6_18", "rseqlab.kernel.v6_19",
                             "rseqlab.kernel.v7_0", "rseqlab.kernel.v7_1", "rseqlab.kernel.slice_ext",
                             "rseqlab.kernel.arm64", "rseqlab.kernel.builds"})
_RSEQ_CS = StructRseq.RSEQ_CS.offset


def inert_stale_rseq_cs(cls: type) -> bool:
    """True if every ``CS_HOOKS`` function of kernel class ``cls`` is one audited here."""
    for name in CS_HOOKS:
        fn = getattr(cls, name, None)
        if fn is not None and getattr(fn, "__module__", None) not in AUDITED_MODULES:
            return False
    return True


def _word(mm, addr: int, size: int = 8) -> int | None:
    """``size`` bytes of user memory read straight from the page (no fault, no footprint)."""
    pte = mm._ptes.get(addr >> PAGE_SHIFT)
    off = addr & (PAGE_SIZE - 1)
    if pte is None or off > PAGE_SIZE - size:
        return None
    return int.from_bytes(pte.page.view()[off:off + size], "little")


def stale_rseq_cs(world) -> list[int]:
    """Addresses of ``rseq_cs`` words that decide nothing: each points to an intact descriptor of
    one of the image's sections in read-only memory, and neither the thread's IP, nor the IP the
    kernel would return to, nor an IP saved in a signal frame is inside that section. Every audited
    kernel either leaves such a pointer or clears it, exactly as it would treat 0 (apart from
    counters), and user code only overwrites it (checked: ``World.user_read_cs``)."""
    mm = world.main.proc.mm
    sites = {s.descriptor: s for s in world.image.sites.values()}
    out = []
    for st in world.m.tasks.values():
        th = st.thread
        if th is None or not th.area:
            continue
        word = th.area + _RSEQ_CS
        csaddr = _word(mm, word)
        site = sites.get(csaddr) if csaddr else None
        if site is None or mm.is_writable(site.descriptor):
            continue
        head = _word(mm, site.descriptor)
        if (head != 0 or _word(mm, site.descriptor + StructRseqCs.START_IP.offset) != site.start_ip
                or _word(mm, site.descriptor + StructRseqCs.POST_COMMIT_OFFSET.offset)
                != site.post_commit_ip - site.start_ip
                or _word(mm, site.descriptor + StructRseqCs.ABORT_IP.offset) != site.abort_ip):
            continue  # version or flags set, or the descriptor changed: not the image's
        if (site.start_ip <= site.abort_ip < site.post_commit_ip or mm.is_writable(site.abort_ip - 4)
                or _word(mm, site.abort_ip - 4, 4) != getattr(st.kt.rseq, "sig", None)):
            continue  # 6.18 checks the signature of any descriptor it reads, IP inside or not
        ips = [th.ip, st.kt.regs.ip, *(f.saved_ip for f in st.kt.sigframes)]
        if any(site.start_ip <= ip < site.post_commit_ip for ip in ips):
            continue
        out.append(word)
    return out

#: th.local keys that are statistics, not behaviour: left out of the state.
_STATS_KEYS = frozenset({"nr_abort", "inject_passes"})


_SKIP_CODE = {ControlledMachine.wait.__code__}


def _stack(glet: greenlet | None, irqs: int) -> Any:
    """A suspended thread's Python frames: code, position and plain local values.

    ``Thread.irqs`` only ever counts up; what an instruction compares is how
    many interrupts landed since it started (a local ``irqs``), so that local
    is kept relative and the counter itself is left out: an execution that
    took an interrupt outside any section can then meet one that did not.
    """
    if glet is None or glet.dead:
        return None
    return _frames(glet.gr_frame, irqs)


def _frames(f, irqs: int) -> tuple:
    """:func:`_stack` from frame ``f`` outwards."""
    out = []
    plain = _PLAIN
    while f is not None:
        code = f.f_code
        if code not in _SKIP_CODE:
            loc = f.f_locals
            if "irqs" in loc and type(loc["irqs"]) is int:
                loc = {**loc, "irqs": irqs - loc["irqs"]}
            # NOTE: the locals in the order of the code's variables, not the dict's (which keeps
            # the order they were first bound in): no sort needed in the hash's hot loop.
            names = _NAMES.get(code)
            if names is None:
                names = _NAMES[code] = (code.co_varnames + code.co_cellvars + code.co_freevars
                                        if code.co_flags & inspect.CO_OPTIMIZED else ())
            if names:
                picture = tuple([(k, v if type(v) in plain else _freeze(v, 1))
                                 for k in names if (v := loc.get(k, _UNBOUND)) is not _UNBOUND])
            else:  # module or class code: its namespace, sorted
                picture = _freeze(loc)
            out.append((code.co_name, f.f_lasti, picture))
        f = f.f_back
    return tuple(out)


_PLAIN = frozenset({type(None), bool, int, str, bytes, float})
_UNBOUND = object()
#: code -> its variable names (locals, cells, free variables), in the code's order.
_NAMES: dict[Any, tuple[str, ...]] = {}


def _freeze(value: Any, depth: int = 0) -> Any:
    """A deterministic, hashable picture of a value: plain data kept, objects by type."""
    t = type(value)
    if t in _PLAIN:
        return value
    name = _BY_TYPE.get(t)
    if name is not None:
        return name
    if isinstance(value, Enum):
        return repr(value)
    if depth > 4:
        return "..."
    # NOTE: plain elements inline (what _freeze returns for them): the hash's hot loop.
    plain = _PLAIN
    if t is list or t is tuple:
        return tuple([v if type(v) in plain else _freeze(v, depth + 1) for v in value])
    if t is dict:
        items = [(k, v if type(v) in plain else _freeze(v, depth + 1)) for k, v in value.items()]
        try:
            return tuple(sorted(items))
        except TypeError:
            return tuple(sorted(items, key=repr))
    if t is set or t is frozenset:
        return tuple(sorted(repr(_freeze(v, depth + 1)) for v in value))
    if isinstance(value, int):
        return int(value)
    _BY_TYPE[t] = t.__name__
    return t.__name__


#: Types pictured by their name alone (neither plain, an Enum, a container nor an int).
_BY_TYPE: dict[type, str] = {}



def _task_part(m, tid: int, st, doomed=None) -> bytes:
    """One task's share of the state, as a digest; ``doomed`` (section name, frames) stands for
    the thread's IPs and frames (its position left out: ``interrupts.doomed_stack``)."""
    kt, th = st.kt, st.thread
    local = {k: v for k, v in th.local.items() if k not in _STATS_KEYS}
    if doomed is None:
        ips, stack = (kt.regs.ip, th.ip), _stack(st.glet, th.irqs)
    else:
        ips, stack = ("in", doomed[0]), doomed[1]
    part = (tid, st.state, kt.cpu, kt.mm_cid, int(kt.tif), kt.syscall_work, ips[0], kt.in_user,
            kt.killed_by, kt.exiting, tuple(kt.pending), tuple(sorted(kt.blocked)),
            tuple((f.sig, f.saved_ip, tuple(sorted(f.saved_blocked))) for f in kt.sigframes), repr(kt.rseq),
            ips[1], th._frames, th.area, _freeze(local),
            m.parked.get(tid), m.away.get(tid), tid in m.active, stack)
    return hashlib.blake2b(repr(part).encode(), digest_size=16).digest()


def state_key(world) -> bytes:
    """A digest of everything that decides the future of this execution."""
    return state_keys(world)[0]


def state_keys(world, doomed: dict | None = None) -> tuple[bytes, dict[int, bytes]]:
    """The digest (:func:`state_key`) and, for each thread in ``doomed`` (tid -> (the section an
    interrupt now aborts, its frames without its position there)), the digest with that thread's
    IPs and frames replaced: the key under which the explorer caches an interrupt of it
    (``interrupts.py``)."""
    m = world.m
    tasks = sorted(m.tasks.items())
    parts = [_task_part(m, tid, st) for tid, st in tasks]
    tail = (tuple((c.curr.tid if c.curr else None, tuple(s.tid for s in c.rq), c.hrtimer is not None)
                  for c in m.cpus),
            tuple((pid, _freeze(vars(proc.mmcid))) for pid, proc in sorted(m.processes.items())))
    h = hashlib.blake2b(repr(tail).encode(), digest_size=16)
    # NOTE: the page table is read directly: hashing the bytes of every writable page
    # is the one complete and cheap description of user memory.
    zeroed: dict[int, list[int]] = {}
    if world.canonical_cs:
        for addr in stale_rseq_cs(world):
            zeroed.setdefault(addr >> PAGE_SHIFT, []).append(addr & (PAGE_SIZE - 1))
    for pfn, data in world.main.proc.mm.writable_pages():
        h.update(pfn.to_bytes(8, "little"))
        if pfn in zeroed:
            data = bytearray(data)
            for off in zeroed[pfn]:
                data[off:off + 8] = bytes(8)
        h.update(data)
    common = h.digest()
    key = hashlib.blake2b(b"".join(parts) + common, digest_size=16).digest()
    abstract: dict[int, bytes] = {}
    for i, (tid, st) in enumerate(tasks):
        site = doomed.get(tid) if doomed else None
        if site is not None:
            others = parts[:i] + [_task_part(m, tid, st, site)] + parts[i + 1:]
            abstract[tid] = hashlib.blake2b(b"".join(others) + common, digest_size=16).digest()
    return key, abstract
