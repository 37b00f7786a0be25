"""``rseqlab record``: trace a command's whole process tree on the live kernel.

The recipe: a private tracefs instance with a pid
filter that follows forks (``options/event-fork``), binary
``per_cpu/cpuN/trace_pipe_raw`` pages read by a ``poll()`` thread while the
workload runs (``buffer_percent`` keeps the wake-ups rare), and a numpy parse
after the run. ``sched_migrate_task`` fires in the context of whoever moves
the task, so a second small instance records it system-wide and the rows are
filtered to the tree afterwards.

Nothing outside the private instances is touched, except mounting tracefs
when it is not mounted (and unmounting it again when the last rseqlab recorder
using it ends: concurrent recorders share the mount through a ``flock``-ed
registry, ``MOUNT_LOCK``). SIGINT, SIGTERM and SIGHUP are caught from before
the mount to after the unmount; during teardown they are only noted, so a
second signal cannot cut it short, and the reader thread blocks them. Every
exit path disables the events, clears the pid filter, closes the readers and
removes the instances; an interrupted recording is still saved, marked
``incomplete``. An instance is another recorder's while any file of it is open
(its ``rmdir`` fails with EBUSY), whatever PID namespace that recorder is in,
so stale-instance clean-up never touches a live one. The pid filter uses the
pid the kernel sees (learned from a ``trace_marker`` write of the child), so a
recorder inside a PID namespace (a container) records what it runs.

This module runs the command and holds the signal policy; the parts it ties together are
:mod:`.tracefs` (mount, instances, formats), :mod:`.spool` (the reader thread),
:mod:`.events` (what is recorded) and :mod:`.build` (records -> columnar trace).
"""

from __future__ import annotations

import errno
import os
import platform
import re
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BadInput, RseqlabError, Terminated
from ..live.rseq_area import glibc_version, read_rseq_area
from .build import build_trace, config_hz, summarize
from .events import MIGRATION_EVENT
from .format import Trace
from .spool import Reader
from .tracefs import (INSTANCE_PREFIX, TRACEFS, Instance, TracefsMount, event_formats, page_size_of, read_file,
                      remove_stale_instances, write_file)

MIGRATION_BUFFER_KB = 2048


@dataclass
class RecordResult:
    trace: Trace
    path: Path | None
    size: int = 0
    summary: dict = field(default_factory=dict)


# ======================================================================
# Signals: Ctrl-C and SIGTERM end the recording through the same clean-up
# ======================================================================
_CAUGHT = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class _Stop(KeyboardInterrupt):
    pass


class Interrupted(KeyboardInterrupt):
    """The recording was stopped by a signal; the message says where what was recorded was kept."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"


class _SignalGuard:
    """SIGINT, SIGTERM and SIGHUP for the whole recording, from before the mount to after it.

    Outside teardown the first one raises :class:`_Stop` in the main thread. Inside
    :meth:`deferred` (teardown) every one is only noted: a second Ctrl-C or SIGTERM cannot cut
    the clean-up short, and the handler never falls back to the default action, which would kill
    the process with the instances live."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = 0
        self._old: dict = {}

    def __enter__(self) -> _SignalGuard:
        self._old = {s: signal.signal(s, self._handle) for s in _CAUGHT}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if not self._deferring and first:
            raise _Stop(signal.Signals(signum).name)

    @contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""


# ======================================================================
# Recording
# ======================================================================
#: The largest ring buffer per CPU ``--buffer-mb`` accepts: the kernel allocates it up front for
#: every CPU, so far more than memory would fail (or invite the OOM killer) at start-up.
MAX_BUFFER_MB = 4096


def _available_mb() -> int | None:
    """``MemAvailable`` (free memory plus what the kernel can reclaim, page cache included): "free"
    alone is small on a machine whose page cache is full, e.g. after a build."""
    try:
        m = re.search(r"^MemAvailable:\s+(\d+) kB", read_file(Path("/proc/meminfo")), re.M)
    except OSError:
        return None
    return int(m.group(1)) // 1024 if m else None


def check_output(output: str | Path, option: str = "-o", what: str = "trace file") -> Path:
    """Refuse an output path that cannot be written, before anything runs (not after)."""
    from ..files import check_writable

    return check_writable(output, option, what)


def record(command: list[str], output: str | Path | None = None, *, buffer_mb: int = 32,
           tracefs: Path = TRACEFS, stdout_to_stderr: bool = False) -> RecordResult:
    """Run ``command`` under the recorder and return (and optionally save) its trace.

    ``stdout_to_stderr`` sends the command's output to stderr (when our stdout carries JSON).
    Interrupted by SIGINT, SIGTERM or SIGHUP, it stops the command's whole tree, saves what was
    recorded (``meta["incomplete"]``) and raises :class:`Interrupted` (SIGINT) or
    :class:`~rseqlab.errors.Terminated` (SIGTERM, SIGHUP).
    """
    from .format import save

    if not command:
        raise BadInput("missing COMMAND (usage: rseqlab record [-o FILE] -- COMMAND [ARGS...])")
    if not 1 <= buffer_mb <= MAX_BUFFER_MB:
        raise BadInput(f"--buffer-mb must be in 1..{MAX_BUFFER_MB} (got {buffer_mb})")
    cpus = os.cpu_count() or 1
    available_mb = _available_mb()
    if available_mb is not None and buffer_mb * cpus > available_mb // 2:
        raise BadInput(f"--buffer-mb {buffer_mb}: {buffer_mb * cpus:,} MiB for {cpus} CPUs is more than half "
                       f"of the available memory ({available_mb:,} MiB)")
    exe = shutil.which(command[0])
    if exe is None:
        raise BadInput(f"command not found: {command[0]}")
    path = check_output(output) if output is not None else None
    with _SignalGuard() as guard:
        mount = TracefsMount(tracefs)
        try:
            mount.acquire()
            trace = _record(command, exe, buffer_mb, tracefs, stdout_to_stderr, guard)
        except _Stop:
            trace = None
        finally:
            with guard.deferred():
                mount.release()
        if guard.received is not None:
            with guard.deferred():
                kept = ""
                if trace is not None and path is not None:
                    save(trace, path)
                    kept = f"; kept what was recorded in {path} (marked incomplete)"
            message = f"interrupted by {guard.name}{kept}"
            if guard.received == signal.SIGINT:
                raise Interrupted(message)
            raise Terminated(guard.received, message)  # the CLI's SIGTERM/SIGHUP policy: 128 + signo
    result = RecordResult(trace, path)
    if path is not None:
        try:
            result.size = save(trace, path)
        except OSError as exc:
            raise BadInput(f"-o {path}: cannot write: {exc.strerror or exc}") from None
    result.summary = summarize(trace, result.size)
    return result


def _record(command: list[str], exe: str, buffer_mb: int, tracefs: Path, stdout_to_stderr: bool,
            guard: _SignalGuard) -> Trace | None:
    """The recording itself. Interrupted after the child started, it returns what was recorded
    (``meta["incomplete"]``); before that, it returns None. ``guard.received`` tells which."""
    cpus = os.cpu_count() or 1
    token = f"{os.getpid()}-{os.urandom(3).hex()}"  # unique across PID namespaces
    main = Instance(tracefs, f"{INSTANCE_PREFIX}{token}")
    mig = Instance(tracefs, f"{INSTANCE_PREFIX}{token}-mig")
    child = None
    reader: Reader | None = None
    spool: Path | None = None
    start_wall = datetime.now(timezone.utc)
    t_start = t_end = 0
    status = None
    root_pid = 0
    started = False
    usage0 = os.times()
    prev_subreaper = _set_child_subreaper(True)
    try:
        try:
            remove_stale_instances(tracefs)
            formats = event_formats(tracefs)
            page_size = page_size_of(tracefs)
            area = read_rseq_area() if platform.machine() == "x86_64" else None
            # Named by pid: a test (or a person) can tell whose spool it is; removed on every path.
            spool = Path(tempfile.mkdtemp(prefix=f"rseqlab-spool-{os.getpid()}-"))
            for inst, kb in ((main, buffer_mb * 1024), (mig, MIGRATION_BUFFER_KB)):
                inst.create()
                inst.set("trace_clock", "mono")
                inst.set("buffer_size_kb", str(kb))
                inst.set("buffer_percent", "50")
                inst.set("options/overwrite", "0")
            main.set("options/event-fork", "1")
            # On before the fork: the child's marker (no event is enabled yet) must not be dropped.
            main.set("tracing_on", "1")
            gate_r, gate_w = os.pipe()
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            # Held off across fork(): a signal whose handler raises inside Python's after-fork hooks
            # (logging's lock release) is printed as "Exception ignored" with a traceback and
            # lost. Held, it is taken right after fork() returns, where _Stop is handled.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CAUGHT)
            child = os.fork()
            if child == 0:  # pragma: no cover - runs in the child, replaced by exec
                _child(gate_r, gate_w, err_r, err_w, exe, command, stdout_to_stderr, main.path / "trace_marker",
                       token)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(gate_r)
            os.close(err_w)
            root_pid = _kernel_pid_of_child(main, token, child)
            main.set("set_event_pid", str(root_pid))
            for (system, event) in formats:
                if (system, event) != MIGRATION_EVENT:
                    main.enable(system, event)
            mig.enable(*MIGRATION_EVENT)
            main.open_readers(cpus)
            mig.open_readers(cpus)
            sources = {("main", c): fd for c, fd in main.fds.items()}
            sources.update({("mig", c): fd for c, fd in mig.fds.items()})
            reader = Reader(sources, spool, page_size, _CAUGHT)
            reader.start()
            mig.set("tracing_on", "1")
            main.set("tracing_on", "1")
            t_start = time.monotonic_ns()
            started = True
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
            t_end = t_end or time.monotonic_ns()
            with guard.deferred():
                if child:
                    _stop_tree(child)
                    child = None
            if not started:
                return None
        finally:
            with guard.deferred():
                if child:  # an error while the command ran: it must not outlive the recorder
                    _stop_tree(child)
                for inst in (main, mig):
                    try:
                        write_file(inst.path / "tracing_on", "0")
                    except OSError:
                        pass
                if reader is not None and reader.is_alive():
                    reader.stop_and_drain()
                lost_main, lost_mig = main.lost(cpus), mig.lost(cpus)
                main.remove()
                mig.remove()
        if reader is not None and reader.error is not None:
            raise RseqlabError(f"reading the trace buffers failed: {reader.error}")
        usage1 = os.times()
        raw_main = {c: (spool / f"main-cpu{c}.raw").read_bytes() for c in range(cpus)}
        raw_mig = {c: (spool / f"mig-cpu{c}.raw").read_bytes() for c in range(cpus)}
    finally:
        with guard.deferred():
            _set_child_subreaper(prev_subreaper)
            if spool is not None:
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
    if guard.received is not None:
        meta["incomplete"] = {"reason": f"interrupted by {guard.name}",
                              "note": "the command was stopped; counts cover only the recorded part"}
    return build_trace(raw_main, raw_mig, formats, page_size, meta, lost_main, lost_mig, t_start)


def _kernel_pid_of_child(inst: Instance, token: str, child: int, timeout_s: float = 10.0) -> int:
    """The child's pid as the kernel (and so the pid filter) knows it.

    Inside a PID namespace ``fork()`` returns the namespace's number, which ``set_event_pid``
    never matches; the child writes a marker to the instance's ``trace_marker`` before it waits
    at the gate, and the instance's text buffer shows the writer's kernel pid. Tracing is
    off for every event there (tracing was switched on before the fork only for it), so the buffer
    holds the marker alone; tracing goes off and the buffer is cleared before any event is enabled."""
    pattern = re.compile(rf"-(\d+)\s+\[\d+\]\s.*tracing_mark_write: rseqlab-child {re.escape(token)}$", re.M)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            m = pattern.search(read_file(inst.path / "trace"))
            if m:
                return int(m.group(1))
            done, _ = os.waitpid(child, os.WNOHANG)
            if done or time.monotonic() > deadline:
                raise RseqlabError("the recorded command did not start (no marker from the child)")
            time.sleep(0.002)
    finally:
        write_file(inst.path / "tracing_on", "0")
        write_file(inst.path / "trace", "")


def _set_child_subreaper(on: bool) -> bool:
    """``PR_SET_CHILD_SUBREAPER``: orphaned descendants of the command become our children, so
    Ctrl-C can stop the whole tree (a daemonised grandchild included). Returns the old setting."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    old = ctypes.c_int(0)
    libc.prctl(37, ctypes.byref(old), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    libc.prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    return bool(old.value)


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc, in our PID namespace)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = read_file(Path("/proc") / entry / "stat")
        except OSError:
            continue
        ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _stop_tree(child: int) -> None:
    """Stop the command and everything it started: SIGINT, then SIGKILL for what lingers; reap."""
    me = os.getpid()
    for sig, wait_s in ((signal.SIGINT, 2.0), (signal.SIGKILL, 5.0)):
        for pid in _descendants(me):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap()
            if not _descendants(me):
                return
            time.sleep(0.02)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(gate_r, gate_w, err_r, err_w, exe, command, stdout_to_stderr, marker, token):  # pragma: no cover
    try:
        if stdout_to_stderr:
            os.dup2(2, 1)
        os.close(gate_w)
        os.close(err_r)
        for s in _CAUGHT:
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        fd = os.open(marker, os.O_WRONLY)
        os.write(fd, f"rseqlab-child {token}\n".encode())
        os.close(fd)
        os.read(gate_r, 2)
        os.close(gate_r)
        os.execv(exe, command)
    except OSError as exc:
        os.write(err_w, str(exc.errno or errno.ENOEXEC).encode())
    finally:
        os._exit(127)


def _exit_code(status) -> int | None:
    if status is None:
        return None
    return os.waitstatus_to_exitcode(status)


def _kernel_info() -> dict:
    u = platform.uname()
    hz, source = config_hz(u.release)
    return {"release": u.release, "version": u.version, "machine": u.machine, "hz": hz, "hz_source": source}



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
