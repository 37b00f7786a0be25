"""Signals while rseqlab starts and runs: one line and the conventional status, never a traceback.

*During the imports* (numpy, click, rich, the kernel models take a noticeable fraction of a
second, before ``cli.main()`` can catch anything) SIGINT, SIGTERM and SIGHUP end the process
quietly with one line and 128 + the signal's number: nothing has been done yet that needs
cleaning up. Only a signal still at Python's *default* is taken (``SIGINT``'s
``default_int_handler``, ``SIG_DFL`` for the others), so a program that imports rseqlab with a
handler of its own (pytest, a notebook, ``nohup``'s ignored SIGHUP) keeps it, and the default
comes back when the imports are done: at the end of the package's import for a library user; for
the CLI the guard stays up until ``cli.main`` hands the signals to :class:`terminate_cleanly`
(``hold_or_release``), so that the import of ``rseqlab.cli`` after the package's (compiled afresh
where no bytecode is cached) is guarded too.

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

# Only modules the interpreter has loaded before any user code: importing anything more would
# itself lengthen the unguarded window the guard is here to close. ``signal`` (the Python module)
# alone costs ~30 ms here (it imports enum, functools, collections), so this uses its C core
# ``_signal``; no ``from __future__`` either (it imports a module).
import _signal as signal
import os
import sys

#: The signals a command turns into a clean exit (SIGINT is Python's KeyboardInterrupt).
TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def signal_name(signum: int) -> str:
    return _NAMES.get(signum, f"signal {signum}")


def _quiet_exit(signum, frame) -> None:  # pragma: no cover - ends the process
    word = "interrupted" if signum == signal.SIGINT else f"terminated by {signal_name(signum)}"
    sys.stderr.write(f"rseqlab: error: {word}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _at_default(signum: int) -> bool:
    if signum == signal.SIGINT:
        return signal.getsignal(signum) is signal.default_int_handler
    return signal.getsignal(signum) == signal.SIG_DFL


def guard() -> dict:
    """Install the quiet handler on every signal still at its default; returns what to restore."""
    previous = {}
    for s in (signal.SIGINT, *TERMINATING):
        if _at_default(s):
            try:
                previous[s] = signal.signal(s, _quiet_exit)
            except ValueError:  # imported outside the main thread: handlers cannot be set there
                break
    return previous


def release(previous: dict | None) -> None:
    for s, handler in (previous or {}).items():
        if signal.getsignal(s) is _quiet_exit:
            signal.signal(s, handler)


def started_as_cli() -> bool:
    """Is this process ``rseqlab ...`` or ``python -m rseqlab[.cli] ...``? (While ``-m`` looks
    for the module, ``sys.argv[0]`` is "-m"; ``sys.orig_argv`` has the module's name.)"""
    argv = list(getattr(sys, "orig_argv", ()) or sys.argv)
    if "-m" in argv[1:]:
        i = argv.index("-m", 1)
        return argv[i + 1:i + 2] in (["rseqlab"], ["rseqlab.cli"])
    return os.path.basename(sys.argv[0] if sys.argv else "") == "rseqlab"


def hold_or_release(previous: dict) -> None:
    """At the end of the package's import: a library user gets its handlers back now; the CLI
    keeps the guard through the import of ``rseqlab.cli`` (compiled afresh where bytecode is
    not cached: a window of its own) until ``cli.main`` enters :class:`terminate_cleanly`,
    which takes the signals over from it."""
    if not started_as_cli():
        release(previous)


class terminate_cleanly:  # noqa: N801 - used as a context manager, like contextlib's
    """While the block runs, the first SIGINT raises ``KeyboardInterrupt`` and the first SIGTERM
    or SIGHUP :class:`Terminated`; later ones are ignored, so that they cannot cut the first one's
    clean-up short. After the block a library caller gets its handlers back; the CLI, which is
    only exiting then, ignores the three (a late signal neither prints a traceback nor changes
    the status of work that was done).

    A class rather than a ``contextlib`` generator, so that this module imports nothing new."""

    def __enter__(self) -> "terminate_cleanly":
        self.fired: list[int] = []
        self.old = {}
        for s in (signal.SIGINT, *TERMINATING):
            if _at_default(s) or signal.getsignal(s) is _quiet_exit:
                try:
                    self.old[s] = signal.signal(s, self._handle)
                except ValueError:  # not the main thread: signals stay as they are
                    break
        return self

    def _handle(self, signum, frame) -> None:
        from .errors import Terminated

        if self.fired:
            return  # the first one is already unwinding the command; let its clean-up finish
        self.fired.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def __exit__(self, *exc) -> None:
        exiting = started_as_cli()
        for s, h in self.old.items():
            signal.signal(s, signal.SIG_IGN if exiting else h)
