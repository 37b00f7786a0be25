"""tracefs for the recorder: the mount shared by concurrent recorders, private instances and
the clean-up of stale ones, and what tracefs publishes about its events (formats, page size)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import Unavailable
from . import parse
from .events import EVENTS, MIGRATION_EVENT

TRACEFS = Path("/sys/kernel/tracing")
INSTANCE_PREFIX = "rseqlab-"


def write_file(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def read_file(path: Path) -> str:
    with open(path) as f:
        return f.read()


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
            write_file(path, value)
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
        write_file(self.path / "tracing_on", "0")

    def set(self, rel: str, value: str) -> None:
        write_file(self.path / rel, value)

    def enable(self, system: str, event: str) -> None:
        write_file(self.path / "events" / system / event / "enable", "1")

    def open_readers(self, cpus: int) -> None:
        for cpu in range(cpus):
            self.fds[cpu] = os.open(self.path / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw",
                                    os.O_RDONLY | os.O_NONBLOCK)

    def lost(self, cpus: int) -> dict[int, int]:
        out = {}
        for cpu in range(cpus):
            try:
                text = read_file(self.path / "per_cpu" / f"cpu{cpu}" / "stats")
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


def event_formats(tracefs: Path) -> dict[tuple[str, str], parse.EventFormat]:
    out = {}
    for (system, event), required in [*EVENTS.items(), (MIGRATION_EVENT, True)]:
        path = tracefs / "events" / system / event / "format"
        try:
            out[(system, event)] = parse.parse_format(system, read_file(path))
        except OSError:
            if required:
                raise Unavailable(f"this kernel has no {system}:{event} tracepoint") from None
    return out


def page_size_of(tracefs: Path) -> int:
    text = read_file(tracefs / "events" / "header_page")
    m = re.search(r"field: char data;\s*offset:(\d+);\s*size:(\d+);", text)
    return int(m.group(1)) + int(m.group(2)) if m else 4096
