"""Ctrl-C while rseqlab is still importing: one line and exit status 130, not a traceback.

Importing rseqlab (numpy, click, rich, the kernel models) takes a noticeable fraction of a
second, before ``cli.main()`` can catch anything. During it, SIGINT ends the process quietly.
Only Python's *default* handler is replaced, so a program that imports rseqlab with a handler of
its own (pytest, a notebook) keeps it, and the default comes back when the imports are done.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted(signum, frame) -> None:  # pragma: no cover - ends the process
    sys.stderr.write("rseqlab: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def guard():
    """Install the quiet handler if SIGINT still has Python's default; returns what to restore."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        return signal.signal(signal.SIGINT, _interrupted)
    return None


def release(previous) -> None:
    if previous is not None and signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, previous)
