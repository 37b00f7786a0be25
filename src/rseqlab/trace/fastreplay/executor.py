"""Executing a plan's op stream through one personality, with fixed-point segments added in bulk."""

from __future__ import annotations

import heapq
from dataclasses import fields, is_dataclass

import numpy as np

from ...kernel import Entry, Tif, Topology, make_kernel
from ...kernel._task import RseqStats, TraceCounts
from ...usermem import PAGE_SIZE, AddressSpace
from ..format import Trace
from ..replaybase import Fallback, KernelReplay, ReplayScheduler, root_start_cpu
from .compiled import (OP_CHECK_NR, OP_CREATE, OP_DO_EXIT, OP_ENTER_EXC, OP_ENTER_IRQ, OP_ENTER_SYS, OP_EXEC_FAIL,
                       OP_EXEC_OK, OP_EXIT_IRQ, OP_EXIT_SYS, OP_FORK, OP_NOP, OP_ROOT_START, OP_RSEQ, OP_SET_CPU,
                       OP_SIGNAL, OP_SIGRETURN, OP_SWITCH_IN, OP_SWITCH_OUT, OP_TASK_WORK, known_run)
from .plan import Plan


def _state_fields(obj) -> tuple[str, ...]:
    if is_dataclass(obj):
        return tuple(f.name for f in fields(obj))
    return tuple(sorted(vars(obj)))


class Executor:
    def __init__(self, plan: Plan, release: str) -> None:
        self.plan = plan
        self.kernel = make_kernel(release, Topology(plan.nodes), scheduler=ReplayScheduler())
        if self.kernel.trace_subscribers or self.kernel.ftrace is not None:
            raise Fallback("traced kernel")
        self.tasks: dict[int, object] = {}
        self.memo: dict = {}
        self.ops_cache: dict[int, list] = {}
        self._rseq_fields: dict[type, tuple[str, ...]] = {}
        trace = plan.trace
        sa = trace.sysargs
        self.args_cols = [sa[f"arg{i}"] for i in range(6)]
        self.comms = trace.meta.get("tasks", {})

    # -- state fingerprints and counter snapshots ------------------------------------------
    def _fp(self, t):
        r = t.rseq
        cls = type(r)
        names = self._rseq_fields.get(cls)
        if names is None:
            names = self._rseq_fields[cls] = _state_fields(r)
        mem = None
        usr = r.usrptr
        if usr:
            mem = t.mm.state_key(usr, 32)
            if mem is None or any(mem[-1][8:16]):
                return None  # unmapped area or an armed rseq_cs: never memoized
        return (t.tif, t.in_user, t.exiting, t.killed_by, tuple(t.pending), tuple(sorted(t.blocked)),
                tuple(sorted(t.handlers.items())), tuple((f.sig, f.saved_ip, tuple(sorted(f.saved_blocked))) for f in t.sigframes),
                t.pagefault_disabled, t.regs.ip, t.cpu, t.mm_cid, id(t.mm), t.set_child_tid, t.ret_from_fork,
                tuple(getattr(r, f) for f in names), mem)

    def _snap(self, t):
        k = self.kernel
        s = t.stats
        return (tuple(getattr(s, c) for c in RseqStats.__slots__), (t.trace.rseq_update, t.trace.rseq_ip_fixup),
                tuple(tuple(getattr(c, n) for n in RseqStats.__slots__) for c in k.cpu_stats),
                (k.trace_totals.rseq_update, k.trace_totals.rseq_ip_fixup),
                dict(t.uaccess.reads), dict(t.uaccess.writes), dict(t.uaccess.faults))

    @staticmethod
    def _delta(before, after):
        st = tuple(y - x for x, y in zip(before[0], after[0]))
        tr = tuple(y - x for x, y in zip(before[1], after[1]))
        cpus = tuple(tuple(y - x for x, y in zip(cb, ca)) for cb, ca in zip(before[2], after[2]))
        tot = tuple(y - x for x, y in zip(before[3], after[3]))
        acc = []
        for db, da in zip(before[4:], after[4:]):
            acc.append({key: da[key] - db.get(key, 0) for key in da if da[key] != db.get(key, 0)})
        return st, tr, cpus, tot, tuple(acc)

    def _apply(self, t, delta, times: int) -> None:
        st, tr, cpus, tot, acc = delta
        k = self.kernel
        s = t.stats
        for name, d in zip(RseqStats.__slots__, st):
            if d:
                setattr(s, name, getattr(s, name) + d * times)
        t.trace.rseq_update += tr[0] * times
        t.trace.rseq_ip_fixup += tr[1] * times
        for c, dc in zip(k.cpu_stats, cpus):
            for name, d in zip(RseqStats.__slots__, dc):
                if d:
                    setattr(c, name, getattr(c, name) + d * times)
        k.trace_totals.rseq_update += tot[0] * times
        k.trace_totals.rseq_ip_fixup += tot[1] * times
        for counter, dd in zip((t.uaccess.reads, t.uaccess.writes, t.uaccess.faults), acc):
            for key, d in dd.items():
                counter[key] += d * times

    # -- running -------------------------------------------------------------------------------
    def run(self):
        plan = self.plan
        seg_type, seg_memo, seg_global, seg_inst = plan.seg_type, plan.seg_memo, plan.seg_global, plan.seg_inst
        group_end = plan.group_end
        heap = [(int(seg_global[f]), g, int(f)) for g, f in enumerate(plan.group_first.tolist())]
        heapq.heapify(heap)
        tasks = self.tasks
        fixed = self.memo  # state fingerprint -> {segment type: deltas} of segments that keep that state
        while heap:
            _, g, i = heapq.heappop(heap)
            end = int(group_end[g])
            typ = int(seg_type[i])
            inst = int(seg_inst[i])
            t = tasks.get(inst)
            if t is not None and seg_memo[i]:
                fp = self._fp(t)
                if fp is not None:
                    known = fixed.get(fp)
                    if known is not None and typ in known:
                        types = np.array(sorted(known), np.int64)
                        j, counts = known_run(seg_type, i, end, types)
                        for typ_, times in zip(types.tolist(), counts.tolist()):
                            if times:
                                self._apply(t, known[typ_], times)
                        if j < end:
                            heapq.heappush(heap, (int(seg_global[j]), g, j))
                        continue
                    before = self._snap(t)
                    self._exec(inst, (typ,), i)
                    if self._fp(t) == fp:
                        fixed.setdefault(fp, {})[typ] = self._delta(before, self._snap(t))
                    if i + 1 < end:
                        heapq.heappush(heap, (int(seg_global[i + 1]), g, i + 1))
                    continue
            self._exec(inst, (typ,), i)
            if i + 1 < end:
                heapq.heappush(heap, (int(seg_global[i + 1]), g, i + 1))
        return self._result()

    def _exec(self, inst: int, block: tuple, seg: int) -> None:
        ops = self.ops_cache.get(block)
        if ops is None:
            ops = []
            for q in range(len(block)):
                ops.extend(self.plan.ops_of(seg + q))
            self.ops_cache[block] = ops
        k = self.kernel
        tasks = self.tasks
        t = tasks.get(inst)
        for code, a, b, c in ops:
            if code == OP_ENTER_SYS:
                k.enter_from_user_mode(t, Entry.SYSCALL)
            elif code == OP_EXIT_SYS:
                k.syscall_exit_to_user_mode(t)
                if t.killed_by is not None:
                    raise Fallback("a task was killed by the kernel")
            elif code == OP_SWITCH_OUT:
                k.prepare_task_switch(t)
            elif code == OP_SWITCH_IN:
                k.finish_task_switch_in(t, a)
            elif code == OP_EXIT_IRQ:
                k.irqentry_exit_to_user_mode(t)
                if t.killed_by is not None:
                    raise Fallback("a task was killed by the kernel")
            elif code == OP_ENTER_IRQ:
                k.enter_from_user_mode(t, Entry.IRQ)
            elif code == OP_ENTER_EXC:
                k.enter_from_user_mode(t, Entry.EXCEPTION)
            elif code == OP_SET_CPU:
                k.set_task_cpu(t, a)
            elif code == OP_TASK_WORK:
                k.task_work_add(t)
            elif code == OP_CHECK_NR:
                if not t.tif & Tif.NOTIFY_RESUME:
                    raise Fallback("mm_cid task_work without TIF_NOTIFY_RESUME")
            elif code == OP_SIGNAL:
                t.handlers[a] = b
                k.send_signal(t, a)
            elif code == OP_SIGRETURN:
                if t.sigframes:
                    k.sigreturn(t)
            elif code == OP_RSEQ:
                args = tuple(int(col[a]) for col in self.args_cols)
                flags = args[2] & 0xFFFF_FFFF
                if flags & 1:
                    k.sys_rseq(t, args[0], args[1], flags, args[3])
                else:
                    self._register(t, args[0], args[1] & 0xFFFF_FFFF, args[3])
            elif code == OP_EXEC_FAIL:
                k.execve(t, success=False)
            elif code == OP_EXEC_OK:
                k.execve(t, success=True)
                t.mm = AddressSpace()
                t.mm_cid = a
            elif code == OP_FORK:
                row = int(self.plan.inst_clonerow[a])
                child = k.copy_process(t, int(self.plan.inst_pid[a]), b,
                                       int(self.args_cols[3][row]) if row >= 0 else 0)
                child.mm_cid = c
                tasks[a] = child
            elif code == OP_DO_EXIT:
                k.do_exit(t)
            elif code == OP_CREATE:
                t = k.new_task(a, AddressSpace(), comm=self.comms.get(str(a), "?"))
                t.mm_cid = b
                tasks[inst] = t
            elif code == OP_ROOT_START:
                self._start_root(t)
            elif code == OP_NOP:
                pass
            else:  # pragma: no cover - the driver emits nothing else
                raise Fallback(f"unknown op {code}")

    def _register(self, t, addr: int, length: int, sig: int) -> int:
        space = t.mm
        page = addr & ~(PAGE_SIZE - 1)
        end = (addr + max(length, 32) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        for p in range(page, end, PAGE_SIZE):
            if not space.is_mapped(p):
                space.map(p, PAGE_SIZE)
        return self.kernel.sys_rseq(t, addr, length, 0, sig)

    def _start_root(self, t) -> None:
        k, plan = self.kernel, self.plan
        t.cpu = root_start_cpu(plan.trace, plan.root)
        if plan.root_registered:
            k.enter_from_user_mode(t, Entry.SYSCALL)
            self._register(t, plan.root_addr, plan.root_len, 0x53053053)
            k.syscall_exit_to_user_mode(t)
        k.enter_from_user_mode(t, Entry.SYSCALL)
        k.prepare_task_switch(t)
        t.stats = RseqStats()
        t.trace = TraceCounts()
        t.uaccess.clear()
        k.cpu_stats = [RseqStats() for _ in k.cpu_stats]
        k.trace_totals = TraceCounts()

    def _result(self):
        plan, k = self.plan, self.kernel
        for t in self.tasks.values():
            if t.killed_by is not None and not t.exiting:
                raise Fallback("a task was killed by the kernel")
        counters = k.stats().as_dict(k.counters)  # a slice build adds its five
        tps = k.trace_totals.as_dict()
        reads = writes = 0
        per_task = {}
        names = self.comms  # the name after exec, not the parent's (see replay.py)
        for pid in plan.order_pids.tolist():
            inst = plan.current[pid]
            t = self.tasks[inst]
            reads += sum(t.uaccess.reads.values())
            writes += sum(t.uaccess.writes.values())
            per_task[pid] = {"comm": names.get(str(pid), t.comm), "tgid": t.tgid,
                             "exits": int(plan.inst_exits[inst]),
                             "counters": t.stats.as_dict(), "rseq_update": t.trace.rseq_update,
                             "rseq_ip_fixup": t.trace.rseq_ip_fixup,
                             "observed_rseq_update": int(plan.inst_upd[inst]),
                             "observed_rseq_ip_fixup": int(plan.inst_fix[inst])}
        return KernelReplay(k.release, counters, tps, reads, writes, per_task)


def fast_replay(trace: Trace, kernels: list[str], *, plan: Plan | None = None):
    """Replay ``trace`` through each kernel with the array path; raises :class:`Fallback`."""
    plan = plan or Plan(trace)
    return {rel: Executor(plan, rel).run() for rel in kernels}

