"""Errors that reach the user as one line, and the exit codes the CLI returns."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    SUCCESS = 0
    #: A check failed (e.g. a selftest or validation that did not pass).
    FAILURE = 1
    #: Bad arguments, workload or trace files.
    BAD_INPUT = 2
    #: The machine cannot do what was asked (not root, no tracefs).
    ENVIRONMENT = 3
    #: Ctrl-C: 128 + SIGINT, as shells report it.
    INTERRUPTED = 130


def command_status(code: int | None) -> int:
    """A recorded command's exit code as a shell reports it, for ``record``/``validate``/``vm run``
    to exit with (as ``perf record`` does): the code, or 128+N for a command killed by signal N
    (recorded as -N); 0 when nothing was recorded."""
    if code is None:
        return ExitStatus.SUCCESS
    return code if code >= 0 else 128 - code


class RseqlabError(Exception):
    """An error the CLI reports as one line; ``status`` is the exit code."""

    status = ExitStatus.FAILURE


class BadInput(RseqlabError):
    status = ExitStatus.BAD_INPUT


class Unavailable(RseqlabError):
    """The machine cannot do it: not root, no tracefs, no rseq tracepoints, no compiler."""

    status = ExitStatus.ENVIRONMENT


class Terminated(BaseException):
    """SIGTERM or SIGHUP while a command ran (``_startup.terminate_cleanly``).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it; the
    clean-ups on the way out run, and the CLI exits with 128 + ``signum``. ``message`` may say what
    was kept (the recorder's interrupted trace)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        from ._startup import signal_name

        super().__init__(signum, message)
        self.signum = int(signum)
        self.message = message or f"terminated by {signal_name(signum)}"

    def __str__(self) -> str:
        return self.message
