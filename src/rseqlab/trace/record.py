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
"""

from __future__ import annotations

import errno
import fcntl
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

from ..errors import BadInput, RseqlabError, Terminated, Unavailable
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
    ("exceptions", "page_fault_user"): False,
    # Present only where user context tracking is on (see Kind.USER_ENTER): exact returns.
    ("context_tracking", "user_enter"): False,
    ("context_tracking", "user_exit"): False,
}
#: Events most kernels do not have (context tracking is off unless forced or nohz_full): left out
#: of the printed trace-cmd/perf command lines, which fail on an event the kernel lacks.
WHERE_CONFIGURED = (("context_tracking", "user_enter"), ("context_tracking", "user_exit"))
MIGRATION_EVENT = ("sched", "sched_migrate_task")


def recorded_events() -> list[tuple[str, str]]:
    """Every event a recording should hold (this recorder's table), in the table's order."""
    return [*EVENTS, MIGRATION_EVENT]


def required_events() -> list[tuple[str, str]]:
    """The events without which a recording cannot be replayed."""
    return [key for key, required in EVENTS.items() if required] + [MIGRATION_EVENT]


#: ``record --print-command TOOL``: how another recorder records what this one does. Both trace
#: every CPU while COMMAND runs (migrations fire in the mover's context, so a pid filter would
#: drop some); ``mono`` is this recorder's trace clock.
TOOL_COMMANDS = {
    "trace-cmd": ("trace-cmd record -C mono -b {buffer_kb}", " -- COMMAND"),
    "perf": ("perf record -a -k CLOCK_MONOTONIC -m 1024", " -- COMMAND"),
}


def tool_command(tool: str, events: list[tuple[str, str]] | None = None, buffer_kb: int = 32768) -> str:
    """The command line with which ``tool`` (``trace-cmd`` or ``perf``) records ``events``
    (default: every event of :func:`recorded_events`)."""
    if tool not in TOOL_COMMANDS:
        raise BadInput(f"--print-command: unknown tool {tool!r} (expected one of: {', '.join(TOOL_COMMANDS)})")
    head, tail = TOOL_COMMANDS[tool]
    chosen = [e for e in recorded_events() if e not in WHERE_CONFIGURED] if events is None else events
    return head.format(buffer_kb=buffer_kb) + "".join(f" -e {s}:{e}" for s, e in chosen) + tail


def missing_events_message(name: str, present, tool: str) -> str | None:
    """One line naming the required events ``present`` lacks and the ``tool`` command line that
    records them all (None: nothing is missing)."""
    missing = [k for k in required_events() if k not in present]
    if not missing:
        return None
    return (f"{name}: the recording lacks events the replay needs ({', '.join(f'{s}:{e}' for s, e in missing)}); "
            f"record them with: {tool_command(tool)}")
_IRQ_EVENTS = ((("irq_vectors", "local_timer_entry"), IrqKind.TIMER),
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
MIGRATION_BUFFER_KB = 2048
#: The least workload CPU time whose tracing overhead is worth a percentage.
MIN_CPU_FOR_SHARE_S = 0.01


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
#: The registry of recorders sharing the tracefs mount, two ``flock``-ed files: ``MOUNT_LOCK``
#: is held exclusively for the short mount and unmount decisions (and says whether rseqlab
#: mounted tracefs); ``MOUNT_LOCK.users`` is held shared by every recorder while it records, so
#: the one leaving can tell whether it is the last. ``flock`` works across PID namespaces, and
#: the kernel drops the locks of a recorder that was killed.
MOUNT_LOCK = Path("/run/rseqlab-tracefs.lock") if Path("/run").is_dir() else Path("/tmp/rseqlab-tracefs.lock")


class TracefsMount:
    """tracefs mounted for as long as any rseqlab recorder needs it, and no longer."""

    def __init__(self, tracefs: Path = TRACEFS, lock_path: Path | None = None) -> None:
        self.tracefs = tracefs
        self.lock_path = lock_path or MOUNT_LOCK
        self.users_path = self.lock_path.with_name(self.lock_path.name + ".users")
        self.users: int | None = None

    @contextmanager
    def _decision(self):
        """The mutex, held only while mounting or unmounting is decided."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot open the recorders' lock {self.lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Mount tracefs if it is not mounted, and join the recorders using it."""
        if os.geteuid() != 0:
            raise Unavailable("recording needs root (tracefs and pid filters); run rseqlab as root")
        with self._decision() as fd:
            if not (self.tracefs / "instances").is_dir():
                res = subprocess.run(["mount", "-t", "tracefs", "nodev", str(self.tracefs)],
                                     capture_output=True, text=True)
                if res.returncode != 0 or not (self.tracefs / "instances").is_dir():
                    why = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no tracefs"]
                    raise Unavailable(f"tracefs is not mounted at {self.tracefs} and mounting it failed: {why[0]}")
                _set_marker(fd, True)
            self.users = os.open(self.users_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self.users, fcntl.LOCK_SH)
            if not (self.tracefs / "events" / "rseq" / "rseq_update").is_dir():
                self._leave(fd)
                raise Unavailable("this kernel has no rseq:rseq_update tracepoint (needs CONFIG_RSEQ and tracepoints)")

    def release(self) -> None:
        """Leave; the last recorder out unmounts what rseqlab mounted."""
        if self.users is None:
            return
        with self._decision() as fd:
            self._leave(fd)

    def _leave(self, fd: int) -> None:
        try:
            # Exclusive only if no other recorder holds its share: then this one is the last.
            fcntl.flock(self.users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            if _marker(fd):
                res = subprocess.run(["umount", str(self.tracefs)], capture_output=True, text=True)
                if res.returncode == 0:
                    _set_marker(fd, False)
        finally:
            os.close(self.users)
            self.users = None


def _marker(fd: int) -> bool:
    return os.pread(fd, 16, 0).startswith(b"mounted")


def _set_marker(fd: int, mounted: bool) -> None:
    os.ftruncate(fd, 0)
    if mounted:
        os.pwrite(fd, b"mounted\n", 0)


def remove_stale_instances(tracefs: Path = TRACEFS) -> list[str]:
    """Remove ``instances/rseqlab-*`` that no recorder uses any more (one that was killed).

    A live recorder keeps a file of each of its instances open from the moment it creates it,
    and tracefs refuses to remove an instance with open files (EBUSY): so the ``rmdir`` itself
    is the liveness test, valid across PID namespaces, and nothing is written to an instance
    before it is known to be stale."""
    removed = []
    for d in sorted((tracefs / "instances").glob(INSTANCE_PREFIX + "*")):
        try:
            os.rmdir(d)
        except OSError:
            continue  # EBUSY: in use; anything else: not ours to force
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
        self.hold: int | None = None

    def create(self) -> None:
        os.mkdir(self.path)
        # An open file marks the instance as in use (see remove_stale_instances) until remove().
        self.hold = os.open(self.path / "tracing_on", os.O_RDWR | os.O_CLOEXEC)
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
        if self.hold is not None:
            os.close(self.hold)
            self.hold = None
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
        # Signals go to the main thread, whose handler decides (never this one's default action).
        signal.pthread_sigmask(signal.SIG_BLOCK, _CAUGHT)
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
        m = re.search(r"^MemAvailable:\s+(\d+) kB", _read(Path("/proc/meminfo")), re.M)
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
            formats = _formats(tracefs)
            page_size = _page_size(tracefs)
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
            child = os.fork()
            if child == 0:  # pragma: no cover - runs in the child, replaced by exec
                _child(gate_r, gate_w, err_r, err_w, exe, command, stdout_to_stderr, main.path / "trace_marker",
                       token)
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
            reader = Reader(sources, spool, page_size)
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
                        _write(inst.path / "tracing_on", "0")
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
            m = pattern.search(_read(inst.path / "trace"))
            if m:
                return int(m.group(1))
            done, _ = os.waitpid(child, os.WNOHANG)
            if done or time.monotonic() > deadline:
                raise RseqlabError("the recorded command did not start (no marker from the child)")
            time.sleep(0.002)
    finally:
        _write(inst.path / "tracing_on", "0")
        _write(inst.path / "trace", "")


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
            stat_line = _read(Path("/proc") / entry / "stat")
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
#: build_trace's row columns: the trace's event columns plus the per-CPU sequence and the
#: sub-order of the rows one record yields (a switch-out before its switch-in).
_ROW_TYPES = {"ts": np.int64, "cpu": np.int16, "seq": np.int64, "sub": np.int8, "kind": np.uint8,
              "pid": np.int32, "a": np.int64, "b": np.int64, "c": np.int64, "d": np.int64}


def build_trace(raw_main: dict[int, bytes] | parse.RawRecords, raw_mig: dict[int, bytes] | parse.RawRecords | None,
                formats: dict[tuple[str, str], parse.EventFormat], page_size: int, meta: dict,
                lost_main: dict[int, int], lost_mig: dict[int, int], t0: int,
                ctype: np.ndarray | None = None) -> Trace:
    """The columnar trace of the process tree rooted at ``meta["root"]["pid"]``.

    ``raw_main`` and ``raw_mig`` are per-CPU pages or already walked records; ``raw_mig`` None:
    the migrations are in the main records (a system-wide recording, e.g. a trace.dat)."""
    rec = raw_main if isinstance(raw_main, parse.RawRecords) else parse.walk_pages(raw_main, page_size)
    if raw_mig is None:
        rec_mig = None
    else:
        rec_mig = raw_mig if isinstance(raw_mig, parse.RawRecords) else parse.walk_pages(raw_mig, page_size)
    ctype = parse.common_types(rec) if ctype is None else ctype
    rows: list[dict[str, np.ndarray]] = []

    def get(key, raw=rec, ct=ctype):
        fmt = formats.get(key)
        if fmt is None:
            return None
        return parse.records_of(raw, fmt, ct)

    def add(kind, ts, cpu, seq, pid, a=None, b=None, c=None, d=None, sub=0):
        # The columns keep their decoded types here; the concatenation below casts each to its
        # column type once (as astype would, without a copy per event type).
        n = len(ts)
        z = np.zeros(n, np.int64)
        rows.append({"ts": ts, "cpu": cpu, "seq": seq, "sub": np.full(n, sub, np.int8),
                     "kind": np.full(n, kind, np.uint8), "pid": pid,
                     "a": z if a is None else a, "b": z if b is None else b,
                     "c": z if c is None else c, "d": z if d is None else d})

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
    pf = get(("exceptions", "page_fault_user"))
    if pf is not None:
        sel = in_tree(pf[0]["common_pid"])
        add(Kind.IRQ, pf[1][sel], pf[2][sel], pf[3][sel], pf[0]["common_pid"][sel],
            np.full(int(sel.sum()), int(IrqKind.PAGE_FAULT)), pf[0]["address"][sel].astype(np.int64),
            pf[0]["ip"][sel].astype(np.int64))
    for (system, event), kind in ((("context_tracking", "user_enter"), Kind.USER_ENTER),
                                  (("context_tracking", "user_exit"), Kind.USER_EXIT)):
        r = get((system, event))
        if r is not None:
            sel = in_tree(r[0]["common_pid"])
            add(kind, r[1][sel], r[2][sel], r[3][sel], r[0]["common_pid"][sel])

    # Migrations from the system-wide instance, filtered to the tree.
    mg = parse.records_of(rec, formats[MIGRATION_EVENT], ctype) if rec_mig is None else \
        parse.records_of(rec_mig, formats[MIGRATION_EVENT])
    sel = in_tree(mg[0]["pid"])
    add(Kind.MIGRATE, mg[1][sel], mg[2][sel], mg[3][sel] + (0 if rec_mig is None else len(rec.offset)),
        mg[0]["pid"][sel], mg[0]["orig_cpu"][sel], mg[0]["dest_cpu"][sel], sub=2)

    lost_pages = rec.lost_pages + (rec_mig.lost_pages if rec_mig is not None else [])
    if lost_pages:
        lp = np.array([(c, n, ts) for c, n, ts in lost_pages], dtype=np.int64)
        add(Kind.LOST, lp[:, 2], lp[:, 0], np.zeros(len(lp), np.int64), np.full(len(lp), -1), lp[:, 1])

    cols = {k: np.concatenate([np.asarray(r[k]) for r in rows], dtype=_ROW_TYPES[k], casting="unsafe")
            for k in rows[0]}
    # Sorted by (ts, cpu, seq, sub); the last three packed into one key when they fit (two sort
    # passes instead of four, the same order).
    seq_max = int(cols["seq"].max()) if len(cols["seq"]) else 0
    if 0 <= seq_max < 1 << 46 and (not len(cols["cpu"]) or 0 <= int(cols["cpu"].min())):
        tie = (cols["cpu"].astype(np.int64) << 48) | (cols["seq"] << 2) | cols["sub"].astype(np.int64)
        order = np.lexsort((tie, cols["ts"]))
    else:
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
    tree_pids = sw["prev_pid"][by_time][m]
    _, first_from_end = np.unique(tree_pids[::-1], return_index=True)
    last = np.sort(len(tree_pids) - 1 - first_from_end)  # each task's last switch-out, in time order
    for pid, name in zip(tree_pids[last].tolist(), parse.cstr(sw["prev_comm"][by_time][m][last])):
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
            # Below 10 ms of the command's own CPU time a share is noise over nothing: no figure.
            "estimated_pct": round(100.0 * cost_s / base_cpu, 2) if base_cpu >= MIN_CPU_FOR_SHARE_S else None,
            "basis": f"{NS_PER_TRACED_SYSCALL} ns per traced syscall, {NS_PER_OTHER_EVENT} ns per other event, "
                     "plus the reader thread's CPU time, relative to the workload's CPU time"}


def summarize(trace: Trace, size: int = 0) -> dict:
    m = trace.meta
    return {"events": len(trace), "by_kind": m.get("events", {}), "lost": m.get("lost", {}),
            "tasks": len(m.get("tasks", {})), "duration_s": round(m.get("duration_ns", 0) / 1e9, 4),
            "overhead": m.get("recorder", {}).get("overhead", {}), "file_size": size,
            "exit_status": m.get("exit_status")}
