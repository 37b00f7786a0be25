"""Driving: trace -> op stream (kernel-independent, shared by every personality), cut into typed
segments and per-task groups: what the executor needs."""

from __future__ import annotations

import numpy as np

from ..format import Kind, Trace
from ..replaybase import (EXEC_LOOKUP_ERRORS, MM_CID_SCAN_DELAY_NS, Fallback, exit_windows, root_start_cpu,
                          tracks_user_mode)
from .compiled import BARRIERS, MEMO_OK, OP_MAX, announce_compile, cut_segments, drive, type_segments
from .files import resolve_files


class Plan:
    """The op stream of one trace, cut into segments and runs; what the executor needs."""

    def __init__(self, trace: Trace) -> None:
        ev = trace.events
        meta = trace.meta
        self.trace = trace
        nodes = meta.get("topology", {}).get("node_of_cpu") or [0] * int(meta.get("cpus", 1))
        self.nodes = tuple(nodes)
        ncpus = len(nodes)
        tick_ns = 1_000_000_000 // int(meta.get("kernel", {}).get("hz") or 250)
        root = meta.get("root", {})
        self.root = int(root.get("pid", 0))
        self.root_registered = bool(root.get("rseq_registered"))
        self.root_addr = int(root.get("rseq_addr") or 0x7F00_0000_0100)
        self.root_len = int(root.get("rseq_len") or 32)
        kind = ev["kind"]
        if tracks_user_mode(trace):
            # The returns are recorded: the reference loop reads them (Replay._run_tracked).
            raise Fallback("context-tracking events")
        pid = ev["pid"]
        a = ev["a"].astype(np.int64, copy=False)
        b = ev["b"].astype(np.int64, copy=False)
        # Pids (events' and fork children's) -> dense slots, through a table (pids are small).
        forks = np.nonzero(kind == Kind.FORK)[0]
        child_pids = a[forks]
        lo = min(int(pid.min()) if len(pid) else 0, int(child_pids.min()) if len(forks) else 0, self.root)
        hi = max(int(pid.max()) if len(pid) else 0, int(child_pids.max()) if len(forks) else 0, self.root)
        if hi - lo > 1 << 26:
            raise Fallback("pid range too wide for the slot table")
        seen = np.zeros(hi - lo + 1, bool)
        seen[pid - lo] = True
        seen[child_pids - lo] = True
        seen[self.root - lo] = True
        pids = np.nonzero(seen)[0].astype(np.int64) + lo
        table = (np.cumsum(seen) - 1).astype(np.int32)
        root_slot = int(table[self.root - lo])
        announce_compile()
        out = drive(ev["ts"].astype(np.int64, copy=False), ev["cpu"], kind, pid, table, lo, a, b, pids,
                     len(pids), root_slot, ncpus, tick_ns, *exit_windows(meta),
                     MM_CID_SCAN_DELAY_NS, np.array(sorted(EXEC_LOOKUP_ERRORS), np.int64),
                     root_start_cpu(trace, self.root))
        (op_inst, op_code, op_a, op_b, op_c, *flog) = out[:11]
        i_slot, i_exits, i_upd, i_fix, order, pid_cur, self.inst_clonerow = out[11:]
        resolve_files(trace, flog, op_code)  # placeholders become TASK_WORK or NOP (kept: ignored)
        self.op_inst, self.op_code, self.op_a, self.op_b, self.op_c = op_inst, op_code, op_a, op_b, op_c
        self.pids = pids
        self.inst_pid = pids[i_slot]
        self.inst_exits, self.inst_upd, self.inst_fix = i_exits, i_upd, i_fix
        self.order_pids = pids[order]
        self.current = {int(pids[s]): int(t) for s, t in enumerate(pid_cur.tolist()) if t >= 0}
        self._segment()

    def _segment(self) -> None:
        code, inst = self.op_code, self.op_inst
        n = len(code)
        memo_table = np.zeros(OP_MAX + 1, np.bool_)
        memo_table[list(MEMO_OK)] = True
        barrier_table = np.zeros(OP_MAX + 1, np.int64)
        barrier_table[list(BARRIERS)] = 1
        order, starts, h, seg_memo, epoch = cut_segments(inst, code, self.op_a, self.op_b, self.op_c,
                                                      len(self.inst_pid), memo_table, barrier_table)
        lengths = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
        size = 1 << 12
        while True:
            seg_type, ok = type_segments(order, starts, lengths, h, code, self.op_a, self.op_b, self.op_c,
                                          np.empty(size, np.uint64), np.zeros(size, np.int64))
            if ok >= 0:
                break
            size *= 16
        if not ok:
            raise Fallback("segment hash collision")
        self.order = order
        # Groups: the segments of one task within one epoch (between barriers), in order.
        head = order[starts]
        seg_inst = inst[head]
        seg_epoch = epoch[head]
        new_group = np.ones(len(starts), bool)
        if len(starts) > 1:
            new_group[1:] = (seg_inst[1:] != seg_inst[:-1]) | (seg_epoch[1:] != seg_epoch[:-1])
        self.group_first = np.nonzero(new_group)[0]
        self.group_end = np.concatenate([self.group_first[1:], [len(starts)]]).astype(np.int64)
        self.seg_start, self.seg_len, self.seg_type = starts, lengths, seg_type
        self.seg_memo = seg_memo
        self.seg_global = head  # trace position of each segment's first op
        self.seg_inst = seg_inst

    def ops_of(self, seg: int) -> list[tuple[int, int, int, int]]:
        lo = self.seg_start[seg]
        idx = self.order[lo: lo + self.seg_len[seg]]
        return list(zip(self.op_code[idx].tolist(), self.op_a[idx].tolist(), self.op_b[idx].tolist(),
                        self.op_c[idx].tolist()))

