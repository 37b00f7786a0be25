"""Signals while rseqlab starts and runs: one line and the conventional status, never a traceback.

*During the imports* (numpy, click, rich, the kernel models take a noticeable fraction of a
second, before ``cli.main()`` can catch anything) SIGINT, SIGTERM and SIGHUP end the process
quietly with one line and 128 + the signal's number: nothing has been done yet that needs
cleaning up. Only a signal still at Python's *default* is taken (``SIGINT``'s
``default_int_handler``, ``SIG_DFL`` for the others), so a program that imports rseqlab with a
handler of its own (pytest, a notebook, ``nohup``'s ignored SIGHUP) keeps it, and the default
comes back when the imports are done.

*While a command runs* (:func:`terminate_cleanly`, entered by ``cli.main``) SIGTERM and SIGHUP
raise :class:`~rseqlab.errors.Terminated` in the main thread, as Ctrl-C raises
``KeyboardInterrupt``: every ``finally`` and context manager on the way out runs (temporary
directories, QEMU, the recorder's tracefs state), and ``main()`` returns 128 + the signal's
number. Only the first signal raises; later ones are ignored so that they cannot cut the
clean-up short.

What remains unguarded is Python's own start-up before rseqlab's first line: interpreter
initialisation, ``site`` (the ``.pth`` files) and, for the console script, its ``import re``.
A Ctrl-C there gets Python's own handling (a ``KeyboardInterrupt`` traceback); SIGTERM and SIGHUP
their default action. Nothing of rseqlab has run then.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

#: The signals a command turns into a clean exit (SIGINT is Python's KeyboardInterrupt).
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def _quiet_exit(signum, frame) -> None:  # pragma: no cover - ends the process
    word = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
    sys.stderr.write(f"rseqlab: error: {word}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _at_default(signum: int) -> bool:
    return signal.getsignal(signum) is (signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def guard() -> dict:
    """Install the quiet handler on every signal still at its default; returns what to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _quiet_exit) for s in (signal.SIGINT, *TERMINATING) if _at_default(s)}


def release(previous: dict | None) -> None:
    for s, handler in (previous or {}).items():
        if signal.getsignal(s) is _quiet_exit:
            signal.signal(s, handler)


@contextmanager
def terminate_cleanly():
    """SIGTERM and SIGHUP raise :class:`Terminated` (once) while the block runs; restored after."""
    from .errors import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, frame) -> None:
        if fired:
            return  # the first one is already unwinding the command; let its clean-up finish
        fired.append(signum)
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in TERMINATING if signal.getsignal(s) is signal.SIG_DFL}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
