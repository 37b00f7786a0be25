"""The recorder's reader thread: every CPU's ``trace_pipe_raw`` of the instances, polled while
the workload runs and appended page by page to one spool file per CPU."""

from __future__ import annotations

import errno
import os
import select
import signal
import threading
import time
from pathlib import Path


class Reader(threading.Thread):
    """Polls every ``trace_pipe_raw`` and appends the raw pages to one spool file per CPU."""

    def __init__(self, sources: dict[tuple[str, int], int], spool: Path, page_size: int,
                 blocked: set[signal.Signals]) -> None:
        super().__init__(name="rseqlab-reader", daemon=True)
        self.blocked = blocked
        self.sources = sources
        self.page_size = page_size
        self.files = {key: open(spool / f"{key[0]}-cpu{key[1]}.raw", "wb") for key in sources}
        self.stop_r, self.stop_w = os.pipe()
        self.cpu_time = 0.0
        self.error: BaseException | None = None
        self.pages = 0

    def run(self) -> None:
        # Signals go to the main thread, whose handler decides (never this one's default action).
        signal.pthread_sigmask(signal.SIG_BLOCK, self.blocked)
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
