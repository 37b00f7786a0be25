"""From raw ring-buffer records to the columnar trace: :func:`build_trace`, shared by the live
recorder, the trace.dat and perf.data readers and the guest ingest; the overhead estimate and the
summary a recording prints."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from . import parse
from .events import MIGRATION_EVENT
from .format import EVENT_COLUMNS, SYSARGS_FOR, IrqKind, Kind, Trace

IRQ_EVENTS = ((("irq_vectors", "local_timer_entry"), IrqKind.TIMER),
               (("irq_vectors", "reschedule_entry"), IrqKind.RESCHEDULE),
               (("irq_vectors", "call_function_entry"), IrqKind.CALL_FUNCTION),
               (("irq_vectors", "call_function_single_entry"), IrqKind.CALL_FUNCTION_SINGLE),
               (("irq_vectors", "irq_work_entry"), IrqKind.IRQ_WORK),
               (("irq", "irq_handler_entry"), IrqKind.DEVICE))

#: Cost estimates behind the printed overhead (measured on the
#: project's machines): a traced syscall pays ~0.8 us for sys_enter + sys_exit,
#: any other recorded event ~0.3 us.
NS_PER_TRACED_SYSCALL = 800
NS_PER_OTHER_EVENT = 300
#: The least workload CPU time whose tracing overhead is worth a percentage.
MIN_CPU_FOR_SHARE_S = 0.01


def config_hz(release: str) -> tuple[int | None, str]:
    candidates = [Path(f"/boot/config-{release}"), Path("/proc/config.gz")]
    for p in candidates:
        try:
            text = gzip.open(p, "rt").read() if p.suffix == ".gz" else p.read_text()
        except OSError:
            continue
        m = re.search(r"^CONFIG_HZ=(\d+)", text, re.M)
        if m:
            return int(m.group(1)), str(p)
    return None, "unknown"



#: The fields build_trace decodes, per event (the rest of each record is not read).
FIELDS = {("sched", "sched_process_fork"): ("parent_pid", "child_pid"),
          ("sched", "sched_process_exec"): ("pid", "old_pid", "filename"),
          ("sched", "sched_switch"): ("prev_pid", "prev_state", "next_pid"),
          ("task", "task_newtask"): ("pid", "clone_flags"),
          ("sched", "sched_process_exit"): ("pid", "group_dead"),
          ("raw_syscalls", "sys_enter"): ("common_pid", "id"),
          ("raw_syscalls", "sys_exit"): ("common_pid", "id", "ret"),
          ("signal", "signal_deliver"): ("common_pid", "sig", "sa_handler", "code"),
          ("rseq", "rseq_update"): ("common_pid", "cpu_id", "node_id", "mm_cid"),
          ("rseq", "rseq_ip_fixup"): ("common_pid", "regs_ip", "start_ip", "post_commit_offset", "abort_ip"),
          **{key: ("common_pid",) for key, _ in IRQ_EVENTS},
          ("exceptions", "page_fault_user"): ("common_pid", "address", "ip"),
          ("exceptions", "page_fault_kernel"): ("common_pid", "address", "ip", "error_code"),
          ("context_tracking", "user_enter"): ("common_pid",),
          ("context_tracking", "user_exit"): ("common_pid",),
          MIGRATION_EVENT: ("pid", "orig_cpu", "dest_cpu")}


def prefetch(index: parse.EventIndex, formats: dict[tuple[str, str], parse.EventFormat], *,
             migrations: bool = True) -> None:
    """Decode every field build_trace uses in one pass over ``index``'s records (``migrations``
    False: they are in other records)."""
    index.prefetch({formats[k]: names for k, names in FIELDS.items()
                    if k in formats and (migrations or k != MIGRATION_EVENT)})


def build_trace(raw_main: dict[int, bytes] | parse.RawRecords, raw_mig: dict[int, bytes] | parse.RawRecords | None,
                formats: dict[tuple[str, str], parse.EventFormat], page_size: int, meta: dict,
                lost_main: dict[int, int], lost_mig: dict[int, int], t0: int,
                ctype: np.ndarray | parse.EventIndex | None = None, *, release: bool = False) -> Trace:
    """The columnar trace of the process tree rooted at ``meta["root"]["pid"]``.

    ``raw_main`` and ``raw_mig`` are per-CPU pages or already walked records; ``raw_mig`` None:
    the migrations are in the main records (a system-wide recording, e.g. a trace.dat).
    ``ctype``: the main records' event IDs, or their :class:`~rseqlab.trace.parse.EventIndex`.
    ``release``: the main records (and that index) may be emptied once decoded, so their memory
    serves the sorted columns (the caller holds no other reference to the pages); always so for
    records this walks itself."""
    release = release or not isinstance(raw_main, parse.RawRecords)
    rec = raw_main if isinstance(raw_main, parse.RawRecords) else parse.walk_pages(raw_main, page_size)
    if raw_mig is None:
        rec_mig = None
    else:
        rec_mig = raw_mig if isinstance(raw_mig, parse.RawRecords) else parse.walk_pages(raw_mig, page_size)
    index = ctype if isinstance(ctype, parse.EventIndex) else parse.EventIndex(rec, ctype)
    prefetch(index, formats, migrations=rec_mig is None)
    # One block per event type: (rows, {column: array, scalar or None (zero)}); the columns are
    # the trace's plus the per-CPU sequence and the sub-order of the rows one record yields (a
    # switch-out before its switch-in).
    blocks: list[tuple[int, dict]] = []

    def get(key):
        fmt = formats.get(key)
        if fmt is None:
            return None
        return parse.fields_of(index, fmt, FIELDS[key])

    def add(kind, ts, cpu, seq, pid, a=None, b=None, c=None, d=None, sub=0):
        blocks.append((len(ts), {"ts": ts, "cpu": cpu, "seq": seq, "sub": sub, "kind": kind, "pid": pid,
                                 "a": a, "b": b, "c": c, "d": d}))

    # Process tree: the recorder's child, and every task forked from the tree.
    fork_r, fork_ts, fork_cpu, fork_seq = get(("sched", "sched_process_fork"))
    exec_r, exec_ts, exec_cpu, exec_seq = get(("sched", "sched_process_exec"))
    sw, sw_ts, sw_cpu, sw_seq = get(("sched", "sched_switch"))
    root = int(meta["root"]["pid"])
    tree = {root}
    order = np.argsort(fork_ts, kind="stable")
    for i in order:
        if int(fork_r["parent_pid"][i]) in tree:
            tree.add(int(fork_r["child_pid"][i]))
    tree_arr = np.array(sorted(tree), dtype=np.int64)

    def in_tree(pids):
        return np.isin(pids.astype(np.int64), tree_arr)

    def pick(pids):
        """in_tree as an index: every row (a view, no copy) when all are in the tree."""
        sel = in_tree(pids)
        return slice(None) if sel.all() else sel

    # sched_switch: one SWITCH_OUT for prev, one SWITCH_IN for next, each if in the tree.
    sel = in_tree(sw["prev_pid"])
    add(Kind.SWITCH_OUT, sw_ts[sel], sw_cpu[sel], sw_seq[sel], sw["prev_pid"][sel],
        sw["prev_state"][sel], sw["next_pid"][sel], sub=0)
    sel = in_tree(sw["next_pid"])
    add(Kind.SWITCH_IN, sw_ts[sel], sw_cpu[sel], sw_seq[sel], sw["next_pid"][sel], sw["prev_pid"][sel], sub=1)

    # Forks, with clone flags from task_newtask (same child pid) when available.
    flags = {}
    nt = get(("task", "task_newtask"))
    if nt is not None:
        for pid, fl in zip(nt[0]["pid"].tolist(), nt[0]["clone_flags"].tolist()):
            flags[pid] = fl
    sel = in_tree(fork_r["parent_pid"])
    children = fork_r["child_pid"][sel]
    cflags = np.array([flags.get(int(p), -1) for p in children], dtype=np.int64)
    add(Kind.FORK, fork_ts[sel], fork_cpu[sel], fork_seq[sel], fork_r["parent_pid"][sel], children, cflags)
    sel = in_tree(exec_r["pid"])
    add(Kind.EXEC, exec_ts[sel], exec_cpu[sel], exec_seq[sel], exec_r["pid"][sel], exec_r["old_pid"][sel])
    # The program each task last exec'd (its critical sections, trace/sections.py, come from there).
    exec_files = {}
    names = parse.data_loc_string(rec, rec.offset[exec_seq[sel]], exec_r["filename"][sel]) if sel.any() else []
    for i in np.argsort(exec_ts[sel], kind="stable").tolist():
        exec_files[str(int(exec_r["pid"][sel][i]))] = names[i]
    ex, ex_ts, ex_cpu, ex_seq = get(("sched", "sched_process_exit"))
    sel = in_tree(ex["pid"])
    add(Kind.EXIT, ex_ts[sel], ex_cpu[sel], ex_seq[sel], ex["pid"][sel], ex["group_dead"][sel])

    se_fmt = formats.get(("raw_syscalls", "sys_enter"))
    se, se_ts, se_cpu, se_seq = get(("raw_syscalls", "sys_enter"))
    sel = pick(se["common_pid"])
    se, se_ts, se_cpu, se_seq = {k: v[sel] for k, v in se.items()}, se_ts[sel], se_cpu[sel], se_seq[sel]
    want = np.isin(se["id"], np.array(sorted(SYSARGS_FOR), dtype=np.int64))
    arg_index = np.full(len(se_seq), -1, np.int64)
    arg_index[want] = np.arange(int(want.sum()))
    add(Kind.SYS_ENTER, se_ts, se_cpu, se_seq, se["common_pid"], se["id"], arg_index)
    sys_args = parse.field_at(rec, rec.offset[se_seq[want]], se_fmt, "args").view("<u8").reshape(-1, 6) \
        if want.any() else np.zeros((0, 6), np.uint64)
    sx, sx_ts, sx_cpu, sx_seq = get(("raw_syscalls", "sys_exit"))
    sel = pick(sx["common_pid"])
    add(Kind.SYS_EXIT, sx_ts[sel], sx_cpu[sel], sx_seq[sel], sx["common_pid"][sel], sx["id"][sel], sx["ret"][sel])

    sg, sg_ts, sg_cpu, sg_seq = get(("signal", "signal_deliver"))
    sel = pick(sg["common_pid"])
    add(Kind.SIGNAL, sg_ts[sel], sg_cpu[sel], sg_seq[sel], sg["common_pid"][sel], sg["sig"][sel],
        sg["sa_handler"][sel], sg["code"][sel])
    ru, ru_ts, ru_cpu, ru_seq = get(("rseq", "rseq_update"))
    sel = pick(ru["common_pid"])
    add(Kind.RSEQ_UPDATE, ru_ts[sel], ru_cpu[sel], ru_seq[sel], ru["common_pid"][sel], ru["cpu_id"][sel],
        ru["node_id"][sel], ru["mm_cid"][sel])
    fx, fx_ts, fx_cpu, fx_seq = get(("rseq", "rseq_ip_fixup"))
    sel = pick(fx["common_pid"])
    add(Kind.RSEQ_IP_FIXUP, fx_ts[sel], fx_cpu[sel], fx_seq[sel], fx["common_pid"][sel],
        fx["regs_ip"][sel], fx["start_ip"][sel], fx["post_commit_offset"][sel], fx["abort_ip"][sel])
    for (system, event), kind in IRQ_EVENTS:
        r = get((system, event))
        if r is None:
            continue
        sel = pick(r[0]["common_pid"])
        add(Kind.IRQ, r[1][sel], r[2][sel], r[3][sel], r[0]["common_pid"][sel], int(kind))
    pf = get(("exceptions", "page_fault_user"))
    if pf is not None:
        sel = pick(pf[0]["common_pid"])
        add(Kind.IRQ, pf[1][sel], pf[2][sel], pf[3][sel], pf[0]["common_pid"][sel],
            int(IrqKind.PAGE_FAULT), pf[0]["address"][sel], pf[0]["ip"][sel])
    kf = get(("exceptions", "page_fault_kernel"))
    if kf is not None:
        sel = pick(kf[0]["common_pid"])
        add(Kind.KERNEL_FAULT, kf[1][sel], kf[2][sel], kf[3][sel], kf[0]["common_pid"][sel],
            kf[0]["address"][sel], kf[0]["ip"][sel], kf[0]["error_code"][sel])
    for (system, event), kind in ((("context_tracking", "user_enter"), Kind.USER_ENTER),
                                  (("context_tracking", "user_exit"), Kind.USER_EXIT)):
        r = get((system, event))
        if r is not None:
            sel = pick(r[0]["common_pid"])
            add(kind, r[1][sel], r[2][sel], r[3][sel], r[0]["common_pid"][sel])

    # Migrations from the system-wide instance, filtered to the tree.
    mg = parse.fields_of(index if rec_mig is None else parse.EventIndex(rec_mig), formats[MIGRATION_EVENT],
                         FIELDS[MIGRATION_EVENT])
    sel = pick(mg[0]["pid"])
    add(Kind.MIGRATE, mg[1][sel], mg[2][sel], mg[3][sel] + (0 if rec_mig is None else len(rec.offset)),
        mg[0]["pid"][sel], mg[0]["orig_cpu"][sel], mg[0]["dest_cpu"][sel], sub=2)

    lost_pages = rec.lost_pages + (rec_mig.lost_pages if rec_mig is not None else [])
    if lost_pages:
        lp = np.array([(c, n, ts) for c, n, ts in lost_pages], dtype=np.int64)
        add(Kind.LOST, lp[:, 2], lp[:, 0], 0, -1, lp[:, 1])

    comms = {}  # the last name each task ran under (after its exec)
    by_time = np.argsort(sw_ts, kind="stable")
    m = in_tree(sw["prev_pid"][by_time])
    tree_pids = sw["prev_pid"][by_time][m]
    _, first_from_end = np.unique(tree_pids[::-1], return_index=True)
    last = np.sort(len(tree_pids) - 1 - first_from_end)  # each task's last switch-out, in time order
    last_comm = parse.field_at(rec, rec.offset[sw_seq[by_time][m][last]], formats[("sched", "sched_switch")],
                               "prev_comm")
    for pid, name in zip(tree_pids[last].tolist(), parse.cstr(last_comm)):
        comms[str(pid)] = name
    if release:  # the pages and per-record arrays are decoded: their memory can serve the columns
        rec.drop()
        index.drop()
    del rec, index, sw, se, sx, sg, ru, fx, mg
    order, cpu_all, ts_all, scratch = _sort_order(blocks)
    kind, pid = _gather(blocks, "kind", order, scratch), _gather(blocks, "pid", order, scratch)
    at = _untraced_switch_ins(kind, pid, tree_arr, fork_r["child_pid"][in_tree(fork_r["parent_pid"])])
    untraced = len(at)
    if untraced:  # each added switch-in starts as a copy of the row it precedes (its ts, cpu, pid)
        order = np.insert(order, at, order[at])
        at = at + np.arange(untraced)
        kind, pid = _gather(blocks, "kind", order, scratch), _gather(blocks, "pid", order, scratch)
        kind[at] = Kind.SWITCH_IN
    events = {"ts": ts_all[order], "cpu": cpu_all[order], "kind": kind, "pid": pid}
    del ts_all, cpu_all
    for k in "abcd":
        events[k] = _gather(blocks, k, order, scratch)
    del scratch, blocks
    if untraced:
        events["a"][at] = -1
        for k in "bcd":
            events[k][at] = 0
    base = t0 if t0 else (int(events["ts"][0]) if len(events["ts"]) else 0)
    events["ts"] -= base
    # sysargs rows follow the sorted events; sys_enter rows point at them.
    rows_idx = np.nonzero((events["kind"] == Kind.SYS_ENTER) & (events["b"] >= 0))[0]
    src = events["b"][rows_idx]
    sysargs = {"event": rows_idx.astype(np.uint32)}
    for i in range(6):
        sysargs[f"arg{i}"] = sys_args[src, i].astype(np.uint64)
    events["b"][rows_idx] = np.arange(len(rows_idx))

    lost_total = sum(lost_main.values()) + sum(lost_mig.values())
    flagged = sum(max(n, 0) for _, n, _ in lost_pages)
    meta = dict(meta)
    meta["root"] = dict(meta["root"], pid=root)
    meta["tasks"] = dict(sorted(comms.items(), key=lambda kv: int(kv[0])))
    meta["exec_files"] = dict(sorted(exec_files.items(), key=lambda kv: int(kv[0])))
    meta["untraced"] = {"switch_in": untraced}
    meta["lost"] = {"total": max(lost_total, flagged), "per_cpu": {str(c): n for c, n in sorted(lost_main.items())},
                    "migration_instance": sum(lost_mig.values()), "flagged_pages": len(lost_pages)}
    trace = Trace(meta, events, sysargs)
    meta["events"] = trace.kind_counts()
    meta["events_recorded"] = [f"{s}:{e}" for s, e in formats]
    if meta["kernel"].get("hz") is None:
        meta["kernel"]["hz"], meta["kernel"]["hz_source"] = estimate_hz(events)
    rseq_lens = sorted({int(x) for x in sysargs["arg1"][_sysargs_nr(events, sysargs) == 334].tolist()})
    meta["glibc"]["observed_registration_lengths"] = rseq_lens
    meta["recorder"]["overhead"] = estimate_overhead(trace)
    return trace


#: The dtypes of build_trace's row columns (the trace's event columns, the per-CPU sequence and
#: the sub-order), each block's values cast to them as ``astype`` would.
_ROW_TYPES = {"ts": np.int64, "cpu": np.int16, "seq": np.int64, "sub": np.int8, "kind": np.uint8,
              "pid": np.int32, "a": np.int64, "b": np.int64, "c": np.int64, "d": np.int64}


def _fill(blocks: list[tuple[int, dict]], column: str, out: np.ndarray) -> np.ndarray:
    """``column`` of every block back to back into ``out`` (an array, a scalar or None: zeros)."""
    pos = 0
    for n, values in blocks:
        v = values[column]
        if v is None:
            out[pos : pos + n] = 0
        elif np.ndim(v) == 0:
            out[pos : pos + n] = v
        else:
            np.copyto(out[pos : pos + n], v, casting="unsafe")
        pos += n
    return out


def _column(blocks: list[tuple[int, dict]], column: str, scratch: np.ndarray | None = None) -> np.ndarray:
    n = sum(b[0] for b in blocks)
    dtype = np.dtype(_ROW_TYPES[column])
    out = np.empty(n, dtype) if scratch is None else scratch[: n * dtype.itemsize].view(dtype)
    return _fill(blocks, column, out)


def _gather(blocks: list[tuple[int, dict]], column: str, order: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``column`` in sorted order: the blocks copied into ``scratch`` (reused: no fresh memory per
    column) and gathered from there once."""
    return np.take(_column(blocks, column, scratch), order)


def _sort_order(blocks: list[tuple[int, dict]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows' order by (ts, cpu, seq, sub), the cpu and ts columns, and a scratch buffer of
    8 bytes per row. (cpu, seq, sub) are packed into one key when they fit (two sort passes
    instead of four, the same order)."""
    n = sum(b[0] for b in blocks)
    cpu = _column(blocks, "cpu")
    ts = _column(blocks, "ts")
    seq_max = max((int(np.max(v["seq"])) for k, v in blocks if k), default=0)
    if 0 <= seq_max < 1 << 46 and (not n or 0 <= int(cpu.min())):
        tie, pos = np.empty(n, np.int64), 0
        for k, v in blocks:
            part = tie[pos : pos + k]
            np.copyto(part, v["seq"], casting="unsafe")
            part <<= 2
            part |= np.int64(v["sub"])
            part |= cpu[pos : pos + k].astype(np.int64) << 48
            pos += k
        order = np.lexsort((tie, ts))
        return order, cpu, ts, tie.view(np.uint8)
    order = np.lexsort((_column(blocks, "sub"), _column(blocks, "seq"), cpu, ts))
    return order, cpu, ts, np.empty(n * 8, np.uint8)


def _add_untraced_switch_ins(events: dict[str, np.ndarray], tree: np.ndarray, children: np.ndarray
                             ) -> tuple[dict[str, np.ndarray], int]:
    """The sorted events with a SWITCH_IN (``a`` = -1: previous task unknown) before each event of a
    task that ran without one (see :func:`_untraced_switch_ins`). Returns the events and the number
    added."""
    at = _untraced_switch_ins(events["kind"], events["pid"], tree, children)
    if not len(at):
        return events, 0
    row = {"ts": events["ts"][at], "cpu": events["cpu"][at], "kind": np.full(len(at), Kind.SWITCH_IN, np.uint8),
           "pid": events["pid"][at], "a": np.full(len(at), -1, np.int64)}
    return {c: np.insert(v, at, row.get(c, 0)) for c, v in events.items()}, len(at)


def _untraced_switch_ins(kind: np.ndarray, pid: np.ndarray, tree: np.ndarray, children: np.ndarray,
                         *, compiled: bool | None = None) -> np.ndarray:
    """The rows (of events sorted by time) that need a SWITCH_IN before them: the task's last own
    event was a switch-out, or it is a child forked in the recording (``children``) whose first
    event is not its switch-in. Some kernels do not always emit sched_switch when a CPU leaves idle
    for a task (seen on a 6.18 guest kernel with cpuidle-haltpoll: most idle exits of one CPU left
    no record, system-wide and pid-filtered alike); the task was switched in all the same, and the
    replay needs that switch-in (mm_cid, the exit loop). Every task's pid is in ``tree`` (sorted).
    ``compiled`` False: the numpy version even where the compiled one is available (same rows)."""
    tree = np.asarray(tree, np.int64)
    if (parse._COMPILED if compiled is None else compiled) and len(tree):
        child = np.isin(tree, np.asarray(children, np.int64)).astype(np.uint8)
        mark = np.zeros(len(kind), np.uint8)
        if _untraced_walk(kind, pid, tree, child, mark, int(Kind.SWITCH_OUT), int(Kind.SWITCH_IN),
                          int(Kind.MIGRATE), int(Kind.LOST)):
            raise ValueError("an event's task is not in the process tree")
        return np.flatnonzero(mark)
    own = np.nonzero((kind != Kind.MIGRATE) & (kind != Kind.LOST))[0]  # events the task itself ran
    if not len(own):
        return own
    task = pid[own]
    if len(tree) < 1 << 16:  # a dense 16-bit task index sorts in linear time (radix)
        task = np.searchsorted(tree, task.astype(np.int64)).astype(np.uint16)
    by_task = own[np.argsort(task, kind="stable")]  # each task's events, in time order
    k, t = kind[by_task], pid[by_task]
    same = t[1:] == t[:-1]
    missed = np.zeros(len(by_task), bool)
    missed[1:] = same & (k[:-1] == Kind.SWITCH_OUT) & (k[1:] != Kind.SWITCH_IN)
    first = np.ones(len(by_task), bool)
    first[1:] = ~same
    missed |= first & np.isin(t, children) & (k != Kind.SWITCH_IN)
    return np.sort(by_task[missed])


def _untraced_walk(kind, pid, tree, child, mark, k_out, k_in, k_mig, k_lost):
    """One pass in time order with each task's state (compiled): ``mark`` the rows that need a
    switch-in; 1 if a task's pid is not in ``tree``."""
    out = child.copy()  # per task: switched out (a forked child starts so)
    for i in range(len(kind)):
        k = kind[i]
        if k == k_mig or k == k_lost:
            continue
        t = np.searchsorted(tree, pid[i])
        if t >= len(tree) or tree[t] != pid[i]:
            return 1
        if out[t] and k != k_in:
            mark[i] = 1
        out[t] = 1 if k == k_out else 0
    return 0


if parse._njit is not None:
    _untraced_walk = parse._njit(cache=True)(_untraced_walk)


def _sysargs_nr(events, sysargs) -> np.ndarray:
    return events["a"][sysargs["event"].astype(np.int64)] if len(sysargs["event"]) else np.zeros(0, np.int64)


def estimate_hz(events) -> tuple[int | None, str]:
    sel = (events["kind"] == Kind.IRQ) & (events["a"] == IrqKind.TIMER)
    best = []
    for cpu in np.unique(events["cpu"][sel]):
        ts = events["ts"][sel & (events["cpu"] == cpu)]
        if len(ts) > 10:
            best.append(np.diff(ts))
    if not best:
        return None, "unknown"
    d = np.concatenate(best)
    period = float(np.percentile(d, 10))
    return (int(round(1e9 / period / 50.0) * 50) if period > 0 else None), "timer interrupt spacing"


def estimate_overhead(trace: Trace) -> dict:
    """What tracing cost the workload: events x measured per-event costs, plus the reader."""
    counts = trace.kind_counts()
    syscalls = counts["sys_enter"]
    other = len(trace) - counts["sys_enter"] - counts["sys_exit"] - counts["migrate"]
    tracing_ns = syscalls * NS_PER_TRACED_SYSCALL + other * NS_PER_OTHER_EVENT
    rec = trace.meta.get("recorder", {})
    reader_s = float(rec.get("reader_cpu_s", 0.0))
    wall_s = trace.meta.get("duration_ns", 0) / 1e9
    cpu_s = float(rec.get("workload_cpu_s", 0.0))
    cost_s = tracing_ns / 1e9 + reader_s
    # The workload's CPU time includes the tracing cost: the untraced run needed less.
    base_cpu = max(cpu_s - tracing_ns / 1e9, 1e-9)
    return {"tracing_cpu_s": round(tracing_ns / 1e9, 4), "reader_cpu_s": round(reader_s, 4),
            "workload_cpu_s": round(cpu_s, 4), "wall_s": round(wall_s, 4),
            # Below 10 ms of the command's own CPU time a share is noise over nothing: no figure.
            "estimated_pct": round(100.0 * cost_s / base_cpu, 2) if base_cpu >= MIN_CPU_FOR_SHARE_S else None,
            "basis": f"{NS_PER_TRACED_SYSCALL} ns per traced syscall, {NS_PER_OTHER_EVENT} ns per other event, "
                     "plus the reader thread's CPU time, relative to the workload's CPU time"}


def summarize(trace: Trace, size: int = 0) -> dict:
    m = trace.meta
    return {"events": len(trace), "by_kind": m.get("events", {}), "lost": m.get("lost", {}),
            "untraced": m.get("untraced", {}), "tasks": len(m.get("tasks", {})), "duration_s": round(m.get("duration_ns", 0) / 1e9, 4),
            "overhead": m.get("recorder", {}).get("overhead", {}), "file_size": size,
            "exit_status": m.get("exit_status")}
