"""``rseqlab record``: trace a command's whole process tree on the live kernel.

The recipe (``capture-options.md``): a private tracefs instance with a pid
filter that follows forks (``options/event-fork``), binary
``per_cpu/cpuN/trace_pipe_raw`` pages read by a ``poll()`` thread while the
workload runs (``buffer_percent`` keeps the wake-ups rare), and a numpy parse
after the run. ``sched_migrate_task`` fires in the context of whoever moves
the task, so a second small instance records it system-wide and the rows are
filtered to the tree afterwards.

Nothing outside the two private instances is touched, except mounting
tracefs when it is not mounted (and unmounting it again afterwards). Every
exit path (success, error, Ctrl-C, SIGTERM) disables the events, clears the
pid filter, closes the readers and removes the instances.
"""

from __future__ import annotations

import errno
import gzip
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import BadInput, RseqlabError, Unavailable
from ..live.rseq_area import glibc_version, read_rseq_area
from . import parse
from .format import EVENT_COLUMNS, SYSARGS_FOR, IrqKind, Kind, Trace

TRACEFS = Path("/sys/kernel/tracing")
INSTANCE_PREFIX = "rseqlab-"

#: Events of the main (pid-filtered) instance. ``required`` ones must exist.
EVENTS = {
    ("sched", "sched_switch"): True,
    ("sched", "sched_process_fork"): True,
    ("sched", "sched_process_exec"): True,
    ("sched", "sched_process_exit"): True,
    ("task", "task_newtask"): False,
    ("raw_syscalls", "sys_enter"): True,
    ("raw_syscalls", "sys_exit"): True,
    ("signal", "signal_deliver"): True,
    ("rseq", "rseq_update"): True,
    ("rseq", "rseq_ip_fixup"): True,
    ("irq_vectors", "local_timer_entry"): False,
    ("irq_vectors", "reschedule_entry"): False,
    ("irq_vectors", "call_function_entry"): False,
    ("irq_vectors", "call_function_single_entry"): False,
    ("irq_vectors", "irq_work_entry"): False,
    ("irq", "irq_handler_entry"): False,
}
MIGRATION_EVENT = ("sched", "sched_migrate_task")
_IRQ_EVENTS = ((("irq_vectors", "local_timer_entry"), IrqKind.TIMER),
               (("irq_vectors", "reschedule_entry"), IrqKind.RESCHEDULE),
               (("irq_vectors", "call_function_entry"), IrqKind.CALL_FUNCTION),
               (("irq_vectors", "call_function_single_entry"), IrqKind.CALL_FUNCTION_SINGLE),
               (("irq_vectors", "irq_work_entry"), IrqKind.IRQ_WORK),
               (("irq", "irq_handler_entry"), IrqKind.DEVICE))

#: Cost estimates behind the printed overhead (capture-options.md, measured on the
#: project's machines): a traced syscall pays ~0.8 us for sys_enter + sys_exit,
#: any other recorded event ~0.3 us.
NS_PER_TRACED_SYSCALL = 800
NS_PER_OTHER_EVENT = 300
MIGRATION_BUFFER_KB = 2048


@dataclass
class RecordResult:
    trace: Trace
    path: Path | None
    size: int = 0
    summary: dict = field(default_factory=dict)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


# ======================================================================
# tracefs: mounting, instances, clean-up
# ======================================================================
def check_environment(tracefs: Path = TRACEFS) -> bool:
    """Root and a usable tracefs with rseq tracepoints; returns True if we mounted it."""
    if os.geteuid() != 0:
        raise Unavailable("recording needs root (tracefs and pid filters); run rseqlab as root")
    mounted = False
    if not (tracefs / "instances").is_dir():
        res = subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracefs)],
                             capture_output=True, text=True)
        if res.returncode != 0 or not (tracefs / "instances").is_dir():
            why = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no tracefs"]
            raise Unavailable(f"tracefs is not mounted at {tracefs} and mounting it failed: {why[0]}")
        mounted = True
    if not (tracefs / "events" / "rseq" / "rseq_update").is_dir():
        if mounted:
            unmount(tracefs)
        raise Unavailable("this kernel has no rseq:rseq_update tracepoint (needs CONFIG_RSEQ and tracepoints)")
    return mounted


def unmount(tracefs: Path) -> None:
    subprocess.run(["umount", str(tracefs)], capture_output=True)


def remove_stale_instances(tracefs: Path = TRACEFS) -> list[str]:
    """Remove ``instances/rseqlab-<pid>*`` left by a recorder that no longer exists."""
    removed = []
    inst = tracefs / "instances"
    for d in sorted(inst.glob(INSTANCE_PREFIX + "*")):
        m = re.match(rf"{INSTANCE_PREFIX}(\d+)", d.name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # still alive: not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _teardown_instance(d)
        removed.append(d.name)
    return removed


def _teardown_instance(d: Path) -> None:
    for path, value in ((d / "tracing_on", "0"), (d / "set_event", ""), (d / "set_event_pid", "")):
        try:
            _write(path, value)
        except OSError:
            pass
    for _ in range(50):
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.02)


class Instance:
    """A private tracefs instance: created on entry, always removed."""

    def __init__(self, tracefs: Path, name: str) -> None:
        self.path = tracefs / "instances" / name
        self.fds: dict[int, int] = {}

    def create(self) -> None:
        os.mkdir(self.path)
        _write(self.path / "tracing_on", "0")

    def set(self, rel: str, value: str) -> None:
        _write(self.path / rel, value)

    def enable(self, system: str, event: str) -> None:
        _write(self.path / "events" / system / event / "enable", "1")

    def open_readers(self, cpus: int) -> None:
        for cpu in range(cpus):
            self.fds[cpu] = os.open(self.path / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw",
                                    os.O_RDONLY | os.O_NONBLOCK)

    def lost(self, cpus: int) -> dict[int, int]:
        out = {}
        for cpu in range(cpus):
            try:
                text = _read(self.path / "per_cpu" / f"cpu{cpu}" / "stats")
            except OSError:
                continue
            total = 0
            for key in ("overrun", "commit overrun", "dropped events"):
                m = re.search(rf"^{key}: (\d+)", text, re.M)
                total += int(m.group(1)) if m else 0
            out[cpu] = total
        return out

    def close_readers(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    def remove(self) -> None:
        self.close_readers()
        if self.path.exists():
            _teardown_instance(self.path)


class Reader(threading.Thread):
    """Polls every ``trace_pipe_raw`` and appends the raw pages to one spool file per CPU."""

    def __init__(self, sources: dict[tuple[str, int], int], spool: Path, page_size: int) -> None:
        super().__init__(name="rseqlab-reader", daemon=True)
        self.sources = sources
        self.page_size = page_size
        self.files = {key: open(spool / f"{key[0]}-cpu{key[1]}.raw", "wb") for key in sources}
        self.stop_r, self.stop_w = os.pipe()
        self.cpu_time = 0.0
        self.error: BaseException | None = None
        self.pages = 0

    def run(self) -> None:
        t0 = time.thread_time()
        try:
            poller = select.poll()
            by_fd = {}
            for key, fd in self.sources.items():
                poller.register(fd, select.POLLIN)
                by_fd[fd] = key
            poller.register(self.stop_r, select.POLLIN)
            while True:
                ready = poller.poll()
                stop = False
                for fd, _ in ready:
                    if fd == self.stop_r:
                        stop = True
                    else:
                        self._drain(by_fd[fd], fd)
                if stop:
                    break
        except BaseException as exc:  # reported by the recorder
            self.error = exc
        finally:
            self.cpu_time = time.thread_time() - t0

    def _drain(self, key, fd: int) -> None:
        out = self.files[key]
        while True:
            try:
                data = os.read(fd, self.page_size)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return
                raise
            if not data:
                return
            out.write(data)
            self.pages += 1

    def stop_and_drain(self) -> None:
        os.write(self.stop_w, b"x")
        self.join()
        # Tracing is off: what remains (partial pages included) is read without waiting.
        for key, fd in self.sources.items():
            self._drain(key, fd)
        for f in self.files.values():
            f.close()
        os.close(self.stop_r)
        os.close(self.stop_w)


# ======================================================================
# Signals: Ctrl-C and SIGTERM end the recording through the same clean-up
# ======================================================================
class _Stop(KeyboardInterrupt):
    pass


@contextmanager
def _interruptible():
    def handler(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _signals_blocked():
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ======================================================================
# Recording
# ======================================================================
def record(command: list[str], output: str | Path | None = None, *, buffer_mb: int = 32,
           tracefs: Path = TRACEFS, stdout_to_stderr: bool = False) -> RecordResult:
    """Run ``command`` under the recorder and return (and optionally save) its trace.

    ``stdout_to_stderr`` sends the command's output to stderr (when our stdout carries JSON).
    """
    from .format import save

    if not command:
        raise BadInput("missing COMMAND (usage: rseqlab record [-o FILE] -- COMMAND [ARGS...])")
    if buffer_mb < 1:
        raise BadInput(f"--buffer-mb must be at least 1 (got {buffer_mb})")
    exe = shutil.which(command[0])
    if exe is None:
        raise BadInput(f"command not found: {command[0]}")
    mounted = check_environment(tracefs)
    try:
        trace = _record(command, exe, buffer_mb, tracefs, stdout_to_stderr)
    finally:
        if mounted:
            unmount(tracefs)
    result = RecordResult(trace, Path(output) if output else None)
    if output:
        result.size = save(trace, output)
    result.summary = summarize(trace, result.size)
    return result


def _record(command: list[str], exe: str, buffer_mb: int, tracefs: Path, stdout_to_stderr: bool) -> Trace:
    remove_stale_instances(tracefs)
    cpus = os.cpu_count() or 1
    me = os.getpid()
    main = Instance(tracefs, f"{INSTANCE_PREFIX}{me}")
    mig = Instance(tracefs, f"{INSTANCE_PREFIX}{me}-mig")
    formats = _formats(tracefs)
    page_size = _page_size(tracefs)
    spool = Path(tempfile.mkdtemp(prefix="rseqlab-spool-"))
    child = None
    reader: Reader | None = None
    area = read_rseq_area() if platform.machine() == "x86_64" else None
    start_wall = datetime.now(timezone.utc)
    t_start = t_end = 0
    status = None
    root_pid = 0
    usage0 = os.times()
    try:
        with _interruptible():
            for inst, kb in ((main, buffer_mb * 1024), (mig, MIGRATION_BUFFER_KB)):
                inst.create()
                inst.set("trace_clock", "mono")
                inst.set("buffer_size_kb", str(kb))
                inst.set("buffer_percent", "50")
                inst.set("options/overwrite", "0")
            main.set("options/event-fork", "1")
            gate_r, gate_w = os.pipe()
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            child = root_pid = os.fork()
            if child == 0:  # pragma: no cover - runs in the child, replaced by exec
                _child(gate_r, gate_w, err_r, err_w, exe, command, stdout_to_stderr)
            os.close(gate_r)
            os.close(err_w)
            main.set("set_event_pid", str(child))
            for (system, event) in formats:
                if (system, event) != MIGRATION_EVENT:
                    main.enable(system, event)
            mig.enable(*MIGRATION_EVENT)
            main.open_readers(cpus)
            mig.open_readers(cpus)
            sources = {("main", c): fd for c, fd in main.fds.items()}
            sources.update({("mig", c): fd for c, fd in mig.fds.items()})
            reader = Reader(sources, spool, page_size)
            reader.start()
            mig.set("tracing_on", "1")
            main.set("tracing_on", "1")
            t_start = time.monotonic_ns()
            os.write(gate_w, b"go")
            os.close(gate_w)
            failure = os.read(err_r, 64)
            os.close(err_r)
            _, status = os.waitpid(child, 0)
            t_end = time.monotonic_ns()
            child = None
            main.set("tracing_on", "0")
            mig.set("tracing_on", "0")
            if failure:
                raise BadInput(f"cannot run {command[0]}: {os.strerror(int(failure))}")
    except _Stop:
        with _signals_blocked():
            if child:
                _kill_child(child)
        raise KeyboardInterrupt from None
    finally:
        with _signals_blocked():
            for inst in (main, mig):
                try:
                    _write(inst.path / "tracing_on", "0")
                except OSError:
                    pass
            if reader is not None and reader.is_alive():
                reader.stop_and_drain()
            lost_main, lost_mig = main.lost(cpus), mig.lost(cpus)
            main.remove()
            mig.remove()
    if reader is not None and reader.error is not None:
        shutil.rmtree(spool, ignore_errors=True)
        raise RseqlabError(f"reading the trace buffers failed: {reader.error}")
    usage1 = os.times()
    try:
        raw_main = {c: (spool / f"main-cpu{c}.raw").read_bytes() for c in range(cpus)}
        raw_mig = {c: (spool / f"mig-cpu{c}.raw").read_bytes() for c in range(cpus)}
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    meta = {
        "format": "rseqlab-trace",
        "command": list(command),
        "cwd": os.getcwd(),
        "start": {"utc": start_wall.isoformat(timespec="seconds"), "mono_ns": t_start},
        "duration_ns": t_end - t_start,
        "exit_status": _exit_code(status),
        "kernel": _kernel_info(),
        "cpus": cpus,
        "topology": {"node_of_cpu": _node_of_cpu(cpus)},
        "glibc": _glibc_info(area),
        "root": {"pid": root_pid, "rseq_registered": bool(area and area.registered),
                 "rseq_addr": area.address if area else 0, "rseq_len": 32 if area and area.registered else 0},
        "buffer_kb_per_cpu": buffer_mb * 1024,
        "page_size": page_size,
        "recorder": {"reader_cpu_s": round(reader.cpu_time, 4) if reader else 0.0,
                     "pages": reader.pages if reader else 0,
                     "workload_cpu_s": round((usage1.children_user - usage0.children_user)
                                             + (usage1.children_system - usage0.children_system), 4)},
    }
    return build_trace(raw_main, raw_mig, formats, page_size, meta, lost_main, lost_mig, t_start)


def _child(gate_r, gate_w, err_r, err_w, exe, command, stdout_to_stderr):  # pragma: no cover - child side
    try:
        if stdout_to_stderr:
            os.dup2(2, 1)
        os.close(gate_w)
        os.close(err_r)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        os.read(gate_r, 2)
        os.close(gate_r)
        os.execv(exe, command)
    except OSError as exc:
        os.write(err_w, str(exc.errno or errno.ENOEXEC).encode())
    finally:
        os._exit(127)


def _kill_child(pid: int) -> None:
    """Stop the workload after Ctrl-C: SIGINT, then SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGINT, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.02)


def _exit_code(status) -> int | None:
    if status is None:
        return None
    return os.waitstatus_to_exitcode(status)


def _formats(tracefs: Path) -> dict[tuple[str, str], parse.EventFormat]:
    out = {}
    for (system, event), required in [*EVENTS.items(), (MIGRATION_EVENT, True)]:
        path = tracefs / "events" / system / event / "format"
        try:
            out[(system, event)] = parse.parse_format(system, _read(path))
        except OSError:
            if required:
                raise Unavailable(f"this kernel has no {system}:{event} tracepoint") from None
    return out


def _page_size(tracefs: Path) -> int:
    text = _read(tracefs / "events" / "header_page")
    m = re.search(r"field: char data;\s*offset:(\d+);\s*size:(\d+);", text)
    return int(m.group(1)) + int(m.group(2)) if m else 4096


def _kernel_info() -> dict:
    u = platform.uname()
    hz, source = _config_hz(u.release)
    return {"release": u.release, "version": u.version, "machine": u.machine, "hz": hz, "hz_source": source}


def _config_hz(release: str) -> tuple[int | None, str]:
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


def _node_of_cpu(cpus: int) -> list[int]:
    nodes = [0] * cpus
    for node_dir in Path("/sys/devices/system/node").glob("node[0-9]*"):
        n = int(node_dir.name[4:])
        for cpu_link in node_dir.glob("cpu[0-9]*"):
            c = int(cpu_link.name[3:])
            if c < cpus:
                nodes[c] = n
    return nodes


def _glibc_info(area) -> dict:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return {"version": glibc_version(),
            "rseq_size": area.rseq_size if area else 0,
            "rseq_offset": area.rseq_offset if area else 0,
            "rseq_tunable_off": "glibc.pthread.rseq=0" in tunables,
            "registered_size": 32 if area and area.registered else 0}


# ======================================================================
# From raw pages to the columnar trace
# ======================================================================
def build_trace(raw_main: dict[int, bytes], raw_mig: dict[int, bytes],
                formats: dict[tuple[str, str], parse.EventFormat], page_size: int, meta: dict,
                lost_main: dict[int, int], lost_mig: dict[int, int], t0: int) -> Trace:
    rec = parse.walk_pages(raw_main, page_size)
    rec_mig = parse.walk_pages(raw_mig, page_size)
    ctype = parse.common_types(rec)
    rows: list[dict[str, np.ndarray]] = []

    def get(key, raw=rec, ct=ctype):
        fmt = formats.get(key)
        if fmt is None:
            return None
        return parse.records_of(raw, fmt, ct)

    def add(kind, ts, cpu, seq, pid, a=None, b=None, c=None, d=None, sub=0):
        n = len(ts)
        z = np.zeros(n, np.int64)
        rows.append({"ts": ts.astype(np.int64), "cpu": cpu.astype(np.int16), "seq": seq.astype(np.int64),
                     "sub": np.full(n, sub, np.int8), "kind": np.full(n, kind, np.uint8),
                     "pid": pid.astype(np.int32),
                     "a": z if a is None else a.astype(np.int64), "b": z if b is None else b.astype(np.int64),
                     "c": z if c is None else c.astype(np.int64), "d": z if d is None else d.astype(np.int64)})

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
    ex, ex_ts, ex_cpu, ex_seq = get(("sched", "sched_process_exit"))
    sel = in_tree(ex["pid"])
    add(Kind.EXIT, ex_ts[sel], ex_cpu[sel], ex_seq[sel], ex["pid"][sel], ex["group_dead"][sel].astype(np.int64))

    se, se_ts, se_cpu, se_seq = get(("raw_syscalls", "sys_enter"))
    sel = in_tree(se["common_pid"])
    se, se_ts, se_cpu, se_seq = se[sel], se_ts[sel], se_cpu[sel], se_seq[sel]
    want = np.isin(se["id"], np.array(sorted(SYSARGS_FOR), dtype=np.int64))
    arg_index = np.full(len(se), -1, np.int64)
    arg_index[want] = np.arange(int(want.sum()))
    add(Kind.SYS_ENTER, se_ts, se_cpu, se_seq, se["common_pid"], se["id"], arg_index)
    sys_args = se["args"][want].copy().view("<u8").reshape(-1, 6) if want.any() else np.zeros((0, 6), np.uint64)
    sx, sx_ts, sx_cpu, sx_seq = get(("raw_syscalls", "sys_exit"))
    sel = in_tree(sx["common_pid"])
    add(Kind.SYS_EXIT, sx_ts[sel], sx_cpu[sel], sx_seq[sel], sx["common_pid"][sel], sx["id"][sel], sx["ret"][sel])

    sg, sg_ts, sg_cpu, sg_seq = get(("signal", "signal_deliver"))
    sel = in_tree(sg["common_pid"])
    add(Kind.SIGNAL, sg_ts[sel], sg_cpu[sel], sg_seq[sel], sg["common_pid"][sel], sg["sig"][sel],
        sg["sa_handler"][sel].astype(np.int64), sg["code"][sel])
    ru, ru_ts, ru_cpu, ru_seq = get(("rseq", "rseq_update"))
    sel = in_tree(ru["common_pid"])
    add(Kind.RSEQ_UPDATE, ru_ts[sel], ru_cpu[sel], ru_seq[sel], ru["common_pid"][sel], ru["cpu_id"][sel],
        ru["node_id"][sel], ru["mm_cid"][sel])
    fx, fx_ts, fx_cpu, fx_seq = get(("rseq", "rseq_ip_fixup"))
    sel = in_tree(fx["common_pid"])
    add(Kind.RSEQ_IP_FIXUP, fx_ts[sel], fx_cpu[sel], fx_seq[sel], fx["common_pid"][sel],
        fx["regs_ip"][sel].astype(np.int64), fx["start_ip"][sel].astype(np.int64),
        fx["post_commit_offset"][sel].astype(np.int64), fx["abort_ip"][sel].astype(np.int64))
    for (system, event), kind in _IRQ_EVENTS:
        r = get((system, event))
        if r is None:
            continue
        sel = in_tree(r[0]["common_pid"])
        add(Kind.IRQ, r[1][sel], r[2][sel], r[3][sel], r[0]["common_pid"][sel], np.full(int(sel.sum()), int(kind)))

    # Migrations from the system-wide instance, filtered to the tree.
    mg = parse.records_of(rec_mig, formats[MIGRATION_EVENT])
    sel = in_tree(mg[0]["pid"])
    add(Kind.MIGRATE, mg[1][sel], mg[2][sel], mg[3][sel] + len(rec.offset), mg[0]["pid"][sel],
        mg[0]["orig_cpu"][sel], mg[0]["dest_cpu"][sel], sub=2)

    lost_pages = rec.lost_pages + rec_mig.lost_pages
    if lost_pages:
        lp = np.array([(c, n, ts) for c, n, ts in lost_pages], dtype=np.int64)
        add(Kind.LOST, lp[:, 2], lp[:, 0], np.zeros(len(lp), np.int64), np.full(len(lp), -1), lp[:, 1])

    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    order = np.lexsort((cols["sub"], cols["seq"], cols["cpu"], cols["ts"]))
    events = {k: cols[k][order] for k in EVENT_COLUMNS}
    base = t0 if t0 else (int(events["ts"][0]) if len(events["ts"]) else 0)
    events["ts"] = events["ts"] - base
    # sysargs rows follow the sorted events; sys_enter rows point at them.
    rows_idx = np.nonzero((events["kind"] == Kind.SYS_ENTER) & (events["b"] >= 0))[0]
    src = events["b"][rows_idx]
    sysargs = {"event": rows_idx.astype(np.uint32)}
    for i in range(6):
        sysargs[f"arg{i}"] = sys_args[src, i].astype(np.uint64)
    events["b"][rows_idx] = np.arange(len(rows_idx))

    comms = {}  # the last name each task ran under (after its exec)
    by_time = np.argsort(sw_ts, kind="stable")
    m = in_tree(sw["prev_pid"][by_time])
    for pid, name in zip(sw["prev_pid"][by_time][m].tolist(), parse.cstr(sw["prev_comm"][by_time][m])):
        comms[str(pid)] = name
    lost_total = sum(lost_main.values()) + sum(lost_mig.values())
    flagged = sum(max(n, 0) for _, n, _ in lost_pages)
    meta = dict(meta)
    meta["root"] = dict(meta["root"], pid=root)
    meta["tasks"] = dict(sorted(comms.items(), key=lambda kv: int(kv[0])))
    meta["lost"] = {"total": max(lost_total, flagged), "per_cpu": {str(c): n for c, n in sorted(lost_main.items())},
                    "migration_instance": sum(lost_mig.values()), "flagged_pages": len(lost_pages)}
    trace = Trace(meta, events, sysargs)
    meta["events"] = trace.kind_counts()
    meta["events_recorded"] = [f"{s}:{e}" for s, e in formats]
    if meta["kernel"].get("hz") is None:
        meta["kernel"]["hz"], meta["kernel"]["hz_source"] = _estimate_hz(events)
    rseq_lens = sorted({int(x) for x in sysargs["arg1"][_sysargs_nr(events, sysargs) == 334].tolist()})
    meta["glibc"]["observed_registration_lengths"] = rseq_lens
    meta["recorder"]["overhead"] = estimate_overhead(trace)
    return trace


def _sysargs_nr(events, sysargs) -> np.ndarray:
    return events["a"][sysargs["event"].astype(np.int64)] if len(sysargs["event"]) else np.zeros(0, np.int64)


def _estimate_hz(events) -> tuple[int | None, str]:
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
            "estimated_pct": round(100.0 * cost_s / base_cpu, 2),
            "basis": f"{NS_PER_TRACED_SYSCALL} ns per traced syscall, {NS_PER_OTHER_EVENT} ns per other event, "
                     "plus the reader thread's CPU time, relative to the workload's CPU time"}


def summarize(trace: Trace, size: int = 0) -> dict:
    m = trace.meta
    return {"events": len(trace), "by_kind": m.get("events", {}), "lost": m.get("lost", {}),
            "tasks": len(m.get("tasks", {})), "duration_s": round(m.get("duration_ns", 0) / 1e9, 4),
            "overhead": m.get("recorder", {}).get("overhead", {}), "file_size": size,
            "exit_status": m.get("exit_status")}
